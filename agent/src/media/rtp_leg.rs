//! One RTP audio leg with no I/O and no clock of its own: datagrams and
//! `now` (milliseconds on any monotonic clock) go in; packets to send,
//! decoded 16 kHz audio, keys pressed and the leg's events come out, and
//! [`RtpLeg::poll_timeout`] says when to call [`RtpLeg::handle_timeout`]
//! next. The tokio shell in `leg.rs` owns the socket and the timer.
//!
//! Rules a hostile network tests:
//! - RTP is accepted from the address the SDP named or, with symmetric RTP
//!   (a phone behind NAT), from the first source that sends, and from then
//!   on only from that source and SSRC. Packets from anywhere else are
//!   dropped and counted: whoever reaches the port cannot inject audio into
//!   the transcript and recording, nor redirect what the agent sends.
//! - A new SSRC from the latched source is a phone restarting its stream:
//!   the jitter buffer and decoder start over instead of calling every later
//!   packet late.
//! - Nothing is sent until the call is established ([`RtpLeg::start_sending`],
//!   on the ACK): an INVITE alone cannot make the agent stream at anyone.
//! - The peer's `a=ptime` is what it wants to receive; what it sends is
//!   framed by its own timestamps, whatever its packet time.
//! - Keys pressed are bounded per leg; a storm of RFC 4733 events is counted,
//!   not stored.
//! - RTCP reports (see `rtcp.rs`) follow the same rules: sent once sending
//!   starts, read only from the latched peer.

use super::decode::{Decoder, MAX_SAMPLES};
use super::outgoing::{Frame, Outgoing, Relayed};
use super::rtcp::{self, Rtcp, RtcpConfig, RtcpStats};
use super::rtp;
use super::sdp::Codec;
use handlet_dsp::g711::Law;
use handlet_dsp::jitter::{self, JitterBuffer, Out};
use handlet_dsp::playout::{FrameEncoder, ToneSpec};
use handlet_dsp::telephone_event;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// Samples per 20 ms at 8 kHz.
const FRAME_8K: usize = 160;
/// We send 20 ms packets (our answer says `a=ptime:20`).
const SEND_MS: u64 = 20;
/// Keys stored per leg at most; more are counted as dropped.
pub const MAX_DIGITS: u32 = 256;
/// Packet times a sender may use (ms); anything else keeps the last one.
const PTIMES: [u32; 6] = [10, 20, 30, 40, 50, 60];
/// Packets copied for the other leg of a bridge, held at most.
const FORWARD_MAX: usize = 16;

pub struct RtpLegConfig {
    pub codec: Codec,
    pub payload_type: u8,
    /// The peer's telephone-event payload type, if negotiated.
    pub telephone_event: Option<u8>,
    /// Where the SDP said to send.
    pub remote: SocketAddr,
    /// Latch to the first source that sends (symmetric RTP, RFC 4961).
    pub symmetric: bool,
    pub min_delay_ms: u32,
    pub max_delay_ms: u32,
    /// The leg times out after this long without audio from the peer.
    pub timeout_ms: u64,
    /// Our stream's SSRC, first sequence number and timestamp (random).
    pub ssrc: u32,
    pub first_seq: u16,
    pub first_ts: u32,
    /// Where the SDP said to send RTCP.
    pub rtcp_remote: SocketAddr,
    /// RTCP on the RTP port (RFC 5761), as both sides' SDP agreed.
    pub rtcp_mux: bool,
    /// Wall-clock ms since the Unix epoch at the `now_ms` the leg is made
    /// with (for RTCP's NTP timestamps).
    pub wall_ms: u64,
    /// SRTP keys (SDES) when the leg is encrypted: what goes out is
    /// protected with ours, and only what authenticates with the peer's
    /// is heard (nor latched to).
    pub srtp: Option<super::srtp::Keys>,
}

/// Something the leg's owner should know.
#[derive(Debug, Clone, PartialEq)]
pub enum LegEvent {
    /// The first audio packet arrived (and where from, once latched).
    FirstPacket { from: SocketAddr },
    /// A key pressed: the key, ms since the leg started, how it was sent.
    Digit {
        key: char,
        at_ms: u64,
        how: DtmfSource,
    },
    /// No audio for `timeout_ms`: the call should end.
    Timeout,
    /// The prompt being played has been sent in full.
    PromptDone,
}

/// How a key press reached us; stored by its stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfSource {
    Rfc4733,
    InBand,
}

impl DtmfSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DtmfSource::Rfc4733 => "rfc4733",
            DtmfSource::InBand => "in-band",
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct LegStats {
    /// Audio packets accepted.
    pub packets: u64,
    /// Datagrams that were not RTP.
    pub malformed: u64,
    /// From a source or SSRC other than the latched one: dropped.
    pub foreign: u64,
    /// Stream restarts (new SSRC from the latched source).
    pub ssrc_changes: u64,
    /// Other payload types (comfort noise...): not audio.
    pub other_payload: u64,
    /// Keys beyond [`MAX_DIGITS`], not reported.
    pub digits_dropped: u64,
    /// SRTP(C) packets that failed authentication or replayed: dropped.
    pub srtp_rejected: u64,
    pub jitter: jitter::Stats,
    /// Reports sent and read, and what the peer said about our stream.
    pub rtcp: RtcpStats,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Latch {
    /// Nothing accepted yet.
    Open,
    Latched {
        from: SocketAddr,
        ssrc: u32,
    },
}

pub struct RtpLeg {
    cfg: RtpLegConfig,
    started_ms: u64,
    latch: Latch,
    /// Where our packets go: the SDP address, then the latched source.
    send_to: SocketAddr,
    jb: JitterBuffer,
    /// Packet time of the sender in ms, as its timestamps show.
    frame_ms: u32,
    /// The last accepted packet's (sequence, timestamp), for the packet time.
    last_seq_ts: Option<(u16, u32)>,
    decoder: Decoder,
    events_rx: telephone_event::Receiver,
    /// Decoded 16 kHz audio not yet taken by [`RtpLeg::audio`].
    audio: Vec<f32>,
    next_play_ms: Option<u64>,
    last_rx_ms: u64,
    timed_out: bool,
    sending: bool,
    next_send_ms: u64,
    seq: u16,
    ts: u32,
    silence: Vec<u8>,
    /// What we send: prompt, bridged audio, tone or silence.
    out: Outgoing,
    /// A copy of every frame we send, at 16 kHz (silence included, so it
    /// keeps time), while someone records the box's side of the call.
    sent: Option<Sent>,
    /// Made when there is first something to encode.
    encoder: Option<FrameEncoder>,
    /// Relaying: our timestamp minus the relayed stream's, and its last.
    relay_map: Option<(u32, u32)>,
    /// Copy the peer's audio packets for the other leg (relay).
    forward: bool,
    /// On hold: the peer may send nothing, and that is no timeout.
    held: bool,
    forwarded: VecDeque<Relayed>,
    /// Bridged: the peer's key presses (RFC 4733 packets) are copied for
    /// the other leg, relaying or transcoding alike.
    forward_events: bool,
    forwarded_events: VecDeque<Relayed>,
    /// The other leg's key presses to send, and the event being sent: its
    /// timestamp on the other leg's clock and on ours.
    events_out: VecDeque<Relayed>,
    event_map: Option<(u32, u32)>,
    /// The tone being played, kept across a codec switch.
    tone: Option<ToneSpec>,
    packet_buf: Vec<u8>,
    digits: u32,
    events: VecDeque<LegEvent>,
    rtcp: Rtcp,
    srtp: Option<super::srtp::Session>,
    pub stats: LegStats,
}

/// The rate a leg's outgoing audio is encoded from: 8 kHz for G.711, 16 kHz
/// for G.722 and Opus (sent wideband mono).
/// The copy of what a leg sends ([`RtpLeg::monitor_sent`]).
struct Sent {
    resampler: handlet_dsp::resample::Resampler,
    audio: Vec<f32>,
    silence: Vec<f32>,
}

pub fn pcm_rate(c: Codec) -> u32 {
    match c {
        Codec::Opus | Codec::G722 => 16_000,
        Codec::Pcmu | Codec::Pcma => 8_000,
    }
}

fn frame_encoder(c: Codec) -> Result<FrameEncoder, crate::Error> {
    Ok(match c {
        Codec::Pcmu => FrameEncoder::G711(Law::Mu),
        Codec::Pcma => FrameEncoder::G711(Law::A),
        Codec::G722 => FrameEncoder::G722(Box::default()),
        Codec::Opus => FrameEncoder::Opus(Box::new(handlet_dsp::opus::Encoder::new(
            16_000, 24_000, false, 0,
        )?)),
    })
}

/// 20 ms of silence in the leg's codec.
fn silence_packet(c: Codec) -> Result<Vec<u8>, crate::Error> {
    Ok(match c {
        Codec::Pcmu => vec![Law::Mu.silence_byte(); FRAME_8K],
        Codec::Pcma => vec![Law::A.silence_byte(); FRAME_8K],
        Codec::G722 => {
            let mut out = [0u8; FRAME_8K];
            let n = handlet_dsp::g722::Encoder::default().encode_into(&[0; 320], &mut out);
            out[..n].to_vec()
        }
        Codec::Opus => {
            let mut enc = handlet_dsp::opus::Encoder::new(16000, 16000, false, 0)?;
            let mut out = [0u8; 256];
            let n = enc.encode(&[0.0; 320], &mut out)?;
            out[..n].to_vec()
        }
    })
}

fn jitter_config(cfg: &RtpLegConfig, frame_ms: u32) -> jitter::Config {
    jitter::Config {
        clock_rate: cfg.codec.rate(),
        frame: cfg.codec.rate() / 1000 * frame_ms,
        min_delay_ms: cfg.min_delay_ms,
        max_delay_ms: cfg.max_delay_ms,
        ..jitter::Config::g711()
    }
}

impl RtpLeg {
    pub fn new(mut cfg: RtpLegConfig, now_ms: u64) -> Result<RtpLeg, crate::Error> {
        let frame_ms = 20;
        let srtp = cfg.srtp.take().map(super::srtp::Session::new).transpose()?;
        let rtcp = Rtcp::new(RtcpConfig {
            ssrc: cfg.ssrc,
            clock_rate: cfg.codec.rate(),
            remote: cfg.rtcp_remote,
            rtp_remote: cfg.remote,
            symmetric: cfg.symmetric,
            mux: cfg.rtcp_mux,
            wall_ms_at_zero: cfg.wall_ms.saturating_sub(now_ms),
        });
        Ok(RtpLeg {
            rtcp,
            jb: JitterBuffer::new(jitter_config(&cfg, frame_ms)),
            decoder: Decoder::new(cfg.codec)?,
            silence: silence_packet(cfg.codec)?,
            out: Outgoing::new(cfg.codec),
            encoder: None,
            relay_map: None,
            forward: false,
            held: false,
            forwarded: VecDeque::new(),
            forward_events: false,
            forwarded_events: VecDeque::new(),
            events_out: VecDeque::new(),
            event_map: None,
            tone: None,
            send_to: cfg.remote,
            seq: cfg.first_seq,
            ts: cfg.first_ts,
            started_ms: now_ms,
            latch: Latch::Open,
            frame_ms,
            last_seq_ts: None,
            events_rx: telephone_event::Receiver::default(),
            audio: Vec::with_capacity(MAX_SAMPLES * 2),
            sent: None,
            next_play_ms: None,
            last_rx_ms: now_ms,
            timed_out: false,
            sending: false,
            next_send_ms: now_ms,
            packet_buf: Vec::with_capacity(1500),
            digits: 0,
            events: VecDeque::new(),
            stats: LegStats::default(),
            srtp,
            cfg,
        })
    }

    /// Play `samples` (at [`pcm_rate`]) to the peer once sending starts,
    /// then silence; [`LegEvent::PromptDone`] when it has all gone out.
    pub fn play(&mut self, samples: Vec<f32>) -> Result<(), crate::Error> {
        self.encoder()?;
        self.out.play(samples);
        Ok(())
    }

    fn encoder(&mut self) -> Result<&mut FrameEncoder, crate::Error> {
        if self.encoder.is_none() {
            self.encoder = Some(frame_encoder(self.cfg.codec)?);
        }
        Ok(self.encoder.as_mut().expect("just made"))
    }

    /// Say `samples` (at [`pcm_rate`]) as they are synthesised, queued
    /// behind what is being said; `last`: the end of this speech, reported
    /// as [`LegEvent::PromptDone`] once it has gone out.
    pub fn speak(&mut self, samples: &[f32], last: bool) -> Result<(), crate::Error> {
        self.encoder()?;
        self.out.speak(samples, last);
        Ok(())
    }

    /// Stop talking now (barge-in). No end is reported.
    pub fn stop_speaking(&mut self) {
        self.out.stop_speaking();
    }

    /// Play a tone when nothing else is sent (ringback, hold), or none.
    pub fn set_tone(&mut self, tone: Option<ToneSpec>) -> Result<(), crate::Error> {
        self.encoder()?;
        self.out.set_tone(tone);
        self.tone = tone;
        Ok(())
    }

    /// Bridge this leg to another: from now on it sends what
    /// Keep a copy of what is sent ([`RtpLeg::sent_audio`]), or stop.
    pub fn monitor_sent(&mut self, on: bool) -> Result<(), crate::Error> {
        self.sent = match on {
            true => {
                let rate = pcm_rate(self.cfg.codec);
                Some(Sent {
                    resampler: handlet_dsp::resample::Resampler::new(
                        rate,
                        16_000,
                        (rate / 50) as usize,
                    )?,
                    audio: Vec::with_capacity(640),
                    silence: vec![0.0; (rate / 50) as usize],
                })
            }
            false => None,
        };
        Ok(())
    }

    /// What was sent since the last call (16 kHz), for the caller to take.
    pub fn sent_audio(&mut self) -> Option<&mut Vec<f32>> {
        self.sent.as_mut().map(|s| &mut s.audio)
    }

    /// [`RtpLeg::feed`] and [`RtpLeg::relay`] give it, and with `forward`
    /// copies its peer's packets for the other leg to relay
    /// ([`RtpLeg::poll_forward`]); false: back to prompts and silence.
    pub fn set_bridged(&mut self, on: bool, forward: bool) -> Result<(), crate::Error> {
        if on {
            self.encoder()?;
        }
        self.out.set_bridged(on);
        self.forward = on && forward;
        self.forwarded.clear();
        self.forward_events = on;
        self.forwarded_events.clear();
        self.events_out.clear();
        self.relay_map = None;
        Ok(())
    }

    /// Hold: the bridged party's audio no longer reaches this leg's peer.
    /// From now on, the leg times out after `ms` without audio (a ringing
    /// call's leg waits longer than an answered one's).
    pub fn set_timeout(&mut self, now_ms: u64, ms: u64) {
        self.cfg.timeout_ms = ms;
        self.last_rx_ms = self.last_rx_ms.max(now_ms);
    }

    pub fn set_held(&mut self, held: bool) {
        self.out.set_held(held);
        self.held = held;
    }

    /// The other leg's decoded audio (16 kHz), for this leg to send.
    pub fn feed(&mut self, samples_16k: &[f32]) {
        self.out.feed(samples_16k);
    }

    /// A packet of the other leg's stream (same codec) to send as it is.
    pub fn relay(&mut self, p: Relayed, now_ms: u64) {
        if !self.out.relay_flowing(now_ms) {
            // A new run of relayed packets: map its clock onto ours afresh.
            self.relay_map = None;
        }
        self.out.relay(p, now_ms);
    }

    /// The next of the peer's key-press packets copied for the other leg.
    pub fn poll_forward_event(&mut self) -> Option<Relayed> {
        self.forwarded_events.pop_front()
    }

    /// A key-press packet of the other leg's (RFC 4733), to send with our
    /// telephone-event payload type; dropped when the peer has none.
    pub fn relay_event(&mut self, p: Relayed) {
        if self.cfg.telephone_event.is_none() || !self.sending {
            return;
        }
        if self.events_out.len() >= FORWARD_MAX {
            self.events_out.pop_front();
        }
        self.events_out.push_back(p);
    }

    /// The next of the peer's packets copied for the other leg.
    pub fn poll_forward(&mut self) -> Option<Relayed> {
        self.forwarded.pop_front()
    }

    pub fn outgoing_stats(&self) -> super::outgoing::OutgoingStats {
        self.out.stats
    }

    /// The call is established: start sending (20 ms every 20 ms, so the
    /// peer's NAT binding and jitter buffer stay alive).
    pub fn start_sending(&mut self, now_ms: u64) {
        if !self.sending {
            self.sending = true;
            self.next_send_ms = now_ms;
            self.rtcp.start(now_ms);
        }
    }

    /// The leg's figures, RTCP's included.
    pub fn stats(&self) -> LegStats {
        LegStats {
            rtcp: self.rtcp.stats,
            ..self.stats
        }
    }

    /// Where our RTCP reports go now.
    pub fn rtcp_peer(&self) -> SocketAddr {
        self.rtcp.peer_address()
    }

    /// The leg's SRTP keys from now on (a re-INVITE changed them): the
    /// peer's new key is heard; our own sending context goes on while our
    /// key is the same (a fresh one would repeat its packet indices), and
    /// None turns SRTP off (the peer dropped it where that is allowed).
    pub fn set_srtp(&mut self, keys: Option<super::srtp::Keys>) -> Result<(), crate::Error> {
        self.srtp = match (self.srtp.take(), keys) {
            (_, None) => None,
            (Some(mut s), Some(k)) if s.keys().local == k.local => {
                s.set_remote(k.remote)?;
                Some(s)
            }
            (_, Some(k)) => Some(super::srtp::Session::new(k)?),
        };
        Ok(())
    }

    /// The peer switched codec by re-INVITE (our answer agreed): decode and
    /// encode the new one from now on. The stream's clock and sequence go
    /// on; what the old codec had buffered is dropped; bridged, held and a
    /// tone stay as they were.
    pub fn set_codec(
        &mut self,
        codec: Codec,
        payload_type: u8,
        telephone_event: Option<u8>,
    ) -> Result<(), crate::Error> {
        let decoder = Decoder::new(codec)?;
        let silence = silence_packet(codec)?;
        // A prompt made for the old codec's rate is cut short: its end is
        // reported, so what waits for it (the recording after an
        // announcement) goes on.
        if self.out.is_playing() {
            self.events.push_back(LegEvent::PromptDone);
        }
        self.cfg.codec = codec;
        self.cfg.payload_type = payload_type;
        self.cfg.telephone_event = telephone_event;
        self.decoder = decoder;
        self.silence = silence;
        let bridged = self.forward_events;
        let mut out = Outgoing::new(codec);
        out.set_bridged(bridged);
        out.set_held(self.held);
        out.set_tone(self.tone);
        self.out = out;
        self.encoder = None;
        if bridged || self.tone.is_some() {
            self.encoder()?;
        }
        self.relay_map = None;
        self.forwarded.clear();
        self.restart_stream();
        // The copy of what is sent, at the new rate.
        if self.sent.is_some() {
            self.monitor_sent(true)?;
        }
        Ok(())
    }

    /// A datagram arrived on the leg's RTCP socket.
    pub fn handle_rtcp(&mut self, now_ms: u64, from: SocketAddr, data: &[u8]) {
        match &mut self.srtp {
            None => self.rtcp.handle_datagram(now_ms, from, data),
            Some(s) => match s.unprotect_rtcp(data) {
                Ok(plain) => self.rtcp.handle_datagram(now_ms, from, &plain),
                Err(_) => self.stats.srtp_rejected += 1,
            },
        }
    }

    /// The next RTCP report to send, written into `buf`, and where to.
    pub fn poll_transmit_rtcp(&mut self, now_ms: u64, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let to = self.rtcp.poll_transmit(now_ms, buf)?;
        if let Some(s) = &mut self.srtp
            && s.protect_rtcp(buf).is_err()
        {
            return None;
        }
        Some(to)
    }

    pub fn is_sending(&self) -> bool {
        self.sending
    }

    /// Where our packets go now.
    pub fn peer(&self) -> SocketAddr {
        self.send_to
    }

    fn ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.started_ms)
    }

    /// A datagram arrived on the leg's socket.
    pub fn handle_datagram(&mut self, now_ms: u64, from: SocketAddr, data: &[u8]) {
        if self.cfg.rtcp_mux && rtcp::is_rtcp(data) {
            self.handle_rtcp(now_ms, from, data);
            return;
        }
        let plain;
        let data = match &mut self.srtp {
            None => data,
            Some(s) => {
                // Once latched, only the latched source is worth decrypting.
                if let Latch::Latched { from: src, .. } = self.latch
                    && from != src
                {
                    self.stats.foreign += 1;
                    return;
                }
                match s.unprotect_rtp(data) {
                    Ok(p) => {
                        plain = p;
                        &plain[..]
                    }
                    Err(_) => {
                        self.stats.srtp_rejected += 1;
                        return;
                    }
                }
            }
        };
        let Ok((h, payload)) = rtp::parse(data) else {
            self.stats.malformed += 1;
            return;
        };
        let ours = h.payload_type == self.cfg.payload_type
            || Some(h.payload_type) == self.cfg.telephone_event;
        match self.latch {
            Latch::Open => {
                if !ours {
                    self.stats.other_payload += 1;
                    return;
                }
                if from != self.cfg.remote && !self.cfg.symmetric {
                    self.stats.foreign += 1;
                    return;
                }
                // Symmetric RTP: answer to where the audio really comes from.
                self.latch = Latch::Latched { from, ssrc: h.ssrc };
                self.send_to = from;
                self.events.push_back(LegEvent::FirstPacket { from });
            }
            Latch::Latched { from: src, ssrc } => {
                if from != src {
                    self.stats.foreign += 1;
                    return;
                }
                if h.ssrc != ssrc {
                    if !ours {
                        self.stats.foreign += 1;
                        return;
                    }
                    // The phone restarted its stream (re-INVITE, hold,
                    // reboot): its sequence and clock start over.
                    self.stats.ssrc_changes += 1;
                    self.latch = Latch::Latched { from, ssrc: h.ssrc };
                    self.restart_stream();
                }
            }
        }
        self.rtcp
            .received_rtp(now_ms, from, h.ssrc, h.sequence, h.timestamp);
        if Some(h.payload_type) == self.cfg.telephone_event {
            self.last_rx_ms = now_ms;
            if self.forward_events {
                if self.forwarded_events.len() >= FORWARD_MAX {
                    self.forwarded_events.pop_front();
                }
                self.forwarded_events.push_back(Relayed {
                    payload: payload.to_vec(),
                    ts: h.timestamp,
                    marker: h.marker,
                });
            }
            if let Some(d) = self.events_rx.push(h.timestamp, payload) {
                self.digit(d.digit, self.ms(now_ms), DtmfSource::Rfc4733);
            }
            return;
        }
        if h.payload_type != self.cfg.payload_type {
            self.stats.other_payload += 1;
            return;
        }
        self.last_rx_ms = now_ms;
        self.stats.packets += 1;
        if self.forward {
            if self.forwarded.len() >= FORWARD_MAX {
                self.forwarded.pop_front();
            }
            self.forwarded.push_back(Relayed {
                payload: payload.to_vec(),
                ts: h.timestamp,
                marker: h.marker,
            });
        }
        self.learn_packet_time(h.sequence, h.timestamp);
        self.jb
            .push(self.ms(now_ms), h.sequence, h.timestamp, payload);
        if self.next_play_ms.is_none() {
            self.next_play_ms = Some(now_ms);
        }
    }

    /// The sender's packet time from consecutive packets' timestamps: a
    /// peer that sends 30 ms packets is played out 30 ms at a time even if
    /// its SDP said 20.
    fn learn_packet_time(&mut self, seq: u16, ts: u32) {
        let prev = self.last_seq_ts.replace((seq, ts));
        let Some((pseq, pts)) = prev else { return };
        if seq != pseq.wrapping_add(1) {
            return;
        }
        let per_ms = self.cfg.codec.rate() / 1000;
        let delta = ts.wrapping_sub(pts);
        if delta == 0 || delta % per_ms != 0 {
            return;
        }
        let ms = delta / per_ms;
        if ms != self.frame_ms && PTIMES.contains(&ms) && self.stats.packets <= 3 {
            // Only at the start of a stream: later, a timestamp jump is
            // silence suppression or loss, not a new packet time.
            self.frame_ms = ms;
            let old = std::mem::replace(
                &mut self.jb,
                JitterBuffer::new(jitter_config(&self.cfg, ms)),
            );
            self.accumulate(old.stats());
        }
    }

    fn restart_stream(&mut self) {
        let old = self.jb.stats();
        self.jb = JitterBuffer::new(jitter_config(&self.cfg, self.frame_ms));
        self.accumulate(old);
        self.last_seq_ts = None;
        self.events_rx = telephone_event::Receiver::default();
        if let Ok(d) = Decoder::new(self.cfg.codec) {
            self.decoder = d;
        }
    }

    /// Jitter figures of a stream that was replaced, kept in the totals.
    fn accumulate(&mut self, s: jitter::Stats) {
        let t = &mut self.stats.jitter;
        t.received += s.received;
        t.duplicates += s.duplicates;
        t.late += s.late;
        t.lost += s.lost;
        t.expanded += s.expanded;
        t.accelerated += s.accelerated;
        t.resyncs += s.resyncs;
        t.played += s.played;
    }

    fn digit(&mut self, key: char, at_ms: u64, how: DtmfSource) {
        if self.digits >= MAX_DIGITS {
            self.stats.digits_dropped += 1;
            return;
        }
        self.digits += 1;
        self.events.push_back(LegEvent::Digit { key, at_ms, how });
    }

    /// When to call [`RtpLeg::handle_timeout`] next.
    pub fn poll_timeout(&self) -> u64 {
        let mut t = self.last_rx_ms + self.cfg.timeout_ms;
        if let Some(p) = self.next_play_ms {
            t = t.min(p);
        }
        if self.sending {
            t = t.min(self.next_send_ms);
        }
        if let Some(r) = self.rtcp.poll_timeout() {
            t = t.min(r);
        }
        t
    }

    /// Time has passed: play out what is due, send what is due, notice a
    /// silent peer.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        while let Some(due) = self.next_play_ms.filter(|&t| t <= now_ms) {
            self.play_one(due);
            self.next_play_ms = Some(due + self.frame_ms as u64);
        }
        // A call on hold may be silent both ways (a=inactive): its peer
        // going quiet is no reason to end it.
        if self.held {
            self.last_rx_ms = self.last_rx_ms.max(now_ms.saturating_sub(1));
        }
        if !self.timed_out && now_ms >= self.last_rx_ms + self.cfg.timeout_ms {
            self.timed_out = true;
            self.events.push_back(LegEvent::Timeout);
        }
    }

    fn play_one(&mut self, due_ms: u64) {
        let t = self.ms(due_ms);
        let r = match self.jb.pop(t) {
            Out::Buffering => return,
            Out::Packet { payload, .. } => self.decoder.packet(payload, &mut self.audio),
            Out::Expand => self.decoder.lost(None, &mut self.audio).map(|()| None),
            Out::Lost => {
                let next = self.jb.peek_due();
                self.decoder.lost(next, &mut self.audio).map(|()| None)
            }
        };
        match r {
            Ok(Some(key)) => self.digit(key, t, DtmfSource::InBand),
            Ok(None) => {}
            Err(_) => self.stats.malformed += 1,
        }
    }

    /// The next packet to send, written into `buf` (protected, on an SRTP
    /// leg), and where to; None when nothing is due at `now_ms`.
    pub fn poll_transmit(&mut self, now_ms: u64, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        let to = self.poll_transmit_plain(now_ms, buf)?;
        if let Some(s) = &mut self.srtp
            && s.protect_rtp(buf).is_err()
        {
            // The key's 2^48 packets are used up: nothing more goes out.
            return None;
        }
        Some(to)
    }

    /// One packet of another stream (relayed audio, a key press) written
    /// under our SSRC and next sequence number; where it goes.
    fn write_packet(
        &mut self,
        now_ms: u64,
        (marker, payload_type, timestamp): (bool, u8, u32),
        payload: &[u8],
        buf: &mut Vec<u8>,
    ) -> SocketAddr {
        rtp::write(
            &rtp::Header {
                marker,
                payload_type,
                sequence: self.seq,
                timestamp,
                ssrc: self.cfg.ssrc,
            },
            payload,
            buf,
        );
        self.rtcp.sent_rtp(now_ms, timestamp, payload.len());
        self.seq = self.seq.wrapping_add(1);
        self.send_to
    }

    fn poll_transmit_plain(&mut self, now_ms: u64, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        if !self.sending {
            return None;
        }
        // The other party's key presses go out as they come: one event's
        // packets share its start, which is now on our clock.
        if let (Some(p), Some(pt)) = (self.events_out.pop_front(), self.cfg.telephone_event) {
            let ts = match self.event_map {
                Some((theirs, ours)) if theirs == p.ts => ours,
                previous => {
                    // A new event starts now on our clock, and never on the
                    // last one's timestamp (our clock may not have moved
                    // while relayed audio paused): the far end would take
                    // it for a repeat of that key.
                    if previous.is_some_and(|(_, ours)| ours == self.ts) {
                        self.ts = self
                            .ts
                            .wrapping_add(self.cfg.codec.rate() / 1000 * SEND_MS as u32);
                    }
                    self.event_map = Some((p.ts, self.ts));
                    self.ts
                }
            };
            return Some(self.write_packet(now_ms, (p.marker, pt, ts), &p.payload, buf));
        }
        // Relayed packets go out as they arrive, under our SSRC and
        // sequence, their timestamps moved onto our clock.
        if let Some(p) = self.out.poll_relayed() {
            let offset = match self.relay_map {
                Some((off, last)) if p.ts.wrapping_sub(last) < self.cfg.codec.rate() * 5 => off,
                _ => self.ts.wrapping_sub(p.ts),
            };
            let new_run = self.relay_map.is_none_or(|(off, _)| off != offset);
            self.relay_map = Some((offset, p.ts));
            let ts = p.ts.wrapping_add(offset);
            let pt = self.cfg.payload_type;
            let to = self.write_packet(now_ms, (p.marker || new_run, pt, ts), &p.payload, buf);
            self.ts = ts.wrapping_add(self.cfg.codec.rate() / 1000 * SEND_MS as u32);
            return Some(to);
        }
        if now_ms < self.next_send_ms {
            return None;
        }
        // A late timer sends one packet, not a burst: the peer's jitter
        // buffer copes with a gap better than with a flood.
        self.next_send_ms += SEND_MS;
        if self.next_send_ms <= now_ms {
            self.next_send_ms = now_ms + SEND_MS;
        }
        let mut encoded = None;
        let frame = self.out.next_frame(now_ms);
        if let Some(s) = self.sent.as_mut()
            && frame != Frame::Skip
        {
            let pcm = match frame {
                Frame::Silence => &s.silence[..],
                _ => self.out.frame(),
            };
            // Bounded: the shell takes it every packet.
            if s.audio.len() < 16_000 {
                let _ = s.resampler.process(pcm, &mut s.audio);
            }
        }
        match frame {
            // Relaying carries the stream; its clock is the other leg's.
            Frame::Skip => return None,
            Frame::Silence => {}
            f => {
                if f == Frame::PromptEnded {
                    self.events.push_back(LegEvent::PromptDone);
                }
                self.packet_buf.resize(1500, 0);
                if let Some(enc) = self.encoder.as_mut()
                    && let Ok(n) = enc.encode(self.out.frame(), &mut self.packet_buf)
                {
                    encoded = Some(n);
                }
            }
        }
        let body = match encoded {
            Some(n) => &self.packet_buf[..n],
            None => &self.silence[..],
        };
        rtp::write(
            &rtp::Header {
                marker: false,
                payload_type: self.cfg.payload_type,
                sequence: self.seq,
                timestamp: self.ts,
                ssrc: self.cfg.ssrc,
            },
            body,
            buf,
        );
        self.rtcp.sent_rtp(now_ms, self.ts, body.len());
        self.seq = self.seq.wrapping_add(1);
        self.ts = self
            .ts
            .wrapping_add(self.cfg.codec.rate() / 1000 * SEND_MS as u32);
        Some(self.send_to)
    }

    /// Decoded audio so far (16 kHz); the caller takes it out.
    pub fn audio(&mut self) -> &mut Vec<f32> {
        &mut self.audio
    }

    pub fn poll_event(&mut self) -> Option<LegEvent> {
        self.events.pop_front()
    }

    /// The leg ends: whatever is buffered is played out now, as if time
    /// went on, and a key still held is reported.
    pub fn finish(&mut self, now_ms: u64) {
        if let Some(d) = self.events_rx.finish() {
            self.digit(d.digit, self.ms(now_ms), DtmfSource::Rfc4733);
        }
        let mut t = now_ms;
        while self.jb.buffered_ms() > 0 {
            t += self.frame_ms as u64;
            self.play_one(t);
        }
        let _ = self.decoder.flush(&mut self.audio);
        let s = self.jb.stats();
        let (target, jitter) = (s.target_delay_ms, s.jitter_ms);
        self.accumulate(s);
        self.stats.jitter.target_delay_ms = target;
        self.stats.jitter.jitter_ms = jitter;
        self.jb = JitterBuffer::new(jitter_config(&self.cfg, self.frame_ms));
        self.sending = false;
        // The last report, with an RTCP BYE: [`RtpLeg::poll_transmit_rtcp`].
        self.rtcp.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP_PEER: &str = "192.0.2.10:40000";
    const SDP_RTCP: &str = "192.0.2.10:40001";
    const NAT_PEER: &str = "198.51.100.7:31000";
    const ATTACKER: &str = "203.0.113.66:5004";

    fn cfg(symmetric: bool) -> RtpLegConfig {
        RtpLegConfig {
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: Some(101),
            remote: SDP_PEER.parse().unwrap(),
            symmetric,
            min_delay_ms: 20,
            max_delay_ms: 200,
            timeout_ms: 5_000,
            ssrc: 0x1234_5678,
            first_seq: 100,
            first_ts: 1000,
            rtcp_remote: SDP_RTCP.parse().unwrap(),
            rtcp_mux: false,
            wall_ms: 1_796_126_400_000,
            srtp: None,
        }
    }

    /// A 20 ms PCMU packet of a loud square wave (not silence).
    fn packet(seq: u16, ts: u32, ssrc: u32, level: u8) -> Vec<u8> {
        let payload: Vec<u8> = (0..160)
            .map(|i| if i % 20 < 10 { level } else { 0x80 | level })
            .collect();
        let mut out = Vec::new();
        rtp::write(
            &rtp::Header {
                marker: false,
                payload_type: 0,
                sequence: seq,
                timestamp: ts,
                ssrc,
            },
            &payload,
            &mut out,
        );
        out
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Run the leg from `from` to `to` ms, feeding nothing, collecting audio.
    fn run_until(
        leg: &mut RtpLeg,
        now: &mut u64,
        to: u64,
        audio: &mut Vec<f32>,
        sent: &mut Vec<SocketAddr>,
    ) {
        let mut buf = Vec::new();
        while *now < to {
            *now = (*now + 1).max(leg.poll_timeout().min(to));
            leg.handle_timeout(*now);
            while let Some(a) = leg.poll_transmit(*now, &mut buf) {
                sent.push(a);
            }
            // RTCP has its own test: here it is sent nowhere.
            while leg.poll_transmit_rtcp(*now, &mut buf).is_some() {}
            audio.append(leg.audio());
        }
    }

    fn energy(a: &[f32]) -> f32 {
        a.iter().map(|x| x * x).sum::<f32>()
    }

    /// A receiver report from the peer's SSRC about `about`.
    fn receiver_report(from_ssrc: u32, about: u32) -> Vec<u8> {
        use rtc_rtcp::packet::Packet;
        let rr: Box<dyn Packet> = Box::new(rtc_rtcp::receiver_report::ReceiverReport {
            ssrc: from_ssrc,
            reports: vec![rtc_rtcp::reception_report::ReceptionReport {
                ssrc: about,
                total_lost: 3,
                ..Default::default()
            }],
            ..Default::default()
        });
        rtc_rtcp::packet::marshal(&[rr]).unwrap().to_vec()
    }

    #[test]
    fn rtcp_waits_for_the_ack_and_hears_only_the_latched_peer() {
        let mut leg = RtpLeg::new(cfg(true), 0).unwrap();
        let peer_ssrc = 0xabcd;
        let mut buf = Vec::new();
        for i in 0..100u16 {
            let now = i as u64 * 20;
            leg.handle_datagram(
                now,
                addr(NAT_PEER),
                &packet(i, i as u32 * 160, peer_ssrc, 0x10),
            );
            leg.handle_timeout(now);
            assert!(
                leg.poll_transmit_rtcp(now, &mut buf).is_none(),
                "RTCP before the ACK"
            );
        }
        leg.start_sending(2_000);
        let mut reports = Vec::new();
        for now in 2_000..13_000 {
            while leg.poll_transmit(now, &mut buf).is_some() {}
            if let Some(to) = leg.poll_transmit_rtcp(now, &mut buf) {
                reports.push((now, to));
            }
        }
        // The peer's NAT: its RTP address's host, the RTCP port + 1 guess.
        let guess = SocketAddr::new(addr(NAT_PEER).ip(), addr(SDP_RTCP).port());
        assert_eq!(reports, vec![(4_500, guess), (9_500, guess)]);
        // A report from elsewhere is dropped; the peer's is read.
        leg.handle_rtcp(
            13_000,
            addr(ATTACKER),
            &receiver_report(peer_ssrc, 0x1234_5678),
        );
        leg.handle_rtcp(
            13_000,
            addr(SDP_PEER),
            &receiver_report(peer_ssrc, 0x1234_5678),
        );
        let s = leg.stats();
        assert_eq!((s.rtcp.sent, s.rtcp.received, s.rtcp.foreign), (2, 0, 2));
        let nat_rtcp = SocketAddr::new(addr(NAT_PEER).ip(), 31001);
        leg.handle_rtcp(13_000, nat_rtcp, &receiver_report(peer_ssrc, 0x1234_5678));
        let s = leg.stats();
        assert_eq!((s.rtcp.received, s.rtcp.remote_lost), (1, 3));
        assert_eq!(leg.rtcp_peer(), nat_rtcp);
        // The leg's end says goodbye.
        leg.finish(13_100);
        assert_eq!(leg.poll_transmit_rtcp(13_100, &mut buf), Some(nat_rtcp));
    }

    #[test]
    fn an_srtp_leg_hears_only_authentic_packets_and_sends_only_protected_ones() {
        use crate::media::srtp::{Crypto, Keys, Session, Suite};
        let ours = Crypto::generate(1, Suite::AesCm128HmacSha1_80);
        let theirs = Crypto::answering(&ours);
        let mut c = cfg(true);
        c.srtp = Some(Keys {
            local: ours.clone(),
            remote: theirs.clone(),
        });
        let mut leg = RtpLeg::new(c, 0).unwrap();
        // The peer's side of the keys.
        let mut peer = Session::new(Keys {
            local: theirs,
            remote: ours,
        })
        .unwrap();
        // Plain RTP from an attacker is neither heard nor latched to.
        leg.handle_datagram(0, addr(ATTACKER), &packet(1, 160, 0x666, 0x10));
        assert_eq!(leg.stats().srtp_rejected, 1);
        assert!(leg.poll_event().is_none());
        let mut p = packet(1, 160, 0xabcd, 0x10);
        peer.protect_rtp(&mut p).unwrap();
        leg.handle_datagram(20, addr(NAT_PEER), &p);
        assert_eq!(
            leg.poll_event(),
            Some(LegEvent::FirstPacket {
                from: addr(NAT_PEER)
            })
        );
        // Its replay is refused.
        leg.handle_datagram(30, addr(NAT_PEER), &p);
        let s = leg.stats();
        assert_eq!((s.packets, s.srtp_rejected), (1, 2));
        let (mut now, mut audio, mut sent) = (40, Vec::new(), Vec::new());
        leg.start_sending(now);
        let mut buf = Vec::new();
        let to = leg.poll_transmit(now, &mut buf).unwrap();
        assert_eq!(to, addr(NAT_PEER));
        assert_eq!(buf.len(), 12 + 160 + 10, "PCMU, 80-bit tag");
        let plain = peer.unprotect_rtp(&buf).unwrap();
        assert_eq!(plain.len(), 172);
        for seq in 2..20u16 {
            let mut p = packet(seq, 160 * seq as u32, 0xabcd, 0x10);
            peer.protect_rtp(&mut p).unwrap();
            leg.handle_datagram(now, addr(NAT_PEER), &p);
            let to = now + 20;
            run_until(&mut leg, &mut now, to, &mut audio, &mut sent);
        }
        assert!(energy(&audio) > 1.0, "decrypted audio is played");
        let mut rtcp = Vec::new();
        if leg.poll_transmit_rtcp(now + 5_000, &mut rtcp).is_some() {
            assert!(peer.unprotect_rtcp(&rtcp).is_ok(), "RTCP goes out as SRTCP");
        }
    }

    #[test]
    fn key_presses_cross_a_bridge_as_rfc4733_on_the_other_legs_clock() {
        let mut a = RtpLeg::new(cfg(true), 0).unwrap();
        let mut b = RtpLeg::new(cfg(true), 0).unwrap();
        for leg in [&mut a, &mut b] {
            leg.set_bridged(true, false).unwrap();
            leg.start_sending(0);
        }
        // Key 5 pressed on A's phone: three packets of one event, the last
        // with the E bit, all with the event's start timestamp.
        let event = |seq: u16, dur: u16, end: bool| {
            let mut out = Vec::new();
            let payload = [
                5u8,
                if end { 0x80 } else { 0 } | 10,
                (dur >> 8) as u8,
                dur as u8,
            ];
            rtp::write(
                &rtp::Header {
                    marker: seq == 1,
                    payload_type: 101,
                    sequence: seq,
                    timestamp: 77_000,
                    ssrc: 0xabcd,
                },
                &payload,
                &mut out,
            );
            out
        };
        let mut buf = Vec::new();
        let mut sent = Vec::new();
        for (i, (dur, end)) in [(160, false), (320, false), (480, true)]
            .into_iter()
            .enumerate()
        {
            a.handle_datagram(
                i as u64 * 20,
                addr(NAT_PEER),
                &event(i as u16 + 1, dur, end),
            );
            while let Some(e) = a.poll_forward_event() {
                b.relay_event(e);
            }
            while b.poll_transmit(i as u64 * 20, &mut buf).is_some() {
                let (h, payload) = rtp::parse(&buf).unwrap();
                if h.payload_type == 101 {
                    sent.push((h.timestamp, h.marker, payload.to_vec()));
                }
            }
        }
        assert_eq!(sent.len(), 3, "{sent:?}");
        assert!(
            sent.iter().all(|(ts, _, _)| *ts == sent[0].0),
            "one event, one timestamp"
        );
        assert_ne!(sent[0].0, 77_000, "on B's own clock");
        assert!(sent[0].1 && !sent[1].1, "the marker on the first packet");
        assert_eq!(sent[2].2, vec![5, 0x80 | 10, 1, 224], "the event as it was");
        // A's own record of the key is kept too.
        assert!(
            std::iter::from_fn(|| a.poll_event())
                .any(|e| matches!(e, LegEvent::Digit { key: '5', .. }))
        );
    }

    #[test]
    fn muxed_rtcp_on_the_rtp_port_is_not_audio() {
        let mut c = cfg(true);
        c.rtcp_mux = true;
        c.rtcp_remote = c.remote;
        let mut leg = RtpLeg::new(c, 0).unwrap();
        leg.handle_datagram(0, addr(NAT_PEER), &packet(1, 160, 0xabcd, 0x10));
        leg.handle_datagram(10, addr(NAT_PEER), &receiver_report(0xabcd, 0x1234_5678));
        let s = leg.stats();
        assert_eq!((s.packets, s.malformed, s.other_payload), (1, 0, 0));
        assert_eq!(s.rtcp.received, 1);
        leg.start_sending(20);
        let mut buf = Vec::new();
        assert_eq!(
            leg.poll_transmit_rtcp(2_520, &mut buf),
            Some(addr(NAT_PEER))
        );
    }

    #[test]
    fn nothing_is_sent_before_the_call_is_established() {
        let mut leg = RtpLeg::new(cfg(true), 0).unwrap();
        let (mut now, mut audio, mut sent) = (0, Vec::new(), Vec::new());
        run_until(&mut leg, &mut now, 3_000, &mut audio, &mut sent);
        assert!(
            sent.is_empty(),
            "sent {} packets before the ACK",
            sent.len()
        );
        leg.start_sending(now);
        run_until(&mut leg, &mut now, 4_000, &mut audio, &mut sent);
        // 20 ms packets for a second, to the SDP address (nothing latched).
        assert!((49..=51).contains(&sent.len()), "{}", sent.len());
        assert!(sent.iter().all(|a| *a == addr(SDP_PEER)));
    }

    #[test]
    fn latches_to_the_first_source_and_drops_everyone_else() {
        let mut leg = RtpLeg::new(cfg(true), 0).unwrap();
        leg.start_sending(0);
        let (mut now, mut audio, mut sent) = (0, Vec::new(), Vec::new());
        let mut injected = Vec::new();
        for i in 0..100u16 {
            let t = i as u64 * 20;
            run_until(&mut leg, &mut now, t, &mut audio, &mut sent);
            // The phone behind NAT: quiet audio.
            leg.handle_datagram(
                now,
                addr(NAT_PEER),
                &packet(i, i as u32 * 160, 0xaaaa, 0x7e),
            );
            // Someone else, loud, same SSRC and sequence: must not be heard.
            let p = packet(i, i as u32 * 160, 0xaaaa, 0x00);
            leg.handle_datagram(now, addr(ATTACKER), &p);
            injected.push(p);
            // The latched source with another SSRC and garbage: counted.
            leg.handle_datagram(now, addr(NAT_PEER), b"\x00\x01garbage");
        }
        run_until(&mut leg, &mut now, 2_300, &mut audio, &mut sent);
        assert_eq!(leg.stats.foreign, 100);
        assert_eq!(leg.stats.malformed, 100);
        assert_eq!(leg.stats.packets, 100);
        assert_eq!(leg.peer(), addr(NAT_PEER));
        // Every packet sent after the first one arrived went to the phone.
        assert!(sent.iter().skip(2).all(|a| *a == addr(NAT_PEER)));
        // Quiet audio only: 0x7e is near silence in μ-law, 0x00 full scale.
        let rms = (energy(&audio) / audio.len() as f32).sqrt();
        assert!(rms < 0.01, "injected audio was heard: rms {rms}");
    }

    #[test]
    fn without_symmetric_rtp_only_the_sdp_address_is_heard() {
        let mut leg = RtpLeg::new(cfg(false), 0).unwrap();
        leg.handle_datagram(0, addr(NAT_PEER), &packet(1, 160, 7, 0x10));
        assert_eq!(leg.stats.foreign, 1);
        leg.handle_datagram(20, addr(SDP_PEER), &packet(2, 320, 7, 0x10));
        assert_eq!(leg.stats.packets, 1);
        assert_eq!(
            leg.poll_event(),
            Some(LegEvent::FirstPacket {
                from: addr(SDP_PEER)
            })
        );
    }

    #[test]
    fn a_restarted_stream_keeps_being_heard() {
        let mut leg = RtpLeg::new(cfg(true), 0).unwrap();
        let (mut now, mut audio, mut sent) = (0, Vec::new(), Vec::new());
        for i in 0..50u16 {
            run_until(&mut leg, &mut now, i as u64 * 20, &mut audio, &mut sent);
            leg.handle_datagram(
                now,
                addr(NAT_PEER),
                &packet(1000 + i, 5_000 + i as u32 * 160, 1, 0x10),
            );
        }
        // New SSRC, sequence and timestamp far away: a phone restarting.
        for i in 0..50u16 {
            run_until(
                &mut leg,
                &mut now,
                1_000 + i as u64 * 20,
                &mut audio,
                &mut sent,
            );
            leg.handle_datagram(
                now,
                addr(NAT_PEER),
                &packet(40_000 + i, 9_000_000 + i as u32 * 160, 2, 0x10),
            );
        }
        run_until(&mut leg, &mut now, 2_300, &mut audio, &mut sent);
        leg.finish(now);
        audio.append(leg.audio());
        assert_eq!(leg.stats.ssrc_changes, 1);
        assert_eq!(leg.stats.packets, 100);
        // The second stream was played, not dropped as late.
        assert!(leg.stats.jitter.late < 5, "{:?}", leg.stats.jitter);
        let second = &audio[audio.len() * 11 / 20..audio.len() * 18 / 20];
        assert!(energy(second) > 1.0, "the restarted stream is silent");
    }

    #[test]
    fn a_sender_with_30_ms_packets_is_played_at_its_own_pace() {
        let mut leg = RtpLeg::new(cfg(true), 0).unwrap();
        let (mut now, mut audio, mut sent) = (0, Vec::new(), Vec::new());
        for i in 0..100u16 {
            run_until(&mut leg, &mut now, i as u64 * 30, &mut audio, &mut sent);
            let mut p = packet(i, i as u32 * 240, 1, 0x10);
            // 240 samples of payload.
            p.extend(std::iter::repeat_n(0x10, 80));
            leg.handle_datagram(now, addr(NAT_PEER), &p);
        }
        run_until(&mut leg, &mut now, 3_200, &mut audio, &mut sent);
        let s = leg.stats.jitter;
        // Not 1.5 packets a frame dropped or expanded: played as sent.
        assert!(s.lost + s.late + s.expanded < 10, "{s:?}");
        // 3 s of audio at 16 kHz, give or take the buffer's delay.
        assert!((40_000..=52_000).contains(&audio.len()), "{}", audio.len());
    }

    #[test]
    fn silence_from_the_peer_times_out_once() {
        let mut leg = RtpLeg::new(cfg(true), 0).unwrap();
        let (mut now, mut audio, mut sent) = (0, Vec::new(), Vec::new());
        run_until(&mut leg, &mut now, 4_900, &mut audio, &mut sent);
        assert_eq!(leg.poll_event(), None);
        run_until(&mut leg, &mut now, 5_000, &mut audio, &mut sent);
        assert_eq!(leg.poll_event(), Some(LegEvent::Timeout));
        run_until(&mut leg, &mut now, 9_000, &mut audio, &mut sent);
        assert_eq!(leg.poll_event(), None);
    }

    #[test]
    fn a_storm_of_key_presses_is_bounded() {
        let mut leg = RtpLeg::new(cfg(true), 0).unwrap();
        for i in 0..2_000u32 {
            // A new event (new timestamp) each packet, with the end bit.
            let mut out = Vec::new();
            rtp::write(
                &rtp::Header {
                    marker: true,
                    payload_type: 101,
                    sequence: i as u16,
                    timestamp: i * 800,
                    ssrc: 9,
                },
                &[5, 0x80 | 10, 0x03, 0x20],
                &mut out,
            );
            leg.handle_datagram(i as u64, addr(NAT_PEER), &out);
        }
        let mut digits = 0;
        while let Some(e) = leg.poll_event() {
            if matches!(e, LegEvent::Digit { .. }) {
                digits += 1;
            }
        }
        assert_eq!(digits, MAX_DIGITS);
        assert!(leg.stats.digits_dropped > 1_000);
    }

    #[test]
    fn a_prompt_is_sent_then_silence_and_its_end_is_reported() {
        let mut leg = RtpLeg::new(cfg(true), 0).unwrap();
        leg.play(vec![0.3; 8_000]).unwrap(); // 1 s at 8 kHz
        leg.start_sending(0);
        let (mut now, mut audio, mut sent) = (0, Vec::new(), Vec::new());
        run_until(&mut leg, &mut now, 900, &mut audio, &mut sent);
        assert!(!std::iter::from_fn(|| leg.poll_event()).any(|e| e == LegEvent::PromptDone));
        run_until(&mut leg, &mut now, 1_100, &mut audio, &mut sent);
        assert!(std::iter::from_fn(|| leg.poll_event()).any(|e| e == LegEvent::PromptDone));
    }

    #[test]
    fn garbage_datagrams_never_panic() {
        let mut leg = RtpLeg::new(cfg(true), 0).unwrap();
        let mut x: u64 = 99;
        for i in 0..20_000u64 {
            let len = (x % 300) as usize;
            let d: Vec<u8> = (0..len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 33) as u8
                })
                .collect();
            leg.handle_datagram(i, addr(NAT_PEER), &d);
            leg.handle_timeout(i);
        }
    }
}
