//! Slaney-style mel filterbank, as librosa's `filters.mel(sr, n_fft, n_mels)`
//! computes it (htk=False, norm="slaney"). whisper.cpp reads these filters from
//! the model file, so they must match what OpenAI's models were trained with.

/// Returns `n_mels` rows of `n_fft / 2 + 1` weights, row-major.
pub fn filters(sample_rate: f64, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let n_bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..n_bins)
        .map(|i| i as f64 * (sample_rate / 2.0) / (n_bins - 1) as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut out = vec![0f32; n_mels * n_bins];
    for m in 0..n_mels {
        let fdiff_lo = mel_f[m + 1] - mel_f[m];
        let fdiff_hi = mel_f[m + 2] - mel_f[m + 1];
        let enorm = 2.0 / (mel_f[m + 2] - mel_f[m]);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - mel_f[m]) / fdiff_lo;
            let upper = (mel_f[m + 2] - f) / fdiff_hi;
            out[m * n_bins + k] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    out
}

const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn logstep() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / logstep()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (logstep() * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_librosa_reference_points() {
        // Reference values read from `whisper/assets/mel_filters.npz` (`mel_80`)
        // in the openai-whisper 20250625 sdist on PyPI.
        let f = filters(16000.0, 400, 80);
        assert_eq!(f.len(), 80 * 201);
        let close = |got: f32, want: f32| (got - want).abs() < 1e-7;
        assert!(close(f[1], 0.024_862_595), "{}", f[1]);
        assert!(close(f[201 + 2], 0.022_871_772), "{}", f[203]);
        let row40 = &f[40 * 201..41 * 201];
        let (argmax, max) = row40
            .iter()
            .enumerate()
            .fold((0, 0f32), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
        assert_eq!(argmax, 43);
        assert!(close(max, 0.014_735_566), "{max}");
        let row79_max = f[79 * 201..].iter().cloned().fold(0f32, f32::max);
        assert!(close(row79_max, 0.003_164_712), "{row79_max}");
        // Every filter has some weight, none negative.
        for m in 0..80 {
            let row = &f[m * 201..(m + 1) * 201];
            assert!(row.iter().all(|&w| w >= 0.0));
            assert!(row.iter().any(|&w| w > 0.0), "row {m} empty");
        }
    }
}
