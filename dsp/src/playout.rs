//! Audio the agent plays to a caller: call-progress tones and prompts (a WAV
//! of any rate), cut into 20 ms frames and encoded in the leg's codec.

use crate::Error;
use crate::g711::Law;
use crate::resample::Resampler;
use std::path::Path;

/// A call-progress tone: two frequencies (the second may be 0) and an on/off cadence.
#[derive(Debug, Clone, Copy)]
pub struct ToneSpec {
    pub freqs: [f32; 2],
    /// (on ms, off ms) pairs, repeated.
    pub cadence: &'static [(u32, u32)],
    /// Peak level, 0..1.
    pub level: f32,
}

/// UK ringback (BT SIN 350): 400 + 450 Hz, 0.4 s on, 0.2 s off, 0.4 s on, 2 s off.
pub const RINGBACK_UK: ToneSpec = ToneSpec {
    freqs: [400.0, 450.0],
    cadence: &[(400, 200), (400, 2000)],
    level: 0.2,
};
/// North American ringback: 440 + 480 Hz, 2 s on, 4 s off.
pub const RINGBACK_US: ToneSpec = ToneSpec {
    freqs: [440.0, 480.0],
    cadence: &[(2000, 4000)],
    level: 0.2,
};
/// Hold: a soft 440 Hz pip every 4 s, so a held caller knows the line is
/// still open.
pub const HOLD: ToneSpec = ToneSpec {
    freqs: [440.0, 0.0],
    cadence: &[(250, 3750)],
    level: 0.15,
};
/// "Recording starts" beep: 1 kHz for 200 ms, once.
pub const BEEP: ToneSpec = ToneSpec {
    freqs: [1000.0, 0.0],
    cadence: &[(200, u32::MAX)],
    level: 0.3,
};

pub struct Tone {
    spec: ToneSpec,
    rate: u32,
    n: u64,
}

impl Tone {
    pub fn new(spec: ToneSpec, rate: u32) -> Tone {
        Tone { spec, rate, n: 0 }
    }

    fn on_at(&self, ms: u64) -> bool {
        let period: u64 = self
            .spec
            .cadence
            .iter()
            .map(|&(a, b)| a as u64 + b as u64)
            .sum();
        let mut t = if period > 0 { ms % period } else { ms };
        for &(on, off) in self.spec.cadence {
            if t < on as u64 {
                return true;
            }
            t -= on as u64;
            if t < off as u64 {
                return false;
            }
            t -= off as u64;
        }
        false
    }

    /// Fill `out` with the next samples.
    pub fn fill(&mut self, out: &mut [f32]) {
        let amp = self.spec.level / if self.spec.freqs[1] > 0.0 { 2.0 } else { 1.0 };
        for o in out.iter_mut() {
            let ms = self.n * 1000 / self.rate as u64;
            *o = if self.on_at(ms) {
                let t = self.n as f64 / self.rate as f64;
                self.spec
                    .freqs
                    .iter()
                    .filter(|&&f| f > 0.0)
                    .map(|&f| (std::f64::consts::TAU * f as f64 * t).sin() as f32 * amp)
                    .sum()
            } else {
                0.0
            };
            self.n += 1;
        }
    }
}

/// A recorded prompt, resampled once to the leg's rate, played frame by frame.
pub struct Prompt {
    samples: Vec<f32>,
    pos: usize,
}

impl Prompt {
    /// A prompt already at the leg's rate.
    pub fn new(samples: Vec<f32>) -> Prompt {
        Prompt { samples, pos: 0 }
    }

    pub fn from_wav(path: &Path, rate: u32) -> Result<Prompt, Error> {
        let a = crate::wav::read(path)?;
        Ok(Prompt {
            samples: Resampler::clip(&a.samples, a.rate, rate)?,
            pos: 0,
        })
    }

    /// Next frame into `out`, padded with silence at the end; false once finished.
    pub fn fill(&mut self, out: &mut [f32]) -> bool {
        if self.pos >= self.samples.len() {
            out.fill(0.0);
            return false;
        }
        let n = out.len().min(self.samples.len() - self.pos);
        out[..n].copy_from_slice(&self.samples[self.pos..self.pos + n]);
        out[n..].fill(0.0);
        self.pos += n;
        true
    }

    pub fn duration_samples(&self) -> usize {
        self.samples.len()
    }
}

/// Encodes 20 ms frames for the leg's codec.
pub enum FrameEncoder {
    G711(Law),
    /// 16 kHz frames.
    G722(Box<crate::g722::Encoder>),
    Opus(Box<crate::opus::Encoder>),
}

/// `frame` as 16-bit samples in `pcm`, cut to its length.
fn to_pcm<'a>(frame: &[f32], pcm: &'a mut [i16]) -> &'a [i16] {
    let n = frame.len().min(pcm.len());
    for (p, &s) in pcm[..n].iter_mut().zip(frame) {
        *p = crate::wav::to_i16(s);
    }
    &pcm[..n]
}

impl FrameEncoder {
    pub fn encode(&mut self, frame: &[f32], out: &mut [u8]) -> Result<usize, Error> {
        // Up to 60 ms (480 samples at 8 kHz, 960 at 16 kHz); longer frames
        // are cut, as decode_into does.
        match self {
            FrameEncoder::G711(law) => Ok(law.encode_into(to_pcm(frame, &mut [0i16; 480]), out)),
            FrameEncoder::G722(e) => Ok(e.encode_into(to_pcm(frame, &mut [0i16; 960]), out)),
            FrameEncoder::Opus(e) => e.encode(frame, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_energy(v: &[f32]) -> Vec<bool> {
        v.chunks(160)
            .map(|f| f.iter().map(|s| s * s).sum::<f32>() > 0.01)
            .collect()
    }

    #[test]
    fn uk_ringback_has_its_cadence() {
        let mut t = Tone::new(RINGBACK_UK, 8000);
        let mut v = vec![0.0; 8000 * 6];
        t.fill(&mut v);
        let on = frame_energy(&v);
        // 20 ms frames: 20 on, 10 off, 20 on, 100 off, then again.
        let expect: Vec<bool> = [
            (20, true),
            (10, false),
            (20, true),
            (100, false),
            (20, true),
            (10, false),
            (20, true),
            (100, false),
        ]
        .iter()
        .flat_map(|&(n, b)| std::iter::repeat_n(b, n))
        .collect();
        assert_eq!(on, expect);
    }

    #[test]
    fn beep_is_one_kilohertz_once() {
        let mut t = Tone::new(BEEP, 16000);
        let mut v = vec![0.0; 16000];
        t.fill(&mut v);
        let zc = v[..3200]
            .windows(2)
            .filter(|w| w[0] <= 0.0 && w[1] > 0.0)
            .count();
        assert!((199..=201).contains(&zc), "{zc} cycles in 200 ms");
        assert!(v[3300..].iter().all(|&s| s == 0.0));
    }

    #[test]
    fn prompt_of_any_rate_plays_at_the_leg_rate_through_g711() {
        let p = std::env::temp_dir().join(format!("handlet-prompt-{}.wav", std::process::id()));
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&p, spec).unwrap();
        for i in 0..44100 {
            let s = ((i as f32 * 440.0 * std::f32::consts::TAU / 44100.0).sin() * 8000.0) as i16;
            w.write_sample(s).unwrap();
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        let mut prompt = Prompt::from_wav(&p, 8000).unwrap();
        std::fs::remove_file(&p).ok();
        assert!((prompt.duration_samples() as i64 - 8000).abs() < 100);
        let mut enc = FrameEncoder::G711(Law::Mu);
        let mut frame = [0f32; 160];
        let mut payload = [0u8; 160];
        let mut frames = 0;
        let mut decoded = [0i16; 160];
        let mut energy = 0f64;
        while prompt.fill(&mut frame) {
            assert_eq!(enc.encode(&frame, &mut payload).unwrap(), 160);
            Law::Mu.decode_into(&payload, &mut decoded);
            energy += decoded.iter().map(|&s| (s as f64).powi(2)).sum::<f64>();
            frames += 1;
        }
        assert_eq!(frames, 50);
        let rms = (energy / (frames * 160) as f64).sqrt();
        assert!((rms - 8000.0 / 2f64.sqrt()).abs() < 400.0, "rms {rms}");
    }

    #[test]
    fn opus_frames_encode() {
        let mut enc = FrameEncoder::Opus(Box::new(
            crate::opus::Encoder::new(16000, 24000, false, 0).unwrap(),
        ));
        let mut t = Tone::new(RINGBACK_US, 16000);
        let mut frame = [0f32; 320];
        let mut out = [0u8; 400];
        t.fill(&mut frame);
        assert!(enc.encode(&frame, &mut out).unwrap() > 0);
    }
}
