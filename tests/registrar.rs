//! The box as registrar for the business's phones: digest authentication
//! (MD5 and SHA-256, qop=auth) against `[[extension]]`s, nonce counts that
//! cannot be replayed, expiry bounds, lockout after repeated failures, and
//! a real baresip phone registering and being listed by `handlet
//! extensions`. The raw client below computes its digest responses on its
//! own (RFC 2617/7616), not with the agent's code.

mod common;
use common::*;
use md5::Digest;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

const SECRET: &str = "correct horse battery";
const EXTENSIONS: &str = "[[extension]]\nnumber = \"101\"\nname = \"Front desk\"\nsecret = \"correct horse battery\"\n\
     [[extension]]\nnumber = \"102\"\nname = \"Workshop\"\nsecret = \"another long secret\"\n\
     [[extension]]\nnumber = \"103\"\nname = \"Van\"\nsecret = \"no-spaces-for-baresip\"\n";

fn md5_hex(s: &str) -> String {
    md5::Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Phone {
    sock: UdpSocket,
    agent: SocketAddr,
    call_id: String,
    cseq: u32,
}

struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    fn headers(&self, name: &str) -> Vec<String> {
        self.text
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .lines()
            .skip(1)
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .collect()
    }

    /// The nonce of the MD5 challenge.
    fn nonce(&self) -> String {
        let c = self
            .headers("WWW-Authenticate")
            .into_iter()
            .find(|h| h.contains("algorithm=MD5"))
            .unwrap_or_else(|| panic!("no MD5 challenge in:\n{}", self.text));
        c.split("nonce=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    }
}

impl Phone {
    fn new(agent: &Agent, from: [u8; 4]) -> Phone {
        let sock = UdpSocket::bind(SocketAddr::from((from, 0))).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Phone {
            agent: SocketAddr::from(([127, 0, 0, 1], agent.port)),
            call_id: format!("reg-{}@{}", sock.local_addr().unwrap().port(), from[3]),
            sock,
            cseq: 0,
        }
    }

    /// A REGISTER for `ext` (To), with `auth` as its Authorization if any.
    fn register(&mut self, ext: &str, expires: u32, auth: Option<String>) -> Reply {
        self.cseq += 1;
        let local = self.sock.local_addr().unwrap();
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let msg = format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{}-{}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{ext}@127.0.0.1>;tag=ph{}\r\nTo: <sip:{ext}@127.0.0.1>\r\n\
             Call-ID: {}\r\nCSeq: {} REGISTER\r\nContact: <sip:{ext}@{local}>\r\nExpires: {expires}\r\n\
             {auth}Content-Length: 0\r\n\r\n",
            self.call_id,
            self.cseq,
            local.port(),
            self.call_id,
            self.cseq
        );
        self.sock.send_to(msg.as_bytes(), self.agent).unwrap();
        let mut buf = [0u8; 8192];
        loop {
            let (n, _) = self
                .sock
                .recv_from(&mut buf)
                .expect("an answer to REGISTER");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let code: u16 = text.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
            if code >= 200 {
                return Reply { code, text };
            }
        }
    }

    /// An MD5 Authorization for `user` with `password` and nonce count `nc`.
    fn digest(user: &str, password: &str, nonce: &str, nc: u32) -> String {
        let ha1 = md5_hex(&format!("{user}:handlet:{password}"));
        let ha2 = md5_hex("REGISTER:sip:127.0.0.1");
        let response = md5_hex(&format!("{ha1}:{nonce}:{nc:08x}:c0ffee:auth:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"handlet\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", \
             response=\"{response}\", algorithm=MD5, cnonce=\"c0ffee\", qop=auth, nc={nc:08x}"
        )
    }
}

fn limits_hit(agent: &Agent, key: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&ok(agent, &["status"])).unwrap();
    v["limits_hit"][key].as_u64().unwrap()
}

fn contacts_of(agent: &Agent, ext: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&ok(agent, &["extensions"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|e| e["number"] == ext)
        .unwrap_or_else(|| panic!("no extension {ext} in {v}"))["contacts"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn digest_registration_its_bounds_replays_and_lockout() {
    let agent = Agent::start_with(
        "registrar",
        &format!("[registrar]\noffer_sha256 = true\n{EXTENSIONS}"),
    );
    let mut p = Phone::new(&agent, [127, 0, 0, 3]);
    // No credentials: challenged with SHA-256 first, then MD5.
    let r = p.register("101", 600, None);
    assert_eq!(r.code, 401, "{}", r.text);
    let ch = r.headers("WWW-Authenticate");
    assert_eq!(ch.len(), 2, "{}", r.text);
    assert!(
        ch[0].contains("algorithm=SHA-256") && ch[1].contains("algorithm=MD5"),
        "{ch:?}"
    );
    assert!(
        ch.iter()
            .all(|c| c.contains("qop=\"auth\"") && c.contains("realm=\"handlet\""))
    );
    let nonce = r.nonce();

    // The right password: registered, the contact listed with its expiry.
    let good = Phone::digest("101", SECRET, &nonce, 1);
    let r = p.register("101", 600, Some(good.clone()));
    assert_eq!(r.code, 200, "{}", r.text);
    let listed = r.headers("Contact");
    assert_eq!(listed.len(), 1, "{}", r.text);
    assert!(listed[0].contains(";expires=600"), "{listed:?}");
    let c = contacts_of(&agent, "101");
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0]["expires_in_secs"].as_u64().unwrap() <= 600);
    assert!(contacts_of(&agent, "102").is_empty());

    // The same Authorization again (a captured request replayed): not
    // accepted, challenged again (a phone's own reordered request looks
    // the same, so it is not counted as a failure either).
    let r = p.register("101", 600, Some(good));
    assert_eq!(
        r.code, 401,
        "a replayed nonce count was accepted:\n{}",
        r.text
    );
    assert!(
        r.headers("WWW-Authenticate")
            .iter()
            .all(|c| c.contains("stale=true"))
    );
    // A nonce given to another address is no use from here.
    let mut elsewhere = Phone::new(&agent, [127, 0, 0, 8]);
    let r = elsewhere.register("101", 600, Some(Phone::digest("101", SECRET, &nonce, 5)));
    assert_eq!(r.code, 401, "{}", r.text);
    // Too short an interval: 423 with the minimum.
    let r = p.register("101", 30, Some(Phone::digest("101", SECRET, &nonce, 2)));
    assert_eq!(r.code, 423, "{}", r.text);
    assert_eq!(r.headers("Min-Expires"), vec!["60".to_string()]);
    // A nonce we never issued: challenged again, stale.
    let r = p.register(
        "101",
        600,
        Some(Phone::digest("101", SECRET, "00ff00ff", 1)),
    );
    assert_eq!(r.code, 401, "{}", r.text);
    assert!(
        r.headers("WWW-Authenticate")
            .iter()
            .all(|c| c.contains("stale=true"))
    );
    // 101's credentials cannot register 102.
    let mut q = Phone::new(&agent, [127, 0, 0, 4]);
    let n = q.register("102", 600, None).nonce();
    let r = q.register("102", 600, Some(Phone::digest("101", SECRET, &n, 1)));
    assert_eq!(r.code, 403, "{}", r.text);

    // Wrong passwords from 127.0.0.5: refused, and the fifth locks it out.
    let mut bad = Phone::new(&agent, [127, 0, 0, 5]);
    let n = bad.register("102", 600, None).nonce();
    for nc in 1..=5 {
        let r = bad.register("102", 600, Some(Phone::digest("102", "guess", &n, nc)));
        assert_eq!(r.code, 403, "{}", r.text);
    }
    assert_eq!(limits_hit(&agent, "auth_lockouts"), 1);
    // Locked: even the right password is refused now, without a challenge.
    let r = bad.register(
        "102",
        600,
        Some(Phone::digest("102", "another long secret", &n, 6)),
    );
    assert_eq!(r.code, 403, "{}", r.text);
    assert!(r.headers("WWW-Authenticate").is_empty());
    // Another address with the right password is not affected.
    let mut good_phone = Phone::new(&agent, [127, 0, 0, 6]);
    let n = good_phone.register("102", 600, None).nonce();
    let r = good_phone.register(
        "102",
        600,
        Some(Phone::digest("102", "another long secret", &n, 1)),
    );
    assert_eq!(r.code, 200, "{}", r.text);
    assert_eq!(contacts_of(&agent, "102").len(), 1);
    // Unregister: Expires 0 removes the contact.
    let r = good_phone.register(
        "102",
        0,
        Some(Phone::digest("102", "another long secret", &n, 2)),
    );
    assert_eq!(r.code, 200, "{}", r.text);
    assert!(contacts_of(&agent, "102").is_empty());
    // Neither password nor hash is ever in the log or config show.
    let shown = ok(&agent, &["config", "show"]);
    assert!(
        !shown.contains(SECRET) && shown.contains("<hidden>"),
        "{shown}"
    );
    assert!(!agent.log().contains(SECRET));
    // The other number and the five wrong passwords (not the replay, nor
    // the stale nonces).
    assert_eq!(limits_hit(&agent, "auth_failed"), 6);
}

#[test]
fn a_baresip_phone_registers_and_is_listed() {
    // The default challenge (MD5 only): baresip 1.0 cannot do SHA-256.
    let agent = Agent::start_in_env(
        TempDir::new("registrar-baresip"),
        EXTENSIONS,
        &[(
            "RUST_LOG",
            "info,handlet_agent::sip::registrar=debug,rsipstack=error",
        )],
    );
    // baresip's account parameters end at a space: a secret without.
    let dir = baresip_config(
        agent.dir.path(),
        "baresip-phone",
        None,
        "udp",
        &format!(
            "<sip:103@127.0.0.1:{}>;auth_pass=no-spaces-for-baresip;regint=120",
            agent.port
        ),
    );
    let out = std::fs::File::create(dir.join("baresip.out")).unwrap();
    let _phone = Reaped(
        std::process::Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("baresip is installed (make test installs it)"),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let c = loop {
        let c = contacts_of(&agent, "103");
        if !c.is_empty() {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "baresip did not register; it said:\n{}\nagent log:\n{}",
            std::fs::read_to_string(dir.join("baresip.out")).unwrap_or_default(),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(c[0]["transport"], "udp", "{c:?}");
    let secs = c[0]["expires_in_secs"].as_u64().unwrap();
    assert!((60..=120).contains(&secs), "{c:?}");
    assert_eq!(limits_hit(&agent, "auth_failed"), 0);
}

/// A REGISTER over TCP from `stream`, answered on it.
fn register_tcp(
    s: &mut std::net::TcpStream,
    ext: &str,
    expires: u32,
    cseq: u32,
    auth: Option<String>,
) -> Reply {
    use std::io::{Read, Write};
    let local = s.local_addr().unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let msg = format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-tcp-{cseq}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{ext}@127.0.0.1>;tag=tp\r\nTo: <sip:{ext}@127.0.0.1>\r\n\
         Call-ID: tcp-reg-{}@x\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{ext}@{local};transport=tcp>\r\n\
         Expires: {expires}\r\n{auth}Content-Length: 0\r\n\r\n",
        local.port()
    );
    s.write_all(msg.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("an answer over TCP");
        assert!(n > 0, "the agent closed the connection");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let text = text[..end + 4].to_string();
            let code: u16 = text.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
            if code >= 200 {
                return Reply { code, text };
            }
            got.drain(..end + 4);
        }
    }
}

/// A phone registered over TCP keeps its connection however quiet (the box
/// reaches it through it); once it unregisters the connection is idle like
/// any other and is closed.
#[test]
fn a_phone_registered_over_tcp_keeps_its_connection() {
    let agent = Agent::start_with(
        "registrar-tcp",
        &format!("[limits]\ntcp_idle_secs = 2\n{EXTENSIONS}"),
    );
    let closed = |a: &Agent| limits_hit(a, "tcp_idle_closed");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", agent.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = register_tcp(&mut s, "101", 600, 1, None).nonce();
    let r = register_tcp(
        &mut s,
        "101",
        600,
        2,
        Some(Phone::digest("101", SECRET, &n, 1)),
    );
    assert_eq!(r.code, 200, "{}", r.text);
    let c = contacts_of(&agent, "101");
    assert_eq!(c[0]["transport"], "tcp", "{c:?}");
    // Well past the idle time with nothing said: still open.
    std::thread::sleep(Duration::from_millis(4_500));
    assert_eq!(
        closed(&agent),
        0,
        "a registered phone's connection was closed"
    );
    let r = register_tcp(
        &mut s,
        "101",
        0,
        3,
        Some(Phone::digest("101", SECRET, &n, 2)),
    );
    assert_eq!(r.code, 200, "{}", r.text);
    // Unregistered: now it is an idle connection like any other.
    wait_for(
        10,
        "the unregistered phone's connection to be closed",
        || (closed(&agent) == 1).then_some(()),
    );
}

/// A phone's registration outlives a restart of the agent (kill -9 here):
/// the box still knows where the phone is before it registers again.
#[test]
fn registrations_survive_a_restart() {
    let mut agent = Agent::start_with("registrar-restart", EXTENSIONS);
    let mut p = Phone::new(&agent, [127, 0, 0, 7]);
    let n = p.register("101", 600, None).nonce();
    let r = p.register("101", 600, Some(Phone::digest("101", SECRET, &n, 1)));
    assert_eq!(r.code, 200, "{}", r.text);
    // The write reaches the database through the store's queue.
    let db = Db::open(&agent.database());
    wait_for(10, "the registration to be stored", || {
        db.0.query_row("SELECT count(*) FROM registrations", [], |r| {
            r.get::<_, i64>(0)
        })
        .ok()
        .filter(|n| *n == 1)
    });
    agent.kill_and_restart();
    let c = contacts_of(&agent, "101");
    assert_eq!(c.len(), 1, "the registration was forgotten: {c:?}");
    let left = c[0]["expires_in_secs"].as_u64().unwrap();
    assert!((500..=600).contains(&left), "{c:?}");
    // And it is the same binding: unregistering it works after the restart.
    let n = p.register("101", 600, None).nonce();
    let r = p.register("101", 0, Some(Phone::digest("101", SECRET, &n, 1)));
    assert_eq!(r.code, 200, "{}", r.text);
    assert!(contacts_of(&agent, "101").is_empty());
}

#[test]
fn an_extension_kept_as_its_ha1_registers_without_the_box_holding_its_password() {
    use std::io::Write;
    let password = "only-the-phone-knows";
    let mut p = std::process::Command::new(bin())
        .args(["extension-secret", "--number", "104"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(p.stdin.take().unwrap(), "{password}").unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines = String::from_utf8(out.stdout).unwrap();
    assert!(
        lines.contains("ha1 = \"") && lines.contains("ha1_sha256 = \""),
        "{lines}"
    );
    assert!(!lines.contains(password));
    let agent = Agent::start_with(
        "registrar-ha1",
        &format!("[[extension]]\nnumber = \"104\"\n{lines}"),
    );
    let config = std::fs::read_to_string(&agent.config).unwrap();
    assert!(!config.contains(password), "the config holds no password");
    let shown = ok(&agent, &["config", "show"]);
    assert!(
        !shown.contains(lines.lines().nth(1).unwrap().split('"').nth(1).unwrap()),
        "HA1 not shown"
    );
    // A real phone with the password registers against the HA1 alone.
    let _phone = DeskPhone::start(&agent, "104", password, false, None, 30);
    // A wrong password still does not: 403, and an empty HA1 is no key.
    let mut raw = Phone::new(&agent, [127, 0, 0, 3]);
    let nonce = raw.register("104", 300, None).nonce();
    let r = raw.register(
        "104",
        300,
        Some(Phone::digest("104", "not-the-password", &nonce, 1)),
    );
    assert_eq!(r.code, 403);
    let nonce = raw.register("104", 300, None).nonce();
    // An answer made for another request's URI is refused before anything.
    let elsewhere = Phone::digest("104", password, &nonce, 1).replace(
        "uri=\"sip:127.0.0.1\"",
        "uri=\"sip:+447700900123@127.0.0.1\"",
    );
    assert_eq!(raw.register("104", 300, Some(elsewhere)).code, 400);
    let r = raw.register("104", 300, Some(Phone::digest("104", password, &nonce, 1)));
    assert_eq!(r.code, 200, "{}", r.text);
}
