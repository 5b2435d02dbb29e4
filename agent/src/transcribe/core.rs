//! The transcription core of one leg, with no I/O and no clock of its own:
//! 512-sample frames with their speech probability and `now` go in; jobs to
//! submit to the inference pool, partial and final text to store, and
//! "transcript complete" come out of [`Transcriber::poll_output`]. Results
//! of jobs come back through [`Transcriber::job_done`], named by the id the
//! core gave the job, so a late or superseded answer is recognised and
//! dropped instead of being mistaken for the current one.
//!
//! Every piece of text passes through [`Transcriber::poll_output`] before
//! it is stored: the one place a redaction step plugs in.
//!
//! Partials: while an utterance is being spoken, a decode of the audio so
//! far is asked for every `partial_interval_ms`, at most one in flight, so a
//! slow box sheds previews instead of falling behind.
//!
//! Speculative finals: a caller who stops talking waits `min_silence_ms`
//! for the end-pointer and then for whisper. Instead, `early_final_ms` into
//! the pause the utterance as it would end is decoded in the partial lane.
//! If the pause lasts, the end-pointer's utterance has the same samples
//! (`Endpointer::tentative`), so that decode is the final and the wait is
//! mostly hidden behind the silence; if it is still queued it is promoted to
//! the finals lane. If the caller goes on, its answer is ignored.

use crate::inference::{JobError, Priority};
use crate::store::{Channel, PartialRow, SegmentOrigin, SegmentRow};
use handlet_models::endpoint::{EndpointConfig, Endpointer, Utterance};
use handlet_models::stt::Segment;
use std::collections::{HashMap, VecDeque};

pub type JobId = u64;
pub type Outcome = Result<Vec<Segment>, JobError>;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TapConfig {
    pub endpoint: EndpointConfig,
    /// 0 = no partials.
    pub partial_interval_ms: u64,
    /// Decode the utterance this long into a pause, before the end-pointer
    /// is sure it ended; 0 = off.
    pub early_final_ms: u64,
}

/// What the core asks its shell to do.
#[derive(Debug)]
pub enum Output {
    /// Queue this audio for whisper; answer with [`Transcriber::job_done`].
    /// Every job submitted must be answered exactly once (a shed or
    /// refused job with `Err(JobError::Shed)`).
    Submit {
        id: JobId,
        priority: Priority,
        samples: Vec<f32>,
    },
    /// The job (a speculative decode still queued as a partial) is a final
    /// now: move it to the finals lane.
    Promote(JobId),
    /// Final text of an utterance, to store.
    Final(SegmentRow, SegmentOrigin),
    /// Live text of the utterance being spoken, to store.
    Partial(PartialRow),
    /// The leg ended and every final is in: the whole text, in order.
    Complete { text: String },
    /// Voice activity began (for barge-in: the box stops talking).
    SpeechStarted,
    /// An utterance is done: all its final text (empty when whisper heard
    /// nothing or failed), for a conversation to answer once per turn.
    Utterance { text: String },
}

/// Counts for the leg's log line and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TapStats {
    pub frames: u64,
    pub utterances: u64,
    pub finals_stored: u64,
    pub finals_failed: u64,
    pub partials_stored: u64,
    /// Utterances whose speculative decode became the final.
    pub speculations_used: u64,
}

#[derive(Debug, Clone, Copy)]
struct PartialMeta {
    start_ms: u64,
    audio_ms: u64,
    speech_started_at_ms: i64,
}

#[derive(Debug)]
struct Speculation {
    id: JobId,
    speech_end_ms: u64,
    meta: PartialMeta,
    /// The decode, once back.
    result: Option<Outcome>,
}

/// Maps stream offsets to the wall clock. Audio arrives in real time, so the
/// newest sample was heard "now" and one `ms` earlier in the stream is one ms
/// earlier on the wall; good to a packet's worth of jitter.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamClock {
    /// Samples (16 kHz) received so far.
    pub samples: u64,
    /// Wall-clock time (ms since the epoch) the newest sample arrived.
    at_ms: i64,
}

impl StreamClock {
    pub fn received(&mut self, samples: usize, now_ms: i64) {
        self.samples += samples as u64;
        self.at_ms = now_ms;
    }

    pub fn wall_ms(&self, stream_ms: u64) -> i64 {
        self.at_ms - (self.samples / 16) as i64 + stream_ms as i64
    }
}

pub struct Transcriber {
    channel: Channel,
    cfg: TapConfig,
    ep: Endpointer,
    pub clock: StreamClock,
    next_id: JobId,
    /// Finals submitted and not yet answered: utterance start, speech end (wall).
    finals: HashMap<JobId, (u64, i64)>,
    /// Speculative decodes whose utterance was confirmed while they were
    /// out: they are finals now; kept to redo if shed.
    confirmed: HashMap<JobId, (Utterance, i64)>,
    /// The live preview in flight, if any.
    partial: Option<(JobId, PartialMeta)>,
    /// Length (samples) of the utterance audio the last partial covered.
    partial_mark: usize,
    speculation: Option<Speculation>,
    ended: bool,
    complete: bool,
    /// An utterance was in progress after the last frame.
    speaking: bool,
    /// Final text so far, by utterance start, for the whole-call text.
    heard: Vec<(u64, String)>,
    out: VecDeque<Output>,
    pub stats: TapStats,
}

impl Transcriber {
    pub fn new(channel: Channel, cfg: TapConfig) -> Transcriber {
        Transcriber {
            channel,
            cfg,
            ep: Endpointer::new(cfg.endpoint),
            clock: StreamClock::default(),
            next_id: 1,
            finals: HashMap::new(),
            confirmed: HashMap::new(),
            partial: None,
            partial_mark: 0,
            speculation: None,
            ended: false,
            complete: false,
            speaking: false,
            heard: Vec::new(),
            out: VecDeque::new(),
            stats: TapStats::default(),
        }
    }

    /// `samples` of 16 kHz audio arrived at `now_ms` (before they are cut
    /// into frames): keeps stream offsets on the wall clock.
    pub fn audio_arrived(&mut self, samples: usize, now_ms: i64) {
        self.clock.received(samples, now_ms);
    }

    /// One VAD frame and its speech probability.
    pub fn push_frame(&mut self, frame: &[f32], prob: f32, now_ms: i64) {
        if self.ended {
            return;
        }
        self.stats.frames += 1;
        let done = self.ep.push(frame, prob);
        let finished = done.is_some();
        if let Some(u) = done {
            self.utterance_done(u, now_ms);
        }
        let speaking = self.ep.in_speech();
        if speaking && !self.speaking {
            self.out.push_back(Output::SpeechStarted);
        }
        // Voice too short to be an utterance (a cough, a click): nothing
        // was said, and a conversation waiting on it must hear so.
        if self.speaking && !speaking && !finished {
            self.out.push_back(Output::Utterance {
                text: String::new(),
            });
        }
        self.speaking = speaking;
        self.maybe_speculate();
        self.maybe_partial();
    }

    /// The leg ended: what is being said is an utterance now; complete once
    /// every final is back.
    pub fn end(&mut self, now_ms: i64) {
        if self.ended {
            return;
        }
        self.ended = true;
        if let Some(u) = self.ep.flush() {
            self.utterance_done(u, now_ms);
        }
        self.check_complete();
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Jobs submitted and not answered, that completion waits for.
    pub fn outstanding(&self) -> usize {
        self.finals.len() + self.confirmed.len() + self.partial.is_some() as usize
    }

    /// The answer to job `id`.
    pub fn job_done(&mut self, id: JobId, result: Outcome, now_ms: i64) {
        if let Some((start_ms, ended_at)) = self.finals.remove(&id) {
            self.store_final(start_ms, ended_at, result, now_ms);
        } else if let Some((u, ended_at)) = self.confirmed.remove(&id) {
            match result {
                Ok(segs) => {
                    self.stats.speculations_used += 1;
                    self.store_final(u.start_ms, ended_at, Ok(segs), now_ms)
                }
                // Shed under load or failed: do it properly as a final.
                Err(_) => self.submit_final(u, ended_at),
            }
        } else if self.partial.is_some_and(|(p, _)| p == id) {
            let (_, meta) = self.partial.take().expect("checked");
            self.store_partial(meta, &result, now_ms);
        } else if let Some(meta) = self
            .speculation
            .as_ref()
            .filter(|s| s.id == id)
            .map(|s| s.meta)
        {
            // Still in the pause: show it as live text, keep it for the final.
            self.store_partial(meta, &result, now_ms);
            if let Some(spec) = self.speculation.as_mut() {
                spec.result = Some(result);
            }
        }
        // Anything else was superseded: the caller kept talking.
        self.check_complete();
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn check_complete(&mut self) {
        if self.ended && !self.complete && self.outstanding() == 0 {
            self.complete = true;
            // Finals can come back out of order with several workers.
            self.heard.sort_by_key(|(start, _)| *start);
            let text = self
                .heard
                .iter()
                .map(|(_, t)| t.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            self.out.push_back(Output::Complete { text });
        }
    }

    fn new_id(&mut self) -> JobId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The end-pointer finished an utterance: use its speculative decode if
    /// it is the same audio, else transcribe it now.
    fn utterance_done(&mut self, u: Utterance, now_ms: i64) {
        self.stats.utterances += 1;
        self.partial_mark = 0;
        let ended_at = self.clock.wall_ms(u.speech_end_ms);
        let Some(mut spec) = self.speculation.take() else {
            return self.submit_final(u, ended_at);
        };
        if (spec.meta.start_ms, spec.speech_end_ms) != (u.start_ms, u.speech_end_ms) {
            // The caller went on after that pause; its late answer is ignored.
            return self.submit_final(u, ended_at);
        }
        match spec.result.take() {
            Some(Ok(segs)) => {
                self.stats.speculations_used += 1;
                self.store_final(u.start_ms, ended_at, Ok(segs), now_ms)
            }
            Some(Err(_)) => self.submit_final(u, ended_at),
            None => {
                // Still queued behind other calls' previews? It is a final now.
                self.out.push_back(Output::Promote(spec.id));
                self.confirmed.insert(spec.id, (u, ended_at));
            }
        }
    }

    fn submit_final(&mut self, u: Utterance, ended_at: i64) {
        self.partial_mark = 0;
        self.speculation = None;
        let id = self.new_id();
        self.finals.insert(id, (u.start_ms, ended_at));
        self.out.push_back(Output::Submit {
            id,
            priority: Priority::Final,
            samples: u.samples,
        });
    }

    fn partial_meta(&self, start_ms: u64, samples: usize) -> PartialMeta {
        PartialMeta {
            start_ms,
            audio_ms: samples as u64 / 16,
            speech_started_at_ms: self
                .clock
                .wall_ms(self.ep.current_speech_start_ms().unwrap_or(start_ms)),
        }
    }

    fn maybe_speculate(&mut self) {
        if self.cfg.early_final_ms == 0 {
            return;
        }
        let Some(t) = self.ep.tentative() else { return };
        if t.silence_ms < self.cfg.early_final_ms
            || self.speculation.as_ref().is_some_and(|s| {
                (s.meta.start_ms, s.speech_end_ms) == (t.start_ms, t.speech_end_ms)
            })
        {
            return;
        }
        let (start_ms, speech_end_ms, samples) = (t.start_ms, t.speech_end_ms, t.samples.to_vec());
        let meta = self.partial_meta(start_ms, samples.len());
        let id = self.new_id();
        // In the partial lane it supersedes this leg's queued preview, which
        // the pool then answers as shed.
        self.speculation = Some(Speculation {
            id,
            speech_end_ms,
            meta,
            result: None,
        });
        self.out.push_back(Output::Submit {
            id,
            priority: Priority::Partial,
            samples,
        });
    }

    fn maybe_partial(&mut self) {
        let every = (self.cfg.partial_interval_ms * 16) as usize;
        if every == 0 || self.partial.is_some() {
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
        let meta = self.partial_meta(start_ms, samples.len());
        let id = self.new_id();
        self.partial = Some((id, meta));
        self.out.push_back(Output::Submit {
            id,
            priority: Priority::Partial,
            samples,
        });
    }

    fn store_final(
        &mut self,
        start_ms: u64,
        speech_ended_at_ms: i64,
        result: Outcome,
        now_ms: i64,
    ) {
        match result {
            Ok(segs) => {
                let origin = SegmentOrigin {
                    utterance_start_ms: start_ms as i64,
                    received_at_ms: now_ms,
                    speech_ended_at_ms,
                };
                let said = segs
                    .iter()
                    .map(|s| s.text.trim())
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                for s in segs {
                    self.heard.push((start_ms + s.start_ms, s.text.clone()));
                    self.stats.finals_stored += 1;
                    self.out.push_back(Output::Final(
                        SegmentRow {
                            channel: self.channel.as_str().into(),
                            start_ms: (s.start_ms + start_ms) as i64,
                            end_ms: (s.end_ms + start_ms) as i64,
                            text: s.text,
                        },
                        origin,
                    ));
                }
                self.out.push_back(Output::Utterance { text: said });
            }
            Err(e) => {
                self.stats.finals_failed += 1;
                tracing::warn!(error = ?e, "transcription of an utterance failed");
                self.out.push_back(Output::Utterance {
                    text: String::new(),
                });
            }
        }
    }

    fn store_partial(&mut self, meta: PartialMeta, result: &Outcome, now_ms: i64) {
        // Only while that utterance is still being spoken; after, the final
        // (queued or stored) is the truth.
        let live = self.ep.current().is_some_and(|(s, _)| s == meta.start_ms);
        let Ok(segs) = result else { return };
        if !live || segs.is_empty() {
            return;
        }
        let text = segs
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        self.stats.partials_stored += 1;
        self.out.push_back(Output::Partial(PartialRow {
            channel: self.channel.as_str().into(),
            utterance_start_ms: meta.start_ms as i64,
            audio_ms: meta.audio_ms as i64,
            text,
            received_at_ms: now_ms,
            speech_started_at_ms: meta.speech_started_at_ms,
        }));
    }
}
