//! How long a caller waits for text, with 1, 2, 4 and 8 calls at once.
//!
//! Starts the agent as users do, places N concurrent `handlet call`s (each
//! speaking three espeak-ng sentences at 8 kHz with 2 s pauses, G.711 μ-law
//! over real RTP, starts staggered by 0.5 s) and reads the times the agent
//! stored per utterance:
//! - end of speech → final text (`received_at_ms - speech_ended_at_ms`),
//!   which includes the end-pointer's silence wait (600 ms by default);
//! - start of speech → first partial text.
//!
//! `cargo bench --bench call_latency` (needs `make models`, espeak-ng and sox:
//! `make bench` installs them). `HANDLET_BENCH_WORKERS=1` sets the whisper
//! worker count (default 2, as in the default config); `HANDLET_BENCH_CALLS=1,4` picks the call counts.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Agent, TempDir, bin, speech_wav};
use std::process::Command;
use std::time::{Duration, Instant};

const SENTENCES: [&str; 3] = [
    "Hello, this is Mark Davies calling about the boiler at number twelve.",
    "It stopped working this morning and there is no hot water at all.",
    "Could someone come out tomorrow afternoon, please call me back.",
];

fn caller_wav(dir: &TempDir) -> std::path::PathBuf {
    let parts: Vec<_> = SENTENCES
        .iter()
        .enumerate()
        .map(|(i, s)| speech_wav(dir.path(), &format!("s{i}"), s, 8000, 0.5, 1.5))
        .collect();
    let out = dir.path().join("caller.wav");
    let ok = Command::new("sox")
        .args(&parts)
        .arg(&out)
        .status()
        .expect("sox");
    assert!(ok.success());
    out
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

struct Run {
    finals: Vec<i64>,
    first_partials: Vec<i64>,
    utterances: usize,
    without_partial: usize,
}

fn run(calls: usize, workers: usize, wav: &std::path::Path) -> Run {
    let agent = Agent::start_with(
        "latency",
        // All the bench's callers come from one address: let them all in.
        &format!(
            "[transcription]\nworkers = {workers}\n[limits]\nmax_calls = {m}\nmax_calls_per_source = {m}\n",
            m = calls.max(8)
        ),
    );
    let t0 = Instant::now();
    let children: Vec<_> = (0..calls)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(if i == 0 { 0 } else { 500 }));
            Command::new(bin())
                .args(["call", "--config"])
                .arg(&agent.config)
                .arg("--wav")
                .arg(wav)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "handlet call failed");
    }
    eprintln!(
        "  {calls} calls done in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let db = rusqlite::Connection::open(agent.database()).unwrap();
    let complete: i64 = db
        .query_row(
            "SELECT count(*) FROM calls WHERE transcript_complete = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        complete as usize, calls,
        "every call's transcript completes"
    );
    if std::env::var_os("HANDLET_BENCH_DUMP").is_some() {
        dump(&db);
        // What each call's media leg and transcription tap reported.
        for l in agent
            .log()
            .lines()
            .filter(|l| l.contains("transcript complete") || l.contains("call ended"))
        {
            eprintln!("  {l}");
        }
    }
    let waits = |sql: &str| -> Vec<i64> {
        db.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let mut finals = waits(
        "SELECT max(received_at_ms) - min(speech_ended_at_ms) FROM transcript_segments
         GROUP BY call_id, utterance_start_ms",
    );
    let mut first_partials = waits(
        "SELECT min(received_at_ms) - min(speech_started_at_ms) FROM transcript_partials
         GROUP BY call_id, utterance_start_ms",
    );
    finals.sort_unstable();
    first_partials.sort_unstable();
    let utterances = finals.len();
    Run {
        without_partial: utterances.saturating_sub(first_partials.len()),
        finals,
        first_partials,
        utterances,
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let workers: usize = std::env::var("HANDLET_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let counts: Vec<usize> = std::env::var("HANDLET_BENCH_CALLS")
        .unwrap_or_else(|_| "1,2,4,8".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let dir = TempDir::new("latency-wav");
    let wav = caller_wav(&dir);
    println!(
        "workers {workers}; each call: {} sentences, 8 kHz PCMU",
        SENTENCES.len()
    );
    println!(
        "| calls | utterances | final p50 | final p95 | final max | first partial p50 | first partial p95 | utterances without a partial |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in counts {
        let r = run(n, workers, &wav);
        println!(
            "| {n} | {} | {} ms | {} ms | {} ms | {} ms | {} ms | {} |",
            r.utterances,
            percentile(&r.finals, 0.5),
            percentile(&r.finals, 0.95),
            r.finals.last().copied().unwrap_or(-1),
            percentile(&r.first_partials, 0.5),
            percentile(&r.first_partials, 0.95),
            r.without_partial,
        );
    }
}

/// Every partial and final with its wait, for looking into a slow one.
fn dump(db: &rusqlite::Connection) {
    let mut q = db
        .prepare(
            "SELECT 'partial', call_id, utterance_start_ms, audio_ms, received_at_ms - speech_started_at_ms, text
               FROM transcript_partials
             UNION ALL
             SELECT 'final', call_id, utterance_start_ms, end_ms, received_at_ms - speech_ended_at_ms, text
               FROM transcript_segments
             ORDER BY 2, 3",
        )
        .unwrap();
    let rows = q
        .query_map([], |r| {
            Ok(format!(
                "{:8} {} utt {:6} ms  audio {:6}  wait {:5} ms  {}",
                r.get::<_, String>(0)?,
                &r.get::<_, String>(1)?[..8],
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?
            ))
        })
        .unwrap();
    for r in rows {
        eprintln!("  {}", r.unwrap());
    }
}
