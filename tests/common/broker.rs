//! A real MQTT broker for the sync tests: mosquitto (Debian) on loopback
//! with TLS and client certificates required, the identity in each
//! certificate as the username, and per-device ACLs; certificates made
//! here by openssl; and a small backend that stores what it receives in
//! SQLite keyed by (device, msg_id) and publishes acknowledgements.

use super::{Reaped, free_port, openssl, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A test CA and certificates it signs.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Pki {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=handlet test CA",
            ],
        );
        Pki { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `cn` (and, for a server, 127.0.0.1): (cert, key).
    pub fn issue(&self, cn: &str, server: bool) -> (PathBuf, PathBuf) {
        let ext = if server {
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        } else {
            "extendedKeyUsage=clientAuth\n"
        };
        std::fs::write(self.dir.join(format!("{cn}.ext")), ext).unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{cn}.key"),
                "-out",
                &format!("{cn}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{cn}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{cn}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{cn}.ext"),
            ],
        );
        (
            self.dir.join(format!("{cn}.pem")),
            self.dir.join(format!("{cn}.key")),
        )
    }
}

impl Pki {
    /// Sign a client's certificate request `csr` (what `handlet sync
    /// enroll` makes) as the workspace's CA would, into `out`.
    pub fn sign(&self, csr: &Path, out: &Path) {
        let ext = self.dir.join("client.ext");
        std::fs::write(&ext, "extendedKeyUsage=clientAuth\n").unwrap();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                csr.to_str().unwrap(),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                out.to_str().unwrap(),
                "-days",
                "2",
                "-extfile",
                ext.to_str().unwrap(),
            ],
        );
    }
}

/// mosquitto, started and stopped by the test.
pub struct Broker {
    pub port: u16,
    conf: PathBuf,
    log: PathBuf,
    proc: Option<Reaped>,
}

impl Broker {
    /// A broker whose own certificate `server_pki` signed, trusting
    /// clients `client_pki` signed.
    pub fn start(dir: &Path, server_pki: &Pki, client_pki: &Pki) -> Broker {
        std::fs::create_dir_all(dir).unwrap();
        let (cert, key) = server_pki.issue("broker", true);
        let port = free_port();
        let acl = dir.join("mosquitto.acl");
        std::fs::write(
            &acl,
            "pattern write handlet/v1/%u/up/#\npattern read handlet/v1/%u/down/#\n\
             user backend\ntopic readwrite handlet/v1/#\n",
        )
        .unwrap();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\npersistence false\nper_listener_settings false\nallow_anonymous false\n\
                 listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
                 require_certificate true\nuse_identity_as_username true\nacl_file {}\n",
                client_pki.ca().display(),
                cert.display(),
                key.display(),
                acl.display()
            ),
        )
        .unwrap();
        let mut b = Broker {
            port,
            conf,
            log: dir.join("mosquitto.log"),
            proc: None,
        };
        b.resume();
        b
    }

    /// Start it again (after [`Broker::stop`]) on the same port.
    pub fn resume(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (make test installs it)");
        self.proc = Some(Reaped(child));
        let port = self.port;
        wait_for(10, "mosquitto to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }

    pub fn stop(&mut self) {
        self.proc = None;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The test's backend: what it stored, and a switch to lose acks.
pub struct Backend {
    pub db: PathBuf,
    /// Of every 100 acknowledgements, how many are not sent.
    pub drop_acks_percent: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub errors: Arc<Mutex<Vec<String>>>,
    client: rumqttc::v5::Client,
}

impl Backend {
    pub fn start(dir: &Path, broker: &Broker, pki: &Pki) -> Backend {
        let db = dir.join("backend.sqlite");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS events (
                device TEXT NOT NULL, msg_id TEXT NOT NULL, topic TEXT NOT NULL,
                payload TEXT NOT NULL, received INTEGER NOT NULL DEFAULT 1,
                bytes INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (device, msg_id));",
        )
        .unwrap();
        let (cert, key) = pki.issue("backend", false);
        let tls = client_tls(&pki.ca(), &cert, &key);
        let mut opts = rumqttc::v5::MqttOptions::new("backend", "127.0.0.1", broker.port);
        opts.set_keep_alive(Duration::from_secs(5)).set_transport(
            rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls)),
        );
        let (client, mut conn_loop) = rumqttc::v5::Client::new(opts, 1024);
        let sender = client.clone();
        let drop_acks_percent = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (drop_acks, stop, errors) =
                (drop_acks_percent.clone(), stop.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut n: u32 = 1;
                // Acknowledgements wait here and go in batches, as a real
                // backend's would (one message naming many ids).
                let mut acks: std::collections::BTreeMap<String, Vec<String>> = Default::default();
                let flush = |acks: &mut std::collections::BTreeMap<String, Vec<String>>| {
                    acks.retain(|device, ids| {
                        let ack = serde_json::json!({ "ids": ids }).to_string();
                        // A full request queue keeps them for the next go.
                        client
                            .try_publish(
                                format!("handlet/v1/{device}/down/ack"),
                                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                                false,
                                ack,
                            )
                            .is_err()
                    });
                };
                while !stop.load(Ordering::Relaxed) {
                    let ev = match conn_loop.recv_timeout(Duration::from_millis(50)) {
                        Ok(Ok(ev)) => ev,
                        Ok(Err(e)) => {
                            errors.lock().unwrap().push(e.to_string());
                            std::thread::sleep(Duration::from_millis(200));
                            continue;
                        }
                        Err(_) => {
                            flush(&mut acks);
                            continue;
                        }
                    };
                    use rumqttc::v5::mqttbytes::v5::Packet;
                    match ev {
                        rumqttc::v5::Event::Incoming(Packet::ConnAck(_)) => {
                            let _ = client.try_subscribe(
                                "handlet/v1/+/up/#",
                                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                            );
                        }
                        rumqttc::v5::Event::Incoming(Packet::Publish(p)) => {
                            let topic = String::from_utf8_lossy(&p.topic).to_string();
                            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload)
                            else {
                                errors.lock().unwrap().push(format!("not JSON on {topic}"));
                                continue;
                            };
                            let device = v["device"].as_str().unwrap_or("").to_string();
                            let msg_id = v["msg_id"].as_str().unwrap_or("").to_string();
                            // Committed (or already there: a redelivery)
                            // before it is acknowledged.
                            conn.execute(
                                "INSERT INTO events (device, msg_id, topic, payload, bytes) VALUES (?1, ?2, ?3, ?4, ?5)
                                 ON CONFLICT(device, msg_id) DO UPDATE SET received = received + 1",
                                rusqlite::params![device, msg_id, topic, v["payload"].to_string(), p.payload.len() as i64],
                            )
                            .unwrap();
                            // Lost at random (seeded: the same run each time).
                            n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                            if (n >> 16) % 100 < drop_acks.load(Ordering::Relaxed) {
                                continue;
                            }
                            let ids = acks.entry(device).or_default();
                            ids.push(msg_id);
                            if ids.len() >= 100 {
                                flush(&mut acks);
                            }
                        }
                        _ => {}
                    }
                }
            })
        };
        Backend {
            db,
            drop_acks_percent,
            stop,
            thread: Some(thread),
            errors,
            client: sender,
        }
    }

    /// Everything it received was JSON (its connection errors while a
    /// broker was down are expected and not counted).
    pub fn assert_only_json(&self) {
        let errors = self.errors.lock().unwrap();
        assert!(errors.iter().all(|e| !e.contains("JSON")), "{errors:?}");
    }

    /// Publish `body` on `handlet/v1/{device}/{topic}` (QoS 1).
    pub fn send(&self, device: &str, topic: &str, body: &str) {
        self.publish(device, topic, body, false)
    }

    /// The same, retained: the broker hands it to every new subscriber.
    pub fn send_retained(&self, device: &str, topic: &str, body: &str) {
        self.publish(device, topic, body, true)
    }

    fn publish(&self, device: &str, topic: &str, body: &str, retain: bool) {
        self.client
            .try_publish(
                format!("handlet/v1/{device}/{topic}"),
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                retain,
                body.to_string(),
            )
            .unwrap();
    }

    /// Payloads stored from `handlet/v1/{device}/up/{kind}`, oldest first.
    pub fn payloads(&self, kind: &str) -> Vec<serde_json::Value> {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        let mut q = conn
            .prepare("SELECT topic, payload FROM events ORDER BY rowid")
            .unwrap();
        q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .filter(|(t, _)| t.ends_with(&format!("/up/{kind}")))
            .map(|(_, p)| serde_json::from_str(&p).unwrap())
            .collect()
    }

    /// Send a command until its result has arrived (the broker is not a
    /// durable queue: a backend re-sends until it sees the result), twice
    /// at first (delivered twice, it must still run once); the result.
    pub fn command(&self, device: &str, id: &str, body: &str, secs: u64) -> serde_json::Value {
        self.send(device, "down/command", body);
        self.send(device, "down/command", body);
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        let mut last_sent = std::time::Instant::now();
        loop {
            let found = self
                .events()
                .into_iter()
                .find_map(|(_, topic, payload, _)| {
                    let v: serde_json::Value = serde_json::from_str(&payload).ok()?;
                    (topic.ends_with("/up/command") && v["id"] == id).then_some(v)
                });
            if let Some(v) = found {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no result for command {id}"
            );
            if last_sent.elapsed() > Duration::from_secs(3) {
                self.send(device, "down/command", body);
                last_sent = std::time::Instant::now();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// (msg_id, topic, payload, times received) of everything stored.
    pub fn events(&self) -> Vec<(String, String, String, i64)> {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        let mut q = conn
            .prepare("SELECT msg_id, topic, payload, received FROM events ORDER BY msg_id")
            .unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A rustls client config on ring: roots from `ca`, identity `cert`/`key`.
pub fn client_tls(ca: &Path, cert: &Path, key: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let certs: Vec<_> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap(),
    )
}

/// A TCP relay in front of the broker that can be cut: while cut it
/// moves no bytes either way and connects new clients to nothing, as a
/// network partition looks to both ends (nothing is closed or refused;
/// the peers only find out by their own timeouts).
pub struct Partition {
    pub port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Partition {
    pub fn new(to_port: u16) -> Partition {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (cut.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", to_port)) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (c, s) = (c.clone(), s.clone());
                    std::thread::spawn(move || relay(from, to, &c, &s));
                }
            }
        });
        Partition { port, cut, stop }
    }

    pub fn cut(&self, on: bool) {
        self.cut.store(on, Ordering::Relaxed);
    }
}

fn relay(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    cut: &AtomicBool,
    stop: &AtomicBool,
) {
    use std::io::{Read, Write};
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        // Cut: the bytes wait in the kernel's buffers, unread.
        if cut.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Events as calls write them, `n` of them, straight into an agent's
/// outbox, each with `payload` (the calls themselves take seconds each;
/// what the sync tests and bench look at is delivery: the writes are
/// tested in tests/sync_outbox.rs). `tag` keeps ids apart across batches.
pub fn write_events(db: &Path, n: usize, tag: &str, payload: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for i in 0..n {
        // UUIDv7-shaped, sorting by time like the agent's own.
        let id = format!("{:012x}-7{tag}-{i:08x}", now as u64 & 0xffff_ffff_ffff);
        tx.execute(
            "INSERT INTO outbox (msg_id, topic, call_id, dedup, payload, created_at_ms)
             VALUES (?1, 'up/call', NULL, ?1, ?2, ?3)",
            rusqlite::params![id, payload, now],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}
