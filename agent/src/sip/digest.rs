//! Server-side digest authentication for SIP (RFC 3261 §22 with RFC 7616's
//! SHA-256, `qop=auth`), sans-IO with time passed in, for the registrar
//! and for calls out from desk phones (issue 13).
//!
//! rsipstack's `verify_digest` checks the response only; this also checks
//! what makes a captured Authorization useless to replay:
//! - a nonce is ours only if we issued it and it is younger than
//!   `nonce_ttl_ms` (an old one gets a fresh challenge with `stale=true`,
//!   so a phone retries without asking its user);
//! - each nonce's `nc` must grow: a request with a count already seen is a
//!   replay and is refused;
//! - the box keeps only HA1 per realm and algorithm (`Secret`), never the
//!   password.
//!
//! Repeated failures from one address lock it out for a while ([`Lockout`]).
//! Every table here is bounded.

use md5::Digest as _;
use std::collections::HashMap;
use std::net::IpAddr;

/// Nonces outstanding at once; the oldest is forgotten beyond it (its phone
/// gets `stale=true` and a new one).
const MAX_NONCES: usize = 4096;
/// Addresses with failures remembered at once.
const MAX_FAILING_SOURCES: usize = 4096;
/// Longest Authorization header value we parse.
const MAX_HEADER: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn parse(s: &str) -> Option<Algorithm> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "SHA-256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    fn hash(self, text: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&md5::Md5::digest(text.as_bytes())),
            Algorithm::Sha256 => hex(&sha2::Sha256::digest(text.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// What the box keeps of an extension's password: HA1 for each algorithm
/// in one realm.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    pub md5: String,
    pub sha256: String,
}

impl Secret {
    pub fn new(user: &str, realm: &str, password: &str) -> Secret {
        let a1 = format!("{user}:{realm}:{password}");
        Secret {
            md5: Algorithm::Md5.hash(&a1),
            sha256: Algorithm::Sha256.hash(&a1),
        }
    }

    fn ha1(&self, alg: Algorithm) -> &str {
        match alg {
            Algorithm::Md5 => &self.md5,
            Algorithm::Sha256 => &self.sha256,
        }
    }
}

impl std::fmt::Debug for Secret {
    /// Never the hashes: they are as good as the password for this realm.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The fields of an `Authorization: Digest ...` header we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub cnonce: String,
    /// The nonce count, as sent (8 hex digits).
    pub nc: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a Digest authorization")]
    NotDigest,
    #[error("authorization header is too long")]
    TooLong,
    #[error("authorization lacks {0}")]
    Missing(&'static str),
    #[error("authorization's {0} is malformed")]
    Malformed(&'static str),
    #[error("only qop=auth is supported")]
    Qop,
    #[error("unknown digest algorithm")]
    Algorithm,
}

/// `key=value` pairs of a Digest header, values quoted or not.
fn params(s: &str) -> Option<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            // A quoted string; \" and \\ are escapes (RFC 3261 25.1).
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &q[end?..])
        } else {
            let e = after.find(',').unwrap_or(after.len());
            (after[..e].trim().to_string(), &after[e..])
        };
        if out.len() >= 32 {
            return None;
        }
        out.insert(key, value);
        rest = tail
            .trim_start()
            .strip_prefix(',')
            .unwrap_or(tail)
            .trim_start();
    }
    Some(out)
}

impl Authorization {
    /// Parse an Authorization (or Proxy-Authorization) header's value.
    pub fn parse(value: &str) -> Result<Authorization, ParseError> {
        if value.len() > MAX_HEADER {
            return Err(ParseError::TooLong);
        }
        let v = value.trim_start();
        let Some(rest) = v
            .get(..6)
            .filter(|s| s.eq_ignore_ascii_case("digest"))
            .map(|_| &v[6..])
        else {
            return Err(ParseError::NotDigest);
        };
        let p = params(rest).ok_or(ParseError::Malformed("parameter list"))?;
        let get = |k: &'static str| p.get(k).cloned().ok_or(ParseError::Missing(k));
        match p.get("qop").map(|q| q.to_ascii_lowercase()) {
            Some(q) if q == "auth" => {}
            // RFC 2069 digest without qop lets a replay pass with the
            // nonce alone: not accepted.
            _ => return Err(ParseError::Qop),
        }
        let algorithm = match p.get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(a).ok_or(ParseError::Algorithm)?,
        };
        let nc = get("nc")?;
        if nc.len() != 8 {
            return Err(ParseError::Malformed("nc"));
        }
        let nc = u32::from_str_radix(&nc, 16).map_err(|_| ParseError::Malformed("nc"))?;
        Ok(Authorization {
            username: get("username")?,
            realm: get("realm")?,
            nonce: get("nonce")?,
            uri: get("uri")?,
            response: get("response")?.to_ascii_lowercase(),
            algorithm,
            cnonce: get("cnonce")?,
            nc,
        })
    }

    /// The response a client knowing `secret` would send for `method`.
    fn expected(&self, secret: &Secret, method: &str) -> String {
        let alg = self.algorithm;
        let ha2 = alg.hash(&format!("{method}:{}", self.uri));
        alg.hash(&format!(
            "{}:{}:{:08x}:{}:auth:{ha2}",
            secret.ha1(alg),
            self.nonce,
            self.nc,
            self.cnonce
        ))
    }
}

/// Nonces we issued: when, and the highest `nc` used with each.
pub struct Nonces {
    ttl_ms: u64,
    issued: HashMap<String, (u64, u32)>,
}

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated as this user.
    Ok(String),
    /// Right password, old or forgotten nonce: challenge again with
    /// `stale=true`.
    Stale,
    /// A nonce count already used with this nonce.
    Replay,
    /// Wrong password, unknown user, or another realm.
    Refused,
}

impl Nonces {
    pub fn new(ttl_ms: u64) -> Nonces {
        Nonces {
            ttl_ms,
            issued: HashMap::new(),
        }
    }

    /// A fresh nonce (`random` is 16 random bytes from the caller).
    pub fn issue(&mut self, now_ms: u64, random: [u8; 16]) -> String {
        if self.issued.len() >= MAX_NONCES {
            self.issued
                .retain(|_, (at, _)| now_ms.saturating_sub(*at) < self.ttl_ms);
            if self.issued.len() >= MAX_NONCES
                && let Some(oldest) = self
                    .issued
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(n, _)| n.clone())
            {
                self.issued.remove(&oldest);
            }
        }
        let nonce = hex(&random);
        self.issued.insert(nonce.clone(), (now_ms, 0));
        nonce
    }

    /// Check `auth` for `method` against the user's secret (`lookup`
    /// gives it for a username and realm).
    pub fn verify(
        &mut self,
        auth: &Authorization,
        method: &str,
        now_ms: u64,
        lookup: impl Fn(&str, &str) -> Option<Secret>,
    ) -> Verdict {
        let Some(secret) = lookup(&auth.username, &auth.realm) else {
            return Verdict::Refused;
        };
        // Constant time is not needed for a hex digest compared once per
        // request, but it costs nothing.
        let want = auth.expected(&secret, method);
        let right = want.len() == auth.response.len()
            && want
                .bytes()
                .zip(auth.response.bytes())
                .fold(0u8, |d, (a, b)| d | (a ^ b))
                == 0;
        if !right {
            return Verdict::Refused;
        }
        match self.issued.get_mut(&auth.nonce) {
            None => Verdict::Stale,
            Some((at, _)) if now_ms.saturating_sub(*at) >= self.ttl_ms => {
                self.issued.remove(&auth.nonce);
                Verdict::Stale
            }
            Some((_, seen)) if auth.nc <= *seen => Verdict::Replay,
            Some((_, seen)) => {
                *seen = auth.nc;
                Verdict::Ok(auth.username.clone())
            }
        }
    }

    /// A `WWW-Authenticate` / `Proxy-Authenticate` value for `nonce`.
    pub fn challenge(realm: &str, nonce: &str, alg: Algorithm, stale: bool) -> String {
        format!(
            "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{}",
            alg.name(),
            if stale { ", stale=true" } else { "" }
        )
    }
}

/// Addresses that failed to authenticate too often, locked out for a while.
pub struct Lockout {
    max_failures: u32,
    window_ms: u64,
    lock_ms: u64,
    sources: HashMap<IpAddr, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first_ms: u64,
    locked_until: Option<u64>,
}

impl Lockout {
    /// `max_failures` within `window_ms` lock an address for `lock_ms`.
    pub fn new(max_failures: u32, window_ms: u64, lock_ms: u64) -> Lockout {
        Lockout {
            max_failures: max_failures.max(1),
            window_ms,
            lock_ms,
            sources: HashMap::new(),
        }
    }

    pub fn is_locked(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.sources
            .get(&ip)
            .and_then(|f| f.locked_until)
            .is_some_and(|t| now_ms < t)
    }

    /// A failed attempt; true when it locks the address (log it once).
    pub fn failed(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_FAILING_SOURCES {
            let (window, lock) = (self.window_ms, self.lock_ms);
            self.sources.retain(|_, f| match f.locked_until {
                Some(t) => now_ms < t,
                None => now_ms.saturating_sub(f.first_ms) < window.max(lock),
            });
            if self.sources.len() >= MAX_FAILING_SOURCES {
                return false;
            }
        }
        let f = self.sources.entry(ip).or_insert(Failures {
            count: 0,
            first_ms: now_ms,
            locked_until: None,
        });
        if f.locked_until.is_some_and(|t| now_ms >= t)
            || now_ms.saturating_sub(f.first_ms) >= self.window_ms
        {
            *f = Failures {
                count: 0,
                first_ms: now_ms,
                locked_until: None,
            };
        }
        f.count += 1;
        if f.count >= self.max_failures && f.locked_until.is_none() {
            f.locked_until = Some(now_ms + self.lock_ms);
            return true;
        }
        false
    }

    /// A success clears the address's failures.
    pub fn succeeded(&mut self, ip: IpAddr) {
        if self
            .sources
            .get(&ip)
            .is_some_and(|f| f.locked_until.is_none())
        {
            self.sources.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REALM: &str = "shop.example";

    fn secret(user: &str, realm: &str) -> Option<Secret> {
        (user == "101" && realm == REALM).then(|| Secret::new("101", REALM, "correct horse"))
    }

    /// What a phone sends, computed from the password as RFC 7616 says.
    fn phone(alg: Algorithm, password: &str, nonce: &str, nc: u32, method: &str) -> String {
        let ha1 = alg.hash(&format!("101:{REALM}:{password}"));
        let uri = "sip:shop.example";
        let ha2 = alg.hash(&format!("{method}:{uri}"));
        let response = alg.hash(&format!("{ha1}:{nonce}:{nc:08x}:0a4f113b:auth:{ha2}"));
        format!(
            "Digest username=\"101\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm={}, cnonce=\"0a4f113b\", qop=auth, nc={nc:08x}",
            alg.name()
        )
    }

    #[test]
    fn rfc_2617s_example_response() {
        // RFC 2617 §3.5 (HTTP, but the same computation).
        let a = Authorization {
            username: "Mufasa".into(),
            realm: "testrealm@host.com".into(),
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
            uri: "/dir/index.html".into(),
            response: String::new(),
            algorithm: Algorithm::Md5,
            cnonce: "0a4f113b".into(),
            nc: 1,
        };
        let s = Secret::new("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(a.expected(&s, "GET"), "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn a_right_answer_passes_once_and_its_replay_does_not() {
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let mut n = Nonces::new(60_000);
            let nonce = n.issue(0, [7; 16]);
            let h = phone(alg, "correct horse", &nonce, 1, "REGISTER");
            let a = Authorization::parse(&h).unwrap();
            assert_eq!(a.algorithm, alg);
            assert_eq!(
                n.verify(&a, "REGISTER", 10, secret),
                Verdict::Ok("101".into())
            );
            // The same request again: a replay.
            assert_eq!(n.verify(&a, "REGISTER", 20, secret), Verdict::Replay);
            // The phone's next request counts up: accepted.
            let next =
                Authorization::parse(&phone(alg, "correct horse", &nonce, 2, "REGISTER")).unwrap();
            assert_eq!(
                n.verify(&next, "REGISTER", 30, secret),
                Verdict::Ok("101".into())
            );
            // Computed for another method: refused.
            let other =
                Authorization::parse(&phone(alg, "correct horse", &nonce, 3, "INVITE")).unwrap();
            assert_eq!(n.verify(&other, "REGISTER", 40, secret), Verdict::Refused);
        }
    }

    #[test]
    fn wrong_passwords_users_and_realms_are_refused() {
        let mut n = Nonces::new(60_000);
        let nonce = n.issue(0, [1; 16]);
        let wrong = Authorization::parse(&phone(
            Algorithm::Md5,
            "battery staple",
            &nonce,
            1,
            "REGISTER",
        ))
        .unwrap();
        assert_eq!(n.verify(&wrong, "REGISTER", 1, secret), Verdict::Refused);
        let right = phone(Algorithm::Md5, "correct horse", &nonce, 1, "REGISTER");
        let other_user =
            Authorization::parse(&right.replace("username=\"101\"", "username=\"102\"")).unwrap();
        assert_eq!(
            n.verify(&other_user, "REGISTER", 1, secret),
            Verdict::Refused
        );
        let other_realm = Authorization::parse(&right.replace(REALM, "evil.example")).unwrap();
        assert_eq!(
            n.verify(&other_realm, "REGISTER", 1, secret),
            Verdict::Refused
        );
    }

    #[test]
    fn old_and_unknown_nonces_are_stale_not_refused() {
        let mut n = Nonces::new(60_000);
        let nonce = n.issue(0, [2; 16]);
        let a = Authorization::parse(&phone(
            Algorithm::Md5,
            "correct horse",
            &nonce,
            1,
            "REGISTER",
        ))
        .unwrap();
        assert_eq!(n.verify(&a, "REGISTER", 60_000, secret), Verdict::Stale);
        let made_up = Authorization::parse(&phone(
            Algorithm::Md5,
            "correct horse",
            "abcdef",
            1,
            "REGISTER",
        ))
        .unwrap();
        assert_eq!(n.verify(&made_up, "REGISTER", 1, secret), Verdict::Stale);
        let c = Nonces::challenge(REALM, "abcdef", Algorithm::Sha256, true);
        assert_eq!(
            c,
            "Digest realm=\"shop.example\", nonce=\"abcdef\", algorithm=SHA-256, qop=\"auth\", stale=true"
        );
    }

    #[test]
    fn the_nonce_table_is_bounded() {
        let mut n = Nonces::new(u64::MAX);
        for i in 0..(MAX_NONCES as u64 + 100) {
            let mut r = [0u8; 16];
            r[..8].copy_from_slice(&i.to_be_bytes());
            n.issue(i, r);
        }
        assert_eq!(n.issued.len(), MAX_NONCES);
    }

    #[test]
    fn malformed_authorizations_are_errors() {
        let good = phone(Algorithm::Md5, "x", "n", 1, "REGISTER");
        assert_eq!(
            Authorization::parse("Basic dXNlcjpwYXNz"),
            Err(ParseError::NotDigest)
        );
        assert_eq!(Authorization::parse(""), Err(ParseError::NotDigest));
        assert_eq!(
            Authorization::parse(&good.replace(", qop=auth", "")),
            Err(ParseError::Qop)
        );
        assert_eq!(
            Authorization::parse(&good.replace("qop=auth", "qop=auth-int")),
            Err(ParseError::Qop)
        );
        assert_eq!(
            Authorization::parse(&good.replace("algorithm=MD5", "algorithm=SHA-512-256")),
            Err(ParseError::Algorithm)
        );
        assert_eq!(
            Authorization::parse(&good.replace("nc=00000001", "nc=1")),
            Err(ParseError::Malformed("nc"))
        );
        assert_eq!(
            Authorization::parse(&good.replace("cnonce=\"0a4f113b\", ", "")),
            Err(ParseError::Missing("cnonce"))
        );
        assert_eq!(
            Authorization::parse(&format!("{good}, x=\"{}\"", "a".repeat(MAX_HEADER))),
            Err(ParseError::TooLong)
        );
        assert!(Authorization::parse("Digest username=\"unterminated").is_err());
        // Escapes and odd spacing, as phones really send them.
        let odd = "digest   username = \"1\\\"01\" ,realm=\"r\",nonce=n,uri=\"sip:x\",response=\"AB\",cnonce=c,qop=\"auth\",nc=0000000a";
        let a = Authorization::parse(odd).unwrap();
        assert_eq!(
            (a.username.as_str(), a.nc, a.response.as_str()),
            ("1\"01", 10, "ab")
        );
    }

    #[test]
    fn repeated_failures_lock_an_address_out_for_a_while() {
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        let mut l = Lockout::new(3, 60_000, 300_000);
        assert!(!l.failed(ip, 0));
        assert!(!l.failed(ip, 1_000));
        assert!(l.failed(ip, 2_000), "the third failure locks");
        assert!(!l.failed(ip, 3_000), "and is reported once");
        assert!(l.is_locked(ip, 3_000) && !l.is_locked(other, 3_000));
        assert!(!l.is_locked(ip, 302_000), "the lock wears off");
        // Failures spread wider than the window never lock.
        let mut slow = Lockout::new(3, 60_000, 300_000);
        for t in [0, 61_000, 122_000, 183_000] {
            assert!(!slow.failed(other, t));
        }
        // A success clears what was counted.
        let mut l = Lockout::new(3, 60_000, 300_000);
        l.failed(ip, 0);
        l.failed(ip, 1);
        l.succeeded(ip);
        assert!(!l.failed(ip, 2));
    }
}
