//! One call as a state machine with no I/O and no clock of its own: what
//! happened (SIP, media, the agent) and `now` go in through
//! [`Call::handle`] and [`Call::handle_timeout`]; what to do comes out of
//! [`Call::poll_action`], and [`Call::poll_timeout`] says when to call back.
//! The call's task (`call::inbound`) turns actions into rsipstack calls,
//! media commands and store writes; rsipstack keeps owning transactions,
//! retransmissions and 100 Trying.
//!
//! A call is a list of legs. Today it has one, the caller's; the B2BUA
//! adds the phones being rung and the party that answered.

use std::collections::VecDeque;

/// Why a call ended; stored in `calls.end_reason` by its stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    CallerHungUp,
    /// The phone that answered a bridged call hung up.
    CalleeHungUp,
    /// A call the box placed was not answered, was refused as busy, or
    /// could not be connected.
    NoAnswer,
    Busy,
    NotConnected,
    CallerCancelled,
    AgentShutdown,
    RtpTimeout,
    MediaError,
    MaxDuration,
    /// The caller never acknowledged our answer.
    NoAck,
    SignallingTimeout,
    AgentError,
    /// The box ended the conversation (message taken, goodbye said).
    AgentHungUp,
    /// The dialog ended some other way (a proxy error, a rejection).
    DialogEnded,
}

impl EndReason {
    /// The stable name stored in the database (kept from the first
    /// release's free-text reasons, which rows already hold).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerHungUp => "caller hung up",
            EndReason::CalleeHungUp => "answering phone hung up",
            EndReason::NoAnswer => "no answer",
            EndReason::Busy => "busy",
            EndReason::NotConnected => "not connected",
            EndReason::CallerCancelled => "caller cancelled",
            EndReason::AgentShutdown => "agent shutdown",
            EndReason::RtpTimeout => "no audio (RTP timeout)",
            EndReason::MediaError => "media error",
            EndReason::MaxDuration => "maximum call length reached",
            EndReason::NoAck => "no ACK for the answer",
            EndReason::SignallingTimeout => "signalling timeout",
            EndReason::AgentError => "agent error",
            EndReason::AgentHungUp => "agent hung up",
            EndReason::DialogEnded => "dialog ended",
        }
    }
}

/// Which way a call goes; stored by its stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
    /// Between two of the business's phones.
    Internal,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallConfig {
    /// Ring this long before answering (0: answer at once).
    pub ring_ms: u64,
    /// Hang up after this long from the answer.
    pub max_call_ms: u64,
    /// Give up on an answer the caller never ACKs (RFC 3261's 64·T1).
    pub ack_timeout_ms: u64,
}

/// What the caller's offer in a re-INVITE amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReOffer {
    /// Same codec as the call (a new address, a session refresh).
    Compatible,
    /// The caller puts us on hold (no address to send to).
    Hold,
    /// A codec or stream we cannot switch to mid-call.
    Incompatible,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The caller's ACK for our answer.
    Ack,
    /// The caller hung up (BYE).
    Bye,
    /// The caller gave up while it rang (CANCEL; rsipstack answers 487).
    Cancel,
    /// A re-INVITE or UPDATE with an offer.
    ReInvite(ReOffer),
    /// The signalling layer gave up on the dialog.
    SignallingTimeout,
    /// The dialog ended in a way not listed above.
    DialogEnded,
    /// The caller's media leg: first audio, silence too long, socket failure.
    MediaFirstPacket,
    MediaTimeout,
    MediaFailed,
    /// The agent is stopping.
    Shutdown,
    /// The agent cannot run the call (no RTP port, no transcription).
    Failure,
    /// The box's conversation is over (goodbye said): hang up.
    Hangup,
}

/// What the call's task should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send 180 Ringing.
    Ring,
    /// Start the caller's media (leg and transcription) and send 200 OK
    /// with our answer.
    Answer,
    /// The call is established: media may flow to the caller.
    Established,
    /// Refuse the INVITE with this final status (before any answer).
    Reject(u16),
    /// Answer the re-INVITE: 200 with our SDP, or this error status.
    AnswerReInvite(Result<(), u16>),
    /// Hang up: send BYE.
    Bye,
    /// Stop the media leg (the call is ending).
    StopMedia,
    /// Store: answered at `now`.
    RecordAnswered { at_ms: i64 },
    /// Store: the call ended, for this reason.
    RecordEnded { at_ms: i64, reason: EndReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ringing {
        answer_at_ms: i64,
    },
    /// 200 sent, waiting for the ACK.
    Answered {
        since_ms: i64,
    },
    Established,
    Ended(EndReason),
}

/// A leg of the call; the list grows with the B2BUA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub role: LegRole,
    pub media_started: bool,
    pub heard: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegRole {
    Caller,
}

pub struct Call {
    cfg: CallConfig,
    state: State,
    answered_at_ms: Option<i64>,
    pub legs: Vec<Leg>,
    actions: VecDeque<Action>,
}

impl Call {
    /// An inbound call whose offer was acceptable, at `now_ms`.
    pub fn inbound(cfg: CallConfig, now_ms: i64) -> Call {
        let mut c = Call {
            cfg,
            state: State::Ringing {
                answer_at_ms: now_ms + cfg.ring_ms as i64,
            },
            answered_at_ms: None,
            legs: vec![Leg {
                role: LegRole::Caller,
                media_started: false,
                heard: false,
            }],
            actions: VecDeque::new(),
        };
        if cfg.ring_ms > 0 {
            c.actions.push_back(Action::Ring);
        } else {
            c.answer(now_ms);
        }
        c
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended(_))
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Call::handle_timeout`] is next due, if ever.
    pub fn poll_timeout(&self) -> Option<i64> {
        match self.state {
            State::Ringing { answer_at_ms } => Some(answer_at_ms),
            State::Answered { since_ms } => {
                Some((since_ms + self.cfg.ack_timeout_ms as i64).min(self.max_call_deadline()))
            }
            State::Established => Some(self.max_call_deadline()),
            State::Ended(_) => None,
        }
    }

    fn max_call_deadline(&self) -> i64 {
        self.answered_at_ms.unwrap_or(i64::MAX / 2) + self.cfg.max_call_ms as i64
    }

    pub fn handle_timeout(&mut self, now_ms: i64) {
        match self.state {
            State::Ringing { answer_at_ms } if now_ms >= answer_at_ms => self.answer(now_ms),
            State::Answered { since_ms } if now_ms >= since_ms + self.cfg.ack_timeout_ms as i64 => {
                self.end(now_ms, EndReason::NoAck, true)
            }
            State::Answered { .. } | State::Established if now_ms >= self.max_call_deadline() => {
                self.end(now_ms, EndReason::MaxDuration, true)
            }
            _ => {}
        }
    }

    pub fn handle(&mut self, input: Input, now_ms: i64) {
        use State::*;
        match (self.state, input) {
            (Ended(_), _) => {}
            (Ringing { .. }, Input::Cancel) => self.end(now_ms, EndReason::CallerCancelled, false),
            (Ringing { .. }, Input::Shutdown) => {
                // A final answer, so the caller's phone (or the trunk) does
                // not ring on at a box that has gone: try again later.
                self.actions.push_back(Action::Reject(503));
                self.end(now_ms, EndReason::AgentShutdown, false)
            }
            (Ringing { .. }, Input::Failure) => {
                self.actions.push_back(Action::Reject(503));
                self.end(now_ms, EndReason::AgentError, false)
            }
            // A CANCEL that crosses our 200 has no effect (RFC 3261 §9.2):
            // the caller will ACK and then BYE.
            (Answered { .. } | Established, Input::Cancel) => {}
            (Answered { .. }, Input::Ack) => {
                self.state = Established;
                self.actions.push_back(Action::Established);
            }
            (Established, Input::Ack) => {}
            (_, Input::Bye) => self.end(now_ms, EndReason::CallerHungUp, false),
            (_, Input::SignallingTimeout) => self.end(now_ms, EndReason::SignallingTimeout, false),
            (_, Input::DialogEnded) => self.end(now_ms, EndReason::DialogEnded, false),
            (Answered { .. } | Established, Input::ReInvite(offer)) => {
                self.actions.push_back(Action::AnswerReInvite(match offer {
                    ReOffer::Compatible | ReOffer::Hold => Ok(()),
                    ReOffer::Incompatible => Err(488),
                }));
            }
            // A re-INVITE before the first answer is a glare: 491 (RFC 3261 §14.2).
            (Ringing { .. }, Input::ReInvite(_)) => {
                self.actions.push_back(Action::AnswerReInvite(Err(491)))
            }
            (_, Input::MediaFirstPacket) => {
                if let Some(l) = self.legs.first_mut() {
                    l.heard = true;
                }
            }
            (Answered { .. } | Established, Input::MediaTimeout) => {
                self.end(now_ms, EndReason::RtpTimeout, true)
            }
            (Answered { .. } | Established, Input::MediaFailed | Input::Failure) => {
                self.end(now_ms, EndReason::MediaError, true)
            }
            (Answered { .. } | Established, Input::Shutdown) => {
                self.end(now_ms, EndReason::AgentShutdown, true)
            }
            (Answered { .. } | Established, Input::Hangup) => {
                self.end(now_ms, EndReason::AgentHungUp, true)
            }
            // Nothing has been said while it rings.
            (Ringing { .. }, Input::Hangup) => {}
            (Ringing { .. }, Input::Ack | Input::MediaTimeout | Input::MediaFailed) => {}
        }
    }

    fn answer(&mut self, now_ms: i64) {
        self.state = State::Answered { since_ms: now_ms };
        self.answered_at_ms = Some(now_ms);
        if let Some(l) = self.legs.first_mut() {
            l.media_started = true;
        }
        self.actions.push_back(Action::Answer);
        self.actions
            .push_back(Action::RecordAnswered { at_ms: now_ms });
    }

    /// End the call; `ours`: the agent hangs up (and so sends BYE).
    fn end(&mut self, now_ms: i64, reason: EndReason, ours: bool) {
        let media = self.legs.iter().any(|l| l.media_started);
        self.state = State::Ended(reason);
        if media {
            self.actions.push_back(Action::StopMedia);
        }
        if ours {
            self.actions.push_back(Action::Bye);
        }
        self.actions.push_back(Action::RecordEnded {
            at_ms: now_ms,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: CallConfig = CallConfig {
        ring_ms: 4_000,
        max_call_ms: 60_000,
        ack_timeout_ms: 32_000,
    };

    fn drain(c: &mut Call) -> Vec<Action> {
        std::iter::from_fn(|| c.poll_action()).collect()
    }

    /// What the agent hanging up an answered call looks like.
    fn agent_hangs_up(at_ms: i64, reason: EndReason) -> Vec<Action> {
        vec![
            Action::StopMedia,
            Action::Bye,
            Action::RecordEnded { at_ms, reason },
        ]
    }

    /// Step the clock to the call's next deadline.
    fn wait(c: &mut Call, now: &mut i64) {
        *now = c.poll_timeout().expect("a deadline");
        c.handle_timeout(*now);
    }

    #[test]
    fn rings_then_answers_then_the_caller_hangs_up() {
        let mut now = 1_000;
        let mut c = Call::inbound(CFG, now);
        assert_eq!(drain(&mut c), vec![Action::Ring]);
        assert_eq!(c.poll_timeout(), Some(5_000));
        c.handle_timeout(4_999);
        assert!(drain(&mut c).is_empty(), "not yet");
        wait(&mut c, &mut now);
        assert_eq!(
            drain(&mut c),
            vec![Action::Answer, Action::RecordAnswered { at_ms: 5_000 }]
        );
        c.handle(Input::Ack, now + 40);
        assert_eq!(drain(&mut c), vec![Action::Established]);
        assert_eq!(c.state(), State::Established);
        c.handle(Input::MediaFirstPacket, now + 60);
        assert!(c.legs[0].heard);
        c.handle(Input::Bye, 20_000);
        assert_eq!(
            drain(&mut c),
            vec![
                Action::StopMedia,
                Action::RecordEnded {
                    at_ms: 20_000,
                    reason: EndReason::CallerHungUp
                }
            ]
        );
        assert_eq!(c.poll_timeout(), None);
        // Nothing more happens to an ended call.
        c.handle(Input::Bye, 20_001);
        c.handle(Input::Shutdown, 20_002);
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn the_conversation_ending_hangs_up() {
        let mut ringing = Call::inbound(CFG, 0);
        drain(&mut ringing);
        ringing.handle(Input::Hangup, 1);
        assert!(drain(&mut ringing).is_empty(), "nothing said yet");
        let mut c = Call::inbound(CallConfig { ring_ms: 0, ..CFG }, 0);
        c.handle(Input::Ack, 10);
        drain(&mut c);
        c.handle(Input::Hangup, 9_000);
        assert_eq!(
            drain(&mut c),
            vec![
                Action::StopMedia,
                Action::Bye,
                Action::RecordEnded {
                    at_ms: 9_000,
                    reason: EndReason::AgentHungUp
                }
            ]
        );
    }

    #[test]
    fn no_ring_time_answers_at_once() {
        let mut c = Call::inbound(CallConfig { ring_ms: 0, ..CFG }, 7);
        assert_eq!(
            drain(&mut c),
            vec![Action::Answer, Action::RecordAnswered { at_ms: 7 }]
        );
    }

    #[test]
    fn cancel_while_ringing_is_a_missed_call() {
        let mut c = Call::inbound(CFG, 0);
        drain(&mut c);
        c.handle(Input::Cancel, 2_000);
        assert_eq!(
            drain(&mut c),
            vec![Action::RecordEnded {
                at_ms: 2_000,
                reason: EndReason::CallerCancelled
            }]
        );
        // The ring deadline passing later answers nothing.
        c.handle_timeout(10_000);
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn shutdown_while_ringing_sends_a_final_response() {
        let mut c = Call::inbound(CFG, 0);
        drain(&mut c);
        c.handle(Input::Shutdown, 1_000);
        assert_eq!(
            drain(&mut c),
            vec![
                Action::Reject(503),
                Action::RecordEnded {
                    at_ms: 1_000,
                    reason: EndReason::AgentShutdown
                }
            ]
        );
    }

    #[test]
    fn shutdown_during_the_call_hangs_up() {
        let mut c = Call::inbound(CallConfig { ring_ms: 0, ..CFG }, 0);
        c.handle(Input::Ack, 10);
        drain(&mut c);
        c.handle(Input::Shutdown, 5_000);
        assert_eq!(
            drain(&mut c),
            agent_hangs_up(5_000, EndReason::AgentShutdown)
        );
    }

    #[test]
    fn a_cancel_racing_our_200_is_ignored_and_the_call_goes_on() {
        let mut now = 0;
        let mut c = Call::inbound(CFG, now);
        drain(&mut c);
        wait(&mut c, &mut now); // answers: 200 on its way
        drain(&mut c);
        c.handle(Input::Cancel, now + 5); // crossed on the wire
        assert!(drain(&mut c).is_empty());
        c.handle(Input::Ack, now + 10);
        assert_eq!(drain(&mut c), vec![Action::Established]);
        c.handle(Input::Bye, now + 100);
        assert!(matches!(
            drain(&mut c).last(),
            Some(Action::RecordEnded {
                reason: EndReason::CallerHungUp,
                ..
            })
        ));
    }

    #[test]
    fn an_answer_never_acked_is_hung_up() {
        let mut now = 0;
        let mut c = Call::inbound(CallConfig { ring_ms: 0, ..CFG }, now);
        drain(&mut c);
        assert_eq!(c.poll_timeout(), Some(32_000));
        wait(&mut c, &mut now);
        assert_eq!(drain(&mut c), agent_hangs_up(32_000, EndReason::NoAck));
    }

    #[test]
    fn re_invites_are_answered_by_what_they_offer() {
        let mut c = Call::inbound(CallConfig { ring_ms: 0, ..CFG }, 0);
        c.handle(Input::Ack, 10);
        drain(&mut c);
        c.handle(Input::ReInvite(ReOffer::Compatible), 1_000);
        c.handle(Input::ReInvite(ReOffer::Hold), 2_000);
        c.handle(Input::ReInvite(ReOffer::Incompatible), 3_000);
        assert_eq!(
            drain(&mut c),
            vec![
                Action::AnswerReInvite(Ok(())),
                Action::AnswerReInvite(Ok(())),
                Action::AnswerReInvite(Err(488))
            ]
        );
        assert_eq!(c.state(), State::Established, "the call goes on");
        // Before our answer, a re-INVITE is glare.
        let mut r = Call::inbound(CFG, 0);
        drain(&mut r);
        r.handle(Input::ReInvite(ReOffer::Compatible), 5);
        assert_eq!(drain(&mut r), vec![Action::AnswerReInvite(Err(491))]);
    }

    #[test]
    fn silence_from_the_caller_hangs_up() {
        let mut c = Call::inbound(CallConfig { ring_ms: 0, ..CFG }, 0);
        c.handle(Input::Ack, 10);
        drain(&mut c);
        c.handle(Input::MediaTimeout, 30_010);
        assert_eq!(drain(&mut c), agent_hangs_up(30_010, EndReason::RtpTimeout));
    }

    #[test]
    fn the_maximum_call_length_is_counted_from_the_answer() {
        let mut now = 0;
        let mut c = Call::inbound(CFG, now);
        drain(&mut c);
        wait(&mut c, &mut now); // answered at 4 000
        c.handle(Input::Ack, now + 10);
        drain(&mut c);
        assert_eq!(c.poll_timeout(), Some(64_000));
        c.handle_timeout(63_999);
        assert!(drain(&mut c).is_empty());
        wait(&mut c, &mut now);
        assert_eq!(
            drain(&mut c),
            agent_hangs_up(64_000, EndReason::MaxDuration)
        );
    }

    #[test]
    fn failing_to_start_a_call_while_ringing_refuses_it() {
        let mut c = Call::inbound(CFG, 0);
        drain(&mut c);
        c.handle(Input::Failure, 3);
        assert_eq!(
            drain(&mut c),
            vec![
                Action::Reject(503),
                Action::RecordEnded {
                    at_ms: 3,
                    reason: EndReason::AgentError
                }
            ]
        );
    }

    #[test]
    fn every_end_is_recorded_exactly_once_whatever_happens() {
        // A deterministic walk over many input orders.
        let inputs = [
            Input::Ack,
            Input::Bye,
            Input::Cancel,
            Input::ReInvite(ReOffer::Hold),
            Input::SignallingTimeout,
            Input::DialogEnded,
            Input::MediaFirstPacket,
            Input::MediaTimeout,
            Input::MediaFailed,
            Input::Shutdown,
            Input::Failure,
        ];
        let mut x: u64 = 1;
        for _ in 0..5_000 {
            let mut now = 0;
            let ring = if x.is_multiple_of(2) { 0 } else { 1_000 };
            let mut c = Call::inbound(
                CallConfig {
                    ring_ms: ring,
                    ..CFG
                },
                now,
            );
            let mut acts = drain(&mut c);
            for _ in 0..12 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                now += (x >> 40) as i64 % 40_000;
                if (x >> 20).is_multiple_of(3) {
                    c.handle_timeout(now);
                } else {
                    c.handle(inputs[(x >> 33) as usize % inputs.len()], now);
                }
                acts.extend(drain(&mut c));
            }
            c.handle(Input::Shutdown, now + 1);
            acts.extend(drain(&mut c));
            let ends = acts
                .iter()
                .filter(|a| matches!(a, Action::RecordEnded { .. }))
                .count();
            assert_eq!(ends, 1, "{acts:?}");
            assert!(c.is_ended());
            // A BYE only after an answer; a Reject only before one.
            let answered = acts.iter().position(|a| *a == Action::Answer);
            if let Some(b) = acts.iter().position(|a| *a == Action::Bye) {
                assert!(answered.is_some_and(|a| a < b), "{acts:?}");
            }
            if let Some(r) = acts.iter().position(|a| matches!(a, Action::Reject(_))) {
                assert!(answered.is_none(), "{acts:?}");
                let _ = r;
            }
        }
    }
}
