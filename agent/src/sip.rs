//! SIP on rsipstack: UDP and TCP listeners, out-of-dialog requests, INVITE →
//! call task, in-dialog requests routed to their dialog, and dialog state
//! changes routed to the call they end.

use crate::Error;
use crate::call::{self, CallCtx};
use crate::config::Config;
use rsipstack::EndpointBuilder;
use rsipstack::dialog::DialogId;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TerminatedReason};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::{Method, StatusCode, Transport};
use rsipstack::transaction::{Endpoint, TransactionReceiver};
use rsipstack::transport::TransportLayer;
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::udp::UdpConnection;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Calls in progress, by dialog, so a dialog's end reaches its call.
#[derive(Default)]
pub struct ActiveCalls {
    inner: Mutex<HashMap<DialogId, call::Ending>>,
}

impl ActiveCalls {
    pub fn insert(&self, id: DialogId, e: call::Ending) {
        self.inner.lock().expect("poisoned").insert(id, e);
    }
    pub fn get(&self, id: &DialogId) -> Option<call::Ending> {
        self.inner.lock().expect("poisoned").get(id).cloned()
    }
    pub fn remove(&self, id: &DialogId) -> Option<call::Ending> {
        self.inner.lock().expect("poisoned").remove(id)
    }
    /// The agent hangs up every call (shutdown).
    pub fn hang_up_all(&self, why: &'static str) {
        for e in self.inner.lock().expect("poisoned").values() {
            e.hang_up(why);
        }
    }
    pub fn len(&self) -> usize {
        self.inner.lock().expect("poisoned").len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Listening SIP endpoint.
pub struct SipServer {
    pub endpoint: Endpoint,
    pub incoming: TransactionReceiver,
    pub listen: Vec<(Transport, SocketAddr)>,
}

/// Bind the configured transports. Port clashes become one clear error.
pub async fn bind(cfg: &Config, cancel: CancellationToken) -> Result<SipServer, Error> {
    let addr = SocketAddr::new(cfg.sip.bind, cfg.sip.port);
    let layer = TransportLayer::new(cancel.clone());
    let mut listen = Vec::new();
    if cfg.sip.udp {
        // Probe first: rsipstack's own error does not say which port.
        std::net::UdpSocket::bind(addr).map_err(|e| port_error(addr, "udp", e))?;
        let conn = UdpConnection::create_connection(addr, None, Some(cancel.child_token()))
            .await
            .map_err(|e| Error::Bind(format!("SIP {addr}/udp: {e}")))?;
        layer.add_transport(conn.into());
        listen.push((Transport::Udp, addr));
    }
    if cfg.sip.tcp {
        // rsipstack binds TCP lazily; bind once here so a clash is reported now.
        std::net::TcpListener::bind(addr).map_err(|e| port_error(addr, "tcp", e))?;
        let conn = TcpListenerConnection::new(addr, None)
            .await
            .map_err(|e| Error::Bind(format!("SIP {addr}/tcp: {e}")))?;
        layer.add_transport(conn.into());
        listen.push((Transport::Tcp, addr));
    }
    let endpoint = EndpointBuilder::new()
        .with_cancel_token(cancel)
        .with_transport_layer(layer)
        .build();
    let incoming = endpoint
        .incoming_transactions()
        .map_err(|e| Error::Sip(e.to_string()))?;
    Ok(SipServer {
        endpoint,
        incoming,
        listen,
    })
}

/// Wait until every TCP listener accepts connections (rsipstack binds them in
/// its serve task, after `bind` returned). UDP sockets exist from `bind` on.
pub async fn wait_listening(listen: &[(Transport, SocketAddr)]) -> Result<(), Error> {
    for (t, addr) in listen {
        if *t != Transport::Tcp {
            continue;
        }
        let mut probe = *addr;
        if probe.ip().is_unspecified() {
            probe.set_ip(match probe {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match tokio::net::TcpStream::connect(probe).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::Bind(format!(
                        "SIP {addr}/tcp did not start listening within 5 s ({e})"
                    )));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    }
    Ok(())
}

fn port_error(addr: SocketAddr, proto: &str, e: std::io::Error) -> Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "is already in use by another program; set sip.port in your config or stop the other program"
        }
        std::io::ErrorKind::PermissionDenied => "needs privileges to bind; use a port above 1023",
        std::io::ErrorKind::AddrNotAvailable => "is not an address of this machine; check sip.bind",
        _ => "cannot be bound",
    };
    Error::Bind(format!("SIP port {addr}/{proto} {hint} ({e})"))
}

/// Serve until `cancel` fires.
pub async fn serve(
    server: SipServer,
    ctx: Arc<CallCtx>,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let SipServer {
        endpoint,
        mut incoming,
        listen,
    } = server;
    let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
    let (state_tx, state_rx) = dialogs.new_dialog_state_channel();
    let active = ctx.active.clone();
    let ep = endpoint.inner.clone();
    let serve_task = tokio::spawn(async move { ep.serve().await });
    let states = tokio::spawn(dialog_states(dialogs.clone(), state_rx, active));

    let user = ctx.cfg.sip.user.clone();
    let contact_for = move |t: Transport| -> Option<rsipstack::sip::Uri> {
        let (_, addr) = listen.iter().find(|(lt, _)| *lt == t).or(listen.first())?;
        let suffix = if t == Transport::Tcp {
            ";transport=tcp"
        } else {
            ""
        };
        rsipstack::sip::Uri::try_from(format!("sip:{user}@{addr}{suffix}").as_str()).ok()
    };

    loop {
        let mut tx = tokio::select! {
            _ = cancel.cancelled() => break,
            t = incoming.recv() => match t { Some(t) => t, None => break },
        };
        let transport = tx
            .connection
            .as_ref()
            .map(|c| c.transport())
            .unwrap_or(Transport::Udp);
        let in_dialog = DialogId::try_from(&tx)
            .map(|id| !id.local_tag.is_empty())
            .unwrap_or(false);
        if in_dialog {
            // BYE, ACK, re-INVITE, INFO, CANCEL for an existing dialog.
            match dialogs.match_dialog(&tx) {
                Some(mut d) => {
                    tokio::spawn(async move {
                        if let Err(e) = d.handle(&mut tx).await {
                            tracing::debug!(error = %e, "in-dialog request failed");
                        }
                    });
                }
                None => {
                    if tx.original.method != Method::Ack {
                        let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                    }
                }
            }
            continue;
        }
        match tx.original.method {
            Method::Invite => {
                let Some(slot) = ctx.admission.try_admit() else {
                    // Full: a clear "busy, try later", answered at once so a
                    // flood costs no call state (limits.max_calls).
                    let retry = rsipstack::sip::Header::RetryAfter(
                        crate::calls::RETRY_AFTER_SECS.to_string().into(),
                    );
                    tokio::spawn(async move {
                        let _ = tx
                            .reply_with(StatusCode::ServiceUnavailable, vec![retry], None)
                            .await;
                    });
                    continue;
                };
                let ctx = ctx.clone();
                let dialogs = dialogs.clone();
                let state_tx = state_tx.clone();
                let contact = contact_for(transport);
                tokio::spawn(async move {
                    call::inbound(ctx, dialogs, state_tx, contact, transport, tx).await;
                    drop(slot);
                });
            }
            Method::Options => {
                let _ = tx.reply(StatusCode::OK).await;
            }
            Method::Ack => {}
            Method::Bye | Method::Cancel => {
                let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
            }
            _ => {
                let _ = tx.reply(StatusCode::MethodNotAllowed).await;
            }
        }
    }
    states.abort();
    serve_task.abort();
    Ok(())
}

async fn dialog_states(
    dialogs: Arc<DialogLayer>,
    mut rx: DialogStateReceiver,
    active: Arc<ActiveCalls>,
) {
    while let Some(state) = rx.recv().await {
        if let DialogState::Confirmed(id, _) = &state {
            // The ACK: media may flow now.
            if let Some(e) = active.get(id) {
                e.confirm();
            }
            continue;
        }
        if let DialogState::Terminated(id, reason) = state {
            let why = match reason {
                TerminatedReason::UacBye => "caller hung up",
                TerminatedReason::UacCancel => "caller cancelled",
                TerminatedReason::UasBye => "agent hung up",
                TerminatedReason::Timeout => "signalling timeout",
                _ => "dialog ended",
            };
            if let Some(e) = active.remove(&id) {
                e.end(why);
            }
            dialogs.remove_dialog(&id);
        }
    }
}
