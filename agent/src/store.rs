//! SQLite storage: versioned migrations, one writer thread owning the write
//! connection (WAL), readers on their own connections.

use crate::Error;
use handlet_models::summary::Summary;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// Migrations in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
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
];

/// How one call's audio arrived: the jitter buffer's and the socket's
/// counts at the end of the call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MediaQuality {
    /// RTP packets received for the call's audio.
    pub packets: u64,
    /// Never arrived (concealed).
    pub lost: u64,
    /// Arrived after their time had passed (dropped).
    pub late: u64,
    pub duplicates: u64,
    /// Frames the decoder made up: lost packets and buffer underruns.
    pub concealed: u64,
    /// Datagrams that were not valid RTP.
    pub malformed: u64,
    /// RFC 3550 interarrival jitter at the end of the call.
    pub jitter_ms: u32,
    /// Playout delay the buffer had settled on.
    pub target_delay_ms: u32,
    /// RTP from another source or SSRC than the latched one: dropped.
    pub foreign: u64,
    /// The peer restarted its stream (new SSRC from the same source).
    pub ssrc_changes: u64,
    /// Keys pressed beyond the per-call limit (not stored).
    pub digits_dropped: u64,
}

/// Whose voice a transcript segment is: stored by its stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The person who called.
    Caller,
    /// The agent itself (announcements, later the receptionist's voice).
    Agent,
    /// The party the call was put through to.
    Callee,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Caller => "caller",
            Channel::Agent => "agent",
            Channel::Callee => "callee",
        }
    }
}

/// What a call event records: stored by its stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A key pressed (detail: the key and how it was sent).
    Dtmf,
    /// The recording announcement finished playing; recording starts here.
    Announcement,
    /// Keys pressed beyond the per-call limit were not stored (detail: how many).
    DtmfLimit,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Dtmf => "dtmf",
            EventKind::Announcement => "announcement",
            EventKind::DtmfLimit => "dtmf_limit",
        }
    }
}

/// A call as first recorded.
#[derive(Debug, Clone)]
pub struct NewCall {
    pub id: String,
    pub sip_call_id: String,
    pub direction: &'static str,
    pub from_uri: String,
    pub to_uri: String,
    pub transport: String,
    pub codec: Option<String>,
    pub started_at_ms: i64,
    pub answered_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRow {
    pub channel: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: String,
}

/// Live text for an utterance still being spoken.
#[derive(Debug, Clone, PartialEq)]
pub struct PartialRow {
    pub channel: String,
    pub utterance_start_ms: i64,
    /// How much of the utterance the text covers.
    pub audio_ms: i64,
    pub text: String,
    pub received_at_ms: i64,
    /// Wall-clock time the caller started this utterance.
    pub speech_started_at_ms: i64,
}

/// Where a final segment came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentOrigin {
    pub utterance_start_ms: i64,
    pub received_at_ms: i64,
    /// Wall-clock time the caller stopped speaking: `received_at_ms` minus
    /// this is how long they waited for the text.
    pub speech_ended_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    pub id: String,
    pub from_uri: String,
    pub to_uri: String,
    pub transport: String,
    pub codec: Option<String>,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub end_reason: Option<String>,
    pub transcript_complete: bool,
}

enum Cmd {
    InsertCall(NewCall),
    Answered {
        id: String,
        at_ms: i64,
    },
    EndCall {
        id: String,
        ended_at_ms: i64,
        reason: String,
    },
    Segment {
        call_id: String,
        seg: SegmentRow,
        origin: Option<SegmentOrigin>,
    },
    Partial {
        call_id: String,
        partial: PartialRow,
    },
    Summary {
        call_id: String,
        summary: Box<Summary>,
        at_ms: i64,
    },
    TranscriptComplete {
        id: String,
    },
    Event {
        call_id: String,
        at_ms: i64,
        kind: EventKind,
        detail: String,
    },
    Media {
        call_id: String,
        q: MediaQuality,
    },
    Flush(mpsc::Sender<()>),
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Cmd>,
    path: PathBuf,
    /// Set while the writer holds writes the full disk refused.
    disk_full: Arc<AtomicBool>,
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

fn migrate(conn: &mut Connection) -> Result<(), Error> {
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
                    + COALESCE((SELECT MAX(at_ms) FROM call_events e WHERE e.call_id = calls.id), 0),
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

impl Store {
    /// Open the database, run migrations, and start the writer thread.
    pub fn open(path: &Path) -> Result<Store, Error> {
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        let interrupted = close_interrupted(&conn)?;
        if interrupted > 0 {
            tracing::warn!(
                calls = interrupted,
                "calls left open by a previous run were closed as interrupted"
            );
        }
        let (tx, rx) = mpsc::channel::<Cmd>();
        let disk_full = Arc::new(AtomicBool::new(false));
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn({
                let disk_full = disk_full.clone();
                move || writer(conn, rx, &disk_full)
            })
            .map_err(|e| Error::Store(e.to_string()))?;
        Ok(Store {
            tx,
            path: path.to_owned(),
            disk_full,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True while writes are held because the data disk is full.
    pub fn disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Relaxed)
    }

    fn send(&self, c: Cmd) {
        // The writer lives as long as the process; a send can only fail at exit.
        let _ = self.tx.send(c);
    }

    pub fn insert_call(&self, c: NewCall) {
        self.send(Cmd::InsertCall(c));
    }

    pub fn answered(&self, id: &str, at_ms: i64) {
        self.send(Cmd::Answered {
            id: id.into(),
            at_ms,
        });
    }

    pub fn end_call(&self, id: &str, ended_at_ms: i64, reason: &str) {
        self.send(Cmd::EndCall {
            id: id.into(),
            ended_at_ms,
            reason: reason.into(),
        });
    }

    pub fn media_quality(&self, call_id: &str, q: MediaQuality) {
        self.send(Cmd::Media {
            call_id: call_id.into(),
            q,
        });
    }

    pub fn add_segment(&self, call_id: &str, seg: SegmentRow) {
        self.send(Cmd::Segment {
            call_id: call_id.into(),
            seg,
            origin: None,
        });
    }

    /// A final segment of a streamed utterance.
    pub fn add_final(&self, call_id: &str, seg: SegmentRow, origin: SegmentOrigin) {
        self.send(Cmd::Segment {
            call_id: call_id.into(),
            seg,
            origin: Some(origin),
        });
    }

    pub fn save_summary(&self, call_id: &str, summary: Summary, at_ms: i64) {
        self.send(Cmd::Summary {
            call_id: call_id.into(),
            summary: Box::new(summary),
            at_ms,
        });
    }

    pub fn add_partial(&self, call_id: &str, partial: PartialRow) {
        self.send(Cmd::Partial {
            call_id: call_id.into(),
            partial,
        });
    }

    /// Something that happened `at_ms` into the call (e.g. kind "dtmf", detail "5 (rfc4733)").
    pub fn add_event(&self, call_id: &str, at_ms: i64, kind: EventKind, detail: String) {
        self.send(Cmd::Event {
            call_id: call_id.into(),
            at_ms,
            kind,
            detail,
        });
    }

    pub fn transcript_complete(&self, id: &str) {
        self.send(Cmd::TranscriptComplete { id: id.into() });
    }

    /// Wait until everything sent so far is written.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Cmd::Flush(tx));
        let _ = rx.recv();
    }
}

/// Writes held while the disk is full, at most this many (a busy day of
/// calls is a few thousand rows).
const HELD_MAX: usize = 50_000;
/// How often held writes are retried when nothing else arrives.
const RETRY: Duration = Duration::from_secs(2);

/// The writer thread. A write the disk has no room for is not dropped: it
/// is held in memory, in order, with every later write queued behind it (a
/// transcript must not land before its call row), and retried until space
/// comes back. Live partial text is not held (the final text supersedes
/// it). Held writes are memory only: a kill while the disk is full loses
/// them, and past `HELD_MAX` the newest are dropped and counted.
fn writer(conn: Connection, rx: mpsc::Receiver<Cmd>, disk_full: &AtomicBool) {
    let mut held = Held::default();
    loop {
        let cmd = if held.queue.is_empty() {
            match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => break,
            }
        } else {
            match rx.recv_timeout(RETRY) {
                Ok(c) => Some(c),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        };
        match cmd {
            // Answered at once even with writes held: callers must not
            // hang on a full disk (what they then write fails on its own).
            Some(Cmd::Flush(done)) => {
                let _ = done.send(());
            }
            Some(cmd) if held.queue.is_empty() => match apply(&conn, &cmd) {
                Ok(()) => {}
                // Live partial text is not worth holding (nor a log line).
                Err(e) if no_room(&e) && matches!(cmd, Cmd::Partial { .. }) => {}
                Err(e) if no_room(&e) => {
                    tracing::error!(
                        error = %e,
                        "data disk full: holding call data in memory until space is freed"
                    );
                    held.hold(cmd);
                }
                Err(e) => tracing::error!(error = %e, "store write failed"),
            },
            Some(cmd) => held.hold(cmd),
            None => {}
        }
        if !held.queue.is_empty() {
            held.retry(&conn);
        }
        disk_full.store(!held.queue.is_empty(), Ordering::Relaxed);
    }
    if !held.queue.is_empty() {
        tracing::error!(
            writes = held.queue.len(),
            "stopping with call data the full disk could not take; it is lost"
        );
    }
}

#[derive(Default)]
struct Held {
    queue: std::collections::VecDeque<Cmd>,
    stored_since_full: usize,
    dropped: u64,
    last_try: Option<Instant>,
}

impl Held {
    fn hold(&mut self, cmd: Cmd) {
        if matches!(cmd, Cmd::Partial { .. }) {
            return;
        }
        if self.queue.len() >= HELD_MAX {
            self.dropped += 1;
            if self.dropped == 1 {
                tracing::error!(
                    held = HELD_MAX,
                    "data disk still full: newer call data is being dropped"
                );
            }
            return;
        }
        self.queue.push_back(cmd);
    }

    /// Write what is held, oldest first, stopping at the first write the
    /// disk still refuses. Tried at most every `RETRY / 2`, however fast
    /// new writes arrive.
    fn retry(&mut self, conn: &Connection) {
        if self.last_try.is_some_and(|t| t.elapsed() < RETRY / 2) {
            return;
        }
        self.last_try = Some(Instant::now());
        while let Some(cmd) = self.queue.front() {
            match apply(conn, cmd) {
                Ok(()) => self.stored_since_full += 1,
                Err(e) if no_room(&e) => return,
                Err(e) => tracing::error!(error = %e, "store write failed"),
            }
            self.queue.pop_front();
        }
        tracing::warn!(
            writes = self.stored_since_full,
            dropped = self.dropped,
            "space on the data disk again: held call data stored"
        );
        *self = Held::default();
    }
}

/// The disk (or the file system) has no room for the write.
fn no_room(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure)
    )
}

fn apply(conn: &Connection, cmd: &Cmd) -> Result<(), rusqlite::Error> {
    match cmd {
        Cmd::InsertCall(c) => {
            conn.execute(
                "INSERT INTO calls (id, sip_call_id, direction, from_uri, to_uri, transport, codec, started_at_ms, answered_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![c.id, c.sip_call_id, c.direction, c.from_uri, c.to_uri, c.transport, c.codec, c.started_at_ms, c.answered_at_ms],
            )?;
        }
        Cmd::Answered { id, at_ms } => {
            conn.execute(
                "UPDATE calls SET answered_at_ms = ?2 WHERE id = ?1",
                params![id, at_ms],
            )?;
        }
        Cmd::EndCall {
            id,
            ended_at_ms,
            reason,
        } => {
            // Duration is talk time: zero for a call never answered.
            conn.execute(
                "UPDATE calls SET ended_at_ms = ?2, duration_ms = COALESCE(?2 - answered_at_ms, 0), end_reason = ?3
                 WHERE id = ?1 AND ended_at_ms IS NULL",
                params![id, ended_at_ms, reason],
            )?;
        }
        Cmd::Segment {
            call_id,
            seg,
            origin,
        } => {
            conn.execute(
                "INSERT INTO transcript_segments (call_id, channel, start_ms, end_ms, text, utterance_start_ms,
                    received_at_ms, speech_ended_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    call_id,
                    seg.channel,
                    seg.start_ms,
                    seg.end_ms,
                    seg.text,
                    origin.map(|o| o.utterance_start_ms),
                    origin.map(|o| o.received_at_ms),
                    origin.map(|o| o.speech_ended_at_ms)
                ],
            )?;
        }
        Cmd::Summary {
            call_id,
            summary: s,
            at_ms,
        } => {
            conn.execute(
                "INSERT OR REPLACE INTO call_summaries (call_id, summary, intent, intent_confidence, runner_up, sentiment,
                    urgency, caller_name, callback_number, requested_time, address, outcome, follow_up, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    call_id,
                    s.text,
                    s.intent,
                    s.intent_confidence as f64,
                    s.runner_up,
                    s.sentiment,
                    s.urgency,
                    s.caller_name,
                    s.callback_number,
                    s.requested_time,
                    s.address,
                    s.outcome,
                    s.follow_up,
                    at_ms
                ],
            )?;
        }
        Cmd::Partial {
            call_id,
            partial: p,
        } => {
            conn.execute(
                "INSERT INTO transcript_partials (call_id, channel, utterance_start_ms, audio_ms, text, received_at_ms,
                    speech_started_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    call_id,
                    p.channel,
                    p.utterance_start_ms,
                    p.audio_ms,
                    p.text,
                    p.received_at_ms,
                    p.speech_started_at_ms
                ],
            )?;
        }
        Cmd::TranscriptComplete { id } => {
            conn.execute(
                "UPDATE calls SET transcript_complete = 1 WHERE id = ?1",
                params![id],
            )?;
        }
        Cmd::Event {
            call_id,
            at_ms,
            kind,
            detail,
        } => {
            conn.execute(
                "INSERT INTO call_events (call_id, at_ms, kind, detail) VALUES (?1, ?2, ?3, ?4)",
                params![call_id, at_ms, kind.as_str(), detail],
            )?;
        }
        Cmd::Media { call_id, q } => {
            conn.execute(
                "INSERT OR REPLACE INTO call_media (call_id, packets, lost, late, duplicates, concealed, malformed,
                    jitter_ms, target_delay_ms, foreign_packets, ssrc_changes, digits_dropped)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    call_id,
                    q.packets as i64,
                    q.lost as i64,
                    q.late as i64,
                    q.duplicates as i64,
                    q.concealed as i64,
                    q.malformed as i64,
                    q.jitter_ms,
                    q.target_delay_ms,
                    q.foreign as i64,
                    q.ssrc_changes as i64,
                    q.digits_dropped as i64
                ],
            )?;
        }
        Cmd::Flush(done) => {
            let _ = done.send(());
        }
    }
    Ok(())
}

/// Read-side queries, on a connection of their own.
pub struct Reader {
    conn: Connection,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, Error> {
        if !path.exists() {
            return Err(Error::Store(format!(
                "no database at {}; has the agent run?",
                path.display()
            )));
        }
        Ok(Reader {
            conn: open_connection(path)?,
        })
    }

    pub fn call(&self, id: &str) -> Result<Option<CallRow>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, from_uri, to_uri, transport, codec, started_at_ms, ended_at_ms, duration_ms, end_reason, transcript_complete
                 FROM calls WHERE id = ?1",
                params![id],
                |r| {
                    Ok(CallRow {
                        id: r.get(0)?,
                        from_uri: r.get(1)?,
                        to_uri: r.get(2)?,
                        transport: r.get(3)?,
                        codec: r.get(4)?,
                        started_at_ms: r.get(5)?,
                        ended_at_ms: r.get(6)?,
                        duration_ms: r.get(7)?,
                        end_reason: r.get(8)?,
                        transcript_complete: r.get::<_, i64>(9)? != 0,
                    })
                },
            )
            .optional()?)
    }

    /// The call recorded for a SIP Call-ID, if any.
    pub fn call_by_sip_id(&self, sip_call_id: &str) -> Result<Option<String>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT id FROM calls WHERE sip_call_id = ?1 ORDER BY started_at_ms DESC LIMIT 1",
                params![sip_call_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn segments(&self, call_id: &str) -> Result<Vec<SegmentRow>, Error> {
        let mut st = self.conn.prepare(
            "SELECT channel, start_ms, end_ms, text FROM transcript_segments WHERE call_id = ?1 ORDER BY start_ms, id",
        )?;
        let rows = st
            .query_map(params![call_id], |r| {
                Ok(SegmentRow {
                    channel: r.get(0)?,
                    start_ms: r.get(1)?,
                    end_ms: r.get(2)?,
                    text: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

impl Reader {
    /// The summary of a call: (summary, intent, urgency, follow_up).
    pub fn summary(
        &self,
        call_id: &str,
    ) -> Result<Option<(String, String, String, String)>, Error> {
        Ok(self
            .conn
            .query_row(
                "SELECT summary, intent, urgency, follow_up FROM call_summaries WHERE call_id = ?1",
                params![call_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queries the release before migration 8 ran (schema 7), against
    /// a database migrated to the newest schema: a rollback still works.
    #[test]
    fn the_previous_releases_queries_work_on_a_migrated_database() {
        let dir = std::env::temp_dir().join(format!("handlet-store-compat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.sqlite");
        std::fs::remove_file(&path).ok();
        let mut conn = open_connection(&path).unwrap();
        migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO calls (id, sip_call_id, direction, from_uri, to_uri, transport, codec, started_at_ms, answered_at_ms)
             VALUES ('c1', 's1', 'inbound', 'sip:a@x', 'sip:b@y', 'udp', 'PCMU', 1, 2)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT OR REPLACE INTO call_media (call_id, packets, lost, late, duplicates, concealed, malformed,
                jitter_ms, target_delay_ms)
             VALUES ('c1', 10, 0, 0, 0, 0, 0, 3, 40)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO transcript_segments (call_id, channel, start_ms, end_ms, text, utterance_start_ms,
                received_at_ms, speech_ended_at_ms) VALUES ('c1', 'caller', 0, 10, 'hi', 0, 5, 4)",
            [],
        )
        .unwrap();
        conn.execute(
            "UPDATE calls SET ended_at_ms = 9, duration_ms = 7, end_reason = 'caller hung up' WHERE id = 'c1' AND ended_at_ms IS NULL",
            [],
        )
        .unwrap();
        let packets: i64 = conn
            .query_row(
                "SELECT packets FROM call_media WHERE call_id = 'c1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(packets, 10);
        // And a newer release's database (more migrations than we know)
        // opens with a warning, not an error.
        conn.pragma_update(None, "user_version", (MIGRATIONS.len() + 3) as i64)
            .unwrap();
        conn.execute_batch(
            "ALTER TABLE calls ADD COLUMN from_the_future INTEGER NOT NULL DEFAULT 0;",
        )
        .unwrap();
        drop(conn);
        let s = Store::open(&path).unwrap();
        s.end_call("c1", 10, "ignored");
        s.flush();
        let r = Reader::open(&path).unwrap();
        assert_eq!(
            r.call("c1").unwrap().unwrap().end_reason.as_deref(),
            Some("caller hung up")
        );
        drop(s);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn writes_reads_and_migrates_once() {
        let dir = std::env::temp_dir().join(format!("handlet-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.sqlite");
        std::fs::remove_file(&path).ok();
        let s = Store::open(&path).unwrap();
        s.insert_call(NewCall {
            id: "c1".into(),
            sip_call_id: "abc@host".into(),
            direction: "inbound",
            from_uri: "sip:a@x".into(),
            to_uri: "sip:b@y".into(),
            transport: "udp".into(),
            codec: Some("PCMU".into()),
            started_at_ms: 1000,
            answered_at_ms: Some(1100),
        });
        s.add_segment(
            "c1",
            SegmentRow {
                channel: "caller".into(),
                start_ms: 0,
                end_ms: 900,
                text: "hello".into(),
            },
        );
        s.end_call("c1", 5100, "caller hung up");
        s.end_call("c1", 9999, "ignored: already ended");
        s.transcript_complete("c1");
        s.flush();
        let r = Reader::open(&path).unwrap();
        let c = r.call("c1").unwrap().unwrap();
        assert_eq!(c.duration_ms, Some(4000));
        assert_eq!(c.end_reason.as_deref(), Some("caller hung up"));
        assert!(c.transcript_complete);
        assert_eq!(r.segments("c1").unwrap()[0].text, "hello");
        // A call never answered has no talk time.
        s.insert_call(NewCall {
            id: "c2".into(),
            sip_call_id: "def@host".into(),
            direction: "inbound",
            from_uri: "sip:a@x".into(),
            to_uri: "sip:b@y".into(),
            transport: "tcp".into(),
            codec: None,
            started_at_ms: 2000,
            answered_at_ms: None,
        });
        s.end_call("c2", 6000, "caller cancelled");
        s.flush();
        assert_eq!(r.call("c2").unwrap().unwrap().duration_ms, Some(0));
        assert_eq!(r.call_by_sip_id("def@host").unwrap().as_deref(), Some("c2"));
        drop(s);
        // Re-opening runs no migration twice.
        let _again = Store::open(&path).unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }
}
