//! The shell around one leg's [`Transcriber`]: a std thread (the VAD model
//! must not run on a tokio worker) that reads the leg's 16 kHz frames,
//! runs the energy gate and Silero VAD, records the leg, and turns the
//! core's outputs into pool jobs and store writes.
//!
//! Two channels come in, and neither sender ever waits: audio on a bounded
//! one (the media leg drops and counts a frame when it is full), results
//! of whisper jobs on their own unbounded one (a job's answer is at most
//! one per submitted job, so it is bounded by the jobs outstanding). A
//! final the pool has no room for is held here, not waited for, and
//! retried; while too many are held the tap stops reading audio, so the
//! pressure lands on the leg's bounded channel instead of memory.

use super::core::{JobId, Outcome, Output, TapConfig, Transcriber};
use super::vad_pool::{VadLease, VadPool};
use crate::inference::{Job, JobError, Pool};
use crate::media::handoff::{Returns, Spares};
use crate::media::sink::FrameSink;
use crate::store::{Channel, SegmentRow, Store};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use handlet_dsp::gate::{Gate, GateConfig};
use handlet_models::vad::FRAME;

/// The energy gate in front of the VAD: frames below it are silence
/// without asking the model.
pub const GATE: GateConfig = GateConfig {
    open_dbfs: -55.0,
    close_dbfs: -60.0,
    hangover_frames: 10,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Frames of audio that may wait for the tap: ~10 s of 20 ms frames.
const AUDIO_QUEUE: usize = 512;
/// Finals the pool had no room for, held here before the tap stops
/// reading audio.
const HELD_FINALS_MAX: usize = 4;
/// How often held finals are offered to the pool again.
const RETRY: Duration = Duration::from_millis(20);

enum TapMsg {
    Audio(Vec<f32>),
    /// The leg ended (its sender was dropped).
    End,
}

/// The media leg's side of a tap: a [`FrameSink`] that never blocks. The
/// end of the leg is the channel closing (dropping the sender), which the
/// tap sees after the frames already queued, and which cannot be lost to
/// a full queue.
pub struct TapSink {
    tx: Option<Sender<TapMsg>>,
    spares: Spares,
}

impl FrameSink for TapSink {
    fn frame(&mut self, frame: &mut Vec<f32>) -> bool {
        let Some(tx) = &self.tx else { return true };
        if frame.is_empty() {
            return true;
        }
        match tx.try_send(TapMsg::Audio(self.spares.swap(frame))) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => true,
        }
    }

    fn end(&mut self) {
        self.tx = None;
    }
}

/// The tap's end of the audio channel.
pub struct AudioFeed {
    rx: Receiver<TapMsg>,
    returns: Returns,
}

impl AudioFeed {
    /// The next frame, or None once the leg has ended.
    pub fn recv(&self) -> Option<Vec<f32>> {
        match self.rx.recv() {
            Ok(TapMsg::Audio(v)) => Some(v),
            _ => None,
        }
    }

    /// Hand a read frame's vector back to the leg for the next frame.
    pub fn give_back(&self, v: Vec<f32>) {
        self.returns.give_back(v);
    }
}

/// A leg's audio channel: the sink the media leg fills and the feed the
/// tap reads (also what the hand-off allocation test drives).
pub fn audio_channel() -> (TapSink, AudioFeed) {
    let (tx, rx) = crossbeam_channel::bounded(AUDIO_QUEUE);
    let (returns, spares) = crate::media::handoff::pool();
    (
        TapSink {
            tx: Some(tx),
            spares,
        },
        AudioFeed { rx, returns },
    )
}

/// What to do when a leg's transcript is complete: summarise the call.
pub struct AfterCall {
    pub understanding: Arc<crate::understand::Understanding>,
    /// The number the call came from, for the callback field.
    pub caller_id: Option<String>,
}

/// Record this leg, encrypted (see [`crate::recording`]).
pub struct RecordPlan {
    pub data_dir: std::path::PathBuf,
    pub retention_days: u32,
    /// Played to the caller first: recording waits for it.
    pub announcement: Option<Announced>,
    /// The answering party's audio (a bridged call), for the right channel.
    pub callee: Option<Receiver<Vec<f32>>>,
}

/// The announcement a leg plays before recording starts.
pub struct Announced {
    /// Raised by the leg once the announcement has been sent.
    pub done: Arc<std::sync::atomic::AtomicBool>,
    /// What it says (transcribed once at start), for the agent's transcript.
    pub text: String,
    pub duration_ms: i64,
    /// Note on the call's timeline that it played (false: the gate is a
    /// voicemail's beep, not an announcement).
    pub noted: bool,
}

/// What a conversation needs to hear from the caller's tap as it happens.
#[derive(Debug)]
pub enum TapEvent {
    /// The caller began to speak.
    SpeechStarted,
    /// An utterance's final text, and what it means.
    Heard(Box<crate::receptionist::Heard>),
}

/// Events a conversation has not read yet; beyond this they are dropped
/// (a conversation reads them as they come: a few a second at most).
pub const EVENTS_MAX: usize = 64;

/// Where what the tap hears goes.
pub struct Outputs {
    /// Live events for the receptionist (None: nobody converses).
    pub events: Option<tokio::sync::mpsc::Sender<TapEvent>>,
    pub store: Store,
    /// Summarise the call when its transcript is complete.
    pub after: Option<AfterCall>,
    /// Record the leg.
    pub record: Option<RecordPlan>,
    /// Dropped when the tap's thread ends (the call's admission slot).
    pub hold: Option<Box<dyn std::any::Any + Send>>,
    /// A bridged call has a tap per side; the one that summarises and
    /// calls the transcript complete waits (a bounded time) for the other,
    /// whose [`Pair::Other`] is dropped when its own transcript is done.
    pub pair: Option<Pair>,
}

/// How the two taps of a bridged call finish together.
pub enum Pair {
    /// This tap summarises the call and marks it complete once `other`
    /// has closed (the other tap is done).
    Lead { other: Receiver<()> },
    /// This tap neither summarises nor marks the call complete; dropping
    /// it tells the lead tap it is done.
    Other(Sender<()>),
}

/// The lead's and the other's halves of a [`Pair`].
pub fn pair() -> (Pair, Pair) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    (Pair::Lead { other: rx }, Pair::Other(tx))
}

/// How long a lead tap waits for the other side's transcript.
const PAIR_WAIT: Duration = Duration::from_secs(30);

/// How the tap ended, for the leg's log line and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct TapReport {
    pub stats: super::core::TapStats,
    /// VAD frames the energy gate kept from the model.
    pub gated: u64,
    /// Times a final found the pool's finals lane full and was held.
    pub finals_held: u64,
}

pub struct TapHandle {
    pub sink: TapSink,
    pub thread: std::thread::JoinHandle<TapReport>,
}

/// Legs are numbered so the pool can tell one leg's partials from another's.
static NEXT_LEG: AtomicU64 = AtomicU64::new(1);

/// Start the tap for `channel` of call `call_id`. Does not block: the VAD
/// session is taken (or, if none is prepared, loaded) on the tap's thread.
pub fn start(
    call_id: String,
    channel: Channel,
    vads: Arc<VadPool>,
    cfg: TapConfig,
    pool: Pool,
    out: Outputs,
) -> Result<TapHandle, crate::Error> {
    let (sink, feed) = audio_channel();
    let (results_tx, results) = crossbeam_channel::unbounded();
    let leg = NEXT_LEG.fetch_add(1, Ordering::Relaxed);
    let thread = std::thread::Builder::new()
        .name("tap".into())
        .spawn(move || {
            let mut shell = Shell {
                call_id,
                leg,
                core: Transcriber::new(channel, cfg),
                pool,
                results_tx,
                held: VecDeque::new(),
                returns: feed.returns,
                out,
                recording: None,
                callee: None,
                report: TapReport::default(),
            };
            match vads.take() {
                Ok(vad) => shell.run(vad, feed.rx, results),
                Err(e) => {
                    tracing::error!(call = %shell.call_id, error = %e, "no VAD session: the call is not transcribed");
                    shell.out.store.transcript_complete(&shell.call_id);
                }
            }
            shell.report
        })
        .map_err(|e| crate::Error::Io(e.to_string()))?;
    Ok(TapHandle { sink, thread })
}

/// The recording in progress, with its own database connection (the
/// recording row and wrapped key are committed before audio is written).
struct Recording {
    rec: crate::recording::Recorder,
    conn: rusqlite::Connection,
}

struct Shell {
    call_id: String,
    leg: u64,
    core: Transcriber,
    pool: Pool,
    results_tx: Sender<(JobId, Outcome)>,
    /// Finals the pool had no room for yet, oldest first.
    held: VecDeque<Job>,
    returns: Returns,
    out: Outputs,
    recording: Option<Recording>,
    /// The answering party's audio, for the recording's right channel.
    callee: Option<Receiver<Vec<f32>>>,
    report: TapReport,
}

impl Shell {
    fn run(
        &mut self,
        mut vad: VadLease,
        audio: Receiver<TapMsg>,
        results: Receiver<(JobId, Outcome)>,
    ) {
        let mut buf: Vec<f32> = Vec::with_capacity(FRAME * 4);
        // The energy gate spares the VAD model the silent stretches of a
        // call (a line on hold, the caller listening). Its thresholds sit
        // well below quiet speech on a phone line (-30 dBFS and up) and its
        // hang-over keeps word endings; a closed gate counts as p = 0.
        let mut gate = Gate::new(GATE);
        loop {
            let reading = !self.core.is_ended() && self.held.len() < HELD_FINALS_MAX;
            let msg = if reading {
                let mut sel = crossbeam_channel::Select::new();
                let a = sel.recv(&audio);
                let r = sel.recv(&results);
                let op = if self.held.is_empty() {
                    Some(sel.select())
                } else {
                    sel.select_timeout(RETRY).ok()
                };
                match op {
                    Some(op) if op.index() == a => Some(match op.recv(&audio) {
                        Ok(m) => Input::Tap(m),
                        Err(_) => Input::Tap(TapMsg::End),
                    }),
                    Some(op) if op.index() == r => match op.recv(&results) {
                        Ok((id, res)) => Some(Input::Result(id, res)),
                        Err(_) => None,
                    },
                    _ => None,
                }
            } else {
                match results.recv_timeout(RETRY) {
                    Ok((id, res)) => Some(Input::Result(id, res)),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            };
            let now = crate::clock::now_ms();
            match msg {
                Some(Input::Tap(TapMsg::Audio(samples))) => {
                    self.core.audio_arrived(samples.len(), now);
                    self.record(&samples);
                    buf.extend_from_slice(&samples);
                    self.returns.give_back(samples);
                    let mut used = 0;
                    while buf.len() - used >= FRAME {
                        let frame = &buf[used..used + FRAME];
                        used += FRAME;
                        let p = if !gate.push(frame) {
                            self.report.gated += 1;
                            0.0
                        } else {
                            vad.process(frame).unwrap_or_else(|e| {
                                tracing::warn!(error = %e, "VAD failed on a frame");
                                0.0
                            })
                        };
                        self.core.push_frame(frame, p, now);
                    }
                    buf.drain(..used);
                }
                Some(Input::Tap(TapMsg::End)) => {
                    if !buf.is_empty() {
                        // The last part-frame, padded with silence.
                        buf.resize(FRAME, 0.0);
                        let p = if gate.push(&buf) {
                            vad.process(&buf).unwrap_or(0.0)
                        } else {
                            self.report.gated += 1;
                            0.0
                        };
                        self.core.push_frame(&buf, p, now);
                        buf.clear();
                    }
                    self.core.end(now);
                    self.finish_recording();
                }
                Some(Input::Result(id, res)) => self.core.job_done(id, res, now),
                None => {}
            }
            self.offer_held();
            if self.drain_outputs() {
                return;
            }
        }
    }

    /// Act on what the core asked for; true once the transcript is complete.
    fn drain_outputs(&mut self) -> bool {
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Submit {
                    id,
                    priority,
                    samples,
                } => {
                    let tx = self.results_tx.clone();
                    let job = Job {
                        leg: self.leg,
                        priority,
                        samples,
                        // Never blocks: the results channel is unbounded.
                        reply: Box::new(move |r| {
                            let _ = tx.send((id, r));
                        }),
                    };
                    if self.held.is_empty() {
                        if let Err(job) = self.pool.try_submit(job) {
                            self.report.finals_held += 1;
                            self.held.push_back(job);
                        }
                    } else {
                        // Keep finals in order behind those already held.
                        self.held.push_back(job);
                    }
                }
                Output::Promote(_) => {
                    self.pool.promote(self.leg);
                }
                Output::Final(seg, origin) => {
                    tracing::debug!(
                        call = %self.call_id,
                        wait_ms = origin.received_at_ms - origin.speech_ended_at_ms,
                        "final text after end of speech"
                    );
                    self.out.store.add_final(&self.call_id, seg, origin);
                }
                Output::Utterance { text } => {
                    if self.out.events.is_some() {
                        self.heard(&text);
                    }
                }
                Output::SpeechStarted => {
                    if let Some(tx) = &self.out.events {
                        let _ = tx.try_send(TapEvent::SpeechStarted);
                    }
                }
                Output::Partial(p) => self.out.store.add_partial(&self.call_id, p),
                Output::Complete { text } => {
                    match self.out.pair.take() {
                        Some(Pair::Other(done)) => drop(done),
                        Some(Pair::Lead { other }) => {
                            // Returns when the other tap drops its end.
                            if let Err(RecvTimeoutError::Timeout) = other.recv_timeout(PAIR_WAIT) {
                                tracing::warn!(call = %self.call_id, "the other side's transcript is still not done; the call is marked complete without waiting more");
                            }
                            self.summarise(&text);
                            self.out.store.transcript_complete(&self.call_id);
                        }
                        None => {
                            self.summarise(&text);
                            self.out.store.transcript_complete(&self.call_id);
                        }
                    }
                    let s = self.core.stats;
                    tracing::info!(
                        call = %self.call_id,
                        frames = s.frames,
                        gated = self.report.gated,
                        utterances = s.utterances,
                        finals_held = self.report.finals_held,
                        speculations_used = s.speculations_used,
                        "transcript complete"
                    );
                    self.report.stats = s;
                    return true;
                }
            }
        }
        false
    }

    /// Tell the conversation what the caller said and what it means (on
    /// this thread: MiniLM is a few ms, and must not run on the runtime).
    fn heard(&mut self, text: &str) {
        let Some(tx) = &self.out.events else { return };
        let (intent, entities) = match self.out.after.as_ref().filter(|_| !text.is_empty()) {
            Some(after) => match after.understanding.hear(text, crate::clock::now_ms()) {
                Ok((i, e)) => (Some(i), e),
                Err(e) => {
                    tracing::warn!(call = %self.call_id, error = %e, "cannot classify an utterance");
                    (None, Default::default())
                }
            },
            None => (None, Default::default()),
        };
        let _ = tx.try_send(TapEvent::Heard(Box::new(crate::receptionist::Heard {
            text: text.to_string(),
            intent,
            entities,
        })));
    }

    /// Held finals go to the pool oldest first, as room appears.
    fn offer_held(&mut self) {
        while let Some(job) = self.held.pop_front() {
            if let Err(job) = self.pool.try_submit(job) {
                self.held.push_front(job);
                return;
            }
        }
    }

    fn summarise(&mut self, text: &str) {
        let Some(after) = &self.out.after else { return };
        let now = crate::clock::now_ms();
        let t0 = std::time::Instant::now();
        match after
            .understanding
            .summarise(text, after.caller_id.as_deref(), now)
        {
            Ok(s) => {
                tracing::info!(
                    call = %self.call_id,
                    intent = %s.intent,
                    confidence = s.intent_confidence,
                    urgency = %s.urgency,
                    ms = t0.elapsed().as_millis() as u64,
                    "call summarised"
                );
                self.out.store.save_summary(&self.call_id, s, now);
            }
            Err(e) => tracing::warn!(call = %self.call_id, error = %e, "summary failed"),
        }
    }

    /// Every sample of the leg that is kept passes here, once recording has
    /// started (after the announcement, if there is one).
    fn record(&mut self, samples: &[f32]) {
        let waiting = self
            .out
            .record
            .as_ref()
            .and_then(|p| p.announcement.as_ref());
        if waiting.is_some_and(|a| !a.done.load(Ordering::Acquire)) {
            return;
        }
        if let Some(mut plan) = self.out.record.take() {
            self.callee = plan.callee.take();
            // The other side's audio from before the recording began
            // (while the notice was said) is not paired with anything.
            if let Some(rx) = &self.callee {
                while rx.try_recv().is_ok() {}
            }
            let store = &self.out.store;
            if let Some(a) = plan.announcement.as_ref().filter(|a| a.noted) {
                // Evidence the caller was told before anything was kept:
                // when, in the call's audio, the announcement had played;
                // and what the agent's leg said, in its own channel.
                store.add_event(
                    &self.call_id,
                    (self.core.clock.samples / 16) as i64,
                    crate::store::EventKind::Announcement,
                    "played to the caller; recording starts here".into(),
                );
                // (A conversation stores what it says itself.)
                if !a.text.is_empty() {
                    store.add_segment(
                        &self.call_id,
                        SegmentRow {
                            channel: Channel::Agent.as_str().into(),
                            start_ms: 0,
                            end_ms: a.duration_ms,
                            text: a.text.clone(),
                        },
                    );
                }
            }
            // The call row must be in before the recording row refers to it.
            store.flush();
            let started = crate::store::open_connection(store.path()).and_then(|conn| {
                let rec = crate::recording::Recorder::create(
                    &conn,
                    &plan.data_dir,
                    &self.call_id,
                    crate::clock::now_ms(),
                    plan.retention_days,
                )?;
                Ok(Recording { rec, conn })
            });
            match started {
                Ok(r) => self.recording = Some(r),
                Err(_) if store.disk_full() => {
                    tracing::warn!("cannot record this call: the data disk is full")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record this call; it goes on unrecorded")
                }
            }
        }
        if let Some(r) = self.recording.as_mut() {
            // The other side first, so both halves of this moment pair up.
            if let Some(rx) = &self.callee {
                while let Ok(v) = rx.try_recv() {
                    r.rec.push_callee(&v);
                }
            }
        }
        if let Some(r) = self.recording.as_mut()
            && let Err(e) = r.rec.push_caller(samples)
        {
            // Disk full or the like: stop here; what is written stays
            // readable and is recovered as truncated at the next start.
            tracing::warn!(error = %e, "recording stopped");
            self.recording = None;
        }
    }

    fn finish_recording(&mut self) {
        // The other side's last audio first (it is paired as it comes).
        if let (Some(r), Some(rx)) = (self.recording.as_mut(), &self.callee) {
            while let Ok(v) = rx.try_recv() {
                r.rec.push_callee(&v);
            }
        }
        if let Some(r) = self.recording.take() {
            match r.rec.finish(&r.conn) {
                Ok(w) => tracing::debug!(
                    recording = w.id,
                    duration_ms = w.duration_ms,
                    bytes = w.bytes,
                    "recording complete"
                ),
                Err(e) => tracing::warn!(error = %e, "recording could not be closed"),
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Held finals that never reached the pool are answered, so nothing
        // that counts replies waits for them.
        for j in self.held.drain(..) {
            (j.reply)(Err(JobError::Shed));
        }
    }
}

enum Input {
    Tap(TapMsg),
    Result(JobId, Outcome),
}
