//! Message waiting (RFC 3842) at the SIP level, from a raw UDP socket:
//! what a SUBSCRIBE gets for another event package, without or with wrong
//! credentials, for too short a time; then a subscription's first NOTIFY,
//! its refresh and its end. (The lamp lighting on a real phone for a real
//! voicemail is in tests/receptionist.rs.)

mod common;

use common::*;
use md5::Digest;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const SECRET: &str = "desk-201-secret";
const CONFIG: &str = "[[extension]]\nnumber = \"201\"\nsecret = \"desk-201-secret\"\n";

fn md5_hex(s: &str) -> String {
    md5::Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A SIP message as text, with its headers by name.
struct Msg(String);

impl Msg {
    fn code(&self) -> u16 {
        self.0.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.0
            .split("\r\n\r\n")
            .next()?
            .lines()
            .skip(1)
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
    }

    fn body(&self) -> &str {
        self.0.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    fn param(value: &str, name: &str) -> String {
        value
            .split(&format!("{name}="))
            .nth(1)
            .unwrap_or_else(|| panic!("no {name} in {value}"))
            .trim_start_matches('"')
            .split(['"', ';', ','])
            .next()
            .unwrap()
            .to_string()
    }
}

struct Subscriber {
    sock: UdpSocket,
    agent: SocketAddr,
    call_id: String,
    cseq: u32,
    /// The agent's tag, once a subscription is made.
    remote_tag: Option<String>,
}

impl Subscriber {
    fn new(agent: &Agent) -> Subscriber {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Subscriber {
            call_id: format!("mwi-{}", sock.local_addr().unwrap().port()),
            agent: SocketAddr::from(([127, 0, 0, 1], agent.port)),
            sock,
            cseq: 0,
            remote_tag: None,
        }
    }

    fn subscribe(&mut self, event: &str, expires: u32, auth: Option<String>) -> Msg {
        self.cseq += 1;
        let local = self.sock.local_addr().unwrap();
        let auth = auth
            .map(|a| format!("Proxy-Authorization: {a}\r\n"))
            .unwrap_or_default();
        let to_tag = self
            .remote_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let msg = format!(
            "SUBSCRIBE sip:201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{}-{}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:201@127.0.0.1>;tag=sub1\r\nTo: <sip:201@127.0.0.1>{to_tag}\r\n\
             Call-ID: {}\r\nCSeq: {} SUBSCRIBE\r\nContact: <sip:201@{local}>\r\nEvent: {event}\r\n\
             Expires: {expires}\r\nAccept: application/simple-message-summary\r\n{auth}Content-Length: 0\r\n\r\n",
            self.call_id, self.cseq, self.call_id, self.cseq
        );
        self.sock.send_to(msg.as_bytes(), self.agent).unwrap();
        self.next(
            |m| m.0.starts_with("SIP/2.0") && m.code() >= 200,
            "an answer to SUBSCRIBE",
        )
    }

    /// The next message `want` picks, answering any NOTIFY on the way.
    fn next(&mut self, want: impl Fn(&Msg) -> bool, what: &str) -> Msg {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 8192];
        while Instant::now() < deadline {
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let m = Msg(String::from_utf8_lossy(&buf[..n]).into_owned());
            if m.0.starts_with("NOTIFY ") {
                self.ok(&m, from);
            }
            if want(&m) {
                return m;
            }
        }
        panic!("no {what} in 10 s");
    }

    fn ok(&self, req: &Msg, to: SocketAddr) {
        let mut reply = String::from("SIP/2.0 200 OK\r\n");
        for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
            reply.push_str(&format!("{h}: {}\r\n", req.header(h).unwrap()));
        }
        reply.push_str("Content-Length: 0\r\n\r\n");
        self.sock.send_to(reply.as_bytes(), to).unwrap();
    }

    fn notify(&mut self) -> Msg {
        self.next(|m| m.0.starts_with("NOTIFY "), "NOTIFY")
    }

    fn digest(password: &str, nonce: &str, nc: u32) -> String {
        let ha1 = md5_hex(&format!("201:handlet:{password}"));
        let ha2 = md5_hex("SUBSCRIBE:sip:201@127.0.0.1");
        let response = md5_hex(&format!("{ha1}:{nonce}:{nc:08x}:c0ffee:auth:{ha2}"));
        format!(
            "Digest username=\"201\", realm=\"handlet\", nonce=\"{nonce}\", uri=\"sip:201@127.0.0.1\", \
             response=\"{response}\", algorithm=MD5, cnonce=\"c0ffee\", qop=auth, nc={nc:08x}"
        )
    }
}

#[test]
fn a_phone_subscribes_to_message_waiting_refreshes_and_ends() {
    let agent = Agent::start_with("mwi", CONFIG);
    let mut s = Subscriber::new(&agent);

    // Another package: 489, saying which one we serve.
    let r = s.subscribe("presence", 600, None);
    assert_eq!(r.code(), 489, "{}", r.0);
    assert_eq!(r.header("Allow-Events").as_deref(), Some("message-summary"));
    // No credentials: challenged; wrong ones: refused.
    let r = s.subscribe("message-summary", 600, None);
    assert_eq!(r.code(), 407, "{}", r.0);
    let nonce = Msg::param(&r.header("Proxy-Authenticate").unwrap(), "nonce");
    let r = s.subscribe(
        "message-summary",
        600,
        Some(Subscriber::digest("guess", &nonce, 1)),
    );
    assert_eq!(r.code(), 403, "{}", r.0);
    // Too short: 423 with the minimum.
    let r = s.subscribe(
        "message-summary",
        10,
        Some(Subscriber::digest(SECRET, &nonce, 2)),
    );
    assert_eq!(r.code(), 423, "{}", r.0);
    assert_eq!(r.header("Min-Expires").as_deref(), Some("60"));

    // Subscribed: 200 with the time granted (a day is shortened to an
    // hour), then the state at once: nothing waits.
    let r = s.subscribe(
        "message-summary",
        86_400,
        Some(Subscriber::digest(SECRET, &nonce, 3)),
    );
    assert_eq!(r.code(), 200, "{}", r.0);
    assert_eq!(r.header("Expires").as_deref(), Some("3600"));
    s.remote_tag = Some(Msg::param(&r.header("To").unwrap(), "tag"));
    let n = s.notify();
    assert_eq!(n.header("Event").as_deref(), Some("message-summary"));
    let state = n.header("Subscription-State").unwrap();
    assert!(state.starts_with("active;expires="), "{state}");
    assert_eq!(
        n.header("Content-Type").as_deref(),
        Some("application/simple-message-summary")
    );
    assert!(
        n.body().starts_with("Messages-Waiting: no\r\n"),
        "{}",
        n.body()
    );
    assert!(n.body().contains("Voice-Message: 0/0"), "{}", n.body());

    // A refresh within the dialog: 200 and the state again.
    let r = s.subscribe("message-summary", 600, None);
    assert_eq!(r.code(), 200, "{}", r.0);
    assert_eq!(r.header("Expires").as_deref(), Some("600"));
    let n = s.notify();
    assert!(
        n.header("Subscription-State")
            .unwrap()
            .starts_with("active")
    );
    // Expires 0: ended, with a last NOTIFY saying so.
    let r = s.subscribe("message-summary", 0, None);
    assert_eq!(r.code(), 200, "{}", r.0);
    let n = s.notify();
    assert!(
        n.header("Subscription-State")
            .unwrap()
            .starts_with("terminated"),
        "{}",
        n.0
    );
    // Gone: a refresh of it now is for no dialog.
    let r = s.subscribe("message-summary", 600, None);
    assert_eq!(r.code(), 481, "{}", r.0);
}
