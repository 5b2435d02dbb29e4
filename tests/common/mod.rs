//! Test harness: the real `handlet` binary started the way a user starts it,
//! speech made with espeak-ng + sox, and real peers (baresip).
#![allow(dead_code)]

pub mod broker;
pub mod kamailio;
pub mod reception;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_handlet"))
}

pub fn models_dir() -> PathBuf {
    let d = repo().join(".models");
    assert!(
        d.join("ggml-tiny.en.bin").is_file(),
        "models are not provisioned: run `make models` (make test does)"
    );
    d
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "handlet-test-{tag}-{}-{}",
            std::process::id(),
            rand_u32()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish() as u32
}

/// A port free on both UDP and TCP loopback.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The intent-example embedding cache the tests' agents share.
pub fn intent_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("intent-examples.emb")
}

/// Write a config file for a test agent and return its path.
/// `extra` may hold `[sip]` keys; they are merged into the harness's [sip] table.
/// A `[media]` table in `extra` is merged into the harness's (with its
/// own RTP range if it names one).
pub fn write_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let (extra, media_extra) = match extra.split_once("[media]\n") {
        Some((before, after)) => {
            let end = after.find("\n[").map_or(after.len(), |i| i + 1);
            (
                format!("{before}{}", &after[end..]),
                after[..end].to_string(),
            )
        }
        None => (extra.to_string(), String::new()),
    };
    // Every test's RTP in 20000-29999 unless it asks for its own range.
    let ports = if media_extra.contains("rtp_port_min") {
        ""
    } else {
        "rtp_port_min = 20000\nrtp_port_max = 29999\n"
    };
    let sip_extra = extra.strip_prefix("[sip]\n").unwrap_or("");
    let extra = if sip_extra.is_empty() {
        extra.as_str()
    } else {
        ""
    };
    // Tests of what the box hears have it answer in silence; those of the
    // conversation write their own [receptionist].
    let listen = if extra.contains("[receptionist]") {
        ""
    } else {
        "[receptionist]\nmode = \"listen\"\n"
    };
    // One cache of the intent examples' embeddings for every agent of the
    // run, as a box keeps one across restarts (seconds per start without).
    let intent = if extra.contains("[intent]") {
        String::new()
    } else {
        format!("[intent]\ncache = {:?}\n", intent_cache())
    };
    let cfg = format!(
        "data_dir = {:?}\nmodels_dir = {:?}\n[sip]\nport = {port}\n{sip_extra}[media]\n{ports}{media_extra}{extra}\n{listen}{intent}",
        dir.join("data"),
        models_dir()
    );
    let p = dir.join("handlet.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

/// Start `handlet run` and wait until it prints "ready"; its log is
/// appended to `dir/agent.log`.
fn spawn_ready(config: &Path, dir: &Path, env: &[(&str, &str)]) -> (Child, Vec<String>) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))
        .unwrap();
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdout = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let ready = line.contains("ready in");
                stdout.push(line);
                if ready {
                    return (child, stdout);
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
                panic!("agent did not become ready; stdout {stdout:?}; log:\n{log}");
            }
        }
    }
}

/// A running agent; killed on drop.
pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub config: PathBuf,
    pub dir: TempDir,
    pub stdout: Vec<String>,
}

impl Agent {
    pub fn start(tag: &str) -> Agent {
        Self::start_with(tag, "")
    }

    /// Start with extra TOML appended to the test config (after its [media] table).
    pub fn start_with(tag: &str, extra: &str) -> Agent {
        Self::start_in(TempDir::new(tag), extra)
    }

    /// An agent that plays "This call may be recorded." (espeak-ng, kept in
    /// its dir) to every caller; also the prompt's length in seconds.
    pub fn start_announcing(tag: &str) -> (Agent, f32) {
        let dir = TempDir::new(tag);
        let prompt = speech_wav(
            dir.path(),
            "announce",
            "This call may be recorded.",
            16000,
            0.1,
            0.2,
        );
        let secs = hound::WavReader::open(&prompt).unwrap().duration() as f32 / 16_000.0;
        let extra = format!("[privacy]\nannouncement = {prompt:?}\n");
        (Self::start_in(dir, &extra), secs)
    }

    /// Start in a dir the test prepared (its `data/` may be a mount).
    pub fn start_in(dir: TempDir, extra: &str) -> Agent {
        Self::start_in_env(dir, extra, &[])
    }

    /// Start with extra environment for the agent (e.g. `RUST_LOG`).
    pub fn start_in_env(dir: TempDir, extra: &str, env: &[(&str, &str)]) -> Agent {
        Self::start_on_env(dir, free_port(), extra, env)
    }

    /// Start on a SIP port chosen beforehand (a peer's config names it).
    pub fn start_on(dir: TempDir, port: u16, extra: &str) -> Agent {
        Self::start_on_env(dir, port, extra, &[])
    }

    fn start_on_env(dir: TempDir, port: u16, extra: &str, env: &[(&str, &str)]) -> Agent {
        let config = write_config(dir.path(), port, extra);
        let (child, stdout) = spawn_ready(&config, dir.path(), env);
        Agent {
            child,
            port,
            config,
            dir,
            stdout,
        }
    }

    /// kill -9 the agent (no clean-up of any kind) and start it again on
    /// the same data dir and port.
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, stdout) = spawn_ready(&self.config, self.dir.path(), &[]);
        self.child = child;
        self.stdout = stdout;
    }

    pub fn uri(&self) -> String {
        format!("sip:handlet@127.0.0.1:{}", self.port)
    }

    pub fn database(&self) -> PathBuf {
        self.dir.path().join("data").join("handlet.sqlite")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Speech rendered by espeak-ng, resampled by sox to `rate` Hz mono 16-bit,
/// padded with `lead`/`tail` seconds of silence.
pub fn speech_wav(dir: &Path, name: &str, text: &str, rate: u32, lead: f32, tail: f32) -> PathBuf {
    let raw = dir.join(format!("{name}-raw.wav"));
    let out = dir.join(format!("{name}.wav"));
    let ok = Command::new("espeak-ng")
        .args(["-s", "130", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .expect("espeak-ng is installed (make test installs it)");
    assert!(ok.success());
    // -R: sox dithers with fresh random noise on every run otherwise, and
    // whisper tiny flips words on that difference (DESIGN.md §7).
    let ok = Command::new("sox")
        .arg("-R")
        .arg(&raw)
        .args(["-r", &rate.to_string(), "-c", "1", "-b", "16"])
        .arg(&out)
        .args(["pad", &lead.to_string(), &tail.to_string()])
        .status()
        .expect("sox is installed (make test installs it)");
    assert!(ok.success());
    out
}

/// Lowercase words without punctuation.
pub fn words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect()
}

/// Word error rate: word-level edit distance over reference length.
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let r = words(reference);
    let h = words(hypothesis);
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(rw != hw))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len().max(1) as f64
}

/// Rows of the agent's database, read with the SQLite the test links.
/// A baresip configuration directory `dir/name`: PCMU only, SIP over
/// `transport` from 127.0.0.1, `wav` as its microphone (or silence), and
/// one `account` line.
pub fn baresip_config(
    dir: &Path,
    name: &str,
    wav: Option<&Path>,
    transport: &str,
    account: &str,
) -> PathBuf {
    let cfg = dir.join(name);
    std::fs::create_dir_all(&cfg).unwrap();
    let source = wav
        .map(|w| w.display().to_string())
        .unwrap_or_else(|| "/dev/null".into());
    std::fs::write(
        cfg.join("config"),
        format!(
            "poll_method epoll\nsip_listen 127.0.0.1:0\nsip_trans_def {transport}\nnet_interface 127.0.0.1\n\
             audio_source aufile,{source}\naudio_alert aufile,/dev/null\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n\
             module_app account.so\nmodule_app menu.so\n"
        ),
    )
    .unwrap();
    std::fs::write(cfg.join("accounts"), format!("{account}\n")).unwrap();
    cfg
}

/// A TCP connection to `to` from the local address `from` (127.0.0.x, so
/// one test can be several sources).
pub fn tcp_connect_from(
    from: [u8; 4],
    to: std::net::SocketAddr,
) -> std::io::Result<std::net::TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&std::net::SocketAddr::from((from, 0)).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(3))?;
    Ok(s.into())
}

/// A child process killed when the test lets go of it, panicking or not.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Db(pub rusqlite::Connection);

impl Db {
    pub fn open(path: &Path) -> Db {
        Db(rusqlite::Connection::open(path).unwrap())
    }
    /// (id, transport, codec, started, answered, ended, duration, reason, complete)
    pub fn calls(&self) -> Vec<CallRow> {
        let mut st = self
            .0
            .prepare("SELECT id, transport, codec, started_at_ms, answered_at_ms, ended_at_ms, duration_ms, end_reason, transcript_complete FROM calls ORDER BY started_at_ms")
            .unwrap();
        st.query_map([], |r| {
            Ok(CallRow {
                id: r.get(0)?,
                transport: r.get(1)?,
                codec: r.get(2)?,
                started: r.get(3)?,
                answered: r.get(4)?,
                ended: r.get(5)?,
                duration: r.get(6)?,
                reason: r.get(7)?,
                complete: r.get::<_, i64>(8)? != 0,
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }
    /// What the caller said.
    pub fn transcript(&self, call: &str) -> String {
        self.channel_transcript(call, "caller")
    }

    /// One leg's transcript: "caller", or "agent" (its announcement).
    pub fn channel_transcript(&self, call: &str, channel: &str) -> String {
        let mut st = self
            .0
            .prepare(
                "SELECT text FROM transcript_segments WHERE call_id = ?1 AND channel = ?2 ORDER BY start_ms",
            )
            .unwrap();
        st.query_map([call, channel], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Debug)]
pub struct CallRow {
    pub id: String,
    pub transport: String,
    pub codec: Option<String>,
    pub started: i64,
    pub answered: Option<i64>,
    pub ended: Option<i64>,
    pub duration: Option<i64>,
    pub reason: Option<String>,
    pub complete: bool,
}

/// Wait until `f` returns Some, or panic after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Run a `handlet` subcommand against the agent's config: (success, stdout, stderr).
pub fn handlet(agent: &Agent, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(&agent.config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `handlet call --wav WAV` against the agent: the client's whole output.
pub fn call_agent(agent: &Agent, wav: &Path) -> std::process::Output {
    call_agent_with(agent, wav, &[])
}

/// `handlet call` with more of its options (`--from`, `--to`, `--wait`).
pub fn call_agent_with(agent: &Agent, wav: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(["call", "--config"])
        .arg(&agent.config)
        .arg("--wav")
        .arg(wav)
        .args(args)
        .output()
        .unwrap()
}

/// openssl in `dir`, which must succeed.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed (make test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `handlet call` that must succeed; its output.
pub fn call_ok(agent: &Agent, wav: &Path) -> std::process::Output {
    call_ok_with(agent, wav, &[])
}

/// [`call_ok`] with more of `handlet call`'s options.
pub fn call_ok_with(agent: &Agent, wav: &Path, args: &[&str]) -> std::process::Output {
    let out = call_agent_with(agent, wav, args);
    assert!(
        out.status.success(),
        "handlet call failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run a subcommand that must succeed; its stdout.
pub fn ok(agent: &Agent, args: &[&str]) -> String {
    let (success, out, err) = handlet(agent, args);
    assert!(success, "handlet {args:?} failed: {out}\n{err}");
    out
}

/// Every regular file under `dir`, recursively (the agent's control
/// socket lives in the data dir too; it holds no data).
pub fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// A numeric field (`name=123`) from the last log line holding `message`,
/// with the terminal colour codes the log may carry taken out.
pub fn log_field(log: &str, message: &str, name: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(message))?;
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let at = plain.find(&format!(" {name}="))? + name.len() + 2;
    plain[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A desk phone: baresip registered to the agent as `number`, answering by itself
/// (after a second) or never, playing `wav` when answered, quitting after
/// `secs`.
pub struct DeskPhone {
    /// Killed when the test lets go of the phone.
    _proc: Reaped,
    dir: PathBuf,
}

impl DeskPhone {
    pub fn start(
        agent: &Agent,
        number: &str,
        secret: &str,
        answers: bool,
        wav: Option<&Path>,
        secs: u64,
    ) -> DeskPhone {
        Self::start_dialling(agent, number, secret, answers, wav, None, secs)
    }

    /// The same, dialling `dial` (a number or an extension) once registered.
    pub fn start_dialling(
        agent: &Agent,
        number: &str,
        secret: &str,
        answers: bool,
        wav: Option<&Path>,
        dial: Option<&str>,
        secs: u64,
    ) -> DeskPhone {
        Self::start_with(agent, number, secret, answers, wav, dial, secs, "")
    }

    /// The same, with `extra` lines for its config (e.g. `ctrl_tcp`).
    #[allow(clippy::too_many_arguments)]
    pub fn start_with(
        agent: &Agent,
        number: &str,
        secret: &str,
        answers: bool,
        wav: Option<&Path>,
        dial: Option<&str>,
        secs: u64,
        extra: &str,
    ) -> DeskPhone {
        let account = format!(
            "<sip:{number}@127.0.0.1:{}>;auth_pass={secret};regint=300;answermode={};audio_codecs=PCMU",
            agent.port,
            if answers { "auto" } else { "manual" }
        );
        Self::launch(agent, number, "udp", &account, wav, dial, secs, extra)
    }

    /// A phone registered over TLS to the agent's `tls_port` that keys
    /// its media with SDES (`mediaenc=srtp`: SRTP offered, and taken when
    /// offered); `extra` lines for its config (`{dir}`: its directory).
    #[allow(clippy::too_many_arguments)]
    pub fn start_secure(
        agent: &Agent,
        tls_port: u16,
        number: &str,
        secret: &str,
        answers: bool,
        wav: Option<&Path>,
        dial: Option<&str>,
        secs: u64,
        extra: &str,
    ) -> DeskPhone {
        let account = format!(
            "<sip:{number}@127.0.0.1:{tls_port};transport=tls>;auth_pass={secret};regint=300;answermode={};audio_codecs=PCMU;mediaenc=srtp",
            if answers { "auto" } else { "manual" }
        );
        Self::launch(
            agent,
            number,
            "tls",
            &account,
            wav,
            dial,
            secs,
            &format!(
                "module srtp.so\n{}",
                extra.replace(
                    "{dir}",
                    &agent
                        .dir
                        .path()
                        .join(format!("phone-{number}"))
                        .display()
                        .to_string()
                )
            ),
        )
    }

    /// A phone that shows message waiting (baresip's `mwi` module). Its
    /// account is added once baresip runs (`uanew` over ctrl_tcp):
    /// baresip 1.0's mwi module walks its list of subscriptions from a
    /// timer 1 ms after start while subscribing appends to that list, so a
    /// phone registered within that millisecond (a fast registrar on
    /// loopback) subscribes without end.
    pub fn start_showing_messages(agent: &Agent, number: &str, secret: &str) -> DeskPhone {
        let ctrl = free_port();
        let account = format!(
            "<sip:{number}@127.0.0.1:{}>;auth_pass={secret};regint=300;answermode=manual;audio_codecs=PCMU;mwi=yes",
            agent.port
        );
        let extra = format!(
            "module_app mwi.so\nmodule_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl}\n"
        );
        let dir = baresip_config(
            agent.dir.path(),
            &format!("phone-{number}"),
            None,
            "udp",
            "",
        );
        let mut c = std::fs::read_to_string(dir.join("config")).unwrap();
        c.push_str(&extra);
        std::fs::write(dir.join("config"), c).unwrap();
        let out = std::fs::File::create(dir.join("baresip.out")).unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .args(["-t", "600"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("baresip is installed (make test installs it)");
        let phone = DeskPhone {
            _proc: Reaped(child),
            dir,
        };
        wait_for(15, "baresip's ctrl_tcp", || {
            std::net::TcpStream::connect(("127.0.0.1", ctrl)).ok()
        });
        let r = baresip_command(ctrl, "uanew", &account);
        assert!(!r.is_empty(), "ctrl_tcp answered uanew");
        phone.wait_registered(agent, number);
        phone
    }

    fn wait_registered(&self, agent: &Agent, number: &str) {
        wait_for(15, &format!("extension {number} to register"), || {
            let out = ok(agent, &["extensions"]);
            let v: serde_json::Value = serde_json::from_str(&out).ok()?;
            v.as_array()?
                .iter()
                .find(|e| e["number"] == number)?
                .get("contacts")?
                .as_array()
                .filter(|c| !c.is_empty())
                .map(|_| ())
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        agent: &Agent,
        number: &str,
        transport: &str,
        account: &str,
        wav: Option<&Path>,
        dial: Option<&str>,
        secs: u64,
        extra: &str,
    ) -> DeskPhone {
        let dir = baresip_config(
            agent.dir.path(),
            &format!("phone-{number}"),
            wav,
            transport,
            account,
        );
        if !extra.is_empty() {
            let mut c = std::fs::read_to_string(dir.join("config")).unwrap();
            c.push_str(extra);
            std::fs::write(dir.join("config"), c).unwrap();
        }
        let out = std::fs::File::create(dir.join("baresip.out")).unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .args(["-t", &secs.to_string()])
            .args(
                dial.map(|d| vec!["-e".to_string(), format!("/dial {d}")])
                    .unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("baresip is installed (make test installs it)");
        let phone = DeskPhone {
            _proc: Reaped(child),
            dir,
        };
        phone.wait_registered(agent, number);
        phone
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.out")).unwrap_or_default()
    }
}

/// The call's recording, once complete, decrypted by `handlet recordings
/// export` into a WAV in the agent's dir.
pub fn exported_recording(agent: &Agent, db: &Db, call: &str) -> PathBuf {
    let rec: i64 = wait_for(20, "the recording", || {
        db.0.query_row(
            "SELECT id FROM recordings WHERE call_id = ?1 AND state = 'complete'",
            [call],
            |r| r.get(0),
        )
        .ok()
    });
    let wav = agent.dir.path().join("rec.wav");
    ok(
        agent,
        &[
            "recordings",
            "export",
            &format!("{rec:016x}"),
            "--out",
            wav.to_str().unwrap(),
        ],
    );
    wav
}

/// A raw INVITE from `from` (127.0.0.x) to the agent, for `to_user`, from
/// `from_user`, with no credentials; the status code of its final answer.
pub fn invite_from(from: [u8; 4], agent: &Agent, to_user: &str, from_user: &str) -> u16 {
    invite_from_within(from, agent, to_user, from_user, 3)
}

/// [`invite_from`], waiting up to `secs` between answers (a call that
/// rings a phone first).
pub fn invite_from_within(
    from: [u8; 4],
    agent: &Agent,
    to_user: &str,
    from_user: &str,
    secs: u64,
) -> u16 {
    let sock = std::net::UdpSocket::bind((std::net::Ipv4Addr::from(from), 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(secs)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        ip = local.ip()
    );
    let msg = format!(
        "INVITE sip:{to_user}@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{n}\r\n\
         From: <sip:{from_user}@{ip}>;tag=a{n}\r\nTo: <sip:{to_user}@127.0.0.1>\r\nCall-ID: stranger-{n}@{ip}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:caller@{local}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n\
         Content-Length: {len}\r\n\r\n{sdp}",
        port = agent.port,
        ip = local.ip(),
        n = local.port(),
        len = sdp.len()
    );
    sock.send_to(msg.as_bytes(), ("127.0.0.1", agent.port))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).expect("an answer to the INVITE");
        let text = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if code >= 200 {
            return code;
        }
    }
}

/// A command to a baresip with `ctrl_tcp` listening on `port` (a
/// netstring of JSON, its long command names: "hold", "resume", ...).
pub fn baresip_command(port: u16, command: &str, params: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("baresip ctrl_tcp");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let json = format!(r#"{{"command":"{command}","params":"{params}","token":"t"}}"#);
    s.write_all(format!("{}:{json},", json.len()).as_bytes())
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Wait until each (channel, word) is in call `id`'s stored transcript
/// (lowercased), or panic after `secs` with every channel's text.
pub fn wait_words(db: &Db, id: &str, want: &[(&str, &str)], secs: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let texts: Vec<(String, String)> = want
            .iter()
            .map(|(ch, _)| (ch.to_string(), db.channel_transcript(id, ch).to_lowercase()))
            .collect();
        if want
            .iter()
            .zip(&texts)
            .all(|((_, w), (_, t))| t.contains(w))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "words {want:?} not all heard after {secs} s: {texts:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// An RTP datagram seen on loopback: its UDP ports and payload.
pub struct Datagram {
    pub src: u16,
    pub dst: u16,
    pub rtp: Vec<u8>,
}

impl Datagram {
    pub fn payload_type(&self) -> u8 {
        self.rtp[1] & 0x7f
    }
}

/// Every RTP datagram (version 2, 12+ bytes) on loopback to or from a port
/// in `ports`, read by a raw packet socket (AF_PACKET; the tests run as
/// root) on a thread until [`Sniffer::stop`]. A test gives its agent an
/// RTP range of its own (not the harness's 20000-29999) so other tests
/// running at the same time are not seen.
pub struct Sniffer {
    seen: std::sync::Arc<std::sync::Mutex<Vec<Datagram>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sniffer {
    pub fn start(ports: std::ops::RangeInclusive<u16>) -> Sniffer {
        use socket2::{Domain, Protocol, Socket, Type};
        use std::sync::atomic::Ordering;
        const AF_PACKET: i32 = 17;
        const SOCK_RAW: i32 = 3;
        const ETH_P_ALL_BE: i32 = 0x0300;
        let sock = Socket::new(
            Domain::from(AF_PACKET),
            Type::from(SOCK_RAW),
            Some(Protocol::from(ETH_P_ALL_BE)),
        )
        .expect("a raw packet socket (tests run as root)");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (out, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 65536];
            while !st.load(Ordering::Relaxed) {
                let Ok(n) = sock.recv(&mut buf) else { continue };
                // SAFETY: recv initialised the first n bytes.
                let frame: Vec<u8> = buf[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                if let Some(d) = rtp_datagram(&frame, &ports) {
                    out.lock().unwrap().push(d);
                }
            }
        });
        Sniffer {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Stop reading; what was seen.
    pub fn stop(&mut self) -> Vec<Datagram> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// The RTP datagram in a loopback frame (14-byte link header, IPv4, UDP)
/// to or from a port in `ports`, else None.
fn rtp_datagram(frame: &[u8], ports: &std::ops::RangeInclusive<u16>) -> Option<Datagram> {
    let ip = frame.get(14..)?;
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 17 {
        return None;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let udp = ip.get(ihl..)?;
    let src = u16::from_be_bytes([*udp.first()?, *udp.get(1)?]);
    let dst = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    if !ports.contains(&src) && !ports.contains(&dst) {
        return None;
    }
    let rtp = udp.get(8..)?;
    (rtp.len() >= 12 && rtp[0] >> 6 == 2).then(|| Datagram {
        src,
        dst,
        rtp: rtp.to_vec(),
    })
}

/// RMS of each 20 ms of one channel of a 16-bit WAV (0 = left).
pub fn windows_rms(wav: &Path, channel: usize) -> Vec<f32> {
    let mut r = hound::WavReader::open(wav).unwrap();
    let spec = r.spec();
    let ch = spec.channels as usize;
    let s: Vec<f32> = r
        .samples::<i16>()
        .map(|x| x.unwrap() as f32 / 32768.0)
        .skip(channel)
        .step_by(ch)
        .collect();
    let n = spec.sample_rate as usize / 50;
    s.chunks(n)
        .map(|c| (c.iter().map(|x| x * x).sum::<f32>() / c.len() as f32).sqrt())
        .collect()
}

/// A labelled sentence set under tests/data: `label<TAB>text` lines, `#`
/// comments.
pub fn labelled_set(file: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(repo().join("tests/data").join(file))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (label, text) = l.split_once('\t').expect("label<TAB>text");
            (label.to_string(), text.to_string())
        })
        .collect()
}

/// A confusion table: rows are the truth, columns what was said.
pub fn confusion_table(labels: &[String], confusion: &[Vec<u32>]) -> String {
    let short = |l: &str| l.chars().take(6).collect::<String>();
    let mut table = format!("{:>22}", "");
    for l in labels {
        table += &format!("{:>7}", short(l));
    }
    for (i, row) in confusion.iter().enumerate() {
        table += &format!("\n{:>22}", labels[i]);
        for n in row {
            table += &format!("{n:>7}");
        }
    }
    table
}
