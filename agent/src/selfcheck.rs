//! The agent asks itself whether SIP still answers: an OPTIONS to each of
//! its own listeners over loopback, which must come back 200 within a
//! bound. The systemd watchdog is fed only while this passes, so an agent
//! whose SIP side has gone deaf (a stuck or dead receive task) is
//! restarted by systemd instead of being kept alive by a timer that still
//! ticks.

use rsipstack::sip::Transport;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where to reach a listener from this machine.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(match a.ip() {
            IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

fn options(to: SocketAddr, from: SocketAddr, transport: &str) -> (String, String) {
    let n: u64 = rand::random();
    let call_id = format!("selfcheck-{n:016x}");
    let msg = format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/{transport} {from};branch=z9hG4bK{n:016x};rport\r\nMax-Forwards: 70\r\nFrom: <sip:selfcheck@{from}>;tag={n:x}\r\nTo: <sip:{to}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    (msg, call_id)
}

fn is_200_for(resp: &[u8], call_id: &str) -> bool {
    let text = String::from_utf8_lossy(resp);
    text.starts_with("SIP/2.0 200") && text.contains(call_id)
}

async fn check_udp(addr: SocketAddr) -> bool {
    let to = reachable(addr);
    let bind: SocketAddr = if to.is_ipv4() {
        (Ipv4Addr::LOCALHOST, 0).into()
    } else {
        (Ipv6Addr::LOCALHOST, 0).into()
    };
    let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
        return false;
    };
    let Ok(from) = sock.local_addr() else {
        return false;
    };
    let (msg, call_id) = options(to, from, "UDP");
    if sock.send_to(msg.as_bytes(), to).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; 4096];
    loop {
        match sock.recv(&mut buf).await {
            Ok(n) if is_200_for(&buf[..n], &call_id) => return true,
            Ok(_) => continue, // a 100 or a stray datagram
            Err(_) => return false,
        }
    }
}

async fn check_tcp(addr: SocketAddr) -> bool {
    let to = reachable(addr);
    let Ok(mut s) = tokio::net::TcpStream::connect(to).await else {
        return false;
    };
    let Ok(from) = s.local_addr() else {
        return false;
    };
    let (msg, call_id) = options(to, from, "TCP");
    if s.write_all(msg.as_bytes()).await.is_err() {
        return false;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < 16 * 1024 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if is_200_for(&got, &call_id) {
                    return true;
                }
            }
        }
    }
    false
}

/// True when every listener answers an OPTIONS within `within`.
pub async fn sip_answers(listen: &[(Transport, SocketAddr)], within: Duration) -> bool {
    for (t, addr) in listen {
        let check = async {
            match t {
                Transport::Udp => check_udp(*addr).await,
                Transport::Tcp => check_tcp(*addr).await,
                _ => true,
            }
        };
        if !tokio::time::timeout(within, check).await.unwrap_or(false) {
            return false;
        }
    }
    true
}
