//! Admission: how many calls may be in progress at once. The SIP front end
//! asks for a [`Slot`] before it starts a call and refuses the INVITE with
//! 503 and Retry-After when there is none (quinn refuses a connection with
//! `TooManyConnections` the same way); the slot is given back when the call
//! task ends, whatever its number of legs.
//!
//! [`Calls`] is the registry of calls in progress: it takes new INVITEs
//! from `sip` (as its [`CallAcceptor`]), starts a call task for each one it
//! admits, and tells them all to end at shutdown.

use crate::call::{self, CallCtx, Command};
use crate::limits::{BurstLog, COUNTERS, count};
use crate::sip::{CallAcceptor, Incoming};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The calls in progress.
pub struct Calls {
    ctx: Arc<CallCtx>,
    admission: Arc<Admission>,
    running: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Command>>>>,
    next: AtomicU64,
}

impl Calls {
    pub fn new(ctx: Arc<CallCtx>, max_calls: usize) -> Arc<Calls> {
        Arc::new(Calls {
            ctx,
            admission: Admission::new(max_calls),
            running: Arc::default(),
            next: AtomicU64::new(1),
        })
    }

    /// Calls whose task is still running.
    pub fn len(&self) -> usize {
        self.running.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tell every call the agent is stopping.
    pub fn shutdown_all(&self) {
        if let Ok(m) = self.running.lock() {
            for tx in m.values() {
                let _ = tx.send(Command::Shutdown);
            }
        }
    }
}

impl CallAcceptor for Calls {
    fn offer(&self, incoming: Incoming) -> Result<(), Box<Incoming>> {
        let Some(slot) = self.admission.try_admit() else {
            return Err(Box::new(incoming));
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut m) = self.running.lock() {
            m.insert(id, tx);
        }
        let (ctx, running) = (self.ctx.clone(), self.running.clone());
        tokio::spawn(async move {
            call::inbound(ctx, incoming, rx).await;
            if let Ok(mut m) = running.lock() {
                m.remove(&id);
            }
            drop(slot);
        });
        Ok(())
    }
}

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
