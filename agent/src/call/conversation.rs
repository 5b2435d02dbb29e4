//! The receptionist on a live call: the shell around the sans-IO
//! [`Receptionist`]. What the caller's tap hears (voice starting, final
//! text with its intent) and the keys the leg decodes go in; what it says
//! comes out through the box's voice into the leg, as the voice makes it;
//! messages become follow-ups, decisions the call's timeline, and what the
//! box said the agent's channel of the transcript. Voicemail is the last
//! part of a conversation: the box's greeting, a beep, then the caller's
//! words are kept (recorded and transcribed like any call) until they hang
//! up, go quiet, or the box's time is up.

use crate::media::leg;
use crate::receptionist::{Action, At, Input, Message, Receptionist};
use crate::routing::{Step, Tried};
use crate::store::followups::{Kind, NewFollowUp};
use crate::store::{Channel, SegmentRow, Store};
use crate::transcribe::tap::TapEvent;
use crate::voice::{Chunk, VoiceService};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Where the conversation leaves the call.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Next {
    /// Goodbye said: hang up.
    Hangup,
    /// Ring what the step says (the caller is already answered).
    Connect(Step),
}

/// How the conversation begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Start {
    /// Greet and ask how to help.
    Greet,
    /// Greet and take a message.
    Message,
    /// The mailbox's greeting, a beep, listen.
    Voicemail(String),
}

/// What opens a conversation's recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecordGate {
    /// The recording notice has been said in full.
    AfterNotice,
    /// Calls are not recorded: only a voicemail, from its beep.
    AtVoicemail,
}

/// What the call gives a conversation.
pub(super) struct Setup {
    pub voice: Arc<VoiceService>,
    pub control: mpsc::UnboundedSender<leg::Control>,
    /// The leg's audio rate ([`leg::pcm_rate`]).
    pub rate: u32,
    pub store: Store,
    pub call_id: String,
    /// When the call arrived and was answered (wall ms), for event and
    /// segment times.
    pub started_ms: i64,
    pub answered_ms: i64,
    /// Raised when the recording may start, and on what.
    pub record_gate: Option<(RecordGate, Arc<AtomicBool>)>,
    pub urgency: Arc<dyn Fn(&str) -> crate::config::Urgency + Send + Sync>,
    /// The caller's number (national digits), for a voicemail's follow-up.
    pub caller_id: Option<String>,
}

/// The sentence being said.
struct Saying {
    text: String,
    /// None once the voice has sent all of it.
    rx: Option<mpsc::UnboundedReceiver<Chunk>>,
    started_ms: i64,
    /// The leg has it all (the voice said End).
    sent: bool,
    /// The voice could not say it (it counts as said, but not as heard).
    failed: bool,
}

/// A voicemail being left.
struct Voicemail {
    mailbox: String,
    phase: Phase,
    max_secs: u64,
    /// The caller has said something after the beep.
    heard: bool,
    /// When the box stops listening: its time is up.
    until: Option<Instant>,
    /// When the box stops listening: the caller has gone quiet (None while
    /// they speak).
    quiet_until: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Greeting,
    Beep,
    /// Keeping the caller's words, since (wall ms).
    Listening(i64),
}

/// A voicemail ends after this much silence once the caller has spoken,
/// or twice this if they never do.
const VOICEMAIL_QUIET_SECS: u64 = 6;

pub(super) struct Conversation {
    r: Receptionist,
    s: Setup,
    origin: Instant,
    saying: Option<Saying>,
    voicemail: Option<Voicemail>,
    next: Option<Next>,
    notice: String,
}

impl Conversation {
    /// Start talking: `r` has queued its greeting.
    /// `origin`: the monotonic zero `r` was made with.
    pub fn start(r: Receptionist, origin: Instant, s: Setup, notice: String) -> Conversation {
        let mut c = Conversation {
            r,
            s,
            origin,
            saying: None,
            voicemail: None,
            next: None,
            notice,
        };
        c.pump();
        c
    }

    /// The receptionist's clocks: monotonic for its timers, wall for hours.
    pub fn at(origin: Instant) -> At {
        At {
            mono_ms: origin.elapsed().as_millis() as u64,
            wall_ms: crate::clock::now_ms(),
        }
    }

    fn now(&self) -> At {
        Conversation::at(self.origin)
    }

    /// The leg's codec changed (a re-INVITE): speak at its rate from the
    /// next sentence on.
    pub fn set_rate(&mut self, rate: u32) {
        self.s.rate = rate;
    }

    /// Where the call goes now that the conversation is over, once.
    pub fn take_next(&mut self) -> Option<Next> {
        self.next.take()
    }

    /// What the caller's tap heard.
    pub fn tap_event(&mut self, ev: TapEvent) {
        if let Some(v) = &mut self.voicemail {
            if matches!(v.phase, Phase::Listening(_)) {
                match ev {
                    TapEvent::SpeechStarted => v.quiet_until = None,
                    TapEvent::Heard(h) => {
                        v.heard |= !h.text.is_empty();
                        v.quiet_until = Some(Instant::now() + secs(VOICEMAIL_QUIET_SECS));
                    }
                }
            }
            return;
        }
        let input = match ev {
            TapEvent::SpeechStarted => Input::SpeechStarted,
            TapEvent::Heard(h) => Input::Heard(h),
        };
        let at = self.now();
        self.r.handle(input, at);
        self.pump();
    }

    /// A key the caller pressed.
    pub fn key(&mut self, k: char) {
        if self.voicemail.is_some() {
            return;
        }
        let at = self.now();
        self.r.handle(Input::Key(k), at);
        self.pump();
    }

    /// The leg has played out what it was given.
    pub fn prompt_done(&mut self) {
        let Some(s) = self.saying.take_if(|s| s.sent) else {
            return;
        };
        if s.failed {
            // Not in the transcript, and a notice not said starts no
            // recording.
            tracing::warn!(call = %self.s.call_id, "a sentence could not be said");
        } else {
            self.said(&s.text, s.started_ms, false);
        }
        if self.voicemail.is_some() {
            return self.voicemail_speech_done();
        }
        let at = self.now();
        self.r.handle(Input::SaidDone, at);
        self.pump();
    }

    /// Whether the voice has more of the sentence to send.
    pub fn wants_audio(&self) -> bool {
        self.saying.as_ref().is_some_and(|s| s.rx.is_some())
    }

    /// The voice's next piece (call only when [`Self::wants_audio`]).
    pub async fn audio(&mut self) -> Option<Chunk> {
        match self.saying.as_mut().and_then(|s| s.rx.as_mut()) {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// A piece of what is being said: to the leg.
    pub fn chunk(&mut self, c: Option<Chunk>) {
        let Some(s) = self.saying.as_mut() else {
            return;
        };
        match c {
            Some(Chunk::Audio(samples)) => {
                let _ = self.s.control.send(leg::Control::Speak {
                    samples,
                    last: false,
                });
            }
            // The end, or nothing (more) can be said: go on as if it had
            // been (a failure is not counted as heard).
            end => {
                s.rx = None;
                s.sent = true;
                s.failed = matches!(end, Some(Chunk::Failed));
                let _ = self.s.control.send(leg::Control::Speak {
                    samples: Vec::new(),
                    last: true,
                });
            }
        }
    }

    /// The next time something is due (silence, the end of a voicemail).
    pub fn deadline(&self) -> Option<Instant> {
        if let Some(v) = &self.voicemail {
            return match (v.until, v.quiet_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        self.r
            .poll_timeout()
            .map(|ms| self.origin + std::time::Duration::from_millis(ms))
    }

    pub fn timeout(&mut self) {
        if let Some(v) = &self.voicemail {
            let now = Instant::now();
            if v.until.is_some_and(|t| now >= t) || v.quiet_until.is_some_and(|t| now >= t) {
                self.end_voicemail();
                self.next = Some(Next::Hangup);
            }
            return;
        }
        let at = self.now();
        self.r.handle_timeout(at);
        self.pump();
    }

    /// The caller hung up (or the call ended some other way): keep what
    /// was half said.
    pub fn caller_gone(&mut self) {
        if let Some(s) = self.saying.take() {
            self.said(&s.text, s.started_ms, true);
        }
        if self.voicemail.is_some() {
            self.end_voicemail();
            return;
        }
        self.r.caller_gone();
        self.pump();
    }

    /// Ringing what [`Next::Connect`] named ended with nobody answering:
    /// back to the conversation.
    pub fn nobody_answered(&mut self, tried: Tried) {
        let at = self.now();
        self.r.nobody_answered(tried, at);
        self.pump();
    }

    fn pump(&mut self) {
        while let Some(a) = self.r.poll_action() {
            match a {
                Action::Say(sp) => self.say(sp.text),
                Action::StopSpeaking => {
                    let _ = self.s.control.send(leg::Control::StopSpeaking);
                    if let Some(s) = self.saying.take() {
                        self.said(&s.text, s.started_ms, true);
                    }
                }
                Action::Decided(d) => {
                    tracing::info!(call = %self.s.call_id, step = %d.step.label(), "routed");
                    self.s.store.add_route(
                        &self.s.call_id,
                        crate::clock::now_ms() - self.s.started_ms,
                        d.to_string(),
                        d.step.destination(),
                    );
                }
                Action::Connect(step) => self.next = Some(Next::Connect(step)),
                Action::Voicemail { mailbox } => self.start_voicemail(mailbox),
                Action::Message(m) => self.keep_message(m),
                Action::Hangup => self.next = Some(Next::Hangup),
            }
        }
        while let Some(text) = self.r.poll_prepare() {
            self.s.voice.prepare(&text);
        }
    }

    fn say(&mut self, text: String) {
        let rx = self.s.voice.say(&text, self.s.rate);
        self.saying = Some(Saying {
            text,
            rx: Some(rx),
            started_ms: crate::clock::now_ms(),
            sent: false,
            failed: false,
        });
    }

    /// What the box said, into the agent's channel of the transcript.
    fn said(&mut self, text: &str, started_ms: i64, cut: bool) {
        if text.is_empty() {
            return;
        }
        let now = crate::clock::now_ms();
        if text == self.notice
            && !cut
            && let Some((RecordGate::AfterNotice, open)) = &self.s.record_gate
        {
            open.store(true, Ordering::Release);
        }
        self.s.store.add_segment(
            &self.s.call_id,
            SegmentRow {
                channel: Channel::Agent.as_str().into(),
                start_ms: (started_ms - self.s.answered_ms).max(0),
                end_ms: (now - self.s.answered_ms).max(0),
                text: if cut {
                    format!("{text} [interrupted]")
                } else {
                    text.to_string()
                },
            },
        );
    }

    fn keep_message(&mut self, m: Message) {
        let urgency = m
            .intent
            .as_deref()
            .map(|i| (self.s.urgency)(i))
            .unwrap_or(crate::config::Urgency::Normal);
        tracing::info!(call = %self.s.call_id, complete = m.complete, "message taken");
        self.s.store.add_followup(NewFollowUp {
            call_id: self.s.call_id.clone(),
            kind: Kind::Message,
            name: m.name,
            number: m.number,
            number_confirmed: m.number_confirmed,
            about: m.about,
            address: m.address,
            intent: m.intent,
            urgency,
            complete: m.complete,
            created_at_ms: crate::clock::now_ms(),
        });
    }

    // --- voicemail ------------------------------------------------------

    /// Leave a voicemail in `mailbox` now: its greeting, a beep, listen.
    pub fn start_voicemail(&mut self, mailbox: String) {
        let plan = self.r.plan().clone();
        let (greeting, max_secs) = match plan.mailboxes.iter().find(|m| m.name == mailbox) {
            Some(m) if m.greeting_wav.is_some() => (recorded_greeting_key(&m.name), m.max_secs),
            Some(m) => (m.greeting.clone(), m.max_secs),
            None => (crate::routing::DEFAULT_GREETING.to_string(), 120),
        };
        self.voicemail = Some(Voicemail {
            mailbox,
            phase: Phase::Greeting,
            max_secs,
            heard: false,
            until: None,
            quiet_until: None,
        });
        self.say(greeting);
    }

    /// The greeting has been said: the beep; the beep: listen.
    fn voicemail_speech_done(&mut self) {
        let Some(v) = &mut self.voicemail else { return };
        match v.phase {
            Phase::Greeting => {
                v.phase = Phase::Beep;
                let _ = self.s.control.send(leg::Control::Speak {
                    samples: beep(self.s.rate),
                    last: true,
                });
                self.saying = Some(Saying {
                    text: String::new(),
                    rx: None,
                    started_ms: crate::clock::now_ms(),
                    sent: true,
                    failed: false,
                });
            }
            Phase::Beep => {
                let now = crate::clock::now_ms();
                v.phase = Phase::Listening(now);
                v.until = Some(Instant::now() + secs(v.max_secs));
                v.quiet_until = Some(Instant::now() + secs(2 * VOICEMAIL_QUIET_SECS));
                tracing::info!(call = %self.s.call_id, mailbox = %v.mailbox, "voicemail: listening");
                if let Some((RecordGate::AtVoicemail, open)) = &self.s.record_gate {
                    open.store(true, Ordering::Release);
                }
                self.s
                    .store
                    .voicemail(&self.s.call_id, &v.mailbox, now, None);
            }
            Phase::Listening(_) => {}
        }
    }

    fn end_voicemail(&mut self) {
        let Some(v) = self.voicemail.take() else {
            return;
        };
        let Phase::Listening(started) = v.phase else {
            return;
        };
        let now = crate::clock::now_ms();
        self.s
            .store
            .voicemail(&self.s.call_id, &v.mailbox, started, Some(now - started));
        self.s.store.add_followup(NewFollowUp {
            call_id: self.s.call_id.clone(),
            kind: Kind::Voicemail,
            name: None,
            number: self.s.caller_id.clone(),
            number_confirmed: false,
            about: None,
            address: None,
            intent: None,
            urgency: crate::config::Urgency::Normal,
            complete: v.heard,
            created_at_ms: now,
        });
        tracing::info!(call = %self.s.call_id, duration_ms = now - started, "voicemail left");
    }
}

/// The cache key of a mailbox's recorded greeting.
pub fn recorded_greeting_key(mailbox: &str) -> String {
    format!("[recorded greeting of voicemail {mailbox}]")
}

fn secs(s: u64) -> std::time::Duration {
    std::time::Duration::from_secs(s)
}

/// The tone before a voicemail: 1 kHz for 0.4 s, faded in and out.
fn beep(rate: u32) -> Vec<f32> {
    let n = (rate as usize * 400) / 1000;
    let fade = (rate as usize * 10) / 1000;
    (0..n)
        .map(|i| {
            let env = (i.min(n - 1 - i) as f32 / fade as f32).min(1.0);
            0.3 * env * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / rate as f32).sin()
        })
        .collect()
}
