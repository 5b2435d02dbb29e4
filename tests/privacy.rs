//! Data-subject requests and key rotation against a running agent, with
//! real calls placed by `handlet call` presenting real caller ids.

mod common;
use common::*;
use std::path::Path;

const NUMBER: &str = "+447700900123";
/// The number's national significant digits: whatever the spelling
/// ("07700 900123", "+44 7700 900 123"), a digit run holding these is it.
const NSN: &[u8] = b"7700900123";

fn call(agent: &Agent, wav: &Path, from: &str) {
    ok(
        agent,
        &[
            "call",
            "--wav",
            wav.to_str().unwrap(),
            "--from",
            from,
            "--wait",
            "60",
        ],
    );
}

/// Files (under `dir`) holding the number in any spacing: ASCII digit runs
/// with separators squeezed out, looked through for its national digits.
fn holding_number(dir: &Path) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap();
            let mut run = Vec::new();
            for &b in bytes.iter().chain(std::iter::once(&0)) {
                if b.is_ascii_digit() {
                    run.push(b);
                } else if !b" -.()+,".contains(&b) {
                    if run.windows(NSN.len()).any(|w| w == NSN) {
                        return true;
                    }
                    run.clear();
                }
            }
            false
        })
        .map(|f| f.display().to_string())
        .collect()
}

/// The first call's words, allowing whisper one slip.
fn heard_tap(text: &str) -> bool {
    ["kitchen", "dripping", "sarah"]
        .iter()
        .filter(|w| text.contains(*w))
        .count()
        >= 2
}

fn count(db: &Db, sql: &str) -> i64 {
    db.0.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn export_then_erase_by_phone_leaves_no_trace() {
    let agent = Agent::start("dsr-phone");
    let dir = agent.dir.path();
    // Words whisper tiny hears reliably through μ-law: the checks below
    // look for them in the stored transcript and in the exported recording.
    let tap = speech_wav(
        dir,
        "tap",
        "My name is Sarah Jones and my kitchen tap has been dripping all week",
        8000,
        0.3,
        1.2,
    );
    let callback = speech_wav(
        dir,
        "callback",
        "Please call me back on 0 7 7 0 0, 9 0 0, 1 2 3.",
        8000,
        0.3,
        1.2,
    );
    let other = speech_wav(
        dir,
        "other",
        "Are you open on Saturday morning",
        8000,
        0.3,
        1.2,
    );
    call(&agent, &tap, NUMBER);
    call(&agent, &callback, "anonymous");
    call(&agent, &other, "+447700900999");
    let data = dir.join("data");
    // The scan below can fail: before the erase the number is there.
    assert!(
        !holding_number(&data).is_empty(),
        "the caller's number should be in the store before erasing"
    );
    let db = Db::open(&agent.database());
    let said_back = db.transcript(&db.calls()[1].id);

    // Export: JSON of the calls and their recordings, decrypted.
    let out = dir.join("export");
    let said = ok(
        &agent,
        &[
            "privacy",
            "export",
            "--phone",
            "07700 900123",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(said.contains("exported"), "{said}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("calls.json")).unwrap()).unwrap();
    let calls = doc["calls"].as_array().unwrap();
    assert!(!calls.is_empty() && calls.len() <= 2, "{doc}");
    let first = &calls[0];
    assert!(first["from"].as_str().unwrap().contains(NUMBER), "{first}");
    let said_first = first["transcript"][0]["text"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(heard_tap(&said_first), "{first}");
    assert!(first["summary"]["intent"].is_string(), "{first}");
    let wav = out.join(first["recordings"][0]["file"].as_str().unwrap());
    let heard = ok(&agent, &["transcribe", wav.to_str().unwrap()]).to_lowercase();
    assert!(heard_tap(&heard), "{heard}");
    // The call that only said the number is the caller's too, if the
    // transcript kept it as digits.
    let digits_said = said_back.chars().filter(char::is_ascii_digit).count() >= 10;
    if digits_said {
        assert_eq!(calls.len(), 2, "{said_back:?} names the number: {doc}");
    }

    // Erase, with the agent running.
    let said = ok(&agent, &["privacy", "erase", "--phone", "07700 900 123"]);
    assert!(said.contains("erased"), "{said}");
    let left = holding_number(&data);
    assert!(left.is_empty(), "the number is still in {left:?}");
    let log = holding_number(dir)
        .into_iter()
        .filter(|f| f.ends_with("agent.log"))
        .count();
    assert_eq!(log, 0, "the agent's info log shows the number");
    // The other caller's call, transcript and recording are untouched.
    let remaining = db.calls();
    assert!(
        remaining.len() == 1 || (remaining.len() == 2 && !digits_said),
        "{} calls left",
        remaining.len()
    );
    assert!(
        remaining
            .iter()
            .any(|c| db.transcript(&c.id).to_lowercase().contains("saturday"))
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM recordings"),
        remaining.len() as i64
    );
    assert_eq!(
        files(&data.join("recordings")).len(),
        remaining.len(),
        "one recording file per remaining call"
    );
    let check: String =
        db.0.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
    assert_eq!(check, "ok");
    // Audited: what, when, how many; never the number or what was said.
    let audit = ok(&agent, &["privacy", "audit"]);
    let lines: Vec<&str> = audit.lines().collect();
    assert_eq!(lines.len(), 2, "{audit}");
    assert!(
        lines[0].contains("export") && lines[1].contains("erase"),
        "{audit}"
    );
    assert!(
        lines.iter().all(|l| l.contains("phone <redacted:")),
        "{audit}"
    );
    assert!(
        !audit.contains("900123") && !audit.contains("kitchen"),
        "{audit}"
    );
    // Asking again finds nothing more.
    let said = ok(&agent, &["privacy", "erase", "--phone", NUMBER]);
    assert!(said.contains("erased 0 calls"), "{said}");
}

#[test]
fn keys_rotate_while_the_agent_runs_and_a_lost_key_is_named() {
    let agent = Agent::start("dsr-keys");
    let dir = agent.dir.path();
    let keys = dir.join("data/keys");
    let wav = speech_wav(dir, "hours", "What time do you close today", 8000, 0.3, 1.0);
    call(&agent, &wav, "+447700900555");
    let said = ok(&agent, &["keys", "rotate"]);
    assert!(
        said.contains("device key 2 now wraps all 1 recording keys")
            && said.contains("device-1.key"),
        "{said}"
    );
    assert!(!keys.join("device-1.key").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(keys.join("device-2.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The running agent records the next call under the new key.
    call(&agent, &wav, "+447700900556");
    let db = Db::open(&agent.database());
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM recording_keys WHERE key_id = 2"),
        2
    );
    let ids: Vec<String> = ok(&agent, &["recordings", "list"])
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    for id in &ids {
        let out = dir.join(format!("{id}.wav"));
        ok(
            &agent,
            &["recordings", "export", id, "--out", out.to_str().unwrap()],
        );
    }

    // Lose the key: every tool says which file, and nothing is lost.
    let saved = std::fs::read(keys.join("device-2.key")).unwrap();
    std::fs::remove_file(keys.join("device-2.key")).unwrap();
    let out = dir.join("lost.wav");
    let (success, _, err) = handlet(
        &agent,
        &[
            "recordings",
            "export",
            &ids[0],
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        !success && err.contains("device key 2 is missing") && err.contains("device-2.key"),
        "{err}"
    );
    assert!(!out.exists());
    let (success, _, err) = handlet(&agent, &["keys", "rotate"]);
    assert!(!success && err.contains("nothing was changed"), "{err}");
    let dsr = dir.join("dsr");
    let (success, _, err) = handlet(
        &agent,
        &[
            "privacy",
            "export",
            "--phone",
            "07700900555",
            "--out",
            dsr.to_str().unwrap(),
        ],
    );
    assert!(!success && err.contains("device key 2 is missing"), "{err}");
    assert!(!dsr.exists());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM recordings"), 2);
    // Put it back: everything plays again.
    std::fs::write(keys.join("device-2.key"), saved).unwrap();
    ok(
        &agent,
        &[
            "recordings",
            "export",
            &ids[0],
            "--out",
            out.to_str().unwrap(),
        ],
    );
}

#[test]
fn bad_requests_are_clear_errors_and_change_nothing() {
    let agent = Agent::start("dsr-bad");
    let wav = speech_wav(agent.dir.path(), "hi", "Do you fix taps", 8000, 0.3, 1.0);
    call(&agent, &wav, NUMBER);
    let db = Db::open(&agent.database());
    let before = (
        db.calls().len(),
        count(&db, "SELECT COUNT(*) FROM recordings"),
    );
    for bad in ["call me", "7700900123", "+44 12", "07700 900123 x2"] {
        let (success, _, err) = handlet(&agent, &["privacy", "erase", "--phone", bad]);
        assert!(
            !success
                && err.contains("unknown phone number format")
                && err.contains("+44 7700 900123"),
            "{bad}: {err}"
        );
    }
    let (success, _, err) = handlet(&agent, &["privacy", "erase", "--workspace"]);
    assert!(!success && err.contains("--yes"), "{err}");
    for out in ["/proc/handlet-export", "/dev/null/export"] {
        let (success, _, err) = handlet(
            &agent,
            &["privacy", "export", "--phone", NUMBER, "--out", out],
        );
        assert!(
            !success && err.contains("cannot write the export to"),
            "{out}: {err}"
        );
    }
    assert_eq!(
        (
            db.calls().len(),
            count(&db, "SELECT COUNT(*) FROM recordings")
        ),
        before
    );
    // The whole workspace, confirmed.
    let said = ok(&agent, &["privacy", "erase", "--workspace", "--yes"]);
    assert!(said.contains("erased 1 calls"), "{said}");
    assert!(db.calls().is_empty());
    assert!(files(&agent.dir.path().join("data/recordings")).is_empty());
}
