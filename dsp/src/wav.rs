//! WAV files through hound: any format in, 16 kHz mono f32 out; 16-bit out.
//! G.711 WAVs (μ-law and A-law, as phone systems and voicemail export
//! them), which hound does not read, are read here.

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
    let reader = match hound::WavReader::open(path) {
        Ok(r) => r,
        // hound refuses G.711 one way or another: if it is G.711, read it
        // here, else hound's error stands.
        Err(e) => return read_g711(path)?.ok_or(e.into()),
    };
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

/// WAVE_FORMAT_ALAW and WAVE_FORMAT_MULAW (RFC 2361): 8-bit G.711 codes.
/// `None` when the file is not a G.711 WAV at all.
fn read_g711(path: &Path) -> Result<Option<Audio>, Error> {
    let bytes = std::fs::read(path).map_err(hound::Error::IoError)?;
    let bad = |why: &str| Error::Unsupported(format!("{}: {why}", path.display()));
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Ok(None);
    }
    let (mut fmt, mut data) = (None, None);
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let body = &bytes[at + 8..(at + 8).saturating_add(len).min(bytes.len())];
        match id {
            b"fmt " => fmt = Some(body),
            b"data" => data = Some(body),
            _ => {}
        }
        // Chunks are padded to an even length.
        at = (at + 8).saturating_add(len + (len & 1));
    }
    let Some(fmt) = fmt.filter(|f| f.len() >= 16) else {
        return Ok(None);
    };
    let u16_at = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
    let law = match u16_at(0) {
        6 => crate::g711::Law::A,
        7 => crate::g711::Law::Mu,
        _ => return Ok(None),
    };
    let data = data.ok_or_else(|| bad("no data chunk"))?;
    let ch = u16_at(2).max(1) as usize;
    let rate = u32::from_le_bytes(fmt[4..8].try_into().unwrap());
    if u16_at(14) != 8 {
        return Err(bad("G.711 WAV samples must be 8 bits"));
    }
    let mut pcm = vec![0i16; data.len()];
    law.decode_into(data, &mut pcm);
    let samples = pcm
        .chunks(ch)
        .map(|f| f.iter().map(|&s| s as f32 / 32768.0).sum::<f32>() / ch as f32)
        .collect();
    Ok(Some(Audio { rate, samples }))
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

    /// A G.711 WAV as RFC 2361 lays it out, with an odd-sized chunk before
    /// the data to check the padding rule.
    fn g711_wav(tag: u16, law: crate::g711::Law, channels: u16, pcm: &[i16]) -> Vec<u8> {
        let mut data = vec![0u8; pcm.len()];
        law.encode_into(pcm, &mut data);
        let mut fmt = Vec::new();
        fmt.extend(tag.to_le_bytes());
        fmt.extend(channels.to_le_bytes());
        fmt.extend(8000u32.to_le_bytes());
        fmt.extend((8000u32 * channels as u32).to_le_bytes());
        fmt.extend(channels.to_le_bytes());
        fmt.extend(8u16.to_le_bytes());
        fmt.extend(0u16.to_le_bytes()); // cbSize
        let mut body = b"WAVE".to_vec();
        for (id, chunk) in [
            (b"fmt ", &fmt[..]),
            (b"note", &b"odd"[..]),
            (b"data", &data[..]),
        ] {
            body.extend(id);
            body.extend((chunk.len() as u32).to_le_bytes());
            body.extend(chunk);
            if chunk.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut out = b"RIFF".to_vec();
        out.extend((body.len() as u32).to_le_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn mu_law_and_a_law_wavs_read() {
        let pcm: Vec<i16> = (0..1600)
            .map(|i| ((i as f32 * 0.2).sin() * 12000.0) as i16)
            .collect();
        let p = std::env::temp_dir().join(format!("handlet-g711wav-{}.wav", std::process::id()));
        for (tag, law) in [(7, crate::g711::Law::Mu), (6, crate::g711::Law::A)] {
            std::fs::write(&p, g711_wav(tag, law, 1, &pcm)).unwrap();
            let a = read(&p).unwrap();
            assert_eq!((a.rate, a.samples.len()), (8000, 1600));
            for (got, want) in a.samples.iter().zip(&pcm) {
                assert!(
                    (got * 32768.0 - *want as f32).abs() < 400.0,
                    "{got} vs {want}"
                );
            }
        }
        // Stereo mixes down; a G.711 WAV with 16-bit samples is refused.
        let stereo: Vec<i16> = pcm.iter().flat_map(|&s| [s, s]).collect();
        std::fs::write(&p, g711_wav(7, crate::g711::Law::Mu, 2, &stereo)).unwrap();
        assert_eq!(read(&p).unwrap().samples.len(), 1600);
        let mut bad = g711_wav(7, crate::g711::Law::Mu, 1, &pcm);
        bad[34] = 16; // bits per sample
        std::fs::write(&p, bad).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("must be 8 bits"), "{e}");
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
