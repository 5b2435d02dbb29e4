#![no_main]
//! Any packet stream (sequence numbers, timestamps, arrival times, sizes)
//! through the jitter buffer keeps output in order and never panics.
use handlet_dsp::jitter::{Config, JitterBuffer, Out};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut jb = JitterBuffer::new(Config::g711());
    let mut now = 0u64;
    let mut last: Option<u64> = None;
    for c in data.chunks(9) {
        if c.len() < 9 {
            break;
        }
        now += c[0] as u64;
        let seq = u16::from_le_bytes([c[1], c[2]]);
        let ts = u32::from_le_bytes([c[3], c[4], c[5], c[6]]);
        let _ = jb.push(now, seq, ts, &c[7..7 + (c[8] as usize % 2)]);
        if c[8] & 0x80 != 0
            && let Out::Packet { timestamp, .. } = jb.pop(now)
        {
            assert!(last.is_none_or(|l| timestamp > l));
            last = Some(timestamp);
        }
    }
});
