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

use crate::config::Sync as SyncConfig;
use crate::store::outbox;
use crate::store::write_setting;
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
/// An acknowledgement bigger than this, or naming more ids, is ignored.
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

/// Send the outbox upstream until `cancel` fires. Errors reaching the
/// broker are logged and retried with backoff; the agent runs on.
pub async fn run(
    cfg: SyncConfig,
    tls: Arc<rustls::ClientConfig>,
    db: PathBuf,
    cancel: CancellationToken,
) -> Result<(), crate::Error> {
    let conn = crate::store::open_connection(&db)?;
    let now = crate::clock::now_ms();
    let epoch = outbox::epoch(&conn, now)?;
    let device = cfg.device_id.clone();
    let prefix = format!("handlet/v1/{device}/");
    let ack_topic = format!("{prefix}down/ack");
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
        .set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    let (client, mut events) = AsyncClient::new(opts, IN_FLIGHT * 2);
    let ack_wait = cfg.ack_wait_secs as i64 * 1000;
    let mut connected = false;
    let mut failures: u32 = 0;
    let mut last_error = String::new();
    let mut refused_logged = false;
    // Events published, oldest first, until rumqttc gives each its
    // packet id; then by packet id until the PUBACK.
    let mut queued: std::collections::VecDeque<i64> = Default::default();
    let mut by_pkid: std::collections::HashMap<u16, i64> = Default::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    status(&conn, false);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    queued.clear();
                    by_pkid.clear();
                    connected = true;
                    failures = 0;
                    last_error.clear();
                    tracing::info!(device = %device, "sync: connected to the broker");
                    // Whatever was in flight is sent again, in order.
                    tokio::task::block_in_place(|| {
                        let _ = outbox::rewind(&conn);
                        status(&conn, true);
                    });
                    let _ = client.try_subscribe(ack_topic.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if p.topic.as_ref() == ack_topic.as_bytes()
                        && let Some(ids) = ack_ids(&p.payload)
                    {
                        let n = tokio::task::block_in_place(|| {
                            let n = outbox::acked(&conn, &ids, crate::clock::now_ms());
                            status(&conn, true);
                            n
                        });
                        if let Err(e) = n {
                            tracing::warn!(error = %e, "sync: cannot mark events delivered");
                        }
                    }
                    let _ = client.try_ack(&p);
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                    if let Some(seq) = queued.pop_front() {
                        by_pkid.insert(pkid, seq);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(a))) => {
                    let seq = by_pkid.remove(&a.pkid);
                    let fine = matches!(a.reason, PubAckReason::Success | PubAckReason::NoMatchingSubscribers);
                    if let (Some(seq), false) = (seq, fine) {
                        let why = format!("{:?}", a.reason);
                        if !refused_logged {
                            refused_logged = true;
                            tracing::warn!(reason = %why, "sync: the broker refused an event (if not authorised: check its ACL lets this device write handlet/v1/{{device}}/up/#)");
                        }
                        let buried = tokio::task::block_in_place(|| {
                            outbox::refused(&conn, seq, crate::clock::now_ms(), &why, cfg.max_failures)
                        });
                        if let Ok(true) = buried {
                            tracing::warn!("sync: an event the broker keeps refusing was dead-lettered (`handlet sync status`)");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    queued.clear();
                    by_pkid.clear();
                    if connected {
                        tokio::task::block_in_place(|| status(&conn, false));
                    }
                    connected = false;
                    let why = explain(&e);
                    // One line per kind of failure, not per retry.
                    if why != last_error {
                        tracing::warn!(error = %why, "sync: cannot reach the broker; retrying");
                        last_error = why;
                    }
                    let cap = BACKOFF_CAP_MS.min(BACKOFF_BASE_MS << failures.min(16));
                    failures = failures.saturating_add(1);
                    let wait = Duration::from_millis(rand::random_range(0..=cap));
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            },
            _ = tick.tick(), if connected => {
                let sent = tokio::task::block_in_place(|| send_due(&conn, &client, &device, &epoch, &prefix, ack_wait));
                queued.extend(sent);
            }
        }
    }
    let _ = client.try_disconnect();
    Ok(())
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
        let topic = format!("{prefix}{}", d.topic);
        match client.try_publish(topic, QoS::AtLeastOnce, false, envelope(device, epoch, &d)) {
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
