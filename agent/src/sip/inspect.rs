//! Stream transports (TCP, later TLS) are framed and parsed by rsipstack
//! before our code can see them, so their requests are vetted after
//! parsing: each request is written back out as text and put through the
//! same [`vet`] as UDP datagrams are before parsing. The parser keeps what
//! the vetting looks at (the version, every header, duplicates included),
//! so the same requests get the same answers on both transports. What
//! rsipstack's stream codec drops or closes the connection on before
//! this point (an unknown method, a non-UTF-8 header, a message over its
//! 64 KB frame) never reaches us: docs/DESIGN.md lists those.

use super::vet::{Verdict, vet};
use rsipstack::sip::SipMessage;
use rsipstack::transaction::endpoint::TransportEventInspector;
use rsipstack::transport::{SipConnection, TransportEvent};

pub struct StreamVetting;

#[async_trait::async_trait]
impl TransportEventInspector for StreamVetting {
    async fn handle(&self, ev: TransportEvent) -> Option<TransportEvent> {
        let TransportEvent::Incoming(msg, conn, from) = &ev else {
            return Some(ev);
        };
        // UDP datagrams were vetted as bytes (udp.rs); responses are the
        // transaction layer's.
        if matches!(conn, SipConnection::Udp(_)) || !matches!(msg, SipMessage::Request(_)) {
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
