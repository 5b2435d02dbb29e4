//! The registration task of a `mode = "register"` trunk. The REGISTER
//! exchange is ours, on rsipstack's client transactions: rsipstack's
//! `Registration` cannot read a SHA-256 challenge (0.7.14 knows only the
//! draft spelling `SHA256`) and does not retry a 423. Ours answers 401/407
//! with `digest::Challenge`, retries a 423 with its Min-Expires, follows Via
//! `received`/`rport` into the Contact, backs off on failure (the sans-IO
//! `schedule.rs` decides when), and sends NAT keepalives (OPTIONS), which
//! also tell us when the provider is gone.

use super::Trunk;
use super::schedule::{Failure, Schedule, State};
use crate::config::{TrunkMode, TrunkTransport};
use crate::sip::digest::Challenge;
use rsipstack::sip::{Header, HeadersExt, Method, Response, StatusCode, Transport};
use rsipstack::transaction::endpoint::EndpointInnerRef;
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::SipAddr;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long one REGISTER may take, challenge included (rsipstack's own
/// transaction timeout is 32 s: too long to notice a dead provider).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);
/// Keepalives unanswered in a row before the provider counts as gone.
const KEEPALIVES_LOST: u32 = 2;

/// Where SIP listens: the Contact we register is built from it.
#[derive(Debug, Clone, Copy)]
pub struct Local {
    pub bind: SocketAddr,
}

/// Register `trunk` and keep it registered until `cancel`, then
/// unregister (briefly: shutdown does not wait on a dead provider).
pub async fn run(
    trunk: Arc<Trunk>,
    endpoint: EndpointInnerRef,
    local: Local,
    cancel: CancellationToken,
) {
    if trunk.mode != TrunkMode::Register {
        // An IP trunk's host is looked up again now and then: DNS may not
        // be up at boot, and a provider's address can change.
        loop {
            let wait = match trunk.resolve().await {
                Ok(_) => Duration::from_secs(300),
                Err(e) => {
                    tracing::warn!(trunk = %trunk.name, error = %e, "trunk host does not resolve; calls from it are refused until it does");
                    Duration::from_secs(10)
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
    let origin = Instant::now();
    let mono = || origin.elapsed().as_millis() as u64;
    let mut sched = Schedule::new(trunk.expires_secs, mono());
    let mut reg = Registering::new();
    let keepalive = (trunk.keepalive_secs > 0).then(|| Duration::from_secs(trunk.keepalive_secs));
    let mut next_keepalive = keepalive.map(|k| Instant::now() + k);
    let mut lost = 0u32;
    let mut options_seq = 0u32;
    let mut logged_failure = false;
    loop {
        if sched.due(mono()) {
            let expires = sched.start();
            publish(&trunk, &sched, mono());
            let outcome = attempt(&trunk, &endpoint, &mut reg, local, expires).await;
            let now = mono();
            let jitter = rand::random::<f64>();
            match outcome {
                Attempt::Registered(granted) => {
                    if sched.state() != State::Registered || logged_failure {
                        tracing::info!(trunk = %trunk.name, expires_secs = granted, "trunk registered");
                    }
                    logged_failure = false;
                    sched.registered(granted, now);
                    lost = 0;
                }
                Attempt::TooBrief(min) => {
                    tracing::info!(trunk = %trunk.name, min_expires = ?min, "trunk asks for a longer registration; retrying");
                    sched.too_brief(min, now, jitter);
                }
                Attempt::Failed(why) => {
                    sched.failed(why, now, jitter);
                    let wait = sched.next_at_ms().saturating_sub(now) / 1000;
                    // Every failure is a warning, with when it is tried again:
                    // the backoff keeps the log from flooding.
                    tracing::warn!(
                        trunk = %trunk.name,
                        error = sched.last_error().unwrap_or(""),
                        retry_in_secs = wait,
                        "trunk registration failed"
                    );
                    logged_failure = true;
                }
            }
            publish(&trunk, &sched, mono());
        }
        let until_register = Duration::from_millis(sched.next_at_ms().saturating_sub(mono()));
        let until_keepalive = next_keepalive
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::MAX);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(until_register.min(until_keepalive)) => {}
        }
        if let (Some(every), Some(at)) = (keepalive, next_keepalive)
            && Instant::now() >= at
        {
            next_keepalive = Some(Instant::now() + every);
            if matches!(sched.state(), State::Registered | State::Unreachable) {
                options_seq = options_seq.wrapping_add(1);
                let answered = options(&trunk, &endpoint, local, options_seq, every).await;
                if let Ok(mut s) = trunk.status.lock() {
                    s.keepalives_sent += 1;
                    if !answered {
                        s.keepalives_unanswered += 1;
                    }
                }
                lost = if answered { 0 } else { lost + 1 };
                if lost >= KEEPALIVES_LOST && sched.state() == State::Registered {
                    tracing::warn!(trunk = %trunk.name, "trunk stopped answering keepalives; registering again");
                    sched.unreachable(mono(), rand::random::<f64>());
                    publish(&trunk, &sched, mono());
                }
            }
        }
    }
    if sched.state() == State::Registered {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            register(&trunk, &endpoint, &mut reg, local, 0),
        )
        .await;
    }
}

/// One trunk's registration as the provider knows it: the same Call-ID and
/// From tag throughout, CSeq rising (RFC 3261 10.2.4), and our address as
/// the provider sees it.
struct Registering {
    call_id: String,
    from_tag: String,
    seq: u32,
    /// Where the provider saw us come from (Via received/rport).
    public: Option<SocketAddr>,
    /// nc for the provider's nonce we last answered.
    nonce: Option<(String, u32)>,
}

impl Registering {
    fn new() -> Registering {
        Registering {
            call_id: format!("{:032x}@handlet", rand::random::<u128>()),
            from_tag: format!("{:016x}", rand::random::<u64>()),
            seq: 0,
            public: None,
            nonce: None,
        }
    }
}

/// REGISTER for `expires` seconds, answering challenges; the final
/// response. Re-sent once at once if the provider saw us at another
/// address than our Contact names (a NAT in between).
async fn register(
    trunk: &Trunk,
    endpoint: &EndpointInnerRef,
    st: &mut Registering,
    local: Local,
    expires: u32,
) -> Result<(Response, SocketAddr), String> {
    let server = trunk.resolve().await?;
    let ip = local_ip_towards(local, server);
    let mut authorization: Option<Header> = None;
    let mut challenged = 0;
    let mut moved = false;
    // The challenge last answered, to answer again (nc + 1) when the
    // REGISTER is sent once more from where the provider saw us.
    let mut last: Option<(Challenge, bool)> = None;
    loop {
        let contact_at = st.public.unwrap_or(SocketAddr::new(ip, local.bind.port()));
        st.seq = st.seq.wrapping_add(1);
        let req = register_request(
            trunk,
            endpoint,
            st,
            ip,
            local,
            contact_at,
            expires,
            authorization.take(),
        )?;
        let resp = transact(endpoint, req).await?;
        let seen = seen_at(&resp);
        if seen.is_some() && seen != st.public {
            st.public = seen;
        }
        match resp.status_code {
            StatusCode::Unauthorized | StatusCode::ProxyAuthenticationRequired => {
                let (c, proxy) = Challenge::from_response(&resp)
                    .map_err(|e| format!("cannot answer the provider's challenge: {e}"))?;
                challenged += 1;
                // A second challenge that is not "stale": our answer was wrong.
                if challenged > 2 || (challenged == 2 && !c.stale) {
                    return Ok((resp, contact_at));
                }
                authorization = Some(answer(trunk, st, &c, proxy));
                last = Some((c, proxy));
            }
            StatusCode::OK if !moved && st.public.is_some_and(|p| p != contact_at) => {
                // Registered at an address the provider cannot reach back:
                // again with the one it saw, with credentials.
                moved = true;
                if let Some((c, proxy)) = &last {
                    authorization = Some(answer(trunk, st, c, *proxy));
                }
            }
            _ => return Ok((resp, contact_at)),
        }
    }
}

/// The Authorization (or Proxy-Authorization) header answering `c`.
fn answer(trunk: &Trunk, st: &mut Registering, c: &Challenge, proxy: bool) -> Header {
    let nc = match &mut st.nonce {
        Some((n, count)) if *n == c.nonce => {
            *count += 1;
            *count
        }
        other => {
            *other = Some((c.nonce.clone(), 1));
            1
        }
    };
    let user = trunk.auth_username.as_deref().unwrap_or(&trunk.username);
    let uri = server_uri(trunk).to_string();
    let cnonce = format!("{:016x}", rand::random::<u64>());
    let value = c.answer(user, trunk.password.expose(), "REGISTER", &uri, &cnonce, nc);
    if proxy {
        Header::ProxyAuthorization(value.into())
    } else {
        Header::Authorization(value.into())
    }
}

#[allow(clippy::too_many_arguments)]
fn register_request(
    trunk: &Trunk,
    endpoint: &EndpointInnerRef,
    st: &Registering,
    ip: IpAddr,
    local: Local,
    contact_at: SocketAddr,
    expires: u32,
    authorization: Option<Header>,
) -> Result<rsipstack::sip::Request, String> {
    let transport = transport_of(trunk);
    let via = endpoint
        .get_via(
            Some(SipAddr {
                r#type: Some(transport),
                addr: SocketAddr::new(ip, local.bind.port()).into(),
            }),
            None,
        )
        .map_err(|e| e.to_string())?;
    let aor =
        rsipstack::sip::Uri::try_from(format!("sip:{}@{}", trunk.username, trunk.host).as_str())
            .map_err(|e| format!("trunk host {:?}: {e}", trunk.host))?;
    let from = rsipstack::sip::typed::From {
        display_name: None,
        uri: aor.clone(),
        params: vec![rsipstack::sip::Param::Tag(st.from_tag.clone().into())],
    };
    let to = rsipstack::sip::typed::To {
        display_name: None,
        uri: aor,
        params: vec![],
    };
    let mut req = endpoint.make_request(
        Method::Register,
        server_uri(trunk),
        via,
        from,
        to,
        st.seq,
        Some(st.call_id.clone().into()),
    );
    let suffix = trunk.transport.uri_suffix();
    req.headers.push(Header::Contact(
        format!("<sip:{}@{contact_at}{suffix}>", trunk.username).into(),
    ));
    req.headers
        .push(Header::Expires(expires.to_string().into()));
    if let Some(a) = authorization {
        req.headers.push(a);
    }
    Ok(req)
}

/// Send `req` on a client transaction; its final response.
async fn transact(
    endpoint: &EndpointInnerRef,
    req: rsipstack::sip::Request,
) -> Result<Response, String> {
    let key =
        TransactionKey::from_request(&req, TransactionRole::Client).map_err(|e| e.to_string())?;
    let mut tx = Transaction::new_client(key, req, endpoint.clone(), None);
    tx.send().await.map_err(|e| e.to_string())?;
    while let Some(msg) = tx.receive().await {
        if let rsipstack::sip::SipMessage::Response(r) = msg
            && r.status_code.kind() != rsipstack::sip::StatusCodeKind::Provisional
        {
            return Ok(r);
        }
    }
    Err("the transaction ended without a final response".into())
}

/// Our address as the provider saw it: the top Via's received and rport.
fn seen_at(resp: &Response) -> Option<SocketAddr> {
    let via = resp.via_header().ok()?;
    let (_, hp) = rsipstack::transport::SipConnection::parse_target_from_via(via).ok()?;
    hp.try_into().ok()
}

pub fn transport_of(trunk: &Trunk) -> Transport {
    match trunk.transport {
        TrunkTransport::Udp => Transport::Udp,
        TrunkTransport::Tcp => Transport::Tcp,
        TrunkTransport::Tls => Transport::Tls,
    }
}

enum Attempt {
    Registered(u32),
    TooBrief(Option<u32>),
    Failed(Failure),
}

async fn attempt(
    trunk: &Trunk,
    endpoint: &EndpointInnerRef,
    reg: &mut Registering,
    local: Local,
    expires: u32,
) -> Attempt {
    let sent = tokio::time::timeout(
        ATTEMPT_TIMEOUT,
        register(trunk, endpoint, reg, local, expires),
    )
    .await;
    let resp = match sent {
        Err(_) => {
            return Attempt::Failed(Failure::NoAnswer(format!(
                "no final response within {} s",
                ATTEMPT_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(e)) => return Attempt::Failed(Failure::NoAnswer(e)),
        Ok(Ok(r)) => r,
    };
    let (resp, contact_at) = resp;
    match resp.status_code {
        StatusCode::OK => match granted(&resp, contact_at, expires) {
            0 => Attempt::Failed(Failure::Refused(200, "OK, but for 0 seconds".into())),
            g => Attempt::Registered(g),
        },
        StatusCode::IntervalTooBrief => {
            let min = resp
                .headers
                .iter()
                .find(|h| h.name().eq_ignore_ascii_case("Min-Expires"))
                .and_then(|h| h.value().trim().parse::<u32>().ok());
            Attempt::TooBrief(min)
        }
        other => Attempt::Failed(Failure::Refused(other.code(), other.text().to_string())),
    }
}

/// The lifetime the provider granted: our Contact's `expires` in the 200
/// (RFC 3261 10.2.4), else its Expires header, else what we asked.
/// The 200 lists every contact of the account: ours is the one at
/// `contact_at`.
fn granted(resp: &Response, contact_at: SocketAddr, asked: u32) -> u32 {
    let ours = format!("@{contact_at}");
    let contact_expires = resp.headers.iter().find_map(|h| match h {
        Header::Contact(c) => c
            .value()
            .split(',')
            .find(|one| one.contains(&ours))
            .and_then(|one| {
                one.split(';')
                    .find_map(|p| p.trim().strip_prefix("expires="))
                    .and_then(|v| v.trim().trim_end_matches('>').parse::<u32>().ok())
            }),
        _ => None,
    });
    let header = resp.headers.iter().find_map(|h| match h {
        Header::Expires(e) => e.value().trim().parse::<u32>().ok(),
        _ => None,
    });
    contact_expires.or(header).unwrap_or(asked)
}

fn server_uri(trunk: &Trunk) -> rsipstack::sip::Uri {
    let suffix = trunk.transport.uri_suffix();
    rsipstack::sip::Uri::try_from(format!("sip:{}{suffix}", trunk.host).as_str())
        .unwrap_or_default()
}

fn local_ip_towards(local: Local, server: SocketAddr) -> IpAddr {
    crate::sip::local_ip_towards(local.bind.ip(), server)
}

/// One OPTIONS to the provider: answered (with any status) in time?
async fn options(
    trunk: &Trunk,
    endpoint: &EndpointInnerRef,
    local: Local,
    seq: u32,
    every: Duration,
) -> bool {
    let Ok(server) = trunk.resolve().await else {
        return false;
    };
    let transport = transport_of(trunk);
    let ip = local_ip_towards(local, server);
    let via_addr = SipAddr {
        r#type: Some(transport),
        addr: SocketAddr::new(ip, local.bind.port()).into(),
    };
    let Ok(via) = endpoint.get_via(Some(via_addr), None) else {
        return false;
    };
    let target = server_uri(trunk);
    let Ok(me) = rsipstack::sip::Uri::try_from(
        format!(
            "sip:{}@{}",
            trunk.username,
            SocketAddr::new(ip, local.bind.port())
        )
        .as_str(),
    ) else {
        return false;
    };
    let from = rsipstack::sip::typed::From {
        display_name: None,
        uri: me,
        params: vec![],
    }
    .with_tag(rsipstack::transaction::make_tag());
    let to = rsipstack::sip::typed::To {
        display_name: None,
        uri: target.clone(),
        params: vec![],
    };
    let req = endpoint.make_request(Method::Options, target, via, from, to, seq, None);
    let Ok(key) = TransactionKey::from_request(&req, TransactionRole::Client) else {
        return false;
    };
    let mut tx = Transaction::new_client(key, req, endpoint.clone(), None);
    let wait = (every / 2).clamp(Duration::from_millis(500), Duration::from_secs(5));
    tokio::time::timeout(wait, async {
        if tx.send().await.is_err() {
            return false;
        }
        while let Some(msg) = tx.receive().await {
            if let rsipstack::sip::SipMessage::Response(r) = msg
                && r.status_code.kind() != rsipstack::sip::StatusCodeKind::Provisional
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

/// Copy the schedule into what `handlet status` reads.
fn publish(trunk: &Trunk, sched: &Schedule, mono_now: u64) {
    let wall_now = crate::clock::now_ms().max(0) as u64;
    if let Ok(mut s) = trunk.status.lock() {
        s.state = sched.state();
        s.last_error = sched.last_error().map(str::to_string);
        s.expires_at_ms = sched
            .expires_at_ms()
            .map(|t| wall_now + t.saturating_sub(mono_now));
    }
}
