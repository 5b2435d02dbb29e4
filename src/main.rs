//! `handlet`: the Handlet Edge agent and its command-line tools.

use clap::{Parser, Subcommand};
use handlet_agent::config::Config;
use handlet_agent::{Error, agent, client};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "handlet",
    version,
    about = "Handlet Edge: answers a small business's phone line, transcribes calls on the box."
)]
struct Cli {
    /// Configuration file (TOML). Fields left out keep the embedded defaults.
    #[arg(long, short, global = true, env = "HANDLET_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: answer SIP calls (UDP and TCP), transcribe them, store them.
    Run,
    /// Ask the running agent how it is: calls in progress, limits hit, SIP.
    Status,
    /// Ask the running agent which extensions are registered, where, and
    /// until when.
    Extensions,
    /// Read an extension's password on stdin and print the `ha1` lines to
    /// put in its [[extension]] instead of the password (in `sip.realm`).
    ExtensionSecret {
        /// The extension's number.
        #[arg(long)]
        number: String,
    },
    /// Call the agent, play a WAV as the caller, hang up, print the stored transcript.
    Call {
        /// WAV file to speak (any rate, any channel count).
        #[arg(long)]
        wav: PathBuf,
        /// Who to call; defaults to the agent in the configuration.
        #[arg(long)]
        to: Option<String>,
        /// Seconds to wait for the transcript after hanging up.
        #[arg(long, default_value_t = 120)]
        wait: u64,
        /// Keys to press after the WAV (e.g. "12#"), sent as RFC 4733 events.
        #[arg(long, default_value = "")]
        digits: String,
        /// Caller id to present, the From user part (e.g. +447700900123).
        #[arg(long)]
        from: Option<String>,
        /// Save what the agent played to the caller (its announcement) as a WAV.
        #[arg(long)]
        hear: Option<PathBuf>,
    },
    /// Transcribe a WAV file offline and print timed segments.
    Transcribe {
        /// WAV file (any rate, any channel count).
        file: PathBuf,
        /// Also print what the caller wanted: intent, sentiment, entities,
        /// and the summary the agent stores after a call.
        #[arg(long)]
        summary: bool,
    },
    /// The calls on the box: a list with how each ended (the default), or
    /// one call's timeline (`calls show ID`). Times are UTC; numbers are
    /// shown (this reads the box's own database; nothing is logged).
    #[command(args_conflicts_with_subcommands = true)]
    Calls {
        #[command(subcommand)]
        command: Option<CallsCommand>,
        /// Only calls started at or after this: a UTC date ("2026-12-01"),
        /// a UTC time ("2026-12-01 10:00"), Unix milliseconds, or an age
        /// ("90m", "24h", "7d").
        #[arg(long)]
        since: Option<String>,
        /// At most this many calls, newest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// What the business must do after calls: messages taken and
    /// voicemails left, most urgent first.
    #[command(args_conflicts_with_subcommands = true)]
    Followups {
        #[command(subcommand)]
        command: Option<FollowupsCommand>,
        /// Only those not done yet.
        #[arg(long)]
        open: bool,
    },
    /// Voicemails: list them, play one (decrypted to a WAV), mark one heard.
    Voicemail {
        #[command(subcommand)]
        command: VoicemailCommand,
    },
    /// Upstream sync (docs/SYNC.md).
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// Encrypted call recordings.
    Recordings {
        #[command(subcommand)]
        command: RecordingsCommand,
    },
    /// Device keys that wrap the recordings' keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Retention and data-subject requests.
    Privacy {
        #[command(subcommand)]
        command: PrivacyCommand,
    },
    /// Where calls go: explain the routing plan offline, or override the
    /// opening hours while the agent runs.
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Model provisioning tools (used by `make models`).
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(Subcommand)]
enum CallsCommand {
    /// One call's timeline: each routing decision with its reason, each
    /// phone rung and how it ended, keys pressed, everything said by either
    /// side, the end, the summary (intent, urgency, confidence) and the
    /// outcome; times from the call's start.
    Show {
        /// The call's id, or its first characters if no other call's id
        /// starts with them (as `handlet calls` lists them).
        id: String,
    },
}

#[derive(Subcommand)]
enum FollowupsCommand {
    /// Mark follow-up ID done (someone called back).
    Done { id: i64 },
}

#[derive(Subcommand)]
enum VoicemailCommand {
    /// Every voicemail, new ones first.
    List,
    /// Decrypt voicemail ID (its call id, or a unique prefix) to a WAV, and
    /// mark it heard.
    Play {
        id: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Mark voicemail ID heard without playing it.
    MarkHeard { id: String },
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Whether sync is on, and what the outbox holds: events pending,
    /// delivered, dead-lettered, and how old the oldest pending one is.
    Status,
    /// Make this box's key pair (if it has none, or with --new-key) and a
    /// certificate signing request for the workspace's CA, named for
    /// sync.device_id.
    Enroll {
        /// Make a new key even if one is there (the old certificate stops
        /// working once the new one is installed).
        #[arg(long)]
        new_key: bool,
    },
}

#[derive(Subcommand)]
enum RecordingsCommand {
    /// List recordings: id, call, when, length, state, when it expires.
    List,
    /// Decrypt one recording to a 16-bit stereo WAV (caller left, callee right).
    Export {
        /// Recording id, as `recordings list` shows it.
        id: String,
        /// WAV file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a new device key, rewrap every recording's data key under it,
    /// delete the old key files. Back up data/keys afterwards.
    Rotate,
}

#[derive(Subcommand)]
enum PrivacyCommand {
    /// Everything held about a phone number: calls, transcripts, drafts,
    /// summaries and keys pressed as JSON, recordings decrypted to WAV.
    Export {
        /// The number: 07700 900123, +44 7700 900123, 0044..., any spacing.
        #[arg(long)]
        phone: String,
        /// New or empty directory to write calls.json and recordings/ into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Erase a phone number's calls (from it, to it, or where it was said or
    /// keyed) with their transcripts, drafts, summaries, events and
    /// recordings; or, with --workspace, every call on the box.
    Erase {
        /// The number, as for `privacy export`.
        #[arg(
            long,
            conflicts_with = "workspace",
            required_unless_present = "workspace"
        )]
        phone: Option<String>,
        /// Erase the whole call corpus (needs --yes).
        #[arg(long)]
        workspace: bool,
        /// Confirm erasing the whole workspace.
        #[arg(long, requires = "workspace")]
        yes: bool,
    },
    /// The privacy audit log: every request and sweep, what it touched (never
    /// the content, never a number).
    Audit,
    /// Delete everything past its retention now (the agent also does this
    /// every privacy.sweep_interval_mins).
    Sweep {
        /// Sweep as if it were this time (Unix milliseconds); for checking a
        /// policy before it bites.
        #[arg(long)]
        at_ms: Option<i64>,
    },
}

#[derive(Subcommand)]
enum RouteCommand {
    /// Print the path a call would take through the plan (ringing assumed
    /// unanswered, so every fallback shows). Offline: no agent needed.
    Explain {
        /// The caller's number; leave out for a withheld caller.
        #[arg(long)]
        from: Option<String>,
        /// The number dialled (one of the trunks' DIDs).
        #[arg(long)]
        to: Option<String>,
        /// Local time in routing.timezone, "2026-12-25 10:00"; default now.
        #[arg(long)]
        at: Option<String>,
        /// What the receptionist hears the caller want (an intent name).
        #[arg(long)]
        intent: Option<String>,
    },
    /// Set the opening state: open, closed, or auto (the hours decide).
    /// Kept across restarts; without an argument, print it.
    Override { state: Option<String> },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (defaults plus your file).
    Show,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Convert a CTranslate2 whisper model (model.bin + vocabulary.txt) to ggml.
    Convert {
        /// Directory holding model.bin and vocabulary.txt.
        #[arg(long)]
        ct2: PathBuf,
        /// Output ggml file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check every pinned model file by sha256.
    Verify {
        /// Models directory; defaults to models_dir from the configuration.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn route(cfg: &Config, command: RouteCommand) -> Result<(), Error> {
    use handlet_agent::phone::Phone;
    use handlet_agent::routing::{self, Caller, Override};
    let country = cfg.site.country;
    match command {
        RouteCommand::Explain {
            from,
            to,
            at,
            intent,
        } => {
            let mut plan = cfg.routing_plan().map_err(Error::Config)?;
            // The plan pushed from upstream runs instead, where there is one.
            if cfg.sync.enabled()
                && let Ok(conn) = handlet_agent::store::open_for_tools(&cfg.database_path())
                && let Some((version, _, pushed)) = handlet_agent::uplink::pushed(cfg, &conn)
            {
                println!("(the plan pushed from upstream, version {version})");
                plan = pushed;
            }
            let plan = stored_override(cfg)
                .map(|o| plan.with_switch(o))
                .unwrap_or(plan);
            let caller = match from {
                Some(n) => Caller::Number(
                    Phone::parse_in(&n, country)
                        .map_err(|e| Error::Config(format!("--from: {e}")))?
                        .e164(),
                ),
                None => Caller::Withheld,
            };
            let did = to
                .map(|n| Phone::parse_in(&n, country).map(|p| p.e164()))
                .transpose()
                .map_err(|e| Error::Config(format!("--to: {e}")))?;
            if let Some(i) = &intent
                && i != "unknown"
                && !cfg.intent.intents.iter().any(|d| &d.name == i)
            {
                return Err(Error::Config(format!(
                    "--intent {i:?} is not an intent the receptionist knows ({}, unknown)",
                    cfg.intent
                        .intents
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let now = match at {
                Some(a) => routing::explain::parse_local(&plan, &a).map_err(Error::Config)?,
                None => handlet_agent::clock::now_ms(),
            };
            let path = routing::explain::path(&plan, caller, did, intent.as_deref(), now);
            print!("{}", routing::explain::render(&path, intent.as_deref()));
            Ok(())
        }
        RouteCommand::Override { state } => {
            let set: Option<Override> = state
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(Error::Config)?;
            match handlet_agent::control::request_with(
                &cfg.data_dir,
                "route",
                set.map(Override::as_str),
            ) {
                Ok(v) => {
                    println!("{}", handlet_agent::control::pretty(&v));
                    Ok(())
                }
                // No agent running (no socket, or a dead agent's): keep it
                // for its next start.
                Err(_)
                    if std::os::unix::net::UnixStream::connect(
                        handlet_agent::control::socket_path(&cfg.data_dir),
                    )
                    .is_err() =>
                {
                    let conn = handlet_agent::store::open_for_tools(&cfg.database_path())?;
                    if let Some(o) = set {
                        handlet_agent::store::write_setting(
                            &conn,
                            handlet_agent::agent::ROUTE_OVERRIDE,
                            o.as_str(),
                            handlet_agent::clock::now_ms(),
                        )
                        .map_err(Error::Db)?;
                    }
                    let plan = cfg.routing_plan().map_err(Error::Config)?;
                    let plan = stored_override(cfg)
                        .map(|o| plan.with_switch(o))
                        .unwrap_or(plan);
                    let v =
                        handlet_agent::agent::route_state(&plan, handlet_agent::clock::now_ms());
                    println!("{}", handlet_agent::control::pretty(&v));
                    println!("(no agent is running; it takes this at its next start)");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// The override kept in the database, if any (for offline commands).
fn stored_override(cfg: &Config) -> Option<handlet_agent::routing::Override> {
    if !cfg.database_path().exists() {
        return None;
    }
    let conn = handlet_agent::store::open_for_tools(&cfg.database_path()).ok()?;
    handlet_agent::store::read_setting(&conn, handlet_agent::agent::ROUTE_OVERRIDE)
        .ok()
        .flatten()?
        .parse()
        .ok()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handlet: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(handlet_agent::logging::colour())
        .with_writer(ScrubbedStderr)
        .try_init();
}

/// Hands tracing-subscriber a [`handlet_agent::logging::Scrub`] per event:
/// lines at info and above are redacted on their way to stderr, debug and
/// trace are written as they are, and a failing scrubber drops the line
/// instead of the thread. The writer and its tests live in handlet-agent;
/// only this trait impl needs tracing-subscriber.
struct ScrubbedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbedStderr {
    type Writer = handlet_agent::logging::Scrub;
    fn make_writer(&'a self) -> Self::Writer {
        handlet_agent::logging::Scrub::stderr()
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        handlet_agent::logging::Scrub::stderr_for(meta.level())
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let cfg = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Run => {
            init_logging(&cfg);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Io(e.to_string()))?;
            rt.block_on(agent::run(cfg))
        }
        Command::Call {
            wav,
            to,
            wait,
            digits,
            from,
            hear,
        } => {
            init_logging(&cfg);
            let to = to.unwrap_or_else(|| {
                format!("sip:{}@{}:{}", cfg.sip.user, cfg.sip.bind, cfg.sip.port)
            });
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Io(e.to_string()))?;
            let db = cfg.database_path();
            let out = rt.block_on(client::place_call(client::CallOptions {
                wav: &wav,
                to: to.clone(),
                database: Some(&db),
                wait: Duration::from_secs(wait),
                digits,
                from,
                hear: hear.as_deref(),
            }))?;
            println!(
                "call {} to {to} finished",
                out.call_id.as_deref().unwrap_or(&out.sip_call_id)
            );
            if out.segments.is_empty() {
                println!("(no speech transcribed)");
            }
            for s in out.segments {
                println!(
                    "[{} → {}] {}: {}",
                    ms(s.start_ms as u64),
                    ms(s.end_ms as u64),
                    s.channel,
                    s.text
                );
            }
            if let Some((summary, intent, urgency, follow_up)) = out.summary {
                println!("summary: {summary}");
                println!("intent: {intent} (urgency {urgency})");
                println!("follow-up: {follow_up}");
            }
            Ok(())
        }
        Command::Transcribe { file, summary } => transcribe(&cfg, &file, summary),
        Command::Calls {
            command,
            since,
            limit,
        } => calls(&cfg, command, since, limit),
        Command::Followups { command, open } => followups(&cfg, command, open),
        Command::Voicemail { command } => voicemail(&cfg, command),
        Command::Sync {
            command: SyncCommand::Status,
        } => sync_status(&cfg),
        Command::Sync {
            command: SyncCommand::Enroll { new_key },
        } => {
            let e = handlet_agent::uplink::enroll(&cfg, new_key)?;
            println!(
                "{} {} (0600); certificate request for CN={} in {}",
                if e.new_key {
                    "made the key"
                } else {
                    "kept the key"
                },
                e.key.display(),
                cfg.sync.device_id,
                e.csr.display()
            );
            println!(
                "next: have the workspace's CA sign the request, put the certificate at {} and the CA's certificate at {}, then restart the agent",
                e.cert.display(),
                e.ca.display()
            );
            Ok(())
        }
        Command::Recordings { command } => recordings(&cfg, command),
        Command::Privacy { command } => privacy(&cfg, command),
        Command::Keys {
            command: KeysCommand::Rotate,
        } => {
            let conn = handlet_agent::store::open_for_tools(&cfg.database_path())?;
            let r = handlet_agent::recording::rotate(&conn, &cfg.data_dir)?;
            println!(
                "device key {} now wraps all {} recording keys; old key files deleted: {}",
                r.new_key,
                r.rewrapped,
                if r.removed.is_empty() {
                    "none".to_string()
                } else {
                    r.removed
                        .iter()
                        .map(|id| format!("device-{id}.key"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
            println!(
                "back up {} now: recordings cannot be played without it",
                handlet_agent::recording::keys_dir(&cfg.data_dir)
                    .join(format!("device-{}.key", r.new_key))
                    .display()
            );
            Ok(())
        }
        Command::Status => {
            let st = handlet_agent::control::request(&cfg.data_dir, "status")?;
            println!("{}", handlet_agent::control::pretty(&st));
            Ok(())
        }
        Command::ExtensionSecret { number } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .map_err(|e| Error::Config(format!("cannot read the password from stdin: {e}")))?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.chars().count() < 8 {
                return Err(Error::Config(
                    "the password must be at least 8 characters".into(),
                ));
            }
            let s = handlet_agent::sip::digest::Secret::new(&number, &cfg.sip.realm, password);
            println!("# extension {number}, realm {:?}", cfg.sip.realm);
            println!("ha1 = \"{}\"", s.md5);
            if let Some(sha) = &s.sha256 {
                println!("ha1_sha256 = \"{sha}\"");
            }
            Ok(())
        }
        Command::Extensions => {
            let st = handlet_agent::control::request(&cfg.data_dir, "extensions")?;
            println!("{}", handlet_agent::control::pretty(&st));
            Ok(())
        }
        Command::Route { command } => route(&cfg, command),
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            print!("{}", cfg.to_toml());
            Ok(())
        }
        Command::Models { command } => match command {
            ModelsCommand::Convert { ct2, out } => convert(&ct2, &out),
            ModelsCommand::Verify { dir } => {
                let dir = dir.unwrap_or(cfg.models_dir);
                handlet_models::manifest::ModelPaths::verify_all(&dir)?;
                println!(
                    "models: all {} files verified in {}",
                    handlet_models::manifest::ALL.len(),
                    dir.display()
                );
                Ok(())
            }
        },
    }
}

fn privacy(cfg: &Config, command: PrivacyCommand) -> Result<(), Error> {
    use handlet_agent::phone::Phone;
    use handlet_agent::privacy::{self, requests};
    // Parse the number before opening anything: a typo changes nothing.
    let phone = match &command {
        PrivacyCommand::Export { phone, .. }
        | PrivacyCommand::Erase {
            phone: Some(phone), ..
        } => Some(Phone::parse_in(phone, cfg.site.country)?),
        _ => None,
    };
    let conn = handlet_agent::store::open_for_tools(&cfg.database_path())?;
    let now = handlet_agent::call::now_ms();
    let in_progress = |n: usize| {
        if n > 0 {
            println!(
                "{n} matching call(s) still in progress were left alone: run the request again once they have ended"
            );
        }
    };
    match command {
        PrivacyCommand::Sweep { at_ms } => {
            let s = privacy::sweep(&conn, &cfg.data_dir, &cfg.privacy, at_ms.unwrap_or(now))?;
            println!(
                "swept: {} recordings shredded, {} calls deleted with their transcripts and summaries, {} stray files removed",
                s.recordings, s.calls, s.orphan_files
            );
        }
        PrivacyCommand::Export { out, .. } => {
            let p = phone.expect("parsed above");
            let e = requests::export(
                &conn,
                &cfg.data_dir,
                requests::Subject::Phone(&p),
                &out,
                now,
            )?;
            println!(
                "exported {} calls and {} recordings to {}",
                e.calls,
                e.recordings,
                out.display()
            );
            in_progress(e.in_progress);
        }
        PrivacyCommand::Erase { workspace, yes, .. } => {
            let subject = match &phone {
                Some(p) => requests::Subject::Phone(p),
                None if workspace && yes => requests::Subject::Workspace,
                None => {
                    return Err(Error::Privacy(
                        "--workspace erases every call on this box; add --yes to confirm".into(),
                    ));
                }
            };
            let e = requests::erase(&conn, &cfg.data_dir, subject, now)?;
            println!(
                "erased {} calls with their transcripts, drafts, summaries and events; {} recordings shredded{}",
                e.calls,
                e.recordings,
                if e.stray_files > 0 {
                    format!("; {} stray files removed", e.stray_files)
                } else {
                    String::new()
                }
            );
            in_progress(e.in_progress);
        }
        PrivacyCommand::Audit => {
            let rows = privacy::audit_log(&conn)?;
            if rows.is_empty() {
                println!("no privacy requests or sweeps yet");
            }
            for a in rows {
                println!(
                    "{}  {:<15}  {:<24}  {:>6} items  {}",
                    utc(a.at_ms),
                    a.request,
                    a.subject,
                    a.items,
                    a.detail
                );
            }
        }
    }
    Ok(())
}

fn calls(
    cfg: &Config,
    command: Option<CallsCommand>,
    since: Option<String>,
    limit: usize,
) -> Result<(), Error> {
    use handlet_agent::store::timeline;
    // Parse before opening anything: a typo creates no database.
    let since = since
        .map(|s| timeline::parse_since(&s, handlet_agent::clock::now_ms()))
        .transpose()?;
    let conn = handlet_agent::store::open_for_tools(&cfg.database_path())?;
    match command {
        None => print!(
            "{}",
            timeline::render_list(&timeline::list(&conn, since, limit)?)
        ),
        Some(CallsCommand::Show { id }) => {
            print!("{}", timeline::render(&timeline::show(&conn, &id)?))
        }
    }
    Ok(())
}

fn recordings(cfg: &Config, command: RecordingsCommand) -> Result<(), Error> {
    use handlet_agent::recording;
    let conn = handlet_agent::store::open_for_tools(&cfg.database_path())?;
    match command {
        RecordingsCommand::List => {
            let rows = recording::list(&conn)?;
            if rows.is_empty() {
                println!("no recordings");
            }
            for r in rows {
                println!(
                    "{:016x}  call {}  started {}  {:>8}  {:>9} bytes  {:<9}  expires {}",
                    r.id,
                    r.call_id,
                    utc(r.started_at_ms),
                    ms(r.duration_ms.max(0) as u64),
                    r.bytes,
                    r.state,
                    utc(r.expires_at_ms)
                );
            }
            Ok(())
        }
        RecordingsCommand::Export { id, out } => {
            let id = u64::from_str_radix(id.trim(), 16).map_err(|_| {
                Error::Recording(format!(
                    "{id:?} is not a recording id (16 hex digits, from `handlet recordings list`)"
                ))
            })?;
            let keys = recording::keys::DeviceKeys::load(&recording::keys_dir(&cfg.data_dir))?;
            let d = recording::export_wav(&conn, &cfg.data_dir, &keys, id, &out)?;
            println!(
                "wrote {} ({}, {}{})",
                out.display(),
                ms(d.duration_ms()),
                if d.complete {
                    "complete"
                } else {
                    "truncated: the agent stopped during the call"
                },
                if d.corrupt.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} damaged second(s) replaced by silence",
                        d.corrupt.len()
                    )
                }
            );
            Ok(())
        }
    }
}

fn followups(cfg: &Config, command: Option<FollowupsCommand>, open: bool) -> Result<(), Error> {
    use handlet_agent::store::followups;
    let conn = handlet_agent::store::open_for_tools(&cfg.database_path())?;
    match command {
        Some(FollowupsCommand::Done { id }) => {
            if followups::done(&conn, id, handlet_agent::clock::now_ms())? {
                println!("follow-up {id} done");
            } else {
                println!("follow-up {id} was already done");
            }
            Ok(())
        }
        None => {
            let all = followups::list(&conn, open)?;
            if all.is_empty() {
                println!("no follow-ups{}", if open { " open" } else { "" });
            }
            for f in all {
                let dash = |o: &Option<String>| {
                    o.clone()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "-".into())
                };
                println!(
                    "{:>4}  {:<9} {:<6} due {}  {}  call back {} on {}{}  about: {}{}{}  (call {})",
                    f.id,
                    f.kind,
                    f.urgency,
                    utc(f.due_by_ms),
                    match f.done_at_ms {
                        Some(t) => format!("done {}", utc(t)),
                        None => "OPEN".into(),
                    },
                    dash(&f.name),
                    dash(&f.number),
                    if f.number_confirmed {
                        " (confirmed)"
                    } else {
                        ""
                    },
                    dash(&f.about),
                    f.address
                        .as_ref()
                        .map(|a| format!("; address: {a}"))
                        .unwrap_or_default(),
                    if f.complete {
                        ""
                    } else {
                        "; the caller left before the end"
                    },
                    &f.call_id[..f.call_id.len().min(16)],
                );
            }
            Ok(())
        }
    }
}

fn sync_status(cfg: &Config) -> Result<(), Error> {
    let conn = handlet_agent::store::open_for_tools(&cfg.database_path())?;
    let s = handlet_agent::store::outbox::status(&conn)?;
    let setting = |k: &str| handlet_agent::store::read_setting(&conn, k).ok().flatten();
    let state = if cfg.sync.enabled() {
        let connected = setting("sync.connected").as_deref() == Some("yes");
        format!(
            "on for device {} to {}, {}",
            cfg.sync.device_id,
            cfg.sync.broker,
            if connected {
                "connected"
            } else {
                "not connected"
            }
        )
    } else {
        "off (sync.broker is empty)".to_string()
    };
    println!("sync: {state}");
    println!("pending: {}", s.pending);
    println!("delivered: {}", s.delivered);
    println!("dead-lettered: {}", s.dead);
    if let Some(at) = setting("sync.last_contact_ms").and_then(|v| v.parse::<i64>().ok()) {
        let age = (handlet_agent::clock::now_ms() - at).max(0) as u64;
        println!("last contact: {} ago", ms(age));
    }
    if cfg.sync.enabled() {
        match setting("sync.config_version") {
            Some(v) => println!("config: version {v} from upstream applied"),
            None => println!("config: none from upstream (the local file)"),
        }
        if let Some(r) = setting("sync.config_refused") {
            println!("config refused: {r}");
        }
    }
    if let Some(at) = s.oldest_pending_ms {
        let age = (handlet_agent::clock::now_ms() - at).max(0) as u64;
        println!("oldest pending: {} ago", ms(age));
    }
    Ok(())
}

fn voicemail(cfg: &Config, command: VoicemailCommand) -> Result<(), Error> {
    use handlet_agent::recording;
    use handlet_agent::store::followups;
    let conn = handlet_agent::store::open_for_tools(&cfg.database_path())?;
    match command {
        VoicemailCommand::List => {
            let all = followups::voicemails(&conn)?;
            if all.is_empty() {
                println!("no voicemails");
            }
            for v in all {
                println!(
                    "{}  {:<5} {}  {:<8} from {}  {}",
                    &v.call_id[..v.call_id.len().min(16)],
                    if v.heard_at_ms.is_some() {
                        "heard"
                    } else {
                        "NEW"
                    },
                    utc(v.started_at_ms),
                    v.duration_ms
                        .map(|d| ms(d as u64))
                        .unwrap_or_else(|| "-".into()),
                    v.caller.as_deref().unwrap_or("withheld"),
                    v.mailbox,
                );
            }
            Ok(())
        }
        VoicemailCommand::Play { id, out } => {
            let v = followups::voicemail(&conn, &id)?;
            let rec = v.recording.ok_or_else(|| {
                Error::Recording(format!(
                    "voicemail {} has no recording (recording is off, or it was deleted)",
                    v.call_id
                ))
            })?;
            let keys = recording::keys::DeviceKeys::load(&recording::keys_dir(&cfg.data_dir))?;
            // The caller's words from the beep on (the box's greeting is
            // the other channel, before it).
            let d = recording::export_caller_wav(
                &conn,
                &cfg.data_dir,
                &keys,
                rec as u64,
                v.started_at_ms,
                &out,
            )?;
            followups::mark_heard(&conn, &v.call_id, handlet_agent::clock::now_ms())?;
            println!("wrote {} ({})", out.display(), ms(d as u64));
            Ok(())
        }
        VoicemailCommand::MarkHeard { id } => {
            let v = followups::voicemail(&conn, &id)?;
            followups::mark_heard(&conn, &v.call_id, handlet_agent::clock::now_ms())?;
            println!("voicemail {} marked heard", v.call_id);
            Ok(())
        }
    }
}

/// Unix ms as a UTC timestamp, without a date crate.
fn utc(ms_since_epoch: i64) -> String {
    let secs = ms_since_epoch.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60
    )
}

fn ms(v: u64) -> String {
    format!(
        "{}:{:02}.{:02}",
        v / 60_000,
        (v / 1000) % 60,
        (v % 1000) / 10
    )
}

fn transcribe(cfg: &Config, file: &Path, summary: bool) -> Result<(), Error> {
    init_logging(cfg);
    let audio = handlet_dsp::wav::read_16k(file)?;
    let (paths, stt) = agent::load_models(cfg)?;
    let mut heard = Vec::new();
    let mut w = stt.worker()?;
    let t0 = Instant::now();
    // Whisper sees at most 30 s; longer files go in 30 s pieces.
    let chunk = handlet_models::stt::MAX_SAMPLES;
    for (i, piece) in audio.samples.chunks(chunk).enumerate() {
        let offset = (i * chunk) as u64 / 16;
        for s in w.transcribe(piece)? {
            println!(
                "[{} → {}] {}",
                ms(offset + s.start_ms),
                ms(offset + s.end_ms),
                s.text
            );
            heard.push(s.text);
        }
    }
    if summary {
        let u = handlet_agent::understand::Understanding::load(&paths, cfg)?;
        let t = Instant::now();
        let s = u.summarise(&heard.join(" "), None, handlet_agent::call::now_ms())?;
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        println!("summary: {}", s.text);
        println!(
            "intent: {} (confidence {:.2}, runner-up {})",
            s.intent,
            s.intent_confidence,
            opt(&s.runner_up)
        );
        println!("sentiment: {}", s.sentiment);
        println!("urgency: {}", s.urgency);
        println!("caller name: {}", opt(&s.caller_name));
        println!("callback number: {}", opt(&s.callback_number));
        println!("requested time: {}", opt(&s.requested_time));
        println!("address: {}", opt(&s.address));
        println!("outcome: {}", s.outcome);
        println!("follow-up: {}", s.follow_up);
        tracing::debug!(ms = t.elapsed().as_millis() as u64, "summarised");
    }
    tracing::info!(
        audio_ms = audio.duration_ms(),
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "transcribed"
    );
    Ok(())
}

fn convert(ct2: &Path, out: &Path) -> Result<(), Error> {
    let read = |name: &str| {
        std::fs::read(ct2.join(name))
            .map_err(|e| Error::Io(format!("{}: {e}", ct2.join(name).display())))
    };
    let model = read("model.bin")?;
    let vocab = String::from_utf8(read("vocabulary.txt")?)
        .map_err(|_| Error::Io("vocabulary.txt is not UTF-8".into()))?;
    // Write beside the target and rename, so a crash never leaves a half file
    // that looks like a model.
    let tmp = out.with_extension("partial");
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&tmp).map_err(|e| Error::Io(format!("{}: {e}", tmp.display())))?,
    );
    let hp = handlet_models::convert::convert(&model, &vocab, &mut f)?;
    use std::io::Write;
    f.flush().map_err(|e| Error::Io(e.to_string()))?;
    drop(f);
    std::fs::rename(&tmp, out).map_err(|e| Error::Io(e.to_string()))?;
    println!("models: wrote {} ({hp:?})", out.display());
    Ok(())
}
