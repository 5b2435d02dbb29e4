//! Text to speech with the pinned Piper voice (en_US-joe-medium) on one
//! thread: time to first audio and real-time factor for a 10-word sentence,
//! the espeak-ng process's share, and resident memory with the voice loaded
//! (and per extra session). Run with `cargo bench --bench tts`; needs
//! `make models` and espeak-ng.

use criterion::{Criterion, criterion_group, criterion_main};
use handlet_models::manifest::ModelPaths;
use handlet_models::tts::{Phonemizer, Voice};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SENTENCE: &str = "Thank you for calling, how can I help you today?";
const PARAGRAPH: &str = "Thank you for calling Smith and Sons Plumbing. We are open from \
    nine in the morning until five in the evening, Monday to Friday. Please tell me your \
    name and what the problem is, and a plumber will call you back.";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// This process's resident memory, MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bench(c: &mut Criterion) {
    let paths = ModelPaths::verify(&repo().join(".models")).expect("run `make models` first");
    let rss_start = rss_mib();
    handlet_models::vad::init_runtime(&paths.onnxruntime).unwrap();
    let rss_runtime = rss_mib();
    let t = Instant::now();
    let voice = Voice::load(&paths.voice, &paths.voice_config).unwrap();
    let load = t.elapsed();
    let rss_loaded = rss_mib();
    let rate = voice.sample_rate() as f64;

    // Warm up (first run sizes ONNX Runtime's arena), then the figures.
    let warm = voice.synthesize_all(SENTENCE).unwrap();
    let rss_after_run = rss_mib();
    let speech_s = warm.len() as f64 / rate;

    let runs = 10;
    let mut first_audio = Vec::new();
    let mut rtf = Vec::new();
    let mut espeak = Vec::new();
    let phonemizer = Phonemizer::new(&voice.config().espeak_voice);
    for _ in 0..runs {
        let t = Instant::now();
        phonemizer.phonemize(SENTENCE).unwrap();
        espeak.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let mut speech = voice.stream(SENTENCE).unwrap();
        let first = speech.next().unwrap().unwrap();
        first_audio.push(t.elapsed().as_secs_f64());
        let mut n = first.len();
        for chunk in speech {
            n += chunk.unwrap().len();
        }
        rtf.push(t.elapsed().as_secs_f64() / (n as f64 / rate));
    }

    // The model alone, phonemes made beforehand.
    let phrases = voice.phonemize(SENTENCE).unwrap();
    let mut model_rtf = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let mut n = 0;
        for p in &phrases {
            n += voice.synthesize_phonemes(&p.phonemes).unwrap().len();
        }
        model_rtf.push(t.elapsed().as_secs_f64() / (n as f64 / rate));
    }

    // Streaming pays on longer text: first sentence out vs all of it.
    let mut para_first = Vec::new();
    let mut para_all = Vec::new();
    let mut para_s = 0.0;
    for _ in 0..3 {
        let t = Instant::now();
        let mut speech = voice.stream(PARAGRAPH).unwrap();
        let mut n = speech.next().unwrap().unwrap().len();
        para_first.push(t.elapsed().as_secs_f64());
        for chunk in speech {
            n += chunk.unwrap().len();
        }
        para_all.push(t.elapsed().as_secs_f64());
        para_s = n as f64 / rate;
    }

    // A second session: what each concurrent speaker costs.
    let second = Voice::load(&paths.voice, &paths.voice_config).unwrap();
    second.synthesize_all(SENTENCE).unwrap();
    let rss_two = rss_mib();

    eprintln!("\n== tts: en_US-joe-medium, 1 intra-op thread, {SENTENCE:?} (10 words) ==");
    eprintln!("speech length            {speech_s:.2} s at {rate} Hz");
    eprintln!(
        "time to first audio      {:.0} ms (median of {runs}; includes espeak-ng)",
        median(first_audio) * 1000.0
    );
    eprintln!(
        "  of which espeak-ng     {:.0} ms (one process per text)",
        median(espeak) * 1000.0
    );
    eprintln!(
        "real-time factor         {:.3} (compute s per s of speech, median of {runs})",
        median(rtf)
    );
    eprintln!(
        "  model alone            {:.3} (phonemes made beforehand)",
        median(model_rtf)
    );
    eprintln!(
        "3-sentence paragraph     {para_s:.1} s of speech: first sentence after {:.0} ms, all after {:.0} ms",
        median(para_first) * 1000.0,
        median(para_all) * 1000.0
    );
    eprintln!(
        "voice load               {:.0} ms",
        load.as_secs_f64() * 1000.0
    );
    eprintln!(
        "RSS                      {rss_start:.0} MiB at start, {rss_runtime:.0} with ONNX Runtime, \
         {rss_loaded:.0} with the voice loaded (+{:.0}), {rss_after_run:.0} after a first run (+{:.0})",
        rss_loaded - rss_runtime,
        rss_after_run - rss_runtime
    );
    eprintln!(
        "second session           +{:.0} MiB (loaded and run once)",
        rss_two - rss_after_run
    );
    drop(second);

    let mut g = c.benchmark_group("tts_joe_medium");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    g.bench_function("espeak_phonemize_10_words", |b| {
        b.iter(|| phonemizer.phonemize(SENTENCE).unwrap())
    });
    g.bench_function("first_audio_10_words_1thread", |b| {
        b.iter(|| voice.stream(SENTENCE).unwrap().next().unwrap().unwrap())
    });
    g.bench_function("synthesize_all_10_words_1thread", |b| {
        b.iter(|| voice.synthesize_all(SENTENCE).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
