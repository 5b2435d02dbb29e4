//! Data-subject requests: export or erase everything the box holds about a
//! phone number, or erase the whole call corpus. A call belongs to a number
//! when it came from or went to it, or when the number was said, keyed or
//! summarised in it (a caller on a withheld line leaving their number).
//! Calls still in progress are left alone and reported, so a request never
//! races the agent writing them; run it again once they have ended.

use super::{audit, checkpoint, orphans, shred};
use crate::phone::Phone;
use crate::recording::{self, keys::DeviceKeys};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;

type Error = crate::Error;

/// Whose data a request is about.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    Phone(&'a Phone),
    /// Every call on the box.
    Workspace,
}

impl Subject<'_> {
    /// How the audit log names the subject: never the number itself.
    fn audit_name(&self) -> String {
        match self {
            Subject::Phone(p) => p.to_string(),
            Subject::Workspace => "workspace".into(),
        }
    }
}

/// The calls a request covers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// Ended, transcribed and summarised: safe to export or erase.
    pub settled: Vec<String>,
    /// Still being answered, transcribed or recorded.
    pub in_progress: usize,
}

const SETTLED: &str = "ended_at_ms IS NOT NULL AND transcript_complete = 1
    AND NOT EXISTS (SELECT 1 FROM recordings r WHERE r.call_id = calls.id AND r.state = 'recording')";

/// The subject's calls, oldest first.
pub fn find(conn: &Connection, subject: Subject) -> Result<Found, Error> {
    let theirs = match subject {
        Subject::Workspace => None,
        Subject::Phone(p) => Some(calls_of(conn, p)?),
    };
    let mut q = conn.prepare(&format!(
        "SELECT id, {SETTLED} FROM calls ORDER BY started_at_ms, id"
    ))?;
    let mut rows = q.query([])?;
    let mut found = Found::default();
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        if theirs.as_ref().is_some_and(|t| !t.contains(&id)) {
            continue;
        }
        if r.get::<_, bool>(1)? {
            found.settled.push(id);
        } else {
            found.in_progress += 1;
        }
    }
    Ok(found)
}

fn calls_of(conn: &Connection, p: &Phone) -> Result<BTreeSet<String>, Error> {
    let mut ids = BTreeSet::new();
    let mut q = conn.prepare("SELECT id, from_uri, to_uri FROM calls")?;
    let mut rows = q.query([])?;
    while let Some(r) = rows.next()? {
        let (from, to): (String, String) = (r.get(1)?, r.get(2)?);
        if [from, to]
            .iter()
            .any(|u| Phone::from_uri_in(u, p.country()).as_ref() == Some(p))
        {
            ids.insert(r.get(0)?);
        }
    }
    // What was said, drafted or summarised. Fields are joined by newlines,
    // which end a digit run, so two fields never make a number together.
    let texts = "SELECT call_id, text FROM transcript_segments
        UNION ALL SELECT call_id, text FROM transcript_partials
        UNION ALL SELECT call_id, summary || char(10) || COALESCE(caller_name, '') || char(10)
            || COALESCE(callback_number, '') || char(10) || COALESCE(requested_time, '') || char(10)
            || COALESCE(address, '') || char(10) || follow_up FROM call_summaries";
    let mut q = conn.prepare(texts)?;
    let mut rows = q.query([])?;
    while let Some(r) = rows.next()? {
        if p.mentioned_in(&r.get::<_, String>(1)?) {
            ids.insert(r.get(0)?);
        }
    }
    // What was keyed: the DTMF events of a call in order ("7 (rfc4733)").
    let mut q = conn.prepare(
        "SELECT call_id, detail FROM call_events WHERE kind = 'dtmf' ORDER BY call_id, at_ms, id",
    )?;
    let mut rows = q.query([])?;
    let (mut call, mut keyed) = (String::new(), String::new());
    loop {
        let next = rows.next()?;
        let id: Option<String> = next.map(|r| r.get(0)).transpose()?;
        if id.as_deref() != Some(call.as_str()) {
            if p.mentioned_in(&keyed) {
                ids.insert(std::mem::take(&mut call));
            }
            keyed.clear();
        }
        let Some(r) = next else { break };
        call = r.get(0)?;
        keyed.extend(r.get::<_, String>(1)?.chars().take(1));
    }
    Ok(ids)
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub calls: usize,
    pub recordings: usize,
    pub in_progress: usize,
}

/// Write `out/calls.json` (calls, transcripts, drafts, summaries, keys
/// pressed) and `out/recordings/ID.wav` (decrypted) for the subject. `out`
/// must be new or empty. Every recording's key is checked before anything
/// is written; on any failure what was written is removed again.
pub fn export(
    conn: &Connection,
    data_dir: &Path,
    subject: Subject,
    out: &Path,
    now_ms: i64,
) -> Result<Exported, Error> {
    let found = find(conn, subject)?;
    let keys = DeviceKeys::load(&recording::keys_dir(data_dir))?;
    let mut calls = Vec::new();
    let mut recordings = Vec::new();
    for id in &found.settled {
        let theirs = recording::for_call(conn, id)?;
        for r in &theirs {
            // Fails here, before any file exists, if a key is missing.
            recording::data_key(conn, &keys, r.id)?;
        }
        calls.push(call_json(conn, id, &theirs)?);
        recordings.extend(theirs);
    }
    let fresh = !out.exists();
    let cant = |e: &dyn std::fmt::Display| {
        Error::Privacy(format!("cannot write the export to {}: {e}", out.display()))
    };
    std::fs::create_dir_all(out).map_err(|e| cant(&e))?;
    if std::fs::read_dir(out)
        .map_err(|e| cant(&e))?
        .next()
        .is_some()
    {
        return Err(Error::Privacy(format!(
            "{} is not empty: export into a new or empty directory (nothing was written)",
            out.display()
        )));
    }
    let write = || -> Result<(), Error> {
        let doc = json!({
            "exported_at_ms": now_ms,
            "subject": match subject {
                Subject::Phone(p) => Value::from(p.e164()),
                Subject::Workspace => Value::from("workspace"),
            },
            "calls_in_progress_not_exported": found.in_progress,
            "calls": calls,
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| cant(&e))?;
        let tmp = out.join("calls.json.part");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, out.join("calls.json")))
            .map_err(|e| cant(&e))?;
        if !recordings.is_empty() {
            let dir = out.join("recordings");
            std::fs::create_dir(&dir).map_err(|e| cant(&e))?;
            for r in &recordings {
                let wav = dir.join(format!("{:016x}.wav", r.id));
                recording::export_wav(conn, data_dir, &keys, r.id, &wav)?;
            }
        }
        Ok(())
    };
    if let Err(e) = write() {
        // Leave nothing half-exported (decrypted audio included).
        if fresh {
            let _ = std::fs::remove_dir_all(out);
        } else if let Ok(entries) = std::fs::read_dir(out) {
            for e in entries.flatten() {
                let _ =
                    std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
            }
        }
        return Err(e);
    }
    let done = Exported {
        calls: calls.len(),
        recordings: recordings.len(),
        in_progress: found.in_progress,
    };
    audit(
        conn,
        now_ms,
        "export",
        &subject.audit_name(),
        (done.calls + done.recordings) as i64,
        &format!(
            "{} calls, {} recordings decrypted; {} in progress skipped",
            done.calls, done.recordings, done.in_progress
        ),
    )?;
    Ok(done)
}

fn call_json(
    conn: &Connection,
    id: &str,
    recordings: &[recording::RecordingRow],
) -> Result<Value, Error> {
    let mut call = conn.query_row(
        "SELECT direction, from_uri, to_uri, transport, codec, started_at_ms, answered_at_ms,
                ended_at_ms, duration_ms, end_reason FROM calls WHERE id = ?1",
        [id],
        |r| {
            Ok(json!({
                "id": id,
                "direction": r.get::<_, String>(0)?,
                "from": r.get::<_, String>(1)?,
                "to": r.get::<_, String>(2)?,
                "transport": r.get::<_, String>(3)?,
                "codec": r.get::<_, Option<String>>(4)?,
                "started_at_ms": r.get::<_, i64>(5)?,
                "answered_at_ms": r.get::<_, Option<i64>>(6)?,
                "ended_at_ms": r.get::<_, Option<i64>>(7)?,
                "duration_ms": r.get::<_, Option<i64>>(8)?,
                "end_reason": r.get::<_, Option<String>>(9)?,
            }))
        },
    )?;
    let list = |sql: &str, f: &dyn Fn(&rusqlite::Row) -> rusqlite::Result<Value>| {
        conn.prepare(sql)?
            .query_map([id], |r| f(r))?
            .collect::<Result<Vec<_>, _>>()
    };
    call["transcript"] = Value::from(list(
        "SELECT channel, start_ms, end_ms, text FROM transcript_segments WHERE call_id = ?1 ORDER BY start_ms, id",
        &|r| {
            Ok(
                json!({"channel": r.get::<_, String>(0)?, "start_ms": r.get::<_, i64>(1)?,
                      "end_ms": r.get::<_, i64>(2)?, "text": r.get::<_, String>(3)?}),
            )
        },
    )?);
    call["drafts"] = Value::from(list(
        "SELECT channel, utterance_start_ms, audio_ms, text FROM transcript_partials WHERE call_id = ?1 ORDER BY id",
        &|r| {
            Ok(
                json!({"channel": r.get::<_, String>(0)?, "utterance_start_ms": r.get::<_, i64>(1)?,
                      "audio_ms": r.get::<_, i64>(2)?, "text": r.get::<_, String>(3)?}),
            )
        },
    )?);
    call["events"] = Value::from(list(
        "SELECT at_ms, kind, detail FROM call_events WHERE call_id = ?1 ORDER BY at_ms, id",
        &|r| {
            Ok(
                json!({"at_ms": r.get::<_, i64>(0)?, "kind": r.get::<_, String>(1)?,
                      "detail": r.get::<_, String>(2)?}),
            )
        },
    )?);
    call["summary"] = conn
        .query_row(
            "SELECT summary, intent, intent_confidence, runner_up, sentiment, urgency, caller_name,
                    callback_number, requested_time, address, outcome, follow_up, created_at_ms
             FROM call_summaries WHERE call_id = ?1",
            [id],
            |r| {
                Ok(json!({
                    "summary": r.get::<_, String>(0)?, "intent": r.get::<_, String>(1)?,
                    "intent_confidence": r.get::<_, f64>(2)?, "runner_up": r.get::<_, Option<String>>(3)?,
                    "sentiment": r.get::<_, String>(4)?, "urgency": r.get::<_, String>(5)?,
                    "caller_name": r.get::<_, Option<String>>(6)?,
                    "callback_number": r.get::<_, Option<String>>(7)?,
                    "requested_time": r.get::<_, Option<String>>(8)?,
                    "address": r.get::<_, Option<String>>(9)?, "outcome": r.get::<_, String>(10)?,
                    "follow_up": r.get::<_, String>(11)?, "created_at_ms": r.get::<_, i64>(12)?,
                }))
            },
        )
        .optional()?
        .unwrap_or(Value::Null);
    call["recordings"] = Value::from(
        recordings
            .iter()
            .map(|r| {
                json!({"id": format!("{:016x}", r.id), "file": format!("recordings/{:016x}.wav", r.id),
                       "state": r.state, "duration_ms": r.duration_ms, "expires_at_ms": r.expires_at_ms})
            })
            .collect::<Vec<_>>(),
    );
    Ok(call)
}

/// What an erase removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erased {
    pub calls: usize,
    pub recordings: usize,
    pub stray_files: usize,
    pub in_progress: usize,
}

/// Delete the subject's calls with everything hanging off them (transcript,
/// drafts, summary, events) and crypto-shred their recordings; then fold
/// the write-ahead log so no deleted page lingers. Idempotent: a request
/// cut short is finished by running it again.
pub fn erase(
    conn: &Connection,
    data_dir: &Path,
    subject: Subject,
    now_ms: i64,
) -> Result<Erased, Error> {
    let found = find(conn, subject)?;
    let mut done = Erased {
        calls: 0,
        recordings: 0,
        stray_files: 0,
        in_progress: found.in_progress,
    };
    for id in &found.settled {
        done.recordings += shred(
            conn,
            data_dir,
            "call_id = ?1",
            &[id as &dyn rusqlite::ToSql],
        )?;
        done.calls += conn.execute("DELETE FROM calls WHERE id = ?1", params![id])?;
        // Nothing about them goes upstream afterwards: their events,
        // sent or not, go too.
        conn.execute("DELETE FROM outbox WHERE call_id = ?1", params![id])?;
        conn.execute("DELETE FROM outbox_dead WHERE call_id = ?1", params![id])?;
    }
    if matches!(subject, Subject::Workspace) {
        done.stray_files = orphans(conn, data_dir)?;
    }
    audit(
        conn,
        now_ms,
        "erase",
        &subject.audit_name(),
        (done.calls + done.recordings) as i64,
        &format!(
            "{} calls with their transcripts, drafts, summaries and events; {} recordings shredded; {} in progress skipped",
            done.calls, done.recordings, done.in_progress
        ),
    )?;
    checkpoint(conn)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::Recorder;

    struct Box_ {
        dir: std::path::PathBuf,
        conn: Connection,
    }

    fn setup(tag: &str) -> Box_ {
        let dir = std::env::temp_dir().join(format!("handlet-dsr-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conn = crate::store::open_for_tools(&dir.join("db.sqlite")).unwrap();
        DeviceKeys::load_or_create(&recording::keys_dir(&dir), 0).unwrap();
        Box_ { dir, conn }
    }

    impl Box_ {
        fn call(&self, id: &str, from: &str, ended: bool, said: &str) {
            self.conn
                .execute(
                    "INSERT INTO calls (id, sip_call_id, direction, from_uri, to_uri, transport,
                        started_at_ms, ended_at_ms, transcript_complete)
                     VALUES (?1, 'x', 'inbound', ?2, 'sip:agent@box', 'udp', 0, ?3, ?4)",
                    params![id, from, ended.then_some(1000), ended],
                )
                .unwrap();
            self.conn
                .execute(
                    "INSERT INTO transcript_segments (call_id, channel, start_ms, end_ms, text)
                     VALUES (?1, 'caller', 0, 900, ?2)",
                    params![id, said],
                )
                .unwrap();
            self.conn
                .execute(
                    "INSERT INTO call_media (call_id, packets, lost, late, duplicates, concealed, malformed,
                        jitter_ms, target_delay_ms) VALUES (?1, 50, 0, 0, 0, 0, 0, 1, 20)",
                    params![id],
                )
                .unwrap();
            let mut r = Recorder::create(&self.conn, &self.dir, id, 0, 30).unwrap();
            r.push_caller(&vec![0.1; 16_000]).unwrap();
            r.finish(&self.conn).unwrap();
        }

        fn count(&self, sql: &str) -> i64 {
            self.conn.query_row(sql, [], |r| r.get(0)).unwrap()
        }
    }

    #[test]
    fn a_number_finds_its_calls_however_it_appears() {
        let b = setup("find");
        b.call(
            "from",
            "sip:+447700900123@trunk",
            true,
            "my boiler is leaking",
        );
        b.call(
            "said",
            "sip:anonymous@trunk",
            true,
            "call me on 07700 900 123",
        );
        b.call(
            "other",
            "sip:+447700900999@trunk",
            true,
            "what time do you open",
        );
        b.call("live", "<sip:07700900123@trunk>", false, "hello");
        b.call("keyed", "sip:anonymous@trunk", true, "");
        for (i, k) in "07700900123".chars().enumerate() {
            b.conn
                .execute(
                    "INSERT INTO call_events (call_id, at_ms, kind, detail) VALUES ('keyed', ?1, 'dtmf', ?2)",
                    params![i as i64, format!("{k} (rfc4733)")],
                )
                .unwrap();
        }
        let p = Phone::parse("+44 7700 900123").unwrap();
        let f = find(&b.conn, Subject::Phone(&p)).unwrap();
        assert_eq!(f.settled, vec!["from", "keyed", "said"]);
        assert_eq!(f.in_progress, 1);

        let e = erase(&b.conn, &b.dir, Subject::Phone(&p), 5).unwrap();
        assert_eq!((e.calls, e.recordings, e.in_progress), (3, 3, 1));
        let ids: Vec<String> = b
            .conn
            .prepare("SELECT id FROM calls ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, vec!["live", "other"]);
        assert_eq!(b.count("SELECT COUNT(*) FROM transcript_segments"), 2);
        assert_eq!(b.count("SELECT COUNT(*) FROM call_events"), 0);
        assert_eq!(b.count("SELECT COUNT(*) FROM call_media"), 2);
        assert_eq!(b.count("SELECT COUNT(*) FROM recordings"), 2);
        assert_eq!(b.count("SELECT COUNT(*) FROM recording_keys"), 2);
        assert_eq!(
            std::fs::read_dir(recording::dir(&b.dir)).unwrap().count(),
            2
        );
        // Audited without the number; a second run finds nothing more.
        let log = super::super::audit_log(&b.conn).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].request.as_str(), log[0].items), ("erase", 6));
        assert!(
            log[0].subject.starts_with("phone <redacted:"),
            "{:?}",
            log[0]
        );
        assert!(!format!("{log:?}").contains("900123"));
        let again = erase(&b.conn, &b.dir, Subject::Phone(&p), 6).unwrap();
        assert_eq!((again.calls, again.recordings), (0, 0));
        std::fs::remove_dir_all(&b.dir).unwrap();
    }

    #[test]
    fn export_writes_json_and_wavs_into_an_empty_dir_only() {
        let b = setup("export");
        b.call("a", "sip:07700900123@trunk", true, "quote for a boiler");
        b.call("b", "sip:07700900999@trunk", true, "unrelated");
        let p = Phone::parse("07700900123").unwrap();
        let out = b.dir.join("out");
        let e = export(&b.conn, &b.dir, Subject::Phone(&p), &out, 7).unwrap();
        assert_eq!((e.calls, e.recordings), (1, 1));
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("calls.json")).unwrap())
                .unwrap();
        assert_eq!(doc["subject"], "+447700900123");
        assert_eq!(doc["calls"].as_array().unwrap().len(), 1);
        assert_eq!(
            doc["calls"][0]["transcript"][0]["text"],
            "quote for a boiler"
        );
        let wav = out.join(doc["calls"][0]["recordings"][0]["file"].as_str().unwrap());
        let a = handlet_dsp::wav::read(&wav).unwrap();
        assert_eq!((a.rate, a.samples.len()), (16_000, 16_000));
        // Not into a directory that already holds something.
        let err = export(&b.conn, &b.dir, Subject::Phone(&p), &out, 8).unwrap_err();
        assert!(err.to_string().contains("is not empty"), "{err}");
        // Into something that cannot be a directory: a clear error, nothing left.
        let file = b.dir.join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let err = export(&b.conn, &b.dir, Subject::Phone(&p), &file.join("sub"), 9).unwrap_err();
        assert!(
            err.to_string().contains("cannot write the export to"),
            "{err}"
        );
        // A missing device key fails before anything is written.
        std::fs::remove_dir_all(recording::keys_dir(&b.dir)).unwrap();
        let out2 = b.dir.join("out2");
        let err = export(&b.conn, &b.dir, Subject::Phone(&p), &out2, 10).unwrap_err();
        assert!(err.to_string().contains("device key 1 is missing"), "{err}");
        assert!(!out2.exists());
        assert_eq!(super::super::audit_log(&b.conn).unwrap().len(), 1);
        std::fs::remove_dir_all(&b.dir).unwrap();
    }

    #[test]
    fn workspace_erase_takes_every_settled_call_and_stray_files() {
        let b = setup("workspace");
        b.call("a", "sip:07700900123@trunk", true, "one");
        b.call("b", "sip:anonymous@trunk", true, "two");
        b.call("c", "sip:anonymous@trunk", false, "three");
        std::fs::write(recording::dir(&b.dir).join("00000000deadbeef.hrec"), b"x").unwrap();
        let e = erase(&b.conn, &b.dir, Subject::Workspace, 1).unwrap();
        assert_eq!(
            (e.calls, e.recordings, e.stray_files, e.in_progress),
            (2, 2, 1, 1)
        );
        assert_eq!(b.count("SELECT COUNT(*) FROM calls"), 1);
        assert_eq!(b.count("SELECT COUNT(*) FROM recordings"), 1);
        std::fs::remove_dir_all(&b.dir).unwrap();
    }
}
