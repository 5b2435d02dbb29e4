//! Our own TCP acceptor in front of rsipstack, so a peer cannot make the
//! agent hold connections without bound (17,400 idle connections once took
//! 1.6 GB and stayed open for rsipstack's 300 s idle limit):
//! - at most `tcp_connections_per_source` connections from one IP and
//!   `tcp_connections` in all; one more is closed as it is accepted, before
//!   rsipstack allocates anything for it (counted, one log line per burst);
//! - a connection that carried no SIP message for `tcp_idle_secs`, no
//!   INVITE of a call still in progress, and no registration of a phone
//!   still registered, is closed (a call's connection is kept: the caller's
//!   BYE comes on it; a registered phone's too: it is how the box reaches a
//!   phone behind NAT);
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
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::Instant;

/// SIP Call-IDs remembered per connection (INVITEs it carried): a trunk
/// brings every call of a shop on one connection.
const MAX_CALLS_PER_CONNECTION: usize = 64;

/// A connection's identity: rsipstack's connection object, not the peer's
/// address (a new connection may reuse an ip:port before the old one's
/// Closed event reaches us). The object lives until its Closed event is
/// handled, so the id is not reused while we know it.
pub type ConnId = usize;

pub fn conn_id(c: &rsipstack::transport::tcp::TcpConnection) -> ConnId {
    std::sync::Arc::as_ptr(&c.inner) as *const () as usize
}

/// A TLS connection's identity: rsipstack does not expose its TLS
/// connection object, so the peer's address stands for it (with the top
/// bit set, which no pointer has, so it never equals a TCP id). The kernel
/// gives no other connection that address while this one is open; a new
/// one from it after the close but before its Closed event is refused
/// (`accept_tls`), so every connection is counted.
pub fn tls_conn_id(remote: SocketAddr) -> ConnId {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    remote.hash(&mut h);
    (h.finish() as usize) | (1 << (usize::BITS - 1))
}

/// The address a per-source limit counts: the IP, or for IPv6 its /64 (one
/// host or site gets a whole /64).
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

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
    remote: SocketAddr,
    source: IpAddr,
    last_ms: u64,
    /// Call-IDs of INVITEs that came on it.
    calls: Vec<String>,
}

/// The connections we admitted, by the peer's address (one TCP connection
/// per remote ip:port).
#[derive(Debug)]
pub struct Table {
    limits: TcpLimits,
    conns: HashMap<ConnId, Conn>,
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

    /// Connection `id` was accepted from `remote`: keep it, or refuse it.
    /// A connection from the box to itself (`from_self`: the agent's own
    /// self-check) is not held to the total, so filling it from outside
    /// cannot fail the self-check and get the agent restarted.
    pub fn admit(
        &mut self,
        id: ConnId,
        remote: SocketAddr,
        from_self: bool,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        if self.conns.contains_key(&id) {
            return Ok(());
        }
        if self.conns.len() >= self.limits.total && !from_self {
            return Err(Refusal::Total);
        }
        let source = source_of(remote.ip());
        let n = self.per_ip.get(&source).copied().unwrap_or(0);
        if n >= self.limits.per_source {
            return Err(Refusal::PerSource);
        }
        self.per_ip.insert(source, n + 1);
        self.conns.insert(
            id,
            Conn {
                remote,
                source,
                last_ms: now_ms,
                calls: Vec::new(),
            },
        );
        Ok(())
    }

    /// A SIP message came on connection `id`; `invite` is the Call-ID of
    /// an INVITE that started a dialog on it.
    pub fn activity(&mut self, id: ConnId, now_ms: u64, invite: Option<&str>) {
        let Some(c) = self.conns.get_mut(&id) else {
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

    /// Connection `id` is gone (either side closed it). Ids we never
    /// admitted (rsipstack's own outbound connections) change nothing.
    pub fn closed(&mut self, id: ConnId) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        if let Some(n) = self.per_ip.get_mut(&c.source) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&c.source);
            }
        }
    }

    /// Connections idle past the limit that carry no call in progress and
    /// are no registered phone's (`registered`, by the peer's address); a
    /// finished call's Call-ID is forgotten on the way.
    pub fn idle(
        &mut self,
        now_ms: u64,
        in_progress: impl Fn(&str) -> bool,
        registered: impl Fn(SocketAddr) -> bool,
    ) -> Vec<ConnId> {
        let idle_ms = self.limits.idle_ms;
        let mut out = Vec::new();
        for (addr, c) in &mut self.conns {
            if now_ms.saturating_sub(c.last_ms) < idle_ms {
                continue;
            }
            c.calls.retain(|id| in_progress(id));
            if c.calls.is_empty() && !registered(c.remote) {
                out.push(*addr);
            }
        }
        out
    }
}

/// The shell: the table, the descriptors to close, the rate limit.
pub struct TcpGuard {
    table: Mutex<Table>,
    fds: Mutex<HashMap<ConnId, OwnedFd>>,
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

    /// Keep connection `id` from `remote` (true), with `fd`, a duplicate
    /// of its socket to close it by; or refuse it (false: the caller drops
    /// the connection, which closes it).
    pub fn admit(&self, id: ConnId, fd: OwnedFd, remote: SocketAddr, from_self: bool) -> bool {
        let now = self.now_ms();
        let verdict = match self.table.lock() {
            Ok(mut t) => t.admit(id, remote, from_self, now),
            Err(_) => Err(Refusal::Total),
        };
        if verdict.is_err() {
            count(&COUNTERS.tcp_refused, 1);
            self.refused_log.hit(Instant::now());
            return false;
        }
        if let Ok(mut f) = self.fds.lock() {
            f.insert(id, fd);
        }
        true
    }

    /// A request (`request` true) or response from `remote` on connection
    /// `id`. False: over the rate limit, drop it.
    pub fn message(
        &self,
        id: ConnId,
        remote: SocketAddr,
        request: bool,
        invite: Option<&str>,
    ) -> bool {
        let now = self.now_ms();
        if request
            && !self
                .rate
                .lock()
                .map(|mut r| r.allow(source_of(remote.ip()), now))
                .unwrap_or(true)
        {
            count(&COUNTERS.sip_rate_limited, 1);
            self.rate_log.hit(Instant::now());
            return false;
        }
        if let Ok(mut t) = self.table.lock() {
            t.activity(id, now, invite);
        }
        true
    }

    /// Is connection `id` still known (its Closed event not handled yet)?
    pub fn knows(&self, id: ConnId) -> bool {
        self.table.lock().is_ok_and(|t| t.conns.contains_key(&id))
    }

    /// rsipstack reports connection `id` closed.
    pub fn closed(&self, id: ConnId) {
        if let Ok(mut t) = self.table.lock() {
            t.closed(id);
        }
        if let Ok(mut f) = self.fds.lock() {
            f.remove(&id);
        }
    }

    /// Close the connections idle past the limit; how many.
    pub fn reap(
        &self,
        in_progress: impl Fn(&str) -> bool,
        registered: impl Fn(SocketAddr) -> bool,
    ) -> usize {
        let now = self.now_ms();
        let idle = match self.table.lock() {
            Ok(mut t) => t.idle(now, in_progress, registered),
            Err(_) => return 0,
        };
        for id in &idle {
            let fd = self.fds.lock().ok().and_then(|mut f| f.remove(id));
            if let Some(fd) = fd {
                // Shutting the socket down (not just our duplicate) ends
                // rsipstack's read loop: it closes and reports Closed.
                let s = std::net::TcpStream::from(fd);
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            // Forgotten now, so a peer that never closes its side is not
            // counted against its limit; rsipstack's Closed is then a no-op.
            if let Ok(mut t) = self.table.lock() {
                t.closed(*id);
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
        assert_eq!(t.admit(1, addr("192.0.2.1:1000"), false, 0), Ok(()));
        assert_eq!(t.admit(2, addr("192.0.2.1:1001"), false, 0), Ok(()));
        assert_eq!(
            t.admit(3, addr("192.0.2.1:1002"), false, 0),
            Err(Refusal::PerSource)
        );
        assert_eq!(t.admit(4, addr("192.0.2.2:1000"), false, 0), Ok(()));
        assert_eq!(
            t.admit(5, addr("192.0.2.3:1000"), false, 0),
            Err(Refusal::Total)
        );
        // The agent's own self-check (from the box to itself) is not held
        // to the total; loopback from elsewhere is.
        assert_eq!(
            t.admit(6, addr("127.0.0.4:999"), false, 0),
            Err(Refusal::Total)
        );
        assert_eq!(t.admit(6, addr("127.0.0.1:999"), true, 0), Ok(()));
        t.closed(6);
        // One closes: its source may connect again.
        t.closed(1);
        assert_eq!(t.admit(7, addr("192.0.2.1:1003"), false, 0), Ok(()));
        // Closing what was never admitted, or twice, changes nothing.
        t.closed(99);
        t.closed(1);
        assert_eq!(t.open(), 3);
        assert_eq!(
            t.admit(8, addr("192.0.2.1:1004"), false, 0),
            Err(Refusal::Total)
        );
    }

    #[test]
    fn a_reused_address_is_another_connection() {
        // The old connection's Closed comes after the new one is admitted
        // from the same ip:port: the new one stays counted and known.
        let mut t = table();
        t.admit(1, addr("192.0.2.1:1000"), false, 0).unwrap();
        t.admit(2, addr("192.0.2.1:1000"), false, 0).unwrap();
        t.closed(1);
        assert_eq!(t.open(), 1);
        assert_eq!(t.admit(3, addr("192.0.2.1:1001"), false, 0), Ok(()));
        assert_eq!(
            t.admit(4, addr("192.0.2.1:1002"), false, 0),
            Err(Refusal::PerSource)
        );
    }

    #[test]
    fn an_ipv6_site_is_one_source() {
        let mut t = table();
        t.admit(1, addr("[2001:db8:1:2::1]:5060"), false, 0)
            .unwrap();
        t.admit(2, addr("[2001:db8:1:2:ffff::9]:5060"), false, 0)
            .unwrap();
        assert_eq!(
            t.admit(3, addr("[2001:db8:1:2:abcd::7]:5060"), false, 0),
            Err(Refusal::PerSource)
        );
        assert_eq!(t.admit(4, addr("[2001:db8:1:3::1]:5060"), false, 0), Ok(()));
    }

    #[test]
    fn idle_connections_go_unless_they_carry_a_call() {
        let mut t = table();
        let (quiet, busy, calling) = (1, 2, 3);
        t.admit(quiet, addr("192.0.2.1:1"), false, 0).unwrap();
        t.admit(busy, addr("192.0.2.1:2"), false, 0).unwrap();
        t.admit(calling, addr("192.0.2.2:1"), false, 0).unwrap();
        t.activity(calling, 100, Some("call-1@phone"));
        let live = |id: &str| id == "call-1@phone";
        let nobody = |_: SocketAddr| false;
        assert!(t.idle(999, live, nobody).is_empty());
        t.activity(busy, 900, None);
        assert_eq!(t.idle(1000, live, nobody), vec![quiet]);
        // A minute later the call is still up: only the others go.
        let mut idle = t.idle(60_000, live, nobody);
        idle.sort();
        assert_eq!(idle, vec![quiet, busy]);
        // The call ended: its connection goes too.
        assert!(t.idle(60_000, |_| false, nobody).contains(&calling));
        // A registered phone's connection stays however quiet.
        let phone = addr("192.0.2.1:1");
        let mut idle = t.idle(60_000, |_| false, |a| a == phone);
        idle.sort();
        assert_eq!(idle, vec![busy, calling]);
    }

    #[test]
    fn call_ids_per_connection_are_bounded() {
        let mut t = table();
        t.admit(1, addr("192.0.2.1:1"), false, 0).unwrap();
        for i in 0..100 {
            t.activity(1, 0, Some(&format!("c{i}")));
        }
        assert_eq!(t.conns[&1].calls.len(), MAX_CALLS_PER_CONNECTION);
        assert_eq!(t.conns[&1].calls.last().unwrap(), "c99");
    }
}
