//! The inbox: commands from upstream by id, so each runs once however
//! often it is delivered, and its result goes up as an outbox event
//! written in the same transaction that marks it done.

use super::outbox::durably;
use rusqlite::{Connection, OptionalExtension, params};

/// Where a command stands when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Never seen: run it.
    New,
    /// Seen, and cut short before its result was written (the agent was
    /// killed): run it again (every command is idempotent).
    Unfinished,
    /// Done, its result is in the outbox: nothing to do.
    Done,
}

/// Note that command `id` arrived.
pub fn arrive(conn: &Connection, id: &str, kind: &str, now_ms: i64) -> rusqlite::Result<Arrival> {
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO inbox (id, kind, received_at_ms) VALUES (?1, ?2, ?3)",
        params![id, kind, now_ms],
    )?;
    if inserted == 1 {
        return Ok(Arrival::New);
    }
    let done: Option<Option<i64>> = conn
        .query_row("SELECT done_at_ms FROM inbox WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(match done {
        Some(Some(_)) => Arrival::Done,
        _ => Arrival::Unfinished,
    })
}

/// Command `id` is done: marked so, and its result queued upstream, in
/// one durable transaction.
pub fn finish(
    conn: &Connection,
    id: &str,
    kind: &str,
    ok: bool,
    payload: &serde_json::Value,
    now_ms: i64,
) -> rusqlite::Result<()> {
    durably(conn, |tx| {
        tx.execute(
            "INSERT INTO inbox (id, kind, received_at_ms, done_at_ms, ok) VALUES (?1, ?2, ?3, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET done_at_ms = excluded.done_at_ms, ok = excluded.ok",
            params![id, kind, now_ms, ok],
        )?;
        super::outbox::enqueue(
            tx,
            "up/command",
            None,
            &format!("command:{id}"),
            payload,
            now_ms,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_runs_once_and_one_cut_short_runs_again() {
        let dir = std::env::temp_dir().join(format!("handlet-inbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conn = crate::store::open_for_tools(&dir.join("db.sqlite")).unwrap();
        assert_eq!(arrive(&conn, "c-1", "sweep", 1).unwrap(), Arrival::New);
        assert_eq!(
            arrive(&conn, "c-1", "sweep", 2).unwrap(),
            Arrival::Unfinished
        );
        let p = serde_json::json!({"schema": "handlet.command/1", "id": "c-1"});
        finish(&conn, "c-1", "sweep", true, &p, 3).unwrap();
        // A second finish (a replay racing the first) is still one event.
        finish(&conn, "c-1", "sweep", true, &p, 4).unwrap();
        assert_eq!(arrive(&conn, "c-1", "sweep", 5).unwrap(), Arrival::Done);
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE topic = 'up/command'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
        // A refusal (no run at all) is finished straight away.
        finish(&conn, "c-2", "reboot", false, &p, 6).unwrap();
        assert_eq!(arrive(&conn, "c-2", "reboot", 7).unwrap(), Arrival::Done);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
