//! An INVITE flood from one address (sipp, 200 calls a second for five
//! seconds, from 127.0.0.2) while a real caller on another address
//! (baresip on 127.0.0.1) calls in: the real call is answered and
//! transcribed, the
//! flood is cut by the per-source rate limit and call cap (counted, not
//! logged per request), and afterwards the agent's threads and memory come
//! back to about where they were. Exact figures: benches/sip_load.rs.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// baresip on 127.0.0.1 dials the agent, plays `wav`, hangs up at its end;
/// what it printed.
fn baresip_call(agent: &Agent, wav: &std::path::Path) -> String {
    let secs = hound::WavReader::open(wav).unwrap().duration() as f64 / 8000.0;
    let dir = baresip_config(
        agent.dir.path(),
        "baresip-real",
        Some(wav),
        "udp",
        "<sip:tester@127.0.0.1>;regint=0;audio_codecs=PCMU",
    );
    let out = Command::new("timeout")
        .args(["60", "baresip", "-f"])
        .arg(&dir)
        .args(["-e", &format!("/dial {}", agent.uri())])
        .args(["-t", &(secs.ceil() as u64 + 5).to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("baresip is installed (make test installs it)");
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// (resident KiB, threads) of a process.
fn rss_and_threads(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

#[test]
fn a_flood_from_one_address_does_not_keep_a_real_caller_out() {
    let agent = Agent::start("flood");
    let pid = agent.child.id();
    let wav = speech_wav(
        agent.dir.path(),
        "real",
        "Hello, I need somebody to look at my boiler this week please.",
        8000,
        0.3,
        1.0,
    );
    // Warm up with one call so lazily made state is not counted as growth.
    call_ok(&agent, &wav);
    let (rss_idle, threads_idle) = rss_and_threads(pid);

    let sipp_port = free_port().to_string();
    let flood = Command::new("timeout")
        .args(["40", "sipp", "-sn", "uac", "-s", "handlet"])
        .args(["-i", "127.0.0.2", "-p", &sipp_port])
        .args(["-r", "200", "-m", "1000", "-l", "400", "-d", "300"])
        .args(["-nostdin", "-timeout", "30", "-recv_timeout", "4000"])
        .arg(format!("127.0.0.1:{}", agent.port))
        .current_dir(agent.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp is installed (package sip-tester)");
    let mut flood = flood;
    // Once the flood is on, the real caller calls.
    let db = Db::open(&agent.database());
    wait_for(10, "the flood to reach the agent", || {
        (db.calls().len() > 2).then_some(())
    });
    let t0 = Instant::now();
    let out = baresip_call(&agent, &wav);
    assert!(
        out.contains("Call established"),
        "the real call was not answered during the flood:\n{out}"
    );
    assert!(t0.elapsed() < Duration::from_secs(40), "{:?}", t0.elapsed());
    let real = wait_for(60, "the real call's transcript", || {
        let id: String =
            db.0.query_row(
                "SELECT id FROM calls WHERE from_uri LIKE '%tester@%' AND transcript_complete = 1",
                [],
                |r| r.get(0),
            )
            .ok()?;
        Some(id)
    });
    let text = db.transcript(&real).to_lowercase();
    assert!(
        text.contains("boiler"),
        "the real call was not transcribed: {text:?}"
    );
    let _ = flood.wait();

    // The flood was cut: most of its INVITEs never became calls (two of
    // the calls are the warm-up and baresip's).
    let flood_calls = db.calls().len() - 2;
    assert!(
        flood_calls < 600,
        "{flood_calls} of 1000 flood calls were taken"
    );
    let status = ok(&agent, &["status"]);
    let limited: u64 = status
        .lines()
        .find(|l| l.contains("sip_rate_limited"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().trim_end_matches(',').parse().ok())
        .unwrap_or(0);
    assert!(limited > 100, "rate limit hits: {status}");
    // One line per burst, not per request.
    let log = agent.log();
    assert!(log.matches("limit reached").count() <= 6, "{log}");

    // Back to about idle: every call ends (sipp's BYE or the RTP timeout is
    // not waited for: flood calls that were answered hang up at once).
    wait_for(60, "threads and memory back near idle", || {
        let (rss, threads) = rss_and_threads(pid);
        let busy = ok(&agent, &["status"]).contains("\"calls_in_progress\": 0");
        (busy && threads <= threads_idle + 4 && rss <= rss_idle + 150 * 1024).then_some(())
    });
    let (rss, threads) = rss_and_threads(pid);
    eprintln!(
        "idle {rss_idle} KiB / {threads_idle} threads; after the flood {rss} KiB / {threads} threads; {flood_calls} flood calls taken, {limited} requests rate limited"
    );
}
