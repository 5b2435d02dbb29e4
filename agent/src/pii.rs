//! Redaction for logs: phone numbers, SIP user parts and IP addresses never
//! appear in logs at info level and above. Wrap them in [`Pii`]; its Display
//! shows only a short, stable fingerprint so one caller's lines can still be
//! followed through the log.

use std::fmt;

pub struct Pii<T>(pub T);

impl<T: AsRef<str>> fmt::Display for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // FNV-1a: stable across runs, not reversible from 16 bits.
        let mut h: u32 = 0x811c_9dc5;
        for b in self.0.as_ref().bytes() {
            h = (h ^ b as u32).wrapping_mul(0x0100_0193);
        }
        write!(f, "<redacted:{:04x}>", h & 0xffff)
    }
}

impl<T: AsRef<str>> fmt::Debug for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The last line of defence for logs at info and above: whatever a library
/// or an error message put in a line, IPv4 and IPv6 addresses and phone
/// numbers (a run of 7 or more digits, with or without `+`) come out as
/// `<ip>` and `<number>`. Tokens glued to letters (hex call ids, Rust
/// paths) are left alone, so ids stay greppable.
///
/// Any `&str` is fine, whatever it holds. Addresses, numbers and the words
/// that can glue onto them are ASCII only (`[A-Za-z0-9_]` is a word
/// character); every other character, accented letters, CJK, emoji,
/// combining marks and U+FFFD included, is a separator like a space. So
/// `café 07700900123` and `é07700900123` both lose the number (`é<number>`):
/// a digit run is only kept when an ASCII id glues it, and the privacy rule
/// wins over keeping a non-ASCII word whole. Non-ASCII characters are copied
/// through untouched; the line is only ever cut next to ASCII bytes, which
/// are always character boundaries.
pub fn redact(line: &str) -> std::borrow::Cow<'_, str> {
    let b = line.as_bytes();
    // ASCII only: the bytes of a multi-byte character (all >= 0x80) are
    // never word characters.
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let never = |_: u8| false;
    let mut v4 = Run::new(|c| c.is_ascii_digit() || c == b'.', |c| c == b'.');
    let mut v6 = Run::new(
        |c| c.is_ascii_hexdigit() || c == b':' || c == b'.',
        |c| c == b'.' || c == b':',
    );
    let mut digits = Run::new(|c| c.is_ascii_digit(), never);
    let mut plus_number = Run::new(|c| c.is_ascii_digit() || c == b'+', never);
    let mut pluses = Run::new(|c| c == b'+', never);
    let mut out = String::new();
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        // A token starts on an ASCII byte (never inside a multi-byte
        // character) that no word character precedes. Token characters are
        // ASCII too, so every offset sliced below is a character boundary.
        if !b[i].is_ascii() || (i > 0 && word(b[i - 1])) {
            i += 1;
            continue;
        }
        // A candidate token starts here: the longest run of address or
        // number characters, ending before a word character would glue on.
        let free = |j: usize| j >= b.len() || !word(b[j]);
        let (v6_end, v6_addr) = v6.from(b, i);
        let (v4_end, v4_addr) = v4.from(b, i);
        let (num_end, num_digits) = if b[i] == b'+' {
            (plus_number.from(b, i).0, pluses.from(b, i).0)
        } else {
            (digits.from(b, i).0, i)
        };
        let hit = if is_ipv6(&line[i..v6_addr]) && free(v6_end) {
            Some((v6_addr, "<ip>"))
        } else if is_ipv4(&line[i..v4_addr]) && free(v4_end) {
            Some((v4_addr, "<ip>"))
        } else if num_end - num_digits >= 7 && free(num_end) {
            Some((num_end, "<number>"))
        } else {
            None
        };
        match hit {
            Some((j, with)) => {
                out.push_str(&line[copied..i]);
                out.push_str(with);
                (i, copied) = (j, j);
            }
            None => i += 1,
        }
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(line);
    }
    out.push_str(&line[copied..]);
    std::borrow::Cow::Owned(out)
}

/// The longest run of one kind of token character from a start, and where
/// it ends once trailing separators are trimmed off. Every start inside a
/// run shares its end, so the last run is remembered: starts only move
/// forward, and each byte of a line is looked at once per kind, which keeps
/// [`redact`] linear even on a line of 64 KiB of dots or colons.
struct Run {
    ok: fn(u8) -> bool,
    trim: fn(u8) -> bool,
    start: usize,
    end: usize,
    kept: usize,
}

impl Run {
    fn new(ok: fn(u8) -> bool, trim: fn(u8) -> bool) -> Run {
        Run {
            ok,
            trim,
            start: 0,
            end: 0,
            kept: 0,
        }
    }

    /// (end of the run from `i`, end of it without trailing `trim` bytes).
    fn from(&mut self, b: &[u8], i: usize) -> (usize, usize) {
        if !(self.start..self.end).contains(&i) {
            let (mut j, mut kept) = (i, i);
            while j < b.len() && (self.ok)(b[j]) {
                if !(self.trim)(b[j]) {
                    kept = j + 1;
                }
                j += 1;
            }
            (self.start, self.end, self.kept) = (i, j, kept);
        }
        (self.end, self.kept.max(i))
    }
}

fn is_ipv4(t: &str) -> bool {
    // "255.255.255.255" is the longest; checking first keeps this O(1).
    if t.len() > 15 {
        return false;
    }
    let parts: Vec<&str> = t.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.parse::<u16>().is_ok_and(|v| v <= 255))
}

fn is_ipv6(t: &str) -> bool {
    // The longest is 45 characters ("ffff:…:ffff:255.255.255.255").
    if !(3..=45).contains(&t.len()) {
        return false;
    }
    // Clock times ("08:15:46") have two colons and no "::"; an address has
    // "::" or seven colons.
    let colons = t.matches(':').count();
    t.parse::<std::net::Ipv6Addr>().is_ok() && (t.contains("::") || colons == 7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_addresses_and_numbers_but_keep_ids_and_times() {
        let cases = [
            (
                "send failed to 203.0.113.7:5060: refused",
                "send failed to <ip>:5060: refused",
            ),
            (
                "From: <sip:+447700900123@10.0.0.1>;tag=1",
                "From: <sip:<number>@<ip>>;tag=1",
            ),
            ("peer [2001:db8::1]:5060 gone", "peer [<ip>]:5060 gone"),
            ("bound ::1 and fe80::1.", "bound <ip> and <ip>."),
            ("caller said 07700900123.", "caller said <number>."),
            (
                "2026-11-23T08:15:46.449196Z INFO",
                "2026-11-23T08:15:46.449196Z INFO",
            ),
            (
                "call=7ee55f2e9839923040b34e4b49576e63 duration_ms=1863",
                "call=7ee55f2e9839923040b34e4b49576e63 duration_ms=1863",
            ),
            (
                "handlet_agent::agent: ready version 1.2.3",
                "handlet_agent::agent: ready version 1.2.3",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(redact(line), want, "{line}");
        }
    }

    #[test]
    fn non_ascii_anywhere_is_kept_and_numbers_next_to_it_still_go() {
        let lossy = String::from_utf8_lossy(b"\xff07700900123 \xfe10.0.0.1\xc3").into_owned();
        let cases = [
            // The lines that took threads down.
            ("Subject: café ☕ 07700900123", "Subject: café ☕ <number>"),
            (
                "intent devis_réparation score=0.93",
                "intent devis_réparation score=0.93",
            ),
            (
                "From: \"Zoë Ångström\" <sip:+447700900123@10.0.0.1>;tag=1",
                "From: \"Zoë Ångström\" <sip:<number>@<ip>>;tag=1",
            ),
            // A non-ASCII character next to a token separates like a space.
            ("é07700900123", "é<number>"),
            ("07700900123é", "<number>é"),
            ("tél:+447700900123.", "tél:<number>."),
            ("é2001:db8::1é", "é<ip>é"),
            ("«203.0.113.7»", "«<ip>»"),
            // CJK, emoji (with a modifier and a joiner), combining marks.
            ("来电07700900123来自203.0.113.7", "来电<number>来自<ip>"),
            (
                "🦀+447700900123🦀 👍🏽 👩\u{200d}🔧",
                "🦀<number>🦀 👍🏽 👩\u{200d}🔧",
            ),
            ("cafe\u{301} 07700900123", "cafe\u{301} <number>"),
            ("e\u{301}07700900123\u{301}", "e\u{301}<number>\u{301}"),
            // Invalid UTF-8 made lossy: U+FFFD is just another character.
            (lossy.as_str(), "\u{fffd}<number> \u{fffd}<ip>\u{fffd}"),
            // Ids glued to ASCII letters stay, whatever surrounds them.
            (
                "é call=7ee55f2e9839923040b34e4b49576e63 ☕",
                "é call=7ee55f2e9839923040b34e4b49576e63 ☕",
            ),
            ("ẞx07700900123é", "ẞx07700900123é"),
            ("日本語のテキスト", "日本語のテキスト"),
            ("é", "é"),
            ("", ""),
        ];
        for (line, want) in cases {
            assert_eq!(redact(line), want, "{line:?}");
        }
        // Nothing to hide: the line is not copied.
        assert!(matches!(
            redact("ready — prêt ☕ v1.2.3"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    /// A maximal run of 7+ ASCII digits that no ASCII letter or `_` glues
    /// onto (a whole `[A-Za-z0-9_]` word of digits), if the text holds one.
    fn bare_number(s: &str) -> Option<&str> {
        s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .find(|w| w.len() >= 7 && w.bytes().all(|c| c.is_ascii_digit()))
    }

    #[test]
    fn bare_number_finds_only_unglued_runs() {
        assert_eq!(bare_number("é1234567é"), Some("1234567"));
        assert_eq!(bare_number("+1234567."), Some("1234567"));
        assert_eq!(bare_number("a1234567 1234567_ 123456"), None);
    }

    /// Property over many generated strings (deterministic; handlet-agent
    /// has no proptest): `redact` never panics, leaves no bare run of 7+
    /// digits, and copies every non-ASCII character through, in order.
    #[test]
    fn any_string_redacts_without_panic_or_bare_numbers() {
        const PIECES: &[&str] = &[
            "0",
            "1",
            "7",
            "9",
            "00",
            "0770090",
            "+",
            "+44",
            ".",
            ":",
            "::",
            "a",
            "f",
            "x",
            "Z",
            "_",
            " ",
            "-",
            "@",
            "[",
            "]",
            "<",
            ">",
            "\"",
            "=",
            ";",
            "é",
            "Å",
            "ë",
            "ß",
            "☕",
            "中",
            "文",
            "🦀",
            "👍🏽",
            "\u{301}",
            "\u{fffd}",
            "\u{200d}",
            "\u{7f}",
            "\u{80}",
            "\u{7ff}",
            "\u{800}",
            "\u{ffff}",
            "\u{10000}",
            "\t",
            "\n",
            "\0",
            "10.0.0.1",
            "2001:db8::1",
            "fe80::",
            "255.255.255.255",
            "07700900123",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..40_000 {
            let len = (next() % 48) as usize;
            let line = if case % 3 == 2 {
                // Random bytes, made lossy the way the writer does.
                let bytes: Vec<u8> = (0..len * 2).map(|_| next() as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                let mut s = String::new();
                for _ in 0..len {
                    let r = next();
                    if r % 8 == 0 {
                        // Any character at all.
                        s.extend(char::from_u32((r >> 8) as u32 % 0x11_0000));
                    } else {
                        s.push_str(PIECES[(r >> 8) as usize % PIECES.len()]);
                    }
                }
                s
            };
            let out = redact(&line);
            assert_eq!(bare_number(&out), None, "{line:?} -> {out:?}");
            let non_ascii = |s: &str| s.chars().filter(|c| !c.is_ascii()).collect::<String>();
            assert_eq!(non_ascii(&out), non_ascii(&line), "{line:?} -> {out:?}");
        }
    }

    /// Every start inside a run of dots or colons used to rescan the run:
    /// a 64 KiB datagram logged at info took seconds per line.
    #[test]
    fn long_runs_of_separators_take_linear_time() {
        let lines = [
            ".".repeat(65_536),
            ":".repeat(65_536),
            "+".repeat(65_536),
            "1.".repeat(32_768),
            "a:".repeat(32_768),
            "1+".repeat(32_768),
            "é.".repeat(21_845),
        ];
        let t = std::time::Instant::now();
        for line in &lines {
            assert_eq!(bare_number(&redact(line)), None);
        }
        // Linear is about a millisecond; quadratic was 3 to 12 s per line.
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn hides_the_value_but_is_stable() {
        let a = Pii("sip:+447700900123@10.0.0.1").to_string();
        assert!(!a.contains("7700900123") && !a.contains("10.0.0.1"), "{a}");
        assert_eq!(a, Pii("sip:+447700900123@10.0.0.1").to_string());
        assert_ne!(a, Pii("sip:+447700900124@10.0.0.1").to_string());
    }
}
