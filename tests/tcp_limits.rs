//! SIP over TCP cannot be made to hold connections without bound: beyond
//! `limits.tcp_connections_per_source` (and `tcp_connections` in all) a
//! connection is closed as it is accepted while other addresses are still
//! served; a connection that stays silent past `limits.tcp_idle_secs` is
//! closed, unless a call in progress came on it; and requests over TCP are
//! rate limited per address like UDP datagrams.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A TCP connection to the agent's SIP port from `from` (127.0.0.x).
fn connect(agent: &Agent, from: [u8; 4]) -> TcpStream {
    let s = tcp_connect_from(from, SocketAddr::from(([127, 0, 0, 1], agent.port))).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

fn options(s: &TcpStream, n: u32) -> String {
    let local = s.local_addr().unwrap();
    let remote = s.peer_addr().unwrap();
    format!(
        "OPTIONS sip:handlet@{remote};transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK-tcp-{}-{n}\r\nMax-Forwards: 70\r\n\
         From: <sip:tester@{local}>;tag=t{}\r\nTo: <sip:handlet@{remote}>\r\n\
         Call-ID: tcp-limits-{}-{n}@{local}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n",
        local.port(),
        local.port(),
        local.port()
    )
}

/// What became of a connection, waited for up to `secs`.
#[derive(Debug, PartialEq)]
enum Fate {
    /// The agent closed it (EOF or reset).
    Closed,
    /// Still open, with what it read meanwhile.
    Open(String),
}

fn watch(s: &mut TcpStream, secs: u64) -> Fate {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return Fate::Closed,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Fate::Closed,
        }
    }
    Fate::Open(String::from_utf8_lossy(&got).into_owned())
}

/// Send an OPTIONS and wait for its 200 (true), or find the connection closed.
fn answered(s: &mut TcpStream, n: u32) -> bool {
    if s.write_all(options(s, n).as_bytes()).is_err() {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(k) => {
                got.extend_from_slice(&buf[..k]);
                if String::from_utf8_lossy(&got).contains("SIP/2.0 200") {
                    return true;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return false,
        }
    }
    false
}

fn status_number(agent: &Agent, key: &str) -> u64 {
    let out = ok(agent, &["status"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["limits_hit"][key]
        .as_u64()
        .or_else(|| v[key].as_u64())
        .unwrap_or_else(|| panic!("no {key} in status: {out}"))
}

#[test]
fn connections_beyond_the_limits_are_closed_and_others_are_served() {
    let agent = Agent::start_with(
        "tcp-cap",
        "[limits]\ntcp_connections_per_source = 4\ntcp_connections = 6\ntcp_idle_secs = 600\n",
    );
    let mut mine: Vec<TcpStream> = (0..4).map(|_| connect(&agent, [127, 0, 0, 2])).collect();
    for (i, s) in mine.iter_mut().enumerate() {
        assert!(
            answered(s, i as u32 + 1),
            "connection {i} from 127.0.0.2 not served"
        );
    }
    // One more from the same address: closed at once, never answered.
    let mut fifth = connect(&agent, [127, 0, 0, 2]);
    assert!(
        !answered(&mut fifth, 9),
        "a fifth connection from one address was served"
    );
    assert_eq!(status_number(&agent, "tcp_connections_refused"), 1);
    // Another address still gets in, up to the total of 6.
    let mut other: Vec<TcpStream> = (0..2).map(|_| connect(&agent, [127, 0, 0, 3])).collect();
    for s in &mut other {
        assert!(
            answered(s, 1),
            "another address was kept out by the first one's connections"
        );
    }
    let mut seventh = connect(&agent, [127, 0, 0, 4]);
    assert!(
        !answered(&mut seventh, 1),
        "a seventh connection in all was served"
    );
    assert_eq!(status_number(&agent, "tcp_connections"), 6);
    // Closing connections gives their places back.
    mine.truncate(2);
    wait_for(10, "the closed connections to be given back", || {
        (status_number(&agent, "tcp_connections") == 4).then_some(())
    });
    let mut again = connect(&agent, [127, 0, 0, 2]);
    assert!(answered(&mut again, 1), "a freed place was not given back");
    // Through all of it, the earlier connections kept being served.
    assert!(answered(&mut mine[0], 20));
    assert!(answered(&mut other[1], 20));
}

#[test]
fn a_flood_of_connections_costs_nothing_lasting() {
    let agent = Agent::start_with(
        "tcp-flood",
        "[limits]\ntcp_connections_per_source = 8\ntcp_connections = 16\n",
    );
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", agent.child.id()))
            .unwrap()
            .count()
    };
    let before = fds();
    // 600 connections from one address, held open by us, in batches.
    let mut held = Vec::new();
    for _ in 0..600 {
        held.push(connect(&agent, [127, 0, 0, 5]));
        if held.len() >= 200 {
            held.drain(..100);
        }
    }
    // Connections we let go give their places back, so how many were
    // refused varies; what the agent holds does not.
    let refused = wait_for(20, "the refused connections to be counted", || {
        let n = status_number(&agent, "tcp_connections_refused");
        (n >= 100).then_some(n)
    });
    let open = status_number(&agent, "tcp_connections");
    assert!(
        open <= 8,
        "{open} connections open from one address (limit 8)"
    );
    let during = fds();
    eprintln!(
        "descriptors {before} before, {during} with {} held; {refused} refused",
        held.len()
    );
    assert!(
        // Each connection kept is two descriptors (rsipstack's and the
        // guard's duplicate).
        during <= before + 2 * 8 + 4,
        "the agent holds {during} descriptors ({before} before): refused connections are kept"
    );
    // And the box still takes a call.
    let wav = speech_wav(
        agent.dir.path(),
        "hello",
        "Hello, is that the plumber?",
        8000,
        0.2,
        1.0,
    );
    call_ok(&agent, &wav);
}

#[test]
fn silent_connections_are_closed_but_not_a_calls() {
    let agent = Agent::start_with("tcp-idle", "[limits]\ntcp_idle_secs = 3\n");
    // Says nothing at all: closed after about 3 s.
    let mut silent = connect(&agent, [127, 0, 0, 6]);
    let t = Instant::now();
    assert_eq!(watch(&mut silent, 10), Fate::Closed);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(2500),
        "closed after {waited:?}, before its idle time"
    );
    // Talks every second: kept for 5 s.
    let mut chatty = connect(&agent, [127, 0, 0, 6]);
    for n in 0..5 {
        assert!(
            answered(&mut chatty, n + 1),
            "a connection in use was closed"
        );
        std::thread::sleep(Duration::from_millis(1000));
    }
    assert!(status_number(&agent, "tcp_idle_closed") >= 1);
    drop(chatty);
    wait_for(10, "every test connection to be gone", || {
        (status_number(&agent, "tcp_connections") == 0).then_some(())
    });

    // A baresip call over TCP lasting well past the idle time: its
    // connection is kept (the BYE comes on it).
    let wav = speech_wav(
        agent.dir.path(),
        "long",
        "I'm calling about the boiler. It makes a loud banging noise every morning.",
        8000,
        0.5,
        6.0,
    );
    let closed_before = status_number(&agent, "tcp_idle_closed");
    let db = Db::open(&agent.database());
    let (baresip, out) = baresip_tcp_call(&agent, &wav);
    let live_call = wait_for(30, "the TCP call to be answered", || {
        db.calls()
            .into_iter()
            .find(|c| c.transport == "tcp" && c.answered.is_some())
    });
    // The call goes on with no SIP on its connection for well past the
    // idle time. Letting that time pass is the point here, not waiting for
    // something.
    std::thread::sleep(Duration::from_millis(4_500));
    let still_up = db
        .calls()
        .into_iter()
        .find(|c| c.id == live_call.id)
        .is_some_and(|c| c.ended.is_none());
    let closed_during = status_number(&agent, "tcp_idle_closed") - closed_before;
    assert!(
        still_up,
        "the call ended before its connection had been idle for long"
    );
    let call = wait_for(60, "the TCP call to end", || {
        db.calls()
            .into_iter()
            .find(|c| c.id == live_call.id && c.ended.is_some())
    });
    let mut baresip = baresip;
    wait_for(30, "baresip to quit", || baresip.0.try_wait().unwrap());
    let out = std::fs::read_to_string(out).unwrap_or_default();
    assert!(out.contains("Call established"), "baresip:\n{out}");
    assert_eq!(call.reason.as_deref(), Some("caller hung up"), "{call:?}");
    let secs = (call.ended.unwrap() - call.answered.unwrap()) / 1000;
    assert!(
        secs >= 5,
        "the call lasted {secs} s, not past the idle time"
    );
    assert_eq!(
        closed_during, 0,
        "the call's connection was closed as idle during the call"
    );
}

/// baresip dials the agent over TCP, plays `wav`, hangs up at its end; it
/// runs in the background, its output going to the file returned.
fn baresip_tcp_call(agent: &Agent, wav: &std::path::Path) -> (Reaped, std::path::PathBuf) {
    let secs = hound::WavReader::open(wav).unwrap().duration() as f64 / 8000.0;
    let cfg_dir = baresip_config(
        agent.dir.path(),
        "baresip-tcp",
        Some(wav),
        "tcp",
        "<sip:tester@127.0.0.1;transport=tcp>;regint=0;audio_codecs=PCMU",
    );
    let path = cfg_dir.join("baresip.out");
    let out = std::fs::File::create(&path).unwrap();
    let child = std::process::Command::new("timeout")
        .args(["60", "baresip", "-f"])
        .arg(&cfg_dir)
        .args([
            "-e",
            &format!("/dial sip:handlet@127.0.0.1:{};transport=tcp", agent.port),
            "-t",
            &(secs.ceil() as u64 + 4).to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("baresip is installed (make test installs it)");
    (Reaped(child), path)
}

#[test]
fn requests_over_tcp_are_rate_limited_per_address() {
    let agent = Agent::start_with("tcp-rate", "[limits]\nsip_requests_per_sec = 5\n");
    let mut flood = connect(&agent, [127, 0, 0, 7]);
    // 100 requests at once on one connection.
    let burst: String = (1..=100).map(|n| options(&flood, n)).collect();
    flood.write_all(burst.as_bytes()).unwrap();
    let Fate::Open(got) = watch(&mut flood, 3) else {
        panic!("the flooding connection was closed rather than limited");
    };
    let served = got.matches("SIP/2.0 200").count();
    let limited = status_number(&agent, "sip_rate_limited");
    eprintln!("{served} of 100 answered; {limited} rate limited");
    // A bucket of 10 and 5 a second more: about 10-25 in 3 s.
    assert!((5..=30).contains(&served), "{served} of 100 answered");
    assert!(limited >= 70, "{limited} counted as rate limited");
    // Another address is served meanwhile.
    let mut other = connect(&agent, [127, 0, 0, 8]);
    assert!(
        answered(&mut other, 1),
        "another address was rate limited too"
    );
}
