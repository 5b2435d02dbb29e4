//! Upstream sync: how fast a backlog drains from the outbox to a real
//! broker and backend, what it costs the agent, and whether live calls
//! notice.
//!
//! Starts mosquitto (TLS, client certificates, ACLs) and the test backend
//! (stores by (device, msg_id), acknowledges in batches), stops the
//! broker, starts the agent as users do with sync on, makes one real call
//! (its event is the size every backlog event gets), writes
//! `HANDLET_BENCH_EVENTS` (100,000) more events into the outbox as an
//! outage would leave them, then starts the broker and measures until
//! every event is acknowledged: events per second, the agent's CPU while
//! draining, and the final-text latency of a call placed while it drains
//! against one placed after.
//!
//! `cargo bench --bench sync_drain` (needs `make test-deps models`).

#[path = "../tests/common/mod.rs"]
mod common;

use common::broker::{Backend, Broker, Pki, write_events};
use common::{Agent, TempDir, call_ok_with, speech_wav, wait_for};
use std::process::Command;
use std::time::{Duration, Instant};

const SENTENCES: [&str; 3] = [
    "Hello, this is Mark Davies calling about the boiler at number twelve.",
    "It stopped working this morning and there is no hot water at all.",
    "Could someone come out tomorrow afternoon, please call me back.",
];

/// The agent's CPU time so far, in seconds (utime + stime).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn pending(db: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.query_row(
        "SELECT COUNT(*) FROM outbox WHERE delivered_at_ms IS NULL",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// A call from `handlet call`; its finals' waits after the end of speech.
fn call(agent: &Agent, wav: &std::path::Path) -> Vec<i64> {
    let before: i64 = {
        let c = rusqlite::Connection::open(agent.database()).unwrap();
        c.query_row("SELECT COUNT(*) FROM calls", [], |r| r.get(0))
            .unwrap()
    };
    call_ok_with(agent, wav, &["--from", "+447700900123", "--wait", "60"]);
    let c = rusqlite::Connection::open(agent.database()).unwrap();
    let id: String = wait_for(60, "the call's transcript", || {
        c.query_row(
            "SELECT id FROM calls WHERE transcript_complete = 1 ORDER BY rowid LIMIT 1 OFFSET ?1",
            [before],
            |r| r.get(0),
        )
        .ok()
    });
    let mut waits: Vec<i64> = c
        .prepare(
            "SELECT max(received_at_ms) - min(speech_ended_at_ms) FROM transcript_segments
             WHERE call_id = ?1 AND channel = 'caller' GROUP BY utterance_start_ms",
        )
        .unwrap()
        .query_map([&id], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    waits.sort_unstable();
    waits
}

fn main() {
    let n: usize = std::env::var("HANDLET_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = TempDir::new("bench-sync");
    let pki = Pki::new(dir.path(), "pki");
    let mut broker = Broker::start(dir.path(), &pki, &pki);
    let backend = Backend::start(dir.path(), &broker, &pki);
    let (cert, key) = pki.issue("shop-1", false);
    broker.stop();
    let agent = Agent::start_with(
        "bench-sync",
        &format!(
            "[sync]\nbroker = \"mqtts://127.0.0.1:{}\"\ndevice_id = \"shop-1\"\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            broker.port,
            pki.ca(),
            cert,
            key
        ),
    );
    let parts: Vec<_> = SENTENCES
        .iter()
        .enumerate()
        .map(|(i, s)| speech_wav(agent.dir.path(), &format!("s{i}"), s, 8000, 0.5, 2.0))
        .collect();
    let wav = agent.dir.path().join("caller.wav");
    let st = Command::new("sox").args(&parts).arg(&wav).status().unwrap();
    assert!(st.success());

    // One real call, broker down: its event is the backlog's template.
    let idle_waits = call(&agent, &wav);
    let db = agent.database();
    let payload: String = wait_for(60, "the call's event", || {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row("SELECT payload FROM outbox LIMIT 1", [], |r| r.get(0))
            .ok()
    });
    let t = Instant::now();
    write_events(&db, n, "bench", &payload);
    eprintln!("  wrote {n} events in {:.1} s", t.elapsed().as_secs_f64());
    let backlog = pending(&db);

    // The broker comes back: drain, with a live call placed meanwhile.
    let pid = agent.child.id();
    let back = Instant::now();
    broker.resume();
    // The agent's backoff grew through the outage (full jitter, up to a
    // minute): the drain is timed from its reconnect.
    let connected = |db: &std::path::Path| {
        let c = rusqlite::Connection::open(db).unwrap();
        c.query_row(
            "SELECT value FROM settings WHERE key = 'sync.connected'",
            [],
            |r| r.get::<_, String>(0),
        )
        .is_ok_and(|v| v == "yes")
    };
    wait_for(120, "the agent to reconnect", || {
        connected(&db).then_some(())
    });
    let reconnect = back.elapsed().as_secs_f64();
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    // Watched on its own thread, so the call below does not pace it.
    let watch = {
        let db = db.clone();
        std::thread::spawn(move || {
            wait_for(3600, "the backlog to drain", || {
                (pending(&db) == 0).then_some(())
            });
            (t0.elapsed().as_secs_f64(), cpu_secs(pid) - cpu0)
        })
    };
    // HANDLET_BENCH_QUIET=1: no call while draining (the pace alone).
    let quiet = std::env::var_os("HANDLET_BENCH_QUIET").is_some();
    let draining_waits = if quiet {
        Vec::new()
    } else {
        call(&agent, &wav)
    };
    let during_call_left = pending(&db);
    let (secs, cpu) = watch.join().unwrap();
    let after_waits = call(&agent, &wav);

    let events = backend.events();
    let stored = events.len() as i64;
    let received: i64 = events.iter().map(|e| e.3).sum();
    let c = rusqlite::Connection::open(&backend.db).unwrap();
    let bytes: i64 = c
        .query_row("SELECT bytes FROM events ORDER BY rowid LIMIT 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    let max = |v: &[i64]| v.last().copied().unwrap_or(-1);
    let med = |v: &[i64]| v.get(v.len() / 2).copied().unwrap_or(-1);
    println!(
        "| backlog | reconnect after the broker is back | drain from reconnect | events/s | agent CPU while draining{} | stored / received at the backend | bytes per call event |",
        if quiet { "" } else { " (a live call too)" }
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {backlog} | {reconnect:.1} s | {secs:.1} s | {:.0} | {:.0} % of one core ({cpu:.1} s) | {stored} / {received} | {bytes} |",
        backlog as f64 / secs,
        100.0 * cpu / secs
    );
    println!();
    println!("| call | final text after end of speech, median | max |");
    println!("|---|---|---|");
    println!(
        "| before the drain (broker down) | {} ms | {} ms |",
        med(&idle_waits),
        max(&idle_waits)
    );
    println!(
        "| while draining ({during_call_left} events still pending when it ended) | {} ms | {} ms |",
        med(&draining_waits),
        max(&draining_waits)
    );
    println!(
        "| after | {} ms | {} ms |",
        med(&after_waits),
        max(&after_waits)
    );
}
