//! Real SIP clients call the running agent; the stored call and transcript are checked.

mod common;
use common::*;
use std::process::Command;

const UTTERANCE: &str = "Hi, I'd like a quote for fixing a leaking boiler, can you call me back";

/// baresip with a config of its own: plays `wav` as its microphone, dials, and
/// hangs up at the end of the file. Its sndfile module writes what it heard
/// from the agent to `baresip-{transport}/dump-*-dec.wav`.
fn baresip_call(
    dir: &std::path::Path,
    wav: &std::path::Path,
    target: &str,
    transport: &str,
    codec: &str,
) -> String {
    // baresip does not exit when the call ends; -t stops it a little after.
    let quit_after = (wav_secs(wav).ceil() as u64 + 6).to_string();
    let cfg_dir = dir.join(format!("baresip-{transport}"));
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::write(
        cfg_dir.join("config"),
        format!(
            "poll_method epoll\nsip_listen 127.0.0.1:0\nsip_trans_def {transport}\nnet_interface 127.0.0.1\n\
             audio_source aufile,{wav}\naudio_alert aufile,/dev/null\nsnd_path {heard}\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule g722.so\nmodule opus.so\nmodule aufile.so\nmodule sndfile.so\nmodule_app account.so\nmodule_app menu.so\n",
            heard = cfg_dir.display(),
            wav = wav.display()
        ),
    )
    .unwrap();
    let tp = if transport == "tcp" {
        ";transport=tcp"
    } else {
        ""
    };
    std::fs::write(
        cfg_dir.join("accounts"),
        format!("<sip:tester@127.0.0.1{tp}>;regint=0;audio_codecs={codec}\n"),
    )
    .unwrap();
    let out = Command::new("timeout")
        .args(["60", "baresip", "-f"])
        .arg(&cfg_dir)
        .args(["-e", &format!("/dial {target}{tp}"), "-t", &quit_after])
        .output()
        .expect("baresip is installed (make test installs it)");
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

fn assert_call_transcribed(
    agent: &Agent,
    transport: &str,
    codec: &str,
    wav_secs: f64,
    before_ms: i64,
) {
    let db = Db::open(&agent.database());
    let call = wait_for(90, "transcript to complete", || {
        db.calls()
            .into_iter()
            .find(|c| c.transport == transport && c.started >= before_ms && c.complete)
    });
    let text = db.transcript(&call.id);
    let w = words(&text);
    for key in ["leaking", "boiler", "call"] {
        assert!(
            w.iter().any(|x| x == key),
            "transcript {text:?} lacks {key:?}; log:\n{}",
            agent.log()
        );
    }
    assert_eq!(call.codec.as_deref(), Some(codec));
    assert_eq!(call.reason.as_deref(), Some("caller hung up"));
    let (answered, ended, duration) = (
        call.answered.unwrap(),
        call.ended.unwrap(),
        call.duration.unwrap(),
    );
    assert!(call.started <= answered && answered <= ended, "{call:?}");
    assert_eq!(duration, ended - answered);
    // The call lasts as long as the WAV baresip played, give or take signalling.
    let secs = duration as f64 / 1000.0;
    assert!(
        (secs - wav_secs).abs() < 2.0,
        "duration {secs} s for a {wav_secs} s file"
    );
    // How the audio arrived is kept with the call: about 50 packets a
    // second, nothing lost, late or malformed on loopback.
    let (packets, lost, late, malformed, target): (i64, i64, i64, i64, i64) = db
        .0
        .query_row(
            "SELECT packets, lost, late, malformed, target_delay_ms FROM call_media WHERE call_id = ?1",
            [&call.id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert!(
        (packets as f64) > secs * 50.0 * 0.9 && (packets as f64) < secs * 50.0 * 1.1 + 20.0,
        "{packets} packets in {secs} s"
    );
    assert_eq!((lost, late, malformed), (0, 0, 0));
    assert!((20..=200).contains(&target), "target delay {target} ms");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// (rate, channels) from a 16-bit PCM WAV header.
fn hound_spec(p: &std::path::Path) -> (u32, u16) {
    let b = std::fs::read(p).unwrap();
    (
        u32::from_le_bytes([b[24], b[25], b[26], b[27]]),
        u16::from_le_bytes([b[22], b[23]]),
    )
}

fn wav_secs_of(p: &std::path::Path, (rate, ch): (u32, u16)) -> f64 {
    (std::fs::metadata(p).unwrap().len() - 44) as f64 / (rate as f64 * ch as f64 * 2.0)
}

fn wav_secs(p: &std::path::Path) -> f64 {
    wav_secs_of(p, hound_spec(p))
}

#[test]
fn baresip_calls_over_udp_and_tcp_are_transcribed() {
    let agent = Agent::start("baresip");
    let wav = speech_wav(agent.dir.path(), "quote", UTTERANCE, 8000, 0.5, 1.5);
    let secs = wav_secs(&wav);

    let t = now_ms();
    let log = baresip_call(agent.dir.path(), &wav, &agent.uri(), "udp", "PCMU");
    assert!(log.contains("Call established"), "baresip UDP:\n{log}");
    assert_call_transcribed(&agent, "udp", "PCMU", secs, t);

    let t = now_ms();
    let log = baresip_call(agent.dir.path(), &wav, &agent.uri(), "tcp", "PCMA");
    assert!(log.contains("Call established"), "baresip TCP:\n{log}");
    assert_call_transcribed(&agent, "tcp", "PCMA", secs, t);

    // Privacy: the caller's address never reaches the log at info level.
    assert!(
        !agent.log().contains("tester@"),
        "caller URI leaked into the log"
    );
}

#[test]
fn baresip_call_over_opus_is_transcribed() {
    let agent = Agent::start("opus");
    // baresip's aufile source must match the codec: 48 kHz, 2 channels.
    let mono = speech_wav(agent.dir.path(), "quote-opus", UTTERANCE, 48000, 0.5, 1.5);
    let wav = agent.dir.path().join("quote-opus-stereo.wav");
    assert!(
        Command::new("sox")
            .arg(&mono)
            .args(["-c", "2"])
            .arg(&wav)
            .status()
            .unwrap()
            .success()
    );
    let secs = wav_secs(&wav);
    let t = now_ms();
    let log = baresip_call(agent.dir.path(), &wav, &agent.uri(), "udp", "opus/48000/2");
    assert!(
        log.contains("Call established") && log.contains("opus"),
        "baresip:\n{log}"
    );
    assert_call_transcribed(&agent, "udp", "opus", secs, t);
}

/// A desk phone's favourite: G.722 both ways. baresip (spandsp's codec)
/// sends the utterance; the agent's announcement, encoded by ours, is what
/// baresip hears and its sndfile module dumps.
#[test]
fn baresip_call_over_g722_is_transcribed_and_hears_the_announcement() {
    let (agent, _) = Agent::start_announcing("g722");
    let wav = speech_wav(agent.dir.path(), "quote-g722", UTTERANCE, 16000, 0.5, 1.5);
    let secs = wav_secs(&wav);
    let t = now_ms();
    let log = baresip_call(agent.dir.path(), &wav, &agent.uri(), "udp", "G722/16000/1");
    assert!(
        log.contains("Call established") && log.contains("G722"),
        "baresip:\n{log}"
    );
    assert_call_transcribed(&agent, "udp", "G722", secs, t);
    let dir = agent.dir.path().join("baresip-udp");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let heard = dir.join(
        names
            .iter()
            .find(|n| n.ends_with("-dec.wav"))
            .unwrap_or_else(|| panic!("no sndfile dump in {names:?}:\n{log}")),
    );
    let out = Command::new(bin())
        .args(["transcribe", "--config"])
        .arg(&agent.config)
        .arg(&heard)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        text.contains("recorded"),
        "baresip heard: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn handlet_call_prints_the_stored_transcript() {
    let agent = Agent::start("cli-call");
    let wav = speech_wav(agent.dir.path(), "quote16k", UTTERANCE, 16000, 0.3, 1.0);
    let out = Command::new(bin())
        .args(["call", "--config"])
        .arg(&agent.config)
        .arg("--wav")
        .arg(&wav)
        .args(["--wait", "90"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "handlet call failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("caller:"), "{stdout}");
    let w = words(&stdout);
    assert!(w.iter().any(|x| x == "boiler"), "{stdout}");
    // What it printed is what the agent stored.
    let db = Db::open(&agent.database());
    let calls = db.calls();
    assert_eq!(calls.len(), 1);
    assert!(stdout.contains(&db.transcript(&calls[0].id)), "{stdout}");
    // The energy gate kept the silent lead-in and tail from the VAD model,
    // and opened for the speech.
    let log = agent.log();
    let frames = log_field(&log, "transcript complete", "frames").expect("frames in the log");
    let gated = log_field(&log, "transcript complete", "gated").expect("gated in the log");
    assert!(
        0 < gated && gated < frames,
        "{gated} of {frames} frames gated"
    );
}

#[test]
fn silence_only_call_stores_no_text() {
    let agent = Agent::start("silence");
    let wav = agent.dir.path().join("silence.wav");
    let ok = Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
        .arg(&wav)
        .args(["trim", "0", "3"])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = Command::new(bin())
        .args(["call", "--config"])
        .arg(&agent.config)
        .arg("--wav")
        .arg(&wav)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = Db::open(&agent.database());
    let c = &db.calls()[0];
    assert!(c.complete);
    assert_eq!(db.transcript(&c.id), "");
    // Digital silence never opens the gate: the VAD model never ran.
    let log = agent.log();
    let frames = log_field(&log, "transcript complete", "frames").unwrap();
    assert!(frames > 50, "{frames} frames");
    assert_eq!(
        log_field(&log, "transcript complete", "gated"),
        Some(frames)
    );
}

#[test]
fn caller_cancel_while_ringing_is_recorded_as_missed() {
    let agent = Agent::start_with("cancel", "[sip]\nanswer_after_ms = 5000\n");
    let sipp_port = free_port().to_string();
    let scenario = repo().join("tests/sipp/uac_cancel.xml");
    let out = Command::new("timeout")
        .args(["30", "sipp", "-sf"])
        .arg(&scenario)
        .args([
            "-s",
            "handlet",
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-p",
            &sipp_port,
            "-nostdin",
            "-timeout",
            "20",
        ])
        .arg(format!("127.0.0.1:{}", agent.port))
        .current_dir(agent.dir.path())
        .output()
        .expect("sipp is installed (package sip-tester)");
    assert!(
        out.status.success(),
        "sipp failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let db = Db::open(&agent.database());
    // The end and "nothing more to transcribe" are two writes: wait for both.
    let call = wait_for(10, "missed call row, ended and complete", || {
        db.calls()
            .into_iter()
            .find(|c| c.ended.is_some() && c.complete)
    });
    assert_eq!(call.reason.as_deref(), Some("caller cancelled"));
    assert_eq!(call.answered, None);
    assert_eq!(call.duration, Some(0));
}

#[test]
fn garbage_and_bad_offers_get_answers_and_hurt_nothing() {
    let agent = Agent::start("garbage");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let target = ("127.0.0.1", agent.port);
    // Random datagrams and a truncated request.
    let mut x: u32 = 99;
    for _ in 0..200 {
        let len = (x % 300) as usize;
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        udp.send_to(&junk, target).unwrap();
    }
    udp.send_to(
        b"INVITE sip:handlet@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP",
        target,
    )
    .unwrap();
    // Garbage on TCP too.
    {
        use std::io::Write;
        let mut tcp = std::net::TcpStream::connect(target).unwrap();
        let _ = tcp.write_all(b"\x00\x01\x02 NOT SIP AT ALL\r\n\r\n\r\n");
    }
    // An INVITE whose SDP has no audio gets 488, not silence.
    let local = udp.local_addr().unwrap();
    // It names a caller and an address the info log must not show.
    let sdp = "v=0\r\no=- 1 1 IN IP4 10.9.8.7\r\ns=-\r\nc=IN IP4 10.9.8.7\r\nt=0 0\r\nm=video 4000 RTP/AVP 96\r\n";
    let invite = format!(
        "INVITE sip:handlet@127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-bad1\r\nMax-Forwards: 70\r\n\
         From: <sip:+447700900123@10.9.8.7>;tag=b1\r\nTo: <sip:handlet@127.0.0.1>\r\nCall-ID: bad-sdp-1@127.0.0.1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:x@{local}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        p = agent.port
    );
    udp.send_to(invite.as_bytes(), target).unwrap();
    let mut buf = [0u8; 2048];
    let reply = wait_for(10, "final response to the bad INVITE", || {
        let n = udp.recv(&mut buf).ok()?;
        let s = String::from_utf8_lossy(&buf[..n]).to_string();
        (!s.starts_with("SIP/2.0 100")).then_some(s)
    });
    assert!(reply.starts_with("SIP/2.0 488"), "{reply}");
    // And the agent still answers: sipsak's OPTIONS gets a 200.
    let ok = Command::new("sipsak")
        .args(["-s", &format!("sip:handlet@127.0.0.1:{}", agent.port)])
        .output()
        .expect("sipsak installed");
    assert!(
        ok.status.success(),
        "sipsak: {}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let log = agent.log();
    assert!(log.lines().all(|l| !l.contains("panicked")));
    assert!(log.contains("rejecting INVITE"), "{log}");
    assert!(
        !log.contains("10.9.8.7") && !log.contains("7700900123"),
        "caller details in the info log:\n{log}"
    );
}

/// Streaming: while the caller speaks, partial text for the utterance lands
/// in the store, growing, and always before the utterance's final text.
#[test]
fn baresip_call_streams_partials_before_finals() {
    let agent = Agent::start("streaming");
    let wav = speech_wav(
        agent.dir.path(),
        "long",
        "My name is Sarah Jones and my kitchen tap has been dripping all week, could somebody come and fix it on Tuesday",
        8000,
        0.5,
        1.5,
    );
    let t = now_ms();
    let log = baresip_call(agent.dir.path(), &wav, &agent.uri(), "udp", "PCMU");
    assert!(log.contains("Call established"), "baresip:\n{log}");
    let db = Db::open(&agent.database());
    let call = wait_for(90, "transcript to complete", || {
        db.calls()
            .into_iter()
            .find(|c| c.started >= t && c.complete)
    });
    // (utterance, audio_ms, received, text) in arrival order.
    let partials: Vec<(i64, i64, i64, String)> = db
        .0
        .prepare("SELECT utterance_start_ms, audio_ms, received_at_ms, text FROM transcript_partials WHERE call_id = ?1 ORDER BY id")
        .unwrap()
        .query_map([&call.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let finals: Vec<(i64, i64, String)> = db
        .0
        .prepare("SELECT utterance_start_ms, received_at_ms, text FROM transcript_segments WHERE call_id = ?1 ORDER BY id")
        .unwrap()
        .query_map([&call.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for p in &partials {
        eprintln!("partial {p:?}");
    }
    for f in &finals {
        eprintln!("final   {f:?}");
    }
    assert!(!finals.is_empty(), "no final text; log:\n{}", agent.log());
    // Speech times on the wall clock: a final comes after its speech ended, a
    // partial after its speech started (benches/call_latency.rs measures the gaps).
    let bad: i64 =
        db.0.query_row(
            "SELECT (SELECT count(*) FROM transcript_segments WHERE call_id = ?1
                       AND (speech_ended_at_ms IS NULL OR speech_ended_at_ms > received_at_ms
                            OR speech_ended_at_ms < ?2))
                  + (SELECT count(*) FROM transcript_partials WHERE call_id = ?1
                       AND (speech_started_at_ms IS NULL OR speech_started_at_ms > received_at_ms
                            OR speech_started_at_ms < ?2))",
            rusqlite::params![call.id, t],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bad, 0, "speech times missing or out of order");
    assert!(
        partials.len() >= 2,
        "a ~7 s utterance should give several partials, got {partials:?}"
    );
    for w in partials.windows(2) {
        if w[0].0 == w[1].0 {
            assert!(w[0].1 < w[1].1, "partials cover growing audio: {w:?}");
            assert!(w[0].2 <= w[1].2, "partials arrive in order: {w:?}");
        }
    }
    for p in &partials {
        let f = finals
            .iter()
            .find(|f| f.0 == p.0)
            .unwrap_or_else(|| panic!("partial {p:?} has no final; finals {finals:?}"));
        assert!(p.2 <= f.1, "partial {p:?} arrived after its final {f:?}");
    }
    let final_text = finals
        .iter()
        .map(|f| f.2.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let fw = words(&final_text);
    for key in ["sarah", "kitchen", "tuesday"] {
        assert!(
            fw.iter().any(|x| x == key),
            "final {final_text:?} lacks {key}"
        );
    }
    // After the call: a summary with what a person needs to act on.
    let (name, when, intent, follow): (Option<String>, Option<String>, String, String) = db
        .0
        .query_row(
            "SELECT caller_name, requested_time, intent, follow_up FROM call_summaries WHERE call_id = ?1",
            [&call.id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("a summary row once the transcript is complete");
    eprintln!("summary: {name:?} {when:?} {intent} {follow:?}");
    assert_eq!(name.as_deref(), Some("Sarah Jones"));
    assert!(
        when.as_deref().is_some_and(|w| w.starts_with("Tuesday")),
        "{when:?}"
    );
    assert!(!follow.is_empty());
    // The first partial already has the opening words.
    let first = words(&partials[0].3);
    assert!(
        first
            .iter()
            .any(|w| ["my", "name", "sarah"].contains(&w.as_str())),
        "first partial {:?}",
        partials[0].3
    );
}
