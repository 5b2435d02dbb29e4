//! The database's schema: migrations in order, opening a connection the
//! way every part of the agent opens it, and closing calls a killed agent
//! left open.

use crate::Error;
use rusqlite::Connection;
use std::path::Path;

/// Migrations in order; `PRAGMA user_version` records how many have run.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: calls and their transcript segments.
    "CREATE TABLE calls (
        id TEXT PRIMARY KEY,
        sip_call_id TEXT NOT NULL,
        direction TEXT NOT NULL,
        from_uri TEXT NOT NULL,
        to_uri TEXT NOT NULL,
        transport TEXT NOT NULL,
        codec TEXT,
        started_at_ms INTEGER NOT NULL,
        answered_at_ms INTEGER,
        ended_at_ms INTEGER,
        duration_ms INTEGER,
        end_reason TEXT,
        transcript_complete INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE transcript_segments (
        id INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
        channel TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX transcript_segments_call ON transcript_segments(call_id, start_ms);
    CREATE INDEX calls_started ON calls(started_at_ms);
    CREATE INDEX calls_sip_call_id ON calls(sip_call_id);",
    // 2: things that happen during a call (keys pressed, later transfers...).
    "CREATE TABLE call_events (
        id INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX call_events_call ON call_events(call_id, at_ms);",
    // 3: streaming transcription: live partial text per utterance, and which
    // utterance each final segment came from and when it arrived.
    "CREATE TABLE transcript_partials (
        id INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
        channel TEXT NOT NULL,
        utterance_start_ms INTEGER NOT NULL,
        audio_ms INTEGER NOT NULL,
        text TEXT NOT NULL,
        received_at_ms INTEGER NOT NULL
    );
    CREATE INDEX transcript_partials_call ON transcript_partials(call_id, utterance_start_ms);
    ALTER TABLE transcript_segments ADD COLUMN utterance_start_ms INTEGER;
    ALTER TABLE transcript_segments ADD COLUMN received_at_ms INTEGER;",
    // 4: what the call was about, once its transcript is complete.
    "CREATE TABLE call_summaries (
        call_id TEXT PRIMARY KEY REFERENCES calls(id) ON DELETE CASCADE,
        summary TEXT NOT NULL,
        intent TEXT NOT NULL,
        intent_confidence REAL NOT NULL,
        runner_up TEXT,
        sentiment TEXT NOT NULL,
        urgency TEXT NOT NULL,
        caller_name TEXT,
        callback_number TEXT,
        requested_time TEXT,
        address TEXT,
        outcome TEXT NOT NULL,
        follow_up TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    );",
    // 5: when the caller started and stopped speaking (wall clock, as the
    // agent heard it), so the wait for text can be measured per utterance.
    "ALTER TABLE transcript_segments ADD COLUMN speech_ended_at_ms INTEGER;
    ALTER TABLE transcript_partials ADD COLUMN speech_started_at_ms INTEGER;",
    // 6: encrypted recordings, their wrapped keys, the privacy audit log.
    // recording_keys has no foreign key on purpose: deleting a key row is the
    // deletion of the recording (crypto-shredding) and happens first.
    "CREATE TABLE recordings (
        id INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
        file TEXT NOT NULL,
        started_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('recording', 'complete', 'truncated')),
        duration_ms INTEGER NOT NULL DEFAULT 0,
        bytes INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX recordings_call ON recordings(call_id);
    CREATE INDEX recordings_expires ON recordings(expires_at_ms);
    CREATE TABLE recording_keys (
        recording_id INTEGER PRIMARY KEY,
        key_id INTEGER NOT NULL,
        wrapped BLOB NOT NULL
    );
    CREATE TABLE privacy_audit (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        request TEXT NOT NULL,
        subject TEXT NOT NULL,
        items INTEGER NOT NULL,
        detail TEXT NOT NULL
    );",
    // 7: how the caller's audio arrived, per call (for an installer chasing
    // a bad line; no content and no numbers).
    "CREATE TABLE call_media (
        call_id TEXT PRIMARY KEY REFERENCES calls(id) ON DELETE CASCADE,
        packets INTEGER NOT NULL,
        lost INTEGER NOT NULL,
        late INTEGER NOT NULL,
        duplicates INTEGER NOT NULL,
        concealed INTEGER NOT NULL,
        malformed INTEGER NOT NULL,
        jitter_ms INTEGER NOT NULL,
        target_delay_ms INTEGER NOT NULL
    );",
    // 8: RTP the leg refused (another source or SSRC: injection attempts or a
    // confused NAT), stream restarts, and keys beyond the per-call limit.
    // From here on migrations are additive only (new tables, new columns
    // with defaults), so the previous release still opens the database.
    "ALTER TABLE call_media ADD COLUMN foreign_packets INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE call_media ADD COLUMN ssrc_changes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE call_media ADD COLUMN digits_dropped INTEGER NOT NULL DEFAULT 0;",
    // 9: RTCP: reports exchanged, and what the peer measured of our audio
    // (loss, jitter) and the round trip. NULL round trip: never measured
    // (the peer sent no report answering one of our SRs).
    "ALTER TABLE call_media ADD COLUMN rtcp_sent INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE call_media ADD COLUMN rtcp_received INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE call_media ADD COLUMN rtcp_foreign INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE call_media ADD COLUMN remote_lost INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE call_media ADD COLUMN remote_fraction_lost REAL NOT NULL DEFAULT 0;
    ALTER TABLE call_media ADD COLUMN remote_jitter_ms REAL NOT NULL DEFAULT 0;
    ALTER TABLE call_media ADD COLUMN rtt_ms REAL;
    ALTER TABLE call_media ADD COLUMN rtt_max_ms REAL;",
    // 10: where each extension is registered (the registrar's bindings),
    // so a restart does not forget the phones; times are wall-clock ms.
    "CREATE TABLE registrations (
        extension TEXT NOT NULL,
        contact TEXT NOT NULL,
        reach TEXT NOT NULL,
        transport TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        call_id TEXT NOT NULL,
        cseq INTEGER NOT NULL,
        PRIMARY KEY (extension, contact)
    );",
    // 11: calls through a trunk: which trunk, which of its numbers (DID),
    // and the caller's number as E.164 (NULL: withheld or not a number).
    "ALTER TABLE calls ADD COLUMN trunk TEXT;
    ALTER TABLE calls ADD COLUMN did TEXT;
    ALTER TABLE calls ADD COLUMN caller TEXT;",
    // 12: the phones a call rang: who, where, when, and how each ended.
    "CREATE TABLE call_legs (
        id INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
        target TEXT NOT NULL,
        contact TEXT NOT NULL,
        started_at_ms INTEGER NOT NULL,
        answered_at_ms INTEGER,
        ended_at_ms INTEGER NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE INDEX call_legs_call ON call_legs(call_id);",
    // 13: switches an operator sets while the agent runs, kept across
    // restarts (the routing override).
    "CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );",
    // 14: what the business must do after a call: every message the
    // receptionist took and every voicemail left is a follow-up (who to
    // call back, on what number, about what, by when, how urgent); and the
    // voicemails themselves (their audio is the call's recording).
    "CREATE TABLE followups (
        id INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        name TEXT,
        number TEXT,
        number_confirmed INTEGER NOT NULL DEFAULT 0,
        about TEXT,
        address TEXT,
        intent TEXT,
        urgency TEXT NOT NULL,
        complete INTEGER NOT NULL DEFAULT 1,
        created_at_ms INTEGER NOT NULL,
        due_by_ms INTEGER NOT NULL,
        done_at_ms INTEGER
    );
    CREATE INDEX followups_call ON followups(call_id);
    CREATE TABLE voicemails (
        call_id TEXT PRIMARY KEY REFERENCES calls(id) ON DELETE CASCADE,
        mailbox TEXT NOT NULL,
        started_at_ms INTEGER NOT NULL,
        duration_ms INTEGER,
        heard_at_ms INTEGER
    );",
    // 15: upstream sync. Each event to send is written in the same
    // transaction as the data it reports; `dedup` makes the same fact
    // one event however often its write is retried. Pending rows carry
    // their call, so an erase can take them too. A route event's step as
    // a destination (`group:office`), never the reasons' words.
    "ALTER TABLE call_events ADD COLUMN step TEXT;
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        msg_id TEXT NOT NULL UNIQUE,
        topic TEXT NOT NULL,
        call_id TEXT,
        dedup TEXT NOT NULL UNIQUE,
        payload TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        delivered_at_ms INTEGER
    );
    CREATE INDEX outbox_pending ON outbox(delivered_at_ms, seq);
    CREATE INDEX outbox_call ON outbox(call_id);
    CREATE INDEX outbox_waiting ON outbox(next_attempt_ms) WHERE delivered_at_ms IS NULL;
    CREATE TABLE outbox_dead (
        seq INTEGER PRIMARY KEY,
        msg_id TEXT NOT NULL,
        topic TEXT NOT NULL,
        call_id TEXT,
        payload TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        failed_at_ms INTEGER NOT NULL,
        error TEXT NOT NULL
    );",
    // 16: commands from upstream, by the backend's id, so one delivered
    // twice runs once. Never their arguments (an erase's number).
    "CREATE TABLE inbox (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        received_at_ms INTEGER NOT NULL,
        done_at_ms INTEGER,
        ok INTEGER
    );",
];

/// Set one operator setting (`settings`), replacing its value.
pub fn write_setting(
    conn: &Connection,
    key: &str,
    value: &str,
    at_ms: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO settings (key, value, updated_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at_ms = excluded.updated_at_ms",
        rusqlite::params![key, value, at_ms],
    )?;
    Ok(())
}

/// One operator setting, if it was ever set.
pub fn read_setting(conn: &Connection, key: &str) -> Result<Option<String>, Error> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?)
}

/// Open (creating and migrating) the database at `path`.
pub fn open_connection(path: &Path) -> Result<Connection, Error> {
    let conn =
        Connection::open(path).map_err(|e| Error::Store(format!("{}: {e}", path.display())))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted rows are overwritten, not left in free pages (erase requests).
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// A connection for the command-line tools: opened and migrated (no writer
/// thread, no crash clean-up: the agent may be running).
pub fn open_for_tools(path: &Path) -> Result<Connection, Error> {
    let mut conn = open_connection(path)?;
    migrate(&mut conn)?;
    Ok(conn)
}

pub(crate) fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let version: usize =
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        // A newer release migrated this database and we were rolled back
        // to. Migrations only add tables and columns with defaults (from
        // migration 8 on), so this build's queries still work; it just
        // does not fill what it does not know.
        tracing::warn!(
            schema = version,
            known = MIGRATIONS.len(),
            "the database was migrated by a newer release; opening it as is"
        );
        return Ok(());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Calls a killed or crashed agent left open: close them at the last
/// evidence the call was still going (the latest of: a final or partial
/// text arriving, a key pressed, the end of the last transcribed speech,
/// the recording's recovered length), so the talk time is what the record
/// shows rather than zero; say so in the reason. Run after recordings are
/// recovered, so their lengths are known.
pub fn close_interrupted(conn: &Connection) -> Result<usize, Error> {
    Ok(conn.execute(
        "UPDATE calls SET
            ended_at_ms = MAX(
                COALESCE(answered_at_ms, started_at_ms),
                COALESCE((SELECT MAX(received_at_ms) FROM transcript_segments s WHERE s.call_id = calls.id), 0),
                COALESCE((SELECT MAX(received_at_ms) FROM transcript_partials p WHERE p.call_id = calls.id), 0),
                COALESCE(answered_at_ms, started_at_ms)
                    + COALESCE((SELECT MAX(end_ms) FROM transcript_segments s WHERE s.call_id = calls.id), 0),
                COALESCE(answered_at_ms, started_at_ms)
                    + COALESCE((SELECT MAX(at_ms) FROM call_events e WHERE e.call_id = calls.id AND e.kind != 'route'), 0),
                COALESCE((SELECT MAX(r.started_at_ms + r.duration_ms) FROM recordings r WHERE r.call_id = calls.id), 0)
            ),
            end_reason = 'interrupted: agent stopped during the call',
            transcript_complete = 1
         WHERE ended_at_ms IS NULL",
        [],
    )
    .and_then(|n| {
        conn.execute(
            "UPDATE calls SET duration_ms = CASE WHEN answered_at_ms IS NULL THEN 0
                ELSE MAX(ended_at_ms - answered_at_ms, 0) END
             WHERE end_reason = 'interrupted: agent stopped during the call' AND duration_ms IS NULL",
            [],
        )?;
        Ok(n)
    })?)
}
