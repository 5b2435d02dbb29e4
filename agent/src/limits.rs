//! Limits on what peers can make the agent hold, and how hitting one is
//! reported: a counter per limit (for the metrics endpoint to read) and one
//! log line per burst, never one per packet or request.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Every limit the agent enforces, counted since start.
#[derive(Debug, Default)]
pub struct Counters {
    /// INVITEs refused because `limits.max_calls` calls were in progress.
    pub calls_refused: AtomicU64,
    /// Calls hung up at `limits.max_call_secs`.
    pub calls_too_long: AtomicU64,
    /// SIP requests refused or dropped by the per-source rate limit.
    pub sip_rate_limited: AtomicU64,
    /// RTP packets from another source or SSRC than a leg latched to.
    pub rtp_foreign: AtomicU64,
    /// Keys pressed beyond the per-call limit.
    pub dtmf_dropped: AtomicU64,
    /// Store writes dropped because the writer's queue was full (a stuck disk).
    pub store_dropped: AtomicU64,
    /// SIP TCP connections closed as accepted (per-source or total limit).
    pub tcp_refused: AtomicU64,
    /// SIP TCP connections closed for being idle.
    pub tcp_idle_closed: AtomicU64,
    /// Digest authentications that failed (wrong password, unknown user,
    /// replayed nonce count, another's number).
    pub auth_failed: AtomicU64,
    /// Addresses locked out for repeated failures.
    pub auth_lockouts: AtomicU64,
    /// INVITEs refused for coming from no trunk while trunks are
    /// configured (scanners, toll fraud).
    pub invites_from_strangers: AtomicU64,
    /// INVITEs to outside numbers from anything not authenticated.
    pub toll_fraud_refused: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    calls_refused: AtomicU64::new(0),
    calls_too_long: AtomicU64::new(0),
    sip_rate_limited: AtomicU64::new(0),
    rtp_foreign: AtomicU64::new(0),
    dtmf_dropped: AtomicU64::new(0),
    store_dropped: AtomicU64::new(0),
    tcp_refused: AtomicU64::new(0),
    tcp_idle_closed: AtomicU64::new(0),
    auth_failed: AtomicU64::new(0),
    auth_lockouts: AtomicU64::new(0),
    invites_from_strangers: AtomicU64::new(0),
    toll_fraud_refused: AtomicU64::new(0),
};

/// A burst is over after this long without a hit.
const QUIET: Duration = Duration::from_secs(10);

/// One log line when a burst of hits starts, one summing it up when the
/// next burst starts (or [`BurstLog::hit`] reports it): a flood costs two
/// lines, not one per request.
pub struct BurstLog {
    what: &'static str,
    state: Mutex<Burst>,
}

#[derive(Default)]
struct Burst {
    last: Option<Instant>,
    hits: u64,
}

impl BurstLog {
    pub const fn new(what: &'static str) -> BurstLog {
        BurstLog {
            what,
            state: Mutex::new(Burst {
                last: None,
                hits: 0,
            }),
        }
    }

    /// Count a hit at `now`; logs only at the start of a burst.
    pub fn hit(&self, now: Instant) {
        let Ok(mut b) = self.state.lock() else { return };
        let new_burst = b.last.is_none_or(|t| now.duration_since(t) >= QUIET);
        if new_burst {
            if b.hits > 1 {
                tracing::warn!(
                    limit = self.what,
                    hits = b.hits,
                    "the previous burst of hits at this limit has ended"
                );
            }
            tracing::warn!(
                limit = self.what,
                "limit reached; further hits are counted, not logged, until it is quiet for 10 s"
            );
            b.hits = 0;
        }
        b.hits += 1;
        b.last = Some(now);
    }

    /// Hits in the current (or last) burst.
    pub fn hits(&self) -> u64 {
        self.state.lock().map(|b| b.hits).unwrap_or(0)
    }
}

pub fn count(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
