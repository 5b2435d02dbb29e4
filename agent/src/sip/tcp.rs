//! Our own TCP acceptor in front of rsipstack, so a peer cannot make the
//! agent hold connections without bound (17,400 idle connections once took
//! 1.6 GB and stayed open for rsipstack's 300 s idle limit):
//! - at most `tcp_connections_per_source` connections from one IP and
//!   `tcp_connections` in all; one more is closed as it is accepted, before
//!   rsipstack allocates anything for it (counted, one log line per burst);
//! - a connection that carried no SIP message for `tcp_idle_secs`, and no
//!   INVITE of a call still in progress, is closed (a call's connection is
//!   kept: the caller's BYE comes on it). Registered phones (issue 13) will
//!   be kept too;
//! - requests over TCP are rate limited per source like UDP datagrams.
//!
//! [`Table`] is the decision, with time passed in; [`TcpGuard`] is the
//! shell around it. A connection admitted is handed to rsipstack with
//! `TcpConnection::from_stream`; we keep a duplicate of its descriptor so
//! that closing it (`shutdown`) ends rsipstack's read loop too, which a
//! close through rsipstack (its write half only) would not.
//!
//! rsipstack also gets a `TcpListenerConnection` for the same address, so
//! its Via and Contact building knows the TCP address; its own bind of it
//! fails (our listener holds the port) and it logs that at warn, which the
//! default filter hides. That is relied on, and `tests/tcp_limits.rs` would
//! see connections bypass the limits if it changed.

use super::rate::RateLimit;
use crate::limits::{BurstLog, COUNTERS, count};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::time::Instant;

/// SIP Call-IDs remembered per connection (INVITEs it carried).
const MAX_CALLS_PER_CONNECTION: usize = 8;

#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub per_source: usize,
    pub total: usize,
    pub idle_ms: u64,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    PerSource,
    Total,
}

#[derive(Debug)]
struct Conn {
    last_ms: u64,
    /// Call-IDs of INVITEs that came on it.
    calls: Vec<String>,
}

/// The connections we admitted, by the peer's address (one TCP connection
/// per remote ip:port).
#[derive(Debug)]
pub struct Table {
    limits: TcpLimits,
    conns: HashMap<SocketAddr, Conn>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Table {
    pub fn new(limits: TcpLimits) -> Table {
        Table {
            limits,
            conns: HashMap::new(),
            per_ip: HashMap::new(),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// A connection was accepted from `remote`: keep it, or refuse it.
    pub fn admit(&mut self, remote: SocketAddr, now_ms: u64) -> Result<(), Refusal> {
        if self.conns.len() >= self.limits.total {
            return Err(Refusal::Total);
        }
        let n = self.per_ip.get(&remote.ip()).copied().unwrap_or(0);
        if n >= self.limits.per_source {
            return Err(Refusal::PerSource);
        }
        self.per_ip.insert(remote.ip(), n + 1);
        self.conns.insert(
            remote,
            Conn {
                last_ms: now_ms,
                calls: Vec::new(),
            },
        );
        Ok(())
    }

    /// A SIP message came on (or went out over) the connection to `remote`;
    /// `invite` is the Call-ID of an INVITE that started a dialog on it.
    pub fn activity(&mut self, remote: SocketAddr, now_ms: u64, invite: Option<&str>) {
        let Some(c) = self.conns.get_mut(&remote) else {
            return;
        };
        c.last_ms = now_ms;
        if let Some(id) = invite
            && !c.calls.iter().any(|x| x == id)
        {
            if c.calls.len() >= MAX_CALLS_PER_CONNECTION {
                c.calls.remove(0);
            }
            c.calls.push(id.to_string());
        }
    }

    /// The connection to `remote` is gone (either side closed it).
    pub fn closed(&mut self, remote: SocketAddr) {
        if self.conns.remove(&remote).is_none() {
            return;
        }
        if let Some(n) = self.per_ip.get_mut(&remote.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&remote.ip());
            }
        }
    }

    /// Connections idle past the limit that carry no call in progress; a
    /// finished call's Call-ID is forgotten on the way.
    pub fn idle(&mut self, now_ms: u64, in_progress: impl Fn(&str) -> bool) -> Vec<SocketAddr> {
        let idle_ms = self.limits.idle_ms;
        let mut out = Vec::new();
        for (addr, c) in &mut self.conns {
            if now_ms.saturating_sub(c.last_ms) < idle_ms {
                continue;
            }
            c.calls.retain(|id| in_progress(id));
            if c.calls.is_empty() {
                out.push(*addr);
            }
        }
        out
    }
}

/// The shell: the table, the descriptors to close, the rate limit.
pub struct TcpGuard {
    table: Mutex<Table>,
    fds: Mutex<HashMap<SocketAddr, OwnedFd>>,
    rate: Mutex<RateLimit>,
    started: Instant,
    refused_log: BurstLog,
    rate_log: BurstLog,
}

impl TcpGuard {
    pub fn new(limits: TcpLimits, requests_per_sec: u32) -> TcpGuard {
        TcpGuard {
            table: Mutex::new(Table::new(limits)),
            fds: Mutex::new(HashMap::new()),
            rate: Mutex::new(RateLimit::new(
                requests_per_sec,
                requests_per_sec.saturating_mul(2),
                4096,
            )),
            started: Instant::now(),
            refused_log: BurstLog::new("limits.tcp_connections_per_source / tcp_connections"),
            rate_log: BurstLog::new("limits.sip_requests_per_sec (tcp)"),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Keep the accepted `stream` (true) or close it now (false).
    pub fn admit(&self, stream: &tokio::net::TcpStream, remote: SocketAddr) -> bool {
        let now = self.now_ms();
        let verdict = match self.table.lock() {
            Ok(mut t) => t.admit(remote, now),
            Err(_) => Err(Refusal::Total),
        };
        if verdict.is_err() {
            count(&COUNTERS.tcp_refused, 1);
            self.refused_log.hit(Instant::now());
            return false;
        }
        match stream.as_fd().try_clone_to_owned() {
            Ok(fd) => {
                if let Ok(mut f) = self.fds.lock() {
                    f.insert(remote, fd);
                }
                true
            }
            Err(_) => {
                self.closed(remote);
                false
            }
        }
    }

    /// A request (`request` true) or response on the connection to
    /// `remote`. False: over the rate limit, drop it.
    pub fn message(&self, remote: SocketAddr, request: bool, invite: Option<&str>) -> bool {
        let now = self.now_ms();
        if request
            && !self
                .rate
                .lock()
                .map(|mut r| r.allow(remote.ip(), now))
                .unwrap_or(true)
        {
            count(&COUNTERS.sip_rate_limited, 1);
            self.rate_log.hit(Instant::now());
            return false;
        }
        if let Ok(mut t) = self.table.lock() {
            t.activity(remote, now, invite);
        }
        true
    }

    pub fn closed(&self, remote: SocketAddr) {
        if let Ok(mut t) = self.table.lock() {
            t.closed(remote);
        }
        if let Ok(mut f) = self.fds.lock() {
            f.remove(&remote);
        }
    }

    /// Close the connections idle past the limit; how many.
    pub fn reap(&self, in_progress: impl Fn(&str) -> bool) -> usize {
        let now = self.now_ms();
        let idle = match self.table.lock() {
            Ok(mut t) => t.idle(now, in_progress),
            Err(_) => return 0,
        };
        for addr in &idle {
            let fd = self.fds.lock().ok().and_then(|mut f| f.remove(addr));
            if let Some(fd) = fd {
                // Shutting the socket down (not just our duplicate) ends
                // rsipstack's read loop: it closes and reports Closed.
                let s = std::net::TcpStream::from(fd);
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            // Forgotten now, so a peer that never closes its side is not
            // counted against its limit; rsipstack's Closed is then a no-op.
            if let Ok(mut t) = self.table.lock() {
                t.closed(*addr);
            }
        }
        count(&COUNTERS.tcp_idle_closed, idle.len() as u64);
        idle.len()
    }

    pub fn connections(&self) -> usize {
        self.table.lock().map(|t| t.open()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table::new(TcpLimits {
            per_source: 2,
            total: 3,
            idle_ms: 1000,
        })
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_are_bounded_per_source_and_in_all() {
        let mut t = table();
        assert_eq!(t.admit(addr("192.0.2.1:1000"), 0), Ok(()));
        assert_eq!(t.admit(addr("192.0.2.1:1001"), 0), Ok(()));
        assert_eq!(t.admit(addr("192.0.2.1:1002"), 0), Err(Refusal::PerSource));
        assert_eq!(t.admit(addr("192.0.2.2:1000"), 0), Ok(()));
        assert_eq!(t.admit(addr("192.0.2.3:1000"), 0), Err(Refusal::Total));
        // One closes: its source may connect again.
        t.closed(addr("192.0.2.1:1000"));
        assert_eq!(t.admit(addr("192.0.2.1:1003"), 0), Ok(()));
        // Closing what was never admitted changes nothing.
        t.closed(addr("198.51.100.1:5"));
        t.closed(addr("192.0.2.1:1000"));
        assert_eq!(t.open(), 3);
        assert_eq!(t.admit(addr("192.0.2.1:1004"), 0), Err(Refusal::Total));
    }

    #[test]
    fn idle_connections_go_unless_they_carry_a_call() {
        let mut t = table();
        let (quiet, busy, calling) = (
            addr("192.0.2.1:1"),
            addr("192.0.2.1:2"),
            addr("192.0.2.2:1"),
        );
        for a in [quiet, busy, calling] {
            t.admit(a, 0).unwrap();
        }
        t.activity(calling, 100, Some("call-1@phone"));
        let live = |id: &str| id == "call-1@phone";
        assert!(t.idle(999, live).is_empty());
        t.activity(busy, 900, None);
        assert_eq!(t.idle(1000, live), vec![quiet]);
        // A minute later the call is still up: only the others go.
        let mut idle = t.idle(60_000, live);
        idle.sort();
        assert_eq!(idle, vec![quiet, busy]);
        // The call ended: its connection goes too.
        assert!(t.idle(60_000, |_| false).contains(&calling));
    }

    #[test]
    fn call_ids_per_connection_are_bounded() {
        let mut t = table();
        let a = addr("192.0.2.1:1");
        t.admit(a, 0).unwrap();
        for i in 0..100 {
            t.activity(a, 0, Some(&format!("c{i}")));
        }
        assert_eq!(t.conns[&a].calls.len(), MAX_CALLS_PER_CONNECTION);
        assert_eq!(t.conns[&a].calls.last().unwrap(), "c99");
    }
}
