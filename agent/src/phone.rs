//! Phone numbers as a privacy request names them and as they appear in a
//! call: a SIP From/To user part, a callback number in a summary, digits
//! the caller said or keyed. Everything is compared in one canonical form,
//! E.164 (`+447700900123`), so "07700 900123", "+44 7700 900123" and
//! "sip:+447700900123@trunk" are the same person.

use std::fmt;

type Error = crate::Error;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone {
    /// Country code and national number, digits only, no leading `+`.
    digits: String,
    /// Where the national (significant) number starts in `digits`.
    national_at: usize,
}

/// Shortest and longest national significant numbers we accept. ITU E.164
/// allows up to 15 digits in all; UK numbers are 9 or 10 after the 0.
const MIN_NATIONAL: usize = 7;
const MAX_DIGITS: usize = 15;

impl Phone {
    /// A number as a person types it. UK national numbers (leading 0) are
    /// taken as +44; anything else needs its country code (`+` or `00`).
    pub fn parse(input: &str) -> Result<Phone, Error> {
        let unknown = || {
            Error::Privacy(format!(
                "unknown phone number format {input:?}: give a UK number (07700 900123) or an international one with its country code (+44 7700 900123)"
            ))
        };
        let s = input.trim();
        let (plus, rest) = match s.strip_prefix('+') {
            Some(r) => (true, r),
            None => (false, s),
        };
        if rest.is_empty()
            || !rest
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'))
        {
            return Err(unknown());
        }
        let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
        let international = if plus {
            Some(digits.as_str())
        } else {
            digits.strip_prefix("00")
        };
        let phone = match international {
            Some(d) => Phone::international(d),
            None => match digits.strip_prefix('0') {
                Some(national) if (9..=10).contains(&national.len()) => Some(Phone {
                    digits: format!("44{national}"),
                    national_at: 2,
                }),
                // 447700900123 without the plus: a UK number written the
                // way many trunks send it.
                _ if digits.starts_with("44") && (11..=12).contains(&digits.len()) => {
                    Phone::international(&digits)
                }
                _ => None,
            },
        };
        phone.ok_or_else(unknown)
    }

    fn international(d: &str) -> Option<Phone> {
        // "+44 (0)7700 900123": the UK trunk 0 written after the code.
        let uk_trunk = d.strip_prefix("440").map(|n| format!("44{n}"));
        let d = uk_trunk.as_deref().unwrap_or(d);
        if d.starts_with('0') || d.len() > MAX_DIGITS {
            return None;
        }
        // Country codes are 1-3 digits; we only need to know where the UK's
        // (44) and NANP's (1) end to match national spellings in text.
        let cc = if d.starts_with("44") {
            2
        } else if d.starts_with('1') {
            1
        } else {
            // Elsewhere, match on everything after a 3-digit code: safe
            // (longer than any code), and still specific.
            3.min(d.len())
        };
        (d.len() >= cc + MIN_NATIONAL).then(|| Phone {
            digits: d.to_string(),
            national_at: cc,
        })
    }

    /// The number in a SIP or tel URI's user part (`sip:+447700900123@host`,
    /// `<tel:07700900123>`, `"Ann" <sip:07700900123@pbx;user=phone>`), if
    /// it is one; extensions and names are not.
    pub fn from_uri(uri: &str) -> Option<Phone> {
        let inner = match uri.rfind('<') {
            Some(i) => &uri[i + 1..],
            None => uri,
        };
        let user = inner
            .split_once(':')?
            .1
            .split(['@', ';', '>'])
            .next()?
            .trim();
        Phone::parse(user).ok()
    }

    /// `+447700900123`
    pub fn e164(&self) -> String {
        format!("+{}", self.digits)
    }

    /// The national form for display: `07700900123` for UK numbers, E.164
    /// otherwise.
    pub fn national(&self) -> String {
        if self.digits.starts_with("44") {
            format!("0{}", &self.digits[2..])
        } else {
            self.e164()
        }
    }

    /// Whether `text` (something said, typed or keyed) contains this number
    /// in any common spelling: the national significant number appears in a
    /// run of digits, however spaced, dashed or bracketed.
    pub fn mentioned_in(&self, text: &str) -> bool {
        let nsn = &self.digits[self.national_at..];
        let mut run = String::new();
        for c in text.chars().chain(std::iter::once('\n')) {
            if c.is_ascii_digit() {
                run.push(c);
            } else if matches!(c, ' ' | '-' | '.' | '(' | ')' | '+' | ',') {
                // Separators inside a number ("07700 900 123", "0770-090-0123").
            } else {
                if run.contains(nsn) {
                    return true;
                }
                run.clear();
            }
        }
        false
    }
}

impl fmt::Display for Phone {
    /// Never the number itself: display goes to logs and audit rows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "phone {}", crate::pii::Pii(self.e164()))
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(s: &str) -> String {
        Phone::parse(s).unwrap().e164()
    }

    #[test]
    fn spellings_of_one_number_agree() {
        for s in [
            "07700 900123",
            "07700900123",
            "+44 7700 900123",
            "+44 (0)7700 900123",
            "0044 7700 900123",
            "447700900123",
            " 07700-900-123 ",
        ] {
            assert_eq!(e164(s), "+447700900123", "{s}");
        }
        assert_eq!(e164("020 7946 0000"), "+442079460000");
        assert_eq!(e164("+1 (212) 555-0100"), "+12125550100");
        assert_eq!(
            Phone::parse("0113 496 0000").unwrap().national(),
            "01134960000"
        );
    }

    #[test]
    fn unknown_formats_are_refused_with_an_example() {
        for s in [
            "",
            "+",
            "12345",
            "7700900123",
            "0770090",
            "07700 900123 ext 4",
            "call me",
            "+0 1234 567890",
            "+44 1234",
            "+1234567890123456",
        ] {
            let e = Phone::parse(s).unwrap_err().to_string();
            assert!(
                e.contains("unknown phone number format") && e.contains("+44 7700 900123"),
                "{s}: {e}"
            );
        }
    }

    #[test]
    fn numbers_in_uris() {
        let p = Phone::parse("07700900123").unwrap();
        for u in [
            "sip:+447700900123@trunk.example",
            "<sip:07700900123@10.0.0.1;user=phone>",
            "\"Ann Smith\" <sip:447700900123@pbx>",
            "tel:+447700900123",
        ] {
            assert_eq!(Phone::from_uri(u).as_ref(), Some(&p), "{u}");
        }
        assert_eq!(Phone::from_uri("sip:baresip@127.0.0.1"), None);
        assert_eq!(Phone::from_uri("sip:201@pbx"), None);
        assert_eq!(Phone::from_uri("nonsense"), None);
    }

    #[test]
    fn mentions_in_text_whatever_the_spacing() {
        let p = Phone::parse("+447700900123").unwrap();
        for t in [
            "call me back on 07700 900123 please",
            "my number is 0770-090-0123.",
            "it's +44 7700 900 123",
            "7 7 0 0 9 0 0 1 2 3",
            "keys: 07700900123#",
        ] {
            assert!(p.mentioned_in(t), "{t}");
        }
        for t in [
            "call me back on 07700 900124",
            "07700 and later 900123",
            "the boiler is leaking",
            "",
        ] {
            assert!(!p.mentioned_in(t), "{t}");
        }
    }

    #[test]
    fn display_never_shows_the_number() {
        let p = Phone::parse("07700900123").unwrap();
        let shown = format!("{p} {p:?}");
        assert!(!shown.contains("7700900123"), "{shown}");
        assert!(format!("{p}").starts_with("phone <redacted:"));
    }
}
