//! The after-call summary: a short text a person can act on, plus the
//! structured fields behind it. Pure: the classifications and entities come
//! in, so the wording is tested without models.

use crate::entities::Entities;
use crate::intent::Classification;

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub text: String,
    pub intent: String,
    pub intent_confidence: f32,
    pub runner_up: Option<String>,
    pub sentiment: String,
    /// "low", "normal" or "high".
    pub urgency: String,
    pub caller_name: Option<String>,
    pub callback_number: Option<String>,
    pub requested_time: Option<String>,
    pub address: Option<String>,
    pub outcome: String,
    pub follow_up: String,
}

pub struct Input<'a> {
    /// Everything the caller said, in order.
    pub caller_text: &'a str,
    pub intent: &'a Classification,
    /// The intent's configured urgency ("low", "normal", "high").
    pub intent_urgency: &'a str,
    pub sentiment: &'a str,
    pub entities: &'a Entities,
    /// The number the call came from, if the network gave one.
    pub caller_id: Option<&'a str>,
}

/// Words that make any call urgent whatever its intent.
const URGENT: &[&str] = &[
    "urgent",
    "urgently",
    "emergency",
    "asap",
    "immediately",
    "flooding",
    "flooded",
    "gas",
    "sparks",
    "burst",
];

fn phrase(intent: &str) -> &str {
    match intent {
        "emergency" => "an emergency",
        "booking" => "booking a visit",
        "reschedule_or_cancel" => "changing or cancelling a booking",
        "quote" => "a quote",
        "job_status" => "the progress of a job",
        "billing" => "a bill or payment",
        "info" => "general information",
        "speak_to_person" => "speaking to someone",
        "complaint" => "a complaint",
        "sales_or_spam" => "a sales pitch",
        "unknown" => "something we could not classify",
        other => other,
    }
}

pub fn summarise(i: &Input) -> Summary {
    let e = i.entities;
    let text_lower = i.caller_text.to_lowercase();
    let said_urgent = crate::guard::normalise(&text_lower)
        .split(' ')
        .any(|w| URGENT.contains(&w));
    let urgency = if said_urgent || i.intent_urgency == "high" {
        "high"
    } else {
        i.intent_urgency
    };
    let callback = e.phone.clone().or_else(|| i.caller_id.map(String::from));
    let requested_time = e.when.as_ref().map(|w| w.describe());
    let address = match (&e.address, &e.postcode) {
        (Some(a), Some(p)) => Some(format!("{a}, {p}")),
        (Some(a), None) => Some(a.clone()),
        (None, Some(p)) => Some(p.clone()),
        (None, None) => None,
    };
    let spoke = !i.caller_text.trim().is_empty();
    let outcome = if !spoke {
        "no message left"
    } else if i.intent.label == "sales_or_spam" {
        "sales call, no action"
    } else {
        "message taken"
    };
    let who = e.name.clone().unwrap_or_else(|| "the caller".into());
    let on = callback
        .as_ref()
        .map(|n| format!(" on {n}"))
        .unwrap_or_default();
    let follow_up = if !spoke {
        format!("Call back{on} to find out what they wanted")
    } else {
        match i.intent.label.as_str() {
            "emergency" => format!("Call {who} back now{on}: emergency"),
            "booking" => format!(
                "Book {who} in{}",
                requested_time
                    .as_ref()
                    .map(|t| format!(" for {t}"))
                    .unwrap_or_default()
            ),
            "reschedule_or_cancel" => format!("Update {who}'s booking and confirm{on}"),
            "quote" => format!("Prepare a quote for {who} and call back{on}"),
            "job_status" => format!("Tell {who} where their job is{on}"),
            "billing" => format!("Check {who}'s invoice and call back{on}"),
            "info" => format!("Answer {who}'s question{on}"),
            "speak_to_person" => format!("Call {who} back{on}"),
            "complaint" => format!("Manager to call {who} back{on} about their complaint"),
            "sales_or_spam" => "None".into(),
            _ => format!("Listen to the message and call {who} back{on}"),
        }
    };
    let mut text = if spoke {
        format!(
            "{} called about {}",
            e.name.as_deref().unwrap_or("A caller"),
            phrase(&i.intent.label)
        )
    } else {
        "The caller left no message".into()
    };
    if let Some(first) = first_sentence(i.caller_text) {
        text += &format!(": \"{first}\"");
    }
    text.push('.');
    if let Some(t) = &requested_time {
        text += &format!(" Asked for {t}.");
    }
    if let Some(a) = &address {
        text += &format!(" Address: {a}.");
    }
    if let Some(m) = &e.money {
        text += &format!(" Mentioned {m}.");
    }
    if urgency == "high" {
        text += " Urgent.";
    }
    Summary {
        text,
        intent: i.intent.label.clone(),
        intent_confidence: i.intent.confidence,
        runner_up: i.intent.runner_up.as_ref().map(|(n, _)| n.clone()),
        sentiment: i.sentiment.into(),
        urgency: urgency.into(),
        caller_name: e.name.clone(),
        callback_number: callback,
        requested_time,
        address,
        outcome: outcome.into(),
        follow_up,
    }
}

/// The caller's first sentence that says something (skipping "Hi." and the
/// like), cut to 20 words.
fn first_sentence(text: &str) -> Option<String> {
    let candidates: Vec<&str> = text
        .split_inclusive(['.', '?', '!'])
        .map(str::trim)
        .filter(|s| s.split_whitespace().count() >= 4)
        .collect();
    // "Hi, my name is Sarah Jones." says who, not what: the name is in the
    // summary already.
    let intro = |s: &&str| {
        let l = s.to_lowercase();
        l.contains("my name") || l.starts_with("this is") || l.starts_with("hi, this is")
    };
    let s = candidates
        .iter()
        .find(|s| !intro(s))
        .or(candidates.first())?;
    let words: Vec<&str> = s.split_whitespace().collect();
    let mut out = words[..words.len().min(20)].join(" ");
    if words.len() > 20 {
        out += "…";
    }
    Some(out.trim_end_matches(['.', '?', '!', ',']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::extract;

    fn class(label: &str) -> Classification {
        Classification {
            label: label.into(),
            confidence: 0.8,
            score: 0.6,
            runner_up: Some(("quote".into(), 0.1)),
            agree: true,
        }
    }

    #[test]
    fn booking_call_summary_has_the_fields_a_person_needs() {
        let text = "Hi. My name is Sarah Jones. Could somebody come and fix my kitchen tap next Tuesday after three? I'm at 12 High Street, LS6 2AB. My number is 07700 900123.";
        let e = extract(text, 20_779);
        let c = class("booking");
        let s = summarise(&Input {
            caller_text: text,
            intent: &c,
            intent_urgency: "normal",
            sentiment: "neutral",
            entities: &e,
            caller_id: Some("01130000000"),
        });
        assert_eq!(s.caller_name.as_deref(), Some("Sarah Jones"));
        assert_eq!(s.callback_number.as_deref(), Some("07700900123"));
        assert_eq!(
            s.requested_time.as_deref(),
            Some("Tuesday 2026-11-24 after 15:00")
        );
        assert_eq!(s.address.as_deref(), Some("12 High Street, LS6 2AB"));
        assert_eq!(s.urgency, "normal");
        assert_eq!(s.outcome, "message taken");
        assert_eq!(
            s.follow_up,
            "Book Sarah Jones in for Tuesday 2026-11-24 after 15:00"
        );
        assert!(
            s.text
                .starts_with("Sarah Jones called about booking a visit: \"Could somebody come and fix my kitchen tap"),
            "{}",
            s.text
        );
    }

    #[test]
    fn urgent_words_raise_urgency_and_silence_says_so() {
        let text = "The pipe has burst, please come urgently.";
        let e = extract(text, 0);
        let c = class("booking");
        let s = summarise(&Input {
            caller_text: text,
            intent: &c,
            intent_urgency: "normal",
            sentiment: "negative",
            entities: &e,
            caller_id: Some("07700900999"),
        });
        assert_eq!(s.urgency, "high");
        assert_eq!(s.callback_number.as_deref(), Some("07700900999"));
        let empty = Entities::default();
        let c = class("unknown");
        let s = summarise(&Input {
            caller_text: "",
            intent: &c,
            intent_urgency: "normal",
            sentiment: "neutral",
            entities: &empty,
            caller_id: None,
        });
        assert_eq!(s.outcome, "no message left");
        assert_eq!(s.text, "The caller left no message.");
    }
}
