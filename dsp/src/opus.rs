//! Opus through libopus (the `opus` crate, bundled libopus): 20 ms frames at
//! 8, 16 or 48 kHz mono; loss concealment (PLC) and in-band forward error
//! correction (FEC) on decode when a packet is missing.

use crate::Error;

fn err(e: opus::Error) -> Error {
    Error::Codec(format!("opus: {e}"))
}

/// Rates libopus runs at that this project uses.
fn check_rate(rate: u32) -> Result<(), Error> {
    match rate {
        8000 | 12000 | 16000 | 24000 | 48000 => Ok(()),
        _ => Err(Error::Unsupported(format!("opus at {rate} Hz"))),
    }
}

pub struct Encoder {
    enc: opus::Encoder,
    /// Samples per 20 ms frame, all channels (interleaved).
    frame: usize,
}

impl Encoder {
    /// Voice encoder; `fec` adds in-band redundancy sized for `expected_loss_pct`.
    pub fn new(rate: u32, bitrate: i32, fec: bool, expected_loss_pct: i32) -> Result<Self, Error> {
        check_rate(rate)?;
        let mut enc =
            opus::Encoder::new(rate, opus::Channels::Mono, opus::Application::Voip).map_err(err)?;
        enc.set_bitrate(opus::Bitrate::Bits(bitrate)).map_err(err)?;
        enc.set_inband_fec(fec).map_err(err)?;
        enc.set_packet_loss_perc(expected_loss_pct).map_err(err)?;
        Ok(Encoder {
            enc,
            frame: rate as usize / 50,
        })
    }

    /// Stereo voice encoder for recordings (left caller, right callee), VBR
    /// at `bitrate`, no FEC (the file does not lose packets).
    pub fn stereo(rate: u32, bitrate: i32) -> Result<Self, Error> {
        check_rate(rate)?;
        let mut enc = opus::Encoder::new(rate, opus::Channels::Stereo, opus::Application::Voip)
            .map_err(err)?;
        enc.set_bitrate(opus::Bitrate::Bits(bitrate)).map_err(err)?;
        Ok(Encoder {
            enc,
            frame: 2 * rate as usize / 50,
        })
    }

    /// Samples in one 20 ms frame (interleaved, all channels).
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Encode one 20 ms frame; returns the packet length written to `out`.
    pub fn encode(&mut self, frame: &[f32], out: &mut [u8]) -> Result<usize, Error> {
        if frame.len() != self.frame {
            return Err(Error::Codec(format!(
                "opus frame must be {} samples, got {}",
                self.frame,
                frame.len()
            )));
        }
        self.enc.encode_float(frame, out).map_err(err)
    }
}

pub struct Decoder {
    dec: opus::Decoder,
    frame: usize,
}

impl Decoder {
    /// Decode to `rate` whatever rate the sender encoded at (Opus resamples internally).
    pub fn new(rate: u32) -> Result<Self, Error> {
        check_rate(rate)?;
        Ok(Decoder {
            dec: opus::Decoder::new(rate, opus::Channels::Mono).map_err(err)?,
            frame: rate as usize / 50,
        })
    }

    /// Stereo decoder for recordings; `decode` writes interleaved samples.
    pub fn stereo(rate: u32) -> Result<Self, Error> {
        check_rate(rate)?;
        Ok(Decoder {
            dec: opus::Decoder::new(rate, opus::Channels::Stereo).map_err(err)?,
            frame: 2 * rate as usize / 50,
        })
    }

    /// Decode one packet into `out` (room for 120 ms); returns samples written
    /// per channel.
    /// A corrupt packet is an error and the decoder state stays usable.
    pub fn decode(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, Error> {
        if packet.is_empty() {
            return Err(Error::Codec("empty opus packet".into()));
        }
        self.dec.decode_float(packet, out, false).map_err(err)
    }

    /// A packet is missing. If the one after it is at hand, recover the lost
    /// frame from its in-band FEC data; otherwise extrapolate (PLC). Writes one
    /// 20 ms frame.
    pub fn conceal(&mut self, next: Option<&[u8]>, out: &mut [f32]) -> Result<usize, Error> {
        let n = self.frame.min(out.len());
        let out = &mut out[..n];
        match next {
            Some(p) if !p.is_empty() => self.dec.decode_float(p, out, true).map_err(err),
            _ => self.dec.decode_float(&[], out, false).map_err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A voiced, speech-like signal: a 140 Hz pulse train through formant-ish
    /// harmonics, so SILK (the mode FEC lives in) codes it as voice.
    fn voice(rate: u32, ms: usize) -> Vec<f32> {
        let n = rate as usize * ms / 1000;
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let env = 0.6 + 0.4 * (std::f32::consts::TAU * 3.0 * t).sin();
                env * (1..=12)
                    .map(|h| {
                        let f = 140.0 * h as f32;
                        let formant = (-((f - 700.0) / 400.0).powi(2)).exp()
                            + 0.6 * (-((f - 1200.0) / 300.0).powi(2)).exp();
                        if f < rate as f32 / 2.0 {
                            0.08 * formant * (std::f32::consts::TAU * f * t).sin()
                        } else {
                            0.0
                        }
                    })
                    .sum::<f32>()
            })
            .collect()
    }

    fn rms(v: &[f32]) -> f32 {
        (v.iter().map(|s| s * s).sum::<f32>() / v.len().max(1) as f32).sqrt()
    }

    fn codec(rate: u32) -> (Encoder, Decoder) {
        (
            Encoder::new(rate, 24000, true, 20).unwrap(),
            Decoder::new(rate).unwrap(),
        )
    }

    #[test]
    fn stereo_keeps_the_channels_apart() {
        let mut e = Encoder::stereo(16000, 32000).unwrap();
        let mut d = Decoder::stereo(16000).unwrap();
        let left = voice(16000, 1000);
        let input: Vec<f32> = left.iter().flat_map(|&l| [l, 0.0]).collect();
        let mut out = Vec::new();
        let mut pkt = [0u8; 1500];
        let mut frame = vec![0f32; 2 * 16000 * 120 / 1000];
        for f in input.chunks_exact(e.frame_samples()) {
            let n = e.encode(f, &mut pkt).unwrap();
            let m = d.decode(&pkt[..n], &mut frame).unwrap();
            assert_eq!(2 * m, e.frame_samples());
            out.extend_from_slice(&frame[..2 * m]);
        }
        let l: Vec<f32> = out.iter().step_by(2).copied().collect();
        let r: Vec<f32> = out.iter().skip(1).step_by(2).copied().collect();
        let (l, r) = (rms(&l[3200..]), rms(&r[3200..]));
        assert!(l > 0.02 && r < l / 10.0, "left {l}, right {r}");
    }

    #[test]
    fn round_trip_at_8_16_and_48_khz() {
        for rate in [8000, 16000, 48000] {
            let (mut e, mut d) = codec(rate);
            let input = voice(rate, 1000);
            let mut out = Vec::new();
            let mut pkt = [0u8; 1500];
            let mut frame = vec![0f32; rate as usize * 120 / 1000];
            for f in input.chunks_exact(e.frame_samples()) {
                let n = e.encode(f, &mut pkt).unwrap();
                assert!(n > 0 && n < 200, "{rate} Hz: {n} bytes");
                let m = d.decode(&pkt[..n], &mut frame).unwrap();
                assert_eq!(m, e.frame_samples());
                out.extend_from_slice(&frame[..m]);
            }
            // Same length, same level (within 3 dB) after the codec's start-up.
            assert_eq!(out.len(), input.len());
            let (a, b) = (
                rms(&input[rate as usize / 5..]),
                rms(&out[rate as usize / 5..]),
            );
            assert!(
                (20.0 * (b / a).log10()).abs() < 3.0,
                "{rate} Hz: level {a} in, {b} out"
            );
        }
    }

    #[test]
    fn fec_recovers_a_lost_frame_better_than_plc() {
        let rate = 16000;
        let input = voice(rate, 2000);
        let (mut e, _) = codec(rate);
        let mut packets = Vec::new();
        let mut pkt = [0u8; 1500];
        for f in input.chunks_exact(e.frame_samples()) {
            let n = e.encode(f, &mut pkt).unwrap();
            packets.push(pkt[..n].to_vec());
        }
        let lost = 50;
        let run = |use_fec: bool| {
            let mut d = Decoder::new(rate).unwrap();
            let mut out = Vec::new();
            let mut frame = vec![0f32; 1920];
            for (i, p) in packets.iter().enumerate() {
                let m = if i == lost {
                    d.conceal(use_fec.then(|| packets[i + 1].as_slice()), &mut frame)
                        .unwrap()
                } else {
                    d.decode(p, &mut frame).unwrap()
                };
                assert_eq!(m, 320);
                out.extend_from_slice(&frame[..m]);
            }
            out
        };
        let clean = {
            let mut d = Decoder::new(rate).unwrap();
            let mut frame = vec![0f32; 1920];
            packets
                .iter()
                .flat_map(|p| {
                    let m = d.decode(p, &mut frame).unwrap();
                    frame[..m].to_vec()
                })
                .collect::<Vec<f32>>()
        };
        let span = lost * 320..(lost + 1) * 320;
        let error = |v: &[f32]| {
            rms(&v[span.clone()]
                .iter()
                .zip(&clean[span.clone()])
                .map(|(a, b)| a - b)
                .collect::<Vec<_>>())
        };
        let (fec, plc) = (error(&run(true)), error(&run(false)));
        assert!(fec < plc, "FEC error {fec} not below PLC error {plc}");
    }

    #[test]
    fn plc_continues_the_signal_and_garbage_is_an_error() {
        let (mut e, mut d) = codec(8000);
        let input = voice(8000, 200);
        let mut pkt = [0u8; 1500];
        let mut frame = vec![0f32; 960];
        for f in input.chunks_exact(160) {
            let n = e.encode(f, &mut pkt).unwrap();
            d.decode(&pkt[..n], &mut frame).unwrap();
        }
        assert_eq!(d.conceal(None, &mut frame).unwrap(), 160);
        assert!(rms(&frame[..160]) > 0.001, "PLC went silent at once");
        // Garbage must not panic; libopus may or may not find it decodable.
        for junk in [&[0xFFu8; 3][..], &[0x00; 1], &[0xAB; 400]] {
            if let Ok(m) = d.decode(junk, &mut frame) {
                assert!(m <= frame.len());
            }
        }
        assert!(d.decode(&[], &mut frame).is_err());
        // After garbage the decoder still decodes.
        let n = e.encode(&input[..160], &mut pkt).unwrap();
        assert_eq!(d.decode(&pkt[..n], &mut frame).unwrap(), 160);
        assert!(Encoder::new(44100, 24000, false, 0).is_err());
    }
}
