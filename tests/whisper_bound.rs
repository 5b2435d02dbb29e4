//! Whisper decodes no more than its audio can hold (issue 14, point 7): the
//! tokens decoded are bounded by the audio's length, so a greedy loop on a
//! short utterance ("five, five" → "5, 5, 5, ..." to the 30 s window's end)
//! stops early, its segment is timed inside the audio, and the repetition
//! that was said survives the loop guard; longer speech is not cut.
//!
//! Real tiny.en weights, speech made at test time by espeak-ng and `sox -R`
//! (repeatable audio), phone legs at 8 kHz μ-law read back through the
//! agent's own resampler. Compute times are printed, not asserted.

mod common;
use common::*;
use handlet_models::stt::{Options, SAMPLE_RATE, SttWorker, Transcript};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// `text` spoken by espeak-ng at `wpm` words a minute, as 16 kHz samples:
/// through an 8 kHz μ-law phone leg when `phone`, else straight 16 kHz.
fn speech(dir: &Path, name: &str, text: &str, wpm: u32, phone: bool) -> Vec<f32> {
    let raw = dir.join(format!("{name}-raw.wav"));
    let out = dir.join(format!("{name}.wav"));
    let ok = Command::new("espeak-ng")
        .args(["-s", &wpm.to_string(), "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .expect("espeak-ng is installed (make test installs it)");
    assert!(ok.success());
    let format: &[&str] = if phone {
        &["-r", "8000", "-c", "1", "-e", "u-law"]
    } else {
        &["-r", "16000", "-c", "1", "-b", "16"]
    };
    // -R: no random dither, the same bytes every run.
    let ok = Command::new("sox")
        .arg("-R")
        .arg(&raw)
        .args(format)
        .arg(&out)
        .status()
        .expect("sox is installed (make test installs it)");
    assert!(ok.success());
    handlet_dsp::wav::read_16k(&out).unwrap().samples
}

fn worker() -> SttWorker {
    let paths = handlet_models::manifest::ModelPaths::verify(&models_dir()).unwrap();
    let stt = handlet_models::stt::Stt::load(&paths.whisper).unwrap();
    let mut w = stt.worker().unwrap();
    // The first decode of a state is slower; keep it out of the figures.
    w.transcribe(&vec![0.0; SAMPLE_RATE as usize * 2]).unwrap();
    w
}

/// Transcribe with the given token bound (None: by the audio's length, as
/// the agent does; Some(0): unbounded); the result and its compute time.
fn run(w: &mut SttWorker, samples: &[f32], max_tokens: Option<usize>) -> (Transcript, f64) {
    let t = Instant::now();
    let tr = w
        .transcribe_detailed(samples, Options::default(), max_tokens)
        .unwrap();
    (tr, t.elapsed().as_secs_f64())
}

fn text(tr: &Transcript) -> String {
    tr.segments
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Words, with whisper's digits spelled out ("5" → "five").
fn spoken(s: &str) -> Vec<String> {
    const DIGITS: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    words(s)
        .into_iter()
        .flat_map(|w| {
            if w.chars().all(|c| c.is_ascii_digit()) {
                w.chars()
                    .map(|c| DIGITS[c.to_digit(10).unwrap() as usize].to_string())
                    .collect()
            } else {
                vec![w]
            }
        })
        .collect()
}

fn secs(samples: &[f32]) -> f32 {
    samples.len() as f32 / SAMPLE_RATE as f32
}

/// Fast speech is ~4 words a second at ~1.3 tokens a word plus punctuation
/// and timestamps, about 6.5 tokens a second; whisper may decode 8 a second
/// of audio (at least the 1.1 s it pads short audio to) and 16 more, plus
/// the initial timestamp.
fn token_limit(samples: &[f32]) -> usize {
    (8.0 * secs(samples).max(1.1)).ceil() as usize + 16 + 1
}

/// Every decoded segment lies inside the audio, in order.
fn assert_timed_inside(tr: &Transcript, samples: &[f32], what: &str) {
    let audio_ms = (secs(samples) * 1000.0).ceil() as u64;
    let mut last = 0;
    for s in &tr.decoded {
        assert!(
            s.start_ms >= last && s.start_ms <= s.end_ms && s.end_ms <= audio_ms,
            "{what}: segment {s:?} not inside the {audio_ms} ms of audio: {:?}",
            tr.decoded
        );
        last = s.end_ms;
    }
}

#[test]
fn short_repetitions_are_decoded_within_their_audio_and_keep_both_words() {
    let mut w = worker();
    let dir = TempDir::new("whisper-bound-short");
    // Each of these sent tiny.en greedy into a loop to its 220-token cap
    // ("5, 5, 5, ...", "No No No ...") before the bound, except the second,
    // a control that decodes cleanly either way.
    let cases = [
        ("five, five", 175, true, "five five"),
        ("five five", 130, false, "five five"),
        ("no no", 175, false, "no no"),
        ("two two", 175, false, "two two"),
    ];
    for (i, (say, wpm, phone, want)) in cases.into_iter().enumerate() {
        let samples = speech(dir.path(), &format!("s{i}"), say, wpm, phone);
        let what = format!("{say:?} at {wpm} wpm{}", if phone { ", phone" } else { "" });
        let (free, free_s) = run(&mut w, &samples, Some(0));
        let (tr, tr_s) = run(&mut w, &samples, None);
        eprintln!(
            "{what}, {:.2} s of audio:\n  unbounded {:.3} s, {} tokens, {:?} -> {:?}\n  bounded   {:.3} s, {} tokens (bound {}), {:?} -> {:?}",
            secs(&samples),
            free_s,
            free.tokens,
            free.decoded,
            text(&free),
            tr_s,
            tr.tokens,
            tr.max_tokens,
            tr.decoded,
            text(&tr),
        );
        assert!(
            tr.tokens <= token_limit(&samples),
            "{what}: {} tokens decoded for {:.2} s of audio (limit {}): {:?}",
            tr.tokens,
            secs(&samples),
            token_limit(&samples),
            tr.decoded
        );
        assert!(tr.text_tokens <= tr.max_tokens, "{what}: {tr:?}");
        assert!(
            (1..=2).contains(&tr.decoded.len()),
            "{what}: a short utterance is one or two segments: {:?}",
            tr.decoded
        );
        assert_timed_inside(&tr, &samples, &what);
        assert_eq!(spoken(&text(&tr)), words(want), "{what}: {:?}", tr.decoded);
    }
}

#[test]
fn longer_speech_is_not_cut_by_the_bound() {
    let mut w = worker();
    let dir = TempDir::new("whisper-bound-long");
    let mut cases: Vec<(String, Vec<f32>)> = [
        (
            "Hello, this is Margaret Thompson calling from forty two Willow Crescent, my boiler \
             stopped working last night and there is water leaking all over the kitchen floor, \
             could somebody please come round tomorrow morning before ten o'clock",
            175,
            true,
        ),
        (
            "Hi, it's Dave from number seventeen, the radiator in the upstairs bathroom is cold \
             again and the thermostat keeps clicking, can you send someone this week, any day \
             except Thursday is fine",
            175,
            true,
        ),
        // Fast: 240 words a minute, four words a second.
        (
            "Yes, I need a quote for a new kitchen, the whole thing, cupboards, worktops, sink \
             and taps, and maybe the tiles as well if you do that kind of work, thanks very \
             much, bye",
            240,
            false,
        ),
        (
            "four four seven seven, three two one, eight eight nine zero, six five five five",
            240,
            false,
        ),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (say, wpm, phone))| {
        let what = format!(
            "{}... at {wpm} wpm{}",
            &say[..24],
            if phone { ", phone" } else { "" }
        );
        (what, speech(dir.path(), &format!("l{i}"), say, wpm, phone))
    })
    .collect();
    // Real recorded speech too (scripts/fixtures.sh fetches it).
    let jfk = repo().join(".fixtures/jfk.wav");
    assert!(
        jfk.is_file(),
        "fixture missing: run scripts/fixtures.sh (make test does)"
    );
    cases.push((
        "jfk.wav".into(),
        handlet_dsp::wav::read_16k(&jfk).unwrap().samples,
    ));
    for (what, samples) in &cases {
        let (free, free_s) = run(&mut w, samples, Some(0));
        let (tr, tr_s) = run(&mut w, samples, None);
        eprintln!(
            "{what}, {:.2} s of audio:\n  unbounded {:.3} s, {} tokens: {:?}\n  bounded   {:.3} s, {} tokens (bound {}): {:?}",
            secs(samples),
            free_s,
            free.tokens,
            text(&free),
            tr_s,
            tr.tokens,
            tr.max_tokens,
            text(&tr),
        );
        assert!(!tr.segments.is_empty(), "{what}: nothing heard");
        // The bound changed nothing: same segments, same words.
        assert_eq!(tr.segments, free.segments, "{what}");
        assert!(
            tr.tokens <= token_limit(samples),
            "{what}: {} tokens for {:.2} s",
            tr.tokens,
            secs(samples)
        );
        assert_timed_inside(&tr, samples, what);
    }
}
