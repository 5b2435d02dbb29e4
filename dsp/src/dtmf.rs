//! In-band DTMF detection (Goertzel) for callers whose phones send key tones
//! in the audio instead of RFC 4733 events. 8 kHz input, any frame size.
//!
//! Blocks of 205 samples (25.6 ms, the classic size whose bins separate the
//! DTMF frequencies). A block is a hit when one row and one column tone stand
//! out: each above a floor, each ≥ 6 dB over the other tones of its group,
//! twist within +4 dB (column louder) / −8 dB (row louder), and the pair
//! carrying most of the block's energy — which is what keeps speech out. A
//! digit is reported once after two consecutive hits (tones ≥ ~50–77 ms
//! depending on alignment; phones send 70–100 ms).

const N: usize = 205;
const RATE: f32 = 8000.0;
const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Each tone is measured at its nominal frequency and ±1.2 %, keeping the
/// strongest: one 205-point bin is 39 Hz wide, too narrow alone for the
/// ±1.5 % Q.24 asks receivers to accept.
const DETUNE: [f32; 3] = [1.0, 1.012, 0.988];

pub struct Detector {
    coeffs: [[f32; 3]; 8],
    block: [f32; N],
    fill: usize,
    last_hit: Option<char>,
    reported: bool,
}

impl Default for Detector {
    fn default() -> Self {
        Self::new()
    }
}

impl Detector {
    pub fn new() -> Self {
        let mut coeffs = [[0f32; 3]; 8];
        for (c, f) in coeffs.iter_mut().zip(ROWS.iter().chain(COLS.iter())) {
            for (k, d) in c.iter_mut().zip(DETUNE) {
                *k = 2.0 * (std::f32::consts::TAU * f * d / RATE).cos();
            }
        }
        Detector {
            coeffs,
            block: [0.0; N],
            fill: 0,
            last_hit: None,
            reported: false,
        }
    }

    /// Feed 8 kHz samples in [-1, 1]; returns a digit when one is recognised.
    /// Allocation-free.
    pub fn push(&mut self, samples: &[f32]) -> Option<char> {
        let mut found = None;
        for &s in samples {
            self.block[self.fill] = s;
            self.fill += 1;
            if self.fill == N {
                self.fill = 0;
                let hit = self.analyse();
                if hit.is_some() && hit == self.last_hit {
                    if !self.reported {
                        self.reported = true;
                        found = hit;
                    }
                } else {
                    self.reported = false;
                }
                self.last_hit = hit;
            }
        }
        found
    }

    fn analyse(&self) -> Option<char> {
        let energy: f32 = self.block.iter().map(|s| s * s).sum();
        // Below about -40 dBFS there is nothing to decide.
        if energy < 1e-4 * N as f32 / 2.0 {
            return None;
        }
        let mut power = [0f32; 8];
        for (p, cs) in power.iter_mut().zip(&self.coeffs) {
            for &c in cs {
                let (mut s1, mut s2) = (0f32, 0f32);
                for &x in &self.block {
                    let s0 = x + c * s1 - s2;
                    s2 = s1;
                    s1 = s0;
                }
                *p = p.max(s1 * s1 + s2 * s2 - c * s1 * s2);
            }
        }
        let (ri, r) = max_of(&power[..4]);
        let (ci, c) = max_of(&power[4..]);
        // Each tone well above the rest of its group (6 dB).
        let others_ok = |group: &[f32], i: usize, p: f32| {
            group
                .iter()
                .enumerate()
                .all(|(j, &q)| j == i || q * 4.0 < p)
        };
        if !others_ok(&power[..4], ri, r) || !others_ok(&power[4..], ci, c) {
            return None;
        }
        // Twist: column up to 4 dB louder, row up to 8 dB louder.
        if c > r * 2.512 || r > c * 6.31 {
            return None;
        }
        // A sinusoid of amplitude A gives power ≈ (A·N/2)², energy A²·N/2:
        // the pair must carry most of the block's energy.
        let tone_energy = (r + c) * 2.0 / N as f32;
        if tone_energy < 0.6 * energy {
            return None;
        }
        Some(KEYS[ri][ci])
    }
}

fn max_of(v: &[f32]) -> (usize, f32) {
    v.iter()
        .enumerate()
        .fold((0, f32::MIN), |a, (i, &p)| if p > a.1 { (i, p) } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(row_hz: f32, col_hz: f32, row_amp: f32, col_amp: f32, ms: usize) -> Vec<f32> {
        (0..ms * 8)
            .map(|i| {
                let t = i as f32 / RATE;
                row_amp * (std::f32::consts::TAU * row_hz * t).sin()
                    + col_amp * (std::f32::consts::TAU * col_hz * t).sin()
            })
            .collect()
    }

    fn detect(samples: &[f32]) -> String {
        let mut d = Detector::new();
        let mut out = String::new();
        for f in samples.chunks(160) {
            out.extend(d.push(f));
        }
        out
    }

    fn key_freqs(k: char) -> (f32, f32) {
        for (r, row) in KEYS.iter().enumerate() {
            for (c, &key) in row.iter().enumerate() {
                if key == k {
                    return (ROWS[r], COLS[c]);
                }
            }
        }
        unreachable!()
    }

    fn sequence(keys: &str, f: impl Fn(f32) -> f32, ms: usize) -> Vec<f32> {
        let mut v = Vec::new();
        for k in keys.chars() {
            let (r, c) = key_freqs(k);
            v.extend(tone(f(r), f(c), 0.3, 0.3, ms));
            v.extend(std::iter::repeat_n(0.0, 8 * 60));
        }
        v
    }

    #[test]
    fn all_sixteen_keys() {
        let keys = "123A456B789C*0#D";
        assert_eq!(detect(&sequence(keys, |f| f, 100)), keys);
    }

    #[test]
    fn frequency_tolerance() {
        // Q.24: accept within ±1.5 %.
        assert_eq!(detect(&sequence("159#", |f| f * 1.015, 100)), "159#");
        assert_eq!(detect(&sequence("159#", |f| f * 0.985, 100)), "159#");
        // Far off (±6 %) is not a key.
        assert_eq!(detect(&sequence("159#", |f| f * 1.06, 100)), "");
    }

    #[test]
    fn twist_limits() {
        let (r, c) = key_freqs('5');
        assert_eq!(detect(&tone(r, c, 0.4, 0.4 * 0.45, 100)), "5"); // row 7 dB louder: accepted
        assert_eq!(detect(&tone(r, c, 0.4, 0.4 * 0.25, 100)), ""); // row 12 dB louder: rejected
        assert_eq!(detect(&tone(r, c, 0.2 * 0.45, 0.2, 100)), ""); // column 7 dB louder: rejected
    }

    #[test]
    fn too_short_is_not_a_digit_and_held_key_is_one_digit() {
        let (r, c) = key_freqs('7');
        assert_eq!(detect(&tone(r, c, 0.3, 0.3, 30)), "");
        assert_eq!(detect(&tone(r, c, 0.3, 0.3, 2000)), "7");
    }

    #[test]
    fn noise_and_single_tones_are_not_digits() {
        let mut x: u32 = 1;
        let noise: Vec<f32> = (0..80_000)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        assert_eq!(detect(&noise), "");
        assert_eq!(detect(&tone(697.0, 1209.0, 0.5, 0.0, 500)), "");
        // Ringback (440 + 480 Hz) is not DTMF.
        assert_eq!(detect(&tone(440.0, 480.0, 0.3, 0.3, 1000)), "");
    }
}
