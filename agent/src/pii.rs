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
pub fn redact(line: &str) -> std::borrow::Cow<'_, str> {
    let b = line.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = String::new();
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        if i > 0 && word(b[i - 1]) {
            i += 1;
            continue;
        }
        // A candidate token starts here: the longest run of address or
        // number characters, ending before a word character would glue on.
        let end = |ok: &dyn Fn(u8) -> bool| {
            let mut j = i;
            while j < b.len() && ok(b[j]) {
                j += 1;
            }
            j
        };
        let hit = {
            let v4 = end(&|c| c.is_ascii_digit() || c == b'.');
            let v6 = end(&|c| c.is_ascii_hexdigit() || c == b':' || c == b'.');
            let num = if b[i] == b'+' {
                end(&|c| c.is_ascii_digit() || c == b'+')
            } else {
                end(&|c| c.is_ascii_digit())
            };
            let free = |j: usize| j >= b.len() || !word(b[j]);
            let t = |j: usize| &line[i..j];
            let v6_addr = t(v6).trim_end_matches(['.', ':']);
            if is_ipv6(v6_addr) && free(v6) {
                Some((i + v6_addr.len(), "<ip>"))
            } else if is_ipv4(t(v4).trim_end_matches('.')) && free(v4) {
                Some((i + t(v4).trim_end_matches('.').len(), "<ip>"))
            } else if t(num).trim_start_matches('+').len() >= 7 && free(num) {
                Some((num, "<number>"))
            } else {
                None
            }
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

fn is_ipv4(t: &str) -> bool {
    let parts: Vec<&str> = t.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.parse::<u16>().is_ok_and(|v| v <= 255))
}

fn is_ipv6(t: &str) -> bool {
    // Clock times ("08:15:46") have two colons and no "::"; an address has
    // "::" or seven colons.
    let colons = t.matches(':').count();
    t.parse::<std::net::Ipv6Addr>().is_ok() && (t.contains("::") || colons == 7) && t.len() > 2
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
    fn hides_the_value_but_is_stable() {
        let a = Pii("sip:+447700900123@10.0.0.1").to_string();
        assert!(!a.contains("7700900123") && !a.contains("10.0.0.1"), "{a}");
        assert_eq!(a, Pii("sip:+447700900123@10.0.0.1").to_string());
        assert_ne!(a, Pii("sip:+447700900124@10.0.0.1").to_string());
    }
}
