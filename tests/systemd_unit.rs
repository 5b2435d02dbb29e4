//! The shipped unit file passes `systemd-analyze verify`, and the agent really
//! speaks the notify protocol: READY=1 only once SIP listens, then watchdog pings.

mod common;
use common::*;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn unit_file_verifies() {
    let unit = repo().join("systemd/handlet-agent.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains("Type=notify") && text.contains("WatchdogSec="),
        "{text}"
    );
    // verify wants the ExecStart binary to exist: point a copy at this build.
    let dir = TempDir::new("unit");
    let copy = dir.path().join("handlet-agent.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/handlet", bin().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (package systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    let relevant: Vec<_> = err
        .lines()
        .filter(|l| l.contains("handlet-agent.service"))
        .collect();
    assert!(
        out.status.success() && relevant.is_empty(),
        "systemd-analyze verify:\n{err}"
    );
}

#[test]
fn ready_is_sent_after_sip_listens_and_watchdog_pings_follow() {
    let dir = TempDir::new("notify");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY=1 within 60 s");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.contains("READY=1"), "{msg}");
    // By READY, SIP answers: an OPTIONS over UDP gets a response.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = udp.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:handlet@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-t1\r\nMax-Forwards: 70\r\n\
         From: <sip:probe@127.0.0.1>;tag=a1\r\nTo: <sip:handlet@127.0.0.1>\r\nCall-ID: probe-1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    udp.send_to(options.as_bytes(), ("127.0.0.1", port))
        .unwrap();
    let n = udp.recv(&mut buf).expect("OPTIONS answered");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Watchdog pings every WATCHDOG_USEC/2.
    let mut pings = 0;
    while pings < 2 {
        let n = sock.recv(&mut buf).expect("WATCHDOG=1");
        if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
            pings += 1;
        }
    }
    // SIGTERM: stops cleanly and says so.
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
