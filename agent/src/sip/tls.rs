//! SIP over TLS (RFC 3261 §26, port 5061): the server certificate phones
//! connect to, and the trust store for the connections the box makes to
//! trunks.
//!
//! The certificate and key come from `sip.tls_cert`/`sip.tls_key`, or are
//! made once at first start (self-signed, ECDSA P-256, for `localhost`,
//! 127.0.0.1 and the host name: phones that check names pin it instead) and kept in `data_dir/tls/` so phones that pinned it keep
//! trusting it. rustls runs on ring only (DESIGN.md §5).
//!
//! Connections are accepted by our own loop (`accept_tls` in `sip/mod.rs`)
//! for the same reason as TCP's (`tcp.rs`): the connection limits apply
//! before anything is allocated, and a handshake that does not finish in
//! [`HANDSHAKE_SECS`] is dropped (rsipstack's own TLS listener waits for
//! ever, one task per silent connection).

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A TLS handshake must finish within this, or the connection is closed.
pub const HANDSHAKE_SECS: u64 = 10;

/// The server side: certificate chain and key, PEM, and the rustls
/// configuration made from them.
pub struct Identity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub server: rustls::ServerConfig,
    /// Where the certificate is (for the log and for phones to fetch).
    pub cert_path: PathBuf,
}

fn io_at(what: String) -> impl FnOnce(std::io::Error) -> crate::Error {
    move |source| crate::Error::IoAt {
        context: what,
        source,
    }
}

/// The configured certificate and key, or the box's own self-signed pair
/// (made now if it does not exist yet).
pub fn identity(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
) -> Result<Identity, crate::Error> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        (None, None) => {
            let dir = data_dir.join("tls");
            let (c, k) = (dir.join("sip-cert.pem"), dir.join("sip-key.pem"));
            if !c.exists() || !k.exists() {
                make_self_signed(&dir, &c, &k)?;
            }
            (c, k)
        }
        _ => {
            return Err(crate::Error::Config(
                "sip.tls_cert and sip.tls_key go together: set both, or neither for a self-signed pair".into(),
            ));
        }
    };
    let cert_pem = std::fs::read(&cert_path)
        .map_err(io_at(format!("sip.tls_cert {}", cert_path.display())))?;
    let key_pem =
        std::fs::read(&key_path).map_err(io_at(format!("sip.tls_key {}", key_path.display())))?;
    // Refused now, with the files' names, if rustls cannot use them.
    let server = server_config(&cert_pem, &key_pem).map_err(|e| {
        crate::Error::Config(format!(
            "sip.tls_cert {} / sip.tls_key {}: {e}",
            cert_path.display(),
            key_path.display()
        ))
    })?;
    Ok(Identity {
        cert_pem,
        key_pem,
        server,
        cert_path,
    })
}

fn make_self_signed(dir: &Path, cert: &Path, key: &Path) -> Result<(), crate::Error> {
    std::fs::create_dir_all(dir).map_err(io_at(format!("TLS dir {}", dir.display())))?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
        }
    }
    let pair = rcgen::generate_simple_self_signed(names)
        .map_err(|e| crate::Error::Config(format!("cannot make a TLS certificate: {e}")))?;
    // The key first and private to us; the certificate last, so a crash
    // between the two leaves no certificate without its key.
    write_private(key, pair.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, pair.cert.pem()).map_err(io_at(format!("{}", cert.display())))?;
    tracing::info!(cert = %cert.display(), "made a self-signed TLS certificate for SIP over TLS");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), crate::Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_at(format!("{}", path.display())))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_at(format!("{}", path.display())))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls server configuration for `cert_pem`/`key_pem`.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate ({e})"))?;
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("not a PEM private key ({e})"))?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the key does not fit the certificate ({e})"))
}

/// The CA certificates (PEM) trunks' servers are checked against: the
/// system's bundle, plus each TLS trunk's own `tls_ca`.
pub fn trust_store(extra: &[&Path]) -> Result<Vec<u8>, crate::Error> {
    let mut pem = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    for p in extra {
        let more = std::fs::read(p).map_err(io_at(format!("trunk tls_ca {}", p.display())))?;
        pem.push(b'\n');
        pem.extend_from_slice(&more);
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_pair_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("handlet-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = identity(None, None, &dir).unwrap();
        let b = identity(None, None, &dir).unwrap();
        assert_eq!(a.cert_pem, b.cert_pem, "kept across starts");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("tls/sip-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
        // A bad path and a half-configured pair are clear errors.
        let e = identity(
            Some(&dir.join("nope.pem")),
            Some(&dir.join("nope.key")),
            &dir,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("nope.pem"), "{e}");
        assert!(identity(Some(&a.cert_path), None, &dir).is_err());
        // A key that is not the certificate's.
        let other = dir.join("other");
        let c = identity(None, None, &other).unwrap();
        let e = identity(
            Some(&a.cert_path),
            Some(&other.join("tls/sip-key.pem")),
            &dir,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("does not fit"), "{e}");
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
