//! The upstream client (issue 15): events from the outbox to the broker
//! over MQTT 5 with mutual TLS, QoS 1, and marked delivered only when the
//! backend says it committed them (`.../down/ack`), never on the broker's
//! PUBACK: a broker is not a durable queue, and one that drops its session
//! silently drops what was in flight (DESIGN.md §5). So the outbox drives
//! redelivery: after every reconnect every undelivered event is sent again
//! in order, and one unacknowledged for `ack_wait_secs` is sent again; the
//! backend deduplicates on (device, msg_id). The session starts clean
//! each time, so rumqttc never replays publishes of its own and each
//! PUBACK can be matched to the event it answers (packet ids are handed
//! out in the order events are published): a refusal (not authorised,
//! too large) counts against that event, and `max_failures` of them send
//! it to the dead letters.

use crate::config::{Config, Sync as SyncConfig};
use crate::store::outbox;
use crate::store::write_setting;
use crate::sync::command::{self, Action};
use crate::sync::desired;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Events sent and not yet acknowledged, at most.
const IN_FLIGHT: usize = 256;
/// How often due events are looked for while connected.
const TICK: Duration = Duration::from_millis(100);
/// Reconnect backoff: full jitter up to `base * 2^n`, capped.
const BACKOFF_BASE_MS: u64 = 500;
const BACKOFF_CAP_MS: u64 = 60_000;
/// An event's envelope bigger than this is not sent (dead-lettered).
const MAX_EVENT_BYTES: usize = 128 * 1024;
/// The largest packet taken from the broker: a config document at its
/// limit with room for the MQTT header and properties (rumqttc's own
/// default, 10 KiB, would drop the connection on a big document or ack).
const MAX_INCOMING_BYTES: u32 = (desired::MAX_BYTES + 8 * 1024) as u32;
/// An acknowledgement bigger than this is ignored; of one naming more
/// ids, only the first this many are read.
const ACK_MAX_BYTES: usize = 256 * 1024;
const ACK_MAX_IDS: usize = 4096;

fn resolve(data_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        data_dir.join(p)
    }
}

/// The client's TLS: the broker checked against `sync.ca` alone, this box
/// known by `sync.cert` and `sync.key`; rustls on ring (DESIGN.md §5).
pub fn tls(cfg: &SyncConfig, data_dir: &Path) -> Result<Arc<rustls::ClientConfig>, crate::Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |what: &str, p: &Path| {
        let p = resolve(data_dir, p);
        std::fs::read(&p)
            .map_err(|e| crate::Error::Config(format!("sync.{what} {}: {e}", p.display())))
    };
    let bad = |what: &str, e: String| crate::Error::Config(format!("sync.{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read("ca", &cfg.ca)?) {
        let c = c.map_err(|e| bad("ca", format!("not a PEM certificate ({e})")))?;
        roots.add(c).map_err(|e| bad("ca", e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("ca", "no certificate in the file".into()));
    }
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read("cert", &cfg.cert)?)
            .collect::<Result<_, _>>()
            .map_err(|e| bad("cert", format!("not a PEM certificate ({e})")))?;
    if certs.is_empty() {
        return Err(bad("cert", "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read("key", &cfg.key)?)
        .map_err(|e| bad("key", format!("not a PEM private key ({e})")))?;
    let c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad("cert", e.to_string()))?
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)
    .map_err(|e| bad("key", format!("does not fit sync.cert ({e})")))?;
    Ok(Arc::new(c))
}

/// What `handlet sync enroll` wrote, and where the signed parts go.
#[derive(Debug)]
pub struct Enrolled {
    pub key: PathBuf,
    pub new_key: bool,
    pub csr: PathBuf,
    pub cert: PathBuf,
    pub ca: PathBuf,
}

/// This box's key pair (ECDSA P-256, made here and never leaving the box)
/// and a certificate signing request naming `sync.device_id`, for the
/// workspace's CA. An existing key is kept unless `new_key`: enrolling
/// again (a certificate about to expire) needs only a new request.
pub fn enroll(cfg: &Config, new_key: bool) -> Result<Enrolled, crate::Error> {
    let s = &cfg.sync;
    let bad = |e: String| crate::Error::Config(format!("sync enroll: {e}"));
    if s.device_id.is_empty() {
        return Err(bad(
            "set sync.device_id first: it names this box in its certificate and topics".into(),
        ));
    }
    let key = resolve(&cfg.data_dir, &s.key);
    let csr = key.with_extension("csr");
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |e: std::io::Error| bad(format!("{p}: {e}"))
    };
    if let Some(d) = key.parent() {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    let existing = if new_key {
        None
    } else {
        match std::fs::read_to_string(&key) {
            Ok(pem) => Some(
                rcgen::KeyPair::from_pem(&pem)
                    .map_err(|e| bad(format!("{} is not a private key ({e})", key.display())))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&key)(e)),
        }
    };
    let made = existing.is_none();
    let pair = match existing {
        Some(k) => k,
        None => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| bad(e.to_string()))?,
    };
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| bad(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, s.device_id.clone());
    let request = params
        .serialize_request(&pair)
        .and_then(|r| r.pem())
        .map_err(|e| bad(e.to_string()))?;
    if made {
        // Written beside, private from the first byte, then renamed over
        // the old one: a crash leaves the old key or the new, never half.
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = key.with_extension("key.new");
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(pair.serialize_pem().as_bytes())?;
                f.sync_all()
            })
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &key).map_err(io(&key))?;
    }
    std::fs::write(&csr, request).map_err(io(&csr))?;
    Ok(Enrolled {
        key,
        new_key: made,
        csr,
        cert: resolve(&cfg.data_dir, &s.cert),
        ca: resolve(&cfg.data_dir, &s.ca),
    })
}

/// What a broker error means, in one line an operator can act on.
fn explain(e: &rumqttc::v5::ConnectionError) -> String {
    let s = e.to_string();
    let d = format!("{e:?}");
    if d.contains("UnknownIssuer") || d.contains("BadSignature") || d.contains("NotValidForName") {
        format!("the broker's certificate is not one sync.ca vouches for ({s})")
    } else if d.contains("CertificateRequired")
        || d.contains("UnknownCA")
        || d.contains("BadCertificate")
    {
        format!("the broker refused this box's certificate (sync.cert) ({s})")
    } else if d.contains("ConnectionRefused") || d.contains("Connection refused") {
        format!("nothing listens at the broker's address ({s})")
    } else {
        s
    }
}

/// The envelope the backend receives: the event's payload as written,
/// with who sent it and its id (device ids are letters, digits, - and _;
/// ids and epochs are hex: nothing to escape).
fn envelope(device: &str, epoch: &str, d: &outbox::Due) -> String {
    format!(
        r#"{{"msg_id":"{}","device":"{device}","epoch":"{epoch}","seq":{},"payload":{}}}"#,
        d.msg_id, d.seq, d.payload
    )
}

/// Ids named by an acknowledgement (`{"ids": [...]}`); None if it is not one.
pub fn ack_ids(body: &[u8]) -> Option<Vec<String>> {
    if body.len() > ACK_MAX_BYTES {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let ids = v.get("ids")?.as_array()?;
    Some(
        ids.iter()
            .take(ACK_MAX_IDS)
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
    )
}

/// Connected or not, for `handlet sync status`: written when it changes.
fn status(conn: &Connection, connected: bool) {
    let now = crate::clock::now_ms();
    let _ = write_setting(
        conn,
        "sync.connected",
        if connected { "yes" } else { "no" },
        now,
    );
    if connected {
        let _ = write_setting(conn, "sync.last_contact_ms", &now.to_string(), now);
    }
}

/// The backend was heard from: the last contact, written at most once a
/// second (acknowledgements arrive many a second while a backlog drains).
fn heard(conn: &Connection, last_written_ms: &mut i64) {
    let now = crate::clock::now_ms();
    if now - *last_written_ms >= 1000 {
        *last_written_ms = now;
        let _ = write_setting(conn, "sync.last_contact_ms", &now.to_string(), now);
    }
}

/// Send the outbox upstream until `cancel` fires. Errors reaching the
/// broker are logged and retried with backoff; the agent runs on.
pub async fn run(
    full: Config,
    tls: Arc<rustls::ClientConfig>,
    live: Live,
    cancel: CancellationToken,
) -> Result<(), crate::Error> {
    let cfg = full.sync.clone();
    let conn = crate::store::open_connection(&full.database_path())?;
    let now = crate::clock::now_ms();
    let epoch = outbox::epoch(&conn, now)?;
    let device = cfg.device_id.clone();
    let prefix = format!("handlet/v1/{device}/");
    let ack_topic = format!("{prefix}down/ack");
    let command_topic = format!("{prefix}down/command");
    let config_topic = format!("{prefix}down/config");
    let broker = cfg.broker.trim_start_matches("mqtts://");
    let (host, port) = broker
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_matches(['[', ']']).to_string(),
                p.parse::<u16>().ok()?,
            ))
        })
        .ok_or_else(|| crate::Error::Config(format!("sync.broker {broker:?}")))?;
    let mut opts = MqttOptions::new(device.clone(), host, port);
    opts.set_keep_alive(Duration::from_secs(cfg.keepalive_secs))
        .set_clean_start(true)
        .set_manual_acks(true)
        .set_max_packet_size(Some(MAX_INCOMING_BYTES))
        .set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    let (client, events) = AsyncClient::new(opts, IN_FLIGHT * 2);
    // rumqttc is driven on a task of its own, so pings and reads go on
    // while this loop is in the database (an erase's checkpoint, a
    // sweep), and its poll is never cancelled half-way by the tick.
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
    let poller = tokio::spawn(poll(events, tx));
    let ack_wait = cfg.ack_wait_secs as i64 * 1000;
    let mut connected = false;
    let mut last_error = String::new();
    let mut refused_logged = false;
    let mut last_contact = 0;
    // Events published, oldest first, until rumqttc gives each its
    // packet id; then by packet id until the PUBACK.
    let mut queued: std::collections::VecDeque<i64> = Default::default();
    let mut by_pkid: std::collections::HashMap<u16, i64> = Default::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    status(&conn, false);
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => break,
            m = rx.recv() => match m {
                None => break,
                Some(m) => m,
            },
            _ = tick.tick(), if connected => {
                let sent = tokio::task::block_in_place(|| {
                    let busy = busy(&queued, &by_pkid);
                    send_due(&conn, &client, &device, &epoch, &prefix, ack_wait, &busy)
                });
                queued.extend(sent);
                continue;
            }
        };
        let ev = match ev {
            Polled::Event(ev) => *ev,
            Polled::Failed(why) => {
                queued.clear();
                by_pkid.clear();
                if connected {
                    tokio::task::block_in_place(|| status(&conn, false));
                }
                connected = false;
                // One line per kind of failure, not per retry.
                if why != last_error {
                    tracing::warn!(error = %why, "sync: cannot reach the broker; retrying");
                    last_error = why;
                }
                continue;
            }
        };
        match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                queued.clear();
                by_pkid.clear();
                connected = true;
                last_error.clear();
                tracing::info!(device = %device, "sync: connected to the broker");
                // Whatever was in flight is sent again, in order.
                tokio::task::block_in_place(|| {
                    let _ = outbox::rewind(&conn);
                    status(&conn, true);
                });
                for t in [&ack_topic, &command_topic, &config_topic] {
                    // The config topic is retained: the broker hands over
                    // the current document on every connect.
                    let _ = client.subscribe(t.clone(), QoS::AtLeastOnce).await;
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                if p.topic.as_ref() == ack_topic.as_bytes()
                    && let Some(ids) = ack_ids(&p.payload)
                {
                    let (n, sent) = tokio::task::block_in_place(|| {
                        let n = outbox::acked(&conn, &ids, crate::clock::now_ms());
                        heard(&conn, &mut last_contact);
                        // Room in flight again: fill it now, not at the
                        // next tick (a backlog drains at the backend's
                        // pace, not the timer's).
                        let busy = busy(&queued, &by_pkid);
                        let sent =
                            send_due(&conn, &client, &device, &epoch, &prefix, ack_wait, &busy);
                        (n, sent)
                    });
                    queued.extend(sent);
                    if let Err(e) = n {
                        tracing::warn!(error = %e, "sync: cannot mark events delivered");
                    }
                }
                if p.topic.as_ref() == command_topic.as_bytes() {
                    tokio::task::block_in_place(|| take_command(&conn, &full, &p.payload));
                }
                if p.topic.as_ref() == config_topic.as_bytes() {
                    tokio::task::block_in_place(|| take_config(&conn, &full, &live, &p.payload));
                }
                // Waits for room: a dropped PUBACK would hold one of the
                // broker's in-flight slots for us for good.
                let _ = client.ack(&p).await;
            }
            Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => {
                if let Some(seq) = queued.pop_front() {
                    by_pkid.insert(pkid, seq);
                }
            }
            Event::Incoming(Packet::PubAck(a)) => {
                let seq = by_pkid.remove(&a.pkid);
                if let Some(seq) = seq {
                    refusal(&conn, seq, a.reason, cfg.max_failures, &mut refused_logged);
                }
            }
            _ => {}
        }
    }
    // Say goodbye, and let the poller send it (at most a second).
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(m) = rx.recv().await {
            match m {
                Polled::Event(ev)
                    if matches!(*ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) =>
                {
                    break;
                }
                Polled::Failed(_) => break,
                Polled::Event(_) => {}
            }
        }
    })
    .await;
    poller.abort();
    Ok(())
}

/// What the poller hands the loop.
enum Polled {
    Event(Box<Event>),
    /// The connection failed (in words); the poller waits out its backoff
    /// before it tries again.
    Failed(String),
}

/// Drive rumqttc: every event to the loop; after a failure, wait (full
/// jitter, 0.5 s doubling to a minute) before the next connect, which
/// rumqttc would otherwise make at once.
async fn poll(mut events: rumqttc::v5::EventLoop, tx: tokio::sync::mpsc::Sender<Polled>) {
    let mut failures: u32 = 0;
    loop {
        match events.poll().await {
            Ok(ev) => {
                if matches!(ev, Event::Incoming(Packet::ConnAck(_))) {
                    failures = 0;
                }
                if tx.send(Polled::Event(Box::new(ev))).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                if tx.send(Polled::Failed(explain(&e))).await.is_err() {
                    return;
                }
                let cap = BACKOFF_CAP_MS.min(BACKOFF_BASE_MS << failures.min(16));
                failures = failures.saturating_add(1);
                tokio::time::sleep(Duration::from_millis(rand::random_range(0..=cap))).await;
            }
        }
    }
}

/// Events handed to rumqttc and not yet answered by a PUBACK: not to be
/// handed over again meanwhile.
fn busy(
    queued: &std::collections::VecDeque<i64>,
    by_pkid: &std::collections::HashMap<u16, i64>,
) -> std::collections::HashSet<i64> {
    queued.iter().chain(by_pkid.values()).copied().collect()
}

/// A PUBACK that is not a success. Only a refusal about the message
/// itself counts against it (`max_failures` of them: dead letters); one
/// about this box or the broker (not authorised: an ACL to fix; over
/// quota; an unspecified error) would refuse every event alike, so it
/// is logged and the event waits its resend, never dead-lettered.
fn refusal(conn: &Connection, seq: i64, reason: PubAckReason, max: u32, logged: &mut bool) {
    let about_message = match reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => return,
        PubAckReason::PayloadFormatInvalid | PubAckReason::TopicNameInvalid => true,
        _ => false,
    };
    let why = format!("{reason:?}");
    if !*logged {
        *logged = true;
        tracing::warn!(reason = %why, "sync: the broker refused an event (if not authorised: check its ACL lets this device write handlet/v1/{{device}}/up/#); it is sent again later");
    }
    if about_message {
        let buried = tokio::task::block_in_place(|| {
            outbox::refused(conn, seq, crate::clock::now_ms(), &why, max)
        });
        if let Ok(true) = buried {
            tracing::warn!(
                "sync: an event the broker keeps refusing was dead-lettered (`handlet sync status`)"
            );
        }
    }
}

/// Settings that keep the pushed document (docs/SYNC.md).
const PUSHED: &str = "sync.config";
const PUSHED_VERSION: &str = "sync.config_version";
const SEEN_VERSION: &str = "sync.config_seen";
const REFUSED: &str = "sync.config_refused";

/// The local config with a pushed document on top, checked as a whole
/// exactly as the file is (the plan against the local extensions, trunks
/// and intents).
pub fn overlay(
    local: &Config,
    d: &desired::Desired,
) -> Result<(Config, crate::routing::Plan), String> {
    let mut c = local.clone();
    if let Some(r) = &d.routing {
        c.routing = r.clone();
    }
    if let Some(days) = d.retention.recording_retention_days {
        c.privacy.recording_retention_days = days;
    }
    if let Some(days) = d.retention.transcript_retention_days {
        c.privacy.transcript_retention_days = days;
    }
    if !d.receptionist.is_empty() {
        // Over the file's settings, key by key, read as the file's are.
        let mut r = serde_json::to_value(&c.receptionist).map_err(|e| e.to_string())?;
        for (k, v) in &d.receptionist {
            r[k] = v.clone();
        }
        c.receptionist = serde_json::from_value(r).map_err(|e| format!("receptionist: {e}"))?;
    }
    c.validate()?;
    let plan = c.routing_plan()?;
    Ok((c, plan))
}

/// The document last applied, on top of `local`, for start-up: None if
/// none was pushed, or if it no longer fits the local file (then the
/// file's own plan runs, and a warning says why).
pub fn pushed(local: &Config, conn: &Connection) -> Option<(u64, Config, crate::routing::Plan)> {
    let doc = crate::store::read_setting(conn, PUSHED).ok().flatten()?;
    let fits = desired::parse(doc.as_bytes())
        .map_err(|r| r.why)
        .and_then(|d| overlay(local, &d).map(|(c, plan)| (d.version, c, plan)));
    match fits {
        Ok(v) => Some(v),
        Err(why) => {
            tracing::warn!(error = %why, "the config pushed from upstream no longer fits the local file: running the file's own");
            None
        }
    }
}

/// A document from `down/config`: newer than any seen, checked, then
/// applied live and kept, or refused and the old one kept; either way
/// reported upstream once (`up/status`).
fn take_config(conn: &Connection, cfg: &Config, live: &Live, body: &[u8]) {
    let now = crate::clock::now_ms();
    let seen = crate::store::read_setting(conn, SEEN_VERSION)
        .ok()
        .flatten()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let outcome = desired::parse(body).and_then(|d| {
        overlay(cfg, &d)
            .map(|(c, p)| (d.version, (c, p)))
            .map_err(|why| desired::Refused {
                version: Some(d.version),
                why,
            })
    });
    let version = match &outcome {
        Ok((v, _)) => Some(*v),
        Err(r) => r.version,
    };
    let Some(version) = version else {
        if let Err(r) = outcome {
            tracing::warn!(why = %r.why, "sync: a config document without a version was ignored");
        }
        return;
    };
    if version <= seen {
        // The retained copy again on a reconnect, or an old one.
        tracing::debug!(version, seen, "sync: config document already seen");
        return;
    }
    let applied = crate::store::read_setting(conn, PUSHED_VERSION)
        .ok()
        .flatten()
        .and_then(|v| v.parse::<u64>().ok());
    let (report, new_plan) = match outcome {
        Ok((_, p)) => (
            serde_json::json!({"version": version, "ok": true, "error": null}),
            Some(p),
        ),
        Err(r) => (
            serde_json::json!({"version": version, "ok": false, "error": r.why}),
            None,
        ),
    };
    let payload = serde_json::json!({
        "schema": "handlet.status/1",
        "config": report,
        "config_applied": if new_plan.is_some() { Some(version) } else { applied },
        "at_ms": now,
    });
    let doc = String::from_utf8_lossy(body);
    let stored = crate::store::outbox::durably(conn, |tx| {
        write_setting(tx, SEEN_VERSION, &version.to_string(), now)?;
        if new_plan.is_some() {
            write_setting(tx, PUSHED, &doc, now)?;
            write_setting(tx, PUSHED_VERSION, &version.to_string(), now)?;
            tx.execute("DELETE FROM settings WHERE key = ?1", [REFUSED])?;
        } else {
            let why = payload["config"]["error"].as_str().unwrap_or_default();
            write_setting(tx, REFUSED, &format!("version {version}: {why}"), now)?;
        }
        crate::store::outbox::enqueue(
            tx,
            "up/status",
            None,
            &format!("config:{version}"),
            &payload,
            now,
        )
    });
    if let Err(e) = stored {
        // Not kept, not applied: the retained copy comes again.
        tracing::warn!(error = %e, "sync: cannot store a config document");
        return;
    }
    match new_plan {
        Some((c, p)) => {
            live.plan.replace(p);
            live.retention.set(&c.privacy);
            live.receptionist.set(c.receptionist.clone());
            // The new fixed sentences rendered ahead (a call that comes
            // first has them synthesised as it goes).
            if let Some(v) = &live.voice {
                for s in c.receptionist.fixed_sentences() {
                    v.prepare(&s);
                }
            }
            tracing::info!(
                version,
                "sync: config from upstream applied (routing plan, retention, receptionist)"
            );
        }
        None => tracing::warn!(
            version,
            error = %payload["config"]["error"].as_str().unwrap_or_default(),
            "sync: config from upstream refused; the last good one runs on"
        ),
    }
}

/// What a pushed document changes while calls run.
pub struct Live {
    pub plan: Arc<crate::routing::LivePlan>,
    pub retention: Arc<crate::privacy::Retention>,
    pub receptionist: Arc<crate::receptionist::LiveConfig>,
    pub voice: Option<Arc<crate::voice::VoiceService>>,
}

/// Run a command from upstream once, and queue its result. Its number
/// (an erase's) is never logged or stored.
fn take_command(conn: &Connection, cfg: &Config, body: &[u8]) {
    let now = crate::clock::now_ms();
    let cmd = match command::parse(body) {
        Ok(c) => c,
        Err(command::Refused { id: None, why }) => {
            tracing::warn!(why = %why, "sync: a command was ignored");
            return;
        }
        Err(command::Refused { id: Some(id), why }) => {
            tracing::warn!(id = %id, why = %why, "sync: a command was refused");
            let p = command::result_payload(&id, "invalid", &Err(why), now);
            if let Err(e) = crate::store::inbox::finish(conn, &id, "invalid", false, &p, now) {
                tracing::warn!(error = %e, "sync: cannot store a command's result");
            }
            return;
        }
    };
    let kind = cmd.action.kind();
    match crate::store::inbox::arrive(conn, &cmd.id, kind, now) {
        Ok(crate::store::inbox::Arrival::Done) => {
            tracing::debug!(id = %cmd.id, kind, "sync: a command already done was delivered again");
            return;
        }
        Ok(_) => {}
        Err(e) => {
            // Not noted, not run: the backend sends it again.
            tracing::warn!(error = %e, "sync: cannot note a command");
            return;
        }
    }
    let outcome = execute(conn, cfg, &cmd.action, now);
    match &outcome {
        Ok(r) => tracing::info!(id = %cmd.id, kind, result = %r, "sync: command done"),
        Err(e) => tracing::warn!(id = %cmd.id, kind, error = %e, "sync: command failed"),
    }
    let p = command::result_payload(&cmd.id, kind, &outcome, crate::clock::now_ms());
    if let Err(e) = crate::store::inbox::finish(
        conn,
        &cmd.id,
        kind,
        outcome.is_ok(),
        &p,
        crate::clock::now_ms(),
    ) {
        // Left unfinished: run again (idempotently) when re-sent.
        tracing::warn!(error = %e, "sync: cannot store a command's result");
    }
}

/// What each command does: the same functions as its `handlet` command.
fn execute(
    conn: &Connection,
    cfg: &Config,
    action: &Action,
    now: i64,
) -> Result<serde_json::Value, String> {
    use crate::privacy::requests;
    match action {
        Action::Erase { number } => {
            let phone = crate::phone::Phone::parse_in(number, cfg.site.country).map_err(|_| {
                "the number is not one this box can read as a phone number".to_string()
            })?;
            let e = requests::erase(conn, &cfg.data_dir, requests::Subject::Phone(&phone), now)
                .map_err(|e| e.to_string())?;
            Ok(serde_json::json!({
                "calls": e.calls,
                "recordings": e.recordings,
                "in_progress": e.in_progress,
            }))
        }
        Action::Sweep => {
            let s = crate::privacy::sweep(conn, &cfg.data_dir, &cfg.privacy, now)
                .map_err(|e| e.to_string())?;
            Ok(serde_json::json!({
                "recordings": s.recordings,
                "calls": s.calls,
                "stray_files": s.orphan_files,
            }))
        }
        Action::RotateKeys => {
            let r = crate::recording::rotate(conn, &cfg.data_dir).map_err(|e| e.to_string())?;
            Ok(serde_json::json!({
                "new_key": r.new_key,
                "rewrapped": r.rewrapped,
                "removed": r.removed.len(),
            }))
        }
    }
}

/// Send what is due, within the in-flight bound; the events published,
/// in order.
fn send_due(
    conn: &Connection,
    client: &AsyncClient,
    device: &str,
    epoch: &str,
    prefix: &str,
    ack_wait: i64,
    busy: &std::collections::HashSet<i64>,
) -> Vec<i64> {
    let now = crate::clock::now_ms();
    let in_flight = outbox::in_flight(conn, now).unwrap_or(IN_FLIGHT);
    let mut published = Vec::new();
    if in_flight >= IN_FLIGHT {
        return published;
    }
    let Ok(due) = outbox::due(conn, now, IN_FLIGHT - in_flight) else {
        return published;
    };
    // One commit for the lot (a lost one only means sending them again).
    let Ok(tx) = conn.unchecked_transaction() else {
        return published;
    };
    for d in due {
        if busy.contains(&d.seq) {
            continue;
        }
        let body = envelope(device, epoch, &d);
        // Brokers take what their maximum packet size allows, and a
        // bigger one would drop the connection and stop the rest behind
        // it every time: it goes to the dead letters at once.
        if body.len() > MAX_EVENT_BYTES {
            let why = format!(
                "{} bytes, more than the {MAX_EVENT_BYTES} an event may be",
                body.len()
            );
            tracing::warn!(
                seq = d.seq,
                "sync: an event too large to send was dead-lettered"
            );
            let _ = outbox::bury(&tx, d.seq, now, &why);
            continue;
        }
        let topic = format!("{prefix}{}", d.topic);
        match client.try_publish(topic, QoS::AtLeastOnce, false, body) {
            Ok(()) => {
                let _ = outbox::sent(&tx, d.seq, now, ack_wait);
                published.push(d.seq);
            }
            // The client's queue is full: the rest waits for the next tick.
            Err(_) => break,
        }
    }
    let _ = tx.commit();
    published
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_names_ids_and_anything_else_is_ignored() {
        assert_eq!(
            ack_ids(br#"{"ids": ["a", "b", 3]}"#),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(ack_ids(b"not json"), None);
        assert_eq!(ack_ids(br#"{"other": 1}"#), None);
        let big = format!(r#"{{"ids": ["{}"]}}"#, "x".repeat(ACK_MAX_BYTES));
        assert_eq!(ack_ids(big.as_bytes()), None);
    }

    #[test]
    fn the_envelope_is_json_with_the_payload_inside() {
        let d = outbox::Due {
            seq: 7,
            msg_id: "0190-x".into(),
            topic: "up/call".into(),
            payload: r#"{"schema":"handlet.call/1"}"#.into(),
            attempts: 0,
        };
        let v: serde_json::Value = serde_json::from_str(&envelope("shop-1", "ab", &d)).unwrap();
        assert_eq!(v["device"], "shop-1");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["payload"]["schema"], "handlet.call/1");
    }
}
