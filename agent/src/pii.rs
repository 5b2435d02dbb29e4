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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_the_value_but_is_stable() {
        let a = Pii("sip:+447700900123@10.0.0.1").to_string();
        assert!(!a.contains("7700900123") && !a.contains("10.0.0.1"), "{a}");
        assert_eq!(a, Pii("sip:+447700900123@10.0.0.1").to_string());
        assert_ne!(a, Pii("sip:+447700900124@10.0.0.1").to_string());
    }
}
