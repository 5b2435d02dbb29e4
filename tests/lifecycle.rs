//! The agent stopping mid-call, politely (SIGTERM) or not (SIGKILL), leaves a
//! consistent record: the caller gets a BYE, and a killed agent's open call
//! is closed as interrupted when it starts again.

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn long_call(agent: &Agent) -> Child {
    let wav = speech_wav(
        agent.dir.path(),
        "long",
        "Hello, I am calling about the boiler in the kitchen. It has been leaking since Monday and the pressure keeps dropping.",
        8000,
        0.2,
        4.0,
    );
    Command::new(bin())
        .args(["call", "--config"])
        .arg(&agent.config)
        .arg("--wav")
        .arg(&wav)
        .args(["--wait", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn answered_call(agent: &Agent) -> CallRow {
    let db = Db::open(&agent.database());
    wait_for(20, "the call to be answered", || {
        db.calls().into_iter().find(|c| c.answered.is_some())
    })
}

#[test]
fn sigterm_mid_call_hangs_up_and_records_the_end() {
    let mut agent = Agent::start("sigterm");
    let mut caller = long_call(&agent);
    answered_call(&agent);
    std::thread::sleep(Duration::from_secs(2));
    Command::new("kill")
        .arg(agent.child.id().to_string())
        .status()
        .unwrap();
    let status = agent.child.wait().unwrap();
    assert!(
        status.success(),
        "agent exit {status:?}; log:\n{}",
        agent.log()
    );
    // The caller was told: it stops well before its 10 s of audio end.
    wait_for(10, "the caller to notice the BYE", || {
        caller.try_wait().unwrap()
    });
    let stderr = {
        use std::io::Read;
        let mut s = String::new();
        caller
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    };
    assert!(stderr.contains("the agent hung up"), "{stderr}");
    let db = Db::open(&agent.database());
    let c = &db.calls()[0];
    assert_eq!(c.reason.as_deref(), Some("agent shutdown"), "{c:?}");
    assert!(c.duration.unwrap() >= 1500, "{c:?}");
}

#[test]
fn sigkill_mid_call_is_closed_as_interrupted_on_restart() {
    let mut agent = Agent::start("sigkill");
    let mut caller = long_call(&agent);
    let answered = answered_call(&agent).answered.unwrap();
    // Kill once there is evidence the call went on: live text stored.
    let heard_at: i64 = {
        let db = Db::open(&agent.database());
        wait_for(20, "a partial transcript", || {
            db.0.query_row(
                "SELECT MAX(received_at_ms) FROM transcript_partials",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .unwrap()
        })
    };
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    let _ = caller.kill();
    let _ = caller.wait();
    {
        let db = Db::open(&agent.database());
        let c = &db.calls()[0];
        assert_eq!(c.ended, None, "a killed agent cannot have closed the call");
    }
    // Start again on the same data dir and port.
    let restarted = Command::new(bin())
        .args(["run", "--config"])
        .arg(&agent.config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let restarted = Guard(restarted);
    let db = Db::open(&agent.database());
    let c = wait_for(30, "the open call to be closed", || {
        db.calls().into_iter().find(|c| c.ended.is_some())
    });
    assert_eq!(
        c.reason.as_deref(),
        Some("interrupted: agent stopped during the call")
    );
    assert!(c.complete);
    // Closed at the last evidence of the call, not at its answer.
    assert!(c.ended.unwrap() >= heard_at, "{c:?} heard at {heard_at}");
    assert!(c.duration.unwrap() >= heard_at - answered, "{c:?}");
    assert!(c.duration.unwrap() > 0, "{c:?}");
    let check: String =
        db.0.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
    assert_eq!(check, "ok");
    drop(restarted);
}

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
