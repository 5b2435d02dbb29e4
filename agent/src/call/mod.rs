//! One call: a task (the actor) around the sans-IO [`machine::Call`]. It
//! owns the call's dialog, its media leg task and transcription tap, and
//! loops: SIP events from the router, media events from the leg, commands
//! from the registry and the call's next deadline go into the machine; its
//! actions come out as rsipstack calls, media commands and store writes.

pub mod announcement;
pub mod bridge;
mod conversation;
pub mod machine;
pub mod ringer;

pub use announcement::Announcement;
pub use conversation::recorded_greeting_key;
pub use machine::{Action, CallConfig, Direction, EndReason, Input, ReOffer};

use crate::config::Config;
use crate::inference::Pool;
use crate::media::leg::{self, LegEnd, ShellStats};
use crate::media::rtp_leg::{LegEvent, LegStats, RtpLeg, RtpLegConfig};
use crate::media::{self, sdp};
use crate::pii::Pii;
use crate::sip::{DialogEvent, Incoming};
use crate::store::{Channel, EventKind, MediaQuality, NewCall, Store};
use crate::transcribe::tap;
use crate::transcribe::vad_pool::VadPool;
use handlet_models::manifest::ModelPaths;
use machine::Call;
use rsipstack::dialog::dialog::{TerminatedReason, TransactionHandle};
use rsipstack::sip::{Header, HeadersExt, StatusCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::clock::now_ms;

/// What every call needs from the agent.
pub struct CallCtx {
    pub cfg: Config,
    pub store: Store,
    pub pool: Pool,
    pub models: ModelPaths,
    /// VAD sessions prepared for the legs transcribed at once.
    pub vads: Arc<VadPool>,
    pub understanding: Arc<crate::understand::Understanding>,
    /// Played before recording starts, if configured (and recording is on).
    pub announcement: Option<Arc<Announcement>>,
    /// Where the business's phones are registered (calls ring them).
    pub registrar: Arc<crate::sip::registrar::Registrar>,
    /// The trunks calls go out through.
    pub trunks: Arc<crate::sip::trunk::Trunks>,
    /// Where calls go (and the operator's override).
    pub plan: Arc<crate::routing::LivePlan>,
    /// How long recordings are kept (the file's, or pushed from upstream).
    pub retention: Arc<crate::privacy::Retention>,
    /// What the receptionist says (the file's, or pushed from upstream).
    pub receptionist: Arc<crate::receptionist::LiveConfig>,
    /// The box's voice; None when it answers in silence
    /// (`receptionist.mode = "listen"`).
    pub voice: Option<Arc<crate::voice::VoiceService>>,
}

/// What the registry can tell a running call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The agent is stopping: end the call (a final answer or BYE).
    Shutdown,
}

fn new_call_id() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

fn header_uri(h: Option<rsipstack::sip::Uri>) -> String {
    h.map(|u| u.to_string()).unwrap_or_default()
}

/// The caller's media while the call is answered: its leg's task (whose
/// sink is the call's tap) and how to steer it.
type Media = bridge::Running;

/// Run one inbound call to its end. Refusals that need no call (an offer
/// we cannot take, no RTP port) are answered here before anything is kept.
pub async fn inbound(
    ctx: Arc<CallCtx>,
    inc: Incoming,
    mut commands: mpsc::UnboundedReceiver<Command>,
    slot: Box<dyn std::any::Any + Send>,
) {
    let mut hold = Some(slot);
    let Incoming {
        origin,
        mut tx,
        transport,
        contact,
        dialogs,
        state_tx,
        router,
    } = inc;
    let started = now_ms();
    let from = header_uri(tx.original.from_header().ok().and_then(|h| h.uri().ok()));
    let to = header_uri(tx.original.to_header().ok().and_then(|h| h.uri().ok()));
    let sip_call_id = tx
        .original
        .call_id_header()
        .map(|h| h.value().to_string())
        .unwrap_or_default();

    let caller_e164 =
        crate::phone::Phone::from_uri_in(&from, ctx.cfg.site.country).map(|p| p.e164());
    // Calls from outside are routed: the plan decides the first step, and
    // again after each step that does not end the call.
    let routing = ctx.plan.current();
    let mut facts = crate::routing::Facts::new(
        crate::routing::Caller::from_user(
            tx.original
                .from_header()
                .ok()
                .and_then(|h| h.uri().ok())
                .and_then(|u| u.user().map(|u| u.to_string()))
                .as_deref()
                .unwrap_or(""),
            caller_e164.clone(),
        ),
        match &origin {
            crate::sip::Origin::Trunk { did, .. } => did.clone(),
            _ => None,
        },
    );
    let mut decisions: Vec<(i64, crate::routing::Decision)> = Vec::new();
    // Whom the call rings (a phone's call out or to another phone, or
    // what the routing plan says), or None: the agent answers.
    let plan = match &origin {
        crate::sip::Origin::Phone { extension, dialled } => {
            match phone_plan(&ctx, extension, dialled) {
                Ok(p) => p,
                Err(code) => {
                    let _ = tx.reply(StatusCode::from(code)).await;
                    return;
                }
            }
        }
        _ => {
            let d = crate::routing::decide(&facts, &routing, started);
            tracing::info!(step = %d.step.label(), "routed");
            let p = ring_plan(&d.step, &routing);
            if d.step == crate::routing::Step::Reject {
                // Kept, with why: a blocked caller shows in the call list.
                let call_id = new_call_id();
                ctx.store.insert_call(NewCall {
                    id: call_id.clone(),
                    sip_call_id,
                    direction: Direction::Inbound.as_str(),
                    from_uri: from.clone(),
                    to_uri: to,
                    transport: transport.to_string().to_lowercase(),
                    codec: None,
                    started_at_ms: started,
                    answered_at_ms: None,
                    trunk: match &origin {
                        crate::sip::Origin::Trunk { name, .. } => Some(name.clone()),
                        _ => None,
                    },
                    did: facts.did.clone(),
                    caller: caller_e164,
                });
                ctx.store
                    .add_route(&call_id, 0, d.to_string(), d.step.destination());
                ctx.store
                    .end_call(&call_id, now_ms(), "rejected by the routing plan");
                ctx.store.transcript_complete(&call_id);
                let _ = tx.reply(StatusCode::Decline).await;
                return;
            }
            decisions.push((started, d));
            p
        }
    };
    let direction = match (&origin, &plan) {
        (crate::sip::Origin::Phone { .. }, Some(bridge::Plan::Out { .. })) => Direction::Outbound,
        (crate::sip::Origin::Phone { .. }, Some(_)) => Direction::Internal,
        _ => Direction::Inbound,
    };
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
    let (mut pt, mut codec) = match remote.choose() {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(from = %Pii(&from), error = %e, "rejecting INVITE");
            let _ = tx.reply(StatusCode::NotAcceptableHere).await;
            return;
        }
    };
    // SRTP when the caller keys its media (SDES), or refused when one side
    // requires it and the other cannot.
    // The telephone-event type re-INVITE answers name (a codec switch
    // may bring another).
    let mut telephone_event = remote.telephone_event;
    let mut srtp = match media::srtp::answer(&remote, ctx.cfg.media.srtp) {
        Ok(s) => s,
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
    // RTCP on the RTP port only when the caller offered it (RFC 5761);
    // otherwise on the next port.
    let rtcp_mux = remote.rtcp_mux;
    let sockets =
        match media::bind_rtp(m.rtp_address, m.rtp_port_min, m.rtp_port_max, !rtcp_mux).await {
            Ok((rtp, rtcp)) => leg::Sockets { rtp, rtcp },
            Err(e) => {
                tracing::error!(error = %e, "rejecting INVITE");
                let _ = tx.reply(StatusCode::ServiceUnavailable).await;
                return;
            }
        };
    let Ok(local) = sockets.rtp.local_addr() else {
        let _ = tx.reply(StatusCode::ServiceUnavailable).await;
        return;
    };
    let server = match dialogs.get_or_create_server_invite(&tx, state_tx, None, contact) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot create dialog");
            let _ = tx.reply(StatusCode::ServerInternalError).await;
            return;
        }
    };
    let dialog_id = server.id();
    let mut events = router.register(dialog_id.clone());
    let call_id = new_call_id();
    ctx.store.insert_call(NewCall {
        id: call_id.clone(),
        sip_call_id,
        direction: direction.as_str(),
        from_uri: from.clone(),
        to_uri: to,
        transport: transport.to_string().to_lowercase(),
        codec: Some(codec.name().into()),
        started_at_ms: started,
        answered_at_ms: None,
        trunk: match &origin {
            crate::sip::Origin::Trunk { name, .. } => Some(name.clone()),
            _ => None,
        },
        did: match &origin {
            crate::sip::Origin::Trunk { did, .. } => did.clone(),
            _ => None,
        },
        caller: caller_e164,
    });
    for (at, d) in &decisions {
        ctx.store
            .add_route(&call_id, at - started, d.to_string(), d.step.destination());
    }
    // The INVITE transaction runs on its own task: it sends 100 Trying, our
    // 180/200 when we queue them, and turns a CANCEL into the dialog's end.
    let mut server_for_tx = server.clone();
    tokio::spawn(async move {
        let _ = server_for_tx.handle(&mut tx).await;
    });

    // RFC 3264: the answer uses the offer's payload type numbers; a
    // re-INVITE gets the same session back.
    let session_id = rand::random::<u32>() as u64;
    let answer = sdp::write(
        local,
        session_id,
        &[(pt, codec)],
        remote.telephone_event,
        rtcp_mux,
    );
    let answer = match &srtp {
        Some((keys, profile)) => sdp::keyed(&answer, *profile, &keys.local),
        None => answer,
    };
    let mut socket = Some(sockets);
    let mut not_answered: Option<bridge::Answered> = None;
    let mut next = plan;
    while let Some(plan) = next.take() {
        let rung = bridge::ring(
            &ctx,
            bridge::Caller {
                call_id: &call_id,
                from: &from,
                server: &server,
                events: &mut events,
                commands: &mut commands,
                sockets: &mut socket,
                hold: &mut hold,
                remote: &remote,
                pt,
                codec,
                rtcp_mux,
                answer: &answer,
                session_id,
                local: Some(local),
                dialogs: &dialogs,
                early_media: matches!(origin, crate::sip::Origin::Trunk { .. }),
                srtp: srtp.clone(),
                answered: &mut not_answered,
            },
            plan,
        )
        .await;
        let how = match rung {
            bridge::Rung::Done => {
                router.unregister(&dialog_id);
                return;
            }
            bridge::Rung::NobodyAnswered(how) => how,
        };
        // Nobody answered: where next? (A phone's own call never gets
        // here: it is told how it went instead.)
        let Some(dest) = decisions.last().and_then(|(_, d)| rung_dest(&d.step)) else {
            break;
        };
        facts
            .tried
            .push(crate::routing::Tried { dest, outcome: how });
        let at = now_ms();
        let d = crate::routing::decide(&facts, &routing, at);
        tracing::info!(call = %call_id, step = %d.step.label(), "routed");
        ctx.store
            .add_route(&call_id, at - started, d.to_string(), d.step.destination());
        next = ring_plan(&d.step, &routing);
        let reject = d.step == crate::routing::Step::Reject;
        decisions.push((at, d));
        if reject {
            let _ = server.reject(Some(StatusCode::Decline), None);
            ctx.store
                .end_call(&call_id, now_ms(), "rejected by the routing plan");
            ctx.store.transcript_complete(&call_id);
            router.unregister(&dialog_id);
            return;
        }
    }
    // What the box does with a call it answers itself: talks with the
    // caller (greets and listens, takes a message, or takes a voicemail),
    // or, with no voice, answers in silence and transcribes.
    let mut start = match decisions.last().map(|(_, d)| &d.step) {
        _ if ctx.voice.is_none() => None,
        Some(crate::routing::Step::TakeMessage) => Some(conversation::Start::Message),
        Some(crate::routing::Step::Voicemail { mailbox }) => {
            Some(conversation::Start::Voicemail(mailbox.clone()))
        }
        _ => Some(conversation::Start::Greet),
    };
    let voicemail_first = matches!(start, Some(conversation::Start::Voicemail(_)));
    let mut conv: Option<conversation::Conversation> = None;
    let mut tap_events: Option<mpsc::Receiver<tap::TapEvent>> = None;
    let mut record_gate: Option<(conversation::RecordGate, Arc<AtomicBool>)> = None;
    // For a phone the receptionist rings: its audio joins the call's
    // recording (right channel) and its tap the call's transcript.
    let mut callee_copy: Option<crossbeam_channel::Sender<Vec<f32>>> = None;
    let mut pair_other: Option<tap::Pair> = None;
    let mut call = Call::inbound(
        CallConfig {
            ring_ms: ctx.cfg.sip.answer_after_ms,
            max_call_ms: ctx.cfg.limits.max_call_secs * 1000,
            ack_timeout_ms: 32_000,
        },
        now_ms(),
    );
    let mut media: Option<Media> = None;
    let mut media_result: Option<(LegEnd, LegStats, ShellStats)> = None;
    let (leg_events_tx, mut leg_events) = mpsc::unbounded_channel::<LegEvent>();
    let mut reinvite: Option<TransactionHandle> = None;
    let mut reinvite_direction = sdp::MediaDirection::SendRecv;
    let mut session_version = session_id;
    let mut answered_at: Option<i64> = None;
    let mut ended: Option<(i64, EndReason)> = None;
    let mut prompt_done: Option<Arc<AtomicBool>> = None;

    loop {
        // The conversation is over, or wants someone rung.
        if let Some(n) = conv
            .as_mut()
            .filter(|_| ended.is_none())
            .and_then(|c| c.take_next())
        {
            match n {
                conversation::Next::Hangup => call.handle(Input::Hangup, now_ms()),
                conversation::Next::Connect(step) => {
                    // Ring whom the receptionist routed to, the caller
                    // hearing ringback on the leg it talked on; bridged
                    // to whoever answers, else back to the conversation.
                    let how = match (
                        ring_plan(&step, &routing),
                        media.take(),
                        callee_copy.clone(),
                    ) {
                        (Some(plan), Some(leg), Some(copy)) => {
                            let mut answered = Some(bridge::Answered {
                                leg,
                                callee_copy: copy,
                                pair: pair_other.take(),
                            });
                            let rung = bridge::ring(
                                &ctx,
                                bridge::Caller {
                                    call_id: &call_id,
                                    from: &from,
                                    server: &server,
                                    events: &mut events,
                                    commands: &mut commands,
                                    sockets: &mut socket,
                                    hold: &mut hold,
                                    remote: &remote,
                                    pt,
                                    codec,
                                    rtcp_mux,
                                    answer: &answer,
                                    session_id,
                                    local: Some(local),
                                    dialogs: &dialogs,
                                    early_media: false,
                                    srtp: srtp.clone(),
                                    answered: &mut answered,
                                },
                                plan,
                            )
                            .await;
                            if let Some(a) = answered.take() {
                                media = Some(a.leg);
                                pair_other = a.pair;
                            }
                            match rung {
                                bridge::Rung::Done => {
                                    // Keys the caller pressed while bridged.
                                    while let Ok(ev) = leg_events.try_recv() {
                                        if let LegEvent::Digit { key, at_ms, how } = ev {
                                            store_digit(&ctx.store, &call_id, key, at_ms, how);
                                        }
                                    }
                                    router.unregister(&dialog_id);
                                    return;
                                }
                                bridge::Rung::NobodyAnswered(how) => how,
                            }
                        }
                        (_, leg, _) => {
                            media = leg;
                            crate::routing::Unanswered::Unreachable
                        }
                    };
                    // What the caller said into the ringback ("hello?") is
                    // not an answer to what the box asks next; keys are
                    // kept, as always.
                    if let Some(rx) = tap_events.as_mut() {
                        while rx.try_recv().is_ok() {}
                    }
                    while let Ok(ev) = leg_events.try_recv() {
                        if let LegEvent::Digit { key, at_ms, how } = ev {
                            store_digit(&ctx.store, &call_id, key, at_ms, how);
                        }
                    }
                    if let (Some(c), Some(dest)) = (conv.as_mut(), rung_dest(&step)) {
                        c.nobody_answered(crate::routing::Tried { dest, outcome: how });
                    }
                }
            }
            continue;
        }
        while let Some(action) = call.poll_action() {
            match action {
                Action::Ring => {
                    let _ = server.ringing(None, None);
                }
                Action::Answer => {
                    // Transcription first, so no audio is missed; then the
                    // leg (sending waits for the ACK); then the 200.
                    let converse = start.is_some();
                    let announced = ctx
                        .announcement
                        .as_ref()
                        .filter(|_| ctx.cfg.privacy.recording && !converse)
                        .map(|a| (a.for_codec(codec), Arc::new(AtomicBool::new(false)), a));
                    // When a conversation's recording starts: once the
                    // box has said the notice (calls are recorded), at a
                    // voicemail's beep (they are not), or at once.
                    let gate = if !converse {
                        None
                    } else if ctx.cfg.privacy.recording {
                        (!voicemail_first && !ctx.receptionist.current().notice.trim().is_empty())
                            .then_some(conversation::RecordGate::AfterNotice)
                    } else {
                        Some(conversation::RecordGate::AtVoicemail)
                    };
                    record_gate = gate.map(|g| (g, Arc::new(AtomicBool::new(false))));
                    let events = converse.then(|| {
                        let (tx, rx) = mpsc::channel(tap::EVENTS_MAX);
                        tap_events = Some(rx);
                        tx
                    });
                    let (lead, copy_rx) = if converse {
                        let (lead, other) = tap::pair();
                        let (copy_tx, copy_rx) = crossbeam_channel::bounded(256);
                        pair_other = Some(other);
                        callee_copy = Some(copy_tx);
                        (Some(lead), Some(copy_rx))
                    } else {
                        (None, None)
                    };
                    let t = tap::start(
                        call_id.clone(),
                        Channel::Caller,
                        ctx.vads.clone(),
                        crate::transcribe::tap_config(&ctx.cfg),
                        ctx.pool.clone(),
                        tap::Outputs {
                            events,
                            store: ctx.store.clone(),
                            after: Some(tap::AfterCall {
                                understanding: ctx.understanding.clone(),
                                caller_id: crate::understand::caller_number(
                                    &from,
                                    ctx.cfg.site.country,
                                ),
                            }),
                            // A voicemail is recorded even where calls are not.
                            record: (ctx.cfg.privacy.recording || converse).then(|| {
                                tap::RecordPlan {
                                    data_dir: ctx.cfg.data_dir.clone(),
                                    retention_days: ctx.retention.recording_days(),
                                    announcement: match &record_gate {
                                        Some((gate, done)) => Some(tap::Announced {
                                            done: done.clone(),
                                            text: String::new(),
                                            duration_ms: 0,
                                            noted: *gate == conversation::RecordGate::AfterNotice,
                                        }),
                                        None => {
                                            announced.as_ref().map(|(_, done, a)| tap::Announced {
                                                done: done.clone(),
                                                text: a.text.clone(),
                                                duration_ms: a.duration_ms(),
                                                noted: true,
                                            })
                                        }
                                    },
                                    callee: copy_rx,
                                }
                            }),
                            // The call's place is given back when its
                            // transcription is done, not when its dialog
                            // ends: a flood of short calls must not leave
                            // more taps running than `max_calls`.
                            hold: hold.take(),
                            pair: lead,
                        },
                    );
                    let leg = RtpLeg::new(
                        RtpLegConfig {
                            codec,
                            payload_type: pt,
                            telephone_event: remote.telephone_event,
                            remote: remote.remote,
                            symmetric: m.symmetric_rtp,
                            min_delay_ms: m.jitter_min_ms,
                            max_delay_ms: m.jitter_max_ms,
                            timeout_ms: m.rtp_timeout_secs * 1000,
                            ssrc: rand::random(),
                            first_seq: rand::random(),
                            first_ts: rand::random(),
                            rtcp_remote: remote.rtcp_remote(),
                            rtcp_mux,
                            wall_ms: crate::clock::now_ms() as u64,
                            srtp: srtp.as_ref().map(|(k, _)| k.clone()),
                        },
                        0,
                    );
                    let (t, mut leg) = match (t, leg, socket.take()) {
                        (Ok(t), Ok(l), Some(sock)) => (t, (l, sock)),
                        (t, l, _) => {
                            let e = t
                                .err()
                                .map(|e| e.to_string())
                                .or(l.err().map(|e| e.to_string()));
                            tracing::error!(call = %call_id, error = ?e, "cannot start the call's media; rejecting");
                            let _ = server.reject(Some(StatusCode::ServiceUnavailable), None);
                            ended = Some((now_ms(), EndReason::AgentError));
                            break;
                        }
                    };
                    if let Some((samples, done, _)) = announced {
                        let _ = leg.0.play(samples);
                        prompt_done = Some(done);
                    }
                    let tap_sink = t.sink;
                    let cancel = CancellationToken::new();
                    let (control, control_rx) = mpsc::unbounded_channel();
                    let events_tx = leg_events_tx.clone();
                    let sockets = Arc::new(leg.1);
                    let task = tokio::spawn({
                        let cancel = cancel.clone();
                        let sockets = sockets.clone();
                        async move {
                            let mut on_event = move |e: LegEvent| {
                                let _ = events_tx.send(e);
                            };
                            leg::run(
                                &sockets,
                                leg.0,
                                tokio::time::Instant::now(),
                                Box::new(tap_sink),
                                control_rx,
                                &mut on_event,
                                cancel,
                            )
                            .await
                        }
                    });
                    // The box's side of the conversation, for the recording.
                    if let Some(copy) = &callee_copy {
                        let _ = control.send(leg::Control::Monitor(Some(copy.clone())));
                    }
                    media = Some(Media {
                        cancel,
                        control,
                        task,
                        sockets,
                    });
                    let headers = vec![Header::ContentType("application/sdp".into())];
                    if let Err(e) = server.accept(Some(headers), Some(answer.clone().into_bytes()))
                    {
                        tracing::warn!(call = %call_id, error = %e, "answering failed");
                        call.handle(Input::Failure, now_ms());
                    } else {
                        tracing::info!(call = %call_id, from = %Pii(&from), codec = codec.name(), transport = %transport, "call answered");
                    }
                }
                Action::Established => {
                    if let Some(md) = &media {
                        let _ = md.control.send(leg::Control::StartSending);
                        // The caller can hear us now: the conversation begins.
                        if let (Some(st), Some(voice)) = (start.take(), &ctx.voice) {
                            conv = Some(converse(
                                &ctx,
                                st,
                                voice.clone(),
                                md.control.clone(),
                                leg::pcm_rate(codec),
                                (&call_id, &from, &facts),
                                (started, answered_at.unwrap_or_else(now_ms)),
                                record_gate.clone(),
                            ));
                        }
                    }
                }
                Action::Reject(code) => {
                    let _ = server.reject(Some(StatusCode::from(code)), None);
                }
                Action::AnswerReInvite(r) => {
                    if let Some(h) = reinvite.take() {
                        let _ = match (r, &media) {
                            // The same session as our answer, in the direction
                            // the offer asks (recvonly to a hold).
                            (Ok(()), Some(_)) => {
                                session_version += 1;
                                let body = sdp::write_directed(
                                    local,
                                    (session_id, session_version),
                                    &[(pt, codec)],
                                    telephone_event,
                                    rtcp_mux,
                                    reinvite_direction.answer(),
                                );
                                // The same key: the leg keeps its contexts.
                                let body = match &srtp {
                                    Some((keys, profile)) => {
                                        sdp::keyed(&body, *profile, &keys.local)
                                    }
                                    None => body,
                                };
                                h.respond(
                                    StatusCode::OK,
                                    Some(vec![Header::ContentType("application/sdp".into())]),
                                    Some(body.into_bytes()),
                                )
                                .await
                            }
                            (Ok(()), None) => h.reply(StatusCode::RequestPending).await,
                            (Err(code), _) => h.reply(StatusCode::from(code)).await,
                        };
                    }
                }
                Action::Bye => {
                    let _ = server.bye().await;
                }
                Action::StopMedia => {
                    if let Some(md) = &media {
                        md.cancel.cancel();
                    }
                }
                Action::RecordAnswered { at_ms } => {
                    answered_at = Some(at_ms);
                    ctx.store.answered(&call_id, at_ms);
                }
                Action::RecordEnded { at_ms, reason } => ended = Some((at_ms, reason)),
            }
        }
        if ended.is_some() && (media.is_none() || media_result.is_some()) {
            break;
        }
        let deadline = call.poll_timeout().map(|t| {
            tokio::time::Instant::now() + Duration::from_millis((t - now_ms()).max(0) as u64)
        });
        let conv_deadline = conv.as_ref().and_then(|c| c.deadline());
        tokio::select! {
            ev = events.recv() => match ev {
                Some(DialogEvent::Confirmed) => call.handle(Input::Ack, now_ms()),
                Some(DialogEvent::ReInvite { request, handle }) => {
                    let offer = String::from_utf8_lossy(request.body()).to_string();
                    let desc = sdp::AudioDescription::parse(&offer);
                    reinvite_direction = desc
                        .as_ref()
                        .map(|d| d.direction)
                        .unwrap_or(sdp::MediaDirection::SendRecv);
                    // Its SRTP: the same keys, the peer's new key, or
                    // refused as a first offer would be (an offerless
                    // re-INVITE keeps what there is).
                    let keyed = match &desc {
                        Ok(d) => media::srtp::reanswer(srtp.as_ref(), d, ctx.cfg.media.srtp),
                        Err(_) => Ok(srtp.clone()),
                    };
                    match keyed {
                        Err(_) => {
                            let _ = handle.reply(StatusCode::NotAcceptableHere).await;
                        }
                        Ok(k) => {
                            let mut re = re_offer(&offer, pt, codec);
                            // A switch to another codec we speak: followed.
                            if matches!(re, ReOffer::Incompatible)
                                && let Some(md) = &media
                                && let Some((new_pt, new_codec, te)) = switched_codec(&offer)
                            {
                                let _ = md.control.send(leg::Control::Codec(new_codec, new_pt, te));
                                // The box's voice at the new codec's rate.
                                if let Some(c) = conv.as_mut() {
                                    c.set_rate(leg::pcm_rate(new_codec));
                                }
                                tracing::info!(call = %call_id, codec = new_codec.name(), "the caller switched codec");
                                (pt, codec, telephone_event) = (new_pt, new_codec, te);
                                re = re_offer(&offer, pt, codec);
                            }
                            // Keys change only with a re-offer we take.
                            if k != srtp && !matches!(re, ReOffer::Incompatible) {
                                if let Some(md) = &media {
                                    let _ = md.control.send(leg::Control::Srtp(k.as_ref().map(|(k, _)| k.clone())));
                                }
                                srtp = k;
                            }
                            reinvite = Some(handle);
                            call.handle(Input::ReInvite(re), now_ms());
                        }
                    }
                }
                Some(DialogEvent::Info { handle }) => {
                    let _ = handle.reply(StatusCode::OK).await;
                }
                Some(DialogEvent::Terminated(reason)) => call.handle(match reason {
                    TerminatedReason::UacBye => Input::Bye,
                    TerminatedReason::UacCancel => Input::Cancel,
                    TerminatedReason::Timeout => Input::SignallingTimeout,
                    _ => Input::DialogEnded,
                }, now_ms()),
                None => call.handle(Input::DialogEnded, now_ms()),
            },
            cmd = commands.recv() => match cmd {
                Some(Command::Shutdown) | None => call.handle(Input::Shutdown, now_ms()),
            },
            Some(ev) = leg_events.recv() => match ev {
                LegEvent::Digit { key, at_ms, how } => {
                    store_digit(&ctx.store, &call_id, key, at_ms, how);
                    if let Some(c) = conv.as_mut() {
                        c.key(key);
                    }
                }
                LegEvent::PromptDone => {
                    if let Some(d) = &prompt_done {
                        d.store(true, Ordering::Release);
                    }
                    if let Some(c) = conv.as_mut() {
                        c.prompt_done();
                    }
                }
                LegEvent::FirstPacket { .. } => call.handle(Input::MediaFirstPacket, now_ms()),
                LegEvent::Timeout => {}
            },
            r = async { (&mut media.as_mut().expect("guarded").task).await }, if media.is_some() && media_result.is_none() => {
                let r = r.unwrap_or((LegEnd::SocketError, LegStats::default(), ShellStats::default()));
                match r.0 {
                    LegEnd::Timeout => call.handle(Input::MediaTimeout, now_ms()),
                    LegEnd::SocketError => call.handle(Input::MediaFailed, now_ms()),
                    LegEnd::Cancelled => {}
                }
                media_result = Some(r);
            },
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                call.handle_timeout(now_ms())
            },
            Some(ev) = async { tap_events.as_mut().expect("guarded").recv().await }, if tap_events.is_some() => {
                if let Some(c) = conv.as_mut() {
                    c.tap_event(ev);
                }
            },
            piece = async { conv.as_mut().expect("guarded").audio().await }, if conv.as_ref().is_some_and(|c| c.wants_audio()) => {
                if let Some(c) = conv.as_mut() {
                    c.chunk(piece);
                }
            },
            _ = async { tokio::time::sleep_until(conv_deadline.expect("guarded")).await }, if conv_deadline.is_some() => {
                if let Some(c) = conv.as_mut() {
                    c.timeout();
                }
            },
        }
    }
    // Whatever was half said or half taken is kept.
    if let Some(c) = conv.as_mut() {
        c.caller_gone();
    }
    // Nobody else's transcript to wait for.
    drop(pair_other.take());
    router.unregister(&dialog_id);
    // Keys the leg reported as it finished.
    while let Ok(ev) = leg_events.try_recv() {
        if let LegEvent::Digit { key, at_ms, how } = ev {
            store_digit(&ctx.store, &call_id, key, at_ms, how);
        }
    }
    let (ended_at, reason) = ended.unwrap_or((now_ms(), EndReason::DialogEnded));
    ctx.store.end_call(&call_id, ended_at, reason.as_str());
    let Some((_, stats, shell)) = media_result else {
        if answered_at.is_none() {
            tracing::info!(call = %call_id, from = %Pii(&from), reason = reason.as_str(), "missed call");
        }
        ctx.store.transcript_complete(&call_id);
        return;
    };
    let q = store_media(&ctx, &call_id, &stats);
    if stats.digits_dropped > 0 {
        crate::limits::count(&crate::limits::COUNTERS.dtmf_dropped, stats.digits_dropped);
        tracing::warn!(call = %call_id, dropped = stats.digits_dropped, "caller pressed more keys than are stored per call");
        ctx.store.add_event(
            &call_id,
            ended_at - answered_at.unwrap_or(ended_at),
            EventKind::DtmfLimit,
            format!("{} more keys not stored", stats.digits_dropped),
        );
    }
    tracing::info!(
        call = %call_id,
        reason = reason.as_str(),
        duration_ms = ended_at - answered_at.unwrap_or(ended_at),
        packets = q.packets,
        lost = q.lost,
        late = q.late,
        concealed = q.concealed,
        jitter_ms = q.jitter_ms,
        target_delay_ms = q.target_delay_ms,
        malformed = q.malformed,
        foreign = q.foreign,
        rtcp_received = q.rtcp_received,
        rtt_ms = q.rtt_ms.map(|v| v.round() as u32),
        dropped_frames = shell.dropped_frames,
        "call ended"
    );
}

/// Start the box's conversation with an answered caller.
#[allow(clippy::too_many_arguments)]
fn converse(
    ctx: &Arc<CallCtx>,
    start: conversation::Start,
    voice: Arc<crate::voice::VoiceService>,
    control: mpsc::UnboundedSender<leg::Control>,
    rate: u32,
    (call_id, from, facts): (&str, &str, &crate::routing::Facts),
    (started_ms, answered_ms): (i64, i64),
    record_gate: Option<(conversation::RecordGate, Arc<AtomicBool>)>,
) -> conversation::Conversation {
    use crate::receptionist::Receptionist;
    let rcfg = ctx.receptionist.current();
    let notice = rcfg.notice.clone();
    let plan = ctx.plan.current();
    let caller_id = crate::understand::caller_number(from, ctx.cfg.site.country);
    let recording = ctx.cfg.privacy.recording;
    let origin = tokio::time::Instant::now();
    let at = conversation::Conversation::at(origin);
    let f = facts.clone();
    let r = match &start {
        conversation::Start::Greet => {
            Receptionist::new(rcfg, plan, f, caller_id.clone(), recording, at)
        }
        conversation::Start::Message => {
            Receptionist::for_message(rcfg, plan, f, caller_id.clone(), recording, at)
        }
        conversation::Start::Voicemail(_) => {
            Receptionist::silent(rcfg, plan, f, caller_id.clone(), recording)
        }
    };
    let c2 = ctx.clone();
    let mut c = conversation::Conversation::start(
        r,
        origin,
        conversation::Setup {
            voice,
            control,
            rate,
            store: ctx.store.clone(),
            call_id: call_id.to_string(),
            started_ms,
            answered_ms,
            record_gate,
            urgency: Arc::new(move |intent: &str| {
                c2.cfg
                    .intent
                    .intents
                    .iter()
                    .find(|d| d.name == intent)
                    .map_or(crate::config::Urgency::Normal, |d| d.urgency)
            }),
            caller_id,
        },
        notice,
    );
    if let conversation::Start::Voicemail(mailbox) = start {
        c.start_voicemail(mailbox);
    }
    c
}

/// What a routing step rings, if it rings anyone.
fn ring_plan(step: &crate::routing::Step, plan: &crate::routing::Plan) -> Option<bridge::Plan> {
    match step {
        crate::routing::Step::Ring(r) => Some(bridge::Plan::Extensions {
            numbers: r.members.clone(),
            strategy: r.strategy,
            ring_ms: r.ring_secs * 1000,
            agent_fallback: true,
        }),
        crate::routing::Step::Transfer { number } => Some(bridge::Plan::Extensions {
            numbers: vec![number.clone()],
            strategy: crate::routing::Strategy::Ringall,
            ring_ms: plan.ring_secs * 1000,
            agent_fallback: true,
        }),
        _ => None,
    }
}

/// The destination a ringing step rang, for the next decision.
fn rung_dest(step: &crate::routing::Step) -> Option<crate::routing::Dest> {
    match step {
        crate::routing::Step::Ring(r) => Some(r.dest.clone()),
        crate::routing::Step::Transfer { number } => {
            Some(crate::routing::Dest::Number(number.clone()))
        }
        _ => None,
    }
}

/// Where a desk phone's call goes: another extension, out through the
/// trunk (emergency numbers first of all), or the agent itself (None); or
/// the status refusing it.
fn phone_plan(ctx: &CallCtx, extension: &str, dialled: &str) -> Result<Option<bridge::Plan>, u16> {
    let cfg = &ctx.cfg;
    if dialled == cfg.sip.user {
        return Ok(None);
    }
    if ctx.registrar.is_extension(dialled) {
        if dialled == extension {
            return Err(486);
        }
        return Ok(Some(bridge::Plan::Extensions {
            numbers: vec![dialled.to_string()],
            strategy: crate::config::RingStrategy::Ringall,
            ring_ms: cfg.inbound.ring_secs * 1000,
            agent_fallback: false,
        }));
    }
    let emergency = cfg.outbound.emergency.iter().any(|e| e == dialled);
    let number = crate::phone::Phone::parse_in(dialled, cfg.site.country);
    if !emergency && number.is_err() {
        return Err(404);
    }
    let Some(trunk) = outbound_trunk(ctx) else {
        if emergency {
            tracing::error!(
                extension,
                "EMERGENCY call could not be placed: no trunk is up; the phone is told at once (503)"
            );
        } else {
            tracing::warn!(
                extension,
                "a call out could not be placed: no trunk is up (503)"
            );
        }
        return Err(503);
    };
    let country = cfg.site.country;
    let cli = trunk_cli(&trunk, country);
    let number = match number {
        _ if emergency => dialled.to_string(),
        Ok(n) => n.cli(trunk.cli_format, country),
        Err(_) => return Err(404),
    };
    if emergency {
        tracing::warn!(extension, trunk = %trunk.name, number = %number, "EMERGENCY call: straight out through the trunk");
    } else {
        tracing::info!(extension, trunk = %trunk.name, "call out through the trunk");
    }
    Ok(Some(bridge::Plan::Out { trunk, number, cli }))
}

/// The trunk calls go out through (`outbound.trunk`, else the first), if
/// it is up.
pub(super) fn outbound_trunk(ctx: &CallCtx) -> Option<Arc<crate::sip::trunk::Trunk>> {
    let name = &ctx.cfg.outbound.trunk;
    ctx.trunks
        .iter()
        .find(|t| name.is_empty() || &t.name == name)
        .filter(|t| t.is_up())
        .cloned()
}

/// The caller line identity calls out through `trunk` show: its first
/// DID, in its format.
pub(super) fn trunk_cli(
    trunk: &crate::sip::trunk::Trunk,
    country: crate::phone::Country,
) -> String {
    trunk
        .dids
        .first()
        .map(|d| d.cli(trunk.cli_format, country))
        .unwrap_or_else(|| trunk.username.clone())
}

/// How the caller's audio arrived, into `call_media`.
fn store_media(ctx: &CallCtx, call_id: &str, stats: &LegStats) -> MediaQuality {
    let q = MediaQuality {
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
        rtcp_sent: stats.rtcp.sent,
        rtcp_received: stats.rtcp.received,
        rtcp_foreign: stats.rtcp.foreign,
        remote_lost: stats.rtcp.remote_lost as u64,
        remote_fraction_lost: stats.rtcp.remote_fraction_lost_max,
        remote_jitter_ms: stats.rtcp.remote_jitter_ms_max,
        rtt_ms: stats.rtcp.rtt_ms_mean(),
        rtt_max_ms: (stats.rtcp.rtt_count > 0).then_some(stats.rtcp.rtt_ms_max),
    };
    ctx.store.media_quality(call_id, q);
    crate::limits::count(&crate::limits::COUNTERS.rtp_foreign, stats.foreign);
    q
}

/// A key the caller pressed, as a call event.
fn store_digit(
    store: &Store,
    call_id: &str,
    key: char,
    at_ms: u64,
    how: crate::media::rtp_leg::DtmfSource,
) {
    tracing::info!(call = %call_id, how = how.as_str(), "caller pressed a key");
    store.add_event(
        call_id,
        at_ms as i64,
        EventKind::Dtmf,
        format!("{key} ({})", how.as_str()),
    );
}

/// What a re-INVITE's offer means for this call.
/// A re-offer without the call's codec but with another we speak: the
/// payload type and codec to switch to, and its telephone-event type.
pub(crate) fn switched_codec(offer: &str) -> Option<(u8, sdp::Codec, Option<u8>)> {
    let d = sdp::AudioDescription::parse(offer).ok()?;
    let (pt, codec) = d.choose().ok()?;
    Some((pt, codec, d.telephone_event))
}

pub(crate) fn re_offer(offer: &str, pt: u8, codec: sdp::Codec) -> ReOffer {
    match sdp::AudioDescription::parse(offer) {
        // Our payload type must still be offered, for our codec: a static
        // one (0, 8, 9) names its codec even when the re-offer has left it
        // out, and the same codec under a new dynamic type is a switch.
        Ok(d) if d.payload_types.contains(&pt) && d.codec_of(pt) == Some(codec) => {
            if d.direction.is_hold() {
                ReOffer::Hold
            } else {
                ReOffer::Compatible
            }
        }
        Ok(_) => ReOffer::Incompatible,
        // An empty re-INVITE asks for our offer; a 0.0.0.0 address is the
        // old way of putting a call on hold. Both keep the call as it is.
        Err(sdp::SdpError::NoAudio) if offer.trim().is_empty() => ReOffer::Hold,
        Err(sdp::SdpError::BadAddress(ip)) if ip.is_unspecified() => ReOffer::Hold,
        Err(_) => ReOffer::Incompatible,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(m: &str, extra: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP {m}\r\n{extra}"
        )
    }

    #[test]
    fn re_offers_keep_switch_or_hold_the_codec() {
        use sdp::Codec::*;
        let same = offer("0 101", "a=rtpmap:101 telephone-event/8000\r\n");
        assert!(matches!(re_offer(&same, 0, Pcmu), ReOffer::Compatible));
        let held = offer("0", "a=sendonly\r\n");
        assert!(matches!(re_offer(&held, 0, Pcmu), ReOffer::Hold));
        // PCMA only: our static 0 is no longer offered, whatever it names.
        let switch = offer("8", "a=rtpmap:8 PCMA/8000\r\n");
        assert!(matches!(re_offer(&switch, 0, Pcmu), ReOffer::Incompatible));
        assert_eq!(
            switched_codec(&switch).map(|(pt, c, _)| (pt, c)),
            Some((8, Pcma))
        );
        // The same codec under a new dynamic type: a switch to that type.
        let moved = offer("96", "a=rtpmap:96 opus/48000/2\r\n");
        assert!(matches!(re_offer(&moved, 111, Opus), ReOffer::Incompatible));
        assert_eq!(
            switched_codec(&moved).map(|(pt, c, _)| (pt, c)),
            Some((96, Opus))
        );
        // Nothing we speak: refused, nothing to switch to.
        let none = offer("18", "a=rtpmap:18 G729/8000\r\n");
        assert!(matches!(re_offer(&none, 0, Pcmu), ReOffer::Incompatible));
        assert_eq!(switched_codec(&none), None);
    }
}
