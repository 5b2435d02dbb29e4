//! SIP under load with sipp: INVITE → 200 OK latency p50/p99 at a given
//! call rate with calls answered at once (tests/sipp/uac_load.xml), failed
//! calls, and the agent's memory and threads at the peak and afterwards;
//! then INVITE → first provisional response at the same rate against an
//! agent that rings 300 ms first (tests/sipp/uac_load_trying.xml; that is
//! the 180 Ringing: rsipstack sends 100 Trying only when nothing else is
//! queued, and a UAS answering within 200 ms may skip it, RFC 3261 8.2.6.1).
//! `cargo bench --bench sip_load` (HANDLET_BENCH_CPS=50,200 to choose the
//! rates, HANDLET_BENCH_SECS=10 the length of each run). Calls are answered
//! at once and hung up after 200 ms, with no RTP; the agent's limits are
//! raised for the bench (max_calls 64, no per-source cap or rate limit)
//! because one sipp is one source.
//!
//! Then the registrar: REGISTER → 401 → REGISTER with its MD5 digest →
//! 200 OK (tests/sipp/register_load.xml) from 100 extensions in turn, at
//! HANDLET_BENCH_RPS=100,300 registrations a second; each 200 is a
//! binding written to SQLite.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
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

fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// rtd 1 times in ms from sipp's rtt file (`Date_ms;response_time_ms;rtd_no`).
fn rtts(dir: &Path) -> Vec<f64> {
    let mut t = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.ends_with("_rtt.csv") {
            continue;
        }
        for line in std::fs::read_to_string(e.path()).unwrap().lines().skip(1) {
            let f: Vec<&str> = line.split(';').collect();
            if f.len() >= 3
                && f[2].trim() == "1"
                && let Ok(ms) = f[1].trim().parse::<f64>()
            {
                t.push(ms);
            }
        }
    }
    t
}

struct Run {
    rtt: Vec<f64>,
    failed: String,
    rss: (u64, u64, u64),
    threads: (u64, u64, u64),
}

/// Extensions the registrar run registers in turn.
const EXTENSIONS: u32 = 100;

fn run(
    repo: &Path,
    bin: &Path,
    cps: u32,
    secs: u32,
    scenario: &str,
    ring_ms: u32,
    registrar: bool,
) -> Run {
    let dir = std::env::temp_dir().join(format!(
        "handlet-sipload-{}-{cps}-{ring_ms}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let cfg = dir.join("bench.toml");
    let mut extensions = String::new();
    let mut users = String::from("SEQUENTIAL\n");
    for n in (0..EXTENSIONS).filter(|_| registrar) {
        let (number, secret) = (1000 + n, format!("bench-secret-{n}"));
        extensions.push_str(&format!(
            "[[extension]]\nnumber = \"{number}\"\nname = \"Bench {n}\"\nsecret = \"{secret}\"\n"
        ));
        users.push_str(&format!(
            "{number};[authentication username={number} password={secret}]\n"
        ));
    }
    std::fs::write(dir.join("users.csv"), users).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\nmodels_dir = {:?}\n[sip]\nport = {port}\nanswer_after_ms = {ring_ms}\n[media]\nrtp_port_min = 40000\nrtp_port_max = 49999\n[privacy]\nrecording = false\n[limits]\nmax_calls = 64\nmax_calls_per_source = 64\nsip_requests_per_sec = 100000\n[log]\nfilter = \"warn\"\n{extensions}",
            dir.join("data"),
            repo.join(".models")
        ),
    )
    .unwrap();
    let mut agent = Command::new(bin)
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
    let (rss0, thr0) = (status(pid, "VmRSS:"), status(pid, "Threads:"));
    let mut sipp = Command::new("sipp")
        .arg("-sf")
        .arg(repo.join("tests/sipp").join(scenario))
        .args(["-s", "handlet", "-i", "127.0.0.1"])
        .args(if registrar {
            vec!["-inf", "users.csv"]
        } else {
            vec![]
        })
        .args(["-p", &free_port().to_string()])
        .args(["-r", &cps.to_string(), "-m", &(cps * secs).to_string()])
        .args(["-l", "2000", "-trace_rtt", "-rtt_freq", "1"])
        .args(["-nostdin", "-timeout", "120", "-trace_stat", "-fd", "1"])
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp (package sip-tester)");
    let (mut rss_peak, mut thr_peak) = (rss0, thr0);
    let t0 = Instant::now();
    while sipp.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(180) {
        rss_peak = rss_peak.max(status(pid, "VmRSS:"));
        thr_peak = thr_peak.max(status(pid, "Threads:"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = sipp.kill();
    let _ = sipp.wait();
    std::thread::sleep(Duration::from_secs(5));
    let (rss1, thr1) = (status(pid, "VmRSS:"), status(pid, "Threads:"));
    let rtt = rtts(&dir);
    // Failed calls from sipp's stat file: the last line's FailedCall(C).
    let failed = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with("_.csv"))
        .and_then(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let header: Vec<&str> = text.lines().next()?.split(';').collect();
            let last: Vec<&str> = text.lines().last()?.split(';').collect();
            let i = header.iter().position(|h| *h == "FailedCall(C)")?;
            last.get(i)?.parse::<u64>().ok()
        })
        .map(|n| n.to_string())
        .unwrap_or_else(|| "?".into());
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        rtt,
        failed,
        rss: (rss0 / 1024, rss_peak / 1024, rss1 / 1024),
        threads: (thr0, thr_peak, thr1),
    }
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = repo.join("target/release/handlet");
    assert!(bin.is_file(), "build first: cargo build --release");
    let rates: Vec<u32> = std::env::var("HANDLET_BENCH_CPS")
        .unwrap_or_else(|_| "50,200".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let secs: u32 = std::env::var("HANDLET_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    println!(
        "| calls/s | calls | failed | INVITE → 200 OK p50 / p99 | INVITE → first provisional (180) p50 / p99 | RSS idle → peak → 5 s after | threads idle → peak → after |"
    );
    println!("|---|---|---|---|---|---|---|");
    for cps in rates {
        let mut a = run(&repo, &bin, cps, secs, "uac_load.xml", 0, false);
        let mut b = run(&repo, &bin, cps, secs, "uac_load_trying.xml", 300, false);
        println!(
            "| {cps} | {} | {} (ringing run: {}) | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {} → {} → {} MiB | {} → {} → {} |",
            cps * secs,
            a.failed,
            b.failed,
            percentile(&mut a.rtt, 0.5),
            percentile(&mut a.rtt, 0.99),
            percentile(&mut b.rtt, 0.5),
            percentile(&mut b.rtt, 0.99),
            a.rss.0,
            a.rss.1,
            a.rss.2,
            a.threads.0,
            a.threads.1,
            a.threads.2,
        );
    }
    let rates: Vec<u32> = std::env::var("HANDLET_BENCH_RPS")
        .unwrap_or_else(|_| "100,300".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    println!();
    println!(
        "| REGISTERs/s (digest) | registrations | failed | REGISTER → 401 → REGISTER → 200 p50 / p99 | RSS idle → peak → after |"
    );
    println!("|---|---|---|---|---|");
    for rps in rates {
        let mut r = run(&repo, &bin, rps, secs, "register_load.xml", 0, true);
        println!(
            "| {rps} | {} | {} | {:.1} / {:.1} ms | {} → {} → {} MiB |",
            rps * secs,
            r.failed,
            percentile(&mut r.rtt, 0.5),
            percentile(&mut r.rtt, 0.99),
            r.rss.0,
            r.rss.1,
            r.rss.2,
        );
    }
}
