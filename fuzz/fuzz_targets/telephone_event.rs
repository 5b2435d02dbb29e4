#![no_main]
//! RFC 4733 payloads, in any sequence and with any timestamps, never panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = handlet_dsp::telephone_event::Receiver::default();
    for chunk in data.chunks(6) {
        if chunk.len() < 2 {
            break;
        }
        let ts = u16::from_le_bytes([chunk[0], chunk[1]]) as u32 * 160;
        let _ = r.push(ts, &chunk[2..]);
    }
    let _ = r.finish();
});
