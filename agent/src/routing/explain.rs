//! `handlet route explain`: the whole path a call would take, offline,
//! by asking [`super::decide`] again after each step as a call would:
//! ringing is assumed to go unanswered (so every fallback shows), and the
//! receptionist is assumed to hear `intent` if one is given.

use super::{Caller, Decision, Facts, Plan, Step, Tried, Unanswered, Understood, decide};

/// At most this many steps are shown (a plan's loops are refused at
/// load, so a real path is much shorter).
const MAX_STEPS: usize = 12;

/// The decisions, in order, for a call from `caller` to `did` at `now_ms`.
pub fn path(
    plan: &Plan,
    caller: Caller,
    did: Option<String>,
    intent: Option<&str>,
    now_ms: i64,
) -> Vec<Decision> {
    let mut facts = Facts::new(caller, did);
    let mut out = Vec::new();
    for _ in 0..MAX_STEPS {
        let d = decide(&facts, plan, now_ms);
        let step = d.step.clone();
        out.push(d);
        match step {
            Step::Ring(r) => facts.tried.push(Tried {
                dest: r.dest,
                outcome: Unanswered::NoAnswer,
            }),
            Step::Transfer { number } => facts.tried.push(Tried {
                dest: super::Dest::Number(number),
                outcome: Unanswered::NoAnswer,
            }),
            Step::Receptionist if facts.understood.is_none() => match intent {
                Some(i) => {
                    facts.greeted = true;
                    facts.understood = Some(Understood {
                        intent: i.to_string(),
                        confidence: 1.0,
                    });
                }
                None => break,
            },
            _ => break,
        }
    }
    out
}

/// The path as printed: numbered steps, each with its reasons.
pub fn render(path: &[Decision], intent: Option<&str>) -> String {
    let mut s = String::new();
    for (i, d) in path.iter().enumerate() {
        // The time is the same for every step: say it once.
        let reasons = if i == 0 {
            &d.reasons[..]
        } else {
            &d.reasons[1..]
        };
        let lead = match path.get(i.wrapping_sub(1)).map(|p| &p.step) {
            Some(Step::Ring(_)) | Some(Step::Transfer { .. }) => "(if nobody answers) ",
            Some(Step::Receptionist) => match intent {
                Some(_) => "(the receptionist hears the intent) ",
                None => "",
            },
            _ => "",
        };
        s += &format!("{}. {lead}{}\n   → {}\n", i + 1, reasons.join("; "), d.step);
    }
    s
}

/// A local time in the plan's timezone, `YYYY-MM-DD HH:MM`, as Unix ms.
/// A time the clocks skip (spring forward) is refused, a repeated one
/// (autumn) is taken the first time it happens.
pub fn parse_local(plan: &Plan, s: &str) -> Result<i64, String> {
    let dt: jiff::civil::DateTime = s
        .trim()
        .parse()
        .map_err(|_| format!("--at {s:?} is not a local time like \"2026-12-25 10:00\""))?;
    let ambiguous = plan.timezone.to_ambiguous_zoned(dt);
    if matches!(ambiguous.offset(), jiff::tz::AmbiguousOffset::Gap { .. }) {
        return Err(format!(
            "--at {s:?} does not exist in {}: the clocks skip it",
            plan.timezone_name
        ));
    }
    ambiguous
        .earlier()
        .map(|z| z.timestamp().as_millisecond())
        .map_err(|e| format!("--at {s:?}: {e}"))
}
