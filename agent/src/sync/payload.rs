//! The payloads that go upstream, built field by field from the stored
//! facts under the workspace's [`Policy`]. Pure: no I/O, no clock.
//!
//! Every payload is a JSON object with `schema` (`handlet.<kind>/<n>`: a
//! backend dispatches on it, and `n` only goes up when a field changes
//! meaning) and the fields docs/SYNC.md lists for its kind. The envelope
//! (message id, device, sequence) is added by the outbox, not here.

use super::{NumberKey, Policy, Share};
use serde_json::{Map, Value, json};

/// A caller as upstream may see them.
fn caller(number: Option<&str>, policy: &Policy, key: &NumberKey) -> Value {
    match number {
        None => json!({ "withheld": true }),
        Some(n) if policy.allows(Share::Numbers) => json!({ "withheld": false, "number": n }),
        Some(n) => json!({ "withheld": false, "number_hash": key.hash(n) }),
    }
}

/// `value` under `name` when `share` is allowed and there is one.
fn shared(
    out: &mut Map<String, Value>,
    policy: &Policy,
    share: Share,
    name: &str,
    value: Option<&str>,
) {
    if policy.allows(share)
        && let Some(v) = value
    {
        out.insert(name.into(), Value::String(v.to_string()));
    }
}

/// How a call ended up, from its stored rows.
#[derive(Debug, Clone, Default)]
pub struct CallFacts<'a> {
    pub call_id: &'a str,
    /// "inbound" or "outbound".
    pub direction: &'a str,
    pub started_at_ms: i64,
    pub answered_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub end_reason: Option<&'a str>,
    /// The business's own number the call was for.
    pub did: Option<&'a str>,
    /// The caller's number, E.164, if not withheld.
    pub caller: Option<&'a str>,
    /// Where the plan sent the call, in order: destinations only
    /// ("receptionist", "group:office", "voicemail:main"), never the
    /// reasons' words, which can name the caller.
    pub route: &'a [String],
    pub understood: Option<Understood<'a>>,
    pub media: Option<Media>,
}

/// What the box understood of the caller (the stored summary's fields).
#[derive(Debug, Clone, Default)]
pub struct Understood<'a> {
    pub intent: &'a str,
    pub confidence: f32,
    pub urgency: &'a str,
    pub sentiment: &'a str,
    /// A time the caller asked for, as extracted ("Friday morning").
    pub requested_time: Option<&'a str>,
    /// One of the summary's fixed outcomes ("message taken", ...).
    pub outcome: &'a str,
    /// The summary's text: it quotes the caller.
    pub text: &'a str,
    pub caller_name: Option<&'a str>,
    pub callback_number: Option<&'a str>,
    pub address: Option<&'a str>,
}

/// The call's media figures (counts and delays, nothing of the audio).
#[derive(Debug, Clone, Copy, Default)]
pub struct Media {
    pub packets: u64,
    pub lost: u64,
    pub late: u64,
    pub concealed: u64,
    pub jitter_ms: u32,
}

/// `handlet.call/1`: one per call, once it has ended and been summarised.
pub fn call(f: &CallFacts, policy: &Policy, key: &NumberKey) -> Value {
    let mut o = Map::new();
    o.insert("schema".into(), json!("handlet.call/1"));
    o.insert("call_id".into(), json!(f.call_id));
    o.insert("direction".into(), json!(f.direction));
    o.insert("started_at_ms".into(), json!(f.started_at_ms));
    o.insert("answered_at_ms".into(), json!(f.answered_at_ms));
    o.insert("ended_at_ms".into(), json!(f.ended_at_ms));
    o.insert("end_reason".into(), json!(f.end_reason));
    o.insert("did".into(), json!(f.did));
    o.insert("caller".into(), caller(f.caller, policy, key));
    o.insert("route".into(), json!(f.route));
    if let Some(u) = &f.understood {
        let mut s = Map::new();
        s.insert("intent".into(), json!(u.intent));
        // Two decimals: the figure, not the float's noise.
        s.insert(
            "confidence".into(),
            json!((f64::from(u.confidence) * 100.0).round() / 100.0),
        );
        s.insert("urgency".into(), json!(u.urgency));
        s.insert("sentiment".into(), json!(u.sentiment));
        s.insert("requested_time".into(), json!(u.requested_time));
        s.insert("outcome".into(), json!(u.outcome));
        shared(&mut s, policy, Share::Quotes, "text", Some(u.text));
        shared(&mut s, policy, Share::Names, "caller_name", u.caller_name);
        shared(&mut s, policy, Share::Addresses, "address", u.address);
        if let Some(n) = u.callback_number {
            s.insert("callback".into(), caller(Some(n), policy, key));
        }
        o.insert("summary".into(), Value::Object(s));
    }
    if let Some(m) = f.media {
        o.insert(
            "media".into(),
            json!({
                "packets": m.packets,
                "lost": m.lost,
                "late": m.late,
                "concealed": m.concealed,
                "jitter_ms": m.jitter_ms,
            }),
        );
    }
    Value::Object(o)
}

/// A follow-up task as stored.
#[derive(Debug, Clone, Default)]
pub struct FollowUpFacts<'a> {
    pub id: i64,
    pub call_id: &'a str,
    /// "message" or "voicemail".
    pub kind: &'a str,
    pub intent: Option<&'a str>,
    pub urgency: &'a str,
    pub due_by_ms: i64,
    pub complete: bool,
    pub created_at_ms: i64,
    /// Who to call back, E.164.
    pub number: Option<&'a str>,
    pub number_confirmed: bool,
    pub name: Option<&'a str>,
    /// What it is about, in the caller's words.
    pub about: Option<&'a str>,
    pub address: Option<&'a str>,
    /// Done (`handlet followups done`), if it is.
    pub done_at_ms: Option<i64>,
}

/// `handlet.followup/1`: a task for the business, on creation and when
/// done. The task itself is fields (kind, intent, urgency, due by): a
/// sentence such as "call back on {number}" is the backend's to write.
pub fn followup(f: &FollowUpFacts, policy: &Policy, key: &NumberKey) -> Value {
    let mut o = Map::new();
    o.insert("schema".into(), json!("handlet.followup/1"));
    o.insert("followup_id".into(), json!(f.id));
    o.insert("call_id".into(), json!(f.call_id));
    o.insert("kind".into(), json!(f.kind));
    o.insert("intent".into(), json!(f.intent));
    o.insert("urgency".into(), json!(f.urgency));
    o.insert("due_by_ms".into(), json!(f.due_by_ms));
    o.insert("complete".into(), json!(f.complete));
    o.insert("created_at_ms".into(), json!(f.created_at_ms));
    o.insert("done_at_ms".into(), json!(f.done_at_ms));
    o.insert("callback".into(), caller(f.number, policy, key));
    o.insert("number_confirmed".into(), json!(f.number_confirmed));
    shared(&mut o, policy, Share::Names, "name", f.name);
    shared(&mut o, policy, Share::Quotes, "about", f.about);
    shared(&mut o, policy, Share::Addresses, "address", f.address);
    Value::Object(o)
}

/// A voicemail left.
#[derive(Debug, Clone, Default)]
pub struct VoicemailFacts<'a> {
    pub call_id: &'a str,
    pub mailbox: &'a str,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    pub caller: Option<&'a str>,
}

/// `handlet.voicemail/1`: that a voicemail waits, never its audio or words.
pub fn voicemail(v: &VoicemailFacts, policy: &Policy, key: &NumberKey) -> Value {
    json!({
        "schema": "handlet.voicemail/1",
        "call_id": v.call_id,
        "mailbox": v.mailbox,
        "started_at_ms": v.started_at_ms,
        "duration_ms": v.duration_ms,
        "caller": caller(v.caller, policy, key),
    })
}

/// Every field name a payload of each kind may carry, by policy: what
/// docs/SYNC.md lists and the tests hold the builders to.
pub fn allowed_fields(schema: &str, policy: &Policy) -> Vec<&'static str> {
    let mut f: Vec<&'static str> = match schema {
        "handlet.call/1" => vec![
            "schema",
            "call_id",
            "direction",
            "started_at_ms",
            "answered_at_ms",
            "ended_at_ms",
            "end_reason",
            "did",
            "caller",
            "caller.withheld",
            "caller.number_hash",
            "route",
            "summary",
            "summary.intent",
            "summary.confidence",
            "summary.urgency",
            "summary.sentiment",
            "summary.requested_time",
            "summary.outcome",
            "summary.callback",
            "summary.callback.withheld",
            "summary.callback.number_hash",
            "media",
            "media.packets",
            "media.lost",
            "media.late",
            "media.concealed",
            "media.jitter_ms",
        ],
        "handlet.followup/1" => vec![
            "schema",
            "followup_id",
            "call_id",
            "kind",
            "intent",
            "urgency",
            "due_by_ms",
            "complete",
            "created_at_ms",
            "done_at_ms",
            "callback",
            "callback.withheld",
            "callback.number_hash",
            "number_confirmed",
        ],
        "handlet.voicemail/1" => vec![
            "schema",
            "call_id",
            "mailbox",
            "started_at_ms",
            "duration_ms",
            "caller",
            "caller.withheld",
            "caller.number_hash",
        ],
        // A command's result (`sync::command`): counts, never its number.
        "handlet.command/1" => vec![
            "schema",
            "id",
            "kind",
            "ok",
            "error",
            "done_at_ms",
            "result",
            "result.calls",
            "result.recordings",
            "result.in_progress",
            "result.stray_files",
            "result.new_key",
            "result.rewrapped",
            "result.removed",
        ],
        // A config document taken or refused (the uplink).
        "handlet.status/1" => vec![
            "schema",
            "config",
            "config.version",
            "config.ok",
            "config.error",
            "config_applied",
            "at_ms",
        ],
        _ => Vec::new(),
    };
    let extra: &[(Share, &[&'static str])] = match schema {
        "handlet.call/1" => &[
            (
                Share::Numbers,
                &["caller.number", "summary.callback.number"],
            ),
            (Share::Quotes, &["summary.text"]),
            (Share::Names, &["summary.caller_name"]),
            (Share::Addresses, &["summary.address"]),
        ],
        "handlet.followup/1" => &[
            (Share::Numbers, &["callback.number"]),
            (Share::Quotes, &["about"]),
            (Share::Names, &["name"]),
            (Share::Addresses, &["address"]),
        ],
        "handlet.voicemail/1" => &[(Share::Numbers, &["caller.number"])],
        _ => &[],
    };
    for (s, names) in extra {
        if policy.allows(*s) {
            f.extend_from_slice(names);
        }
    }
    f
}

/// The dotted paths of every field in `v` (objects only; arrays are
/// leaves).
pub fn field_paths(v: &Value) -> Vec<String> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
        if let Value::Object(m) = v {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(p.clone());
                walk(&p, x, out);
            }
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "+447700900123";
    const CALLBACK: &str = "+447700900456";
    const QUOTE: &str = "Sarah called about a leaking boiler";

    fn key() -> NumberKey {
        NumberKey::new([7; 32])
    }

    fn payloads(policy: &Policy) -> Vec<Value> {
        let route = vec!["receptionist".to_string(), "group:oncall".to_string()];
        let c = CallFacts {
            call_id: "c1",
            direction: "inbound",
            started_at_ms: 1_000,
            answered_at_ms: Some(1_500),
            ended_at_ms: Some(60_000),
            end_reason: Some("caller hung up"),
            did: Some("+441632960001"),
            caller: Some(CALLER),
            route: &route,
            understood: Some(Understood {
                intent: "emergency",
                confidence: 0.873_456,
                urgency: "high",
                sentiment: "negative",
                requested_time: Some("today"),
                outcome: "message taken",
                text: QUOTE,
                caller_name: Some("Sarah"),
                callback_number: Some(CALLBACK),
                address: Some("12 High Street"),
            }),
            media: Some(Media {
                packets: 2_900,
                lost: 3,
                late: 1,
                concealed: 4,
                jitter_ms: 6,
            }),
        };
        let f = FollowUpFacts {
            id: 9,
            call_id: "c1",
            kind: "message",
            intent: Some("emergency"),
            urgency: "high",
            due_by_ms: 3_601_000,
            complete: true,
            created_at_ms: 60_000,
            number: Some(CALLBACK),
            number_confirmed: true,
            name: Some("Sarah"),
            about: Some(QUOTE),
            address: Some("12 High Street"),
            done_at_ms: None,
        };
        let v = VoicemailFacts {
            call_id: "c2",
            mailbox: "main",
            started_at_ms: 5_000,
            duration_ms: 12_000,
            caller: Some(CALLER),
        };
        vec![
            call(&c, policy, &key()),
            followup(&f, policy, &key()),
            voicemail(&v, policy, &key()),
        ]
    }

    /// Digit runs of 7 or more, however spaced: a phone number in disguise.
    fn has_long_digit_run(s: &str) -> bool {
        let mut run = 0;
        for c in s.chars() {
            if c.is_ascii_digit() {
                run += 1;
                if run >= 7 {
                    return true;
                }
            } else if c != ' ' && c != '-' {
                run = 0;
            }
        }
        false
    }

    #[test]
    fn by_default_no_payload_carries_a_number_a_quote_a_name_or_an_address() {
        let policy = Policy::default();
        for p in payloads(&policy) {
            let schema = p["schema"].as_str().unwrap().to_string();
            let allowed = allowed_fields(&schema, &policy);
            assert!(!allowed.is_empty(), "{schema} is a known kind");
            for path in field_paths(&p) {
                assert!(
                    allowed.contains(&path.as_str()),
                    "{schema} carries {path}, which is not on its list"
                );
            }
            let text = p.to_string();
            for secret in [
                "7700900123",
                "7700900456",
                "leaking boiler",
                "Sarah",
                "High Street",
            ] {
                assert!(
                    !text.contains(secret),
                    "{schema} carries {secret:?}: {text}"
                );
            }
            // No long digit run (a number in any spacing), but for the
            // hex hashes and the business's own number it was called on.
            let stripped: String = field_paths(&p)
                .iter()
                .filter(|f| !f.ends_with("number_hash") && *f != "did")
                .filter_map(|f| {
                    let mut v = &p;
                    for part in f.split('.') {
                        v = &v[part];
                    }
                    v.as_str().map(str::to_string)
                })
                .collect::<Vec<_>>()
                .join(" ");
            assert!(!has_long_digit_run(&stripped), "{schema}: {stripped}");
        }
    }

    #[test]
    fn each_share_lets_its_own_fields_through_and_no_others() {
        for share in [
            Share::Numbers,
            Share::Quotes,
            Share::Names,
            Share::Addresses,
        ] {
            let policy = Policy::new(&[share]);
            let mut seen = false;
            for p in payloads(&policy) {
                let schema = p["schema"].as_str().unwrap().to_string();
                let allowed = allowed_fields(&schema, &policy);
                for path in field_paths(&p) {
                    assert!(
                        allowed.contains(&path.as_str()),
                        "{share:?}: {schema} carries {path}"
                    );
                }
                let text = p.to_string();
                seen |= match share {
                    Share::Numbers => text.contains(CALLER) && text.contains(CALLBACK),
                    Share::Quotes => text.contains(QUOTE),
                    Share::Names => text.contains("Sarah"),
                    Share::Addresses => text.contains("12 High Street"),
                };
                if share != Share::Numbers {
                    assert!(
                        !text.contains("7700900"),
                        "{share:?} lets numbers out: {text}"
                    );
                }
            }
            assert!(seen, "{share:?} shared nothing");
        }
    }

    #[test]
    fn the_call_payload_has_the_fields_a_backend_builds_on() {
        let p = &payloads(&Policy::default())[0];
        assert_eq!(p["schema"], "handlet.call/1");
        assert_eq!(p["caller"]["withheld"], false);
        assert_eq!(p["caller"]["number_hash"], key().hash(CALLER));
        assert_eq!(p["route"][1], "group:oncall");
        assert_eq!(p["summary"]["intent"], "emergency");
        assert_eq!(p["summary"]["confidence"], 0.87);
        assert_eq!(
            p["summary"]["callback"]["number_hash"],
            key().hash(CALLBACK)
        );
        assert_eq!(p["media"]["lost"], 3);
        let withheld = call(
            &CallFacts {
                call_id: "c3",
                direction: "inbound",
                ..Default::default()
            },
            &Policy::default(),
            &key(),
        );
        assert_eq!(withheld["caller"], json!({ "withheld": true }));
        assert!(withheld.get("summary").is_none());
    }
}
