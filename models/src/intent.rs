//! What the caller wants, and how they feel, by nearest examples.
//!
//! Each intent is a handful of example sentences a business can edit in its
//! config; no retraining. An utterance is embedded, compared with every
//! example, and each intent scores the mean of its two closest examples (one
//! lucky match counts less than two good ones). The best intent wins unless
//! its score is below the `unknown_below` threshold, calibrated on the
//! team's held-out test set (tests/intent.rs). Confidence is a softmax over
//! the intents' scores, so it reads as "how clearly this one beats the
//! others". Sentiment works the same way on built-in examples.

use crate::Error;
use crate::embed::{Embedder, cosine};

/// One intent and the sentences that say it.
#[derive(Debug, Clone)]
pub struct IntentExamples {
    pub name: String,
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// The intent, or "unknown".
    pub label: String,
    /// Softmax share of the winning intent, 0..1.
    pub confidence: f32,
    /// The best intent's similarity score, before the threshold.
    pub score: f32,
    /// The second-best intent and its confidence.
    pub runner_up: Option<(String, f32)>,
}

pub const UNKNOWN: &str = "unknown";
/// Softmax temperature over cosine scores (which sit in a narrow band).
const TEMPERATURE: f32 = 0.05;

/// Embedded examples, ready to classify against.
pub struct Classifier {
    names: Vec<String>,
    /// (intent index, embedding)
    examples: Vec<(usize, Vec<f32>)>,
    unknown_below: f32,
}

impl Classifier {
    pub fn build(
        emb: &mut Embedder,
        intents: &[IntentExamples],
        unknown_below: f32,
    ) -> Result<Classifier, Error> {
        let mut examples = Vec::new();
        for (i, it) in intents.iter().enumerate() {
            if it.examples.is_empty() {
                return Err(Error::Format(format!(
                    "intent {:?} has no examples",
                    it.name
                )));
            }
            for e in &it.examples {
                examples.push((i, emb.embed(e)?));
            }
        }
        Ok(Classifier {
            names: intents.iter().map(|i| i.name.clone()).collect(),
            examples,
            unknown_below,
        })
    }

    pub fn classify(&self, emb: &mut Embedder, text: &str) -> Result<Classification, Error> {
        let v = emb.embed(text)?;
        Ok(self.classify_embedding(&v))
    }

    pub fn classify_embedding(&self, v: &[f32]) -> Classification {
        // Two best similarities per intent.
        let mut best = vec![[f32::MIN; 2]; self.names.len()];
        for (i, e) in &self.examples {
            let s = cosine(v, e);
            let b = &mut best[*i];
            if s > b[0] {
                b[1] = b[0];
                b[0] = s;
            } else if s > b[1] {
                b[1] = s;
            }
        }
        let scores: Vec<f32> = best
            .iter()
            .map(|b| {
                if b[1] == f32::MIN {
                    b[0]
                } else {
                    (b[0] + b[1]) / 2.0
                }
            })
            .collect();
        let max = scores.iter().copied().fold(f32::MIN, f32::max);
        let exp: Vec<f32> = scores
            .iter()
            .map(|s| ((s - max) / TEMPERATURE).exp())
            .collect();
        let total: f32 = exp.iter().sum();
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
        let top = order[0];
        let runner_up = order
            .get(1)
            .map(|&i| (self.names[i].clone(), exp[i] / total));
        let label = if scores[top] < self.unknown_below {
            UNKNOWN.to_string()
        } else {
            self.names[top].clone()
        };
        Classification {
            label,
            confidence: exp[top] / total,
            score: scores[top],
            runner_up,
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Built-in sentiment examples: callers to a trades business.
pub fn sentiment_examples() -> Vec<IntentExamples> {
    let make = |name: &str, ex: &[&str]| IntentExamples {
        name: name.into(),
        examples: ex.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        make(
            "negative",
            &[
                "I'm really unhappy with the work you did",
                "this is the third time I've called and nobody has come",
                "it's a disgrace, I'm furious",
                "your engineer was rude and left a mess",
                "I'm very disappointed and frustrated",
                "this is unacceptable, I want my money back",
                "I'm worried sick, water is everywhere",
            ],
        ),
        make(
            "neutral",
            &[
                "I'd like to book an appointment",
                "can you give me a quote for a new boiler",
                "what time do you open on Saturday",
                "I'm calling about my invoice",
                "could someone call me back please",
                "my address is 12 High Street",
                "I need to reschedule my visit",
            ],
        ),
        make(
            "positive",
            &[
                "thank you so much, the job was brilliant",
                "your plumber did a fantastic job",
                "I'm really happy with the service",
                "great, that's perfect, thanks a lot",
                "lovely, I really appreciate your help",
                "you were recommended by a friend who loved your work",
                "wonderful, see you on Tuesday",
            ],
        ),
    ]
}
