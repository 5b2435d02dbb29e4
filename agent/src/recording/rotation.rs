//! `handlet keys rotate`: a new device key, every data key rewrapped under
//! it in one transaction, then the old key files deleted. Safe to kill at
//! any point: before the commit the old keys still open everything (the
//! new key file is simply the current one from then on); after it, an old
//! key file left behind is deleted by the next rotation.

use super::keys::DeviceKeys;
use super::{keys_dir, max_key_id};
use rusqlite::{Connection, TransactionBehavior, params};
use std::path::Path;

type Error = crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub new_key: u32,
    pub rewrapped: usize,
    /// Old key files deleted.
    pub removed: Vec<u32>,
}

/// Device keys the database refers to that are not on disk, with how many
/// recordings each one wraps.
pub fn missing_keys(conn: &Connection, keys: &DeviceKeys) -> Result<Vec<(u32, usize)>, Error> {
    let have = keys.ids();
    let mut q = conn
        .prepare("SELECT key_id, COUNT(*) FROM recording_keys GROUP BY key_id ORDER BY key_id")?;
    let used = q
        .query_map([], |r| {
            Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)? as usize))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(used
        .into_iter()
        .filter(|(id, _)| !have.contains(id))
        .collect())
}

pub fn rotate(conn: &Connection, data_dir: &Path) -> Result<Rotated, Error> {
    let dir = keys_dir(data_dir);
    let mut keys = DeviceKeys::load(&dir)?;
    // Refuse before changing anything: rewrapping needs every old key.
    if let Some((id, n)) = missing_keys(conn, &keys)?.first() {
        return Err(Error::Recording(format!(
            "cannot rotate: device key {id} ({}) is missing and {n} recording(s) are wrapped under it; restore it from backup first (nothing was changed)",
            dir.join(format!("device-{id}.key")).display()
        )));
    }
    let new_key = keys.create_next(max_key_id(conn)?)?;
    // Immediate: the recorder wraps new recordings inside the same lock.
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let rows: Vec<(i64, u32, Vec<u8>)> = tx
        .prepare("SELECT recording_id, key_id, wrapped FROM recording_keys WHERE key_id != ?1")?
        .query_map([new_key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (rid, kid, wrapped) in &rows {
        let data_key = keys.unwrap(*kid, *rid as u64, wrapped)?;
        let w = keys.wrap_with(new_key, *rid as u64, &data_key)?;
        tx.execute(
            "UPDATE recording_keys SET key_id = ?2, wrapped = ?3 WHERE recording_id = ?1",
            params![rid, new_key, w],
        )?;
    }
    tx.commit()?;
    let mut removed = Vec::new();
    for id in keys.ids() {
        if id == new_key {
            continue;
        }
        let still_used: bool = conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM recording_keys WHERE key_id = ?1)",
            [id],
            |r| r.get(0),
        )?;
        if !still_used {
            keys.remove(id)?;
            removed.push(id);
        }
    }
    Ok(Rotated {
        new_key,
        rewrapped: rows.len(),
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{Recorder, data_key, decode_file, dir, list};

    #[test]
    fn rotation_rewraps_everything_and_deletes_the_old_key() {
        let d = std::env::temp_dir().join(format!("handlet-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let conn = crate::store::open_for_tools(&d.join("db.sqlite")).unwrap();
        DeviceKeys::load_or_create(&keys_dir(&d), 0).unwrap();
        let mut before = Vec::new();
        for i in 0..3 {
            conn.execute(
                "INSERT INTO calls (id, sip_call_id, direction, from_uri, to_uri, transport, started_at_ms)
                 VALUES (?1, 's', 'inbound', 'a', 'b', 'udp', 0)",
                [format!("c{i}")],
            )
            .unwrap();
            let mut r = Recorder::create(&conn, &d, &format!("c{i}"), 0, 30).unwrap();
            r.push_caller(&vec![0.05; 16_000]).unwrap();
            let w = r.finish(&conn).unwrap();
            let keys = DeviceKeys::load(&keys_dir(&d)).unwrap();
            before.push((w.id, data_key(&conn, &keys, w.id).unwrap()));
        }
        let r = rotate(&conn, &d).unwrap();
        assert_eq!(
            r,
            Rotated {
                new_key: 2,
                rewrapped: 3,
                removed: vec![1]
            }
        );
        assert!(!keys_dir(&d).join("device-1.key").exists());
        let keys = DeviceKeys::load(&keys_dir(&d)).unwrap();
        assert_eq!(keys.ids(), vec![2]);
        for (id, key) in &before {
            assert_eq!(
                &data_key(&conn, &keys, *id).unwrap(),
                key,
                "same data key, new wrap"
            );
        }
        for row in list(&conn).unwrap() {
            let k = data_key(&conn, &keys, row.id).unwrap();
            assert!(
                decode_file(&dir(&d).join(&row.file), row.id, &k)
                    .unwrap()
                    .complete
            );
        }
        // New recordings pick the new key up without a restart.
        conn.execute(
            "INSERT INTO calls (id, sip_call_id, direction, from_uri, to_uri, transport, started_at_ms)
             VALUES ('late', 's', 'inbound', 'a', 'b', 'udp', 0)",
            [],
        )
        .unwrap();
        let late = Recorder::create(&conn, &d, "late", 0, 30).unwrap();
        let kid: u32 = conn
            .query_row(
                "SELECT key_id FROM recording_keys WHERE recording_id = ?1",
                [late.id() as i64],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kid, 2);
        // A missing key: refused, nothing changed, no new key made.
        std::fs::remove_file(keys_dir(&d).join("device-2.key")).unwrap();
        let e = rotate(&conn, &d).unwrap_err().to_string();
        assert!(
            e.contains("device key 2") && e.contains("nothing was changed"),
            "{e}"
        );
        assert!(DeviceKeys::load(&keys_dir(&d)).unwrap().ids().is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
