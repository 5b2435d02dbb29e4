//! After a call: intent, sentiment, entities and the summary, from what the
//! caller said. One MiniLM session shared by every call (a few ms each, run
//! on the listener's own thread when its transcript is complete).

use crate::config::Config;
use handlet_models::embed::Embedder;
use handlet_models::entities;
use handlet_models::intent::{Classifier, sentiment, sentiment_examples};
use handlet_models::manifest::ModelPaths;
use handlet_models::summary::{Input, Summary, summarise};
use std::collections::HashMap;
use std::sync::Mutex;

pub struct Understanding {
    emb: Mutex<Embedder>,
    intents: Classifier,
    sentiment: Classifier,
    urgency: HashMap<String, &'static str>,
}

impl Understanding {
    /// Load MiniLM and embed the configured examples (ONNX Runtime must be
    /// initialised).
    pub fn load(paths: &ModelPaths, cfg: &Config) -> Result<Understanding, crate::Error> {
        let mut emb = Embedder::load(&paths.minilm, &paths.minilm_vocab)?;
        let examples = cfg.intent.examples();
        let texts: Vec<String> = examples.iter().flat_map(|i| i.examples.clone()).collect();
        let cache = cfg
            .intent
            .cache
            .clone()
            .unwrap_or_else(|| cfg.data_dir.join("cache/intent-examples.emb"));
        let started = std::time::Instant::now();
        // Hundreds of examples to embed on a cold cache: a session per core
        // for the while.
        let more = || Embedder::load(&paths.minilm, &paths.minilm_vocab);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
        let (vectors, report) =
            handlet_models::embed::embed_all(&mut emb, Some(&more), threads, &texts, Some(&cache))?;
        if let Some(problem) = &report.cache_problem {
            tracing::warn!(%problem, "intent example cache not used; embedded the examples instead");
        }
        // The trained head beside the embeddings: the same examples train
        // the same head, so it is read back rather than trained each start.
        let head_cache = cache.with_extension("head");
        let (intents, trained) = Classifier::from_embedded_cached(
            &examples,
            vectors,
            cfg.intent.unknown_below,
            Some(&head_cache),
        )?;
        if let Some(problem) = &trained.cache_problem {
            tracing::warn!(%problem, "intent head not cached; it is trained at each start");
        }
        tracing::info!(
            examples = texts.len(),
            cached = report.cached,
            computed = report.computed,
            head_cached = trained.from_cache,
            ms = started.elapsed().as_millis() as u64,
            "intent classifier ready"
        );
        let sentiment = Classifier::build(&mut emb, &sentiment_examples(), 0.0)?.nearest_only();
        let urgency = cfg
            .intent
            .intents
            .iter()
            .map(|d| (d.name.clone(), d.urgency.as_str()))
            .collect();
        Ok(Understanding {
            emb: Mutex::new(emb),
            intents,
            sentiment,
            urgency,
        })
    }

    /// Summarise what the caller said, on `at_ms` (for "tomorrow" and the like).
    pub fn summarise(
        &self,
        caller_text: &str,
        caller_id: Option<&str>,
        at_ms: i64,
    ) -> Result<Summary, crate::Error> {
        let mut emb = self
            .emb
            .lock()
            .map_err(|_| crate::Error::Io("embedder poisoned".into()))?;
        let intent = self.intents.classify(&mut emb, caller_text)?;
        let feel = sentiment(&self.sentiment, &mut emb, caller_text)?;
        drop(emb);
        let today = at_ms.div_euclid(86_400_000);
        let found = entities::extract(caller_text, today);
        let intent_urgency = self.urgency.get(&intent.label).copied().unwrap_or("normal");
        Ok(summarise(&Input {
            caller_text,
            intent: &intent,
            intent_urgency,
            sentiment: feel,
            entities: &found,
            caller_id,
        }))
    }
}

impl Understanding {
    /// What one utterance means, while the call runs: its intent and how
    /// sure, and the entities in it (a few ms of MiniLM: call it off the
    /// async runtime).
    pub fn hear(
        &self,
        text: &str,
        at_ms: i64,
    ) -> Result<(crate::routing::Understood, entities::Entities), crate::Error> {
        let mut emb = self
            .emb
            .lock()
            .map_err(|_| crate::Error::Io("embedder poisoned".into()))?;
        let c = self.intents.classify(&mut emb, text)?;
        drop(emb);
        let found = entities::extract(text, at_ms.div_euclid(86_400_000));
        Ok((
            crate::routing::Understood {
                intent: c.label,
                confidence: c.confidence,
            },
            found,
        ))
    }
}

/// The number in a SIP URI's user part, if it is one ("sip:+447700900123@.."),
/// written as it is dialled in `country`.
pub fn caller_number(uri: &str, country: crate::phone::Country) -> Option<String> {
    crate::phone::Phone::from_uri_in(uri, country).map(|p| p.national_in(country))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::Country;

    #[test]
    fn caller_number_from_uri() {
        assert_eq!(
            caller_number("<sip:+447700900123@trunk.example>", Country::GB).as_deref(),
            Some("07700900123")
        );
        assert_eq!(
            caller_number("sip:01134960000@10.0.0.1;user=phone", Country::GB).as_deref(),
            Some("01134960000")
        );
        assert_eq!(caller_number("sip:tester@127.0.0.1", Country::GB), None);
        // A US site writes its callers' numbers its own way.
        assert_eq!(
            caller_number("sip:+12125550100@trunk", Country::US).as_deref(),
            Some("2125550100")
        );
    }
}
