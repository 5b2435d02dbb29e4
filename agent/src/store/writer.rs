//! The one writer thread that owns the write connection, the commands it
//! applies, and how it holds writes while the disk is full.

use super::outbox::{Outbox, durably};
use super::{EventKind, MediaQuality, NewCall, PartialRow, SegmentOrigin, SegmentRow};
use handlet_models::summary::Summary;
use rusqlite::{Connection, params};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub(crate) enum Cmd {
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
        /// A route event's step as a destination, for upstream.
        step: Option<String>,
    },
    Media {
        call_id: String,
        q: MediaQuality,
    },
    Legs {
        call_id: String,
        legs: Vec<super::LegRow>,
    },
    Registrations {
        extension: String,
        rows: Vec<super::RegistrationRow>,
    },
    FollowUp(Box<super::followups::NewFollowUp>),
    Voicemail {
        call_id: String,
        mailbox: String,
        started_at_ms: i64,
        duration_ms: Option<i64>,
    },
    Setting {
        key: &'static str,
        value: String,
        at_ms: i64,
    },
    Flush(mpsc::Sender<()>),
}

/// Writes queued for the writer at most (see [`Store::send`]).
pub(crate) const QUEUE: usize = 16_384;
pub(crate) static STORE_FULL: crate::limits::BurstLog = crate::limits::BurstLog::new("store queue");

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
pub(crate) fn writer(
    conn: Connection,
    rx: mpsc::Receiver<Cmd>,
    disk_full: &AtomicBool,
    outbox: Option<Outbox>,
) {
    let outbox = outbox.as_ref();
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
            Some(cmd) if held.queue.is_empty() => match apply(&conn, &cmd, outbox) {
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
            held.retry(&conn, outbox);
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
    fn retry(&mut self, conn: &Connection, outbox: Option<&Outbox>) {
        if self.last_try.is_some_and(|t| t.elapsed() < RETRY / 2) {
            return;
        }
        self.last_try = Some(Instant::now());
        while let Some(cmd) = self.queue.front() {
            match apply(conn, cmd, outbox) {
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

fn apply(conn: &Connection, cmd: &Cmd, outbox: Option<&Outbox>) -> Result<(), rusqlite::Error> {
    match cmd {
        Cmd::InsertCall(c) => {
            conn.execute(
                "INSERT INTO calls (id, sip_call_id, direction, from_uri, to_uri, transport, codec, started_at_ms, answered_at_ms, trunk, did, caller)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![c.id, c.sip_call_id, c.direction, c.from_uri, c.to_uri, c.transport, c.codec, c.started_at_ms, c.answered_at_ms, c.trunk, c.did, c.caller],
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
        // The call is over and its summary (if any) written: its event
        // for upstream goes with this update.
        Cmd::TranscriptComplete { id } => {
            let done = |conn: &Connection| {
                conn.execute(
                    "UPDATE calls SET transcript_complete = 1 WHERE id = ?1",
                    params![id],
                )
                .map(|_| ())
            };
            match outbox {
                None => done(conn)?,
                Some(o) => durably(conn, |tx| {
                    done(tx)?;
                    o.call_done(tx, id, crate::clock::now_ms())
                })?,
            }
        }
        Cmd::Event {
            call_id,
            at_ms,
            kind,
            detail,
            step,
        } => {
            conn.execute(
                "INSERT INTO call_events (call_id, at_ms, kind, detail, step) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![call_id, at_ms, kind.as_str(), detail, step],
            )?;
        }
        Cmd::FollowUp(f) => match outbox {
            None => super::followups::insert(conn, f)?,
            Some(o) => durably(conn, |tx| {
                super::followups::insert(tx, f)?;
                o.followup(tx, tx.last_insert_rowid(), crate::clock::now_ms())
            })?,
        },
        Cmd::Voicemail {
            call_id,
            mailbox,
            started_at_ms,
            duration_ms,
        } => {
            let write = |conn: &Connection| {
                conn.execute(
                    "INSERT INTO voicemails (call_id, mailbox, started_at_ms, duration_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(call_id) DO UPDATE SET duration_ms = excluded.duration_ms",
                    params![call_id, mailbox, started_at_ms, duration_ms],
                )
                .map(|_| ())
            };
            match outbox {
                // A finished voicemail is news upstream; one begun is not.
                Some(o) if duration_ms.is_some() => durably(conn, |tx| {
                    write(tx)?;
                    o.voicemail(tx, call_id, crate::clock::now_ms())
                })?,
                _ => write(conn)?,
            }
        }
        Cmd::Setting { key, value, at_ms } => {
            super::schema::write_setting(conn, key, value, *at_ms)?;
        }
        Cmd::Media { call_id, q } => {
            conn.execute(
                "INSERT OR REPLACE INTO call_media (call_id, packets, lost, late, duplicates, concealed, malformed,
                    jitter_ms, target_delay_ms, foreign_packets, ssrc_changes, digits_dropped,
                    rtcp_sent, rtcp_received, rtcp_foreign, remote_lost, remote_fraction_lost,
                    remote_jitter_ms, rtt_ms, rtt_max_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,
                    ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
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
                    q.digits_dropped as i64,
                    q.rtcp_sent as i64,
                    q.rtcp_received as i64,
                    q.rtcp_foreign as i64,
                    q.remote_lost as i64,
                    q.remote_fraction_lost as f64,
                    q.remote_jitter_ms as f64,
                    q.rtt_ms.map(|v| v as f64),
                    q.rtt_max_ms.map(|v| v as f64)
                ],
            )?;
        }
        Cmd::Registrations { extension, rows } => {
            let tx = conn.unchecked_transaction()?;
            tx.execute(
                "DELETE FROM registrations WHERE extension = ?1",
                params![extension],
            )?;
            for r in rows {
                tx.execute(
                    "INSERT OR REPLACE INTO registrations
                        (extension, contact, reach, transport, expires_at_ms, call_id, cseq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        extension,
                        r.contact,
                        r.reach.to_string(),
                        r.transport,
                        r.expires_at_ms,
                        r.call_id,
                        r.cseq
                    ],
                )?;
            }
            tx.commit()?;
        }
        Cmd::Legs { call_id, legs } => {
            let tx = conn.unchecked_transaction()?;
            for l in legs {
                tx.execute(
                    "INSERT INTO call_legs (call_id, target, contact, started_at_ms, answered_at_ms, ended_at_ms, outcome)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![call_id, l.target, l.contact, l.started_at_ms, l.answered_at_ms, l.ended_at_ms, l.outcome],
                )?;
            }
            tx.commit()?;
        }
        Cmd::Flush(done) => {
            let _ = done.send(());
        }
    }
    Ok(())
}
