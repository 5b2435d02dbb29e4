//! Reorder buffer for RTP: puts packets back in sequence order, drops
//! duplicates and late packets, and reports gaps so the caller can conceal them
//! and keep the audio clock. Sans-IO and allocation-free after construction
//! (payload slots are preallocated and reused).
//!
//! This is a fixed-depth buffer driven by packet arrival; the time-driven
//! adaptive jitter buffer (target delay following measured jitter) replaces it
//! in the production audio path (issue 3).

/// What happened to a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Accepted,
    Duplicate,
    /// Arrived after its slot was played out or skipped.
    Late,
    /// Payload larger than a slot; dropped.
    TooLarge,
}

/// What the buffer gives back, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Out<'a> {
    Packet {
        seq: u64,
        timestamp: u32,
        payload: &'a [u8],
    },
    /// One packet that never came.
    Lost { seq: u64 },
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub received: u64,
    pub duplicates: u64,
    pub late: u64,
    pub lost: u64,
    pub resets: u64,
}

struct Slot {
    seq: u64,
    timestamp: u32,
    used: bool,
    data: Vec<u8>,
}

pub struct ReorderBuffer {
    depth: u64,
    slots: Vec<Slot>,
    /// Extended sequence number of the next packet to play out.
    next: Option<u64>,
    /// Highest extended sequence number seen.
    highest: u64,
    max_payload: usize,
    stats: Stats,
}

/// Sequence jumps beyond this are treated as a sender restart.
const RESET_DISTANCE: u64 = 1000;

impl ReorderBuffer {
    /// `depth`: packets held back waiting for a missing one (e.g. 3 × 20 ms).
    pub fn new(depth: usize, max_payload: usize) -> Self {
        let n = (depth.max(1) * 4).next_power_of_two();
        ReorderBuffer {
            depth: depth.max(1) as u64,
            slots: (0..n)
                .map(|_| Slot {
                    seq: 0,
                    timestamp: 0,
                    used: false,
                    data: Vec::with_capacity(max_payload),
                })
                .collect(),
            next: None,
            highest: 0,
            max_payload,
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Extend a 16-bit sequence number to 64 bits near the highest seen.
    fn extend(&self, seq: u16) -> u64 {
        if self.next.is_none() {
            return (1u64 << 16) + seq as u64; // headroom for early reordering
        }
        let diff = seq.wrapping_sub(self.highest as u16) as i16 as i64;
        (self.highest as i64 + diff).max(0) as u64
    }

    pub fn push(&mut self, seq: u16, timestamp: u32, payload: &[u8]) -> Push {
        if payload.len() > self.max_payload {
            return Push::TooLarge;
        }
        let mut ext = self.extend(seq);
        match self.next {
            None => {
                self.next = Some(ext);
                self.highest = ext;
            }
            Some(next) => {
                if ext.abs_diff(self.highest) > RESET_DISTANCE {
                    // The sender restarted its sequence: start over from here.
                    self.stats.resets += 1;
                    for s in &mut self.slots {
                        s.used = false;
                    }
                    ext = self.highest + 1;
                    self.next = Some(ext);
                } else if ext < next {
                    self.stats.late += 1;
                    return Push::Late;
                }
            }
        }
        let n = self.slots.len() as u64;
        let slot = &mut self.slots[(ext % n) as usize];
        if slot.used && slot.seq == ext {
            self.stats.duplicates += 1;
            return Push::Duplicate;
        }
        slot.seq = ext;
        slot.timestamp = timestamp;
        slot.used = true;
        slot.data.clear();
        slot.data.extend_from_slice(payload);
        self.highest = self.highest.max(ext);
        self.stats.received += 1;
        // A packet far ahead forces the ones it overtakes out as lost, so the
        // ring never wraps onto unplayed slots.
        Push::Accepted
    }

    /// Next item in order, if one is ready. Call until `None` after each push.
    pub fn pop(&mut self) -> Option<Out<'_>> {
        self.take(false)
    }

    /// Like `pop`, but gives up waiting for missing packets (end of stream).
    pub fn drain(&mut self) -> Option<Out<'_>> {
        self.take(true)
    }

    fn take(&mut self, draining: bool) -> Option<Out<'_>> {
        let next = self.next?;
        if next > self.highest {
            return None;
        }
        let n = self.slots.len() as u64;
        let idx = (next % n) as usize;
        let ready = self.slots[idx].used && self.slots[idx].seq == next;
        if ready {
            self.next = Some(next + 1);
            let slot = &mut self.slots[idx];
            slot.used = false;
            return Some(Out::Packet {
                seq: next,
                timestamp: slot.timestamp,
                payload: &slot.data,
            });
        }
        let waiting_too_long = self.highest - next >= self.depth || self.highest - next >= n / 2;
        if waiting_too_long || draining {
            self.next = Some(next + 1);
            self.stats.lost += 1;
            return Some(Out::Lost { seq: next });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(b: &mut ReorderBuffer, drain: bool) -> Vec<Result<u8, u64>> {
        let mut v = Vec::new();
        loop {
            let o = if drain { b.drain() } else { b.pop() };
            match o {
                Some(Out::Packet { payload, .. }) => v.push(Ok(payload[0])),
                Some(Out::Lost { seq }) => v.push(Err(seq)),
                None => return v,
            }
        }
    }

    #[test]
    fn in_order_passes_through() {
        let mut b = ReorderBuffer::new(3, 160);
        let mut out = Vec::new();
        for i in 0..5u8 {
            b.push(100 + i as u16, i as u32 * 160, &[i]);
            out.extend(collect(&mut b, false));
        }
        assert_eq!(out, (0..5).map(Ok).collect::<Vec<_>>());
    }

    #[test]
    fn reordered_packets_come_out_sorted_and_duplicates_dropped() {
        let mut b = ReorderBuffer::new(3, 160);
        let mut out = Vec::new();
        for s in [0u16, 2, 1, 1, 4, 3, 5] {
            let p = b.push(s, 0, &[s as u8]);
            if s == 1 && out.len() >= 2 {
                assert_eq!(p, Push::Late);
            }
            out.extend(collect(&mut b, false));
        }
        out.extend(collect(&mut b, true));
        assert_eq!(out, (0..6).map(Ok).collect::<Vec<_>>());
        assert_eq!(b.stats().received, 6);
    }

    #[test]
    fn gap_is_reported_once_depth_is_exceeded() {
        let mut b = ReorderBuffer::new(2, 160);
        let mut out = Vec::new();
        for s in [0u16, 2, 3, 4] {
            b.push(s, 0, &[s as u8]);
            out.extend(collect(&mut b, false));
        }
        assert!(out[1].is_err(), "{out:?}");
        assert_eq!(out.iter().filter(|o| o.is_ok()).count(), 4);
        assert_eq!(b.stats().lost, 1);
        // The missing packet arriving now is late.
        assert_eq!(b.push(1, 0, &[1]), Push::Late);
    }

    #[test]
    fn sequence_wraps_around() {
        let mut b = ReorderBuffer::new(3, 160);
        let mut out = Vec::new();
        for s in [65534u16, 65535, 0, 1] {
            b.push(s, 0, &[s as u8]);
            out.extend(collect(&mut b, false));
        }
        assert_eq!(out, vec![Ok(254), Ok(255), Ok(0), Ok(1)]);
    }

    #[test]
    fn sender_restart_resets_instead_of_stalling() {
        let mut b = ReorderBuffer::new(3, 160);
        b.push(10, 0, &[1]);
        collect(&mut b, false);
        b.push(30000, 0, &[2]);
        assert_eq!(collect(&mut b, false), vec![Ok(2)]);
        assert_eq!(b.stats().resets, 1);
    }

    #[test]
    fn garbage_sequences_never_panic() {
        let mut b = ReorderBuffer::new(3, 4);
        let mut x: u32 = 12345;
        for _ in 0..100_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let len = (x >> 28) as usize;
            b.push((x >> 8) as u16, x, &[0u8; 16][..len]);
            while b.pop().is_some() {}
        }
    }
}
