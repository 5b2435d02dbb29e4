//! whisper on one thread: tiny.en's model load time and real-time factor on
//! a fixed 11 s utterance (jfk.wav) under criterion, then for tiny.en and
//! base the real-time factor by utterance length (2, 4, 8 and 11 s slices
//! of jfk.wav) with whisper's fixed 30 s encoder window and with the window
//! sized to the audio. Run with
//! `make bench` or `cargo bench --bench whisper`; needs `make models` and
//! scripts/fixtures.sh.

use criterion::{Criterion, criterion_group, criterion_main};
use handlet_models::manifest::{ModelPaths, WhisperModel};
use handlet_models::stt::{Options, Stt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bench(c: &mut Criterion) {
    let paths = ModelPaths::verify(&repo().join(".models")).expect("run `make models` first");
    let audio = handlet_dsp::wav::read_16k(&repo().join(".fixtures/jfk.wav"))
        .expect("run scripts/fixtures.sh first");
    let secs = audio.samples.len() as f64 / 16_000.0;

    let mut g = c.benchmark_group("whisper_tiny_en");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.bench_function("load_model", |b| {
        b.iter(|| Stt::load(&paths.whisper).unwrap())
    });

    let stt = Stt::load(&paths.whisper).unwrap();
    let mut w = stt.worker().unwrap();
    for sized_ctx in [false, true] {
        let name = if sized_ctx { "sized" } else { "full_30s" };
        g.bench_function(format!("transcribe_jfk_11s_1thread_{name}"), |b| {
            b.iter(|| {
                w.transcribe_with(&audio.samples, Options { sized_ctx })
                    .unwrap()
            })
        });
    }
    g.finish();

    // The figures the product cares about, printed plainly: real-time factor
    // by utterance length, mean of a few plain runs each, for each model.
    for model in [WhisperModel::TinyEn, WhisperModel::Base] {
        let stt = Stt::load(&paths.whisper_file(model).unwrap()).unwrap();
        let mut w = stt.worker().unwrap();
        println!("\n{}", model.pinned().file);
        rtf_by_length(&mut w, &audio.samples, secs);
    }
}

fn rtf_by_length(w: &mut handlet_models::stt::SttWorker, samples: &[f32], secs: f64) {
    println!("length  window    seconds  RTF    text");
    for len_s in [2.0, 4.0, 8.0, secs] {
        let n = ((len_s * 16_000.0) as usize).min(samples.len());
        let slice = &samples[..n];
        for sized_ctx in [false, true] {
            let opts = Options { sized_ctx };
            let text = w.transcribe_with(slice, opts).unwrap(); // warm
            let runs = 3;
            let t = Instant::now();
            for _ in 0..runs {
                w.transcribe_with(slice, opts).unwrap();
            }
            let per = t.elapsed().as_secs_f64() / runs as f64;
            let words: Vec<&str> = text.iter().map(|s| s.text.trim()).collect();
            println!(
                "{len_s:>5.1}s  {:<8}  {per:>7.3}  {:.3}  {}",
                if sized_ctx { "sized" } else { "30 s" },
                per / len_s,
                words.join(" ")
            );
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
