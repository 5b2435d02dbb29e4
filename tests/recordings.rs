//! Encrypted recordings, end to end: a real call is recorded, exported and
//! transcribed back; nothing in the data dir is plaintext audio; retention
//! with a simulated clock; and a kill -9 loop during recorded calls.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;

fn export(agent: &Agent, id: &str, out: &Path) -> (bool, String, String) {
    handlet(
        agent,
        &["recordings", "export", id, "--out", out.to_str().unwrap()],
    )
}

fn export_ok(agent: &Agent, id: &str, out: &Path) -> String {
    let (success, said, err) = export(agent, id, out);
    assert!(success, "export {id} failed: {said}\n{err}");
    said
}

/// (id, state) of every recording `handlet recordings list` shows.
fn listed(agent: &Agent) -> Vec<(String, String)> {
    ok(agent, &["recordings", "list"])
        .lines()
        .filter(|l| !l.starts_with("no recordings"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let state = f[f.len() - 4].to_string();
            (f[0].to_string(), state)
        })
        .collect()
}

fn read_stereo(path: &Path) -> (Vec<f32>, Vec<f32>) {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    assert_eq!((spec.channels, spec.sample_rate), (2, 16_000));
    let s: Vec<f32> = r
        .samples::<i16>()
        .map(|x| x.unwrap() as f32 / 32768.0)
        .collect();
    (
        s.iter().step_by(2).copied().collect(),
        s.iter().skip(1).step_by(2).copied().collect(),
    )
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

/// No file in the data dir (database, WAL, recordings, keys) holds a WAV or
/// Ogg header or any of `needles` (pieces of the audio's PCM).
fn assert_no_plaintext_audio(data: &Path, needles: &[Vec<u8>]) {
    for f in files(data) {
        let bytes = std::fs::read(&f).unwrap();
        for magic in [&b"RIFF"[..], b"WAVE", b"OggS", b"OpusHead"] {
            assert!(
                !bytes.windows(magic.len()).any(|w| w == magic),
                "{} contains {:?}",
                f.display(),
                String::from_utf8_lossy(magic)
            );
        }
        for n in needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == &n[..]),
                "{} contains PCM of the call",
                f.display()
            );
        }
    }
}

/// Three 32-byte runs of 16-bit PCM from the loud middle of a WAV file.
fn pcm_needles(wav: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(wav).unwrap();
    let data = &bytes[44..];
    [0.3, 0.5, 0.7]
        .iter()
        .map(|f| {
            let at = ((data.len() as f64 * f) as usize) & !1;
            data[at..at + 32].to_vec()
        })
        .collect()
}

#[test]
fn a_call_is_recorded_encrypted_exported_and_expires_on_time() {
    let agent = Agent::start("rec-e2e");
    let wav = speech_wav(
        agent.dir.path(),
        "quote",
        "Hi, I'd like a quote for fixing a leaking boiler, can you call me back",
        8000,
        0.5,
        1.5,
    );
    ok(
        &agent,
        &["call", "--wav", wav.to_str().unwrap(), "--wait", "60"],
    );
    let recs = listed(&agent);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].1, "complete");

    // Export plays: stereo, caller on the left, the words are there.
    let out = agent.dir.path().join("export.wav");
    let said = export_ok(&agent, &recs[0].0, &out);
    assert!(said.contains("complete"), "{said}");
    let (left, right) = read_stereo(&out);
    let sent = hound::WavReader::open(&wav).unwrap().duration() as f32 / 8000.0;
    let got = left.len() as f32 / 16_000.0;
    assert!(
        (got - sent).abs() < 1.5,
        "recording {got:.2} s, call audio {sent:.2} s"
    );
    assert!(
        rms(&left) > 0.01 && rms(&right) < rms(&left) / 20.0,
        "left {} right {}",
        rms(&left),
        rms(&right)
    );
    let text = ok(&agent, &["transcribe", out.to_str().unwrap()]).to_lowercase();
    assert!(text.contains("quote") && text.contains("boiler"), "{text}");

    // Nothing on disk is plaintext audio.
    let data = agent.dir.path().join("data");
    let mut needles = pcm_needles(&out);
    needles.extend(pcm_needles(&wav));
    assert_no_plaintext_audio(&data, &needles);

    // Retention on a simulated clock: 30 days for the recording, 365 for the call.
    let db = Db::open(&agent.database());
    let started: i64 =
        db.0.query_row("SELECT started_at_ms FROM recordings", [], |r| r.get(0))
            .unwrap();
    let sweep = |at: i64| ok(&agent, &["privacy", "sweep", "--at-ms", &at.to_string()]);
    sweep(started + 30 * DAY_MS - 60_000);
    assert_eq!(listed(&agent).len(), 1);
    export_ok(&agent, &recs[0].0, &out);
    let s = sweep(started + 30 * DAY_MS + 60_000);
    assert!(s.contains("1 recordings shredded"), "{s}");
    assert!(listed(&agent).is_empty());
    let keys: i64 =
        db.0.query_row("SELECT COUNT(*) FROM recording_keys", [], |r| r.get(0))
            .unwrap();
    assert_eq!(keys, 0);
    assert!(files(&data.join("recordings")).is_empty());
    let (success, _, err) = export(&agent, &recs[0].0, &out);
    assert!(!success && err.contains("no recording"), "{err}");
    // The transcript follows its own period.
    assert_eq!(db.calls().len(), 1);
    assert!(
        db.transcript(&db.calls()[0].id)
            .to_lowercase()
            .contains("boiler")
    );
    let s = sweep(started + 365 * DAY_MS + 60_000);
    assert!(s.contains("1 calls deleted"), "{s}");
    assert!(db.calls().is_empty());
    let segs: i64 =
        db.0.query_row("SELECT COUNT(*) FROM transcript_segments", [], |r| r.get(0))
            .unwrap();
    assert_eq!(segs, 0);
    // Idempotent; and the sweeps are in the audit log, without content.
    assert!(sweep(started + 400 * DAY_MS).contains("0 recordings shredded, 0 calls"));
    let audits: Vec<String> =
        db.0.prepare("SELECT detail FROM privacy_audit")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    assert_eq!(audits.len(), 2, "{audits:?}");
    assert!(audits.iter().all(|a| !a.contains("boiler")));
}

/// "This call may be recorded": the caller hears it when the call is
/// answered, and the recording starts once it has been played.
#[test]
fn the_announcement_is_heard_before_recording_starts() {
    let (agent, announce_s) = Agent::start_announcing("rec-announce");
    let wav = speech_wav(
        agent.dir.path(),
        "caller",
        "Hello, I would like to book a service for my boiler next week please",
        8000,
        0.3,
        1.0,
    );
    let heard = agent.dir.path().join("heard.wav");
    let printed = ok(
        &agent,
        &[
            "call",
            "--wav",
            wav.to_str().unwrap(),
            "--hear",
            heard.to_str().unwrap(),
            "--wait",
            "60",
        ],
    );
    let text = ok(&agent, &["transcribe", heard.to_str().unwrap()]).to_lowercase();
    assert!(text.contains("recorded"), "the caller heard: {text}");
    // The recording is the call minus the announcement.
    let recs = listed(&agent);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let out = agent.dir.path().join("export.wav");
    export_ok(&agent, &recs[0].0, &out);
    let (left, _) = read_stereo(&out);
    let got = left.len() as f32 / 16_000.0;
    // The client sends the WAV then half a second of silence.
    let sent = hound::WavReader::open(&wav).unwrap().duration() as f32 / 8000.0 + 0.5;
    println!("recorded {got:.2} s of a {sent:.2} s call with a {announce_s:.2} s announcement");
    assert!(
        got < sent - announce_s + 0.5 && got > sent - announce_s - 1.0,
        "recorded {got:.2} s of a {sent:.2} s call with a {announce_s:.2} s announcement"
    );
    // Transcription does not wait: what the caller said over it is kept.
    let db = Db::open(&agent.database());
    // The call's record says when the announcement had played.
    let at: i64 =
        db.0.query_row(
            "SELECT at_ms FROM call_events WHERE kind = 'announcement'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        (at as f32 / 1000.0 - announce_s).abs() < 0.5,
        "announcement event at {at} ms for a {announce_s:.2} s prompt"
    );
    let said = db.transcript(&db.calls()[0].id).to_lowercase();
    assert!(said.contains("hello") || said.contains("book"), "{said}");
    // One transcript per leg: the agent's says what it played.
    let agent_said = db
        .channel_transcript(&db.calls()[0].id, "agent")
        .to_lowercase();
    assert!(agent_said.contains("recorded"), "agent leg: {agent_said:?}");
    assert!(!said.contains("recorded"), "caller leg: {said:?}");
    assert!(printed.contains("agent: "), "{printed}");
}

#[test]
fn recording_can_be_turned_off() {
    let agent = Agent::start_with("rec-off", "[privacy]\nrecording = false\n");
    let wav = speech_wav(
        agent.dir.path(),
        "short",
        "Are you open on Saturday",
        8000,
        0.3,
        1.0,
    );
    ok(
        &agent,
        &["call", "--wav", wav.to_str().unwrap(), "--wait", "60"],
    );
    assert!(listed(&agent).is_empty());
    assert!(!agent.dir.path().join("data/recordings").exists());
}

#[test]
fn bad_requests_are_clear_errors() {
    let agent = Agent::start("rec-bad");
    let (success, _, err) = export(&agent, "nothex", Path::new("/tmp/x.wav"));
    assert!(!success && err.contains("is not a recording id"), "{err}");
    let (success, _, err) = export(&agent, "00000000000000ff", Path::new("/tmp/x.wav"));
    assert!(!success && err.contains("no recording 255"), "{err}");
}

/// kill -9 the agent at varying points of recorded calls, 20 times. After
/// each restart the cut recording is recovered as truncated and plays up to
/// its last whole chunk; the database stays sound; nothing is plaintext.
#[test]
fn kill_loop_loses_at_most_the_last_chunk() {
    let mut agent = Agent::start("rec-kill");
    let wav = speech_wav(
        agent.dir.path(),
        "long",
        "My name is Sarah Jones and my kitchen tap has been dripping all week. Now there is water pouring through the ceiling, please send someone out as soon as you can.",
        8000,
        0.2,
        1.0,
    );
    let kills = 20;
    for i in 0..kills {
        let mut call = Command::new(bin())
            .args(["call", "--config"])
            .arg(&agent.config)
            .arg("--wav")
            .arg(&wav)
            .args(["--wait", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // 1.2 to 4.9 s into the call: before, at and after chunk boundaries.
        std::thread::sleep(Duration::from_millis(1200 + (i * 1931 % 3700) as u64));
        agent.kill_and_restart();
        let _ = call.kill();
        let _ = call.wait();
    }
    let db = Db::open(&agent.database());
    let check: String =
        db.0.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
    assert_eq!(check, "ok");
    let recs = listed(&agent);
    assert!(
        recs.len() >= kills as usize - 2,
        "{} recordings for {kills} calls",
        recs.len()
    );
    let mut played = 0;
    for (id, state) in &recs {
        assert_eq!(state, "truncated", "{id}: killed mid-call, so truncated");
        let out = agent.dir.path().join(format!("{id}.wav"));
        let said = export_ok(&agent, id, &out);
        assert!(said.contains("truncated"), "{said}");
        let (left, _) = read_stereo(&out);
        let secs = left.len() as f32 / 16_000.0;
        // Whole seconds only (a chunk is one second), never more than was sent.
        assert!(secs.fract() < 0.01 && secs < 6.0, "{id}: {secs} s");
        if secs >= 1.0 {
            assert!(rms(&left) > 0.005, "{id}: silent");
            played += 1;
        }
        std::fs::remove_file(&out).unwrap();
    }
    assert!(
        played >= kills as usize / 2,
        "only {played} recordings held audio"
    );
    assert_no_plaintext_audio(&agent.dir.path().join("data"), &pcm_needles(&wav));
}
