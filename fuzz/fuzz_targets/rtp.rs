#![no_main]
//! RTP header parsing and G.711 payload decoding never panic on any bytes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((h, payload)) = handlet_agent::media::rtp::parse(data) {
        let mut out = [0i16; 2048];
        handlet_dsp::g711::Law::Mu.decode_into(payload, &mut out);
        let _ = h.sequence;
    }
});
