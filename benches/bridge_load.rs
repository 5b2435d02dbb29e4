//! Bridged calls under load: the agent's CPU per bridged call with both legs
//! recorded and transcribed, and how many such calls the box carries with
//! the final text's p95 at most 2 s.
//!
//! For N calls (1, 2 and 4 by default) one agent is started as users start
//! it, with 2N extensions (301.. answer, 401.. dial). N baresip desk phones
//! register and answer by themselves; then N more register and each dials its
//! partner, 0.5 s apart. Every pair is one internal call the box bridges:
//! recorded (one stereo file) and transcribed on both legs. The two phones
//! of a call hold a conversation of six espeak-ng turns at 8 kHz (PCMU),
//! taking turns, three sentences each (`HANDLET_BENCH_TALK=overlap`: both
//! speak their three sentences at the same time, the worst case); the
//! dialling phone's file ends first and it hangs up.
//!
//! Measured:
//! - the agent's CPU (utime + stime of its process, all threads, from
//!   `/proc/PID/stat`) from the moment every call is answered until the
//!   first one ends, so all N are in progress throughout: % of one core, in
//!   total and per call; also its CPU seconds per call from the first dial
//!   until every transcript is complete (registering the dialling phones,
//!   ringing and whisper work left after hang-up included); and over the
//!   first window the baresip phones' CPU and everything else's on the box
//!   (`/proc/stat`: a build running alongside skews the latencies);
//! - per utterance and channel (caller, callee) the wait from the end of
//!   speech to its final text (`received_at_ms - speech_ended_at_ms` of
//!   its transcript segments, as `call_latency` reads it): p50, p95, max.
//!
//! `cargo bench --bench bridge_load` (needs `make models`, baresip,
//! espeak-ng and sox: `make bench` installs them). `HANDLET_BENCH_CALLS=1,2,4`
//! picks the call counts, `HANDLET_BENCH_WORKERS=2` the whisper worker
//! count (the default config's), `HANDLET_BENCH_TALK=overlap` as above.
//!
//! The 2N baresip peers run on the same 2 cores as the agent and take their
//! share of them (printed), so the latencies are if anything pessimistic and
//! the call count the box carries if anything understated.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Agent, Db, DeskPhone, TempDir, ok, speech_wav};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The answering phone's turns (it speaks first) and the caller's.
const CALLEE: [&str; 3] = [
    "Good morning, this is the workshop, how can I help you today?",
    "Yes, we can do that, the engineer is free on Thursday at ten.",
    "Thank you, we will send you a text message to confirm the booking.",
];
const CALLER: [&str; 3] = [
    "Hello, I would like a quote for a new boiler for a three bedroom house.",
    "Thursday morning is fine, the address is twelve Station Road.",
    "Lovely, thank you very much for your help, goodbye.",
];
const RATE: u32 = 8000;
const SECRET: &str = "bench-phone-secret";

fn wav_secs(p: &Path) -> f64 {
    let r = hound::WavReader::open(p).unwrap();
    r.duration() as f64 / r.spec().sample_rate as f64
}

fn silence(dir: &Path, name: &str, secs: f64) -> PathBuf {
    let out = dir.join(format!("{name}.wav"));
    let ok = Command::new("sox")
        .args(["-n", "-r", &RATE.to_string(), "-c", "1", "-b", "16"])
        .arg(&out)
        .args(["trim", "0", &format!("{secs:.3}")])
        .status()
        .expect("sox is installed (make bench installs it)");
    assert!(ok.success());
    out
}

fn concat(parts: &[PathBuf], out: &Path) {
    let ok = Command::new("sox")
        .args(parts)
        .arg(out)
        .status()
        .expect("sox");
    assert!(ok.success());
}

/// (callee's wav, caller's wav, the call's length in seconds): the
/// conversation, each party silent while the other speaks unless
/// `overlap`; the callee's file outlasts the caller's by 3 s so the caller
/// hangs up after its last sentence has been end-pointed.
fn conversation(dir: &Path, overlap: bool) -> (PathBuf, PathBuf, f64) {
    let said = |who: &str, i: usize, text: &str| {
        speech_wav(dir, &format!("{who}{i}"), text, RATE, 0.3, 1.2)
    };
    let (mut callee, mut caller) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let a = said("callee", i, CALLEE[i]);
        let b = said("caller", i, CALLER[i]);
        if !overlap {
            caller.push(silence(dir, &format!("caller-wait{i}"), wav_secs(&a)));
            callee.push(a);
            callee.push(silence(dir, &format!("callee-wait{i}"), wav_secs(&b)));
            caller.push(b);
        } else {
            callee.push(a);
            caller.push(b);
        }
    }
    caller.push(silence(dir, "caller-tail", 1.5));
    let len = |parts: &[PathBuf]| parts.iter().map(|p| wav_secs(p)).sum::<f64>();
    let (caller_secs, callee_secs) = (len(&caller), len(&callee));
    callee.push(silence(
        dir,
        "callee-tail",
        (caller_secs - callee_secs).max(0.0) + 3.0,
    ));
    let (callee_wav, caller_wav) = (dir.join("callee.wav"), dir.join("caller.wav"));
    concat(&callee, &callee_wav);
    concat(&caller, &caller_wav);
    (callee_wav, caller_wav, caller_secs)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// (ppid, comm, utime + stime in clock ticks) of a process.
fn proc_stat(pid: u32) -> Option<(u32, String, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, tail) = s.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    // After the command: field 3 (state) is [0], 4 (ppid) [1], 14/15 [11]/[12].
    let f: Vec<&str> = tail.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((ppid, comm, ticks))
}

/// (busy, total) clock ticks of the whole box, all cores (`/proc/stat`).
fn box_ticks() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn agent_ticks(agent: &Agent) -> u64 {
    proc_stat(agent.child.id()).expect("the agent is running").2
}

/// CPU ticks of each baresip this bench started, by pid.
fn phone_ticks() -> Vec<(u32, u64)> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (ppid, comm, ticks) = proc_stat(pid)?;
            (ppid == me && comm == "baresip").then_some((pid, ticks))
        })
        .collect()
}

/// Ticks the phones alive at both samples used between them.
fn phones_used(before: &[(u32, u64)], after: &[(u32, u64)]) -> u64 {
    after
        .iter()
        .filter_map(|(pid, t)| {
            let (_, t0) = before.iter().find(|(p, _)| p == pid)?;
            Some(t.saturating_sub(*t0))
        })
        .sum()
}

fn count(db: &Db, sql: &str) -> usize {
    db.0.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap_or(0) as usize
}

/// Poll `f` every 100 ms until it holds or `secs` pass; whether it held.
fn until(secs: f64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[derive(Default)]
struct Waits {
    utterances: usize,
    sorted: Vec<i64>,
}

impl Waits {
    fn p(&self, p: f64) -> i64 {
        percentile(&self.sorted, p)
    }
    fn max(&self) -> i64 {
        self.sorted.last().copied().unwrap_or(-1)
    }
    fn cell(&self) -> String {
        format!("{} / {} / {}", self.p(0.5), self.p(0.95), self.max())
    }
}

struct Run {
    calls: usize,
    bridged: usize,
    window_secs: f64,
    agent_pct: f64,
    phones_pct: f64,
    others_pct: f64,
    partials_per_call: f64,
    agent_secs_per_call: f64,
    caller: Waits,
    callee: Waits,
    all: Waits,
    notes: Vec<String>,
}

fn extensions(n: usize) -> String {
    (0..n)
        .flat_map(|i| [(301 + i, "Answers"), (401 + i, "Dials")])
        .map(|(num, name)| {
            format!("[[extension]]\nnumber = \"{num}\"\nname = \"{name} {num}\"\nsecret = \"{SECRET}-{num}\"\n")
        })
        .collect()
}

fn run(n: usize, workers: usize, wavs: &(PathBuf, PathBuf, f64), hz: f64) -> Run {
    let (callee_wav, caller_wav, call_secs) = wavs;
    let m = 2 * n + 2;
    let agent = Agent::start_with(
        "bridge-load",
        // Every phone is on 127.0.0.1: let them all in.
        &format!(
            "[transcription]\nworkers = {workers}\n[limits]\nmax_calls = {m}\nmax_calls_per_source = {m}\n\
             sip_requests_per_sec = 1000\n{}",
            extensions(n)
        ),
    );
    // The phones quit well after the call would have ended.
    let phone_secs = *call_secs as u64 + 60;
    let mut phones: Vec<DeskPhone> = (0..n)
        .map(|i| {
            let num = (301 + i).to_string();
            let secret = format!("{SECRET}-{num}");
            DeskPhone::start(&agent, &num, &secret, true, Some(callee_wav), phone_secs)
        })
        .collect();
    let db = Db::open(&agent.database());
    let answered = || {
        count(
            &db,
            "SELECT count(*) FROM calls WHERE answered_at_ms IS NOT NULL",
        )
    };
    let ended = || {
        count(
            &db,
            "SELECT count(*) FROM calls WHERE ended_at_ms IS NOT NULL",
        )
    };
    let (first_dial, cpu_dial) = (Instant::now(), agent_ticks(&agent));
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        let num = (401 + i).to_string();
        let secret = format!("{SECRET}-{num}");
        let to = (301 + i).to_string();
        phones.push(DeskPhone::start_dialling(
            &agent,
            &num,
            &secret,
            false,
            Some(caller_wav),
            Some(&to),
            phone_secs,
        ));
    }
    let mut notes = Vec::new();
    // Every call answered (or as many as will be), and none ended yet.
    let all_up = until(30.0, || answered() >= n || ended() > 0);
    let bridged = answered();
    if !all_up || bridged < n {
        notes.push(format!(
            "{n} calls: only {bridged} bridged within {:.0} s of the first dial",
            first_dial.elapsed().as_secs_f64()
        ));
    }
    let (t0, cpu0, ph0, box0) = (
        Instant::now(),
        agent_ticks(&agent),
        phone_ticks(),
        box_ticks(),
    );
    eprintln!(
        "  {n} calls: {bridged} bridged {:.1} s after the first dial",
        first_dial.elapsed().as_secs_f64()
    );
    let call_deadline = call_secs + 30.0;
    until(call_deadline, || ended() > 0);
    let (t1, cpu1, ph1, box1) = (
        Instant::now(),
        agent_ticks(&agent),
        phone_ticks(),
        box_ticks(),
    );
    let window_secs = (t1 - t0).as_secs_f64();
    if !until(call_deadline, || ended() >= bridged) {
        notes.push(format!("{n} calls: {} of {bridged} ended in time", ended()));
    }
    let done = || {
        count(
            &db,
            "SELECT count(*) FROM calls WHERE transcript_complete = 1",
        )
    };
    if !until(180.0, || done() >= bridged) {
        notes.push(format!(
            "{n} calls: only {} of {bridged} transcripts complete after 180 s",
            done()
        ));
    }
    let cpu3 = agent_ticks(&agent);
    eprintln!(
        "  {n} calls: ended {:.1} s, transcripts complete {:.1} s after all were up",
        window_secs,
        t0.elapsed().as_secs_f64()
    );

    // What the box kept: the calls, their legs, their recordings.
    let internal = count(
        &db,
        "SELECT count(*) FROM calls WHERE direction = 'internal' AND answered_at_ms IS NOT NULL",
    );
    let recorded = count(
        &db,
        "SELECT count(DISTINCT call_id) FROM recordings WHERE state = 'complete' AND duration_ms > 0",
    );
    if internal != bridged || recorded != bridged {
        notes.push(format!(
            "{n} calls: {bridged} bridged, {internal} internal, {recorded} with a complete recording"
        ));
    }
    let reasons: Vec<String> = db
        .0
        .prepare("SELECT coalesce(end_reason, '-') AS reason, count(*) FROM calls GROUP BY reason")
        .unwrap()
        .query_map([], |r| {
            Ok(format!(
                "{} x{}",
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    eprintln!("  {n} calls: end reasons {reasons:?}; {recorded} recorded");
    let status: serde_json::Value =
        serde_json::from_str(&ok(&agent, &["status"])).unwrap_or_default();
    let hit: Vec<String> = status["limits_hit"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.as_u64().is_some_and(|x| x > 0))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if !hit.is_empty() {
        notes.push(format!("{n} calls: limits hit: {}", hit.join(", ")));
    }

    // One utterance: all the segments of one (call, channel, utterance).
    let mut per: Vec<(String, i64)> =
        db.0.prepare(
            "SELECT channel, max(received_at_ms) - min(speech_ended_at_ms) FROM transcript_segments
             WHERE speech_ended_at_ms IS NOT NULL AND received_at_ms IS NOT NULL
             GROUP BY call_id, channel, utterance_start_ms",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    per.sort_unstable_by_key(|(_, w)| *w);
    let waits = |ch: Option<&str>| {
        let sorted: Vec<i64> = per
            .iter()
            .filter(|(c, _)| ch.is_none_or(|ch| c == ch))
            .map(|(_, w)| *w)
            .collect();
        Waits {
            utterances: sorted.len(),
            sorted,
        }
    };
    let untimed = count(
        &db,
        "SELECT count(*) FROM transcript_segments WHERE speech_ended_at_ms IS NULL OR received_at_ms IS NULL",
    );
    if untimed > 0 {
        notes.push(format!(
            "{n} calls: {untimed} segments without speech-end or arrival time"
        ));
    }
    let partials = count(&db, "SELECT count(*) FROM transcript_partials");
    let (caller, callee, all) = (waits(Some("caller")), waits(Some("callee")), waits(None));
    if all.utterances != 6 * bridged {
        notes.push(format!(
            "{n} calls: {} utterances (caller {}, callee {}), {} spoken",
            all.utterances,
            caller.utterances,
            callee.utterances,
            6 * bridged
        ));
    }
    if std::env::var_os("HANDLET_BENCH_DUMP").is_some() {
        let mut q = db
            .0
            .prepare(
                "SELECT substr(call_id, 1, 8), channel, start_ms, received_at_ms - speech_ended_at_ms, text
                 FROM transcript_segments ORDER BY call_id, channel, start_ms",
            )
            .unwrap();
        let rows = q
            .query_map([], |r| {
                Ok(format!(
                    "{} {:6} {:6} ms  wait {:5?} ms  {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, String>(4)?
                ))
            })
            .unwrap();
        for r in rows {
            eprintln!("    {}", r.unwrap());
        }
    }
    drop(phones);
    let pct = |ticks: u64| ticks as f64 / hz / window_secs.max(1e-3) * 100.0;
    Run {
        calls: n,
        bridged,
        window_secs,
        agent_pct: pct(cpu1 - cpu0),
        phones_pct: pct(phones_used(&ph0, &ph1)),
        others_pct: pct((box1.0 - box0.0).saturating_sub(cpu1 - cpu0 + phones_used(&ph0, &ph1))),
        partials_per_call: partials as f64 / bridged.max(1) as f64,
        agent_secs_per_call: (cpu3 - cpu_dial) as f64 / hz / bridged.max(1) as f64,
        caller,
        callee,
        all,
        notes,
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let workers: usize = std::env::var("HANDLET_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let counts: Vec<usize> = std::env::var("HANDLET_BENCH_CALLS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .filter(|&n| (1..=98).contains(&n))
        .collect();
    let overlap = std::env::var("HANDLET_BENCH_TALK").is_ok_and(|v| v == "overlap");
    let hz = clock_ticks();
    let dir = TempDir::new("bridge-load-wav");
    let wavs = conversation(dir.path(), overlap);
    eprintln!(
        "workers {workers}; each call {:.1} s, PCMU, 3 sentences a side, {}",
        wavs.2,
        if overlap {
            "both sides at once"
        } else {
            "taking turns"
        }
    );
    let runs: Vec<Run> = counts.iter().map(|&n| run(n, workers, &wavs, hz)).collect();

    println!(
        "\nbridged internal calls, recorded, both legs transcribed; whisper workers {workers}; {}; baresip peers on the same cores\n",
        if overlap {
            "both sides speaking at once"
        } else {
            "sides taking turns"
        }
    );
    println!(
        "| calls | agent CPU % of a core (per call) | utterances | final text p50 / p95 / max ms | meets p95 <= 2 s |"
    );
    println!("|---|---|---|---|---|");
    for r in &runs {
        let calls = if r.bridged == r.calls {
            r.calls.to_string()
        } else {
            format!("{} ({} bridged)", r.calls, r.bridged)
        };
        println!(
            "| {calls} | {:.1} ({:.1}) | {} | {} | {} |",
            r.agent_pct,
            r.agent_pct / r.bridged.max(1) as f64,
            r.all.utterances,
            r.all.cell(),
            if r.all.p(0.95) >= 0 && r.all.p(0.95) <= 2000 {
                "yes"
            } else {
                "no"
            }
        );
    }
    println!(
        "\n| calls | caller utterances | caller final p50 / p95 / max ms | callee utterances | callee final p50 / p95 / max ms |"
    );
    println!("|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.calls,
            r.caller.utterances,
            r.caller.cell(),
            r.callee.utterances,
            r.callee.cell()
        );
    }
    println!(
        "\n| calls | all-up window s | agent CPU s per call, first dial to transcripts complete | baresip peers CPU % of a core | everything else on the box, % of a core | partial texts per call |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} |",
            r.calls,
            r.window_secs,
            r.agent_secs_per_call,
            r.phones_pct,
            r.others_pct,
            r.partials_per_call
        );
    }
    let notes: Vec<&String> = runs.iter().flat_map(|r| &r.notes).collect();
    if !notes.is_empty() {
        println!();
        for n in notes {
            println!("note: {n}");
        }
    }
}
