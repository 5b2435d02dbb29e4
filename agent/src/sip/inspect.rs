//! Stream transports (TCP, TLS) are framed and parsed by rsipstack
//! before our code can see them, so their requests are vetted after
//! parsing: each request is written back out as text and put through the
//! same [`vet`] as UDP datagrams are before parsing. The parser keeps what
//! the vetting looks at (the version, every header, duplicates included),
//! so the same requests get the same answers on both transports. What
//! rsipstack's stream codec drops or closes the connection on before
//! this point (an unknown method, a non-UTF-8 header, a message over its
//! 64 KB frame) never reaches us: docs/DESIGN.md lists those.

use super::tcp::TcpGuard;
use super::vet::{Verdict, vet};
use rsipstack::sip::SipMessage;
use rsipstack::transaction::endpoint::TransportEventInspector;
use rsipstack::transport::{SipConnection, TransportEvent};
use std::sync::Arc;

pub struct StreamVetting {
    /// Connection limits, idle tracking and the rate limit for TCP and TLS
    /// (one pool: both are connections a peer makes us hold).
    pub tcp: Option<Arc<TcpGuard>>,
}

/// A TCP or TLS connection's identity and its peer's address.
fn tcp_of(conn: &SipConnection) -> Option<(super::tcp::ConnId, std::net::SocketAddr)> {
    let remote = conn.get_remote_addr()?.get_socketaddr().ok()?;
    match conn {
        SipConnection::Tcp(c) => Some((super::tcp::conn_id(c), remote)),
        SipConnection::Tls(_) => Some((super::tcp::tls_conn_id(remote), remote)),
        _ => None,
    }
}

/// The Call-ID of an initial INVITE (no To tag): a call on this connection.
fn invite_call_id(msg: &SipMessage) -> Option<String> {
    use rsipstack::sip::prelude::*;
    let SipMessage::Request(r) = msg else {
        return None;
    };
    if r.method != rsipstack::sip::Method::Invite {
        return None;
    }
    let to_tag = r.to_header().ok()?.tag().ok().flatten();
    if to_tag.is_some() {
        return None;
    }
    Some(r.call_id_header().ok()?.value().to_string())
}

/// Our own self-check (`selfcheck.rs`) is never rate limited.
fn is_self_check(msg: &SipMessage, remote: std::net::SocketAddr) -> bool {
    use rsipstack::sip::prelude::*;
    let SipMessage::Request(r) = msg else {
        return false;
    };
    remote.ip().is_loopback()
        && r.call_id_header()
            .is_ok_and(|c| c.value().starts_with("selfcheck-"))
}

#[async_trait::async_trait]
impl TransportEventInspector for StreamVetting {
    async fn handle(&self, ev: TransportEvent) -> Option<TransportEvent> {
        if let (TransportEvent::Closed(conn), Some(g)) = (&ev, &self.tcp)
            && let Some((id, _)) = tcp_of(conn)
        {
            g.closed(id);
        }
        let TransportEvent::Incoming(msg, conn, from) = &ev else {
            return Some(ev);
        };
        // UDP datagrams were vetted as bytes (udp.rs).
        if matches!(conn, SipConnection::Udp(_)) {
            return Some(ev);
        }
        if let (Some(g), Some((id, remote))) = (&self.tcp, tcp_of(conn)) {
            let request = matches!(msg, SipMessage::Request(_)) && !is_self_check(msg, remote);
            if !g.message(id, remote, request, invite_call_id(msg).as_deref()) {
                return None;
            }
        }
        // Responses are the transaction layer's.
        if !matches!(msg, SipMessage::Request(_)) {
            return Some(ev);
        }
        let text = msg.to_string();
        match vet(text.as_bytes()) {
            Verdict::Pass => Some(ev),
            Verdict::Respond(r) => {
                if let Ok(resp) = SipMessage::try_from(r.as_str()) {
                    let _ = conn.send(resp, Some(from)).await;
                }
                None
            }
            Verdict::Drop(_) => None,
        }
    }
}
