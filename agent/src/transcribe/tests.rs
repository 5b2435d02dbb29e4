//! The transcription core stepped with synthetic speech probabilities and
//! simulated time: no model, no thread, no clock.

use super::core::{JobId, Output, TapConfig, Transcriber};
use crate::inference::{JobError, Priority};
use crate::store::Channel;
use handlet_models::endpoint::EndpointConfig;
use handlet_models::stt::Segment;
use handlet_models::vad::FRAME;
use proptest::prelude::*;

const FRAME_MS: i64 = 32;

fn cfg(partial_ms: u64, early_ms: u64) -> TapConfig {
    TapConfig {
        endpoint: EndpointConfig::default(),
        partial_interval_ms: partial_ms,
        early_final_ms: early_ms,
    }
}

/// A core and its simulated clock: frames arrive in real time.
struct Sim {
    t: Transcriber,
    now: i64,
    /// Outputs seen, in order.
    seen: Vec<Seen>,
}

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Submit(JobId, Priority, usize),
    Promote(JobId),
    Final(String, i64),
    Partial(String),
    Complete(String),
    SpeechStarted,
    Utterance(String),
}

impl Sim {
    fn new(c: TapConfig) -> Sim {
        Sim {
            t: Transcriber::new(Channel::Caller, c),
            now: 1_000_000,
            seen: Vec::new(),
        }
    }

    /// `ms` of audio at speech probability `p`.
    fn audio(&mut self, ms: i64, p: f32) {
        for _ in 0..ms / FRAME_MS {
            self.now += FRAME_MS;
            self.t.audio_arrived(FRAME, self.now);
            self.t.push_frame(&[0.01; FRAME], p, self.now);
            self.drain();
        }
    }

    fn answer(&mut self, id: JobId, r: Result<&str, JobError>) {
        self.now += 5;
        let r = r.map(|text| {
            vec![Segment {
                start_ms: 0,
                end_ms: 500,
                text: text.into(),
            }]
        });
        self.t.job_done(id, r, self.now);
        self.drain();
    }

    fn end(&mut self) {
        self.t.end(self.now);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(o) = self.t.poll_output() {
            self.seen.push(match o {
                Output::Submit {
                    id,
                    priority,
                    samples,
                } => Seen::Submit(id, priority, samples.len()),
                Output::Promote(id) => Seen::Promote(id),
                Output::Final(seg, _) => Seen::Final(seg.text, seg.start_ms),
                Output::Partial(p) => Seen::Partial(p.text),
                Output::Complete { text } => Seen::Complete(text),
                Output::SpeechStarted => Seen::SpeechStarted,
                Output::Utterance { text } => Seen::Utterance(text),
            });
        }
    }

    fn submitted(&self, pri: Priority) -> Vec<JobId> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Submit(id, p, _) if *p == pri => Some(*id),
                _ => None,
            })
            .collect()
    }

    fn finals(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Final(t, _) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    fn completes(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Complete(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn an_utterance_is_transcribed_once_it_ends_and_the_leg_completes() {
    let mut s = Sim::new(cfg(0, 0));
    s.audio(320, 0.0);
    assert!(
        !s.seen.contains(&Seen::SpeechStarted),
        "silence is not speech"
    );
    s.audio(1600, 0.9);
    // Said once, as the voice begins (the receptionist's barge-in).
    assert_eq!(
        s.seen.iter().filter(|x| **x == Seen::SpeechStarted).count(),
        1
    );
    assert!(s.submitted(Priority::Final).is_empty(), "still speaking");
    s.audio(1000, 0.0);
    let f = s.submitted(Priority::Final);
    assert_eq!(f.len(), 1, "{:?}", s.seen);
    s.end();
    assert!(s.completes().is_empty(), "waits for the final");
    s.answer(f[0], Ok("hello there"));
    assert_eq!(s.finals(), vec!["hello there"]);
    // One turn for a conversation, after its text.
    assert!(s.seen.contains(&Seen::Utterance("hello there".into())));
    assert_eq!(s.completes(), vec!["hello there"]);
    assert_eq!(s.t.stats.utterances, 1);
}

#[test]
fn partials_one_at_a_time_only_while_the_utterance_is_live() {
    let mut s = Sim::new(cfg(500, 0));
    s.audio(1500, 0.9);
    let p = s.submitted(Priority::Partial);
    assert_eq!(p.len(), 1, "one in flight at a time: {:?}", s.seen);
    s.answer(p[0], Ok("hello"));
    assert!(s.seen.contains(&Seen::Partial("hello".into())));
    s.audio(600, 0.9);
    let p = s.submitted(Priority::Partial);
    assert_eq!(p.len(), 2);
    // The utterance ends before the second partial is back: it is dropped.
    s.audio(1000, 0.0);
    s.answer(p[1], Ok("hello there stale"));
    assert!(!s.seen.contains(&Seen::Partial("hello there stale".into())));
    let f = s.submitted(Priority::Final);
    s.answer(f[0], Ok("hello there"));
    s.end();
    assert_eq!(s.completes(), vec!["hello there"]);
}

#[test]
fn a_speculative_decode_that_is_back_in_time_is_the_final() {
    let mut s = Sim::new(cfg(0, 300));
    s.audio(1500, 0.9);
    s.audio(352, 0.0); // into the pause, past early_final_ms
    let spec = s.submitted(Priority::Partial);
    assert_eq!(spec.len(), 1, "{:?}", s.seen);
    s.answer(spec[0], Ok("quote please"));
    // Shown as live text while the pause lasts.
    assert!(s.seen.contains(&Seen::Partial("quote please".into())));
    s.audio(700, 0.0); // the pause is confirmed
    assert!(s.submitted(Priority::Final).is_empty(), "no second decode");
    assert_eq!(s.finals(), vec!["quote please"]);
    s.end();
    assert_eq!(s.completes().len(), 1);
    assert_eq!(s.t.stats.speculations_used, 1);
}

#[test]
fn a_speculative_decode_still_queued_is_promoted_and_redone_if_shed() {
    let mut s = Sim::new(cfg(0, 300));
    s.audio(1500, 0.9);
    s.audio(352, 0.0);
    let spec = s.submitted(Priority::Partial)[0];
    s.audio(700, 0.0);
    assert!(s.seen.contains(&Seen::Promote(spec)));
    s.end();
    assert!(
        s.completes().is_empty(),
        "the promoted decode is outstanding"
    );
    // Shed under load after all: the utterance is submitted as a final.
    s.answer(spec, Err(JobError::Shed));
    let f = s.submitted(Priority::Final);
    assert_eq!(f.len(), 1);
    s.answer(f[0], Ok("redone"));
    assert_eq!(s.finals(), vec!["redone"]);
    assert_eq!(s.completes(), vec!["redone"]);
}

#[test]
fn a_caller_who_goes_on_after_a_pause_makes_the_speculation_moot() {
    let mut s = Sim::new(cfg(0, 300));
    s.audio(1500, 0.9);
    s.audio(352, 0.0);
    let spec = s.submitted(Priority::Partial)[0];
    s.audio(1000, 0.9); // talks on
    // Its text is still a fair preview of the utterance so far; it must
    // not become the final.
    s.answer(spec, Ok("half a sentence"));
    s.audio(1000, 0.0);
    // The second pause gets its own speculative decode, promoted when the
    // pause is confirmed; the first one's text is never a final.
    let specs = s.submitted(Priority::Partial);
    assert_eq!(specs.len(), 2, "{:?}", s.seen);
    assert!(s.seen.contains(&Seen::Promote(specs[1])));
    assert!(s.submitted(Priority::Final).is_empty());
    s.answer(specs[1], Ok("the whole sentence"));
    s.end();
    assert_eq!(s.finals(), vec!["the whole sentence"]);
    assert_eq!(s.completes(), vec!["the whole sentence"]);
}

#[test]
fn finals_out_of_order_complete_in_spoken_order() {
    let mut s = Sim::new(cfg(0, 0));
    for _ in 0..3 {
        s.audio(800, 0.9);
        s.audio(1000, 0.0);
    }
    s.end();
    let f = s.submitted(Priority::Final);
    assert_eq!(f.len(), 3);
    s.answer(f[2], Ok("three"));
    s.answer(f[0], Ok("one"));
    assert!(s.completes().is_empty());
    s.answer(f[1], Ok("two"));
    // Segment offsets are per utterance: the whole text follows the audio.
    assert_eq!(s.completes(), vec!["one two three"]);
}

#[test]
fn answers_to_unknown_or_repeated_jobs_change_nothing() {
    let mut s = Sim::new(cfg(0, 0));
    s.audio(800, 0.9);
    s.audio(1000, 0.0);
    let f = s.submitted(Priority::Final)[0];
    s.answer(9999, Ok("nobody asked"));
    s.answer(f, Ok("yes"));
    s.answer(f, Ok("yes again"));
    s.end();
    assert_eq!(s.finals(), vec!["yes"]);
    assert_eq!(s.completes().len(), 1);
}

#[test]
fn a_leg_that_ends_mid_sentence_transcribes_what_was_said() {
    let mut s = Sim::new(cfg(0, 0));
    s.audio(1200, 0.9);
    s.end();
    let f = s.submitted(Priority::Final);
    assert_eq!(f.len(), 1);
    s.answer(f[0], Ok("cut off"));
    assert_eq!(s.completes(), vec!["cut off"]);
    // Audio after the end is ignored.
    s.audio(2000, 0.9);
    assert_eq!(s.submitted(Priority::Final).len(), 1);
}

#[derive(Debug, Clone)]
enum Step {
    Audio(u8, bool),
    /// Answer the oldest outstanding job (true: with text; false: shed).
    AnswerOldest(bool),
    AnswerNewest(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u8..40, any::<bool>()).prop_map(|(n, sp)| Step::Audio(n, sp)),
        any::<bool>().prop_map(Step::AnswerOldest),
        any::<bool>().prop_map(Step::AnswerNewest),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// Whatever the interleaving of audio and answers (any order, any of
    /// them shed), once every job has been answered the leg completes
    /// exactly once, and no more jobs are outstanding than a bound.
    #[test]
    fn every_leg_completes_once_all_jobs_are_answered(
        steps in proptest::collection::vec(step(), 1..120),
        partial in prop_oneof![Just(0u64), Just(500u64)],
        early in prop_oneof![Just(0u64), Just(300u64)],
    ) {
        let mut s = Sim::new(cfg(partial, early));
        let mut open: Vec<JobId> = Vec::new();
        let mut seen_subs = 0;
        let answer = |s: &mut Sim, open: &mut Vec<JobId>, i: usize, ok: bool| {
            let id = open.remove(i);
            s.answer(id, if ok { Ok("word") } else { Err(JobError::Shed) });
        };
        for st in steps {
            match st {
                Step::Audio(n, speech) => s.audio(n as i64 * FRAME_MS, if speech { 0.9 } else { 0.0 }),
                Step::AnswerOldest(ok) if !open.is_empty() => answer(&mut s, &mut open, 0, ok),
                Step::AnswerNewest(ok) if !open.is_empty() => {
                    let i = open.len() - 1;
                    answer(&mut s, &mut open, i, ok)
                }
                _ => {}
            }
            for sub in &s.seen[seen_subs..] {
                if let Seen::Submit(id, _, n) = sub {
                    prop_assert!(*n > 0);
                    open.push(*id);
                }
            }
            seen_subs = s.seen.len();
            prop_assert!(s.t.outstanding() <= 2 + s.t.stats.utterances as usize);
        }
        s.end();
        // Answer everything, including finals a shed speculation causes.
        let mut rounds = 0;
        loop {
            for sub in &s.seen[seen_subs..] {
                if let Seen::Submit(id, _, _) = sub {
                    open.push(*id);
                }
            }
            seen_subs = s.seen.len();
            if open.is_empty() {
                break;
            }
            rounds += 1;
            prop_assert!(rounds < 1000);
            let ok = rounds % 3 != 0;
            answer(&mut s, &mut open, 0, ok);
        }
        prop_assert_eq!(s.completes().len(), 1, "{:?}", s.seen);
        prop_assert_eq!(s.t.outstanding(), 0);
    }
}

#[test]
fn a_click_too_short_to_be_speech_still_ends_as_an_empty_utterance() {
    let mut s = Sim::new(cfg(0, 0));
    s.audio(320, 0.0);
    s.audio(64, 0.9);
    s.audio(1000, 0.0);
    assert!(s.submitted(Priority::Final).is_empty(), "{:?}", s.seen);
    // A conversation that stopped its silence timer hears "nothing said".
    let start = s.seen.iter().position(|x| *x == Seen::SpeechStarted);
    let end = s
        .seen
        .iter()
        .position(|x| *x == Seen::Utterance(String::new()));
    assert!(
        matches!((start, end), (Some(a), Some(b)) if a < b),
        "{:?}",
        s.seen
    );
}
