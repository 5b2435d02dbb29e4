//! Secure transports: desk phones (baresip) register and call over SIP
//! TLS with SRTP (SDES); the box bridges, records and transcribes the call
//! while nothing of it crosses the wire as plain RTP (a raw socket on
//! loopback sees every datagram). With `media.srtp = "required"` plain RTP
//! is refused.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const SECRET_101: &str = "desk-101-secret";
const SECRET_102: &str = "desk-102-secret";

fn config(tls_port: u16, extra: &str) -> String {
    format!(
        "[sip]\ntls = true\ntls_port = {tls_port}\n{extra}\
         [[extension]]\nnumber = \"101\"\nname = \"Front desk\"\nsecret = \"{SECRET_101}\"\n\
         [[extension]]\nnumber = \"102\"\nname = \"Workshop\"\nsecret = \"{SECRET_102}\"\n"
    )
}

/// UDP datagrams to or from the agent's RTP ports (20000-29999 in the
/// test config) that carry RTP with PCMU (payload type 0): their lengths.
/// Plain 20 ms PCMU is 172 bytes (12 + 160); SRTP adds an 80-bit tag.
struct Sniffer {
    lengths: Arc<Mutex<Vec<usize>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sniffer {
    /// A raw packet socket (AF_PACKET, every protocol; the tests run as
    /// root) reading loopback's frames on a thread.
    fn start() -> Sniffer {
        use socket2::{Domain, Protocol, Socket, Type};
        const AF_PACKET: i32 = 17;
        const SOCK_RAW: i32 = 3;
        const ETH_P_ALL_BE: i32 = 0x0300;
        let sock = Socket::new(
            Domain::from(AF_PACKET),
            Type::from(SOCK_RAW),
            Some(Protocol::from(ETH_P_ALL_BE)),
        )
        .expect("a raw packet socket (tests run as root)");
        sock.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        let lengths = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, st) = (lengths.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 65536];
            while !st.load(Ordering::Relaxed) {
                let Ok(n) = sock.recv(&mut buf) else { continue };
                // SAFETY: recv initialised the first n bytes.
                let frame: Vec<u8> = buf[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                if let Some(len) = pcmu_rtp_len(&frame) {
                    l.lock().unwrap().push(len);
                }
            }
        });
        Sniffer {
            lengths,
            stop,
            thread: Some(thread),
        }
    }

    fn lengths(&mut self) -> Vec<usize> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.lengths.lock().unwrap().clone()
    }
}

/// The UDP payload length of an RTP/PCMU datagram to or from the agent's
/// RTP range in a loopback frame (14-byte link header, IPv4), else None.
fn pcmu_rtp_len(frame: &[u8]) -> Option<usize> {
    let ip = frame.get(14..)?;
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 17 {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let udp = ip.get(ihl..)?;
    let src = u16::from_be_bytes([*udp.first()?, *udp.get(1)?]);
    let dst = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    let ours = |p: u16| (20000..=29999).contains(&p);
    if !ours(src) && !ours(dst) {
        return None;
    }
    let payload = udp.get(8..)?;
    let rtp = payload.len() >= 12 && payload[0] >> 6 == 2 && payload[1] & 0x7f == 0;
    rtp.then_some(payload.len())
}

#[test]
fn phones_over_tls_with_srtp_are_bridged_recorded_and_transcribed_with_no_plain_rtp_on_the_wire() {
    let tls_port = free_port();
    let agent = Agent::start_with("secure-srtp", &config(tls_port, ""));
    // The self-signed pair made at first start, kept in the data dir.
    let cert = agent.dir.path().join("data/tls/sip-cert.pem");
    assert!(
        std::fs::read_to_string(&cert)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let mut sniffer = Sniffer::start();
    let hello = speech_wav(
        agent.dir.path(),
        "workshop",
        "Good morning, this is the workshop.",
        8000,
        0.5,
        3.0,
    );
    let _workshop = DeskPhone::start_secure(
        &agent,
        tls_port,
        "102",
        SECRET_102,
        true,
        Some(&hello),
        None,
        60,
    );
    let words = speech_wav(
        agent.dir.path(),
        "desk",
        "Hello, I would like a quote for a new boiler please.",
        8000,
        0.5,
        6.0,
    );
    let desk = DeskPhone::start_secure(
        &agent,
        tls_port,
        "101",
        SECRET_101,
        false,
        Some(&words),
        Some("102"),
        40,
    );
    // Both registered over TLS.
    let ext: serde_json::Value = serde_json::from_str(&ok(&agent, &["extensions"])).unwrap();
    for e in ext.as_array().unwrap() {
        assert_eq!(e["contacts"][0]["transport"], "tls", "{ext}");
    }
    let db = Db::open(&agent.database());
    let (id, transport) = wait_for(60, "the call to end", || {
        db.0.query_row(
            "SELECT id, transport FROM calls WHERE ended_at_ms IS NOT NULL AND answered_at_ms IS NOT NULL",
            [],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )
        .ok()
    });
    assert_eq!(transport, "tls");
    wait_words(
        &db,
        &id,
        &[("caller", "boiler"), ("callee", "workshop")],
        60,
    );
    let wav = exported_recording(&agent, &db, &id);
    let spec = hound::WavReader::open(&wav).unwrap().spec();
    assert_eq!(spec.channels, 2, "both sides recorded");
    let lengths = sniffer.lengths();
    let srtp = lengths.iter().filter(|&&l| l == 172 + 10).count();
    let plain = lengths.iter().filter(|&&l| l == 172).count();
    eprintln!(
        "RTP datagrams of the call: {} (SRTP {srtp}, plain {plain})",
        lengths.len()
    );
    assert!(srtp > 300, "both legs both ways were SRTP: {srtp}");
    assert_eq!(plain, 0, "plain RTP crossed the wire");
    // SDES keys travel only in signalling, never into the log.
    let log = agent.log();
    assert!(!log.contains("inline:"), "a key in the log");
    drop(desk);
}

#[test]
fn with_srtp_required_plain_rtp_is_refused() {
    let tls_port = free_port();
    let agent = Agent::start_with(
        "secure-required",
        &(config(tls_port, "") + "[media]\nsrtp = \"required\"\n"),
    );
    // A plain offer to the agent: 488, and no call kept.
    assert_eq!(
        invite_from([127, 0, 0, 7], &agent, "handlet", "07700900123"),
        488
    );
}
