//! Upstream sync against a real broker (issue 15): mosquitto with TLS and
//! client certificates required, per-device ACLs, and a backend that
//! stores by (device, msg_id) and acknowledges. Real calls' events arrive
//! exactly once, through a broker restart and lost acknowledgements; a
//! broker this box does not trust, and a device writing another's topics,
//! are refused.

mod common;

use common::broker::{Backend, Broker, Partition, Pki, client_tls};
use common::*;
use std::process::Command;
use std::time::Duration;

const CALLER: &str = "+447700900123";

fn sync_config(
    broker_port: u16,
    pki: &Pki,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> String {
    format!(
        "[sync]\nbroker = \"mqtts://127.0.0.1:{broker_port}\"\ndevice_id = \"shop-1\"\n\
         ca = {:?}\ncert = {:?}\nkey = {:?}\nack_wait_secs = 2\nkeepalive_secs = 5\n",
        pki.ca(),
        cert,
        key
    )
}

/// A broker, the backend on it, and a certificate for device `shop-1`,
/// all under one temp dir (the fields drop in this order: agent first).
struct Upstream {
    dir: TempDir,
    pki: Pki,
    broker: Broker,
    backend: Backend,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn upstream(tag: &str) -> Upstream {
    let dir = TempDir::new(tag);
    let pki = Pki::new(dir.path(), "pki");
    let broker = Broker::start(dir.path(), &pki, &pki);
    let backend = Backend::start(dir.path(), &broker, &pki);
    let (cert, key) = pki.issue("shop-1", false);
    Upstream {
        dir,
        pki,
        broker,
        backend,
        cert,
        key,
    }
}

fn wait_connected(agent: &Agent) {
    wait_for(20, "the agent to connect", || {
        ok(agent, &["sync", "status"])
            .contains(", connected")
            .then_some(())
    });
}

/// The caller's words, as an 8 kHz WAV in the agent's dir.
fn caller_wav(agent: &Agent, text: &str) -> std::path::PathBuf {
    speech_wav(agent.dir.path(), "sync-caller", text, 8000, 0.5, 1.0)
}

fn call_from(agent: &Agent, wav: &std::path::Path) {
    call_as(agent, wav, CALLER)
}

fn call_as(agent: &Agent, wav: &std::path::Path, from: &str) {
    call_to(agent, wav, from, &agent.uri())
}

fn call_to(agent: &Agent, wav: &std::path::Path, from: &str, to: &str) {
    call_ok_with(agent, wav, &["--to", to, "--from", from, "--wait", "30"]);
}

fn pending(agent: &Agent) -> i64 {
    let db = Db::open(&agent.database());
    db.0.query_row(
        "SELECT COUNT(*) FROM outbox WHERE delivered_at_ms IS NULL",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

fn committed(agent: &Agent) -> Vec<String> {
    let db = Db::open(&agent.database());
    let mut q =
        db.0.prepare("SELECT msg_id FROM outbox ORDER BY msg_id")
            .unwrap();
    q.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Nothing the backend received carries a field outside its kind's list
/// under the default policy (docs/SYNC.md): no audio, transcript, quote,
/// name, address or number, whatever the kind.
fn only_allowed_fields(backend: &Backend) {
    use handlet_agent::sync::{Policy, payload};
    let events = backend.events();
    assert!(!events.is_empty());
    for (_, topic, body, _) in events {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let schema = v["schema"].as_str().unwrap_or_default().to_string();
        // The test's own filler events carry only a schema.
        let allowed = payload::allowed_fields(&schema, &Policy::default());
        assert!(!allowed.is_empty(), "unknown kind {schema:?} on {topic}");
        for f in payload::field_paths(&v) {
            assert!(
                allowed.contains(&f.as_str()),
                "{topic}: {f} is not a field {schema} may carry: {body}"
            );
        }
    }
}

/// Every event the agent committed is at the backend exactly once (the
/// same ids, none missing, none extra), all delivered.
fn all_delivered_once(agent: &Agent, backend: &Backend, secs: u64) {
    wait_for(secs, "every event delivered", || {
        (pending(agent) == 0).then_some(())
    });
    let ours = committed(agent);
    let theirs: Vec<String> = backend.events().into_iter().map(|e| e.0).collect();
    assert_eq!(ours, theirs, "the backend holds exactly the agent's events");
    only_allowed_fields(backend);
}

#[test]
fn events_reach_the_backend_exactly_once_through_restarts_and_lost_acks() {
    let Upstream {
        dir: _dir,
        pki,
        mut broker,
        backend,
        cert,
        key,
    } = upstream("sync-broker");
    let agent = Agent::start_with("sync", &sync_config(broker.port, &pki, &cert, &key));
    wait_connected(&agent);
    let wav = caller_wav(
        &agent,
        "Hello, this is Sarah. My boiler is leaking, please call me back.",
    );

    // Two calls: their events arrive, once each, without the number.
    call_from(&agent, &wav);
    call_from(&agent, &wav);
    wait_for(60, "two calls' events", || {
        (committed(&agent).len() == 2).then_some(())
    });
    all_delivered_once(&agent, &backend, 30);
    for (_, topic, payload, _) in backend.events() {
        assert_eq!(topic, "handlet/v1/shop-1/up/call");
        let p: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(p["schema"], "handlet.call/1");
        assert!(!payload.contains("7700900123"), "{payload}");
        assert!(!payload.to_lowercase().contains("boiler"), "{payload}");
    }

    // The broker goes away: a call's event waits in the outbox, then goes
    // once the broker is back.
    broker.stop();
    wait_for(20, "the agent to see the broker gone", || {
        ok(&agent, &["sync", "status"])
            .contains("not connected")
            .then_some(())
    });
    call_from(&agent, &wav);
    wait_for(60, "the third event, pending", || {
        (pending(&agent) == 1).then_some(())
    });
    broker.resume();
    all_delivered_once(&agent, &backend, 90);

    // Half the acknowledgements are lost: events are sent again until
    // acknowledged, and stored once.
    backend
        .drop_acks_percent
        .store(50, std::sync::atomic::Ordering::Relaxed);
    call_from(&agent, &wav);
    call_from(&agent, &wav);
    wait_for(60, "five events", || {
        (committed(&agent).len() == 5).then_some(())
    });
    all_delivered_once(&agent, &backend, 60);
    let out = ok(&agent, &["sync", "status"]);
    assert!(
        out.contains("pending: 0") && out.contains("delivered: 5"),
        "{out}"
    );
    assert!(
        out.contains("dead-lettered: 0") && out.contains("last contact"),
        "{out}"
    );
    // (Its connection errors while the broker was down are expected.)
    backend.assert_only_json();
    let log = agent.log();
    assert!(
        !log.contains("7700900123") && !log.contains("BEGIN"),
        "{log}"
    );
}

fn count(agent: &Agent, sql: &str) -> i64 {
    let db = Db::open(&agent.database());
    db.0.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn commands_from_upstream_run_once_and_an_erase_takes_the_callers_pending_events() {
    let Upstream {
        dir: _dir,
        pki,
        broker,
        backend,
        cert,
        key,
    } = upstream("sync-commands");
    let agent = Agent::start_with(
        "sync-commands",
        &sync_config(broker.port, &pki, &cert, &key),
    );
    wait_connected(&agent);
    let wav = caller_wav(&agent, "Hello, please call me back about the boiler.");
    // No acknowledgements for now: the calls' events stay pending (sent,
    // and sent again every few seconds).
    backend
        .drop_acks_percent
        .store(100, std::sync::atomic::Ordering::Relaxed);
    call_from(&agent, &wav);
    call_from(&agent, &wav);
    call_as(&agent, &wav, "+447700900999");
    wait_for(60, "three events at the backend", || {
        (backend.events().len() == 3).then_some(())
    });
    assert_eq!(pending(&agent), 3);

    // The erase: delivered twice and re-sent until its result is seen,
    // it runs once and reports once.
    let r = backend.command(
        "shop-1",
        "erase-1",
        &format!(r#"{{"id":"erase-1","kind":"erase","number":"{CALLER}"}}"#),
        30,
    );
    assert_eq!(r["schema"], "handlet.command/1");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["calls"], 2, "{r}");
    assert!(!r.to_string().contains("7700900123"), "{r}");
    assert_eq!(
        count(
            &agent,
            "SELECT COUNT(*) FROM privacy_audit WHERE request = 'erase'"
        ),
        1,
        "the erase ran more than once"
    );
    assert_eq!(
        count(
            &agent,
            "SELECT COUNT(*) FROM calls WHERE from_uri LIKE '%7700900123%'"
        ),
        0
    );
    assert_eq!(count(&agent, "SELECT COUNT(*) FROM calls"), 1);
    // Their pending events went with them: only the other caller's call
    // and the command's result are left to send.
    assert_eq!(
        count(
            &agent,
            "SELECT COUNT(*) FROM outbox WHERE delivered_at_ms IS NULL AND topic = 'up/call'"
        ),
        1
    );
    // What the backend had of the erased calls' events when the result
    // came (anything sent before the erase arrived before its result).
    let ours = committed(&agent);
    let erased_then: Vec<(String, i64)> = backend
        .events()
        .into_iter()
        .filter(|e| e.1.ends_with("/up/call") && !ours.contains(&e.0))
        .map(|e| (e.0, e.3))
        .collect();
    assert_eq!(erased_then.len(), 2, "{erased_then:?}");

    // Bad commands are refused with their reason; the others run.
    let bad = backend.command("shop-1", "bad-1", r#"{"id":"bad-1","kind":"reboot"}"#, 30);
    assert_eq!(bad["ok"], false);
    assert!(
        bad["error"].as_str().unwrap().contains("unknown kind"),
        "{bad}"
    );
    let sweep = backend.command(
        "shop-1",
        "sweep-1",
        r#"{"id":"sweep-1","kind":"sweep"}"#,
        30,
    );
    assert_eq!(sweep["ok"], true, "{sweep}");
    let rotate = backend.command(
        "shop-1",
        "rotate-1",
        r#"{"id":"rotate-1","kind":"rotate_keys"}"#,
        30,
    );
    assert_eq!(rotate["ok"], true, "{rotate}");
    assert!(rotate["result"]["new_key"].is_u64(), "{rotate}");

    // Acknowledgements back: everything left is delivered, each command's
    // result once, and the erased caller's events were never sent again.
    backend
        .drop_acks_percent
        .store(0, std::sync::atomic::Ordering::Relaxed);
    wait_for(60, "every event delivered", || {
        (pending(&agent) == 0).then_some(())
    });
    let ours = committed(&agent);
    let theirs: Vec<String> = backend
        .events()
        .into_iter()
        .map(|e| e.0)
        .filter(|id| !erased_then.iter().any(|(e, _)| e == id))
        .collect();
    assert_eq!(ours, theirs, "the backend holds exactly the agent's events");
    only_allowed_fields(&backend);
    let results: Vec<serde_json::Value> = backend
        .events()
        .into_iter()
        .filter(|e| e.1.ends_with("/up/command"))
        .map(|e| serde_json::from_str(&e.2).unwrap())
        .collect();
    assert_eq!(results.len(), 4, "{results:?}");
    let erased_now: Vec<(String, i64)> = backend
        .events()
        .into_iter()
        .filter(|e| erased_then.iter().any(|(id, _)| *id == e.0))
        .map(|e| (e.0, e.3))
        .collect();
    assert_eq!(
        erased_now, erased_then,
        "an erased call's event was sent again"
    );
    assert!(!agent.log().contains("7700900123"), "{}", agent.log());
}

#[test]
fn an_enrolled_box_connects_with_the_certificate_its_request_earned() {
    let dir = TempDir::new("sync-enroll");
    let pki = Pki::new(dir.path(), "pki");
    let broker = Broker::start(dir.path(), &pki, &pki);
    let _backend = Backend::start(dir.path(), &broker, &pki);
    let handlet_at = |config: &std::path::Path, args: &[&str]| {
        Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(config)
            .output()
            .unwrap()
    };
    // No device id: nothing to name the certificate for.
    let bare = write_config(dir.path(), free_port(), "");
    let out = handlet_at(&bare, &["sync", "enroll"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("set sync.device_id first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The default paths, under the data dir.
    let extra = format!(
        "[sync]\nbroker = \"mqtts://127.0.0.1:{}\"\ndevice_id = \"shop-7\"\n",
        broker.port
    );
    let config = write_config(dir.path(), free_port(), &extra);
    let out = handlet_at(&config, &["sync", "enroll"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("made the key"));
    let sync_dir = dir.path().join("data/sync");
    let key = std::fs::read(sync_dir.join("device.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(sync_dir.join("device.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Again: the key is kept, only the request is made anew.
    let out = handlet_at(&config, &["sync", "enroll"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept the key"));
    assert_eq!(std::fs::read(sync_dir.join("device.key")).unwrap(), key);

    // The CA signs the request; with its certificate and the CA's in
    // place the box connects as shop-7.
    pki.sign(&sync_dir.join("device.csr"), &sync_dir.join("device.pem"));
    std::fs::copy(pki.ca(), sync_dir.join("ca.pem")).unwrap();
    let agent = Agent::start_in(dir, &extra);
    wait_for(20, "the enrolled box to connect", || {
        ok(&agent, &["sync", "status"])
            .contains("on for device shop-7 to mqtts://127.0.0.1")
            .then_some(())
            .filter(|_| ok(&agent, &["sync", "status"]).contains(", connected"))
    });
    assert!(!agent.log().contains("PRIVATE KEY"));
}

const DID: &str = "+441632960001";
/// The provider's address the box takes calls from (an IP trunk).
const PROVIDER: [u8; 4] = [127, 0, 0, 7];

#[test]
fn a_pushed_config_changes_the_routing_plan_live_and_a_bad_one_changes_nothing() {
    let Upstream {
        dir: _dir,
        pki,
        broker,
        backend,
        cert,
        key,
    } = upstream("sync-config");
    let trunk = format!(
        "[[trunk]]\nname = \"provider\"\nmode = \"ip\"\nhost = \"127.0.0.7:5999\"\n\
         hosts = [\"127.0.0.7/32\", \"127.0.0.1/32\"]\nkeepalive_secs = 0\ndids = [\"{DID}\"]\n\n\
         [[extension]]\nnumber = \"101\"\nsecret = \"desk-101-secret\"\n\n\
         [receptionist]\nbusiness = \"Smith Plumbing\"\n\n"
    );
    let mut agent = Agent::start_with(
        "sync-config",
        &format!("{trunk}{}", sync_config(broker.port, &pki, &cert, &key)),
    );
    wait_connected(&agent);
    let invite = |agent: &Agent| invite_from_within(PROVIDER, agent, DID, "07700900666", 15);
    assert_eq!(invite(&agent), 200, "the local plan answers");
    assert!(ok(&agent, &["sync", "status"]).contains("config: none from upstream"));

    // Version 1 blocks the caller: the next call follows it.
    backend.send_retained(
        "shop-1",
        "down/config",
        r#"{"version": 1, "routing": {"caller": [{"name": "blocklist", "numbers": ["07700 900666"], "to": "reject"}]}}"#,
    );
    let status = wait_for(30, "version 1 reported", || {
        backend.payloads("status").into_iter().next()
    });
    assert_eq!(status["schema"], "handlet.status/1");
    assert_eq!(status["config"]["version"], 1);
    assert_eq!(status["config"]["ok"], true, "{status}");
    assert_eq!(invite(&agent), 603, "the pushed plan rejects the caller");

    // Version 2 names a group the box does not have: refused, reported,
    // and version 1 runs on.
    backend.send_retained(
        "shop-1",
        "down/config",
        r#"{"version": 2, "routing": {"open": "nowhere"}}"#,
    );
    let refused = wait_for(30, "version 2 reported", || {
        backend.payloads("status").into_iter().nth(1)
    });
    assert_eq!(refused["config"]["version"], 2);
    assert_eq!(refused["config"]["ok"], false, "{refused}");
    assert!(
        refused["config"]["error"]
            .as_str()
            .unwrap()
            .contains("nowhere"),
        "{refused}"
    );
    assert_eq!(refused["config_applied"], 1);
    let out = ok(&agent, &["sync", "status"]);
    assert!(
        out.contains("config: version 1 from upstream applied")
            && out.contains("config refused: version 2"),
        "{out}"
    );
    assert_eq!(invite(&agent), 603, "the last good plan still runs");

    // Killed and started again: the applied plan holds from the start, and
    // the retained document seen before is not taken or reported again.
    agent.kill_and_restart();
    assert_eq!(invite(&agent), 603, "the applied plan survives a restart");
    wait_connected(&agent);
    let out = ok(
        &agent,
        &["route", "explain", "--from", "07700900666", "--to", DID],
    );
    assert!(
        out.contains("version 1") && out.contains("blocklist"),
        "{out}"
    );
    // Version 3 lifts the block. The retained version 2 reached the agent
    // before it (one subscription, in order), so had the agent taken it
    // again its report would be here before 3's.
    backend.send_retained(
        "shop-1",
        "down/config",
        r#"{"version": 3, "routing": {}, "privacy": {"recording_retention_days": 2}}"#,
    );
    let versions = wait_for(30, "version 3 reported", || {
        let v: Vec<u64> = backend
            .payloads("status")
            .iter()
            .map(|p| p["config"]["version"].as_u64().unwrap())
            .collect();
        (v.len() >= 3).then_some(v)
    });
    assert_eq!(versions, vec![1, 2, 3], "a document was taken twice");
    assert_eq!(invite(&agent), 200, "version 3 answers the caller again");

    // Version 3 also keeps recordings two days: the next call's is (the
    // test's caller comes through the trunk too).
    let wav = caller_wav(&agent, "Hello, can someone call me back please.");
    call_to(
        &agent,
        &wav,
        CALLER,
        &format!("sip:{DID}@127.0.0.1:{}", agent.port),
    );
    let kept = wait_for(30, "the call's recording", || {
        let db = Db::open(&agent.database());
        db.0.query_row(
            "SELECT r.expires_at_ms - r.started_at_ms FROM recordings r JOIN calls c ON c.id = r.call_id
             WHERE c.caller = ?1 ORDER BY r.rowid DESC LIMIT 1",
            [CALLER],
            |r| r.get::<_, i64>(0),
        )
        .ok()
    });
    assert!(
        (kept - 2 * 86_400_000).abs() < 60_000,
        "the recording is kept {kept} ms"
    );
    // A retention the file could not have is refused like the file's.
    backend.send_retained(
        "shop-1",
        "down/config",
        r#"{"version": 4, "privacy": {"recording_retention_days": 0}}"#,
    );
    let refused = wait_for(30, "version 4 reported", || {
        backend.payloads("status").into_iter().nth(3)
    });
    assert_eq!(refused["config"]["ok"], false, "{refused}");
    assert!(
        refused["config"]["error"]
            .as_str()
            .unwrap()
            .contains("privacy.recording_retention_days must be 1..=3650"),
        "{refused}"
    );
    assert_eq!(refused["config_applied"], 3);

    // Version 5 renames the business: the next call is greeted so.
    backend.send_retained(
        "shop-1",
        "down/config",
        r#"{"version": 5, "receptionist": {"business": "Acme Plumbing"}}"#,
    );
    let taken = wait_for(30, "version 5 reported", || {
        backend.payloads("status").into_iter().nth(4)
    });
    assert_eq!(taken["config"]["ok"], true, "{taken}");
    call_to(
        &agent,
        &wav,
        CALLER,
        &format!("sip:{DID}@127.0.0.1:{}", agent.port),
    );
    let db = Db::open(&agent.database());
    let newest: String =
        db.0.query_row(
            "SELECT id FROM calls WHERE caller = ?1 ORDER BY rowid DESC LIMIT 1",
            [CALLER],
            |r| r.get(0),
        )
        .unwrap();
    let said = db.channel_transcript(&newest, "agent");
    assert!(
        said.contains("Thank you for calling Acme Plumbing"),
        "the box said: {said}"
    );
    only_allowed_fields(&backend);
}

fn write_events(agent: &Agent, n: usize, tag: &str) {
    common::broker::write_events(&agent.database(), n, tag, r#"{"schema":"handlet.call/1"}"#);
}

fn pseudo_random(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn no_event_is_lost_or_doubled_through_kills_and_a_partition() {
    let Upstream {
        dir: _dir,
        pki,
        broker,
        backend,
        cert,
        key,
    } = upstream("sync-faults");
    backend
        .drop_acks_percent
        .store(20, std::sync::atomic::Ordering::Relaxed);
    let net = Partition::new(broker.port);
    let mut agent = Agent::start_with("sync-faults", &sync_config(net.port, &pki, &cert, &key));
    let wav = caller_wav(&agent, "Hello, I would like a quote for a new bathroom.");
    call_from(&agent, &wav);
    wait_for(60, "the call's event", || {
        (!committed(&agent).is_empty()).then_some(())
    });

    // SIGKILL at random points while events are pending: each round more
    // events are written and the agent is killed 0-1.5 s after it is up
    // (mid-publish, mid-acknowledgement, mid-commit).
    let mut seed = 0x5eed_u64;
    let mut kills_with_pending = 0;
    for round in 0..120 {
        if kills_with_pending >= 50 {
            break;
        }
        write_events(&agent, 40, &format!("{round:03x}"));
        std::thread::sleep(Duration::from_millis(pseudo_random(&mut seed) % 1500));
        if pending(&agent) > 0 {
            kills_with_pending += 1;
        }
        agent.kill_and_restart();
    }
    assert!(
        kills_with_pending >= 50,
        "only {kills_with_pending} kills with events pending"
    );
    all_delivered_once(&agent, &backend, 120);

    // A partition: nothing moves either way and nothing is closed. The
    // agent notices by its keep-alive, events wait, and go once healed.
    net.cut(true);
    wait_for(30, "the agent to see the partition", || {
        ok(&agent, &["sync", "status"])
            .contains("not connected")
            .then_some(())
    });
    write_events(&agent, 100, "fff");
    std::thread::sleep(Duration::from_secs(2));
    assert!(pending(&agent) >= 100, "events went through a cut network");
    net.cut(false);
    all_delivered_once(&agent, &backend, 120);

    let events = backend.events();
    let received: i64 = events.iter().map(|e| e.3).sum();
    assert!(
        received > events.len() as i64,
        "no event was ever sent twice: the faults did not bite ({received} received)"
    );
    backend.assert_only_json();
}

#[test]
fn a_broker_not_trusted_and_a_device_writing_anothers_topics_are_refused() {
    let dir = TempDir::new("sync-refused");
    let pki = Pki::new(dir.path(), "pki");
    let rogue = Pki::new(dir.path(), "rogue");
    // The broker's certificate is signed by a CA the box does not trust.
    let broker = Broker::start(dir.path(), &rogue, &pki);
    let (cert, key) = pki.issue("shop-1", false);
    let agent = Agent::start_with(
        "sync-untrusted",
        &sync_config(broker.port, &pki, &cert, &key),
    );
    wait_for(20, "the refusal in the log", || {
        agent
            .log()
            .contains("the broker's certificate is not one sync.ca vouches for")
            .then_some(())
    });
    assert!(ok(&agent, &["sync", "status"]).contains("not connected"));
    drop(agent);

    // A device may write only its own topics: shop-1 publishing as shop-2
    // is refused by the broker's ACL (PUBACK "not authorized").
    let good = Broker::start(&dir.path().join("good"), &pki, &pki);
    let tls = client_tls(&pki.ca(), &cert, &key);
    let mut opts = rumqttc::v5::MqttOptions::new("shop-1", "127.0.0.1", good.port);
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls),
    ));
    let (client, mut conn) = rumqttc::v5::Client::new(opts, 16);
    client
        .publish(
            "handlet/v1/shop-2/up/call",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "{}",
        )
        .unwrap();
    let mut refused = false;
    for ev in conn.iter().take(20) {
        if let Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(a))) = ev
        {
            refused = a.reason == rumqttc::v5::mqttbytes::v5::PubAckReason::NotAuthorized;
            break;
        }
    }
    assert!(
        refused,
        "the broker let shop-1 write shop-2's topic:\n{}",
        good.log()
    );
    // A client with no certificate from our CA is refused at the handshake.
    let (rc, rk) = rogue.issue("intruder", false);
    let tls = client_tls(&pki.ca(), &rc, &rk);
    let mut opts = rumqttc::v5::MqttOptions::new("intruder", "127.0.0.1", good.port);
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls),
    ));
    let (_client, mut conn) = rumqttc::v5::Client::new(opts, 16);
    let first = conn.recv_timeout(Duration::from_secs(10));
    assert!(
        matches!(first, Ok(Err(_))),
        "a certificate from another CA was let in: {first:?}"
    );
    // Nor is a client with no certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(pki.ca()).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let bare = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut opts = rumqttc::v5::MqttOptions::new("nobody", "127.0.0.1", good.port);
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(bare)),
    ));
    let (_client, mut conn) = rumqttc::v5::Client::new(opts, 16);
    let first = conn.recv_timeout(Duration::from_secs(10));
    assert!(
        matches!(first, Ok(Err(_))),
        "a client without a certificate was let in: {first:?}"
    );
}
