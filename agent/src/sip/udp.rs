//! Our UDP socket under rsipstack: every datagram passes [`vet`] and the
//! per-source rate limit before rsipstack parses it, so malformed requests
//! get the answer RFC 3261 gives them (or are dropped), and a flood from
//! one address is cut (counted, one log line per burst) while other
//! sources are served. rsipstack reads through this with its own 8 KB
//! buffer; we read with a 64 KB one, so a datagram over `vet`'s 16 KB limit
//! is answered 513, and one that would not fit rsipstack's buffer is
//! dropped rather than passed on truncated.

use super::rate::RateLimit;
use super::vet::{Verdict, vet};
use crate::limits::{BurstLog, COUNTERS, count};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

pub struct VettedUdp {
    sock: tokio::net::UdpSocket,
    /// One 64 KB read buffer, reused: only rsipstack's serve loop reads.
    buf: tokio::sync::Mutex<Vec<u8>>,
    rate: Mutex<RateLimit>,
    started: Instant,
    flood_log: BurstLog,
}

/// Our own self-check (`selfcheck.rs`) is never rate limited.
fn is_self_check(data: &[u8], from: SocketAddr) -> bool {
    from.ip().is_loopback()
        && data
            .windows(b"Call-ID: selfcheck-".len())
            .any(|w| w == b"Call-ID: selfcheck-")
}

impl VettedUdp {
    pub fn new(sock: tokio::net::UdpSocket, per_sec: u32, burst: u32) -> VettedUdp {
        VettedUdp {
            sock,
            buf: tokio::sync::Mutex::new(vec![0u8; 65_536]),
            rate: Mutex::new(RateLimit::new(per_sec, burst, 4096)),
            started: Instant::now(),
            flood_log: BurstLog::new("limits.sip_requests_per_sec"),
        }
    }

    fn admit(&self, data: &[u8], from: SocketAddr) -> bool {
        // Responses and keepalives are not requests.
        if data.starts_with(b"SIP/") || data.iter().all(|b| b.is_ascii_whitespace()) {
            return true;
        }
        if is_self_check(data, from) {
            return true;
        }
        let now = self.started.elapsed().as_millis() as u64;
        let ok = self
            .rate
            .lock()
            .map(|mut r| r.allow(from.ip(), now))
            .unwrap_or(true);
        if !ok {
            count(&COUNTERS.sip_rate_limited, 1);
            self.flood_log.hit(Instant::now());
        }
        ok
    }
}

#[async_trait::async_trait]
impl rsipstack::platform::net::UdpSocket for VettedUdp {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        let mut big = self.buf.lock().await;
        loop {
            let (n, from) = self
                .sock
                .recv_from(&mut big)
                .await
                .map_err(|e| rsipstack::Error::Error(format!("udp recv: {e}")))?;
            let data = &big[..n];
            if !self.admit(data, from) {
                continue;
            }
            match vet(data) {
                Verdict::Pass if n <= buf.len() => {
                    buf[..n].copy_from_slice(data);
                    return Ok((n, from));
                }
                // Valid, but rsipstack's buffer would truncate it.
                Verdict::Pass => {}
                Verdict::Respond(r) => {
                    tracing::debug!(status = ?r.get(8..11), "answered a malformed request");
                    let _ = self.sock.send_to(r.as_bytes(), from).await;
                }
                Verdict::Drop(_) => {}
            }
        }
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        self.sock
            .send_to(buf, addr)
            .await
            .map_err(|e| rsipstack::Error::Error(format!("udp send: {e}")))
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        self.sock
            .local_addr()
            .map_err(|e| rsipstack::Error::Error(format!("udp: {e}")))
    }
}
