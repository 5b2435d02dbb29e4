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
use std::sync::mpsc::sync_channel;
use std::time::Duration;

#[test]
fn frames_reach_the_listener_without_allocating() {
    let (tx, rx) = sync_channel::<Msg>(512);
    let (returns, mut spares) = handoff::pool();
    // The listener thread: reads each frame, hands its vector back.
    let listener = std::thread::spawn(move || {
        let mut samples = 0;
        while let Ok(Msg::Audio(v)) = rx.recv() {
            samples += v.len();
            returns.give_back(v);
        }
        samples
    });
    for codec in [Codec::Pcmu, Codec::G722] {
        let mut dec = Decoder::new(codec).unwrap();
        let mut out16: Vec<f32> = Vec::with_capacity(2048);
        let payload: Vec<u8> = (0..160u32).map(|i| (i * 7) as u8).collect();
        let mut frame = || {
            dec.packet(&payload, &mut out16).unwrap();
            tx.try_send(Msg::Audio(spares.swap(&mut out16))).unwrap();
            // A packet time, shortened: the listener keeps up, as it does.
            std::thread::sleep(Duration::from_micros(500));
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
