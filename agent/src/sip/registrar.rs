//! The registrar for the business's phones: REGISTER requests in, digest
//! challenges and bindings out. The decisions are `digest.rs` (who may)
//! and `bindings.rs` (where they are); this is the shell that reads the
//! request's headers and answers through rsipstack.
//!
//! Answers: 401 with an MD5 challenge (and a SHA-256 one before it, with
//! `registrar.offer_sha256`) when a request has no (or a stale)
//! Authorization; 403 for a wrong password, an unknown
//! extension, an extension registering another's number, a replayed nonce
//! count, or an address locked out for repeated failures; 423 with
//! Min-Expires for too short an interval; 400 for a malformed request;
//! 200 with every current Contact and its expiry otherwise.

use super::bindings::{Binding, Bindings, ContactReq, Limits, Register, RegisterError};
use super::digest::{Algorithm, Authorization, Lockout, Nonces, Secret, Verdict};
use crate::config::Config;
use crate::limits::{BurstLog, COUNTERS, count};
use crate::pii::Pii;
use rsipstack::sip::{Header, StatusCode, Transport};
use rsipstack::transaction::transaction::Transaction;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

/// How long a nonce we issued stays good.
const NONCE_TTL_MS: u64 = 5 * 60 * 1000;

struct State {
    bindings: Bindings,
    nonces: Nonces,
    lockout: Lockout,
}

/// Who challenges: the registrar (401, WWW-Authenticate) or the box as
/// the phones' proxy for their calls (407, Proxy-Authenticate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Challenged {
    Registrar,
    Proxy,
}

pub struct Registrar {
    realm: String,
    max_expires_ms: u64,
    /// Algorithms we challenge with, preferred first.
    offer: Vec<Algorithm>,
    /// Extension number → its name and digest secrets.
    extensions: HashMap<String, (String, Secret)>,
    state: Mutex<State>,
    started: Instant,
    /// Wall-clock ms at `started`, to report expiry times.
    wall_at_start: u64,
    locked_log: BurstLog,
    /// Where bindings are kept across restarts.
    store: Option<crate::store::Store>,
}

/// One extension as `handlet extensions` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExtensionView {
    pub number: String,
    pub name: String,
    pub contacts: Vec<ContactView>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ContactView {
    pub contact: String,
    pub transport: &'static str,
    pub expires_in_secs: u64,
}

/// The value of the first header named `name` (case-insensitive).
fn header<'a>(req: &'a rsipstack::sip::Request, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value())
}

/// The user part of a To/From value: `"Ann" <sip:101@shop;x=y>;tag=1` → 101.
pub fn user_of(value: &str) -> Option<&str> {
    let inner = match value.find('<') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    let after = inner.split_once(':')?.1;
    let user = after.split(['@', ';', '>']).next()?;
    after.contains('@').then_some(user)
}

/// The Contacts of a REGISTER: `*`, or URIs with their `expires`.
fn contacts(req: &rsipstack::sip::Request) -> Result<Vec<ContactReq>, RegisterError> {
    let mut out = Vec::new();
    for h in req
        .headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("Contact"))
    {
        for part in split_contacts(h.value()) {
            let part = part.trim();
            if part.chars().any(char::is_control) {
                return Err(RegisterError::TooLong);
            }
            if part.split(';').next().is_some_and(|p| p.trim() == "*") {
                out.push(ContactReq::All);
                continue;
            }
            let (uri, params) = match (part.find('<'), part.find('>')) {
                (Some(a), Some(b)) if a < b => (&part[a + 1..b], &part[b + 1..]),
                _ => part.split_once(';').unwrap_or((part, "")),
            };
            let expires = params
                .split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("expires"))
                .and_then(|(_, v)| v.trim().parse::<u64>().ok());
            if uri.trim().is_empty() {
                return Err(RegisterError::BadWildcard);
            }
            out.push(ContactReq::Uri {
                uri: uri.trim().to_string(),
                expires,
            });
            if out.len() > super::bindings::MAX_CONTACTS * 2 {
                return Err(RegisterError::TooLong);
            }
        }
    }
    Ok(out)
}

/// Split a Contact value on the commas between contacts (not inside <> or
/// quotes).
fn split_contacts(v: &str) -> Vec<&str> {
    let (mut out, mut start, mut depth, mut quoted) = (Vec::new(), 0, 0i32, false);
    for (i, c) in v.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(&v[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&v[start..]);
    out
}

impl Registrar {
    pub fn new(cfg: &Config) -> Registrar {
        let realm = cfg.sip.realm.clone();
        let extensions = cfg
            .extensions
            .iter()
            .filter_map(|e| {
                let secret = match (&e.secret, &e.ha1) {
                    (Some(s), _) => Secret::new(&e.number, &realm, s.expose()),
                    (None, Some(h)) => {
                        Secret::from_ha1(h.expose(), e.ha1_sha256.as_ref().map(|h| h.expose()))
                    }
                    // No credentials (config validation refuses it): the
                    // extension cannot authenticate at all.
                    (None, None) => return None,
                };
                Some((e.number.clone(), (e.name.clone(), secret)))
            })
            .collect();
        let r = &cfg.registrar;
        Registrar {
            realm,
            max_expires_ms: r.max_expires_secs * 1000,
            offer: if r.offer_sha256 {
                vec![Algorithm::Sha256, Algorithm::Md5]
            } else {
                vec![Algorithm::Md5]
            },
            extensions,
            state: Mutex::new(State {
                bindings: Bindings::new(Limits {
                    min_secs: r.min_expires_secs,
                    max_secs: r.max_expires_secs,
                    default_secs: r.max_expires_secs,
                }),
                nonces: Nonces::new(NONCE_TTL_MS),
                lockout: Lockout::new(
                    r.lockout_failures,
                    r.lockout_window_secs * 1000,
                    r.lockout_secs * 1000,
                ),
            }),
            started: Instant::now(),
            wall_at_start: crate::clock::now_ms() as u64,
            locked_log: BurstLog::new("registrar.lockout_failures"),
            store: None,
        }
    }

    /// Keep bindings in `store`, and take back what it kept from the last
    /// run (`rows`, read at start: only the living, only known extensions).
    pub fn with_store(
        mut self,
        store: crate::store::Store,
        rows: Vec<(String, crate::store::RegistrationRow)>,
    ) -> Registrar {
        let now = self.now_ms();
        if let Ok(mut s) = self.state.lock() {
            for (ext, r) in rows {
                if !self.extensions.contains_key(&ext) {
                    continue;
                }
                // A clock that was behind at boot must not make a binding
                // live for years: at most the longest registration granted.
                let at = (r.expires_at_ms.max(0) as u64)
                    .saturating_sub(self.wall_at_start)
                    .min(now + self.max_expires_ms);
                let transport = match r.transport.as_str() {
                    "tcp" => "tcp",
                    "tls" => "tls",
                    _ => "udp",
                };
                s.bindings.restore(
                    &ext,
                    Binding {
                        contact: r.contact,
                        reach: r.reach,
                        transport,
                        expires_at_ms: at,
                        call_id: r.call_id,
                        cseq: r.cseq,
                    },
                    now,
                );
            }
        }
        self.store = Some(store);
        self
    }

    fn persist(&self, extension: &str, list: &[Binding]) {
        let Some(store) = &self.store else { return };
        let rows = list
            .iter()
            .map(|b| crate::store::RegistrationRow {
                contact: b.contact.clone(),
                reach: b.reach,
                transport: b.transport.to_string(),
                expires_at_ms: self.wall_ms(b.expires_at_ms) as i64,
                call_id: b.call_id.clone(),
                cseq: b.cseq,
            })
            .collect();
        store.registrations(extension, rows);
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Every extension with where it is registered now.
    pub fn extensions(&self) -> Vec<ExtensionView> {
        let now = self.now_ms();
        let st = self.state.lock().ok();
        let mut out: Vec<ExtensionView> = self
            .extensions
            .iter()
            .map(|(number, (name, _))| ExtensionView {
                number: number.clone(),
                name: name.clone(),
                contacts: st
                    .as_ref()
                    .map(|s| s.bindings.lookup(number, now))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|b| ContactView {
                        contact: b.contact.clone(),
                        transport: b.transport,
                        expires_in_secs: b.expires_in(now),
                    })
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.number.cmp(&b.number));
        out
    }

    /// Where extension `number` can be rung now: each registered contact.
    pub fn contacts_of(&self, number: &str) -> Vec<super::bindings::Binding> {
        let now = self.now_ms();
        self.state
            .lock()
            .map(|s| {
                s.bindings
                    .lookup(number, now)
                    .into_iter()
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Is `number` one of the business's extensions?
    pub fn is_extension(&self, number: &str) -> bool {
        self.extensions.contains_key(number)
    }

    /// The name configured for extension `number`.
    pub fn name_of(&self, number: &str) -> Option<&str> {
        self.extensions.get(number).map(|(n, _)| n.as_str())
    }

    /// Is a phone registered over a connection from `remote` (TCP or TLS)?
    /// Its connection is how the box reaches it, so it is kept open.
    pub fn registered_at(&self, remote: SocketAddr) -> bool {
        let now = self.now_ms();
        self.state
            .lock()
            .map(|s| {
                s.bindings.all().any(|(_, list)| {
                    list.iter()
                        .any(|b| b.reach == remote && b.transport != "udp" && b.expires_at_ms > now)
                })
            })
            .unwrap_or(true)
    }

    /// Wall-clock ms since the epoch of a binding's expiry.
    pub fn wall_ms(&self, at_ms: u64) -> u64 {
        self.wall_at_start + at_ms
    }

    fn challenge(&self, to: std::net::IpAddr, stale: bool, kind: Challenged) -> Vec<Header> {
        let nonce = match self.state.lock() {
            Ok(mut s) => s.nonces.issue(self.now_ms(), to, rand::random()),
            Err(_) => return Vec::new(),
        };
        self.offer
            .iter()
            .map(|&a| {
                let v = Nonces::challenge(&self.realm, &nonce, a, stale);
                match kind {
                    Challenged::Registrar => Header::WwwAuthenticate(v.into()),
                    Challenged::Proxy => Header::ProxyAuthenticate(v.into()),
                }
            })
            .collect()
    }

    /// Which extension sent `req` (a call from a desk phone), by its
    /// Proxy-Authorization; or the answer to send: 407 with a challenge,
    /// 403 for wrong credentials or a locked-out address.
    pub fn authorize(
        &self,
        req: &rsipstack::sip::Request,
        source: SocketAddr,
    ) -> Result<String, (StatusCode, Vec<Header>)> {
        let method = req.method.to_string();
        self.check(req, &method, source, Challenged::Proxy)
    }

    /// The extension whose credentials `req` carries for our realm, or the
    /// answer refusing it.
    fn check(
        &self,
        req: &rsipstack::sip::Request,
        method: &str,
        source: SocketAddr,
        kind: Challenged,
    ) -> Result<String, (StatusCode, Vec<Header>)> {
        let now = self.now_ms();
        let ip = source.ip();
        let (header_name, challenge_code) = match kind {
            Challenged::Registrar => ("Authorization", StatusCode::Unauthorized),
            Challenged::Proxy => (
                "Proxy-Authorization",
                StatusCode::ProxyAuthenticationRequired,
            ),
        };
        // Of the Authorization headers (a phone may carry one for another
        // realm too), the one for ours.
        let mut present = false;
        let auth = req
            .headers
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case(header_name))
            .filter_map(|h| {
                present = true;
                Authorization::parse(h.value()).ok()
            })
            .find(|a| a.realm == self.realm);
        let Some(auth) = auth else {
            if present {
                tracing::debug!(method, "no authorization we can read for our realm");
                return Err((StatusCode::BadRequest, Vec::new()));
            }
            return Err((challenge_code, self.challenge(ip, false, kind)));
        };
        if self
            .state
            .lock()
            .map(|s| s.lockout.is_locked(ip, &auth.username, now))
            .unwrap_or(true)
        {
            return Err((StatusCode::Forbidden, Vec::new()));
        }
        // The answer must be for this request's URI (RFC 7616 3.4.6): a
        // phone's Authorization copied onto an INVITE to another number
        // is refused.
        let bare = |u: &str| {
            u.trim()
                .trim_start_matches('<')
                .split(['>', ';', '?'])
                .next()
                .unwrap_or("")
                .to_ascii_lowercase()
        };
        if bare(&auth.uri) != bare(&req.uri.to_string()) {
            tracing::debug!(method, "digest uri is not the request's");
            return Err((StatusCode::BadRequest, Vec::new()));
        }
        let verdict = match self.state.lock() {
            Ok(mut s) => s.nonces.verify(&auth, method, ip, now, |user, realm| {
                (realm == self.realm)
                    .then(|| self.extensions.get(user).map(|(_, s)| s.clone()))
                    .flatten()
            }),
            Err(_) => return Err((StatusCode::ServerInternalError, Vec::new())),
        };
        match verdict {
            Verdict::Ok(user) => Ok(user),
            Verdict::Stale => Err((challenge_code, self.challenge(ip, true, kind))),
            // A count already used: a replay, or UDP reordering a phone's
            // own requests. Challenge again; nothing is counted, nothing
            // changes.
            Verdict::Replay => Err((challenge_code, self.challenge(ip, true, kind))),
            Verdict::Refused => {
                tracing::debug!(user = %auth.username, method, "refused: wrong credentials");
                self.failed(source, &auth.username, now);
                Err((StatusCode::Forbidden, Vec::new()))
            }
        }
    }

    /// Answer a REGISTER that came from `source` over `transport`.
    pub async fn handle(&self, tx: &mut Transaction, source: SocketAddr, transport: Transport) {
        let (code, headers) = self.decide(&tx.original, source, transport);
        let _ = tx.reply_with(code, headers, None).await;
    }

    fn decide(
        &self,
        req: &rsipstack::sip::Request,
        source: SocketAddr,
        transport: Transport,
    ) -> (StatusCode, Vec<Header>) {
        let now = self.now_ms();
        let ip = source.ip();
        let user = match self.check(req, "REGISTER", source, Challenged::Registrar) {
            Ok(u) => u,
            Err(answer) => return answer,
        };
        // An extension registers its own number only.
        let to = header(req, "To").and_then(user_of);
        if to != Some(user.as_str()) {
            tracing::debug!(user = %user, "REGISTER for another extension's number refused");
            self.failed(source, &user, now);
            return (StatusCode::Forbidden, Vec::new());
        }
        let contacts = match contacts(req) {
            Ok(c) => c,
            Err(_) => return (StatusCode::BadRequest, Vec::new()),
        };
        let call_id = header(req, "Call-ID")
            .map(str::trim)
            .filter(|c| !c.is_empty());
        let cseq =
            header(req, "CSeq").and_then(|c| c.split_whitespace().next()?.parse::<u32>().ok());
        let (Some(call_id), Some(cseq)) = (call_id, cseq) else {
            return (StatusCode::BadRequest, Vec::new());
        };
        let call_id = call_id.to_string();
        let expires = header(req, "Expires").and_then(|e| e.trim().parse::<u64>().ok());
        let reg = Register {
            contacts,
            expires,
            call_id,
            cseq,
            source,
            transport: match transport {
                Transport::Tcp => "tcp",
                Transport::Tls => "tls",
                _ => "udp",
            },
        };
        let result = match self.state.lock() {
            Ok(mut s) => {
                s.lockout.succeeded(ip, &user);
                let r = s.bindings.register(&user, &reg, now);
                // Stored while the table is still locked, so two REGISTERs
                // of one extension reach the store in the order they were
                // applied (the send never waits).
                if let Ok(list) = &r {
                    self.persist(&user, list);
                }
                r
            }
            Err(_) => return (StatusCode::ServerInternalError, Vec::new()),
        };
        match result {
            Ok(list) => {
                tracing::info!(extension = %user, contacts = list.len(), "registered");
                let headers = list
                    .iter()
                    .map(|b| {
                        Header::Contact(
                            format!("<{}>;expires={}", b.contact, b.expires_in(now)).into(),
                        )
                    })
                    .collect();
                (StatusCode::OK, headers)
            }
            Err(RegisterError::TooBrief(min)) => (
                StatusCode::IntervalTooBrief,
                vec![Header::MinExpires(min.to_string().into())],
            ),
            Err(RegisterError::OutOfOrder) => (StatusCode::ServerInternalError, Vec::new()),
            Err(_) => (StatusCode::BadRequest, Vec::new()),
        }
    }

    fn failed(&self, source: SocketAddr, user: &str, now: u64) {
        count(&COUNTERS.auth_failed, 1);
        let locked = self
            .state
            .lock()
            .map(|mut s| s.lockout.failed(source.ip(), user, now))
            .unwrap_or(false);
        if locked {
            count(&COUNTERS.auth_lockouts, 1);
            self.locked_log.hit(Instant::now());
            tracing::warn!(source = %Pii(source.ip().to_string()), "locked out after repeated failed authentications");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_of_to_headers() {
        assert_eq!(user_of("<sip:101@shop.example>"), Some("101"));
        assert_eq!(
            user_of("\"Front desk\" <sip:101@10.0.0.1;transport=tcp>;tag=x"),
            Some("101")
        );
        assert_eq!(user_of("sip:102@shop"), Some("102"));
        assert_eq!(user_of("<sip:shop.example>"), None);
        assert_eq!(user_of("garbage"), None);
    }

    #[test]
    fn contact_lists_split_outside_brackets_and_quotes() {
        assert_eq!(
            split_contacts("<sip:a@x;p=1,2>;expires=60, \"B, Jr\" <sip:b@y>"),
            vec!["<sip:a@x;p=1,2>;expires=60", " \"B, Jr\" <sip:b@y>"]
        );
        assert_eq!(split_contacts("*"), vec!["*"]);
    }
}
