//! The leg → tap hand-off allocates nothing per frame after warm-up: the
//! media side decodes each packet into a vector the tap handed back, as in
//! a call. A counting global allocator watches the media thread.

#[path = "../../dsp/tests/support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

use handlet_agent::media::decode::Decoder;
use handlet_agent::media::sdp::Codec;
use handlet_agent::media::sink::FrameSink;
use handlet_agent::transcribe::tap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[test]
fn frames_reach_the_tap_without_allocating() {
    let (mut sink, feed) = tap::audio_channel();
    let handled = Arc::new(AtomicUsize::new(0));
    // The tap's side: reads each frame, hands its vector back.
    let reader = std::thread::spawn({
        let handled = handled.clone();
        move || {
            let mut samples = 0;
            while let Some(v) = feed.recv() {
                samples += v.len();
                feed.give_back(v);
                handled.fetch_add(1, Ordering::Release);
            }
            samples
        }
    });
    let mut sent = 0;
    for codec in [Codec::Pcmu, Codec::G722] {
        let mut dec = Decoder::new(codec).unwrap();
        let mut out16: Vec<f32> = Vec::with_capacity(2048);
        let payload: Vec<u8> = (0..160u32).map(|i| (i * 7) as u8).collect();
        let mut frame = || {
            dec.packet(&payload, &mut out16).unwrap();
            assert!(sink.frame(&mut out16));
            sent += 1;
            // The tap keeps up, as it does in a call (a 20 ms packet time
            // is ample); on a loaded test machine it may need a moment. A
            // lagging tap means a fresh vector: that is the design.
            while handled.load(Ordering::Acquire) < sent {
                std::thread::sleep(Duration::from_micros(100));
            }
        };
        for _ in 0..100 {
            frame();
        }
        let n = allocations(|| {
            for _ in 0..1000 {
                frame();
            }
        });
        assert_eq!(n, 0, "{codec:?}: {n} allocations in 1000 frames");
    }
    sink.end();
    let samples = reader.join().unwrap();
    assert!(samples > 2 * 1000 * 300, "the tap got {samples} samples");
}

#[test]
fn the_counter_counts() {
    assert!(allocations(|| drop(vec![1u8; 10])) >= 1);
}
