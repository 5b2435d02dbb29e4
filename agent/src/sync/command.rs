//! Commands from upstream (`handlet/v1/{device}/down/command`), parsed
//! and bounded here; the uplink runs them once each (the inbox table
//! remembers their ids) and reports each result as an `up/command` event.
//!
//! A command is a JSON object with an `id` the backend chose (it re-sends
//! the same command until it sees the result: the broker is not a durable
//! queue) and a `kind`:
//!
//! - `{"id": "…", "kind": "erase", "number": "+447700900123"}`: a data
//!   subject's erase, as `handlet privacy erase --phone`;
//! - `{"id": "…", "kind": "sweep"}`: the retention sweep, now;
//! - `{"id": "…", "kind": "rotate_keys"}`: a new recording device key,
//!   as `handlet keys rotate`.

use serde_json::Value;

/// A command bigger than this is not read.
pub const MAX_BYTES: usize = 16 * 1024;
/// Ids are 1 to 64 letters, digits, `-`, `_`, `.` and `:`.
pub const MAX_ID: usize = 64;

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Erase everything about the caller with this number (as given: it is
    /// parsed with the site's country when run).
    Erase {
        number: String,
    },
    Sweep,
    RotateKeys,
}

impl Action {
    /// How the inbox, the result and the log name it (never its number).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Erase { .. } => "erase",
            Action::Sweep => "sweep",
            Action::RotateKeys => "rotate_keys",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub id: String,
    pub action: Action,
}

/// Why a command cannot be run. With an id, the refusal is reported as
/// the command's result (so the backend stops re-sending it); without
/// one there is nobody to tell, and it is only logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub id: Option<String>,
    pub why: String,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// Read one command.
pub fn parse(body: &[u8]) -> Result<Command, Refused> {
    let refuse = |id: Option<&str>, why: String| Refused {
        id: id.map(str::to_string),
        why,
    };
    if body.len() > MAX_BYTES {
        return Err(refuse(
            None,
            format!("a command of {} bytes (at most {MAX_BYTES})", body.len()),
        ));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| refuse(None, format!("a command that is not JSON ({e})")))?;
    let id = match v.get("id").and_then(Value::as_str) {
        Some(id) if valid_id(id) => id,
        Some(_) => {
            return Err(refuse(
                None,
                format!("a command id must be 1 to {MAX_ID} letters, digits, - _ . :"),
            ));
        }
        None => return Err(refuse(None, "a command without an id".into())),
    };
    let action = match v.get("kind").and_then(Value::as_str) {
        Some("erase") => match v.get("number").and_then(Value::as_str) {
            Some(n) if !n.trim().is_empty() && n.len() <= 64 => Action::Erase {
                number: n.to_string(),
            },
            _ => {
                return Err(refuse(
                    Some(id),
                    "erase needs \"number\": the caller's phone number".into(),
                ));
            }
        },
        Some("sweep") => Action::Sweep,
        Some("rotate_keys") => Action::RotateKeys,
        Some(other) => {
            // The kind is the backend's word: cut to keep the result small.
            let other: String = other.chars().take(32).collect();
            return Err(refuse(
                Some(id),
                format!("unknown kind {other:?} (erase, sweep, rotate_keys)"),
            ));
        }
        None => {
            return Err(refuse(
                Some(id),
                "a command needs a \"kind\": erase, sweep or rotate_keys".into(),
            ));
        }
    };
    Ok(Command {
        id: id.to_string(),
        action,
    })
}

/// The result event's payload (`handlet.command/1`): what was done, in
/// counts; never the number an erase named.
pub fn result_payload(
    id: &str,
    kind: &str,
    outcome: &Result<Value, String>,
    done_at_ms: i64,
) -> Value {
    let (ok, result, error) = match outcome {
        Ok(r) => (true, r.clone(), Value::Null),
        Err(e) => (false, Value::Null, Value::from(e.as_str())),
    };
    serde_json::json!({
        "schema": "handlet.command/1",
        "id": id,
        "kind": kind,
        "ok": ok,
        "result": result,
        "error": error,
        "done_at_ms": done_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_and_bad_ones_refused_with_their_id_where_there_is_one() {
        assert_eq!(
            parse(br#"{"id":"c-1","kind":"erase","number":"+447700900123"}"#),
            Ok(Command {
                id: "c-1".into(),
                action: Action::Erase {
                    number: "+447700900123".into()
                }
            })
        );
        assert_eq!(
            parse(br#"{"id":"c-2","kind":"sweep"}"#).unwrap().action,
            Action::Sweep
        );
        assert_eq!(
            parse(br#"{"id":"c-3","kind":"rotate_keys"}"#)
                .unwrap()
                .action,
            Action::RotateKeys
        );
        let e = parse(br#"{"id":"c-4","kind":"reboot"}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("c-4"));
        assert!(e.why.contains("unknown kind \"reboot\""), "{}", e.why);
        let e = parse(br#"{"id":"c-5","kind":"erase"}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("c-5"));
        assert_eq!(parse(br#"{"kind":"sweep"}"#).unwrap_err().id, None);
        assert_eq!(parse(b"nonsense").unwrap_err().id, None);
        let long = format!(r#"{{"id":"{}","kind":"sweep"}}"#, "x".repeat(65));
        assert_eq!(parse(long.as_bytes()).unwrap_err().id, None);
        let big = format!(
            r#"{{"id":"c","kind":"sweep","pad":"{}"}}"#,
            "x".repeat(MAX_BYTES)
        );
        assert!(parse(big.as_bytes()).unwrap_err().why.contains("bytes"));
    }

    #[test]
    fn a_result_names_the_command_and_never_its_number() {
        let p = result_payload("c-1", "erase", &Ok(serde_json::json!({"calls": 2})), 5);
        assert_eq!(p["ok"], true);
        assert_eq!(p["result"]["calls"], 2);
        assert!(p["error"].is_null());
        let p = result_payload("c-2", "erase", &Err("not a number".into()), 5);
        assert_eq!(p["ok"], false);
        assert_eq!(p["error"], "not a number");
    }
}
