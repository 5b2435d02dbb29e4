//! A caller who gives up while the phone the receptionist put them
//! through to is still ringing: the call's media figures (packets, loss,
//! jitter of the leg that ran the conversation and the ringback) are kept.
//! Alone in its file so it does not share the 2 cores with the other
//! receptionist calls.

mod common;
use common::reception::*;
use common::*;

#[test]
fn a_caller_who_leaves_while_the_phone_rings_keeps_the_calls_media_figures() {
    let agent = Agent::start_with(
        "reception-leaves",
        r#"[[extension]]
number = "201"
secret = "oncall-201-secret"

[routing]
closed = "receptionist"

[[routing.group]]
name = "oncall"
members = ["201"]
ring_secs = 40
no_answer = "message"

[routing.intents]
emergency = { open = "oncall", closed = "oncall" }

[receptionist]
business = "Smith Plumbing"
"#,
    );
    let (ok, out, err) = handlet(&agent, &["route", "override", "closed"]);
    assert!(ok, "{out}{err}");
    // Registered, never answers: the caller gives up while it rings.
    let phone = DeskPhone::start(&agent, "201", "oncall-201-secret", false, None, 90);
    let wav = caller_wav(
        agent.dir.path(),
        "impatient-caller",
        &["Help, my boiler is leaking water all over the kitchen floor."],
        7.0,
        6.0,
    );
    let (log, _heard) = baresip_call(&agent, "tester", &wav, "leaves");
    assert!(log.contains("Call established"), "baresip:\n{log}");
    let db = Db::open(&agent.database());
    let id = ended_call(&db);
    let ctx = || {
        format!(
            "box said: {}\ncaller: {}\nlog:\n{}\nphone:\n{}",
            db.channel_transcript(&id, "agent"),
            db.channel_transcript(&id, "caller"),
            agent.log(),
            phone.output()
        )
    };
    // It rang and nobody answered before the caller left.
    let legs = || -> Vec<(String, Option<i64>)> {
        db.0.prepare("SELECT target, answered_at_ms FROM call_legs WHERE call_id = ?1")
            .unwrap()
            .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while legs().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let legs = legs();
    assert_eq!(legs.len(), 1, "{legs:?}\n{}", ctx());
    assert!(legs[0].1.is_none(), "{legs:?}");
    // The caller's leg ran through the conversation and the ringing: its
    // packets, loss and jitter are stored for the call.
    let packets: i64 = wait_for(30, "the call's media figures", || {
        db.0.query_row(
            "SELECT packets FROM call_media WHERE call_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .ok()
    });
    // 50 packets a second for the 7 s before the caller spoke at least.
    assert!(packets > 350, "{packets} packets\n{}", ctx());
    wait_for(60, "the transcript", || {
        db.calls()
            .into_iter()
            .find(|c| c.id == id && c.complete)
            .map(|_| ())
    });
}
