//! Admission control and call limits against the real agent: beyond
//! `limits.max_calls` a new INVITE gets 503 with Retry-After (and costs no
//! call state), a slot frees when its call ends, and a call that outlasts
//! `limits.max_call_secs` is hung up by the agent.

mod common;
use common::*;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// A minimal UDP UAC: one INVITE with a PCMU offer; the responses it got.
struct RawInvite {
    sock: UdpSocket,
    call_id: String,
}

impl RawInvite {
    fn send(agent: &Agent, tag: &str) -> RawInvite {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let call_id = format!("admission-{tag}-{}", std::process::id());
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
            port + 2
        );
        let msg = format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{tag}{pid};rport\r\nMax-Forwards: 70\r\nFrom: <sip:tester@127.0.0.1>;tag={tag}\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:tester@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            uri = agent.uri(),
            pid = std::process::id(),
            len = sdp.len(),
        );
        sock.send_to(msg.as_bytes(), ("127.0.0.1", agent.port))
            .unwrap();
        RawInvite { sock, call_id }
    }

    /// The first final response (status, whole text) within `secs`.
    fn final_response(&self, secs: u64) -> Option<(u16, String)> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let Ok(n) = self.sock.recv(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let code: u16 = text
                .strip_prefix("SIP/2.0 ")
                .and_then(|r| r.get(..3))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if code >= 200 && text.contains(&self.call_id) {
                return Some((code, text));
            }
        }
        None
    }
}

#[test]
fn calls_beyond_max_calls_get_503_with_retry_after() {
    // One call at a time; it rings for a minute, so it holds its slot.
    let agent = Agent::start_with(
        "admission",
        "[sip]\nanswer_after_ms = 60000\n[limits]\nmax_calls = 1\n",
    );
    let first = RawInvite::send(&agent, "first");
    let db = Db::open(&agent.database());
    wait_for(10, "the first call to be recorded", || {
        (!db.calls().is_empty()).then_some(())
    });
    let mut refused = 0;
    for i in 0..5 {
        let r = RawInvite::send(&agent, &format!("extra{i}"));
        let (code, text) = r.final_response(5).expect("an answer to the extra INVITE");
        assert_eq!(code, 503, "{text}");
        assert!(
            text.lines()
                .any(|l| l.to_ascii_lowercase().starts_with("retry-after: 30")),
            "{text}"
        );
        refused += 1;
    }
    assert_eq!(refused, 5);
    // Refused calls left no state behind.
    assert_eq!(db.calls().len(), 1, "{:?}", db.calls());
    // The one call in progress is still ringing, not answered.
    assert!(first.final_response(1).is_none());
    // The limit hit was logged once, not five times.
    let log = agent.log();
    assert_eq!(
        log.matches("limit reached").count(),
        1,
        "one line per burst:\n{log}"
    );
}

#[test]
fn a_slot_frees_when_its_call_ends() {
    let agent = Agent::start_with("admission-free", "[limits]\nmax_calls = 1\n");
    let wav = speech_wav(agent.dir.path(), "hi", "Hello there.", 8000, 0.2, 0.5);
    for _ in 0..3 {
        // One after the other: each gets the only slot once the last ended.
        call_ok(&agent, &wav);
    }
    let db = Db::open(&agent.database());
    let calls = db.calls();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.answered.is_some()), "{calls:?}");
}

#[test]
fn a_call_longer_than_max_call_secs_is_hung_up() {
    let agent = Agent::start_with("admission-long", "[limits]\nmax_call_secs = 10\n");
    // 25 s of audio: the agent must end the call at about 10 s.
    let wav = speech_wav(
        agent.dir.path(),
        "long",
        "Hello, this is a long call.",
        8000,
        0.2,
        24.0,
    );
    let t0 = Instant::now();
    let out = call_agent(&agent, &wav);
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the agent hung up"), "{stderr}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let db = Db::open(&agent.database());
    let c = wait_for(10, "the call's end", || {
        db.calls().into_iter().find(|c| c.ended.is_some())
    });
    assert_eq!(c.reason.as_deref(), Some("maximum call length reached"));
    let d = c.duration.unwrap();
    assert!((9_000..=12_000).contains(&d), "{c:?}");
}
