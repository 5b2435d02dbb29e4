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
use std::net::IpAddr;
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
    pub fn new(ctx: Arc<CallCtx>, max_calls: usize, per_source: usize) -> Arc<Calls> {
        Arc::new(Calls {
            ctx,
            admission: Admission::with_per_source(max_calls, per_source),
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

    /// Places taken: calls, and transcriptions still finishing after their
    /// call ended.
    pub fn places_in_use(&self) -> usize {
        self.admission.in_progress()
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
        // A trunk brings every caller from one address: it is exempt from
        // the per-source share (the total still holds).
        let source = match incoming.origin {
            crate::sip::Origin::Trunk { .. } => None,
            _ => source_ip(&incoming.tx.original),
        };
        let emergency = matches!(
            &incoming.origin,
            crate::sip::Origin::Phone { dialled, .. }
                if self.ctx.cfg.outbound.emergency.iter().any(|e| e == dialled)
        );
        let slot = if emergency {
            self.admission.admit_always()
        } else {
            match self.admission.try_admit_from(source) {
                Some(s) => s,
                None => return Err(Box::new(incoming)),
            }
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut m) = self.running.lock() {
            m.insert(id, tx);
        }
        let (ctx, running) = (self.ctx.clone(), self.running.clone());
        tokio::spawn(async move {
            // The slot goes with the call, and on to its transcription tap
            // if it starts one: it is freed when the last of them ends.
            call::inbound(ctx, incoming, rx, Box::new(slot)).await;
            if let Ok(mut m) = running.lock() {
                m.remove(&id);
            }
        });
        Ok(())
    }
}

pub struct Admission {
    max: usize,
    /// Calls one source address may hold at once, so a flood from one
    /// address cannot take every place (a trunk, which brings all of a
    /// shop's calls from one address, is exempt).
    per_source: usize,
    in_progress: AtomicUsize,
    by_source: Mutex<HashMap<IpAddr, usize>>,
    log: BurstLog,
}

/// A call's place; dropping it frees the place.
pub struct Slot(Arc<Admission>, Option<IpAddr>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let (Some(ip), Ok(mut m)) = (self.1, self.0.by_source.lock())
            && let Some(n) = m.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a request came from: the top Via's `received` (set by rsipstack
/// to the packet's source), else its sent-by host.
pub fn source_ip(req: &rsipstack::sip::Request) -> Option<IpAddr> {
    use rsipstack::sip::HeadersExt;
    let via = req.via_header().ok()?.value().to_string();
    let via = via.split(',').next()?.trim();
    let received = via
        .split(';')
        .skip(1)
        .find_map(|p| p.trim().strip_prefix("received="))
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    received.or_else(|| {
        let sent_by = via.split(';').next()?.split_whitespace().nth(1)?;
        let host = sent_by
            .strip_prefix('[')
            .and_then(|h| h.split(']').next())
            .unwrap_or_else(|| sent_by.split(':').next().unwrap_or(sent_by));
        host.parse().ok()
    })
}

impl Admission {
    pub fn new(max: usize) -> Arc<Admission> {
        Self::with_per_source(max, max)
    }

    pub fn with_per_source(max: usize, per_source: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max,
            per_source: per_source.clamp(1, max.max(1)),
            in_progress: AtomicUsize::new(0),
            by_source: Mutex::new(HashMap::new()),
            log: BurstLog::new("limits.max_calls"),
        })
    }

    /// A slot, or None (counted, logged once per burst) when full.
    pub fn try_admit(self: &Arc<Self>) -> Option<Slot> {
        self.try_admit_from(None)
    }

    /// A slot for a call from `source`, within its share.
    pub fn try_admit_from(self: &Arc<Self>, source: Option<IpAddr>) -> Option<Slot> {
        let refuse = || {
            count(&COUNTERS.calls_refused, 1);
            self.log.hit(std::time::Instant::now());
            None
        };
        let Ok(mut m) = self.by_source.lock() else {
            return refuse();
        };
        if let Some(ip) = source
            && m.get(&ip).copied().unwrap_or(0) >= self.per_source
        {
            return refuse();
        }
        let admitted = self
            .in_progress
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return refuse();
        }
        if let Some(ip) = source {
            *m.entry(ip).or_insert(0) += 1;
        }
        Some(Slot(self.clone(), source))
    }

    /// A place whatever the limits say: for an emergency call from one of
    /// the business's authenticated phones, which is never refused as busy.
    pub fn admit_always(self: &Arc<Self>) -> Slot {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        Slot(self.clone(), None)
    }

    pub fn in_progress(&self) -> usize {
        self.in_progress.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emergency_call_gets_a_place_when_the_box_is_full() {
        let a = Admission::new(1);
        let first = a.try_admit().unwrap();
        assert!(a.try_admit().is_none(), "full");
        let sos = a.admit_always();
        assert_eq!(a.in_progress(), 2);
        drop(sos);
        drop(first);
        assert_eq!(a.in_progress(), 0, "both places given back");
        assert!(a.try_admit().is_some());
    }

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
    fn one_source_cannot_take_every_place() {
        let a = Admission::with_per_source(4, 2);
        let (flood, phone): (IpAddr, IpAddr) =
            ("203.0.113.9".parse().unwrap(), "192.0.2.5".parse().unwrap());
        let f1 = a.try_admit_from(Some(flood)).unwrap();
        let _f2 = a.try_admit_from(Some(flood)).unwrap();
        assert!(a.try_admit_from(Some(flood)).is_none());
        let _p = a.try_admit_from(Some(phone)).unwrap();
        drop(f1);
        let _f3 = a.try_admit_from(Some(flood)).expect("a place freed");
        assert_eq!(a.in_progress(), 3);
    }

    #[test]
    fn the_source_is_the_vias_received_address() {
        let req = |via: &str| {
            let text = format!(
                "OPTIONS sip:a@b SIP/2.0\r\nVia: {via}\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            );
            match rsipstack::sip::SipMessage::try_from(text.as_str()).unwrap() {
                rsipstack::sip::SipMessage::Request(r) => r,
                _ => unreachable!(),
            }
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            source_ip(&req(
                "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;received=203.0.113.7;rport=4000"
            )),
            ip("203.0.113.7")
        );
        assert_eq!(
            source_ip(&req("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1")),
            ip("10.0.0.5")
        );
        assert_eq!(
            source_ip(&req("SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bK1")),
            ip("2001:db8::1")
        );
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
