//! One inbound call: answer the INVITE with an SDP answer, run the caller's
//! audio leg into its transcription tap, and record the call from start to end.

use crate::config::Config;
use crate::inference::Pool;
use crate::media::rtp_leg::{LegEvent, RtpLeg, RtpLegConfig};
use crate::media::{self, leg, sdp};
use crate::pii::Pii;
use crate::sip::ActiveCalls;
use crate::store::{Channel, EventKind};
use crate::store::{NewCall, Store};
use crate::transcribe::tap;
use crate::transcribe::vad_pool::VadPool;
use handlet_models::manifest::ModelPaths;
use rsipstack::dialog::dialog::DialogStateSender;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::{Header, HeadersExt, StatusCode, Transport};
use rsipstack::transaction::transaction::Transaction;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What every call needs from the agent.
pub struct CallCtx {
    pub cfg: Config,
    pub store: Store,
    pub pool: Pool,
    pub models: ModelPaths,
    /// How many calls may be in progress (`limits.max_calls`).
    pub admission: Arc<crate::calls::Admission>,
    /// VAD sessions prepared for the legs transcribed at once.
    pub vads: Arc<VadPool>,
    pub understanding: Arc<crate::understand::Understanding>,
    pub active: Arc<ActiveCalls>,
    /// Played before recording starts, if configured (and recording is on).
    pub announcement: Option<Arc<Announcement>>,
}

/// The "this call may be recorded" prompt, resampled once at start for
/// each rate a leg encodes from, and transcribed once: it is what the
/// agent's leg says, and goes into each call's transcript as such.
pub struct Announcement {
    at_8k: Vec<f32>,
    at_16k: Vec<f32>,
    pub text: String,
}

impl Announcement {
    pub fn load(
        path: &std::path::Path,
        stt: &handlet_models::stt::Stt,
    ) -> Result<Announcement, crate::Error> {
        let a = handlet_dsp::wav::read(path)?;
        let at = |rate| handlet_dsp::resample::Resampler::clip(&a.samples, a.rate, rate);
        let at_16k = at(16_000)?;
        let text = stt
            .worker()?
            .transcribe(&at_16k)?
            .into_iter()
            .map(|s| s.text)
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Announcement {
            at_8k: at(8_000)?,
            at_16k,
            text,
        })
    }

    pub fn duration_ms(&self) -> i64 {
        (self.at_16k.len() / 16) as i64
    }

    fn for_codec(&self, c: sdp::Codec) -> Vec<f32> {
        if leg::pcm_rate(c) == 8_000 {
            self.at_8k.clone()
        } else {
            self.at_16k.clone()
        }
    }
}

/// How a dialog's end reaches its call task.
#[derive(Clone)]
pub struct Ending {
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<&'static str>>>,
    /// The agent ends the call (and so must send BYE), not the caller.
    ours: Arc<AtomicBool>,
    /// Raised when the dialog is confirmed (the ACK): media may flow.
    established: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Ending {
    fn new() -> Self {
        Ending {
            cancel: CancellationToken::new(),
            reason: Arc::new(Mutex::new(None)),
            ours: Arc::new(AtomicBool::new(false)),
            established: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }
    /// The caller's ACK arrived: the call is established.
    pub fn confirm(&self) {
        self.established.send_replace(true);
    }
    /// The agent hangs up (shutdown, no audio): the call task sends BYE.
    pub fn hang_up(&self, why: &'static str) {
        if !self.cancel.is_cancelled() {
            self.ours.store(true, Ordering::Relaxed);
        }
        self.end(why);
    }
    pub fn end(&self, why: &'static str) {
        self.reason.lock().expect("poisoned").get_or_insert(why);
        self.cancel.cancel();
    }
    fn reason(&self) -> &'static str {
        self.reason.lock().expect("poisoned").unwrap_or("ended")
    }
}

pub use crate::clock::now_ms;

fn new_call_id() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

pub async fn inbound(
    ctx: Arc<CallCtx>,
    dialogs: Arc<DialogLayer>,
    state_tx: DialogStateSender,
    contact: Option<rsipstack::sip::Uri>,
    transport: Transport,
    mut tx: Transaction,
) {
    let started = now_ms();
    let from = tx
        .original
        .from_header()
        .ok()
        .and_then(|h| h.uri().ok())
        .map(|u| u.to_string())
        .unwrap_or_default();
    let to = tx
        .original
        .to_header()
        .ok()
        .and_then(|h| h.uri().ok())
        .map(|u| u.to_string())
        .unwrap_or_default();
    let sip_call_id = tx
        .original
        .call_id_header()
        .map(|h| h.value().to_string())
        .unwrap_or_default();

    // The offer decides whether we can take the call at all.
    let offer = String::from_utf8_lossy(tx.original.body()).to_string();
    let remote = match sdp::AudioDescription::parse(&offer) {
        Ok(d) => d,
        Err(e) => {
            tracing::info!(from = %Pii(&from), error = %e, "rejecting INVITE: unusable SDP offer");
            let _ = tx.reply(StatusCode::NotAcceptableHere).await;
            return;
        }
    };
    let (pt, codec) = match remote.choose() {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(from = %Pii(&from), error = %e, "rejecting INVITE");
            let _ = tx.reply(StatusCode::NotAcceptableHere).await;
            return;
        }
    };
    let m = &ctx.cfg.media;
    if remote.remote.is_ipv4() != m.rtp_address.is_ipv4() {
        tracing::info!(from = %Pii(&from), "rejecting INVITE: its media address family has no RTP socket here");
        let _ = tx.reply(StatusCode::NotAcceptableHere).await;
        return;
    }
    let socket = match media::bind_rtp(m.rtp_address, m.rtp_port_min, m.rtp_port_max).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "rejecting INVITE");
            let _ = tx.reply(StatusCode::ServiceUnavailable).await;
            return;
        }
    };
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };

    let server = match dialogs.get_or_create_server_invite(&tx, state_tx, None, contact) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot create dialog");
            let _ = tx.reply(StatusCode::ServerInternalError).await;
            return;
        }
    };
    let call_id = new_call_id();
    let ending = Ending::new();
    ctx.active.insert(server.id(), ending.clone());
    ctx.store.insert_call(NewCall {
        id: call_id.clone(),
        sip_call_id,
        direction: "inbound",
        from_uri: from.clone(),
        to_uri: to,
        transport: transport.to_string().to_lowercase(),
        codec: Some(codec.name().into()),
        started_at_ms: started,
        answered_at_ms: None,
    });

    // The INVITE transaction runs on its own task: it sends 100 Trying, our
    // 180/200 when we queue them, and turns a CANCEL into the dialog's end.
    let mut server_for_tx = server.clone();
    tokio::spawn(async move {
        let _ = server_for_tx.handle(&mut tx).await;
    });

    let ring = Duration::from_millis(ctx.cfg.sip.answer_after_ms);
    if !ring.is_zero() {
        let _ = server.ringing(None, None);
        tokio::select! {
            _ = ending.cancel.cancelled() => {
                ctx.active.remove(&server.id());
                ctx.store.end_call(&call_id, now_ms(), ending.reason());
                ctx.store.transcript_complete(&call_id);
                tracing::info!(call = %call_id, from = %Pii(&from), reason = ending.reason(), "missed call");
                return;
            }
            _ = tokio::time::sleep(ring) => {}
        }
    }

    // With an announcement, recording starts once it has been played.
    let announced = ctx
        .announcement
        .as_ref()
        .filter(|_| ctx.cfg.privacy.recording)
        .map(|a| (a.for_codec(codec), Arc::new(AtomicBool::new(false)), a));
    let tap = match tap::start(
        call_id.clone(),
        Channel::Caller,
        ctx.vads.clone(),
        crate::transcribe::tap_config(&ctx.cfg),
        ctx.pool.clone(),
        tap::Outputs {
            store: ctx.store.clone(),
            after: Some(tap::AfterCall {
                understanding: ctx.understanding.clone(),
                caller_id: crate::understand::caller_number(&from),
            }),
            record: ctx.cfg.privacy.recording.then(|| tap::RecordPlan {
                data_dir: ctx.cfg.data_dir.clone(),
                retention_days: ctx.cfg.privacy.recording_retention_days,
                announcement: announced.as_ref().map(|(_, done, a)| tap::Announced {
                    done: done.clone(),
                    text: a.text.clone(),
                    duration_ms: a.duration_ms(),
                }),
            }),
        },
    ) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start transcription for call; rejecting");
            ctx.active.remove(&server.id());
            let _ = server.reject(Some(StatusCode::ServiceUnavailable), None);
            ctx.store.end_call(&call_id, now_ms(), "agent error");
            return;
        }
    };

    // RFC 3264: the answer uses the offer's payload type numbers.
    let te = remote.telephone_event;
    let answer = sdp::write(local, rand::random::<u32>() as u64, &[(pt, codec)], te);
    let headers = vec![Header::ContentType("application/sdp".into())];
    if let Err(e) = server.accept(Some(headers), Some(answer.into_bytes())) {
        tracing::warn!(error = %e, "answering failed");
        ctx.active.remove(&server.id());
        drop(tap); // ends the leg's transcription
        ctx.store.end_call(&call_id, now_ms(), ending.reason());
        return;
    }
    let answered = now_ms();
    ctx.store.answered(&call_id, answered);
    tracing::info!(call = %call_id, from = %Pii(&from), codec = codec.name(), transport = %transport, "call answered");

    let leg_cfg = RtpLegConfig {
        codec,
        payload_type: pt,
        telephone_event: te,
        remote: remote.remote,
        symmetric: m.symmetric_rtp,
        min_delay_ms: m.jitter_min_ms,
        max_delay_ms: m.jitter_max_ms,
        timeout_ms: m.rtp_timeout_secs * 1000,
        ssrc: rand::random(),
        first_seq: rand::random(),
        first_ts: rand::random(),
    };
    let leg_started = tokio::time::Instant::now();
    let mut rtp = match RtpLeg::new(leg_cfg, 0) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the media leg");
            ctx.active.remove(&server.id());
            let _ = server.bye().await;
            ctx.store.end_call(&call_id, now_ms(), "media error");
            return;
        }
    };
    let prompt_done = match announced {
        Some((samples, done, _)) => {
            let _ = rtp.play(samples);
            Some(done)
        }
        None => None,
    };
    let mut on_event = {
        let store = ctx.store.clone();
        let call_id = call_id.clone();
        move |ev: LegEvent| match ev {
            LegEvent::Digit { key, at_ms, how } => {
                tracing::info!(call = %call_id, how = how.as_str(), "caller pressed a key");
                store.add_event(
                    &call_id,
                    at_ms as i64,
                    EventKind::Dtmf,
                    format!("{key} ({})", how.as_str()),
                );
            }
            LegEvent::PromptDone => {
                if let Some(d) = &prompt_done {
                    d.store(true, Ordering::Release);
                }
            }
            LegEvent::FirstPacket { .. } => {
                tracing::debug!(call = %call_id, "first RTP packet")
            }
            LegEvent::Timeout => {}
        }
    };
    // limits.max_call_secs: the agent hangs up a call that goes on too long.
    tokio::spawn({
        let ending = ending.clone();
        let max = Duration::from_secs(ctx.cfg.limits.max_call_secs);
        async move {
            tokio::select! {
                _ = ending.cancel.cancelled() => {}
                _ = tokio::time::sleep(max) => {
                    crate::limits::count(&crate::limits::COUNTERS.calls_too_long, 1);
                    ending.hang_up("maximum call length reached");
                }
            }
        }
    });
    let mut sink = tap.sink;
    let (end, stats, shell) = leg::run(
        socket,
        rtp,
        leg_started,
        &mut sink,
        ending.established.subscribe(),
        &mut on_event,
        ending.cancel.clone(),
    )
    .await;
    if end != leg::LegEnd::Cancelled {
        // We end the call: no audio for too long, or the socket failed.
        ending.hang_up(if end == leg::LegEnd::Timeout {
            "no audio (RTP timeout)"
        } else {
            "media error"
        });
    }
    if ending.ours.load(Ordering::Relaxed) {
        let _ = server.bye().await;
    }
    ctx.active.remove(&server.id());
    drop(sink);
    let ended = now_ms();
    ctx.store.end_call(&call_id, ended, ending.reason());
    let q = crate::store::MediaQuality {
        packets: stats.packets,
        lost: stats.jitter.lost,
        late: stats.jitter.late,
        duplicates: stats.jitter.duplicates,
        concealed: stats.jitter.lost + stats.jitter.expanded,
        malformed: stats.malformed,
        jitter_ms: stats.jitter.jitter_ms,
        target_delay_ms: stats.jitter.target_delay_ms,
        foreign: stats.foreign,
        ssrc_changes: stats.ssrc_changes,
        digits_dropped: stats.digits_dropped,
    };
    ctx.store.media_quality(&call_id, q);
    if stats.digits_dropped > 0 {
        tracing::warn!(call = %call_id, dropped = stats.digits_dropped, "caller pressed more keys than are stored per call");
        ctx.store.add_event(
            &call_id,
            ended - answered,
            EventKind::DtmfLimit,
            format!("{} more keys not stored", stats.digits_dropped),
        );
    }
    tracing::info!(
        call = %call_id,
        reason = ending.reason(),
        duration_ms = ended - answered,
        packets = q.packets,
        lost = q.lost,
        late = q.late,
        concealed = q.concealed,
        jitter_ms = q.jitter_ms,
        target_delay_ms = q.target_delay_ms,
        malformed = q.malformed,
        foreign = q.foreign,
        dropped_frames = shell.dropped_frames,
        "call ended"
    );
}
