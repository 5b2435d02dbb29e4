//! Upstream sync, the box's half so far (issue 15): with a broker
//! configured, a real call writes its event to the outbox in the same
//! transaction as the call's data, built from fields under the default
//! policy (no number, no quote); `handlet sync status` counts it; an
//! erase takes it away; with no broker there, it waits.

mod common;

use common::*;
use std::process::Command;

const CALLER: &str = "+447700900123";

fn outbox(db: &Db) -> Vec<(String, String, Option<String>, String)> {
    let mut q =
        db.0.prepare("SELECT msg_id, topic, call_id, payload FROM outbox ORDER BY seq")
            .unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_call_writes_its_event_for_upstream_without_the_callers_number_or_words() {
    // A broker configured but not there: the box runs as ever and the
    // outbox keeps the events (offline first).
    let certs = TempDir::new("sync-outbox-pki");
    let pki = common::broker::Pki::new(certs.path(), "pki");
    let (cert, key) = pki.issue("shop-1", false);
    let agent = Agent::start_with(
        "sync-outbox",
        &format!(
            "[sync]\nbroker = \"mqtts://127.0.0.1:{}\"\ndevice_id = \"shop-1\"\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            free_port(),
            pki.ca(),
            cert,
            key
        ),
    );
    // The workspace key was made, readable by the agent alone.
    let key = agent.dir.path().join("data/sync/number.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{key:?}");
    let out = ok(&agent, &["sync", "status"]);
    assert!(
        out.contains("on for device shop-1") && out.contains("pending: 0"),
        "{out}"
    );

    let wav = speech_wav(
        agent.dir.path(),
        "sync-caller",
        "Hello, this is Sarah. My boiler is leaking, please call me back.",
        8000,
        0.5,
        1.0,
    );
    let done = Command::new(bin())
        .args(["call", "--config"])
        .arg(&agent.config)
        .arg("--wav")
        .arg(&wav)
        .args(["--from", CALLER])
        .output()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let db = Db::open(&agent.database());
    let rows = wait_for(60, "the call's event in the outbox", || {
        let rows = outbox(&db);
        (!rows.is_empty()).then_some(rows)
    });
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (msg_id, topic, call_id, payload) = &rows[0];
    assert_eq!(topic, "up/call");
    assert_eq!(msg_id.len(), 36);
    assert_eq!(msg_id.as_bytes()[14], b'7', "a UUIDv7: {msg_id}");
    let call_id = call_id.as_deref().unwrap();
    let p: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert_eq!(p["schema"], "handlet.call/1");
    assert_eq!(p["call_id"], call_id);
    assert_eq!(p["caller"]["withheld"], false);
    assert_eq!(p["caller"]["number_hash"].as_str().unwrap().len(), 32);
    // The call was summarised before its event was written.
    assert!(p["summary"]["intent"].is_string(), "{p}");
    assert!(p["route"].as_array().is_some_and(|r| !r.is_empty()), "{p}");
    // The default policy: no number, none of the caller's words.
    for secret in ["7700900123", "7700 900", "Sarah", "boiler", "leak"] {
        assert!(!payload.contains(secret), "{secret:?} in {payload}");
    }
    // Only the listed fields.
    let allowed = handlet_agent::sync::payload::allowed_fields(
        "handlet.call/1",
        &handlet_agent::sync::Policy::default(),
    );
    for f in handlet_agent::sync::payload::field_paths(&p) {
        assert!(allowed.contains(&f.as_str()), "{f} is not on the list: {p}");
    }
    let out = ok(&agent, &["sync", "status"]);
    assert!(
        out.contains("pending: 1") && out.contains("oldest pending"),
        "{out}"
    );

    // Erased: the caller's event goes with their call.
    ok(&agent, &["privacy", "erase", "--phone", CALLER]);
    assert!(outbox(&db).is_empty(), "{:?}", outbox(&db));
    let out = ok(&agent, &["sync", "status"]);
    assert!(out.contains("pending: 0"), "{out}");
    let ok_db: String =
        db.0.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
    assert_eq!(ok_db, "ok");
}

#[test]
fn sync_config_is_checked_at_start() {
    for (cfg, want) in [
        (
            "[sync]\nbroker = \"mqtt://127.0.0.1:1883\"\ndevice_id = \"a\"\n",
            "TLS only",
        ),
        (
            "[sync]\nbroker = \"mqtts://127.0.0.1\"\ndevice_id = \"a\"\n",
            "host and a port",
        ),
        (
            "[sync]\nbroker = \"mqtts://127.0.0.1:8883\"\n",
            "sync.device_id",
        ),
        (
            "[sync]\nbroker = \"mqtts://127.0.0.1:8883\"\ndevice_id = \"shop/1\"\n",
            "sync.device_id",
        ),
        ("[sync]\nshare = [\"audio\"]\n", "unknown variant"),
    ] {
        let dir = TempDir::new("sync-config");
        let path = write_config(dir.path(), free_port(), cfg);
        let out = Command::new(bin())
            .args(["config", "show", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cfg} was accepted");
        assert!(err.contains(want), "{cfg}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}
