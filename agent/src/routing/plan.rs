//! The routing plan: `[routing]` as written in config (serde), and the
//! checked, compiled [`Plan`] that [`super::decide`] reads.
//!
//! Everything a typo could break is refused when the config loads, one
//! line naming the field: an unknown destination, a loop between ring
//! groups, inverted or overlapping hours, an unknown timezone, an empty
//! group, a DID that is not a trunk's, a caller rule's bad number.

use super::hours::Week;
use crate::phone::{Country, Phone};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// How the phones of a ring group are rung.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// All at once; the first to answer takes the call.
    #[default]
    Ringall,
    /// One after another, each for the ring time.
    Hunt,
    /// The first, then the first two, then the first three...: each step
    /// adds the next member and the earlier ones ring on.
    Memoryhunt,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Ringall => "ringall",
            Strategy::Hunt => "hunt",
            Strategy::Memoryhunt => "memoryhunt",
        }
    }
}

/// A destination as written, or a pair by opening hours.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RouteSpec {
    Always(String),
    ByHours { open: String, closed: String },
}

/// `[routing]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// The site's timezone (IANA name, from the system's tz database).
    pub timezone: String,
    /// Opening hours per weekday; none at all: always open.
    pub hours: HoursConfig,
    /// Closed all day (local dates, `YYYY-MM-DD`).
    pub holidays: Vec<String>,
    /// Where calls go while open, for DIDs without their own entry;
    /// empty: `[inbound] ring` if it lists anyone, else the receptionist.
    pub open: String,
    /// Where they go while closed; empty: as when open.
    pub closed: String,
    /// After ringing an extension or a number directly (groups say their own).
    pub no_answer: String,
    /// How long an extension or a number given directly rings.
    pub ring_secs: u64,
    /// Where withheld callers go; absent: like everyone else.
    pub withheld: Option<RouteSpec>,
    /// Per DID.
    #[serde(rename = "did")]
    pub dids: Vec<DidConfig>,
    /// Callers by number, first match wins (a VIP list, a supplier, a blocklist).
    #[serde(rename = "caller")]
    pub callers: Vec<CallerConfig>,
    #[serde(rename = "group")]
    pub groups: Vec<GroupConfig>,
    /// The receptionist's intents → destinations; `unknown` for the rest.
    pub intents: BTreeMap<String, RouteSpec>,
    /// Keys a caller may press instead of saying it: key → intent.
    pub keys: BTreeMap<String, String>,
    #[serde(rename = "voicemail")]
    pub voicemails: Vec<VoicemailConfig>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            timezone: "Europe/London".into(),
            hours: HoursConfig::default(),
            holidays: Vec::new(),
            open: String::new(),
            closed: String::new(),
            no_answer: "receptionist".into(),
            ring_secs: 20,
            withheld: None,
            dids: Vec::new(),
            callers: Vec::new(),
            groups: Vec::new(),
            intents: BTreeMap::new(),
            keys: BTreeMap::new(),
            voicemails: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HoursConfig {
    pub mon: Vec<String>,
    pub tue: Vec<String>,
    pub wed: Vec<String>,
    pub thu: Vec<String>,
    pub fri: Vec<String>,
    pub sat: Vec<String>,
    pub sun: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DidConfig {
    pub number: String,
    pub open: String,
    /// Empty: as when open.
    #[serde(default)]
    pub closed: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    pub name: String,
    /// Numbers in any form the site's country dials; a trailing `*` makes
    /// a prefix (`"+44800*"`, `"0800*"`).
    pub numbers: Vec<String>,
    pub to: RouteSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    /// Extension numbers and outside numbers (rung through the trunk).
    pub members: Vec<String>,
    #[serde(default)]
    pub strategy: Strategy,
    /// Ring time: for everyone (ringall), each (hunt), each step (memoryhunt).
    #[serde(default = "default_ring_secs")]
    pub ring_secs: u64,
    /// Where the call goes when nobody answers.
    #[serde(default = "default_no_answer")]
    pub no_answer: String,
}

fn default_ring_secs() -> u64 {
    20
}

fn default_no_answer() -> String {
    "receptionist".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VoicemailConfig {
    pub name: String,
    /// Spoken as the greeting (by the box's voice).
    #[serde(default)]
    pub greeting: String,
    /// A recorded greeting instead (WAV).
    #[serde(default)]
    pub greeting_wav: String,
    #[serde(default = "default_max_secs")]
    pub max_secs: u64,
}

fn default_max_secs() -> u64 {
    120
}

/// Where a call can be sent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dest {
    /// A ring group, by name.
    Group(String),
    /// One extension (every phone registered as it).
    Extension(String),
    /// An outside number, E.164, rung through the trunk (a transfer).
    Number(String),
    /// The box answers: greets, listens, routes on what it hears.
    Receptionist,
    /// The box answers and takes a message.
    Message,
    /// A voicemail box, by name.
    Voicemail(String),
    /// Refused (603 Decline).
    Reject,
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Group(g) => write!(f, "group {g}"),
            Dest::Extension(e) => write!(f, "extension {e}"),
            // The number is the business's own configuration, not a caller's.
            Dest::Number(n) => write!(f, "number {n}"),
            Dest::Receptionist => write!(f, "receptionist"),
            Dest::Message => write!(f, "take a message"),
            Dest::Voicemail(b) => write!(f, "voicemail {b}"),
            Dest::Reject => write!(f, "reject"),
        }
    }
}

/// A destination, or one per opening state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Always(Dest),
    ByHours { open: Dest, closed: Dest },
}

impl Route {
    pub fn pick(&self, open: bool) -> &Dest {
        match self {
            Route::Always(d) => d,
            Route::ByHours { open: o, .. } if open => o,
            Route::ByHours { closed, .. } => closed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub members: Vec<String>,
    pub strategy: Strategy,
    pub ring_secs: u64,
    pub no_answer: Dest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberMatch {
    Exact(String),
    /// E.164 prefix.
    Prefix(String),
}

impl NumberMatch {
    pub fn matches(&self, e164: &str) -> bool {
        match self {
            NumberMatch::Exact(n) => n == e164,
            NumberMatch::Prefix(p) => e164.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerRule {
    pub name: String,
    pub numbers: Vec<NumberMatch>,
    pub to: Route,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: String,
    pub greeting: String,
    pub greeting_wav: Option<std::path::PathBuf>,
    pub max_secs: u64,
}

/// The operator's switch: `handlet route override open|closed|auto`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Override {
    /// The hours and holidays decide.
    #[default]
    Auto,
    Open,
    Closed,
}

impl Override {
    pub fn as_str(self) -> &'static str {
        match self {
            Override::Auto => "auto",
            Override::Open => "open",
            Override::Closed => "closed",
        }
    }
}

impl std::str::FromStr for Override {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Override::Auto),
            "open" => Ok(Override::Open),
            "closed" => Ok(Override::Closed),
            _ => Err(format!("{s:?} is not open, closed or auto")),
        }
    }
}

/// What the plan is checked against: the rest of the config.
pub struct Context<'a> {
    pub country: Country,
    pub extensions: Vec<&'a str>,
    /// Every trunk's DIDs, E.164.
    pub dids: Vec<String>,
    pub has_trunk: bool,
    /// The intents the receptionist can tell apart.
    pub intents: Vec<&'a str>,
    /// `[inbound]`: the ring list and how, for the default route.
    pub inbound_ring: &'a [String],
    pub inbound_strategy: Strategy,
    pub inbound_ring_secs: u64,
}

/// The compiled plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub timezone: jiff::tz::TimeZone,
    pub timezone_name: String,
    pub week: Week,
    pub holidays: BTreeSet<jiff::civil::Date>,
    /// For DIDs without an entry of their own.
    pub default: Route,
    /// E.164 DID → route.
    pub dids: BTreeMap<String, Route>,
    pub withheld: Option<Route>,
    pub callers: Vec<CallerRule>,
    pub groups: BTreeMap<String, Group>,
    pub intents: BTreeMap<String, Route>,
    /// For `unknown` and any intent without a route.
    pub unknown: Route,
    pub keys: BTreeMap<char, String>,
    pub mailboxes: Vec<Mailbox>,
    pub no_answer: Dest,
    pub ring_secs: u64,
    /// The operator's switch, as it stands.
    pub switch: Override,
}

/// The group `[inbound] ring` makes when `[routing]` names none.
pub const INBOUND_GROUP: &str = "inbound";
/// The mailbox there is when none is configured.
pub const DEFAULT_MAILBOX: &str = "main";
pub const DEFAULT_GREETING: &str = "Sorry, nobody can take your call right now. Please leave a message after the tone, with your name and number, and we'll call you back.";

const RESERVED: [&str; 5] = ["receptionist", "message", "voicemail", "reject", "unknown"];

impl Plan {
    /// Check `cfg` against `ctx` and compile it.
    pub fn compile(cfg: &RoutingConfig, ctx: &Context) -> Result<Plan, String> {
        let timezone = jiff::tz::TimeZone::get(&cfg.timezone).map_err(|_| {
            format!(
                "routing.timezone: {:?} is not a timezone this system knows (an IANA name such as \"Europe/London\" or \"America/New_York\")",
                cfg.timezone
            )
        })?;
        let h = &cfg.hours;
        let week = Week::parse([&h.mon, &h.tue, &h.wed, &h.thu, &h.fri, &h.sat, &h.sun])?;
        let mut holidays = BTreeSet::new();
        for d in &cfg.holidays {
            let date: jiff::civil::Date = d.trim().parse().map_err(|_| {
                format!("routing.holidays: {d:?} is not a date like \"2026-12-25\"")
            })?;
            holidays.insert(date);
        }
        if !(5..=300).contains(&cfg.ring_secs) {
            return Err(format!(
                "routing.ring_secs must be 5..=300 (seconds), got {}",
                cfg.ring_secs
            ));
        }

        // Groups first: destinations name them.
        let mut groups = BTreeMap::new();
        let mut raw_groups: Vec<GroupConfig> = cfg.groups.clone();
        if !ctx.inbound_ring.is_empty() && !cfg.groups.iter().any(|g| g.name == INBOUND_GROUP) {
            raw_groups.push(GroupConfig {
                name: INBOUND_GROUP.into(),
                members: ctx.inbound_ring.to_vec(),
                strategy: ctx.inbound_strategy,
                ring_secs: ctx.inbound_ring_secs,
                no_answer: "receptionist".into(),
            });
        }
        let mut mailboxes: Vec<Mailbox> = Vec::new();
        for (i, v) in cfg.voicemails.iter().enumerate() {
            let at = format!("routing.voicemail {:?} (the {})", v.name, nth(i + 1));
            name_ok(&v.name).map_err(|e| format!("{at}: {e}"))?;
            if mailboxes.iter().any(|m| m.name == v.name) {
                return Err(format!("{at}: the name is used twice"));
            }
            if !(5..=600).contains(&v.max_secs) {
                return Err(format!(
                    "{at}: max_secs must be 5..=600, got {}",
                    v.max_secs
                ));
            }
            if !v.greeting.is_empty() && !v.greeting_wav.is_empty() {
                return Err(format!("{at}: give greeting or greeting_wav, not both"));
            }
            if !v.greeting_wav.is_empty() && !std::path::Path::new(&v.greeting_wav).is_file() {
                return Err(format!(
                    "{at}: greeting_wav {:?} is not a file",
                    v.greeting_wav
                ));
            }
            if v.greeting.chars().count() > 500 {
                return Err(format!("{at}: greeting is longer than 500 characters"));
            }
            mailboxes.push(Mailbox {
                name: v.name.clone(),
                greeting: if v.greeting.is_empty() && v.greeting_wav.is_empty() {
                    DEFAULT_GREETING.into()
                } else {
                    v.greeting.clone()
                },
                greeting_wav: (!v.greeting_wav.is_empty()).then(|| v.greeting_wav.clone().into()),
                max_secs: v.max_secs,
            });
        }
        if mailboxes.is_empty() {
            mailboxes.push(Mailbox {
                name: DEFAULT_MAILBOX.into(),
                greeting: DEFAULT_GREETING.into(),
                greeting_wav: None,
                max_secs: default_max_secs(),
            });
        }
        let group_names: BTreeSet<&str> = raw_groups.iter().map(|g| g.name.as_str()).collect();
        let mailbox_names: BTreeSet<&str> = mailboxes.iter().map(|m| m.name.as_str()).collect();
        let resolver = Resolver {
            ctx,
            groups: &group_names,
            mailboxes: &mailbox_names,
            first_mailbox: &mailboxes[0].name,
        };
        for (i, g) in raw_groups.iter().enumerate() {
            let at = format!("routing.group {:?} (the {})", g.name, nth(i + 1));
            name_ok(&g.name).map_err(|e| format!("{at}: {e}"))?;
            if groups.contains_key(&g.name) {
                return Err(format!("{at}: the name is used twice"));
            }
            if g.members.is_empty() {
                return Err(format!(
                    "{at}: members is empty; a group needs someone to ring"
                ));
            }
            if !(5..=300).contains(&g.ring_secs) {
                return Err(format!(
                    "{at}: ring_secs must be 5..=300 (seconds), got {}",
                    g.ring_secs
                ));
            }
            let mut members: Vec<String> = Vec::new();
            let mut seen: Vec<String> = Vec::new();
            for m in &g.members {
                let member = resolver
                    .member(m)
                    .map_err(|e| format!("{at}: members: {e}"))?;
                let key = Phone::parse_in(&member, ctx.country)
                    .ok()
                    .filter(|_| !ctx.extensions.contains(&member.as_str()))
                    .map_or(member.clone(), |p| p.e164());
                if seen.contains(&key) {
                    return Err(format!("{at}: members: {m:?} is listed twice"));
                }
                seen.push(key);
                members.push(member);
            }
            let no_answer = resolver
                .dest(&g.no_answer)
                .map_err(|e| format!("{at}: no_answer: {e}"))?;
            groups.insert(
                g.name.clone(),
                Group {
                    name: g.name.clone(),
                    members,
                    strategy: g.strategy,
                    ring_secs: g.ring_secs,
                    no_answer,
                },
            );
        }
        let route = |r: &RouteSpec, field: &str| -> Result<Route, String> {
            match r {
                RouteSpec::Always(d) => Ok(Route::Always(
                    resolver.dest(d).map_err(|e| format!("{field}: {e}"))?,
                )),
                RouteSpec::ByHours { open, closed } => Ok(Route::ByHours {
                    open: resolver
                        .dest(open)
                        .map_err(|e| format!("{field}.open: {e}"))?,
                    closed: resolver
                        .dest(closed)
                        .map_err(|e| format!("{field}.closed: {e}"))?,
                }),
            }
        };
        let pair = |open: &str, closed: &str, field: &str| -> Result<Route, String> {
            let o = resolver
                .dest(open)
                .map_err(|e| format!("{field}.open: {e}"))?;
            if closed.is_empty() {
                return Ok(Route::Always(o));
            }
            let c = resolver
                .dest(closed)
                .map_err(|e| format!("{field}.closed: {e}"))?;
            Ok(Route::ByHours { open: o, closed: c })
        };
        let default_open = match cfg.open.as_str() {
            "" if !ctx.inbound_ring.is_empty() => INBOUND_GROUP.to_string(),
            "" => "receptionist".into(),
            o => o.to_string(),
        };
        let default = pair(&default_open, &cfg.closed, "routing")?;
        let mut dids = BTreeMap::new();
        for (i, d) in cfg.dids.iter().enumerate() {
            let at = format!("routing.did {:?} (the {})", d.number, nth(i + 1));
            let n = Phone::parse_in(&d.number, ctx.country)
                .map_err(|e| format!("{at}: number: {e}"))?
                .e164();
            if !ctx.dids.contains(&n) {
                return Err(format!(
                    "{at}: number is not one of the trunks' dids, so no call would ever come to it"
                ));
            }
            if dids.contains_key(&n) {
                return Err(format!("{at}: the DID is listed twice"));
            }
            dids.insert(n, pair(&d.open, &d.closed, &at)?);
        }
        let withheld = match &cfg.withheld {
            Some(w) => Some(route(w, "routing.withheld")?),
            None => None,
        };
        let mut callers = Vec::new();
        for (i, c) in cfg.callers.iter().enumerate() {
            let at = format!("routing.caller {:?} (the {})", c.name, nth(i + 1));
            name_ok(&c.name).map_err(|e| format!("{at}: {e}"))?;
            if c.numbers.is_empty() {
                return Err(format!("{at}: numbers is empty"));
            }
            let mut numbers = Vec::new();
            for n in &c.numbers {
                numbers
                    .push(number_match(n, ctx.country).map_err(|e| format!("{at}: numbers: {e}"))?);
            }
            callers.push(CallerRule {
                name: c.name.clone(),
                numbers,
                to: route(&c.to, &format!("{at}: to"))?,
            });
        }
        let mut intents = BTreeMap::new();
        let mut unknown = Route::Always(Dest::Message);
        for (name, r) in &cfg.intents {
            let field = format!("routing.intents.{name}");
            if name == "unknown" {
                unknown = route(r, &field)?;
                continue;
            }
            if !ctx.intents.contains(&name.as_str()) {
                return Err(format!(
                    "{field}: {name:?} is not an intent the receptionist knows ({})",
                    ctx.intents.join(", ")
                ));
            }
            intents.insert(name.clone(), route(r, &field)?);
        }
        let mut keys = BTreeMap::new();
        for (k, intent) in &cfg.keys {
            let mut chars = k.chars();
            let key = match (chars.next(), chars.next()) {
                (Some(c), None) if "0123456789*#".contains(c) => c,
                _ => {
                    return Err(format!("routing.keys: {k:?} is not one key (0-9, * or #)"));
                }
            };
            if intent != "unknown" && !ctx.intents.contains(&intent.as_str()) {
                return Err(format!(
                    "routing.keys.{k}: {intent:?} is not an intent the receptionist knows"
                ));
            }
            keys.insert(key, intent.clone());
        }
        let no_answer = resolver
            .dest(&cfg.no_answer)
            .map_err(|e| format!("routing.no_answer: {e}"))?;
        // A no-answer chain that comes back to where it started would ring
        // the same phones forever: groups follow their own no_answer, an
        // extension or a number given directly follows routing.no_answer.
        let next = |d: &Dest| -> Option<Dest> {
            match d {
                Dest::Group(g) => groups.get(g).map(|g| g.no_answer.clone()),
                Dest::Extension(_) | Dest::Number(_) => Some(no_answer.clone()),
                _ => None,
            }
        };
        let mut starts: Vec<Dest> = groups.keys().map(|g| Dest::Group(g.clone())).collect();
        starts.push(no_answer.clone());
        for start in starts {
            let mut path = vec![start.clone()];
            let mut at = start;
            while let Some(n) = next(&at) {
                if let Some(i) = path.iter().position(|p| *p == n) {
                    let mut cycle: Vec<String> = path[i..].iter().map(Dest::to_string).collect();
                    cycle.push(n.to_string());
                    let field = match &path[i] {
                        Dest::Group(g) => format!("routing.group {g:?}"),
                        _ => "routing.no_answer".to_string(),
                    };
                    return Err(format!("{field}: no_answer loops: {}", cycle.join(" → ")));
                }
                path.push(n.clone());
                at = n;
            }
        }
        Ok(Plan {
            timezone,
            timezone_name: cfg.timezone.clone(),
            week,
            holidays,
            default,
            dids,
            withheld,
            callers,
            groups,
            intents,
            unknown,
            keys,
            mailboxes,
            no_answer,
            ring_secs: cfg.ring_secs,
            switch: Override::Auto,
        })
    }

    pub fn mailbox(&self, name: &str) -> Option<&Mailbox> {
        self.mailboxes.iter().find(|m| m.name == name)
    }
}

struct Resolver<'a> {
    ctx: &'a Context<'a>,
    groups: &'a BTreeSet<&'a str>,
    mailboxes: &'a BTreeSet<&'a str>,
    first_mailbox: &'a str,
}

impl Resolver<'_> {
    fn dest(&self, s: &str) -> Result<Dest, String> {
        let t = s.trim();
        match t {
            "receptionist" => return Ok(Dest::Receptionist),
            "message" => return Ok(Dest::Message),
            "reject" => return Ok(Dest::Reject),
            "voicemail" => return Ok(Dest::Voicemail(self.first_mailbox.to_string())),
            _ => {}
        }
        if let Some(b) = t.strip_prefix("voicemail:") {
            return if self.mailboxes.contains(b) {
                Ok(Dest::Voicemail(b.to_string()))
            } else {
                Err(format!(
                    "{t:?}: there is no [[routing.voicemail]] named {b:?}"
                ))
            };
        }
        if self.groups.contains(t) {
            return Ok(Dest::Group(t.to_string()));
        }
        if self.ctx.extensions.contains(&t) {
            return Ok(Dest::Extension(t.to_string()));
        }
        if let Ok(p) = Phone::parse_in(t, self.ctx.country) {
            self.outside(t, &p)?;
            return Ok(Dest::Number(p.e164()));
        }
        Err(format!(
            "{t:?} is not a destination: name a [[routing.group]], an [[extension]], a phone number, \"receptionist\", \"message\", \"voicemail\" (or \"voicemail:NAME\") or \"reject\""
        ))
    }

    /// A ring group member: an extension or an outside number (as given:
    /// the ringer dials it through the trunk).
    fn member(&self, s: &str) -> Result<String, String> {
        let t = s.trim();
        if self.ctx.extensions.contains(&t) {
            return Ok(t.to_string());
        }
        match Phone::parse_in(t, self.ctx.country) {
            Ok(p) => {
                self.outside(t, &p)?;
                Ok(t.to_string())
            }
            Err(_) => Err(format!(
                "{t:?} is not an [[extension]] number nor a phone number"
            )),
        }
    }

    fn outside(&self, t: &str, p: &Phone) -> Result<(), String> {
        if !self.ctx.has_trunk {
            return Err(format!(
                "{t:?} is an outside number, which needs a [[trunk]] to ring through"
            ));
        }
        if self.ctx.dids.contains(&p.e164()) {
            return Err(format!(
                "{t:?} is one of the trunks' own dids; it would ring this box in a loop"
            ));
        }
        Ok(())
    }
}

/// "1st", "2nd", "3rd", "4th", "11th", "21st"...
fn nth(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn name_ok(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        && name.len() <= 32;
    if !ok {
        return Err(format!(
            "name {name:?} must start with a letter and be letters, digits, '-' or '_' (at most 32)"
        ));
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "name {name:?} is reserved (a destination of its own)"
        ));
    }
    Ok(())
}

fn number_match(s: &str, country: Country) -> Result<NumberMatch, String> {
    let t = s.trim();
    if let Some(prefix) = t.strip_suffix('*') {
        return country
            .e164_prefix(prefix)
            .map(NumberMatch::Prefix)
            .ok_or_else(|| format!("{t:?} is not a number prefix like \"+44800*\" or \"0800*\""));
    }
    Phone::parse_in(t, country)
        .map(|p| NumberMatch::Exact(p.e164()))
        .map_err(|e| format!("{t:?}: {e}"))
}
