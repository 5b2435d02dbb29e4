//! The control channel: `handlet status` asks the running agent over its
//! owner-only Unix socket, and says clearly when no agent is running.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn status_talks_to_the_running_agent_and_says_when_none_is() {
    let agent = Agent::start_with("control", "[sip]\nanswer_after_ms = 60000\n");
    let sock = agent.dir.path().join("data").join("control.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");
    let out = ok(&agent, &["status"]);
    assert!(out.contains("\"calls_in_progress\": 0"), "{out}");
    assert!(out.contains("\"max_calls\": 8"), "{out}");
    assert!(
        out.contains(&format!("127.0.0.1:{}/udp", agent.port)),
        "{out}"
    );
    // A call ringing for a minute is a call in progress.
    let wav = speech_wav(agent.dir.path(), "hi", "Hello.", 8000, 0.1, 0.1);
    let mut caller = Command::new(bin())
        .args(["call", "--config"])
        .arg(&agent.config)
        .arg("--wav")
        .arg(&wav)
        .spawn()
        .unwrap();
    wait_for(20, "the ringing call in the status", || {
        ok(&agent, &["status"])
            .contains("\"calls_in_progress\": 1")
            .then_some(())
    });
    let _ = caller.kill();
    let _ = caller.wait();
    // Stopped cleanly: the socket goes, and the CLI says no agent runs.
    let mut agent = agent;
    Command::new("kill")
        .arg(agent.child.id().to_string())
        .status()
        .unwrap();
    agent.child.wait().unwrap();
    assert!(!sock.exists(), "the control socket outlived the agent");
    let (success, _, stderr) = handlet(&agent, &["status"]);
    assert!(!success);
    assert!(stderr.contains("no agent is running"), "{stderr}");
}

#[test]
fn a_killed_agents_stale_socket_does_not_stop_the_next_start() {
    let mut agent = Agent::start("control-stale");
    agent.kill_and_restart();
    let out = ok(&agent, &["status"]);
    assert!(out.contains("\"uptime_secs\""), "{out}");
}

#[test]
fn a_second_agent_on_the_same_data_dir_refuses_to_start() {
    let agent = Agent::start("control-second");
    // Same data dir, another SIP port: only the data dir's lock can stop it.
    let config = agent.dir.path().join("second.toml");
    let first = std::fs::read_to_string(&agent.config).unwrap();
    let other = free_port();
    std::fs::write(
        &config,
        first.replace(
            &format!("port = {}\n", agent.port),
            &format!("port = {other}\n"),
        ),
    )
    .unwrap();
    let mut second = Reaped(
        Command::new(bin())
            .args(["run", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let exited = wait_for(60, "the second agent to give up", || {
        second.0.try_wait().unwrap()
    });
    assert!(!exited.success(), "a second agent ran on the same data dir");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("another agent is running"), "{stderr}");
    // The first one still answers, over its control socket and SIP.
    let status = ok(&agent, &["status"]);
    assert!(status.contains("\"calls_in_progress\": 0"), "{status}");
}
