//! The desired-state document from upstream (`down/config`, retained):
//! what the business's account wants this box to do, versioned, read and
//! read here; the uplink checks it against the local config exactly as
//! the file itself is checked, stores it and applies it.
//!
//! ```json
//! {"version": 7, "routing": { …the [routing] table, as JSON… },
//!  "privacy": {"recording_retention_days": 30, "transcript_retention_days": 365}}
//! ```
//!
//! Only what can change while calls run may be in it: today the routing
//! plan, the retention periods and what the receptionist says. Anything else (trunks, extensions: their secrets never travel in
//! it) is refused by name, and the whole document with it.

use serde_json::Value;

/// A document bigger than this is refused.
pub const MAX_BYTES: usize = 256 * 1024;

/// A document read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub version: u64,
    /// The `[routing]` table it sets (absent: the local file's).
    pub routing: Option<crate::routing::RoutingConfig>,
    /// Retention periods it sets (`privacy.*_retention_days`; each absent:
    /// the file's).
    pub retention: Retention,
    /// `[receptionist]` settings it sets, each over the file's: what the
    /// box says and how patient it is (never its mode: the voice is loaded
    /// at start or not at all).
    pub receptionist: serde_json::Map<String, Value>,
}

/// The `[receptionist]` keys a document may set.
pub const RECEPTIONIST_KEYS: &[&str] = &[
    "business",
    "greeting",
    "notice",
    "ask",
    "clarify",
    "menu",
    "connecting",
    "unsure_below",
    "max_turns",
    "silence_secs",
    "address_for",
];

/// `"privacy": {"recording_retention_days": 30, "transcript_retention_days": 365}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub recording_retention_days: Option<u32>,
    pub transcript_retention_days: Option<u32>,
}

/// Why a document was refused, and its version where it had one (so the
/// refusal can be reported against it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub version: Option<u64>,
    pub why: String,
}

/// Read a document.
pub fn parse(body: &[u8]) -> Result<Desired, Refused> {
    let refuse = |version, why: String| Refused { version, why };
    if body.len() > MAX_BYTES {
        return Err(refuse(
            None,
            format!(
                "a config document of {} bytes (at most {MAX_BYTES})",
                body.len()
            ),
        ));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| refuse(None, format!("the config document is not JSON ({e})")))?;
    let Some(obj) = v.as_object() else {
        return Err(refuse(None, "the config document is not an object".into()));
    };
    let version = obj
        .get("version")
        .and_then(Value::as_u64)
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            refuse(
                None,
                "the config document needs \"version\", a whole number above 0".into(),
            )
        })?;
    for key in obj.keys() {
        match key.as_str() {
            "version" | "routing" | "privacy" | "receptionist" => {}
            "trunk" | "trunks" | "extension" | "extensions" | "sync" => {
                return Err(refuse(
                    Some(version),
                    format!(
                        "{key} cannot be set from upstream (secrets and the box's identity never travel in it)"
                    ),
                ));
            }
            other => {
                let other: String = other.chars().take(32).collect();
                return Err(refuse(
                    Some(version),
                    format!(
                        "{other:?} cannot be set from upstream (only \"routing\", \"privacy\" retention and \"receptionist\")"
                    ),
                ));
            }
        }
    }
    let routing = match obj.get("routing") {
        None => None,
        Some(r) => Some(
            serde_json::from_value::<crate::routing::RoutingConfig>(r.clone())
                .map_err(|e| refuse(Some(version), format!("routing: {e}")))?,
        ),
    };
    let retention = match obj.get("privacy") {
        None => Retention::default(),
        Some(r) => serde_json::from_value::<Retention>(r.clone()).map_err(|e| {
            refuse(
                Some(version),
                format!(
                    "privacy: {e} (only recording_retention_days and transcript_retention_days may be set from upstream)"
                ),
            )
        })?,
    };
    let receptionist = match obj.get("receptionist") {
        None => serde_json::Map::new(),
        Some(Value::Object(m)) => {
            if let Some(k) = m.keys().find(|k| !RECEPTIONIST_KEYS.contains(&k.as_str())) {
                let k: String = k.chars().take(32).collect();
                return Err(refuse(
                    Some(version),
                    format!(
                        "receptionist.{k} cannot be set from upstream (only {})",
                        RECEPTIONIST_KEYS.join(", ")
                    ),
                ));
            }
            m.clone()
        }
        Some(_) => {
            return Err(refuse(
                Some(version),
                "receptionist: an object of its settings".into(),
            ));
        }
    };
    Ok(Desired {
        version,
        routing,
        retention,
        receptionist,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_sets_the_routing_plan_and_nothing_it_may_not() {
        let d = parse(br#"{"version": 3, "routing": {"open": "voicemail"}}"#).unwrap();
        assert_eq!(d.version, 3);
        assert_eq!(d.routing.as_ref().unwrap().open, "voicemail");

        let e = parse(br#"{"version": 4, "trunk": []}"#).unwrap_err();
        assert_eq!(e.version, Some(4));
        assert!(e.why.contains("secrets"), "{}", e.why);
        let e = parse(br#"{"version": 5, "routing": {"opne": "x"}}"#).unwrap_err();
        assert!(
            e.why.starts_with("routing:") && e.why.contains("opne"),
            "{}",
            e.why
        );
        assert_eq!(parse(br#"{"routing": {}}"#).unwrap_err().version, None);
        assert_eq!(parse(b"[]").unwrap_err().version, None);
        let d = parse(br#"{"version": 6, "privacy": {"recording_retention_days": 7}}"#).unwrap();
        assert_eq!(d.retention.recording_retention_days, Some(7));
        assert_eq!(d.retention.transcript_retention_days, None);
        let e = parse(br#"{"version": 7, "privacy": {"recording": false}}"#).unwrap_err();
        assert!(e.why.contains("only recording_retention_days"), "{}", e.why);
        let d = parse(br#"{"version": 8, "receptionist": {"business": "Acme"}}"#).unwrap();
        assert_eq!(d.receptionist["business"], "Acme");
        let e = parse(br#"{"version": 9, "receptionist": {"mode": "listen"}}"#).unwrap_err();
        assert!(
            e.why.contains("receptionist.mode cannot be set"),
            "{}",
            e.why
        );
    }
}
