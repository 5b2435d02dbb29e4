//! The systemd watchdog is fed only while SIP answers: the agent runs in a
//! network namespace of its own (made by the test, needs root), pings
//! while its listeners answer its OPTIONS self-check, and stops pinging
//! once they cannot be reached (the namespace's loopback taken down), so
//! systemd would restart it; the pings resume when SIP answers again.

mod common;
use common::*;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("handlet-wd-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip (iproute2)");
        assert!(ok.success(), "ip netns add needs root");
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }
    fn ip(&self, args: &[&str]) {
        let ok = Command::new("ip")
            .args(["netns", "exec", &self.0, "ip"])
            .args(args)
            .status()
            .unwrap();
        assert!(ok.success(), "ip {args:?}");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Watchdog pings seen on `sock` within `secs` (reads until the deadline).
fn pings_within(sock: &UnixDatagram, secs: f32) -> usize {
    let deadline = Instant::now() + Duration::from_secs_f32(secs);
    let mut buf = [0u8; 512];
    let mut n = 0;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        if let Ok(len) = sock.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..len]).contains("WATCHDOG=1")
        {
            n += 1;
        }
    }
    n
}

#[test]
fn the_watchdog_is_fed_only_while_sip_answers() {
    let ns = Netns::new();
    let dir = TempDir::new("watchdog");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let config = write_config(dir.path(), 5060, "");
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "600000")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    // Killed however the test ends (a failed assertion included).
    let _child = KillOnDrop(child);
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY=1 within 60 s");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    // Healthy: a ping every 300 ms.
    let healthy = pings_within(&sock, 2.0);
    assert!(healthy >= 4, "{healthy} pings in 2 s while healthy");
    // SIP becomes unreachable: the pings stop.
    ns.ip(&["link", "set", "lo", "down"]);
    // One ping may already be on its way; then none.
    let _ = pings_within(&sock, 1.0);
    let deaf = pings_within(&sock, 3.0);
    assert_eq!(deaf, 0, "the watchdog was fed while SIP could not answer");
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(log.contains("SIP does not answer its own OPTIONS"), "{log}");
    // Reachable again: fed again.
    ns.ip(&["link", "set", "lo", "up"]);
    let back = pings_within(&sock, 3.0);
    assert!(back >= 3, "{back} pings after SIP answers again");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
