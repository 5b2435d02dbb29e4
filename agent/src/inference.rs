//! The inference pool: whisper workers on their own std threads (never on a
//! tokio worker), fed by one bounded queue shared by every call.
//!
//! The queue has two lanes. Finals (a finished utterance) always go before
//! partials (a live preview of one still being spoken). Partials are the
//! first thing shed under load: a newer partial for the same leg replaces the
//! queued one, a final for the leg cancels its queued partial, and when the
//! partial lane is full the oldest is dropped. Every shed job is answered
//! with [`JobError::Shed`] and counted, so callers never wait for a reply that
//! will not come. Finals are never dropped: when their lane is full
//! [`Pool::try_submit`] hands the job back, and the leg's tap holds it and
//! offers it again (and stops reading audio while it holds several, so the
//! pressure lands on the media path's bounded channel, not on memory).
//! Nothing here ever blocks the submitter: a submitter that waited for room
//! while a worker waited to hand it a result was a deadlock once
//! (tests/overload.rs).

use handlet_models::stt::{Options, Segment, Stt};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Final,
    Partial,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Dropped under load or superseded before a worker took it.
    Shed,
    /// whisper failed.
    Failed(String),
}

pub type Reply = Box<dyn FnOnce(Result<Vec<Segment>, JobError>) + Send>;

/// Audio to transcribe; the result goes back through `reply`.
pub struct Job {
    /// The leg the audio belongs to: partials of one leg supersede each other.
    pub leg: u64,
    pub priority: Priority,
    pub samples: Vec<f32>,
    pub reply: Reply,
}

/// The two-lane queue, without threads: what to run next and what to shed.
pub struct Queue {
    finals: VecDeque<Job>,
    partials: VecDeque<Job>,
    final_cap: usize,
    partial_cap: usize,
}

/// What a push did to other jobs.
pub enum Pushed {
    /// Queued.
    Queued,
    /// The final lane is full: try again when a worker takes one.
    Full(Job),
}

impl Queue {
    pub fn new(final_cap: usize, partial_cap: usize) -> Queue {
        Queue {
            finals: VecDeque::with_capacity(final_cap),
            partials: VecDeque::with_capacity(partial_cap),
            final_cap: final_cap.max(1),
            partial_cap: partial_cap.max(1),
        }
    }

    /// Add a job; jobs it sheds are returned in `shed` to be answered.
    pub fn push(&mut self, job: Job, shed: &mut Vec<Job>) -> Pushed {
        match job.priority {
            Priority::Final => {
                if self.finals.len() >= self.final_cap {
                    return Pushed::Full(job);
                }
                // The leg's preview is moot once its final is on the way.
                let leg = job.leg;
                shed.extend(drain_where(&mut self.partials, |j| j.leg == leg));
                self.finals.push_back(job);
            }
            Priority::Partial => {
                let leg = job.leg;
                shed.extend(drain_where(&mut self.partials, |j| j.leg == leg));
                if self.partials.len() >= self.partial_cap
                    && let Some(old) = self.partials.pop_front()
                {
                    shed.push(old);
                }
                self.partials.push_back(job);
            }
        }
        Pushed::Queued
    }

    /// Move the leg's queued partial into the final lane: a speculative
    /// decode of an utterance that has now been confirmed as finished is its
    /// final, and must not wait behind other calls' previews. Returns false
    /// when there was none queued (already running or done) or the final
    /// lane is full (it then stays where it is and still runs).
    pub fn promote(&mut self, leg: u64) -> bool {
        let Some(i) = self.partials.iter().position(|j| j.leg == leg) else {
            return false;
        };
        if self.finals.len() >= self.final_cap {
            return false;
        }
        let Some(mut job) = self.partials.remove(i) else {
            return false;
        };
        job.priority = Priority::Final;
        self.finals.push_back(job);
        true
    }

    /// The next job for a worker: finals first, oldest first.
    pub fn pop(&mut self) -> Option<Job> {
        self.finals
            .pop_front()
            .or_else(|| self.partials.pop_front())
    }

    pub fn len(&self) -> usize {
        self.finals.len() + self.partials.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn drain_where(q: &mut VecDeque<Job>, pred: impl Fn(&Job) -> bool) -> Vec<Job> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < q.len() {
        if pred(&q[i]) {
            if let Some(j) = q.remove(i) {
                out.push(j);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Counters for metrics and benches.
#[derive(Default, Debug)]
pub struct PoolStats {
    pub finals_done: AtomicU64,
    pub partials_done: AtomicU64,
    pub partials_shed: AtomicU64,
    pub failed: AtomicU64,
    /// Times a final waited for room in its lane: the box is behind.
    pub finals_waited: AtomicU64,
}

struct State {
    queue: Queue,
    /// Workers in the middle of a job.
    busy: usize,
    /// Shutting down: workers exit once their job is done.
    closed: bool,
}

struct Shared {
    queue: Mutex<State>,
    /// Signalled when a job is queued.
    work: Condvar,
    /// Signalled when a worker takes a job (room in the final lane).
    room: Condvar,
}

#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    pub stats: Arc<PoolStats>,
    workers: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>,
}

impl Pool {
    /// Start `workers` threads, each with its own whisper state. `queue` bounds
    /// each lane.
    pub fn start(stt: &Stt, workers: usize, queue: usize) -> Result<Pool, crate::Error> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(State {
                queue: Queue::new(queue, queue),
                busy: 0,
                closed: false,
            }),
            work: Condvar::new(),
            room: Condvar::new(),
        });
        let stats = Arc::new(PoolStats::default());
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let mut w = stt.worker()?;
            let shared = shared.clone();
            let stats = stats.clone();
            let handle = std::thread::Builder::new()
                .name(format!("whisper-{i}"))
                .spawn(move || {
                    loop {
                        // Hold the lock only to take a job, not while transcribing.
                        let job = {
                            let Ok(mut st) = shared.queue.lock() else {
                                return;
                            };
                            loop {
                                if st.closed {
                                    return;
                                }
                                if let Some(j) = st.queue.pop() {
                                    st.busy += 1;
                                    break j;
                                }
                                st = match shared.work.wait(st) {
                                    Ok(st) => st,
                                    Err(_) => return,
                                };
                            }
                        };
                        shared.room.notify_all();
                        let r = w
                            .transcribe_with(&job.samples, Options::default())
                            .map_err(|e| JobError::Failed(e.to_string()));
                        let counter = match (&r, job.priority) {
                            (Err(_), _) => &stats.failed,
                            (Ok(_), Priority::Final) => &stats.finals_done,
                            (Ok(_), Priority::Partial) => &stats.partials_done,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        (job.reply)(r);
                        if let Ok(mut st) = shared.queue.lock() {
                            st.busy -= 1;
                        }
                        // Shutdown waits for idle workers.
                        shared.room.notify_all();
                    }
                })
                .map_err(|e| crate::Error::Io(e.to_string()))?;
            handles.push(handle);
        }
        Ok(Pool {
            shared,
            stats,
            workers: Arc::new(Mutex::new(handles)),
        })
    }

    /// Queue a job without ever waiting: a final whose lane is full comes
    /// back as `Err(job)` for the caller to hold and offer again (see
    /// `transcribe::tap`). A stopped pool answers the job as shed.
    pub fn try_submit(&self, job: Job) -> Result<(), Job> {
        let mut shed = Vec::new();
        let queued = match self.shared.queue.lock() {
            Ok(mut st) if !st.closed => match st.queue.push(job, &mut shed) {
                Pushed::Queued => true,
                Pushed::Full(j) => {
                    self.stats.finals_waited.fetch_add(1, Ordering::Relaxed);
                    return Err(j);
                }
            },
            _ => {
                shed.push(job);
                false
            }
        };
        if queued {
            self.shared.work.notify_one();
        }
        for j in shed {
            if j.priority == Priority::Partial {
                self.stats.partials_shed.fetch_add(1, Ordering::Relaxed);
            }
            (j.reply)(Err(JobError::Shed));
        }
        Ok(())
    }

    /// See [`Queue::promote`].
    pub fn promote(&self, leg: u64) -> bool {
        self.shared
            .queue
            .lock()
            .map(|mut st| st.queue.promote(leg))
            .unwrap_or(false)
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.shared
            .queue
            .lock()
            .map(|st| st.queue.len())
            .unwrap_or(0)
    }

    /// Stop: give queued work up to `grace` to finish, answer what is left
    /// with [`JobError::Shed`], and join the workers. whisper must not be
    /// running when the process exits: its globals are torn down under it.
    /// Returns how many finals were given up.
    pub fn shutdown(&self, grace: std::time::Duration) -> usize {
        let deadline = std::time::Instant::now() + grace;
        let mut left = Vec::new();
        if let Ok(mut st) = self.shared.queue.lock() {
            while !(st.queue.is_empty() && st.busy == 0) {
                let now = std::time::Instant::now();
                if now >= deadline {
                    break;
                }
                st = match self.shared.room.wait_timeout(st, deadline - now) {
                    Ok((st, _)) => st,
                    Err(_) => return 0,
                };
            }
            st.closed = true;
            left.extend(std::iter::from_fn(|| st.queue.pop()));
        }
        self.shared.work.notify_all();
        self.shared.room.notify_all();
        let finals = left
            .iter()
            .filter(|j| j.priority == Priority::Final)
            .count();
        for j in left {
            (j.reply)(Err(JobError::Shed));
        }
        let handles = self
            .workers
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default();
        for h in handles {
            let _ = h.join();
        }
        finals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn job(leg: u64, priority: Priority, tag: u32, log: &mpsc::Sender<(u32, bool)>) -> Job {
        let log = log.clone();
        Job {
            leg,
            priority,
            samples: vec![tag as f32],
            reply: Box::new(move |r| {
                let _ = log.send((tag, r == Err(JobError::Shed)));
            }),
        }
    }

    fn tag(j: &Job) -> u32 {
        j.samples[0] as u32
    }

    #[test]
    fn finals_go_before_partials() {
        let (tx, _rx) = mpsc::channel();
        let mut q = Queue::new(4, 4);
        let mut shed = Vec::new();
        q.push(job(1, Priority::Partial, 1, &tx), &mut shed);
        q.push(job(2, Priority::Partial, 2, &tx), &mut shed);
        q.push(job(3, Priority::Final, 3, &tx), &mut shed);
        q.push(job(4, Priority::Final, 4, &tx), &mut shed);
        let order: Vec<u32> = std::iter::from_fn(|| q.pop()).map(|j| tag(&j)).collect();
        assert_eq!(order, vec![3, 4, 1, 2]);
        assert!(shed.is_empty());
    }

    #[test]
    fn a_promoted_partial_runs_with_the_finals() {
        let (tx, rx) = mpsc::channel();
        let mut q = Queue::new(2, 4);
        let mut shed = Vec::new();
        q.push(job(1, Priority::Partial, 1, &tx), &mut shed);
        q.push(job(2, Priority::Partial, 2, &tx), &mut shed);
        q.push(job(3, Priority::Final, 3, &tx), &mut shed);
        assert!(q.promote(2));
        assert!(!q.promote(2), "nothing left to promote for leg 2");
        assert!(!q.promote(9));
        // Final lane now full (cap 2): leg 1's partial stays a partial.
        assert!(!q.promote(1));
        let jobs: Vec<Job> = std::iter::from_fn(|| q.pop()).collect();
        let order: Vec<(u32, Priority)> = jobs.iter().map(|j| (tag(j), j.priority)).collect();
        assert_eq!(
            order,
            vec![
                (3, Priority::Final),
                (2, Priority::Final),
                (1, Priority::Partial)
            ]
        );
        assert!(shed.is_empty());
        for j in jobs {
            (j.reply)(Ok(vec![]));
        }
        assert_eq!(rx.try_iter().filter(|(_, was_shed)| !was_shed).count(), 3);
    }

    #[test]
    fn newer_partial_and_final_supersede_a_legs_partial() {
        let (tx, _rx) = mpsc::channel();
        let mut q = Queue::new(4, 4);
        let mut shed = Vec::new();
        q.push(job(1, Priority::Partial, 1, &tx), &mut shed);
        q.push(job(1, Priority::Partial, 2, &tx), &mut shed);
        assert_eq!(shed.iter().map(tag).collect::<Vec<_>>(), vec![1]);
        q.push(job(1, Priority::Final, 3, &tx), &mut shed);
        assert_eq!(shed.iter().map(tag).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn partial_lane_sheds_oldest_and_final_lane_refuses_when_full() {
        let (tx, _rx) = mpsc::channel();
        let mut q = Queue::new(2, 2);
        let mut shed = Vec::new();
        for leg in 0..5 {
            q.push(job(leg, Priority::Partial, leg as u32, &tx), &mut shed);
        }
        assert_eq!(shed.iter().map(tag).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(matches!(
            q.push(job(10, Priority::Final, 10, &tx), &mut shed),
            Pushed::Queued
        ));
        assert!(matches!(
            q.push(job(11, Priority::Final, 11, &tx), &mut shed),
            Pushed::Queued
        ));
        assert!(matches!(
            q.push(job(12, Priority::Final, 12, &tx), &mut shed),
            Pushed::Full(_)
        ));
        // Bounded whatever is pushed.
        assert_eq!(q.len(), 4);
    }

    /// Overload without whisper: many legs push a partial every tick and a
    /// final every fifth, a single slow "worker" takes one job per tick. The
    /// queue never grows past its bounds, every final is served in order,
    /// and every shed partial is answered.
    #[test]
    fn overload_keeps_finals_and_stays_bounded() {
        let (tx, rx) = mpsc::channel();
        let mut q = Queue::new(8, 4);
        let mut shed = Vec::new();
        let mut waiting_finals: VecDeque<Job> = VecDeque::new();
        let mut served_finals = Vec::new();
        let mut next_tag = 0u32;
        for tick in 0..2000u32 {
            for leg in 0..6u64 {
                next_tag += 1;
                q.push(job(leg, Priority::Partial, next_tag, &tx), &mut shed);
                if tick % 5 == 4 && leg < 3 {
                    next_tag += 1;
                    waiting_finals.push_back(job(leg, Priority::Final, 1_000_000 + next_tag, &tx));
                }
            }
            // Listeners retry finals that did not fit (they block in real life).
            while let Some(f) = waiting_finals.pop_front() {
                match q.push(f, &mut shed) {
                    Pushed::Queued => {}
                    Pushed::Full(f) => {
                        waiting_finals.push_front(f);
                        break;
                    }
                }
            }
            for j in shed.drain(..) {
                (j.reply)(Err(JobError::Shed));
            }
            assert!(q.len() <= 12);
            if let Some(j) = q.pop()
                && j.priority == Priority::Final
            {
                served_finals.push(tag(&j));
            }
        }
        // Replies still queued hold senders; drop them so the count ends.
        drop((tx, q, waiting_finals));
        let shed_count = rx.iter().filter(|(_, shed)| *shed).count();
        assert!(shed_count > 1000, "partials shed under load: {shed_count}");
        // The worker keeps up with finals (3 per 5 ticks): all but the last
        // few were served, in the order they were made.
        assert!(served_finals.len() >= 2000 / 5 * 3 - 12);
        assert!(served_finals.windows(2).all(|w| w[0] < w[1]));
    }
}
