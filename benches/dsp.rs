//! Cost of each audio stage per 20 ms frame, and of the whole receive chain
//! for one call (jitter buffer → G.711 decode → in-band DTMF → loss
//! concealment → energy gate → resample to 16 kHz). `cargo bench --bench dsp`; 20 ms = 20 000 000 ns, so
//! percent of one core per call = ns per frame / 200 000.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use handlet_dsp::dtmf::Detector;
use handlet_dsp::g711::Law;
use handlet_dsp::gate::{Gate, GateConfig};
use handlet_dsp::jitter::{Config, JitterBuffer, Out};
use handlet_dsp::plc::Concealer;
use handlet_dsp::resample::Resampler;
use std::hint::black_box;

fn speechish() -> Vec<f32> {
    (0..160)
        .map(|i| (i as f32 * 0.07).sin() * 0.3 + (i as f32 * 0.31).sin() * 0.1)
        .collect()
}

fn bench(c: &mut Criterion) {
    let frame = speechish();
    let pcm: Vec<i16> = frame.iter().map(|s| (s * 32767.0) as i16).collect();
    let mut payload = [0u8; 160];
    Law::Mu.encode_into(&pcm, &mut payload);

    let mut g = c.benchmark_group("per_20ms_frame");
    g.bench_function("g711_decode", |b| {
        let mut out = [0i16; 160];
        b.iter(|| Law::Mu.decode_into(black_box(&payload), &mut out))
    });
    g.bench_function("g711_encode", |b| {
        let mut out = [0u8; 160];
        b.iter(|| Law::Mu.encode_into(black_box(&pcm), &mut out))
    });
    let wide: Vec<i16> = (0..320).map(|i| pcm[i / 2]).collect();
    g.bench_function("g722_encode", |b| {
        let mut e = handlet_dsp::g722::Encoder::default();
        let mut out = [0u8; 160];
        b.iter(|| e.encode_into(black_box(&wide), &mut out))
    });
    g.bench_function("g722_decode", |b| {
        let mut e = handlet_dsp::g722::Encoder::default();
        let mut bytes = [0u8; 160];
        e.encode_into(&wide, &mut bytes);
        let mut d = handlet_dsp::g722::Decoder::default();
        let mut out = [0i16; 320];
        b.iter(|| d.decode_into(black_box(&bytes), &mut out))
    });
    g.bench_function("resample_8k_to_16k", |b| {
        let mut r = Resampler::new(8000, 16000, 160).unwrap();
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            r.process(black_box(&frame), &mut out).unwrap();
        })
    });
    g.bench_function("jitter_push_pop", |b| {
        let mut jb = JitterBuffer::new(Config::g711());
        let mut i = 0u32;
        b.iter(|| {
            jb.push(i as u64 * 20, i as u16, i * 160, black_box(&payload));
            let _ = black_box(jb.pop(i as u64 * 20 + 40));
            i += 1;
        })
    });
    g.bench_function("dtmf_detect", |b| {
        let mut d = Detector::new();
        b.iter(|| d.push(black_box(&frame)))
    });
    g.bench_function("energy_gate", |b| {
        let mut gate = Gate::new(GateConfig::default());
        b.iter(|| gate.push(black_box(&frame)))
    });
    g.bench_function("plc_received", |b| {
        let mut c = Concealer::new(8000).unwrap();
        let mut out = [0f32; 160];
        b.iter(|| c.good(black_box(&frame), &mut out))
    });
    g.bench_function("plc_lost", |b| {
        // Each iteration: a lost frame (pitch search, synthesis) then the
        // received one that ends the loss, minus `plc_received`.
        let mut c = Concealer::new(8000).unwrap();
        let mut out = [0f32; 160];
        for _ in 0..4 {
            c.good(&frame, &mut out);
        }
        b.iter(|| {
            c.lost(&mut out);
            c.good(black_box(&frame), &mut out);
        })
    });
    g.bench_function("receive_chain", |b| {
        let mut jb = JitterBuffer::new(Config::g711());
        let mut plc = Concealer::new(8000).unwrap();
        let mut played = [0f32; 160];
        let mut r = Resampler::new(8000, 16000, 160).unwrap();
        let mut d = Detector::new();
        let mut gate = Gate::new(GateConfig::default());
        let mut pcm_out = [0i16; 160];
        let mut f = [0f32; 160];
        let mut out = Vec::with_capacity(1024);
        let mut i = 0u32;
        b.iter_batched_ref(
            || (),
            |_| {
                jb.push(i as u64 * 20, i as u16, i * 160, &payload);
                if let Out::Packet { payload, .. } = jb.pop(i as u64 * 20 + 40) {
                    Law::Mu.decode_into(payload, &mut pcm_out);
                }
                for (d, s) in f.iter_mut().zip(&pcm_out) {
                    *d = *s as f32 / 32768.0;
                }
                d.push(&f);
                plc.good(&f, &mut played);
                gate.push(&played);
                out.clear();
                r.process(&played, &mut out).unwrap();
                i += 1;
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
