//! The outbox (issue 15): each event for upstream is written in the same
//! transaction as the data it reports, so a call's end and its event
//! commit together or not at all, and a kill between the two cannot lose
//! one or send the other alone. Those commits are `synchronous=FULL`: the
//! event must survive a power cut once the box has acted on it.
//!
//! Rows are built from the stored rows by `sync::payload` under the
//! workspace's policy; the client that sends them (not built yet) marks
//! a row delivered only when the backend acknowledges it.

use crate::sync::payload::{self, CallFacts, FollowUpFacts, Media, Understood, VoicemailFacts};
use crate::sync::{NumberKey, Policy};
use rusqlite::{Connection, OptionalExtension, params};

/// What the writer needs to write events: present only when sync is on.
#[derive(Debug, Clone)]
pub struct Outbox {
    pub policy: Policy,
    pub key: NumberKey,
}

/// The workspace's number key from `path` (64 hex digits), made there
/// (0600, its directory 0700) when there is none yet.
pub fn number_key(path: &std::path::Path) -> Result<NumberKey, crate::Error> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let at = |what: &str| format!("sync.number_key {}: {what}", path.display());
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let t = text.trim();
            let bytes: Option<Vec<u8>> = (t.len() == 64)
                .then(|| {
                    (0..32)
                        .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok())
                        .collect()
                })
                .flatten();
            match bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()) {
                Some(k) => Ok(NumberKey::new(k)),
                None => Err(crate::Error::Config(at(
                    "must hold 64 hex digits (32 bytes)",
                ))),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            if let Some(dir) = path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| crate::Error::Config(at(&e.to_string())))?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| f.write_all(format!("{hex}\n").as_bytes()))
                .map_err(|e| crate::Error::Config(at(&e.to_string())))?;
            tracing::warn!(path = %path.display(), "made a new number key for sync: copy the workspace's key there so every box hashes numbers alike");
            Ok(NumberKey::new(key))
        }
        Err(e) => Err(crate::Error::Config(at(&e.to_string()))),
    }
}

/// A UUIDv7 (RFC 9562): 48 bits of milliseconds, then random bits, so
/// ids sort by time and two boxes (or a re-imaged one) never share one.
pub fn uuid_v7(now_ms: i64) -> String {
    let r: u128 = rand::random();
    let mut v = ((now_ms as u128) & 0xffff_ffff_ffff) << 80;
    v |= 0x7 << 76; // version
    v |= (r & 0xfff) << 64; // rand_a
    v |= 0b10 << 62; // variant
    v |= (r >> 12) & ((1u128 << 62) - 1); // rand_b
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Run `f` in a transaction committed with `synchronous=FULL`.
pub(crate) fn durably(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    let r = (|| {
        let tx = conn.unchecked_transaction()?;
        f(&tx)?;
        tx.commit()
    })();
    let _ = conn.pragma_update(None, "synchronous", "NORMAL");
    r
}

pub(crate) fn enqueue(
    conn: &Connection,
    topic: &str,
    call_id: Option<&str>,
    dedup: &str,
    payload: &serde_json::Value,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO outbox (msg_id, topic, call_id, dedup, payload, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            uuid_v7(now_ms),
            topic,
            call_id,
            dedup,
            payload.to_string(),
            now_ms
        ],
    )?;
    Ok(())
}

impl Outbox {
    /// The call's event, once it is over and its transcript done.
    pub(crate) fn call_done(
        &self,
        conn: &Connection,
        call_id: &str,
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        type CallRow = (
            String,
            i64,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let Some(c): Option<CallRow> = conn
            .query_row(
                "SELECT direction, started_at_ms, answered_at_ms, ended_at_ms, end_reason, did, caller
                 FROM calls WHERE id = ?1",
                [call_id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .optional()?
        else {
            return Ok(());
        };
        type SummaryRow = (
            String,
            f64,
            String,
            String,
            Option<String>,
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let s: Option<SummaryRow> = conn
            .query_row(
                "SELECT intent, intent_confidence, urgency, sentiment, requested_time, outcome, summary,
                        caller_name, callback_number, address
                 FROM call_summaries WHERE call_id = ?1",
                [call_id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                    ))
                },
            )
            .optional()?;
        let media: Option<Media> = conn
            .query_row(
                "SELECT packets, lost, late, concealed, jitter_ms FROM call_media WHERE call_id = ?1",
                [call_id],
                |r| {
                    Ok(Media {
                        packets: r.get::<_, i64>(0)? as u64,
                        lost: r.get::<_, i64>(1)? as u64,
                        late: r.get::<_, i64>(2)? as u64,
                        concealed: r.get::<_, i64>(3)? as u64,
                        jitter_ms: r.get(4)?,
                    })
                },
            )
            .optional()?;
        let route: Vec<String> = conn
            .prepare(
                "SELECT step FROM call_events WHERE call_id = ?1 AND kind = 'route' AND step IS NOT NULL
                 ORDER BY at_ms, id",
            )?
            .query_map([call_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let understood = s.as_ref().map(|s| Understood {
            intent: &s.0,
            confidence: s.1 as f32,
            urgency: &s.2,
            sentiment: &s.3,
            requested_time: s.4.as_deref(),
            outcome: &s.5,
            text: &s.6,
            caller_name: s.7.as_deref(),
            callback_number: s.8.as_deref(),
            address: s.9.as_deref(),
        });
        let facts = CallFacts {
            call_id,
            direction: &c.0,
            started_at_ms: c.1,
            answered_at_ms: c.2,
            ended_at_ms: c.3,
            end_reason: c.4.as_deref(),
            did: c.5.as_deref(),
            caller: c.6.as_deref(),
            route: &route,
            understood,
            media,
        };
        let p = payload::call(&facts, &self.policy, &self.key);
        enqueue(
            conn,
            "up/call",
            Some(call_id),
            &format!("call:{call_id}"),
            &p,
            now_ms,
        )
    }

    /// A follow-up just made.
    pub(crate) fn followup(&self, conn: &Connection, id: i64, now_ms: i64) -> rusqlite::Result<()> {
        let f = conn.query_row(
            "SELECT call_id, kind, intent, urgency, due_by_ms, complete, created_at_ms, number,
                    number_confirmed, name, about, address, done_at_ms
             FROM followups WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, bool>(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, Option<String>>(10)?,
                    r.get::<_, Option<String>>(11)?,
                    r.get::<_, Option<i64>>(12)?,
                ))
            },
        )?;
        let facts = FollowUpFacts {
            id,
            call_id: &f.0,
            kind: &f.1,
            intent: f.2.as_deref(),
            urgency: &f.3,
            due_by_ms: f.4,
            complete: f.5,
            created_at_ms: f.6,
            number: f.7.as_deref(),
            number_confirmed: f.8,
            name: f.9.as_deref(),
            about: f.10.as_deref(),
            address: f.11.as_deref(),
            done_at_ms: f.12,
        };
        let p = payload::followup(&facts, &self.policy, &self.key);
        enqueue(
            conn,
            "up/followup",
            Some(&f.0),
            &format!("followup:{id}"),
            &p,
            now_ms,
        )
    }

    /// A voicemail just finished.
    pub(crate) fn voicemail(
        &self,
        conn: &Connection,
        call_id: &str,
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        let Some(v) = conn
            .query_row(
                "SELECT v.mailbox, v.started_at_ms, v.duration_ms, c.caller
                 FROM voicemails v JOIN calls c ON c.id = v.call_id WHERE v.call_id = ?1",
                [call_id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                },
            )
            .optional()?
        else {
            return Ok(());
        };
        let facts = VoicemailFacts {
            call_id,
            mailbox: &v.0,
            started_at_ms: v.1,
            duration_ms: v.2.unwrap_or(0),
            caller: v.3.as_deref(),
        };
        let p = payload::voicemail(&facts, &self.policy, &self.key);
        enqueue(
            conn,
            "up/voicemail",
            Some(call_id),
            &format!("voicemail:{call_id}"),
            &p,
            now_ms,
        )
    }
}

/// An event due to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub seq: i64,
    pub msg_id: String,
    pub topic: String,
    pub payload: String,
    pub attempts: u32,
}

/// Up to `limit` undelivered events due by `now_ms`, oldest first.
pub fn due(conn: &Connection, now_ms: i64, limit: usize) -> rusqlite::Result<Vec<Due>> {
    conn.prepare_cached(
        // In seq order off the pending index, stopping at the limit (the
        // waiting index would make SQLite sort the whole backlog).
        "SELECT seq, msg_id, topic, payload, attempts FROM outbox INDEXED BY outbox_pending
         WHERE delivered_at_ms IS NULL AND next_attempt_ms <= ?1 ORDER BY seq LIMIT ?2",
    )?
    .query_map(params![now_ms, limit as i64], |r| {
        Ok(Due {
            seq: r.get(0)?,
            msg_id: r.get(1)?,
            topic: r.get(2)?,
            payload: r.get(3)?,
            attempts: r.get(4)?,
        })
    })?
    .collect()
}

/// Events sent and waiting for their acknowledgement at `now_ms`.
pub fn in_flight(conn: &Connection, now_ms: i64) -> rusqlite::Result<usize> {
    conn.query_row(
        // Only the rows waiting for an acknowledgement are read, not the
        // backlog.
        "SELECT COUNT(*) FROM outbox INDEXED BY outbox_waiting
         WHERE delivered_at_ms IS NULL AND next_attempt_ms > ?1",
        [now_ms],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as usize)
}

/// Longest wait before an unacknowledged event is sent again.
const RESEND_CAP_MS: i64 = 600_000;

/// `seq` was sent: one more attempt, and not again unless the backend
/// acknowledges it first: `ack_wait_ms`, doubling with each attempt up to
/// ten minutes (a backend that is down is not flooded, and an event is
/// never given up for want of an acknowledgement: only refusals count).
pub fn sent(conn: &Connection, seq: i64, now_ms: i64, ack_wait_ms: i64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE outbox SET attempts = attempts + 1,
            next_attempt_ms = ?2 + MIN(?3 << MIN(attempts, 20), ?4)
         WHERE seq = ?1",
        params![seq, now_ms, ack_wait_ms, RESEND_CAP_MS],
    )?;
    Ok(())
}

/// The broker refused `seq` (not authorised, too large, ...): after
/// `max` refusals it goes to the dead letters. True if it did.
pub fn refused(
    conn: &Connection,
    seq: i64,
    now_ms: i64,
    why: &str,
    max: u32,
) -> rusqlite::Result<bool> {
    conn.execute(
        "UPDATE outbox SET failures = failures + 1 WHERE seq = ?1",
        [seq],
    )?;
    let failures: Option<u32> = conn
        .query_row("SELECT failures FROM outbox WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .optional()?;
    if failures.is_some_and(|f| f >= max) {
        bury(
            conn,
            seq,
            now_ms,
            &format!("refused by the broker {max} times: {why}"),
        )?;
        return Ok(true);
    }
    Ok(false)
}

/// The backend committed these events: delivered. Ids it names that are
/// not ours, or already delivered, change nothing. How many were new.
pub fn acked(conn: &Connection, msg_ids: &[String], now_ms: i64) -> rusqlite::Result<usize> {
    let tx = conn.unchecked_transaction()?;
    let mut n = 0;
    for id in msg_ids {
        n += tx.execute(
            "UPDATE outbox SET delivered_at_ms = ?2 WHERE msg_id = ?1 AND delivered_at_ms IS NULL",
            params![id, now_ms],
        )?;
    }
    tx.commit()?;
    Ok(n)
}

/// A new connection: every undelivered event is due again, in order (the
/// broker may not have kept what was in flight).
pub fn rewind(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE outbox SET next_attempt_ms = 0 WHERE delivered_at_ms IS NULL AND next_attempt_ms > 0",
        [],
    )?;
    Ok(())
}

/// Give up on `seq`: it moves to the dead letters, with why.
pub fn bury(conn: &Connection, seq: i64, now_ms: i64, error: &str) -> rusqlite::Result<()> {
    // A savepoint, so it is one step inside a caller's transaction too.
    conn.execute_batch("SAVEPOINT bury")?;
    let r = (|| {
        conn.execute(
            "INSERT OR REPLACE INTO outbox_dead (seq, msg_id, topic, call_id, payload, created_at_ms, attempts, failed_at_ms, error)
             SELECT seq, msg_id, topic, call_id, payload, created_at_ms, attempts, ?2, ?3 FROM outbox WHERE seq = ?1",
            params![seq, now_ms, error],
        )?;
        conn.execute("DELETE FROM outbox WHERE seq = ?1", params![seq])?;
        Ok(())
    })();
    match r {
        Ok(()) => conn.execute_batch("RELEASE bury"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO bury; RELEASE bury");
            Err(e)
        }
    }
}

/// This database's epoch: a random id made the first time sync runs, so
/// a box re-imaged with a fresh database is told apart from its past.
pub fn epoch(conn: &Connection, now_ms: i64) -> Result<String, crate::Error> {
    if let Some(e) = super::read_setting(conn, "sync.epoch")? {
        return Ok(e);
    }
    let e = format!("{:016x}", rand::random::<u64>());
    conn.execute(
        "INSERT OR IGNORE INTO settings (key, value, updated_at_ms) VALUES ('sync.epoch', ?1, ?2)",
        params![e, now_ms],
    )?;
    Ok(super::read_setting(conn, "sync.epoch")?.unwrap_or(e))
}

/// What the outbox holds, for `handlet sync status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    /// When the oldest event not yet delivered was written.
    pub oldest_pending_ms: Option<i64>,
}

pub fn status(conn: &Connection) -> rusqlite::Result<Status> {
    let (pending, delivered, oldest_pending_ms) = conn.query_row(
        "SELECT COUNT(*) FILTER (WHERE delivered_at_ms IS NULL),
                COUNT(*) FILTER (WHERE delivered_at_ms IS NOT NULL),
                MIN(created_at_ms) FILTER (WHERE delivered_at_ms IS NULL)
         FROM outbox",
        [],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get(2)?)),
    )?;
    let dead: i64 = conn.query_row("SELECT COUNT(*) FROM outbox_dead", [], |r| r.get(0))?;
    Ok(Status {
        pending: pending as u64,
        delivered: delivered as u64,
        dead: dead as u64,
        oldest_pending_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::followups::{Kind, NewFollowUp};

    fn db() -> (std::path::PathBuf, Connection) {
        crate::store::test_db_with_call("outbox")
    }

    #[test]
    fn an_event_is_written_with_its_data_once_however_often_the_write_is_retried() {
        let (dir, conn) = db();
        let o = Outbox {
            policy: Policy::default(),
            key: NumberKey::new([3; 32]),
        };
        let f = NewFollowUp {
            call_id: "c1".into(),
            kind: Kind::Voicemail,
            name: Some("John".into()),
            number: Some("+447700900123".into()),
            number_confirmed: false,
            about: None,
            address: None,
            intent: None,
            urgency: crate::config::Urgency::Normal,
            complete: true,
            created_at_ms: 2_000,
        };
        durably(&conn, |tx| {
            crate::store::followups::insert(tx, &f)?;
            o.followup(tx, tx.last_insert_rowid(), 2_000)
        })
        .unwrap();
        let id: i64 = conn
            .query_row("SELECT id FROM followups", [], |r| r.get(0))
            .unwrap();
        // The same fact again (a held write retried): still one event.
        durably(&conn, |tx| o.followup(tx, id, 3_000)).unwrap();
        o.call_done(&conn, "c1", 4_000).unwrap();
        o.call_done(&conn, "c1", 5_000).unwrap();
        o.call_done(&conn, "no such call", 5_000).unwrap();
        let s = status(&conn).unwrap();
        assert_eq!((s.pending, s.delivered, s.dead), (2, 0, 0));
        assert_eq!(s.oldest_pending_ms, Some(2_000));
        let payload: String = conn
            .query_row(
                "SELECT payload FROM outbox WHERE topic = 'up/followup'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            payload.contains("handlet.followup/1") && !payload.contains("7700900123"),
            "{payload}"
        );
        assert!(!payload.contains("John"), "{payload}");
        // A failed transaction leaves neither the data nor its event.
        let r = durably(&conn, |tx| {
            crate::store::followups::insert(tx, &f)?;
            tx.execute("INSERT INTO no_such_table VALUES (1)", [])?;
            Ok(())
        });
        assert!(r.is_err());
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM followups", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "back to NORMAL after a durable commit");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn sending_marks_events_in_flight_and_refusals_or_burial_move_them_on() {
        let (dir, conn) = db();
        for i in 0..3 {
            enqueue(
                &conn,
                "up/call",
                Some("c1"),
                &format!("d{i}"),
                &serde_json::json!({}),
                1,
            )
            .unwrap();
        }
        let due_now = due(&conn, 10, 10).unwrap();
        assert_eq!(due_now.len(), 3);
        // Sent: not due again until the wait is over, and counted in flight.
        let tx = conn.unchecked_transaction().unwrap();
        sent(&tx, due_now[0].seq, 10, 1_000).unwrap();
        // Buried inside the sender's transaction (an event too large).
        bury(&tx, due_now[1].seq, 10, "too large").unwrap();
        tx.commit().unwrap();
        assert_eq!(in_flight(&conn, 20).unwrap(), 1);
        assert_eq!(due(&conn, 20, 10).unwrap().len(), 1);
        assert_eq!(due(&conn, 1_011, 10).unwrap().len(), 2);
        assert_eq!(status(&conn).unwrap().dead, 1);
        // A new connection: everything undelivered is due at once.
        rewind(&conn).unwrap();
        assert_eq!(due(&conn, 20, 10).unwrap().len(), 2);
        // Refused twice with max 2: dead-lettered.
        assert!(!refused(&conn, due_now[2].seq, 30, "PayloadFormatInvalid", 2).unwrap());
        assert!(refused(&conn, due_now[2].seq, 31, "PayloadFormatInvalid", 2).unwrap());
        assert_eq!(status(&conn).unwrap().dead, 2);
        // Acknowledged: delivered, once.
        assert_eq!(acked(&conn, &[due_now[0].msg_id.clone()], 40).unwrap(), 1);
        assert_eq!(acked(&conn, &[due_now[0].msg_id.clone()], 41).unwrap(), 0);
        assert_eq!(status(&conn).unwrap().pending, 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_number_key_is_made_once_kept_private_and_refused_when_malformed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("handlet-key-{}", rand::random::<u32>()));
        let path = dir.join("sync/number.key");
        let a = number_key(&path).unwrap();
        let b = number_key(&path).unwrap();
        assert_eq!(a.hash("+447700900123"), b.hash("+447700900123"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "not hex").unwrap();
        let e = number_key(&path).unwrap_err().to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn uuid_v7_has_its_version_variant_and_time_and_differs_each_time() {
        let a = uuid_v7(0x0190_1234_5678);
        let b = uuid_v7(0x0190_1234_5678);
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert!(a.starts_with("01901234-5678-7"), "{a}");
        let variant = a.as_bytes()[19];
        assert!(b"89ab".contains(&variant), "{a}");
        assert!(uuid_v7(2_000) > uuid_v7(1_000), "ids sort by time");
    }
}
