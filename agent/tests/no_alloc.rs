//! The leg → listener hand-off allocates nothing per frame after warm-up:
//! the media side decodes each packet into a vector the listener handed
//! back, as in a call. A counting global allocator watches the media thread.

#[path = "../../dsp/tests/support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

use handlet_agent::listener::Msg;
use handlet_agent::media::decode::Decoder;
use handlet_agent::media::handoff;
use handlet_agent::media::sdp::Codec;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::Duration;

#[test]
fn frames_reach_the_listener_without_allocating() {
    let (tx, rx) = sync_channel::<Msg>(512);
    let (returns, mut spares) = handoff::pool();
    let handled = Arc::new(AtomicUsize::new(0));
    // The listener thread: reads each frame, hands its vector back.
    let listener = std::thread::spawn({
        let handled = handled.clone();
        move || {
            let mut samples = 0;
            while let Ok(Msg::Audio(v)) = rx.recv() {
                samples += v.len();
                returns.give_back(v);
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
            tx.try_send(Msg::Audio(spares.swap(&mut out16))).unwrap();
            sent += 1;
            // The listener keeps up, as it does in a call (a 20 ms packet
            // time is ample); on a loaded test machine it may need a moment.
            // A lagging listener means a fresh vector: that is the design.
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
    drop(tx);
    let samples = listener.join().unwrap();
    assert!(
        samples > 2 * 1000 * 300,
        "the listener got {samples} samples"
    );
}

#[test]
fn the_counter_counts() {
    assert!(allocations(|| drop(vec![1u8; 10])) >= 1);
}
