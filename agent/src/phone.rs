//! Phone numbers as a privacy request names them and as they appear in a
//! call: a SIP From/To user part, a callback number in a summary, digits
//! the caller said or keyed. Everything is compared in one canonical form,
//! E.164 (`+447700900123`), so "07700 900123", "+44 7700 900123" and
//! "sip:+447700900123@trunk" are the same person.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::RangeInclusive;

type Error = crate::Error;

/// A country's dialling plan, as far as turning what people and trunks
/// write into E.164 needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Country {
    GB,
    IE,
    US,
    CA,
    AU,
    NZ,
    FR,
    DE,
    NL,
    BE,
    ES,
    IT,
}

struct Plan {
    /// Country calling code.
    cc: &'static str,
    /// Dialled before a national number ("0" in most of Europe, "1" for
    /// long distance in North America), if any.
    trunk: Option<&'static str>,
    /// Dialled before an international number.
    intl: &'static str,
    /// Lengths of the national significant number (after the trunk prefix).
    nsn: RangeInclusive<usize>,
    /// A national significant number alone is a national number (North
    /// America's ten digits, Spain's and Italy's numbers with no trunk
    /// prefix); elsewhere digits without the trunk prefix are ambiguous.
    bare_nsn: bool,
}

impl Country {
    pub const ALL: [Country; 12] = [
        Country::GB,
        Country::IE,
        Country::US,
        Country::CA,
        Country::AU,
        Country::NZ,
        Country::FR,
        Country::DE,
        Country::NL,
        Country::BE,
        Country::ES,
        Country::IT,
    ];

    /// A number prefix as dialled in this country ("0800", "+44800",
    /// "0044800") as an E.164 prefix ("+44800"), for rules that match a
    /// range of numbers; None if it is neither national nor international.
    pub fn e164_prefix(self, prefix: &str) -> Option<String> {
        let digits: String = prefix
            .chars()
            .filter(|c| !c.is_whitespace() && !"-.()".contains(*c))
            .collect();
        let plan = self.plan();
        let international = digits
            .strip_prefix('+')
            .or_else(|| digits.strip_prefix(plan.intl));
        if let Some(r) = international {
            return (!r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
                .then(|| format!("+{r}"));
        }
        let rest = digits.strip_prefix(plan.trunk?)?;
        rest.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| format!("+{}{rest}", plan.cc))
    }

    pub fn code(self) -> &'static str {
        match self {
            Country::GB => "GB",
            Country::IE => "IE",
            Country::US => "US",
            Country::CA => "CA",
            Country::AU => "AU",
            Country::NZ => "NZ",
            Country::FR => "FR",
            Country::DE => "DE",
            Country::NL => "NL",
            Country::BE => "BE",
            Country::ES => "ES",
            Country::IT => "IT",
        }
    }

    fn plan(self) -> Plan {
        let eu = |cc, nsn| Plan {
            cc,
            trunk: Some("0"),
            intl: "00",
            nsn,
            bare_nsn: false,
        };
        match self {
            Country::GB => eu("44", 9..=10),
            Country::IE => eu("353", 7..=9),
            Country::FR => eu("33", 9..=9),
            Country::DE => eu("49", 6..=11),
            Country::NL => eu("31", 9..=9),
            Country::BE => eu("32", 8..=9),
            Country::NZ => eu("64", 8..=10),
            Country::AU => Plan {
                intl: "0011",
                ..eu("61", 9..=9)
            },
            Country::US | Country::CA => Plan {
                cc: "1",
                trunk: Some("1"),
                intl: "011",
                nsn: 10..=10,
                bare_nsn: true,
            },
            Country::ES => Plan {
                cc: "34",
                trunk: None,
                intl: "00",
                nsn: 9..=9,
                bare_nsn: true,
            },
            Country::IT => Plan {
                cc: "39",
                trunk: None,
                intl: "00",
                nsn: 6..=11,
                bare_nsn: true,
            },
        }
    }

    /// The plan whose calling code `digits` (E.164 without `+`) starts
    /// with, among the countries we know.
    fn by_calling_code(digits: &str) -> Option<Plan> {
        Country::ALL
            .iter()
            .map(|c| c.plan())
            .find(|p| digits.starts_with(p.cc))
    }
}

impl std::str::FromStr for Country {
    type Err = String;
    fn from_str(s: &str) -> Result<Country, String> {
        Country::ALL
            .into_iter()
            .find(|c| c.code().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let known: Vec<&str> = Country::ALL.iter().map(|c| c.code()).collect();
                format!(
                    "unknown country {s:?}: give an ISO 3166 code of one of {}",
                    known.join(", ")
                )
            })
    }
}

impl TryFrom<String> for Country {
    type Error = String;
    fn try_from(s: String) -> Result<Country, String> {
        s.parse()
    }
}

impl From<Country> for String {
    fn from(c: Country) -> String {
        c.code().to_string()
    }
}

/// How a number is written towards a trunk (its caller line identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CliFormat {
    /// `+447700900123`
    E164,
    /// `07700900123` for a number of the site's country; E.164 otherwise.
    National,
}

/// Length of the ITU-T E.164 country calling code `digits` starts with.
fn calling_code_len(digits: &str) -> usize {
    const TWO: [&str; 44] = [
        "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
        "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
        "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
    ];
    if digits.starts_with('1') || digits.starts_with('7') {
        1
    } else if TWO.iter().any(|c| digits.starts_with(c)) {
        2
    } else {
        3
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone {
    /// Country code and national number, digits only, no leading `+`.
    digits: String,
    /// Where the national (significant) number starts in `digits`.
    national_at: usize,
}

/// Shortest national significant number accepted for a country whose plan
/// we do not know; ITU E.164 allows up to 15 digits in all.
const MIN_NATIONAL: usize = 7;
const MAX_DIGITS: usize = 15;

impl Phone {
    /// A number as a person in the UK types it: [`Phone::parse_in`] GB.
    pub fn parse(input: &str) -> Result<Phone, Error> {
        Phone::parse_in(input, Country::GB)
    }

    /// A number as a person or a trunk in `country` writes it: national
    /// (`07700 900123` in GB), international with `+` or the country's
    /// international prefix (`+44 7700 900123`, `0044…`), or the calling
    /// code and number without either (`447700900123`, as many trunks send
    /// it). Spaces, dashes, dots and brackets are ignored.
    pub fn parse_in(input: &str, country: Country) -> Result<Phone, Error> {
        let plan = country.plan();
        let unknown = || {
            let example = Phone {
                digits: match country {
                    Country::GB => "447700900123".to_string(),
                    _ => format!("{}{}", plan.cc, "5".repeat(*plan.nsn.end())),
                },
                national_at: plan.cc.len(),
            };
            let (national, international) = match country {
                Country::GB => ("07700 900123".to_string(), "+44 7700 900123".to_string()),
                _ => (example.national_in(country), example.e164_spaced()),
            };
            Error::Privacy(format!(
                "unknown phone number format {input:?}: give a number as dialled in {} ({national}) or with its country code ({international})",
                country.code(),
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
            digits.strip_prefix(plan.intl)
        };
        let national = |nsn: &str| -> Option<Phone> {
            plan.nsn.contains(&nsn.len()).then(|| Phone {
                digits: format!("{}{nsn}", plan.cc),
                national_at: plan.cc.len(),
            })
        };
        let phone = match international {
            Some(d) => Phone::international(d),
            None => plan
                .trunk
                .and_then(|t| digits.strip_prefix(t))
                .and_then(national)
                .or_else(|| plan.bare_nsn.then(|| national(&digits)).flatten())
                .or_else(|| {
                    // The calling code without + or 00 (`447700900123`),
                    // maybe with the trunk 0 written after it
                    // (`44 (0)1697 73456`).
                    let rest = digits.strip_prefix(plan.cc)?;
                    let nsn = match plan.trunk {
                        Some("0") => rest.strip_prefix('0').unwrap_or(rest),
                        _ => rest,
                    };
                    national(nsn)
                }),
        };
        phone.ok_or_else(unknown)
    }

    fn international(d: &str) -> Option<Phone> {
        if d.starts_with('0') || d.len() > MAX_DIGITS {
            return None;
        }
        let cc = calling_code_len(d);
        if d.len() <= cc {
            return None;
        }
        let known = Country::by_calling_code(d).filter(|p| p.cc.len() == cc);
        // "+44 (0)7700 900123": a trunk 0 written after the calling code.
        let mut digits = d.to_string();
        if let Some(p) = &known
            && p.trunk == Some("0")
            && d[cc..].starts_with('0')
        {
            digits.remove(cc);
        }
        let nsn = digits.len() - cc.min(digits.len());
        let ok = match &known {
            Some(p) => p.nsn.contains(&nsn),
            None => nsn >= MIN_NATIONAL,
        };
        ok.then_some(Phone {
            digits,
            national_at: cc,
        })
    }

    /// The number in a SIP or tel URI's user part (`sip:+447700900123@host`,
    /// `<tel:07700900123>`, `"Ann" <sip:07700900123@pbx;user=phone>`), if
    /// it is one; extensions and names are not.
    pub fn from_uri(uri: &str) -> Option<Phone> {
        Phone::from_uri_in(uri, Country::GB)
    }

    /// [`Phone::from_uri`] for a site in `country`.
    pub fn from_uri_in(uri: &str, country: Country) -> Option<Phone> {
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
        Phone::parse_in(user, country).ok()
    }

    /// The country whose calling code the number has, among those we know
    /// (North America is US); GB for any other. A URI from a call is read
    /// in the subject's own country to find national spellings of it.
    pub fn country(&self) -> Country {
        Country::ALL
            .into_iter()
            .find(|c| c.plan().cc == &self.digits[..self.national_at])
            .unwrap_or(Country::GB)
    }

    /// `+447700900123`
    pub fn e164(&self) -> String {
        format!("+{}", self.digits)
    }

    /// `+44 7700900123`, for examples in messages.
    fn e164_spaced(&self) -> String {
        format!(
            "+{} {}",
            &self.digits[..self.national_at],
            &self.digits[self.national_at..]
        )
    }

    /// The national form for display in the UK: `07700900123` for UK
    /// numbers, E.164 otherwise.
    pub fn national(&self) -> String {
        self.national_in(Country::GB)
    }

    /// As dialled in `country`: its trunk prefix and the national number
    /// for its own numbers (`07700900123`, `2125550100` in the US),
    /// E.164 for anyone else's.
    pub fn national_in(&self, country: Country) -> String {
        let plan = country.plan();
        let nsn = &self.digits[self.national_at..];
        if &self.digits[..self.national_at] != plan.cc {
            return self.e164();
        }
        match plan.trunk {
            Some(t) if !plan.bare_nsn => format!("{t}{nsn}"),
            _ => nsn.to_string(),
        }
    }

    /// The caller line identity towards a trunk.
    pub fn cli(&self, format: CliFormat, country: Country) -> String {
        match format {
            CliFormat::E164 => self.e164(),
            CliFormat::National => self.national_in(country),
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
    fn each_countrys_spellings_become_e164() {
        let cases: [(Country, &str, &str); 22] = [
            (Country::GB, "07700 900123", "+447700900123"),
            (Country::GB, "447700900123", "+447700900123"),
            (Country::GB, "0044 7700 900123", "+447700900123"),
            (Country::GB, "44 (0)1697 73456", "+44169773456"),
            (Country::DE, "49 030 1234567", "+49301234567"),
            (Country::GB, "+353 1 234 5678", "+35312345678"),
            (Country::IE, "01 234 5678", "+35312345678"),
            (Country::IE, "087 123 4567", "+353871234567"),
            (Country::US, "(212) 555-0100", "+12125550100"),
            (Country::US, "1 212 555 0100", "+12125550100"),
            (Country::US, "011 44 7700 900123", "+447700900123"),
            (Country::CA, "416-555-0199", "+14165550199"),
            (Country::AU, "02 9876 5432", "+61298765432"),
            (Country::AU, "0011 44 7700 900123", "+447700900123"),
            (Country::NZ, "09 123 4567", "+6491234567"),
            (Country::FR, "01 23 45 67 89", "+33123456789"),
            (Country::FR, "+33 (0)1 23 45 67 89", "+33123456789"),
            (Country::DE, "030 1234567", "+49301234567"),
            (Country::NL, "020 123 4567", "+31201234567"),
            (Country::BE, "02 123 45 67", "+3221234567"),
            (Country::ES, "912 345 678", "+34912345678"),
            (Country::IT, "06 1234 5678", "+390612345678"),
        ];
        for (c, input, want) in cases {
            assert_eq!(
                Phone::parse_in(input, c).map(|p| p.e164()).ok().as_deref(),
                Some(want),
                "{input} in {c:?}"
            );
        }
        // A UK national number means nothing to a US site, and the reverse.
        assert!(Phone::parse_in("07700 900123", Country::US).is_err());
        assert!(Phone::parse_in("212 555 0100", Country::GB).is_err());
        let e = Phone::parse_in("12", Country::FR).unwrap_err().to_string();
        assert!(e.contains("FR") && e.contains("+33"), "{e}");
    }

    #[test]
    fn caller_line_identity_per_trunk() {
        let uk = Phone::parse("+44 7700 900123").unwrap();
        let us = Phone::parse("+1 212 555 0100").unwrap();
        assert_eq!(uk.cli(CliFormat::E164, Country::GB), "+447700900123");
        assert_eq!(uk.cli(CliFormat::National, Country::GB), "07700900123");
        // Another country's number stays international.
        assert_eq!(us.cli(CliFormat::National, Country::GB), "+12125550100");
        assert_eq!(us.cli(CliFormat::National, Country::US), "2125550100");
        assert_eq!(
            Phone::parse_in("06 1234 5678", Country::IT)
                .unwrap()
                .cli(CliFormat::National, Country::IT),
            "0612345678"
        );
    }

    #[test]
    fn countries_are_read_by_their_iso_codes() {
        assert_eq!("gb".parse::<Country>(), Ok(Country::GB));
        assert_eq!(" US ".parse::<Country>(), Ok(Country::US));
        let e = "XX".parse::<Country>().unwrap_err();
        assert!(e.contains("XX") && e.contains("GB, IE"), "{e}");
        for c in Country::ALL {
            assert_eq!(c.code().parse::<Country>(), Ok(c));
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
