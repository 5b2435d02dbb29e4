//! Admission: how many calls may be in progress at once. The SIP front end
//! asks for a [`Slot`] before it starts a call and refuses the INVITE with
//! 503 and Retry-After when there is none (quinn refuses a connection with
//! `TooManyConnections` the same way); the slot is given back when the call
//! task ends, whatever its number of legs.

use crate::limits::{BurstLog, COUNTERS, count};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Admission {
    max: usize,
    in_progress: AtomicUsize,
    log: BurstLog,
}

/// A call's place; dropping it frees the place.
pub struct Slot(Arc<Admission>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Seconds a refused caller is asked to wait before trying again.
pub const RETRY_AFTER_SECS: u32 = 30;

impl Admission {
    pub fn new(max: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max,
            in_progress: AtomicUsize::new(0),
            log: BurstLog::new("limits.max_calls"),
        })
    }

    /// A slot, or None (counted, logged once per burst) when full.
    pub fn try_admit(self: &Arc<Self>) -> Option<Slot> {
        let admitted = self
            .in_progress
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            Some(Slot(self.clone()))
        } else {
            count(&COUNTERS.calls_refused, 1);
            self.log.hit(std::time::Instant::now());
            None
        }
    }

    pub fn in_progress(&self) -> usize {
        self.in_progress.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_on_drop() {
        let a = Admission::new(2);
        let s1 = a.try_admit().unwrap();
        let _s2 = a.try_admit().unwrap();
        assert!(a.try_admit().is_none());
        assert!(a.try_admit().is_none());
        assert_eq!(a.in_progress(), 2);
        drop(s1);
        assert!(a.try_admit().is_some());
        assert_eq!(a.log.hits(), 2);
    }

    #[test]
    fn concurrent_admission_never_exceeds_the_limit() {
        let a = Admission::new(5);
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (a, peak) = (a.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        if let Some(s) = a.try_admit() {
                            peak.fetch_max(a.in_progress(), Ordering::AcqRel);
                            drop(s);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Acquire) <= 5);
        assert_eq!(a.in_progress(), 0);
    }
}
