//! Idle SIP TCP connections against the agent's limits: one peer (or a few
//! addresses) opens thousands of connections and sends nothing. Before
//! issue 12, 17,400 such connections took 1.6 GB and stayed open for
//! rsipstack's 300 s idle limit. Reports how many the agent kept, its RSS,
//! descriptors and threads with them held, and after they are let go.
//!
//! `cargo bench --bench tcp_flood` (HANDLET_BENCH_CONNECTIONS=17400,
//! HANDLET_BENCH_SOURCES=16: connections spread over 127.0.1.1..N). Runs
//! the agent with its default limits (16 per address, 256 in all).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
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

fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn connect(from: [u8; 4], to: SocketAddr) -> Option<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    s.bind(&SocketAddr::from((from, 0)).into()).ok()?;
    s.connect_timeout(&to.into(), Duration::from_secs(3)).ok()?;
    Some(s.into())
}

fn limits(bin: &PathBuf, cfg: &PathBuf) -> serde_json::Value {
    let out = Command::new(bin)
        .args(["status", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = repo.join("target/release/handlet");
    assert!(bin.is_file(), "build first: cargo build --release");
    let n: usize = std::env::var("HANDLET_BENCH_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(17_400);
    let sources: u8 = std::env::var("HANDLET_BENCH_SOURCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let dir = std::env::temp_dir().join(format!("handlet-tcpflood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let cfg = dir.join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\nmodels_dir = {:?}\n[sip]\nport = {port}\n[media]\nrtp_port_min = 40000\nrtp_port_max = 49999\n[log]\nfilter = \"warn\"\n",
            dir.join("data"),
            repo.join(".models")
        ),
    )
    .unwrap();
    let mut agent = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = agent.stdout.take().unwrap();
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        if line.contains("ready in") {
            break;
        }
    }
    let pid = agent.id();
    std::thread::sleep(Duration::from_secs(1));
    let idle = (
        status(pid, "VmRSS:") / 1024,
        fds(pid),
        status(pid, "Threads:"),
    );
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let t0 = Instant::now();
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    for i in 0..n {
        let from = [127, 0, 1, 1 + (i % sources as usize) as u8];
        match connect(from, to) {
            Some(s) => held.push(s),
            None => failed += 1,
        }
    }
    let opened_in = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let with = (
        status(pid, "VmRSS:") / 1024,
        fds(pid),
        status(pid, "Threads:"),
    );
    let s = limits(&bin, &cfg);
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
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&dir);
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
