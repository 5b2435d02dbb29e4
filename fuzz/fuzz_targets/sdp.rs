#![no_main]
//! Any SDP body either parses or is an error; choosing a codec never panics.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(d) = handlet_agent::media::sdp::AudioDescription::parse(&text) {
        let _ = d.choose();
    }
});
