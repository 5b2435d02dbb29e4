//! The tokio shell of one audio leg: it owns the RTP socket (and the RTCP
//! one, unless RTCP is muxed onto RTP) and the timer, and loops over the
//! sans-IO [`RtpLeg`]: datagrams and timeouts in;
//! packets out to the socket, decoded audio to the leg's [`FrameSink`],
//! events (keys, the end of a prompt) to its owner. Its owner steers it
//! with [`Control`]s: tones, early media, and bridging to another leg, whose
//! audio then comes in as [`Feed`]s.

use super::outgoing::Relayed;
use super::rtp_leg::{LegEvent, LegStats, RtpLeg};
use super::sink::FrameSink;
use handlet_dsp::playout::ToneSpec;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use super::rtp_leg::pcm_rate;

/// Why the leg stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegEnd {
    Cancelled,
    Timeout,
    SocketError,
}

/// What the shell adds to the core's figures.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShellStats {
    /// Frames the sink had no room for (the tap is behind).
    pub dropped_frames: u64,
    /// Audio the other leg of a bridge had no room for.
    pub bridge_dropped: u64,
}

/// What a call tells its running leg.
pub enum Control {
    /// Send from now on: the call is established (its ACK), or early
    /// media (ringback before the answer).
    StartSending,
    /// A tone when nothing else is sent (ringback, hold), or none.
    Tone(Option<ToneSpec>),
    /// Bridge to another leg: what this leg's peer says goes out on
    /// `to_peer` (its packets when `relay`, the two legs sharing a codec;
    /// else decoded audio), and what arrives on `from_peer` is sent to it.
    Bridge {
        to_peer: mpsc::Sender<Feed>,
        from_peer: mpsc::Receiver<Feed>,
        relay: bool,
    },
    Unbridge,
    /// Hold (true) or resume: the bridged audio stops reaching this peer.
    Hold(bool),
    /// Where the peer's audio goes from now on (the call's tap, once a
    /// ringing call is answered); the old sink is ended.
    Sink(Box<dyn FrameSink>),
    /// Time out after this many ms without audio, counted from now.
    Timeout(u64),
    /// SRTP keys from now on (a re-INVITE re-keyed), or none.
    Srtp(Option<super::srtp::Keys>),
    /// The peer's codec from now on (a re-INVITE switched it): codec,
    /// payload type, telephone-event payload type.
    Codec(super::sdp::Codec, u8, Option<u8>),
    /// The box's voice, streamed: samples at the leg's rate ([`pcm_rate`]),
    /// `last` on the final piece of one speech ([`LegEvent::PromptDone`]
    /// reports its end).
    Speak {
        samples: Vec<f32>,
        last: bool,
    },
    /// Stop talking at once (the caller barged in).
    StopSpeaking,
    /// Copy everything the leg sends (16 kHz, silence included) here: the
    /// box's side of a recording. None: stop.
    Monitor(Option<crossbeam_channel::Sender<Vec<f32>>>),
}

/// A sink for a leg whose audio is not kept yet (early media while the
/// call rings): frames are dropped.
pub struct Discard;

impl FrameSink for Discard {
    fn frame(&mut self, frame: &mut Vec<f32>) -> bool {
        frame.clear();
        true
    }
    fn end(&mut self) {}
}

/// Audio from the other leg of a bridge.
pub enum Feed {
    /// Decoded, 16 kHz.
    Pcm(Vec<f32>),
    /// A packet of its stream, to relay as it is.
    Rtp(Relayed),
    /// A key-press packet of its (RFC 4733), to send with ours.
    Event(Relayed),
}

/// Feeds queued between two bridged legs at most (~1 s of 20 ms frames):
/// a leg that falls behind loses audio, it never makes the other wait.
pub const FEED_QUEUE: usize = 50;

/// The two ends of a bridge between legs A and B: give A the first pair
/// and B the second.
pub fn bridge_pair(relay: bool) -> (Control, Control) {
    let (a_tx, a_rx) = mpsc::channel(FEED_QUEUE);
    let (b_tx, b_rx) = mpsc::channel(FEED_QUEUE);
    (
        Control::Bridge {
            to_peer: b_tx,
            from_peer: a_rx,
            relay,
        },
        Control::Bridge {
            to_peer: a_tx,
            from_peer: b_rx,
            relay,
        },
    )
}

/// The leg's sockets: RTP, and RTCP when it has a port of its own.
pub struct Sockets {
    pub rtp: UdpSocket,
    pub rtcp: Option<UdpSocket>,
}

/// Run `leg` on its sockets until cancelled, the peer goes silent, or the
/// RTP socket fails. Sending starts with [`Control::StartSending`] (the ACK,
/// or early media).
pub async fn run(
    sockets: &Sockets,
    mut leg: RtpLeg,
    started: Instant,
    mut sink: Box<dyn FrameSink>,
    mut control: mpsc::UnboundedReceiver<Control>,
    on_event: &mut (dyn FnMut(LegEvent) + Send),
    cancel: CancellationToken,
) -> (LegEnd, LegStats, ShellStats) {
    let now = || started.elapsed().as_millis() as u64;
    let mut shell = ShellStats::default();
    let Sockets { rtp: socket, rtcp } = sockets;
    let mut buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 1500];
    let mut send_buf = Vec::with_capacity(1500);
    let mut rtcp_open = rtcp.is_some();
    let mut control_open = true;
    let mut to_peer: Option<mpsc::Sender<Feed>> = None;
    let mut from_peer: Option<mpsc::Receiver<Feed>> = None;
    let mut relay = false;
    let mut monitor: Option<crossbeam_channel::Sender<Vec<f32>>> = None;
    let end = 'run: loop {
        while let Some(to) = leg.poll_transmit(now(), &mut send_buf) {
            // A send error (ICMP from a peer not listening yet) is not the
            // end of the call: the RTP timeout is.
            let _ = socket.send_to(&send_buf, to).await;
        }
        if let (Some(tx), Some(sent)) = (&monitor, leg.sent_audio())
            && !sent.is_empty()
        {
            // A recorder that is behind loses the box's audio, never waits.
            let _ = tx.try_send(std::mem::take(sent));
        }
        send_rtcp(
            &mut leg,
            rtcp.as_ref().unwrap_or(socket),
            now(),
            &mut send_buf,
        )
        .await;
        if let Some(tx) = &to_peer {
            if relay {
                while let Some(p) = leg.poll_forward() {
                    if tx.try_send(Feed::Rtp(p)).is_err() {
                        shell.bridge_dropped += 1;
                    }
                }
            } else if !leg.audio().is_empty()
                && tx.try_send(Feed::Pcm(leg.audio().clone())).is_err()
            {
                shell.bridge_dropped += 1;
            }
            while let Some(e) = leg.poll_forward_event() {
                if tx.try_send(Feed::Event(e)).is_err() {
                    shell.bridge_dropped += 1;
                }
            }
        }
        if !leg.audio().is_empty() && !sink.frame(leg.audio()) {
            leg.audio().clear();
            shell.dropped_frames += 1;
        }
        while let Some(ev) = leg.poll_event() {
            if ev == LegEvent::Timeout {
                break 'run LegEnd::Timeout;
            }
            on_event(ev);
        }
        let deadline = started + Duration::from_millis(leg.poll_timeout());
        tokio::select! {
            _ = cancel.cancelled() => break LegEnd::Cancelled,
            c = control.recv(), if control_open => match c {
                None => control_open = false,
                Some(Control::StartSending) => leg.start_sending(now()),
                Some(Control::Tone(t)) => {
                    let _ = leg.set_tone(t);
                }
                Some(Control::Speak { samples, last }) => {
                    let _ = leg.speak(&samples, last);
                }
                Some(Control::StopSpeaking) => leg.stop_speaking(),
                Some(Control::Monitor(tx)) => {
                    if leg.monitor_sent(tx.is_some()).is_ok() {
                        monitor = tx;
                    }
                }
                Some(Control::Bridge { to_peer: tx, from_peer: rx, relay: r }) => {
                    if leg.set_bridged(true, r).is_ok() {
                        to_peer = Some(tx);
                        from_peer = Some(rx);
                        relay = r;
                    }
                }
                Some(Control::Unbridge) => {
                    let _ = leg.set_bridged(false, false);
                    to_peer = None;
                    from_peer = None;
                }
                Some(Control::Hold(h)) => leg.set_held(h),
                Some(Control::Timeout(ms)) => leg.set_timeout(now(), ms),
                Some(Control::Codec(codec, pt, te)) => {
                    if let Err(e) = leg.set_codec(codec, pt, te) {
                        tracing::warn!(error = %e, "cannot switch the leg's codec");
                    }
                }
                Some(Control::Srtp(keys)) => {
                    if let Err(e) = leg.set_srtp(keys) {
                        tracing::warn!(error = %e, "cannot re-key the leg's SRTP");
                    }
                }
                Some(Control::Sink(s)) => {
                    sink.end();
                    sink = s;
                }
            },
            f = async { from_peer.as_mut().expect("guarded").recv().await }, if from_peer.is_some() => match f {
                Some(Feed::Pcm(v)) => leg.feed(&v),
                Some(Feed::Rtp(p)) => leg.relay(p, now()),
                Some(Feed::Event(p)) => leg.relay_event(p),
                // The other leg ended.
                None => from_peer = None,
            },
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => leg.handle_datagram(now(), from, &buf[..n]),
                // ICMP port unreachable from a peer that has not opened its port yet.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(_) => break LegEnd::SocketError,
            },
            r = async { rtcp.as_ref().expect("guarded").recv_from(&mut rtcp_buf).await }, if rtcp_open => match r {
                Ok((n, from)) => leg.handle_rtcp(now(), from, &rtcp_buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                // RTCP is not the call: without it the leg goes on.
                Err(_) => rtcp_open = false,
            },
            _ = tokio::time::sleep_until(deadline) => leg.handle_timeout(now()),
        }
    };
    leg.finish(now());
    // The last report, with RTCP BYE.
    send_rtcp(
        &mut leg,
        rtcp.as_ref().unwrap_or(socket),
        now(),
        &mut send_buf,
    )
    .await;
    if !leg.audio().is_empty() && !sink.frame(leg.audio()) {
        shell.dropped_frames += 1;
    }
    while let Some(ev) = leg.poll_event() {
        if ev != LegEvent::Timeout {
            on_event(ev);
        }
    }
    sink.end();
    (end, leg.stats(), shell)
}

/// Send what RTCP the leg has due, on its RTCP socket (or the RTP one when
/// muxed). A send error is not the end of the call.
async fn send_rtcp(leg: &mut RtpLeg, socket: &UdpSocket, now_ms: u64, buf: &mut Vec<u8>) {
    while let Some(to) = leg.poll_transmit_rtcp(now_ms, buf) {
        let _ = socket.send_to(buf, to).await;
    }
}
