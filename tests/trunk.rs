//! Trunks against a real provider: Kamailio (tests/common/kamailio.rs)
//! takes the box's REGISTER with digest auth, gives 423 for too short a
//! registration, delivers calls for the DID, and goes down and comes back;
//! baresip dials the DID as a caller on the phone network would.

mod common;
use common::kamailio::{Itsp, Kamailio};
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const ACCOUNT: &str = "441632960100";
const DID: &str = "+441632960001";

fn itsp(algorithm: &'static str) -> Itsp {
    Itsp {
        ip: [127, 0, 0, 5],
        port: free_port(),
        user: ACCOUNT.into(),
        password: "trunk-pass-1".into(),
        algorithm,
        min_expires: 120,
        did: DID.into(),
        box_addr: None,
        pstn: None,
        tls: None,
    }
}

/// The agent's `[[trunk]]` for `k`, registering for `expires` seconds,
/// with the password in a file of its own.
fn trunk_config(dir: &Path, k: &Itsp, password: &str, expires: u32) -> String {
    let pass = dir.join("trunk.pass");
    std::fs::write(&pass, format!("{password}\n")).unwrap();
    format!(
        "[[trunk]]\nname = \"itsp\"\nmode = \"register\"\nhost = \"{}\"\nusername = \"{ACCOUNT}\"\n\
         password_file = {:?}\nexpires_secs = {expires}\nkeepalive_secs = 1\ndids = [\"01632 960001\"]\n",
        k.addr(),
        pass.display().to_string()
    )
}

fn status(agent: &Agent) -> serde_json::Value {
    let out = ok(agent, &["status"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status is JSON ({e}): {out}"))
}

fn trunk_state(agent: &Agent) -> (String, serde_json::Value) {
    let st = status(agent);
    let t = st["trunks"][0].clone();
    (t["state"].as_str().unwrap_or("").to_string(), t)
}

fn wait_state(agent: &Agent, k: &Kamailio, state: &str, secs: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let (s, t) = trunk_state(agent);
        if s == state {
            return t;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "trunk state is {s}, not {state}, after {secs} s: {t}\nagent log:\n{}\nprovider log:\n{}",
                agent.log(),
                k.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// baresip, a caller on the phone network with number 07700 900123,
/// dials `target` and hangs up after `secs`.
fn caller(dir: &Path, wav: &Path, target: &str, secs: u64) -> (Reaped, std::path::PathBuf) {
    let cfg = baresip_config(
        dir,
        "pstn-caller",
        Some(wav),
        "udp",
        "<sip:07700900123@127.0.0.1>;regint=0;audio_codecs=PCMU",
    );
    let out = std::fs::File::create(cfg.join("baresip.out")).unwrap();
    let child = Command::new("baresip")
        .arg("-f")
        .arg(&cfg)
        .args(["-e", &format!("/dial {target}"), "-t", &secs.to_string()])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("baresip is installed (make test installs it)");
    (Reaped(child), cfg)
}

#[test]
fn a_trunk_registers_through_a_423_keeps_alive_and_takes_calls_for_its_did() {
    let dir = TempDir::new("trunk-register");
    let k = Kamailio::start(dir.path(), itsp("MD5"));
    // 60 s is below the provider's minimum of 120: a 423 first.
    let extra = trunk_config(dir.path(), &k.itsp, "trunk-pass-1", 60);
    let agent = Agent::start_in(dir, &extra);
    let t = wait_state(&agent, &k, "registered", 20);
    let expires = t["expires_at_ms"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        (now + 100_000..=now + 121_000).contains(&expires),
        "registered for the provider's 120 s: {t}"
    );
    let log = k.log();
    assert!(log.contains("expires=60"), "asked for 60 s first:\n{log}");
    assert!(
        log.contains("expires=120"),
        "retried with Min-Expires:\n{log}"
    );
    assert!(log.contains(&format!("registered user={ACCOUNT}")), "{log}");
    // The password is nowhere in what the agent says.
    assert!(!agent.log().contains("trunk-pass-1"));
    assert!(!ok(&agent, &["config", "show"]).contains("trunk-pass-1"));

    // Keepalives: the provider sees OPTIONS from the box every second.
    wait_for(10, "keepalives at the provider", || {
        (k.count("keepalive OPTIONS from 127.0.0.1") >= 3).then_some(())
    });

    // A caller on the phone network dials the DID through the provider.
    let wav = speech_wav(
        agent.dir.path(),
        "caller",
        "Hello, I would like a quote for a new boiler please.",
        8000,
        0.3,
        1.5,
    );
    let (mut baresip, cfg) = caller(
        agent.dir.path(),
        &wav,
        &format!("sip:{DID}@{}", k.itsp.addr()),
        12,
    );
    let db = Db::open(&agent.database());
    let row: (String, Option<String>, Option<String>, Option<String>) =
        wait_for(40, "the trunk call to be stored and ended", || {
            db.0.query_row(
                "SELECT id, trunk, did, caller FROM calls WHERE ended_at_ms IS NOT NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .ok()
        });
    let _ = baresip.0.wait();
    let out = std::fs::read_to_string(cfg.join("baresip.out")).unwrap_or_default();
    assert!(out.contains("Call established"), "baresip:\n{out}");
    assert_eq!(row.1.as_deref(), Some("itsp"));
    assert_eq!(
        row.2.as_deref(),
        Some(DID),
        "DID from To after the location lookup"
    );
    assert_eq!(row.3.as_deref(), Some("+447700900123"), "caller as E.164");
    assert!(k.log().contains("call for the DID"));
    let text = wait_for(60, "the caller's words", || {
        let t = db.channel_transcript(&row.0, "caller");
        (!t.is_empty()).then_some(t)
    });
    assert!(text.to_lowercase().contains("boiler"), "{text}");
}

#[test]
fn sha256_digest_registers_too() {
    let dir = TempDir::new("trunk-sha256");
    let k = Kamailio::start(dir.path(), itsp("SHA-256"));
    let extra = trunk_config(dir.path(), &k.itsp, "trunk-pass-1", 300);
    let agent = Agent::start_in(dir, &extra);
    wait_state(&agent, &k, "registered", 20);
    assert!(k.log().contains(&format!("registered user={ACCOUNT}")));
}

#[test]
fn a_wrong_password_is_a_warning_with_backoff_never_a_crash() {
    let dir = TempDir::new("trunk-wrong");
    let k = Kamailio::start(dir.path(), itsp("MD5"));
    let extra = trunk_config(dir.path(), &k.itsp, "not-the-password", 300);
    let agent = Agent::start_in(dir, &extra);
    let t = wait_state(&agent, &k, "failed", 20);
    let err = t["last_error"].as_str().unwrap();
    assert!(err.contains("credentials refused"), "{t}");
    // Tried again, later each time.
    wait_for(20, "a third attempt", || {
        (k.count(&format!("user={ACCOUNT} expires")) >= 6).then_some(())
    });
    let log = agent.log();
    let waits: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("trunk registration failed"))
        .filter_map(|l| log_field(l, "trunk registration failed", "retry_in_secs"))
        .collect();
    assert!(waits.len() >= 2, "{log}");
    assert!(!log.contains("not-the-password"));
    // Still answering.
    assert!(status(&agent)["uptime_secs"].is_u64());
    assert_eq!(k.count(&format!("registered user={ACCOUNT}")), 0);
}

#[test]
fn the_trunk_going_down_and_coming_back_re_registers() {
    let dir = TempDir::new("trunk-down");
    let mut k = Kamailio::start(dir.path(), itsp("MD5"));
    let extra = trunk_config(dir.path(), &k.itsp, "trunk-pass-1", 300);
    let agent = Agent::start_in(dir, &extra);
    wait_state(&agent, &k, "registered", 20);
    k.stop();
    let t = wait_state(&agent, &k, "unreachable", 20);
    assert!(t["keepalives_unanswered"].as_u64().unwrap() >= 2, "{t}");
    let k = k.restart();
    wait_state(&agent, &k, "registered", 30);
    // The provider restarted empty: it knows the box again.
    wait_for(10, "the new registration at the provider", || {
        (k.count(&format!("registered user={ACCOUNT}")) >= 2).then_some(())
    });
}

#[test]
fn an_ip_trunk_takes_calls_from_its_host_only() {
    let dir = TempDir::new("trunk-ip");
    let port = free_port();
    // The provider sends DID calls straight to the box's address.
    let mut spec = itsp("MD5");
    spec.box_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let k = Kamailio::start(dir.path(), spec);
    let extra = format!(
        "[[trunk]]\nname = \"ip-trunk\"\nmode = \"ip\"\nhost = \"{}\"\nhosts = [\"127.0.0.7/32\"]\ndids = [\"{DID}\"]\n",
        k.itsp.addr()
    );
    let agent = Agent::start_on(dir, port, &extra);
    // A stranger's INVITE straight to the box: refused.
    assert_eq!(invite_from([127, 0, 0, 6], &agent, DID, "07700900123"), 403);
    // From a listed block, for a number that is not the trunk's: 404.
    assert_eq!(
        invite_from([127, 0, 0, 7], &agent, "+441632960999", "07700900123"),
        404
    );
    let st = status(&agent);
    assert!(
        st["limits_hit"]["invites_from_strangers"].as_u64().unwrap() >= 1,
        "{st}"
    );
    assert_eq!(st["trunks"][0]["state"], "registered", "{st}");

    // Through the provider: taken, with the DID from the Request-URI.
    let wav = speech_wav(agent.dir.path(), "caller", "Hello there.", 8000, 0.3, 1.0);
    let (mut baresip, cfg) = caller(
        agent.dir.path(),
        &wav,
        &format!("sip:{DID}@{}", k.itsp.addr()),
        6,
    );
    let db = Db::open(&agent.database());
    let row: (Option<String>, Option<String>) = wait_for(30, "the IP-trunk call", || {
        db.0.query_row(
            "SELECT trunk, did FROM calls WHERE ended_at_ms IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok()
    });
    let _ = baresip.0.wait();
    let out = std::fs::read_to_string(cfg.join("baresip.out")).unwrap_or_default();
    assert!(out.contains("Call established"), "baresip:\n{out}");
    assert_eq!(row, (Some("ip-trunk".into()), Some(DID.into())));
}

#[test]
fn a_caller_on_the_phone_network_reaches_the_did_and_the_box_rings_the_desk_phones() {
    let dir = TempDir::new("trunk-ring");
    let k = Kamailio::start(dir.path(), itsp("MD5"));
    let extra = format!(
        "{}[[extension]]\nnumber = \"101\"\nsecret = \"desk-101-secret\"\n\
         [[extension]]\nnumber = \"102\"\nsecret = \"desk-102-secret\"\n\
         [inbound]\nring = [\"101\", \"102\"]\nring_secs = 20\n",
        trunk_config(dir.path(), &k.itsp, "trunk-pass-1", 300)
    );
    let agent = Agent::start_in(dir, &extra);
    wait_state(&agent, &k, "registered", 20);
    let office = speech_wav(
        agent.dir.path(),
        "office",
        "Good morning, this is the workshop.",
        8000,
        0.5,
        10.0,
    );
    let desk = DeskPhone::start(&agent, "101", "desk-101-secret", false, None, 60);
    let _workshop = DeskPhone::start(&agent, "102", "desk-102-secret", true, Some(&office), 60);
    let wav = speech_wav(
        agent.dir.path(),
        "caller",
        "Hello, I would like a quote for a new boiler please.",
        8000,
        4.0,
        2.0,
    );
    let (mut baresip, cfg) = caller(
        agent.dir.path(),
        &wav,
        &format!("sip:{DID}@{}", k.itsp.addr()),
        30,
    );
    let db = Db::open(&agent.database());
    let id: String = wait_for(60, "the trunk call to end with its legs", || {
        db.0.query_row(
            "SELECT c.id FROM calls c WHERE c.ended_at_ms IS NOT NULL AND c.answered_at_ms IS NOT NULL
             AND EXISTS (SELECT 1 FROM call_legs l WHERE l.call_id = c.id)",
            [],
            |r| r.get(0),
        )
        .ok()
    });
    let _ = baresip.0.wait();
    let out = std::fs::read_to_string(cfg.join("baresip.out")).unwrap_or_default();
    assert!(out.contains("Call established"), "caller:\n{out}");
    // Ringback as early media: a 183 with our SDP, and our RTP reaching
    // the caller before the call is answered.
    let rtp_at = out.find("incoming rtp for 'audio' established");
    let answered_at = out.find("Call established");
    assert!(out.contains("183 Session Progress"), "caller:\n{out}");
    assert!(
        rtp_at.is_some() && rtp_at < answered_at,
        "RTP before the answer:\n{out}"
    );
    let (trunk, did, reason): (String, String, String) =
        db.0.query_row(
            "SELECT trunk, did, end_reason FROM calls WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((trunk.as_str(), did.as_str()), ("itsp", DID));
    assert_eq!(
        reason, "caller hung up",
        "BYE from the caller, through the provider"
    );
    let outcomes: Vec<(String, String)> =
        db.0.prepare("SELECT target, outcome FROM call_legs WHERE call_id = ?1 ORDER BY target")
            .unwrap()
            .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    assert_eq!(
        outcomes,
        [
            ("101".to_string(), "answered elsewhere".to_string()),
            ("102".to_string(), "answered".to_string())
        ]
    );
    assert!(
        desk.output().to_lowercase().contains("session closed"),
        "101 stopped ringing"
    );
    let both = wait_for(60, "both sides' words", || {
        let c = db.channel_transcript(&id, "caller").to_lowercase();
        let p = db.channel_transcript(&id, "callee").to_lowercase();
        (c.contains("boiler") && p.contains("workshop")).then_some((c, p))
    });
    eprintln!("caller: {:?}; phone: {:?}", both.0, both.1);
}

/// A phone on the phone network ("mobile"): baresip at `addr`, answering
/// by itself and playing `wav`.
fn mobile(dir: &Path, addr: std::net::SocketAddr, wav: &Path) -> (Reaped, std::path::PathBuf) {
    let cfg = baresip_config(
        dir,
        "mobile",
        Some(wav),
        "udp",
        &format!("<sip:mobile@{addr}>;regint=0;answermode=auto;audio_codecs=PCMU"),
    );
    let text = std::fs::read_to_string(cfg.join("config")).unwrap();
    let text = text
        .replace("sip_listen 127.0.0.1:0", &format!("sip_listen {addr}"))
        .replace(
            "net_interface 127.0.0.1",
            &format!("net_interface {}", addr.ip()),
        );
    std::fs::write(cfg.join("config"), text).unwrap();
    let out = std::fs::File::create(cfg.join("baresip.out")).unwrap();
    let child = Command::new("baresip")
        .arg("-f")
        .arg(&cfg)
        .args(["-t", "60"])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("baresip is installed (make test installs it)");
    (Reaped(child), cfg)
}

#[test]
fn a_desk_phone_calls_out_through_the_provider_and_emergency_numbers_always_go_out() {
    let dir = TempDir::new("trunk-out");
    let pstn = std::net::SocketAddr::from(([127, 0, 0, 9], free_port()));
    let mut spec = itsp("MD5");
    spec.pstn = Some(pstn);
    let mut k = Kamailio::start(dir.path(), spec);
    let extra = format!(
        "{}cli_format = \"national\"\npai = true\n[[extension]]\nnumber = \"101\"\nsecret = \"desk-101-secret\"\n",
        trunk_config(dir.path(), &k.itsp, "trunk-pass-1", 300)
    );
    let agent = Agent::start_in(dir, &extra);
    wait_state(&agent, &k, "registered", 20);
    let hello = speech_wav(
        agent.dir.path(),
        "mobile",
        "Hello, this is the customer.",
        8000,
        0.5,
        6.0,
    );
    let (_mobile, mobile_dir) = mobile(agent.dir.path(), pstn, &hello);
    let words = speech_wav(
        agent.dir.path(),
        "desk",
        "Hello, I would like a quote for a new boiler please.",
        8000,
        2.0,
        2.0,
    );
    // The phone dials a national number; it goes out in the trunk's format.
    let desk = DeskPhone::start_dialling(
        &agent,
        "101",
        "desk-101-secret",
        false,
        Some(&words),
        Some("07700900123"),
        30,
    );
    let db = Db::open(&agent.database());
    let (id, direction): (String, String) = wait_for(40, "the call out to end", || {
        db.0.query_row(
            "SELECT id, direction FROM calls WHERE ended_at_ms IS NOT NULL AND answered_at_ms IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok()
    });
    assert_eq!(direction, "outbound");
    let log = k.log();
    assert!(
        log.contains("challenged a call out"),
        "the provider's 407:\n{log}"
    );
    assert!(
        log.contains("call out to 07700900123 from 01632960001 pai=<sip:01632960001@"),
        "national number and CLI, with P-Asserted-Identity:\n{log}"
    );
    let out = std::fs::read_to_string(mobile_dir.join("baresip.out")).unwrap_or_default();
    assert!(out.contains("Call established"), "mobile:\n{out}");
    let legs: Vec<(String, String)> =
        db.0.prepare("SELECT target, outcome FROM call_legs WHERE call_id = ?1")
            .unwrap()
            .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    assert_eq!(legs, [("07700900123".to_string(), "answered".to_string())]);
    wait_words(
        &db,
        &id,
        &[("caller", "boiler"), ("callee", "customer")],
        60,
    );
    drop(desk);

    // 999 goes straight out to the provider.
    let _sos = DeskPhone::start_dialling(
        &agent,
        "101",
        "desk-101-secret",
        false,
        None,
        Some("999"),
        10,
    );
    wait_for(20, "the emergency call at the provider", || {
        k.log()
            .contains("call out to 999 from 01632960001")
            .then_some(())
    });
    assert!(
        agent
            .log()
            .contains("EMERGENCY call: straight out through the trunk")
    );

    // The provider gone: an emergency call fails at once and clearly.
    k.stop();
    wait_state(&agent, &k, "unreachable", 20);
    let started = std::time::Instant::now();
    let down = DeskPhone::start_dialling(
        &agent,
        "101",
        "desk-101-secret",
        false,
        None,
        Some("999"),
        10,
    );
    wait_for(10, "the phone to be told 503", || {
        down.output().contains("503").then_some(())
    });
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(
        agent.log().contains("EMERGENCY call could not be placed"),
        "logged at error"
    );
}

#[test]
fn a_trunk_over_tls_registers_checking_the_providers_certificate_and_takes_calls() {
    let dir = TempDir::new("trunk-tls");
    let (ca, cert, key) = common::kamailio::tls_pair(&dir.path().join("itsp-tls"), "127.0.0.5");
    let mut spec = itsp("MD5");
    spec.tls = Some((free_port(), cert, key));
    let k = Kamailio::start(dir.path(), spec);
    let taddr = k.itsp.tls_addr().unwrap();
    let pass = dir.path().join("trunk.pass");
    std::fs::write(&pass, "trunk-pass-1\n").unwrap();
    let trunk = |ca: &Path| {
        format!(
            "[[trunk]]\nname = \"itsp\"\nmode = \"register\"\nhost = \"{taddr}\"\ntransport = \"tls\"\n\
             tls_ca = {:?}\nusername = \"{ACCOUNT}\"\npassword_file = {:?}\nexpires_secs = 300\n\
             keepalive_secs = 1\ndids = [\"01632 960001\"]\n",
            ca.display().to_string(),
            pass.display().to_string()
        )
    };
    // A certificate from a CA the box was not told of: never registered.
    let (other_ca, _, _) = common::kamailio::tls_pair(&dir.path().join("other"), "127.0.0.5");
    let dir2 = TempDir::new("trunk-tls-untrusted");
    let untrusted = Agent::start_in(dir2, &trunk(&other_ca));
    let t = wait_for(20, "the untrusted trunk to fail", || {
        let (s, t) = trunk_state(&untrusted);
        (s == "failed" || !t["last_error"].is_null()).then_some(t)
    });
    assert_ne!(t["state"], "registered", "{t}");
    drop(untrusted);
    assert_eq!(
        k.count(&format!("registered user={ACCOUNT}")),
        0,
        "{}",
        k.log()
    );

    let agent = Agent::start_in(dir, &trunk(&ca));
    wait_state(&agent, &k, "registered", 20);
    let log = k.log();
    assert!(
        log.contains(&format!(
            "registered user={ACCOUNT} contact=<sip:{ACCOUNT}@127.0.0.1"
        )),
        "{log}"
    );
    assert!(
        log.contains("transport=tls"),
        "the contact is a TLS one:\n{log}"
    );
    wait_for(10, "keepalives over TLS", || {
        (k.count("keepalive OPTIONS from 127.0.0.1") >= 2).then_some(())
    });
    let wav = speech_wav(
        agent.dir.path(),
        "caller",
        "Hello, I would like a quote for a new boiler please.",
        8000,
        0.3,
        1.5,
    );
    let (_baresip, _cfg) = caller(
        agent.dir.path(),
        &wav,
        &format!("sip:{DID}@{}", k.itsp.addr()),
        12,
    );
    let db = Db::open(&agent.database());
    let (id, transport, did): (String, String, Option<String>) =
        wait_for(40, "the trunk call over TLS to end", || {
            db.0.query_row(
                "SELECT id, transport, did FROM calls WHERE ended_at_ms IS NOT NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .ok()
        });
    assert_eq!(transport, "tls");
    assert_eq!(did.as_deref(), Some(DID));
    let text = wait_for(60, "the caller's words", || {
        let t = db.channel_transcript(&id, "caller");
        (!t.is_empty()).then_some(t)
    });
    assert!(text.to_lowercase().contains("boiler"), "{text}");
}

#[test]
fn a_ring_list_rings_a_mobile_through_the_trunk_beside_the_desk_phone() {
    let dir = TempDir::new("trunk-ring-mobile");
    let pstn = std::net::SocketAddr::from(([127, 0, 0, 9], free_port()));
    let mut spec = itsp("MD5");
    spec.pstn = Some(pstn);
    let k = Kamailio::start(dir.path(), spec);
    let extra = format!(
        "{}[[extension]]\nnumber = \"101\"\nsecret = \"desk-101-secret\"\n\
         [inbound]\nring = [\"101\", \"07700 900999\"]\nring_secs = 20\n",
        trunk_config(dir.path(), &k.itsp, "trunk-pass-1", 300)
    );
    let agent = Agent::start_in(dir, &extra);
    wait_state(&agent, &k, "registered", 20);
    let hello = speech_wav(
        agent.dir.path(),
        "mobile",
        "Good morning, this is the workshop.",
        8000,
        0.5,
        8.0,
    );
    // The desk phone rings but nobody picks it up; the mobile answers.
    let desk = DeskPhone::start(&agent, "101", "desk-101-secret", false, None, 60);
    let (_mobile, mobile_dir) = mobile(agent.dir.path(), pstn, &hello);
    let wav = speech_wav(
        agent.dir.path(),
        "caller",
        "Hello, I would like a quote for a new boiler please.",
        8000,
        0.3,
        6.0,
    );
    let (_caller, _) = caller(
        agent.dir.path(),
        &wav,
        &format!("sip:{DID}@{}", k.itsp.addr()),
        20,
    );
    let db = Db::open(&agent.database());
    let id: String = wait_for(60, "the call to end", || {
        db.0.query_row(
            "SELECT id FROM calls WHERE ended_at_ms IS NOT NULL AND answered_at_ms IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .ok()
    });
    let legs: Vec<(String, String, String)> = db
        .0
        .prepare("SELECT target, contact, outcome FROM call_legs WHERE call_id = ?1 ORDER BY id")
        .unwrap()
        .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mobile_leg = legs.iter().find(|l| l.0 == "07700 900999");
    assert!(
        mobile_leg.is_some_and(|l| l.1 == "trunk itsp" && l.2 == "answered"),
        "{legs:?}"
    );
    assert!(
        legs.iter()
            .any(|l| l.0 == "101" && l.2 == "answered elsewhere"),
        "{legs:?}"
    );
    let log = k.log();
    assert!(
        log.contains("challenged a call out") && log.contains("call out to +447700900999"),
        "out through the provider, its 407 answered:\n{log}"
    );
    let out = std::fs::read_to_string(mobile_dir.join("baresip.out")).unwrap_or_default();
    assert!(out.contains("Call established"), "mobile:\n{out}");
    assert!(desk.output().to_lowercase().contains("incoming call"));
    wait_words(
        &db,
        &id,
        &[("caller", "boiler"), ("callee", "workshop")],
        60,
    );
}

/// Power of `freq` Hz in the mono WAV's samples [from, to) s (Goertzel).
fn tone_power(wav: &Path, freq: f64, from: f32, to: f32) -> f64 {
    let mut r = hound::WavReader::open(wav).unwrap();
    let rate = r.spec().sample_rate as f64;
    let ch = r.spec().channels as usize;
    let s: Vec<f64> = r
        .samples::<i16>()
        .map(Result::unwrap)
        .step_by(ch)
        .map(|x| x as f64)
        .collect();
    let (a, b) = (
        ((from as f64 * rate) as usize).min(s.len()),
        ((to as f64 * rate) as usize).min(s.len()),
    );
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in &s[a..b] {
        let s0 = x + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - k * s1 * s2) / ((b - a).max(1) as f64).powi(2)
}

#[test]
fn a_targets_early_media_reaches_the_caller_instead_of_our_ringback() {
    let dir = TempDir::new("trunk-early-media");
    let pstn = std::net::SocketAddr::from(([127, 0, 0, 9], free_port()));
    let mut spec = itsp("MD5");
    spec.pstn = Some(pstn);
    let k = Kamailio::start(dir.path(), spec);
    let extra = format!(
        "{}[inbound]\nring = [\"07700 900999\"]\nring_secs = 20\n",
        trunk_config(dir.path(), &k.itsp, "trunk-pass-1", 300)
    );
    let agent = Agent::start_in(dir, &extra);
    wait_state(&agent, &k, "registered", 20);
    // The "mobile network": sipp answering 183 with a 1 kHz announcement.
    let net = agent.dir.path().join("network");
    std::fs::create_dir_all(&net).unwrap();
    let made = Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-e", "mu-law", "-t", "raw"])
        .arg(net.join("tone.ul"))
        .args(["synth", "10", "sine", "1000", "vol", "0.5"])
        .status()
        .expect("sox");
    assert!(made.success());
    let media_port = free_port();
    let _sipp = Reaped(
        Command::new("sipp")
            .arg("-sf")
            .arg(repo().join("tests/sipp/uas_early_media.xml"))
            .args(["-i", "127.0.0.9", "-p", &pstn.port().to_string()])
            .args(["-mi", "127.0.0.9", "-mp", &media_port.to_string()])
            .args(["-m", "1", "-nostdin", "-timeout", "60"])
            .current_dir(&net)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp (package sip-tester)"),
    );
    // The caller records what it hears, early media included.
    let wav = speech_wav(agent.dir.path(), "caller", "Hello.", 8000, 0.3, 14.0);
    let cfg = baresip_config(
        agent.dir.path(),
        "pstn-caller",
        Some(&wav),
        "udp",
        "<sip:07700900123@127.0.0.1>;regint=0;audio_codecs=PCMU",
    );
    let mut c = std::fs::read_to_string(cfg.join("config")).unwrap();
    c.push_str(&format!("module sndfile.so\nsnd_path {}\n", cfg.display()));
    std::fs::write(cfg.join("config"), c).unwrap();
    let out = std::fs::File::create(cfg.join("baresip.out")).unwrap();
    let mut call = Reaped(
        Command::new("baresip")
            .arg("-f")
            .arg(&cfg)
            .args([
                "-e",
                &format!("/dial sip:{DID}@{}", k.itsp.addr()),
                "-t",
                "30",
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("baresip"),
    );
    let db = Db::open(&agent.database());
    let id: String = wait_for(60, "the call to end", || {
        db.0.query_row(
            "SELECT id FROM calls WHERE ended_at_ms IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .ok()
    });
    let _ = call.0.wait();
    let outcome: String =
        db.0.query_row(
            "SELECT outcome FROM call_legs WHERE call_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(outcome, "no answer", "the mobile's 480");
    let heard = files(&cfg)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| panic!("no recording of what the caller heard in {}", cfg.display()));
    // Some 2 s of what it heard is the network's tone, not our ringback
    // (400 + 450 Hz).
    let windows: Vec<(f32, f64, f64)> = (0..20)
        .map(|i| {
            let t = i as f32 * 0.5;
            let tone = tone_power(&heard, 1000.0, t, t + 2.0);
            let ring =
                tone_power(&heard, 400.0, t, t + 2.0) + tone_power(&heard, 450.0, t, t + 2.0);
            (t, tone, ring)
        })
        .collect();
    eprintln!("windows (s, 1 kHz, ringback): {windows:?}");
    assert!(
        windows
            .iter()
            .any(|(_, tone, ring)| *tone > 1e5 && *tone > 100.0 * ring.max(1.0)),
        "the caller heard the target's early media: {windows:?}"
    );
}
