//! SIP under load with sipp (tests/sipp/uac_load.xml): INVITE → 100 Trying
//! and INVITE → 200 OK latency p50/p99 at a given call rate, failed calls,
//! and the agent's memory and threads at the peak and afterwards.
//! `cargo bench --bench sip_load` (HANDLET_BENCH_CPS=50,200 to choose the
//! rates, HANDLET_BENCH_SECS=10 the length of each run). Calls are answered
//! at once and hung up after 200 ms, with no RTP; the agent's limits are
//! raised for the bench (max_calls 64, no per-source cap or rate limit)
//! because one sipp is one source.

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

/// (rtd 1 = 100 Trying, rtd 2 = 200 OK) times in ms from sipp's rtt file.
fn rtts(dir: &Path) -> (Vec<f64>, Vec<f64>) {
    let (mut t100, mut t200) = (Vec::new(), Vec::new());
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.ends_with("_rtt.csv") {
            continue;
        }
        for line in std::fs::read_to_string(e.path()).unwrap().lines().skip(1) {
            let f: Vec<&str> = line.split(';').collect();
            if f.len() < 4 {
                continue;
            }
            let (Ok(ms), Ok(rtd)) = (f[2].trim().parse::<f64>(), f[3].trim().parse::<u32>()) else {
                continue;
            };
            match rtd {
                1 => t100.push(ms),
                2 => t200.push(ms),
                _ => {}
            }
        }
        let _ = std::fs::remove_file(e.path());
    }
    (t100, t200)
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
        "| calls/s | calls | failed | 100 Trying p50 / p99 | 200 OK p50 / p99 | RSS idle → peak → after | threads idle → peak → after |"
    );
    println!("|---|---|---|---|---|---|---|");
    for cps in rates {
        let dir =
            std::env::temp_dir().join(format!("handlet-sipload-{}-{cps}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let cfg = dir.join("bench.toml");
        std::fs::write(
            &cfg,
            format!(
                "data_dir = {:?}\nmodels_dir = {:?}\n[sip]\nport = {port}\n[media]\nrtp_port_min = 40000\nrtp_port_max = 49999\n[privacy]\nrecording = false\n[limits]\nmax_calls = 64\nmax_calls_per_source = 64\nsip_requests_per_sec = 100000\n[log]\nfilter = \"warn\"\n",
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
        let (rss0, thr0) = (status(pid, "VmRSS:"), status(pid, "Threads:"));
        let total = cps * secs;
        let mut sipp = Command::new("sipp")
            .arg("-sf")
            .arg(repo.join("tests/sipp/uac_load.xml"))
            .args([
                "-s",
                "handlet",
                "-i",
                "127.0.0.1",
                "-p",
                &free_port().to_string(),
            ])
            .args([
                "-r",
                &cps.to_string(),
                "-m",
                &total.to_string(),
                "-l",
                "2000",
            ])
            .args([
                "-trace_rtt",
                "-rtt_freq",
                "1",
                "-nostdin",
                "-timeout",
                "120",
            ])
            .args(["-trace_stat", "-fd", "1"])
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
        let (mut t100, mut t200) = rtts(&dir);
        // Failed calls from sipp's stat file: the last line's FailedCall(C).
        let failed = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with("_.csv"))
            .and_then(|e| {
                let text = std::fs::read_to_string(e.path()).ok()?;
                let header: Vec<String> = text
                    .lines()
                    .next()?
                    .split(';')
                    .map(str::to_string)
                    .collect();
                let last: Vec<String> = text
                    .lines()
                    .last()?
                    .split(';')
                    .map(str::to_string)
                    .collect();
                let i = header.iter().position(|h| h == "FailedCall(C)")?;
                last.get(i)?.parse::<u64>().ok()
            })
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into());
        println!(
            "| {cps} | {total} | {failed} | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {} → {} → {} MiB | {thr0} → {thr_peak} → {thr1} |",
            percentile(&mut t100, 0.5),
            percentile(&mut t100, 0.99),
            percentile(&mut t200, 0.5),
            percentile(&mut t200, 0.99),
            rss0 / 1024,
            rss_peak / 1024,
            rss1 / 1024,
        );
        let _ = agent.kill();
        let _ = agent.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
