//! The conversation stepped with simulated time: no sockets, no audio.

use super::*;
use crate::phone::Country;
use crate::routing::{Caller, Context, Dest, RoutingConfig, Unanswered};

const PLAN: &str = r#"
timezone = "Europe/London"
open = "office"
closed = "receptionist"
[hours]
mon = ["08:00-17:30"]
[[group]]
name = "office"
members = ["101"]
no_answer = "receptionist"
[[group]]
name = "oncall"
members = ["07700 900123"]
no_answer = "message"
[intents]
emergency = { open = "office", closed = "oncall" }
quote = "message"
unknown = "message"
[keys]
1 = "emergency"
"#;

fn plan() -> Arc<Plan> {
    let cfg: RoutingConfig = toml::from_str(PLAN).unwrap();
    let ctx = Context {
        country: Country::GB,
        extensions: vec!["101"],
        dids: vec!["+441632960001".into()],
        has_trunk: true,
        intents: vec!["emergency", "quote", "booking"],
        inbound_ring: &[],
        inbound_strategy: routing::Strategy::Ringall,
        inbound_ring_secs: 20,
    };
    Arc::new(Plan::compile(&cfg, &ctx).unwrap())
}

/// Sunday 2026-12-06 19:40 in London: closed.
const SUNDAY_EVENING: i64 = 1_796_586_000_000;

fn at(ms: u64) -> At {
    At {
        mono_ms: ms,
        wall_ms: SUNDAY_EVENING + ms as i64,
    }
}

fn cfg() -> Arc<ReceptionistConfig> {
    Arc::new(ReceptionistConfig {
        business: "Smith and Sons".into(),
        menu: "Or press 1 for an emergency.".into(),
        ..ReceptionistConfig::default()
    })
}

fn start(caller_id: Option<&str>) -> Receptionist {
    let facts = Facts::new(Caller::Number("+447700900555".into()), None);
    Receptionist::new(
        cfg(),
        plan(),
        facts,
        caller_id.map(str::to_string),
        true,
        at(0),
    )
}

/// Play out everything the box says (each speech "played" instantly),
/// returning what it said and every other action, in order.
fn play(r: &mut Receptionist, now: u64) -> (Vec<String>, Vec<Action>) {
    let mut said = Vec::new();
    let mut other = Vec::new();
    while let Some(a) = r.poll_action() {
        match a {
            Action::Say(s) => {
                said.push(s.text);
                r.handle(Input::SaidDone, at(now));
            }
            a => other.push(a),
        }
    }
    (said, other)
}

fn heard(text: &str, intent: Option<(&str, f32)>) -> Input {
    Input::Heard(Box::new(Heard {
        text: text.into(),
        intent: intent.map(|(i, c)| Understood {
            intent: i.into(),
            confidence: c,
        }),
        entities: handlet_models::entities::extract(text, 20_000),
    }))
}

fn connects_to(actions: &[Action]) -> Option<Dest> {
    actions.iter().find_map(|a| match a {
        Action::Connect(Step::Ring(r)) => Some(r.dest.clone()),
        _ => None,
    })
}

#[test]
fn greets_with_the_notice_then_routes_an_emergency_after_hours_to_on_call() {
    let mut r = start(None);
    let (said, _) = play(&mut r, 0);
    assert_eq!(
        said,
        [
            "Thank you for calling Smith and Sons.",
            "This call is recorded.",
            "How can I help you today?"
        ]
    );
    r.handle(
        heard(
            "My boiler is leaking all over the kitchen",
            Some(("emergency", 0.9)),
        ),
        at(5_000),
    );
    let (said, other) = play(&mut r, 5_000);
    assert_eq!(said, ["Thank you. I'll put you through to the team now."]);
    let Some(Action::Decided(d)) = other.first() else {
        panic!("{other:?}")
    };
    assert!(
        d.to_string()
            .contains("intent emergency (90% sure) → group oncall"),
        "{d}"
    );
    assert_eq!(connects_to(&other), Some(Dest::Group("oncall".into())));
    // While it rings, words and silence change nothing.
    r.handle(heard("hello?", None), at(6_000));
    r.handle_timeout(at(60_000));
    assert!(play(&mut r, 60_000).0.is_empty());
}

#[test]
fn when_unsure_it_asks_once_then_falls_back_to_a_message() {
    let mut r = start(Some("07700900555"));
    play(&mut r, 0);
    r.handle(
        heard("Yeah so it's about the thing", Some(("booking", 0.2))),
        at(3_000),
    );
    let (said, other) = play(&mut r, 3_000);
    assert_eq!(
        said,
        [
            "Sorry, could you tell me in a few words what you're calling about?",
            "Or press 1 for an emergency."
        ]
    );
    assert!(other.is_empty(), "no decision yet: {other:?}");
    // Still unsure: no second clarifying question, the plan's unknown route.
    r.handle(
        heard("the thing from before", Some(("unknown", 0.5))),
        at(6_000),
    );
    let (said, other) = play(&mut r, 6_000);
    assert!(
        matches!(&other[0], Action::Decided(d) if d.to_string().contains("intent unknown")),
        "{other:?}"
    );
    assert_eq!(said[0], "I'll take a message and we'll call you back.");
    assert_eq!(said[1], "Can I take your name, please?");
}

#[test]
fn a_quote_becomes_a_message_with_the_number_read_back_and_corrected() {
    let mut r = start(None);
    play(&mut r, 0);
    r.handle(
        heard(
            "Hi, I'd like a quote for a new bathroom suite",
            Some(("quote", 0.8)),
        ),
        at(4_000),
    );
    let (said, _) = play(&mut r, 4_000);
    assert_eq!(said.last().unwrap(), "Can I take your name, please?");
    r.handle(heard("It's John Smith.", None), at(8_000));
    let (said, _) = play(&mut r, 8_000);
    assert_eq!(said, ["What's the best number to call you back on?"]);
    r.handle(
        heard(
            "oh seven seven double oh, nine double oh, one two three",
            None,
        ),
        at(12_000),
    );
    let (said, _) = play(&mut r, 12_000);
    assert_eq!(
        said,
        [
            "Let me read that back.",
            "I have zero seven seven zero zero, nine zero zero, one two three. Is that right?"
        ]
    );
    // Wrong: corrected in the same breath, read back again.
    r.handle(heard("No, it's 07700 900124.", None), at(16_000));
    let (said, _) = play(&mut r, 16_000);
    assert_eq!(
        said,
        [
            "Let me read that back.",
            "I have zero seven seven zero zero, nine zero zero, one two four. Is that right?"
        ]
    );
    r.handle(heard("Yes, that's right.", None), at(20_000));
    let (said, _) = play(&mut r, 20_000);
    assert_eq!(said, ["What's the address, with the postcode?"]);
    r.handle(heard("12 High Street, Leeds, LS1 4AB", None), at(24_000));
    let (said, other) = play(&mut r, 24_000);
    let Some(Action::Message(m)) = other.first() else {
        panic!("{other:?}")
    };
    assert_eq!(m.name.as_deref(), Some("John Smith"));
    assert_eq!(m.number.as_deref(), Some("07700900124"));
    assert!(m.number_confirmed && m.complete);
    assert_eq!(
        m.about.as_deref(),
        Some("Hi, I'd like a quote for a new bathroom suite")
    );
    assert!(m.address.as_deref().unwrap().contains("LS1 4AB"), "{m:?}");
    assert_eq!(m.intent.as_deref(), Some("quote"));
    assert_eq!(
        said,
        [
            "Thank you, John Smith. We'll call you back on zero seven seven zero zero, nine zero zero, one two four as soon as we can. Goodbye."
        ]
    );
    assert_eq!(other.last(), Some(&Action::Hangup));
    assert!(r.is_done());
}

#[test]
fn the_callers_own_number_is_offered_and_a_no_asks_for_another() {
    let mut r = start(Some("07700900555"));
    play(&mut r, 0);
    r.handle(
        heard(
            "Can someone call me back about a quote",
            Some(("quote", 0.7)),
        ),
        at(3_000),
    );
    play(&mut r, 3_000);
    r.handle(heard("Priya", None), at(6_000));
    let (said, _) = play(&mut r, 6_000);
    assert_eq!(
        said,
        [
            "Is the number you're calling from, zero seven seven zero zero, nine zero zero, five five five, the best one to call you back on?"
        ]
    );
    r.handle(heard("no", None), at(9_000));
    let (said, _) = play(&mut r, 9_000);
    assert_eq!(
        said,
        ["Sorry about that. Please say the number again, digit by digit."]
    );
    // Typed on the keypad instead, ended with #.
    for k in "01134960000#".chars() {
        r.handle(Input::Key(k), at(12_000));
    }
    let (said, _) = play(&mut r, 12_000);
    assert_eq!(
        said,
        [
            "Let me read that back.",
            "I have zero one one three four, nine six zero, zero zero zero. Is that right?"
        ]
    );
}

#[test]
fn the_caller_talking_stops_the_box_except_during_the_notice() {
    let mut r = start(None);
    // The greeting: the caller speaks, but the notice must be heard first.
    let Some(Action::Say(s)) = r.poll_action() else {
        panic!()
    };
    assert!(s.text.starts_with("Thank you for calling"));
    r.handle(Input::SpeechStarted, at(500));
    assert_eq!(r.poll_action(), None, "not cut: the notice follows");
    r.handle(Input::SaidDone, at(1_500));
    let Some(Action::Say(s)) = r.poll_action() else {
        panic!()
    };
    assert_eq!(s.text, "This call is recorded.");
    assert!(!s.interruptible);
    // Words said over the notice are kept and answered once it ends,
    // without asking the question they already answer.
    r.handle(
        heard("gas leak, please come now", Some(("emergency", 0.95))),
        at(2_000),
    );
    r.handle(Input::SaidDone, at(2_500));
    let (said, other) = play(&mut r, 2_500);
    assert_eq!(said, ["Thank you. I'll put you through to the team now."]);
    assert_eq!(connects_to(&other), Some(Dest::Group("oncall".into())));

    // The first half of a sentence heard over the notice, the second half
    // starting as the notice ends: the first half is not lost to the
    // barge-in.
    let mut r = start(None);
    r.poll_action();
    r.handle(Input::SaidDone, at(1_000));
    r.poll_action();
    r.handle(Input::SpeechStarted, at(1_200));
    r.handle(
        heard("my boiler is leaking", Some(("emergency", 0.9))),
        at(1_800),
    );
    r.handle(Input::SaidDone, at(2_000));
    r.handle(Input::SpeechStarted, at(2_100));
    let (said, other) = play(&mut r, 2_100);
    assert!(
        !said.contains(&"How can I help you today?".to_string()),
        "{said:?}"
    );
    assert_eq!(connects_to(&other), Some(Dest::Group("oncall".into())));

    // A cough over the notice (no words) is no answer: the question is
    // still asked, and words said before it are not replaced by it.
    let mut r = start(None);
    r.poll_action();
    r.handle(Input::SaidDone, at(1_000));
    r.poll_action();
    r.handle(heard("", None), at(1_500));
    r.handle(Input::SaidDone, at(2_000));
    let Some(Action::Say(s)) = r.poll_action() else {
        panic!()
    };
    assert_eq!(s.text, "How can I help you today?");
    let mut r = start(None);
    r.poll_action();
    r.handle(Input::SaidDone, at(1_000));
    r.poll_action();
    r.handle(heard("I need a quote", Some(("quote", 0.9))), at(1_500));
    r.handle(heard("", None), at(1_800));
    r.handle(Input::SaidDone, at(2_000));
    let (said, _) = play(&mut r, 2_000);
    assert!(
        said.contains(&"Can I take your name, please?".to_string()),
        "{said:?}"
    );

    // Taking a message: words over the notice are not the caller's name;
    // the box still says what it is doing and asks.
    let facts = Facts::new(Caller::Number("+447700900555".into()), None);
    let mut r = Receptionist::for_message(cfg(), plan(), facts, None, true, at(0));
    r.poll_action();
    r.handle(Input::SaidDone, at(1_000));
    r.poll_action();
    r.handle(heard("it's about my boiler", None), at(1_500));
    r.handle(Input::SaidDone, at(2_000));
    r.handle(Input::SpeechStarted, at(2_100));
    let (said, _) = play(&mut r, 2_100);
    assert!(
        !said.contains(&"Sorry, I didn't catch your name. What is it?".to_string()),
        "{said:?}"
    );
    r.handle(heard("It's John Smith.", None), at(4_000));
    let (said, _) = play(&mut r, 4_000);
    assert_eq!(said, ["What's the best number to call you back on?"]);

    // The question itself can be cut: stop at once, listen.
    let mut r = start(None);
    r.poll_action();
    r.handle(Input::SaidDone, at(1_000));
    r.poll_action();
    r.handle(Input::SaidDone, at(2_000));
    let Some(Action::Say(s)) = r.poll_action() else {
        panic!()
    };
    assert!(s.interruptible);
    r.handle(Input::SpeechStarted, at(2_100));
    assert_eq!(r.poll_action(), Some(Action::StopSpeaking));
    r.handle(heard("I need a quote", Some(("quote", 0.9))), at(4_000));
    let (said, _) = play(&mut r, 4_000);
    assert!(
        said.contains(&"Can I take your name, please?".to_string()),
        "{said:?}"
    );
}

#[test]
fn silence_asks_if_anyone_is_there_then_ends_politely_keeping_the_message() {
    let mut r = start(None);
    play(&mut r, 0);
    assert_eq!(r.poll_timeout(), Some(7_000));
    r.handle_timeout(at(6_999));
    assert_eq!(r.poll_action(), None);
    r.handle_timeout(at(7_000));
    let (said, _) = play(&mut r, 7_000);
    assert_eq!(said, ["Are you still there?"]);
    r.handle(
        heard("sorry, yes, I need a quote", Some(("quote", 0.8))),
        at(9_000),
    );
    play(&mut r, 9_000);
    r.handle(heard("Dave", None), at(12_000));
    play(&mut r, 12_000);
    // Asked for a number; nothing, twice.
    r.handle_timeout(at(19_000));
    let (said, _) = play(&mut r, 19_000);
    assert_eq!(said, ["Are you still there?"]);
    r.handle_timeout(at(26_000));
    let (said, other) = play(&mut r, 26_000);
    assert_eq!(said, ["I'll let you go now. Goodbye."]);
    let Some(Action::Message(m)) = other.first() else {
        panic!("{other:?}")
    };
    assert_eq!(m.name.as_deref(), Some("Dave"));
    assert!(!m.complete);
    assert_eq!(other.last(), Some(&Action::Hangup));
}

#[test]
fn a_key_from_the_menu_routes_at_once_but_never_cuts_the_notice() {
    // Pressed during the question: cut at once.
    let mut r = start(None);
    r.poll_action();
    r.handle(Input::SaidDone, at(1_000));
    r.poll_action();
    r.handle(Input::SaidDone, at(2_000));
    let Some(Action::Say(s)) = r.poll_action() else {
        panic!()
    };
    assert!(s.interruptible, "{s:?}");
    r.handle(Input::Key('1'), at(2_200));
    let (said, other) = play(&mut r, 2_200);
    assert_eq!(other[0], Action::StopSpeaking);
    assert!(
        matches!(&other[1], Action::Decided(d) if d.to_string().contains("pressed 1: emergency")),
        "{other:?}"
    );
    assert_eq!(said, ["Thank you. I'll put you through to the team now."]);
    assert_eq!(connects_to(&other), Some(Dest::Group("oncall".into())));

    // Pressed during the greeting: the recording notice is still said in
    // full, then the key acts without the question being asked.
    let mut r = start(None);
    r.poll_action();
    r.handle(Input::Key('1'), at(800));
    assert_eq!(r.poll_action(), None, "nothing is cut before the notice");
    r.handle(Input::SaidDone, at(1_000));
    let (said, other) = play(&mut r, 1_000);
    assert_eq!(
        said,
        [
            "This call is recorded.",
            "Thank you. I'll put you through to the team now."
        ]
    );
    assert!(!other.contains(&Action::StopSpeaking), "{other:?}");
    assert_eq!(connects_to(&other), Some(Dest::Group("oncall".into())));
    // Words and a key both over the notice: the key wins, and nothing is
    // left to act on later.
    let mut r = start(None);
    r.poll_action();
    r.handle(Input::SaidDone, at(500));
    r.poll_action();
    r.handle(heard("I'd like a quote", Some(("quote", 0.9))), at(700));
    r.handle(Input::Key('1'), at(800));
    r.handle(Input::SaidDone, at(1_000));
    let (said, other) = play(&mut r, 1_000);
    assert_eq!(said, ["Thank you. I'll put you through to the team now."]);
    assert_eq!(connects_to(&other), Some(Dest::Group("oncall".into())));
    // A key the plan does not know is ignored.
    let mut r = start(None);
    play(&mut r, 0);
    r.handle(Input::Key('7'), at(1_000));
    assert_eq!(r.poll_action(), None);
}

#[test]
fn nobody_answering_comes_back_for_a_message() {
    let mut r = start(None);
    play(&mut r, 0);
    r.handle(
        heard(
            "there's water pouring through the ceiling",
            Some(("emergency", 0.9)),
        ),
        at(3_000),
    );
    let (_, other) = play(&mut r, 3_000);
    assert!(connects_to(&other).is_some());
    r.nobody_answered(
        Tried {
            dest: Dest::Group("oncall".into()),
            outcome: Unanswered::NoAnswer,
        },
        at(30_000),
    );
    let (said, other) = play(&mut r, 30_000);
    assert!(
        matches!(&other[0], Action::Decided(d) if d.to_string().contains("group oncall did not answer → take a message")),
        "{other:?}"
    );
    assert_eq!(
        said,
        [
            "I'm sorry, nobody could take your call just now.",
            "I'll take a message and we'll call you back.",
            "Can I take your name, please?"
        ]
    );
}

#[test]
fn turns_are_bounded_and_a_hang_up_keeps_what_was_said() {
    let mut r = start(None);
    play(&mut r, 0);
    r.handle(heard("I'd like a quote", Some(("quote", 0.8))), at(1_000));
    play(&mut r, 1_000);
    // Never a name: asked twice more, then skipped.
    let mut t = 2_000;
    for _ in 0..3 {
        r.handle(heard("12345 hmm 678", None), at(t));
        play(&mut r, t);
        t += 1_000;
    }
    // Now the number is asked for; numbers that are never numbers.
    let mut ended = false;
    for _ in 0..20 {
        r.handle(heard("what was that", None), at(t));
        let (_, other) = play(&mut r, t);
        t += 1_000;
        if other.contains(&Action::Hangup) {
            ended = true;
            break;
        }
    }
    assert!(ended, "a bounded number of turns");
    assert!(r.is_done());

    let mut r = start(None);
    play(&mut r, 0);
    r.handle(
        heard("quote for a fence please", Some(("quote", 0.8))),
        at(1_000),
    );
    play(&mut r, 1_000);
    r.handle(heard("Sam", None), at(2_000));
    play(&mut r, 2_000);
    r.caller_gone();
    let Some(Action::Message(m)) = r.poll_action() else {
        panic!()
    };
    assert_eq!(m.name.as_deref(), Some("Sam"));
    assert_eq!(m.about.as_deref(), Some("quote for a fence please"));
    assert!(!m.complete);
}

fn prepared(r: &mut Receptionist) -> Vec<String> {
    std::iter::from_fn(|| r.poll_prepare()).collect()
}

#[test]
fn what_will_probably_be_said_next_is_offered_for_rendering_ahead() {
    let mut r = start(Some("07700900555"));
    // The greeting starts; what is queued behind it is known already.
    let Some(Action::Say(s)) = r.poll_action() else {
        panic!()
    };
    assert!(s.text.starts_with("Thank you for calling"));
    assert_eq!(
        prepared(&mut r),
        ["This call is recorded.", "How can I help you today?"]
    );
    r.handle(Input::SaidDone, at(1_000));
    play(&mut r, 1_000);
    prepared(&mut r);
    r.handle(
        heard("I'd like a quote for a new boiler", Some(("quote", 0.9))),
        at(4_000),
    );
    r.handle(heard("Jane Doe", None), at(8_000));
    play(&mut r, 8_000);
    // Asked whether the caller's own number will do: the reply to a yes
    // is ready, and nothing in the machine moved for working it out.
    let ahead = prepared(&mut r);
    assert!(
        ahead.contains(&"What's the address, with the postcode?".to_string()),
        "{ahead:?}"
    );
    assert_eq!(r.poll_action(), None);
    r.handle(heard("yes please", None), at(12_000));
    let (said, _) = play(&mut r, 12_000);
    assert_eq!(said, ["What's the address, with the postcode?"]);
    // A "no" still does what it did: ask for the number.
    let mut r = start(Some("07700900555"));
    play(&mut r, 0);
    r.handle(heard("a quote please", Some(("quote", 0.9))), at(4_000));
    r.handle(heard("Jane Doe", None), at(8_000));
    play(&mut r, 8_000);
    r.handle(heard("no, use my mobile", None), at(12_000));
    let (said, _) = play(&mut r, 12_000);
    assert_eq!(
        said,
        ["Sorry about that. Please say the number again, digit by digit."]
    );
}
