//! The tokio side of one audio leg: receive RTP into the jitter buffer, play
//! it out on a steady clock, decode, resample to
//! 16 kHz and hand 20 ms frames to its [`FrameSink`] without ever blocking;
//! send 20 ms back every 20 ms so the peer's NAT and jitter buffer stay
//! happy: the announcement while there is one, then silence.

use super::decode::{Decoder, MAX_SAMPLES};
use super::rtp;
use super::sdp::Codec;
use super::sink::FrameSink;
use handlet_dsp::g711::Law;
use handlet_dsp::jitter::{self, JitterBuffer, Out};
use handlet_dsp::playout::{FrameEncoder, Prompt};
use handlet_dsp::telephone_event;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

const FRAME_8K: usize = 160;

#[derive(Debug, Default, Clone, Copy)]
pub struct LegStats {
    pub packets: u64,
    pub malformed: u64,
    pub other_payload: u64,
    pub dropped_frames: u64,
    pub jitter: handlet_dsp::jitter::Stats,
}

/// Why the leg stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegEnd {
    Cancelled,
    Timeout,
    SocketError,
}

/// A key the caller pressed: the key, when (ms since the leg started), and how
/// it was sent ("rfc4733" or "in-band").
pub type OnDigit = Box<dyn FnMut(char, u64, &'static str) + Send>;

pub struct LegConfig {
    pub codec: Codec,
    pub payload_type: u8,
    /// The peer's telephone-event payload type, if negotiated.
    pub telephone_event: Option<u8>,
    pub on_digit: OnDigit,
    pub remote: SocketAddr,
    /// Peer's packet time (a=ptime), the playout clock's period.
    pub ptime_ms: u32,
    pub min_delay_ms: u32,
    pub max_delay_ms: u32,
    pub timeout: Duration,
    /// Played to the caller from the answer on, at [`pcm_rate`]; the flag is
    /// raised once all of it has been sent (recording waits for it).
    pub prompt: Option<(Prompt, Arc<AtomicBool>)>,
}

/// The rate a leg's outgoing audio is encoded from: 8 kHz for G.711, 16 kHz
/// for Opus (sent wideband mono).
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

/// 20 ms of silence in the leg's codec, sent back to the caller.
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

/// Run until cancelled or RTP stops arriving.
pub async fn run(
    socket: UdpSocket,
    mut cfg: LegConfig,
    sink: &mut dyn FrameSink,
    cancel: CancellationToken,
) -> (LegEnd, LegStats) {
    let mut stats = LegStats::default();
    let ptime = cfg.ptime_ms.clamp(10, 60);
    let mut jb = JitterBuffer::new(jitter::Config {
        clock_rate: cfg.codec.rate(),
        frame: cfg.codec.rate() / 1000 * ptime,
        min_delay_ms: cfg.min_delay_ms,
        max_delay_ms: cfg.max_delay_ms,
        ..jitter::Config::g711()
    });
    // The playout clock: one frame per packet time, whatever the network does.
    let mut play = tokio::time::interval(Duration::from_millis(ptime as u64));
    play.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let Ok(mut decoder) = Decoder::new(cfg.codec) else {
        return (LegEnd::SocketError, stats);
    };
    let mut remote = cfg.remote;
    let mut buf = vec![0u8; 2048];
    let mut out16: Vec<f32> = Vec::with_capacity(MAX_SAMPLES * 2);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut send_buf = Vec::with_capacity(12 + FRAME_8K);
    let silence = match silence_packet(cfg.codec) {
        Ok(p) => p,
        Err(_) => return (LegEnd::SocketError, stats),
    };
    let ts_step = cfg.codec.rate() / 50;
    let mut prompt = cfg.prompt.take();
    let mut encoder = match prompt
        .as_ref()
        .map(|_| frame_encoder(cfg.codec))
        .transpose()
    {
        Ok(e) => e,
        Err(_) => return (LegEnd::SocketError, stats),
    };
    let mut prompt_frame = vec![0.0f32; pcm_rate(cfg.codec) as usize / 50];
    let mut prompt_packet = [0u8; 1500];
    let ssrc: u32 = rand::random();
    let mut seq: u16 = rand::random();
    let mut ts: u32 = rand::random();
    let mut last_rx = tokio::time::Instant::now();
    let started = last_rx;
    let now_ms = || started.elapsed().as_millis() as u64;
    let mut events = telephone_event::Receiver::default();
    let deliver = |out16: &mut Vec<f32>, stats: &mut LegStats, sink: &mut dyn FrameSink| {
        if !out16.is_empty() && !sink.frame(out16) {
            out16.clear();
            stats.dropped_frames += 1;
        }
    };

    let end = loop {
        tokio::select! {
            _ = cancel.cancelled() => break LegEnd::Cancelled,
            _ = tick.tick() => {
                if last_rx.elapsed() > cfg.timeout {
                    break LegEnd::Timeout;
                }
                let mut payload: &[u8] = &silence;
                let mut finished = false;
                if let (Some((p, done)), Some(enc)) = (prompt.as_mut(), encoder.as_mut()) {
                    let more = p.fill(&mut prompt_frame);
                    match enc.encode(&prompt_frame, &mut prompt_packet) {
                        Ok(n) if more => payload = &prompt_packet[..n],
                        _ => {
                            done.store(true, Ordering::Release);
                            finished = true;
                        }
                    }
                }
                if finished {
                    prompt = None;
                }
                rtp::write(&rtp::Header { marker: false, payload_type: cfg.payload_type, sequence: seq, timestamp: ts, ssrc }, payload, &mut send_buf);
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(ts_step);
                let _ = socket.send_to(&send_buf, remote).await;
            }
            r = socket.recv_from(&mut buf) => {
                let (n, from) = match r {
                    Ok(x) => x,
                    // ICMP port unreachable from a peer that has not opened its port yet.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(_) => break LegEnd::SocketError,
                };
                let Ok((h, payload)) = rtp::parse(&buf[..n]) else {
                    stats.malformed += 1;
                    continue;
                };
                if Some(h.payload_type) == cfg.telephone_event {
                    last_rx = tokio::time::Instant::now();
                    if let Some(d) = events.push(h.timestamp, payload) {
                        (cfg.on_digit)(d.digit, started.elapsed().as_millis() as u64, "rfc4733");
                    }
                    continue;
                }
                if h.payload_type != cfg.payload_type {
                    stats.other_payload += 1; // telephone-event, comfort noise: not audio
                    continue;
                }
                last_rx = tokio::time::Instant::now();
                // Symmetric RTP: answer to where the audio really comes from.
                remote = from;
                stats.packets += 1;
                jb.push(now_ms(), h.sequence, h.timestamp, payload);
            }
            _ = play.tick() => {
                let r = match jb.pop(now_ms()) {
                    Out::Buffering => continue,
                    Out::Packet { payload, .. } => decoder.packet(payload, &mut out16),
                    Out::Expand => decoder.lost(None, &mut out16).map(|()| None),
                    Out::Lost => decoder.lost(jb.peek_due(), &mut out16).map(|()| None),
                };
                match r {
                    Ok(Some(key)) => (cfg.on_digit)(key, now_ms(), "in-band"),
                    Ok(None) => {}
                    Err(_) => stats.malformed += 1,
                }
                deliver(&mut out16, &mut stats, sink);
            }
        }
    };
    if let Some(d) = events.finish() {
        (cfg.on_digit)(d.digit, started.elapsed().as_millis() as u64, "rfc4733");
    }
    // Whatever is still buffered is played out now, as if time went on.
    let mut t = now_ms();
    while jb.buffered_ms() > 0 {
        t += ptime as u64;
        if let Out::Packet { payload, .. } = jb.pop(t)
            && let Ok(Some(key)) = decoder.packet(payload, &mut out16)
        {
            (cfg.on_digit)(key, t, "in-band");
        }
    }
    let _ = decoder.flush(&mut out16);
    deliver(&mut out16, &mut stats, sink);
    sink.end();
    stats.jitter = jb.stats();
    (end, stats)
}
