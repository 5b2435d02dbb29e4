//! Sentence embeddings from all-MiniLM-L6-v2 on ONNX Runtime.
//!
//! The graph (built at provisioning by `models/build_minilm.py`) does the
//! encoder, mean pooling and L2 normalisation, so the output is a unit vector
//! and cosine similarity is a dot product.

use crate::Error;
use crate::wordpiece::WordPiece;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::Path;

pub const DIM: usize = 384;
/// sentence-transformers' limit for this model.
pub const MAX_TOKENS: usize = 256;

pub struct Embedder {
    session: Session,
    tok: WordPiece,
    mask: Vec<i64>,
}

impl Embedder {
    /// Load the graph and its vocabulary. ONNX Runtime must be initialised
    /// ([`crate::vad::init_runtime`]).
    pub fn load(model: &Path, vocab: &Path) -> Result<Embedder, Error> {
        let session = crate::vad::session(model)?;
        Ok(Embedder {
            session,
            tok: WordPiece::load(vocab)?,
            mask: Vec::with_capacity(MAX_TOKENS),
        })
    }

    /// The unit-length embedding of `text`.
    pub fn embed(&mut self, text: &str) -> Result<Vec<f32>, Error> {
        let ids = self.tok.encode(text, MAX_TOKENS);
        self.mask.clear();
        self.mask.resize(ids.len(), 1);
        let n = ids.len();
        let out = self.session.run(ort::inputs![
            "input_ids" => TensorRef::from_array_view(([1usize, n], &ids[..]))?,
            "attention_mask" => TensorRef::from_array_view(([1usize, n], &self.mask[..]))?,
        ])?;
        let (_, v) = out["embedding"].try_extract_tensor::<f32>()?;
        if v.len() != DIM {
            return Err(Error::Format(format!(
                "embedding has {} values, expected {DIM}",
                v.len()
            )));
        }
        Ok(v.to_vec())
    }
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
