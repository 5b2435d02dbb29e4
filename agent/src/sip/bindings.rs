//! The registrar's location table (RFC 3261 §10.3), sans-IO with time
//! passed in: which contacts each extension is reachable at, until when.
//! The SIP shell authenticates a REGISTER first (`digest.rs`), then hands
//! its Contacts here and answers with what this returns.
//!
//! Rules:
//! - a contact's expiry is its `expires` parameter, else the request's
//!   Expires header, else [`Limits::default_secs`]; below
//!   [`Limits::min_secs`] (and not 0) the request is refused with 423 and
//!   the minimum; above [`Limits::max_secs`] it is shortened;
//! - expiry 0 removes that contact; `Contact: *` with `Expires: 0` removes
//!   them all (any other use of `*` is a 400);
//! - a refresh from the same Call-ID must have a higher CSeq than the one
//!   that made the binding; an older, reordered REGISTER fails and changes
//!   nothing (RFC 3261 §10.3 step 7);
//! - a phone behind NAT is reached where its REGISTER came from, not at
//!   the private address in its Contact (`reach`, from the request's
//!   source and transport);
//! - at most [`MAX_CONTACTS`] contacts per extension: a new one replaces
//!   the one expiring first.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Contacts one extension may hold (a desk phone, a softphone, a mobile app).
pub const MAX_CONTACTS: usize = 5;
/// Longest contact URI kept.
const MAX_URI: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub min_secs: u64,
    pub max_secs: u64,
    pub default_secs: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            min_secs: 60,
            max_secs: 3600,
            default_secs: 3600,
        }
    }
}

/// One Contact of a REGISTER, as the shell parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactReq {
    /// `Contact: <uri>;expires=N` (expires as given, if given).
    Uri { uri: String, expires: Option<u64> },
    /// `Contact: *`
    All,
}

/// A REGISTER, as far as bindings need it.
#[derive(Debug, Clone)]
pub struct Register {
    pub contacts: Vec<ContactReq>,
    /// The Expires header, if any.
    pub expires: Option<u64>,
    pub call_id: String,
    pub cseq: u32,
    /// Where the request came from (address and transport name), so the
    /// phone can be reached through its NAT.
    pub source: SocketAddr,
    pub transport: &'static str,
}

/// Where an extension can be reached, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub contact: String,
    /// Where requests for it go: the REGISTER's source.
    pub reach: SocketAddr,
    pub transport: &'static str,
    pub expires_at_ms: u64,
    pub call_id: String,
    pub cseq: u32,
}

impl Binding {
    /// Seconds left at `now_ms` (for the 200 OK's Contact list).
    pub fn expires_in(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms).div_ceil(1000)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// 423 Interval Too Brief, with this Min-Expires.
    #[error("registration interval too brief (at least {0} s)")]
    TooBrief(u64),
    /// 400: `*` mixed with other contacts or with a non-zero expiry.
    #[error("Contact: * is only allowed alone with Expires: 0")]
    BadWildcard,
    /// 400: a contact URI over our limit.
    #[error("contact URI too long")]
    TooLong,
    /// The same Call-ID with a CSeq not above the binding's: a reordered
    /// or replayed request, which fails (the shell answers 500).
    #[error("REGISTER out of order (CSeq not above the last one)")]
    OutOfOrder,
}

/// Every extension's bindings.
#[derive(Debug, Default)]
pub struct Bindings {
    limits: Limits,
    by_extension: HashMap<String, Vec<Binding>>,
}

impl Bindings {
    pub fn new(limits: Limits) -> Bindings {
        Bindings {
            limits,
            by_extension: HashMap::new(),
        }
    }

    /// Put back what was stored (at start): only what has not expired.
    pub fn restore(&mut self, extension: &str, b: Binding, now_ms: u64) {
        if b.expires_at_ms > now_ms {
            let list = self.by_extension.entry(extension.to_string()).or_default();
            if list.len() < MAX_CONTACTS {
                list.push(b);
            }
        }
    }

    /// Apply an authenticated REGISTER for `extension`; the bindings it has
    /// afterwards (what the 200 OK lists). A request with no Contact is a
    /// query and changes nothing.
    pub fn register(
        &mut self,
        extension: &str,
        req: &Register,
        now_ms: u64,
    ) -> Result<Vec<Binding>, RegisterError> {
        self.expire(now_ms);
        let l = self.limits;
        if req.contacts.contains(&ContactReq::All) {
            if req.contacts.len() != 1 || req.expires != Some(0) {
                return Err(RegisterError::BadWildcard);
            }
            if let Some(list) = self.by_extension.get(extension)
                && list
                    .iter()
                    .any(|b| b.call_id == req.call_id && req.cseq <= b.cseq)
            {
                return Err(RegisterError::OutOfOrder);
            }
            self.by_extension.remove(extension);
            return Ok(Vec::new());
        }
        // Check every contact before changing anything.
        let mut wanted = Vec::with_capacity(req.contacts.len());
        for c in &req.contacts {
            let ContactReq::Uri { uri, expires } = c else {
                continue;
            };
            if uri.len() > MAX_URI {
                return Err(RegisterError::TooLong);
            }
            let secs = expires.or(req.expires).unwrap_or(l.default_secs);
            if secs != 0 && secs < l.min_secs {
                return Err(RegisterError::TooBrief(l.min_secs));
            }
            wanted.push((uri.as_str(), secs.min(l.max_secs)));
        }
        let list = self.by_extension.entry(extension.to_string()).or_default();
        for (uri, _) in &wanted {
            if list
                .iter()
                .any(|b| b.contact == *uri && b.call_id == req.call_id && req.cseq <= b.cseq)
            {
                return Err(RegisterError::OutOfOrder);
            }
        }
        for (uri, secs) in wanted {
            list.retain(|b| b.contact != uri);
            if secs == 0 {
                continue;
            }
            if list.len() >= MAX_CONTACTS {
                // The one expiring first makes room.
                if let Some(i) = list
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, b)| b.expires_at_ms)
                    .map(|(i, _)| i)
                {
                    list.remove(i);
                }
            }
            list.push(Binding {
                contact: uri.to_string(),
                reach: req.source,
                transport: req.transport,
                expires_at_ms: now_ms + secs * 1000,
                call_id: req.call_id.clone(),
                cseq: req.cseq,
            });
        }
        let out = list.clone();
        if list.is_empty() {
            self.by_extension.remove(extension);
        }
        Ok(out)
    }

    /// Where `extension` can be reached now.
    pub fn lookup(&self, extension: &str, now_ms: u64) -> Vec<&Binding> {
        self.by_extension
            .get(extension)
            .map(|l| l.iter().filter(|b| b.expires_at_ms > now_ms).collect())
            .unwrap_or_default()
    }

    /// Forget what has expired.
    pub fn expire(&mut self, now_ms: u64) {
        self.by_extension.retain(|_, l| {
            l.retain(|b| b.expires_at_ms > now_ms);
            !l.is_empty()
        });
    }

    /// Every extension with its current bindings, for `handlet extensions`
    /// and for storing.
    pub fn all(&self) -> impl Iterator<Item = (&str, &[Binding])> {
        self.by_extension
            .iter()
            .map(|(e, l)| (e.as_str(), l.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(contacts: Vec<ContactReq>, expires: Option<u64>, cseq: u32) -> Register {
        Register {
            contacts,
            expires,
            call_id: "reg-1@phone".into(),
            cseq,
            source: "203.0.113.5:40123".parse().unwrap(),
            transport: "udp",
        }
    }

    fn uri(u: &str, expires: Option<u64>) -> ContactReq {
        ContactReq::Uri {
            uri: u.into(),
            expires,
        }
    }

    #[test]
    fn a_phone_registers_refreshes_and_unregisters() {
        let mut b = Bindings::new(Limits::default());
        let got = b
            .register(
                "101",
                &req(vec![uri("sip:101@192.168.1.20:5060", None)], Some(600), 1),
                0,
            )
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].expires_in(0), 600);
        // Reached through its NAT, not at its private address.
        assert_eq!(got[0].reach, "203.0.113.5:40123".parse().unwrap());
        assert_eq!(b.lookup("101", 599_000).len(), 1);
        assert!(b.lookup("101", 600_000).is_empty(), "expired");
        // A refresh before then moves the expiry on.
        b.register(
            "101",
            &req(vec![uri("sip:101@192.168.1.20:5060", None)], Some(600), 2),
            500_000,
        )
        .unwrap();
        assert_eq!(b.lookup("101", 1_000_000).len(), 1);
        // expires=0 on the contact removes it.
        let got = b
            .register(
                "101",
                &req(vec![uri("sip:101@192.168.1.20:5060", Some(0))], None, 3),
                600_000,
            )
            .unwrap();
        assert!(got.is_empty() && b.lookup("101", 600_000).is_empty());
    }

    #[test]
    fn expiry_bounds_and_defaults() {
        let mut b = Bindings::new(Limits::default());
        assert_eq!(
            b.register("101", &req(vec![uri("sip:a@x", None)], Some(30), 1), 0),
            Err(RegisterError::TooBrief(60))
        );
        // The contact's own expires wins over the header.
        assert_eq!(
            b.register("101", &req(vec![uri("sip:a@x", Some(20))], Some(600), 1), 0),
            Err(RegisterError::TooBrief(60))
        );
        let got = b
            .register("101", &req(vec![uri("sip:a@x", None)], Some(86_400), 1), 0)
            .unwrap();
        assert_eq!(got[0].expires_in(0), 3600, "shortened to the maximum");
        let got = b
            .register("102", &req(vec![uri("sip:b@x", None)], None, 1), 0)
            .unwrap();
        assert_eq!(got[0].expires_in(0), 3600, "the default");
        // A refused request changes nothing.
        assert_eq!(b.lookup("101", 0).len(), 1);
    }

    #[test]
    fn several_contacts_bounded_and_a_query_changes_nothing() {
        let mut b = Bindings::new(Limits::default());
        for i in 0..(MAX_CONTACTS as u64 + 2) {
            let mut r = req(
                vec![uri(&format!("sip:101@10.0.0.{i}"), None)],
                Some(600 + i),
                1,
            );
            r.call_id = format!("phone-{i}");
            b.register("101", &r, 0).unwrap();
        }
        let now = b.lookup("101", 0);
        assert_eq!(now.len(), MAX_CONTACTS);
        // The ones expiring first made room.
        assert!(!now.iter().any(|x| x.contact == "sip:101@10.0.0.0"));
        let q = b.register("101", &req(vec![], None, 9), 0).unwrap();
        assert_eq!(q.len(), MAX_CONTACTS);
    }

    #[test]
    fn a_wildcard_removes_everything_only_when_alone_with_expires_0() {
        let mut b = Bindings::new(Limits::default());
        b.register(
            "101",
            &req(vec![uri("sip:a@x", None), uri("sip:b@x", None)], None, 1),
            0,
        )
        .unwrap();
        assert_eq!(
            b.register("101", &req(vec![ContactReq::All], Some(600), 2), 0),
            Err(RegisterError::BadWildcard)
        );
        assert_eq!(
            b.register(
                "101",
                &req(vec![ContactReq::All, uri("sip:a@x", None)], Some(0), 2),
                0
            ),
            Err(RegisterError::BadWildcard)
        );
        assert_eq!(b.lookup("101", 0).len(), 2);
        assert_eq!(
            b.register("101", &req(vec![ContactReq::All], Some(0), 2), 0),
            Ok(vec![])
        );
        assert!(b.lookup("101", 0).is_empty());
    }

    #[test]
    fn an_older_register_from_the_same_call_id_is_out_of_order() {
        let mut b = Bindings::new(Limits::default());
        b.register("101", &req(vec![uri("sip:a@x", None)], None, 5), 0)
            .unwrap();
        assert_eq!(
            b.register("101", &req(vec![uri("sip:a@x", Some(0))], None, 4), 1),
            Err(RegisterError::OutOfOrder)
        );
        assert_eq!(
            b.register("101", &req(vec![ContactReq::All], Some(0), 5), 1),
            Err(RegisterError::OutOfOrder)
        );
        assert_eq!(b.lookup("101", 1).len(), 1);
        // Another Call-ID (the phone rebooted) is not held to it.
        let mut r = req(vec![uri("sip:a@x", Some(0))], None, 1);
        r.call_id = "reg-2@phone".into();
        assert_eq!(b.register("101", &r, 2), Ok(vec![]));
    }

    #[test]
    fn restored_bindings_keep_only_the_living() {
        let mut b = Bindings::new(Limits::default());
        let live = Binding {
            contact: "sip:a@x".into(),
            reach: "192.0.2.1:5060".parse().unwrap(),
            transport: "tcp",
            expires_at_ms: 10_000,
            call_id: "c".into(),
            cseq: 1,
        };
        b.restore("101", live.clone(), 5_000);
        b.restore(
            "102",
            Binding {
                expires_at_ms: 4_000,
                ..live.clone()
            },
            5_000,
        );
        assert_eq!(b.lookup("101", 5_000), vec![&live]);
        assert!(b.lookup("102", 5_000).is_empty());
        assert_eq!(b.all().count(), 1);
        assert!(
            b.register(
                "101",
                &req(vec![uri(&"x".repeat(MAX_URI + 1), None)], None, 1),
                5_000
            ) == Err(RegisterError::TooLong)
        );
    }
}
