//! Read-side queries, on a connection of their own.

use super::{CallRow, SegmentRow, open_connection};
use crate::Error;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

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

    /// Every stored registration still valid at `now_ms` (wall clock);
    /// expired ones are deleted on the way.
    pub fn registrations(
        &self,
        now_ms: i64,
    ) -> Result<Vec<(String, super::RegistrationRow)>, Error> {
        self.conn.execute(
            "DELETE FROM registrations WHERE expires_at_ms <= ?1",
            params![now_ms],
        )?;
        let mut q = self.conn.prepare(
            "SELECT extension, contact, reach, transport, expires_at_ms, call_id, cseq
             FROM registrations ORDER BY extension, expires_at_ms",
        )?;
        let rows = q.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, u32>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (ext, contact, reach, transport, expires_at_ms, call_id, cseq) = row?;
            // A row we cannot read is skipped: the phone registers again.
            let Ok(reach) = reach.parse() else { continue };
            out.push((
                ext,
                super::RegistrationRow {
                    contact,
                    reach,
                    transport,
                    expires_at_ms,
                    call_id,
                    cseq,
                },
            ));
        }
        Ok(out)
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
    /// Finished voicemails: (new, heard).
    pub fn voicemail_counts(&self) -> Result<(u32, u32), Error> {
        super::followups::voicemail_counts(&self.conn)
    }

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
