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

/// What [`embed_all`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Embedded {
    /// Sentences found in the cache.
    pub cached: usize,
    /// Sentences run through the model.
    pub computed: usize,
    /// Why the cache could not be read or written, if it could not (the
    /// embeddings are right either way: the cache only saves time).
    pub cache_problem: Option<String>,
}

/// First bytes of a cache file, then the model's and vocabulary's pinned
/// hashes: a cache from another model is never used. The digit is the
/// format's version: raise it when the text → vector path changes in code
/// (the tokenizer, `MAX_TOKENS`).
const CACHE_MAGIC: &[u8; 8] = b"HLEMB\x001\n";
/// What every cache file starts with, whatever its version: a file that
/// does not is not ours and is never overwritten.
const CACHE_FAMILY: &[u8] = b"HLEMB\x00";
/// A cache never holds more than this many sentences (a config's examples).
const CACHE_MAX: usize = 20_000;

/// Sentences to embed before [`embed_all`] loads another session to share
/// the work: below it the load costs more than it saves.
const SHARE_ABOVE: usize = 64;

/// A second embedder for [`embed_all`] to share a long list with.
pub type MoreEmbedders<'a> = &'a dyn Fn() -> Result<Embedder, Error>;

/// The embeddings of `texts`, in order: from the cache file at `cache` when
/// it was written for this model, else computed and the cache rewritten.
/// Many to compute are shared with up to `threads - 1` more embedders from
/// `more` (one thread each), dropped afterwards.
///
/// Building a classifier embeds every example of every intent (hundreds,
/// ~9 ms each on one core): seconds at each start without the cache. The
/// file is derived data; a missing, stale or damaged one is recomputed.
pub fn embed_all(
    first: &mut Embedder,
    more: Option<MoreEmbedders>,
    threads: usize,
    texts: &[String],
    cache: Option<&Path>,
) -> Result<(Vec<Vec<f32>>, Embedded), Error> {
    let mut report = Embedded::default();
    let mut known = std::collections::HashMap::new();
    if let Some(path) = cache {
        match read_cache(path) {
            Ok(map) => known = map,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => report.cache_problem = Some(format!("{}: {e}", path.display())),
        }
    }
    let mut out: Vec<Option<Vec<f32>>> = texts.iter().map(|t| known.remove(t)).collect();
    let missing: Vec<usize> = (0..texts.len()).filter(|i| out[*i].is_none()).collect();
    report.cached = texts.len() - missing.len();
    report.computed = missing.len();
    if !missing.is_empty() {
        let mut extra = Vec::new();
        if let Some(more) = more
            && missing.len() > SHARE_ABOVE
        {
            for _ in 1..threads.max(1) {
                // Only to go faster: without it, the one session does it all.
                match more() {
                    Ok(e) => extra.push(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "no second embedding session; embedding on one");
                        break;
                    }
                }
            }
        }
        let mut embedders: Vec<&mut Embedder> = vec![first];
        embedders.extend(extra.iter_mut());
        let n = embedders.len();
        // Each thread's (index, embedding) pairs.
        type Part = Result<Vec<(usize, Vec<f32>)>, Error>;
        let results: Vec<Part> = std::thread::scope(|s| {
            let handles: Vec<_> = embedders
                .into_iter()
                .enumerate()
                .map(|(w, e)| {
                    let mine: Vec<usize> = missing.iter().copied().skip(w).step_by(n).collect();
                    s.spawn(move || {
                        mine.into_iter()
                            .map(|i| Ok((i, e.embed(&texts[i])?)))
                            .collect::<Result<Vec<_>, Error>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Format("embedding thread panicked".into())))
                })
                .collect()
        });
        for r in results {
            for (i, v) in r? {
                out[i] = Some(v);
            }
        }
    }
    let out: Vec<Vec<f32>> = out.into_iter().map(|v| v.unwrap_or_default()).collect();
    if let Some(path) = cache
        && (report.computed > 0 || report.cache_problem.is_some())
    {
        // Keep what other configurations cached (a test suite's agents, a
        // business trying examples back and forth), up to the bound; best
        // effort: of two agents writing at once, the last rename wins.
        let mut all: Vec<(&str, &[f32])> = texts
            .iter()
            .zip(&out)
            .map(|(t, v)| (t.as_str(), v.as_slice()))
            .collect();
        all.extend(known.iter().map(|(t, v)| (t.as_str(), v.as_slice())));
        if let Err(e) = write_cache(path, &all) {
            report.cache_problem = Some(format!("{}: {e}", path.display()));
        }
    }
    Ok((out, report))
}

fn cache_header() -> Vec<u8> {
    let mut h = CACHE_MAGIC.to_vec();
    h.extend_from_slice(crate::manifest::MINILM.sha256.as_bytes());
    h.extend_from_slice(crate::manifest::MINILM_VOCAB.sha256.as_bytes());
    h
}

fn read_cache(path: &Path) -> std::io::Result<std::collections::HashMap<String, Vec<f32>>> {
    use std::io::{Error as IoError, ErrorKind};
    let bad = |why: &str| IoError::new(ErrorKind::InvalidData, why.to_string());
    // The largest cache we write: every entry a long sentence.
    let most = cache_header().len() + 4 + CACHE_MAX * (4 + 4096 + DIM * 4);
    if std::fs::metadata(path)?.len() > most as u64 {
        return Err(bad("larger than any cache"));
    }
    let bytes = std::fs::read(path)?;
    let header = cache_header();
    let Some(mut rest) = bytes.strip_prefix(&header[..]) else {
        return Err(bad("written for another model or not a cache"));
    };
    let mut take = |n: usize| -> std::io::Result<&[u8]> {
        if rest.len() < n {
            return Err(bad("truncated"));
        }
        let (a, b) = rest.split_at(n);
        rest = b;
        Ok(a)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
    if count > CACHE_MAX {
        return Err(bad("too many entries"));
    }
    let mut map = std::collections::HashMap::with_capacity(count);
    for _ in 0..count {
        let len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        let text = std::str::from_utf8(take(len)?)
            .map_err(|_| bad("text not UTF-8"))?
            .to_string();
        let v: Vec<f32> = take(DIM * 4)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        if v.iter().any(|x| !x.is_finite()) {
            return Err(bad("not a number in an embedding"));
        }
        map.insert(text, v);
    }
    if !rest.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(map)
}

/// Written to a temporary file and renamed over the old one, so a reader
/// (another agent starting, a crash half-way) never sees half a cache.
fn write_cache(path: &Path, entries: &[(&str, &[f32])]) -> std::io::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let entries: Vec<&(&str, &[f32])> = entries
        .iter()
        .filter(|(t, v)| v.len() == DIM && seen.insert(*t))
        .take(CACHE_MAX)
        .collect();
    let mut buf = cache_header();
    buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (t, v) in entries {
        buf.extend_from_slice(&(t.len() as u32).to_le_bytes());
        buf.extend_from_slice(t.as_bytes());
        for x in v.iter() {
            buf.extend_from_slice(&x.to_le_bytes());
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A file there that is not a cache (a mistyped `[intent] cache`) stays.
    match std::fs::File::open(path) {
        Ok(mut f) => {
            use std::io::Read;
            let mut head = [0u8; CACHE_FAMILY.len()];
            if f.read_exact(&mut head).is_err() || head != CACHE_FAMILY {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file that is not an embedding cache is in the way; not overwritten",
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Unique per process and call, created new: two writers never share a
    // temporary file. Whoever renames last wins, which is all a cache needs.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(&buf)
        });
    written
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}
