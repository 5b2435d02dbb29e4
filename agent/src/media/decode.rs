//! Receive-side audio for one leg, sans-IO: G.711, G.722 or Opus payloads
//! (any packet time) and lost-packet events in, 16 kHz mono out, aligned
//! with the sender's clock.

use super::sdp::Codec;
use handlet_dsp::dtmf;
use handlet_dsp::g711::Law;
use handlet_dsp::plc::Concealer;
use handlet_dsp::resample::Resampler;

/// Longest G.711 packet accepted: 60 ms at 8 kHz.
pub const MAX_SAMPLES: usize = 480;
const RATE_CHUNK: usize = 160;
/// Opus decodes straight to 16 kHz; a packet holds at most 120 ms.
const OPUS_MAX: usize = 16 * 120;

pub struct Decoder {
    inner: Inner,
}

enum Inner {
    G711(Box<G711>),
    G722(Box<G722>),
    Opus(Box<Opus>),
}

/// G.722 is already at 16 kHz: no resampler. The codec has no loss
/// concealment of its own, so it gets the G.711 one.
struct G722 {
    dec: handlet_dsp::g722::Decoder,
    pcm: [i16; 2 * MAX_SAMPLES],
    samples: [f32; 2 * MAX_SAMPLES],
    plc: Concealer,
    /// Length of the last packet: a lost one is assumed as long.
    last_len: usize,
}

struct G711 {
    law: Law,
    resampler: Resampler,
    pcm: [i16; MAX_SAMPLES],
    samples: [f32; MAX_SAMPLES],
    /// Concealment's output (3.75 ms behind `samples`).
    played: [f32; MAX_SAMPLES],
    plc: Concealer,
    /// Length of the last packet: a lost one is assumed as long.
    last_len: usize,
    dtmf: dtmf::Detector,
}

struct Opus {
    dec: handlet_dsp::opus::Decoder,
    buf: [f32; OPUS_MAX],
}

impl Decoder {
    pub fn new(codec: Codec) -> Result<Self, crate::Error> {
        let law = match codec {
            Codec::Pcmu => Law::Mu,
            Codec::Pcma => Law::A,
            Codec::G722 => {
                return Ok(Decoder {
                    inner: Inner::G722(Box::new(G722 {
                        dec: handlet_dsp::g722::Decoder::default(),
                        pcm: [0; 2 * MAX_SAMPLES],
                        samples: [0.0; 2 * MAX_SAMPLES],
                        plc: Concealer::new(16000)?,
                        last_len: 2 * RATE_CHUNK,
                    })),
                });
            }
            Codec::Opus => {
                return Ok(Decoder {
                    inner: Inner::Opus(Box::new(Opus {
                        dec: handlet_dsp::opus::Decoder::new(16000)?,
                        buf: [0.0; OPUS_MAX],
                    })),
                });
            }
        };
        Ok(Decoder {
            inner: Inner::G711(Box::new(G711 {
                law,
                resampler: Resampler::new(8000, 16000, RATE_CHUNK)?,
                pcm: [0; MAX_SAMPLES],
                samples: [0.0; MAX_SAMPLES],
                played: [0.0; MAX_SAMPLES],
                plc: Concealer::new(8000)?,
                last_len: RATE_CHUNK,
                dtmf: dtmf::Detector::new(),
            })),
        })
    }

    /// Decode one payload; 16 kHz audio is appended to `out`. Returns a key
    /// the caller pressed if in-band DTMF completed in this packet (G.711;
    /// Opus callers send RFC 4733 events).
    pub fn packet(
        &mut self,
        payload: &[u8],
        out: &mut Vec<f32>,
    ) -> Result<Option<char>, crate::Error> {
        match &mut self.inner {
            Inner::G711(g) => {
                let n = g
                    .law
                    .decode_into(&payload[..payload.len().min(MAX_SAMPLES)], &mut g.pcm);
                for (d, s) in g.samples[..n].iter_mut().zip(&g.pcm[..n]) {
                    *d = *s as f32 / 32768.0;
                }
                if n > 0 {
                    g.last_len = n;
                }
                let key = g.dtmf.push(&g.samples[..n]);
                g.plc.good(&g.samples[..n], &mut g.played[..n]);
                g.resampler.process(&g.played[..n], out)?;
                Ok(key)
            }
            Inner::G722(g) => {
                let n = g.dec.decode_into(payload, &mut g.pcm);
                if n > 0 {
                    for (d, s) in g.samples[..n].iter_mut().zip(&g.pcm[..n]) {
                        *d = *s as f32 / 32768.0;
                    }
                    g.last_len = n;
                    play(&mut g.plc, &g.samples[..n], out);
                }
                Ok(None)
            }
            Inner::Opus(o) => {
                let n = o.dec.decode(payload, &mut o.buf)?;
                out.extend_from_slice(&o.buf[..n]);
                Ok(None)
            }
        }
    }

    /// A packet that never came. G.711 and G.722 repeat the signal's last
    /// pitch period (G.711 Appendix I style, fading to silence over 60 ms);
    /// Opus recovers it from the next packet's FEC data when `next` is at
    /// hand, else runs its PLC. Either way the timeline keeps its length.
    pub fn lost(&mut self, next: Option<&[u8]>, out: &mut Vec<f32>) -> Result<(), crate::Error> {
        match &mut self.inner {
            Inner::G711(g) => {
                let n = g.last_len;
                g.plc.lost(&mut g.played[..n]);
                g.resampler.process(&g.played[..n], out)?;
            }
            Inner::G722(g) => {
                let start = out.len();
                out.resize(start + g.last_len, 0.0);
                g.plc.lost(&mut out[start..]);
            }
            Inner::Opus(o) => {
                let n = o.dec.conceal(next, &mut o.buf)?;
                out.extend_from_slice(&o.buf[..n]);
            }
        }
        Ok(())
    }

    /// End of stream: what the resampler still holds.
    pub fn flush(&mut self, out: &mut Vec<f32>) -> Result<(), crate::Error> {
        if let Inner::G711(g) = &mut self.inner {
            g.resampler.flush(out)?;
        }
        Ok(())
    }
}

/// Received audio through the concealer (which delays it slightly) onto
/// the end of `out`.
fn play(plc: &mut Concealer, samples: &[f32], out: &mut Vec<f32>) {
    let start = out.len();
    out.resize(start + samples.len(), 0.0);
    plc.good(samples, &mut out[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_packet_time_keeps_the_clock() {
        for ptime_samples in [80usize, 160, 240, 480] {
            let mut d = Decoder::new(Codec::Pcmu).unwrap();
            let mut out = Vec::new();
            let payload = vec![0xFFu8; ptime_samples];
            for i in 0..50 {
                if i % 10 == 5 {
                    d.lost(None, &mut out).unwrap();
                } else {
                    d.packet(&payload, &mut out).unwrap();
                }
            }
            d.flush(&mut out).unwrap();
            let expected = 50 * ptime_samples * 2;
            assert!(
                (out.len() as i64 - expected as i64).abs() <= 320,
                "ptime {ptime_samples}: {} vs {expected}",
                out.len()
            );
        }
    }

    #[test]
    fn g722_decodes_straight_to_16k_and_keeps_the_clock_through_loss() {
        let mut enc = handlet_dsp::g722::Encoder::default();
        let mut d = Decoder::new(Codec::G722).unwrap();
        let mut out = Vec::new();
        let tone: Vec<i16> = (0..320)
            .map(|i| (8000.0 * (std::f32::consts::TAU * 1000.0 * i as f32 / 16_000.0).sin()) as i16)
            .collect();
        let mut payload = [0u8; 160];
        for i in 0..50 {
            let n = enc.encode_into(&tone, &mut payload);
            assert_eq!(n, 160);
            if i % 10 == 5 {
                d.lost(None, &mut out).unwrap();
            } else {
                d.packet(&payload[..n], &mut out).unwrap();
            }
        }
        d.flush(&mut out).unwrap();
        assert_eq!(
            out.len(),
            50 * 320,
            "20 ms in, 320 samples out, lost or not"
        );
        let rms =
            (out[3200..].iter().map(|s| s * s).sum::<f32>() / (out.len() - 3200) as f32).sqrt();
        assert!(rms > 0.1, "tone level {rms}");
    }

    #[test]
    fn concealment_fades_out() {
        let mut d = Decoder::new(Codec::Pcma).unwrap();
        let mut out = Vec::new();
        d.packet(&[0xAA; 160], &mut out).unwrap(); // loud
        for _ in 0..10 {
            d.lost(None, &mut out).unwrap();
        }
        let tail = &out[out.len() - 200..];
        assert!(
            tail.iter().all(|s| s.abs() < 0.01),
            "concealment did not fade"
        );
    }

    #[test]
    fn in_band_dtmf_is_detected_through_g711() {
        let mut d = Decoder::new(Codec::Pcmu).unwrap();
        let mut out = Vec::new();
        let mut keys = String::new();
        // '5' (770 + 1336 Hz) for 100 ms, μ-law encoded as a phone would send it.
        let pcm: Vec<i16> = (0..800)
            .map(|i| {
                let t = i as f32 / 8000.0;
                (8000.0
                    * ((std::f32::consts::TAU * 770.0 * t).sin()
                        + (std::f32::consts::TAU * 1336.0 * t).sin())) as i16
            })
            .chain(std::iter::repeat_n(0, 800))
            .collect();
        for frame in pcm.chunks(160) {
            let mut payload = [0u8; 160];
            Law::Mu.encode_into(frame, &mut payload);
            keys.extend(d.packet(&payload, &mut out).unwrap());
        }
        assert_eq!(keys, "5");
    }

    #[test]
    fn opus_decodes_to_16k_and_conceals_loss() {
        let mut enc = handlet_dsp::opus::Encoder::new(48000, 24000, true, 10).unwrap();
        let mut d = Decoder::new(Codec::Opus).unwrap();
        let mut out = Vec::new();
        let mut pkt = [0u8; 1500];
        let frame: Vec<f32> = (0..960).map(|i| (i as f32 * 0.05).sin() * 0.2).collect();
        for i in 0..50 {
            let n = enc.encode(&frame, &mut pkt).unwrap();
            if i == 20 {
                d.lost(Some(&pkt[..n]), &mut out).unwrap();
            } else {
                d.packet(&pkt[..n], &mut out).unwrap();
            }
        }
        assert_eq!(out.len(), 50 * 320);
        assert!(d.packet(&[], &mut out).is_err());
    }

    #[test]
    fn oversized_payload_is_truncated_not_a_panic() {
        let mut d = Decoder::new(Codec::Pcmu).unwrap();
        let mut out = Vec::new();
        d.packet(&[0x00; 1400], &mut out).unwrap();
        d.packet(&[], &mut out).unwrap();
    }
}
