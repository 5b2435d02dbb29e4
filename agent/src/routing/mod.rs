//! Where a call goes: a pure decision, `decide(facts, plan, now)`, with
//! the reasons for it in words. No I/O and no clock of its own: the call
//! passes what has happened so far ([`Facts`]), the compiled config
//! ([`Plan`]) and the time, and gets the next step ([`Decision`]). The
//! call asks again whenever something changes (the ring group did not
//! answer, the receptionist understood what the caller wants), so the
//! whole path of a call is a list of decisions, each stored on its
//! timeline.
//!
//! The order of questions, first answer wins:
//! 1. Did we just ring someone who did not answer? Their `no_answer`.
//! 2. Did the caller say (or key) what they want? The intent's route.
//! 3. Is the caller known (a caller rule) or withheld? That rule's route.
//! 4. Otherwise the DID's route (or the default), by opening hours.
//!
//! A route may depend on opening hours: `{ open = "office", closed = "oncall" }`.
//! Opening hours are local civil time in the site's timezone, with
//! holidays and the operator's override ([`Override`]) on top.

pub mod explain;
pub mod hours;
pub mod plan;
#[cfg(test)]
mod tests;

pub use plan::{
    Context, DEFAULT_GREETING, DEFAULT_MAILBOX, Dest, Override, Plan, Route, RoutingConfig,
    Strategy,
};
use std::fmt;
use std::sync::{Arc, RwLock};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// E.164.
    Number(String),
    /// No number given (anonymous, restricted).
    Withheld,
    /// Something that is not a number we can read (a SIP name, a short
    /// code): no caller rule matches it, but it is not withheld either.
    Unknown,
}

impl Caller {
    /// From a From URI's user part: withheld when it says so (or is
    /// empty), a number when it reads as one, else unknown.
    pub fn from_user(user: &str, number: Option<String>) -> Caller {
        match number {
            Some(n) => Caller::Number(n),
            None => {
                let u = user.trim().to_ascii_lowercase();
                if u.is_empty()
                    || [
                        "anonymous",
                        "unavailable",
                        "restricted",
                        "private",
                        "withheld",
                        "unknown",
                    ]
                    .contains(&u.as_str())
                {
                    Caller::Withheld
                } else {
                    Caller::Unknown
                }
            }
        }
    }
}

/// What the receptionist understood the caller wants.
#[derive(Debug, Clone, PartialEq)]
pub struct Understood {
    pub intent: String,
    pub confidence: f32,
}

/// How ringing a destination ended without anyone taking the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// Rang out.
    NoAnswer,
    /// Every phone was busy or declined.
    Busy,
    /// Nobody could be rung (not registered, no trunk up).
    Unreachable,
}

impl fmt::Display for Unanswered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unanswered::NoAnswer => "did not answer",
            Unanswered::Busy => "was busy",
            Unanswered::Unreachable => "could not be reached",
        })
    }
}

/// A destination rung and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    pub dest: Dest,
    pub outcome: Unanswered,
}

/// What has happened so far in a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub caller: Caller,
    /// The number dialled (E.164), for a call through a trunk.
    pub did: Option<String>,
    /// Set once the receptionist has understood the caller.
    pub understood: Option<Understood>,
    /// Keys pressed (in order).
    pub keys: String,
    /// Destinations rung, in order, none of which answered.
    pub tried: Vec<Tried>,
    /// The receptionist has already spoken with the caller.
    pub greeted: bool,
    /// How many destinations had been tried when the caller last said
    /// or keyed what they want: a no-answer before that is history, one
    /// after it is the question.
    pub heard_after: usize,
}

impl Facts {
    pub fn new(caller: Caller, did: Option<String>) -> Facts {
        Facts {
            caller,
            did,
            understood: None,
            keys: String::new(),
            tried: Vec::new(),
            greeted: false,
            heard_after: 0,
        }
    }
}

/// Ring these phones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// What is being rung (a group or an extension), for the next decision.
    pub dest: Dest,
    /// Extension numbers and outside numbers as configured.
    pub members: Vec<String>,
    pub strategy: Strategy,
    pub ring_secs: u64,
}

/// The next step for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Ring(Ring),
    /// Ring this outside number (E.164) through the trunk and bridge it.
    Transfer {
        number: String,
    },
    /// Answer: greet, listen, understand, then ask again.
    Receptionist,
    /// Answer and take a message.
    TakeMessage,
    Voicemail {
        mailbox: String,
    },
    /// Refuse the call (603 Decline).
    Reject,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Ring(r) => write!(
                f,
                "ring {} ({}, {} s: {})",
                r.dest,
                r.strategy.as_str(),
                r.ring_secs,
                r.members.join(", ")
            ),
            Step::Transfer { number } => write!(f, "transfer to {number}"),
            Step::Receptionist => write!(f, "receptionist answers"),
            Step::TakeMessage => write!(f, "take a message"),
            Step::Voicemail { mailbox } => write!(f, "voicemail {mailbox}"),
            Step::Reject => write!(f, "reject (603 Decline)"),
        }
    }
}

impl Step {
    /// The step without the numbers it rings, for logs at info.
    pub fn label(&self) -> String {
        match self {
            Step::Ring(r) => match &r.dest {
                Dest::Group(g) => format!("ring group {g} ({})", r.strategy.as_str()),
                Dest::Extension(e) => format!("ring extension {e}"),
                _ => "ring".into(),
            },
            Step::Transfer { .. } => "transfer to an outside number".into(),
            s => s.to_string(),
        }
    }
}

impl Step {
    /// The step as a destination, for upstream: no numbers and no words
    /// about the caller (`group:office`, `extension:201`, `voicemail:main`,
    /// `receptionist`, `message`, `transfer`, `reject`).
    pub fn destination(&self) -> String {
        match self {
            Step::Ring(r) => match &r.dest {
                Dest::Group(g) => format!("group:{g}"),
                Dest::Extension(e) => format!("extension:{e}"),
                _ => "ring".into(),
            },
            Step::Transfer { .. } => "transfer".into(),
            Step::Receptionist => "receptionist".into(),
            Step::TakeMessage => "message".into(),
            Step::Voicemail { mailbox } => format!("voicemail:{mailbox}"),
            Step::Reject => "reject".into(),
        }
    }
}

/// A step and the reasons for it, in words, first to last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub step: Step,
    pub reasons: Vec<String>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The last reason ends with the destination; the step says what
        // happens there.
        write!(f, "{}: {}", self.reasons.join("; "), self.step)
    }
}

/// How many destinations a chain of no-answers may pass through before
/// the call is given to the receptionist for a message (the plan's own
/// loops are refused when it loads; this bounds what `tried` skips).
/// A call also rings at most [`MAX_RINGS`] times in all.
const MAX_HOPS: usize = 16;

/// Ring steps one call may take, whatever the plan: then a message.
pub const MAX_RINGS: usize = 8;

/// The next step for a call.
pub fn decide(facts: &Facts, plan: &Plan, now_ms: i64) -> Decision {
    let (open, when) = plan.state_at(now_ms);
    let mut reasons = vec![when];
    // 1. Someone was rung and did not answer (since the caller said what
    // they want, if they have).
    let heard = facts.understood.is_some() || !facts.keys.is_empty();
    let since_heard = !heard || facts.tried.len() > facts.heard_after;
    if let Some(last) = facts.tried.last().filter(|_| since_heard) {
        let next = match &last.dest {
            Dest::Group(g) => plan
                .groups
                .get(g)
                .map(|g| g.no_answer.clone())
                .unwrap_or(Dest::Message),
            _ => plan.no_answer.clone(),
        };
        reasons.push(format!("{} {} → {next}", last.dest, last.outcome));
        return resolve(next, facts, plan, reasons);
    }
    // 2. The caller said or keyed what they want.
    let keyed = facts
        .keys
        .chars()
        .rev()
        .find_map(|k| plan.keys.get(&k).map(|i| (k, i)));
    if let Some((key, intent)) = keyed {
        let route = plan.intents.get(intent).unwrap_or(&plan.unknown);
        let dest = route.pick(open).clone();
        reasons.push(format!("pressed {key}: {intent} → {dest}"));
        return resolve(dest, facts, plan, reasons);
    }
    if let Some(u) = &facts.understood {
        let route = plan.intents.get(&u.intent).unwrap_or(&plan.unknown);
        let dest = route.pick(open).clone();
        let how = if plan.intents.contains_key(&u.intent) {
            ""
        } else {
            " (no route of its own: as unknown)"
        };
        reasons.push(format!(
            "intent {} ({:.0}% sure){how} → {dest}",
            u.intent,
            u.confidence * 100.0
        ));
        return resolve(dest, facts, plan, reasons);
    }
    // 3. Who is calling.
    match &facts.caller {
        Caller::Withheld => {
            if let Some(r) = &plan.withheld {
                let dest = r.pick(open).clone();
                reasons.push(format!("caller withheld their number → {dest}"));
                return resolve(dest, facts, plan, reasons);
            }
        }
        Caller::Unknown => {}
        Caller::Number(n) => {
            if let Some(rule) = plan
                .callers
                .iter()
                .find(|r| r.numbers.iter().any(|m| m.matches(n)))
            {
                let dest = rule.to.pick(open).clone();
                // The rule's name, not the number: reasons reach logs.
                reasons.push(format!("caller is on the {} list → {dest}", rule.name));
                return resolve(dest, facts, plan, reasons);
            }
        }
    }
    // 4. The number dialled.
    let (route, which) = match facts
        .did
        .as_ref()
        .and_then(|d| plan.dids.get(d).map(|r| (d, r)))
    {
        Some((d, r)) => (r, format!("DID {d}")),
        None => (&plan.default, "default route".to_string()),
    };
    let dest = route.pick(open).clone();
    reasons.push(format!(
        "{which} when {} → {dest}",
        if open { "open" } else { "closed" }
    ));
    resolve(dest, facts, plan, reasons)
}

/// Turn a destination into a step: skip what was already rung without an
/// answer (on to its own no-answer), and let a receptionist who has
/// already spoken with the caller take a message rather than start over.
fn resolve(mut dest: Dest, facts: &Facts, plan: &Plan, mut reasons: Vec<String>) -> Decision {
    if facts.tried.len() >= MAX_RINGS
        && matches!(dest, Dest::Group(_) | Dest::Extension(_) | Dest::Number(_))
    {
        reasons.push(format!(
            "{} destinations rung already: take a message",
            facts.tried.len()
        ));
        dest = Dest::Message;
    }
    for _ in 0..MAX_HOPS {
        let tried = facts.tried.iter().any(|t| t.dest == dest);
        match &dest {
            Dest::Group(g) if tried => {
                let next = plan
                    .groups
                    .get(g)
                    .map(|g| g.no_answer.clone())
                    .unwrap_or(Dest::Message);
                reasons.push(format!("{dest} was already rung → {next}"));
                dest = next;
            }
            Dest::Extension(_) | Dest::Number(_) if tried => {
                reasons.push(format!("{dest} was already rung → {}", plan.no_answer));
                dest = plan.no_answer.clone();
            }
            Dest::Receptionist if facts.greeted => {
                reasons.push(
                    "the receptionist has spoken with the caller already: takes a message".into(),
                );
                dest = Dest::Message;
            }
            _ => break,
        }
    }
    // Out of hops and still somewhere already rung: a message, never the
    // same phones again.
    let rung_already = matches!(dest, Dest::Group(_) | Dest::Extension(_) | Dest::Number(_))
        && facts.tried.iter().any(|t| t.dest == dest);
    if rung_already {
        reasons.push(format!("{dest} was already rung: take a message"));
        dest = Dest::Message;
    }
    let step = match dest {
        Dest::Group(g) => match plan.groups.get(&g) {
            Some(grp) => Step::Ring(Ring {
                dest: Dest::Group(g),
                members: grp.members.clone(),
                strategy: grp.strategy,
                ring_secs: grp.ring_secs,
            }),
            None => Step::TakeMessage,
        },
        Dest::Extension(e) => Step::Ring(Ring {
            dest: Dest::Extension(e.clone()),
            members: vec![e],
            strategy: Strategy::Ringall,
            ring_secs: plan.ring_secs,
        }),
        Dest::Number(number) => Step::Transfer { number },
        Dest::Receptionist if facts.greeted => Step::TakeMessage,
        Dest::Receptionist => Step::Receptionist,
        Dest::Message => Step::TakeMessage,
        Dest::Voicemail(mailbox) => Step::Voicemail { mailbox },
        Dest::Reject => Step::Reject,
    };
    Decision { step, reasons }
}

impl Plan {
    /// Whether the business is open at `now_ms`, and why, in words
    /// ("Sun 2026-12-06 19:40 Europe/London: closed (no hours on sun)").
    pub fn state_at(&self, now_ms: i64) -> (bool, String) {
        let ts = jiff::Timestamp::from_millisecond(now_ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        let z = ts.to_zoned(self.timezone.clone());
        let when = format!("{} {}", z.strftime("%a %Y-%m-%d %H:%M"), self.timezone_name);
        match self.switch {
            Override::Open => return (true, format!("{when}: open (override: open)")),
            Override::Closed => return (false, format!("{when}: closed (override: closed)")),
            Override::Auto => {}
        }
        let date = z.date();
        let holiday = self.holidays.contains(&date);
        let yesterday_holiday = date.yesterday().is_ok_and(|d| self.holidays.contains(&d));
        let day = z.weekday().to_monday_zero_offset() as usize;
        let minute = z.hour() as u16 * 60 + z.minute() as u16;
        let (open, because) = self.week.open_at(day, minute, holiday, yesterday_holiday);
        let (open, because) = match because {
            hours::Because::NoHours if holiday => (false, format!("holiday {date}")),
            hours::Because::Outside { .. } if holiday => (false, format!("holiday {date}")),
            b => (open, b.to_string()),
        };
        (
            open,
            format!(
                "{when}: {} ({because})",
                if open { "open" } else { "closed" }
            ),
        )
    }

    /// The same plan with the operator's switch set.
    pub fn with_switch(&self, switch: Override) -> Plan {
        Plan {
            switch,
            ..self.clone()
        }
    }
}

/// The plan calls read, and the operator's switch over it: calls take the
/// current plan when they start; `route override` replaces it.
pub struct LivePlan(RwLock<Arc<Plan>>);

impl LivePlan {
    pub fn new(plan: Plan) -> LivePlan {
        LivePlan(RwLock::new(Arc::new(plan)))
    }

    pub fn current(&self) -> Arc<Plan> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A new plan (pushed from upstream), under the operator's switch as
    /// it stands; calls already routed keep theirs.
    pub fn replace(&self, plan: Plan) {
        let mut w = self.0.write().unwrap_or_else(|e| e.into_inner());
        *w = Arc::new(plan.with_switch(w.switch));
    }

    pub fn set_switch(&self, switch: Override) {
        let mut w = self.0.write().unwrap_or_else(|e| e.into_inner());
        *w = Arc::new(w.with_switch(switch));
    }
}
