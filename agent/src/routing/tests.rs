//! `decide` over a table of cases, with time passed in; and the plan's
//! validation, one clear line per mistake.

use super::*;
use crate::phone::Country;

const INTENTS: [&str; 10] = [
    "emergency",
    "booking",
    "reschedule_or_cancel",
    "quote",
    "job_status",
    "billing",
    "info",
    "speak_to_person",
    "complaint",
    "sales_or_spam",
];

/// A plumber's plan: office hours, a night line, VIPs, a blocklist.
const PLUMBER: &str = r#"
timezone = "Europe/London"
holidays = ["2026-12-25", "2026-12-26"]
open = "office"
closed = "receptionist"
withheld = { open = "receptionist", closed = "voicemail" }

[hours]
mon = ["08:00-17:30"]
tue = ["08:00-17:30"]
wed = ["08:00-17:30"]
thu = ["08:00-17:30"]
fri = ["08:00-17:30"]
sat = ["09:00-12:00"]

[[did]]
number = "01632 960002"
open = "103"

[[caller]]
name = "blocklist"
numbers = ["+447700900666", "0909*"]
to = "reject"

[[caller]]
name = "vip"
numbers = ["07700 900777"]
to = { open = "office", closed = "oncall" }

[[caller]]
name = "supplier"
numbers = ["+441632960999"]
to = "office"

[[group]]
name = "office"
members = ["101", "102"]
strategy = "ringall"
ring_secs = 20
no_answer = "receptionist"

[[group]]
name = "oncall"
members = ["07700 900123", "07700 900124"]
strategy = "hunt"
ring_secs = 25
no_answer = "message"

[intents]
emergency = { open = "office", closed = "oncall" }
quote = "message"
speak_to_person = { open = "office", closed = "message" }
unknown = "message"

[keys]
1 = "emergency"
2 = "quote"

[[voicemail]]
name = "main"
greeting = "You have reached Smith and Sons. Please leave a message."
"#;

fn context() -> Context<'static> {
    Context {
        country: Country::GB,
        extensions: vec!["101", "102", "103"],
        dids: vec!["+441632960001".into(), "+441632960002".into()],
        has_trunk: true,
        intents: INTENTS.to_vec(),
        inbound_ring: &[],
        inbound_strategy: Strategy::Ringall,
        inbound_ring_secs: 20,
    }
}

fn compile(toml_text: &str) -> Result<Plan, String> {
    let cfg: RoutingConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    Plan::compile(&cfg, &context())
}

fn plumber() -> Plan {
    compile(PLUMBER).unwrap()
}

/// Unix ms of a local time in the plan's zone.
fn at(plan: &Plan, local: &str) -> i64 {
    local
        .parse::<jiff::civil::DateTime>()
        .unwrap()
        .to_zoned(plan.timezone.clone())
        .unwrap()
        .timestamp()
        .as_millisecond()
}

/// Unix ms of a UTC time.
fn utc(s: &str) -> i64 {
    format!("{s}Z")
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_millisecond()
}

const CALLER: &str = "+447700900555";
const DID: &str = "+441632960001";

fn facts() -> Facts {
    Facts::new(Caller::Number(CALLER.into()), Some(DID.into()))
}

fn ring(dest: Dest) -> impl Fn(&Step) -> bool {
    move |s| matches!(s, Step::Ring(r) if r.dest == dest)
}

#[test]
fn the_table() {
    let p = plumber();
    let office = || ring(Dest::Group("office".into()));
    let oncall = || ring(Dest::Group("oncall".into()));
    type Check = Box<dyn Fn(&Step) -> bool>;
    let reception: Check = Box::new(|s| *s == Step::Receptionist);
    let message: Check = Box::new(|s| *s == Step::TakeMessage);
    let mut with = |f: &dyn Fn(&mut Facts)| {
        let mut x = facts();
        f(&mut x);
        x
    };
    let greeted = |intent: &str| {
        let mut x = facts();
        x.greeted = true;
        x.understood = Some(Understood {
            intent: intent.into(),
            confidence: 0.8,
        });
        x
    };
    let cases: Vec<(&str, Facts, i64, Check, &str)> = vec![
        (
            "open on a weekday",
            facts(),
            at(&p, "2026-11-30 10:00"),
            Box::new(office()),
            "Mon 2026-11-30 10:00 Europe/London: open (hours mon 08:00-17:30)",
        ),
        (
            "a plumber's line at 19:40 on a Sunday",
            facts(),
            at(&p, "2026-12-06 19:40"),
            reception,
            "Sun 2026-12-06 19:40 Europe/London: closed (no hours on sun)",
        ),
        (
            "Saturday morning is open, the afternoon is not",
            facts(),
            at(&p, "2026-12-05 11:59"),
            Box::new(office()),
            "open (hours sat 09:00-12:00)",
        ),
        (
            "Saturday afternoon",
            facts(),
            at(&p, "2026-12-05 12:00"),
            Box::new(|s| *s == Step::Receptionist),
            "closed (outside hours sat 09:00-12:00)",
        ),
        (
            "a holiday in office hours",
            facts(),
            at(&p, "2026-12-25 10:00"),
            Box::new(|s| *s == Step::Receptionist),
            "closed (holiday 2026-12-25)",
        ),
        (
            "the second DID rings its own extension",
            with(&|f| f.did = Some("+441632960002".into())),
            at(&p, "2026-11-30 10:00"),
            Box::new(ring(Dest::Extension("103".into()))),
            "DID +441632960002 when open → extension 103",
        ),
        (
            "a blocked caller is rejected, day or night",
            with(&|f| f.caller = Caller::Number("+447700900666".into())),
            at(&p, "2026-11-30 10:00"),
            Box::new(|s| *s == Step::Reject),
            "caller is on the blocklist list → reject",
        ),
        (
            "a blocked prefix",
            with(&|f| f.caller = Caller::Number("+44909123456".into())),
            at(&p, "2026-12-06 03:00"),
            Box::new(|s| *s == Step::Reject),
            "blocklist",
        ),
        (
            "a VIP after hours reaches the on-call mobiles",
            with(&|f| f.caller = Caller::Number("+447700900777".into())),
            at(&p, "2026-12-06 19:40"),
            Box::new(oncall()),
            "caller is on the vip list → group oncall",
        ),
        (
            "a VIP in hours rings the office",
            with(&|f| f.caller = Caller::Number("+447700900777".into())),
            at(&p, "2026-11-30 09:00"),
            Box::new(office()),
            "vip",
        ),
        (
            "a supplier rings the office even when closed",
            with(&|f| f.caller = Caller::Number("+441632960999".into())),
            at(&p, "2026-12-06 19:40"),
            Box::new(office()),
            "supplier",
        ),
        (
            "a withheld number at 3 am gets voicemail",
            with(&|f| f.caller = Caller::Withheld),
            at(&p, "2026-12-02 03:00"),
            Box::new(|s| {
                *s == Step::Voicemail {
                    mailbox: "main".into(),
                }
            }),
            "caller withheld their number → voicemail main",
        ),
        (
            "a withheld number in hours gets the receptionist",
            with(&|f| f.caller = Caller::Withheld),
            at(&p, "2026-12-02 10:00"),
            Box::new(|s| *s == Step::Receptionist),
            "withheld",
        ),
        (
            "a leaking boiler after hours goes to on-call",
            greeted("emergency"),
            at(&p, "2026-12-06 19:40"),
            Box::new(oncall()),
            "intent emergency (80% sure) → group oncall",
        ),
        (
            "an emergency in hours rings the office",
            greeted("emergency"),
            at(&p, "2026-11-30 10:00"),
            Box::new(office()),
            "intent emergency",
        ),
        (
            "a quote becomes a message",
            greeted("quote"),
            at(&p, "2026-11-30 10:00"),
            message,
            "intent quote (80% sure) → take a message",
        ),
        (
            "asking for a person when closed: a message",
            greeted("speak_to_person"),
            at(&p, "2026-12-06 19:40"),
            Box::new(|s| *s == Step::TakeMessage),
            "intent speak_to_person",
        ),
        (
            "asking for a person when open: the office",
            greeted("speak_to_person"),
            at(&p, "2026-11-30 10:00"),
            Box::new(office()),
            "intent speak_to_person",
        ),
        (
            "not understood: a message",
            greeted("unknown"),
            at(&p, "2026-11-30 10:00"),
            Box::new(|s| *s == Step::TakeMessage),
            "intent unknown",
        ),
        (
            "an intent without a route goes as unknown",
            greeted("billing"),
            at(&p, "2026-11-30 10:00"),
            Box::new(|s| *s == Step::TakeMessage),
            "no route of its own: as unknown",
        ),
        (
            "pressing 1 is an emergency",
            with(&|f| {
                f.greeted = true;
                f.keys = "1".into();
            }),
            at(&p, "2026-12-06 19:40"),
            Box::new(oncall()),
            "pressed 1: emergency → group oncall",
        ),
        (
            "a key outranks what was heard",
            with(&|f| {
                f.greeted = true;
                f.keys = "92".into();
                f.understood = Some(Understood {
                    intent: "emergency".into(),
                    confidence: 0.5,
                });
            }),
            at(&p, "2026-12-06 19:40"),
            Box::new(|s| *s == Step::TakeMessage),
            "pressed 2: quote",
        ),
        (
            "the office does not answer: the receptionist",
            with(&|f| {
                f.tried.push(Tried {
                    dest: Dest::Group("office".into()),
                    outcome: Unanswered::NoAnswer,
                })
            }),
            at(&p, "2026-11-30 10:00"),
            Box::new(|s| *s == Step::Receptionist),
            "group office did not answer → receptionist",
        ),
        (
            "the office does not answer after the receptionist: a message",
            with(&|f| {
                f.greeted = true;
                f.understood = Some(Understood {
                    intent: "speak_to_person".into(),
                    confidence: 0.9,
                });
                f.tried.push(Tried {
                    dest: Dest::Group("office".into()),
                    outcome: Unanswered::Busy,
                })
            }),
            at(&p, "2026-11-30 10:00"),
            Box::new(|s| *s == Step::TakeMessage),
            "group office was busy → receptionist; the receptionist has spoken with the caller already",
        ),
        (
            "on-call does not answer: a message",
            with(&|f| {
                f.tried.push(Tried {
                    dest: Dest::Group("oncall".into()),
                    outcome: Unanswered::NoAnswer,
                })
            }),
            at(&p, "2026-12-06 19:40"),
            Box::new(|s| *s == Step::TakeMessage),
            "group oncall did not answer → take a message",
        ),
    ];
    for (name, f, now, check, reason) in &cases {
        let d = decide(f, &p, *now);
        assert!(check(&d.step), "{name}: got {d}");
        assert!(
            d.to_string().contains(reason),
            "{name}: {reason:?} not in {d}"
        );
    }
    let _ = &mut with;
}

#[test]
fn the_override_beats_hours_and_holidays() {
    let p = plumber();
    let open = p.with_switch(Override::Open);
    let closed = p.with_switch(Override::Closed);
    let d = decide(&facts(), &closed, at(&p, "2026-11-30 10:00"));
    assert_eq!(d.step, Step::Receptionist, "{d}");
    assert!(d.to_string().contains("closed (override: closed)"), "{d}");
    let d = decide(&facts(), &open, at(&p, "2026-12-25 03:00"));
    assert!(ring(Dest::Group("office".into()))(&d.step), "{d}");
    assert!(d.to_string().contains("open (override: open)"), "{d}");
    // Back to auto: the hours again.
    let auto = closed.with_switch(Override::Auto);
    assert!(ring(Dest::Group("office".into()))(
        &decide(&facts(), &auto, at(&p, "2026-11-30 10:00")).step
    ));
    // The live plan swaps under running calls.
    let live = LivePlan::new(p.clone());
    let before = live.current();
    live.set_switch(Override::Closed);
    assert_eq!(before.switch, Override::Auto);
    assert_eq!(live.current().switch, Override::Closed);
}

#[test]
fn daylight_saving_changes_keep_hours_on_the_wall_clock() {
    let p = plumber();
    let open = |ms| p.state_at(ms).0;
    // London springs forward on Sunday 2027-03-28. 07:30 UTC is 07:30 on
    // the Monday before (closed) and 08:30 on the Monday after (open).
    assert!(!open(utc("2027-03-22T07:30:00")));
    assert!(open(utc("2027-03-29T07:30:00")));
    // 17:00 UTC on the Monday after is 18:00 BST: closed.
    assert!(!open(utc("2027-03-29T17:00:00")));
    assert!(open(utc("2027-03-22T17:00:00")));
    // And back on Sunday 2026-10-25: 07:30 UTC on Monday the 26th is
    // 07:30 GMT (closed); a week before it was 08:30 BST (open).
    assert!(open(utc("2026-10-19T07:30:00")));
    assert!(!open(utc("2026-10-26T07:30:00")));
    let (_, why) = p.state_at(utc("2026-10-19T07:30:00"));
    assert!(
        why.starts_with("Mon 2026-10-19 08:30 Europe/London"),
        "{why}"
    );

    // New York: a night line past midnight over the spring change
    // (2026-03-08 02:00 → 03:00), and the repeated hour in the autumn
    // (2026-11-01 01:00-02:00 twice).
    let night = compile(
        r#"
timezone = "America/New_York"
open = "office"
closed = "voicemail"
[hours]
sat = ["20:00-02:30+1"]
[[group]]
name = "office"
members = ["101"]
"#,
    )
    .unwrap();
    let open = |ms| night.state_at(ms).0;
    // Sun 2026-03-08 01:59 EST (06:59 UTC) open; a minute later the
    // clock reads 03:00 EDT: closed (02:00-02:30 never happened).
    assert!(open(utc("2026-03-08T06:59:00")));
    assert!(!open(utc("2026-03-08T07:00:00")));
    // Sun 2026-11-01: 01:30 EDT (05:30 UTC) and 01:30 EST (06:30 UTC) are
    // both inside the span; 02:29 EST (07:29 UTC) too; 02:30 EST closed.
    assert!(open(utc("2026-11-01T05:30:00")));
    assert!(open(utc("2026-11-01T06:30:00")));
    assert!(open(utc("2026-11-01T07:29:00")));
    assert!(!open(utc("2026-11-01T07:30:00")));
    let (_, why) = night.state_at(utc("2026-11-01T06:30:00"));
    assert!(why.contains("open (hours sat 20:00-02:30+1)"), "{why}");
}

#[test]
fn explain_prints_the_whole_path() {
    let p = plumber();
    let steps = explain::path(
        &p,
        Caller::Number(CALLER.into()),
        Some(DID.into()),
        Some("emergency"),
        at(&p, "2026-12-25 10:00"),
    );
    let kinds: Vec<String> = steps.iter().map(|d| d.step.to_string()).collect();
    assert_eq!(steps.len(), 3, "{kinds:?}");
    assert_eq!(steps[0].step, Step::Receptionist);
    assert!(ring(Dest::Group("oncall".into()))(&steps[1].step));
    assert_eq!(steps[2].step, Step::TakeMessage);
    let text = explain::render(&steps, Some("emergency"));
    assert!(
        text.contains("1. Fri 2026-12-25 10:00 Europe/London: closed (holiday 2026-12-25)"),
        "{text}"
    );
    assert!(
        text.contains("(if nobody answers) group oncall did not answer → take a message"),
        "{text}"
    );
    // Without an intent the path stops at the receptionist.
    let steps = explain::path(
        &p,
        Caller::Withheld,
        Some(DID.into()),
        None,
        at(&p, "2026-11-30 10:00"),
    );
    assert_eq!(steps.last().unwrap().step, Step::Receptionist);
}

#[test]
fn explain_reads_local_times_and_refuses_ones_the_clocks_skip() {
    let p = plumber();
    assert_eq!(
        explain::parse_local(&p, "2026-07-01 10:00").unwrap(),
        utc("2026-07-01T09:00:00")
    );
    let e = explain::parse_local(&p, "2027-03-28 01:30").unwrap_err();
    assert!(e.contains("the clocks skip it"), "{e}");
    assert!(explain::parse_local(&p, "25/12/2026").is_err());
}

#[test]
fn the_inbound_ring_list_is_the_default_route() {
    let mut ctx = context();
    let ring = vec!["101".to_string(), "102".to_string()];
    ctx.inbound_ring = &ring;
    ctx.inbound_strategy = Strategy::Hunt;
    let p = Plan::compile(&RoutingConfig::default(), &ctx).unwrap();
    let d = decide(&facts(), &p, 0);
    match &d.step {
        Step::Ring(r) => {
            assert_eq!(r.members, ring);
            assert_eq!(r.strategy, Strategy::Hunt);
        }
        s => panic!("{s}"),
    }
    assert!(d.to_string().contains("always open"), "{d}");
    // Nobody answers: the receptionist, as before routing existed.
    let mut f = facts();
    f.tried.push(Tried {
        dest: Dest::Group(plan::INBOUND_GROUP.into()),
        outcome: Unanswered::NoAnswer,
    });
    assert_eq!(decide(&f, &p, 0).step, Step::Receptionist);
    // No ring list, no routing: the receptionist answers everything.
    let p = Plan::compile(&RoutingConfig::default(), &context()).unwrap();
    assert_eq!(decide(&facts(), &p, 0).step, Step::Receptionist);
}

#[test]
fn mistakes_are_refused_naming_the_field() {
    let base = r#"
[[group]]
name = "office"
members = ["101"]
"#;
    let cases: [(&str, &str); 21] = [
        (
            "no_answer = \"101\"\n[[did]]\nnumber = \"01632 960001\"\nopen = \"101\"",
            "routing.no_answer: no_answer loops: extension 101 → extension 101",
        ),
        (
            "no_answer = \"back\"\n[[group]]\nname = \"back\"\nmembers = [\"102\"]\nno_answer = \"101\"",
            "no_answer loops",
        ),
        (
            "[[group]]\nname = \"x\"\nmembers = [\"07700 900123\", \"+447700900123\"]",
            "members: \"+447700900123\" is listed twice",
        ),
        (
            "[[voicemail]]\nname = \"night\"\ngreeting_wav = \"/nonexistent/greeting.wav\"",
            "greeting_wav \"/nonexistent/greeting.wav\" is not a file",
        ),
        (
            "open = \"offce\"",
            "routing.open: \"offce\" is not a destination",
        ),
        (
            "timezone = \"Europe/Lundon\"",
            "routing.timezone: \"Europe/Lundon\" is not a timezone",
        ),
        (
            "[hours]\nmon = [\"17:30-08:00\"]",
            "routing.hours.mon: \"17:30-08:00\" is inverted",
        ),
        (
            "[hours]\nmon = [\"08:00-12:00\", \"11:00-13:00\"]",
            "routing.hours.mon: 08:00-12:00 and 11:00-13:00 overlap",
        ),
        (
            "holidays = [\"25/12/2026\"]",
            "routing.holidays: \"25/12/2026\" is not a date",
        ),
        (
            "[[group]]\nname = \"empty\"\nmembers = []",
            "routing.group \"empty\" (the 2nd): members is empty",
        ),
        (
            "[[group]]\nname = \"a\"\nmembers = [\"102\"]\nno_answer = \"b\"\n[[group]]\nname = \"b\"\nmembers = [\"103\"]\nno_answer = \"a\"",
            "no_answer loops: group a → group b → group a",
        ),
        (
            "[[group]]\nname = \"self\"\nmembers = [\"102\"]\nno_answer = \"self\"",
            "routing.group \"self\": no_answer loops: group self → group self",
        ),
        (
            "[[group]]\nname = \"x\"\nmembers = [\"999\"]",
            "members: \"999\" is not an [[extension]] number nor a phone number",
        ),
        (
            "[[group]]\nname = \"x\"\nmembers = [\"01632 960001\"]",
            "one of the trunks' own dids",
        ),
        (
            "[[group]]\nname = \"message\"\nmembers = [\"101\"]",
            "name \"message\" is reserved",
        ),
        (
            "[[did]]\nnumber = \"01632 960555\"\nopen = \"office\"",
            "routing.did \"01632 960555\" (the 1st): number is not one of the trunks' dids",
        ),
        (
            "[[caller]]\nname = \"vip\"\nnumbers = [\"12ab\"]\nto = \"office\"",
            "routing.caller \"vip\" (the 1st): numbers:",
        ),
        (
            "[[caller]]\nname = \"vip\"\nnumbers = [\"+447700900777\"]\nto = { open = \"office\", closed = \"nobody\" }",
            "to.closed: \"nobody\" is not a destination",
        ),
        (
            "[intents]\nemergancy = \"office\"",
            "routing.intents.emergancy: \"emergancy\" is not an intent",
        ),
        (
            "[keys]\n12 = \"emergency\"",
            "routing.keys: \"12\" is not one key",
        ),
        (
            "closed = \"voicemail:night\"",
            "routing.closed: \"voicemail:night\": there is no [[routing.voicemail]] named \"night\"",
        ),
    ];
    for (extra, want) in cases {
        // Top-level keys must come before the tables.
        let text = if extra.starts_with('[') {
            format!("{base}\n{extra}")
        } else {
            format!("{extra}\n{base}")
        };
        let e = compile(&text).expect_err(extra);
        assert!(e.contains(want), "{extra:?}: {want:?} not in {e:?}");
        assert!(!e.contains('\n'), "one line: {e:?}");
    }
    // Outside numbers need a trunk.
    let mut ctx = context();
    ctx.has_trunk = false;
    ctx.dids.clear();
    let cfg: RoutingConfig =
        toml::from_str("[[group]]\nname = \"m\"\nmembers = [\"07700 900123\"]").unwrap();
    let e = Plan::compile(&cfg, &ctx).unwrap_err();
    assert!(e.contains("needs a [[trunk]]"), "{e}");
}

#[test]
fn what_the_caller_said_after_a_no_answer_is_the_question() {
    let p = plumber();
    let now = at(&p, "2026-12-06 19:40");
    // The office rang out, then the receptionist heard an emergency.
    let mut f = facts();
    f.tried.push(Tried {
        dest: Dest::Group("office".into()),
        outcome: Unanswered::NoAnswer,
    });
    f.greeted = true;
    f.understood = Some(Understood {
        intent: "emergency".into(),
        confidence: 0.9,
    });
    f.heard_after = 1;
    let d = decide(&f, &p, now);
    assert!(ring(Dest::Group("oncall".into()))(&d.step), "{d}");
    // On-call then rings out too: that no-answer is the question now.
    f.tried.push(Tried {
        dest: Dest::Group("oncall".into()),
        outcome: Unanswered::NoAnswer,
    });
    let d = decide(&f, &p, now);
    assert_eq!(d.step, Step::TakeMessage, "{d}");
    assert!(d.to_string().contains("group oncall did not answer"), "{d}");
}

#[test]
fn a_call_rings_a_bounded_number_of_times_and_unknown_callers_are_not_withheld() {
    let p = plumber();
    let mut f = facts();
    for _ in 0..MAX_RINGS {
        f.tried.push(Tried {
            dest: Dest::Extension("103".into()),
            outcome: Unanswered::Busy,
        });
    }
    f.caller = Caller::Number("+447700900777".into());
    f.tried.push(Tried {
        dest: Dest::Group("oncall".into()),
        outcome: Unanswered::NoAnswer,
    });
    assert_eq!(decide(&f, &p, 0).step, Step::TakeMessage);
    // Someone whose From is a SIP name is neither a number nor withheld.
    assert_eq!(Caller::from_user("alice", None), Caller::Unknown);
    assert_eq!(Caller::from_user("Anonymous", None), Caller::Withheld);
    assert_eq!(Caller::from_user("", None), Caller::Withheld);
    let f = Facts::new(Caller::Unknown, Some(DID.into()));
    let d = decide(&f, &p, at(&p, "2026-12-02 03:00"));
    assert_eq!(d.step, Step::Receptionist, "not the withheld route: {d}");
    // Logs get the step without the numbers it rings.
    let oncall = Step::Ring(Ring {
        dest: Dest::Group("oncall".into()),
        members: vec!["07700 900123".into()],
        strategy: Strategy::Hunt,
        ring_secs: 20,
    });
    assert_eq!(oncall.label(), "ring group oncall (hunt)");
}
