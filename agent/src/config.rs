//! Typed configuration: an embedded default, overlaid by an optional TOML file,
//! validated with errors that name the field and what was expected.

use crate::Error;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_TOML: &str = include_str!("default.toml");
/// The built-in intents: the `[intent]` section's default.
pub const INTENTS_TOML: &str = include_str!("intents.toml");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    pub models_dir: PathBuf,
    pub site: Site,
    pub sip: Sip,
    pub media: Media,
    pub transcription: Transcription,
    pub intent: Intent,
    pub privacy: Privacy,
    pub limits: Limits,
    pub registrar: Registrar,
    /// Desk phones and softphones that register to the box (`[[extension]]`).
    #[serde(rename = "extension")]
    pub extensions: Vec<Extension>,
    /// The business's SIP trunks to the phone network (`[[trunk]]`).
    #[serde(rename = "trunk")]
    pub trunks: Vec<Trunk>,
    /// Where calls from outside go.
    pub inbound: Inbound,
    /// How the phones call out.
    pub outbound: Outbound,
    /// Where each call goes: hours, callers, ring groups, intents, voicemail.
    pub routing: crate::routing::RoutingConfig,
    /// What the receptionist says, and how patient it is.
    pub receptionist: crate::receptionist::ReceptionistConfig,
    /// The box's voice.
    pub voice: crate::voice::VoiceConfig,
    /// Upstream sync (docs/SYNC.md).
    pub sync: Sync,
    pub log: Log,
}

/// Upstream sync to the business's account (docs/SYNC.md). Off until a
/// broker is given; then every call, follow-up and voicemail also writes
/// its event for upstream. (The client that sends them is not built yet.)
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sync {
    /// The MQTT broker, `mqtts://host:port` (TLS only). Empty: sync off.
    pub broker: String,
    /// This box's name in its topics (`handlet/v1/{device_id}/...`);
    /// the identity its client certificate carries.
    pub device_id: String,
    /// What may go up beyond the default fields: `numbers`, `quotes`,
    /// `names`, `addresses`.
    pub share: Vec<crate::sync::Share>,
    /// The workspace's key for hashing phone numbers: a file of 64 hex
    /// digits, relative to `data_dir` unless absolute; made (0600) when
    /// missing. Copy the workspace's own key here so every box hashes a
    /// number alike.
    pub number_key: PathBuf,
    /// The broker's CA (PEM): the only one trusted for it. Paths are
    /// relative to `data_dir` unless absolute.
    pub ca: PathBuf,
    /// This box's certificate (PEM), its identity to the broker.
    pub cert: PathBuf,
    /// Its private key (PEM, 0600).
    pub key: PathBuf,
    /// An event the broker refuses this many times (not authorised, too
    /// large) goes to the dead letters. One not acknowledged is sent
    /// again, less and less often, and never given up.
    pub max_failures: u32,
    /// How long an event sent waits for the backend's acknowledgement
    /// before it is sent again.
    pub ack_wait_secs: u64,
    /// MQTT keep-alive: a connection that hears nothing for twice this
    /// long is given up and made again (a partition, a NAT that forgot us).
    pub keepalive_secs: u64,
}

impl Default for Sync {
    fn default() -> Self {
        Sync {
            broker: String::new(),
            device_id: String::new(),
            share: Vec::new(),
            number_key: "sync/number.key".into(),
            ca: "sync/ca.pem".into(),
            cert: "sync/device.pem".into(),
            key: "sync/device.key".into(),
            max_failures: 5,
            ack_wait_secs: 30,
            keepalive_secs: 30,
        }
    }
}

impl Sync {
    pub fn enabled(&self) -> bool {
        !self.broker.is_empty()
    }

    fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        let Some(rest) = self.broker.strip_prefix("mqtts://") else {
            return Err(format!(
                "sync.broker must be mqtts://host:port (TLS only; no plaintext MQTT), got {:?}",
                self.broker
            ));
        };
        if rest
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!(
                "sync.broker must name a host and a port, got {:?}",
                self.broker
            ));
        }
        if self.max_failures == 0 || self.ack_wait_secs == 0 {
            return Err("sync.max_failures and sync.ack_wait_secs must be at least 1".into());
        }
        if !(5..=3600).contains(&self.keepalive_secs) {
            return Err(format!(
                "sync.keepalive_secs = {}: must be from 5 to 3600",
                self.keepalive_secs
            ));
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.device_id.is_empty() || self.device_id.len() > 64 || !self.device_id.chars().all(ok)
        {
            return Err(format!(
                "sync.device_id must be 1 to 64 letters, digits, '-' or '_' (it names the box's topics), got {:?}",
                self.device_id
            ));
        }
        Ok(())
    }
}

/// How the phones of a ring list are rung: `ringall`, `hunt` or `memoryhunt`.
pub use crate::routing::Strategy as RingStrategy;

/// The simplest routing plan: whom a call from outside rings, then the
/// receptionist. `[routing]` builds on it (its default route is this list).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Inbound {
    /// Extensions to ring (every phone registered as each) and outside
    /// numbers (a mobile, rung through the outbound trunk); empty: the
    /// agent answers every call itself.
    pub ring: Vec<String>,
    pub strategy: RingStrategy,
    /// How long phones ring: everyone (ringall) or each (hunt). When
    /// nobody answers, the agent answers.
    pub ring_secs: u64,
}

impl Default for Inbound {
    fn default() -> Self {
        Inbound {
            ring: Vec::new(),
            strategy: RingStrategy::Ringall,
            ring_secs: 20,
        }
    }
}

/// Calls from the business's phones to the phone network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Outbound {
    /// The trunk calls go out through; empty: the first `[[trunk]]`.
    pub trunk: String,
    /// Emergency numbers: always straight out through the trunk, never to
    /// the agent or voicemail, and logged.
    pub emergency: Vec<String>,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound {
            trunk: String::new(),
            emergency: vec!["999".into(), "112".into(), "911".into()],
        }
    }
}

/// How a trunk knows the box.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrunkMode {
    /// The box registers to the provider with digest authentication.
    Register,
    /// No registration: the provider sends calls to the box's address, and
    /// calls are accepted only from the trunk's hosts.
    Ip,
}

/// The transport SIP to a trunk uses.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    #[default]
    Udp,
    Tcp,
    /// SIP over TLS (port 5061 unless the host names one); the server's
    /// certificate is checked against the system's CAs and `tls_ca`.
    Tls,
}

impl TrunkTransport {
    /// The `;transport=` parameter of our URIs towards the trunk.
    pub fn uri_suffix(self) -> &'static str {
        match self {
            TrunkTransport::Udp => "",
            TrunkTransport::Tcp => ";transport=tcp",
            TrunkTransport::Tls => ";transport=tls",
        }
    }
}

/// A SIP trunk: the provider's server, how the box authenticates to it,
/// and how numbers are written towards it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    /// A short name for logs and `handlet status` ("provider").
    pub name: String,
    pub mode: TrunkMode,
    /// The provider's SIP server: an IP address or host name, with an
    /// optional port ("sip.example.net", "192.0.2.10:5060").
    pub host: String,
    #[serde(default)]
    pub transport: TrunkTransport,
    /// A PEM file of CA certificates the provider's TLS certificate may be
    /// signed by, besides the system's (a private CA, or its self-signed
    /// certificate).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// The account's user name (register mode).
    #[serde(default)]
    pub username: String,
    /// The digest user name, when the provider gives one apart from the
    /// account's.
    #[serde(default)]
    pub auth_username: Option<String>,
    /// A file holding the password (its first line), e.g. a systemd
    /// credential: `/run/credentials/handlet.service/trunk`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Or an environment variable holding it.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Registration lifetime asked for.
    #[serde(default = "default_trunk_expires")]
    pub expires_secs: u32,
    /// An OPTIONS to the provider this often keeps a NAT binding open and
    /// finds out when the trunk is gone; 0: none.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
    /// More addresses the provider sends calls from (IPs or CIDR blocks),
    /// beside `host`'s. Calls from anywhere else are not this trunk's.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The trunk's numbers (DIDs), any common spelling; empty: any number
    /// the provider sends.
    #[serde(default)]
    pub dids: Vec<String>,
    /// How the caller line identity is written on calls out.
    #[serde(default = "default_cli_format")]
    pub cli_format: crate::phone::CliFormat,
    /// Send P-Asserted-Identity with the caller line identity on calls out.
    #[serde(default)]
    pub pai: bool,
}

fn default_trunk_expires() -> u32 {
    600
}
fn default_keepalive() -> u64 {
    25
}
fn default_cli_format() -> crate::phone::CliFormat {
    crate::phone::CliFormat::E164
}

/// A phone of the business: it registers to the box as `number` with
/// digest authentication.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// 2–6 digits, unique.
    pub number: String,
    /// Who answers it ("Front desk").
    #[serde(default)]
    pub name: String,
    /// Its SIP password (at least 8 characters). Only digest hashes of it
    /// are derived and used; `config show` prints `<hidden>`.
    #[serde(default)]
    pub secret: Option<Hidden>,
    /// Or, so that the box never holds the password: its digest HA1s in
    /// `sip.realm` (`handlet extension-secret` prints them), MD5 and
    /// optionally SHA-256.
    #[serde(default)]
    pub ha1: Option<Hidden>,
    #[serde(default)]
    pub ha1_sha256: Option<Hidden>,
}

/// A secret read from config: never printed, never logged.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Hidden(String);

impl Hidden {
    pub fn new(secret: String) -> Hidden {
        Hidden(secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

impl Serialize for Hidden {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<hidden>")
    }
}

/// How phones register.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Registrar {
    /// Shortest registration accepted (shorter gets 423 with this minimum).
    pub min_expires_secs: u64,
    /// Longest registration granted (longer is shortened to this).
    pub max_expires_secs: u64,
    /// This many failed authentications from one address within
    /// `lockout_window_secs` lock it out for `lockout_secs`.
    pub lockout_failures: u32,
    pub lockout_window_secs: u64,
    pub lockout_secs: u64,
    /// Challenge with SHA-256 as well as MD5 (SHA-256 first). Off by
    /// default: baresip 1.0's libre and many desk phones give up on a
    /// challenge whose algorithm they cannot compute instead of taking the
    /// MD5 one. Responses with either are verified whatever this says.
    pub offer_sha256: bool,
}

impl Default for Registrar {
    fn default() -> Self {
        Registrar {
            min_expires_secs: 60,
            max_expires_secs: 3600,
            lockout_failures: 5,
            lockout_window_secs: 60,
            lockout_secs: 300,
            offer_sha256: false,
        }
    }
}

/// Where the box is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Site {
    /// The country whose dialling plan national numbers follow (ISO 3166
    /// code): "07700 900123" is +44 7700 900123 in GB.
    pub country: crate::phone::Country,
}

impl Default for Site {
    fn default() -> Self {
        Site {
            country: crate::phone::Country::GB,
        }
    }
}

/// Bounds on what callers and peers can make the agent hold at once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Calls in progress at once, whatever their number of legs; a call
    /// beyond it is refused with 503 and Retry-After.
    pub max_calls: usize,
    /// Calls one source address may hold at once (a flood from one address
    /// cannot take every place); at most `max_calls`.
    pub max_calls_per_source: usize,
    /// A call is hung up after this long.
    pub max_call_secs: u64,
    /// SIP requests a second from one source address (twice that in a
    /// burst); beyond it requests are dropped and counted. UDP and TCP
    /// are counted apart.
    pub sip_requests_per_sec: u32,
    /// SIP TCP connections one address may hold open; one more is closed
    /// as it is accepted.
    pub tcp_connections_per_source: usize,
    /// SIP TCP connections open at once, from everyone.
    pub tcp_connections: usize,
    /// A TCP connection that carried no SIP message for this long, and no
    /// call still in progress, is closed.
    pub tcp_idle_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_calls: 8,
            max_calls_per_source: 4,
            max_call_secs: 4 * 3600,
            sip_requests_per_sec: 50,
            tcp_connections_per_source: 16,
            tcp_connections: 256,
            tcp_idle_secs: 60,
        }
    }
}

/// The workspace's recording and retention policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Privacy {
    /// Record calls (encrypted). Off: no audio is kept at all.
    pub recording: bool,
    /// Days a recording is kept; the privacy policy's default is 30.
    pub recording_retention_days: u32,
    /// Days calls, transcripts and summaries are kept.
    pub transcript_retention_days: u32,
    /// How often the agent runs the retention sweeper.
    pub sweep_interval_mins: u32,
    /// A WAV (any rate) played to the caller when the call is answered,
    /// before recording starts ("this call may be recorded"). Empty: none.
    pub announcement: String,
}

impl Default for Privacy {
    fn default() -> Self {
        Privacy {
            recording: true,
            recording_retention_days: 30,
            transcript_retention_days: 365,
            sweep_interval_mins: 60,
            announcement: String::new(),
        }
    }
}

/// Intent classification: the business's intents and their examples.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Intent {
    pub unknown_below: f32,
    pub intents: Vec<IntentDef>,
    /// Where the examples' embeddings are kept between starts (default
    /// `{data_dir}/cache/intent-examples.emb`), and beside it the head
    /// trained on them (`.head`): derived data, rebuilt when missing,
    /// damaged, or made by another model or from other examples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IntentDef {
    pub name: String,
    #[serde(default = "normal")]
    pub urgency: Urgency,
    pub examples: Vec<String>,
}

fn normal() -> Urgency {
    Urgency::Normal
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    Low,
    Normal,
    High,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

impl Intent {
    /// The intents as the classifier takes them.
    pub fn examples(&self) -> Vec<handlet_models::intent::IntentExamples> {
        self.intents
            .iter()
            .map(|d| handlet_models::intent::IntentExamples {
                name: d.name.clone(),
                examples: d.examples.clone(),
            })
            .collect()
    }
}

impl Default for Intent {
    fn default() -> Self {
        // Without serde's struct default, which would call this again.
        #[derive(Deserialize)]
        struct Raw {
            unknown_below: f32,
            intents: Vec<IntentDef>,
        }
        #[derive(Deserialize)]
        struct File {
            intent: Raw,
        }
        // Checked by a unit test, so this cannot fail in a build that passed.
        toml::from_str::<File>(INTENTS_TOML)
            .map(|f| Intent {
                unknown_below: f.intent.unknown_below,
                intents: f.intent.intents,
                cache: None,
            })
            .unwrap_or(Intent {
                unknown_below: 0.3,
                intents: Vec::new(),
                cache: None,
            })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sip {
    pub bind: IpAddr,
    pub port: u16,
    pub udp: bool,
    pub tcp: bool,
    pub user: String,
    pub answer_after_ms: u64,
    /// The digest realm phones authenticate in.
    pub realm: String,
    /// SIP over TLS for phones (and the address trunks reach us at over TLS).
    pub tls: bool,
    pub tls_port: u16,
    /// PEM certificate chain and private key; both empty: a self-signed
    /// pair made at first start and kept in `data_dir/tls/`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Media {
    pub rtp_address: IpAddr,
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    pub jitter_min_ms: u32,
    pub jitter_max_ms: u32,
    pub rtp_timeout_secs: u64,
    /// Latch RTP to the first source that sends (a phone behind NAT sends
    /// from another address than its SDP names); off: only the SDP address.
    pub symmetric_rtp: bool,
    /// SRTP with SDES keys: `optional` (accepted when a peer offers it,
    /// offered to phones reached over TLS), `required` (plain RTP refused),
    /// or `off`.
    pub srtp: SrtpPolicy,
}

/// When calls use SRTP (`media.srtp`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SrtpPolicy {
    Off,
    #[default]
    Optional,
    Required,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Transcription {
    /// The whisper model calls are transcribed with.
    pub model: handlet_models::manifest::WhisperModel,
    pub workers: usize,
    pub queue: usize,
    pub partial_interval_ms: u64,
    pub early_final_ms: u64,
    pub vad_start_threshold: f32,
    pub vad_stop_threshold: f32,
    pub min_silence_ms: u64,
    pub min_speech_ms: u64,
    pub max_utterance_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub filter: String,
}

// Defaults live in code so a file naming only some fields is parsed on its
// own (errors point at the user's lines); default.toml documents the same
// values and a test keeps the two equal.
impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: "./data".into(),
            models_dir: "./.models".into(),
            site: Site::default(),
            sip: Sip::default(),
            media: Media::default(),
            transcription: Transcription::default(),
            intent: Intent::default(),
            privacy: Privacy::default(),
            limits: Limits::default(),
            registrar: Registrar::default(),
            extensions: Vec::new(),
            trunks: Vec::new(),
            inbound: Inbound::default(),
            outbound: Outbound::default(),
            routing: crate::routing::RoutingConfig::default(),
            receptionist: crate::receptionist::ReceptionistConfig::default(),
            voice: crate::voice::VoiceConfig::default(),
            sync: Sync::default(),
            log: Log::default(),
        }
    }
}

impl Default for Sip {
    fn default() -> Self {
        Sip {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 5060,
            udp: true,
            tcp: true,
            user: "handlet".into(),
            answer_after_ms: 0,
            realm: "handlet".into(),
            tls: false,
            tls_port: 5061,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for Media {
    fn default() -> Self {
        Media {
            rtp_address: IpAddr::from([127, 0, 0, 1]),
            rtp_port_min: 20000,
            rtp_port_max: 20999,
            jitter_min_ms: 20,
            jitter_max_ms: 200,
            rtp_timeout_secs: 30,
            symmetric_rtp: true,
            srtp: SrtpPolicy::Optional,
        }
    }
}

impl Default for Transcription {
    fn default() -> Self {
        Transcription {
            model: handlet_models::manifest::WhisperModel::TinyEn,
            workers: 2,
            queue: 32,
            partial_interval_ms: 1000,
            early_final_ms: 200,
            vad_start_threshold: 0.5,
            vad_stop_threshold: 0.35,
            min_silence_ms: 600,
            min_speech_ms: 250,
            max_utterance_ms: 20000,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            filter: "info,rsipstack=error,ort=warn,whisper_rs=warn".into(),
        }
    }
}

impl Config {
    fn validate_trunks(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.trunks.iter().enumerate() {
            let at = format!("trunk {:?} (the {}th [[trunk]])", t.name, i + 1);
            if t.name.is_empty()
                || t.name.len() > 32
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            {
                return Err(format!(
                    "{at}: name must be 1-32 letters, digits, '-' or '_'"
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(format!("{at}: name {:?} is used twice", t.name));
            }
            if t.host.is_empty() || t.host.contains(['/', '@', ';', ' ']) {
                return Err(format!(
                    "{at}: host must be a host name or address with an optional port, got {:?}",
                    t.host
                ));
            }
            for h in &t.hosts {
                crate::netblock::Net::parse(h).map_err(|e| format!("{at}: hosts: {e}"))?;
            }
            for d in &t.dids {
                crate::phone::Phone::parse_in(d, self.site.country)
                    .map_err(|e| format!("{at}: dids: {d:?} is not a phone number ({e})"))?;
            }
            if t.mode == TrunkMode::Register {
                if t.username.is_empty() {
                    return Err(format!("{at}: mode = \"register\" needs a username"));
                }
                if t.password_file.is_none() && t.password_env.is_none() {
                    return Err(format!(
                        "{at}: mode = \"register\" needs password_file or password_env (the password is never written in this file)"
                    ));
                }
                if !(60..=86_400).contains(&t.expires_secs) {
                    return Err(format!(
                        "{at}: expires_secs must be 60..=86400, got {}",
                        t.expires_secs
                    ));
                }
            }
            if t.password_file.is_some() && t.password_env.is_some() {
                return Err(format!(
                    "{at}: give one of password_file and password_env, not both"
                ));
            }
            if t.keepalive_secs > 3600 {
                return Err(format!(
                    "{at}: keepalive_secs must be 0 (off) to 3600, got {}",
                    t.keepalive_secs
                ));
            }
            if t.transport == TrunkTransport::Tcp && !self.sip.tcp {
                return Err(format!("{at}: transport = \"tcp\" needs sip.tcp = true"));
            }
            if t.transport == TrunkTransport::Udp && !self.sip.udp {
                return Err(format!("{at}: transport = \"udp\" needs sip.udp = true"));
            }
        }
        Ok(())
    }

    /// The routing plan, checked against the rest of the config.
    pub fn routing_plan(&self) -> Result<crate::routing::Plan, String> {
        let country = self.site.country;
        let ctx = crate::routing::Context {
            country,
            extensions: self.extensions.iter().map(|e| e.number.as_str()).collect(),
            dids: self
                .trunks
                .iter()
                .flat_map(|t| &t.dids)
                .filter_map(|d| crate::phone::Phone::parse_in(d, country).ok())
                .map(|p| p.e164())
                .collect(),
            has_trunk: !self.trunks.is_empty(),
            intents: self
                .intent
                .intents
                .iter()
                .map(|i| i.name.as_str())
                .collect(),
            inbound_ring: &self.inbound.ring,
            inbound_strategy: self.inbound.strategy,
            inbound_ring_secs: self.inbound.ring_secs,
        };
        crate::routing::Plan::compile(&self.routing, &ctx)
    }

    /// The embedded default.
    pub fn default_config() -> Config {
        Config::default()
    }

    /// Load: the defaults, with `path` (if any) laid over them.
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        let Some(path) = path else {
            return Ok(Self::default_config());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Config, Error> {
        let c: Config =
            toml::from_str(text).map_err(|e| Error::Config(describe(text, origin, &e)))?;
        c.validate()
            .map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        Ok(c)
    }

    /// Every check the file gets (a pushed document's result gets them too).
    pub(crate) fn validate(&self) -> Result<(), String> {
        let mut numbers = std::collections::HashSet::new();
        for (i, e) in self.extensions.iter().enumerate() {
            let at = format!("extension {} (the {}th [[extension]])", e.number, i + 1);
            if !(2..=6).contains(&e.number.len()) || !e.number.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "{at}: number must be 2 to 6 digits, got {:?}",
                    e.number
                ));
            }
            if !numbers.insert(e.number.as_str()) {
                return Err(format!("{at}: number {} is used twice", e.number));
            }
            let hex = |h: &Option<Hidden>, n: usize| {
                h.as_ref().is_none_or(|h| {
                    h.expose().len() == n && h.expose().bytes().all(|b| b.is_ascii_hexdigit())
                })
            };
            match (&e.secret, &e.ha1) {
                (Some(s), None) if s.expose().chars().count() < 8 => {
                    return Err(format!("{at}: secret must be at least 8 characters"));
                }
                (Some(_), None) if e.ha1_sha256.is_some() => {
                    return Err(format!("{at}: ha1_sha256 goes with ha1, not with secret"));
                }
                (Some(_), None) => {}
                (None, Some(_)) if !hex(&e.ha1, 32) || !hex(&e.ha1_sha256, 64) => {
                    return Err(format!(
                        "{at}: ha1 must be 32 hex digits (MD5) and ha1_sha256 64 (SHA-256); `handlet extension-secret --number {}` prints them",
                        e.number
                    ));
                }
                (None, Some(_)) => {}
                (Some(_), Some(_)) => {
                    return Err(format!("{at}: give secret or ha1, not both"));
                }
                (None, None) => {
                    return Err(format!(
                        "{at}: needs a secret (its SIP password) or its ha1 (`handlet extension-secret --number {}`)",
                        e.number
                    ));
                }
            }
            if e.name.chars().count() > 64 {
                return Err(format!("{at}: name is longer than 64 characters"));
            }
        }
        self.validate_trunks()?;
        self.sync.validate()?;
        let known: std::collections::HashSet<&str> =
            self.extensions.iter().map(|e| e.number.as_str()).collect();
        for (i, n) in self.inbound.ring.iter().enumerate() {
            let outside = crate::phone::Phone::parse_in(n, self.site.country).is_ok();
            if !known.contains(n.as_str()) && !outside {
                return Err(format!(
                    "inbound.ring: the {}th entry, {n:?}, is not an [[extension]] number nor a phone number",
                    i + 1
                ));
            }
            if !known.contains(n.as_str()) && self.trunks.is_empty() {
                return Err(format!(
                    "inbound.ring: {n:?} is an outside number, which needs a [[trunk]] to ring through"
                ));
            }
            let e164 = |x: &str| {
                crate::phone::Phone::parse_in(x, self.site.country)
                    .ok()
                    .map(|p| p.e164())
            };
            let same = |m: &String| m == n || (!known.contains(m.as_str()) && e164(m) == e164(n));
            if self.inbound.ring[..i].iter().any(same) {
                return Err(format!("inbound.ring: {n:?} is listed twice"));
            }
            // One of our own numbers would ring this box again, and again.
            if !known.contains(n.as_str())
                && self
                    .trunks
                    .iter()
                    .flat_map(|t| &t.dids)
                    .any(|d| e164(d).is_some() && e164(d) == e164(n))
            {
                return Err(format!(
                    "inbound.ring: {n:?} is one of the trunks' own dids; it would ring this box in a loop"
                ));
            }
        }
        let o = &self.outbound;
        if !o.trunk.is_empty() && !self.trunks.iter().any(|t| t.name == o.trunk) {
            return Err(format!(
                "outbound.trunk: {:?} is not the name of a [[trunk]]",
                o.trunk
            ));
        }
        for e in &o.emergency {
            if e.is_empty() || e.len() > 6 || !e.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("outbound.emergency: {e:?} must be 1 to 6 digits"));
            }
            if self.extensions.iter().any(|x| &x.number == e) {
                return Err(format!(
                    "outbound.emergency: {e:?} is also an extension number; emergency numbers always go out"
                ));
            }
        }
        if !(5..=300).contains(&self.inbound.ring_secs) {
            return Err(format!(
                "inbound.ring_secs must be 5..=300 (seconds), got {}",
                self.inbound.ring_secs
            ));
        }
        let r = &self.registrar;
        if r.offer_sha256
            && let Some(e) = self
                .extensions
                .iter()
                .find(|e| e.secret.is_none() && e.ha1_sha256.is_none())
        {
            return Err(format!(
                "registrar.offer_sha256: extension {} has an ha1 but no ha1_sha256, so it could not answer a SHA-256 challenge",
                e.number
            ));
        }
        if r.min_expires_secs < 10 || r.min_expires_secs > r.max_expires_secs {
            return Err(format!(
                "registrar.min_expires_secs ({}) must be at least 10 and at most registrar.max_expires_secs ({})",
                r.min_expires_secs, r.max_expires_secs
            ));
        }
        if r.max_expires_secs > 86_400 {
            return Err(format!(
                "registrar.max_expires_secs must be at most 86400 (a day), got {}",
                r.max_expires_secs
            ));
        }
        if !(1..=1000).contains(&r.lockout_failures)
            || !(1..=86_400).contains(&r.lockout_window_secs)
            || !(1..=86_400).contains(&r.lockout_secs)
        {
            return Err("registrar.lockout_failures must be 1..=1000, lockout_window_secs and lockout_secs 1..=86400".into());
        }
        if self.sip.realm.is_empty() || self.sip.realm.contains(['"', '\\']) {
            return Err(format!(
                "sip.realm must be a non-empty name without quotes, got {:?}",
                self.sip.realm
            ));
        }
        let p = &self.privacy;
        if !(1..=3650).contains(&p.recording_retention_days) {
            return Err(format!(
                "privacy.recording_retention_days must be 1..=3650 (days), got {}; set privacy.recording = false to keep no recordings",
                p.recording_retention_days
            ));
        }
        if !(1..=3650).contains(&p.transcript_retention_days) {
            return Err(format!(
                "privacy.transcript_retention_days must be 1..=3650 (days), got {}",
                p.transcript_retention_days
            ));
        }
        if !(1..=1440).contains(&p.sweep_interval_mins) {
            return Err(format!(
                "privacy.sweep_interval_mins must be 1..=1440, got {}",
                p.sweep_interval_mins
            ));
        }
        if !p.announcement.is_empty() {
            let a = handlet_dsp::wav::read(std::path::Path::new(&p.announcement)).map_err(|e| {
                format!(
                    "privacy.announcement: cannot read {:?} as a WAV file: {e}",
                    p.announcement
                )
            })?;
            if a.duration_ms() > 30_000 || a.samples.is_empty() {
                return Err(format!(
                    "privacy.announcement: {:?} lasts {} ms; an announcement must be 0-30 s",
                    p.announcement,
                    a.duration_ms()
                ));
            }
        }
        let l = &self.limits;
        if !(1..=256).contains(&l.max_calls) {
            return Err(format!(
                "limits.max_calls must be 1..=256, got {}",
                l.max_calls
            ));
        }
        if l.max_calls_per_source == 0 {
            return Err("limits.max_calls_per_source must be at least 1".into());
        }
        if !(10..=86_400).contains(&l.max_call_secs) {
            return Err(format!(
                "limits.max_call_secs must be 10..=86400 (seconds), got {}",
                l.max_call_secs
            ));
        }
        if !(5..=100_000).contains(&l.sip_requests_per_sec) {
            return Err(format!(
                "limits.sip_requests_per_sec must be 5..=100000, got {}",
                l.sip_requests_per_sec
            ));
        }
        if l.tcp_connections_per_source == 0 || l.tcp_connections < l.tcp_connections_per_source {
            return Err(format!(
                "limits.tcp_connections_per_source ({}) must be at least 1 and at most limits.tcp_connections ({})",
                l.tcp_connections_per_source, l.tcp_connections
            ));
        }
        if !(1..=3600).contains(&l.tcp_idle_secs) {
            return Err(format!(
                "limits.tcp_idle_secs must be 1..=3600 (seconds), got {}",
                l.tcp_idle_secs
            ));
        }
        let m = &self.media;
        if m.rtp_port_min == 0 || m.rtp_port_min > m.rtp_port_max {
            return Err(format!(
                "media.rtp_port_min ({}) must be between 1 and media.rtp_port_max ({})",
                m.rtp_port_min, m.rtp_port_max
            ));
        }
        // RTP on an even port, RTCP on the next: the range needs one pair.
        let first_even = m.rtp_port_min as u32 + (m.rtp_port_min as u32 % 2);
        if first_even + 1 > m.rtp_port_max as u32 {
            return Err("media: the RTP port range must hold at least one even port and the one after it (RTP and RTCP)".into());
        }
        if m.jitter_min_ms < 10 || m.jitter_min_ms > m.jitter_max_ms || m.jitter_max_ms > 1000 {
            return Err(format!(
                "media.jitter_min_ms ({}) and jitter_max_ms ({}) must satisfy 10 <= min <= max <= 1000",
                m.jitter_min_ms, m.jitter_max_ms
            ));
        }
        if m.rtp_timeout_secs == 0 {
            return Err("media.rtp_timeout_secs must be at least 1".into());
        }
        if !self.sip.udp && !self.sip.tcp {
            return Err("sip: enable at least one of sip.udp and sip.tcp".into());
        }
        if self.sip.user.is_empty()
            || !self
                .sip
                .user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "sip.user must be letters, digits, '-', '_' or '.', got {:?}",
                self.sip.user
            ));
        }
        if self.sip.answer_after_ms > 120_000 {
            return Err(format!(
                "sip.answer_after_ms must be at most 120000 (2 minutes), got {}",
                self.sip.answer_after_ms
            ));
        }
        let t = &self.transcription;
        if !(1..=16).contains(&t.workers) {
            return Err(format!(
                "transcription.workers must be 1..=16, got {}",
                t.workers
            ));
        }
        if t.queue == 0 {
            return Err("transcription.queue must be at least 1".into());
        }
        let i = &self.intent;
        if !(0.0..=1.0).contains(&i.unknown_below) {
            return Err(format!(
                "intent.unknown_below must be between 0 and 1, got {}",
                i.unknown_below
            ));
        }
        if i.intents.is_empty() {
            return Err("intent.intents must name at least one intent".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for d in &i.intents {
            // "unknown" may have examples: calls the business does not
            // handle, answered as unknown (handlet_models::intent).
            if d.name.trim().is_empty() {
                return Err(format!(
                    "intent.intents: {:?} is not a usable intent name",
                    d.name
                ));
            }
            if !seen.insert(d.name.as_str()) {
                return Err(format!("intent.intents: {:?} is listed twice", d.name));
            }
            if d.examples.iter().filter(|e| !e.trim().is_empty()).count() < 2 {
                return Err(format!(
                    "intent.intents: {:?} needs at least 2 examples",
                    d.name
                ));
            }
        }
        if t.partial_interval_ms != 0 && !(300..=10_000).contains(&t.partial_interval_ms) {
            return Err(format!(
                "transcription.partial_interval_ms must be 0 (off) or 300..=10000, got {}",
                t.partial_interval_ms
            ));
        }
        // Below 200 ms (the end-pointer's padding) there is no tentative
        // utterance yet; at or past min_silence_ms it is the final anyway.
        if t.early_final_ms != 0 && !(200..t.min_silence_ms).contains(&t.early_final_ms) {
            return Err(format!(
                "transcription.early_final_ms must be 0 (off) or from 200 to below min_silence_ms ({}), got {}",
                t.min_silence_ms, t.early_final_ms
            ));
        }
        for (name, v) in [
            ("vad_start_threshold", t.vad_start_threshold),
            ("vad_stop_threshold", t.vad_stop_threshold),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!(
                    "transcription.{name} must be between 0 and 1, got {v}"
                ));
            }
        }
        if t.vad_stop_threshold > t.vad_start_threshold {
            return Err(
                "transcription.vad_stop_threshold must not exceed vad_start_threshold".into(),
            );
        }
        if !(1000..=30_000).contains(&t.max_utterance_ms) {
            return Err(format!(
                "transcription.max_utterance_ms must be 1000..=30000 (whisper's window is 30 s), got {}",
                t.max_utterance_ms
            ));
        }
        // Last: they name extensions, trunks' DIDs and intents checked above.
        self.routing_plan()?;
        let intents: Vec<&str> = self
            .intent
            .intents
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        self.receptionist.check(&intents)?;
        self.voice.check()?;
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("handlet.sqlite")
    }
}

/// One line: file, line number, the section and line at fault, and what was expected.
fn describe(text: &str, origin: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return format!("{origin}: {msg}");
    };
    let before = &text[..span.start.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|s| format!("{s} "))
        .unwrap_or_default();
    format!("{origin} line {line_no} ({section}{line}): {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(s: &str) -> Result<Config, Error> {
        // Tests run in parallel: each call gets a file of its own.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("handlet-cfg-{}-{n}.toml", std::process::id()));
        std::fs::write(&p, s).unwrap();
        let r = Config::load(Some(&p));
        std::fs::remove_file(&p).ok();
        r
    }

    #[test]
    fn default_is_valid_and_listens_on_5060() {
        let c = Config::default_config();
        c.validate().unwrap();
        assert_eq!(c.sip.port, 5060);
        assert!(c.sip.udp && c.sip.tcp);
    }

    #[test]
    fn built_in_intents_parse_and_a_config_can_replace_them() {
        let c = Config::default_config();
        // Ten intents and the reserved "unknown" class of calls the
        // business does not handle.
        assert_eq!(c.intent.intents.len(), 11, "{:?}", c.intent);
        assert!(c.intent.intents.iter().any(|i| i.name == "unknown"));
        assert!(c.intent.intents.iter().all(|i| i.examples.len() >= 30));
        let own = load_str(
            "[intent]\nunknown_below = 0.4\n[[intent.intents]]\nname = \"walk_in\"\nexamples = [\"can I just turn up\", \"do I need an appointment\"]\n",
        )
        .unwrap();
        assert_eq!(own.intent.intents.len(), 1);
        assert_eq!(own.intent.intents[0].urgency, Urgency::Normal);
        let err = load_str("[[intent.intents]]\nname = \"x\"\nexamples = [\"one\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 2 examples"), "{err}");
        let err = load_str(
            "[[intent.intents]]\nname = \"x\"\nurgency = \"asap\"\nexamples = [\"a\", \"b\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("urgency"), "{err}");
    }

    #[test]
    fn partial_file_overrides_only_what_it_names() {
        let c = load_str("[sip]\nport = 5080\n").unwrap();
        assert_eq!(c.sip.port, 5080);
        assert!(c.sip.tcp);
        assert_eq!(c.media, Config::default_config().media);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = load_str("[sip]\nport = \"five\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port"), "{e}");
        assert!(e.contains("u16") || e.contains("integer"), "{e}");
    }

    #[test]
    fn unknown_field_is_rejected_by_name() {
        let e = load_str("[sip]\nprot = 5060\n").unwrap_err().to_string();
        assert!(e.contains("prot"), "{e}");
    }

    #[test]
    fn trunks_are_checked_with_one_line_naming_the_field() {
        let ok = "[[trunk]]\nname = \"p\"\nmode = \"register\"\nhost = \"192.0.2.1\"\nusername = \"u\"\npassword_env = \"P\"\n";
        let c = load_str(ok).unwrap();
        assert_eq!(c.trunks[0].expires_secs, 600);
        assert_eq!(c.trunks[0].keepalive_secs, 25);
        assert_eq!(c.trunks[0].transport, TrunkTransport::Udp);
        let bad = |toml: &str, want: &str| {
            let e = load_str(toml).unwrap_err().to_string();
            assert!(e.contains(want), "{toml}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        };
        bad(
            "[[trunk]]\nname = \"p\"\nmode = \"register\"\nhost = \"192.0.2.1\"\nusername = \"u\"\n",
            "needs password_file or password_env",
        );
        bad(
            "[[trunk]]\nname = \"p\"\nmode = \"register\"\nhost = \"192.0.2.1\"\npassword_env = \"P\"\n",
            "needs a username",
        );
        bad(&format!("{ok}{ok}"), "name \"p\" is used twice");
        bad(
            "[[trunk]]\nname = \"p\"\nmode = \"ip\"\nhost = \"192.0.2.1\"\nhosts = [\"10.0.0.0/40\"]\n",
            "hosts: \"10.0.0.0/40\": the prefix length must be 0..=32",
        );
        bad(
            "[[trunk]]\nname = \"p\"\nmode = \"ip\"\nhost = \"192.0.2.1\"\ndids = [\"call me\"]\n",
            "dids: \"call me\" is not a phone number",
        );
        bad(
            "[[trunk]]\nname = \"p\"\nmode = \"ip\"\nhost = \"sip:x@y\"\n",
            "host must be a host name or address",
        );
        bad(
            "[[trunk]]\nname = \"p\"\nmode = \"pigeon\"\nhost = \"192.0.2.1\"\n",
            "mode",
        );
        bad(
            "[sip]\ntcp = false\n[[trunk]]\nname = \"p\"\nmode = \"ip\"\nhost = \"192.0.2.1\"\ntransport = \"tcp\"\n",
            "needs sip.tcp = true",
        );
    }

    #[test]
    fn ring_lists_name_known_extensions_once() {
        let ext = "[[extension]]\nnumber = \"101\"\nsecret = \"long enough\"\n";
        let c = load_str(&format!(
            "[inbound]\nring = [\"101\"]\nstrategy = \"hunt\"\n{ext}"
        ))
        .unwrap();
        assert_eq!(c.inbound.strategy, RingStrategy::Hunt);
        assert_eq!(c.inbound.ring_secs, 20);
        let e = load_str(&format!("[inbound]\nring = [\"101\", \"102\"]\n{ext}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("inbound.ring: the 2th entry, \"102\", is not an [[extension]] number"),
            "{e}"
        );
        // A mobile rings through the trunk: only with one configured.
        let e = load_str(&format!(
            "[inbound]\nring = [\"101\", \"07700 900999\"]\n{ext}"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("needs a [[trunk]]"), "{e}");
        let trunk = "[[trunk]]\nname = \"t\"\nmode = \"ip\"\nhost = \"192.0.2.1\"\ndids = [\"01632 960001\"]\n";
        let ok = load_str(&format!(
            "[inbound]\nring = [\"101\", \"07700 900999\"]\n{ext}{trunk}"
        ));
        assert!(ok.is_ok(), "{ok:?}");
        let e = load_str(&format!(
            "[inbound]\nring = [\"07700 900999\", \"+447700900999\"]\n{ext}{trunk}"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("listed twice"), "{e}");
        let e = load_str(&format!(
            "[inbound]\nring = [\"+441632960001\"]\n{ext}{trunk}"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("in a loop"), "{e}");
        let e = load_str(&format!("[inbound]\nring = [\"101\", \"101\"]\n{ext}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listed twice"), "{e}");
        let e = load_str(&format!(
            "[inbound]\nring = [\"101\"]\nring_secs = 1\n{ext}"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("inbound.ring_secs must be 5..=300"), "{e}");
    }

    #[test]
    fn extensions_are_checked_and_their_secrets_never_shown() {
        let one =
            "[[extension]]\nnumber = \"101\"\nname = \"Front desk\"\nsecret = \"correct horse\"\n";
        let c = load_str(one).unwrap();
        assert_eq!(c.extensions[0].number, "101");
        assert_eq!(
            c.extensions[0].secret.as_ref().unwrap().expose(),
            "correct horse"
        );
        let shown = toml::to_string(&c).unwrap();
        assert!(
            !shown.contains("correct horse") && shown.contains("<hidden>"),
            "{shown}"
        );
        assert!(!format!("{c:?}").contains("correct horse"));
        for (bad, says) in [
            (one.replace("101", "1"), "2 to 6 digits"),
            (one.replace("101", "10a"), "2 to 6 digits"),
            (format!("{one}{one}"), "used twice"),
            (one.replace("correct horse", "short"), "at least 8"),
        ] {
            let e = load_str(&bad).unwrap_err().to_string();
            assert!(e.contains(says) && !e.contains("correct horse"), "{e}");
        }
        let e = load_str("[[extension]]\nnumber = \"101\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs a secret") && e.contains("extension-secret"),
            "{e}"
        );
        // Kept as HA1s instead: checked, and never shown either.
        let h = "[[extension]]\nnumber = \"101\"\nha1 = \"0123456789abcdef0123456789abcdef\"\n";
        let c = load_str(h).unwrap();
        assert!(!c.to_toml().contains("0123456789abcdef"));
        for (bad, says) in [
            (h.replace("abcdef\"", "abcdeX\""), "32 hex digits"),
            (format!("{h}secret = \"correct horse\"\n"), "not both"),
            (format!("{h}ha1_sha256 = \"00\"\n"), "ha1_sha256 64"),
            (format!("{one}ha1_sha256 = \"00\"\n"), "goes with ha1"),
        ] {
            let e = load_str(&bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        // SHA-256 challenges need every extension able to answer them.
        let e = load_str(&format!("[registrar]\noffer_sha256 = true\n{h}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("has an ha1 but no ha1_sha256"), "{e}");
        let e = load_str("[registrar]\nmin_expires_secs = 7200\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("registrar.min_expires_secs"), "{e}");
    }

    #[test]
    fn the_sites_country_is_an_iso_code_we_know() {
        assert_eq!(
            Config::default_config().site.country,
            crate::phone::Country::GB
        );
        let c = load_str("[site]\ncountry = \"IE\"\n").unwrap();
        assert_eq!(c.site.country, crate::phone::Country::IE);
        let e = load_str("[site]\ncountry = \"Narnia\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("country") && e.contains("Narnia") && e.contains("GB"),
            "{e}"
        );
    }

    #[test]
    fn an_rtp_range_without_an_rtp_and_rtcp_pair_is_refused() {
        let e = load_str("[media]\nrtp_port_min = 20001\nrtp_port_max = 20002\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("RTCP"), "{e}");
        assert!(load_str("[media]\nrtp_port_min = 20000\nrtp_port_max = 20001\n").is_ok());
    }

    #[test]
    fn invalid_range_is_explained() {
        let e = load_str("[media]\nrtp_port_min = 30000\nrtp_port_max = 20000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("media.rtp_port_min"), "{e}");
    }

    #[test]
    fn the_whisper_model_is_tiny_by_default_and_named_when_wrong() {
        use handlet_models::manifest::WhisperModel;
        assert_eq!(
            Config::default_config().transcription.model,
            WhisperModel::TinyEn
        );
        let c = load_str("[transcription]\nmodel = \"base\"\n").unwrap();
        assert_eq!(c.transcription.model, WhisperModel::Base);
        let e = load_str("[transcription]\nmodel = \"small\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model") && e.contains("tiny.en") && e.contains("base"),
            "{e}"
        );
    }

    #[test]
    fn early_final_must_fit_inside_the_end_of_speech_silence() {
        assert_eq!(
            load_str("[transcription]\nearly_final_ms = 0\n")
                .unwrap()
                .transcription
                .early_final_ms,
            0
        );
        for bad in [
            "early_final_ms = 100",
            "early_final_ms = 900\nmin_silence_ms = 600",
        ] {
            let e = load_str(&format!("[transcription]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("transcription.early_final_ms"), "{e}");
        }
    }

    #[test]
    fn retention_is_30_days_by_default_and_validated() {
        let c = Config::default_config();
        assert!(c.privacy.recording);
        assert_eq!(c.privacy.recording_retention_days, 30);
        let c = load_str("[privacy]\nrecording_retention_days = 90\n").unwrap();
        assert_eq!(c.privacy.recording_retention_days, 90);
        for bad in [
            "recording_retention_days = 0",
            "recording_retention_days = 4000",
        ] {
            let e = load_str(&format!("[privacy]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("privacy.recording_retention_days must be 1..=3650"),
                "{e}"
            );
        }
        let e = load_str("[privacy]\ntranscript_retention_days = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("privacy.transcript_retention_days"), "{e}");
    }

    #[test]
    fn embedded_default_file_matches_the_code_defaults() {
        let from_file: Config = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(from_file, Config::default());
    }

    #[test]
    fn round_trips_through_show() {
        let c = Config::default_config();
        let again: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(c, again);
    }
}
