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

    pub fn hash(self, text: &str) -> String {
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
    /// None when only the MD5 HA1 was configured: SHA-256 answers fail.
    pub sha256: Option<String>,
}

impl Secret {
    pub fn new(user: &str, realm: &str, password: &str) -> Secret {
        let a1 = format!("{user}:{realm}:{password}");
        Secret {
            md5: Algorithm::Md5.hash(&a1),
            sha256: Some(Algorithm::Sha256.hash(&a1)),
        }
    }

    /// From HA1s computed elsewhere (`handlet extension-secret`), so the
    /// box never holds the password itself. Lowercase hex.
    pub fn from_ha1(md5: &str, sha256: Option<&str>) -> Secret {
        Secret {
            md5: md5.to_ascii_lowercase(),
            sha256: sha256.map(str::to_ascii_lowercase),
        }
    }

    fn ha1(&self, alg: Algorithm) -> Option<&str> {
        match alg {
            Algorithm::Md5 => Some(&self.md5),
            Algorithm::Sha256 => self.sha256.as_deref(),
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
    /// The nonce count, and as sent (8 hex digits: hashed as received).
    pub nc: u32,
    pub nc_text: String,
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

/// The parameters of a `Digest ...` header value (bounded in length).
fn digest_params(value: &str) -> Result<HashMap<String, String>, ParseError> {
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
    params(rest).ok_or(ParseError::Malformed("parameter list"))
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
        if out.len() >= 32 || out.insert(key, value).is_some() {
            // Too many, or one given twice (RFC 7616 forbids it).
            return None;
        }
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
        let p = digest_params(value)?;
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
        let nc_text = get("nc")?;
        if nc_text.len() != 8 || !nc_text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseError::Malformed("nc"));
        }
        let nc = u32::from_str_radix(&nc_text, 16).map_err(|_| ParseError::Malformed("nc"))?;
        Ok(Authorization {
            username: get("username")?,
            realm: get("realm")?,
            nonce: get("nonce")?,
            uri: get("uri")?,
            response: get("response")?.to_ascii_lowercase(),
            algorithm,
            cnonce: get("cnonce")?,
            nc,
            nc_text,
        })
    }

    /// The response a client knowing `secret` would send for `method`.
    /// None when the secret has no HA1 for this algorithm: nothing can
    /// match (an empty HA1 would let anyone compute the answer).
    fn expected(&self, secret: &Secret, method: &str) -> Option<String> {
        let alg = self.algorithm;
        let ha1 = secret.ha1(alg)?;
        let ha2 = alg.hash(&format!("{method}:{}", self.uri));
        Some(alg.hash(&format!(
            "{ha1}:{}:{}:{}:auth:{ha2}",
            self.nonce, self.nc_text, self.cnonce
        )))
    }
}

/// A server's digest challenge (WWW-Authenticate or Proxy-Authenticate), as
/// a client answering it reads it: the trunk registering, or an INVITE out
/// through it. rsipstack 0.7.14 cannot parse `algorithm=SHA-256` (it knows
/// only the draft spelling `SHA256`), so trunks answer with this instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The server offers qop=auth; without it the answer is RFC 2069's.
    pub qop_auth: bool,
    pub stale: bool,
}

impl Challenge {
    pub fn parse(value: &str) -> Result<Challenge, ParseError> {
        let p = digest_params(value)?;
        let algorithm = match p.get("algorithm").map(|a| a.to_ascii_uppercase()) {
            None => Algorithm::Md5,
            // The draft spelling, still seen in the wild.
            Some(a) if a == "SHA256" => Algorithm::Sha256,
            Some(a) => Algorithm::parse(&a).ok_or(ParseError::Algorithm)?,
        };
        let qop_auth = match p.get("qop") {
            None => false,
            Some(q) if q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth")) => true,
            // auth-int only: we do not hash bodies.
            Some(_) => return Err(ParseError::Qop),
        };
        Ok(Challenge {
            realm: p
                .get("realm")
                .cloned()
                .ok_or(ParseError::Missing("realm"))?,
            nonce: p
                .get("nonce")
                .cloned()
                .ok_or(ParseError::Missing("nonce"))?,
            opaque: p.get("opaque").cloned(),
            algorithm,
            qop_auth,
            stale: p
                .get("stale")
                .is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// The challenge of a 401 (WWW-Authenticate) or 407
    /// (Proxy-Authenticate) response, and whether it is a proxy's: the
    /// answer goes in Proxy-Authorization then.
    pub fn from_response(resp: &rsipstack::sip::Response) -> Result<(Challenge, bool), ParseError> {
        use rsipstack::sip::Header;
        let proxy = resp.status_code.code() == 407;
        let values: Vec<String> = resp
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::WwwAuthenticate(v) if !proxy => Some(v.value().to_string()),
                Header::ProxyAuthenticate(v) if proxy => Some(v.value().to_string()),
                _ => None,
            })
            .collect();
        Ok((Challenge::best(values.iter().map(String::as_str))?, proxy))
    }

    /// The best of several challenges (a server may offer SHA-256 and MD5):
    /// SHA-256 first, then MD5; those we cannot answer are skipped.
    pub fn best<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Challenge, ParseError> {
        let mut best: Option<Challenge> = None;
        let mut last_err = ParseError::NotDigest;
        for v in values {
            match Challenge::parse(v) {
                Ok(c) => {
                    if best.as_ref().is_none_or(|b| {
                        b.algorithm == Algorithm::Md5 && c.algorithm == Algorithm::Sha256
                    }) {
                        best = Some(c);
                    }
                }
                Err(e) => last_err = e,
            }
        }
        best.ok_or(last_err)
    }

    /// The Authorization (or Proxy-Authorization) value answering this
    /// challenge for `method` `uri`, the `nc`th time, with `cnonce`.
    #[allow(clippy::too_many_arguments)]
    pub fn answer(
        &self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> String {
        let alg = self.algorithm;
        let ha1 = alg.hash(&format!("{username}:{}:{password}", self.realm));
        let ha2 = alg.hash(&format!("{method}:{uri}"));
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\"",
            quote(username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri)
        );
        if self.qop_auth {
            let nc = format!("{nc:08x}");
            let response = alg.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce));
            out.push_str(&format!(
                ", response=\"{response}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"{}\"",
                alg.name(),
                quote(cnonce)
            ));
        } else {
            let response = alg.hash(&format!("{ha1}:{}:{ha2}", self.nonce));
            out.push_str(&format!(
                ", response=\"{response}\", algorithm={}",
                alg.name()
            ));
        }
        if let Some(o) = &self.opaque {
            out.push_str(&format!(", opaque=\"{}\"", quote(o)));
        }
        out
    }
}

/// Nonces we issued: when, to whom, and the highest `nc` used with each.
pub struct Nonces {
    ttl_ms: u64,
    issued: HashMap<String, Issued>,
    /// Issue order, for eviction in O(1) when full.
    order: std::collections::VecDeque<String>,
}

#[derive(Debug, Clone, Copy)]
struct Issued {
    at_ms: u64,
    /// Who it was given to: only they can answer with it (someone forging
    /// another's source address never sees the nonce).
    to: IpAddr,
    seen_nc: u32,
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
            order: std::collections::VecDeque::new(),
        }
    }

    /// A fresh nonce for a request from `to` (`random` is 16 random bytes
    /// from the caller). When the table is full the oldest goes.
    pub fn issue(&mut self, now_ms: u64, to: IpAddr, random: [u8; 16]) -> String {
        while self.issued.len() >= MAX_NONCES {
            match self.order.pop_front() {
                Some(old) => {
                    self.issued.remove(&old);
                }
                None => break,
            }
        }
        let nonce = hex(&random);
        if self
            .issued
            .insert(
                nonce.clone(),
                Issued {
                    at_ms: now_ms,
                    to,
                    seen_nc: 0,
                },
            )
            .is_none()
        {
            self.order.push_back(nonce.clone());
        }
        nonce
    }

    /// Check `auth`, sent from `from`, for `method` against the user's
    /// secret (`lookup` gives it for a username and realm). The nonce is
    /// checked first: a nonce we did not issue, or issued to another
    /// address, or too old, is only ever `Stale` (challenge again, count
    /// nothing), so a forged source cannot make a failure count against
    /// anyone; only a wrong answer to a nonce issued to that address is
    /// `Refused`.
    pub fn verify(
        &mut self,
        auth: &Authorization,
        method: &str,
        from: IpAddr,
        now_ms: u64,
        lookup: impl Fn(&str, &str) -> Option<Secret>,
    ) -> Verdict {
        let Some(n) = self.issued.get(&auth.nonce).copied() else {
            return Verdict::Stale;
        };
        if n.to != from {
            return Verdict::Stale;
        }
        if now_ms.saturating_sub(n.at_ms) >= self.ttl_ms {
            self.issued.remove(&auth.nonce);
            return Verdict::Stale;
        }
        let Some(secret) = lookup(&auth.username, &auth.realm) else {
            return Verdict::Refused;
        };
        // Compared without an early exit: it costs nothing.
        let Some(want) = auth.expected(&secret, method) else {
            return Verdict::Refused;
        };
        let right = want.len() == auth.response.len()
            && want
                .bytes()
                .zip(auth.response.bytes())
                .fold(0u8, |d, (a, b)| d | (a ^ b))
                == 0;
        if !right {
            return Verdict::Refused;
        }
        if auth.nc <= n.seen_nc {
            return Verdict::Replay;
        }
        if let Some(e) = self.issued.get_mut(&auth.nonce) {
            e.seen_nc = auth.nc;
        }
        Verdict::Ok(auth.username.clone())
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

/// An address and the user it tried: what a lockout is kept for. Per user
/// as well as per address, so that one misconfigured phone behind an
/// office's NAT locks out its own extension from there, not every phone.
/// IPv6 addresses count per /64 (one host or site has a whole /64), and
/// an IPv4-mapped IPv6 address as the IPv4 address.
fn lockout_key(ip: IpAddr, user: &str) -> (IpAddr, String) {
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => super::tcp::source_of(ip),
        },
        v4 => v4,
    };
    (ip, user.chars().take(64).collect())
}

/// Addresses that failed to authenticate as a user too often, locked out
/// for a while.
pub struct Lockout {
    max_failures: u32,
    window_ms: u64,
    lock_ms: u64,
    sources: HashMap<(IpAddr, String), Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first_ms: u64,
    locked_until: Option<u64>,
}

impl Lockout {
    /// `max_failures` within `window_ms` lock an address out as a user for
    /// `lock_ms`.
    pub fn new(max_failures: u32, window_ms: u64, lock_ms: u64) -> Lockout {
        Lockout {
            max_failures: max_failures.max(1),
            window_ms,
            lock_ms,
            sources: HashMap::new(),
        }
    }

    pub fn is_locked(&self, ip: IpAddr, user: &str, now_ms: u64) -> bool {
        self.sources
            .get(&lockout_key(ip, user))
            .and_then(|f| f.locked_until)
            .is_some_and(|t| now_ms < t)
    }

    /// A failed attempt; true when it locks the address (log it once).
    pub fn failed(&mut self, ip: IpAddr, user: &str, now_ms: u64) -> bool {
        let key = lockout_key(ip, user);
        if !self.sources.contains_key(&key) && self.sources.len() >= MAX_FAILING_SOURCES {
            let window = self.window_ms;
            // What no longer matters goes first: locks worn off, windows passed.
            self.sources.retain(|_, f| match f.locked_until {
                Some(t) => now_ms < t,
                None => now_ms.saturating_sub(f.first_ms) < window,
            });
            // Still full: the oldest unlocked entry makes room (a flood of
            // made-up sources cannot stop failures being counted).
            if self.sources.len() >= MAX_FAILING_SOURCES {
                let oldest = self
                    .sources
                    .iter()
                    .filter(|(_, f)| f.locked_until.is_none())
                    .min_by_key(|(_, f)| f.first_ms)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => {
                        self.sources.remove(&k);
                    }
                    None => return false,
                }
            }
        }
        let f = self.sources.entry(key).or_insert(Failures {
            count: 0,
            first_ms: now_ms,
            locked_until: None,
        });
        if f.locked_until.is_some_and(|t| now_ms >= t)
            || (f.locked_until.is_none() && now_ms.saturating_sub(f.first_ms) >= self.window_ms)
        {
            *f = Failures {
                count: 0,
                first_ms: now_ms,
                locked_until: None,
            };
        }
        f.count = f.count.saturating_add(1);
        if f.count >= self.max_failures && f.locked_until.is_none() {
            f.locked_until = Some(now_ms.saturating_add(self.lock_ms));
            return true;
        }
        false
    }

    /// A success clears that user's failures from that address.
    pub fn succeeded(&mut self, ip: IpAddr, user: &str) {
        let key = lockout_key(ip, user);
        if self
            .sources
            .get(&key)
            .is_some_and(|f| f.locked_until.is_none())
        {
            self.sources.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REALM: &str = "shop.example";
    const PHONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 20));
    const FORGER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 66));

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
    fn a_challenge_is_answered_as_our_own_verifier_expects() {
        // Our registrar's challenge, answered by the client side, verifies.
        let mut n = Nonces::new(30_000);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let nonce = n.issue(0, ip, [3; 16]);
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let c = Challenge::parse(&Nonces::challenge(REALM, &nonce, alg, false)).unwrap();
            assert_eq!(c.algorithm, alg);
            assert!(c.qop_auth);
            let nc = if alg == Algorithm::Md5 { 1 } else { 2 };
            let answer = c.answer("101", "correct horse", "REGISTER", "sip:shop", "abc", nc);
            let auth = Authorization::parse(&answer).unwrap();
            let v = n.verify(&auth, "REGISTER", ip, 10, secret);
            assert_eq!(v, Verdict::Ok("101".into()), "{alg:?}: {answer}");
        }
    }

    #[test]
    fn challenges_are_read_as_servers_write_them() {
        // Kamailio's with SHA-256, the draft spelling, RFC 2069 without qop.
        let c = Challenge::parse(
            r#"Digest realm="127.0.0.5", nonce="Z1x2", qop="auth", algorithm=SHA-256"#,
        )
        .unwrap();
        assert_eq!(
            (c.algorithm, c.qop_auth, c.stale),
            (Algorithm::Sha256, true, false)
        );
        let c = Challenge::parse(r#"Digest realm="r", nonce="n", algorithm=SHA256, stale=TRUE"#)
            .unwrap();
        assert_eq!((c.algorithm, c.stale), (Algorithm::Sha256, true));
        let c = Challenge::parse(r#"Digest realm="r", nonce="n", opaque="o""#).unwrap();
        assert!(!c.qop_auth);
        // RFC 2617 §3.5's example without qop: response is H(HA1:nonce:HA2).
        let a = c.answer("u", "p", "REGISTER", "sip:r", "x", 1);
        let ha1 = Algorithm::Md5.hash("u:r:p");
        let ha2 = Algorithm::Md5.hash("REGISTER:sip:r");
        let expect = Algorithm::Md5.hash(&format!("{ha1}:n:{ha2}"));
        assert!(
            a.contains(&format!("response=\"{expect}\"")) && a.contains("opaque=\"o\""),
            "{a}"
        );
        assert!(!a.contains("qop"));
        // qop offered as a list.
        assert!(
            Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth-int,auth""#)
                .unwrap()
                .qop_auth
        );
        assert_eq!(
            Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth-int""#),
            Err(ParseError::Qop)
        );
        assert_eq!(
            Challenge::parse(r#"Digest realm="r", nonce="n", algorithm=SHA-512"#),
            Err(ParseError::Algorithm)
        );
        assert_eq!(
            Challenge::parse("Basic realm=\"r\""),
            Err(ParseError::NotDigest)
        );
        assert_eq!(
            Challenge::parse(r#"Digest realm="r""#),
            Err(ParseError::Missing("nonce"))
        );
        // SHA-256 is preferred when both are offered.
        let best = Challenge::best([
            r#"Digest realm="r", nonce="n1", qop="auth""#,
            r#"Digest realm="r", nonce="n2", qop="auth", algorithm=SHA-256"#,
        ])
        .unwrap();
        assert_eq!(best.nonce, "n2");
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
            nc_text: "00000001".into(),
        };
        let s = Secret::new("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(
            a.expected(&s, "GET").unwrap(),
            "6629fae49393a05397450978507c4ef1"
        );
        // With only the MD5 HA1, a SHA-256 answer never matches.
        let md5_only = Secret::from_ha1(&s.md5, None);
        let mut sha = a.clone();
        sha.algorithm = Algorithm::Sha256;
        assert_eq!(sha.expected(&md5_only, "GET"), None);
        assert_eq!(a.expected(&md5_only, "GET"), a.expected(&s, "GET"));
    }

    #[test]
    fn a_right_answer_passes_once_and_its_replay_does_not() {
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let mut n = Nonces::new(60_000);
            let nonce = n.issue(0, PHONE, [7; 16]);
            let h = phone(alg, "correct horse", &nonce, 1, "REGISTER");
            let a = Authorization::parse(&h).unwrap();
            assert_eq!(a.algorithm, alg);
            assert_eq!(
                n.verify(&a, "REGISTER", PHONE, 10, secret),
                Verdict::Ok("101".into())
            );
            // The same request again: a replay.
            assert_eq!(n.verify(&a, "REGISTER", PHONE, 20, secret), Verdict::Replay);
            // The phone's next request counts up: accepted.
            let next =
                Authorization::parse(&phone(alg, "correct horse", &nonce, 2, "REGISTER")).unwrap();
            assert_eq!(
                n.verify(&next, "REGISTER", PHONE, 30, secret),
                Verdict::Ok("101".into())
            );
            // Computed for another method: refused.
            let other =
                Authorization::parse(&phone(alg, "correct horse", &nonce, 3, "INVITE")).unwrap();
            assert_eq!(
                n.verify(&other, "REGISTER", PHONE, 40, secret),
                Verdict::Refused
            );
        }
    }

    #[test]
    fn wrong_passwords_users_and_realms_are_refused() {
        let mut n = Nonces::new(60_000);
        let nonce = n.issue(0, PHONE, [1; 16]);
        let wrong = Authorization::parse(&phone(
            Algorithm::Md5,
            "battery staple",
            &nonce,
            1,
            "REGISTER",
        ))
        .unwrap();
        assert_eq!(
            n.verify(&wrong, "REGISTER", PHONE, 1, secret),
            Verdict::Refused
        );
        let right = phone(Algorithm::Md5, "correct horse", &nonce, 1, "REGISTER");
        let other_user =
            Authorization::parse(&right.replace("username=\"101\"", "username=\"102\"")).unwrap();
        assert_eq!(
            n.verify(&other_user, "REGISTER", PHONE, 1, secret),
            Verdict::Refused
        );
        let other_realm = Authorization::parse(&right.replace(REALM, "evil.example")).unwrap();
        assert_eq!(
            n.verify(&other_realm, "REGISTER", PHONE, 1, secret),
            Verdict::Refused
        );
    }

    #[test]
    fn old_and_unknown_nonces_are_stale_not_refused() {
        let mut n = Nonces::new(60_000);
        let nonce = n.issue(0, PHONE, [2; 16]);
        let a = Authorization::parse(&phone(
            Algorithm::Md5,
            "correct horse",
            &nonce,
            1,
            "REGISTER",
        ))
        .unwrap();
        assert_eq!(
            n.verify(&a, "REGISTER", PHONE, 60_000, secret),
            Verdict::Stale
        );
        let made_up = Authorization::parse(&phone(
            Algorithm::Md5,
            "correct horse",
            "abcdef",
            1,
            "REGISTER",
        ))
        .unwrap();
        assert_eq!(
            n.verify(&made_up, "REGISTER", PHONE, 1, secret),
            Verdict::Stale
        );
        let c = Nonces::challenge(REALM, "abcdef", Algorithm::Sha256, true);
        assert_eq!(
            c,
            "Digest realm=\"shop.example\", nonce=\"abcdef\", algorithm=SHA-256, qop=\"auth\", stale=true"
        );
    }

    #[test]
    fn only_the_address_a_nonce_was_given_to_can_fail_with_it() {
        let mut n = Nonces::new(60_000);
        let nonce = n.issue(0, PHONE, [3; 16]);
        let right = Authorization::parse(&phone(
            Algorithm::Md5,
            "correct horse",
            &nonce,
            1,
            "REGISTER",
        ))
        .unwrap();
        let wrong =
            Authorization::parse(&phone(Algorithm::Md5, "guess", &nonce, 1, "REGISTER")).unwrap();
        // From elsewhere (a forged source): stale, whatever the answer, so
        // nothing is counted against anyone.
        assert_eq!(
            n.verify(&wrong, "REGISTER", FORGER, 1, secret),
            Verdict::Stale
        );
        assert_eq!(
            n.verify(&right, "REGISTER", FORGER, 1, secret),
            Verdict::Stale
        );
        // A wrong answer to a made-up nonce is stale too, not a failure.
        let made_up =
            Authorization::parse(&phone(Algorithm::Md5, "guess", "00ff", 1, "REGISTER")).unwrap();
        assert_eq!(
            n.verify(&made_up, "REGISTER", PHONE, 1, secret),
            Verdict::Stale
        );
        assert_eq!(
            n.verify(&wrong, "REGISTER", PHONE, 1, secret),
            Verdict::Refused
        );
        assert_eq!(
            n.verify(&right, "REGISTER", PHONE, 1, secret),
            Verdict::Ok("101".into())
        );
    }

    #[test]
    fn the_nonce_count_is_hashed_as_sent() {
        let mut n = Nonces::new(60_000);
        let nonce = n.issue(0, PHONE, [4; 16]);
        // nc=0000000A (upper case), computed by the phone with what it sent.
        let ha1 = Algorithm::Md5.hash(&format!("101:{REALM}:correct horse"));
        let ha2 = Algorithm::Md5.hash("REGISTER:sip:shop.example");
        let response = Algorithm::Md5.hash(&format!("{ha1}:{nonce}:0000000A:c1:auth:{ha2}"));
        let h = format!(
            "Digest username=\"101\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"sip:shop.example\", \
             response=\"{response}\", cnonce=\"c1\", qop=auth, nc=0000000A"
        );
        let a = Authorization::parse(&h).unwrap();
        assert_eq!(
            n.verify(&a, "REGISTER", PHONE, 1, secret),
            Verdict::Ok("101".into())
        );
        // A parameter given twice, or a count with a sign, is malformed.
        assert!(Authorization::parse(&format!("{h}, nc=0000000B")).is_err());
        assert!(Authorization::parse(&h.replace("nc=0000000A", "nc=+000000A")).is_err());
    }

    #[test]
    fn the_nonce_table_is_bounded() {
        let mut n = Nonces::new(u64::MAX);
        for i in 0..(MAX_NONCES as u64 + 100) {
            let mut r = [0u8; 16];
            r[..8].copy_from_slice(&i.to_be_bytes());
            n.issue(i, PHONE, r);
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
        assert!(!l.failed(ip, "101", 0));
        assert!(!l.failed(ip, "101", 1_000));
        assert!(l.failed(ip, "101", 2_000), "the third failure locks");
        assert!(!l.failed(ip, "101", 3_000), "and is reported once");
        assert!(l.is_locked(ip, "101", 3_000) && !l.is_locked(other, "101", 3_000));
        assert!(!l.is_locked(ip, "101", 302_000), "the lock wears off");
        // Failures spread wider than the window never lock.
        let mut slow = Lockout::new(3, 60_000, 300_000);
        for t in [0, 61_000, 122_000, 183_000] {
            assert!(!slow.failed(other, "101", t));
        }
        // Locked as 101 from that address, not as 102: one misconfigured
        // phone behind an office's NAT does not lock the others out.
        let mut l = Lockout::new(3, 60_000, 300_000);
        for t in 0..3 {
            l.failed(ip, "101", t);
        }
        assert!(l.is_locked(ip, "101", 10) && !l.is_locked(ip, "102", 10));
        // An IPv6 /64 is one source; an IPv4-mapped address is the IPv4 one.
        let mut l = Lockout::new(2, 60_000, 300_000);
        l.failed("2001:db8:1:2::1".parse().unwrap(), "101", 0);
        assert!(l.failed("2001:db8:1:2::ffff".parse().unwrap(), "101", 1));
        l.failed("::ffff:192.0.2.9".parse().unwrap(), "103", 0);
        assert!(l.failed(ip, "103", 1));
        // A full table of made-up sources does not stop counting.
        let mut l = Lockout::new(2, 60_000, 300_000);
        for i in 0..MAX_FAILING_SOURCES as u32 {
            l.failed(IpAddr::V4(i.into()), "101", 0);
        }
        l.failed(ip, "101", 1);
        assert!(
            l.failed(ip, "101", 2),
            "failures went uncounted when the table was full"
        );
        // A success clears what was counted.
        let mut l = Lockout::new(3, 60_000, 300_000);
        l.failed(ip, "101", 0);
        l.failed(ip, "101", 1);
        l.succeeded(ip, "101");
        assert!(!l.failed(ip, "101", 2));
    }
}
