//! One listener per call leg, on its own std thread: 16 kHz audio in, Silero
//! VAD and the end-pointer split it into utterances, the inference pool
//! transcribes them, and the segments go to the store with offsets from the
//! start of the call.
//!
//! While an utterance is being spoken the listener asks for a partial
//! transcript of the audio so far every `partial_interval_ms`, at most one in
//! flight per leg, so a slow box sheds previews rather than falling behind.
//! A partial that comes back after its utterance ended is dropped: the final
//! supersedes it.

use crate::inference::{Job, JobError, Pool, Priority};
use crate::store::{PartialRow, SegmentOrigin, SegmentRow, Store};
use handlet_dsp::gate::{Gate, GateConfig};
use handlet_models::endpoint::{EndpointConfig, Endpointer, Utterance};
use handlet_models::stt::Segment;
use handlet_models::vad::{FRAME, Vad};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

type Outcome = Result<Vec<Segment>, JobError>;

pub enum Msg {
    /// 16 kHz mono audio, in order.
    Audio(Vec<f32>),
    /// The leg ended: flush, wait for transcripts, mark complete.
    End,
    /// A final transcription came back for the utterance starting at `start_ms`.
    Final {
        start_ms: u64,
        speech_ended_at_ms: i64,
        result: Outcome,
    },
    /// A partial came back, covering `audio_ms` of the utterance.
    Partial {
        start_ms: u64,
        audio_ms: u64,
        speech_started_at_ms: i64,
        /// Set for a speculative final: the speech end it was cut at.
        speculative_end_ms: Option<u64>,
        result: Outcome,
    },
}

pub struct ListenerHandle {
    pub tx: mpsc::SyncSender<Msg>,
    pub thread: std::thread::JoinHandle<()>,
    /// Audio vectors the listener has read, for the leg to fill again.
    pub spares: crate::media::handoff::Spares,
}

#[derive(Debug, Clone, Copy)]
pub struct ListenerConfig {
    pub endpoint: EndpointConfig,
    /// 0 = no partials.
    pub partial_interval_ms: u64,
    /// Decode the utterance this long into a pause, before the end-pointer
    /// is sure it ended; 0 = off. See [`Speculation`].
    pub early_final_ms: u64,
}

/// What to do when the caller's transcript is complete: summarise it.
pub struct AfterCall {
    pub understanding: std::sync::Arc<crate::understand::Understanding>,
    /// The number the call came from, for the callback field.
    pub caller_id: Option<String>,
}

/// Where what the listener hears goes.
pub struct Outputs {
    pub store: Store,
    /// Summarise the call when its transcript is complete.
    pub after: Option<AfterCall>,
    /// Record the leg.
    pub record: Option<RecordPlan>,
}

/// Record this leg, encrypted (see [`crate::recording`]).
pub struct RecordPlan {
    pub data_dir: std::path::PathBuf,
    pub retention_days: u32,
    /// Played to the caller first: recording waits for it.
    pub announcement: Option<Announced>,
}

/// The announcement a leg plays before recording starts.
pub struct Announced {
    /// Raised by the leg once the announcement has been sent.
    pub done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// What it says (transcribed once at start), for the agent's transcript.
    pub text: String,
    pub duration_ms: i64,
}

/// The recording in progress, with its own database connection (the
/// recording row and wrapped key are committed before audio is written).
struct Recording {
    rec: crate::recording::Recorder,
    conn: rusqlite::Connection,
}

/// Legs are numbered so the pool can tell one leg's partials from another's.
static NEXT_LEG: AtomicU64 = AtomicU64::new(1);

/// Start a listener for `channel` ("caller") of call `call_id`.
pub fn start(
    call_id: String,
    channel: &'static str,
    vad_model: &Path,
    cfg: ListenerConfig,
    pool: Pool,
    out: Outputs,
) -> Result<ListenerHandle, crate::Error> {
    let Outputs {
        store,
        after,
        record,
    } = out;
    let vad = Vad::load(vad_model)?;
    // ~10 s of 20 ms frames; the media task drops (and counts) beyond that.
    let (tx, rx) = mpsc::sync_channel::<Msg>(512);
    let back = tx.clone();
    let (returns, spares) = crate::media::handoff::pool();
    let leg = NEXT_LEG.fetch_add(1, Ordering::Relaxed);
    let mut l = Listener {
        call_id,
        channel,
        leg,
        cfg,
        ep: Endpointer::new(cfg.endpoint),
        pool,
        store,
        back,
        finals_outstanding: 0,
        partial_in_flight: false,
        partial_mark: 0,
        ended: false,
        after,
        heard: Vec::new(),
        clock: StreamClock::default(),
        speculation: None,
        confirmed: Vec::new(),
        record,
        recording: None,
        returns,
        frames: 0,
        gated: 0,
    };
    let thread = std::thread::Builder::new()
        .name("listener".into())
        .spawn(move || l.run(vad, rx))
        .map_err(|e| crate::Error::Io(e.to_string()))?;
    Ok(ListenerHandle { tx, thread, spares })
}

struct Listener {
    call_id: String,
    channel: &'static str,
    leg: u64,
    cfg: ListenerConfig,
    ep: Endpointer,
    pool: Pool,
    store: Store,
    back: mpsc::SyncSender<Msg>,
    returns: crate::media::handoff::Returns,
    finals_outstanding: u64,
    partial_in_flight: bool,
    /// Length (samples) of the utterance audio the last partial covered.
    partial_mark: usize,
    ended: bool,
    after: Option<AfterCall>,
    /// Final text so far, by utterance start, for the summary.
    heard: Vec<(u64, String)>,
    clock: StreamClock,
    speculation: Option<Speculation>,
    /// Utterances the end-pointer finished whose speculative decode is still
    /// out, with when speech ended; kept to redo as a final if it is shed.
    confirmed: Vec<(Utterance, i64)>,
    /// Taken when the first audio arrives and the recording starts.
    record: Option<RecordPlan>,
    recording: Option<Recording>,
    /// VAD frames seen, and those the energy gate kept from the model.
    frames: u64,
    gated: u64,
}

/// A final decoded early. A caller who stops talking waits `min_silence_ms`
/// for the end-pointer and then for whisper; instead, `early_final_ms` into
/// the pause the utterance as it would end is decoded in the partial lane.
/// If the pause lasts, the end-pointer's utterance has the same samples
/// (`Endpointer::tentative`), so that result is the final and the wait is
/// mostly hidden behind the silence. If the caller goes on, it is dropped:
/// a wasted decode, sheddable like any partial.
struct Speculation {
    start_ms: u64,
    speech_end_ms: u64,
    /// The decode, once back.
    result: Option<Outcome>,
}

/// Maps stream offsets to the wall clock. Audio arrives in real time, so the
/// newest sample was heard "now" and one `ms` earlier in the stream is one ms
/// earlier on the wall; good to a packet's worth of jitter.
#[derive(Debug, Default, Clone, Copy)]
struct StreamClock {
    /// Samples (16 kHz) received so far.
    samples: u64,
    /// Wall-clock time (ms since the epoch) the newest sample arrived.
    at_ms: i64,
}

impl StreamClock {
    fn received(&mut self, samples: usize, now_ms: i64) {
        self.samples += samples as u64;
        self.at_ms = now_ms;
    }

    fn wall_ms(&self, stream_ms: u64) -> i64 {
        self.at_ms - (self.samples / 16) as i64 + stream_ms as i64
    }
}

impl Listener {
    fn run(&mut self, mut vad: Vad, rx: mpsc::Receiver<Msg>) {
        let mut buf: Vec<f32> = Vec::with_capacity(FRAME * 4);
        // The energy gate spares the VAD model the silent stretches of a
        // call (a line on hold, the caller listening). Its thresholds sit
        // well below quiet speech on a phone line (-30 dBFS and up) and its
        // hang-over keeps word endings; a closed gate counts as p = 0.
        let mut gate = Gate::new(GateConfig {
            open_dbfs: -55.0,
            close_dbfs: -60.0,
            hangover_frames: 10,
        });
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Audio(samples) if !self.ended => {
                    self.clock.received(samples.len(), crate::call::now_ms());
                    self.record(&samples);
                    buf.extend_from_slice(&samples);
                    let mut used = 0;
                    while buf.len() - used >= FRAME {
                        let frame = &buf[used..used + FRAME];
                        used += FRAME;
                        self.frames += 1;
                        let p = if !gate.push(frame) {
                            self.gated += 1;
                            0.0
                        } else {
                            match vad.process(frame) {
                                Ok(p) => p,
                                Err(e) => {
                                    tracing::warn!(error = %e, "VAD failed on a frame");
                                    0.0
                                }
                            }
                        };
                        if let Some(u) = self.ep.push(frame, p) {
                            self.utterance_done(u);
                        }
                    }
                    buf.drain(..used);
                    self.returns.give_back(samples);
                    self.maybe_speculate();
                    self.maybe_partial();
                }
                Msg::Audio(samples) => self.returns.give_back(samples),
                Msg::End => {
                    if !self.ended {
                        self.ended = true;
                        if !buf.is_empty() {
                            buf.resize(FRAME, 0.0);
                            let p = vad.process(&buf).unwrap_or(0.0);
                            if let Some(u) = self.ep.push(&buf, p) {
                                self.utterance_done(u);
                            }
                        }
                        if let Some(u) = self.ep.flush() {
                            self.utterance_done(u);
                        }
                        self.finish_recording();
                    }
                }
                Msg::Final {
                    start_ms,
                    speech_ended_at_ms,
                    result,
                } => {
                    self.finals_outstanding = self.finals_outstanding.saturating_sub(1);
                    self.store_final(start_ms, speech_ended_at_ms, result);
                }
                Msg::Partial {
                    start_ms,
                    audio_ms,
                    speech_started_at_ms,
                    speculative_end_ms: Some(end),
                    result,
                } => self.speculation_back(start_ms, end, audio_ms, speech_started_at_ms, result),
                Msg::Partial {
                    start_ms,
                    audio_ms,
                    speech_started_at_ms,
                    speculative_end_ms: None,
                    result,
                } => {
                    self.partial_in_flight = false;
                    self.store_partial(start_ms, audio_ms, speech_started_at_ms, result);
                }
            }
            if self.ended && self.finals_outstanding == 0 && !self.partial_in_flight {
                self.summarise();
                self.store.transcript_complete(&self.call_id);
                tracing::info!(
                    call = %self.call_id,
                    frames = self.frames,
                    gated = self.gated,
                    "transcript complete"
                );
                return;
            }
        }
    }

    fn summarise(&mut self) {
        let Some(after) = &self.after else { return };
        // Finals can come back out of order with several workers.
        self.heard.sort_by_key(|(start, _)| *start);
        let text = self
            .heard
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let now = crate::call::now_ms();
        let t0 = std::time::Instant::now();
        match after
            .understanding
            .summarise(&text, after.caller_id.as_deref(), now)
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
                self.store.save_summary(&self.call_id, s, now);
            }
            Err(e) => tracing::warn!(call = %self.call_id, error = %e, "summary failed"),
        }
    }

    /// The end-pointer finished an utterance: use its speculative decode if
    /// it matches, else transcribe it now.
    fn utterance_done(&mut self, u: Utterance) {
        self.partial_mark = 0;
        let Some(mut spec) = self.speculation.take() else {
            return self.submit_final(u);
        };
        if (spec.start_ms, spec.speech_end_ms) != (u.start_ms, u.speech_end_ms) {
            // The caller went on after that pause; its late answer is ignored.
            return self.submit_final(u);
        }
        let ended_at = self.clock.wall_ms(u.speech_end_ms);
        match spec.result.take() {
            Some(Ok(segs)) => self.store_final(u.start_ms, ended_at, Ok(segs)),
            Some(Err(_)) => self.submit_final(u),
            None => {
                // Still queued behind other calls' previews? It is a final now.
                self.pool.promote(self.leg);
                self.finals_outstanding += 1;
                self.confirmed.push((u, ended_at));
            }
        }
    }

    fn record(&mut self, samples: &[f32]) {
        let waiting = self.record.as_ref().and_then(|p| p.announcement.as_ref());
        if waiting.is_some_and(|a| !a.done.load(std::sync::atomic::Ordering::Acquire)) {
            return;
        }
        if let Some(plan) = self.record.take() {
            if let Some(a) = &plan.announcement {
                // Evidence the caller was told before anything was kept:
                // when, in the call's audio, the announcement had played;
                // and what the agent's leg said, in its own channel.
                self.store.add_event(
                    &self.call_id,
                    (self.clock.samples / 16) as i64,
                    "announcement",
                    "played to the caller; recording starts here".into(),
                );
                self.store.add_segment(
                    &self.call_id,
                    SegmentRow {
                        channel: "agent".into(),
                        start_ms: 0,
                        end_ms: a.duration_ms,
                        text: a.text.clone(),
                    },
                );
            }
            // The call row must be in before the recording row refers to it.
            self.store.flush();
            let started = crate::store::open_connection(self.store.path()).and_then(|conn| {
                let rec = crate::recording::Recorder::create(
                    &conn,
                    &plan.data_dir,
                    &self.call_id,
                    crate::call::now_ms(),
                    plan.retention_days,
                )?;
                Ok(Recording { rec, conn })
            });
            match started {
                Ok(r) => self.recording = Some(r),
                Err(_) if self.store.disk_full() => {
                    tracing::warn!("cannot record this call: the data disk is full")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record this call; it goes on unrecorded")
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

    fn maybe_speculate(&mut self) {
        if self.cfg.early_final_ms == 0 {
            return;
        }
        let Some(t) = self.ep.tentative() else { return };
        if t.silence_ms < self.cfg.early_final_ms
            || self
                .speculation
                .as_ref()
                .is_some_and(|s| (s.start_ms, s.speech_end_ms) == (t.start_ms, t.speech_end_ms))
        {
            return;
        }
        let (start_ms, speech_end_ms) = (t.start_ms, t.speech_end_ms);
        let job = self.partial_job(start_ms, t.samples.to_vec(), Some(speech_end_ms));
        if self.pool.submit_blocking(job).is_ok() {
            // A queued partial of this leg was superseded by this job and
            // answered Shed; that answer clears `partial_in_flight`.
            self.speculation = Some(Speculation {
                start_ms,
                speech_end_ms,
                result: None,
            });
        }
    }

    fn speculation_back(
        &mut self,
        start_ms: u64,
        speech_end_ms: u64,
        audio_ms: u64,
        speech_started_at_ms: i64,
        result: Outcome,
    ) {
        let key = (start_ms, speech_end_ms);
        if let Some(i) = self
            .confirmed
            .iter()
            .position(|(u, _)| (u.start_ms, u.speech_end_ms) == key)
        {
            let (u, ended_at) = self.confirmed.swap_remove(i);
            self.finals_outstanding = self.finals_outstanding.saturating_sub(1);
            match result {
                Ok(segs) => self.store_final(u.start_ms, ended_at, Ok(segs)),
                // Shed under load or failed: do it properly as a final.
                Err(_) => self.submit_final(u),
            }
            return;
        }
        let current = self
            .speculation
            .as_ref()
            .map(|s| (s.start_ms, s.speech_end_ms));
        if current != Some(key) {
            return; // superseded: the caller kept talking
        }
        // Still in the pause: show it as live text, keep it for the final.
        if let Ok(segs) = &result {
            self.store_partial(start_ms, audio_ms, speech_started_at_ms, Ok(segs.clone()));
        }
        if let Some(spec) = self.speculation.as_mut() {
            spec.result = Some(result);
        }
    }

    fn submit_final(&mut self, u: Utterance) {
        self.partial_mark = 0;
        let back = self.back.clone();
        let start_ms = u.start_ms;
        let speech_ended_at_ms = self.clock.wall_ms(u.speech_end_ms);
        self.speculation = None;
        let job = Job {
            leg: self.leg,
            priority: Priority::Final,
            samples: u.samples,
            reply: Box::new(move |result| {
                // Blocking is fine: this runs on a whisper worker thread.
                let _ = back.send(Msg::Final {
                    start_ms,
                    speech_ended_at_ms,
                    result,
                });
            }),
        };
        if self.pool.submit_blocking(job).is_ok() {
            self.finals_outstanding += 1;
        }
    }

    /// A decode of the utterance in progress, answered as `Msg::Partial`.
    fn partial_job(
        &self,
        start_ms: u64,
        samples: Vec<f32>,
        speculative_end_ms: Option<u64>,
    ) -> Job {
        let audio_ms = samples.len() as u64 / 16;
        let speech_started_at_ms = self
            .clock
            .wall_ms(self.ep.current_speech_start_ms().unwrap_or(start_ms));
        let back = self.back.clone();
        Job {
            leg: self.leg,
            priority: Priority::Partial,
            samples,
            reply: Box::new(move |result| {
                let _ = back.send(Msg::Partial {
                    start_ms,
                    audio_ms,
                    speech_started_at_ms,
                    speculative_end_ms,
                    result,
                });
            }),
        }
    }

    fn maybe_partial(&mut self) {
        let every = (self.cfg.partial_interval_ms * 16) as usize;
        if every == 0 || self.partial_in_flight {
            return;
        }
        // In a pause the speculative final is the better preview.
        if self.cfg.early_final_ms > 0 && self.ep.tentative().is_some() {
            return;
        }
        let Some((start_ms, audio)) = self.ep.current() else {
            return;
        };
        if audio.len() < self.partial_mark + every {
            return;
        }
        self.partial_mark = audio.len();
        let samples = audio.to_vec();
        let job = self.partial_job(start_ms, samples, None);
        if self.pool.submit_blocking(job).is_ok() {
            self.partial_in_flight = true;
        }
    }

    fn store_final(&mut self, start_ms: u64, speech_ended_at_ms: i64, result: Outcome) {
        match result {
            Ok(segs) => {
                let origin = SegmentOrigin {
                    utterance_start_ms: start_ms as i64,
                    received_at_ms: crate::call::now_ms(),
                    speech_ended_at_ms,
                };
                tracing::debug!(
                    call = %self.call_id,
                    wait_ms = origin.received_at_ms - speech_ended_at_ms,
                    "final text after end of speech"
                );
                for s in segs {
                    self.heard.push((start_ms + s.start_ms, s.text.clone()));
                    tracing::debug!(call = %self.call_id, start_ms = s.start_ms + start_ms, "transcript segment");
                    self.store.add_final(
                        &self.call_id,
                        SegmentRow {
                            channel: self.channel.into(),
                            start_ms: (s.start_ms + start_ms) as i64,
                            end_ms: (s.end_ms + start_ms) as i64,
                            text: s.text,
                        },
                        origin,
                    );
                }
            }
            Err(e) => {
                tracing::warn!(call = %self.call_id, error = ?e, "transcription failed")
            }
        }
    }

    fn store_partial(
        &mut self,
        start_ms: u64,
        audio_ms: u64,
        speech_started_at_ms: i64,
        result: Outcome,
    ) {
        // Only while that utterance is still being spoken; after, the final
        // (queued or stored) is the truth.
        let live = self.ep.current().is_some_and(|(s, _)| s == start_ms);
        let Ok(segs) = result else { return };
        if !live || segs.is_empty() {
            return;
        }
        let text = segs
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        self.store.add_partial(
            &self.call_id,
            PartialRow {
                channel: self.channel.into(),
                utterance_start_ms: start_ms as i64,
                audio_ms: audio_ms as i64,
                text,
                received_at_ms: crate::call::now_ms(),
                speech_started_at_ms,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::StreamClock;

    #[test]
    fn stream_offsets_map_back_from_the_newest_sample() {
        let mut c = StreamClock::default();
        c.received(16_000, 1_000_000); // 1 s of audio, newest heard at t
        c.received(8_000, 1_000_500); // half a second later
        assert_eq!(c.wall_ms(1_500), 1_000_500);
        assert_eq!(c.wall_ms(900), 999_900);
        assert_eq!(c.wall_ms(0), 999_000);
    }
}
