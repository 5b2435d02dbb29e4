//! Secure transports: desk phones (baresip) register and call over SIP
//! TLS with SRTP (SDES); the box bridges, records and transcribes the call
//! while nothing of it crosses the wire as plain RTP (a raw socket on
//! loopback sees every datagram). With `media.srtp = "required"` plain RTP
//! is refused.

mod common;
use common::*;

const SECRET_101: &str = "desk-101-secret";
const SECRET_102: &str = "desk-102-secret";
/// Each test's agent's RTP ports (its own, so the sniffer sees only it).
const RTP_CALL: std::ops::RangeInclusive<u16> = 31000..=31499;
const RTP_HOLD: std::ops::RangeInclusive<u16> = 31500..=31999;

/// The agent's config: TLS on `tls_port`, RTP on `rtp` (a range of the
/// test's own), the two desk phones.
fn config(tls_port: u16, rtp: std::ops::RangeInclusive<u16>) -> String {
    format!(
        "[sip]\ntls = true\ntls_port = {tls_port}\n\
         [media]\nrtp_port_min = {}\nrtp_port_max = {}\n\
         [[extension]]\nnumber = \"101\"\nname = \"Front desk\"\nsecret = \"{SECRET_101}\"\n\
         [[extension]]\nnumber = \"102\"\nname = \"Workshop\"\nsecret = \"{SECRET_102}\"\n",
        rtp.start(),
        rtp.end()
    )
}

#[test]
fn phones_over_tls_with_srtp_are_bridged_recorded_and_transcribed_with_no_plain_rtp_on_the_wire() {
    let tls_port = free_port();
    // rsipstack logs whole messages, SDP with its keys, at info and debug:
    // a technician's filter, which must still not put a key in the log.
    let agent = Agent::start_with(
        "secure-srtp",
        &(config(tls_port, RTP_CALL.clone()) + "[log]\nfilter = \"info,rsipstack=debug\"\n"),
    );
    // The self-signed pair made at first start, kept in the data dir.
    let cert = agent.dir.path().join("data/tls/sip-cert.pem");
    assert!(
        std::fs::read_to_string(&cert)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let mut sniffer = Sniffer::start(RTP_CALL);
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
        "",
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
        "",
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
    // PCMU datagrams of the call: plain 20 ms is 172 bytes (12 + 160),
    // SRTP adds an 80-bit tag.
    let lengths: Vec<usize> = sniffer
        .stop()
        .iter()
        .filter(|d| d.payload_type() == 0)
        .map(|d| d.rtp.len())
        .collect();
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
    assert!(log.contains("inline:<key>"), "rsipstack logged the SDP");
    assert_eq!(
        log.matches("inline:").count(),
        log.matches("inline:<key>").count(),
        "a key in the log"
    );
    drop(desk);
}

#[test]
fn with_srtp_required_plain_rtp_is_refused() {
    let tls_port = free_port();
    let agent = Agent::start_with(
        "secure-required",
        &config(tls_port, 32000..=32099).replace("[media]\n", "[media]\nsrtp = \"required\"\n"),
    );
    // A plain offer to the agent: 488, and no call kept.
    assert_eq!(
        invite_from([127, 0, 0, 7], &agent, "handlet", "07700900123"),
        488
    );
}

/// Mean square of a WAV's first channel over [from, to) seconds.
fn energy(wav: &std::path::Path, from: f32, to: f32) -> f64 {
    let mut r = hound::WavReader::open(wav).unwrap();
    let rate = r.spec().sample_rate as f32;
    let ch = r.spec().channels as usize;
    let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).step_by(ch).collect();
    let (a, b) = (
        ((from * rate) as usize).min(s.len()),
        ((to * rate) as usize).min(s.len()),
    );
    s[a..b].iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / (b - a).max(1) as f64
}

#[test]
fn an_srtp_call_is_held_and_resumed_by_re_invite_and_stays_encrypted() {
    let tls_port = free_port();
    let agent = Agent::start_with("secure-hold", &config(tls_port, RTP_HOLD.clone()));
    let mut sniffer = Sniffer::start(RTP_HOLD);
    let quiet = speech_wav(agent.dir.path(), "quiet", ".", 8000, 0.0, 25.0);
    let ctrl = free_port();
    let _workshop = DeskPhone::start_secure(
        &agent,
        tls_port,
        "102",
        SECRET_102,
        true,
        Some(&quiet),
        None,
        60,
        &format!("module_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl}\n"),
    );
    // The desk phone records what it hears; its own audio ends after ~17 s.
    let words = speech_wav(agent.dir.path(), "desk", "Hello.", 8000, 0.2, 16.0);
    let desk = DeskPhone::start_secure(
        &agent,
        tls_port,
        "101",
        SECRET_101,
        false,
        Some(&words),
        Some("102"),
        40,
        "module sndfile.so\nsnd_path {dir}\n",
    );
    wait_for(20, "the call to be bridged", || {
        agent.log().contains("call bridged").then_some(())
    });
    let bridged = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        !baresip_command(ctrl, "hold", "").is_empty(),
        "ctrl_tcp answered"
    );
    wait_for(10, "the hold to reach the box", || {
        agent.log().contains("on=true").then_some(())
    });
    let held = bridged.elapsed().as_secs_f32();
    std::thread::sleep(std::time::Duration::from_secs(6));
    baresip_command(ctrl, "resume", "");
    if !wait_until(20, || agent.log().contains("on=false")) {
        let out = std::fs::read_to_string(agent.dir.path().join("phone-102/baresip.out"))
            .unwrap_or_default();
        panic!(
            "the resume did not reach the box\nagent:\n{}\nphone 102:\n{out}",
            agent.log()
        );
    }
    let resumed = bridged.elapsed().as_secs_f32();
    wait_for(30, "the call to end", || {
        agent.log().contains("bridged call ended").then_some(())
    });
    // PCMU datagrams of the call: plain 20 ms is 172 bytes (12 + 160),
    // SRTP adds an 80-bit tag.
    let lengths: Vec<usize> = sniffer
        .stop()
        .iter()
        .filter(|d| d.payload_type() == 0)
        .map(|d| d.rtp.len())
        .collect();
    let plain = lengths.iter().filter(|&&l| l == 172).count();
    let srtp = lengths.iter().filter(|&&l| l == 182).count();
    assert!(srtp > 300, "SRTP throughout: {srtp}");
    assert_eq!(plain, 0, "plain RTP after the re-INVITEs");
    drop(desk);
    let dir = agent.dir.path().join("phone-101");
    let heard = wait_for(10, "the desk phone's recording", || {
        files(&dir)
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
    });
    // The hold tone (encrypted like the rest) reached the desk phone only
    // while it was held.
    let before = energy(&heard, 0.5, held - 0.5);
    let during = energy(&heard, held + 0.5, resumed - 0.5);
    eprintln!("heard: before hold {before:.0}, on hold {during:.0}");
    assert!(
        during > 50.0 * before.max(1.0),
        "hold tone: {during:.0} vs {before:.0}"
    );
}

fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}
