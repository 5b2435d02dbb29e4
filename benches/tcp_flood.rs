//! Idle SIP TCP connections against the agent's limits: one peer (or a few
//! addresses) opens thousands of connections and sends nothing. Before
//! issue 12, 17,400 such connections took 1.6 GB and stayed open for
//! rsipstack's 300 s idle limit. Reports how many the agent kept, its RSS,
//! descriptors and threads with them held, and after they are let go.
//!
//! `cargo bench --bench tcp_flood` (HANDLET_BENCH_CONNECTIONS=17400,
//! HANDLET_BENCH_SOURCES=16: connections spread over 127.0.1.1..N). Runs
//! the agent with its default limits (16 per address, 256 in all).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Agent, ok, tcp_connect_from};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn status(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::var("HANDLET_BENCH_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(17_400);
    let sources: u8 = std::env::var("HANDLET_BENCH_SOURCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let agent = Agent::start_with("tcpflood", "[log]\nfilter = \"warn\"\n");
    let pid = agent.child.id();
    std::thread::sleep(Duration::from_secs(1));
    let idle = (
        status(pid, "VmRSS:") / 1024,
        fds(pid),
        status(pid, "Threads:"),
    );
    let to = SocketAddr::from(([127, 0, 0, 1], agent.port));
    let t0 = Instant::now();
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    for i in 0..n {
        let from = [127, 0, 1, 1 + (i % sources as usize) as u8];
        match tcp_connect_from(from, to) {
            Ok(s) => held.push(s),
            Err(_) => failed += 1,
        }
    }
    let opened_in = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let with = (
        status(pid, "VmRSS:") / 1024,
        fds(pid),
        status(pid, "Threads:"),
    );
    let s: serde_json::Value =
        serde_json::from_str(&ok(&agent, &["status"])).unwrap_or(serde_json::Value::Null);
    let kept = s["tcp_connections"].as_u64().unwrap_or(0);
    let refused = s["limits_hit"]["tcp_connections_refused"]
        .as_u64()
        .unwrap_or(0);
    drop(held);
    std::thread::sleep(Duration::from_secs(3));
    let after = (
        status(pid, "VmRSS:") / 1024,
        fds(pid),
        status(pid, "Threads:"),
    );
    drop(agent);
    println!(
        "| connections (sources) | opened in | kept by the agent | refused | connect failed | RSS MiB idle → held → after | descriptors | threads |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} ({sources}) | {:.1} s | {kept} | {refused} | {failed} | {} → {} → {} | {} → {} → {} | {} → {} → {} |",
        opened_in.as_secs_f32(),
        idle.0,
        with.0,
        after.0,
        idle.1,
        with.1,
        after.1,
        idle.2,
        with.2,
        after.2
    );
}
