//! `handlet calls` and `handlet calls show ID` read back a real call: the
//! list says how it ended, the timeline holds the routing decision, the
//! caller's words and the key pressed, in time order, on one clock.

mod common;
use common::*;
use std::process::Command;

/// Seconds into the call of a timeline line ("  0:21.5  caller ..."), and
/// its label.
fn at(line: &str) -> Option<(f64, String)> {
    let mut it = line.split_whitespace();
    let t = it.next()?;
    let label = it.next()?.to_string();
    let (m, s) = t.split_once(':')?;
    Some((
        m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?,
        label,
    ))
}

#[test]
fn calls_lists_the_call_and_shows_its_timeline_in_order() {
    let agent = Agent::start("calls-cli");
    let wav = speech_wav(
        agent.dir.path(),
        "boiler",
        "Hi, my boiler is leaking, please call me back",
        8000,
        0.5,
        1.0,
    );
    // The caller speaks, then presses 5, then hangs up.
    let out = Command::new(bin())
        .args(["call", "--config"])
        .arg(&agent.config)
        .arg("--wav")
        .arg(&wav)
        .args(["--digits", "5", "--wait", "90"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "handlet call failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = Db::open(&agent.database());
    let call = wait_for(90, "the call's transcript to complete", || {
        db.calls().into_iter().find(|c| c.complete)
    });
    // The key lands as the call ends; wait for it too.
    wait_for(30, "the key pressed", || {
        db.0.query_row(
            "SELECT COUNT(*) FROM call_events WHERE call_id = ?1 AND kind = 'dtmf'",
            [&call.id],
            |r| r.get::<_, i64>(0),
        )
        .ok()
        .filter(|n| *n > 0)
    });

    let list = ok(&agent, &["calls"]);
    println!("$ handlet calls\n{list}");
    let short = &call.id[..8];
    let row = list
        .lines()
        .find(|l| l.starts_with(short))
        .unwrap_or_else(|| panic!("the call is not listed:\n{list}"));
    assert!(
        row.contains("answered by the agent (receptionist answers); caller hung up"),
        "{row}"
    );
    assert!(row.contains(" inbound "), "{row}");
    // --since after the call: nothing; before it: the call.
    let later = (call.started + 60_000).to_string();
    assert_eq!(ok(&agent, &["calls", "--since", &later]), "no calls\n");
    let earlier = (call.started - 1).to_string();
    assert!(ok(&agent, &["calls", "--since", &earlier, "--limit", "1"]).contains(short));
    assert!(ok(&agent, &["calls", "--since", "1h"]).contains(short));

    let show = ok(&agent, &["calls", "show", short]);
    println!("$ handlet calls show {short}\n{show}");
    assert!(
        show.starts_with(&format!("call {} inbound from ", call.id)),
        "{show}"
    );
    let lines: Vec<(f64, String, &str)> = show
        .lines()
        .filter_map(|l| at(l).map(|(t, label)| (t, label, l)))
        .collect();
    let first = |label: &str| {
        lines
            .iter()
            .find(|(_, l, _)| l == label)
            .unwrap_or_else(|| panic!("no {label} line:\n{show}"))
    };
    let route = first("route");
    assert!(
        route.2.contains("always open") && route.2.contains("→ receptionist"),
        "{show}"
    );
    assert!(route.0 < 0.1, "the first decision is at the INVITE: {show}");
    let answer = first("answer");
    let said = first("caller");
    let w = words(said.2);
    assert!(
        // (whisper tiny may mishear "boiler": not checked)
        w.iter().any(|x| x == "leaking") && w.iter().any(|x| x == "call"),
        "{show}"
    );
    let key = first("key");
    assert!(key.2.contains("5 (rfc4733)"), "{show}");
    let end = first("end");
    assert!(end.2.contains("caller hung up"), "{show}");
    // In time order, and the clocks agree: the speech starts after the
    // half second of lead silence, the key after the speech, the end after
    // the key.
    assert!(lines.windows(2).all(|p| p[0].0 <= p[1].0), "{show}");
    assert!(route.0 <= answer.0 && answer.0 < said.0, "{show}");
    assert!(said.0 >= answer.0 + 0.2, "{show}");
    assert!(said.0 < key.0 && key.0 <= end.0, "{show}");
    let wav_secs = hound::WavReader::open(&wav).unwrap().duration() as f64 / 8000.0;
    assert!(
        key.0 >= answer.0 + wav_secs - 0.5,
        "the key comes after the {wav_secs:.1} s WAV: {show}"
    );
    assert!(show.contains("\n  summary: intent "), "{show}");
    assert!(
        show.ends_with("  outcome: answered by the agent (receptionist answers); caller hung up\n"),
        "{show}"
    );
    // The full id works too, and so does an upper-case prefix.
    assert_eq!(ok(&agent, &["calls", "show", &call.id]), show);
    assert_eq!(ok(&agent, &["calls", "show", &short.to_uppercase()]), show);

    let (good, out, err) = handlet(&agent, &["calls", "show", "nosuchid"]);
    assert!(!good, "{out}");
    assert!(
        err.contains("no call has an id starting \"nosuchid\""),
        "{err}"
    );
    let (good, _, err) = handlet(&agent, &["calls", "--since", "last tuesday"]);
    assert!(!good);
    assert!(err.contains("--since \"last tuesday\""), "{err}");
}

/// `handlet followups` and `handlet voicemail` over what the store holds
/// (the receptionist and voicemail fill these tables; here a row is put
/// in by hand to check the commands themselves).
#[test]
fn followups_are_listed_and_closed_and_voicemail_commands_explain_themselves() {
    let agent = Agent::start("followups-cli");
    let out = ok(&agent, &["followups"]);
    assert!(out.contains("no follow-ups"), "{out}");
    let db = Db::open(&agent.database());
    db.0.execute_batch(
        "INSERT INTO calls (id, sip_call_id, direction, from_uri, to_uri, transport, started_at_ms, caller)
           VALUES ('f00dcafe00000000aaaa', 's', 'inbound', 'sip:a', 'sip:b', 'udp', 1000, '+447700900123');
         INSERT INTO followups (call_id, kind, name, number, number_confirmed, about, intent, urgency,
             complete, created_at_ms, due_by_ms)
           VALUES ('f00dcafe00000000aaaa', 'message', 'John Smith', '07700900124', 1,
             'a quote for a bathroom', 'quote', 'normal', 1, 1000, 86401000);",
    )
    .unwrap();
    let out = ok(&agent, &["followups", "--open"]);
    assert!(
        out.contains("call back John Smith on 07700900124 (confirmed)"),
        "{out}"
    );
    assert!(out.contains("about: a quote for a bathroom"), "{out}");
    assert!(out.contains("OPEN"), "{out}");
    let id: i64 =
        db.0.query_row("SELECT id FROM followups", [], |r| r.get(0))
            .unwrap();
    let out = ok(&agent, &["followups", "done", &id.to_string()]);
    assert!(out.contains(&format!("follow-up {id} done")), "{out}");
    assert!(ok(&agent, &["followups", "--open"]).contains("no follow-ups open"));
    assert!(ok(&agent, &["followups"]).contains("done "));
    let (good, _, err) = handlet(&agent, &["followups", "done", "999"]);
    assert!(!good && err.contains("no follow-up 999"), "{err}");

    assert!(ok(&agent, &["voicemail", "list"]).contains("no voicemails"));
    let (good, _, err) = handlet(
        &agent,
        &["voicemail", "play", "nosuch", "--out", "/tmp/x.wav"],
    );
    assert!(!good && err.contains("no voicemail \"nosuch\""), "{err}");
    // A voicemail whose audio is not recorded says so.
    db.0.execute(
        "INSERT INTO voicemails (call_id, mailbox, started_at_ms, duration_ms) VALUES ('f00dcafe00000000aaaa', 'main', 1000, 4000)",
        [],
    )
    .unwrap();
    let out = ok(&agent, &["voicemail", "list"]);
    assert!(
        out.contains("NEW") && out.contains("+447700900123"),
        "{out}"
    );
    let (good, _, err) = handlet(
        &agent,
        &["voicemail", "play", "f00d", "--out", "/tmp/x.wav"],
    );
    assert!(!good && err.contains("has no recording"), "{err}");
    ok(&agent, &["voicemail", "mark-heard", "f00d"]);
    assert!(ok(&agent, &["voicemail", "list"]).contains("heard"));
}
