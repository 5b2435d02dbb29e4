//! Retention: what has expired is deleted, recordings by crypto-shredding
//! (the wrapped data key first, then the file, then the row). Time is passed
//! in. Every step is idempotent, so a sweep killed at any point is finished
//! by the next one.

pub mod requests;

use crate::config::Privacy;
use crate::recording;
use rusqlite::{Connection, params};
use std::path::Path;

type Error = crate::Error;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub recordings: usize,
    pub calls: usize,
    pub orphan_files: usize,
}

/// Shred the recordings `which` selects (a WHERE clause on `recordings`).
fn shred(
    conn: &Connection,
    data_dir: &Path,
    which: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<usize, Error> {
    let mut q = conn.prepare(&format!("SELECT id, file FROM recordings WHERE {which}"))?;
    let doomed: Vec<(i64, String)> = q
        .query_map(args, |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, file) in &doomed {
        // 1. The key: from here on the file is noise.
        conn.execute("DELETE FROM recording_keys WHERE recording_id = ?1", [id])?;
        // 2. The file.
        let path = recording::dir(data_dir).join(file);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Privacy(format!(
                    "cannot delete {}: {e}",
                    path.display()
                )));
            }
        }
        // 3. The row.
        conn.execute("DELETE FROM recordings WHERE id = ?1", [id])?;
    }
    Ok(doomed.len())
}

/// Files in the recordings dir no row refers to: a recording whose row was
/// never committed, or whose file deletion was interrupted.
fn orphans(conn: &Connection, data_dir: &Path) -> Result<usize, Error> {
    let dir = recording::dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".hrec") {
            continue;
        }
        let known: bool = conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM recordings WHERE file = ?1)",
            [&name],
            |r| r.get(0),
        )?;
        if !known {
            std::fs::remove_file(e.path()).map_err(|err| {
                Error::Privacy(format!("cannot delete {}: {err}", e.path().display()))
            })?;
            n += 1;
        }
    }
    Ok(n)
}

/// Write-ahead log pages can still hold deleted rows: fold them into the
/// database (where secure_delete zeroed them) and empty the log. A reader
/// in the middle of a query (the running agent) can hold the log for a
/// moment, so this retries for a few seconds before saying so.
pub fn checkpoint(conn: &Connection) -> Result<(), Error> {
    for _ in 0..100 {
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy == 0 {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(Error::Privacy(
        "the database stayed busy: deleted rows may stay in its write-ahead log until the agent's next checkpoint; run the request again".into(),
    ))
}

/// The retention periods as they stand: the config file's, or a pushed
/// document's (`down/config`), changed while calls run. A new recording
/// period applies to recordings made from then on (each keeps the expiry
/// it was made with); the transcript period applies to every call at the
/// next sweep.
#[derive(Debug)]
pub struct Retention {
    recording_days: std::sync::atomic::AtomicU32,
    transcript_days: std::sync::atomic::AtomicU32,
}

impl Retention {
    pub fn new(p: &Privacy) -> Retention {
        Retention {
            recording_days: p.recording_retention_days.into(),
            transcript_days: p.transcript_retention_days.into(),
        }
    }

    pub fn set(&self, p: &Privacy) {
        use std::sync::atomic::Ordering::Relaxed;
        self.recording_days
            .store(p.recording_retention_days, Relaxed);
        self.transcript_days
            .store(p.transcript_retention_days, Relaxed);
    }

    pub fn recording_days(&self) -> u32 {
        self.recording_days
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn transcript_days(&self) -> u32 {
        self.transcript_days
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Delete everything past its retention at `now_ms`. Calls still in
/// progress are never touched.
pub fn sweep(
    conn: &Connection,
    data_dir: &Path,
    policy: &Privacy,
    now_ms: i64,
) -> Result<Swept, Error> {
    let mut s = Swept {
        recordings: shred(
            conn,
            data_dir,
            "expires_at_ms <= ?1 AND state != 'recording'",
            &[&now_ms],
        )?,
        ..Swept::default()
    };
    let cutoff = now_ms - policy.transcript_retention_days as i64 * 86_400_000;
    // A call's recordings go with it (shredded first, whatever their own date).
    s.recordings += shred(
        conn,
        data_dir,
        "call_id IN (SELECT id FROM calls WHERE ended_at_ms IS NOT NULL AND started_at_ms <= ?1)",
        &[&cutoff],
    )?;
    s.calls = conn.execute(
        "DELETE FROM calls WHERE ended_at_ms IS NOT NULL AND started_at_ms <= ?1",
        params![cutoff],
    )?;
    // Upstream events: a delivered one is kept a week (to answer a
    // backend's question), and none outlives its call.
    conn.execute(
        "DELETE FROM outbox WHERE (delivered_at_ms IS NOT NULL AND delivered_at_ms <= ?1)
            OR (call_id IS NOT NULL AND call_id NOT IN (SELECT id FROM calls))",
        params![now_ms - DELIVERED_KEPT_MS],
    )?;
    // Dead letters go with their call too.
    conn.execute(
        "DELETE FROM outbox_dead WHERE call_id IS NOT NULL AND call_id NOT IN (SELECT id FROM calls)",
        [],
    )?;
    // Commands done are remembered as long (a backend re-sends one only
    // until it sees the result).
    conn.execute(
        "DELETE FROM inbox WHERE done_at_ms IS NOT NULL AND done_at_ms <= ?1",
        params![now_ms - DELIVERED_KEPT_MS],
    )?;
    s.orphan_files = orphans(conn, data_dir)?;
    if s != Swept::default() {
        audit(
            conn,
            now_ms,
            "retention sweep",
            "expired data",
            (s.recordings + s.calls + s.orphan_files) as i64,
            &format!(
                "{} recordings, {} calls with their transcripts and summaries, {} stray files",
                s.recordings, s.calls, s.orphan_files
            ),
        )?;
    }
    checkpoint(conn)?;
    Ok(s)
}

/// How long an event the backend acknowledged is kept in the outbox.
const DELIVERED_KEPT_MS: i64 = 7 * 86_400_000;

/// Record a privacy request: what was asked and how much it touched, never
/// the content (and never a phone number: `subject` is a fingerprint).
pub fn audit(
    conn: &Connection,
    at_ms: i64,
    request: &str,
    subject: &str,
    items: i64,
    detail: &str,
) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO privacy_audit (at_ms, request, subject, items, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at_ms, request, subject, items, detail],
    )?;
    Ok(())
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub at_ms: i64,
    pub request: String,
    pub subject: String,
    pub items: i64,
    pub detail: String,
}

pub fn audit_log(conn: &Connection) -> Result<Vec<AuditRow>, Error> {
    let mut q = conn.prepare(
        "SELECT at_ms, request, subject, items, detail FROM privacy_audit ORDER BY at_ms, id",
    )?;
    let rows = q
        .query_map([], |r| {
            Ok(AuditRow {
                at_ms: r.get(0)?,
                request: r.get(1)?,
                subject: r.get(2)?,
                items: r.get(3)?,
                detail: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
