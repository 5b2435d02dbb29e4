//! A linear softmax head over sentence embeddings, trained on the intents'
//! examples when a classifier is built.
//!
//! Nearest examples alone judge a sentence by one or two look-alikes, so a
//! caller who words a request in a way no example does lands on whichever
//! example shares their nouns ("the leak you fixed is back" next to the
//! leaking-pipe emergency). Multinomial logistic regression over the same
//! embeddings weighs every direction the examples of an intent share, and
//! raised accuracy on the spoken held-out set (tests/intent_spoken.rs).
//! Training is full-batch gradient descent with momentum from zero weights:
//! deterministic, no randomness, a few hundred milliseconds for a few
//! hundred examples, so a business's edited examples still need no
//! retraining step of their own.

/// Logits are `SCALE * w·x + b`: embeddings are unit vectors whose dot
/// products sit in a narrow band, and the scale lets small weights separate
/// them.
const SCALE: f32 = 10.0;
/// L2 penalty on the weights (not the biases).
const LAMBDA: f32 = 1e-3;
const ITERATIONS: usize = 300;
const LEARNING_RATE: f32 = 0.5;
const MOMENTUM: f32 = 0.9;

use super::lexical::BUCKETS;

/// Weight of the word features' logits, as `SCALE` is the embedding's.
/// On the development set (tests/data/intent_dev_set.tsv, what whisper
/// heard of it) 10 was best of 0, 5, 10 and 20: 77.3 % (none), 78.5 %,
/// 79.7 %, 79.5 %; the other constants were tried there too and kept.
const LEX_SCALE: f32 = 10.0;

/// What a saved head starts with ([`Head::save`]).
const FILE_MAGIC: &[u8] = b"HLHEAD\x001\n";
/// Part of every saved head's key: bump it with any change to how
/// [`Head::train`] or [`Head::probs`] compute, so heads saved by the old
/// code are trained again rather than read.
const TRAIN_VERSION: u64 = 1;

/// One example to learn from: its class, unit embedding and word features.
pub(crate) struct Example<'a> {
    pub class: usize,
    pub embedding: &'a [f32],
    pub words: &'a [(u32, f32)],
}

#[derive(Debug, Clone)]
pub(crate) struct Head {
    classes: usize,
    dim: usize,
    /// `classes` rows of `dim` weights.
    w: Vec<f32>,
    /// `classes` rows of [`BUCKETS`] word weights.
    lex: Vec<f32>,
    b: Vec<f32>,
}

impl Head {
    /// Train on the examples. Each class weighs the same in the loss
    /// however many examples it has, so an intent a business gave thirty
    /// examples does not crowd out one with five.
    pub(crate) fn train(examples: &[Example], classes: usize) -> Head {
        let dim = examples.first().map_or(0, |e| e.embedding.len());
        let mut count = vec![0f32; classes];
        for e in examples {
            count[e.class] += 1.0;
        }
        let present = count.iter().filter(|n| **n > 0.0).count().max(1) as f32;
        let mut head = Head {
            classes,
            dim,
            w: vec![0.0; classes * dim],
            lex: vec![0.0; classes * BUCKETS],
            b: vec![0.0; classes],
        };
        let (mut vw, mut vl, mut vb) = (
            vec![0f32; classes * dim],
            vec![0f32; classes * BUCKETS],
            vec![0f32; classes],
        );
        let (mut gw, mut gl, mut gb) = (
            vec![0f32; classes * dim],
            vec![0f32; classes * BUCKETS],
            vec![0f32; classes],
        );
        let mut p = vec![0f32; classes];
        for _ in 0..ITERATIONS {
            gw.fill(0.0);
            gl.fill(0.0);
            gb.fill(0.0);
            for e in examples {
                head.probs_into(e.embedding, e.words, &mut p);
                let weight = 1.0 / (count[e.class] * present);
                for k in 0..classes {
                    let g = (p[k] - f32::from(k == e.class)) * weight;
                    gb[k] += g;
                    let row = &mut gw[k * dim..(k + 1) * dim];
                    for (r, xi) in row.iter_mut().zip(e.embedding) {
                        *r += g * SCALE * xi;
                    }
                    let row = &mut gl[k * BUCKETS..(k + 1) * BUCKETS];
                    for (j, v) in e.words {
                        row[*j as usize] += g * LEX_SCALE * v;
                    }
                }
            }
            for ((w, v), g) in head.w.iter_mut().zip(&mut vw).zip(&gw) {
                *v = MOMENTUM * *v + g + LAMBDA * *w;
                *w -= LEARNING_RATE * *v;
            }
            for ((w, v), g) in head.lex.iter_mut().zip(&mut vl).zip(&gl) {
                *v = MOMENTUM * *v + g + LAMBDA * *w;
                *w -= LEARNING_RATE * *v;
            }
            for ((b, v), g) in head.b.iter_mut().zip(&mut vb).zip(&gb) {
                *v = MOMENTUM * *v + g;
                *b -= LEARNING_RATE * *v;
            }
        }
        head
    }

    /// What training on `examples` depends on, hashed: the examples'
    /// classes, embeddings and word features and the training constants.
    /// Training is deterministic, so a head saved under the same key is the
    /// head training would make.
    pub(crate) fn key(examples: &[Example], classes: usize) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(FILE_MAGIC);
        for c in [SCALE, LAMBDA, LEARNING_RATE, MOMENTUM, LEX_SCALE] {
            h.update(c.to_le_bytes());
        }
        h.update(TRAIN_VERSION.to_le_bytes());
        for n in [ITERATIONS, BUCKETS, classes, examples.len()] {
            h.update((n as u64).to_le_bytes());
        }
        for e in examples {
            h.update((e.class as u64).to_le_bytes());
            h.update((e.embedding.len() as u64).to_le_bytes());
            for x in e.embedding {
                h.update(x.to_le_bytes());
            }
            h.update((e.words.len() as u64).to_le_bytes());
            for (b, v) in e.words {
                h.update(b.to_le_bytes());
                h.update(v.to_le_bytes());
            }
        }
        h.finalize().into()
    }

    fn file_len(classes: usize, dim: usize) -> usize {
        FILE_MAGIC.len() + 32 + 8 + 4 * classes * (dim + BUCKETS + 1)
    }

    /// Write the head, under `key`, to `path` (a new file renamed into
    /// place: a reader never sees half of one).
    pub(crate) fn save(&self, key: &[u8; 32], path: &std::path::Path) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(Head::file_len(self.classes, self.dim));
        buf.extend_from_slice(FILE_MAGIC);
        buf.extend_from_slice(key);
        buf.extend_from_slice(&(self.classes as u32).to_le_bytes());
        buf.extend_from_slice(&(self.dim as u32).to_le_bytes());
        for x in self.w.iter().chain(&self.lex).chain(&self.b) {
            buf.extend_from_slice(&x.to_le_bytes());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // A file there that is not a saved head (a mistyped path) stays.
        if let Ok(mut f) = std::fs::File::open(path) {
            let mut magic = [0u8; FILE_MAGIC.len()];
            if std::io::Read::read_exact(&mut f, &mut magic).is_err() || magic != FILE_MAGIC {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file that is not a saved classifier is in the way; not overwritten",
                ));
            }
        }
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}.{n}", std::process::id()));
        let tmp = std::path::PathBuf::from(tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &buf))
            .and_then(|()| std::fs::rename(&tmp, path))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
    }

    /// The head saved at `path` under `key`: None when there is none, it
    /// was trained on something else, or it is not a whole head file.
    pub(crate) fn load(
        path: &std::path::Path,
        key: &[u8; 32],
        classes: usize,
        dim: usize,
    ) -> Option<Head> {
        let want = Head::file_len(classes, dim);
        // Only a file of exactly the right size is read, and no more of it.
        let f = std::fs::File::open(path).ok()?;
        if f.metadata().ok()?.len() != want as u64 {
            return None;
        }
        let mut bytes = Vec::with_capacity(want);
        std::io::Read::read_to_end(&mut std::io::Read::take(f, want as u64), &mut bytes).ok()?;
        if bytes.len() != want {
            return None;
        }
        let rest = bytes.strip_prefix(FILE_MAGIC)?.strip_prefix(&key[..])?;
        let (shape, rest) = rest.split_at_checked(8)?;
        if shape[..4] != (classes as u32).to_le_bytes() || shape[4..] != (dim as u32).to_le_bytes()
        {
            return None;
        }
        let mut floats = rest
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")));
        let mut take = |n: usize| -> Vec<f32> { floats.by_ref().take(n).collect() };
        let w = take(classes * dim);
        let lex = take(classes * BUCKETS);
        let b = take(classes);
        (b.len() == classes && b.iter().chain(&w).chain(&lex).all(|x| x.is_finite())).then_some(
            Head {
                classes,
                dim,
                w,
                lex,
                b,
            },
        )
    }

    /// Probability of each class for the unit embedding `x` and word
    /// features `words`.
    pub(crate) fn probs(&self, x: &[f32], words: &[(u32, f32)]) -> Vec<f32> {
        let mut p = vec![0.0; self.classes];
        self.probs_into(x, words, &mut p);
        p
    }

    fn probs_into(&self, x: &[f32], words: &[(u32, f32)], p: &mut [f32]) {
        for (k, out) in p.iter_mut().enumerate() {
            let row = &self.w[k * self.dim..(k + 1) * self.dim];
            let lex = &self.lex[k * BUCKETS..(k + 1) * BUCKETS];
            let said: f32 = words.iter().map(|(j, v)| lex[*j as usize] * v).sum();
            *out = SCALE * dot(row, x) + LEX_SCALE * said + self.b[k];
        }
        let max = p.iter().copied().fold(f32::MIN, f32::max);
        let mut total = 0.0;
        for v in p.iter_mut() {
            *v = (*v - max).exp();
            total += *v;
        }
        for v in p.iter_mut() {
            *v /= total;
        }
    }
}

/// Dot product in eight independent lanes: a plain `sum()` must add in
/// order, which keeps the compiler from vectorising it, and training does
/// little else.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn train(ex: &[(usize, Vec<f32>)], classes: usize) -> Head {
        let ex: Vec<Example> = ex
            .iter()
            .map(|(class, embedding)| Example {
                class: *class,
                embedding,
                words: &[],
            })
            .collect();
        Head::train(&ex, classes)
    }

    #[test]
    fn separates_classes_and_sums_to_one() {
        let ex = vec![
            (0, unit(&[1.0, 0.1, 0.0])),
            (0, unit(&[0.9, 0.0, 0.2])),
            (1, unit(&[0.0, 1.0, 0.1])),
            (1, unit(&[0.1, 0.8, 0.0])),
            (2, unit(&[0.0, 0.1, 1.0])),
        ];
        let head = train(&ex, 3);
        for (c, x) in &ex {
            let p = head.probs(x, &[]);
            assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            let best = (0..3).max_by(|a, b| p[*a].total_cmp(&p[*b])).unwrap();
            assert_eq!(best, *c, "{p:?}");
        }
        // Deterministic: the same examples train the same head.
        assert_eq!(train(&ex, 3).w, head.w);
    }

    #[test]
    fn a_saved_head_loads_only_under_its_own_key() {
        let ex = [
            (0, unit(&[1.0, 0.1, 0.0])),
            (1, unit(&[0.0, 1.0, 0.1])),
            (2, unit(&[0.0, 0.1, 1.0])),
        ];
        let examples: Vec<Example> = ex
            .iter()
            .map(|(class, embedding)| Example {
                class: *class,
                embedding,
                words: &[(3, 1.0)],
            })
            .collect();
        let head = Head::train(&examples, 3);
        let key = Head::key(&examples, 3);
        let dir = std::env::temp_dir().join(format!("handlet-head-{}", std::process::id()));
        let path = dir.join("cache/intent.head");
        assert!(Head::load(&path, &key, 3, 3).is_none(), "nothing saved yet");
        head.save(&key, &path).unwrap();
        let loaded = Head::load(&path, &key, 3, 3).expect("its own key");
        assert_eq!(
            (loaded.w, loaded.lex, loaded.b),
            (head.w.clone(), head.lex.clone(), head.b.clone())
        );
        // Other examples, other key: not used.
        let mut other = examples;
        other[0].class = 1;
        assert_ne!(Head::key(&other, 3), key);
        assert!(Head::load(&path, &Head::key(&other, 3), 3, 3).is_none());
        // A weight damaged to NaN, the size unchanged: not used.
        let bytes = std::fs::read(&path).unwrap();
        let mut bad = bytes.clone();
        let at = bad.len() - 8;
        bad[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&path, &bad).unwrap();
        assert!(Head::load(&path, &key, 3, 3).is_none());
        // Cut short: not used.
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        assert!(Head::load(&path, &key, 3, 3).is_none());
        // Someone else's file at the path: left alone.
        std::fs::write(&path, b"my notes").unwrap();
        assert!(head.save(&key, &path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"my notes");
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_example_class_is_not_crowded_out() {
        let mut ex: Vec<(usize, Vec<f32>)> = (0..30)
            .map(|i| (0, unit(&[1.0, 0.02 * i as f32, 0.0])))
            .collect();
        ex.push((1, unit(&[0.6, 0.8, 0.0])));
        let head = train(&ex, 2);
        let p = head.probs(&unit(&[0.6, 0.8, 0.0]), &[]);
        assert!(p[1] > p[0], "{p:?}");
    }
}
