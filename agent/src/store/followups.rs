//! Follow-ups and voicemails: what the business must do after a call.
//! Written through the store's writer ([`super::Store::add_followup`],
//! [`super::Store::voicemail`]); read and closed here by the CLI.

use crate::Error;
use rusqlite::{Connection, OptionalExtension, params};

/// Where a follow-up came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The receptionist took a message.
    Message,
    /// The caller left a voicemail.
    Voicemail,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Voicemail => "voicemail",
        }
    }
}

/// How soon someone should call back: the intent's urgency.
pub use crate::config::Urgency;

/// The call-back deadline from `at_ms`: within the hour for urgent calls,
/// a day for normal ones, three days for the rest.
pub fn due_by(urgency: Urgency, at_ms: i64) -> i64 {
    const HOUR: i64 = 3_600_000;
    at_ms
        + match urgency {
            Urgency::High => HOUR,
            Urgency::Normal => 24 * HOUR,
            Urgency::Low => 72 * HOUR,
        }
}

/// A new follow-up.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFollowUp {
    pub call_id: String,
    pub kind: Kind,
    pub name: Option<String>,
    pub number: Option<String>,
    pub number_confirmed: bool,
    pub about: Option<String>,
    pub address: Option<String>,
    pub intent: Option<String>,
    pub urgency: Urgency,
    /// False when the caller left before the message was finished.
    pub complete: bool,
    pub created_at_ms: i64,
}

pub(crate) fn insert(conn: &Connection, f: &NewFollowUp) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO followups (call_id, kind, name, number, number_confirmed, about, address,
            intent, urgency, complete, created_at_ms, due_by_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            f.call_id,
            f.kind.as_str(),
            f.name,
            f.number,
            f.number_confirmed,
            f.about,
            f.address,
            f.intent,
            f.urgency.as_str(),
            f.complete,
            f.created_at_ms,
            due_by(f.urgency, f.created_at_ms)
        ],
    )?;
    Ok(())
}

/// A stored follow-up.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowUp {
    pub id: i64,
    pub call_id: String,
    pub kind: String,
    pub name: Option<String>,
    pub number: Option<String>,
    pub number_confirmed: bool,
    pub about: Option<String>,
    pub address: Option<String>,
    pub intent: Option<String>,
    pub urgency: String,
    pub complete: bool,
    pub created_at_ms: i64,
    pub due_by_ms: i64,
    pub done_at_ms: Option<i64>,
}

/// Follow-ups, most urgent deadline first; only open ones if `open`.
pub fn list(conn: &Connection, open: bool) -> Result<Vec<FollowUp>, Error> {
    let mut q = conn.prepare(
        "SELECT id, call_id, kind, name, number, number_confirmed, about, address, intent,
                urgency, complete, created_at_ms, due_by_ms, done_at_ms
         FROM followups WHERE (?1 = 0 OR done_at_ms IS NULL)
         ORDER BY done_at_ms IS NOT NULL, due_by_ms, id",
    )?;
    let rows = q.query_map([open as i64], |r| {
        Ok(FollowUp {
            id: r.get(0)?,
            call_id: r.get(1)?,
            kind: r.get(2)?,
            name: r.get(3)?,
            number: r.get(4)?,
            number_confirmed: r.get(5)?,
            about: r.get(6)?,
            address: r.get(7)?,
            intent: r.get(8)?,
            urgency: r.get(9)?,
            complete: r.get(10)?,
            created_at_ms: r.get(11)?,
            due_by_ms: r.get(12)?,
            done_at_ms: r.get(13)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Close follow-up `id`; an unknown id is an error, one already done is
/// left as it was (and says so).
pub fn done(conn: &Connection, id: i64, at_ms: i64) -> Result<bool, Error> {
    let was: Option<Option<i64>> = conn
        .query_row(
            "SELECT done_at_ms FROM followups WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    match was {
        None => Err(Error::Store(format!(
            "no follow-up {id}; `handlet followups` lists them"
        ))),
        Some(Some(_)) => Ok(false),
        Some(None) => {
            conn.execute(
                "UPDATE followups SET done_at_ms = ?2 WHERE id = ?1",
                params![id, at_ms],
            )?;
            Ok(true)
        }
    }
}

/// A voicemail and the state of its listening.
#[derive(Debug, Clone, PartialEq)]
pub struct Voicemail {
    pub call_id: String,
    pub mailbox: String,
    pub started_at_ms: i64,
    pub duration_ms: Option<i64>,
    pub heard_at_ms: Option<i64>,
    /// The caller (E.164), if not withheld.
    pub caller: Option<String>,
    /// Its recording's id, for playing.
    pub recording: Option<i64>,
}

pub fn voicemails(conn: &Connection) -> Result<Vec<Voicemail>, Error> {
    let mut q = conn.prepare(
        "SELECT v.call_id, v.mailbox, v.started_at_ms, v.duration_ms, v.heard_at_ms, c.caller,
                (SELECT MIN(r.id) FROM recordings r WHERE r.call_id = v.call_id)
         FROM voicemails v JOIN calls c ON c.id = v.call_id
         ORDER BY v.heard_at_ms IS NOT NULL, v.started_at_ms DESC",
    )?;
    let rows = q.query_map([], |r| {
        Ok(Voicemail {
            call_id: r.get(0)?,
            mailbox: r.get(1)?,
            started_at_ms: r.get(2)?,
            duration_ms: r.get(3)?,
            heard_at_ms: r.get(4)?,
            caller: r.get(5)?,
            recording: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The one voicemail whose call id starts with `prefix`.
pub fn voicemail(conn: &Connection, prefix: &str) -> Result<Voicemail, Error> {
    let all = voicemails(conn)?;
    let mut found = all.into_iter().filter(|v| v.call_id.starts_with(prefix));
    match (found.next(), found.next()) {
        (Some(v), None) if !prefix.is_empty() => Ok(v),
        (Some(_), Some(_)) => Err(Error::Store(format!(
            "{prefix:?} names more than one voicemail; give more of its id"
        ))),
        _ => Err(Error::Store(format!(
            "no voicemail {prefix:?}; `handlet voicemail list` lists them"
        ))),
    }
}

/// How many finished voicemails are new, and how many heard: what a
/// desk phone's message lamp shows.
pub fn voicemail_counts(conn: &Connection) -> Result<(u32, u32), Error> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FILTER (WHERE heard_at_ms IS NULL),
                COUNT(*) FILTER (WHERE heard_at_ms IS NOT NULL)
         FROM voicemails WHERE duration_ms IS NOT NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

/// Mark a voicemail listened to (the first time only).
pub fn mark_heard(conn: &Connection, call_id: &str, at_ms: i64) -> Result<(), Error> {
    conn.execute(
        "UPDATE voicemails SET heard_at_ms = ?2 WHERE call_id = ?1 AND heard_at_ms IS NULL",
        params![call_id, at_ms],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (std::path::PathBuf, Connection) {
        crate::store::test_db_with_call("followups")
    }

    fn new(urgency: Urgency, at: i64) -> NewFollowUp {
        NewFollowUp {
            call_id: "c1".into(),
            kind: Kind::Message,
            name: Some("John".into()),
            number: Some("07700900123".into()),
            number_confirmed: true,
            about: Some("a quote".into()),
            address: None,
            intent: Some("quote".into()),
            urgency,
            complete: true,
            created_at_ms: at,
        }
    }

    #[test]
    fn follow_ups_are_listed_by_deadline_and_closed_once() {
        let (dir, conn) = db();
        insert(&conn, &new(Urgency::Normal, 1_000)).unwrap();
        insert(&conn, &new(Urgency::High, 2_000)).unwrap();
        let all = list(&conn, false).unwrap();
        assert_eq!(all.len(), 2);
        // The urgent one first: due an hour after it came in.
        assert_eq!(all[0].urgency, "high");
        assert_eq!(all[0].due_by_ms, 2_000 + 3_600_000);
        assert_eq!(all[1].due_by_ms, 1_000 + 86_400_000);
        assert!(done(&conn, all[0].id, 5_000).unwrap());
        assert!(!done(&conn, all[0].id, 6_000).unwrap(), "already done");
        let open = list(&conn, true).unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].id, all[1].id);
        let e = done(&conn, 999, 0).unwrap_err().to_string();
        assert!(e.contains("no follow-up 999"), "{e}");
        // Erasing the call takes its follow-ups.
        conn.execute("DELETE FROM calls WHERE id = 'c1'", [])
            .unwrap();
        assert!(list(&conn, false).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn voicemails_are_new_until_heard() {
        let (dir, conn) = db();
        conn.execute(
            "INSERT INTO voicemails (call_id, mailbox, started_at_ms, duration_ms) VALUES ('c1', 'main', 1000, 5000)",
            [],
        )
        .unwrap();
        assert_eq!(voicemail_counts(&conn).unwrap(), (1, 0));
        let v = voicemail(&conn, "c").unwrap();
        assert_eq!(v.heard_at_ms, None);
        assert_eq!(v.caller.as_deref(), Some("+447700900123"));
        mark_heard(&conn, "c1", 7_000).unwrap();
        mark_heard(&conn, "c1", 9_000).unwrap();
        assert_eq!(voicemail(&conn, "c1").unwrap().heard_at_ms, Some(7_000));
        assert_eq!(voicemail_counts(&conn).unwrap(), (0, 1));
        assert!(voicemail(&conn, "zz").is_err());
        assert!(voicemail(&conn, "").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
