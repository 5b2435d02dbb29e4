//! Packet loss concealment for codecs that have none of their own (G.711,
//! G.722), in the spirit of ITU-T G.711 Appendix I. Sans-IO and allocation
//! free after `new`.
//!
//! A lost packet is replaced by repeating the last pitch period of the
//! signal, found by normalised cross-correlation, rather than the last packet
//! as a whole: a voiced sound keeps its pitch instead of buzzing at the
//! packet rate. Seams are overlap-added so no click is heard:
//!
//! * at the start of a loss the last quarter period of real signal fades
//!   into the repeated cycle. To be able to do that the output runs
//!   [`Concealer::delay`] samples (3.75 ms) behind the input;
//! * after 10 and 20 ms of loss the cycle grows to two and then three
//!   periods, so a long loss does not sound like a machine-gun repeat;
//! * from 10 ms in, the level falls by 20 % per 10 ms, reaching silence at
//!   60 ms;
//! * the first packet after a loss fades in from the synthetic signal over
//!   a quarter period plus 4 ms per extra 10 ms lost.

use crate::Error;

pub struct Concealer {
    /// 10 ms at the working rate: the unit of the loss schedule.
    frame: usize,
    pitch_min: usize,
    pitch_max: usize,
    /// Length of the window compared when searching the pitch (20 ms).
    corr_len: usize,
    /// A quarter of the longest period: the output delay.
    delay: usize,
    /// 4 ms: how much longer the fade-in after a loss gets per 10 ms lost.
    fade_step: usize,
    /// The signal as played (real or synthetic), newest last; the last
    /// `delay` samples have not been output yet.
    history: Vec<f32>,
    cycle: Cycle,
    /// The real signal's last quarter period at the start of the loss.
    last_quarter: Vec<f32>,
    scratch: Vec<f32>,
    tail: Vec<f32>,
    /// Samples concealed in the current loss; 0 while packets arrive.
    lost: usize,
}

/// The repeated stretch of signal: a copy of the history when the loss
/// began, of which the last `len` samples (one to three periods) are played
/// in a loop.
struct Cycle {
    buf: Vec<f32>,
    pitch: usize,
    overlap: usize,
    len: usize,
    offset: usize,
}

impl Cycle {
    fn next_into(&mut self, out: &mut [f32]) {
        let start = self.buf.len() - self.len;
        for s in out {
            *s = self.buf[start + self.offset];
            self.offset += 1;
            if self.offset == self.len {
                self.offset = 0;
            }
        }
    }

    /// Make the loop seamless: the cycle's last quarter period fades from
    /// the real signal's ending into what preceded the cycle's start, so
    /// wrapping around continues the waveform.
    fn smooth_seam(&mut self, last_quarter: &[f32]) {
        let h = self.buf.len();
        let ov = self.overlap;
        let before_start = h - self.len - ov;
        for (i, &real) in last_quarter[..ov].iter().enumerate() {
            let w = (i as f32 + 0.5) / ov as f32;
            self.buf[h - ov + i] = real * (1.0 - w) + self.buf[before_start + i] * w;
        }
    }
}

impl Concealer {
    /// `rate_hz`: 8000, 16000, 24000, 32000, 40000 or 48000.
    pub fn new(rate_hz: u32) -> Result<Self, Error> {
        if rate_hz == 0 || !rate_hz.is_multiple_of(8000) || rate_hz > 48000 {
            return Err(Error::Unsupported(format!(
                "concealment at {rate_hz} Hz (a multiple of 8 kHz up to 48 kHz)"
            )));
        }
        let k = (rate_hz / 8000) as usize;
        // Pitch between 66.7 Hz (15 ms) and 200 Hz (5 ms), as Appendix I.
        let pitch_max = 120 * k;
        let delay = pitch_max / 4;
        let hist = 3 * pitch_max + delay;
        Ok(Concealer {
            frame: 80 * k,
            pitch_min: 40 * k,
            pitch_max,
            corr_len: 160 * k,
            delay,
            fade_step: 32 * k,
            history: vec![0.0; hist],
            cycle: Cycle {
                buf: vec![0.0; hist],
                pitch: pitch_max,
                overlap: delay,
                len: pitch_max,
                offset: 0,
            },
            last_quarter: vec![0.0; delay],
            scratch: vec![0.0; 80 * k],
            tail: vec![0.0; 80 * k],
            lost: 0,
        })
    }

    /// Samples the output runs behind the input.
    pub fn delay(&self) -> usize {
        self.delay
    }

    /// True while concealing (no packet since the last loss).
    pub fn concealing(&self) -> bool {
        self.lost > 0
    }

    /// A received stretch of audio (any length). `out` (as long as `input`)
    /// gets the signal [`delay`](Self::delay) samples late, faded in from
    /// the concealment if this ends a loss.
    pub fn good(&mut self, input: &[f32], out: &mut [f32]) {
        let out = &mut out[..input.len()];
        for (inp, o) in input.chunks(self.frame).zip(out.chunks_mut(self.frame)) {
            let n = inp.len();
            self.scratch[..n].copy_from_slice(inp);
            if self.lost > 0 {
                let lost_frames = self.lost.div_ceil(self.frame);
                let fade = (self.cycle.overlap + (lost_frames - 1) * self.fade_step).min(n);
                let synth = &mut self.tail[..fade];
                self.cycle.next_into(synth);
                attenuate(synth, self.lost, self.frame);
                for (i, (s, &c)) in self.scratch[..fade]
                    .iter_mut()
                    .zip(synth.iter())
                    .enumerate()
                {
                    let w = (i as f32 + 0.5) / fade as f32;
                    *s = c * (1.0 - w) + *s * w;
                }
                self.lost = 0;
            }
            push(&mut self.history, self.delay, &self.scratch[..n], o);
        }
    }

    /// `out.len()` samples of audio that never arrived.
    pub fn lost(&mut self, out: &mut [f32]) {
        let mut done = 0;
        while done < out.len() {
            // Never cross a 10 ms boundary of the loss inside one step: the
            // schedule (more periods, fading) changes there.
            let n = (out.len() - done).min(self.frame - self.lost % self.frame);
            self.lost_step(n);
            let o = &mut out[done..done + n];
            push(&mut self.history, self.delay, &self.scratch[..n], o);
            done += n;
        }
    }

    /// Synthesise `n` samples into `scratch`.
    fn lost_step(&mut self, n: usize) {
        if self.lost >= 6 * self.frame {
            self.scratch[..n].fill(0.0);
            self.lost += n;
            return;
        }
        if self.lost == 0 {
            self.start_loss();
        }
        let synth = &mut self.scratch[..n];
        if self.lost == 0 {
            self.cycle.next_into(synth);
        } else if self.lost.is_multiple_of(self.frame) && self.lost / self.frame <= 2 {
            // 10 or 20 ms in: one more period in the loop, faded in from
            // where the shorter loop was.
            let ov = self.cycle.overlap.min(n);
            self.cycle.next_into(&mut self.tail[..ov]);
            let offset = self.cycle.offset % self.cycle.pitch;
            self.cycle.len += self.cycle.pitch;
            self.cycle.offset = offset;
            self.cycle.smooth_seam(&self.last_quarter);
            self.cycle.next_into(synth);
            for (i, (s, &t)) in synth[..ov].iter_mut().zip(&self.tail[..ov]).enumerate() {
                let w = (i as f32 + 0.5) / ov as f32;
                *s = t * (1.0 - w) + *s * w;
            }
        } else {
            self.cycle.next_into(synth);
        }
        attenuate(synth, self.lost, self.frame);
        self.lost += n;
    }

    fn start_loss(&mut self) {
        let pitch = find_pitch(&self.history, self.pitch_min, self.pitch_max, self.corr_len);
        let h = self.history.len();
        let ov = pitch / 4;
        self.cycle.buf.copy_from_slice(&self.history);
        self.cycle.pitch = pitch;
        self.cycle.overlap = ov;
        self.cycle.len = pitch;
        self.cycle.offset = 0;
        self.last_quarter[..ov].copy_from_slice(&self.history[h - ov..]);
        self.cycle.smooth_seam(&self.last_quarter);
        // The real signal's last quarter period has not been played yet (it
        // is inside the delay): replace it with the faded version.
        self.history[h - ov..].copy_from_slice(&self.cycle.buf[h - ov..]);
    }
}

/// Append `chunk` to the history and write what falls out of the delay.
fn push(history: &mut [f32], delay: usize, chunk: &[f32], out: &mut [f32]) {
    let h = history.len();
    let n = chunk.len();
    history.copy_within(n.., 0);
    history[h - n..].copy_from_slice(chunk);
    out.copy_from_slice(&history[h - delay - n..h - delay]);
}

/// Full level for the first 10 ms of a loss, then 20 % less per 10 ms:
/// silent from 60 ms. `at`: how far into the loss `samples` starts.
fn attenuate(samples: &mut [f32], at: usize, frame: usize) {
    for (i, s) in samples.iter_mut().enumerate() {
        let k = at + i;
        if k >= frame {
            let g = 1.0 - 0.2 * (k - frame) as f32 / frame as f32;
            *s *= g.max(0.0);
        }
    }
}

/// The period, in samples, that best explains the newest `corr_len`
/// samples of `x`: normalised cross-correlation, every other lag first,
/// then the neighbours of the best.
fn find_pitch(x: &[f32], min: usize, max: usize, corr_len: usize) -> usize {
    let end = x.len();
    let target = &x[end - corr_len..];
    let score = |p: usize| {
        let lagged = &x[end - corr_len - p..end - p];
        let (mut c, mut e) = (0.0f32, 0.0f32);
        for (&a, &b) in target.iter().zip(lagged) {
            c += a * b;
            e += b * b;
        }
        if e <= 1e-9 { 0.0 } else { c / e.sqrt() }
    };
    let mut best = (min, f32::MIN);
    for p in (min..=max).step_by(2) {
        let s = score(p);
        if s > best.1 {
            best = (p, s);
        }
    }
    let coarse = best.0;
    for p in [coarse.saturating_sub(1).max(min), (coarse + 1).min(max)] {
        let s = score(p);
        if s > best.1 {
            best = (p, s);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A voiced-speech-like signal: harmonics of `f0` with a falling
    /// spectrum.
    fn voiced(rate: u32, f0: f32, n: usize) -> Vec<f32> {
        gliding(rate, f0, 0.0, n)
    }

    /// The same with the pitch rising `glide` Hz per second and the level
    /// swelling and falling five times a second, as in real speech: a
    /// period is never exactly the one before it.
    fn gliding(rate: u32, f0: f32, glide: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let phase = std::f32::consts::TAU * (f0 * t + glide * t * t / 2.0);
                let level = if glide == 0.0 {
                    1.0
                } else {
                    0.6 + 0.4 * (std::f32::consts::TAU * 5.0 * t).sin()
                };
                level
                    * (1..=8)
                        .map(|h| (phase * h as f32 + h as f32).sin() * 0.3 / h as f32)
                        .sum::<f32>()
            })
            .collect()
    }

    /// Run `signal` through the concealer in `packet`-sample packets, the
    /// packets whose index is in `lost` never arriving. Returns the output
    /// with the delay taken out, so it lines up with `signal`.
    fn conceal(rate: u32, signal: &[f32], packet: usize, lost: &[usize]) -> Vec<f32> {
        let mut c = Concealer::new(rate).unwrap();
        let mut out = vec![0.0; signal.len()];
        for (i, (inp, o)) in signal
            .chunks(packet)
            .zip(out.chunks_mut(packet))
            .enumerate()
        {
            if lost.contains(&i) {
                c.lost(o);
            } else {
                c.good(inp, o);
            }
        }
        out.drain(..c.delay());
        out
    }

    fn snr_db(reference: &[f32], test: &[f32]) -> f32 {
        let sig: f32 = reference.iter().map(|s| s * s).sum();
        let err: f32 = reference
            .iter()
            .zip(test)
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        10.0 * (sig / err.max(1e-12)).log10()
    }

    /// The largest second difference: a click (a jump the waveform's
    /// curve does not predict) stands out in it.
    fn max_step(x: &[f32]) -> f32 {
        x.windows(3)
            .map(|w| (w[2] - 2.0 * w[1] + w[0]).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn received_audio_passes_through_late_by_the_delay() {
        let signal = voiced(8000, 120.0, 4000);
        let out = conceal(8000, &signal, 160, &[]);
        assert_eq!(out.len(), signal.len() - 30);
        assert!(out.iter().zip(&signal).all(|(a, b)| a == b));
        assert_eq!(Concealer::new(16000).unwrap().delay(), 60);
        assert!(Concealer::new(11025).is_err());
    }

    #[test]
    fn the_pitch_is_found() {
        for period in [41usize, 57, 80, 99, 119] {
            let f0 = 8000.0 / period as f32;
            let x = voiced(8000, f0, 390);
            let p = find_pitch(&x, 40, 120, 160);
            // Two periods repeat as well as one: a multiple is right too.
            let k = (p as f32 / period as f32).round() as usize;
            assert!(
                k >= 1 && p.abs_diff(k * period) <= 1,
                "period {period}: found {p}"
            );
        }
    }

    #[test]
    fn a_lost_packet_of_voiced_speech_is_rebuilt_from_its_pitch() {
        // 20 ms lost out of a 110 Hz vowel: repeating the pitch
        // period continues the waveform, so the rebuilt packet is close to
        // what was lost; repeating the last packet (the old way) is not.
        for rate in [8000u32, 16000] {
            let k = (rate / 8000) as usize;
            let packet = 160 * k;
            let signal = gliding(rate, 110.0, 40.0, 8000 * k);
            let out = conceal(rate, &signal, packet, &[20]);
            let span = 20 * packet..21 * packet;
            // The first 10 ms are at full level: compare those.
            let first = 20 * packet..20 * packet + packet / 2;
            let pitch_snr = snr_db(&signal[first.clone()], &out[first.clone()]);
            let previous = &signal[19 * packet..19 * packet + packet / 2];
            let repeat_snr = snr_db(&signal[first], previous);
            assert!(pitch_snr > 10.0, "{rate} Hz: {pitch_snr:.1} dB");
            assert!(
                pitch_snr > repeat_snr + 10.0,
                "{pitch_snr:.1} vs {repeat_snr:.1} dB"
            );
            // No clicks: nothing steeper than the signal itself has.
            let limit = max_step(&signal) * 1.2;
            let around = &out[span.start - 40 * k..span.end + 40 * k];
            assert!(max_step(around) <= limit, "{} > {limit}", max_step(around));
        }
    }

    #[test]
    fn the_repeated_cycle_wraps_around_without_a_jump() {
        // A ramp is as unperiodic as it gets: unsmoothed, the loop would
        // jump from the newest sample back to an older, lower one.
        let mut c = Concealer::new(8000).unwrap();
        let ramp: Vec<f32> = (0..400).map(|i| i as f32 / 400.0).collect();
        let mut out = vec![0.0; 400];
        c.good(&ramp, &mut out);
        c.start_loss();
        let cy = &c.cycle;
        let h = cy.buf.len();
        let before_start = cy.buf[h - cy.len - 1];
        assert!((cy.buf[h - 1] - before_start).abs() < 0.01, "wrap jumps");
        // ...and the real signal still leads into the cycle smoothly.
        assert!((c.history[h - cy.overlap] - c.history[h - cy.overlap - 1]).abs() < 0.01);
    }

    #[test]
    fn a_long_loss_fades_to_silence_and_speech_fades_back_in() {
        let signal = voiced(8000, 150.0, 8000);
        // 100 ms lost (packets 20..25).
        let out = conceal(8000, &signal, 160, &[20, 21, 22, 23, 24]);
        let rms = |r: std::ops::Range<usize>| {
            (out[r.clone()].iter().map(|s| s * s).sum::<f32>() / r.len() as f32).sqrt()
        };
        let level = rms(3000..3200);
        let first_10ms = rms(3200..3280);
        let at_50ms = rms(3600..3680);
        assert!(first_10ms > 0.8 * level, "{first_10ms} vs {level}");
        assert!(at_50ms < 0.5 * level && at_50ms > 0.0, "{at_50ms}");
        assert!(
            out[3200 + 480..4000].iter().all(|&s| s == 0.0),
            "silent from 60 ms"
        );
        // Back to the real signal soon after the first packet, without a click.
        assert!(
            out[4100..4400]
                .iter()
                .zip(&signal[4100..4400])
                .all(|(a, b)| a == b)
        );
        assert!(max_step(&out[3900..4200]) <= max_step(&signal) * 1.2);
    }

    #[test]
    fn any_packet_length_keeps_the_timeline() {
        for packet in [40usize, 56, 80, 160, 240, 480] {
            let signal = voiced(8000, 130.0, 9600);
            let lost: Vec<usize> = (0..signal.len() / packet).filter(|i| i % 7 == 3).collect();
            let mut c = Concealer::new(8000).unwrap();
            let mut total = 0;
            let mut out = vec![0.0; packet];
            for (i, inp) in signal.chunks(packet).enumerate() {
                let o = &mut out[..inp.len()];
                if lost.contains(&i) {
                    c.lost(o);
                } else {
                    c.good(inp, o);
                }
                assert!(o.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
                total += o.len();
            }
            assert_eq!(total, signal.len());
        }
    }

    #[test]
    fn loss_before_any_audio_is_silence() {
        let mut c = Concealer::new(8000).unwrap();
        let mut out = [1.0f32; 160];
        c.lost(&mut out);
        assert!(out.iter().all(|&s| s == 0.0));
        assert!(c.concealing());
        c.good(&[0.5; 160], &mut out);
        assert!(!c.concealing());
    }
}
