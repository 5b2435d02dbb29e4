//! The routing plan on a running agent: calls from a trunk go where the
//! plan says for their caller and the opening state, the operator flips
//! that state with `handlet route override` while the agent runs (and it
//! survives a restart), and every decision is on the call's timeline with
//! its reason. `handlet route explain` prints a path offline.

mod common;
use common::*;

const DID: &str = "+441632960001";
/// The provider's address the box takes calls from (an IP trunk).
const PROVIDER: [u8; 4] = [127, 0, 0, 7];

fn routing_config() -> String {
    format!(
        r#"[[trunk]]
name = "provider"
mode = "ip"
host = "127.0.0.7:5999"
hosts = ["127.0.0.7/32"]
keepalive_secs = 0
dids = ["{DID}"]

[[extension]]
number = "101"
secret = "desk-101-secret"
[[extension]]
number = "102"
secret = "desk-102-secret"

[routing]
timezone = "Europe/London"
holidays = ["2026-12-25"]
open = "office"
closed = "receptionist"
withheld = {{ open = "receptionist", closed = "voicemail" }}

[routing.hours]
mon = ["08:00-17:30"]
tue = ["08:00-17:30"]
wed = ["08:00-17:30"]
thu = ["08:00-17:30"]
fri = ["08:00-17:30"]

[[routing.caller]]
name = "blocklist"
numbers = ["07700 900666"]
to = "reject"

[[routing.caller]]
name = "supplier"
numbers = ["+447700900888"]
to = "102"

[[routing.group]]
name = "office"
members = ["101"]
ring_secs = 10
no_answer = "receptionist"
"#
    )
}

fn route_events(db: &Db, call: &str) -> Vec<String> {
    db.0.prepare("SELECT detail FROM call_events WHERE call_id = ?1 AND kind = 'route' ORDER BY id")
        .unwrap()
        .query_map([call], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The newest call from `caller` (E.164 or NULL), once it has a route event.
fn call_from(db: &Db, caller: Option<&str>, after: usize) -> String {
    wait_for(30, "the routed call", || {
        let calls: Vec<(String, Option<String>)> =
            db.0.prepare("SELECT id, caller FROM calls ORDER BY rowid")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        calls
            .into_iter()
            .skip(after)
            .find(|(id, c)| c.as_deref() == caller && !route_events(db, id).is_empty())
            .map(|(id, _)| id)
    })
}

/// `invite_from` the provider, with the agent's log if it goes wrong.
fn invite(agent: &Agent, from_user: &str) -> u16 {
    let a = std::panic::AssertUnwindSafe(agent);
    match std::panic::catch_unwind(|| invite_from_within(PROVIDER, &a, DID, from_user, 15)) {
        Ok(code) => code,
        Err(_) => panic!(
            "no answer to an INVITE from {from_user}; agent log:\n{}",
            agent.log()
        ),
    }
}

fn count(db: &Db) -> usize {
    db.0.query_row("SELECT COUNT(*) FROM calls", [], |r| r.get::<_, i64>(0))
        .unwrap() as usize
}

#[test]
fn calls_go_where_the_plan_says_and_the_operator_can_override_the_hours() {
    let dir = TempDir::new("routing");
    let mut agent = Agent::start_in(dir, &routing_config());
    let db = Db::open(&agent.database());

    // A blocked number is refused (603) whatever the time, and the call is
    // kept with the reason, naming the rule and never the number.
    assert_eq!(invite(&agent, "07700900666"), 603);
    let blocked = call_from(&db, Some("+447700900666"), 0);
    let why = route_events(&db, &blocked);
    assert!(
        why[0].contains("caller is on the blocklist list → reject"),
        "{why:?}"
    );
    let reason: String = wait_for(10, "the rejected call's end", || {
        db.0.query_row(
            "SELECT end_reason FROM calls WHERE id = ?1 AND ended_at_ms IS NOT NULL",
            [&blocked],
            |r| r.get(0),
        )
        .ok()
    });
    assert_eq!(reason, "rejected by the routing plan");

    // Closed by the operator: a withheld caller gets voicemail (today the
    // agent answers and records; see README for what voicemail lacks).
    let set = ok(&agent, &["route", "override", "closed"]);
    assert!(set.contains("\"override\": \"closed\""), "{set}");
    assert!(set.contains("\"open\": false"), "{set}");
    let n = count(&db);
    assert_eq!(invite(&agent, "anonymous"), 200);
    let night = call_from(&db, None, n);
    let why = route_events(&db, &night);
    assert!(why[0].contains("closed (override: closed)"), "{why:?}");
    assert!(
        why[0].contains("caller withheld their number → voicemail main"),
        "{why:?}"
    );

    // Open by the operator: the supplier rings extension 102, anyone else
    // the office group (101), which answers.
    let hello = speech_wav(agent.dir.path(), "office", "Hello, office.", 8000, 0.3, 5.0);
    let _d101 = DeskPhone::start(&agent, "101", "desk-101-secret", true, Some(&hello), 60);
    let _d102 = DeskPhone::start(&agent, "102", "desk-102-secret", true, Some(&hello), 60);
    let set = ok(&agent, &["route", "override", "open"]);
    assert!(set.contains("\"open\": true"), "{set}");
    let n = count(&db);
    assert_eq!(invite(&agent, "07700900888"), 200);
    let supplier = call_from(&db, Some("+447700900888"), n);
    let why = route_events(&db, &supplier);
    assert!(
        why[0].contains("caller is on the supplier list → extension 102"),
        "{why:?}"
    );
    let n = count(&db);
    assert_eq!(invite(&agent, "07700900555"), 200);
    let customer = call_from(&db, Some("+447700900555"), n);
    let why = route_events(&db, &customer);
    assert!(why[0].contains("open (override: open)"), "{why:?}");
    assert!(
        why[0].contains("default route when open → group office"),
        "{why:?}"
    );
    let rung = |call: &str| -> Vec<(String, String)> {
        wait_for(30, "the legs rung", || {
            let legs: Vec<(String, String)> =
                db.0.prepare("SELECT target, outcome FROM call_legs WHERE call_id = ?1")
                    .unwrap()
                    .query_map([call], |r| Ok((r.get(0)?, r.get(1)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
            (!legs.is_empty()).then_some(legs)
        })
    };
    assert_eq!(
        rung(&supplier)[0],
        ("102".to_string(), "answered".to_string())
    );
    assert_eq!(
        rung(&customer)[0],
        ("101".to_string(), "answered".to_string())
    );

    // The switch survives a restart (kept in the database).
    ok(&agent, &["route", "override", "closed"]);
    agent.kill_and_restart();
    let state = ok(&agent, &["route", "override"]);
    assert!(state.contains("\"override\": \"closed\""), "{state}");
    assert!(
        agent.log().contains("routing override is closed"),
        "the start-up says so: {}",
        agent.log()
    );
    // A typo is refused with the choices.
    let (good, _, err) = handlet(&agent, &["route", "override", "shut"]);
    assert!(
        !good && err.contains("\"shut\" is not open, closed or auto"),
        "{err}"
    );
    ok(&agent, &["route", "override", "auto"]);

    // Explained offline, for Christmas morning, with an emergency heard.
    let text = ok(
        &agent,
        &[
            "route",
            "explain",
            "--from",
            "+447700900123",
            "--to",
            DID,
            "--at",
            "2026-12-25 10:00",
            "--intent",
            "emergency",
        ],
    );
    assert!(
        text.contains("1. Fri 2026-12-25 10:00 Europe/London: closed (holiday 2026-12-25); default route when closed → receptionist"),
        "{text}"
    );
    assert!(text.contains("intent emergency"), "{text}");
}
