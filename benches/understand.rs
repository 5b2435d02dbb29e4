//! After-call understanding on one thread: MiniLM load + example embedding,
//! intent classification of one caller utterance (target ≤ 15 ms), and the
//! whole summary (intent, sentiment, entities, fields) for a call's caller
//! text. `cargo bench --bench understand`; needs `make models`.

use criterion::{Criterion, criterion_group, criterion_main};
use handlet_agent::config::Config;
use handlet_agent::understand::Understanding;
use handlet_models::embed::Embedder;
use handlet_models::intent::Classifier;
use handlet_models::manifest::ModelPaths;
use std::path::PathBuf;
use std::time::Duration;

const SHORT: &str = "my boiler's leaking all over the kitchen floor, can someone come today";
const CALL: &str = "Hi, it's Sarah Jones. I'd like a quote for fixing a leaking boiler at \
    14 Mill Lane, Leeds LS6 2AB. Could someone come next Tuesday after three? \
    You can call me back on 07700 900123. It's about two hundred pounds last time, is that right?";

fn bench(c: &mut Criterion) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let paths = ModelPaths::verify(&repo.join(".models")).expect("run `make models` first");
    handlet_models::vad::init_runtime(&paths.onnxruntime).unwrap();
    let cfg = Config::default_config();

    let mut g = c.benchmark_group("understand");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("load_minilm_and_embed_examples", |b| {
        b.iter(|| Understanding::load(&paths, &cfg).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("understand");
    let mut emb = Embedder::load(&paths.minilm, &paths.minilm_vocab).unwrap();
    let clf =
        Classifier::build(&mut emb, &cfg.intent.examples(), cfg.intent.unknown_below).unwrap();
    g.bench_function("intent_short_utterance", |b| {
        b.iter(|| clf.classify(&mut emb, SHORT).unwrap())
    });
    g.bench_function("intent_whole_call_text", |b| {
        b.iter(|| clf.classify(&mut emb, CALL).unwrap())
    });
    let u = Understanding::load(&paths, &cfg).unwrap();
    let at = 1_795_000_000_000; // a fixed "now" so relative dates are stable
    g.bench_function("summary_whole_call", |b| {
        b.iter(|| u.summarise(CALL, Some("07700900123"), at).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
