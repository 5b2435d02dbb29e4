//! WAV files through hound: any format in, 16 kHz mono f32 out; 16-bit out.

use crate::Error;
use crate::resample::Resampler;
use std::path::Path;

/// Mono samples in [-1, 1] and their rate.
#[derive(Debug, Clone)]
pub struct Audio {
    pub rate: u32,
    pub samples: Vec<f32>,
}

impl Audio {
    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1000 / self.rate.max(1) as u64
    }
}

/// Read a WAV of any rate, channel count and sample format; channels are mixed down.
pub fn read(path: &Path) -> Result<Audio, Error> {
    let reader = hound::WavReader::open(path)?;
    let spec = reader.spec();
    let ch = spec.channels.max(1) as usize;
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.into_samples::<f32>().collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()?
        }
    };
    let samples = interleaved
        .chunks(ch)
        .map(|f| f.iter().sum::<f32>() / ch as f32)
        .collect();
    Ok(Audio {
        rate: spec.sample_rate,
        samples,
    })
}

/// Read and convert to the models' 16 kHz.
pub fn read_16k(path: &Path) -> Result<Audio, Error> {
    let a = read(path)?;
    if a.rate == 0 {
        return Err(Error::Unsupported("sample rate 0".into()));
    }
    Ok(Audio {
        rate: 16_000,
        samples: Resampler::clip(&a.samples, a.rate, 16_000)?,
    })
}

/// Write 16-bit mono.
pub fn write_i16(path: &Path, rate: u32, samples: &[i16]) -> Result<(), Error> {
    write_interleaved(path, rate, 1, samples)
}

/// Write 16-bit audio with `channels` interleaved channels.
pub fn write_interleaved(
    path: &Path,
    rate: u32,
    channels: u16,
    samples: &[i16],
) -> Result<(), Error> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)?;
    for &s in samples {
        w.write_sample(s)?;
    }
    w.finalize()?;
    Ok(())
}

/// f32 in [-1, 1] to i16 with saturation.
pub fn to_i16(s: f32) -> i16 {
    (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_8k_reads_as_16k_mono() {
        let p = std::env::temp_dir().join(format!("handlet-wav-{}.wav", std::process::id()));
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&p, spec).unwrap();
        for i in 0..8000 {
            let v = ((i as f32 * 0.1).sin() * 10000.0) as i16;
            w.write_sample(v).unwrap();
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
        let a = read_16k(&p).unwrap();
        assert_eq!(a.rate, 16000);
        assert!(
            (a.samples.len() as i64 - 16000).abs() < 200,
            "{}",
            a.samples.len()
        );
        std::fs::remove_file(&p).ok();
    }

    #[test]
    fn not_a_wav_is_an_error() {
        let p = std::env::temp_dir().join(format!("handlet-notwav-{}.wav", std::process::id()));
        std::fs::write(&p, b"hello").unwrap();
        assert!(read(&p).is_err());
        std::fs::remove_file(&p).ok();
    }
}
