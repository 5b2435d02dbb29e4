//! What the caller wants, and how they feel, from example sentences.
//!
//! Each intent is a list of example sentences a business can edit in its
//! config. When a classifier is built, the examples are embedded and a
//! linear softmax head is trained on them and on their words and word
//! pairs ([`head`], [`lexical`]; a few hundred ms, no separate training
//! step). An utterance is embedded; the head's
//! probabilities and a softmax over each intent's nearest examples (the mean
//! of its two closest), half each, name the intent, and the winner's share
//! is the confidence. When nothing the caller said is like any example (the
//! best such mean below `unknown_below`), the answer is "unknown" however
//! the head leans. An intent named "unknown"
//! in the examples is the reserved class of calls the business does not
//! handle (wrong numbers, other companies), and is answered as "unknown".
//! Sentiment uses the nearest examples alone, on built-in examples
//! ([`Classifier::nearest_only`]).

use crate::Error;
use crate::embed::{Embedder, cosine};

mod head;
mod lexical;
use head::Head;

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
    /// The winning intent's share of the vote (head and nearest examples,
    /// half each), 0..1.
    pub confidence: f32,
    /// How like the nearest examples the sentence is (the best mean of an
    /// intent's two closest, over all intents), before `unknown_below`.
    pub score: f32,
    /// The second-best intent and its confidence.
    pub runner_up: Option<(String, f32)>,
    /// The head and the nearest examples, each alone, name the same
    /// intent (true without a head).
    pub agree: bool,
}

/// How a classifier's head was had ([`Classifier::from_embedded_cached`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trained {
    /// Read from the cache rather than trained.
    pub from_cache: bool,
    /// The cache could not be written (the head was still trained).
    pub cache_problem: Option<String>,
}

pub const UNKNOWN: &str = "unknown";
/// Softmax temperature over the neighbours' cosine scores (which sit in a
/// narrow band).
const TEMPERATURE: f32 = 0.05;

/// Embedded examples, ready to classify against.
pub struct Classifier {
    names: Vec<String>,
    /// (intent index, embedding)
    examples: Vec<(usize, Vec<f32>)>,
    /// None: the nearest examples alone ([`Classifier::nearest_only`]).
    head: Option<Head>,
    unknown_below: f32,
}

impl Classifier {
    pub fn build(
        emb: &mut Embedder,
        intents: &[IntentExamples],
        unknown_below: f32,
    ) -> Result<Classifier, Error> {
        let texts: Vec<String> = intents.iter().flat_map(|i| i.examples.clone()).collect();
        let (vectors, _) = crate::embed::embed_all(emb, None, 1, &texts, None)?;
        Classifier::from_embedded(intents, vectors, unknown_below)
    }

    /// A classifier from examples already embedded ([`crate::embed::embed_all`]):
    /// `vectors` holds every intent's examples in order.
    pub fn from_embedded(
        intents: &[IntentExamples],
        vectors: Vec<Vec<f32>>,
        unknown_below: f32,
    ) -> Result<Classifier, Error> {
        Ok(Classifier::from_embedded_cached(intents, vectors, unknown_below, None)?.0)
    }

    /// As [`Classifier::from_embedded`], with the trained head kept in
    /// `head_cache`: a head trained on exactly these examples is read
    /// back instead of trained again (a second or two for thousands of
    /// examples, at every start). Derived data: a missing, stale or
    /// damaged file is retrained and rewritten. Also says whether the
    /// head came from the file, and any trouble writing it.
    pub fn from_embedded_cached(
        intents: &[IntentExamples],
        vectors: Vec<Vec<f32>>,
        unknown_below: f32,
        head_cache: Option<&std::path::Path>,
    ) -> Result<(Classifier, Trained), Error> {
        let want: usize = intents.iter().map(|i| i.examples.len()).sum();
        if vectors.len() != want {
            return Err(Error::Format(format!(
                "{} embeddings for {want} examples",
                vectors.len()
            )));
        }
        let mut vectors = vectors.into_iter();
        let mut examples = Vec::new();
        for (i, it) in intents.iter().enumerate() {
            if it.examples.is_empty() {
                return Err(Error::Format(format!(
                    "intent {:?} has no examples",
                    it.name
                )));
            }
            for _ in &it.examples {
                examples.push((i, vectors.next().expect("counted")));
            }
        }
        let words: Vec<Vec<(u32, f32)>> = intents
            .iter()
            .flat_map(|i| i.examples.iter().map(|e| lexical::features(e)))
            .collect();
        let training: Vec<head::Example> = examples
            .iter()
            .zip(&words)
            .map(|((class, embedding), words)| head::Example {
                class: *class,
                embedding,
                words,
            })
            .collect();
        let classes = intents.len();
        let dim = training.first().map_or(0, |e| e.embedding.len());
        let key = Head::key(&training, classes);
        let mut trained = Trained::default();
        let head = match head_cache.and_then(|p| Head::load(p, &key, classes, dim)) {
            Some(h) => {
                trained.from_cache = true;
                h
            }
            None => {
                let h = Head::train(&training, classes);
                if let Some(path) = head_cache
                    && let Err(e) = h.save(&key, path)
                {
                    trained.cache_problem = Some(format!("{}: {e}", path.display()));
                }
                h
            }
        };
        Ok((
            Classifier {
                names: intents.iter().map(|i| i.name.clone()).collect(),
                examples,
                head: Some(head),
                unknown_below,
            },
            trained,
        ))
    }

    /// Answer by the nearest examples alone: for a handful of examples per
    /// class (sentiment's built-in few), where a trained head has too
    /// little to learn from.
    pub fn nearest_only(mut self) -> Classifier {
        self.head = None;
        self
    }

    pub fn classify(&self, emb: &mut Embedder, text: &str) -> Result<Classification, Error> {
        let v = emb.embed(text)?;
        Ok(self.classify_embedding(&v, text))
    }

    /// `text` and its embedding `v`.
    pub fn classify_embedding(&self, v: &[f32], text: &str) -> Classification {
        // Two best similarities per intent: one lucky match counts less
        // than two good ones.
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
        let near = scores.iter().copied().fold(f32::MIN, f32::max);
        // The head and the nearest examples, half each: the head generalises
        // over an intent's examples, the neighbours keep a close match to
        // one of them (a business's own wording) from being outvoted. On
        // the spoken set (tests/intent_spoken.rs) the mix beat either alone.
        let knn: Vec<f32> = scores
            .iter()
            .map(|s| ((s - near) / TEMPERATURE).exp())
            .collect();
        let knn_total: f32 = knn.iter().sum();
        let argmax = |xs: &[f32]| (0..xs.len()).max_by(|a, b| xs[*a].total_cmp(&xs[*b]));
        let mut agree = true;
        let p: Vec<f32> = match &self.head {
            Some(head) => {
                let h = head.probs(v, &lexical::features(text));
                agree = argmax(&h) == argmax(&knn);
                h.iter()
                    .zip(&knn)
                    .map(|(h, k)| 0.5 * h + 0.5 * k / knn_total)
                    .collect()
            }
            None => knn.iter().map(|k| k / knn_total).collect(),
        };
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|a, b| p[*b].total_cmp(&p[*a]));
        let top = order[0];
        let label = if near < self.unknown_below {
            UNKNOWN.to_string()
        } else {
            self.names[top].clone()
        };
        // The best other real intent: not the answer, not the "unknown" class.
        let runner_up = order
            .iter()
            .find(|&&i| self.names[i] != label && self.names[i] != UNKNOWN)
            .map(|&i| (self.names[i].clone(), p[i]));
        Classification {
            label,
            confidence: p[top],
            score: near,
            runner_up,
            agree,
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
