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
                "terrible service, absolutely awful",
                "the worst company I have ever dealt with",
                "I'm so angry about this",
                "this is ridiculous, I'm fed up",
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
                "I'm so pleased, thank you",
            ],
        ),
    ]
}

/// Words that carry polarity on their own. Embeddings place "the best
/// service" and "the worst service" close together, so sentiment checks
/// these first and falls back to the nearest examples when none is said.
const NEGATIVE_WORDS: &[&str] = &[
    "worst",
    "terrible",
    "awful",
    "appalling",
    "disgrace",
    "disgraceful",
    "angry",
    "furious",
    "livid",
    "unhappy",
    "disappointed",
    "disappointing",
    "rude",
    "useless",
    "ridiculous",
    "unacceptable",
    "complain",
    "complaint",
    "fed",
    "rubbish",
    "shocking",
    "horrible",
];
const POSITIVE_WORDS: &[&str] = &[
    "best",
    "brilliant",
    "great",
    "fantastic",
    "excellent",
    "wonderful",
    "lovely",
    "pleased",
    "happy",
    "thanks",
    "thank",
    "perfect",
    "amazing",
    "helpful",
    "appreciate",
    "superb",
];

/// Net polarity from the word lists; a "not"/"never"/"n't" just before a
/// word ("not happy", "not very happy") flips it.
pub fn lexicon_polarity(text: &str) -> i32 {
    let words: Vec<String> = crate::guard::normalise(&text.replace("n't", " not"))
        .split(' ')
        .map(String::from)
        .collect();
    let mut net = 0;
    for (i, w) in words.iter().enumerate() {
        let p = if NEGATIVE_WORDS.contains(&w.as_str()) {
            -1
        } else if POSITIVE_WORDS.contains(&w.as_str()) {
            1
        } else {
            continue;
        };
        // "not happy", or "not very happy".
        let negator = |j: usize| matches!(words[j].as_str(), "not" | "never" | "no");
        let intensifier =
            |j: usize| matches!(words[j].as_str(), "very" | "really" | "too" | "so" | "that");
        let negated =
            (i >= 1 && negator(i - 1)) || (i >= 2 && intensifier(i - 1) && negator(i - 2));
        net += if negated { -p } else { p };
    }
    net
}

/// "negative", "neutral" or "positive": the word lists when they speak,
/// otherwise the nearest sentiment examples.
pub fn sentiment(clf: &Classifier, emb: &mut Embedder, text: &str) -> Result<&'static str, Error> {
    match lexicon_polarity(text) {
        n if n < 0 => Ok("negative"),
        n if n > 0 => Ok("positive"),
        _ => Ok(match clf.classify(emb, text)?.label.as_str() {
            "negative" => "negative",
            "positive" => "positive",
            _ => "neutral",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexicon_handles_negation() {
        assert!(lexicon_polarity("the worst service I've ever had") < 0);
        assert!(lexicon_polarity("I'm not happy at all") < 0);
        assert!(lexicon_polarity("I wasn't disappointed, thanks") > 0);
        assert_eq!(lexicon_polarity("I need a quote for a boiler"), 0);
    }
}
