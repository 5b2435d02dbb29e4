//! End-to-end footprint of the agent as users start it: time from exec to
//! "ready" (models verified and loaded, SIP listening) and resident memory
//! while idle with every model loaded. `cargo bench --bench agent_footprint`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = repo.join("target/release/handlet");
    assert!(bin.is_file(), "build first: cargo build --release");
    let dir = std::env::temp_dir().join(format!("handlet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\nmodels_dir = {:?}\n[sip]\nport = {port}\n",
            dir.join("data"),
            repo.join(".models")
        ),
    )
    .unwrap();

    let mut starts = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut child = Command::new(&bin)
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("ready in") {
                break;
            }
        }
        starts.push(t.elapsed());
        std::thread::sleep(Duration::from_secs(2));
        rss.push((
            status_kb(child.id(), "VmRSS:"),
            status_kb(child.id(), "VmHWM:"),
        ));
        let _ = child.kill();
        let _ = child.wait();
    }
    starts.sort();
    let median = starts[starts.len() / 2];
    let (rss_kb, hwm_kb) = rss[rss.len() / 2];
    println!(
        "agent start to ready (median of 5): {:.0} ms",
        median.as_secs_f64() * 1000.0
    );
    println!(
        "agent RSS idle, models loaded: {:.1} MiB (peak {:.1} MiB)",
        rss_kb as f64 / 1024.0,
        hwm_kb as f64 / 1024.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
