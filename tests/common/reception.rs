//! A caller's side of a receptionist conversation, for the tests that
//! call the box with baresip and read back what it kept.

use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A caller's side of a conversation at 8 kHz: each line said after
/// `gap` seconds of silence (the first after `lead`).
pub fn caller_wav(dir: &Path, name: &str, lines: &[&str], lead: f32, gap: f32) -> PathBuf {
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

pub fn secs_of(wav: &Path) -> f64 {
    let r = hound::WavReader::open(wav).unwrap();
    r.duration() as f64 / r.spec().sample_rate as f64
}

/// baresip as `user` calls the agent, playing `wav`; returns its log and
/// the file it recorded of what the box said.
pub fn baresip_call(agent: &Agent, user: &str, wav: &Path, name: &str) -> (String, PathBuf) {
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
pub fn ended_call(db: &Db) -> String {
    wait_for(60, "the call to end", || {
        db.calls()
            .into_iter()
            .find(|c| c.ended.is_some())
            .map(|c| c.id)
    })
}
