//! RTCP for one audio leg (RFC 3550 §6), with no I/O and no clock of its
//! own: what the leg received and sent goes in, with `now` in milliseconds
//! on the leg's monotonic clock; compound reports to send come out every
//! [`INTERVAL_MS`], and the peer's reports about our stream are read into
//! [`RtcpStats`] (its loss and jitter, the round trip).
//!
//! Wire format is rtc-rtcp's; the statistics (sequence tracking, loss,
//! interarrival jitter: RFC 3550 A.1, A.3, A.8) and the rules are ours:
//! - Reports are sent only once the leg sends (after the ACK), like RTP:
//!   an INVITE alone makes the agent send nothing.
//! - The peer's RTCP is read only once its RTP is latched, and only reports
//!   whose sender SSRC is that RTP stream's. When the RTP comes from where
//!   the SDP said, RTCP must come from the SDP's RTCP address; when it comes
//!   from elsewhere (a NAT, with symmetric RTP), from the same IP, and the
//!   first report accepted latches where ours go. Datagrams from anywhere
//!   else are counted as foreign without being parsed.
//! - Nothing a peer sends makes this allocate beyond one parsed datagram.

use rtc_rtcp::goodbye::Goodbye;
use rtc_rtcp::packet::{self, Packet};
use rtc_rtcp::receiver_report::ReceiverReport;
use rtc_rtcp::reception_report::ReceptionReport;
use rtc_rtcp::sender_report::SenderReport;
use rtc_rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use std::net::SocketAddr;

/// Between our reports (RFC 3550's minimum; a two-party call needs no
/// more). The first goes out half an interval after sending starts.
pub const INTERVAL_MS: u64 = 5_000;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;
/// RFC 3550 A.1: a sequence jump smaller than this is packets lost; a
/// jump back smaller than MAX_MISORDER is reordering.
const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;
/// A round trip longer than this is a bogus report, not a figure.
const MAX_RTT_MS: f32 = 10_000.0;

/// What the peer told us about our stream, and what we sent.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RtcpStats {
    /// Compound reports we sent.
    pub sent: u64,
    /// The peer's reports we accepted.
    pub received: u64,
    /// RTCP datagrams that did not parse.
    pub malformed: u64,
    /// RTCP from another address or SSRC than the latched peer: dropped.
    pub foreign: u64,
    /// The peer's latest cumulative count of our packets lost.
    pub remote_lost: u32,
    /// The worst fraction of our packets the peer lost between two of its
    /// reports (0.0–1.0).
    pub remote_fraction_lost_max: f32,
    /// The worst interarrival jitter the peer measured on our stream.
    pub remote_jitter_ms_max: f32,
    /// Round trips measured from the peer's LSR/DLSR (RFC 3550 §6.4.1).
    pub rtt_count: u32,
    pub rtt_ms_sum: f32,
    pub rtt_ms_max: f32,
}

impl RtcpStats {
    pub fn rtt_ms_mean(&self) -> Option<f32> {
        (self.rtt_count > 0).then(|| self.rtt_ms_sum / self.rtt_count as f32)
    }
}

/// Reception statistics of the peer's stream (RFC 3550 A.1, A.3, A.8).
#[derive(Debug, Clone, Default)]
struct Reception {
    ssrc: u32,
    started: bool,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    last_transit: Option<u32>,
    /// Interarrival jitter in timestamp units, ×16 (A.8's integer form).
    jitter_q4: i64,
}

impl Reception {
    fn start(&mut self, ssrc: u32, seq: u16) {
        *self = Reception {
            ssrc,
            started: true,
            base_seq: seq as u32,
            max_seq: seq,
            ..Reception::default()
        };
    }

    /// `transit` is arrival minus RTP timestamp, in timestamp units; both
    /// wrap, so only differences of it mean anything (A.8).
    fn update(&mut self, ssrc: u32, seq: u16, transit: u32) {
        if !self.started || ssrc != self.ssrc {
            self.start(ssrc, seq);
        } else {
            let delta = seq.wrapping_sub(self.max_seq);
            if delta < MAX_DROPOUT {
                if seq < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(1 << 16);
                }
                self.max_seq = seq;
            } else if delta <= u16::MAX - MAX_MISORDER {
                // A big jump without a new SSRC: the sender started over.
                self.start(ssrc, seq);
            }
            // else: a duplicate or reordered packet, counted as received.
        }
        self.received += 1;
        if let Some(last) = self.last_transit.replace(transit) {
            let d = (transit.wrapping_sub(last) as i32).unsigned_abs() as i64;
            self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4);
        }
    }

    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(self.max_seq as u32)
    }

    /// One report block, and the interval counters moved on.
    fn block(&mut self, lsr: u32, dlsr: u32) -> ReceptionReport {
        let expected = self
            .extended_max()
            .wrapping_sub(self.base_seq)
            .wrapping_add(1);
        let lost = (expected as i64 - self.received as i64).clamp(0, 0x7f_ffff) as u32;
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        ReceptionReport {
            ssrc: self.ssrc,
            fraction_lost,
            total_lost: lost,
            last_sequence_number: self.extended_max(),
            jitter: (self.jitter_q4 >> 4) as u32,
            last_sender_report: lsr,
            delay: dlsr,
        }
    }
}

pub struct RtcpConfig {
    /// Our RTP stream's SSRC (RTCP uses the same).
    pub ssrc: u32,
    /// The RTP clock rate of the leg's codec.
    pub clock_rate: u32,
    /// Where the SDP said to send RTCP (its `a=rtcp`, or the RTP port + 1,
    /// or the RTP address itself with rtcp-mux).
    pub remote: SocketAddr,
    /// Where the SDP said to send RTP.
    pub rtp_remote: SocketAddr,
    /// Latch where reports go to the peer's first accepted report.
    pub symmetric: bool,
    /// RTCP shares the RTP port (RFC 5761): reports go to, and are believed
    /// only from, where the peer's RTP comes from.
    pub mux: bool,
    /// Wall-clock time (ms since the Unix epoch) at `now_ms == 0`, for the
    /// NTP timestamps of sender reports and the round trip.
    pub wall_ms_at_zero: u64,
}

pub struct Rtcp {
    cfg: RtcpConfig,
    send_to: SocketAddr,
    latched: bool,
    cname: Vec<u8>,
    /// The peer's RTP source (address, SSRC), as the RTP latch found it.
    peer: Option<(SocketAddr, u32)>,
    rx: Reception,
    /// The middle 32 bits of the peer's last SR's NTP time, and when it came.
    last_sr: Option<(u32, u64)>,
    /// Whether we sent RTP since the last report (then we send an SR).
    sent_since_report: bool,
    packets_sent: u32,
    octets_sent: u32,
    /// The last RTP timestamp we sent and when.
    last_rtp: Option<(u32, u64)>,
    next_report_ms: Option<u64>,
    bye: bool,
    pub stats: RtcpStats,
}

/// NTP time (RFC 3550 §4: seconds since 1900 in 32.32 fixed point).
fn ntp(wall_ms: u64) -> u64 {
    let secs = wall_ms / 1000 + NTP_UNIX_OFFSET_SECS;
    let frac = ((wall_ms % 1000) << 32) / 1000;
    (secs << 32) | frac
}

fn middle32(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// SR and RR packets read from one datagram at most (a compound packet has
/// one; a few allow for RR overflow, RFC 3550 §6.4.2).
const MAX_REPORTS: usize = 4;

/// The sender and receiver reports of a compound RTCP datagram, each parsed
/// on its own. Other packet types (SDES, BYE, feedback) are stepped over
/// by their length, unparsed: some would have rtc-rtcp allocate far more
/// than the datagram holds (a congestion-control feedback can declare
/// 65,535 entries in 36 bytes). None: not RTCP.
fn sender_and_receiver_reports(data: &[u8]) -> Option<Vec<Box<dyn Packet>>> {
    if data.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() < 4 || rest[0] >> 6 != 2 {
            return None;
        }
        let len = (u16::from_be_bytes([rest[2], rest[3]]) as usize + 1) * 4;
        if len > rest.len() {
            return None;
        }
        let (p, tail) = rest.split_at(len);
        if matches!(p[1], 200 | 201) && out.len() < MAX_REPORTS {
            let mut one = p;
            out.extend(packet::unmarshal(&mut one).ok()?);
        }
        rest = tail;
    }
    Some(out)
}

/// True for the second byte of an RTCP packet (RFC 5761 §4: payload types
/// 64–95 with the marker bit, i.e. RTCP packet types 192–223).
pub fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 8 && data[0] >> 6 == 2 && (192..=223).contains(&data[1])
}

impl Rtcp {
    pub fn new(cfg: RtcpConfig) -> Rtcp {
        Rtcp {
            send_to: cfg.remote,
            latched: false,
            cname: format!("handlet-{:08x}", cfg.ssrc).into_bytes(),
            peer: None,
            rx: Reception::default(),
            last_sr: None,
            sent_since_report: false,
            packets_sent: 0,
            octets_sent: 0,
            last_rtp: None,
            next_report_ms: None,
            bye: false,
            stats: RtcpStats::default(),
            cfg,
        }
    }

    /// Where our reports go now.
    pub fn peer_address(&self) -> SocketAddr {
        self.send_to
    }

    /// The leg started sending: reports start too.
    pub fn start(&mut self, now_ms: u64) {
        if self.next_report_ms.is_none() {
            self.next_report_ms = Some(now_ms + INTERVAL_MS / 2);
        }
    }

    /// An RTP packet of the peer's was accepted by the leg's latch.
    pub fn received_rtp(
        &mut self,
        now_ms: u64,
        from: SocketAddr,
        ssrc: u32,
        seq: u16,
        timestamp: u32,
    ) {
        if self.cfg.mux {
            self.send_to = from;
            self.latched = true;
        } else if self.peer.is_none()
            && self.cfg.symmetric
            && !self.latched
            && from != self.cfg.rtp_remote
        {
            // Until the peer's own RTCP says where, send to its RTP
            // address's port + 1 (the NAT binding for RTP is no use here).
            self.send_to = SocketAddr::new(from.ip(), self.cfg.remote.port());
        }
        self.peer = Some((from, ssrc));
        let arrival = (now_ms * self.cfg.clock_rate as u64 / 1000) as u32;
        self.rx.update(ssrc, seq, arrival.wrapping_sub(timestamp));
    }

    /// We sent an RTP packet with this timestamp and payload size.
    pub fn sent_rtp(&mut self, now_ms: u64, timestamp: u32, payload_len: usize) {
        self.sent_since_report = true;
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload_len as u32);
        self.last_rtp = Some((timestamp, now_ms));
    }

    /// When [`Rtcp::handle_timeout`] is next due, if reports are running.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.next_report_ms
    }

    /// The leg ends: one last report with an RTCP BYE, if we were sending.
    pub fn finish(&mut self) {
        if self.next_report_ms.is_some() {
            self.bye = true;
            self.next_report_ms = Some(0);
        }
    }

    /// A datagram on the RTCP port (or an RTCP packet on a muxed RTP port).
    pub fn handle_datagram(&mut self, now_ms: u64, from: SocketAddr, data: &[u8]) {
        let Some((rtp_from, peer_ssrc)) = self.peer else {
            // Nobody is latched yet: nothing to check a report against.
            self.stats.foreign += 1;
            return;
        };
        let expected = if self.latched {
            from == self.send_to
        } else if rtp_from == self.cfg.rtp_remote {
            // No NAT in the way: the peer is where its SDP said.
            from == self.cfg.remote
        } else {
            self.cfg.symmetric && from.ip() == rtp_from.ip()
        };
        if !expected {
            self.stats.foreign += 1;
            return;
        }
        let Some(packets) = sender_and_receiver_reports(data) else {
            self.stats.malformed += 1;
            return;
        };
        let mut accepted = false;
        for p in &packets {
            let any = p.as_any();
            if let Some(sr) = any.downcast_ref::<SenderReport>() {
                if sr.ssrc != peer_ssrc {
                    continue;
                }
                self.last_sr = Some((middle32(sr.ntp_time), now_ms));
                self.read_blocks(now_ms, &sr.reports);
                accepted = true;
            } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                if rr.ssrc != peer_ssrc {
                    continue;
                }
                self.read_blocks(now_ms, &rr.reports);
                accepted = true;
            }
        }
        if !accepted {
            self.stats.foreign += 1;
            return;
        }
        self.stats.received += 1;
        if self.cfg.symmetric && !self.latched {
            self.latched = true;
            self.send_to = from;
        }
    }

    /// The peer's report blocks about our stream.
    fn read_blocks(&mut self, now_ms: u64, blocks: &[ReceptionReport]) {
        for b in blocks.iter().filter(|b| b.ssrc == self.cfg.ssrc) {
            let s = &mut self.stats;
            // A signed 24-bit count: negative (duplicates) is none lost.
            s.remote_lost = if b.total_lost & 0x80_0000 != 0 {
                0
            } else {
                b.total_lost
            };
            s.remote_fraction_lost_max = s
                .remote_fraction_lost_max
                .max(b.fraction_lost as f32 / 256.0);
            let jitter_ms = b.jitter as f32 * 1000.0 / self.cfg.clock_rate as f32;
            s.remote_jitter_ms_max = s.remote_jitter_ms_max.max(jitter_ms);
            if b.last_sender_report != 0 {
                let a = middle32(ntp(self.cfg.wall_ms_at_zero + now_ms));
                let rtt = a.wrapping_sub(b.last_sender_report).wrapping_sub(b.delay);
                let rtt_ms = rtt as f32 * 1000.0 / 65536.0;
                if rtt_ms <= MAX_RTT_MS {
                    s.rtt_count += 1;
                    s.rtt_ms_sum += rtt_ms;
                    s.rtt_ms_max = s.rtt_ms_max.max(rtt_ms);
                }
            }
        }
    }

    /// The next compound report, written into `buf`, and where to; None
    /// when none is due.
    pub fn poll_transmit(&mut self, now_ms: u64, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let due = self.next_report_ms?;
        if now_ms < due {
            return None;
        }
        self.next_report_ms = (!self.bye).then_some(now_ms + INTERVAL_MS);
        let blocks: Vec<ReceptionReport> = match self.peer {
            Some(_) => {
                let (lsr, dlsr) = match self.last_sr {
                    Some((lsr, at)) => (lsr, (now_ms.saturating_sub(at) * 65536 / 1000) as u32),
                    None => (0, 0),
                };
                vec![self.rx.block(lsr, dlsr)]
            }
            None => Vec::new(),
        };
        let mut packets: Vec<Box<dyn Packet>> = Vec::with_capacity(3);
        let ssrc = self.cfg.ssrc;
        match self.last_rtp.filter(|_| self.sent_since_report) {
            Some((ts, at)) => {
                let rtp_time = ts.wrapping_add(
                    (now_ms.saturating_sub(at) * self.cfg.clock_rate as u64 / 1000) as u32,
                );
                packets.push(Box::new(SenderReport {
                    ssrc,
                    ntp_time: ntp(self.cfg.wall_ms_at_zero + now_ms),
                    rtp_time,
                    packet_count: self.packets_sent,
                    octet_count: self.octets_sent,
                    reports: blocks,
                    ..Default::default()
                }));
            }
            None => packets.push(Box::new(ReceiverReport {
                ssrc,
                reports: blocks,
                ..Default::default()
            })),
        }
        self.sent_since_report = false;
        packets.push(Box::new(SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: ssrc,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: self.cname.clone().into(),
                }],
            }],
        }));
        if self.bye {
            packets.push(Box::new(Goodbye {
                sources: vec![ssrc],
                ..Default::default()
            }));
        }
        let bytes = packet::marshal(&packets).ok()?;
        buf.clear();
        buf.extend_from_slice(&bytes);
        self.stats.sent += 1;
        Some(self.send_to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER_RTP: &str = "192.0.2.10:40000";
    const PEER_RTCP: &str = "192.0.2.10:40001";
    const OTHER_PORT: &str = "192.0.2.10:51234";
    const NAT_RTP: &str = "198.51.100.7:31000";
    const NAT_RTCP: &str = "198.51.100.7:31001";
    const ATTACKER: &str = "203.0.113.66:40001";
    const OURS: u32 = 0x1111_2222;
    const THEIRS: u32 = 0xaaaa_bbbb;
    /// 2026-12-01 12:00:00 UTC.
    const WALL: u64 = 1_796_126_400_000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn session(symmetric: bool) -> Rtcp {
        Rtcp::new(RtcpConfig {
            ssrc: OURS,
            clock_rate: 8000,
            remote: addr(PEER_RTCP),
            rtp_remote: addr(PEER_RTP),
            symmetric,
            mux: false,
            wall_ms_at_zero: WALL,
        })
    }

    fn parse(buf: &[u8]) -> Vec<Box<dyn Packet>> {
        let mut b = buf;
        packet::unmarshal(&mut b).expect("our report parses")
    }

    /// A report of the peer's about our stream, as rtc-rtcp writes it.
    fn their_rr(about: u32, lsr: u32, dlsr: u32, fraction: u8, lost: u32, jitter: u32) -> Vec<u8> {
        let rr: Box<dyn Packet> = Box::new(ReceiverReport {
            ssrc: THEIRS,
            reports: vec![ReceptionReport {
                ssrc: about,
                fraction_lost: fraction,
                total_lost: lost,
                last_sequence_number: 1000,
                jitter,
                last_sender_report: lsr,
                delay: dlsr,
            }],
            ..Default::default()
        });
        packet::marshal(&[rr]).unwrap().to_vec()
    }

    #[test]
    fn nothing_is_sent_before_the_leg_sends_then_every_five_seconds() {
        let mut r = session(false);
        let mut buf = Vec::new();
        assert_eq!(r.poll_timeout(), None);
        assert!(r.poll_transmit(60_000, &mut buf).is_none());
        r.start(10_000);
        assert_eq!(r.poll_timeout(), Some(12_500));
        assert!(r.poll_transmit(12_499, &mut buf).is_none());
        let mut sent_at = Vec::new();
        for now in (12_500..=30_000).step_by(100) {
            if r.poll_transmit(now, &mut buf).is_some() {
                sent_at.push(now);
            }
        }
        assert_eq!(sent_at, vec![12_500, 17_500, 22_500, 27_500]);
        assert_eq!(r.stats.sent, 4);
    }

    #[test]
    fn a_receiver_report_counts_loss_and_jitter() {
        let mut r = session(false);
        r.start(0);
        // 100 packets sent 20 ms apart, every tenth lost, arriving with a
        // steady 5 ms wobble.
        for i in 0u16..100 {
            if i % 10 == 9 {
                continue;
            }
            let wobble = if i % 2 == 0 { 0 } else { 5 };
            let now = 1000 + i as u64 * 20 + wobble;
            r.received_rtp(now, addr(PEER_RTP), THEIRS, 500 + i, 8000 + i as u32 * 160);
        }
        let mut buf = Vec::new();
        assert_eq!(r.poll_transmit(2_500, &mut buf), Some(addr(PEER_RTCP)));
        let p = parse(&buf);
        let rr = p[0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .expect("an RR while we have sent nothing");
        assert_eq!(rr.ssrc, OURS);
        let b = &rr.reports[0];
        assert_eq!(b.ssrc, THEIRS);
        // 99 expected (500..=598: the last, 599, was lost and unseen), 90 received.
        assert_eq!(b.last_sequence_number, 598);
        assert_eq!(b.total_lost, 9);
        assert_eq!(b.fraction_lost, (9 * 256 / 99) as u8);
        // A 5 ms wobble is 40 timestamp units of transit change each packet.
        assert!((30..=45).contains(&b.jitter), "jitter {}", b.jitter);
        assert_eq!(b.last_sender_report, 0);
        let sdes = p[1].as_any().downcast_ref::<SourceDescription>().unwrap();
        assert_eq!(sdes.chunks[0].source, OURS);
        // The next interval starts from here: nothing more was lost.
        for i in 100u16..150 {
            let now = 3000 + i as u64 * 20;
            r.received_rtp(now, addr(PEER_RTP), THEIRS, 500 + i, 8000 + i as u32 * 160);
        }
        r.poll_transmit(7_500, &mut buf).unwrap();
        let p = parse(&buf);
        let b = &p[0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .unwrap()
            .reports[0];
        // 599 is counted lost once 600 came: one of this interval's 51.
        assert_eq!(b.fraction_lost, (256 / 51) as u8);
        assert_eq!(b.total_lost, 10);
    }

    #[test]
    fn sequence_numbers_wrap_without_counting_loss() {
        let mut r = session(false);
        r.start(0);
        for i in 0u32..200 {
            let seq = (65_500 + i) as u16;
            r.received_rtp(i as u64 * 20, addr(PEER_RTP), THEIRS, seq, i * 160);
        }
        let mut buf = Vec::new();
        r.poll_transmit(5_000, &mut buf).unwrap();
        let p = parse(&buf);
        let b = &p[0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .unwrap()
            .reports[0];
        assert_eq!(b.total_lost, 0);
        assert_eq!(b.last_sequence_number, (1 << 16) + (65_500 + 199 - 65_536));
    }

    #[test]
    fn a_sender_report_while_sending_and_the_round_trip_from_the_reply() {
        let mut r = session(false);
        r.start(0);
        r.received_rtp(100, addr(PEER_RTP), THEIRS, 1, 160);
        for i in 0..100u64 {
            r.sent_rtp(i * 20, 4000 + i as u32 * 160, 160);
        }
        let mut buf = Vec::new();
        r.poll_transmit(2_500, &mut buf).unwrap();
        let p = parse(&buf);
        let sr = p[0]
            .as_any()
            .downcast_ref::<SenderReport>()
            .expect("an SR while we send");
        assert_eq!(sr.packet_count, 100);
        assert_eq!(sr.octet_count, 16_000);
        // The RTP clock at the report: the last packet's plus 520 ms.
        assert_eq!(sr.rtp_time, 4000 + 99 * 160 + 520 * 8);
        assert_eq!(sr.ntp_time, ntp(WALL + 2_500));
        // The peer answers 80 ms later, having held our SR for 30 ms: a
        // 50 ms round trip.
        let lsr = middle32(sr.ntp_time);
        let dlsr = 30 * 65536 / 1000;
        r.handle_datagram(
            2_580,
            addr(PEER_RTCP),
            &their_rr(OURS, lsr, dlsr, 64, 7, 80),
        );
        assert_eq!(r.stats.received, 1);
        let rtt = r.stats.rtt_ms_mean().unwrap();
        assert!((49.0..=51.0).contains(&rtt), "rtt {rtt}");
        assert_eq!(r.stats.remote_lost, 7);
        assert_eq!(r.stats.remote_fraction_lost_max, 0.25);
        assert_eq!(r.stats.remote_jitter_ms_max, 10.0);
    }

    #[test]
    fn our_report_after_their_sr_carries_lsr_and_dlsr() {
        let mut r = session(false);
        r.start(0);
        r.received_rtp(100, addr(PEER_RTP), THEIRS, 1, 160);
        let their_ntp = ntp(WALL + 1_000) + 12345;
        let sr: Box<dyn Packet> = Box::new(SenderReport {
            ssrc: THEIRS,
            ntp_time: their_ntp,
            ..Default::default()
        });
        r.handle_datagram(2_000, addr(PEER_RTCP), &packet::marshal(&[sr]).unwrap());
        let mut buf = Vec::new();
        r.poll_transmit(2_500, &mut buf).unwrap();
        let p = parse(&buf);
        let b = &p[0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .unwrap()
            .reports[0];
        assert_eq!(b.last_sender_report, middle32(their_ntp));
        assert_eq!(b.delay, 500 * 65536 / 1000);
    }

    #[test]
    fn reports_from_anyone_but_the_latched_peer_are_dropped() {
        let mut r = session(true);
        r.start(0);
        let report = their_rr(OURS, 0, 0, 255, 999, 9999);
        // Before any RTP: nobody to believe.
        r.handle_datagram(50, addr(PEER_RTCP), &report);
        r.received_rtp(100, addr(PEER_RTP), THEIRS, 1, 160);
        // Another host, even at the right port.
        r.handle_datagram(200, addr(ATTACKER), &report);
        // The right host but another SSRC than its RTP's.
        let forged: Box<dyn Packet> = Box::new(ReceiverReport {
            ssrc: 0xdead_beef,
            ..Default::default()
        });
        r.handle_datagram(300, addr(PEER_RTCP), &packet::marshal(&[forged]).unwrap());
        assert_eq!(r.stats.foreign, 3);
        assert_eq!(r.stats.received, 0);
        assert_eq!(r.stats.remote_lost, 0);
        // Garbage from the peer's address is malformed, not fatal.
        r.handle_datagram(400, addr(PEER_RTCP), &[0x80, 201, 0, 9, 1, 2]);
        r.handle_datagram(400, addr(PEER_RTCP), &[]);
        assert_eq!(r.stats.malformed, 2);
    }

    #[test]
    fn behind_a_nat_reports_go_where_the_peers_come_from() {
        let mut r = session(true);
        r.start(0);
        r.received_rtp(100, addr(NAT_RTP), THEIRS, 1, 160);
        // Until the peer reports: its NAT's address, the SDP's RTCP port.
        let guess = SocketAddr::new(addr(NAT_RTP).ip(), addr(PEER_RTCP).port());
        assert_eq!(r.peer_address(), guess);
        r.handle_datagram(200, addr(NAT_RTCP), &their_rr(OURS, 0, 0, 0, 0, 0));
        assert_eq!(r.stats.received, 1);
        assert_eq!(r.peer_address(), addr(NAT_RTCP));
        // Latched: the same host's other ports are now foreign.
        r.handle_datagram(300, guess, &their_rr(OURS, 0, 0, 0, 0, 0));
        assert_eq!(r.stats.foreign, 1);
        let mut buf = Vec::new();
        assert_eq!(r.poll_transmit(2_500, &mut buf), Some(addr(NAT_RTCP)));
    }

    #[test]
    fn a_peer_where_its_sdp_said_is_believed_only_at_its_rtcp_address() {
        for symmetric in [false, true] {
            let mut r = session(symmetric);
            r.start(0);
            r.received_rtp(100, addr(PEER_RTP), THEIRS, 1, 160);
            // Another port on the peer's host: another program, or someone
            // sharing its address.
            r.handle_datagram(200, addr(OTHER_PORT), &their_rr(OURS, 0, 0, 0, 0, 0));
            assert_eq!((r.stats.received, r.stats.foreign), (0, 1));
            r.handle_datagram(200, addr(PEER_RTCP), &their_rr(OURS, 0, 0, 0, 0, 0));
            assert_eq!(r.stats.received, 1);
            assert_eq!(r.peer_address(), addr(PEER_RTCP));
        }
    }

    #[test]
    fn the_last_report_says_goodbye() {
        let mut r = session(false);
        r.start(0);
        r.finish();
        let mut buf = Vec::new();
        r.poll_transmit(1_000, &mut buf).unwrap();
        let p = parse(&buf);
        assert!(
            p.last()
                .unwrap()
                .as_any()
                .downcast_ref::<Goodbye>()
                .is_some()
        );
        assert_eq!(r.poll_timeout(), None);
        assert!(r.poll_transmit(100_000, &mut buf).is_none());
        // A leg that never sent says nothing at all.
        let mut silent = session(false);
        silent.finish();
        assert!(silent.poll_transmit(100_000, &mut buf).is_none());
    }

    #[test]
    fn feedback_packets_are_stepped_over_unparsed() {
        let mut r = session(false);
        r.start(0);
        r.received_rtp(100, addr(PEER_RTP), THEIRS, 1, 160);
        // A transport-wide congestion-control feedback (PT 205, FMT 15)
        // declaring 65,535 packet statuses, then the peer's real report.
        let mut d = vec![0x8f, 205, 0, 4];
        d.extend_from_slice(&THEIRS.to_be_bytes());
        d.extend_from_slice(&OURS.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0xff, 0xff, 0, 0, 0, 0]);
        d.extend_from_slice(&their_rr(OURS, 0, 0, 0, 5, 0));
        r.handle_datagram(200, addr(PEER_RTCP), &d);
        assert_eq!((r.stats.received, r.stats.remote_lost), (1, 5));
        // A negative cumulative loss (duplicates) is none lost.
        r.handle_datagram(300, addr(PEER_RTCP), &their_rr(OURS, 0, 0, 0, 0xff_ffff, 0));
        assert_eq!(r.stats.remote_lost, 0);
        // A length running past the datagram is malformed.
        let mut cut = their_rr(OURS, 0, 0, 0, 5, 0);
        cut.truncate(20);
        r.handle_datagram(400, addr(PEER_RTCP), &cut);
        assert_eq!(r.stats.malformed, 1);
    }

    #[test]
    fn muxed_rtcp_is_told_from_rtp() {
        let rr = their_rr(OURS, 0, 0, 0, 0, 0);
        assert!(is_rtcp(&rr));
        let mut rtp = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4];
        assert!(!is_rtcp(&rtp));
        rtp[1] = 0x80 | 8; // PCMA with the marker bit
        assert!(!is_rtcp(&rtp));
        assert!(!is_rtcp(&[0x80, 200]));
    }
}
