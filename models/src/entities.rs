//! Entities in a caller's words: UK phone numbers, postcodes, dates and
//! times ("next Tuesday after three"), money, the caller's name, street
//! addresses. Plain text rules over whisper's output (which writes digits
//! and capitalises names); time is passed in, so tests pin the calendar.

/// What was found in a transcript. Each is the first mention.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entities {
    /// Digits only, UK national form ("07700900123").
    pub phone: Option<String>,
    /// Upper case with one space ("SW1A 1AA").
    pub postcode: Option<String>,
    pub when: Option<When>,
    /// As said, normalised ("£250", "£1,200.50").
    pub money: Option<String>,
    pub name: Option<String>,
    /// "12 High Street".
    pub address: Option<String>,
}

/// A requested day and/or time.
#[derive(Debug, Clone, PartialEq)]
pub struct When {
    /// Days since 1970-01-01 of the day meant, if a day was said.
    pub day: Option<i64>,
    /// "after", "before", "at", "around" or "" with the time.
    pub qualifier: &'static str,
    /// Minutes after midnight, if a time was said.
    pub minute: Option<u32>,
    /// "morning", "afternoon", "evening" if said instead of a time.
    pub part: Option<&'static str>,
}

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

const NUMBER_WORDS: [&str; 13] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve",
];

const STREET_TYPES: &[&str] = &[
    "road", "street", "avenue", "lane", "close", "drive", "way", "crescent", "place", "court",
    "gardens", "terrace", "grove", "hill", "row", "square", "park", "mews", "walk", "rise",
];

/// Words that follow "I'm"/"this is" but are not names.
const NOT_NAMES: &[&str] = &[
    "calling",
    "ringing",
    "just",
    "looking",
    "phoning",
    "trying",
    "after",
    "not",
    "so",
    "really",
    "very",
    "the",
    "a",
    "an",
    "in",
    "at",
    "on",
    "here",
    "sorry",
    "afraid",
    "interested",
    "hoping",
    "wondering",
    "going",
    "still",
    "having",
    "from",
    "about",
    "your",
    "my",
    "it",
    "that",
];

/// Find entities in `text`, said on `today` (days since 1970-01-01, local).
pub fn extract(text: &str, today: i64) -> Entities {
    let words: Vec<&str> = text.split_whitespace().collect();
    let clean: Vec<String> = words.iter().map(|w| bare(w)).collect();
    Entities {
        phone: phone(text),
        postcode: postcode(&words),
        when: when(&clean, today),
        money: money(&words, &clean),
        name: name(&words, &clean),
        address: address(&words, &clean),
    }
}

/// Lower case, without surrounding punctuation.
fn bare(w: &str) -> String {
    w.trim_matches(|c: char| !c.is_alphanumeric() && c != '£' && c != ':')
        .to_lowercase()
}

/// A UK number: 0 followed by 9 or 10 digits, or +44/44 followed by 9 or 10,
/// separated by spaces, dashes or brackets.
fn phone(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let start_plus = chars[i] == '+';
        if chars[i].is_ascii_digit() || start_plus {
            let mut digits = String::new();
            let mut j = i + usize::from(start_plus);
            let mut last_digit = j;
            while j < chars.len() {
                let c = chars[j];
                if c.is_ascii_digit() {
                    digits.push(c);
                    last_digit = j;
                } else if !matches!(c, ' ' | '-' | '(' | ')' | '.')
                    || digits.len() >= 13
                    || (c == '.' && chars.get(j + 1).is_none_or(|n| !n.is_ascii_digit()))
                {
                    break;
                }
                j += 1;
            }
            let national = if let Some(rest) = digits.strip_prefix("44") {
                Some(format!("0{}", rest.strip_prefix('0').unwrap_or(rest)))
            } else if digits.starts_with('0') {
                Some(digits.clone())
            } else {
                None
            };
            if let Some(n) = national
                && (10..=11).contains(&n.len())
                && !n.starts_with("00")
            {
                return Some(n);
            }
            i = last_digit.max(i) + 1;
        } else {
            i += 1;
        }
    }
    None
}

fn is_outward(s: &str) -> bool {
    let b = s.as_bytes();
    let letters = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    (1..=2).contains(&letters)
        && b.len() > letters
        && b.len() <= letters + 2
        && b[letters].is_ascii_digit()
        && b[letters + 1..].iter().all(|c| c.is_ascii_alphanumeric())
}

fn is_inward(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 3 && b[0].is_ascii_digit() && b[1..].iter().all(|c| c.is_ascii_alphabetic())
}

fn postcode(words: &[&str]) -> Option<String> {
    let tidy = |w: &str| {
        w.trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_ascii_uppercase()
    };
    for (i, w) in words.iter().enumerate() {
        let a = tidy(w);
        if let Some(next) = words.get(i + 1) {
            let b = tidy(next);
            if is_outward(&a) && is_inward(&b) {
                return Some(format!("{a} {b}"));
            }
        }
        // Written without the space.
        if a.len() >= 5 && a.len() <= 7 {
            let (out, inw) = a.split_at(a.len() - 3);
            if is_outward(out) && is_inward(inw) {
                return Some(format!("{out} {inw}"));
            }
        }
    }
    None
}

fn weekday_of(day: i64) -> usize {
    // 1970-01-01 was a Thursday.
    ((day + 3).rem_euclid(7)) as usize
}

/// An hour said as a digit or a word, with optional ":mm", "pm", "o'clock".
fn clock(words: &[String], i: usize) -> Option<(u32, usize)> {
    let w = words.get(i)?;
    let (mut h, mut m, mut used) = (None, 0u32, 1usize);
    let w_trim = w.trim_end_matches("pm").trim_end_matches("am");
    if let Some((hh, mm)) = w_trim.split_once(':') {
        h = hh.parse::<u32>().ok();
        m = mm.parse().ok()?;
    } else if let Ok(n) = w_trim.parse::<u32>() {
        h = Some(n);
    } else if let Some(n) = NUMBER_WORDS.iter().position(|x| x == w) {
        h = Some(n as u32);
    }
    let mut h = h?;
    if h > 23 || m > 59 {
        return None;
    }
    let mut pm = w.ends_with("pm");
    let am = w.ends_with("am");
    match words.get(i + 1).map(String::as_str) {
        Some("pm" | "p.m") => {
            pm = true;
            used += 1;
        }
        Some("am" | "a.m") => used += 1,
        Some("oclock" | "o'clock") => used += 1,
        Some("thirty") => {
            m = 30;
            used += 1;
        }
        _ => {}
    }
    // Trades work days: a bare "three" means 3 pm, "nine" means 9 am.
    if (pm || (!am && (1..=7).contains(&h))) && h < 12 {
        h += 12;
    }
    Some((h * 60 + m, used))
}

fn when(words: &[String], today: i64) -> Option<When> {
    let mut day = None;
    let mut minute = None;
    let mut part = None;
    let mut qualifier = "";
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        match w {
            "today" | "tonight" => day = day.or(Some(today)),
            "tomorrow" => day = day.or(Some(today + 1)),
            "morning" | "afternoon" | "evening" => {
                part = part.or(Some(match w {
                    "morning" => "morning",
                    "afternoon" => "afternoon",
                    _ => "evening",
                }))
            }
            "after" | "before" | "at" | "around" | "about" | "from" | "by" => {
                if let Some((min, used)) = clock(words, i + 1) {
                    if minute.is_none() {
                        minute = Some(min);
                        qualifier = match w {
                            "after" | "from" => "after",
                            "before" | "by" => "before",
                            "around" | "about" => "around",
                            _ => "at",
                        };
                    }
                    i += used;
                } else if w == "half" {
                    // handled below
                }
            }
            "half" if words.get(i + 1).map(String::as_str) == Some("past") => {
                if let Some((min, used)) = clock(words, i + 2)
                    && minute.is_none()
                {
                    minute = Some(min + 30);
                    if qualifier.is_empty() {
                        qualifier = "at";
                    }
                    i += used + 1;
                }
            }
            _ => {
                if let Some(wd) = WEEKDAYS
                    .iter()
                    .position(|d| *d == w || format!("{d}s") == w)
                    && day.is_none()
                {
                    let now = weekday_of(today);
                    let mut ahead = (wd as i64 - now as i64).rem_euclid(7);
                    let prev = i.checked_sub(1).map(|j| words[j].as_str());
                    if ahead == 0 {
                        ahead = 7;
                    }
                    // "next Tuesday" is ambiguous (the coming one or the
                    // one after). We take the coming one unless that is
                    // tomorrow, when people would have said "tomorrow".
                    if prev == Some("next") && ahead < 2 {
                        ahead += 7;
                    }
                    day = Some(today + ahead);
                } else if minute.is_none()
                    && (w.ends_with("pm") || w.ends_with("am") || w.contains(':'))
                    && let Some((min, used)) = clock(words, i)
                {
                    minute = Some(min);
                    qualifier = "at";
                    i += used - 1;
                }
            }
        }
        i += 1;
    }
    if day.is_none() && minute.is_none() && part.is_none() {
        return None;
    }
    Some(When {
        day,
        qualifier,
        minute,
        part,
    })
}

impl When {
    /// "Tuesday 2026-12-01 after 15:00".
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(d) = self.day {
            let wd = WEEKDAYS[weekday_of(d)];
            let (y, m, dd) = civil(d);
            s += &format!(
                "{}{} {y:04}-{m:02}-{dd:02}",
                wd[..1].to_uppercase(),
                &wd[1..]
            );
        }
        if let Some(p) = self.part {
            if !s.is_empty() {
                s.push(' ');
            }
            s += p;
        }
        if let Some(min) = self.minute {
            if !s.is_empty() {
                s.push(' ');
            }
            if !self.qualifier.is_empty() {
                s += self.qualifier;
                s.push(' ');
            }
            s += &format!("{:02}:{:02}", min / 60, min % 60);
        }
        s
    }
}

/// (year, month, day) of days since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn money(words: &[&str], clean: &[String]) -> Option<String> {
    for (i, w) in words.iter().enumerate() {
        let t = w.trim_end_matches(|c: char| !c.is_ascii_digit());
        if let Some(amount) = t.strip_prefix('£')
            && amount.chars().next().is_some_and(|c| c.is_ascii_digit())
        {
            return Some(format!("£{amount}"));
        }
        if clean[i]
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == '.')
            && clean[i].chars().any(|c| c.is_ascii_digit())
            && matches!(
                clean.get(i + 1).map(String::as_str),
                Some("pounds" | "quid" | "pound")
            )
        {
            return Some(format!("£{}", clean[i]));
        }
    }
    None
}

fn capitalised(w: &str) -> Option<String> {
    let t = w.trim_matches(|c: char| !c.is_alphabetic() && c != '-' && c != '\'');
    let t = t.strip_suffix("'s").unwrap_or(t);
    let first = t.chars().next()?;
    (first.is_uppercase()
        && t.chars()
            .skip(1)
            .all(|c| c.is_alphabetic() || c == '-' || c == '\''))
    .then(|| t.to_string())
}

fn name(words: &[&str], clean: &[String]) -> Option<String> {
    for i in 0..clean.len() {
        let start = match (clean[i].as_str(), clean.get(i + 1).map(String::as_str)) {
            ("name", Some("is")) | ("name's", _) => i + 1 + usize::from(clean[i] == "name"),
            ("this", Some("is")) | ("it's", _) | ("im", _) | ("i'm", _) => {
                i + 1 + usize::from(clean[i] == "this")
            }
            _ => continue,
        };
        let Some(first) = words.get(start).and_then(|w| capitalised(w)) else {
            continue;
        };
        if NOT_NAMES.contains(&first.to_lowercase().as_str()) || first == "I" {
            continue;
        }
        let mut n = first;
        // A surname, if the first name did not end the sentence.
        if !words[start].ends_with(['.', ',', '!', '?'])
            && let Some(last) = words.get(start + 1).and_then(|w| capitalised(w))
            && !NOT_NAMES.contains(&last.to_lowercase().as_str())
            && !WEEKDAYS.contains(&last.to_lowercase().as_str())
        {
            n = format!("{n} {last}");
        }
        return Some(n);
    }
    None
}

fn address(words: &[&str], clean: &[String]) -> Option<String> {
    for i in 0..clean.len() {
        let num = clean[i].trim_end_matches(|c: char| c.is_ascii_alphabetic());
        if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit()) || num.len() > 4 {
            continue;
        }
        // Up to three name words, then a street type.
        for len in 1..=3 {
            let Some(kind) = clean.get(i + len + 1) else {
                break;
            };
            let names_ok = (1..=len).all(|k| capitalised(words[i + k]).is_some());
            if names_ok && STREET_TYPES.contains(&kind.as_str()) {
                let parts: Vec<String> = (0..=len + 1)
                    .map(|k| {
                        words[i + k]
                            .trim_matches(|c: char| !c.is_alphanumeric())
                            .to_string()
                    })
                    .collect();
                let mut s = parts.join(" ");
                // Title-case the street type.
                if let Some(last) = parts.last() {
                    let t = format!("{}{}", last[..1].to_uppercase(), &last[1..]);
                    s = format!("{} {t}", parts[..parts.len() - 1].join(" "));
                }
                return Some(s);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-22 is a Sunday.
    const SUNDAY: i64 = 20_779;

    #[test]
    fn calendar_is_right() {
        assert_eq!(civil(SUNDAY), (2026, 11, 22));
        assert_eq!(WEEKDAYS[weekday_of(SUNDAY)], "sunday");
        assert_eq!(civil(0), (1970, 1, 1));
    }

    #[test]
    fn uk_phone_numbers_in_the_shapes_people_say_them() {
        for (text, want) in [
            ("call me on 07700 900123 please", "07700900123"),
            ("my number is 07700-900-123.", "07700900123"),
            ("it's +44 7700 900123", "07700900123"),
            ("ring 020 7946 0018 any time", "02079460018"),
            ("the office is (0113) 496 0000", "01134960000"),
        ] {
            assert_eq!(extract(text, SUNDAY).phone.as_deref(), Some(want), "{text}");
        }
        assert_eq!(extract("I paid 250 pounds on the 3rd", SUNDAY).phone, None);
        assert_eq!(extract("reference 12345", SUNDAY).phone, None);
    }

    #[test]
    fn postcodes() {
        for (text, want) in [
            ("I'm at SW1A 1AA", "SW1A 1AA"),
            ("postcode is ls6 2ab.", "LS6 2AB"),
            ("it's M1 1AE, the flat", "M1 1AE"),
            ("B338TH", "B33 8TH"),
        ] {
            assert_eq!(
                extract(text, SUNDAY).postcode.as_deref(),
                Some(want),
                "{text}"
            );
        }
        assert_eq!(extract("I have 2 dogs", SUNDAY).postcode, None);
    }

    #[test]
    fn dates_and_times_relative_to_the_call() {
        let w = extract("could you come next Tuesday after three?", SUNDAY)
            .when
            .unwrap();
        assert_eq!(w.describe(), "Tuesday 2026-11-24 after 15:00");
        let w = extract("next Monday", SUNDAY).when.unwrap();
        assert_eq!(w.describe(), "Monday 2026-11-30");
        let w = extract("tomorrow morning would be great", SUNDAY)
            .when
            .unwrap();
        assert_eq!(w.describe(), "Monday 2026-11-23 morning");
        let w = extract("Friday at 10:30am", SUNDAY).when.unwrap();
        assert_eq!(w.describe(), "Friday 2026-11-27 at 10:30");
        let w = extract("any time before 5pm", SUNDAY).when.unwrap();
        assert_eq!(w.describe(), "before 17:00");
        let w = extract("half past two on Saturday", SUNDAY).when.unwrap();
        assert_eq!(w.describe(), "Saturday 2026-11-28 at 14:30");
        assert_eq!(extract("my boiler is leaking", SUNDAY).when, None);
    }

    #[test]
    fn money_names_and_addresses() {
        let e = extract(
            "Hi, my name is Sarah Jones. I live at 12 High Street and the quote was £1,250.50.",
            SUNDAY,
        );
        assert_eq!(e.name.as_deref(), Some("Sarah Jones"));
        assert_eq!(e.address.as_deref(), Some("12 High Street"));
        assert_eq!(e.money.as_deref(), Some("£1,250.50"));
        assert_eq!(
            extract("it's Dave here, about 300 pounds", SUNDAY)
                .money
                .as_deref(),
            Some("£300")
        );
        assert_eq!(
            extract("It's Dave here", SUNDAY).name.as_deref(),
            Some("Dave")
        );
        assert_eq!(extract("I'm calling about my boiler", SUNDAY).name, None);
        assert_eq!(
            extract("this is Priya from 4 Mill Lane", SUNDAY)
                .address
                .as_deref(),
            Some("4 Mill Lane")
        );
    }
}
