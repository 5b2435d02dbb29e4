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
fn whisper_base_is_chosen_by_config_and_hears_as_well() {
    let dir = TempDir::new("transcribe-base");
    let cfg = dir.path().join("base.toml");
    std::fs::write(&cfg, "[transcription]\nmodel = \"base\"\n").unwrap();
    let out = Command::new(bin())
        .current_dir(repo())
        .args(["transcribe", "--config"])
        .arg(&cfg)
        .arg(jfk())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let text: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once("] ").map(|(_, t)| t))
        .collect();
    let w = wer(JFK, &text.join(" "));
    assert!(w <= 0.05, "base WER {w:.3}: {stdout}");
    // A model name the agent does not have is refused, naming the choices.
    std::fs::write(&cfg, "[transcription]\nmodel = \"large\"\n").unwrap();
    let out = Command::new(bin())
        .current_dir(repo())
        .args(["transcribe", "--config"])
        .arg(&cfg)
        .arg(jfk())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        stderr.contains("tiny.en") && stderr.contains("base"),
        "{stderr}"
    );
}

#[test]
fn any_sample_rate_and_channel_count_is_accepted() {
    // The same speech as 8 kHz μ-law-band stereo 44.1 kHz: resampled on the way in.
    let dir = TempDir::new("rates");
    // And as an 8 kHz A-law WAV, the way a phone system stores it.
    for (rate, ch, enc) in [
        (8000, 1, "signed"),
        (44100, 2, "signed"),
        (8000, 1, "a-law"),
    ] {
        let out = dir.path().join(format!("jfk-{rate}-{ch}-{enc}.wav"));
        let bits = if enc == "a-law" { "8" } else { "16" };
        let ok = Command::new("sox")
            .arg(jfk())
            .args([
                "-r",
                &rate.to_string(),
                "-c",
                &ch.to_string(),
                "-e",
                enc,
                "-b",
                bits,
            ])
            .arg(&out)
            .status()
            .unwrap();
        assert!(ok.success());
        let (_, text) = transcribe(&out);
        let w = wer(JFK, &text);
        println!(
            "jfk.wav at {rate} Hz, {ch} ch, {enc}: WER = {:.1}%",
            w * 100.0
        );
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

#[test]
fn transcribe_with_summary_prints_intent_entities_and_follow_up() {
    let dir = TempDir::new("summary");
    let wav = speech_wav(
        dir.path(),
        "quote",
        "Hello, my name is Sarah Jones. How much would it cost to fit a new bathroom? Could someone come round on Friday afternoon?",
        16000,
        0.3,
        0.5,
    );
    let out = Command::new(bin())
        .current_dir(repo())
        .arg("transcribe")
        .arg(&wav)
        .arg("--summary")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name:?} line in:\n{stdout}"))
            .to_string()
    };
    assert!(field("intent").starts_with("quote "), "{stdout}");
    assert_eq!(field("caller name"), "Sarah Jones", "{stdout}");
    assert!(field("requested time").starts_with("Friday"), "{stdout}");
    assert!(field("requested time").ends_with("afternoon"), "{stdout}");
    assert!(
        field("follow-up").contains("quote for Sarah Jones"),
        "{stdout}"
    );
    assert!(
        field("summary").starts_with("Sarah Jones called about a quote"),
        "{stdout}"
    );
}

fn sox(args: &[&str]) {
    assert!(
        Command::new("sox").args(args).status().unwrap().success(),
        "sox {args:?}"
    );
}

/// Silence, noise and hold-music tones: whisper must not invent text.
#[test]
fn silence_noise_and_tones_give_no_text() {
    let dir = TempDir::new("nonspeech");
    let d = |n: &str| dir.path().join(n).display().to_string();
    // sox -n: generate `effects` into a 16-bit mono file at `rate`.
    let synth = |rate: &str, out: &str, effects: &[&str]| {
        let mut args = vec!["-n", "-r", rate, "-c", "1", "-b", "16", out];
        args.extend_from_slice(effects);
        sox(&args);
    };
    synth("16000", &d("silence.wav"), &["trim", "0", "6"]);
    synth(
        "16000",
        &d("white.wav"),
        &["synth", "6", "whitenoise", "vol", "0.2"],
    );
    synth(
        "8000",
        &d("pink.wav"),
        &["synth", "6", "pinknoise", "vol", "0.4"],
    );
    // Hold music: a little tune of pure tones and a chord.
    let mut parts = Vec::new();
    for (i, f) in ["440", "523", "659", "587", "494"].iter().enumerate() {
        parts.push(d(&format!("n{i}.wav")));
        synth(
            "8000",
            &parts[i],
            &["synth", "1.2", "sine", f, "vol", "0.4"],
        );
    }
    parts.push(d("n5.wav"));
    synth(
        "8000",
        &parts[5],
        &[
            "synth", "2", "sine", "262", "sine", "330", "remix", "-", "vol", "0.4",
        ],
    );
    parts.push(d("music.wav"));
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    sox(&refs);
    for f in ["silence.wav", "white.wav", "pink.wav", "music.wav"] {
        let (stdout, text) = transcribe(&dir.path().join(f));
        assert!(text.trim().is_empty(), "{f} gave text: {stdout}");
    }
}

/// Phone audio: the same sentences at 16 kHz PCM and through 8 kHz μ-law.
/// Prints the word error rate of each; asserts the phone path stays usable.
#[test]
fn phone_audio_word_error_rate_against_wideband() {
    let dir = TempDir::new("mulaw");
    let sentences = [
        "Hi, I'd like a quote for fixing a leaking boiler, can you call me back",
        "My name is Sarah Jones and my kitchen tap has been dripping all week",
        "There is water pouring through the ceiling, please send someone now",
        "I need to cancel my booking for tomorrow morning, something came up",
    ];
    let mut totals = [0.0f64; 2];
    for (i, s) in sentences.iter().enumerate() {
        let wide = speech_wav(dir.path(), &format!("w{i}"), s, 16000, 0.3, 0.5);
        // Through G.711 μ-law at 8 kHz, kept as a μ-law WAV (format 7, as
        // phone systems export calls and voicemail): read as it is.
        let ulaw = dir.path().join(format!("u{i}.wav"));
        sox(&[
            &wide.display().to_string(),
            "-r",
            "8000",
            "-e",
            "u-law",
            &ulaw.display().to_string(),
        ]);
        for (k, f) in [&wide, &ulaw].iter().enumerate() {
            let (_, text) = transcribe(f);
            let e = wer(s, &text);
            eprintln!(
                "{} WER {:.1}%: {text}",
                ["16k PCM ", "8k u-law"][k],
                e * 100.0
            );
            totals[k] += e;
        }
    }
    let n = sentences.len() as f64;
    eprintln!(
        "mean WER: 16 kHz PCM {:.1}%, 8 kHz u-law {:.1}%",
        totals[0] / n * 100.0,
        totals[1] / n * 100.0
    );
    assert!(totals[0] / n <= 0.20, "wideband WER {:.3}", totals[0] / n);
    assert!(totals[1] / n <= 0.25, "phone WER {:.3}", totals[1] / n);
}
