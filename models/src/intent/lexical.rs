//! Words as features, beside the sentence embedding.
//!
//! MiniLM places sentences that share a topic close together whatever they
//! ask ("the leak you fixed is back" sits near a leaking pipe), and a few
//! words decide many calls ("quote", "invoice", "cancel", "burst"). The
//! head therefore also sees which words and word pairs a sentence holds,
//! hashed into a fixed number of buckets: no vocabulary to keep, any
//! business's examples work, and what a peer says cannot grow it.

use crate::guard::normalise;

/// Hash buckets: few enough to train in milliseconds, enough that the few
/// thousand distinct words and pairs of a business's examples rarely share
/// one.
pub(crate) const BUCKETS: usize = 1 << 13;

/// Sorted, distinct buckets of a sentence's words and adjacent pairs, each
/// with the same weight, together of unit length.
pub(crate) fn features(text: &str) -> Vec<(u32, f32)> {
    let norm = normalise(&text.replace("n't", " not"));
    let words: Vec<&str> = norm.split(' ').filter(|w| !w.is_empty()).collect();
    let mut out: Vec<u32> = Vec::with_capacity(words.len() * 2);
    for (i, w) in words.iter().enumerate() {
        out.push(bucket(&[stem(w)]));
        if let Some(next) = words.get(i + 1) {
            out.push(bucket(&[stem(w), "\u{1}", stem(next)]));
        }
    }
    out.sort_unstable();
    out.dedup();
    let v = 1.0 / (out.len().max(1) as f32).sqrt();
    out.into_iter().map(|b| (b, v)).collect()
}

/// A crude English stem, so "leaking", "leaks" and "leaked" are one word;
/// words of four letters or fewer are left alone ("gas", "bus").
fn stem(w: &str) -> &str {
    for suffix in ["ing", "ed", "es", "s"] {
        if w.len() > suffix.len() + 3
            && let Some(s) = w.strip_suffix(suffix)
        {
            return s;
        }
    }
    w
}

/// FNV-1a over the parts, into a bucket.
fn bucket(parts: &[&str]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    (h % BUCKETS as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_pairs_of_a_sentence_are_unit_length() {
        let f = features("The pipe's LEAKING, the pipe leaks!");
        let norm: f32 = f.iter().map(|(_, v)| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        // "leaking" and "leaks" stem alike; "the" and "pipe" repeat.
        assert!(f.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(features("leaking"), features("leaks"));
        assert_ne!(features("gas"), features("ga"));
        assert!(features("").is_empty());
        assert!(f.iter().all(|(b, _)| (*b as usize) < BUCKETS));
    }
}
