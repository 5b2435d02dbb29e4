//! A caller who gives up while the phone the receptionist put them
//! through to is still ringing: the call's media figures (packets, loss,
//! jitter of the leg that ran the conversation and the ringback) are kept.
//! Alone in its file so it does not share the 2 cores with the other
//! receptionist calls.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A caller's side of a conversation at 8 kHz: each line said after
/// `gap` seconds of silence (the first after `lead`).
fn caller_wav(dir: &Path, name: &str, lines: &[&str], lead: f32, gap: f32) -> PathBuf {
    let out = dir.join(format!("{name}.wav"));
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&out, spec).unwrap();
    for (i, line) in lines.iter().enumerate() {
        let pause = if i == 0 { lead } else { gap };
        for _ in 0..(pause * 8000.0) as usize {
            w.write_sample(0i16).unwrap();
        }
        let part = speech_wav(dir, &format!("{name}-{i}"), line, 8000, 0.0, 0.0);
        let mut r = hound::WavReader::open(&part).unwrap();
        for s in r.samples::<i16>() {
            w.write_sample(s.unwrap()).unwrap();
        }
    }
    // The box's goodbye is heard before the file (and the call) ends.
    for _ in 0..(gap * 2.0 * 8000.0) as usize {
        w.write_sample(0i16).unwrap();
    }
    w.finalize().unwrap();
    out
}

fn secs_of(wav: &Path) -> f64 {
    let r = hound::WavReader::open(wav).unwrap();
    r.duration() as f64 / r.spec().sample_rate as f64
}

/// baresip as `user` calls the agent, playing `wav`; returns its log and
/// the file it recorded of what the box said.
fn baresip_call(agent: &Agent, user: &str, wav: &Path, name: &str) -> (String, PathBuf) {
    let quit_after = (secs_of(wav).ceil() as u64 + 8).to_string();
    let cfg_dir = agent.dir.path().join(format!("baresip-{name}"));
    std::fs::create_dir_all(&cfg_dir).unwrap();
    std::fs::write(
        cfg_dir.join("config"),
        format!(
            "poll_method epoll\nsip_listen 127.0.0.1:0\nnet_interface 127.0.0.1\n\
             audio_source aufile,{wav}\naudio_alert aufile,/dev/null\nsnd_path {heard}\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\nmodule sndfile.so\nmodule_app account.so\nmodule_app menu.so\n",
            heard = cfg_dir.display(),
            wav = wav.display()
        ),
    )
    .unwrap();
    std::fs::write(
        cfg_dir.join("accounts"),
        format!("<sip:{user}@127.0.0.1>;regint=0;audio_codecs=PCMU\n"),
    )
    .unwrap();
    let out = Command::new("timeout")
        .args(["150", "baresip", "-f"])
        .arg(&cfg_dir)
        .args(["-e", &format!("/dial {}", agent.uri()), "-t", &quit_after])
        .output()
        .expect("baresip is installed (make test installs it)");
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let heard = std::fs::read_dir(&cfg_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| panic!("baresip recorded nothing:\n{log}"));
    (log, heard)
}

/// The id of the first call to have ended (waiting for it).
fn ended_call(db: &Db) -> String {
    wait_for(60, "the call to end", || {
        db.calls()
            .into_iter()
            .find(|c| c.ended.is_some())
            .map(|c| c.id)
    })
}

#[test]
fn a_caller_who_leaves_while_the_phone_rings_keeps_the_calls_media_figures() {
    let agent = Agent::start_with(
        "reception-leaves",
        r#"[[extension]]
number = "201"
secret = "oncall-201-secret"

[routing]
closed = "receptionist"

[[routing.group]]
name = "oncall"
members = ["201"]
ring_secs = 40
no_answer = "message"

[routing.intents]
emergency = { open = "oncall", closed = "oncall" }

[receptionist]
business = "Smith Plumbing"
"#,
    );
    let (ok, out, err) = handlet(&agent, &["route", "override", "closed"]);
    assert!(ok, "{out}{err}");
    // Registered, never answers: the caller gives up while it rings.
    let phone = DeskPhone::start(&agent, "201", "oncall-201-secret", false, None, 90);
    let wav = caller_wav(
        agent.dir.path(),
        "impatient-caller",
        &["Help, my boiler is leaking water all over the kitchen floor."],
        7.0,
        6.0,
    );
    let (log, _heard) = baresip_call(&agent, "tester", &wav, "leaves");
    assert!(log.contains("Call established"), "baresip:\n{log}");
    let db = Db::open(&agent.database());
    let id = ended_call(&db);
    let ctx = || {
        format!(
            "box said: {}\ncaller: {}\nlog:\n{}\nphone:\n{}",
            db.channel_transcript(&id, "agent"),
            db.channel_transcript(&id, "caller"),
            agent.log(),
            phone.output()
        )
    };
    // It rang and nobody answered before the caller left.
    let legs = || -> Vec<(String, Option<i64>)> {
        db.0.prepare("SELECT target, answered_at_ms FROM call_legs WHERE call_id = ?1")
            .unwrap()
            .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while legs().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let legs = legs();
    assert_eq!(legs.len(), 1, "{legs:?}\n{}", ctx());
    assert!(legs[0].1.is_none(), "{legs:?}");
    // The caller's leg ran through the conversation and the ringing: its
    // packets, loss and jitter are stored for the call.
    let packets: i64 = wait_for(30, "the call's media figures", || {
        db.0.query_row(
            "SELECT packets FROM call_media WHERE call_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .ok()
    });
    // 50 packets a second for the 7 s before the caller spoke at least.
    assert!(packets > 350, "{packets} packets\n{}", ctx());
    wait_for(60, "the transcript", || {
        db.calls()
            .into_iter()
            .find(|c| c.id == id && c.complete)
            .map(|_| ())
    });
}
