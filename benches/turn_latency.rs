//! The receptionist's turn latency: the caller stops speaking → the box's
//! reply starts playing, with 1 and 4 receptionist calls at once.
//!
//! Starts the agent as users do (the receptionist converses; a quote is
//! taken as a message), places N concurrent `handlet call`s, each the same
//! scripted caller (espeak-ng at 8 kHz, G.711 μ-law over real RTP: a quote
//! request, a name, a number, "yes"), and measures every turn on the call's
//! own recording, where the caller is the left channel and what the box
//! sent the right, on one clock: from the end of each caller utterance (the
//! last voiced 20 ms before 600 ms of quiet) to the first voiced 20 ms of
//! the box after it, counted only where the box was quiet when the caller
//! stopped. That includes the end-pointer's silence wait (600 ms by
//! default), whisper, the intent model and the voice's first audio.
//!
//! Per call, the longest pause inside each reply: a reply whose next
//! sentence was not rendered in time stalls there.
//!
//! Beside each, the caller's finals' wait after the end of speech (the
//! end-pointer's silence and whisper), from the transcript's own times.
//!
//! `cargo bench --bench turn_latency` (needs `make models`, espeak-ng, sox;
//! `make bench` installs them). `HANDLET_BENCH_CALLS=1,4` picks the counts;
//! `HANDLET_BENCH_WHISPER=base` the whisper model (default tiny.en).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Agent, Db, TempDir, bin, exported_recording, speech_wav, wait_for, windows_rms};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LINES: [&str; 4] = [
    "Hello, I would like a quote for a new bathroom please.",
    "My name is David Brown.",
    "Zero seven seven zero zero, nine zero zero, one two three.",
    "Yes, that is right.",
];

fn caller_wav(dir: &TempDir) -> PathBuf {
    let mut parts = Vec::new();
    for (i, line) in LINES.iter().enumerate() {
        // Room for the box's question before each line.
        parts.push(speech_wav(
            dir.path(),
            &format!("l{i}"),
            line,
            8000,
            7.0,
            0.0,
        ));
    }
    parts.push(speech_wav(dir.path(), "end", "Bye.", 8000, 10.0, 1.0));
    let out = dir.path().join("caller.wav");
    let ok = Command::new("sox")
        .args(&parts)
        .arg(&out)
        .status()
        .expect("sox");
    assert!(ok.success());
    out
}

/// Every turn in a recording: caller's end → box's next start, and the
/// longest pause inside the box's reply, in ms.
fn turns(rec: &Path) -> Vec<(i64, i64)> {
    let caller = windows_rms(rec, 0);
    let agent = windows_rms(rec, 1);
    let voiced = |w: f32| w > 0.01;
    let mut out = Vec::new();
    let mut k = 0;
    while k < caller.len() {
        // The end of an utterance: voiced, then 30 quiet windows.
        if voiced(caller[k])
            && k + 31 < caller.len()
            && !caller[k + 1..k + 31].iter().any(|w| voiced(*w))
        {
            let quiet_box = !agent[k.saturating_sub(5)..=k.min(agent.len() - 1)]
                .iter()
                .any(|w| voiced(*w));
            if quiet_box && let Some(s) = (k + 1..agent.len()).find(|&j| voiced(agent[j])) {
                // A reply, not the caller's next line talked over.
                let next_caller = (k + 1..caller.len()).find(|&j| voiced(caller[j]));
                if next_caller.is_none_or(|c| c > s) {
                    // The reply runs until the caller speaks again; its
                    // longest quiet stretch between voiced windows shows
                    // whether it stalled (a sentence not rendered in time)
                    // beyond the voice's own pauses between sentences.
                    let end = next_caller.unwrap_or(agent.len()).min(agent.len());
                    let (mut longest, mut quiet) = (0, 0);
                    for w in &agent[s..end] {
                        if voiced(*w) {
                            longest = longest.max(quiet);
                            quiet = 0;
                        } else {
                            quiet += 1;
                        }
                    }
                    out.push(((s - k) as i64 * 20, longest as i64 * 20));
                }
            }
            k += 31;
        } else {
            k += 1;
        }
    }
    out
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Turns on the recordings, and how long each of the caller's finals came
/// after the end of its speech (the end-pointer's silence and whisper).
fn run(calls: usize, wav: &Path) -> (Vec<i64>, Vec<i64>) {
    let agent = Agent::start_with(
        "turns",
        &format!(
            "[transcription]\nmodel = \"{model}\"\n\
             [limits]\nmax_calls = {m}\nmax_calls_per_source = {m}\n\
             [routing.intents]\nquote = \"message\"\n\
             [receptionist]\nbusiness = \"Smith Plumbing\"\naddress_for = []\n",
            m = calls.max(8),
            model = std::env::var("HANDLET_BENCH_WHISPER").unwrap_or_else(|_| "tiny.en".into()),
        ),
    );
    // Let the fixed sentences render first, as on a box that has been up.
    std::thread::sleep(Duration::from_secs(15));
    let children: Vec<_> = (0..calls)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 700 }));
            Command::new(bin())
                .args(["call", "--config"])
                .arg(&agent.config)
                .arg("--wav")
                .arg(wav)
                .args(["--wait", "5"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        let _ = c.wait();
    }
    let db = Db::open(&agent.database());
    wait_for(120, "every call to complete", || {
        let c = db.calls();
        (c.len() == calls && c.iter().all(|c| c.complete)).then_some(())
    });
    let mut all = Vec::new();
    for c in db.calls() {
        let rec = exported_recording(&agent, &db, &c.id);
        let t = turns(&rec);
        eprintln!(
            "call {}: turns {:?} ms; longest pause inside each reply {:?} ms",
            c.id,
            t.iter().map(|t| t.0).collect::<Vec<_>>(),
            t.iter().map(|t| t.1).collect::<Vec<_>>()
        );
        all.extend(t.into_iter().map(|t| t.0));
    }
    let mut q =
        db.0.prepare(
            "SELECT received_at_ms - speech_ended_at_ms FROM transcript_segments \
             WHERE channel = 'caller' AND speech_ended_at_ms IS NOT NULL",
        )
        .unwrap();
    let finals = q
        .query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (all, finals)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let counts: Vec<usize> = std::env::var("HANDLET_BENCH_CALLS")
        .unwrap_or_else(|_| "1,4".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = TempDir::new("turn-latency-wav");
    let wav = caller_wav(&dir);
    println!("calls  turns  p50_ms  p95_ms  max_ms  final_p50_ms  final_p95_ms");
    for n in counts {
        let (mut t, mut f) = run(n, &wav);
        t.sort_unstable();
        f.sort_unstable();
        println!(
            "{n:>5}  {:>5}  {:>6}  {:>6}  {:>6}  {:>12}  {:>12}",
            t.len(),
            percentile(&t, 0.5),
            percentile(&t, 0.95),
            t.last().copied().unwrap_or(-1),
            percentile(&f, 0.5),
            percentile(&f, 0.95),
        );
    }
}
