//! Opening hours: per weekday, spans of local (civil) time.
//!
//! A span is written `"08:00-17:30"`. One that runs past midnight says so
//! with `+1` on its end, `"22:00-02:00+1"`: it belongs to the day it starts
//! on, so a holiday closes the spans that *start* on it, and the small hours
//! after a normal day stay open. An end before its start without `+1` is a
//! mistake (inverted hours) and refused, as are spans of one day that
//! overlap, or a `+1` span running into the next day's first span.
//!
//! Times are civil: "08:00" is eight on the clock on the wall, on either
//! side of a daylight-saving change. The instant is turned into the site's
//! local time first (`super::plan`), then compared here, so a change of
//! offset needs no special case; on the night the clocks go back, the
//! repeated hour is simply seen twice.

use std::fmt;

/// Minutes in a day.
const DAY: u16 = 24 * 60;

/// One span of a day, in minutes from local midnight; `end` may pass
/// `DAY` (a `+1` span) by at most a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u16,
    pub end: u16,
}

impl Span {
    /// Parse `"HH:MM-HH:MM"` or `"HH:MM-HH:MM+1"`; `24:00` is allowed as
    /// an end (the end of the day).
    pub fn parse(s: &str) -> Result<Span, String> {
        let t = s.trim();
        let (a, b) = t
            .split_once('-')
            .ok_or_else(|| format!("{s:?} is not a span like \"08:00-17:30\""))?;
        let (b, next_day) = match b.trim().strip_suffix("+1") {
            Some(b) => (b, true),
            None => (b, false),
        };
        let start = clock(a.trim(), false).ok_or_else(|| format!("{s:?}: {a:?} is not HH:MM"))?;
        let end = clock(b.trim(), true).ok_or_else(|| format!("{s:?}: {b:?} is not HH:MM"))?;
        if next_day {
            if end >= start {
                return Err(format!(
                    "{s:?}: a +1 span must end the next day before the time it starts"
                ));
            }
            return Ok(Span {
                start,
                end: end + DAY,
            });
        }
        if end <= start {
            return Err(format!(
                "{s:?} is inverted or empty (ends before it starts); for hours past midnight write \"{}-{}+1\"",
                a.trim(),
                b.trim()
            ));
        }
        Ok(Span { start, end })
    }

    fn contains(self, minute: u16) -> bool {
        (self.start..self.end).contains(&minute)
    }
}

/// `HH:MM`, 00:00 to 23:59 (24:00 too where an end is wanted).
fn clock(s: &str, end: bool) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    match (h, m) {
        (24, 0) if end => Some(DAY),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60 % 24, m % 60);
        let end = if self.end == DAY {
            "24:00".to_string()
        } else {
            hm(self.end)
        };
        write!(f, "{}-{}", hm(self.start), end)?;
        if self.end > DAY {
            write!(f, "+1")?;
        }
        Ok(())
    }
}

/// Weekday names as written in config, Monday first.
pub const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A week of opening hours; Monday is day 0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Week {
    days: [Vec<Span>; 7],
}

/// Why the hours say open or closed at some moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Because {
    /// Inside this span of this day (the day it started on).
    In { day: usize, span: Span },
    /// Outside every span of the day; `spans` are the day's own.
    Outside { day: usize, spans: Vec<Span> },
    /// No hours are configured at all: always open.
    NoHours,
}

impl Week {
    /// From the config's lists, day by day, refusing bad, inverted and
    /// overlapping spans with the field named.
    pub fn parse(days: [&[String]; 7]) -> Result<Week, String> {
        let mut w = Week::default();
        for (d, spans) in days.iter().enumerate() {
            let mut v = Vec::new();
            for s in spans.iter() {
                let sp = Span::parse(s).map_err(|e| format!("routing.hours.{}: {e}", DAYS[d]))?;
                v.push(sp);
            }
            v.sort_by_key(|s| s.start);
            for pair in v.windows(2) {
                if pair[1].start < pair[0].end {
                    return Err(format!(
                        "routing.hours.{}: {} and {} overlap",
                        DAYS[d], pair[0], pair[1]
                    ));
                }
            }
            w.days[d] = v;
        }
        // A span past midnight must not run into the next day's hours.
        for (d, day) in w.days.iter().enumerate() {
            let next = (d + 1) % 7;
            if let (Some(last), Some(first)) = (day.last(), w.days[next].first())
                && last.end > DAY
                && first.start < last.end - DAY
            {
                return Err(format!(
                    "routing.hours.{}: {} runs into routing.hours.{} {}",
                    DAYS[d], last, DAYS[next], first
                ));
            }
        }
        Ok(w)
    }

    pub fn is_empty(&self) -> bool {
        self.days.iter().all(Vec::is_empty)
    }

    /// Whether the business is open at `minute` (from local midnight) of
    /// `day` (Monday 0). `day_is_holiday` and `yesterday_was_holiday` say
    /// whether today's spans and yesterday's `+1` spans count.
    pub fn open_at(
        &self,
        day: usize,
        minute: u16,
        day_is_holiday: bool,
        yesterday_was_holiday: bool,
    ) -> (bool, Because) {
        if self.is_empty() {
            return (true, Because::NoHours);
        }
        let yesterday = (day + 6) % 7;
        if !yesterday_was_holiday
            && let Some(span) = self.days[yesterday]
                .iter()
                .find(|s| s.end > DAY && minute < s.end - DAY)
        {
            return (
                true,
                Because::In {
                    day: yesterday,
                    span: *span,
                },
            );
        }
        if !day_is_holiday && let Some(span) = self.days[day].iter().find(|s| s.contains(minute)) {
            return (true, Because::In { day, span: *span });
        }
        (
            false,
            Because::Outside {
                day,
                spans: self.days[day].clone(),
            },
        )
    }

    /// The week as config would write it, for `route explain`.
    pub fn describe(&self) -> String {
        let mut out = Vec::new();
        for (d, spans) in self.days.iter().enumerate() {
            let s: Vec<String> = spans.iter().map(Span::to_string).collect();
            out.push(format!(
                "{} {}",
                DAYS[d],
                if s.is_empty() {
                    "closed".into()
                } else {
                    s.join(", ")
                }
            ));
        }
        out.join("; ")
    }
}

impl fmt::Display for Because {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Because::In { day, span } => write!(f, "hours {} {span}", DAYS[*day]),
            Because::Outside { day, spans } if spans.is_empty() => {
                write!(f, "no hours on {}", DAYS[*day])
            }
            Because::Outside { day, spans } => {
                let s: Vec<String> = spans.iter().map(Span::to_string).collect();
                write!(f, "outside hours {} {}", DAYS[*day], s.join(", "))
            }
            Because::NoHours => write!(f, "no opening hours configured: always open"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn week(spec: &[(&str, &[&str])]) -> Result<Week, String> {
        let mut days: [Vec<String>; 7] = Default::default();
        for (d, spans) in spec {
            let i = DAYS.iter().position(|x| x == d).unwrap();
            days[i] = spans.iter().map(|s| s.to_string()).collect();
        }
        let refs: [&[String]; 7] = std::array::from_fn(|i| days[i].as_slice());
        Week::parse(refs)
    }

    #[test]
    fn spans_parse_and_print_back() {
        for s in ["08:00-17:30", "00:00-24:00", "22:00-02:00+1", "09:05-09:06"] {
            assert_eq!(Span::parse(s).unwrap().to_string(), s);
        }
        for bad in [
            "8:00-17:30",
            "08:00",
            "08:00-25:00",
            "08:60-09:00",
            "24:00-24:00",
            "ab:cd-17:00",
        ] {
            assert!(Span::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn inverted_hours_are_refused_and_the_fix_is_named() {
        let e = Span::parse("17:30-08:00").unwrap_err();
        assert!(e.contains("inverted"), "{e}");
        assert!(e.contains("17:30-08:00+1"), "{e}");
        assert!(Span::parse("09:00-09:00").is_err());
        // +1 must really end the next day before the start.
        assert!(Span::parse("08:00-09:00+1").is_err());
    }

    #[test]
    fn overlaps_are_refused_with_the_day_named() {
        let e = week(&[("tue", &["08:00-12:00", "11:00-17:00"])]).unwrap_err();
        assert!(e.contains("routing.hours.tue"), "{e}");
        assert!(e.contains("overlap"), "{e}");
        // Touching spans are fine.
        week(&[("tue", &["08:00-12:00", "12:00-17:00"])]).unwrap();
        let e = week(&[("fri", &["20:00-03:00+1"]), ("sat", &["02:00-06:00"])]).unwrap_err();
        assert!(e.contains("runs into routing.hours.sat"), "{e}");
        // Sunday's night runs into Monday.
        let e = week(&[("sun", &["20:00-09:00+1"]), ("mon", &["08:00-17:00"])]).unwrap_err();
        assert!(e.contains("routing.hours.sun"), "{e}");
    }

    #[test]
    fn midnight_spanning_hours_open_the_small_hours_of_the_next_day() {
        let w = week(&[("fri", &["18:00-02:00+1"])]).unwrap();
        // Friday 23:00, Saturday 01:59 open; Saturday 02:00 closed.
        assert!(w.open_at(4, 23 * 60, false, false).0);
        let (open, why) = w.open_at(5, 60 + 59, false, false);
        assert!(open);
        assert_eq!(why.to_string(), "hours fri 18:00-02:00+1");
        assert!(!w.open_at(5, 2 * 60, false, false).0);
        // Friday before six: closed.
        assert!(!w.open_at(4, 17 * 60, false, false).0);
        // A holiday on Friday cancels the span that starts on it...
        assert!(!w.open_at(5, 60, false, true).0);
        // ...and a holiday on Saturday does not cut Friday's night short.
        assert!(w.open_at(5, 60, true, false).0);
        // Sunday night into Monday wraps the week.
        let w = week(&[("sun", &["22:00-06:00+1"])]).unwrap();
        assert!(w.open_at(0, 5 * 60, false, false).0);
    }

    #[test]
    fn no_hours_at_all_means_always_open() {
        let w = week(&[]).unwrap();
        assert_eq!(w.open_at(6, 3 * 60, false, false), (true, Because::NoHours));
    }
}
