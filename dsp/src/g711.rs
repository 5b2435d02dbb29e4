//! G.711 μ-law and A-law, bit-exact with the ITU-T reference (Sun's g711.c).

const SEG_UEND: [i16; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
const SEG_AEND: [i16; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
const ULAW_BIAS: i16 = 0x84;

fn segment(v: i16, table: &[i16; 8]) -> usize {
    table.iter().position(|&end| v <= end).unwrap_or(8)
}

pub fn ulaw_encode(pcm: i16) -> u8 {
    let mut v = pcm >> 2;
    let mask: u8 = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    v = v.min(8159) + (ULAW_BIAS >> 2);
    let seg = segment(v, &SEG_UEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let u = ((seg as u8) << 4) | ((v >> (seg + 1)) & 0x0F) as u8;
    u ^ mask
}

pub const fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let t = ((((u & 0x0F) as i16) << 3) + ULAW_BIAS) << ((u & 0x70) >> 4);
    if u & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    }
}

const fn table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode(i as u8)
        } else {
            ulaw_decode(i as u8)
        };
        i += 1;
    }
    t
}

/// Decoding by table: the hot path's cost is one load per sample.
static ULAW_TABLE: [i16; 256] = table(false);
static ALAW_TABLE: [i16; 256] = table(true);

pub fn alaw_encode(pcm: i16) -> u8 {
    let mut v = pcm >> 3;
    let mask: u8 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &SEG_AEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mut a = (seg as u8) << 4;
    a |= if seg < 2 {
        (v >> 1) & 0x0F
    } else {
        (v >> seg) & 0x0F
    } as u8;
    a ^ mask
}

pub const fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0F) as i16) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (seg - 1),
    }
    if a & 0x80 != 0 { t } else { -t }
}

/// Which G.711 law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    Mu,
    A,
}

impl Law {
    /// The code for silence (zero amplitude).
    pub fn silence_byte(self) -> u8 {
        match self {
            Law::Mu => 0xFF,
            Law::A => 0xD5,
        }
    }

    pub fn decode_into(self, payload: &[u8], out: &mut [i16]) -> usize {
        let n = payload.len().min(out.len());
        let t = match self {
            Law::Mu => &ULAW_TABLE,
            Law::A => &ALAW_TABLE,
        };
        for (o, &c) in out[..n].iter_mut().zip(payload) {
            *o = t[c as usize];
        }
        n
    }

    pub fn encode_into(self, pcm: &[i16], out: &mut [u8]) -> usize {
        let n = pcm.len().min(out.len());
        let f = match self {
            Law::Mu => ulaw_encode,
            Law::A => alaw_encode,
        };
        for (o, &s) in out[..n].iter_mut().zip(pcm) {
            *o = f(s);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_reference_values() {
        // From the G.711 tables: 0xFF and 0x7F are ±0, 0x80 is +32124, 0x00 is -32124.
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0xF0), 120);
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
    }

    #[test]
    fn alaw_reference_values() {
        // 0xD5 is +8, 0x55 is -8, 0xAA is +32256, 0x2A is -32256.
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_decodes_to_the_g711_table_value() {
        // G.711 Tables 1a/2a: μ-law magnitude (14-bit) = ((2m + 33) << e) - 33,
        // A-law (13-bit) = 2m + 1 for e = 0, else (2m + 33) << (e - 1); the
        // 16-bit values are those scaled by 4 and 8. μ-law codes are sent
        // inverted, A-law codes with even bits inverted (XOR 0x55).
        for c in 0..=255u8 {
            let u = !c;
            let (e, m) = (((u >> 4) & 7) as i32, (u & 15) as i32);
            let mag = (((2 * m + 33) << e) - 33) * 4;
            let want = if u & 0x80 != 0 { -mag } else { mag };
            assert_eq!(ulaw_decode(c) as i32, want, "μ-law {c:#04x}");
            let a = c ^ 0x55;
            let (e, m) = (((a >> 4) & 7) as i32, (a & 15) as i32);
            let mag = if e == 0 {
                2 * m + 1
            } else {
                (2 * m + 33) << (e - 1)
            } * 8;
            let want = if a & 0x80 != 0 { mag } else { -mag };
            assert_eq!(alaw_decode(c) as i32, want, "A-law {c:#04x}");
            // The lookup tables agree with the functions.
            let mut out = [0i16; 1];
            Law::Mu.decode_into(&[c], &mut out);
            assert_eq!(out[0], ulaw_decode(c));
            Law::A.decode_into(&[c], &mut out);
            assert_eq!(out[0], alaw_decode(c));
        }
    }

    #[test]
    fn every_code_round_trips() {
        for c in 0..=255u8 {
            // μ-law 0x7F is "negative zero"; it decodes to 0, which encodes as 0xFF.
            if c != 0x7F {
                assert_eq!(ulaw_encode(ulaw_decode(c)), c, "μ-law {c:#04x}");
            }
            assert_eq!(alaw_encode(alaw_decode(c)), c, "A-law {c:#04x}");
        }
    }

    #[test]
    fn encoding_is_monotonic() {
        let mut last = i16::MIN;
        for x in (i16::MIN..=i16::MAX).step_by(7) {
            let d = ulaw_decode(ulaw_encode(x));
            assert!(d >= last, "μ-law not monotonic at {x}");
            last = d;
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Encoding then decoding any sample lands within one quantisation
        /// step of it, and re-encoding the result is stable.
        #[test]
        fn round_trip_error_is_bounded(x in any::<i16>()) {
            for (enc, dec, rel) in [(ulaw_encode as fn(i16) -> u8, ulaw_decode as fn(u8) -> i16, 0.07), (alaw_encode, alaw_decode, 0.07)] {
                let y = dec(enc(x));
                let err = (x as i32 - y as i32).abs() as f64;
                prop_assert!(err <= (x as f64).abs() * rel + 16.0, "{x} -> {y}");
                prop_assert_eq!(enc(y), enc(x));
            }
        }
    }
}
