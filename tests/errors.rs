//! The errors a user will hit give one clear line each, never a panic.

mod common;
use common::*;
use std::process::{Command, Output};

fn run_with(config: &str, dir: &TempDir, args: &[&str]) -> Output {
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, config).unwrap();
    Command::new(bin())
        .arg("--config")
        .arg(&p)
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap()
}

fn one_line_error(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<_> = err
        .lines()
        .filter(|l| l.contains("handlet: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_string()
}

#[test]
fn bad_config_field_names_the_field_and_expectation() {
    let dir = TempDir::new("badcfg");
    let e = one_line_error(&run_with(
        "[sip]\nport = \"five\"\n",
        &dir,
        &["config", "show"],
    ));
    assert!(e.contains("port") && e.contains("u16"), "{e}");
    let e = one_line_error(&run_with("[sip]\nprot = 5060\n", &dir, &["run"]));
    assert!(e.contains("unknown field") && e.contains("prot"), "{e}");
    let e = one_line_error(&run_with("[transcription]\nworkers = 0\n", &dir, &["run"]));
    assert!(e.contains("transcription.workers"), "{e}");
    let e = one_line_error(&run_with("[sip\n", &dir, &["run"]));
    assert!(e.contains("bad.toml"), "{e}");
    // An announcement that is not there, or not a WAV.
    let e = one_line_error(&run_with(
        "[privacy]\nannouncement = \"nowhere.wav\"\n",
        &dir,
        &["run"],
    ));
    assert!(
        e.contains("privacy.announcement") && e.contains("nowhere.wav"),
        "{e}"
    );
    std::fs::write(dir.path().join("text.wav"), "not audio").unwrap();
    let e = one_line_error(&run_with(
        "[privacy]\nannouncement = \"text.wav\"\n",
        &dir,
        &["config", "show"],
    ));
    assert!(e.contains("cannot read \"text.wav\" as a WAV"), "{e}");
}

#[test]
fn missing_model_names_the_file_and_the_fix() {
    let dir = TempDir::new("nomodel");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let cfg = format!(
        "models_dir = {models:?}\ndata_dir = {:?}\n[sip]\nport = {}\n",
        dir.path().join("data"),
        free_port()
    );
    let e = one_line_error(&run_with(&cfg, &dir, &["run"]));
    assert!(
        e.contains("ggml-tiny.en.bin") && e.contains("is missing") && e.contains("make models"),
        "{e}"
    );

    // A corrupt copy is caught by its hash.
    for f in [
        "ggml-tiny.en.bin",
        "silero_vad.onnx",
        "libonnxruntime.so.1.32.0",
    ] {
        std::fs::copy(models_dir().join(f), models.join(f)).unwrap();
    }
    std::fs::write(models.join("silero_vad.onnx"), b"garbage").unwrap();
    let e = one_line_error(&run_with(&cfg, &dir, &["run"]));
    assert!(
        e.contains("silero_vad.onnx") && e.contains("corrupt") && e.contains("make models"),
        "{e}"
    );
}

#[test]
fn port_in_use_says_which_port() {
    let dir = TempDir::new("portbusy");
    let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let cfg = format!(
        "models_dir = {:?}\ndata_dir = {:?}\n[sip]\nport = {port}\n",
        models_dir(),
        dir.path().join("data")
    );
    let e = one_line_error(&run_with(&cfg, &dir, &["run"]));
    assert!(
        e.contains(&format!("127.0.0.1:{port}/udp")) && e.contains("in use"),
        "{e}"
    );
}

#[test]
fn unwritable_data_dir_is_reported() {
    let dir = TempDir::new("nodata");
    // A regular file where a directory should be: not creatable, even as root.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let cfg = format!(
        "models_dir = {:?}\ndata_dir = {:?}\n[sip]\nport = {}\n",
        models_dir(),
        blocker.join("data"),
        free_port()
    );
    let e = one_line_error(&run_with(&cfg, &dir, &["run"]));
    assert!(e.contains("data dir") && e.contains("blocker"), "{e}");
}

#[test]
fn config_show_prints_the_effective_config() {
    let dir = TempDir::new("show");
    let out = run_with("[sip]\nport = 5099\n", &dir, &["config", "show"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("port = 5099") && s.contains("tcp = true") && s.contains("[transcription]"),
        "{s}"
    );
}

#[test]
fn bad_tls_certificate_paths_are_one_line_each() {
    let dir = TempDir::new("badtls");
    let base = format!(
        "models_dir = {:?}\ndata_dir = {:?}\n[sip]\nport = {}\ntls = true\ntls_port = {}\n",
        models_dir(),
        dir.path().join("data"),
        free_port(),
        free_port()
    );
    // A certificate that is not there.
    let e = one_line_error(&run_with(
        &format!("{base}tls_cert = \"/nowhere/cert.pem\"\ntls_key = \"/nowhere/key.pem\"\n"),
        &dir,
        &["run"],
    ));
    assert!(
        e.contains("sip.tls_cert") && e.contains("/nowhere/cert.pem"),
        "{e}"
    );
    // Half a pair.
    let e = one_line_error(&run_with(
        &format!("{base}tls_cert = \"/nowhere/cert.pem\"\n"),
        &dir,
        &["run"],
    ));
    assert!(e.contains("go together"), "{e}");
    // A file that is no certificate.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let e = one_line_error(&run_with(
        &format!("{base}tls_cert = {junk:?}\ntls_key = {junk:?}\n"),
        &dir,
        &["run"],
    ));
    assert!(e.contains("junk.pem"), "{e}");
}
