//! The log writer: every formatted line at info and above goes through
//! [`pii::redact`] on its way to stderr (journald), so no phone number or IP
//! address reaches the log, even inside a library's error message. Debug and
//! trace, for a technician at the box, are written as they are.
//!
//! It runs inside whichever thread logged (rsipstack's receive tasks, the
//! transcription thread), and tracing-subscriber keeps the line in a
//! thread-local buffer that a panic leaves uncleared, so a failing scrubber
//! would take that thread down and poison its next line too. Here it cannot:
//! redaction runs under `catch_unwind`, a failure writes the fixed
//! [`DROPPED`] line instead (never the raw text), and the panic message,
//! which would quote the raw line, is kept off stderr.
//!
//! tracing-subscriber's `MakeWriter` lives with the subscriber in the binary;
//! it hands out a [`Scrub`] per event.

use crate::pii;
use std::borrow::Cow;
use std::cell::Cell;
use std::io::{self, Write};

/// What is written instead of a line the scrubber failed on.
pub const DROPPED: &str = "<log line dropped: scrubber failed>";

/// Whether lines at `level` are redacted: info and above are.
pub fn redacts(level: &tracing::Level) -> bool {
    // Levels order by verbosity: ERROR < WARN < INFO < DEBUG < TRACE.
    *level <= tracing::Level::INFO
}

/// Colour only on a terminal: under systemd, stderr is the journal and
/// escape codes would land in it as text.
pub fn colour() -> bool {
    io::IsTerminal::is_terminal(&io::stderr())
}

/// One formatted line, as it may be written: lossy UTF-8, redacted if
/// `redact`. Never panics; if redaction fails the line is [`DROPPED`].
/// SRTP keys (SDES `inline:` parameters, which rsipstack logs with whole
/// messages at info) are hidden at every level, debug included: they are
/// nobody's business, a technician's neither.
pub fn scrub(line: &[u8], redact: bool) -> Cow<'_, str> {
    let text = scrub_with(line, redact, pii::redact);
    match hide_keys(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(s) => Cow::Owned(s),
    }
}

/// `inline:<base64 key>` → `inline:<key>`.
pub fn hide_keys(text: &str) -> Cow<'_, str> {
    const MARK: &str = "inline:";
    if !text.contains(MARK) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(MARK) {
        let after = &rest[i + MARK.len()..];
        let key_len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            .count();
        out.push_str(&rest[..i + MARK.len()]);
        if key_len > 0 {
            out.push_str("<key>");
        }
        rest = &after[key_len..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn scrub_with<'a>(
    line: &'a [u8],
    redact: bool,
    redactor: impl FnOnce(&str) -> Cow<'_, str>,
) -> Cow<'a, str> {
    let text = String::from_utf8_lossy(line);
    if !redact {
        return text;
    }
    quiet_panics_while_scrubbing();
    SCRUBBING.with(|s| s.set(true));
    let redacted =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match redactor(&text) {
            Cow::Borrowed(_) => None,
            Cow::Owned(s) => Some(s),
        }));
    SCRUBBING.with(|s| s.set(false));
    match redacted {
        Ok(None) => text,
        Ok(Some(s)) => Cow::Owned(s),
        Err(_) => {
            let end = if text.ends_with('\n') { "\n" } else { "" };
            Cow::Owned(format!("{DROPPED}{end}"))
        }
    }
}

thread_local! {
    /// Set while this thread runs the redactor.
    static SCRUBBING: Cell<bool> = const { Cell::new(false) };
}

/// Wrap the panic hook, once, so a panic inside the redactor prints
/// nothing: its message quotes the line (`… of `<the raw line>``), which
/// is exactly what must not reach the log. Every other panic goes to the
/// hook that was there before.
fn quiet_panics_while_scrubbing() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    // The hook cannot be changed from a panicking thread; a later line will.
    if HOOK.is_completed() || std::thread::panicking() {
        return;
    }
    HOOK.call_once(|| {
        let next = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !SCRUBBING.try_with(Cell::get).unwrap_or(false) {
                next(info);
            }
        }));
    });
}

/// A writer for one log line: it collects what the formatter writes and,
/// when dropped, writes the line scrubbed (see [`scrub`]) to `out` in one
/// call. The buffer is always emptied, whatever happens.
pub struct Scrub<W: Write = io::Stderr> {
    line: Vec<u8>,
    redact: bool,
    out: W,
}

impl Scrub {
    /// For an event at `level`, to stderr.
    pub fn stderr_for(level: &tracing::Level) -> Scrub {
        Scrub::new(io::stderr(), redacts(level))
    }

    /// When the level is not known: redacted, to stderr.
    pub fn stderr() -> Scrub {
        Scrub::new(io::stderr(), true)
    }
}

impl<W: Write> Scrub<W> {
    pub fn new(out: W, redact: bool) -> Scrub<W> {
        Scrub {
            line: Vec::new(),
            redact,
            out,
        }
    }
}

impl<W: Write> Write for Scrub<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for Scrub<W> {
    fn drop(&mut self) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            return;
        }
        let text = scrub(&line, self.redact);
        // Stderr locks once for the whole line, so lines from threads
        // logging at once do not interleave.
        let _ = self.out.write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn srtp_keys_are_hidden_at_every_level() {
        let line = b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20\r\na=crypto:2 X inline:abc+/=\n";
        for redact in [true, false] {
            let out = scrub(line, redact);
            assert!(
                !out.contains("PS1uQCVee") && !out.contains("abc+/="),
                "{out}"
            );
            assert_eq!(out.matches("inline:<key>").count(), 2, "{out}");
            assert!(out.contains("|2^20"), "{out}");
        }
        assert!(matches!(hide_keys("no keys here"), Cow::Borrowed(_)));
        assert_eq!(hide_keys("inline:"), "inline:");
    }

    use super::*;
    use tracing::Level;

    fn written(redact: bool, parts: &[&[u8]]) -> String {
        let mut out = Vec::new();
        {
            let mut w = Scrub::new(&mut out, redact);
            for p in parts {
                w.write_all(p).unwrap();
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn info_and_above_are_redacted_debug_and_trace_are_not() {
        assert!(redacts(&Level::ERROR) && redacts(&Level::WARN) && redacts(&Level::INFO));
        assert!(!redacts(&Level::DEBUG) && !redacts(&Level::TRACE));
        let line = "INFO udp received raw_message=\"OPTIONS sip:+447700900123@10.0.0.1\"\n";
        assert_eq!(
            written(true, &[line.as_bytes()]),
            "INFO udp received raw_message=\"OPTIONS sip:<number>@<ip>\"\n"
        );
        assert_eq!(written(false, &[line.as_bytes()]), line);
    }

    #[test]
    fn non_ascii_lines_are_written_whole_even_split_inside_a_character() {
        // The formatter may write a line in pieces; "é" and "☕" are cut here.
        let line = "INFO Subject: café ☕ from Zoë Ångström 07700900123\n".as_bytes();
        let at = line.iter().position(|&c| c == 0xc3).unwrap() + 1;
        let cup = line.iter().position(|&c| c == 0xe2).unwrap() + 2;
        let parts: [&[u8]; 3] = [&line[..at], &line[at..cup], &line[cup..]];
        assert_eq!(
            written(true, &parts),
            "INFO Subject: café ☕ from Zoë Ångström <number>\n"
        );
        assert_eq!(
            written(true, &[b"intent devis_r\xc3\xa9paration\n"]),
            "intent devis_réparation\n"
        );
    }

    #[test]
    fn invalid_utf8_is_written_lossy_and_still_redacted() {
        assert_eq!(
            written(true, &[b"caller \xff07700900123 at \xc310.0.0.1\n"]),
            "caller \u{fffd}<number> at \u{fffd}<ip>\n"
        );
        assert_eq!(written(false, &[b"raw \xff\n"]), "raw \u{fffd}\n");
    }

    #[test]
    fn a_failing_redactor_drops_the_line_not_the_thread() {
        let line = b"INFO From: <sip:+447700900123@10.0.0.1>\n";
        let out = scrub_with(line, true, |l| panic!("cannot redact {l}"));
        assert_eq!(out, format!("{DROPPED}\n"));
        assert!(!SCRUBBING.with(Cell::get), "flag left set after a panic");
        // The same thread goes on logging, and redacting.
        assert_eq!(scrub(line, true), "INFO From: <sip:<number>@<ip>>\n");
        // No trailing newline in, none out.
        assert_eq!(
            scrub_with(b"x", true, |_| -> Cow<'_, str> { panic!() }),
            DROPPED
        );
        // Debug lines never run the redactor at all.
        assert_eq!(
            scrub_with(line, false, |_| -> Cow<'_, str> { panic!() }),
            String::from_utf8_lossy(line)
        );
    }
}
