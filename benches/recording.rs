//! What recording costs per call-minute: the whole recorder (stereo Opus
//! encode + XChaCha20-Poly1305 sealing + file write) and its two parts, and
//! how fast a minute decrypts and exports to WAV. `cargo bench --bench
//! recording`; each iteration is one minute of audio, so its time is CPU per
//! recorded minute on one core. The bytes per minute are printed first.
//!
//! The input is a voiced test signal (150 Hz harmonics under a 2 Hz
//! envelope): like speech to Opus, reproducible, no model or fixture needed.

use criterion::{Criterion, criterion_group, criterion_main};
use handlet_agent::recording::format::{Header, Sealer};
use handlet_agent::recording::{self, Recorder, keys::DeviceKeys};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

fn voice(secs: usize) -> Vec<f32> {
    (0..secs * 16_000)
        .map(|i| {
            let t = i as f32 / 16_000.0;
            let env = 0.5 + 0.5 * (std::f32::consts::TAU * 2.0 * t).sin();
            env * (1..8)
                .map(|h| 0.04 * (std::f32::consts::TAU * 150.0 * h as f32 * t).sin())
                .sum::<f32>()
        })
        .collect()
}

struct Bench {
    dir: PathBuf,
    conn: rusqlite::Connection,
}

impl Bench {
    fn new() -> Bench {
        let dir = std::env::temp_dir().join(format!("handlet-bench-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conn = handlet_agent::store::open_for_tools(&dir.join("db.sqlite")).unwrap();
        conn.execute(
            "INSERT INTO calls (id, sip_call_id, direction, from_uri, to_uri, transport, started_at_ms)
             VALUES ('bench', 's', 'inbound', 'a', 'b', 'udp', 0)",
            [],
        )
        .unwrap();
        DeviceKeys::load_or_create(&recording::keys_dir(&dir), 0).unwrap();
        Bench { dir, conn }
    }

    fn record(&self, audio: &[f32]) -> recording::Written {
        let mut r = Recorder::create(&self.conn, &self.dir, "bench", 0, 30).unwrap();
        for f in audio.chunks(320) {
            r.push_caller(f).unwrap();
        }
        r.finish(&self.conn).unwrap()
    }

    /// Delete a recording (row, key, file) so iterations do not pile up.
    fn drop_recording(&self, id: u64) {
        let file: String = self
            .conn
            .query_row(
                "SELECT file FROM recordings WHERE id = ?1",
                [id as i64],
                |r| r.get(0),
            )
            .unwrap();
        std::fs::remove_file(recording::dir(&self.dir).join(file)).unwrap();
        self.conn
            .execute(
                "DELETE FROM recording_keys WHERE recording_id = ?1",
                [id as i64],
            )
            .unwrap();
        self.conn
            .execute("DELETE FROM recordings WHERE id = ?1", [id as i64])
            .unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let minute = voice(60);
    let b = Bench::new();
    let kept = b.record(&minute);
    println!(
        "recording: {} bytes per minute of stereo Opus, encrypted ({:.1} MB per hour)",
        kept.bytes,
        kept.bytes as f64 * 60.0 / 1e6
    );

    let mut g = c.benchmark_group("per_call_minute");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("record_encode_encrypt_write", |bn| {
        bn.iter(|| {
            let w = b.record(black_box(&minute));
            b.drop_recording(w.id);
        })
    });
    g.bench_function("opus_stereo_encode_only", |bn| {
        let mut enc = handlet_dsp::opus::Encoder::stereo(16_000, recording::BITRATE).unwrap();
        let mut stereo = vec![0.0f32; 640];
        let mut packet = vec![0u8; 1500];
        bn.iter(|| {
            let mut bytes = 0;
            for f in minute.chunks(320) {
                for (i, s) in f.iter().enumerate() {
                    stereo[2 * i] = *s;
                }
                bytes += enc.encode(&stereo, &mut packet).unwrap();
            }
            bytes
        })
    });
    g.bench_function("encrypt_only_60_chunks", |bn| {
        // A second of the recording's Opus is ~3.1 kB.
        let chunk = vec![0x5au8; kept.bytes as usize / 60];
        let header = Header {
            recording_id: 1,
            rate: 16_000,
            channels: 2,
            codec: 1,
            nonce_prefix: [7; 19],
        };
        bn.iter(|| {
            let mut s = Sealer::new(&[9; 32], &header);
            let mut n = 0;
            for i in 0..60 {
                n += s.seal(black_box(&chunk), i == 59).unwrap().len();
            }
            n
        })
    });
    let keys = DeviceKeys::load(&recording::keys_dir(&b.dir)).unwrap();
    let file = recording::get(&b.conn, kept.id).unwrap().unwrap().file;
    g.bench_function("decrypt_decode", |bn| {
        bn.iter(|| {
            let k = recording::data_key(&b.conn, &keys, kept.id).unwrap();
            recording::decode_file(&recording::dir(&b.dir).join(&file), kept.id, &k).unwrap()
        })
    });
    let out = b.dir.join("export.wav");
    g.bench_function("export_wav", |bn| {
        bn.iter(|| recording::export_wav(&b.conn, &b.dir, &keys, kept.id, &out).unwrap())
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&b.dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
