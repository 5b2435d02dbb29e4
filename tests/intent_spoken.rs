//! Intent on *spoken* callers, through the phone path (issue 14, point 7).
//!
//! The frozen held-out set `tests/data/intent_spoken_set.tsv` (275 caller
//! sentences, 50 of them emergencies, written before any tuning) is spoken
//! by five voices (Piper at three pitches and speeds, two of flite's),
//! band-limited like a phone line,
//! given line noise and a level from a seeded generator (two seeds, so the
//! figure is not one lucky dither), encoded to 8 kHz μ-law with the agent's
//! own G.711, decoded and resampled to 16 kHz as a call leg does, then run
//! through the agent's transcription core (energy gate, Silero VAD, the
//! end-pointer, whisper with the agent's options) and classified by the
//! agent's `Understanding::hear`, as the receptionist hears a turn; how
//! many turns it would act on (confidence at or above `unsure_below`) and
//! how many of those are wrong is printed too.
//!
//! Prints the confusion table, every miss with what whisper heard, accuracy
//! per voice and seed, and the classifier's accuracy on the written lines
//! (to tell what speech-to-text loses from what the classifier gets wrong).
//! The issue's bar is ≥ 90 % overall and ≥ 95 % recall for emergency; it is
//! not reached yet, and the test holds floors under what was measured.

mod common;
use common::*;
use handlet_agent::config::Config;
use handlet_agent::transcribe::core::{Output, Transcriber};
use handlet_agent::understand::Understanding;
use handlet_dsp::gate::Gate;
use handlet_dsp::resample::Resampler;
use handlet_models::intent::UNKNOWN;
use handlet_models::manifest::ModelPaths;
use handlet_models::stt::{Options, SttWorker};
use handlet_models::tts::{Scales, Voice};
use handlet_models::vad::{FRAME, Vad};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// A caller's voice: two engines, US and Scottish accents, three pitches
/// and speeds of the neural voice, so the figure is not one voice's quirks.
///
/// espeak-ng's own voice and flite's `slt` were tried and left out: whisper
/// tiny.en hears them at 50 % and 31 % word error on this line (the Piper
/// voice 11 %, flite `rms` 21 %, `awb` 23 %), which measures the
/// synthesiser more than the receptionist.
#[derive(Debug, Clone, Copy)]
enum Caller {
    /// flite's built-in voice.
    Flite(&'static str),
    /// The Piper voice (neural) at a length scale (above 1 is slower),
    /// shifted by sox `pitch` cents (a higher or deeper speaker).
    Piper { length: f32, cents: i32 },
}

impl Caller {
    fn name(&self) -> String {
        match self {
            Caller::Flite(v) => format!("flite {v}"),
            Caller::Piper { length, cents } => format!("piper joe x{length} {cents:+} cents"),
        }
    }
}

const VOICES: [Caller; 5] = [
    Caller::Piper {
        length: 1.0,
        cents: 0,
    },
    Caller::Flite("rms"),
    Caller::Piper {
        length: 0.9,
        cents: 400,
    },
    Caller::Flite("awb"),
    Caller::Piper {
        length: 1.15,
        cents: -300,
    },
];
/// Each sentence is heard twice, by two voices with two seeds, so every
/// voice meets both seeds.
const SEEDS: [u64; 2] = [1, 2];

/// The frozen set, or for tuning another file of tests/data named by
/// `HANDLET_SPOKEN_SET` (tests/data/intent_dev_set.tsv: tune on that, never
/// on the frozen set).
fn spoken_set_file() -> String {
    std::env::var("HANDLET_SPOKEN_SET").unwrap_or_else(|_| "intent_spoken_set.tsv".into())
}

fn spoken_set() -> Vec<(String, String)> {
    labelled_set(&spoken_set_file())
}

/// xorshift64*: repeatable noise from a seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Roughly normal (sum of uniforms), mean 0, sd 1.
    fn gauss(&mut self) -> f64 {
        (0..12).map(|_| self.next()).sum::<f64>() - 6.0
    }
}

/// `text` said by `caller`, at 8 kHz band-limited to the telephone band:
/// samples in -1..1 (sox -R and the Piper voice without noise: the same
/// every run; the line noise is added by us, seeded).
fn speak(dir: &Path, name: &str, text: &str, caller: Caller, piper: &Voice) -> Vec<f32> {
    let raw = dir.join(format!("{name}-raw.wav"));
    let out = dir.join(format!("{name}.wav"));
    let ok = match caller {
        Caller::Flite(v) => Command::new("flite")
            .args(["-voice", v, "-t", text, "-o"])
            .arg(&raw)
            .status()
            .expect("flite is installed (make test installs it)"),
        Caller::Piper { length, .. } => {
            let s = piper.config().scales;
            let v = piper.clone().with_scales(Scales {
                noise: 0.0,
                noise_w: 0.0,
                length: s.length * length,
            });
            let audio = v.synthesize_all(text).unwrap();
            let pcm: Vec<i16> = audio
                .iter()
                .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16)
                .collect();
            handlet_dsp::wav::write_i16(&raw, v.sample_rate(), &pcm).unwrap();
            std::process::ExitStatus::default()
        }
    };
    assert!(ok.success());
    let cents = match caller {
        Caller::Piper { cents, .. } if cents != 0 => vec!["pitch".to_string(), cents.to_string()],
        _ => Vec::new(),
    };
    let ok = Command::new("sox")
        .arg("-R")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-b", "16"])
        .arg(&out)
        .args(&cents)
        .args(["sinc", "300-3400"])
        .status()
        .expect("sox is installed (make test installs it)");
    assert!(ok.success());
    let a = handlet_dsp::wav::read(&out).unwrap();
    assert_eq!(a.rate, 8000);
    let _ = std::fs::remove_file(&raw);
    let _ = std::fs::remove_file(&out);
    a.samples
}

/// What a call leg hands the tap: the caller's speech at a level between
/// -6 and 0 dB of the synthesiser's, with 0.6 s of line before and 1.5 s after,
/// line noise at about -50 dBFS, through μ-law and back, at 16 kHz.
fn phone_line(speech: &[f32], seed: u64) -> Vec<f32> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let gain = 10f64.powf(-6.0 * rng.next() / 20.0);
    let noise = 10f64.powf(-50.0 / 20.0);
    let lead = vec![0.0f32; 4800];
    let tail = vec![0.0f32; 12000];
    let ulaw: Vec<u8> = lead
        .iter()
        .chain(speech)
        .chain(&tail)
        .map(|s| {
            let v = (*s as f64 * gain + noise * rng.gauss()).clamp(-1.0, 1.0);
            handlet_dsp::g711::ulaw_encode((v * 32767.0) as i16)
        })
        .collect();
    let pcm: Vec<f32> = ulaw
        .iter()
        .map(|c| handlet_dsp::g711::ulaw_decode(*c) as f32 / 32768.0)
        .collect();
    Resampler::clip(&pcm, 8000, 16000).unwrap()
}

/// The leg's audio through the agent's tap core, synchronously: the same
/// gate, VAD, end-pointer and whisper options as a call. The turn's text
/// (its utterances joined) and how many utterances the end-pointer cut.
fn hear(
    vad: &mut Vad,
    stt: &mut SttWorker,
    cfg: &Config,
    audio: &[f32],
    decode_s: &mut f64,
) -> (String, usize) {
    let mut tap = handlet_agent::transcribe::tap_config(cfg);
    // Previews and speculative decodes change when text appears, not what
    // it says: off, so every decode here is an utterance's final.
    tap.partial_interval_ms = 0;
    tap.early_final_ms = 0;
    let mut core = Transcriber::new(handlet_agent::store::Channel::Caller, tap);
    let mut gate = Gate::new(handlet_agent::transcribe::tap::GATE);
    let mut utterances = Vec::new();
    let mut now = 0i64;
    let mut drain = |core: &mut Transcriber, now: i64, utterances: &mut Vec<String>| {
        while let Some(out) = core.poll_output() {
            match out {
                Output::Submit { id, samples, .. } => {
                    let t = Instant::now();
                    let r = stt
                        .transcribe_with(&samples, Options::default())
                        .map_err(|e| handlet_agent::inference::JobError::Failed(e.to_string()));
                    *decode_s += t.elapsed().as_secs_f64();
                    core.job_done(id, r, now);
                }
                Output::Utterance { text } if !text.trim().is_empty() => utterances.push(text),
                _ => {}
            }
        }
    };
    for frame in audio.chunks(FRAME) {
        let mut f = frame.to_vec();
        f.resize(FRAME, 0.0);
        now += 32;
        core.audio_arrived(f.len(), now);
        let p = if gate.push(&f) {
            vad.process(&f).unwrap()
        } else {
            0.0
        };
        core.push_frame(&f, p, now);
        drain(&mut core, now, &mut utterances);
    }
    core.end(now);
    drain(&mut core, now, &mut utterances);
    let n = utterances.len();
    (utterances.join(" "), n)
}

/// One sentence heard on the line.
struct Heard {
    sentence: usize,
    seed: usize,
    voice: usize,
    text: String,
    utterances: usize,
    audio_s: f64,
    decode_s: f64,
}

#[test]
fn spoken_callers_are_understood_well_enough_to_route_on() {
    let set = spoken_set();
    assert!(set.len() >= 200, "spoken set has {} lines", set.len());
    // For a quick look while working: every n-th sentence only.
    let every: usize = std::env::var("HANDLET_SPOKEN_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut cfg = Config::default();
    cfg.intent.cache = Some(intent_cache());
    let paths = ModelPaths::verify(&models_dir()).expect("run `make models` first");
    handlet_models::vad::init_runtime(&paths.onnxruntime).unwrap();
    let understanding = Understanding::load(&paths, &cfg).unwrap();
    // `HANDLET_WHISPER`: another ggml whisper file to hear with, to measure
    // a model on the development set before the agent adopts it.
    let whisper = match std::env::var_os("HANDLET_WHISPER") {
        Some(f) => f.into(),
        None => paths.whisper_file(cfg.transcription.model).unwrap(),
    };
    let stt = handlet_models::stt::Stt::load(&whisper).unwrap();
    let piper = Voice::load(&paths.voice, &paths.voice_config).unwrap();
    let dir = TempDir::new("intent-spoken");

    let mut labels: Vec<String> = cfg.intent.intents.iter().map(|d| d.name.clone()).collect();
    if !labels.iter().any(|l| l == UNKNOWN) {
        labels.push(UNKNOWN.into());
    }
    for (want, _) in &set {
        assert!(labels.contains(want), "unknown label {want:?} in the set");
    }
    // (sentence, seed, voice): the j-th sentence taken is said by voice
    // `j % 5` with seed 1 and by voice `(j + 2) % 5` with seed 2.
    let jobs: Vec<(usize, usize, usize)> = (0..set.len())
        .step_by(every)
        .enumerate()
        .flat_map(|(j, i)| (0..SEEDS.len()).map(move |k| (i, k, (j + 2 * k) % VOICES.len())))
        .collect();
    let started = Instant::now();
    // Two listeners, one whisper thread each, as the agent's pool on 2 cores.
    let heard: Vec<Heard> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let (jobs, set, stt, piper, cfg, dir) = (&jobs, &set, &stt, &piper, &cfg, &dir);
                let vad_model = &paths.silero_vad;
                scope.spawn(move || {
                    let mut vad = Vad::load(vad_model).unwrap();
                    let mut whisper = stt.worker().unwrap();
                    let mut out = Vec::new();
                    for &(i, k, v) in jobs.iter().skip(w).step_by(2) {
                        let name = format!("u{i}-{k}");
                        let speech = speak(dir.path(), &name, &set[i].1, VOICES[v], piper);
                        let line = phone_line(&speech, SEEDS[k] * 1000 + i as u64);
                        let mut decode_s = 0.0;
                        let (text, utterances) =
                            hear(&mut vad, &mut whisper, cfg, &line, &mut decode_s);
                        out.push(Heard {
                            sentence: i,
                            seed: k,
                            voice: v,
                            text,
                            utterances,
                            audio_s: line.len() as f64 / 16000.0,
                            decode_s,
                        });
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });

    let idx = |l: &str| labels.iter().position(|x| x == l).unwrap();
    let mut confusion = vec![vec![0u32; labels.len()]; labels.len()];
    let mut by_voice = vec![[0u32; 2]; VOICES.len()];
    let mut by_seed = [[0u32; 2]; SEEDS.len()];
    let (mut right, mut total, mut emergencies, mut emergencies_caught) = (0u32, 0u32, 0u32, 0u32);
    let (mut audio_s, mut decode_s, mut split) = (0f64, 0f64, 0u32);
    // [wrong, right] among the turns acted on and those asked again.
    let (mut acted, mut asked) = ([0u32; 2], [0u32; 2]);
    let mut dump = String::from("label\tgot\tvoice\tseed\tsaid\theard\n");
    for h in &heard {
        let (want, said) = &set[h.sentence];
        audio_s += h.audio_s;
        decode_s += h.decode_s;
        split += u32::from(h.utterances > 1);
        let (got, confidence) = if h.text.trim().is_empty() {
            (UNKNOWN.to_string(), 0.0)
        } else {
            let u = understanding.hear(&h.text, 0).unwrap().0;
            (u.intent, u.confidence)
        };
        confusion[idx(want)][idx(&got)] += 1;
        let ok = &got == want;
        // What the receptionist does with it: acts when sure, else asks
        // the caller once more (receptionist.unsure_below).
        if got != UNKNOWN && confidence >= cfg.receptionist.unsure_below {
            acted[usize::from(ok)] += 1;
        } else {
            asked[usize::from(ok)] += 1;
        }
        total += 1;
        right += u32::from(ok);
        by_voice[h.voice][0] += u32::from(ok);
        by_voice[h.voice][1] += 1;
        by_seed[h.seed][0] += u32::from(ok);
        by_seed[h.seed][1] += 1;
        if want == "emergency" {
            emergencies += 1;
            emergencies_caught += u32::from(ok);
        }
        let voice = VOICES[h.voice].name();
        let seed = SEEDS[h.seed];
        if !ok {
            eprintln!(
                "miss: {want:>20} -> {got:<20} [{voice} s{seed}] said {said:?} heard {:?}",
                h.text
            );
        }
        dump += &format!("{want}\t{got}\t{voice}\t{seed}\t{said}\t{}\n", h.text);
    }
    // What was heard, for working on the classifier without whisper.
    let stem = spoken_set_file().trim_end_matches(".tsv").replace('_', "-");
    let tsv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{stem}-heard.tsv"));
    std::fs::write(&tsv, dump).unwrap();
    let mut written_right = 0u32;
    let sentences: Vec<usize> = (0..set.len()).step_by(every).collect();
    for &i in &sentences {
        let (want, text) = &set[i];
        written_right += u32::from(&understanding.hear(text, 0).unwrap().0.intent == want);
    }

    let table = confusion_table(&labels, &confusion);
    let pct = |a: u32, b: u32| 100.0 * a as f64 / b.max(1) as f64;
    eprintln!("{table}");
    for (v, voice) in VOICES.iter().enumerate() {
        let [a, b] = by_voice[v];
        eprintln!("{}: {a}/{b} = {:.1}%", voice.name(), pct(a, b));
    }
    for (k, seed) in SEEDS.iter().enumerate() {
        let [a, b] = by_seed[k];
        eprintln!("seed {seed}: {a}/{b} = {:.1}%", pct(a, b));
    }
    let n = sentences.len() as u32;
    eprintln!(
        "at unsure_below {}: acted on {} turns ({} of them wrong), asked again on {} \
         ({} of them had been right)",
        cfg.receptionist.unsure_below,
        acted[0] + acted[1],
        acted[0],
        asked[0] + asked[1],
        asked[1]
    );
    eprintln!(
        "written lines: {written_right}/{n} = {:.1}%\n\
         spoken intent accuracy: {right}/{total} = {:.1}%\n\
         spoken emergency recall: {emergencies_caught}/{emergencies} = {:.1}%\n\
         {split} turns cut into more than one utterance; {audio_s:.0} s of audio, \
         {decode_s:.0} s of whisper, {:.0} s in all; heard text in {}",
        pct(written_right, n),
        pct(right, total),
        pct(emergencies_caught, emergencies),
        started.elapsed().as_secs_f64(),
        tsv.display()
    );
    // The issue's bar is 90 % overall and 95 % emergency recall; measured
    // 81.1 % and 96 % (2026-12-02, docs/PERFORMANCE.md). Until it is met
    // these floors keep what was reached from slipping back. They hold for
    // the frozen set only: another file is for tuning.
    if spoken_set_file() != "intent_spoken_set.tsv" {
        return;
    }
    assert!(
        pct(right, total) >= 83.0,
        "spoken intent accuracy {:.1}% below the 83% floor",
        pct(right, total)
    );
    assert!(
        pct(emergencies_caught, emergencies) >= 94.0,
        "spoken emergency recall {:.1}% below the 94% floor",
        pct(emergencies_caught, emergencies)
    );
}
