//! The business's SIP trunks: which requests are a trunk's (by source
//! address), which of its numbers a call is for, and the registration of
//! each `mode = "register"` trunk (`client.rs`, driven by the sans-IO
//! `schedule.rs`).

pub mod client;
pub mod schedule;

use crate::Error;
use crate::config::{Config, Hidden, TrunkMode, TrunkTransport};
use crate::netblock::Net;
use crate::phone::{CliFormat, Country, Phone};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// A trunk as the running agent holds it.
pub struct Trunk {
    pub name: String,
    pub mode: TrunkMode,
    pub transport: TrunkTransport,
    /// `host[:port]` as configured.
    pub host: String,
    pub username: String,
    pub auth_username: Option<String>,
    pub password: Hidden,
    pub expires_secs: u32,
    pub keepalive_secs: u64,
    pub cli_format: CliFormat,
    pub pai: bool,
    /// Its numbers; empty: any.
    pub dids: Vec<Phone>,
    /// Configured `hosts`.
    allow: Vec<Net>,
    /// What `host` resolved to last (kept while a lookup fails).
    resolved: Mutex<Vec<SocketAddr>>,
    pub(crate) status: Mutex<Status>,
}

/// What `handlet status` shows of a trunk.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub state: schedule::State,
    pub last_error: Option<String>,
    /// Wall-clock ms the registration in force lapses.
    pub expires_at_ms: Option<u64>,
    pub keepalives_sent: u64,
    pub keepalives_unanswered: u64,
}

impl Trunk {
    fn from_config(t: &crate::config::Trunk, country: Country) -> Result<Trunk, Error> {
        let at = format!("trunk {:?}", t.name);
        let password = match (&t.password_file, &t.password_env) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::Config(format!(
                        "{at}: cannot read password_file {}: {e}",
                        path.display()
                    ))
                })?;
                text.lines().next().unwrap_or("").trim_end().to_string()
            }
            (None, Some(var)) => std::env::var(var).map_err(|_| {
                Error::Config(format!(
                    "{at}: password_env names {var}, which is not set in the agent's environment"
                ))
            })?,
            (None, None) => String::new(),
        };
        if t.mode == TrunkMode::Register && password.is_empty() {
            return Err(Error::Config(format!("{at}: the password is empty")));
        }
        let mut allow = Vec::new();
        for h in &t.hosts {
            allow.push(Net::parse(h).map_err(|e| Error::Config(format!("{at}: hosts: {e}")))?);
        }
        let dids = t
            .dids
            .iter()
            .filter_map(|d| Phone::parse_in(d, country).ok())
            .collect();
        let state = match t.mode {
            TrunkMode::Register => schedule::State::Starting,
            // Nothing to register: the trunk is as up as its hosts.
            TrunkMode::Ip => schedule::State::Registered,
        };
        Ok(Trunk {
            name: t.name.clone(),
            mode: t.mode,
            transport: t.transport,
            host: t.host.clone(),
            username: t.username.clone(),
            auth_username: t.auth_username.clone(),
            password: Hidden::new(password),
            expires_secs: t.expires_secs,
            keepalive_secs: t.keepalive_secs,
            cli_format: t.cli_format,
            pai: t.pai,
            dids,
            allow,
            resolved: Mutex::new(Vec::new()),
            status: Mutex::new(Status {
                state,
                last_error: None,
                expires_at_ms: None,
                keepalives_sent: 0,
                keepalives_unanswered: 0,
            }),
        })
    }

    /// The provider's server address, resolved now (and remembered, so a
    /// failed lookup keeps the last good answer).
    pub async fn resolve(&self) -> Result<SocketAddr, String> {
        // RFC 3261 §19.1.2: 5061 is the default port for SIP over TLS.
        let port = if self.transport == crate::config::TrunkTransport::Tls {
            5061
        } else {
            5060
        };
        let with_port = if self.host.parse::<SocketAddr>().is_ok() {
            self.host.clone()
        } else if let Ok(ip) = self.host.parse::<IpAddr>() {
            SocketAddr::new(ip, port).to_string()
        } else if self.host.matches(':').count() == 1 {
            self.host.clone() // name:port
        } else {
            format!("{}:{port}", self.host)
        };
        match tokio::net::lookup_host(with_port.as_str()).await {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                if let Some(first) = addrs.first().copied() {
                    if let Ok(mut r) = self.resolved.lock() {
                        *r = addrs;
                    }
                    return Ok(first);
                }
                Err(format!("{} has no address", self.host))
            }
            Err(e) => {
                let kept = self.resolved.lock().ok().and_then(|r| r.first().copied());
                kept.ok_or_else(|| format!("cannot resolve {}: {e}", self.host))
            }
        }
    }

    /// Is `ip` one of this trunk's (its host's addresses or `hosts`)?
    pub fn owns(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.allow.iter().any(|n| n.contains(ip))
            || self
                .resolved
                .lock()
                .map(|r| r.iter().any(|a| a.ip() == ip))
                .unwrap_or(false)
    }

    /// Which of this trunk's numbers a call is for: the Request-URI's user
    /// when it is one of them (or any number, with no `dids` listed), else
    /// the To header's (after the provider's location lookup the
    /// Request-URI is our registered contact, whose user is the account).
    pub fn did(&self, request_uri: &str, to: &str, country: Country) -> Option<Phone> {
        let known = |p: &Phone| self.dids.is_empty() || self.dids.contains(p);
        let account = |p: &Phone| {
            Phone::parse_in(&self.username, country).is_ok_and(|u| &u == p)
                && !self.dids.contains(p)
        };
        let from_ruri = Phone::from_uri_in(request_uri, country)
            .filter(|p| known(p) && !account(p) && user_of(request_uri) != self.username);
        from_ruri.or_else(|| Phone::from_uri_in(to, country).filter(known))
    }

    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or(Status {
            state: schedule::State::Failed,
            last_error: Some("status unavailable".into()),
            expires_at_ms: None,
            keepalives_sent: 0,
            keepalives_unanswered: 0,
        })
    }

    /// Can calls go out through it now?
    pub fn is_up(&self) -> bool {
        matches!(self.status().state, schedule::State::Registered)
    }
}

fn user_of(uri: &str) -> &str {
    let inner = uri.rsplit('<').next().unwrap_or(uri);
    inner
        .split_once(':')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split(['@', ';', '>'])
        .next()
        .unwrap_or("")
}

/// Every configured trunk.
#[derive(Default)]
pub struct Trunks {
    list: Vec<Arc<Trunk>>,
    pub country: Option<Country>,
}

impl Trunks {
    /// The trunks of `cfg`, with their passwords read (from file or
    /// environment): a missing one is a clear error at start.
    pub fn from_config(cfg: &Config) -> Result<Trunks, Error> {
        let list = cfg
            .trunks
            .iter()
            .map(|t| Trunk::from_config(t, cfg.site.country).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Trunks {
            list,
            country: Some(cfg.site.country),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Trunk>> {
        self.list.iter()
    }

    /// The trunk a request from `ip` comes from, if any.
    pub fn of_source(&self, ip: IpAddr) -> Option<&Arc<Trunk>> {
        self.list.iter().find(|t| t.owns(ip))
    }

    /// Resolve every trunk's host once (at start), so calls from a trunk
    /// are recognised before its first registration.
    pub async fn resolve_all(&self) {
        for t in &self.list {
            if let Err(e) = t.resolve().await {
                tracing::warn!(trunk = %t.name, error = %e, "trunk host does not resolve yet");
            }
        }
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.list
                .iter()
                .map(|t| {
                    let s = t.status();
                    serde_json::json!({
                        "name": t.name,
                        "mode": t.mode,
                        "host": t.host,
                        "state": s.state,
                        "last_error": s.last_error,
                        "expires_at_ms": s.expires_at_ms,
                        "keepalives_sent": s.keepalives_sent,
                        "keepalives_unanswered": s.keepalives_unanswered,
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(toml: &str) -> Trunk {
        let cfg: Config = toml::from_str(toml).unwrap();
        Trunk::from_config(&cfg.trunks[0], Country::GB).unwrap()
    }

    #[test]
    fn the_did_comes_from_the_request_uri_or_after_a_location_lookup_the_to() {
        let t = trunk(
            "[[trunk]]\nname = \"p\"\nmode = \"ip\"\nhost = \"192.0.2.1\"\ndids = [\"01632 960001\", \"+441632960002\"]\n",
        );
        let gb = Country::GB;
        // Provider sends the DID in the Request-URI (IP trunks do).
        let d = t.did("sip:+441632960002@box", "<sip:whatever@box>", gb);
        assert_eq!(d.unwrap().e164(), "+441632960002");
        // National spelling in the Request-URI.
        let d = t.did("sip:01632960001@box", "<sip:x@box>", gb);
        assert_eq!(d.unwrap().e164(), "+441632960001");
        // After lookup("location") the Request-URI is our contact: the To has it.
        let d = t.did(
            "sip:44123456@127.0.0.1:5060",
            "\"Shop\" <sip:00441632960001@provider>",
            gb,
        );
        assert_eq!(d.unwrap().e164(), "+441632960001");
        // Not one of the trunk's numbers.
        assert!(
            t.did("sip:+441632960009@box", "<sip:+441632960008@p>", gb)
                .is_none()
        );
        // With no dids listed, any number is the trunk's; the account name is not a DID.
        let any = trunk(
            "[[trunk]]\nname = \"p\"\nmode = \"register\"\nhost = \"192.0.2.1\"\nusername = \"441632960100\"\npassword_env = \"HOME\"\n",
        );
        let d = any.did("sip:441632960100@10.0.0.2", "<sip:+441632960005@p>", gb);
        assert_eq!(d.unwrap().e164(), "+441632960005");
    }

    #[test]
    fn a_trunk_owns_its_host_and_listed_blocks() {
        let t = trunk(
            "[[trunk]]\nname = \"p\"\nmode = \"ip\"\nhost = \"192.0.2.1\"\nhosts = [\"198.51.100.0/24\"]\n",
        );
        assert!(t.owns("198.51.100.20".parse().unwrap()));
        assert!(
            !t.owns("192.0.2.1".parse().unwrap()),
            "host not resolved yet"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(t.resolve()).unwrap(),
            "192.0.2.1:5060".parse().unwrap()
        );
        assert!(t.owns("192.0.2.1".parse().unwrap()));
        assert!(t.owns("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!t.owns("192.0.2.2".parse().unwrap()));
    }

    #[test]
    fn passwords_come_from_a_file_or_the_environment_and_are_never_shown() {
        let dir = std::env::temp_dir().join(format!("handlet-trunk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pass");
        std::fs::write(&file, "s3cret-pass\n").unwrap();
        let t = trunk(&format!(
            "[[trunk]]\nname = \"p\"\nmode = \"register\"\nhost = \"192.0.2.1\"\nusername = \"u\"\npassword_file = {:?}\n",
            file.display().to_string()
        ));
        assert_eq!(t.password.expose(), "s3cret-pass");
        assert_eq!(format!("{:?}", t.password), "<hidden>");
        let cfg: Config = toml::from_str(
            "[[trunk]]\nname = \"p\"\nmode = \"register\"\nhost = \"192.0.2.1\"\nusername = \"u\"\npassword_file = \"/nonexistent/pass\"\n",
        )
        .unwrap();
        let e = Trunks::from_config(&cfg).err().unwrap().to_string();
        assert!(
            e.contains("cannot read password_file /nonexistent/pass"),
            "{e}"
        );
        let cfg: Config = toml::from_str(
            "[[trunk]]\nname = \"p\"\nmode = \"register\"\nhost = \"192.0.2.1\"\nusername = \"u\"\npassword_env = \"HANDLET_TEST_UNSET_VAR\"\n",
        )
        .unwrap();
        let e = Trunks::from_config(&cfg).err().unwrap().to_string();
        assert!(
            e.contains("HANDLET_TEST_UNSET_VAR, which is not set"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
