//! The per-frame calls of the audio path allocate nothing after warm-up.
//! A counting global allocator watches this thread only.

use handlet_dsp::dtmf::Detector;
use handlet_dsp::g711::Law;
use handlet_dsp::gate::{Gate, GateConfig};
use handlet_dsp::jitter::{Config, JitterBuffer};
use handlet_dsp::plc::Concealer;
use handlet_dsp::resample::Resampler;
#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

#[test]
fn receive_chain_allocates_nothing_per_frame() {
    let mut jb = JitterBuffer::new(Config::g711());
    let mut resampler = Resampler::new(8000, 16000, 160).unwrap();
    let mut dtmf = Detector::new();
    let mut gate = Gate::new(GateConfig::default());
    let mut plc = Concealer::new(8000).unwrap();
    let mut pcm = [0i16; 160];
    let mut samples = [0f32; 160];
    let mut played = [0f32; 160];
    let mut out: Vec<f32> = Vec::with_capacity(4096);
    let payload: Vec<u8> = (0..160u32).map(|i| (i * 7) as u8).collect();
    let mut step = |i: u32, out: &mut Vec<f32>| {
        // Every 17th packet is lost: concealment runs too.
        if i % 17 != 5 {
            jb.push(i as u64 * 20, i as u16, i * 160, &payload);
        }
        match jb.pop(i as u64 * 20 + 40) {
            handlet_dsp::jitter::Out::Packet { payload, .. } => {
                Law::Mu.decode_into(payload, &mut pcm);
                for (d, s) in samples.iter_mut().zip(&pcm) {
                    *d = *s as f32 / 32768.0;
                }
                dtmf.push(&samples);
                plc.good(&samples, &mut played);
            }
            _ => plc.lost(&mut played),
        }
        gate.push(&played);
        out.clear();
        resampler.process(&played, out).unwrap();
    };
    for i in 0..200 {
        step(i, &mut out); // warm-up
    }
    let n = allocations(|| {
        for i in 200..1200 {
            step(i, &mut out);
        }
    });
    assert_eq!(n, 0, "{n} allocations in 1000 frames");
}

#[test]
fn g722_both_ways_allocates_nothing_per_frame() {
    let mut enc = handlet_dsp::g722::Encoder::default();
    let mut dec = handlet_dsp::g722::Decoder::default();
    let pcm: Vec<i16> = (0..320).map(|i| ((i * 37) % 2000) as i16 - 1000).collect();
    let (mut bytes, mut back) = ([0u8; 160], [0i16; 320]);
    let mut step = || {
        let n = enc.encode_into(&pcm, &mut bytes);
        dec.decode_into(&bytes[..n], &mut back);
    };
    for _ in 0..50 {
        step();
    }
    let n = allocations(|| {
        for _ in 0..1000 {
            step();
        }
    });
    assert_eq!(n, 0, "{n} allocations in 1000 frames");
}

#[test]
fn the_counter_counts() {
    assert!(allocations(|| drop(vec![1u8; 10])) >= 1);
}
