//! whisper tiny.en on one thread: model load time and the real-time factor on
//! a fixed 11 s utterance (jfk.wav). Run with `make bench` or
//! `cargo bench --bench whisper`; needs `make models` and scripts/fixtures.sh.

use criterion::{Criterion, criterion_group, criterion_main};
use handlet_models::manifest::ModelPaths;
use handlet_models::stt::Stt;
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
    g.bench_function("transcribe_jfk_11s_1thread", |b| {
        b.iter(|| w.transcribe(&audio.samples).unwrap())
    });
    g.finish();

    // The figure the product cares about, printed plainly.
    let runs = 5;
    let t = Instant::now();
    for _ in 0..runs {
        w.transcribe(&audio.samples).unwrap();
    }
    let per = t.elapsed().as_secs_f64() / runs as f64;
    println!(
        "whisper tiny.en, 1 thread: {per:.2} s for {secs:.1} s of audio, real-time factor {:.3}",
        per / secs
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
