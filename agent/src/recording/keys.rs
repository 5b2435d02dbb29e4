//! Device keys: 32 random bytes per file, `keys/device-N.key`, mode 0600 in
//! a 0700 directory, outside the database. They only wrap (encrypt) the
//! per-recording data keys, which live in the database. Several may exist
//! during a key rotation; each wrapped key names the device key it is under.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::Rng;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

type Error = crate::Error;

fn err(msg: String) -> Error {
    Error::Recording(msg)
}

pub struct DeviceKeys {
    dir: PathBuf,
    keys: BTreeMap<u32, [u8; 32]>,
}

/// A fresh random 32-byte key (ThreadRng: ChaCha seeded from the OS).
pub fn random_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    rand::rng().fill(&mut k);
    k
}

fn file_name(id: u32) -> String {
    format!("device-{id}.key")
}

fn parse_name(name: &str) -> Option<u32> {
    name.strip_prefix("device-")?
        .strip_suffix(".key")?
        .parse()
        .ok()
}

impl DeviceKeys {
    /// Read every device key in `dir` (which may not exist yet).
    pub fn load(dir: &Path) -> Result<DeviceKeys, Error> {
        let mut keys = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DeviceKeys {
                    dir: dir.to_path_buf(),
                    keys,
                });
            }
            Err(e) => return Err(err(format!("{}: {e}", dir.display()))),
        };
        for entry in entries {
            let entry = entry.map_err(|e| err(format!("{}: {e}", dir.display())))?;
            let Some(id) = entry.file_name().to_str().and_then(parse_name) else {
                continue;
            };
            let path = entry.path();
            let bytes =
                std::fs::read(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                err(format!(
                    "{}: a device key is 32 bytes, this file has {}",
                    path.display(),
                    bytes.len()
                ))
            })?;
            keys.insert(id, key);
        }
        Ok(DeviceKeys {
            dir: dir.to_path_buf(),
            keys,
        })
    }

    /// Load, creating the first key if there is none. `after` is the highest
    /// key id the database refers to: a new key never reuses an id, so a
    /// lost key file stays a clear "key N missing" instead of a wrong key.
    pub fn load_or_create(dir: &Path, after: u32) -> Result<DeviceKeys, Error> {
        let mut k = DeviceKeys::load(dir)?;
        if k.keys.is_empty() {
            k.create(after + 1)?;
        }
        Ok(k)
    }

    /// Write a new key with id `id` (0600, fsynced, renamed into place).
    fn create(&mut self, id: u32) -> Result<(), Error> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let key = random_key();
        let tmp = dir.join(format!(".{}.tmp", file_name(id)));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(format!("{}: {e}", tmp.display())))?;
        f.write_all(&key)
            .and_then(|_| f.sync_all())
            .map_err(|e| err(format!("{}: {e}", tmp.display())))?;
        let path = dir.join(file_name(id));
        std::fs::rename(&tmp, &path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        self.keys.insert(id, key);
        Ok(())
    }

    /// Add a key newer than every other; returns its id.
    pub fn create_next(&mut self, after: u32) -> Result<u32, Error> {
        let id = self
            .keys
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(after)
            + 1;
        self.create(id)?;
        Ok(id)
    }

    /// Delete a key file (after nothing is wrapped under it any more).
    pub fn remove(&mut self, id: u32) -> Result<(), Error> {
        let path = self.dir.join(file_name(id));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(format!("{}: {e}", path.display()))),
        }
        self.keys.remove(&id);
        Ok(())
    }

    pub fn ids(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// The key new recordings are wrapped under: the newest.
    pub fn current(&self) -> Result<u32, Error> {
        self.keys.keys().next_back().copied().ok_or_else(|| {
            err(format!(
                "no device key in {}; `handlet run` creates one",
                self.dir.display()
            ))
        })
    }

    /// Wrap a recording's data key under the current device key. The
    /// recording id is bound in as associated data.
    pub fn wrap(&self, recording_id: u64, data_key: &[u8; 32]) -> Result<(u32, Vec<u8>), Error> {
        let id = self.current()?;
        Ok((id, self.wrap_with(id, recording_id, data_key)?))
    }

    pub fn wrap_with(
        &self,
        key_id: u32,
        recording_id: u64,
        data_key: &[u8; 32],
    ) -> Result<Vec<u8>, Error> {
        let dk = self.key(key_id)?;
        let mut nonce = [0u8; 24];
        rand::rng().fill(&mut nonce);
        let ct = XChaCha20Poly1305::new(dk.into())
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: data_key,
                    aad: &recording_id.to_be_bytes(),
                },
            )
            .map_err(|_| err("wrapping a data key failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend(ct);
        Ok(out)
    }

    pub fn unwrap(
        &self,
        key_id: u32,
        recording_id: u64,
        wrapped: &[u8],
    ) -> Result<[u8; 32], Error> {
        let dk = self.key(key_id)?;
        if wrapped.len() < 24 {
            return Err(err(format!(
                "recording {recording_id}: wrapped key is damaged"
            )));
        }
        let pt = XChaCha20Poly1305::new(dk.into())
            .decrypt(
                XNonce::from_slice(&wrapped[..24]),
                Payload {
                    msg: &wrapped[24..],
                    aad: &recording_id.to_be_bytes(),
                },
            )
            .map_err(|_| {
                err(format!(
                    "recording {recording_id}: its key does not open under device key {key_id} (wrong or damaged key file)"
                ))
            })?;
        pt.as_slice()
            .try_into()
            .map_err(|_| err(format!("recording {recording_id}: wrapped key is damaged")))
    }

    fn key(&self, id: u32) -> Result<&[u8; 32], Error> {
        self.keys.get(&id).ok_or_else(|| {
            err(format!(
                "device key {id} is missing: {} is not there; restore it from your backup (recordings under it cannot be decrypted without it)",
                self.dir.join(file_name(id)).display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("handlet-keys-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn created_0600_and_wraps_round_trip() {
        let d = tmp("wrap");
        let k = DeviceKeys::load_or_create(&d, 0).unwrap();
        assert_eq!(k.ids(), vec![1]);
        let meta = std::fs::metadata(d.join("device-1.key")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let data = random_key();
        let (id, w) = k.wrap(7, &data).unwrap();
        assert_eq!(k.unwrap(id, 7, &w).unwrap(), data);
        // Bound to the recording id.
        assert!(k.unwrap(id, 8, &w).is_err());
        // Same keys after a reload.
        let again = DeviceKeys::load_or_create(&d, 0).unwrap();
        assert_eq!(again.unwrap(id, 7, &w).unwrap(), data);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_missing_key_is_named_and_ids_are_never_reused() {
        let d = tmp("missing");
        let mut k = DeviceKeys::load_or_create(&d, 0).unwrap();
        let (id, w) = k.wrap(1, &random_key()).unwrap();
        k.remove(id).unwrap();
        let k = DeviceKeys::load_or_create(&d, id).unwrap();
        assert_eq!(k.ids(), vec![2]);
        let e = k.unwrap(id, 1, &w).unwrap_err().to_string();
        assert!(
            e.contains("device key 1 is missing") && e.contains("device-1.key"),
            "{e}"
        );
        std::fs::write(d.join("device-3.key"), b"short").unwrap();
        let e = DeviceKeys::load(&d).err().unwrap().to_string();
        assert!(e.contains("32 bytes"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
