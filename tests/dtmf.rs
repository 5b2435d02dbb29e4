//! Keys pressed by the caller reach the call's record, whether the phone
//! sends RFC 4733 telephone-events or tones in the audio; speech is never
//! mistaken for keys.

mod common;
use common::*;
use std::process::Command;

fn call(agent: &Agent, wav: &std::path::Path, digits: &str) {
    let out = Command::new(bin())
        .args(["call", "--config"])
        .arg(&agent.config)
        .arg("--wav")
        .arg(wav)
        .args(["--digits", digits, "--wait", "90"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn dtmf_events(agent: &Agent) -> Vec<String> {
    let db = Db::open(&agent.database());
    let mut st =
        db.0.prepare("SELECT detail FROM call_events WHERE kind = 'dtmf' ORDER BY at_ms, id")
            .unwrap();
    st.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn rfc4733_keys_are_recorded_in_order() {
    let agent = Agent::start("dtmf-4733");
    let wav = speech_wav(
        agent.dir.path(),
        "press",
        "Press one two hash",
        8000,
        0.2,
        0.3,
    );
    call(&agent, &wav, "12#");
    assert_eq!(
        dtmf_events(&agent),
        vec!["1 (rfc4733)", "2 (rfc4733)", "# (rfc4733)"]
    );
}

#[test]
fn in_band_tones_are_recorded_and_speech_is_not_a_key() {
    let agent = Agent::start("dtmf-inband");
    // Keys 4, 7, 0 as sox-made dual tones (120 ms, 100 ms apart) in the caller's audio.
    let tones = agent.dir.path().join("tones.wav");
    let keys = [('4', 770, 1209), ('7', 852, 1209), ('0', 941, 1336)];
    let mut parts = Vec::new();
    for (k, row, col) in keys {
        let p = agent.dir.path().join(format!("key{k}.wav"));
        let ok = Command::new("sox")
            .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
            .arg(&p)
            .args([
                "synth",
                "0.12",
                "sin",
                &row.to_string(),
                "sin",
                &col.to_string(),
                "remix",
                "-",
                "gain",
                "-n",
                "-6",
                "pad",
                "0",
                "0.1",
            ])
            .status()
            .unwrap();
        assert!(ok.success());
        parts.push(p);
    }
    let ok = Command::new("sox")
        .args(&parts)
        .arg(&tones)
        .status()
        .unwrap();
    assert!(ok.success());
    call(&agent, &tones, "");
    assert_eq!(
        dtmf_events(&agent),
        vec!["4 (in-band)", "7 (in-band)", "0 (in-band)"]
    );

    // Real speech (jfk.wav at 8 kHz) and espeak speech give no keys.
    let jfk8k = agent.dir.path().join("jfk8k.wav");
    let ok = Command::new("sox")
        .arg(repo().join(".fixtures/jfk.wav"))
        .args(["-r", "8000"])
        .arg(&jfk8k)
        .status()
        .unwrap();
    assert!(ok.success());
    call(&agent, &jfk8k, "");
    let speech = speech_wav(
        agent.dir.path(),
        "speech",
        "Nine four seven, my number is oh one two three, thank you",
        8000,
        0.2,
        0.3,
    );
    call(&agent, &speech, "");
    assert_eq!(
        dtmf_events(&agent).len(),
        3,
        "speech was taken for keys: {:?}",
        dtmf_events(&agent)
    );
}
