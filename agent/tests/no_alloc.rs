//! The leg → listener hand-off allocates nothing per frame after warm-up:
//! the media side decodes each packet into a vector the listener handed
//! back, as in a call. A counting global allocator watches the media thread.

use handlet_agent::listener::Msg;
use handlet_agent::media::decode::Decoder;
use handlet_agent::media::handoff;
use handlet_agent::media::sdp::Codec;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ON.with(|o| o.get()) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ON.with(|o| o.get()) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocations(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(0));
    ON.with(|o| o.set(true));
    f();
    ON.with(|o| o.set(false));
    COUNT.with(|c| c.get())
}

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
