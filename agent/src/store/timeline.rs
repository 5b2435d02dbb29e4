//! One call's story, read back from the tables the call wrote (`handlet
//! calls` and `handlet calls show ID`): the routing decisions with their
//! reasons, the phones rung and how each ended, the answer, the
//! announcement, keys pressed, every segment said by either side, the end,
//! the summary and the outcome, on one clock: ms from the call's start
//! (`calls.started_at_ms`, when the INVITE arrived).
//!
//! The rows are not all written on that clock; each is moved onto it here:
//!
//! | row | stored as | moved by |
//! |---|---|---|
//! | `call_events` `route` | ms from the call's start | — |
//! | `call_legs` (all times), `calls.answered_at_ms`/`ended_at_ms`, `call_summaries.created_at_ms` | wall clock (Unix ms) | − `started_at_ms` |
//! | `call_events` `dtmf` (the agent answered) | ms since the answering RTP leg started, which is the answer | + answer |
//! | `call_events` `dtmf` "…, phone)" (bridged) | ms since the phone's leg started: the bridge, i.e. the answer | + answer |
//! | `call_events` `dtmf` "…, caller)" (bridged) | ms since the caller's leg started: for a call through a trunk, the leg that played ringback from the last ring round's start (the route decision before the answer); else the bridge | + that decision, or + answer |
//! | `call_events` `dtmf_limit` | wall ms from the answer | + answer |
//! | `call_events` `announcement`, `transcript_segments` | the leg's audio clock: ms of audio the transcription tap has been given, which starts with the first audio played out after the answer (a few tens of ms later: the ACK and the jitter buffer) | + answer |
//! | `transcript_segments` `callee` after a blind transfer | the new party's tap starts at 0 when it answers | + that leg's answer (the latest answer whose clock puts the text before it was received) |
//!
//! So speech is placed up to a jitter buffer's delay (20–200 ms) early; the
//! tables hold nothing that would place it better.

use crate::Error;
use rusqlite::{Connection, OptionalExtension, params};

/// The reason the call path stores for a call the plan refused.
const REJECTED: &str = "rejected by the routing plan";

/// One call in the list.
#[derive(Debug, Clone, PartialEq)]
pub struct CallListRow {
    pub id: String,
    /// Wall clock (Unix ms).
    pub started_at_ms: i64,
    pub direction: String,
    /// The caller: E.164, the SIP user part, or "withheld".
    pub caller: String,
    /// The number or user called: the trunk's DID, else the To user part.
    pub called: String,
    /// Talk time (from the answer); None while the call is in progress.
    pub duration_ms: Option<i64>,
    /// How it ended, in words.
    pub outcome: String,
    /// What the caller wanted, once the call is summarised.
    pub intent: Option<String>,
    pub urgency: Option<String>,
}

/// The call itself, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CallHead {
    pub id: String,
    pub direction: String,
    pub from_uri: String,
    pub to_uri: String,
    pub transport: String,
    pub codec: Option<String>,
    pub trunk: Option<String>,
    pub did: Option<String>,
    /// E.164; None when withheld or not a number.
    pub caller: Option<String>,
    /// Wall clock (Unix ms), like the next two.
    pub started_at_ms: i64,
    pub answered_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub end_reason: Option<String>,
    pub transcript_complete: bool,
}

impl CallHead {
    /// Who called, for people: E.164, else the SIP user, else "withheld"
    /// (through a trunk, no number is a withheld number).
    pub fn caller_display(&self) -> String {
        if let Some(n) = &self.caller {
            return n.clone();
        }
        if self.trunk.is_some() {
            return "withheld".into();
        }
        match uri_user(&self.from_uri) {
            Some(u) if u.eq_ignore_ascii_case("anonymous") => "withheld".into(),
            Some(u) => u,
            None if self.from_uri.is_empty() => "withheld".into(),
            None => self.from_uri.clone(),
        }
    }

    /// Whom it was for: the DID, else the SIP user of the To.
    pub fn called_display(&self) -> String {
        self.did
            .clone()
            .or_else(|| uri_user(&self.to_uri))
            .unwrap_or_else(|| self.to_uri.clone())
    }
}

/// One phone rung (times from the call's start).
#[derive(Debug, Clone, PartialEq)]
pub struct Leg {
    pub target: String,
    pub contact: String,
    pub started_at_ms: i64,
    pub answered_at_ms: Option<i64>,
    pub ended_at_ms: i64,
    pub outcome: String,
}

/// What happened at one moment of the call.
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// A routing decision: its reasons and the step, in words.
    Route(String),
    /// A phone or number rung from here; how it ended.
    Ring(Leg),
    /// The call was answered, by whom.
    Answered(String),
    /// The recording announcement had played.
    Announcement(String),
    /// A key pressed ("5 (rfc4733, caller)").
    Key(String),
    /// Any other call event (kinds this build does not know by name).
    Event { kind: String, detail: String },
    /// Something said: the channel ("caller", "callee", "agent"), when it
    /// ended (ms from the call's start), the text.
    Said {
        channel: String,
        end_ms: i64,
        text: String,
    },
    /// The call ended, and why.
    Ended(String),
}

impl What {
    /// Entries at the same ms: decisions before what they cause.
    fn rank(&self) -> u8 {
        match self {
            What::Route(_) => 0,
            What::Ring(_) => 1,
            What::Answered(_) => 2,
            What::Announcement(_) => 3,
            What::Key(_) | What::Event { .. } => 4,
            What::Said { .. } => 5,
            What::Ended(_) => 6,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Ms from the call's start.
    pub at_ms: i64,
    pub what: What,
}

/// What the call was about (`call_summaries`).
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    pub summary: String,
    pub intent: String,
    pub intent_confidence: f64,
    pub runner_up: Option<String>,
    pub sentiment: String,
    pub urgency: String,
    pub caller_name: Option<String>,
    pub callback_number: Option<String>,
    pub requested_time: Option<String>,
    pub address: Option<String>,
    /// "message taken", "no message left", ...
    pub outcome: String,
    pub follow_up: String,
}

/// One call's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub call: CallHead,
    /// In time order.
    pub entries: Vec<Entry>,
    pub summary: Option<SummaryRow>,
    /// How the call ended, in words (as the list says it).
    pub outcome: String,
}

/// Calls started at or after `since_ms` (wall clock), newest first, at most `limit`.
pub fn list(
    conn: &Connection,
    since_ms: Option<i64>,
    limit: usize,
) -> Result<Vec<CallListRow>, Error> {
    let mut q = conn.prepare(
        "SELECT c.id, c.direction, c.from_uri, c.to_uri, c.transport, c.codec, c.trunk, c.did, c.caller,
                c.started_at_ms, c.answered_at_ms, c.ended_at_ms, c.duration_ms, c.end_reason,
                c.transcript_complete, s.intent, s.urgency,
                (SELECT detail FROM call_events e WHERE e.call_id = c.id AND e.kind = 'route'
                 ORDER BY e.at_ms DESC, e.id DESC LIMIT 1)
         FROM calls c LEFT JOIN call_summaries s ON s.call_id = c.id
         WHERE ?1 IS NULL OR c.started_at_ms >= ?1
         ORDER BY c.started_at_ms DESC, c.id LIMIT ?2",
    )?;
    let rows = q
        .query_map(
            params![since_ms, limit.min(i64::MAX as usize) as i64],
            |r| {
                Ok((
                    head(r)?,
                    r.get::<_, Option<String>>(15)?,
                    r.get::<_, Option<String>>(16)?,
                    r.get::<_, Option<String>>(17)?,
                ))
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (call, intent, urgency, last_route) in rows {
        let legs = legs(conn, &call)?;
        out.push(CallListRow {
            outcome: outcome(&call, &legs, last_route.as_deref()),
            id: call.id.clone(),
            started_at_ms: call.started_at_ms,
            direction: call.direction.clone(),
            caller: call.caller_display(),
            called: call.called_display(),
            duration_ms: call.ended_at_ms.and(call.duration_ms),
            intent,
            urgency,
        });
    }
    Ok(out)
}

/// The full id of the call `id_or_prefix` names: the id itself, or the
/// start of exactly one call's id (like git).
pub fn resolve(conn: &Connection, id_or_prefix: &str) -> Result<String, Error> {
    let p = id_or_prefix
        .trim()
        .trim_end_matches('…')
        .to_ascii_lowercase();
    if p.is_empty() {
        return Err(Error::Call(
            "give a call id, or its first characters, as `handlet calls` lists them".into(),
        ));
    }
    let exact: Option<String> = conn
        .query_row("SELECT id FROM calls WHERE id = ?1", [&p], |r| r.get(0))
        .optional()?;
    if let Some(id) = exact {
        return Ok(id);
    }
    let mut q = conn.prepare(
        "SELECT id FROM calls WHERE substr(id, 1, ?2) = ?1 ORDER BY started_at_ms DESC, id LIMIT 4",
    )?;
    let ids = q
        .query_map(params![p, p.chars().count() as i64], |r| {
            r.get::<_, String>(0)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    match ids.as_slice() {
        [] => Err(Error::Call(format!(
            "no call has an id starting {id_or_prefix:?} (`handlet calls` lists them)"
        ))),
        [one] => Ok(one.clone()),
        many => Err(Error::Call(format!(
            "{id_or_prefix:?} is the start of more than one call's id ({}{}); give more of it",
            many[..many.len().min(3)].join(", "),
            if many.len() > 3 { ", ..." } else { "" }
        ))),
    }
}

/// The timeline of the call `id_or_prefix` names (see [`resolve`]).
pub fn show(conn: &Connection, id_or_prefix: &str) -> Result<Timeline, Error> {
    let id = resolve(conn, id_or_prefix)?;
    let call = conn.query_row(
        "SELECT id, direction, from_uri, to_uri, transport, codec, trunk, did, caller,
                started_at_ms, answered_at_ms, ended_at_ms, duration_ms, end_reason, transcript_complete
         FROM calls WHERE id = ?1",
        [&id],
        head,
    )?;
    let t0 = call.started_at_ms;
    let answer = call.answered_at_ms.map(|a| a - t0);
    let legs = legs(conn, &call)?;
    let mut entries: Vec<Entry> = Vec::new();

    // Events, in the order they were written.
    let mut q = conn.prepare(
        "SELECT at_ms, kind, detail FROM call_events WHERE call_id = ?1 ORDER BY at_ms, id",
    )?;
    let events = q
        .query_map([&id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let routes: Vec<i64> = events
        .iter()
        .filter(|(_, k, _)| k == "route")
        .map(|(at, _, _)| *at)
        .collect();
    let last_route = events
        .iter()
        .filter(|(_, k, _)| k == "route")
        .max_by_key(|(at, _, _)| *at)
        .map(|(_, _, d)| d.clone());
    let base = answer.unwrap_or(0);
    for (at, kind, detail) in events {
        let (at_ms, what) = match kind.as_str() {
            "route" => (at, What::Route(detail)),
            "dtmf" => {
                let from = if detail.ends_with(", caller)") && call.trunk.is_some() {
                    // Bridged through a trunk: the caller's leg started
                    // with the ringback, when the last ring round began.
                    routes
                        .iter()
                        .copied()
                        .filter(|r| *r <= base)
                        .max()
                        .unwrap_or(base)
                } else {
                    base
                };
                (from + at, What::Key(detail))
            }
            "announcement" => (base + at, What::Announcement(detail)),
            "dtmf_limit" => (base + at, What::Key(detail)),
            _ => (base + at, What::Event { kind, detail }),
        };
        entries.push(Entry { at_ms, what });
    }

    // The phones rung; the first to answer took the call.
    let answered_by = legs
        .iter()
        .filter(|l| l.answered_at_ms.is_some())
        .min_by_key(|l| l.answered_at_ms)
        .map(|l| l.target.clone());
    for l in &legs {
        entries.push(Entry {
            at_ms: l.started_at_ms,
            what: What::Ring(l.clone()),
        });
    }
    if let Some(a) = answer {
        entries.push(Entry {
            at_ms: a,
            what: What::Answered(match &answered_by {
                Some(t) => format!("answered by {t}"),
                None => "answered by the agent".into(),
            }),
        });
    }

    // What was said. The callee's clock restarts with each party that
    // answered (a blind transfer's new party has a tap of its own).
    // The first party's tap started at the bridge (the call's answer).
    let mut callee_bases: Vec<i64> = legs.iter().filter_map(|l| l.answered_at_ms).collect();
    callee_bases.sort_unstable();
    if let Some(first) = callee_bases.first_mut() {
        *first = base;
    }
    let mut q = conn.prepare(
        "SELECT channel, start_ms, end_ms, text, received_at_ms FROM transcript_segments
         WHERE call_id = ?1 ORDER BY start_ms, id",
    )?;
    let segs = q
        .query_map([&id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (channel, start, end, text, received) in segs {
        let from = if channel == "callee" {
            callee_base(&callee_bases, base, end, received.map(|r| r - t0))
        } else {
            base
        };
        entries.push(Entry {
            at_ms: from + start,
            what: What::Said {
                channel,
                end_ms: from + end,
                text,
            },
        });
    }

    if let (Some(e), Some(r)) = (call.ended_at_ms, &call.end_reason) {
        entries.push(Entry {
            at_ms: e - t0,
            what: What::Ended(r.clone()),
        });
    }
    // Stable: equal times keep the rank, then the order written.
    entries.sort_by_key(|e| (e.at_ms, e.what.rank()));

    let summary = conn
        .query_row(
            "SELECT summary, intent, intent_confidence, runner_up, sentiment, urgency, caller_name,
                    callback_number, requested_time, address, outcome, follow_up
             FROM call_summaries WHERE call_id = ?1",
            [&id],
            |r| {
                Ok(SummaryRow {
                    summary: r.get(0)?,
                    intent: r.get(1)?,
                    intent_confidence: r.get(2)?,
                    runner_up: r.get(3)?,
                    sentiment: r.get(4)?,
                    urgency: r.get(5)?,
                    caller_name: r.get(6)?,
                    callback_number: r.get(7)?,
                    requested_time: r.get(8)?,
                    address: r.get(9)?,
                    outcome: r.get(10)?,
                    follow_up: r.get(11)?,
                })
            },
        )
        .optional()?;
    Ok(Timeline {
        outcome: outcome(&call, &legs, last_route.as_deref()),
        call,
        entries,
        summary,
    })
}

/// Where a callee segment's clock started (ms from the call's start): the
/// latest party's answer that puts the segment's end before its text was
/// received (text cannot come before the speech); else the call's answer.
fn callee_base(bases: &[i64], answer: i64, end_ms: i64, received: Option<i64>) -> i64 {
    // Whisper may place a segment's end a little past the speech.
    const SLACK_MS: i64 = 1000;
    let Some(received) = received else {
        return bases.first().copied().unwrap_or(answer);
    };
    bases
        .iter()
        .rev()
        .copied()
        .find(|b| b + end_ms <= received + SLACK_MS)
        .or(bases.first().copied())
        .unwrap_or(answer)
}

fn head(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallHead> {
    Ok(CallHead {
        id: r.get(0)?,
        direction: r.get(1)?,
        from_uri: r.get(2)?,
        to_uri: r.get(3)?,
        transport: r.get(4)?,
        codec: r.get(5)?,
        trunk: r.get(6)?,
        did: r.get(7)?,
        caller: r.get(8)?,
        started_at_ms: r.get(9)?,
        answered_at_ms: r.get(10)?,
        ended_at_ms: r.get(11)?,
        duration_ms: r.get(12)?,
        end_reason: r.get(13)?,
        transcript_complete: r.get::<_, i64>(14)? != 0,
    })
}

/// The call's legs in the order they were rung, times from the call's start.
fn legs(conn: &Connection, call: &CallHead) -> Result<Vec<Leg>, Error> {
    let t0 = call.started_at_ms;
    let mut q = conn.prepare(
        "SELECT target, contact, started_at_ms, answered_at_ms, ended_at_ms, outcome FROM call_legs
         WHERE call_id = ?1 ORDER BY started_at_ms, id",
    )?;
    let rows = q
        .query_map([&call.id], |r| {
            Ok(Leg {
                target: r.get(0)?,
                contact: r.get(1)?,
                started_at_ms: r.get::<_, i64>(2)? - t0,
                answered_at_ms: r.get::<_, Option<i64>>(3)?.map(|a| a - t0),
                ended_at_ms: r.get::<_, i64>(4)? - t0,
                outcome: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// How a call ended, in words: who answered (a phone, or the agent and
/// the step it took), missed, or refused by the plan; and why it ended.
fn outcome(call: &CallHead, legs: &[Leg], last_route: Option<&str>) -> String {
    let Some(_) = call.ended_at_ms else {
        return if call.answered_at_ms.is_some() {
            "in progress (answered)".into()
        } else {
            "in progress (ringing)".into()
        };
    };
    let reason = call.end_reason.as_deref().unwrap_or("ended");
    if reason == REJECTED {
        return REJECTED.into();
    }
    if call.answered_at_ms.is_none() {
        return if call.direction == "inbound" {
            format!("missed ({reason})")
        } else {
            format!("not answered ({reason})")
        };
    }
    let mut answered: Vec<&Leg> = legs.iter().filter(|l| l.answered_at_ms.is_some()).collect();
    answered.sort_by_key(|l| l.answered_at_ms);
    let mut answered = answered.into_iter();
    let who = match answered.next() {
        Some(first) => {
            let later: Vec<&str> = answered.map(|l| l.target.as_str()).collect();
            if later.is_empty() {
                format!("answered by {}", first.target)
            } else {
                format!(
                    "answered by {}, transferred to {}",
                    first.target,
                    later.join(", then ")
                )
            }
        }
        None => match last_route.and_then(|d| d.rsplit_once(": ")) {
            Some((_, step)) => format!("answered by the agent ({})", step.trim()),
            None => "answered by the agent".into(),
        },
    };
    format!("{who}; {reason}")
}

/// The user part of a SIP URI ("sip:101@host;x" → "101"), if it has one.
fn uri_user(uri: &str) -> Option<String> {
    let rest = uri.trim().trim_start_matches('<');
    let rest = rest.split_once(':').map_or(rest, |(_, r)| r);
    let (user, _) = rest.split_once('@')?;
    let user = user.split(';').next().unwrap_or("").trim();
    (!user.is_empty()).then(|| user.to_string())
}

/// `--since`: a UTC date ("2026-12-01"), a UTC time ("2026-12-01 10:00"),
/// Unix ms, or an age before `now_ms` ("90m", "24h", "7d"); as Unix ms.
pub fn parse_since(s: &str, now_ms: i64) -> Result<i64, Error> {
    let t = s.trim();
    let bad = || {
        Error::Config(format!(
            "--since {s:?} is not a UTC date (\"2026-12-01\"), a UTC time (\"2026-12-01 10:00\"), \
             Unix milliseconds, or an age (\"90m\", \"24h\", \"7d\")"
        ))
    };
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad());
    }
    for (suffix, unit) in [("m", 60_000i64), ("h", 3_600_000), ("d", 86_400_000)] {
        if let Some(n) = t.strip_suffix(suffix)
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
        {
            let n: i64 = n.parse().map_err(|_| bad())?;
            return n
                .checked_mul(unit)
                .and_then(|d| now_ms.checked_sub(d))
                .ok_or_else(bad);
        }
    }
    let utc = |dt: jiff::civil::DateTime| {
        dt.to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|_| bad())
    };
    if let Ok(dt) = t.parse::<jiff::civil::DateTime>() {
        return utc(dt);
    }
    if let Ok(d) = t.parse::<jiff::civil::Date>() {
        return utc(d.to_datetime(jiff::civil::Time::midnight()));
    }
    Err(bad())
}

/// Ms from the call's start as "m:ss.t" ("-" before, if a clock put
/// something before the INVITE).
pub fn clock(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let v = ms.unsigned_abs();
    format!(
        "{sign}{}:{:02}.{}",
        v / 60_000,
        (v / 1000) % 60,
        (v % 1000) / 100
    )
}

/// A length for people: "45 s", "1 min 12 s", "1 h 3 min".
pub fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

/// Unix ms as "Sun 2026-12-06 19:40:12 UTC".
pub fn utc(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%a %Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => format!("{ms} ms"),
    }
}

/// The list, one call a line (newest first), with a heading.
pub fn render_list(rows: &[CallListRow]) -> String {
    use std::fmt::Write;
    if rows.is_empty() {
        return "no calls\n".into();
    }
    let w_from = rows
        .iter()
        .map(|r| r.caller.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let w_to = rows
        .iter()
        .map(|r| r.called.chars().count())
        .max()
        .unwrap_or(0)
        .max(2);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16}  {:<27}  {:<8}  {:<w_from$}  {:<w_to$}  {:>8}  OUTCOME",
        "CALL", "STARTED", "WAY", "FROM", "TO", "TALK"
    );
    for r in rows {
        let talk = r.duration_ms.map_or_else(|| "-".to_string(), clock);
        let intent = match (&r.intent, &r.urgency) {
            (Some(i), Some(u)) => format!("; intent {i} (urgency {u})"),
            (Some(i), None) => format!("; intent {i}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<16}  {:<27}  {:<8}  {:<w_from$}  {:<w_to$}  {:>8}  {}{intent}",
            r.id.get(..16).unwrap_or(&r.id),
            utc(r.started_at_ms),
            r.direction,
            r.caller,
            r.called,
            talk,
            r.outcome,
        );
    }
    out
}

/// One call's timeline for the CLI: a heading, one line per entry (time
/// from the call's start), the summary, the outcome.
pub fn render(t: &Timeline) -> String {
    use std::fmt::Write;
    let c = &t.call;
    let mut out = String::new();
    let talk = match (c.ended_at_ms, c.duration_ms, c.answered_at_ms) {
        (Some(_), Some(d), Some(_)) => format!("talk {}", human_duration(d)),
        (Some(e), _, None) => format!("not answered, {}", human_duration(e - c.started_at_ms)),
        _ => "in progress".into(),
    };
    let _ = writeln!(
        out,
        "call {} {} from {} to {}{}, {}, {}, {}",
        c.id,
        c.direction,
        c.caller_display(),
        c.called_display(),
        c.trunk
            .as_ref()
            .map(|t| format!(" (trunk {t})"))
            .unwrap_or_default(),
        utc(c.started_at_ms),
        talk,
        t.outcome
    );
    let _ = writeln!(
        out,
        "  sip {} → {} over {}{}{}",
        c.from_uri,
        c.to_uri,
        c.transport,
        c.codec
            .as_ref()
            .map(|k| format!(", {k}"))
            .unwrap_or_default(),
        if c.transcript_complete {
            ""
        } else {
            "; transcript not complete yet"
        }
    );
    let _ = writeln!(out, "  times from the call's start (the INVITE)");
    for e in &t.entries {
        let (label, text) = match &e.what {
            What::Route(d) => ("route", d.clone()),
            What::Ring(l) => ("ring", ring_text(l)),
            What::Answered(w) => ("answer", w.clone()),
            What::Announcement(d) => ("announce", d.clone()),
            What::Key(d) => ("key", d.clone()),
            What::Event { kind, detail } => (kind.as_str(), detail.clone()),
            What::Said { channel, text, .. } => (
                match channel.as_str() {
                    "callee" => "phone",
                    other => other,
                },
                format!("\"{}\"", text.trim().replace(['\n', '\r'], " ")),
            ),
            What::Ended(r) => ("end", r.clone()),
        };
        let _ = writeln!(out, "  {:>7}  {label:<8} {text}", clock(e.at_ms));
    }
    match &t.summary {
        Some(s) => {
            let _ = writeln!(
                out,
                "  summary: intent {} (confidence {:.2}{}), urgency {}, sentiment {}",
                s.intent,
                s.intent_confidence,
                s.runner_up
                    .as_ref()
                    .map(|r| format!(", runner-up {r}"))
                    .unwrap_or_default(),
                s.urgency,
                s.sentiment
            );
            let _ = writeln!(out, "           {}", s.summary.trim());
            let facts: Vec<String> = [
                ("name", &s.caller_name),
                ("callback", &s.callback_number),
                ("when", &s.requested_time),
                ("address", &s.address),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
            .collect();
            if !facts.is_empty() {
                let _ = writeln!(out, "           {}", facts.join("; "));
            }
            let _ = writeln!(out, "           {}; follow-up: {}", s.outcome, s.follow_up);
        }
        None if !c.transcript_complete => {
            let _ = writeln!(out, "  summary: not yet (the transcript is not complete)");
        }
        None => {
            let _ = writeln!(out, "  summary: none");
        }
    }
    let _ = writeln!(out, "  outcome: {}", t.outcome);
    out
}

fn ring_text(l: &Leg) -> String {
    let who = if l.contact.is_empty() {
        l.target.clone()
    } else {
        format!("{} ({})", l.target, l.contact)
    };
    match l.answered_at_ms {
        Some(a) if l.outcome == "answered" => format!(
            "{who} → answered at {}, until {}",
            clock(a),
            clock(l.ended_at_ms)
        ),
        Some(a) => format!(
            "{who} → answered at {}, {} at {}",
            clock(a),
            l.outcome,
            clock(l.ended_at_ms)
        ),
        None => format!("{who} → {} at {}", l.outcome, clock(l.ended_at_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// 2026-12-06 19:40:12 UTC, a Sunday.
    const T0: i64 = 1_796_586_012_000;

    fn db() -> Connection {
        crate::store::open_for_tools(Path::new(":memory:")).unwrap()
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        conn: &Connection,
        id: &str,
        started: i64,
        answered: Option<i64>,
        ended: Option<i64>,
        reason: Option<&str>,
        trunk: Option<&str>,
        caller: Option<&str>,
    ) {
        conn.execute(
            "INSERT INTO calls (id, sip_call_id, direction, from_uri, to_uri, transport, codec, started_at_ms,
                answered_at_ms, ended_at_ms, duration_ms, end_reason, transcript_complete, trunk, did, caller)
             VALUES (?1, 's', 'inbound', 'sip:+447700900123@203.0.113.5', 'sip:+441632960001@192.0.2.1', 'udp',
                'PCMA', ?2, ?3, ?4, CASE WHEN ?4 IS NULL THEN NULL ELSE COALESCE(?4 - ?3, 0) END, ?5, 1, ?6,
                CASE WHEN ?6 IS NULL THEN NULL ELSE '+441632960001' END, ?7)",
            params![id, started, answered, ended, reason, trunk, caller],
        )
        .unwrap();
    }

    fn event(conn: &Connection, id: &str, at: i64, kind: &str, detail: &str) {
        conn.execute(
            "INSERT INTO call_events (call_id, at_ms, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![id, at, kind, detail],
        )
        .unwrap();
    }

    fn segment(conn: &Connection, id: &str, ch: &str, start: i64, end: i64, text: &str, rx: i64) {
        conn.execute(
            "INSERT INTO transcript_segments (call_id, channel, start_ms, end_ms, text, utterance_start_ms,
                received_at_ms, speech_ended_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?3, ?6, ?6)",
            params![id, ch, start, end, text, rx],
        )
        .unwrap();
    }

    #[allow(clippy::too_many_arguments)]
    fn leg(
        conn: &Connection,
        id: &str,
        target: &str,
        started: i64,
        answered: Option<i64>,
        ended: i64,
        outcome: &str,
    ) {
        conn.execute(
            "INSERT INTO call_legs (call_id, target, contact, started_at_ms, answered_at_ms, ended_at_ms, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id, target, format!("sip:{target}@10.0.0.9:5060"), started, answered, ended, outcome],
        )
        .unwrap();
    }

    fn labels(t: &Timeline) -> Vec<(i64, String)> {
        t.entries
            .iter()
            .map(|e| {
                let s = match &e.what {
                    What::Route(d) => format!("route {d}"),
                    What::Ring(l) => format!("ring {} {}", l.target, l.outcome),
                    What::Answered(w) => w.clone(),
                    What::Announcement(_) => "announcement".into(),
                    What::Key(k) => format!("key {k}"),
                    What::Event { kind, .. } => kind.clone(),
                    What::Said { channel, text, .. } => format!("{channel}: {text}"),
                    What::Ended(r) => format!("end {r}"),
                };
                (e.at_ms, s)
            })
            .collect()
    }

    /// The agent answers after a group rang out: routes (call clock),
    /// legs (wall clock), speech and keys (answer clock) and the end land
    /// on one clock, in order.
    #[test]
    fn one_clock_for_every_table() {
        let c = db();
        let id = "5d3260fc0a1b2c3d4e5f60718293a4b5";
        // Rang 101 for 20 s from 0.4 s, then the agent answered at 21.0 s.
        call(
            &c,
            id,
            T0,
            Some(T0 + 21_000),
            Some(T0 + 72_000),
            Some("caller hung up"),
            Some("itsp"),
            Some("+447700900123"),
        );
        event(
            &c,
            id,
            0,
            "route",
            "Sun 2026-12-06 19:40 Europe/London: open (always); default route when open → ring group office (ringall, 20 s: 101)",
        );
        event(
            &c,
            id,
            20_900,
            "route",
            "group office rang out (no answer) → receptionist: receptionist answers",
        );
        leg(&c, id, "101", T0 + 400, None, T0 + 20_400, "no answer");
        // Answer clock: 3.5 s after the answer is 24.5 s into the call.
        segment(
            &c,
            id,
            "caller",
            500,
            3_000,
            "Hi, my boiler is leaking",
            T0 + 24_700,
        );
        event(&c, id, 3_500, "dtmf", "5 (rfc4733)");
        segment(
            &c,
            id,
            "caller",
            4_000,
            6_000,
            "Please call me back",
            T0 + 27_800,
        );
        let t = show(&c, "5d32").unwrap();
        assert_eq!(
            labels(&t),
            vec![
                (0, "route Sun 2026-12-06 19:40 Europe/London: open (always); default route when open → ring group office (ringall, 20 s: 101)".to_string()),
                (400, "ring 101 no answer".into()),
                (20_900, "route group office rang out (no answer) → receptionist: receptionist answers".into()),
                (21_000, "answered by the agent".into()),
                (21_500, "caller: Hi, my boiler is leaking".into()),
                (24_500, "key 5 (rfc4733)".into()),
                (25_000, "caller: Please call me back".into()),
                (72_000, "end caller hung up".into()),
            ]
        );
        match &t.entries[1].what {
            What::Ring(l) => assert_eq!(l.ended_at_ms, 20_400),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            t.outcome,
            "answered by the agent (receptionist answers); caller hung up"
        );
        let text = render(&t);
        assert!(text.starts_with(&format!("call {id} inbound from +447700900123 to +441632960001 (trunk itsp), Sun 2026-12-06 19:40:12 UTC, talk 51 s,")), "{text}");
        assert!(
            text.contains(
                "   0:00.4  ring     101 (sip:101@10.0.0.9:5060) → no answer at 0:20.4\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("   0:21.5  caller   \"Hi, my boiler is leaking\"\n"),
            "{text}"
        );
        assert!(text.contains("  summary: none\n"), "{text}");
        assert!(
            text.ends_with(
                "  outcome: answered by the agent (receptionist answers); caller hung up\n"
            ),
            "{text}"
        );
    }

    /// A bridged call: the phone's words and keys on the answer's clock,
    /// the caller's keys on the ringback leg's (from the last ring round);
    /// a transfer's new party on its own answer's clock; the summary.
    #[test]
    fn bridged_and_transferred_calls_keep_their_clocks() {
        let c = db();
        let id = "aa00000000000000000000000000000b";
        call(
            &c,
            id,
            T0,
            Some(T0 + 5_000),
            Some(T0 + 60_000),
            Some("caller hung up"),
            Some("itsp"),
            None,
        );
        event(
            &c,
            id,
            0,
            "route",
            "open → ring extension 101 (ringall, 20 s: 101)",
        );
        leg(
            &c,
            id,
            "101",
            T0 + 100,
            Some(T0 + 4_990),
            T0 + 30_000,
            "transferred",
        );
        leg(
            &c,
            id,
            "102",
            T0 + 28_000,
            Some(T0 + 30_000),
            T0 + 60_000,
            "answered",
        );
        // The caller's ringback leg started at the route (0): key at 2 s.
        event(&c, id, 2_000, "dtmf", "1 (rfc4733, caller)");
        // The phone's leg started at the answer: key at 5 s + 1 s.
        event(&c, id, 1_000, "dtmf", "2 (rfc4733, phone)");
        segment(
            &c,
            id,
            "callee",
            1_500,
            2_500,
            "Plumbing, hello",
            T0 + 8_000,
        );
        segment(&c, id, "caller", 3_000, 4_000, "Hi there", T0 + 9_500);
        // Said by 101 just before the transfer, received just after it.
        segment(
            &c,
            id,
            "callee",
            23_000,
            24_800,
            "Putting you through",
            T0 + 30_300,
        );
        // 102's tap starts at 102's answer (30 s).
        segment(&c, id, "callee", 1_000, 2_000, "Accounts here", T0 + 33_000);
        c.execute(
            "INSERT INTO call_summaries (call_id, summary, intent, intent_confidence, runner_up, sentiment, urgency,
                caller_name, callback_number, requested_time, address, outcome, follow_up, created_at_ms)
             VALUES (?1, 'Wants a quote.', 'quote_request', 0.82, 'booking', 'neutral', 'normal', 'Sam', NULL, NULL,
                NULL, 'message taken', 'Call Sam back.', ?2)",
            params![id, T0 + 61_000],
        )
        .unwrap();
        let t = show(&c, id).unwrap();
        let l = labels(&t);
        let find = |s: &str| l.iter().find(|(_, x)| x == s).map(|(at, _)| *at);
        assert_eq!(find("key 1 (rfc4733, caller)"), Some(2_000));
        assert_eq!(find("key 2 (rfc4733, phone)"), Some(6_000));
        assert_eq!(find("callee: Plumbing, hello"), Some(6_500));
        assert_eq!(find("caller: Hi there"), Some(8_000));
        assert_eq!(find("callee: Putting you through"), Some(28_000));
        assert_eq!(find("callee: Accounts here"), Some(31_000));
        assert_eq!(find("answered by 101"), Some(5_000));
        assert!(l.windows(2).all(|w| w[0].0 <= w[1].0), "{l:?}");
        assert_eq!(
            t.outcome,
            "answered by 101, transferred to 102; caller hung up"
        );
        let text = render(&t);
        assert!(text.contains("from withheld to +441632960001"), "{text}");
        assert!(text.contains("phone    \"Accounts here\""), "{text}");
        assert!(
            text.contains(
                "101 (sip:101@10.0.0.9:5060) → answered at 0:04.9, transferred at 0:30.0"
            ),
            "{text}"
        );
        assert!(text.contains("  summary: intent quote_request (confidence 0.82, runner-up booking), urgency normal, sentiment neutral\n           Wants a quote.\n           name Sam\n           message taken; follow-up: Call Sam back.\n"), "{text}");
        let rows = list(&c, None, 10).unwrap();
        assert_eq!(rows[0].intent.as_deref(), Some("quote_request"));
        assert_eq!(rows[0].caller, "withheld");
    }

    #[test]
    fn list_says_how_each_call_ended_newest_first() {
        let c = db();
        call(
            &c,
            "a1",
            T0,
            None,
            Some(T0 + 1),
            Some(REJECTED),
            Some("itsp"),
            Some("+447700900666"),
        );
        event(
            &c,
            "a1",
            0,
            "route",
            "caller rule blocklist → reject (603 Decline)",
        );
        call(
            &c,
            "b2",
            T0 + 10,
            None,
            Some(T0 + 9_000),
            Some("caller cancelled"),
            Some("itsp"),
            Some("+447700900123"),
        );
        call(
            &c,
            "c3",
            T0 + 20,
            Some(T0 + 2_000),
            Some(T0 + 12_000),
            Some("caller hung up"),
            None,
            None,
        );
        leg(
            &c,
            "c3",
            "101",
            T0 + 30,
            Some(T0 + 2_000),
            T0 + 12_000,
            "answered",
        );
        call(&c, "d4", T0 + 30, Some(T0 + 40), None, None, None, None);
        let rows = list(&c, None, 10).unwrap();
        let got: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.id.as_str(), r.outcome.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("d4", "in progress (answered)"),
                ("c3", "answered by 101; caller hung up"),
                ("b2", "missed (caller cancelled)"),
                ("a1", REJECTED),
            ]
        );
        assert_eq!(rows[1].caller, "+447700900123"); // the From user, no trunk
        assert_eq!(rows[1].duration_ms, Some(10_000));
        assert_eq!(rows[0].duration_ms, None);
        assert_eq!(list(&c, Some(T0 + 10), 10).unwrap().len(), 3);
        assert_eq!(list(&c, None, 2).unwrap().len(), 2);
        let text = render_list(&rows);
        assert!(
            text.lines()
                .nth(2)
                .unwrap()
                .contains("answered by 101; caller hung up"),
            "{text}"
        );
        assert_eq!(render_list(&[]), "no calls\n");
        // A rejected call's timeline: the decision, then the end.
        let t = show(&c, "a1").unwrap();
        assert_eq!(
            labels(&t),
            vec![
                (
                    0,
                    "route caller rule blocklist → reject (603 Decline)".to_string()
                ),
                (1, format!("end {REJECTED}")),
            ]
        );
    }

    #[test]
    fn ids_resolve_by_unique_prefix_and_errors_say_why() {
        let c = db();
        call(
            &c,
            "abc123",
            T0,
            None,
            Some(T0),
            Some("caller cancelled"),
            None,
            None,
        );
        call(
            &c,
            "abd456",
            T0 + 1,
            None,
            Some(T0 + 1),
            Some("caller cancelled"),
            None,
            None,
        );
        call(
            &c,
            "abc",
            T0 + 2,
            None,
            Some(T0 + 2),
            Some("caller cancelled"),
            None,
            None,
        );
        assert_eq!(resolve(&c, "abd").unwrap(), "abd456");
        assert_eq!(resolve(&c, " ABD4 ").unwrap(), "abd456");
        assert_eq!(resolve(&c, "abd4…").unwrap(), "abd456");
        // An exact id wins over being another's prefix.
        assert_eq!(resolve(&c, "abc").unwrap(), "abc");
        let e = resolve(&c, "ab").unwrap_err().to_string();
        assert!(
            e.contains("more than one call") && e.contains("abd456"),
            "{e}"
        );
        let e = show(&c, "nosuchid").unwrap_err().to_string();
        assert!(e.contains("no call has an id starting \"nosuchid\""), "{e}");
        assert!(resolve(&c, "  ").is_err());
        // LIKE-style wildcards are just characters.
        assert!(resolve(&c, "a%").is_err());
        assert!(resolve(&c, "a_").is_err());
    }

    #[test]
    fn since_takes_dates_times_ms_and_ages() {
        let d = parse_since("2026-12-06", 0).unwrap();
        assert_eq!(d, T0 - (19 * 3600 + 40 * 60 + 12) * 1000);
        assert_eq!(parse_since("2026-12-06 19:40:12", 0).unwrap(), T0);
        assert_eq!(parse_since("2026-12-06T19:40:12", 0).unwrap(), T0);
        assert_eq!(parse_since("1796586012000", 0).unwrap(), T0);
        assert_eq!(parse_since("24h", T0).unwrap(), T0 - 86_400_000);
        assert_eq!(parse_since("7d", T0).unwrap(), T0 - 7 * 86_400_000);
        assert_eq!(parse_since("90m", T0).unwrap(), T0 - 90 * 60_000);
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "h",
            "-5",
            "99999999999999999999d",
        ] {
            let e = parse_since(bad, T0).unwrap_err().to_string();
            assert!(e.contains("--since"), "{bad}: {e}");
        }
    }

    fn show_head() -> CallHead {
        CallHead {
            id: "x".into(),
            direction: "inbound".into(),
            from_uri: "sip:101@10.0.0.9".into(),
            to_uri: "sip:handlet@127.0.0.1:5060".into(),
            transport: "udp".into(),
            codec: None,
            trunk: None,
            did: None,
            caller: None,
            started_at_ms: T0,
            answered_at_ms: None,
            ended_at_ms: None,
            duration_ms: None,
            end_reason: None,
            transcript_complete: false,
        }
    }

    #[test]
    fn clocks_and_lengths_read_well() {
        assert_eq!(clock(0), "0:00.0");
        assert_eq!(clock(20_449), "0:20.4");
        assert_eq!(clock(72_000), "1:12.0");
        assert_eq!(clock(-250), "-0:00.2");
        assert_eq!(human_duration(45_900), "45 s");
        assert_eq!(human_duration(72_000), "1 min 12 s");
        assert_eq!(human_duration(120_000), "2 min");
        assert_eq!(human_duration(3_780_000), "1 h 3 min");
        assert_eq!(utc(T0), "Sun 2026-12-06 19:40:12 UTC");
        assert_eq!(
            uri_user("sip:101@10.0.0.1:5060;transport=tcp").as_deref(),
            Some("101")
        );
        assert_eq!(uri_user("sip:10.0.0.1"), None);
        let mut h = show_head();
        assert_eq!(h.caller_display(), "101");
        h.from_uri = "sip:anonymous@anonymous.invalid".into();
        assert_eq!(h.caller_display(), "withheld");
        h.from_uri = "sip:10.0.0.1".into();
        assert_eq!(h.caller_display(), "sip:10.0.0.1");
        h.trunk = Some("itsp".into());
        assert_eq!(h.caller_display(), "withheld");
        assert_eq!(h.called_display(), "handlet");
    }
}
