//! Start-up and shutdown of the agent daemon: check the data dir, verify and
//! load the models, open the store, bind SIP, then tell systemd we are ready.

use crate::call::CallCtx;
use crate::config::Config;
use crate::inference::Pool;
use crate::recording::{self, keys::DeviceKeys};
use crate::sip;
use crate::store::Store;
use crate::{Error, notify};
use handlet_models::manifest::ModelPaths;
use handlet_models::stt::Stt;
use handlet_models::vad;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Make sure `dir` exists and is writable, with an error that says which.
pub fn check_data_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::DataDir(format!("cannot create {}: {e}", dir.display())))?;
    let probe = dir.join(".write-test");
    let written = std::fs::write(&probe, b"ok");
    let _ = std::fs::remove_file(probe);
    written.map_err(|e| {
        Error::DataDir(if e.kind() == std::io::ErrorKind::StorageFull {
            format!(
                "the disk holding {} is full ({e}); free some space (`handlet privacy sweep` deletes what has expired)",
                dir.display()
            )
        } else {
            format!(
                "{} is not writable: {e}; set data_dir in your config or fix its permissions",
                dir.display()
            )
        })
    })
}

/// Hold the data dir for this process: a second agent on the same data dir
/// would recover recordings the first is writing and close its calls as
/// interrupted. The lock is the kernel's (flock), so a killed agent never
/// leaves it behind.
pub fn lock_data_dir(dir: &Path) -> Result<std::fs::File, Error> {
    let path = dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::DataDir(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::DataDir(format!(
            "another agent is running on {} (it holds {}); stop it first, or give this one its own data_dir",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::DataDir(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// Verify model files and load ONNX Runtime and whisper.
pub fn load_models(cfg: &Config) -> Result<(ModelPaths, Stt), Error> {
    let paths = ModelPaths::verify(&cfg.models_dir)?;
    vad::init_runtime(&paths.onnxruntime)?;
    // Load the VAD once now so a broken model fails at start, not on the first call.
    vad::Vad::load(&paths.silero_vad)?;
    let stt = Stt::load(&paths.whisper_file(cfg.transcription.model)?)?;
    Ok((paths, stt))
}

/// Run the agent until SIGINT/SIGTERM.
pub async fn run(cfg: Config) -> Result<(), Error> {
    let t0 = Instant::now();
    check_data_dir(&cfg.data_dir)?;
    let _held = lock_data_dir(&cfg.data_dir)?;
    let (models, stt) = tokio::task::block_in_place(|| load_models(&cfg))?;
    let understanding = Arc::new(tokio::task::block_in_place(|| {
        crate::understand::Understanding::load(&models, &cfg)
    })?);
    let pool = Pool::start(&stt, cfg.transcription.workers, cfg.transcription.queue)?;
    // One VAD session per call that may be transcribed at once, made now so
    // no call waits for (or blocks the runtime on) ONNX Runtime.
    let vads = tokio::task::block_in_place(|| {
        crate::transcribe::vad_pool::VadPool::prepare(
            models.silero_vad.clone(),
            cfg.limits.max_calls,
        )
    })?;
    // Recordings a crash cut short are recovered first, so the calls it
    // left open can be closed at the recording's recovered length.
    tokio::task::block_in_place(|| open_recordings(&cfg))?;
    // Sync's certificates are read now: a missing one stops start-up here.
    let sync_tls = if cfg.sync.enabled() {
        Some(crate::uplink::tls(&cfg.sync, &cfg.data_dir)?)
    } else {
        None
    };
    let outbox = if cfg.sync.enabled() {
        tracing::info!(device = %cfg.sync.device_id, "sync on: events for upstream go through the outbox");
        Some(crate::store::outbox::Outbox {
            policy: crate::sync::Policy::new(&cfg.sync.share),
            key: crate::store::outbox::number_key(&cfg.data_dir.join(&cfg.sync.number_key))?,
        })
    } else {
        None
    };
    let store = Store::open_with(&cfg.database_path(), outbox)?;
    let announcement = match cfg.privacy.announcement.as_str() {
        "" => None,
        path => Some(Arc::new(tokio::task::block_in_place(|| {
            crate::call::Announcement::load(std::path::Path::new(path), &stt)
        })?)),
    };
    // Trunk passwords are read now: a missing one stops start-up here.
    let trunks = Arc::new(sip::trunk::Trunks::from_config(&cfg)?);
    trunks.resolve_all().await;
    // The plan, retention and receptionist last pushed from upstream, where they still
    // fit the file (docs/SYNC.md).
    let pushed = if cfg.sync.enabled() {
        let conn = crate::store::open_for_tools(&cfg.database_path())?;
        crate::uplink::pushed(&cfg, &conn)
    } else {
        None
    };
    let retention = Arc::new(crate::privacy::Retention::new(
        &pushed.as_ref().map_or(&cfg, |p| &p.1).privacy,
    ));
    // What the receptionist says, pushed or the file's: the voice renders
    // its fixed sentences at start.
    let receptionist = pushed.as_ref().map_or(&cfg, |p| &p.1).receptionist.clone();
    start_sweeper(&cfg, retention.clone());
    let sip_cancel = CancellationToken::new();
    let server = sip::bind(&cfg, sip_cancel.clone()).await?;
    let tcp_guard = server.tcp_guard();
    let endpoint = server.endpoint.inner.clone();
    let sip_local = sip::trunk::client::Local {
        bind: std::net::SocketAddr::new(cfg.sip.bind, cfg.sip.port),
    };

    let max_calls = cfg.limits.max_calls;
    let per_source = cfg.limits.max_calls_per_source;
    let user = cfg.sip.user.clone();
    // Phones registered before a restart are still where they were.
    let stored = crate::store::Reader::open(&cfg.database_path())
        .and_then(|r| r.registrations(crate::clock::now_ms()))
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read stored registrations; phones will register again");
            Vec::new()
        });
    let registrar =
        Arc::new(sip::registrar::Registrar::new(&cfg).with_store(store.clone(), stored));
    let plan = Arc::new(routing_plan(&cfg, pushed.map(|(v, _, p)| (v, p)))?);
    let voice_cfg = Config {
        receptionist: receptionist.clone(),
        ..cfg.clone()
    };
    let voice = match cfg.receptionist.mode {
        crate::receptionist::Mode::Listen => None,
        crate::receptionist::Mode::Converse => Some(Arc::new(tokio::task::block_in_place(|| {
            start_voice(&voice_cfg, &models, &plan.current())
        })?)),
    };
    let receptionist = Arc::new(crate::receptionist::LiveConfig::new(receptionist));
    let ctx = Arc::new(CallCtx {
        cfg,
        store: store.clone(),
        pool,
        models,
        vads,
        understanding,
        announcement,
        registrar: registrar.clone(),
        trunks: trunks.clone(),
        plan: plan.clone(),
        retention,
        receptionist,
        voice,
    });
    // Keep the SIP endpoint serving until calls have said goodbye.
    let listen = server.listen.clone();
    let calls = crate::calls::Calls::new(ctx.clone(), max_calls, per_source);
    let router = Arc::new(sip::Router::default());
    let serving = tokio::spawn(sip::serve(
        server,
        user,
        calls.clone(),
        router,
        registrar.clone(),
        trunks.clone(),
        voicemail_counts(&ctx.cfg.database_path()),
        sip_cancel.clone(),
    ));
    // rsipstack binds TCP inside its serve task: say "ready" only once it accepts.
    if let Err(e) = sip::wait_listening(&listen).await {
        sip_cancel.cancel();
        let _ = serving.await;
        return Err(e);
    }
    // The control channel: `handlet status` and friends ask this agent.
    // Bound before "ready", so a CLI started right after finds it.
    let control_socket = match crate::control::bind(&crate::control::socket_path(&ctx.cfg.data_dir))
    {
        Ok(l) => l,
        Err(e) => {
            sip_cancel.cancel();
            let _ = serving.await;
            return Err(e);
        }
    };
    let control = tokio::spawn(crate::control::serve(
        control_socket,
        Arc::new(Status {
            started: Instant::now(),
            calls: calls.clone(),
            max_calls,
            listen: listen.clone(),
            tcp: tcp_guard,
            registrar,
            trunks: trunks.clone(),
            plan,
            store: store.clone(),
        }),
    ));
    // Upstream sync on its own task: no broker is a warning that repeats
    // with backoff, never a failed start (the outbox just grows).
    let sync_cancel = CancellationToken::new();
    let sync_task = sync_tls.map(|tls| {
        let (cfg, cancel) = (ctx.cfg.clone(), sync_cancel.clone());
        let live = crate::uplink::Live {
            plan: ctx.plan.clone(),
            retention: ctx.retention.clone(),
            receptionist: ctx.receptionist.clone(),
            voice: ctx.voice.clone(),
        };
        tokio::spawn(async move {
            if let Err(e) = crate::uplink::run(cfg, tls, live, cancel).await {
                tracing::error!(error = %e, "sync stopped");
            }
        })
    });
    // Each trunk registers on its own task: a dead provider is a warning
    // that repeats with backoff, never a failed start.
    let trunk_cancel = CancellationToken::new();
    let trunk_tasks: Vec<_> = trunks
        .iter()
        .map(|t| {
            tokio::spawn(sip::trunk::client::run(
                t.clone(),
                endpoint.clone(),
                sip_local,
                trunk_cancel.clone(),
            ))
        })
        .collect();
    for (t, addr) in &listen {
        println!(
            "handlet: SIP listening on {addr} ({})",
            t.to_string().to_lowercase()
        );
    }
    println!(
        "handlet: data in {}, models from {}",
        ctx.cfg.data_dir.display(),
        ctx.cfg.models_dir.display()
    );
    let sip_cfg = &ctx.cfg.sip;
    let target = format!("sip:{}@{}:{}", sip_cfg.user, sip_cfg.bind, sip_cfg.port);
    println!("handlet: place a test call with `handlet call --wav FILE.wav --to {target}`");
    println!("handlet: ready in {:.1} s", t0.elapsed().as_secs_f32());
    tracing::info!(startup_ms = t0.elapsed().as_millis() as u64, "agent ready");

    notify::ready("answering calls");
    if let Some(every) = notify::watchdog_interval() {
        // Fed only while SIP answers itself: a deaf agent gets restarted.
        let listen = listen.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let within = (every / 2).clamp(Duration::from_millis(200), Duration::from_secs(2));
            let mut failing = false;
            loop {
                t.tick().await;
                if crate::selfcheck::sip_answers(&listen, within).await {
                    if failing {
                        tracing::warn!("SIP answers its self-check again; watchdog fed");
                        failing = false;
                    }
                    notify::watchdog();
                } else if !failing {
                    failing = true;
                    tracing::error!(
                        "SIP does not answer its own OPTIONS: not feeding the watchdog, systemd will restart the agent"
                    );
                }
            }
        });
    }

    wait_for_signal().await;
    notify::stopping();
    tracing::info!(active_calls = calls.len(), "shutting down");
    calls.shutdown_all();
    sync_cancel.cancel();
    if let Some(t) = sync_task {
        let _ = t.await;
    }
    // Unregister from the trunks (each waits at most a second).
    trunk_cancel.cancel();
    for t in trunk_tasks {
        let _ = t.await;
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(3);
    while !calls.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sip_cancel.cancel();
    let _ = serving.await;
    // Let utterances already heard finish (within systemd's stop timeout).
    let pool = ctx.pool.clone();
    let dropped =
        tokio::task::spawn_blocking(move || pool.shutdown(std::time::Duration::from_secs(10)))
            .await
            .unwrap_or(0);
    if dropped > 0 {
        tracing::warn!(
            utterances = dropped,
            "shutdown gave up transcribing some utterances"
        );
    }
    control.abort();
    let _ = std::fs::remove_file(crate::control::socket_path(&ctx.cfg.data_dir));
    store.flush();
    Ok(())
}

/// What `handlet status` shows.
struct Status {
    started: Instant,
    calls: Arc<crate::calls::Calls>,
    max_calls: usize,
    listen: Vec<(rsipstack::sip::Transport, std::net::SocketAddr)>,
    tcp: Option<Arc<sip::tcp::TcpGuard>>,
    registrar: Arc<sip::registrar::Registrar>,
    trunks: Arc<sip::trunk::Trunks>,
    plan: Arc<crate::routing::LivePlan>,
    store: Store,
}

/// The key the routing override is kept under (`settings`).
pub const ROUTE_OVERRIDE: &str = "route.override";

/// The routing plan, with the override an operator last set (kept in the
/// database across restarts).
/// Load the box's voice and have its fixed sentences rendered (in the
/// background: a call that comes first has them synthesised as it goes).
fn start_voice(
    cfg: &Config,
    models: &ModelPaths,
    plan: &crate::routing::Plan,
) -> Result<crate::voice::VoiceService, Error> {
    let r = &cfg.receptionist;
    let mut prompts = r.fixed_sentences();
    let mut recorded: Vec<(String, std::path::PathBuf)> = Vec::new();
    for m in &plan.mailboxes {
        match &m.greeting_wav {
            Some(wav) => recorded.push((crate::call::recorded_greeting_key(&m.name), wav.clone())),
            None => prompts.push(m.greeting.clone()),
        }
    }
    let text_of = |field: &str| match field {
        "greeting" => r.greeting_text(),
        "notice" => r.notice.clone(),
        "ask" => r.ask.clone(),
        "clarify" => r.clarify.clone(),
        "menu" => r.menu.clone(),
        _ => r.connecting.clone(),
    };
    for (field, path) in cfg.voice.recorded.files() {
        recorded.push((text_of(field), path.into()));
    }
    // The recording announcement, if there is one, is the notice.
    if cfg.voice.recorded.notice.is_empty() && !cfg.privacy.announcement.is_empty() {
        recorded.push((r.notice.clone(), cfg.privacy.announcement.clone().into()));
    }
    let t0 = Instant::now();
    let v = crate::voice::VoiceService::start(
        &cfg.voice,
        (&models.voice, &models.voice_config),
        prompts,
        recorded,
    )?;
    tracing::debug!(ms = t0.elapsed().as_millis() as u64, "voice loaded");
    Ok(v)
}

fn routing_plan(
    cfg: &Config,
    pushed: Option<(u64, crate::routing::Plan)>,
) -> Result<crate::routing::LivePlan, Error> {
    let mut plan = cfg.routing_plan().map_err(Error::Config)?;
    let conn = crate::store::open_for_tools(&cfg.database_path())?;
    if let Some((version, pushed)) = pushed {
        tracing::info!(version, "routing by the plan pushed from upstream");
        plan = pushed;
    }
    let switch = match crate::store::read_setting(&conn, ROUTE_OVERRIDE)? {
        Some(v) => v.parse().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring a stored routing override");
            crate::routing::Override::Auto
        }),
        None => crate::routing::Override::Auto,
    };
    if switch != crate::routing::Override::Auto {
        tracing::warn!(
            "routing override is {}: the opening hours are not consulted (`handlet route override auto` to undo)",
            switch.as_str()
        );
    }
    Ok(crate::routing::LivePlan::new(plan.with_switch(switch)))
}

/// What `handlet route override` answers.
pub fn route_state(plan: &crate::routing::Plan, now_ms: i64) -> serde_json::Value {
    let (open, why) = plan.state_at(now_ms);
    serde_json::json!({
        "override": plan.switch.as_str(),
        "open": open,
        "why": why,
    })
}

impl crate::control::Operations for Status {
    fn status(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &crate::limits::COUNTERS;
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": self.started.elapsed().as_secs(),
            "calls_in_progress": self.calls.len(),
            "places_in_use": self.calls.places_in_use(),
            "max_calls": self.max_calls,
            "sip": self.listen.iter().map(|(t, a)| format!("{a}/{}", t.to_string().to_lowercase())).collect::<Vec<_>>(),
            "limits_hit": {
                "calls_refused": c.calls_refused.load(Relaxed),
                "calls_too_long": c.calls_too_long.load(Relaxed),
                "sip_rate_limited": c.sip_rate_limited.load(Relaxed),
                "rtp_foreign_packets": c.rtp_foreign.load(Relaxed),
                "dtmf_dropped": c.dtmf_dropped.load(Relaxed),
                "store_writes_dropped": c.store_dropped.load(Relaxed),
                "tcp_connections_refused": c.tcp_refused.load(Relaxed),
                "tcp_idle_closed": c.tcp_idle_closed.load(Relaxed),
                "auth_failed": c.auth_failed.load(Relaxed),
                "auth_lockouts": c.auth_lockouts.load(Relaxed),
                "invites_from_strangers": c.invites_from_strangers.load(Relaxed),
                "toll_fraud_refused": c.toll_fraud_refused.load(Relaxed),
            },
            "trunks": self.trunks.status(),
            "tcp_connections": self.tcp.as_ref().map(|g| g.connections()),
        })
    }

    fn extensions(&self) -> serde_json::Value {
        serde_json::to_value(self.registrar.extensions()).unwrap_or_default()
    }

    fn route(&self, set: Option<crate::routing::Override>) -> serde_json::Value {
        let now = crate::clock::now_ms();
        if let Some(switch) = set {
            self.plan.set_switch(switch);
            self.store
                .set_setting(ROUTE_OVERRIDE, switch.as_str().into(), now);
            // On disk before the operator is told it is done.
            tokio::task::block_in_place(|| self.store.flush());
            tracing::info!(
                "routing override set to {}: calls from now on are routed as {}",
                switch.as_str(),
                match switch {
                    crate::routing::Override::Auto => "the hours say",
                    crate::routing::Override::Open => "open",
                    crate::routing::Override::Closed => "closed",
                }
            );
        }
        route_state(&self.plan.current(), now)
    }
}

/// Device keys (created on first start) and recordings a crash cut short,
/// recovered before any new call.
fn open_recordings(cfg: &Config) -> Result<(), Error> {
    let conn = crate::store::open_for_tools(&cfg.database_path())?;
    let keys = DeviceKeys::load_or_create(
        &recording::keys_dir(&cfg.data_dir),
        recording::max_key_id(&conn)?,
    )?;
    // A lost key file is not fatal to answering calls (new recordings get a
    // new key) but the recordings under it are unreadable until it is back.
    for (id, n) in recording::missing_keys(&conn, &keys)? {
        tracing::error!(
            key = id,
            recordings = n,
            path = %recording::keys_dir(&cfg.data_dir).join(format!("device-{id}.key")).display(),
            "device key missing: restore it from backup; these recordings cannot be played until then"
        );
    }
    let recovered = recording::recover(&conn, &cfg.data_dir, &keys)?;
    if recovered > 0 {
        tracing::warn!(
            recordings = recovered,
            "recovered recordings cut short by a crash"
        );
    }
    Ok(())
}

/// Retention runs on its own thread every `privacy.sweep_interval_mins`,
/// the first time right away.
fn start_sweeper(cfg: &Config, retention: Arc<crate::privacy::Retention>) {
    let (db, data_dir, mut policy) = (
        cfg.database_path(),
        cfg.data_dir.clone(),
        cfg.privacy.clone(),
    );
    let every = std::time::Duration::from_secs(policy.sweep_interval_mins as u64 * 60);
    let _ = std::thread::Builder::new()
        .name("retention".into())
        .spawn(move || {
            loop {
                policy.transcript_retention_days = retention.transcript_days();
                match crate::store::open_connection(&db).and_then(|c| {
                    crate::privacy::sweep(&c, &data_dir, &policy, crate::clock::now_ms())
                }) {
                    Ok(s) if s != crate::privacy::Swept::default() => {
                        tracing::info!(
                            recordings = s.recordings,
                            calls = s.calls,
                            files = s.orphan_files,
                            "retention sweep deleted expired data"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention sweep failed; will retry"),
                }
                std::thread::sleep(every);
            }
        });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// The desk phones' message lamps read the voicemail counts here, on a
/// read connection of their own, opened when first needed.
fn voicemail_counts(db: &std::path::Path) -> sip::mwi::CountsFn {
    let db = db.to_path_buf();
    let reader: std::sync::Mutex<Option<crate::store::Reader>> = std::sync::Mutex::new(None);
    Arc::new(move || {
        let mut r = reader.lock().ok()?;
        if r.is_none() {
            *r = crate::store::Reader::open(&db)
                .inspect_err(|e| tracing::debug!(error = %e, "cannot read voicemail counts"))
                .ok();
        }
        match r.as_ref()?.voicemail_counts() {
            Ok((new, heard)) => Some(sip::mwi::Counts { new, heard }),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read voicemail counts");
                *r = None;
                None
            }
        }
    })
}
