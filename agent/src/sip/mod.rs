//! SIP on rsipstack: UDP and TCP listeners, out-of-dialog requests, and
//! the router from dialogs to the calls that own them. This module knows
//! dialogs and call handles, not calls: a new INVITE is offered to the
//! [`CallAcceptor`] it is given (which may refuse it as busy), and a
//! dialog's later events reach its call through the channel the call
//! registered with the [`Router`] (quinn-proto's endpoint hands datagrams
//! to connections the same way).

pub mod bindings;
pub mod digest;
pub mod inspect;
pub mod mwi;
pub mod rate;
pub mod registrar;
pub mod tcp;
pub mod tls;
pub mod trunk;
pub mod udp;
pub mod vet;

use crate::Error;
use crate::config::Config;
use rsipstack::EndpointBuilder;
use rsipstack::dialog::DialogId;
use rsipstack::dialog::dialog::{
    DialogState, DialogStateReceiver, DialogStateSender, TerminatedReason, TransactionHandle,
};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::{Method, StatusCode, Transport};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transaction::{Endpoint, TransactionReceiver};
use rsipstack::transport::TransportLayer;
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::udp::UdpConnection;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the router tells a call about its dialog.
pub enum DialogEvent {
    /// The ACK for our answer (also after each in-dialog transaction).
    Confirmed,
    /// A re-INVITE or UPDATE: answer it through `handle`.
    ReInvite {
        request: Box<rsipstack::sip::Request>,
        handle: TransactionHandle,
    },
    /// An INFO: answer it through `handle`.
    Info {
        handle: TransactionHandle,
    },
    Terminated(TerminatedReason),
}

/// Dialogs in progress, by id, to the channel of the call that owns each.
/// The sender side is unbounded on purpose: rsipstack emits at most a few
/// states per in-dialog transaction, and blocking its state loop would
/// stall every dialog (../shared/DESIGN.md §5).
#[derive(Default)]
pub struct Router {
    calls: Mutex<HashMap<DialogId, mpsc::UnboundedSender<DialogEvent>>>,
}

impl Router {
    /// A call takes its dialog's events from here on.
    pub fn register(&self, id: DialogId) -> mpsc::UnboundedReceiver<DialogEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut m) = self.calls.lock() {
            m.insert(id, tx);
        }
        rx
    }

    pub fn unregister(&self, id: &DialogId) {
        if let Ok(mut m) = self.calls.lock() {
            m.remove(id);
        }
    }

    /// Is a call with this SIP Call-ID still in progress?
    pub fn has_call_id(&self, call_id: &str) -> bool {
        self.calls
            .lock()
            .map(|m| m.keys().any(|d| d.call_id == call_id))
            .unwrap_or(true)
    }

    fn deliver(&self, id: &DialogId, ev: DialogEvent) -> Result<(), DialogEvent> {
        let tx = self.calls.lock().ok().and_then(|m| m.get(id).cloned());
        match tx {
            Some(tx) => tx.send(ev).map_err(|e| e.0),
            None => Err(ev),
        }
    }
}

/// Where a new call comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Straight to the box, with no trunk configured (a test caller, a
    /// SIP address published directly).
    Direct,
    /// Through a trunk, for one of its numbers (E.164) when known.
    Trunk { name: String, did: Option<String> },
    /// From one of the business's phones, authenticated as `extension`,
    /// dialling `dialled` (the Request-URI's user).
    Phone { extension: String, dialled: String },
}

/// A new INVITE, for the layer above to take (start a call) or refuse.
pub struct Incoming {
    pub origin: Origin,
    pub tx: Transaction,
    pub transport: Transport,
    /// Our Contact for this transport.
    pub contact: Option<rsipstack::sip::Uri>,
    pub dialogs: Arc<DialogLayer>,
    pub state_tx: DialogStateSender,
    pub router: Arc<Router>,
}

/// Whoever starts calls: `sip` depends on this, not on the call code.
pub trait CallAcceptor: Send + Sync + 'static {
    /// Take the call, or hand it back to be refused as busy (503).
    fn offer(&self, call: Incoming) -> Result<(), Box<Incoming>>;
}

/// The address of ours `peer` can reach us at: the bound one, or when SIP
/// listens on every address (`0.0.0.0`), the one the kernel would send to
/// it from. Contacts and Vias must never say `0.0.0.0`.
pub fn local_ip_towards(bind: std::net::IpAddr, peer: SocketAddr) -> std::net::IpAddr {
    if !bind.is_unspecified() {
        return bind;
    }
    std::net::UdpSocket::bind(SocketAddr::new(bind, 0))
        .and_then(|s| s.connect(peer).map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(bind)
}

/// Seconds a caller refused as busy is asked to wait (Retry-After).
pub const RETRY_AFTER_SECS: u32 = 30;

/// Listening SIP endpoint.
pub struct SipServer {
    pub endpoint: Endpoint,
    pub incoming: TransactionReceiver,
    pub listen: Vec<(Transport, SocketAddr)>,
    /// Our TCP listener, if TCP is on.
    tcp: Option<tokio::net::TcpListener>,
    /// Our TLS listener and its handshake, if TLS is on.
    tls: Option<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>,
    /// What guards TCP and TLS connections (`tcp.rs`), one pool for both.
    guard: Option<Arc<tcp::TcpGuard>>,
}

impl SipServer {
    /// TCP and TLS connections open now (admitted by the guard).
    pub fn tcp_guard(&self) -> Option<Arc<tcp::TcpGuard>> {
        self.guard.clone()
    }
}

/// Bind the configured transports. Port clashes become one clear error.
pub async fn bind(cfg: &Config, cancel: CancellationToken) -> Result<SipServer, Error> {
    let addr = SocketAddr::new(cfg.sip.bind, cfg.sip.port);
    let layer = TransportLayer::new(cancel.clone());
    let mut listen = Vec::new();
    if cfg.sip.udp {
        // Probe first: rsipstack's own error does not say which port.
        let std_sock = std::net::UdpSocket::bind(addr).map_err(|e| port_error(addr, "udp", e))?;
        std_sock
            .set_nonblocking(true)
            .map_err(|e| Error::Bind(format!("SIP {addr}/udp: {e}")))?;
        let sock = tokio::net::UdpSocket::from_std(std_sock)
            .map_err(|e| Error::Bind(format!("SIP {addr}/udp: {e}")))?;
        // Every datagram is vetted and rate limited before rsipstack sees it.
        let per_sec = cfg.limits.sip_requests_per_sec;
        let vetted = udp::VettedUdp::new(sock, per_sec, per_sec.saturating_mul(2));
        let conn = UdpConnection::from_socket(Arc::new(vetted), None, Some(cancel.child_token()))
            .await
            .map_err(|e| Error::Bind(format!("SIP {addr}/udp: {e}")))?;
        layer.add_transport(conn.into());
        listen.push((Transport::Udp, addr));
    }
    let l = &cfg.limits;
    let guard = (cfg.sip.tcp || cfg.sip.tls).then(|| {
        Arc::new(tcp::TcpGuard::new(
            tcp::TcpLimits {
                per_source: l.tcp_connections_per_source,
                total: l.tcp_connections,
                idle_ms: l.tcp_idle_secs * 1000,
            },
            l.sip_requests_per_sec,
        ))
    });
    let mut tcp = None;
    if cfg.sip.tcp {
        // Our listener, accepting for rsipstack (tcp.rs says why); it holds
        // the port, so rsipstack's own bind of the listener below fails.
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| port_error(addr, "tcp", e))?;
        let conn = TcpListenerConnection::new(addr, None)
            .await
            .map_err(|e| Error::Bind(format!("SIP {addr}/tcp: {e}")))?;
        layer.add_transport(conn.into());
        listen.push((Transport::Tcp, addr));
        tcp = Some(listener);
    }
    // rsipstack's client connections (TLS trunks) take rustls's process
    // default: ring, set before any is made (DESIGN.md §5).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls_trunks: Vec<&crate::config::Trunk> = cfg
        .trunks
        .iter()
        .filter(|t| t.transport == crate::config::TrunkTransport::Tls)
        .collect();
    // The system's CA bundle is read only when a trunk connects over TLS.
    if !tls_trunks.is_empty() {
        let trunk_cas: Vec<&std::path::Path> = tls_trunks
            .iter()
            .filter_map(|t| t.tls_ca.as_deref())
            .collect();
        // rsipstack dials the resolved address and checks the certificate
        // for the name given here, else for that address: a provider's
        // certificate is for its host name. One setting for the whole
        // transport, so with several TLS trunks only addresses can be
        // checked.
        let tls_names: Vec<&str> = tls_trunks
            .iter()
            .map(|t| t.host.rsplit_once(':').map_or(t.host.as_str(), |(h, _)| h))
            .filter(|h| h.parse::<std::net::IpAddr>().is_err())
            .collect();
        layer.set_tls_config(rsipstack::transport::tls::TlsConfig {
            ca_certs: Some(tls::trust_store(&trunk_cas)?),
            sni_hostname: match tls_names.as_slice() {
                [one] => Some(one.to_string()),
                _ => None,
            },
            ..Default::default()
        });
    }
    let mut tls_listener = None;
    if cfg.sip.tls {
        let id = tls::identity(
            cfg.sip.tls_cert.as_deref(),
            cfg.sip.tls_key.as_deref(),
            &cfg.data_dir,
        )?;
        let taddr = SocketAddr::new(cfg.sip.bind, cfg.sip.tls_port);
        let listener = tokio::net::TcpListener::bind(taddr)
            .await
            .map_err(|e| port_error(taddr, "tls", e))?;
        // As for TCP: rsipstack's listener only tells Via and Contact
        // building the address; its own bind fails, ours holds the port.
        let conn = rsipstack::transport::tls::TlsListenerConnection::new(
            taddr,
            None,
            rsipstack::transport::tls::TlsConfig {
                cert: Some(id.cert_pem),
                key: Some(id.key_pem),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Error::Bind(format!("SIP {taddr}/tls: {e}")))?;
        layer.add_transport(conn.into());
        listen.push((Transport::Tls, taddr));
        tracing::info!(port = taddr.port(), cert = %id.cert_path.display(), "SIP over TLS");
        tls_listener = Some((
            listener,
            tokio_rustls::TlsAcceptor::from(Arc::new(id.server)),
        ));
    }
    let endpoint = EndpointBuilder::new()
        .with_cancel_token(cancel)
        .with_transport_layer(layer)
        .with_transport_inspector(Box::new(inspect::StreamVetting { tcp: guard.clone() }))
        .build();
    let incoming = endpoint.incoming_transactions().map_err(Error::from)?;
    Ok(SipServer {
        endpoint,
        incoming,
        listen,
        tcp,
        tls: tls_listener,
        guard,
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
#[allow(clippy::too_many_arguments)] // the wiring of every SIP service, once
pub async fn serve(
    server: SipServer,
    user: String,
    acceptor: Arc<dyn CallAcceptor>,
    router: Arc<Router>,
    registrar: Arc<registrar::Registrar>,
    trunks: Arc<trunk::Trunks>,
    voicemail_counts: mwi::CountsFn,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let SipServer {
        endpoint,
        mut incoming,
        listen,
        tcp,
        tls,
        guard,
    } = server;
    let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
    let (state_tx, state_rx) = dialogs.new_dialog_state_channel();
    let ep = endpoint.inner.clone();
    let serve_task = tokio::spawn(async move { ep.serve().await });
    let states = tokio::spawn(dialog_states(dialogs.clone(), state_rx, router.clone()));
    let (mwi, mwi_states) = mwi::Mwi::new(&dialogs, voicemail_counts);
    let mwi_task = tokio::spawn(mwi::run(
        mwi.clone(),
        dialogs.clone(),
        mwi_states,
        cancel.clone(),
    ));
    let listed = |t: Transport| {
        listen
            .iter()
            .find(|(lt, _)| *lt == t)
            .map(|(_, a)| *a)
            .expect("a bound transport is listed")
    };
    let mut stream_tasks = Vec::new();
    if let Some(guard) = &guard {
        stream_tasks.push(tokio::spawn(reap_tcp(
            guard.clone(),
            router.clone(),
            registrar.clone(),
        )));
        if let Some(listener) = tcp {
            stream_tasks.push(tokio::spawn(accept_tcp(
                listener,
                listed(Transport::Tcp),
                guard.clone(),
                endpoint.inner.clone(),
                cancel.clone(),
            )));
        }
        if let Some((listener, acceptor)) = tls {
            stream_tasks.push(tokio::spawn(accept_tls(
                listener,
                acceptor,
                listed(Transport::Tls),
                guard.clone(),
                endpoint.inner.clone(),
                cancel.clone(),
            )));
        }
    }

    let agent_user = user.clone();
    let contact_for =
        move |t: Transport, peer: Option<SocketAddr>| -> Option<rsipstack::sip::Uri> {
            let (_, addr) = listen.iter().find(|(lt, _)| *lt == t).or(listen.first())?;
            let mut addr = *addr;
            if let Some(p) = peer {
                addr.set_ip(local_ip_towards(addr.ip(), p));
            }
            let suffix = match t {
                Transport::Tcp => ";transport=tcp",
                Transport::Tls => ";transport=tls",
                _ => "",
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
                let origin = match origin_of(&tx, &trunks, &registrar, &agent_user) {
                    Ok(o) => o,
                    Err((status, headers)) => {
                        tokio::spawn(async move {
                            let _ = tx.reply_with(status, headers, None).await;
                        });
                        continue;
                    }
                };
                let peer = tx
                    .connection
                    .as_ref()
                    .and_then(|c| c.get_remote_addr())
                    .and_then(|a| a.get_socketaddr().ok());
                let offered = acceptor.offer(Incoming {
                    origin,
                    tx,
                    transport,
                    contact: contact_for(transport, peer),
                    dialogs: dialogs.clone(),
                    state_tx: state_tx.clone(),
                    router: router.clone(),
                });
                if let Err(busy) = offered {
                    // Full: a clear "busy, try later", answered at once so a
                    // flood costs no call state (limits.max_calls).
                    let mut tx = busy.tx;
                    let retry =
                        rsipstack::sip::Header::RetryAfter(RETRY_AFTER_SECS.to_string().into());
                    tokio::spawn(async move {
                        let _ = tx
                            .reply_with(StatusCode::ServiceUnavailable, vec![retry], None)
                            .await;
                    });
                }
            }
            Method::Options => {
                let _ = tx.reply(StatusCode::OK).await;
            }
            Method::Register => {
                let source = tx
                    .connection
                    .as_ref()
                    .and_then(|c| c.get_remote_addr())
                    .and_then(|a| a.get_socketaddr().ok());
                let registrar = registrar.clone();
                tokio::spawn(async move {
                    match source {
                        Some(source) => registrar.handle(&mut tx, source, transport).await,
                        None => {
                            let _ = tx.reply(StatusCode::BadRequest).await;
                        }
                    }
                });
            }
            Method::Subscribe => {
                let source = tx
                    .connection
                    .as_ref()
                    .and_then(|c| c.get_remote_addr())
                    .and_then(|a| a.get_socketaddr().ok());
                let Some(source) = source else {
                    let _ = tx.reply(StatusCode::BadRequest).await;
                    continue;
                };
                let (mwi, registrar, dialogs) = (mwi.clone(), registrar.clone(), dialogs.clone());
                let contact = contact_for(transport, Some(source));
                tokio::spawn(async move {
                    mwi.subscribe(tx, source, &registrar, &dialogs, contact)
                        .await;
                });
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
    mwi_task.abort();
    serve_task.abort();
    for t in stream_tasks {
        t.abort();
    }
    Ok(())
}

static STRANGERS_LOG: crate::limits::BurstLog =
    crate::limits::BurstLog::new("INVITEs from no trunk's address (sip: trunks are configured)");

static TOLL_FRAUD_LOG: crate::limits::BurstLog =
    crate::limits::BurstLog::new("unauthenticated INVITEs to outside numbers (toll fraud)");

/// Where a new INVITE comes from, or the answer refusing it:
/// - from a trunk's address: a call from the phone network, for one of
///   the trunk's numbers (404 for any other);
/// - naming one of our extensions in From: a desk phone's call, which
///   must authenticate (407, then 403 for wrong credentials): only a
///   phone that has may call out;
/// - anyone else: refused (403) once trunks are configured (SIP scanners
///   try every public address for a box that will call out for them);
///   with no trunk, a direct caller may call the agent or its phones but
///   never an outside number (toll fraud, 403).
fn origin_of(
    tx: &Transaction,
    trunks: &trunk::Trunks,
    registrar: &registrar::Registrar,
    agent_user: &str,
) -> Result<Origin, (StatusCode, Vec<rsipstack::sip::Header>)> {
    use rsipstack::sip::HeadersExt;
    let refuse = |s: StatusCode| Err((s, Vec::new()));
    let source = tx
        .connection
        .as_ref()
        .and_then(|c| c.get_remote_addr())
        .and_then(|a| a.get_socketaddr().ok());
    let country = trunks.country.unwrap_or(crate::phone::Country::GB);
    let dialled = tx.original.uri.user().unwrap_or_default().to_string();
    if let Some(t) = source.and_then(|s| trunks.of_source(s.ip())) {
        let to = tx
            .original
            .to_header()
            .map(|h| h.value().to_string())
            .unwrap_or_default();
        let did = t.did(&tx.original.uri.to_string(), &to, country);
        if did.is_none() && !t.dids.is_empty() {
            tracing::info!(trunk = %t.name, "refused a trunk call for a number that is not one of its dids");
            return refuse(StatusCode::NotFound);
        }
        return Ok(Origin::Trunk {
            name: t.name.clone(),
            did: did.map(|d| d.e164()),
        });
    }
    let from = tx
        .original
        .from_header()
        .map(|h| h.value().to_string())
        .unwrap_or_default();
    let from_user = registrar::user_of(&from).unwrap_or_default();
    if let Some(source) = source
        && registrar.is_extension(from_user)
    {
        let extension = registrar.authorize(&tx.original, source)?;
        if extension != from_user {
            tracing::info!(extension = %extension, "refused a call from a phone presenting another extension's number");
            return refuse(StatusCode::Forbidden);
        }
        return Ok(Origin::Phone { extension, dialled });
    }
    if !trunks.is_empty() {
        crate::limits::count(&crate::limits::COUNTERS.invites_from_strangers, 1);
        STRANGERS_LOG.hit(std::time::Instant::now());
        tracing::debug!(source = ?source, "refused an INVITE from an address that is no trunk's");
        return refuse(StatusCode::Forbidden);
    }
    let outside = dialled != agent_user
        && !registrar.is_extension(&dialled)
        && crate::phone::Phone::parse_in(&dialled, country).is_ok();
    if outside {
        crate::limits::count(&crate::limits::COUNTERS.toll_fraud_refused, 1);
        TOLL_FRAUD_LOG.hit(std::time::Instant::now());
        return refuse(StatusCode::Forbidden);
    }
    Ok(Origin::Direct)
}

/// A connection just accepted, before anything is made for it.
struct Accepted {
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    /// A duplicate of the socket to close it by (tcp.rs says why).
    fd: std::os::fd::OwnedFd,
    /// The box calling itself: the agent's own self-check.
    from_self: bool,
}

/// The next connection on `listener`; None once `cancel` fires.
async fn accept(
    listener: &tokio::net::TcpListener,
    cancel: &CancellationToken,
    what: &str,
) -> Option<Accepted> {
    loop {
        let (stream, remote) = tokio::select! {
            _ = cancel.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "SIP {what} accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(fd) = std::os::fd::AsFd::as_fd(&stream).try_clone_to_owned() else {
            continue;
        };
        let from_self = stream.local_addr().is_ok_and(|l| l.ip() == remote.ip());
        return Some(Accepted {
            stream,
            remote,
            fd,
            from_self,
        });
    }
}

/// Accept TCP connections for rsipstack, within the guard's limits.
async fn accept_tcp(
    listener: tokio::net::TcpListener,
    local: SocketAddr,
    guard: Arc<tcp::TcpGuard>,
    endpoint: rsipstack::transaction::endpoint::EndpointInnerRef,
    cancel: CancellationToken,
) {
    use rsipstack::transport::{SipAddr, SipConnection, tcp::TcpConnection};
    let local = SipAddr {
        r#type: Some(Transport::Tcp),
        addr: local.into(),
    };
    loop {
        let Some(Accepted {
            stream,
            remote,
            fd,
            from_self,
        }) = accept(&listener, &cancel, "TCP").await
        else {
            return;
        };
        // The connection object is its identity; rsipstack makes its
        // buffers only once it serves it, after the guard said yes.
        let Ok(c) = TcpConnection::from_stream(stream, local.clone(), Some(cancel.child_token()))
        else {
            continue;
        };
        if !guard.admit(tcp::conn_id(&c), fd, remote, from_self) {
            continue; // dropped here: closed before rsipstack saw it
        }
        endpoint
            .transport_layer
            .add_connection(SipConnection::Tcp(c));
    }
}

/// Accept TLS connections for rsipstack: within the guard's limits (one
/// pool with TCP), and only once the handshake finished in time.
async fn accept_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    local: SocketAddr,
    guard: Arc<tcp::TcpGuard>,
    endpoint: rsipstack::transaction::endpoint::EndpointInnerRef,
    cancel: CancellationToken,
) {
    use rsipstack::transport::{SipAddr, SipConnection, tls::TlsConnection};
    let local = SipAddr {
        r#type: Some(Transport::Tls),
        addr: local.into(),
    };
    loop {
        let Some(Accepted {
            stream,
            remote,
            fd,
            from_self,
        }) = accept(&listener, &cancel, "TLS").await
        else {
            return;
        };
        let id = tcp::tls_conn_id(remote);
        // The same address as a connection whose close is not handled yet
        // (tcp.rs, `tls_conn_id`): refused, the peer retries.
        if guard.knows(id) || !guard.admit(id, fd, remote, from_self) {
            continue;
        }
        let (acceptor, guard, endpoint, local) = (
            acceptor.clone(),
            guard.clone(),
            endpoint.clone(),
            local.clone(),
        );
        let cancel = cancel.child_token();
        tokio::spawn(async move {
            let limit = std::time::Duration::from_secs(tls::HANDSHAKE_SECS);
            let stream = match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "SIP TLS handshake failed");
                    guard.closed(id);
                    return;
                }
                Err(_) => {
                    tracing::debug!("SIP TLS handshake timed out");
                    guard.closed(id);
                    return;
                }
            };
            let remote = SipAddr {
                r#type: Some(Transport::Tls),
                addr: remote.into(),
            };
            match TlsConnection::from_server_stream(stream, local, remote, Some(cancel)).await {
                Ok(c) => endpoint
                    .transport_layer
                    .add_connection(SipConnection::Tls(c)),
                Err(_) => guard.closed(id),
            }
        });
    }
}

/// Close TCP connections idle past `limits.tcp_idle_secs` that carry no
/// call in progress and are no registered phone's.
async fn reap_tcp(
    guard: Arc<tcp::TcpGuard>,
    router: Arc<Router>,
    registrar: Arc<registrar::Registrar>,
) {
    let mut t = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        t.tick().await;
        let n = guard.reap(
            |id| router.has_call_id(id),
            |remote| registrar.registered_at(remote),
        );
        if n > 0 {
            tracing::debug!(connections = n, "closed idle SIP TCP connections");
        }
    }
}

async fn dialog_states(
    dialogs: Arc<DialogLayer>,
    mut rx: DialogStateReceiver,
    router: Arc<Router>,
) {
    while let Some(state) = rx.recv().await {
        match state {
            DialogState::Confirmed(id, _) => {
                let _ = router.deliver(&id, DialogEvent::Confirmed);
            }
            DialogState::Updated(id, request, handle) => {
                if let Err(DialogEvent::ReInvite { handle, .. }) = router.deliver(
                    &id,
                    DialogEvent::ReInvite {
                        request: Box::new(request),
                        handle,
                    },
                ) {
                    let _ = handle.reply(StatusCode::CallTransactionDoesNotExist).await;
                }
            }
            DialogState::Info(id, _, handle) => {
                if let Err(DialogEvent::Info { handle }) =
                    router.deliver(&id, DialogEvent::Info { handle })
                {
                    let _ = handle.reply(StatusCode::CallTransactionDoesNotExist).await;
                }
            }
            DialogState::Options(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
            }
            // REFER, NOTIFY, MESSAGE, PUBLISH in a dialog: not supported
            // yet (transfer comes with the phone system).
            DialogState::Refer(_, _, handle)
            | DialogState::Notify(_, _, handle)
            | DialogState::Message(_, _, handle)
            | DialogState::Publish(_, _, handle) => {
                let _ = handle.reply(StatusCode::NotImplemented).await;
            }
            DialogState::Terminated(id, reason) => {
                let _ = router.deliver(&id, DialogEvent::Terminated(reason));
                dialogs.remove_dialog(&id);
            }
            _ => {}
        }
    }
}
