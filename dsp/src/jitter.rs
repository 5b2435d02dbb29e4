//! Adaptive jitter buffer, sans-IO: packets are pushed with their arrival time,
//! and the playout clock pulls one frame per tick with the current time. Time
//! is always passed in, so tests replay any network in microseconds.
//!
//! Playout follows the sender's RTP timestamps. Each tick plays the packet
//! whose timestamp is due, conceals one that is missing, and otherwise:
//! - holds the playout point when the buffer runs dry (underrun: the sender is
//!   slow or the network stalled), so nothing is skipped that may still come;
//! - drops one frame when more than the target is buffered (the sender's
//!   clock is fast, or a burst arrived), so delay does not creep up;
//! - jumps forward when the next audio is far ahead (after a freeze or a
//!   sender restart), so speech resumes at once instead of after a long
//!   concealment.
//!
//! The target delay follows measured jitter: the spread between the 95th
//! percentile and the minimum of recent one-way delays (arrival time minus
//! media time), plus half a frame, clamped to 20–200 ms.
//!
//! Allocation-free after construction: slots and payload buffers are reused.

/// Configuration; times in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// RTP clock rate (8000 for G.711, 48000 for Opus).
    pub clock_rate: u32,
    /// Samples (timestamp units) per frame the playout clock pulls.
    pub frame: u32,
    pub min_delay_ms: u32,
    pub max_delay_ms: u32,
    /// Packets held at most.
    pub capacity: usize,
    pub max_payload: usize,
}

impl Config {
    pub fn g711() -> Config {
        Config {
            clock_rate: 8000,
            frame: 160,
            min_delay_ms: 20,
            max_delay_ms: 200,
            capacity: 64,
            max_payload: 1500,
        }
    }
    fn ms_to_ts(&self, ms: u32) -> u64 {
        ms as u64 * self.clock_rate as u64 / 1000
    }
    fn frame_ms(&self) -> u32 {
        self.frame * 1000 / self.clock_rate
    }
}

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Accepted,
    Duplicate,
    /// Its playout time has passed.
    Late,
    /// Payload larger than a slot; dropped.
    TooLarge,
    /// No free slot (more than `capacity` packets ahead); dropped.
    Full,
}

/// One tick's output.
#[derive(Debug, PartialEq, Eq)]
pub enum Out<'a> {
    /// Waiting for the first packets to fill the initial delay: play nothing.
    Buffering,
    Packet {
        seq: u64,
        timestamp: u64,
        payload: &'a [u8],
    },
    /// The packet for this frame was lost: conceal one frame.
    Lost,
    /// Nothing to play yet (underrun): conceal one frame, the playout point holds.
    Expand,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub received: u64,
    pub duplicates: u64,
    pub late: u64,
    pub lost: u64,
    pub expanded: u64,
    /// Frames dropped to bring the delay back to target.
    pub accelerated: u64,
    /// Forward jumps after a freeze or restart.
    pub resyncs: u64,
    pub played: u64,
    /// RFC 3550 interarrival jitter, in milliseconds.
    pub jitter_ms: u32,
    pub target_delay_ms: u32,
}

struct Slot {
    used: bool,
    seq: u64,
    ts: u64,
    data: Vec<u8>,
}

const WINDOW: usize = 100;

pub struct JitterBuffer {
    cfg: Config,
    slots: Vec<Slot>,
    /// Highest extended sequence number and timestamp seen.
    top_seq: Option<u64>,
    top_ts: u64,
    /// Timestamp of the next frame to play; None until playout starts.
    play_ts: Option<u64>,
    start_at_ms: Option<u64>,
    /// Highest sequence number played or given up.
    done_seq: Option<u64>,
    /// Recent one-way delays (arrival − media time) in ms, ring buffer.
    delays: [i64; WINDOW],
    delay_count: usize,
    delay_next: usize,
    scratch: [i64; WINDOW],
    target_ms: u32,
    last_transit: Option<i64>,
    jitter: f64,
    stats: Stats,
}

impl JitterBuffer {
    pub fn new(cfg: Config) -> Self {
        JitterBuffer {
            cfg,
            slots: (0..cfg.capacity.max(4))
                .map(|_| Slot {
                    used: false,
                    seq: 0,
                    ts: 0,
                    data: Vec::with_capacity(cfg.max_payload),
                })
                .collect(),
            top_seq: None,
            top_ts: 0,
            play_ts: None,
            start_at_ms: None,
            done_seq: None,
            delays: [0; WINDOW],
            delay_count: 0,
            delay_next: 0,
            scratch: [0; WINDOW],
            target_ms: cfg.min_delay_ms,
            last_transit: None,
            jitter: 0.0,
            stats: Stats {
                target_delay_ms: cfg.min_delay_ms,
                ..Stats::default()
            },
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            jitter_ms: self.jitter as u32,
            target_delay_ms: self.target_ms,
            ..self.stats
        }
    }

    pub fn target_delay_ms(&self) -> u32 {
        self.target_ms
    }

    /// Audio buffered ahead of the playout point, in ms.
    pub fn buffered_ms(&self) -> u32 {
        let Some(play) = self.play_ts else { return 0 };
        let end = self
            .slots
            .iter()
            .filter(|s| s.used)
            .map(|s| s.ts + self.cfg.frame as u64)
            .max();
        end.map(|e| (e.saturating_sub(play) * 1000 / self.cfg.clock_rate as u64) as u32)
            .unwrap_or(0)
    }

    fn extend_seq(&self, seq: u16) -> u64 {
        match self.top_seq {
            None => (1 << 16) + seq as u64,
            Some(top) => (top as i64 + seq.wrapping_sub(top as u16) as i16 as i64).max(0) as u64,
        }
    }

    fn extend_ts(&self, ts: u32) -> u64 {
        if self.top_seq.is_none() {
            return (1u64 << 32) + ts as u64;
        }
        (self.top_ts as i64 + ts.wrapping_sub(self.top_ts as u32) as i32 as i64).max(0) as u64
    }

    /// A packet arrived at `now_ms`.
    pub fn push(&mut self, now_ms: u64, seq: u16, timestamp: u32, payload: &[u8]) -> Push {
        if payload.len() > self.cfg.max_payload {
            return Push::TooLarge;
        }
        let seq = self.extend_seq(seq);
        let ts = self.extend_ts(timestamp);
        if self.done_seq.is_some_and(|d| seq <= d) || self.play_ts.is_some_and(|p| ts < p) {
            // Already played, concealed or skipped: too late to be of use.
            self.stats.late += 1;
            return Push::Late;
        }
        if self.slots.iter().any(|s| s.used && s.seq == seq) {
            self.stats.duplicates += 1;
            return Push::Duplicate;
        }
        let Some(slot) = self.slots.iter_mut().find(|s| !s.used) else {
            return Push::Full;
        };
        slot.used = true;
        slot.seq = seq;
        slot.ts = ts;
        slot.data.clear();
        slot.data.extend_from_slice(payload);
        self.stats.received += 1;
        if self.top_seq.is_none_or(|t| seq > t) {
            self.top_seq = Some(seq);
            self.top_ts = ts;
        }
        self.observe_delay(now_ms, ts);
        if self.start_at_ms.is_none() {
            self.start_at_ms = Some(now_ms + self.target_ms as u64);
            self.play_ts = None;
        }
        Push::Accepted
    }

    fn observe_delay(&mut self, now_ms: u64, ts: u64) {
        let media_ms = (ts * 1000 / self.cfg.clock_rate as u64) as i64;
        let transit = now_ms as i64 - media_ms;
        if let Some(last) = self.last_transit {
            self.jitter += ((transit - last).abs() as f64 - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        self.delays[self.delay_next] = transit;
        self.delay_next = (self.delay_next + 1) % WINDOW;
        self.delay_count = (self.delay_count + 1).min(WINDOW);
        let n = self.delay_count;
        self.scratch[..n].copy_from_slice(&self.delays[..n]);
        self.scratch[..n].sort_unstable();
        let spread = self.scratch[(n * 95 / 100).min(n - 1)] - self.scratch[0];
        let frame_ms = self.cfg.frame_ms() as i64;
        let want = (spread + frame_ms / 2).max(0) as u32;
        self.target_ms = want.clamp(self.cfg.min_delay_ms, self.cfg.max_delay_ms);
    }

    fn forget_delays(&mut self) {
        self.delay_count = 0;
        self.delay_next = 0;
        self.last_transit = None;
        self.target_ms = self.cfg.min_delay_ms;
    }

    fn earliest(&self) -> Option<(usize, u64)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.used)
            .map(|(i, s)| (i, s.ts))
            .min_by_key(|&(_, ts)| ts)
    }

    fn drop_slot(&mut self, i: usize) {
        let s = &mut self.slots[i];
        s.used = false;
        self.done_seq = Some(self.done_seq.map_or(s.seq, |d| d.max(s.seq)));
    }

    /// The packet due at the playout point, if it is already here: after a
    /// `Lost`, this is the one whose FEC data can rebuild the lost frame.
    pub fn peek_due(&self) -> Option<&[u8]> {
        let play = self.play_ts?;
        let frame = self.cfg.frame as u64;
        self.slots
            .iter()
            .find(|s| s.used && s.ts >= play && s.ts < play + frame)
            .map(|s| &s.data[..])
    }

    /// The playout clock ticks (once per frame) at `now_ms`.
    pub fn pop(&mut self, now_ms: u64) -> Out<'_> {
        let frame = self.cfg.frame as u64;
        let play = match self.play_ts {
            Some(p) => p,
            None => {
                match self.start_at_ms {
                    Some(t) if now_ms >= t => {}
                    _ => return Out::Buffering,
                }
                let Some((_, ts)) = self.earliest() else {
                    return Out::Buffering;
                };
                self.play_ts = Some(ts);
                ts
            }
        };
        let target = self.cfg.ms_to_ts(self.target_ms);
        let max = self.cfg.ms_to_ts(self.cfg.max_delay_ms);
        let mut play = play;
        if let Some((_, first)) = self.earliest() {
            let latest_end = self
                .slots
                .iter()
                .filter(|s| s.used)
                .map(|s| s.ts + frame)
                .max()
                .unwrap_or(first);
            if first > play + max {
                // Nothing for a long stretch, then audio again: jump to it.
                self.forget_delays();
                self.stats.resyncs += 1;
                self.stats.lost += (first - play) / frame;
                play = first;
            } else if latest_end > play + max + frame {
                // A burst after a stall: keep the newest `target` of it. The
                // stall was one event, not jitter: forget its delays.
                self.forget_delays();
                let target = self.cfg.ms_to_ts(self.target_ms);
                self.stats.resyncs += 1;
                let new_play = latest_end.saturating_sub(target.max(frame));
                while let Some((i, ts)) = self.earliest() {
                    if ts >= new_play {
                        break;
                    }
                    self.drop_slot(i);
                    self.stats.accelerated += 1;
                }
                play = new_play.max(play);
            } else if latest_end > play + target + 2 * frame {
                // Steadily too much buffered (fast sender): drop one frame.
                if let Some(i) = self
                    .slots
                    .iter()
                    .position(|s| s.used && s.ts >= play && s.ts < play + frame)
                {
                    self.drop_slot(i);
                    self.stats.accelerated += 1;
                    play += frame;
                }
            }
        }
        // Stale packets (timestamps inside already-played frames) are dropped.
        while let Some((i, ts)) = self.earliest() {
            if ts + frame > play {
                break;
            }
            self.drop_slot(i);
            self.stats.late += 1;
        }
        let due = self
            .slots
            .iter()
            .position(|s| s.used && s.ts >= play && s.ts < play + frame);
        match due {
            Some(i) => {
                self.play_ts = Some(play + frame);
                self.stats.played += 1;
                self.drop_slot(i);
                let s = &self.slots[i];
                Out::Packet {
                    seq: s.seq,
                    timestamp: s.ts,
                    payload: &s.data,
                }
            }
            None if self.earliest().is_some() => {
                // Later packets are here but this one is not: it is lost.
                self.play_ts = Some(play + frame);
                self.stats.lost += 1;
                Out::Lost
            }
            None => {
                self.play_ts = Some(play);
                self.stats.expanded += 1;
                Out::Expand
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic network between a sender and this buffer.
    struct Net {
        rng: u64,
        loss: f64,
        reorder: f64,
        jitter_ms: f64,
        /// Sender clock runs this much fast (+) or slow (-), ms per second.
        drift_ms_per_s: f64,
        /// (start, end) of a freeze in ms of send time; `hold` delivers the
        /// packets at the end of it, otherwise they are lost.
        freeze: Option<(f64, f64, bool)>,
        seq0: u16,
        ts0: u32,
    }

    impl Net {
        fn new() -> Net {
            Net {
                rng: 0x2545F4914F6CDD1D,
                loss: 0.0,
                reorder: 0.0,
                jitter_ms: 0.0,
                drift_ms_per_s: 0.0,
                freeze: None,
                seq0: 65000,
                ts0: u32::MAX - 8000,
            }
        }
        fn rand(&mut self) -> f64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            (self.rng >> 11) as f64 / (1u64 << 53) as f64
        }
        /// (arrival ms, seq, ts, index) for `n` packets, sorted by arrival.
        fn packets(&mut self, n: usize) -> Vec<(u64, u16, u32, usize)> {
            let mut v = Vec::new();
            for i in 0..n {
                let send = i as f64 * 20.0 * 1000.0 / (1000.0 + self.drift_ms_per_s);
                if self.rand() < self.loss {
                    continue;
                }
                let mut arrive = send + 30.0 + self.rand() * self.jitter_ms;
                if self.rand() < self.reorder {
                    arrive += 25.0;
                }
                if let Some((a, b, hold)) = self.freeze
                    && send >= a
                    && send < b
                {
                    if !hold {
                        continue;
                    }
                    arrive = arrive.max(b + 30.0);
                }
                v.push((
                    arrive as u64,
                    self.seq0.wrapping_add(i as u16),
                    self.ts0.wrapping_add(i as u32 * 160),
                    i,
                ));
            }
            v.sort_by_key(|p| p.0);
            v
        }
    }

    #[derive(Default, Debug)]
    struct Run {
        /// (tick ms, packet index, its arrival ms)
        played: Vec<(u64, usize, u64)>,
        lost: u64,
        expanded: u64,
        max_buffered_ms: u32,
        stats: Stats,
    }

    fn run(net: &mut Net, n: usize, ticks_ms: u64) -> Run {
        let pkts = net.packets(n);
        let mut jb = JitterBuffer::new(Config::g711());
        let mut r = Run::default();
        let mut next = 0;
        let mut arrival_of = std::collections::HashMap::new();
        let mut t = 0;
        while t <= ticks_ms {
            while next < pkts.len() && pkts[next].0 <= t {
                let (a, seq, ts, i) = pkts[next];
                arrival_of.insert(ts, (i, a));
                jb.push(a, seq, ts, &[i as u8]);
                next += 1;
            }
            match jb.pop(t) {
                Out::Packet { timestamp, .. } => {
                    let (i, a) = arrival_of[&((timestamp - (1u64 << 32)) as u32)];
                    r.played.push((t, i, a));
                }
                Out::Lost => r.lost += 1,
                Out::Expand => r.expanded += 1,
                Out::Buffering => {}
            }
            r.max_buffered_ms = r.max_buffered_ms.max(jb.buffered_ms());
            t += 20;
        }
        r.stats = jb.stats();
        r
    }

    fn assert_in_order(r: &Run) {
        for w in r.played.windows(2) {
            assert!(w[0].1 < w[1].1, "played out of order or twice: {:?}", w);
        }
    }

    #[test]
    fn clean_network_plays_everything_with_minimum_delay() {
        let r = run(&mut Net::new(), 500, 10_100);
        assert_in_order(&r);
        assert_eq!(r.played.len(), 500);
        assert_eq!(r.lost, 0);
        assert!(
            r.played.iter().all(|(t, _, a)| t - a <= 40),
            "delay above 40 ms on a clean network"
        );
    }

    #[test]
    fn five_percent_loss_is_concealed_frame_for_frame() {
        let mut net = Net::new();
        net.loss = 0.05;
        let r = run(&mut net, 1000, 20_100);
        assert_in_order(&r);
        let total = r.played.len() as u64 + r.lost;
        assert!(
            (995..=1000).contains(&total),
            "played {} + lost {} ≠ 1000 frames",
            r.played.len(),
            r.lost
        );
        assert!((30..=70).contains(&r.lost), "lost {}", r.lost);
    }

    #[test]
    fn jitter_and_reorder_are_absorbed_within_the_target() {
        let mut net = Net::new();
        net.reorder = 0.2;
        net.jitter_ms = 40.0;
        let r = run(&mut net, 1500, 30_100);
        assert_in_order(&r);
        assert!(r.played.len() >= 1470, "played only {}", r.played.len());
        let target = r.stats.target_delay_ms as u64;
        assert!(
            (40..=120).contains(&target),
            "target {target} ms for 40 ms jitter + 25 ms reorder"
        );
        let late = r
            .played
            .iter()
            .skip(100)
            .filter(|(t, _, a)| t - a > 200)
            .count();
        assert_eq!(late, 0, "delay above 200 ms");
        assert!(
            r.max_buffered_ms <= 200,
            "buffered {} ms",
            r.max_buffered_ms
        );
    }

    #[test]
    fn clock_drift_both_ways_keeps_delay_bounded() {
        for drift in [25.0, -25.0] {
            let mut net = Net::new();
            net.drift_ms_per_s = drift;
            net.jitter_ms = 10.0;
            let r = run(&mut net, 3000, 62_000);
            assert_in_order(&r);
            assert!(
                r.max_buffered_ms <= 200,
                "drift {drift}: buffered {} ms",
                r.max_buffered_ms
            );
            // The sender's 3000 frames come out as the receiver's ~3000 ticks:
            // a fast sender loses ~75 frames to acceleration, a slow one gains
            // ~75 expansions; everything else plays.
            let played = r.played.len() as i64;
            assert!(played >= 2900, "drift {drift}: played {played}");
            if drift > 0.0 {
                assert!(r.stats.accelerated >= 50, "{:?}", r.stats);
            } else {
                assert!(r.expanded >= 50, "{}", r.expanded);
            }
        }
    }

    #[test]
    fn speech_resumes_within_200_ms_after_a_5_second_freeze() {
        for hold in [true, false] {
            let mut net = Net::new();
            net.freeze = Some((10_000.0, 15_000.0, hold));
            let r = run(&mut net, 1500, 30_100);
            assert_in_order(&r);
            let resumed = r
                .played
                .iter()
                .find(|(t, _, _)| *t > 15_000)
                .map(|(t, _, _)| *t)
                .unwrap();
            assert!(
                resumed <= 15_000 + 30 + 200,
                "hold={hold}: speech resumed at {resumed} ms"
            );
            // And the delay after it is back to normal.
            let after: Vec<_> = r.played.iter().filter(|(t, _, _)| *t > 16_000).collect();
            assert!(
                after.iter().all(|(t, _, a)| t - a <= 60),
                "hold={hold}: delay stayed high"
            );
        }
    }

    #[test]
    fn duplicates_and_late_packets_are_dropped() {
        let mut jb = JitterBuffer::new(Config::g711());
        assert_eq!(jb.push(0, 10, 1600, &[1]), Push::Accepted);
        assert_eq!(jb.push(1, 10, 1600, &[1]), Push::Duplicate);
        assert_eq!(
            jb.pop(20),
            Out::Packet {
                seq: (1 << 16) + 10,
                timestamp: (1 << 32) + 1600,
                payload: &[1]
            }
        );
        assert_eq!(jb.push(25, 10, 1600, &[1]), Push::Late);
        assert_eq!(jb.push(25, 9, 1440, &[1]), Push::Late);
        assert_eq!(jb.push(25, 11, 1760, &[0; 2000]), Push::TooLarge);
        assert_eq!(jb.stats().duplicates, 1);
        assert_eq!(jb.stats().late, 2);
    }

    #[test]
    fn garbage_never_panics() {
        let mut jb = JitterBuffer::new(Config::g711());
        let mut net = Net::new();
        for t in 0..20_000u64 {
            let r = net.rand();
            let seq = (net.rand() * 65536.0) as u16;
            let ts = (net.rand() * 4294967296.0) as u32;
            jb.push(t, seq, ts, &[0; 3]);
            if r < 0.5 {
                let _ = jb.pop(t);
            }
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the network does, output is in order, nothing plays twice,
        /// the delay stays bounded, every tick yields exactly one frame, and
        /// over time playout keeps to the sender's clock.
        #[test]
        fn invariants(
            seed in any::<u64>(),
            loss in 0.0f64..0.3,
            jitter in 0.0f64..150.0,
            drift in -40.0f64..40.0,
            dup in 0.0f64..0.1,
            seq0 in any::<u16>(),
            ts0 in any::<u32>(),
        ) {
            let mut rng = seed | 1;
            let mut rand = move || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; (rng >> 11) as f64 / (1u64 << 53) as f64 };
            let mut pkts = Vec::new();
            for i in 0..600u32 {
                let send = i as f64 * 20.0 * 1000.0 / (1000.0 + drift);
                if rand() < loss { continue; }
                let arrive = send + rand() * jitter;
                pkts.push((arrive as u64, i));
                if rand() < dup { pkts.push((arrive as u64 + 5, i)); }
            }
            pkts.sort();
            let mut jb = JitterBuffer::new(Config::g711());
            let mut next = 0;
            let mut last_played: Option<u32> = None;
            let mut frames = 0u64;
            let mut ticks = 0u64;
            let mut position: Option<i64> = None;
            let mut t = 0u64;
            while t < 14_000 {
                while next < pkts.len() && pkts[next].0 <= t {
                    let i = pkts[next].1;
                    jb.push(pkts[next].0, seq0.wrapping_add(i as u16), ts0.wrapping_add(i * 160), &i.to_le_bytes());
                    next += 1;
                }
                match jb.pop(t) {
                    Out::Packet { payload, .. } => {
                        let i = u32::from_le_bytes(payload.try_into().unwrap());
                        prop_assert!(last_played.is_none_or(|l| i > l), "{i} after {last_played:?}");
                        last_played = Some(i);
                        position = Some(i as i64);
                        frames += 1;
                    }
                    Out::Lost => {
                        // A lost frame is a step along the sender's timeline.
                        position = position.map(|p| p + 1);
                        frames += 1;
                    }
                    Out::Expand => frames += 1,
                    Out::Buffering => {}
                }
                if frames > 0 { ticks += 1; }
                // Output follows the sender's clock, not ours: while it
                // sends, what plays is within the buffer's delay of what is
                // being sent (packets sent faster than we play are skipped to
                // keep up, slower ones stretched).
                let sent = (t as f64 * (1000.0 + drift) / 1000.0 / 20.0) as i64;
                if let Some(l) = position && sent < 600 && t > 1000 {
                    let behind = sent - l;
                    prop_assert!(behind <= (240 + jitter as i64) / 20 + 10, "{behind} frames behind the sender at {t} ms");
                    // -1: arrival times are whole milliseconds, send times not.
                    prop_assert!(behind >= -1, "played {l} before it was sent at {t} ms");
                }
                prop_assert!(jb.buffered_ms() <= 200 + 40 + jitter as u32, "buffered {}", jb.buffered_ms());
                t += 20;
            }
            prop_assert_eq!(frames, ticks);
        }
    }
}
