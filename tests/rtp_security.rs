//! A hostile network against the agent's RTP leg: whoever can reach the
//! agent's RTP port must not be heard in the transcript, must not redirect
//! the agent's audio to themselves, and must not take the agent down; a
//! phone that restarts its stream keeps being heard; and the agent sends no
//! RTP until the caller has ACKed the 200 OK.
//!
//! Tests 1 and 2 call with baresip and find the agent's RTP port from the
//! agent process's own UDP sockets (`/proc/<pid>/fd` and `/proc/<pid>/net/udp`).
//! Tests 3 and 4 are their own caller: a small SIP UAC over UDP here, which
//! reads the agent's RTP address from the SDP of its 200 OK.

mod common;
use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// G.711 μ-law and RTP
// ---------------------------------------------------------------------------

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32_635;

/// Linear 16-bit PCM to G.711 μ-law.
fn ulaw_encode(pcm: i16) -> u8 {
    let mut s = pcm as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(ULAW_CLIP) + ULAW_BIAS;
    // s is in 0x84..=0x7FFF: its top bit is bit 7..=14.
    let exponent = 31 - (s as u32).leading_zeros() as i32 - 7;
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// G.711 μ-law to linear 16-bit PCM.
fn ulaw_decode(u: u8) -> i16 {
    let u = !u;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// A 12-byte RTP header (version 2, no CSRC, no extension) and its payload.
fn rtp_packet(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push(((marker as u8) << 7) | (pt & 0x7F));
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// (payload type, sequence, SSRC) if `d` looks like an RTP packet.
fn rtp_header(d: &[u8]) -> Option<(u8, u16, u32)> {
    (d.len() >= 12 && d[0] >> 6 == 2).then(|| {
        (
            d[1] & 0x7F,
            u16::from_be_bytes([d[2], d[3]]),
            u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
        )
    })
}

/// espeak-ng speech as 20 ms μ-law frames (8 kHz), scaled so its peak
/// is at `peak` of full scale.
fn speech_ulaw(
    dir: &Path,
    name: &str,
    text: &str,
    lead: f32,
    tail: f32,
    peak: f32,
) -> Vec<Vec<u8>> {
    let wav = speech_wav(dir, name, text, 8000, lead, tail);
    let samples: Vec<i16> = hound::WavReader::open(&wav)
        .unwrap()
        .into_samples::<i16>()
        .map(Result::unwrap)
        .collect();
    let max = samples
        .iter()
        .map(|s| (*s as i32).abs())
        .max()
        .unwrap_or(1)
        .max(1);
    let gain = peak * 32_767.0 / max as f32;
    samples
        .chunks(160)
        .map(|c| {
            let mut f: Vec<u8> = c
                .iter()
                .map(|s| ulaw_encode((*s as f32 * gain).clamp(-32_768.0, 32_767.0) as i16))
                .collect();
            f.resize(160, ulaw_encode(0));
            f
        })
        .collect()
}

/// A small xorshift generator: SSRCs, branches and junk.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng((t ^ ((std::process::id() as u64) << 32)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn u32(&mut self) -> u32 {
        (self.next() >> 32) as u32
    }
}

/// One RTP stream sent in real time: 20 ms packets of PCMU.
struct Stream {
    ssrc: u32,
    seq: u16,
    ts: u32,
    /// When the next packet is due: a fixed 20 ms clock, so the pace
    /// does not drift, and one send follows on from the last.
    next: Option<Instant>,
}

impl Stream {
    fn new(rng: &mut Rng) -> Stream {
        Stream {
            ssrc: rng.u32(),
            seq: rng.u32() as u16,
            ts: rng.u32(),
            next: None,
        }
    }

    /// Send `frames` paced 20 ms apart; the first one carries the marker bit.
    fn send(&mut self, sock: &UdpSocket, to: SocketAddr, frames: &[Vec<u8>]) {
        for (i, f) in frames.iter().enumerate() {
            let due = *self.next.get_or_insert_with(Instant::now);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let p = rtp_packet(0, i == 0, self.seq, self.ts, self.ssrc, f);
            // The agent's port may be gone once the call has ended.
            let _ = sock.send_to(&p, to);
            self.seq = self.seq.wrapping_add(1);
            self.ts = self.ts.wrapping_add(160);
            self.next = Some(due + Duration::from_millis(20));
        }
    }
}

// ---------------------------------------------------------------------------
// The agent's side: its RTP port, its stored figures
// ---------------------------------------------------------------------------

/// UDP ports in the test config's RTP range (20000–29999) that the agent
/// process has bound: the inodes of its sockets (`/proc/<pid>/fd`) matched
/// against the UDP socket tables of its network namespace.
fn agent_rtp_ports(agent: &Agent) -> Vec<u16> {
    let pid = agent.child.id();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: Vec<String> = fds
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .map(String::from)
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || !inodes.iter().any(|i| i == f[9]) {
                continue;
            }
            let Some(port) = f[1]
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok())
            else {
                continue;
            };
            // RTP is on an even port; its RTCP, on the next, is not counted.
            if (20_000..=29_999).contains(&port) && port % 2 == 0 && port != agent.port {
                ports.push(port);
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The one RTP socket of the agent's one call.
fn wait_for_rtp_port(agent: &Agent) -> SocketAddr {
    let port = wait_for(20, "the agent to bind an RTP port for the call", || {
        let p = agent_rtp_ports(agent);
        assert!(p.len() <= 1, "more than one RTP socket: {p:?}");
        p.first().copied()
    });
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One row of `call_media` (every field is shown in failure messages).
#[derive(Debug)]
#[allow(dead_code)]
struct Media {
    packets: i64,
    lost: i64,
    late: i64,
    duplicates: i64,
    concealed: i64,
    malformed: i64,
    jitter_ms: i64,
    target_delay_ms: i64,
}

/// The RTP leg's hostile-network counters in `call_media`.
#[derive(Debug)]
#[allow(dead_code)]
struct Security {
    /// Dropped: from another source, or another SSRC not a restart.
    foreign: i64,
    /// Stream restarts (new SSRC from the latched source).
    ssrc_changes: i64,
    digits_dropped: i64,
}

/// The figures every version of the agent stores.
fn media_base(db: &Db, call: &str) -> Media {
    db.0.query_row(
        "SELECT packets, lost, late, duplicates, concealed, malformed, jitter_ms, target_delay_ms
         FROM call_media WHERE call_id = ?1",
        [call],
        |r| {
            Ok(Media {
                packets: r.get(0)?,
                lost: r.get(1)?,
                late: r.get(2)?,
                duplicates: r.get(3)?,
                concealed: r.get(4)?,
                malformed: r.get(5)?,
                jitter_ms: r.get(6)?,
                target_delay_ms: r.get(7)?,
            })
        },
    )
    .unwrap_or_else(|e| panic!("no call_media row for call {call}: {e}"))
}

/// The hostile-network counters (`foreign`, `ssrc_changes`,
/// `digits_dropped`); a clear failure while the agent's store lacks them.
/// `foreign` is an SQL keyword, so the column may be stored as
/// `foreign_packets`: either name is read.
fn security(db: &Db, call: &str) -> Security {
    let columns: Vec<String> =
        db.0.prepare("SELECT name FROM pragma_table_info('call_media')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let has = |c: &str| columns.iter().any(|x| x == c);
    let foreign = ["foreign", "foreign_packets"].into_iter().find(|c| has(c));
    let (Some(foreign), true, true) = (foreign, has("ssrc_changes"), has("digits_dropped")) else {
        panic!(
            "call_media lacks the columns foreign (or foreign_packets), ssrc_changes, \
             digits_dropped: the agent does not store its RTP leg's security counters; \
             it has {columns:?}; the row has {:?}",
            media_base(db, call)
        )
    };
    db.0.query_row(
        &format!(
            "SELECT [{foreign}], ssrc_changes, digits_dropped FROM call_media WHERE call_id = ?1"
        ),
        [call],
        |r| {
            Ok(Security {
                foreign: r.get(0)?,
                ssrc_changes: r.get(1)?,
                digits_dropped: r.get(2)?,
            })
        },
    )
    .unwrap_or_else(|e| panic!("reading call_media's security counters: {e}"))
}

/// The call that started at or after `t`, once its transcript is complete.
fn completed_call(agent: &Agent, db: &Db, t: i64) -> CallRow {
    let call = wait_for(90, "the call's transcript to complete", || {
        db.calls()
            .into_iter()
            .find(|c| c.started >= t && c.complete)
    });
    assert!(call.ended.is_some(), "{call:?}; log:\n{}", agent.log());
    call
}

/// Wait until the caller's first words have been heard (a live partial
/// is stored): the agent has its audio, and has latched to it.
fn wait_for_caller_heard(db: &Db, t: i64) -> String {
    wait_for(
        30,
        "a partial transcript of the caller's first words",
        || {
            let call = db.calls().into_iter().find(|c| c.started >= t)?;
            let n: i64 =
            db.0.query_row(
                "SELECT count(*) FROM transcript_partials WHERE call_id = ?1 AND channel = 'caller'",
                [&call.id],
                |r| r.get(0),
            )
            .ok()?;
            (n > 0).then_some(call.id)
        },
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn has_any(text: &str, keys: &[&str]) -> usize {
    let w = words(text);
    keys.iter().filter(|k| w.iter().any(|x| x == *k)).count()
}

// ---------------------------------------------------------------------------
// baresip, started in the background
// ---------------------------------------------------------------------------

/// Wait for baresip to exit on its own, at most `secs`; its output.
fn finish(mut p: Reaped, secs: u64, dir: &Path) -> String {
    wait_for(secs, "baresip to quit", || p.0.try_wait().unwrap());
    std::fs::read_to_string(dir.join("baresip.out")).unwrap_or_default()
}

/// baresip with a config of its own (PCMU only) that plays `wav` as its
/// microphone, dials the agent and hangs up at the end of the file.
fn baresip_dial(agent: &Agent, wav: &Path, name: &str) -> (Reaped, std::path::PathBuf) {
    let secs = hound::WavReader::open(wav).unwrap().duration() as f64 / 8000.0;
    let quit_after = (secs.ceil() as u64 + 6).to_string();
    let cfg_dir = baresip_config(
        agent.dir.path(),
        &format!("baresip-{name}"),
        Some(wav),
        "udp",
        "<sip:tester@127.0.0.1>;regint=0;audio_codecs=PCMU",
    );
    let out = std::fs::File::create(cfg_dir.join("baresip.out")).unwrap();
    let child = Command::new("baresip")
        .arg("-f")
        .arg(&cfg_dir)
        .args(["-e", &format!("/dial {}", agent.uri()), "-t", &quit_after])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("baresip is installed (make test installs it)");
    (Reaped(child), cfg_dir)
}

// ---------------------------------------------------------------------------
// A minimal SIP UAC over UDP
// ---------------------------------------------------------------------------

struct Uac {
    sip: UdpSocket,
    agent: SocketAddr,
    /// Where the SDP offer asks for the agent's RTP, and on the next port
    /// its RTCP (RFC 3550 §11).
    rtp: UdpSocket,
    rtcp: UdpSocket,
    call_id: String,
    from_tag: String,
    rng: Rng,
    /// From the 200 OK: its To header (with the agent's tag), Contact URI,
    /// and the agent's RTP address from its SDP answer.
    to: String,
    contact: String,
    agent_rtp: Option<SocketAddr>,
}

/// A header's value (first occurrence, case-insensitive name or compact form).
fn header<'a>(msg: &'a str, name: &str, compact: &str) -> Option<&'a str> {
    let head = msg.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        let n = n.trim();
        (n.eq_ignore_ascii_case(name) || n.eq_ignore_ascii_case(compact)).then(|| v.trim())
    })
}

/// `c=` address and `m=audio` port of an SDP body.
fn sdp_audio(msg: &str) -> Option<SocketAddr> {
    let body = msg.split_once("\r\n\r\n")?.1;
    let ip = body
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))?
        .trim()
        .parse::<std::net::Ipv4Addr>()
        .ok()?;
    let port = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))?
        .split_whitespace()
        .next()?
        .parse::<u16>()
        .ok()?;
    Some(SocketAddr::from((ip, port)))
}

impl Uac {
    fn new(agent: &Agent) -> Uac {
        let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
        // RTP on an even port of our own, RTCP on the next one.
        let (rtp, rtcp) = loop {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = s.local_addr().unwrap().port();
            if port.is_multiple_of(2)
                && let Ok(c) = UdpSocket::bind(("127.0.0.1", port + 1))
            {
                break (s, c);
            }
        };
        let mut rng = Rng::new();
        Uac {
            sip,
            agent: SocketAddr::from(([127, 0, 0, 1], agent.port)),
            rtp,
            rtcp,
            call_id: format!("rtpsec-{:08x}@127.0.0.1", rng.u32()),
            from_tag: format!("{:08x}", rng.u32()),
            rng,
            to: String::new(),
            contact: String::new(),
            agent_rtp: None,
        }
    }

    fn local(&self) -> SocketAddr {
        self.sip.local_addr().unwrap()
    }

    fn rtp_addr(&self) -> SocketAddr {
        self.rtp.local_addr().unwrap()
    }

    fn via(&mut self) -> String {
        format!(
            "Via: SIP/2.0/UDP {};branch=z9hG4bK-{:08x}{:08x};rport",
            self.local(),
            self.rng.u32(),
            self.rng.u32()
        )
    }

    fn caller_from(&self) -> String {
        format!("From: <sip:tester@{}>;tag={}", self.local(), self.from_tag)
    }

    /// The next SIP message from the agent within `secs`.
    fn recv(&self, secs: u64) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sip
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.sip.recv_from(&mut buf) {
                Ok((n, _)) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(_) => continue,
            }
        }
    }

    /// Send the INVITE (PCMU and telephone-event, RTP to our socket) and
    /// wait for its 200 OK; learn the dialog and the agent's RTP address.
    fn invite(&mut self) -> String {
        let sdp = format!(
            "v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
            self.rtp_addr().port()
        );
        let via = self.via();
        let msg = format!(
            "INVITE sip:handlet@{agent} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n{from}\r\n\
             To: <sip:handlet@{agent}>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:tester@{local}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            agent = self.agent,
            from = self.caller_from(),
            cid = self.call_id,
            local = self.local(),
            len = sdp.len(),
        );
        self.sip.send_to(msg.as_bytes(), self.agent).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            assert!(Instant::now() < deadline, "no 200 OK for the INVITE");
            let Some(r) = self.recv(15) else { continue };
            if !r.starts_with("SIP/2.0 ") {
                continue;
            }
            let cseq = header(&r, "CSeq", "CSeq").unwrap_or("");
            if !cseq.ends_with("INVITE") {
                continue;
            }
            let code: u16 = r.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
            if code < 200 {
                continue;
            }
            assert_eq!(code, 200, "INVITE answered with:\n{r}");
            self.to = header(&r, "To", "t").expect("To in 200").to_string();
            assert!(self.to.contains("tag="), "200 without a To tag:\n{r}");
            let contact = header(&r, "Contact", "m").expect("Contact in 200");
            self.contact = contact
                .split_once('<')
                .and_then(|(_, r)| r.split_once('>'))
                .map(|(u, _)| u.to_string())
                .unwrap_or_else(|| contact.to_string());
            self.agent_rtp = Some(sdp_audio(&r).unwrap_or_else(|| panic!("no SDP answer:\n{r}")));
            return r;
        }
    }

    fn ack(&mut self) {
        let via = self.via();
        let msg = format!(
            "ACK {contact} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n{from}\r\nTo: {to}\r\n\
             Call-ID: {cid}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            contact = self.contact,
            from = self.caller_from(),
            to = self.to,
            cid = self.call_id,
        );
        self.sip.send_to(msg.as_bytes(), self.agent).unwrap();
    }

    /// Hang up and wait for the agent's 200 to the BYE.
    fn bye(&mut self) {
        let via = self.via();
        let msg = format!(
            "BYE {contact} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n{from}\r\nTo: {to}\r\n\
             Call-ID: {cid}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
            contact = self.contact,
            from = self.caller_from(),
            to = self.to,
            cid = self.call_id,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sent_at = None::<Instant>;
        loop {
            assert!(Instant::now() < deadline, "no 200 OK for the BYE");
            // Retransmit as UDP needs, every 500 ms.
            if sent_at.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
                self.sip.send_to(msg.as_bytes(), self.agent).unwrap();
                sent_at = Some(Instant::now());
            }
            let Some(r) = self.recv(1) else { continue };
            if r.starts_with("SIP/2.0 ")
                && header(&r, "CSeq", "CSeq").is_some_and(|c| c.ends_with("BYE"))
            {
                let code: u16 = r.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
                if code >= 200 {
                    assert_eq!(code, 200, "BYE answered with:\n{r}");
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

const CALLER: &str = "Hi, I'd like a quote for fixing a leaking boiler, can you call me back";
const CALLER_KEYS: [&str; 4] = ["quote", "leaking", "boiler", "call"];
const INJECTED: &str = "Purple elephant banana. Purple elephant banana.";
const INJECTED_WORDS: [&str; 3] = ["purple", "elephant", "banana"];

#[test]
fn ulaw_helpers_round_trip() {
    for u in 0..=255u8 {
        // 0x7F is μ-law's negative zero: it decodes to 0, which encodes as 0xFF.
        if u != 0x7F {
            assert_eq!(ulaw_encode(ulaw_decode(u)), u, "{u:#04x}");
        }
    }
    assert_eq!(ulaw_encode(0), 0xFF);
    assert_eq!(ulaw_encode(i16::MAX), 0x80);
    assert_eq!(ulaw_encode(i16::MIN), 0x00);
    assert_eq!(ulaw_decode(0x80), 32_124);
    for s in [-20_000i16, -1_000, -10, 10, 1_000, 20_000] {
        let back = ulaw_decode(ulaw_encode(s)) as i32;
        assert!(
            (back - s as i32).abs() <= (s as i32).abs() / 16 + 4,
            "{s} -> {back}"
        );
    }
}

/// Someone who can reach the agent's RTP port streams loud speech at it
/// while a real caller talks: not one word of it reaches the transcript,
/// and the agent keeps sending to the caller, not to them.
#[test]
fn injected_rtp_is_not_heard_and_does_not_redirect_audio() {
    let agent = Agent::start("rtp-inject");
    let dir = agent.dir.path();
    let wav = speech_wav(dir, "caller", CALLER, 8000, 0.5, 6.0);
    let injected = speech_ulaw(dir, "injected", INJECTED, 0.0, 0.0, 0.95);
    // About 150 packets (3 s) of it, repeated if espeak-ng was quicker.
    let injected: Vec<Vec<u8>> = injected.iter().cycle().take(150).cloned().collect();
    let db = Db::open(&agent.database());

    let t = now_ms();
    let (baresip, cfg_dir) = baresip_dial(&agent, &wav, "inject");
    let target = wait_for_rtp_port(&agent);
    // The caller's audio is flowing (and latched to) before the attack.
    let call_id = wait_for_caller_heard(&db, t);

    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    attacker
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let received = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let mut stream = Stream::new(&mut Rng::new());
    let injected_at = Instant::now();
    let into_call_ms = now_ms() - t;
    let (mut injection_secs, mut injection_ended) = (0.0, 0);
    std::thread::scope(|s| {
        // Whatever the agent sends to the attacker's socket.
        s.spawn(|| {
            let mut buf = [0u8; 2048];
            let mut quiet_since = None::<Instant>;
            loop {
                if let Ok((n, _)) = attacker.recv_from(&mut buf)
                    && rtp_header(&buf[..n]).is_some()
                {
                    received.fetch_add(1, Ordering::Relaxed);
                }
                if done.load(Ordering::Relaxed) {
                    // Keep listening a second after the last injected packet.
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(1) {
                        break;
                    }
                }
            }
        });
        stream.send(&attacker, target, &injected);
        done.store(true, Ordering::Relaxed);
        injection_secs = injected_at.elapsed().as_secs_f32();
        injection_ended = now_ms();
    });
    let received = received.into_inner();

    let out = finish(baresip, 60, &cfg_dir);
    assert!(out.contains("Call established"), "baresip:\n{out}");
    let call = completed_call(&agent, &db, t);
    assert_eq!(call.id, call_id);
    let text = db.transcript(&call.id);
    let base = media_base(&db, &call.id);
    eprintln!(
        "transcript {text:?}; injected {} packets in {injection_secs:.1} s from \
         {into_call_ms} ms after dialling; \
         the attacker received {received} RTP packets; {base:?}",
        injected.len()
    );
    assert!(
        call.ended.unwrap() > injection_ended,
        "the call ended before the injection did (a slow box?): {call:?}"
    );

    // The agent's audio was not redirected to the attacker.
    assert_eq!(
        received,
        0,
        "the agent sent {received} RTP packets to the injecting socket; log:\n{}",
        agent.log()
    );
    // The injected speech was not heard, the caller was.
    let lower = text.to_lowercase();
    for w in INJECTED_WORDS {
        assert!(
            !lower.contains(w),
            "injected word {w:?} in the transcript {text:?}"
        );
    }
    assert!(
        has_any(&text, &CALLER_KEYS) >= 3,
        "transcript {text:?} lacks the caller's words {CALLER_KEYS:?}"
    );
    // Only the caller's own packets were accepted: about 50 a second.
    let secs = (call.ended.unwrap() - call.answered.unwrap()) as f64 / 1000.0;
    assert!(
        (base.packets as f64) < secs * 50.0 * 1.1 + 20.0,
        "{} packets accepted in {secs} s: injected ones among them; {base:?}",
        base.packets
    );
    let sec = security(&db, &call.id);
    eprintln!("{sec:?}");
    // baresip sends RTCP too (RRs/SRs every few seconds), from its RTP
    // port + 1: the agent reads them.
    let (rtcp_received, rtcp_foreign): (i64, i64) =
        db.0.query_row(
            "SELECT rtcp_received, rtcp_foreign FROM call_media WHERE call_id = ?1",
            [&call.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    eprintln!("baresip's RTCP: {rtcp_received} reports read, {rtcp_foreign} foreign");
    assert!(
        rtcp_received >= 1,
        "none of baresip's RTCP reports was read ({rtcp_foreign} foreign)"
    );
    assert!(
        sec.foreign >= 100,
        "{} of {} injected packets counted as foreign: {sec:?} {base:?}",
        sec.foreign,
        injected.len()
    );
}

/// Junk at the RTP port during a call is counted, and the call goes on.
#[test]
fn garbage_to_the_rtp_port_is_counted_not_fatal() {
    let mut agent = Agent::start("rtp-garbage");
    let dir = agent.dir.path();
    let wav = speech_wav(dir, "caller", CALLER, 8000, 0.5, 4.0);
    let db = Db::open(&agent.database());

    let t = now_ms();
    let (baresip, cfg_dir) = baresip_dial(&agent, &wav, "garbage");
    let target = wait_for_rtp_port(&agent);
    wait_for_caller_heard(&db, t);

    let junk_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = Rng::new();
    let start = Instant::now();
    let (mut not_rtp, mut rtp_like) = (0, 0);
    for i in 0..200u64 {
        let due = start + Duration::from_millis(5 * i);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let len = (rng.next() % 300) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        match i % 5 {
            // Too short to be RTP.
            0 => d.truncate((rng.next() % 12) as usize),
            // Not version 2.
            1..=3 => {
                d.resize(d.len().max(12), 0);
                d[0] = (d[0] & 0x3F) | [0x00, 0x40, 0xC0][(rng.next() % 3) as usize];
            }
            // A valid RTP header: random payload type, SSRC and payload.
            _ => {
                let pt = (rng.next() % 128) as u8;
                d = rtp_packet(pt, false, rng.u32() as u16, rng.u32(), rng.u32(), &d);
                rtp_like += 1;
                junk_sock.send_to(&d, target).unwrap();
                continue;
            }
        }
        not_rtp += 1;
        junk_sock.send_to(&d, target).unwrap();
    }

    let out = finish(baresip, 60, &cfg_dir);
    assert!(out.contains("Call established"), "baresip:\n{out}");
    let call = completed_call(&agent, &db, t);
    let text = db.transcript(&call.id);
    let base = media_base(&db, &call.id);
    eprintln!("transcript {text:?}; {not_rtp} junk + {rtp_like} RTP-like datagrams; {base:?}");
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited; log:\n{}",
        agent.log()
    );
    assert!(
        !agent.log().contains("panicked"),
        "the agent panicked:\n{}",
        agent.log()
    );
    assert_eq!(call.reason.as_deref(), Some("caller hung up"), "{call:?}");
    assert!(
        has_any(&text, &CALLER_KEYS) >= 3,
        "transcript {text:?} lacks the caller's words {CALLER_KEYS:?}"
    );
    assert!(
        base.malformed >= 150,
        "{} of {not_rtp} non-RTP datagrams counted as malformed: {base:?}",
        base.malformed
    );
    let sec = security(&db, &call.id);
    eprintln!("{sec:?}");
    assert!(
        base.malformed + sec.foreign >= 195,
        "of 200 junk datagrams {} malformed + {} foreign: {sec:?} {base:?}",
        base.malformed,
        sec.foreign
    );
}

/// A phone that restarts its stream mid-call (new SSRC, sequence and
/// timestamp far away) from the same address keeps being heard.
#[test]
fn a_restarted_stream_keeps_being_heard() {
    let agent = Agent::start("rtp-restart");
    let dir = agent.dir.path();
    let first = speech_ulaw(
        dir,
        "first",
        "Could you come on Friday afternoon after three o'clock",
        0.3,
        1.2,
        0.7,
    );
    let second = speech_ulaw(
        dir,
        "second",
        "The boiler is in the garage next to the washing machine",
        0.3,
        1.2,
        0.7,
    );
    let db = Db::open(&agent.database());
    let t = now_ms();
    let mut uac = Uac::new(&agent);
    uac.invite();
    uac.ack();
    let to = uac.agent_rtp.unwrap();

    let mut rng = Rng::new();
    let mut stream = Stream::new(&mut rng);
    stream.send(&uac.rtp, to, &first);
    // The restart: another SSRC, sequence 30000 on, timestamp 10 s on.
    let mut ssrc = rng.u32();
    while ssrc == stream.ssrc {
        ssrc = rng.u32();
    }
    stream.ssrc = ssrc;
    stream.seq = stream.seq.wrapping_add(30_000);
    stream.ts = stream.ts.wrapping_add(80_000);
    stream.send(&uac.rtp, to, &second);
    uac.bye();

    let call = completed_call(&agent, &db, t);
    let text = db.transcript(&call.id);
    let base = media_base(&db, &call.id);
    let sent = first.len() + second.len();
    eprintln!("transcript {text:?}; sent {sent} packets; {base:?}");
    let first_keys = ["could", "come", "friday", "afternoon"];
    let second_keys = ["boiler", "garage", "washing", "machine"];
    assert!(
        has_any(&text, &first_keys) >= 2,
        "transcript {text:?} lacks the first stream's words {first_keys:?}"
    );
    assert!(
        has_any(&text, &second_keys) >= 2,
        "transcript {text:?} lacks the restarted stream's words {second_keys:?}"
    );
    assert!(
        base.late < 20,
        "{} packets late: the restart was taken for a late stream; {base:?}",
        base.late
    );
    assert!(
        base.lost < 20,
        "{} packets lost: the restart was taken for a gap in the stream; {base:?}",
        base.lost
    );
    assert!(
        base.packets as usize >= sent * 95 / 100,
        "{} of {sent} packets accepted: {base:?}",
        base.packets
    );
    let sec = security(&db, &call.id);
    eprintln!("{sec:?}");
    assert_eq!(sec.ssrc_changes, 1, "{sec:?} {base:?}");
    assert_eq!(sec.foreign, 0, "{sec:?} {base:?}");
}

/// An INVITE alone cannot make the agent stream at an address: nothing is
/// sent until the 200 OK is ACKed, and then the audio starts at once.
#[test]
fn no_rtp_before_ack() {
    let agent = Agent::start("rtp-no-ack");
    let db = Db::open(&agent.database());
    let mut uac = Uac::new(&agent);
    uac.invite();
    let to = uac.agent_rtp.unwrap();
    uac.rtp
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut rng = Rng::new();
    let (ssrc, mut seq, mut ts) = (rng.u32(), rng.u32() as u16, rng.u32());
    let silence = vec![ulaw_encode(0); 160];
    let mut buf = [0u8; 2048];
    // Like a phone that has the 200 but whose ACK is lost: it sends its
    // audio, 20 ms apart, and counts what comes back.
    let mut send_and_count =
        |uac: &Uac, until: Instant, stop_at_first: bool| -> (u64, Option<u8>) {
            let mut n = 0;
            let mut pt = None;
            let mut next = Instant::now();
            while Instant::now() < until {
                if Instant::now() >= next {
                    let p = rtp_packet(0, false, seq, ts, ssrc, &silence);
                    uac.rtp.send_to(&p, to).unwrap();
                    seq = seq.wrapping_add(1);
                    ts = ts.wrapping_add(160);
                    next += Duration::from_millis(20);
                }
                if let Ok((len, from)) = uac.rtp.recv_from(&mut buf)
                    && let Some((p, _, _)) = rtp_header(&buf[..len])
                {
                    assert_eq!(from, to, "RTP from an unexpected address");
                    n += 1;
                    pt = Some(p);
                    if stop_at_first {
                        break;
                    }
                }
            }
            (n, pt)
        };
    let (before, _) = send_and_count(&uac, Instant::now() + Duration::from_secs(4), false);
    eprintln!("{before} RTP packets from the agent in the 4 s before the ACK");
    assert_eq!(
        before,
        0,
        "the agent sent {before} RTP packets before the ACK; log:\n{}",
        agent.log()
    );
    // Nor RTCP (its first report would be due 2.5 s after sending starts).
    uac.rtcp.set_nonblocking(true).unwrap();
    let mut rtcp_before = 0;
    let mut rtcp_buf = [0u8; 1500];
    while uac.rtcp.recv_from(&mut rtcp_buf).is_ok() {
        rtcp_before += 1;
    }
    assert_eq!(rtcp_before, 0, "the agent sent RTCP before the ACK");

    let acked = Instant::now();
    uac.ack();
    let (after, pt) = send_and_count(&uac, acked + Duration::from_secs(1), true);
    assert!(
        after > 0,
        "no RTP from the agent within 1 s of the ACK; log:\n{}",
        agent.log()
    );
    assert_eq!(pt, Some(0), "the agent's stream is not PCMU");
    eprintln!(
        "the agent's RTP started {} ms after the ACK",
        acked.elapsed().as_millis()
    );
    uac.bye();
    let call = wait_for(30, "the call to end", || {
        db.calls().into_iter().find(|c| c.ended.is_some())
    });
    assert_eq!(call.reason.as_deref(), Some("caller hung up"), "{call:?}");
}

// ---------------------------------------------------------------------------
// RTCP, read and written by hand from RFC 3550 §6.4
// ---------------------------------------------------------------------------

/// One report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy)]
struct Block {
    ssrc: u32,
    fraction_lost: u8,
    total_lost: u32,
    highest_seq: u32,
    jitter: u32,
    lsr: u32,
    dlsr: u32,
}

/// What one RTCP packet of a compound datagram says (every field is shown
/// in failure messages).
#[derive(Debug)]
#[allow(dead_code)]
enum Rtcp {
    Sr {
        ssrc: u32,
        ntp: u64,
        packets: u32,
        blocks: Vec<Block>,
    },
    Rr {
        ssrc: u32,
        blocks: Vec<Block>,
    },
    Sdes,
    Bye(u32),
    Other(u8),
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

fn blocks(d: &[u8], count: usize) -> Vec<Block> {
    (0..count)
        .map(|i| {
            let b = &d[i * 24..];
            Block {
                ssrc: be32(b, 0),
                fraction_lost: b[4],
                total_lost: be32(b, 4) & 0x00ff_ffff,
                highest_seq: be32(b, 8),
                jitter: be32(b, 12),
                lsr: be32(b, 16),
                dlsr: be32(b, 20),
            }
        })
        .collect()
}

/// A compound RTCP datagram, or None if it is not one.
fn parse_rtcp(mut d: &[u8]) -> Option<Vec<Rtcp>> {
    let mut out = Vec::new();
    while !d.is_empty() {
        if d.len() < 8 || d[0] >> 6 != 2 {
            return None;
        }
        let count = (d[0] & 0x1f) as usize;
        let len = (u16::from_be_bytes([d[2], d[3]]) as usize + 1) * 4;
        if len > d.len() {
            return None;
        }
        let p = &d[..len];
        out.push(match p[1] {
            200 if len >= 28 + count * 24 => Rtcp::Sr {
                ssrc: be32(p, 4),
                ntp: ((be32(p, 8) as u64) << 32) | be32(p, 12) as u64,
                packets: be32(p, 20),
                blocks: blocks(&p[28..], count),
            },
            201 if len >= 8 + count * 24 => Rtcp::Rr {
                ssrc: be32(p, 4),
                blocks: blocks(&p[8..], count),
            },
            202 => Rtcp::Sdes,
            203 => Rtcp::Bye(be32(p, 4)),
            t => Rtcp::Other(t),
        });
        d = &d[len..];
    }
    Some(out)
}

/// A receiver report from `ssrc` with one block about `about`.
fn receiver_report(ssrc: u32, about: Block) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&about.ssrc.to_be_bytes());
    p.extend_from_slice(&(((about.fraction_lost as u32) << 24) | about.total_lost).to_be_bytes());
    for v in [about.highest_seq, about.jitter, about.lsr, about.dlsr] {
        p.extend_from_slice(&v.to_be_bytes());
    }
    // SDES with a CNAME, as RFC 3550 §6.1 wants in every compound packet.
    let cname = b"tester@127.0.0.1";
    let mut sdes = vec![0x81, 202, 0, 0];
    sdes.extend_from_slice(&ssrc.to_be_bytes());
    sdes.push(1);
    sdes.push(cname.len() as u8);
    sdes.extend_from_slice(cname);
    while !sdes.len().is_multiple_of(4) || sdes.len() < 8 + 2 + cname.len() + 1 {
        sdes.push(0);
    }
    let words = (sdes.len() / 4 - 1) as u16;
    sdes[2..4].copy_from_slice(&words.to_be_bytes());
    p.extend_from_slice(&sdes);
    p
}

/// The agent sends sender reports about its audio with a block about ours
/// every 5 s once the call is established; it reads the caller's receiver
/// reports (not a stranger's) into the call's media quality, round trip
/// included; and its leg's end says goodbye.
#[test]
fn rtcp_reports_go_both_ways_and_strangers_are_not_believed() {
    let agent = Agent::start("rtcp");
    let dir = agent.dir.path();
    let speech = speech_ulaw(dir, "caller", CALLER, 0.3, 0.5, 0.7);
    let db = Db::open(&agent.database());
    let mut uac = Uac::new(&agent);
    uac.invite();
    uac.ack();
    let to = uac.agent_rtp.unwrap();
    let agent_rtcp = SocketAddr::new(to.ip(), to.port() + 1);
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = Rng::new();
    let mut stream = Stream::new(&mut rng);
    let (ours, first_seq) = (stream.ssrc, stream.seq);
    let done = AtomicBool::new(false);
    // 12 s of audio: two or three of the agent's reports.
    let frames: Vec<Vec<u8>> = speech.iter().cycle().take(600).cloned().collect();
    let mut reports: Vec<(Instant, Vec<Rtcp>)> = Vec::new();
    let mut agent_ssrc = None::<u32>;
    std::thread::scope(|s| {
        s.spawn(|| {
            stream.send(&uac.rtp, to, &frames);
            done.store(true, Ordering::Relaxed);
        });
        uac.rtcp
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 1500];
        let mut answered = 0;
        while !done.load(Ordering::Relaxed) {
            let Ok((n, from)) = uac.rtcp.recv_from(&mut buf) else {
                continue;
            };
            assert_eq!(from, agent_rtcp, "RTCP from the agent's RTCP port");
            let parsed =
                parse_rtcp(&buf[..n]).unwrap_or_else(|| panic!("not RTCP: {:02x?}", &buf[..n]));
            if let Some(Rtcp::Sr { ssrc, ntp, .. }) = parsed.first() {
                agent_ssrc = Some(*ssrc);
                // A stranger on our host, first with a made-up SSRC, then
                // with ours, says the agent's audio is all lost.
                let lie = Block {
                    ssrc: *ssrc,
                    fraction_lost: 255,
                    total_lost: 999_999,
                    highest_seq: 1,
                    jitter: 8000,
                    lsr: 0,
                    dlsr: 0,
                };
                stranger
                    .send_to(&receiver_report(rng.u32(), lie), agent_rtcp)
                    .unwrap();
                stranger
                    .send_to(&receiver_report(ours, lie), agent_rtcp)
                    .unwrap();
                // We answer each SR 20 ms after it came: LSR is its NTP
                // time's middle 32 bits, DLSR the 20 ms held.
                std::thread::sleep(Duration::from_millis(20));
                let truth = Block {
                    ssrc: *ssrc,
                    fraction_lost: 64,
                    total_lost: 7 + answered,
                    highest_seq: 1000,
                    jitter: 80,
                    lsr: (*ntp >> 16) as u32,
                    dlsr: 20 * 65536 / 1000,
                };
                uac.rtcp
                    .send_to(&receiver_report(ours, truth), agent_rtcp)
                    .unwrap();
                answered += 1;
            }
            reports.push((Instant::now(), parsed));
        }
    });
    // Let the agent read our last report before the BYE ends the leg.
    std::thread::sleep(Duration::from_millis(300));
    uac.bye();
    // The leg's last report, with a BYE.
    uac.rtcp
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let bye = wait_for(10, "the agent's RTCP BYE", || {
        let (n, _) = uac.rtcp.recv_from(&mut buf).ok()?;
        let p = parse_rtcp(&buf[..n])?;
        p.iter()
            .find_map(|r| if let Rtcp::Bye(s) = r { Some(*s) } else { None })
    });
    let call = wait_for(60, "the call to end", || {
        db.calls().into_iter().find(|c| c.ended.is_some())
    });
    eprintln!("{} reports: {reports:?}", reports.len());

    let agent_ssrc = agent_ssrc.expect("a sender report from the agent");
    assert_eq!(bye, agent_ssrc);
    assert!(
        (2..=3).contains(&reports.len()),
        "{} reports in 12 s",
        reports.len()
    );
    for pair in reports.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap > Duration::from_millis(4_000) && gap < Duration::from_millis(6_500),
            "{gap:?} between reports"
        );
    }
    for (_, r) in &reports {
        let Rtcp::Sr {
            ssrc,
            packets,
            blocks,
            ..
        } = &r[0]
        else {
            panic!("the agent sends audio, so its report is an SR: {r:?}");
        };
        assert_eq!(*ssrc, agent_ssrc);
        assert!(*packets > 50, "{r:?}");
        assert!(matches!(r.get(1), Some(Rtcp::Sdes)), "no SDES: {r:?}");
        let b = blocks
            .iter()
            .find(|b| b.ssrc == ours)
            .unwrap_or_else(|| panic!("no block about our stream: {r:?}"));
        // Loopback: nothing lost, and the highest sequence is one of ours.
        assert_eq!(b.total_lost, 0, "{b:?}");
        let into = (b.highest_seq as u16).wrapping_sub(first_seq);
        assert!((50..600).contains(&into), "{b:?} from sequence {first_seq}");
    }

    let (rtcp_sent, rtcp_received, rtcp_foreign, remote_lost, fraction, jitter, rtt): (
        i64,
        i64,
        i64,
        i64,
        f64,
        f64,
        Option<f64>,
    ) = wait_for(
        10,
        "the call's media row (the store writes it after the call)",
        || {
            db.0.query_row(
                "SELECT rtcp_sent, rtcp_received, rtcp_foreign, remote_lost, remote_fraction_lost,
                    remote_jitter_ms, rtt_ms FROM call_media WHERE call_id = ?1",
                [&call.id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .ok()
        },
    );
    eprintln!(
        "stored: sent {rtcp_sent}, received {rtcp_received}, foreign {rtcp_foreign}, \
         remote lost {remote_lost} ({fraction}), jitter {jitter} ms, rtt {rtt:?} ms"
    );
    let answered = reports.len() as i64;
    assert!(rtcp_sent > answered, "the BYE report counts too");
    assert_eq!(rtcp_received, answered);
    assert_eq!(rtcp_foreign, 2 * answered, "the stranger's reports");
    assert_eq!(remote_lost, 7 + answered - 1, "the latest of our counts");
    assert_eq!(fraction, 0.25);
    assert_eq!(jitter, 10.0);
    let rtt = rtt.expect("a round trip from our LSR/DLSR");
    // On loopback well under a millisecond; a busy box may take longer.
    assert!((0.0..1000.0).contains(&rtt), "loopback rtt {rtt} ms");
}
