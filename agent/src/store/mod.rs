//! SQLite storage: versioned migrations ([`schema`]), one writer thread
//! owning the write connection in WAL mode ([`writer`], which also holds
//! writes while the disk is full), readers on their own connections
//! ([`read`]). docs/DESIGN.md says where else the database is written and why.

pub mod followups;
pub mod inbox;
pub mod outbox;
mod read;
mod schema;
pub mod timeline;
mod writer;

pub use read::Reader;
pub use schema::{close_interrupted, open_connection, open_for_tools, read_setting, write_setting};

use crate::Error;
use handlet_models::summary::Summary;
use schema::migrate;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;
use writer::{Cmd, QUEUE, STORE_FULL};

/// One registrar binding as stored (wall-clock expiry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRow {
    pub contact: String,
    pub reach: std::net::SocketAddr,
    pub transport: String,
    pub expires_at_ms: i64,
    pub call_id: String,
    pub cseq: u32,
}

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
    /// RTCP reports sent and accepted from the peer.
    pub rtcp_sent: u64,
    pub rtcp_received: u64,
    /// RTCP from another address or SSRC than the peer's: dropped.
    pub rtcp_foreign: u64,
    /// What the peer's reports said about our audio: packets lost (its
    /// latest cumulative count), the worst fraction lost in one interval
    /// (0–1), the worst jitter.
    pub remote_lost: u64,
    pub remote_fraction_lost: f32,
    pub remote_jitter_ms: f32,
    /// Round trip from the peer's reports (RFC 3550 §6.4.1), when measured.
    pub rtt_ms: Option<f32>,
    pub rtt_max_ms: Option<f32>,
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
    /// A routing decision (detail: its reasons and the step, in words).
    Route,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Dtmf => "dtmf",
            EventKind::Announcement => "announcement",
            EventKind::DtmfLimit => "dtmf_limit",
            EventKind::Route => "route",
        }
    }
}

/// One phone a call rang, and how that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LegRow {
    /// The extension rung.
    pub target: String,
    /// The contact its INVITE went to.
    pub contact: String,
    pub started_at_ms: i64,
    pub answered_at_ms: Option<i64>,
    pub ended_at_ms: i64,
    /// answered, busy, declined, no answer, answered elsewhere, caller
    /// hung up, or the status it failed with.
    pub outcome: String,
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
    /// The trunk it came through, and the number it was for.
    pub trunk: Option<String>,
    pub did: Option<String>,
    /// The caller's number, E.164; None when withheld or not a number.
    pub caller: Option<String>,
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

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::SyncSender<Cmd>,
    path: PathBuf,
    /// Set while the writer holds writes the full disk refused.
    disk_full: Arc<AtomicBool>,
}

impl Store {
    /// Open the database, run migrations, and start the writer thread.
    pub fn open(path: &Path) -> Result<Store, Error> {
        Store::open_with(path, None)
    }

    /// The same, writing events for upstream when `outbox` is given
    /// (sync is on).
    pub fn open_with(path: &Path, outbox: Option<outbox::Outbox>) -> Result<Store, Error> {
        let mut conn = open_connection(path)?;
        migrate(&mut conn)?;
        let interrupted = close_interrupted(&conn)?;
        if interrupted > 0 {
            tracing::warn!(
                calls = interrupted,
                "calls left open by a previous run were closed as interrupted"
            );
        }
        let (tx, rx) = mpsc::sync_channel::<Cmd>(QUEUE);
        let disk_full = Arc::new(AtomicBool::new(false));
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn({
                let disk_full = disk_full.clone();
                move || writer::writer(conn, rx, &disk_full, outbox)
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

    /// Queue a write without ever waiting (callers include async tasks and
    /// the audio path). The queue holds [`QUEUE`] writes, minutes of a full
    /// box's traffic; it fills only if the writer is stuck (a hung disk),
    /// and then writes are dropped and counted (one log line per burst)
    /// rather than blocking calls. A full *disk* is different: the writer
    /// keeps draining the queue and holds those writes itself.
    fn send(&self, c: Cmd) {
        match self.tx.try_send(c) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => {
                crate::limits::count(&crate::limits::COUNTERS.store_dropped, 1);
                STORE_FULL.hit(Instant::now());
            }
            // The writer lives as long as the process; gone only at exit.
            Err(mpsc::TrySendError::Disconnected(_)) => {}
        }
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

    /// An extension's bindings now (replacing what was stored for it).
    pub fn registrations(&self, extension: &str, rows: Vec<RegistrationRow>) {
        self.send(Cmd::Registrations {
            extension: extension.into(),
            rows,
        });
    }

    /// The phones a call rang (written once the call has ended).
    pub fn add_legs(&self, call_id: &str, legs: Vec<LegRow>) {
        self.send(Cmd::Legs {
            call_id: call_id.into(),
            legs,
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
            step: None,
        });
    }

    /// A routing decision `at_ms` into the call: its words for the
    /// timeline, and its step as a destination (`group:office`) for
    /// upstream, where the words (which can name the caller) do not go.
    pub fn add_route(&self, call_id: &str, at_ms: i64, detail: String, step: String) {
        self.send(Cmd::Event {
            call_id: call_id.into(),
            at_ms,
            kind: EventKind::Route,
            detail,
            step: Some(step),
        });
    }

    /// A follow-up for the business: a message taken, a voicemail left.
    pub fn add_followup(&self, f: followups::NewFollowUp) {
        self.send(Cmd::FollowUp(Box::new(f)));
    }

    /// A voicemail began (`duration_ms` None) or ended.
    pub fn voicemail(
        &self,
        call_id: &str,
        mailbox: &str,
        started_at_ms: i64,
        duration_ms: Option<i64>,
    ) {
        self.send(Cmd::Voicemail {
            call_id: call_id.into(),
            mailbox: mailbox.into(),
            started_at_ms,
            duration_ms,
        });
    }

    /// Set an operator setting (kept across restarts).
    pub fn set_setting(&self, key: &'static str, value: String, at_ms: i64) {
        self.send(Cmd::Setting { key, value, at_ms });
    }

    pub fn transcript_complete(&self, id: &str) {
        self.send(Cmd::TranscriptComplete { id: id.into() });
    }

    /// Wait until everything sent so far is written.
    /// Wait until everything sent so far is written. Blocks: only for std
    /// threads (the tap, tools, tests), never async code.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Cmd::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// A fresh database in a temp dir of its own, with one ended inbound
/// call `c1` from +447700900123 (the store's unit tests start here).
#[cfg(test)]
pub(crate) fn test_db_with_call(tag: &str) -> (PathBuf, rusqlite::Connection) {
    let dir = std::env::temp_dir().join(format!(
        "handlet-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let conn = open_for_tools(&dir.join("t.sqlite")).unwrap();
    conn.execute(
        "INSERT INTO calls (id, sip_call_id, direction, from_uri, to_uri, transport, started_at_ms, caller)
         VALUES ('c1', 's', 'inbound', 'sip:a', 'sip:b', 'udp', 1000, '+447700900123')",
        [],
    )
    .unwrap();
    (dir, conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stuck writer (a hung disk) never makes a caller wait: once the
    /// queue is full, writes are dropped and counted.
    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _stuck) = mpsc::sync_channel::<Cmd>(QUEUE);
        let store = Store {
            tx,
            path: PathBuf::from("/nonexistent"),
            disk_full: Arc::new(AtomicBool::new(false)),
        };
        let before = crate::limits::COUNTERS
            .store_dropped
            .load(Ordering::Relaxed);
        let t0 = Instant::now();
        for i in 0..QUEUE + 10 {
            store.answered("c1", i as i64);
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
        let dropped = crate::limits::COUNTERS
            .store_dropped
            .load(Ordering::Relaxed)
            - before;
        assert!(dropped >= 10, "{dropped} writes counted as dropped");
    }

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
        conn.pragma_update(None, "user_version", (schema::MIGRATIONS.len() + 3) as i64)
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
            trunk: None,
            did: None,
            caller: None,
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
            trunk: None,
            did: None,
            caller: None,
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
