//! RFC 4733 telephone-events (DTMF digits sent as RTP packets).
//!
//! Payload: event (8 bits) | E (1) | R (1) | volume (6) | duration (16).
//! A sender repeats packets with the same RTP timestamp while the key is held,
//! growing `duration`, and sends the final (E=1) packet three times. The
//! [`Receiver`] reports each digit once, whether or not its end packets arrive.

/// One parsed telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// 0–9, 10 = '*', 11 = '#', 12–15 = A–D; 16 = flash.
    pub code: u8,
    pub end: bool,
    /// Power level, 0 to -63 dBm0, as a positive number.
    pub volume: u8,
    /// In timestamp units (1/8000 s for 8 kHz).
    pub duration: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("telephone-event payload shorter than 4 bytes")]
    Short,
}

impl Event {
    pub fn parse(payload: &[u8]) -> Result<Event, EventError> {
        if payload.len() < 4 {
            return Err(EventError::Short);
        }
        Ok(Event {
            code: payload[0],
            end: payload[1] & 0x80 != 0,
            volume: payload[1] & 0x3F,
            duration: u16::from_be_bytes([payload[2], payload[3]]),
        })
    }

    pub fn write(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.code,
            (self.end as u8) << 7 | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }

    /// The key for a DTMF event code.
    pub fn digit(&self) -> Option<char> {
        digit_of(self.code)
    }
}

pub fn digit_of(code: u8) -> Option<char> {
    Some(match code {
        0..=9 => (b'0' + code) as char,
        10 => '*',
        11 => '#',
        12..=15 => (b'A' + code - 12) as char,
        _ => return None,
    })
}

pub fn code_of(digit: char) -> Option<u8> {
    Some(match digit {
        '0'..='9' => digit as u8 - b'0',
        '*' => 10,
        '#' => 11,
        'A'..='D' => digit as u8 - b'A' + 12,
        _ => return None,
    })
}

/// A digit the caller pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digit {
    pub digit: char,
    /// RTP timestamp of the event's start.
    pub timestamp: u32,
    /// How long it was held, in timestamp units (as last reported).
    pub duration: u16,
}

/// Turns the packet stream into digits, each reported once.
#[derive(Debug, Default)]
pub struct Receiver {
    current: Option<Current>,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    timestamp: u32,
    digit: char,
    duration: u16,
    reported: bool,
}

/// An event whose end packets were all lost still counts if held this long
/// (40 ms at 8 kHz), the shortest digit Q.24 requires receivers to accept.
const MIN_UNENDED: u16 = 320;

impl Receiver {
    /// Feed one telephone-event packet (RTP timestamp + payload).
    pub fn push(&mut self, timestamp: u32, payload: &[u8]) -> Option<Digit> {
        let ev = Event::parse(payload).ok()?;
        let digit = ev.digit()?;
        if let Some(cur) = self.current.as_mut().filter(|c| c.timestamp == timestamp) {
            cur.duration = cur.duration.max(ev.duration);
            if ev.end && !cur.reported {
                cur.reported = true;
                return Some(Digit {
                    digit,
                    timestamp,
                    duration: ev.duration,
                });
            }
            return None;
        }
        // A new event: the previous one, if its end never came, is reported now.
        let previous = self.finish();
        self.current = Some(Current {
            timestamp,
            digit,
            duration: ev.duration,
            reported: false,
        });
        if previous.is_some() {
            // The new event's end packets (sent three times) will report it.
            return previous;
        }
        if ev.end {
            if let Some(c) = self.current.as_mut() {
                c.reported = true;
            }
            return Some(Digit {
                digit,
                timestamp,
                duration: ev.duration,
            });
        }
        None
    }

    /// End of stream: an event still in progress, if long enough.
    pub fn finish(&mut self) -> Option<Digit> {
        let cur = self.current.take()?;
        (!cur.reported && cur.duration >= MIN_UNENDED).then_some(Digit {
            digit: cur.digit,
            timestamp: cur.timestamp,
            duration: cur.duration,
        })
    }
}

/// Packets (payloads with their marker bit) that send `digit` for
/// `duration` samples, one every `step` samples, ending with three end packets.
pub fn generate(digit: char, duration: u16, step: u16, volume: u8) -> Vec<(bool, [u8; 4])> {
    let Some(code) = code_of(digit) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut d = step.min(duration);
    loop {
        out.push((
            out.is_empty(),
            Event {
                code,
                end: false,
                volume,
                duration: d,
            }
            .write(),
        ));
        if d >= duration {
            break;
        }
        d = d.saturating_add(step).min(duration);
    }
    for _ in 0..3 {
        out.push((
            false,
            Event {
                code,
                end: true,
                volume,
                duration,
            }
            .write(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4733_example_payload() {
        // Digit 5, end bit, volume 10, duration 800 (100 ms).
        let e = Event::parse(&[5, 0x8A, 0x03, 0x20]).unwrap();
        assert_eq!(
            e,
            Event {
                code: 5,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(e.write(), [5, 0x8A, 0x03, 0x20]);
        assert_eq!(e.digit(), Some('5'));
    }

    #[test]
    fn each_digit_reported_once_despite_retransmitted_ends() {
        let mut r = Receiver::default();
        let mut got = Vec::new();
        for (i, d) in "123#".chars().enumerate() {
            for (_, p) in generate(d, 800, 160, 10) {
                got.extend(r.push(i as u32 * 8000, &p));
            }
        }
        let digits: String = got.iter().map(|d| d.digit).collect();
        assert_eq!(digits, "123#");
        assert!(got.iter().all(|d| d.duration == 800));
    }

    #[test]
    fn lost_end_packets_still_report_the_digit() {
        let mut r = Receiver::default();
        // '7' whose end packets are all lost, then '8' in full.
        for (_, p) in generate('7', 800, 160, 10)
            .iter()
            .filter(|(_, p)| p[1] & 0x80 == 0)
        {
            assert_eq!(r.push(100, p), None);
        }
        let mut got = Vec::new();
        for (_, p) in generate('8', 800, 160, 10) {
            got.extend(r.push(9000, &p));
        }
        let digits: String = got.iter().map(|d| d.digit).collect();
        assert_eq!(digits, "78");
        // A blip shorter than 40 ms with no end is not a digit.
        for (_, p) in generate('9', 160, 160, 10)
            .iter()
            .filter(|(_, p)| p[1] & 0x80 == 0)
        {
            r.push(20000, p);
        }
        assert_eq!(r.finish(), None);
    }

    #[test]
    fn garbage_is_ignored() {
        let mut r = Receiver::default();
        assert_eq!(r.push(0, &[1, 2]), None);
        assert_eq!(r.push(0, &[200, 0x80, 0, 0]), None);
        for b in 0..=255u8 {
            let _ = r.push(b as u32, &[b, b, b, b]);
        }
    }
}
