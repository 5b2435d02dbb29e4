//! Who rings, and when: the forking of an inbound call to the business's
//! phones, sans-IO with time passed in. The call's actor starts and
//! cancels the INVITEs this asks for and tells it how each ended.
//!
//! - `ringall`: every contact of every target at once for the ring time;
//!   the first to answer wins and every other fork is cancelled.
//! - `hunt`: one target at a time (all of its contacts) for the ring time
//!   each; a target whose every contact refused (busy, declined) gives way
//!   at once.
//! - `memoryhunt`: the first target, then the first two, then the first
//!   three...: each ring time adds the next target while the earlier ones
//!   ring on; after the last target's ring time, nobody answered.
//!
//! A target with no contact (not registered) is skipped. When nobody
//! answers, the ringer says so once ([`Action::NoAnswer`]) and the call
//! falls back to the agent answering.

pub use crate::config::RingStrategy as Strategy;
use std::collections::VecDeque;

/// A fork: one INVITE to one contact of one target.
pub type ForkId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an INVITE to `contact` (index among the target's contacts).
    Start {
        fork: ForkId,
        target: usize,
        contact: usize,
    },
    /// CANCEL it (or, if it has answered meanwhile, BYE it).
    Cancel { fork: ForkId, why: Cancelled },
    /// Bridge the caller to this fork: it answered first.
    Connect { fork: ForkId },
    /// Nobody answered.
    NoAnswer,
}

/// Why a fork was cancelled, for the call's record of its legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// Another phone answered.
    AnsweredElsewhere,
    /// Its ring time ran out.
    RingTimeout,
    /// The caller hung up.
    CallerGone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fork {
    Ringing,
    Ended,
    Connected,
}

pub struct Ringer {
    strategy: Strategy,
    ring_ms: u64,
    /// Contacts per target.
    targets: Vec<usize>,
    /// Each fork and the target it rings.
    forks: Vec<(usize, Fork)>,
    /// Hunt: the next target to try.
    next_target: usize,
    /// When the current round's ring time runs out.
    deadline: Option<u64>,
    done: bool,
    actions: VecDeque<Action>,
}

impl Ringer {
    /// Start ringing `targets` (each given as its number of contacts).
    pub fn new(strategy: Strategy, ring_ms: u64, targets: Vec<usize>, now_ms: u64) -> Ringer {
        let mut r = Ringer {
            strategy,
            ring_ms,
            targets,
            forks: Vec::new(),
            next_target: 0,
            deadline: None,
            done: false,
            actions: VecDeque::new(),
        };
        r.next_round(now_ms);
        r
    }

    fn start_target(&mut self, target: usize) {
        for contact in 0..self.targets[target] {
            let fork = self.forks.len();
            self.forks.push((target, Fork::Ringing));
            self.actions.push_back(Action::Start {
                fork,
                target,
                contact,
            });
        }
    }

    /// Ring the next round: everyone (ringall, once) or the next target
    /// with a contact (hunt); nobody left: no answer.
    fn next_round(&mut self, now_ms: u64) {
        match self.strategy {
            Strategy::Ringall if self.next_target == 0 => {
                for t in 0..self.targets.len() {
                    self.start_target(t);
                }
                self.next_target = self.targets.len();
            }
            Strategy::Ringall => {}
            Strategy::Hunt | Strategy::Memoryhunt => {
                while self.next_target < self.targets.len() {
                    let t = self.next_target;
                    self.next_target += 1;
                    if self.targets[t] > 0 {
                        self.start_target(t);
                        break;
                    }
                }
            }
        }
        if self.ringing().next().is_some() {
            self.deadline = Some(now_ms + self.ring_ms);
        } else {
            self.give_up();
        }
    }

    fn ringing(&self) -> impl Iterator<Item = ForkId> + '_ {
        self.forks
            .iter()
            .enumerate()
            .filter(|(_, (_, s))| *s == Fork::Ringing)
            .map(|(i, _)| i)
    }

    fn cancel_ringing(&mut self, why: Cancelled) {
        let live: Vec<ForkId> = self.ringing().collect();
        for fork in live {
            self.forks[fork].1 = Fork::Ended;
            self.actions.push_back(Action::Cancel { fork, why });
        }
    }

    fn give_up(&mut self) {
        if !self.done {
            self.done = true;
            self.deadline = None;
            self.actions.push_back(Action::NoAnswer);
        }
    }

    /// Fork `fork` answered (2xx).
    pub fn answered(&mut self, fork: ForkId) {
        let Some((_, state)) = self.forks.get(fork).copied() else {
            return;
        };
        if self.done || state != Fork::Ringing {
            // Too late (another answered, or we gave up): hang it up.
            if state != Fork::Connected {
                self.forks[fork].1 = Fork::Ended;
                self.actions.push_back(Action::Cancel {
                    fork,
                    why: Cancelled::AnsweredElsewhere,
                });
            }
            return;
        }
        self.forks[fork].1 = Fork::Connected;
        self.done = true;
        self.deadline = None;
        self.actions.push_back(Action::Connect { fork });
        self.cancel_ringing(Cancelled::AnsweredElsewhere);
    }

    /// Fork `fork` ended without answering (busy, declined, unreachable,
    /// an error).
    pub fn failed(&mut self, fork: ForkId, now_ms: u64) {
        let Some((target, state)) = self.forks.get(fork).copied() else {
            return;
        };
        if state != Fork::Ringing {
            return;
        }
        self.forks[fork].1 = Fork::Ended;
        if self.done {
            return;
        }
        let round_over = match self.strategy {
            Strategy::Ringall => self.ringing().next().is_none(),
            Strategy::Hunt => !self
                .forks
                .iter()
                .any(|(t, s)| *t == target && *s == Fork::Ringing),
            // The next target joins at once when nothing rings any more.
            Strategy::Memoryhunt => self.ringing().next().is_none(),
        };
        if round_over {
            self.next_round(now_ms);
        }
    }

    /// The caller hung up: cancel every fork still ringing.
    pub fn caller_gone(&mut self) {
        if !self.done {
            self.done = true;
            self.deadline = None;
            self.cancel_ringing(Cancelled::CallerGone);
        }
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        self.deadline
    }

    pub fn handle_timeout(&mut self, now_ms: u64) {
        if self.deadline.is_some_and(|d| now_ms >= d) {
            self.deadline = None;
            // Memoryhunt keeps the earlier targets ringing while there is
            // another to add; at the end everyone's time is up.
            let more = self.targets[self.next_target.min(self.targets.len())..]
                .iter()
                .any(|&c| c > 0);
            if self.strategy != Strategy::Memoryhunt || !more {
                self.cancel_ringing(Cancelled::RingTimeout);
            }
            self.next_round(now_ms);
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Which target a fork rings.
    pub fn target_of(&self, fork: ForkId) -> Option<usize> {
        self.forks.get(fork).map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(r: &mut Ringer) -> Vec<Action> {
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    fn starts(actions: &[Action]) -> Vec<(usize, usize)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Start {
                    target, contact, ..
                } => Some((*target, *contact)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ringall_rings_every_contact_and_the_first_answer_cancels_the_rest() {
        // 101 has two phones, 102 one.
        let mut r = Ringer::new(Strategy::Ringall, 20_000, vec![2, 1], 0);
        let a = drain(&mut r);
        assert_eq!(starts(&a), [(0, 0), (0, 1), (1, 0)]);
        assert_eq!(r.poll_timeout(), Some(20_000));
        // 101's desk phone is busy: the others ring on.
        r.failed(0, 1_000);
        assert!(drain(&mut r).is_empty());
        r.answered(2);
        assert_eq!(
            drain(&mut r),
            [
                Action::Connect { fork: 2 },
                Action::Cancel {
                    fork: 1,
                    why: Cancelled::AnsweredElsewhere
                }
            ]
        );
        assert_eq!(r.poll_timeout(), None);
        // A second phone answering in the race is hung up.
        r.answered(1);
        assert_eq!(
            drain(&mut r),
            [Action::Cancel {
                fork: 1,
                why: Cancelled::AnsweredElsewhere
            }]
        );
        // The winner's own late events change nothing.
        r.answered(2);
        r.failed(2, 5_000);
        assert!(drain(&mut r).is_empty());
    }

    #[test]
    fn ringall_gives_up_after_the_ring_time_or_when_all_refuse() {
        let mut r = Ringer::new(Strategy::Ringall, 20_000, vec![1, 1], 0);
        drain(&mut r);
        r.handle_timeout(19_999);
        assert!(drain(&mut r).is_empty());
        r.handle_timeout(20_000);
        let a = drain(&mut r);
        assert_eq!(a.len(), 3);
        assert!(a[..2].iter().all(|x| matches!(
            x,
            Action::Cancel {
                why: Cancelled::RingTimeout,
                ..
            }
        )));
        assert_eq!(a[2], Action::NoAnswer);
        // Both busy: no answer at once.
        let mut r = Ringer::new(Strategy::Ringall, 20_000, vec![1, 1], 0);
        drain(&mut r);
        r.failed(0, 10);
        r.failed(1, 20);
        assert_eq!(drain(&mut r), [Action::NoAnswer]);
        // Nobody registered: no answer at once.
        let mut r = Ringer::new(Strategy::Ringall, 20_000, vec![0, 0], 0);
        assert_eq!(drain(&mut r), [Action::NoAnswer]);
    }

    #[test]
    fn hunt_rings_one_target_at_a_time() {
        // 101 (one phone), 102 (not registered), 103 (two phones).
        let mut r = Ringer::new(Strategy::Hunt, 15_000, vec![1, 0, 2], 0);
        assert_eq!(starts(&drain(&mut r)), [(0, 0)]);
        assert_eq!(r.poll_timeout(), Some(15_000));
        // 101 does not answer within its ring time: 103 next, 102 skipped.
        r.handle_timeout(15_000);
        let a = drain(&mut r);
        assert_eq!(
            a[0],
            Action::Cancel {
                fork: 0,
                why: Cancelled::RingTimeout
            }
        );
        assert_eq!(starts(&a), [(2, 0), (2, 1)]);
        assert_eq!(r.poll_timeout(), Some(30_000));
        assert_eq!(r.target_of(2), Some(2));
        // One of 103's phones declines: the other rings on.
        r.failed(1, 16_000);
        assert!(drain(&mut r).is_empty());
        r.answered(2);
        assert_eq!(drain(&mut r), [Action::Connect { fork: 2 }]);
    }

    #[test]
    fn hunt_moves_on_at_once_when_a_target_refuses_and_gives_up_at_the_end() {
        let mut r = Ringer::new(Strategy::Hunt, 15_000, vec![1, 1], 0);
        drain(&mut r);
        r.failed(0, 2_000);
        assert_eq!(starts(&drain(&mut r)), [(1, 0)]);
        assert_eq!(r.poll_timeout(), Some(17_000));
        r.handle_timeout(17_000);
        let a = drain(&mut r);
        assert_eq!(a.last(), Some(&Action::NoAnswer));
        assert_eq!(r.poll_timeout(), None);
        // Once given up, a late answer is hung up.
        r.answered(1);
        assert!(matches!(drain(&mut r)[..], [] | [Action::Cancel { .. }]));
    }

    #[test]
    fn the_caller_hanging_up_cancels_every_fork() {
        let mut r = Ringer::new(Strategy::Ringall, 20_000, vec![2, 1], 0);
        drain(&mut r);
        r.caller_gone();
        let a = drain(&mut r);
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|x| matches!(
            x,
            Action::Cancel {
                why: Cancelled::CallerGone,
                ..
            }
        )));
        assert_eq!(r.poll_timeout(), None);
        // A fork that answers in the race is hung up, not connected.
        r.answered(0);
        assert!(!drain(&mut r).contains(&Action::Connect { fork: 0 }));
    }

    #[test]
    fn memoryhunt_adds_one_target_per_ring_time_and_keeps_the_others_ringing() {
        // 101 (two phones), 102 (not registered), 103, 104.
        let mut r = Ringer::new(Strategy::Memoryhunt, 10_000, vec![2, 0, 1, 1], 0);
        assert_eq!(starts(&drain(&mut r)), [(0, 0), (0, 1)]);
        assert_eq!(r.poll_timeout(), Some(10_000));
        // Ring time up: 103 joins (102 has no phone), 101 rings on.
        r.handle_timeout(10_000);
        let a = drain(&mut r);
        assert_eq!(starts(&a), [(2, 0)]);
        assert!(
            !a.iter().any(|x| matches!(x, Action::Cancel { .. })),
            "{a:?}"
        );
        assert_eq!(r.poll_timeout(), Some(20_000));
        // 101's phones both decline: 103 still rings, nothing new yet.
        r.failed(0, 12_000);
        r.failed(1, 12_000);
        assert!(drain(&mut r).is_empty());
        // 103 declines too: with nothing ringing, 104 joins at once.
        r.failed(2, 13_000);
        assert_eq!(starts(&drain(&mut r)), [(3, 0)]);
        // 104's ring time runs out: everyone is done.
        r.handle_timeout(23_000);
        let a = drain(&mut r);
        assert!(
            a.contains(&Action::Cancel {
                fork: 3,
                why: Cancelled::RingTimeout
            }),
            "{a:?}"
        );
        assert_eq!(a.last(), Some(&Action::NoAnswer));
        // An answer on the second round cancels the first round's phones.
        let mut r = Ringer::new(Strategy::Memoryhunt, 10_000, vec![1, 1], 0);
        drain(&mut r);
        r.handle_timeout(10_000);
        drain(&mut r);
        r.answered(1);
        assert_eq!(
            drain(&mut r),
            [
                Action::Connect { fork: 1 },
                Action::Cancel {
                    fork: 0,
                    why: Cancelled::AnsweredElsewhere
                }
            ]
        );
    }
}
