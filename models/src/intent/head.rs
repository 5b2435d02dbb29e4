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

#[derive(Debug, Clone)]
pub(crate) struct Head {
    classes: usize,
    dim: usize,
    /// `classes` rows of `dim` weights.
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Head {
    /// Train on `(class, unit embedding)` pairs. Each class weighs the same
    /// in the loss however many examples it has, so an intent a business
    /// gave thirty examples does not crowd out one with five.
    pub(crate) fn train(examples: &[(usize, Vec<f32>)], classes: usize) -> Head {
        let dim = examples.first().map_or(0, |(_, v)| v.len());
        let mut count = vec![0f32; classes];
        for (c, _) in examples {
            count[*c] += 1.0;
        }
        let present = count.iter().filter(|n| **n > 0.0).count().max(1) as f32;
        let mut head = Head {
            classes,
            dim,
            w: vec![0.0; classes * dim],
            b: vec![0.0; classes],
        };
        let (mut vw, mut vb) = (vec![0f32; classes * dim], vec![0f32; classes]);
        let (mut gw, mut gb) = (vec![0f32; classes * dim], vec![0f32; classes]);
        let mut p = vec![0f32; classes];
        for _ in 0..ITERATIONS {
            gw.fill(0.0);
            gb.fill(0.0);
            for (c, x) in examples {
                head.probs_into(x, &mut p);
                let weight = 1.0 / (count[*c] * present);
                for k in 0..classes {
                    let g = (p[k] - f32::from(k == *c)) * weight;
                    gb[k] += g;
                    let row = &mut gw[k * dim..(k + 1) * dim];
                    for (r, xi) in row.iter_mut().zip(x) {
                        *r += g * SCALE * xi;
                    }
                }
            }
            for ((w, v), g) in head.w.iter_mut().zip(&mut vw).zip(&gw) {
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

    /// Probability of each class for the unit embedding `x`.
    pub(crate) fn probs(&self, x: &[f32]) -> Vec<f32> {
        let mut p = vec![0.0; self.classes];
        self.probs_into(x, &mut p);
        p
    }

    fn probs_into(&self, x: &[f32], p: &mut [f32]) {
        for (k, out) in p.iter_mut().enumerate() {
            let row = &self.w[k * self.dim..(k + 1) * self.dim];
            *out = SCALE * dot(row, x) + self.b[k];
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

    #[test]
    fn separates_classes_and_sums_to_one() {
        let ex = vec![
            (0, unit(&[1.0, 0.1, 0.0])),
            (0, unit(&[0.9, 0.0, 0.2])),
            (1, unit(&[0.0, 1.0, 0.1])),
            (1, unit(&[0.1, 0.8, 0.0])),
            (2, unit(&[0.0, 0.1, 1.0])),
        ];
        let head = Head::train(&ex, 3);
        for (c, x) in &ex {
            let p = head.probs(x);
            assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            let best = (0..3).max_by(|a, b| p[*a].total_cmp(&p[*b])).unwrap();
            assert_eq!(best, *c, "{p:?}");
        }
        // Deterministic: the same examples train the same head.
        assert_eq!(Head::train(&ex, 3).w, head.w);
    }

    #[test]
    fn one_example_class_is_not_crowded_out() {
        let mut ex: Vec<(usize, Vec<f32>)> = (0..30)
            .map(|i| (0, unit(&[1.0, 0.02 * i as f32, 0.0])))
            .collect();
        ex.push((1, unit(&[0.6, 0.8, 0.0])));
        let head = Head::train(&ex, 2);
        let p = head.probs(&unit(&[0.6, 0.8, 0.0]));
        assert!(p[1] > p[0], "{p:?}");
    }
}
