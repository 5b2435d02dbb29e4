//! A full data disk: the agent keeps answering, says so in one clear line,
//! holds what it could not write and stores it once space is freed, and
//! loses nothing it had already stored. The data dir is a small tmpfs made
//! by the test (needs root, or sudo without a password, to mount it).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for the test; unmounted on drop.
struct Tmpfs(PathBuf);

fn as_root(args: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut cmd = if root {
        Command::new(args[0])
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", args[0]]);
        c
    };
    cmd.args(&args[1..]).status().is_ok_and(|s| s.success())
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let opts = format!("size={size},mode=0700");
        let at_s = at.to_str().unwrap();
        assert!(
            as_root(&["mount", "-t", "tmpfs", "-o", &opts, "tmpfs", at_s]),
            "mounting a tmpfs at {at_s} needs root or passwordless sudo"
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        as_root(&["umount", "-l", self.0.to_str().unwrap()]);
    }
}

/// Write zeros until the file system refuses; returns the file.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    p
}

#[test]
fn a_full_disk_holds_call_data_until_space_is_freed() {
    let dir = TempDir::new("fulldisk");
    let mount = Tmpfs::mount(&dir.path().join("data"), "24m");
    let mut agent = Agent::start_in(dir, "");
    let wav = |name: &str, text: &str| speech_wav(&mount.0, name, text, 8000, 0.3, 1.0);
    let first = wav(
        "first",
        "Hello, I would like to book a boiler service next week.",
    );
    let second = wav(
        "second",
        "My name is Sarah Jones and my kitchen tap has been dripping all week.",
    );

    // A call on a disk with room: stored and recorded.
    ok(
        &agent,
        &["call", "--wav", first.to_str().unwrap(), "--wait", "60"],
    );
    let db = Db::open(&agent.database());
    let calls = db.calls();
    assert_eq!(calls.len(), 1);
    let first_text = db.transcript(&calls[0].id);
    assert!(words(&first_text).len() >= 5, "{first_text}");

    // The disk fills up. A call still gets answered and heard; what the
    // agent cannot write it says, once, and holds.
    let filler = fill(&mount.0);
    let (_, out, err) = handlet(
        &agent,
        &["call", "--wav", second.to_str().unwrap(), "--wait", "5"],
    );
    // The client waited for a transcript the full disk cannot take yet.
    assert!(
        err.contains("did not finish the transcript"),
        "placed, answered and hung up: {out}{err}"
    );
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "agent still runs"
    );
    let log = agent.log();
    assert_eq!(log.matches("call ended").count(), 2, "{log}");
    assert_eq!(
        log.matches("data disk full: holding call data in memory")
            .count(),
        1,
        "one clear line when the disk fills:\n{log}"
    );
    assert!(
        log.contains("cannot record this call: the data disk is full"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    // Space comes back: the held call lands, transcript and all.
    std::fs::remove_file(&filler).unwrap();
    let held = wait_for(30, "the held call to be stored", || {
        let mut calls = db.calls();
        (calls.len() == 2 && calls[1].complete).then(|| calls.remove(1))
    });
    let held_text = db.transcript(&held.id).to_lowercase();
    assert!(
        ["sarah", "kitchen", "tap", "dripping"]
            .iter()
            .filter(|w| held_text.contains(*w))
            .count()
            >= 2,
        "{held_text}"
    );
    assert!(held.ended.is_some(), "its end was stored too");
    assert!(agent.log().contains("space on the data disk again"));

    // Nothing that was stored before is lost or damaged, and the first
    // call's recording still plays.
    assert_eq!(db.transcript(&calls[0].id), first_text);
    let integrity: String =
        db.0.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
    assert_eq!(integrity, "ok");
    let list = ok(&agent, &["recordings", "list"]);
    let first_rec = list
        .lines()
        .find(|l| l.contains(&calls[0].id[..8]))
        .unwrap_or_else(|| panic!("the first call's recording is listed:\n{list}"));
    let rec_id = first_rec.split_whitespace().next().unwrap();
    let out_wav = mount.0.join("first-export.wav");
    ok(
        &agent,
        &[
            "recordings",
            "export",
            rec_id,
            "--out",
            out_wav.to_str().unwrap(),
        ],
    );
    assert!(hound::WavReader::open(&out_wav).unwrap().duration() > 16_000);

    // And calls go on as before.
    ok(
        &agent,
        &["call", "--wav", first.to_str().unwrap(), "--wait", "60"],
    );
    assert_eq!(db.calls().len(), 3);

    let _ = agent.child.kill();
    let _ = agent.child.wait();
    drop(db);
    drop(mount);
}

#[test]
fn starting_on_a_full_disk_is_one_clear_error() {
    let dir = TempDir::new("fullstart");
    let mount = Tmpfs::mount(&dir.path().join("data"), "1m");
    let filler = fill(&mount.0);
    let config = write_config(dir.path(), free_port(), "");
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("is full") && err.contains("free some space"),
        "{err}"
    );
    // Nothing was left behind in the way.
    let left: Vec<_> = std::fs::read_dir(&mount.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &filler)
        .collect();
    assert!(left.is_empty(), "{left:?}");
    drop(mount);
}
