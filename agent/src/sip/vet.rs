//! Raw SIP messages vetted before rsipstack parses them: pure, no I/O.
//!
//! rsipstack 0.7.14 accepts what RFC 3261 tells a UAS to refuse (a
//! `SIP/7.0` request is answered `SIP/7.0 200 OK`; duplicated Call-ID,
//! CSeq or Content-Length, a CSeq naming another method, an unknown
//! `Require` or URI scheme are all served) and drops without an answer
//! what deserves one (a missing mandatory header, an unknown method, a From
//! without a tag). This module looks at the bytes first and decides:
//! pass it on, answer it here with the right status, or drop it (nothing
//! to answer to: no Via, not SIP at all). Responses and keepalives pass.
//!
//! It reads only the start line and headers, bounded by [`MAX_MESSAGE`];
//! it never allocates more than the message's header count and never
//! panics on any input (fuzzed: `fuzz/fuzz_targets/sip_vet.rs`).

/// A message larger than this is answered 513 (or dropped if we cannot).
/// rsipstack's own UDP buffer is 8 KB and its stream framing 64 KB; a real
/// INVITE is 1–3 KB.
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Header lines at most.
const MAX_HEADERS: usize = 128;

/// Methods the agent knows (RFC 3261 and the extensions phones send). A
/// request with another method gets 501.
const KNOWN_METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "UPDATE",
    "PRACK",
    "REFER",
    "NOTIFY",
    "SUBSCRIBE",
    "MESSAGE",
    "PUBLISH",
];

/// Option tags the agent supports in `Require` (none yet).
const SUPPORTED_OPTIONS: &[&str] = &[];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to rsipstack.
    Pass,
    /// Answer here with this response (already formatted) and drop it.
    Respond(String),
    /// Drop it silently.
    Drop(&'static str),
}

/// One header line, split.
struct Header<'a> {
    /// Canonical long name, lower case (compact forms expanded).
    name: String,
    value: &'a str,
}

fn long_name(n: &str) -> String {
    let l = n.trim().to_ascii_lowercase();
    match l.as_str() {
        "i" => "call-id".into(),
        "m" => "contact".into(),
        "e" => "content-encoding".into(),
        "l" => "content-length".into(),
        "c" => "content-type".into(),
        "f" => "from".into(),
        "s" => "subject".into(),
        "k" => "supported".into(),
        "t" => "to".into(),
        "v" => "via".into(),
        _ => l,
    }
}

/// Headers that may appear once only (RFC 3261 §7.3.1 lists which may be
/// combined; these may not).
const SINGLE: &[&str] = &[
    "call-id",
    "cseq",
    "from",
    "to",
    "content-length",
    "content-type",
    "max-forwards",
];

/// Header lines with folded continuation lines (RFC 3261 §7.3.1) joined
/// to the line they continue.
fn unfold(block: &str) -> String {
    block.replace("\r\n ", " ").replace("\r\n\t", " ")
}

/// Split an unfolded header block into headers.
fn header_lines(block: &str) -> Option<Vec<Header<'_>>> {
    let mut out: Vec<Header<'_>> = Vec::new();
    for line in block.split("\r\n") {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':')?;
        if name.trim().is_empty() || name.trim().contains(' ') {
            return None;
        }
        out.push(Header {
            name: long_name(name),
            value: value.trim(),
        });
        if out.len() > MAX_HEADERS {
            return None;
        }
    }
    Some(out)
}

/// Vet one message as received (a datagram, or one framed TCP message).
pub fn vet(raw: &[u8]) -> Verdict {
    // Keepalives (RFC 5626 CRLF) and empty datagrams are rsipstack's.
    if raw.iter().all(|b| b.is_ascii_whitespace()) {
        return Verdict::Pass;
    }
    if raw.starts_with(b"SIP/") {
        return Verdict::Pass; // a response: rsipstack matches it
    }
    // A message without the empty line that ends its headers is cut short
    // (a truncated datagram): there is no request to answer.
    let Some(head_end) = find(raw, b"\r\n\r\n") else {
        return Verdict::Drop("no end of headers");
    };
    let head = &raw[..head_end];
    let Ok(head) = std::str::from_utf8(head) else {
        return answer_or_drop(raw, 400, "Bad Request: header not UTF-8", &[]);
    };
    let Some((start, rest)) = head.split_once("\r\n") else {
        return Verdict::Drop("no header");
    };
    let mut parts = start.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Verdict::Drop("not a SIP request line");
    };
    if !method.bytes().all(|b| b.is_ascii_alphabetic()) || method.is_empty() {
        return Verdict::Drop("not a SIP request line");
    }
    if !version.starts_with("SIP/") {
        return Verdict::Drop("not SIP");
    }
    let rest = unfold(rest);
    let Some(headers) = header_lines(&rest) else {
        return answer_or_drop(raw, 400, "Bad Request: malformed header", &[]);
    };
    let count = |n: &str| headers.iter().filter(|h| h.name == n).count();
    let value = |n: &str| headers.iter().find(|h| h.name == n).map(|h| h.value);
    if count("via") == 0 {
        return Verdict::Drop("no Via: nowhere to answer");
    }
    let Some(r) = Request::from_headers(&headers) else {
        return Verdict::Drop("no Via: nowhere to answer");
    };
    let respond = |code: u16, reason: &str, extra: &[(&str, String)]| {
        Verdict::Respond(r.response(code, reason, extra))
    };
    if raw.len() > MAX_MESSAGE {
        return respond(513, "Message Too Large", &[]);
    }
    if version != "SIP/2.0" {
        return respond(505, "Version Not Supported", &[]);
    }
    for h in SINGLE {
        if count(h) > 1 {
            return respond(400, &format!("Bad Request: more than one {h}"), &[]);
        }
    }
    for h in ["call-id", "cseq", "from", "to"] {
        if count(h) == 0 {
            return respond(400, &format!("Bad Request: missing {h}"), &[]);
        }
    }
    let from = value("from").unwrap_or("");
    if !has_param(from, "tag") {
        return respond(400, "Bad Request: From has no tag", &[]);
    }
    let cseq = value("cseq").unwrap_or("");
    let mut cs = cseq.split_whitespace();
    let (Some(num), Some(cs_method), None) = (cs.next(), cs.next(), cs.next()) else {
        return respond(400, "Bad Request: malformed CSeq", &[]);
    };
    if num.parse::<u32>().is_err() {
        return respond(400, "Bad Request: malformed CSeq", &[]);
    }
    if cs_method != method {
        return respond(400, "Bad Request: CSeq method does not match", &[]);
    }
    if !KNOWN_METHODS.contains(&method) {
        return respond(
            501,
            "Not Implemented",
            &[(
                "Allow",
                "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE".into(),
            )],
        );
    }
    let body_len = raw.len() - (head_end + 4);
    match value("content-length").map(|v| v.parse::<usize>()) {
        Some(Ok(n)) if n > body_len => {
            return respond(400, "Bad Request: Content-Length larger than the body", &[]);
        }
        Some(Err(_)) => return respond(400, "Bad Request: malformed Content-Length", &[]),
        _ => {}
    }
    let scheme = uri.split(':').next().unwrap_or("").to_ascii_lowercase();
    if !uri.contains(':') || !["sip", "sips", "tel"].contains(&scheme.as_str()) {
        return respond(416, "Unsupported URI Scheme", &[]);
    }
    if method != "ACK" && method != "CANCEL" {
        let unsupported: Vec<&str> = headers
            .iter()
            .filter(|h| h.name == "require")
            .flat_map(|h| h.value.split(','))
            .map(str::trim)
            .filter(|o| !o.is_empty() && !SUPPORTED_OPTIONS.contains(o))
            .collect();
        if !unsupported.is_empty() {
            return respond(
                420,
                "Bad Extension",
                &[("Unsupported", unsupported.join(", "))],
            );
        }
    }
    if method == "INVITE" && body_len > 0 {
        let ct = value("content-type").unwrap_or("").to_ascii_lowercase();
        let media = ct.split(';').next().unwrap_or("").trim().to_string();
        if media != "application/sdp" {
            return respond(
                415,
                "Unsupported Media Type",
                &[("Accept", "application/sdp".into())],
            );
        }
    }
    Verdict::Pass
}

/// The parts of a request a response copies.
struct Request {
    vias: Vec<String>,
    from: String,
    to: String,
    call_id: String,
    cseq: String,
}

impl Request {
    fn from_headers(h: &[Header<'_>]) -> Option<Request> {
        let get = |n: &str| {
            h.iter()
                .find(|x| x.name == n)
                .map(|x| x.value.to_string())
                .unwrap_or_default()
        };
        let vias: Vec<String> = h
            .iter()
            .filter(|x| x.name == "via")
            .map(|x| x.value.to_string())
            .collect();
        // The top Via must name where it was sent from, or there is
        // nowhere to answer.
        if vias
            .first()
            .is_none_or(|v| v.split_whitespace().nth(1).is_none())
        {
            return None;
        }
        Some(Request {
            vias,
            from: get("from"),
            to: get("to"),
            call_id: get("call-id"),
            cseq: get("cseq"),
        })
    }

    fn response(&self, code: u16, reason: &str, extra: &[(&str, String)]) -> String {
        // Reason phrases are ours and ASCII; header values are echoed.
        let mut s = format!("SIP/2.0 {code} {reason}\r\n");
        for v in &self.vias {
            s.push_str(&format!("Via: {v}\r\n"));
        }
        s.push_str(&format!("From: {}\r\n", self.from));
        let to = if has_param(&self.to, "tag") || self.to.is_empty() {
            self.to.clone()
        } else {
            format!("{};tag={:08x}", self.to, rand::random::<u32>())
        };
        s.push_str(&format!("To: {to}\r\n"));
        s.push_str(&format!("Call-ID: {}\r\n", self.call_id));
        s.push_str(&format!("CSeq: {}\r\n", self.cseq));
        for (k, v) in extra {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("Server: handlet\r\nContent-Length: 0\r\n\r\n");
        s
    }
}

/// When the header is not even text, answer only if a Via can be found in
/// the readable part before the bad bytes; else drop.
fn answer_or_drop(raw: &[u8], code: u16, reason: &str, extra: &[(&str, String)]) -> Verdict {
    let valid = match std::str::from_utf8(raw) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&raw[..e.valid_up_to()]).unwrap_or(""),
    };
    let Some((_, rest)) = valid.split_once("\r\n") else {
        return Verdict::Drop("unreadable");
    };
    // Only whole lines before the bad bytes.
    let rest = match rest.rfind("\r\n") {
        Some(i) => &rest[..i],
        None => return Verdict::Drop("unreadable"),
    };
    let rest = unfold(rest);
    let Some(headers) = header_lines(&rest) else {
        return Verdict::Drop("unreadable");
    };
    let need = ["via", "from", "to", "call-id", "cseq"];
    if !need.iter().all(|n| headers.iter().any(|h| h.name == *n)) {
        return Verdict::Drop("unreadable");
    }
    match Request::from_headers(&headers) {
        Some(r) => Verdict::Respond(r.response(code, reason, extra)),
        None => Verdict::Drop("unreadable"),
    }
}

fn has_param(header_value: &str, param: &str) -> bool {
    // Parameters follow the closing '>' of a name-addr, or the URI itself.
    let params = match header_value.rfind('>') {
        Some(i) => &header_value[i + 1..],
        None => header_value,
    };
    params.split(';').skip(1).any(|p| {
        p.split('=')
            .next()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case(param))
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status code of a verdict's response.
    fn status_of(v: &Verdict) -> Option<u16> {
        match v {
            Verdict::Respond(r) => r.get(8..11).and_then(|c| c.parse().ok()),
            _ => None,
        }
    }

    fn msg(start: &str, headers: &[&str], body: &str) -> Vec<u8> {
        let mut s = format!("{start}\r\n");
        for h in headers {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.push_str(body);
        s.into_bytes()
    }

    const VIA: &str = "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport";
    const FROM: &str = "From: \"Zoë\" <sip:a@192.0.2.1>;tag=x1";
    const TO: &str = "To: <sip:handlet@192.0.2.9>";
    const CALLID: &str = "Call-ID: c1@192.0.2.1";

    fn options(extra: &[&str]) -> Vec<u8> {
        let mut h = vec![VIA, FROM, TO, CALLID, "CSeq: 1 OPTIONS", "Max-Forwards: 70"];
        h.extend_from_slice(extra);
        h.push("Content-Length: 0");
        msg("OPTIONS sip:handlet@192.0.2.9 SIP/2.0", &h, "")
    }

    fn code(raw: &[u8]) -> Option<u16> {
        status_of(&vet(raw))
    }

    #[test]
    fn well_formed_requests_pass() {
        assert_eq!(vet(&options(&[])), Verdict::Pass);
        assert_eq!(
            vet(&options(&["Subject: café ☕", "X-Whatever: 1"])),
            Verdict::Pass
        );
        // Compact forms and folding.
        let compact = msg(
            "OPTIONS sip:handlet@192.0.2.9 SIP/2.0",
            &[
                "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
                "f: <sip:a@b>;tag=1",
                "t: <sip:c@d>",
                "i: x",
                "CSeq: 2 OPTIONS",
                "Subject: one",
                " two",
                "l: 0",
            ],
            "",
        );
        assert_eq!(vet(&compact), Verdict::Pass);
        // Folded values count: the tag and the CSeq method on their own lines.
        let folded = msg(
            "OPTIONS sip:handlet@192.0.2.9 SIP/2.0",
            &[
                VIA,
                "From: \"A\"",
                "   <sip:a@b>",
                " ;tag=1",
                TO,
                CALLID,
                "CSeq: 1",
                "\tOPTIONS",
                "l: 0",
            ],
            "",
        );
        assert_eq!(vet(&folded), Verdict::Pass);
        assert_eq!(vet(b"\r\n\r\n"), Verdict::Pass);
        assert_eq!(vet(b"SIP/2.0 200 OK\r\n\r\n"), Verdict::Pass);
    }

    #[test]
    fn what_rfc_3261_refuses_gets_its_status() {
        let v7 = String::from_utf8(options(&[]))
            .unwrap()
            .replacen("SIP/2.0\r\n", "SIP/7.0\r\n", 1);
        assert_eq!(code(v7.as_bytes()), Some(505));
        let foobar = String::from_utf8(options(&[]))
            .unwrap()
            .replace("OPTIONS", "FOOBAR");
        assert_eq!(code(foobar.as_bytes()), Some(501));
        let lower = String::from_utf8(options(&[]))
            .unwrap()
            .replace("OPTIONS", "options");
        assert_eq!(code(lower.as_bytes()), Some(501));
        let scheme = String::from_utf8(options(&[]))
            .unwrap()
            .replace("OPTIONS sip:handlet", "OPTIONS foo:handlet");
        assert_eq!(code(scheme.as_bytes()), Some(416));
        let r = vet(&options(&["Require: com.example.nothere"]));
        assert_eq!(status_of(&r), Some(420));
        assert!(
            matches!(&r, Verdict::Respond(t) if t.contains("Unsupported: com.example.nothere"))
        );
        assert_eq!(code(&options(&["Call-ID: second"])), Some(400));
        assert_eq!(code(&options(&["CSeq: 9 OPTIONS"])), Some(400));
        assert_eq!(code(&options(&["t: <sip:x@y>"])), Some(400));
        let mismatch = String::from_utf8(options(&[]))
            .unwrap()
            .replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
        assert_eq!(code(mismatch.as_bytes()), Some(400));
        let no_tag = String::from_utf8(options(&[]))
            .unwrap()
            .replace(";tag=x1", "");
        assert_eq!(code(no_tag.as_bytes()), Some(400));
        let no_callid = String::from_utf8(options(&[]))
            .unwrap()
            .replace("Call-ID: c1@192.0.2.1\r\n", "");
        assert_eq!(code(no_callid.as_bytes()), Some(400));
        let long_cl = String::from_utf8(options(&[]))
            .unwrap()
            .replace("Content-Length: 0", "Content-Length: 50");
        assert_eq!(code(long_cl.as_bytes()), Some(400));
        let invite = msg(
            "INVITE sip:handlet@192.0.2.9 SIP/2.0",
            &[
                VIA,
                FROM,
                TO,
                CALLID,
                "CSeq: 1 INVITE",
                "Content-Type: application/foo",
                "Content-Length: 3",
            ],
            "abc",
        );
        let r = vet(&invite);
        assert_eq!(status_of(&r), Some(415));
        assert!(matches!(&r, Verdict::Respond(t) if t.contains("Accept: application/sdp")));
        let huge = options(&[&format!("X-Pad: {}", "a".repeat(MAX_MESSAGE))]);
        assert_eq!(code(&huge), Some(513));
    }

    #[test]
    fn responses_echo_the_request_and_tag_the_to() {
        let v7 = String::from_utf8(options(&[]))
            .unwrap()
            .replacen("SIP/2.0\r\n", "SIP/7.0\r\n", 1);
        let Verdict::Respond(r) = vet(v7.as_bytes()) else {
            panic!()
        };
        assert!(r.starts_with("SIP/2.0 505 "), "{r}");
        assert!(r.contains(&format!("{VIA}\r\n")), "{r}");
        assert!(r.contains("Call-ID: c1@192.0.2.1\r\n"));
        assert!(r.contains("CSeq: 1 OPTIONS\r\n"));
        assert!(r.contains("To: <sip:handlet@192.0.2.9>;tag="), "{r}");
        assert!(r.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn what_cannot_be_answered_is_dropped() {
        let no_via = String::from_utf8(options(&[]))
            .unwrap()
            .replace(&format!("{VIA}\r\n"), "");
        assert!(matches!(vet(no_via.as_bytes()), Verdict::Drop(_)));
        assert!(matches!(
            vet(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Verdict::Drop(_)
        ));
        assert!(matches!(vet(b"\x00\x01\x02garbage"), Verdict::Drop(_)));
        // Cut short: no end of headers, or a Via with no address.
        assert!(matches!(
            vet(b"INVITE sip:handlet@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP"),
            Verdict::Drop(_)
        ));
        let bare_via = String::from_utf8(options(&[]))
            .unwrap()
            .replace(VIA, "Via: SIP/2.0/UDP");
        assert!(matches!(vet(bare_via.as_bytes()), Verdict::Drop(_)));
        let mut bad = options(&[]);
        let at = bad.len() - 20;
        bad.splice(at..at, [0xc3, 0x28, 0xff]);
        assert!(matches!(vet(&bad), Verdict::Respond(_) | Verdict::Drop(_)));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 5;
        let alphabet = b"INVITE OPTIONS SIP/2.0 \r\n:;=<>@tag Via CSeq Call-ID From To l f t i 0 1 9 \xc3\xa9\xff";
        for _ in 0..30_000 {
            let len = (x % 400) as usize;
            let d: Vec<u8> = (0..len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    alphabet[(x >> 33) as usize % alphabet.len()]
                })
                .collect();
            let _ = vet(&d);
        }
    }
}
