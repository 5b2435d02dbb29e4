//! Stereo recording frames: caller on the left, callee on the right, kept
//! aligned on the recorder's clock when one leg stalls or drifts.
//!
//! Each leg pushes mono 16 kHz audio as it arrives; the recorder pulls one
//! interleaved frame per tick. A leg with nothing queued contributes silence
//! for that frame (a stall does not shift the other side); a leg that has
//! queued more than `max_lag` (its clock runs fast, or it delivered a burst)
//! has its oldest audio dropped so both channels stay within one frame of
//! real time. Sans-IO, allocation-free after construction.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Left: the caller.
    Caller = 0,
    /// Right: the callee (agent, phone, voicemail prompt).
    Callee = 1,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StereoStats {
    /// Samples of silence inserted per channel because the leg had nothing.
    pub filled: [u64; 2],
    /// Samples dropped per channel because the leg ran ahead.
    pub dropped: [u64; 2],
}

pub struct StereoFramer {
    frame: usize,
    max_lag: usize,
    queues: [Ring; 2],
    stats: StereoStats,
}

struct Ring {
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

impl Ring {
    fn new(cap: usize) -> Ring {
        Ring {
            buf: vec![0.0; cap],
            start: 0,
            len: 0,
        }
    }
    fn push(&mut self, s: &[f32]) -> usize {
        let cap = self.buf.len();
        let mut overflow = 0;
        for &x in s {
            if self.len == cap {
                self.start = (self.start + 1) % cap;
                self.len -= 1;
                overflow += 1;
            }
            self.buf[(self.start + self.len) % cap] = x;
            self.len += 1;
        }
        overflow
    }
    fn pop(&mut self) -> Option<f32> {
        if self.len == 0 {
            return None;
        }
        let x = self.buf[self.start];
        self.start = (self.start + 1) % self.buf.len();
        self.len -= 1;
        Some(x)
    }
    fn drop_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.start = (self.start + n) % self.buf.len();
        self.len -= n;
    }
}

impl StereoFramer {
    /// `frame`: samples per channel per tick (320 for 20 ms at 16 kHz);
    /// `max_lag`: samples a leg may queue before its oldest are dropped.
    pub fn new(frame: usize, max_lag: usize) -> Self {
        let cap = max_lag + frame * 4;
        StereoFramer {
            frame,
            max_lag,
            queues: [Ring::new(cap), Ring::new(cap)],
            stats: StereoStats::default(),
        }
    }

    pub fn stats(&self) -> StereoStats {
        self.stats
    }

    /// Audio from one leg, in order.
    pub fn push(&mut self, ch: Channel, samples: &[f32]) {
        let i = ch as usize;
        self.stats.dropped[i] += self.queues[i].push(samples) as u64;
    }

    /// One tick: writes `frame` interleaved L/R sample pairs into `out`
    /// (length 2 × frame).
    pub fn pop(&mut self, out: &mut [f32]) {
        let frame = self.frame;
        for i in 0..2 {
            let q = &mut self.queues[i];
            if q.len > self.max_lag + frame {
                let excess = q.len - self.max_lag;
                q.drop_front(excess);
                self.stats.dropped[i] += excess as u64;
            }
            for k in 0..frame {
                out[2 * k + i] = match q.pop() {
                    Some(x) => x,
                    None => {
                        self.stats.filled[i] += 1;
                        0.0
                    }
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: usize = 320;

    fn run(
        ticks: usize,
        mut feed: impl FnMut(usize, &mut StereoFramer),
    ) -> (Vec<f32>, StereoFramer) {
        let mut s = StereoFramer::new(F, 3 * F);
        let mut out = Vec::new();
        let mut frame = vec![0.0; 2 * F];
        for t in 0..ticks {
            feed(t, &mut s);
            s.pop(&mut frame);
            out.extend_from_slice(&frame);
        }
        (out, s)
    }

    fn channel(out: &[f32], ch: usize) -> Vec<f32> {
        out.iter().skip(ch).step_by(2).copied().collect()
    }

    #[test]
    fn caller_left_callee_right() {
        let (out, _) = run(10, |_, s| {
            s.push(Channel::Caller, &[0.5; F]);
            s.push(Channel::Callee, &[-0.25; F]);
        });
        assert!(channel(&out, 0).iter().all(|&x| x == 0.5));
        assert!(channel(&out, 1).iter().all(|&x| x == -0.25));
    }

    #[test]
    fn a_stalled_leg_is_silence_and_does_not_shift_the_other() {
        // Callee stalls for 50 ticks (1 s); an impulse pushed by both legs at
        // tick 80 comes out in the same frame on both channels.
        let (out, s) = run(100, |t, s| {
            let mut f = [0.1f32; F];
            if t == 80 {
                f[7] = 1.0;
            }
            s.push(Channel::Caller, &f);
            if !(20..70).contains(&t) {
                s.push(Channel::Callee, &f);
            }
        });
        let (l, r) = (channel(&out, 0), channel(&out, 1));
        let pos = |v: &[f32]| v.iter().position(|&x| x == 1.0).unwrap();
        assert_eq!(pos(&l), pos(&r));
        assert!(
            r[25 * F..65 * F].iter().all(|&x| x == 0.0),
            "stall is silence"
        );
        assert_eq!(s.stats().filled[1], 50 * F as u64);
    }

    #[test]
    fn a_fast_leg_is_kept_within_the_lag_bound() {
        // The callee's clock runs 2.5 % fast: 328 samples per 320-sample tick.
        let (out, s) = run(3000, |t, s| {
            s.push(Channel::Caller, &[0.1; F]);
            let mut f = [0.2f32; 328];
            if t == 2990 {
                f[0] = 1.0;
            }
            s.push(Channel::Callee, &f);
        });
        assert!(s.stats().dropped[1] > 0);
        // The marker pushed at tick 2990 comes out within max_lag + one frame.
        let r = channel(&out, 1);
        let at = r.iter().position(|&x| x == 1.0).unwrap();
        assert!(
            (2990 * F..=2990 * F + 4 * F).contains(&at),
            "marker at {at}, pushed at {}",
            2990 * F
        );
    }
}
