//! Transcription under overload: many calls of speech with few pauses, one
//! whisper worker, tiny queues. The box cannot keep up, and must still
//! finish every call, store every final it accepted, and shut down within
//! a bound, with nothing waiting on anything else.
//!
//! This is the regression test for a deadlock in the first design (seen
//! on it with this test: every listener thread in `Pool::submit_blocking`,
//! the worker in `Sender::send`): a whisper worker sent its result into the
//! listener's own bounded audio channel, full because the listener was
//! itself waiting in the pool for room in the finals lane, so neither could
//! move again.

mod common;

use common::*;
use handlet_agent::config::Config;
use handlet_agent::inference::Pool;
use handlet_agent::media::sink::FrameSink;
use handlet_agent::store::{Channel, NewCall, Store};
use handlet_agent::transcribe::tap;
use handlet_agent::transcribe::vad_pool::VadPool;
use std::time::{Duration, Instant};

#[test]
fn every_call_finishes_when_whisper_is_far_behind() {
    let dir = TempDir::new("overload");
    // About 35 s of speech with only the short gaps espeak leaves between
    // sentences, so utterances run to the 20 s cap and back up the queue.
    let text = "I am calling about the boiler in the flat upstairs, it has been making a banging noise \
        every morning and now the radiators in the bedroom are cold, the pressure gauge keeps dropping \
        below one bar and my neighbour says there is water coming through her ceiling near the light \
        fitting, could somebody come round this afternoon or first thing tomorrow morning because \
        we have two small children and it is getting very cold in the evenings, the boiler is about \
        ten years old and it was last serviced in the spring by one of your engineers";
    let wav = speech_wav(dir.path(), "long", text, 16_000, 0.2, 1.0);
    let speech = handlet_dsp::wav::read(&wav).unwrap().samples;
    assert!(speech.len() > 16_000 * 25, "{} samples", speech.len());

    let mut cfg = Config::default_config();
    cfg.models_dir = models_dir();
    cfg.data_dir = dir.path().join("data");
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let (paths, stt) = handlet_agent::agent::load_models(&cfg).unwrap();
    let pool = Pool::start(&stt, 1, 1).unwrap();
    let store = Store::open(&cfg.database_path()).unwrap();
    let tap_cfg = handlet_agent::transcribe::tap_config(&cfg);
    let vads = VadPool::prepare(paths.silero_vad.clone(), 2).unwrap();

    const CALLS: usize = 6;
    let pace_us: u64 = std::env::var("HANDLET_OVERLOAD_PACE_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut feeders = Vec::new();
    let mut taps = Vec::new();
    for i in 0..CALLS {
        let id = format!("overload-{i}");
        store.insert_call(NewCall {
            id: id.clone(),
            sip_call_id: id.clone(),
            direction: "inbound",
            from_uri: "sip:caller@test".into(),
            to_uri: "sip:handlet@test".into(),
            transport: "udp".into(),
            codec: Some("PCMU".into()),
            started_at_ms: 0,
            answered_at_ms: Some(0),
            trunk: None,
            did: None,
            caller: None,
        });
        let t = tap::start(
            id,
            Channel::Caller,
            vads.clone(),
            tap_cfg,
            pool.clone(),
            tap::Outputs {
                events: None,
                store: store.clone(),
                after: None,
                record: None,
                pair: None,
                hold: None,
            },
        )
        .unwrap();
        let speech = speech.clone();
        let mut sink = t.sink;
        // The media leg's side: 20 ms frames far faster than real time,
        // never waiting (a full channel drops the frame, as a leg does).
        feeders.push(std::thread::spawn(move || {
            let mut dropped = 0u64;
            for frame in speech.chunks(320) {
                if !sink.frame(&mut frame.to_vec()) {
                    dropped += 1;
                }
                std::thread::sleep(Duration::from_micros(pace_us));
            }
            sink.end();
            dropped
        }));
        taps.push(t.thread);
    }
    let dropped: u64 = feeders.into_iter().map(|f| f.join().unwrap()).sum();
    eprintln!("frames dropped by the legs (tap behind): {dropped}");
    // Every call's transcription ends, however far behind the worker is.
    let deadline = Instant::now() + Duration::from_secs(150);
    for (i, t) in taps.into_iter().enumerate() {
        while !t.is_finished() {
            assert!(
                Instant::now() < deadline,
                "call {i}'s transcription never finished: the tap and the pool are stuck"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let r = t.join().unwrap();
        eprintln!("call {i}: {r:?}");
        assert_eq!(r.stats.finals_failed, 0, "call {i}: a final was lost");
        assert!(r.stats.utterances >= 1);
    }
    let t0 = Instant::now();
    let dropped_finals = pool.shutdown(Duration::from_secs(5));
    assert!(t0.elapsed() < Duration::from_secs(8));
    assert_eq!(dropped_finals, 0);
    store.flush();
    let db = Db::open(&cfg.database_path());
    for c in db.calls() {
        assert!(c.complete, "{}: transcript not complete", c.id);
        let text = db.transcript(&c.id);
        assert!(
            words(&text).len() > 20,
            "{}: too little text stored: {text:?}",
            c.id
        );
    }
}
