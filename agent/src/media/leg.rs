//! The tokio shell of one audio leg: it owns the RTP socket (and the RTCP
//! one, unless RTCP is muxed onto RTP) and the timer, and loops over the
//! sans-IO [`RtpLeg`]: datagrams and timeouts in;
//! packets out to the socket, decoded audio to the leg's [`FrameSink`],
//! events (keys, the end of a prompt) to its owner.

use super::rtp_leg::{LegEvent, LegStats, RtpLeg};
use super::sink::FrameSink;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::watch;
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
}

/// The leg's sockets: RTP, and RTCP when it has a port of its own.
pub struct Sockets {
    pub rtp: UdpSocket,
    pub rtcp: Option<UdpSocket>,
}

/// Run `leg` on its sockets until cancelled, the peer goes silent, or the
/// RTP socket fails. Sending starts once `established` turns true (the ACK).
pub async fn run(
    sockets: Sockets,
    mut leg: RtpLeg,
    started: Instant,
    sink: &mut dyn FrameSink,
    mut established: watch::Receiver<bool>,
    on_event: &mut (dyn FnMut(LegEvent) + Send),
    cancel: CancellationToken,
) -> (LegEnd, LegStats, ShellStats) {
    let now = || started.elapsed().as_millis() as u64;
    let mut shell = ShellStats::default();
    let Sockets { rtp: socket, rtcp } = sockets;
    let mut buf = vec![0u8; 2048];
    let mut rtcp_buf = vec![0u8; 1500];
    let mut send_buf = Vec::with_capacity(1500);
    let mut watching = true;
    let mut rtcp_open = rtcp.is_some();
    let end = 'run: loop {
        while let Some(to) = leg.poll_transmit(now(), &mut send_buf) {
            // A send error (ICMP from a peer not listening yet) is not the
            // end of the call: the RTP timeout is.
            let _ = socket.send_to(&send_buf, to).await;
        }
        send_rtcp(
            &mut leg,
            rtcp.as_ref().unwrap_or(&socket),
            now(),
            &mut send_buf,
        )
        .await;
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
            r = established.changed(), if watching && !leg.is_sending() => match r {
                Ok(()) if *established.borrow() => leg.start_sending(now()),
                Ok(()) => {}
                Err(_) => watching = false,
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
        rtcp.as_ref().unwrap_or(&socket),
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
