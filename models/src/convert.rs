//! Converts a CTranslate2 Whisper model (`model.bin` + `vocabulary.txt`) into the
//! legacy ggml file whisper.cpp loads, the same layout whisper.cpp's own
//! `convert-pt-to-ggml.py` writes: hparams, mel filters, byte-level vocabulary,
//! then named tensors (1-D tensors, conv biases and positional embeddings f32,
//! everything else f16).

use crate::Error;
use crate::ct2::Model;
use std::io::Write;

const GGML_MAGIC: u32 = 0x6767_6d6c;

/// Whisper shapes the converter reads off the CTranslate2 variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HParams {
    pub n_vocab: usize,
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    pub n_text_ctx: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
    pub n_mels: usize,
}

impl HParams {
    fn read(m: &Model) -> Result<Self, Error> {
        let dims = |name: &str| m.get(name).map(|v| v.dims.clone());
        let int = |name: &str| -> Result<usize, Error> {
            m.get(name)?
                .as_int()
                .map(|v| v as usize)
                .ok_or_else(|| Error::Format(format!("{name} is not an integer")))
        };
        let layers = |prefix: &str| {
            (0..)
                .take_while(|i| {
                    m.variables
                        .contains_key(&format!("{prefix}/layer_{i}/ffn/linear_0/weight"))
                })
                .count()
        };
        let emb = dims("decoder/embeddings/weight")?;
        let enc_pos = dims("encoder/position_encodings/encodings")?;
        let dec_pos = dims("decoder/position_encodings/encodings")?;
        let conv1 = dims("encoder/conv1/weight")?;
        if emb.len() != 2 || enc_pos.len() != 2 || dec_pos.len() != 2 || conv1.len() != 3 {
            return Err(Error::Format(
                "unexpected tensor ranks in Whisper model".into(),
            ));
        }
        Ok(HParams {
            n_vocab: emb[0],
            n_audio_ctx: enc_pos[0],
            n_audio_state: enc_pos[1],
            n_audio_head: int("encoder/num_heads")?,
            n_audio_layer: layers("encoder"),
            n_text_ctx: dec_pos[0],
            n_text_state: dec_pos[1],
            n_text_head: int("decoder/num_heads")?,
            n_text_layer: layers("decoder"),
            n_mels: conv1[1],
        })
    }
}

/// A tensor ready to be written: name, shape (outermost first), values.
struct Tensor {
    name: String,
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// Convert; `vocabulary` is the text of CTranslate2's `vocabulary.txt`.
pub fn convert(model_bin: &[u8], vocabulary: &str, out: &mut impl Write) -> Result<HParams, Error> {
    let m = Model::parse(model_bin)?;
    if m.spec != "WhisperSpec" {
        return Err(Error::Format(format!(
            "expected a WhisperSpec model, found {}",
            m.spec
        )));
    }
    let hp = HParams::read(&m)?;
    let tokens = byte_level_tokens(vocabulary)?;
    let tensors = map_tensors(&m, &hp)?;

    let mut w = Writer(out);
    w.u32(GGML_MAGIC)?;
    for v in [
        hp.n_vocab,
        hp.n_audio_ctx,
        hp.n_audio_state,
        hp.n_audio_head,
        hp.n_audio_layer,
        hp.n_text_ctx,
        hp.n_text_state,
        hp.n_text_head,
        hp.n_text_layer,
        hp.n_mels,
        1, // ftype: f16 weights
    ] {
        w.i32(v)?;
    }
    let n_fft = 400;
    let filters = crate::mel::filters(16000.0, n_fft, hp.n_mels);
    w.i32(hp.n_mels)?;
    w.i32(n_fft / 2 + 1)?;
    for f in filters {
        w.0.write_all(&f.to_le_bytes())?;
    }
    w.i32(tokens.len())?;
    for t in &tokens {
        w.i32(t.len())?;
        w.0.write_all(t)?;
    }
    for t in &tensors {
        let keep_f32 = t.shape.len() < 2
            || t.name.ends_with("conv1.bias")
            || t.name.ends_with("conv2.bias")
            || t.name.ends_with("positional_embedding");
        w.i32(t.shape.len())?;
        w.i32(t.name.len())?;
        w.i32(if keep_f32 { 0 } else { 1 })?;
        for d in t.shape.iter().rev() {
            w.i32(*d)?;
        }
        w.0.write_all(t.name.as_bytes())?;
        if keep_f32 {
            for v in &t.data {
                w.0.write_all(&v.to_le_bytes())?;
            }
        } else {
            for v in &t.data {
                w.0.write_all(&half::f16::from_f32(*v).to_le_bytes())?;
            }
        }
    }
    Ok(hp)
}

struct Writer<'a, W: Write>(&'a mut W);

impl<W: Write> Writer<'_, W> {
    fn u32(&mut self, v: u32) -> Result<(), Error> {
        Ok(self.0.write_all(&v.to_le_bytes())?)
    }
    fn i32(&mut self, v: usize) -> Result<(), Error> {
        let v = i32::try_from(v).map_err(|_| Error::Format(format!("{v} does not fit in i32")))?;
        Ok(self.0.write_all(&v.to_le_bytes())?)
    }
}

/// Tokens below `<|endoftext|>` decoded from GPT-2's byte-to-unicode alphabet
/// back to raw bytes; whisper.cpp adds the special tokens itself.
fn byte_level_tokens(vocabulary: &str) -> Result<Vec<Vec<u8>>, Error> {
    let mut unicode_to_byte = std::collections::HashMap::new();
    let mut n = 0u32;
    for b in 0u32..256 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        unicode_to_byte.insert(char::from_u32(c).expect("valid scalar"), b as u8);
    }
    let mut out = Vec::new();
    for (i, line) in vocabulary.split('\n').enumerate() {
        if line == "<|endoftext|>" {
            return Ok(out);
        }
        let bytes = line
            .chars()
            .map(|c| unicode_to_byte.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| {
                Error::Format(format!("vocabulary line {}: not byte-level BPE", i + 1))
            })?;
        out.push(bytes);
    }
    Err(Error::Format(
        "vocabulary has no <|endoftext|> token".into(),
    ))
}

fn map_tensors(m: &Model, hp: &HParams) -> Result<Vec<Tensor>, Error> {
    let mut out = Vec::new();
    let mut put = |name: String, src: &str| -> Result<(), Error> {
        let v = m.get(src)?;
        out.push(Tensor {
            name,
            shape: v.dims.clone(),
            data: v.to_f32()?,
        });
        Ok(())
    };
    put(
        "encoder.positional_embedding".into(),
        "encoder/position_encodings/encodings",
    )?;
    for c in ["conv1", "conv2"] {
        put(
            format!("encoder.{c}.weight"),
            &format!("encoder/{c}/weight"),
        )?;
        put(format!("encoder.{c}.bias"), &format!("encoder/{c}/bias"))?;
    }
    put("encoder.ln_post.weight".into(), "encoder/layer_norm/gamma")?;
    put("encoder.ln_post.bias".into(), "encoder/layer_norm/beta")?;
    put(
        "decoder.positional_embedding".into(),
        "decoder/position_encodings/encodings",
    )?;
    put(
        "decoder.token_embedding.weight".into(),
        "decoder/embeddings/weight",
    )?;
    put("decoder.ln.weight".into(), "decoder/layer_norm/gamma")?;
    put("decoder.ln.bias".into(), "decoder/layer_norm/beta")?;

    // Conv biases are stored [n, 1] in ggml files.
    for t in out
        .iter_mut()
        .filter(|t| t.name.ends_with("bias") && t.name.contains("conv"))
    {
        t.shape = vec![t.shape[0], 1];
    }

    for (side, layers) in [("encoder", hp.n_audio_layer), ("decoder", hp.n_text_layer)] {
        for i in 0..layers {
            let src = |s: &str| format!("{side}/layer_{i}/{s}");
            let dst = |s: &str| format!("{side}.blocks.{i}.{s}");
            let mut pairs = vec![
                ("attn_ln.weight", "self_attention/layer_norm/gamma"),
                ("attn_ln.bias", "self_attention/layer_norm/beta"),
                ("attn.out.weight", "self_attention/linear_1/weight"),
                ("attn.out.bias", "self_attention/linear_1/bias"),
                ("mlp_ln.weight", "ffn/layer_norm/gamma"),
                ("mlp_ln.bias", "ffn/layer_norm/beta"),
                ("mlp.0.weight", "ffn/linear_0/weight"),
                ("mlp.0.bias", "ffn/linear_0/bias"),
                ("mlp.2.weight", "ffn/linear_1/weight"),
                ("mlp.2.bias", "ffn/linear_1/bias"),
            ];
            if side == "decoder" {
                pairs.extend([
                    ("cross_attn_ln.weight", "attention/layer_norm/gamma"),
                    ("cross_attn_ln.bias", "attention/layer_norm/beta"),
                    ("cross_attn.query.weight", "attention/linear_0/weight"),
                    ("cross_attn.query.bias", "attention/linear_0/bias"),
                    ("cross_attn.out.weight", "attention/linear_2/weight"),
                    ("cross_attn.out.bias", "attention/linear_2/bias"),
                ]);
            }
            for (d, s) in pairs {
                let v = m.get(&src(s))?;
                out.push(Tensor {
                    name: dst(d),
                    shape: v.dims.clone(),
                    data: v.to_f32()?,
                });
            }
            // Self-attention QKV is fused [3d, d]; its key bias is zero and
            // whisper has none, so it is dropped.
            let state = if side == "encoder" {
                hp.n_audio_state
            } else {
                hp.n_text_state
            };
            let parts = split_rows(m, &src("self_attention/linear_0/weight"), 3, state)?;
            let biases = split_rows(m, &src("self_attention/linear_0/bias"), 3, state)?;
            let [q, k, v] =
                <[Tensor; 3]>::try_from(parts).map_err(|_| Error::Format("qkv split".into()))?;
            let [qb, _kb, vb] =
                <[Tensor; 3]>::try_from(biases).map_err(|_| Error::Format("qkv split".into()))?;
            for (name, mut t) in [
                ("attn.query.weight", q),
                ("attn.query.bias", qb),
                ("attn.key.weight", k),
                ("attn.value.weight", v),
                ("attn.value.bias", vb),
            ] {
                t.name = dst(name);
                out.push(t);
            }
            if side == "decoder" {
                // Cross-attention KV is fused [2d, d].
                let kv = split_rows(m, &src("attention/linear_1/weight"), 2, state)?;
                let kvb = split_rows(m, &src("attention/linear_1/bias"), 2, state)?;
                let [k, v] =
                    <[Tensor; 2]>::try_from(kv).map_err(|_| Error::Format("kv split".into()))?;
                let [_kb, vb] =
                    <[Tensor; 2]>::try_from(kvb).map_err(|_| Error::Format("kv split".into()))?;
                for (name, mut t) in [
                    ("cross_attn.key.weight", k),
                    ("cross_attn.value.weight", v),
                    ("cross_attn.value.bias", vb),
                ] {
                    t.name = dst(name);
                    out.push(t);
                }
            }
        }
    }
    Ok(out)
}

/// Split a fused tensor along its first axis into `n` parts of `rows` rows.
fn split_rows(m: &Model, name: &str, n: usize, rows: usize) -> Result<Vec<Tensor>, Error> {
    let v = m.get(name)?;
    if v.dims.first() != Some(&(n * rows)) {
        return Err(Error::Format(format!(
            "{name}: shape {:?}, expected {} rows",
            v.dims,
            n * rows
        )));
    }
    let data = v.to_f32()?;
    let per = data.len() / n;
    let mut shape = v.dims.clone();
    shape[0] = rows;
    Ok(data
        .chunks_exact(per)
        .map(|c| Tensor {
            name: String::new(),
            shape: shape.clone(),
            data: c.to_vec(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_vocabulary_round_trips_bytes() {
        // "Ġthe" is " the"; "Ċ" is "\n"; the list stops at <|endoftext|>.
        let vocab = "!\nĠthe\nĊ\n<|endoftext|>\n<|startoftranscript|>";
        let t = byte_level_tokens(vocab).unwrap();
        assert_eq!(t, vec![b"!".to_vec(), b" the".to_vec(), b"\n".to_vec()]);
    }

    #[test]
    fn vocabulary_without_end_token_is_rejected() {
        assert!(byte_level_tokens("a\nb").is_err());
    }
}
