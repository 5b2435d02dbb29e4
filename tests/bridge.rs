//! The box as the shop's switchboard: baresip desk phones register as
//! extensions, a baresip caller calls in, the box rings the phones of
//! `[inbound] ring` (ringall or hunt), bridges the caller to the one that
//! answers, and records and transcribes both sides.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SECRET_101: &str = "desk-101-secret";
const SECRET_102: &str = "desk-102-secret";

fn extensions(ring: &str) -> String {
    format!(
        "[[extension]]\nnumber = \"101\"\nname = \"Front desk\"\nsecret = \"{SECRET_101}\"\n\
         [[extension]]\nnumber = \"102\"\nname = \"Workshop\"\nsecret = \"{SECRET_102}\"\n{ring}"
    )
}

/// The caller: baresip dialling the box, playing `wav`, hanging up after `secs`.
fn caller(agent: &Agent, wav: &Path, secs: u64) -> (Reaped, PathBuf) {
    caller_with(agent, wav, secs, "")
}

/// The same, with `extra` lines for its config.
fn caller_with(agent: &Agent, wav: &Path, secs: u64, extra: &str) -> (Reaped, PathBuf) {
    let dir = baresip_config(
        agent.dir.path(),
        "caller",
        Some(wav),
        "udp",
        "<sip:07700900123@127.0.0.1>;regint=0;audio_codecs=PCMU",
    );
    let mut c = std::fs::read_to_string(dir.join("config")).unwrap();
    c.push_str(&extra.replace("{dir}", &dir.display().to_string()));
    std::fs::write(dir.join("config"), c).unwrap();
    let out = std::fs::File::create(dir.join("baresip.out")).unwrap();
    let child = Command::new("baresip")
        .arg("-f")
        .arg(&dir)
        .args([
            "-e",
            &format!("/dial {}", agent.uri()),
            "-t",
            &secs.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("baresip is installed (make test installs it)");
    (Reaped(child), dir)
}

#[derive(Debug)]
struct Leg {
    target: String,
    started: i64,
    answered: Option<i64>,
    ended: i64,
    outcome: String,
}

fn legs(db: &Db, call: &str) -> Vec<Leg> {
    let mut st = db
        .0
        .prepare("SELECT target, started_at_ms, answered_at_ms, ended_at_ms, outcome FROM call_legs WHERE call_id = ?1 ORDER BY id")
        .unwrap();
    st.query_map([call], |r| {
        Ok(Leg {
            target: r.get(0)?,
            started: r.get(1)?,
            answered: r.get(2)?,
            ended: r.get(3)?,
            outcome: r.get(4)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The one call, once it has ended and its legs are stored.
fn ended_call(db: &Db) -> (String, Option<i64>, String) {
    wait_for(60, "the call to end with its legs", || {
        let row: (String, Option<i64>, String) =
            db.0.query_row(
                "SELECT id, answered_at_ms, end_reason FROM calls WHERE ended_at_ms IS NOT NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .ok()?;
        (!legs(db, &row.0).is_empty()).then_some(row)
    })
}

/// Mean square of each channel of a stereo WAV over [from, to) seconds.
fn channel_energy(wav: &Path, from: f32, to: f32) -> (f64, f64) {
    let mut r = hound::WavReader::open(wav).unwrap();
    let rate = r.spec().sample_rate as f32;
    let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    let (a, b) = (
        (from * rate) as usize * 2,
        ((to * rate) as usize * 2).min(s.len()),
    );
    let (mut l, mut rr, mut n) = (0f64, 0f64, 0f64);
    for f in s[a..b].chunks_exact(2) {
        l += (f[0] as f64).powi(2);
        rr += (f[1] as f64).powi(2);
        n += 1.0;
    }
    (l / n.max(1.0), rr / n.max(1.0))
}

#[test]
fn ringall_bridges_the_first_phone_to_answer_records_and_transcribes_both_sides() {
    let agent = Agent::start_with(
        "bridge-ringall",
        &extensions(
            "[inbound]\nring = [\"101\", \"102\"]\nstrategy = \"ringall\"\nring_secs = 20\n",
        ),
    );
    let office = speech_wav(
        agent.dir.path(),
        "office",
        "Good morning, this is the workshop. How can I help you today?",
        8000,
        1.0,
        12.0,
    );
    let desk = DeskPhone::start(&agent, "101", SECRET_101, false, None, 40);
    let workshop = DeskPhone::start(&agent, "102", SECRET_102, true, Some(&office), 40);
    let words = speech_wav(
        agent.dir.path(),
        "caller",
        "Hello, I would like a quote for a new boiler please.",
        8000,
        8.0,
        3.0,
    );
    let (mut call, dir) = caller(&agent, &words, 19);
    let db = Db::open(&agent.database());
    let (id, answered, reason) = ended_call(&db);
    let _ = call.0.wait();
    let out = std::fs::read_to_string(dir.join("baresip.out")).unwrap_or_default();
    assert!(out.contains("Call established"), "caller:\n{out}");
    assert!(answered.is_some(), "the caller was answered");
    assert_eq!(reason, "caller hung up");
    let l = legs(&db, &id);
    assert_eq!(l.len(), 2, "{l:?}");
    let w = l.iter().find(|x| x.target == "102").unwrap();
    let d = l.iter().find(|x| x.target == "101").unwrap();
    assert_eq!(w.outcome, "answered", "{l:?}");
    assert!(w.answered.is_some());
    assert_eq!(d.outcome, "answered elsewhere", "{l:?}");
    assert!(
        d.ended <= w.answered.unwrap() + 2_000,
        "101 stopped ringing when 102 answered: {l:?}"
    );
    // The desk phone rang, then was cancelled; the workshop phone's call
    // ended with the caller's hang-up.
    let desk_out = desk.output();
    let desk_out = desk_out.to_lowercase();
    assert!(
        desk_out.contains("incoming call") && desk_out.contains("session closed"),
        "101:\n{desk_out}"
    );
    wait_for(10, "the workshop phone's call to close", || {
        workshop.output().contains("terminated").then_some(())
    });
    // Both sides, each in its own channel.
    let text = |ch: &str| {
        wait_for(60, &format!("the {ch}'s words"), || {
            let t = db.channel_transcript(&id, ch).to_lowercase();
            (!t.is_empty() && db.calls().iter().any(|c| c.id == id && c.complete)).then_some(t)
        })
    };
    let caller_text = text("caller");
    let callee_text = text("callee");
    assert!(caller_text.contains("boiler"), "caller: {caller_text}");
    assert!(callee_text.contains("workshop"), "callee: {callee_text}");
    assert!(!caller_text.contains("workshop"), "{caller_text}");
    assert!(!callee_text.contains("boiler"), "{callee_text}");
    // The recording is stereo: the phone on the right while it speaks, the
    // caller on the left while the caller speaks.
    let wav = exported_recording(&agent, &db, &id);
    let (l1, r1) = channel_energy(&wav, 1.2, 4.0);
    assert!(
        r1 > 20.0 * l1.max(1.0),
        "phone speaking: right {r1:.0} left {l1:.0}"
    );
    let (l2, r2) = channel_energy(&wav, 8.5, 11.0);
    eprintln!(
        "phone speaking: left {l1:.0} right {r1:.0}; caller speaking: left {l2:.0} right {r2:.0}"
    );
    assert!(
        l2 > 20.0 * r2.max(1.0),
        "caller speaking: left {l2:.0} right {r2:.0}"
    );
    drop(desk);
}

#[test]
fn hunt_rings_the_next_phone_when_the_first_does_not_answer_and_either_side_can_hang_up() {
    let agent = Agent::start_with(
        "bridge-hunt",
        &extensions("[inbound]\nring = [\"101\", \"102\"]\nstrategy = \"hunt\"\nring_secs = 5\n"),
    );
    let _desk = DeskPhone::start(&agent, "101", SECRET_101, false, None, 60);
    // 102 answers and hangs up itself, before the caller does.
    // baresip hangs up when its microphone file ends: the phone's is the
    // shorter.
    let hello = speech_wav(
        agent.dir.path(),
        "hello",
        "Workshop speaking.",
        8000,
        0.5,
        1.0,
    );
    let _workshop = DeskPhone::start(&agent, "102", SECRET_102, true, Some(&hello), 60);
    let words = speech_wav(agent.dir.path(), "caller", "Hello there.", 8000, 0.5, 20.0);
    let (mut call, _) = caller(&agent, &words, 60);
    let db = Db::open(&agent.database());
    let (id, answered, reason) = ended_call(&db);
    assert!(answered.is_some());
    assert_eq!(reason, "answering phone hung up", "{}", agent.log());
    // The caller was sent a BYE: its baresip ends the call on its own.
    wait_for(10, "the caller's call to close", || {
        call.0.try_wait().ok()?.map(|_| ()).or_else(|| {
            std::fs::read_to_string(agent.dir.path().join("caller/baresip.out"))
                .ok()?
                .contains("terminated")
                .then_some(())
        })
    });
    let l = legs(&db, &id);
    let d = l.iter().find(|x| x.target == "101").unwrap();
    let w = l.iter().find(|x| x.target == "102").unwrap();
    assert_eq!(d.outcome, "no answer", "{l:?}");
    assert!(
        (4_500..7_000).contains(&(d.ended - d.started)),
        "101 rang its 5 s: {l:?}"
    );
    assert!(w.started >= d.ended - 500, "102 only after 101: {l:?}");
    assert_eq!(w.outcome, "answered");
}

#[test]
fn a_caller_hanging_up_while_phones_ring_cancels_every_fork() {
    let agent = Agent::start_with(
        "bridge-cancel",
        &extensions("[inbound]\nring = [\"101\", \"102\"]\nring_secs = 30\n"),
    );
    let desk = DeskPhone::start(&agent, "101", SECRET_101, false, None, 40);
    let workshop = DeskPhone::start(&agent, "102", SECRET_102, false, None, 40);
    let words = speech_wav(agent.dir.path(), "caller", "Hello.", 8000, 0.5, 0.5);
    // The caller gives up after 4 s of ringing.
    let (mut call, _) = caller(&agent, &words, 4);
    let db = Db::open(&agent.database());
    let (id, answered, reason) = ended_call(&db);
    let _ = call.0.wait();
    assert_eq!(answered, None, "a missed call");
    assert_eq!(reason, "caller cancelled");
    let l = legs(&db, &id);
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(
        l.iter()
            .all(|x| x.outcome == "caller hung up" && x.answered.is_none()),
        "{l:?}"
    );
    for p in [&desk, &workshop] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let o = p.output().to_lowercase();
            // baresip's words for a CANCEL: "session closed".
            if o.contains("incoming call") && o.contains("session closed") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the phone did not stop ringing:\n{}",
                o.lines()
                    .filter(|l| l.contains("call") || l.contains("sip"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

#[test]
fn when_nobody_answers_the_agent_does() {
    let agent = Agent::start_with(
        "bridge-noanswer",
        &extensions("[inbound]\nring = [\"101\"]\nring_secs = 5\n"),
    );
    let _desk = DeskPhone::start(&agent, "101", SECRET_101, false, None, 40);
    let words = speech_wav(
        agent.dir.path(),
        "caller",
        "Hello, I would like a quote for a new boiler please.",
        8000,
        1.0,
        1.0,
    );
    let (mut call, dir) = caller(&agent, &words, 14);
    let db = Db::open(&agent.database());
    let (id, answered, _) = ended_call(&db);
    let _ = call.0.wait();
    assert!(
        std::fs::read_to_string(dir.join("baresip.out"))
            .unwrap()
            .contains("Call established")
    );
    assert!(answered.is_some(), "the agent answered");
    let l = legs(&db, &id);
    assert_eq!(l[0].outcome, "no answer", "{l:?}");
    assert!(
        answered.unwrap() >= l[0].ended - 500,
        "answered after the ring time: {l:?}"
    );
    let t = wait_for(60, "the message", || {
        let t = db.channel_transcript(&id, "caller").to_lowercase();
        (!t.is_empty()).then_some(t)
    });
    assert!(t.contains("boiler"), "{t}");
}

#[test]
fn a_desk_phone_calls_another_and_strangers_cannot_call_out() {
    let agent = Agent::start_with("bridge-internal", &extensions(""));
    // Nobody may call out through the box without authenticating: not a
    // stranger, and not someone presenting an extension's number.
    assert_eq!(
        invite_from([127, 0, 0, 6], &agent, "+447700900123", "07700900123"),
        403
    );
    assert_eq!(
        invite_from([127, 0, 0, 6], &agent, "07700900123", "anyone"),
        403
    );
    assert_eq!(
        invite_from([127, 0, 0, 6], &agent, "+447700900123", "101"),
        407
    );
    let st: serde_json::Value = serde_json::from_str(&ok(&agent, &["status"])).unwrap();
    assert_eq!(st["limits_hit"]["toll_fraud_refused"], 2, "{st}");
    assert_eq!(db_calls(&agent), 0, "refusals leave no call");

    let hello = speech_wav(
        agent.dir.path(),
        "workshop",
        "Good morning, this is the workshop.",
        8000,
        0.5,
        3.0,
    );
    let _workshop = DeskPhone::start(&agent, "102", SECRET_102, true, Some(&hello), 60);
    let words = speech_wav(
        agent.dir.path(),
        "desk",
        "Hello, I would like a quote for a new boiler please.",
        8000,
        0.5,
        6.0,
    );
    let desk = DeskPhone::start_dialling(
        &agent,
        "101",
        SECRET_101,
        false,
        Some(&words),
        Some("102"),
        40,
    );
    let db = Db::open(&agent.database());
    let (id, answered, reason) = ended_call(&db);
    assert!(answered.is_some());
    assert!(reason.contains("hung up"), "{reason}");
    let direction: String =
        db.0.query_row("SELECT direction FROM calls WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(direction, "internal");
    let l = legs(&db, &id);
    assert_eq!(
        (l[0].target.as_str(), l[0].outcome.as_str()),
        ("102", "answered"),
        "{l:?}"
    );
    wait_words(
        &db,
        &id,
        &[("caller", "boiler"), ("callee", "workshop")],
        60,
    );
    drop(desk);
}

fn db_calls(agent: &Agent) -> i64 {
    Db::open(&agent.database())
        .0
        .query_row("SELECT count(*) FROM calls", [], |r| r.get(0))
        .unwrap_or(0)
}

/// Mean square of a mono WAV over [from, to) seconds, and its length.
fn mono_energy(wav: &Path, from: f32, to: f32) -> f64 {
    let mut r = hound::WavReader::open(wav).unwrap();
    let rate = r.spec().sample_rate as f32;
    let ch = r.spec().channels as usize;
    let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    let (a, b) = (
        ((from * rate) as usize * ch).min(s.len()),
        ((to * rate) as usize * ch).min(s.len()),
    );
    s[a..b].iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / (b - a).max(1) as f64
}

#[test]
fn a_phone_puts_the_caller_on_hold_the_caller_hears_the_hold_tone_then_the_phone_again() {
    let agent = Agent::start_with(
        "bridge-hold",
        &extensions("[inbound]\nring = [\"102\"]\nring_secs = 20\n"),
    );
    // The phone is silent throughout: whatever the caller hears is the box's.
    let (_phone, ctrl) = silent_phone_102(&agent);
    // The caller records what it hears (sndfile: dump-*-dec.wav).
    // It hangs up when its file ends (~17 s), which closes its recording.
    let words = speech_wav(agent.dir.path(), "caller", "Hello.", 8000, 0.2, 16.0);
    let (mut call, dir) = caller_with(&agent, &words, 60, "module sndfile.so\nsnd_path {dir}\n");
    wait_for(20, "the call to be bridged", || {
        agent.log().contains("call bridged").then_some(())
    });
    let bridged = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let r = baresip_command(ctrl, "hold", "");
    assert!(!r.is_empty(), "ctrl_tcp answered");
    wait_for(10, "the hold to reach the box", || {
        agent.log().contains("on=true").then_some(())
    });
    let held = bridged.elapsed().as_secs_f32();
    std::thread::sleep(std::time::Duration::from_secs(6));
    baresip_command(ctrl, "resume", "");
    wait_for(10, "the resume to reach the box", || {
        agent.log().contains("on=false").then_some(())
    });
    let resumed = bridged.elapsed().as_secs_f32();
    wait_for(20, "the caller to hang up", || {
        agent.log().contains("bridged call ended").then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = call.0.kill();
    let _ = call.0.wait();
    let heard = files(&dir)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| panic!("no recording of what the caller heard in {}", dir.display()));
    // Before the hold: the silent phone. During it: the hold tone's pips
    // (250 ms of 440 Hz every 4 s). After: silence again.
    let before = mono_energy(&heard, 0.5, held - 0.5);
    let during = mono_energy(&heard, held + 0.5, resumed - 0.5);
    let after = mono_energy(&heard, resumed + 1.0, resumed + 3.5);
    eprintln!("heard: before hold {before:.0}, on hold {during:.0}, after {after:.0}");
    assert!(
        during > 50.0 * before.max(1.0),
        "hold tone: {during:.0} vs {before:.0}"
    );
    assert!(
        during > 50.0 * after.max(1.0),
        "tone stops on resume: {during:.0} vs {after:.0}"
    );
}

#[test]
fn a_phone_transfers_the_caller_to_another_extension_with_refer() {
    let agent = Agent::start_with(
        "bridge-refer",
        &extensions("[inbound]\nring = [\"102\"]\nring_secs = 20\n"),
    );
    let desk_words = speech_wav(
        agent.dir.path(),
        "desk",
        // 102 is silent: these words can only come from 101, after the transfer.
        "Good morning, this is the workshop.",
        8000,
        1.0,
        20.0,
    );
    let (workshop, ctrl) = silent_phone_102(&agent);
    let words = speech_wav(
        agent.dir.path(),
        "caller",
        "Hello, I would like a quote for a new boiler please.",
        8000,
        0.5,
        16.0,
    );
    let (mut call, _) = caller(&agent, &words, 60);
    wait_for(20, "the call to be bridged", || {
        agent.log().contains("call bridged").then_some(())
    });
    let to_101 = format!("sip:101@127.0.0.1:{}", agent.port);
    let _desk = DeskPhone::start(&agent, "101", SECRET_101, true, Some(&desk_words), 60);
    let r = baresip_command(ctrl, "transfer", &to_101);
    assert!(!r.is_empty(), "ctrl_tcp answered");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !agent.log().contains("call transferred") {
        assert!(
            std::time::Instant::now() < deadline,
            "no transfer; ctrl said {r:?}\nagent:\n{}\n102:\n{}",
            agent.log(),
            workshop.output()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let db = Db::open(&agent.database());
    let (id, answered, reason) = ended_call(&db);
    let _ = call.0.wait();
    assert!(answered.is_some());
    assert_eq!(reason, "caller hung up");
    let l = legs(&db, &id);
    let outcomes: Vec<(&str, &str)> = l
        .iter()
        .map(|x| (x.target.as_str(), x.outcome.as_str()))
        .collect();
    assert!(outcomes.contains(&("102", "transferred")), "{l:?}");
    assert!(outcomes.contains(&("101", "answered")), "{l:?}");
    // The transferring phone was told (NOTIFY 200) and hung up.
    let w = workshop.output().to_lowercase();
    assert!(w.contains("transfer") || w.contains("refer"), "102:\n{w}");
    wait_words(&db, &id, &[("callee", "workshop")], 60);
}

#[test]
fn a_transfer_that_fails_is_reported_to_the_phone_and_the_caller_stays() {
    let agent = Agent::start_with(
        "bridge-refer-fails",
        &extensions("[inbound]\nring = [\"102\"]\nring_secs = 20\n"),
    );
    let (workshop, ctrl) = silent_phone_102(&agent);
    let words = speech_wav(agent.dir.path(), "caller", "Hello.", 8000, 0.5, 20.0);
    let (_call, _) = caller(&agent, &words, 60);
    wait_for(20, "the call to be bridged", || {
        agent.log().contains("call bridged").then_some(())
    });
    // 101 has no phone registered: the transfer fails with 480.
    baresip_command(
        ctrl,
        "transfer",
        &format!("sip:101@127.0.0.1:{}", agent.port),
    );
    wait_for(10, "the phone to be told", || {
        workshop
            .output()
            .contains("transfer failed: 480")
            .then_some(())
    });
    assert!(
        agent
            .log()
            .contains("blind transfer failed; the caller stays")
    );
    // The box kept the caller bridged; this baresip hangs up on a failed
    // transfer, which ends the call as the phone's hang-up.
    let db = Db::open(&agent.database());
    let (_, _, reason) = ended_call(&db);
    assert_eq!(reason, "answering phone hung up");
}

/// Phone 102: answers by itself, says nothing, and takes commands over
/// baresip's ctrl_tcp on the port returned.
fn silent_phone_102(agent: &Agent) -> (DeskPhone, u16) {
    let quiet = speech_wav(agent.dir.path(), "quiet", ".", 8000, 0.0, 25.0);
    let ctrl = free_port();
    let phone = DeskPhone::start_with(
        agent,
        "102",
        SECRET_102,
        true,
        Some(&quiet),
        None,
        60,
        &format!("module_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl}\n"),
    );
    (phone, ctrl)
}

#[test]
fn keys_pressed_on_one_phone_reach_the_other_across_the_bridge() {
    // RTP ports of its own: the sniffer sees only this call.
    let rtp = 33000..=33499u16;
    let agent = Agent::start_with(
        "bridge-dtmf",
        &extensions("[media]\nrtp_port_min = 33000\nrtp_port_max = 33499\n"),
    );
    let mut sniffer = Sniffer::start(rtp.clone());
    let quiet = speech_wav(agent.dir.path(), "quiet", ".", 8000, 0.0, 20.0);
    let _other = DeskPhone::start(&agent, "102", SECRET_102, true, Some(&quiet), 60);
    let ctrl = free_port();
    let _desk = DeskPhone::start_with(
        &agent,
        "101",
        SECRET_101,
        false,
        Some(&quiet),
        Some("102"),
        40,
        &format!("module_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl}\n"),
    );
    wait_for(20, "the call to be bridged", || {
        agent.log().contains("call bridged").then_some(())
    });
    // An IVR's "press 1, then 2, then 9" from the desk phone (RFC 4733).
    for key in ["1", "2", "9"] {
        assert!(!baresip_command(ctrl, "sndcode", key).is_empty());
        std::thread::sleep(std::time::Duration::from_millis(400));
    }
    let db = Db::open(&agent.database());
    wait_for(10, "the keys stored on the caller's channel", || {
        let n: i64 =
            db.0.query_row(
                "SELECT count(*) FROM call_events WHERE kind = 'dtmf'",
                [],
                |r| r.get(0),
            )
            .ok()?;
        (n == 3).then_some(())
    });
    // The telephone-events the box sent out of its RTP ports, to 102: the
    // three keys, each ended (E bit), on the other leg's stream.
    let seen = sniffer.stop();
    let sent: Vec<&Datagram> = seen
        .iter()
        .filter(|d| rtp.contains(&d.src) && !rtp.contains(&d.dst) && d.payload_type() == 101)
        .collect();
    let ended: Vec<u8> = sent
        .iter()
        .filter(|d| d.rtp.len() >= 16 && d.rtp[13] & 0x80 != 0)
        .map(|d| d.rtp[12])
        .collect();
    let mut keys = ended.clone();
    keys.dedup();
    assert_eq!(keys, vec![1, 2, 9], "events relayed to 102: {ended:?}");
    let received_from_101 = seen
        .iter()
        .filter(|d| rtp.contains(&d.dst) && d.payload_type() == 101)
        .count();
    assert!(received_from_101 > 0 && sent.len() >= received_from_101 / 2);
}

#[test]
fn a_caller_switching_codec_by_re_invite_is_followed_and_still_heard() {
    let agent = Agent::start_with(
        "bridge-codec-switch",
        &extensions("[inbound]\nring = [\"102\"]\nring_secs = 20\n"),
    );
    let quiet = speech_wav(agent.dir.path(), "quiet", ".", 8000, 0.0, 25.0);
    let _phone = DeskPhone::start(&agent, "102", SECRET_102, true, Some(&quiet), 60);
    // The caller's words before the switch (PCMU) and after it (PCMA).
    let net = agent.dir.path().join("sipp-caller");
    std::fs::create_dir_all(&net).unwrap();
    for (name, text, enc) in [
        (
            "before.ul",
            "Hello, I would like a quote for a new boiler please.",
            "mu-law",
        ),
        ("after.al", "Good morning, this is the workshop.", "a-law"),
    ] {
        let wav = speech_wav(agent.dir.path(), name, text, 8000, 0.3, 0.5);
        let ok = Command::new("sox")
            .arg(&wav)
            .args(["-r", "8000", "-c", "1", "-e", enc, "-t", "raw"])
            .arg(net.join(name))
            .status()
            .expect("sox");
        assert!(ok.success());
    }
    let out = Command::new("sipp")
        .arg("-sf")
        .arg(repo().join("tests/sipp/uac_codec_switch.xml"))
        .args(["-s", "handlet", "-i", "127.0.0.1"])
        .args(["-p", &free_port().to_string()])
        .args(["-mi", "127.0.0.1", "-mp", &free_port().to_string()])
        .args(["-m", "1", "-nostdin", "-timeout", "60", "-timeout_error"])
        .arg(format!("127.0.0.1:{}", agent.port))
        .current_dir(&net)
        .output()
        .expect("sipp (package sip-tester)");
    assert!(
        out.status.success(),
        "sipp: the switch answered with PCMA and the call ended cleanly\n{}{}\nagent:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    assert!(
        agent.log().contains("a party switched codec"),
        "{}",
        agent.log()
    );
    let db = Db::open(&agent.database());
    let id: String = wait_for(30, "the call to end", || {
        db.0.query_row(
            "SELECT id FROM calls WHERE ended_at_ms IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .ok()
    });
    // Heard in both codecs: words from before and after the switch.
    wait_words(
        &db,
        &id,
        &[("caller", "boiler"), ("caller", "workshop")],
        60,
    );
}
