//! The voice against transcription on 2 cores: the agent speaks on its own
//! voice thread, never behind the whisper workers, but both share the same
//! two cores. How much does each slow the other?
//!
//! Three phases, each a fixed number of runs:
//! 1. the voice alone: time to first audio and real-time factor for the
//!    greeting-length sentence;
//! 2. transcription alone: two whisper threads (the agent's default on 2
//!    cores) decoding 3 s of jfk.wav in a loop, decodes per second;
//! 3. both at once: the voice's figures with the two whisper threads busy,
//!    and the whisper threads' rate while the voice speaks without pause.
//!
//! `cargo bench --bench tts_under_load` (needs `make models`, espeak-ng and
//! scripts/fixtures.sh; `HANDLET_BENCH_WHISPER=base` for the larger
//! model, default tiny.en). Prints plain figures; no criterion, since what
//! matters is the ratio between phases run back to back.

use handlet_models::manifest::{ModelPaths, WhisperModel};
use handlet_models::stt::Stt;
use handlet_models::tts::Voice;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SENTENCE: &str = "Thank you for calling, how can I help you today?";
const RUNS: usize = 12;
const WHISPER_THREADS: usize = 2;
/// Decodes per whisper thread in the whisper-alone phase.
const DECODES: usize = 6;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn p95(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[(v.len() * 95 / 100).min(v.len() - 1)]
}

/// Time to first audio and real-time factor of `RUNS` syntheses, seconds.
fn speak(voice: &Voice, rate: f64) -> (Vec<f64>, Vec<f64>) {
    let mut first = Vec::new();
    let mut rtf = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let mut speech = voice.stream(SENTENCE).unwrap();
        let mut n = speech.next().unwrap().unwrap().len();
        first.push(t.elapsed().as_secs_f64());
        for chunk in speech {
            n += chunk.unwrap().len();
        }
        rtf.push(t.elapsed().as_secs_f64() / (n as f64 / rate));
    }
    (first, rtf)
}

/// Whisper threads decoding `clip` until `stop` (or `limit` decodes each);
/// returns decodes done and the wall time they took.
fn transcribe(
    stt: &Arc<Stt>,
    clip: &Arc<Vec<f32>>,
    stop: &Arc<AtomicBool>,
    limit: Option<usize>,
) -> (std::thread::JoinHandle<()>, Arc<AtomicUsize>) {
    let done = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..WHISPER_THREADS)
        .map(|_| {
            let (stt, clip, stop, done) = (stt.clone(), clip.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut w = stt.worker().unwrap();
                let mut mine = 0;
                while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| mine < l) {
                    w.transcribe(&clip).unwrap();
                    mine += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let all = std::thread::spawn(move || {
        for h in handles {
            h.join().unwrap();
        }
    });
    (all, done)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let paths = ModelPaths::verify(&repo().join(".models")).expect("run `make models` first");
    handlet_models::vad::init_runtime(&paths.onnxruntime).unwrap();
    let voice = Voice::load(&paths.voice, &paths.voice_config).unwrap();
    let rate = voice.sample_rate() as f64;
    let audio = handlet_dsp::wav::read_16k(&repo().join(".fixtures/jfk.wav"))
        .expect("run scripts/fixtures.sh first");
    let clip = Arc::new(audio.samples[..3 * 16_000].to_vec());
    let model = match std::env::var("HANDLET_BENCH_WHISPER").as_deref() {
        Ok("base") => WhisperModel::Base,
        _ => WhisperModel::TinyEn,
    };
    let stt = Arc::new(Stt::load(&paths.whisper_file(model).unwrap()).unwrap());

    // Warm both (first runs size ONNX Runtime's arena and whisper's state).
    voice.synthesize_all(SENTENCE).unwrap();
    stt.worker().unwrap().transcribe(&clip).unwrap();

    // 1. The voice alone.
    let (first_alone, rtf_alone) = speak(&voice, rate);

    // 2. Transcription alone.
    let stop = Arc::new(AtomicBool::new(false));
    let t = Instant::now();
    let (h, done) = transcribe(&stt, &clip, &stop, Some(DECODES));
    h.join().unwrap();
    let whisper_alone = done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();

    // 3. Both: whisper threads busy throughout; the voice speaks RUNS times.
    let (h, done) = transcribe(&stt, &clip, &stop, None);
    // Let both whisper threads get going before the voice starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::Relaxed) < WHISPER_THREADS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = done.load(Ordering::Relaxed);
    let t = Instant::now();
    let (first_loaded, rtf_loaded) = speak(&voice, rate);
    let whisper_loaded = (done.load(Ordering::Relaxed) - before) as f64 / t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();

    println!(
        "\n== tts under load: {SENTENCE:?}, voice on 1 thread, {WHISPER_THREADS} whisper threads ({}) on 3 s of jfk.wav, {} cores ==",
        model.pinned().file,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "                      first audio ms (median / p95)   RTF (median)   whisper decodes/s"
    );
    println!(
        "voice alone           {:>6.0} / {:<6.0}                 {:.3}",
        median(first_alone.clone()) * 1000.0,
        p95(first_alone.clone()) * 1000.0,
        median(rtf_alone.clone())
    );
    println!(
        "whisper alone                                                         {whisper_alone:.2}"
    );
    println!(
        "both                  {:>6.0} / {:<6.0}                 {:.3}          {whisper_loaded:.2}",
        median(first_loaded.clone()) * 1000.0,
        p95(first_loaded.clone()) * 1000.0,
        median(rtf_loaded.clone())
    );
    println!(
        "slowdown              voice first audio x{:.2}, voice RTF x{:.2}, whisper rate x{:.2}",
        median(first_loaded) / median(first_alone),
        median(rtf_loaded) / median(rtf_alone),
        whisper_alone / whisper_loaded
    );
}
