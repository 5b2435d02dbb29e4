//! When a trunk registers, and what state it is in: a sans-IO schedule the
//! registration task asks "what now?" and tells what happened, with time
//! passed in (so refresh, 423 retry and backoff are tested without a clock).

use serde::Serialize;

/// Shortest and longest wait between failed attempts: doubling from the
/// first, with jitter, so a fleet whose provider fell over does not come
/// back in lock-step.
const BACKOFF_FIRST_MS: u64 = 1_000;
const BACKOFF_MAX_MS: u64 = 300_000;
/// A 423 names the shortest lifetime the provider accepts; above this we
/// call it broken rather than register for days.
const MIN_EXPIRES_CAP: u32 = 86_400;
/// 423s in a row before we call the provider broken (each should give the
/// one Min-Expires that satisfies it).
const TOO_BRIEF_RETRIES: u32 = 3;
/// The soonest a refresh goes after a grant.
const MIN_REFRESH_MS: u64 = 5_000;

/// Where a trunk's registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not tried yet.
    Starting,
    /// A REGISTER is out.
    Registering,
    Registered,
    /// The last attempt failed; the next is scheduled.
    Failed,
    /// Registered, but the provider stopped answering keepalives.
    Unreachable,
}

/// What went wrong with an attempt, for `handlet status` and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the attempt's deadline, or a transport error.
    NoAnswer(String),
    /// The provider refused: wrong credentials (401/403 after our
    /// answer), or another final status.
    Refused(u16, String),
    /// 423 without a usable Min-Expires, or one above a day.
    TooBrief(Option<u32>),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoAnswer(why) => write!(f, "no answer from the provider ({why})"),
            Failure::Refused(401 | 403 | 407, reason) => {
                write!(
                    f,
                    "credentials refused ({reason}); check username and password"
                )
            }
            Failure::Refused(code, reason) => write!(f, "refused with {code} {reason}"),
            Failure::TooBrief(Some(m)) => write!(f, "423: provider asks for {m} s, above a day"),
            Failure::TooBrief(None) => write!(f, "423 without a Min-Expires"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Schedule {
    asked_secs: u32,
    /// The provider's Min-Expires from its last 423, if above what we ask.
    min_secs: Option<u32>,
    state: State,
    /// A REGISTER is out (the state stays Registered meanwhile: the grant
    /// in force still holds).
    in_flight: bool,
    next_at_ms: u64,
    failures: u32,
    too_brief: u32,
    granted_secs: Option<u32>,
    expires_at_ms: Option<u64>,
    last_error: Option<String>,
}

impl Schedule {
    /// A trunk that should register for `expires_secs`, first at `now_ms`.
    pub fn new(expires_secs: u32, now_ms: u64) -> Schedule {
        Schedule {
            asked_secs: expires_secs,
            min_secs: None,
            state: State::Starting,
            in_flight: false,
            next_at_ms: now_ms,
            failures: 0,
            too_brief: 0,
            granted_secs: None,
            expires_at_ms: None,
            last_error: None,
        }
    }

    /// Is it time for a REGISTER?
    pub fn due(&self, now_ms: u64) -> bool {
        !self.in_flight && now_ms >= self.next_at_ms
    }

    /// When the next REGISTER is due (for the task's timer).
    pub fn next_at_ms(&self) -> u64 {
        self.next_at_ms
    }

    /// A REGISTER goes out now; the lifetime to ask for.
    pub fn start(&mut self) -> u32 {
        self.in_flight = true;
        if matches!(self.state, State::Starting | State::Failed) {
            self.state = State::Registering;
        }
        self.min_secs
            .map_or(self.asked_secs, |m| m.max(self.asked_secs))
    }

    /// 200 OK granting `granted_secs`: refresh well before it lapses
    /// (at the latest 10 s before, and never later than 3/4 of the way,
    /// like RFC 5626's refresh).
    pub fn registered(&mut self, granted_secs: u32, now_ms: u64) {
        let granted_ms = granted_secs.max(1) as u64 * 1000;
        // Never sooner than 5 s: a provider granting a second must not
        // make us REGISTER in a tight loop.
        let refresh = (granted_ms * 3 / 4)
            .min(granted_ms.saturating_sub(10_000).max(granted_ms / 2))
            .max(MIN_REFRESH_MS);
        self.in_flight = false;
        self.state = State::Registered;
        self.failures = 0;
        self.too_brief = 0;
        self.granted_secs = Some(granted_secs);
        self.expires_at_ms = Some(now_ms + granted_ms);
        self.next_at_ms = now_ms + refresh;
        self.last_error = None;
    }

    /// 423 Interval Too Brief with the provider's Min-Expires: retried at
    /// once with it, a few times, or a failure.
    pub fn too_brief(&mut self, min_expires: Option<u32>, now_ms: u64, jitter: f64) {
        self.too_brief += 1;
        self.in_flight = false;
        match min_expires {
            Some(m) if m <= MIN_EXPIRES_CAP && self.too_brief <= TOO_BRIEF_RETRIES => {
                self.min_secs = Some(m);
                if self.state == State::Registering {
                    self.state = State::Failed;
                }
                self.next_at_ms = now_ms;
                self.last_error = Some(format!("423: provider asked for at least {m} s"));
            }
            other => self.failed(Failure::TooBrief(other), now_ms, jitter),
        }
    }

    /// The attempt failed: try again after a backoff. `jitter` in [0, 1)
    /// picks the wait within the upper half of the current interval.
    pub fn failed(&mut self, why: Failure, now_ms: u64, jitter: f64) {
        self.failures = self.failures.saturating_add(1);
        self.too_brief = 0;
        self.in_flight = false;
        // A registration still in force stays usable (and kept alive)
        // until it lapses.
        let lapsed = self.expires_at_ms.is_none_or(|t| now_ms >= t);
        if lapsed {
            self.state = State::Failed;
            self.expires_at_ms = None;
        }
        self.next_at_ms = now_ms + backoff_ms(self.failures, jitter);
        self.last_error = Some(why.to_string());
    }

    /// Keepalives went unanswered: the provider (or the way to it) is
    /// gone. Register again as soon as the backoff allows: when it comes
    /// back it may have forgotten us.
    pub fn unreachable(&mut self, now_ms: u64, jitter: f64) {
        if self.state == State::Registered {
            self.state = State::Unreachable;
            self.last_error = Some("keepalives unanswered".into());
            self.next_at_ms = self.next_at_ms.min(now_ms + backoff_ms(1, jitter));
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// When the registration in force lapses (wall-clock ms), if any.
    pub fn expires_at_ms(&self) -> Option<u64> {
        self.expires_at_ms
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// The wait after the `n`th failure in a row: 1 s, 2 s, 4 s ... 5 min,
/// each between half and all of it.
pub fn backoff_ms(n: u32, jitter: f64) -> u64 {
    let full = BACKOFF_FIRST_MS
        .saturating_mul(1u64 << n.saturating_sub(1).min(20))
        .min(BACKOFF_MAX_MS);
    full / 2 + (full as f64 / 2.0 * jitter.clamp(0.0, 1.0)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_is_refreshed_before_it_lapses() {
        let mut s = Schedule::new(600, 0);
        assert!(s.due(0));
        assert_eq!(s.start(), 600);
        assert!(!s.due(0), "one REGISTER at a time");
        s.registered(600, 1_000);
        assert_eq!(s.state(), State::Registered);
        assert_eq!(s.expires_at_ms(), Some(601_000));
        assert_eq!(s.next_at_ms(), 1_000 + 450_000, "3/4 of 600 s");
        // A short grant is refreshed at least 10 s before it lapses.
        s.start();
        s.registered(30, 0);
        assert_eq!(s.next_at_ms(), 20_000);
    }

    #[test]
    fn a_423_is_retried_at_once_with_the_providers_minimum() {
        let mut s = Schedule::new(60, 0);
        s.start();
        s.too_brief(Some(300), 5, 0.5);
        assert!(s.due(5), "retried at once");
        assert_eq!(s.start(), 300, "with Min-Expires");
        s.registered(300, 10);
        // Later refreshes keep asking for at least the minimum.
        assert_eq!(s.start(), 300);
        // A provider that never accepts is a failure with backoff, not a loop.
        let mut s = Schedule::new(60, 0);
        for _ in 0..TOO_BRIEF_RETRIES {
            s.start();
            s.too_brief(Some(120), 0, 0.0);
            assert!(s.due(0));
        }
        s.start();
        s.too_brief(Some(120), 0, 0.0);
        assert_eq!(s.state(), State::Failed);
        assert!(!s.due(0));
        // Min-Expires of a week is refused.
        let mut s = Schedule::new(60, 0);
        s.start();
        s.too_brief(Some(7 * 86_400), 0, 0.0);
        assert!(!s.due(0));
        assert!(s.last_error().unwrap().contains("above a day"));
    }

    #[test]
    fn failures_back_off_with_jitter_up_to_five_minutes() {
        assert_eq!(backoff_ms(1, 0.0), 500);
        assert_eq!(backoff_ms(1, 1.0), 1_000);
        assert_eq!(backoff_ms(3, 0.0), 2_000);
        assert_eq!(backoff_ms(30, 1.0), 300_000);
        assert_eq!(backoff_ms(u32::MAX, 0.0), 150_000);
        let mut s = Schedule::new(600, 0);
        let mut waits = Vec::new();
        for _ in 0..4 {
            s.start();
            let now = s.next_at_ms();
            s.failed(Failure::NoAnswer("timeout".into()), now, 1.0);
            waits.push(s.next_at_ms() - now);
        }
        assert_eq!(waits, [1_000, 2_000, 4_000, 8_000]);
        assert_eq!(s.failures(), 4);
        assert_eq!(s.state(), State::Failed);
        assert!(s.last_error().unwrap().contains("no answer"));
        // Success resets the backoff.
        s.start();
        s.registered(600, 100_000);
        s.start();
        s.failed(Failure::Refused(403, "Forbidden".into()), 200_000, 1.0);
        assert_eq!(s.next_at_ms(), 201_000);
        assert!(s.last_error().unwrap().contains("credentials refused"));
    }

    #[test]
    fn lost_keepalives_bring_registration_forward() {
        let mut s = Schedule::new(600, 0);
        s.start();
        s.registered(600, 0);
        s.unreachable(10_000, 0.0);
        assert_eq!(s.state(), State::Unreachable);
        assert!(s.due(10_500));
        // Failing to register while the old grant holds: still unreachable.
        s.start();
        s.failed(Failure::NoAnswer("timeout".into()), 11_000, 0.0);
        assert_eq!(s.state(), State::Unreachable);
        assert_eq!(s.expires_at_ms(), Some(600_000));
        // Once the grant lapses it is a plain failure.
        s.start();
        s.failed(Failure::NoAnswer("timeout".into()), 700_000, 0.0);
        assert_eq!(s.state(), State::Failed);
        assert_eq!(s.expires_at_ms(), None);
        // Back: registered again.
        s.start();
        s.registered(600, 800_000);
        assert_eq!(s.state(), State::Registered);
        // A refresh that fails while the grant holds: still registered
        // (keepalives go on), retried with backoff; failed once it lapses.
        let mut r = Schedule::new(600, 0);
        r.start();
        r.registered(600, 0);
        r.start();
        assert_eq!(r.state(), State::Registered);
        r.failed(Failure::NoAnswer("timeout".into()), 450_000, 0.0);
        assert_eq!(r.state(), State::Registered);
        assert_eq!(r.next_at_ms(), 450_500);
        r.start();
        r.failed(Failure::NoAnswer("timeout".into()), 600_000, 0.0);
        assert_eq!(r.state(), State::Failed);
        // A grant of one second is not refreshed in a tight loop.
        r.start();
        r.registered(1, 700_000);
        assert_eq!(r.next_at_ms(), 705_000);
        // Not registered yet: keepalives do not change a failure.
        let mut f = Schedule::new(600, 0);
        f.unreachable(0, 0.0);
        assert_eq!(f.state(), State::Starting);
    }
}
