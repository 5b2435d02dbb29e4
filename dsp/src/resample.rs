//! Streaming mono resampler to and from the 16 kHz the speech models use,
//! on rubato's synchronous FFT resampler. Buffers are allocated once.

use crate::Error;
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};

pub struct Resampler {
    inner: Option<Fft<f32>>,
    pending: Vec<f32>,
    out: Vec<f32>,
    chunk: usize,
    delay_left: usize,
}

impl Resampler {
    /// `chunk`: input frames per processing block (e.g. 20 ms at the input rate).
    pub fn new(from_hz: u32, to_hz: u32, chunk: usize) -> Result<Self, Error> {
        let inner = if from_hz == to_hz {
            None
        } else {
            Some(
                Fft::<f32>::new(from_hz as usize, to_hz as usize, chunk, 1, FixedSync::Input)
                    .map_err(|e| Error::Resample(e.to_string()))?,
            )
        };
        let max_out = inner
            .as_ref()
            .map(|r| r.output_frames_max())
            .unwrap_or(chunk);
        let delay_left = inner.as_ref().map(|r| r.output_delay()).unwrap_or(0);
        Ok(Resampler {
            inner,
            pending: Vec::with_capacity(chunk * 2),
            out: vec![0.0; max_out],
            chunk,
            delay_left,
        })
    }

    /// Added latency, in output frames.
    pub fn delay_frames(&self) -> usize {
        self.inner.as_ref().map(|r| r.output_delay()).unwrap_or(0)
    }

    /// Feed samples; resampled output is appended to `out`. The resampler's
    /// leading delay is trimmed so output lines up with input.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), Error> {
        let Some(r) = self.inner.as_mut() else {
            out.extend_from_slice(input);
            return Ok(());
        };
        self.pending.extend_from_slice(input);
        let mut offset = 0;
        while self.pending.len() - offset >= self.chunk {
            let inp =
                InterleavedSlice::new(&self.pending[offset..offset + self.chunk], 1, self.chunk)
                    .map_err(|e| Error::Resample(e.to_string()))?;
            let cap = self.out.len();
            let mut o = InterleavedSlice::new_mut(&mut self.out[..], 1, cap)
                .map_err(|e| Error::Resample(e.to_string()))?;
            let (used, made) = r
                .process_into_buffer(&inp, &mut o, None)
                .map_err(|e| Error::Resample(e.to_string()))?;
            offset += used;
            let skip = self.delay_left.min(made);
            self.delay_left -= skip;
            out.extend_from_slice(&self.out[skip..made]);
        }
        self.pending.drain(..offset);
        Ok(())
    }

    /// Flush what is buffered (end of stream), padding with silence.
    pub fn flush(&mut self, out: &mut Vec<f32>) -> Result<(), Error> {
        let Some(r) = self.inner.as_ref() else {
            return Ok(());
        };
        let ratio = r.output_frames_max() as f64 / self.chunk as f64;
        let want = ((self.pending.len() as f64) * ratio).round() as usize + out.len();
        let delay = self.delay_frames();
        let pad = self.chunk + delay * self.chunk / r.output_frames_max().max(1) + self.chunk;
        let zeros = vec![0.0; pad];
        let before = out.len();
        self.process(&zeros, out)?;
        out.truncate(want.max(before));
        Ok(())
    }

    /// Resample a whole clip.
    pub fn clip(samples: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>, Error> {
        if from_hz == to_hz {
            return Ok(samples.to_vec());
        }
        let mut r = Fft::<f32>::new(from_hz as usize, to_hz as usize, 1024, 1, FixedSync::Input)
            .map_err(|e| Error::Resample(e.to_string()))?;
        let mut out = vec![0.0; r.process_all_needed_output_len(samples.len())];
        let inp = InterleavedSlice::new(samples, 1, samples.len())
            .map_err(|e| Error::Resample(e.to_string()))?;
        let cap = out.len();
        let mut o = InterleavedSlice::new_mut(&mut out[..], 1, cap)
            .map_err(|e| Error::Resample(e.to_string()))?;
        let (_, made) = r
            .process_all_into_buffer(&inp, &mut o, samples.len(), None)
            .map_err(|e| Error::Resample(e.to_string()))?;
        out.truncate(made);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * hz * std::f32::consts::TAU / rate as f32).sin() * 0.5)
            .collect()
    }

    /// Every conversion the product makes, in 20 ms input frames: 8 and
    /// 48 kHz callers to the models' 16 kHz, and 16 kHz prompts back out to
    /// 8 and 48 kHz legs. Length, pitch and timing are kept; the added
    /// latency is what `delay_frames` says, at most one frame.
    #[test]
    fn every_product_rate_pair_streams_in_20ms_frames() {
        for (from, to) in [
            (8000u32, 16000u32),
            (48000, 16000),
            (16000, 8000),
            (16000, 48000),
        ] {
            let frame = from as usize / 50;
            let mut r = Resampler::new(from, to, frame).unwrap();
            let delay_ms = r.delay_frames() as f32 * 1000.0 / to as f32;
            eprintln!(
                "{from} -> {to} Hz: {} frames = {delay_ms:.2} ms",
                r.delay_frames()
            );
            assert!(
                delay_ms > 0.0 && delay_ms <= 20.0,
                "{from}->{to}: {delay_ms} ms"
            );

            // One second of 440 Hz: one second out, 440 cycles a second.
            let input = sine(from, 440.0, from as usize);
            let mut out = Vec::new();
            for f in input.chunks(frame) {
                r.process(f, &mut out).unwrap();
            }
            r.flush(&mut out).unwrap();
            let to_n = to as usize;
            assert!(
                out.len().abs_diff(to_n) <= to_n / 50,
                "{from}->{to}: {}",
                out.len()
            );
            let mid = &out[to_n / 8..to_n * 7 / 8];
            let zc = mid.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
            assert!(zc.abs_diff(330) <= 3, "{from}->{to}: {zc} cycles in 0.75 s");

            // An impulse at 100 ms comes out at 100 ms: the delay is trimmed.
            let mut r = Resampler::new(from, to, frame).unwrap();
            let mut input = vec![0.0f32; from as usize / 2];
            input[from as usize / 10] = 1.0;
            let mut out = Vec::new();
            for f in input.chunks(frame) {
                r.process(f, &mut out).unwrap();
            }
            let peak = out
                .iter()
                .enumerate()
                .fold(
                    (0, 0f32),
                    |a, (i, &v)| if v.abs() > a.1 { (i, v.abs()) } else { a },
                )
                .0;
            let want = to as usize / 10;
            assert!(
                peak.abs_diff(want) <= 2,
                "{from}->{to}: peak at {peak}, want {want}"
            );
        }
    }

    #[test]
    fn same_rate_is_passthrough() {
        let mut r = Resampler::new(16000, 16000, 320).unwrap();
        let mut out = Vec::new();
        r.process(&[0.25; 320], &mut out).unwrap();
        assert_eq!(out, vec![0.25; 320]);
    }
}
