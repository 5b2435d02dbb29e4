//! `handlet transcribe` on real recorded speech (jfk.wav from the npm package
//! nodejs-whisper@0.3.1, fetched and pinned by scripts/fixtures.sh).

mod common;
use common::*;
use std::process::Command;

const JFK: &str = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";

fn jfk() -> std::path::PathBuf {
    let p = repo().join(".fixtures/jfk.wav");
    assert!(
        p.is_file(),
        "fixture missing: run scripts/fixtures.sh (make test does)"
    );
    p
}

fn transcribe(file: &std::path::Path) -> (String, String) {
    let out = Command::new(bin())
        .current_dir(repo())
        .args(["transcribe"])
        .arg(file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout
        .lines()
        .filter_map(|l| l.split_once("] ").map(|(_, t)| t))
        .collect::<Vec<_>>()
        .join(" ");
    (stdout, text)
}

#[test]
fn jfk_is_transcribed_with_low_word_error_rate() {
    let (stdout, text) = transcribe(&jfk());
    let w = wer(JFK, &text);
    println!("jfk.wav (16 kHz) WER = {:.1}%: {text}", w * 100.0);
    // tiny.en gets this sentence word-perfect here; allow one slip in 22 words.
    assert!(w <= 0.05, "WER {w:.3}: {stdout}");
    // Timed segments, in order, inside the 11 s clip.
    assert!(stdout.starts_with("[0:00."), "{stdout}");
    assert!(
        stdout.contains("0:11.") || stdout.contains("0:10."),
        "{stdout}"
    );
}

#[test]
fn any_sample_rate_and_channel_count_is_accepted() {
    // The same speech as 8 kHz μ-law-band stereo 44.1 kHz: resampled on the way in.
    let dir = TempDir::new("rates");
    for (rate, ch) in [(8000, 1), (44100, 2)] {
        let out = dir.path().join(format!("jfk-{rate}-{ch}.wav"));
        let ok = Command::new("sox")
            .arg(jfk())
            .args(["-r", &rate.to_string(), "-c", &ch.to_string(), "-b", "16"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(ok.success());
        let (_, text) = transcribe(&out);
        let w = wer(JFK, &text);
        println!("jfk.wav at {rate} Hz, {ch} ch: WER = {:.1}%", w * 100.0);
        assert!(w <= 0.15, "{rate} Hz: WER {w:.3}: {text}");
    }
}

#[test]
fn not_a_wav_is_one_clear_error() {
    let dir = TempDir::new("notwav");
    let p = dir.path().join("x.wav");
    std::fs::write(&p, b"this is not audio").unwrap();
    let out = Command::new(bin())
        .current_dir(repo())
        .args(["transcribe"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("handlet: error:") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
