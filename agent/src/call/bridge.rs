//! A call for the business's phones: the box as a back-to-back user agent.
//! The caller's INVITE is one dialog (A); the box rings the extensions of
//! `[inbound] ring` with INVITEs of its own (forks, B), as the sans-IO
//! [`Ringer`] decides, and bridges the caller to the first that answers:
//! its media is relayed packet for packet when both legs share a codec and
//! decoded and re-encoded otherwise, while each leg's audio also goes to
//! its own transcription tap, and both into the one stereo recording
//! (caller left, answering phone right). Either side hanging up ends the
//! other. When nobody answers, the call goes back to the agent, which
//! answers it itself.

use super::ringer::{self, Cancelled, ForkId, Ringer};
use super::{CallCtx, Command, EndReason, now_ms};
use crate::media::leg::{self, Control, LegEnd, ShellStats};
use crate::media::rtp_leg::{LegEvent, LegStats, RtpLeg, RtpLegConfig};
use crate::media::sdp::{self, AudioDescription, Codec};
use crate::media::sink::Tee;
use crate::pii::Pii;
use crate::sip::DialogEvent;
use crate::sip::bindings::Binding;
use crate::store::{Channel, LegRow};
use crate::transcribe::tap;
use rsipstack::dialog::dialog::{DialogState, TerminatedReason};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{Header, StatusCode, Transport};
use rsipstack::transport::SipAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Our offer to a phone: the caller's codec first (so the two legs can
/// relay), then the others we speak.
const OFFER: [(u8, Codec); 4] = [
    (9, Codec::G722),
    (0, Codec::Pcmu),
    (8, Codec::Pcma),
    (111, Codec::Opus),
];
const TELEPHONE_EVENT_PT: u8 = 101;

/// What the caller's side of the call has ready when ringing starts.
pub(super) struct Caller<'a> {
    pub call_id: &'a str,
    pub from: &'a str,
    pub server: &'a InviteDialog,
    pub events: &'a mut mpsc::UnboundedReceiver<DialogEvent>,
    pub commands: &'a mut mpsc::UnboundedReceiver<Command>,
    /// Taken when the call is bridged (the caller's leg needs them).
    pub sockets: &'a mut Option<leg::Sockets>,
    pub hold: &'a mut Option<Box<dyn std::any::Any + Send>>,
    pub remote: &'a AudioDescription,
    pub pt: u8,
    pub codec: Codec,
    pub rtcp_mux: bool,
    /// Our SDP answer to the caller.
    pub answer: &'a str,
    /// Where our answer to the caller says to send RTP, and its session id.
    pub local: Option<SocketAddr>,
    pub session_id: u64,
    pub dialogs: &'a Arc<DialogLayer>,
    /// Send ringback as early media (183 with our answer) while phones
    /// ring: for calls through a trunk, whose INVITE is the provider's.
    /// Anyone else gets 180 and makes its own ringback: an INVITE alone
    /// must not make the box stream at an address it names.
    pub early_media: bool,
    /// The caller's SRTP keys and profile, when its media is encrypted.
    pub srtp: Option<(crate::media::srtp::Keys, sdp::Profile)>,
    /// The box has answered already (the receptionist rings someone):
    /// its running leg and tap go on; given back if nobody answers.
    pub answered: &'a mut Option<Answered>,
}

/// A caller the box has answered: its leg (whose tap transcribes and
/// records the whole call, both sides once bridged) and what the
/// answering phone's side needs to join that recording and transcript.
pub(super) struct Answered {
    pub leg: Running,
    /// Copies of the answering phone's audio: the recording's right channel.
    pub callee_copy: crossbeam_channel::Sender<Vec<f32>>,
    /// The answering phone's tap's half of the pair: the caller's tap
    /// summarises once that one is done too.
    pub pair: Option<tap::Pair>,
}

/// Whom a call rings.
pub(super) enum Plan {
    /// Every phone registered as these extensions. When nobody answers,
    /// the agent answers (`agent_fallback`, a call from outside) or the
    /// caller is told (a call between phones).
    Extensions {
        numbers: Vec<String>,
        strategy: ringer::Strategy,
        ring_ms: u64,
        agent_fallback: bool,
    },
    /// Out through a trunk to `number` (as the provider should see it),
    /// showing `cli` as the caller.
    Out {
        trunk: Arc<crate::sip::trunk::Trunk>,
        number: String,
        cli: String,
    },
}

/// How long a call out may ring before we give up (the phone network
/// usually gives up first).
const OUT_RING_MS: u64 = 180_000;

/// How ringing ended.
pub(super) enum Rung {
    /// The call is over (bridged and hung up, or the caller gave up):
    /// recorded, nothing left to do.
    Done,
    /// Nobody answered (how: for the next routing decision); the call
    /// is still ours to route on.
    NobodyAnswered(crate::routing::Unanswered),
}

/// One INVITE to one phone.
struct Fork {
    target: String,
    contact: String,
    dialog: Option<InviteDialog>,
    call_id: String,
    /// A trunk's 401/407 was answered once already.
    auth_tried: bool,
    started_at: i64,
    answered_at: Option<i64>,
    ended: Option<(i64, String)>,
    /// The phone's answer, once it answered.
    answer: Option<String>,
    /// The final status it failed with, if it did.
    status: Option<u16>,
    /// Our SRTP key and profile in the offer to it: a key of its own, so
    /// no phone rung learns the key the box uses with another.
    srtp: Option<(crate::media::srtp::Crypto, sdp::Profile)>,
    /// The trunk, number and CLI of a fork out through a trunk.
    outside: Option<Outside>,
    /// The offer it was sent (again with a 407's answer).
    offer: String,
    /// Its own RTP sockets: the B leg's if it answers.
    sockets: Option<leg::Sockets>,
}

impl Fork {
    /// Stop ringing it: CANCEL while it rings, BYE if it answered in the
    /// race (a confirmed dialog ignores CANCEL).
    fn cancel(&mut self, why: Cancelled) {
        self.end(match why {
            Cancelled::AnsweredElsewhere => "answered elsewhere",
            Cancelled::RingTimeout => "no answer",
            Cancelled::CallerGone => "caller hung up",
        });
        if let Some(d) = self.dialog.clone() {
            tokio::spawn(async move {
                let _ = d.hangup().await;
            });
        }
    }

    fn end(&mut self, outcome: impl Into<String>) {
        if self.ended.is_none() {
            self.ended = Some((now_ms(), outcome.into()));
        }
        // Its RTP port is free again (early media gives its own back to
        // an ended fork, and they go here too at the ring's end).
        self.sockets = None;
    }
}

/// What a fork's failure is called in the call's record of its legs.
fn outcome_of(code: u16) -> String {
    match code {
        486 | 600 => "busy".into(),
        603 => "declined".into(),
        480 | 408 => "no answer".into(),
        487 => "cancelled".into(),
        c => format!("failed with {c}"),
    }
}

/// Where one fork's INVITE goes.
enum Dest {
    Phone(Binding),
    /// Out through a trunk to a number (as the provider writes it),
    /// showing `cli`.
    Outside(Outside),
}

/// A call out through a trunk.
#[derive(Clone)]
struct Outside {
    trunk: Arc<crate::sip::trunk::Trunk>,
    number: String,
    cli: String,
}

/// An outside number of a ring list (a mobile), reached through the
/// outbound trunk if it is up; None: not reachable now.
fn outside(ctx: &CallCtx, n: &str) -> Option<Outside> {
    let country = ctx.cfg.site.country;
    let number = crate::phone::Phone::parse_in(n, country).ok()?;
    let trunk = super::outbound_trunk(ctx)?;
    Some(Outside {
        number: number.cli(trunk.cli_format, country),
        cli: super::trunk_cli(&trunk, country),
        trunk,
    })
}

/// Ring what `plan` says for the caller; bridge the first that answers
/// until either side hangs up.
pub(super) async fn ring(ctx: &Arc<CallCtx>, mut caller: Caller<'_>, plan: Plan) -> Rung {
    let registrar = ctx.registrar.clone();
    // Each target with where it can be reached now.
    let targets: Vec<(String, Vec<Dest>)> = match &plan {
        Plan::Extensions { numbers, .. } => numbers
            .iter()
            .map(|n| {
                if registrar.is_extension(n) {
                    let c = registrar.contacts_of(n);
                    (n.clone(), c.into_iter().map(Dest::Phone).collect())
                } else {
                    (
                        n.clone(),
                        outside(ctx, n).map(Dest::Outside).into_iter().collect(),
                    )
                }
            })
            .collect(),
        Plan::Out { trunk, number, cli } => vec![(
            number.clone(),
            vec![Dest::Outside(Outside {
                trunk: trunk.clone(),
                number: number.clone(),
                cli: cli.clone(),
            })],
        )],
    };
    let (strategy, ring_ms, agent_fallback) = match &plan {
        Plan::Extensions {
            strategy,
            ring_ms,
            agent_fallback,
            ..
        } => (*strategy, *ring_ms, *agent_fallback),
        Plan::Out { .. } => (ringer::Strategy::Ringall, OUT_RING_MS, false),
    };
    let mut legs: Vec<Fork> = Vec::new();
    for (n, c) in &targets {
        if c.is_empty() {
            legs.push(Fork {
                target: n.clone(),
                contact: String::new(),
                dialog: None,
                call_id: String::new(),
                auth_tried: false,
                started_at: now_ms(),
                answered_at: None,
                ended: Some((
                    now_ms(),
                    if registrar.is_extension(n) {
                        "not registered"
                    } else {
                        "no trunk up"
                    }
                    .into(),
                )),
                answer: None,
                status: Some(480),
                srtp: None,
                outside: None,
                offer: String::new(),
                sockets: None,
            });
        }
    }
    let mut offer_codecs = vec![(
        OFFER
            .iter()
            .find(|(_, c)| *c == caller.codec)
            .map_or(0, |(p, _)| *p),
        caller.codec,
    )];
    offer_codecs.extend(OFFER.iter().filter(|(_, c)| *c != caller.codec));
    let (fork_state_tx, mut fork_states) = caller.dialogs.new_dialog_state_channel();
    // The ringer's clock is monotonic: a wall-clock step (NTP at boot)
    // must not fire or stall ring timeouts.
    let origin = tokio::time::Instant::now();
    let mono = move || origin.elapsed().as_millis() as u64;
    let mut ringer = Ringer::new(
        strategy,
        ring_ms,
        targets.iter().map(|(_, c)| c.len()).collect(),
        mono(),
    );
    // One channel for every leg's events (keys pressed).
    let (leg_events_tx, leg_events) = mpsc::unbounded_channel();
    let mut ringing_leg: Option<Running> = None;
    // While it rings the caller may send nothing: its leg waits out every
    // ring time before calling the caller gone.
    let caller_keys = caller.srtp.as_ref().map(|(k, _)| k.clone());
    let mut ringing_cfg = leg_config(
        ctx,
        caller.codec,
        caller.pt,
        caller.remote,
        caller.rtcp_mux,
        caller_keys,
    );
    ringing_cfg.timeout_ms += ring_ms.saturating_mul(targets.len().max(1) as u64);
    // A caller the box answered hears ringback on its running leg.
    let mut answered: Option<(crossbeam_channel::Sender<Vec<f32>>, Option<tap::Pair>)> = None;
    if let Some(a) = caller.answered.take() {
        let _ = a
            .leg
            .control
            .send(Control::Tone(Some(ringback(ctx.cfg.site.country))));
        // A caller that sends nothing while it hears ringback (DTX) is not
        // gone before every phone has rung out.
        let _ = a.leg.control.send(Control::Timeout(
            ctx.cfg.media.rtp_timeout_secs * 1000
                + ring_ms.saturating_mul(targets.len().max(1) as u64),
        ));
        ringing_leg = Some(a.leg);
        answered = Some((a.callee_copy, a.pair));
    } else if caller.early_media
        && let Ok(leg) = RtpLeg::new(ringing_cfg, 0)
        && let Some(sockets) = caller.sockets.take()
    {
        let r = start_leg(
            sockets,
            leg,
            Box::new(leg::Discard),
            leg_events_tx.clone(),
            Channel::Caller,
        );
        let _ = r
            .control
            .send(Control::Tone(Some(ringback(ctx.cfg.site.country))));
        let _ = r.control.send(Control::StartSending);
        let _ = caller.server.ringing(
            Some(vec![Header::ContentType("application/sdp".into())]),
            Some(caller.answer.as_bytes().to_vec()),
        );
        ringing_leg = Some(r);
    } else {
        let _ = caller.server.ringing(None, None);
    }
    let was_answered = answered.is_some();
    // Fork index → its record; results of the INVITEs as they finish.
    let mut forks: Vec<Fork> = Vec::new();
    let mut fork_of_ringer: Vec<usize> = Vec::new();
    let mut finals: JoinSet<(ForkId, InviteAsyncResult)> = JoinSet::new();
    let caller_user = crate::phone::Phone::from_uri_in(caller.from, ctx.cfg.site.country)
        .map(|p| p.e164())
        .unwrap_or_else(|| "anonymous".into());
    let mut connected: Option<ForkId> = None;
    let mut outcome: Option<Rung> = None;
    let mut ended: Option<EndReason> = None;

    // A target's early media (183 with SDP) relayed to the caller instead
    // of our ringback, on that fork's own sockets.
    let mut early: Option<EarlyMedia> = None;

    'ringing: loop {
        while let Some(a) = ringer.poll_action() {
            match a {
                ringer::Action::Start {
                    fork,
                    target,
                    contact,
                } => {
                    let (number, dests) = &targets[target];
                    // Each fork its own RTP port: a target that sends early
                    // media (or answers late) never reaches another's leg.
                    let media = fork_media(ctx, &offer_codecs).await;
                    let (fork_offer, fork_srtp) = match &media {
                        Some((_, offer)) => keyed_offer(ctx, offer, dest_tls(&dests[contact])),
                        None => (String::new(), None),
                    };
                    let (opt, contact_text) = match &dests[contact] {
                        Dest::Phone(b) => (
                            invite_option(ctx, &caller_user, b, &fork_offer),
                            b.contact.clone(),
                        ),
                        Dest::Outside(o) => (
                            trunk_invite(ctx, &o.trunk, &o.number, &o.cli, &fork_offer, None, None)
                                .await,
                            format!("trunk {}", o.trunk.name),
                        ),
                    };
                    let out = match &dests[contact] {
                        Dest::Outside(o) => Some(o.clone()),
                        Dest::Phone(_) => None,
                    };
                    let opt = match &media {
                        Some(_) => opt,
                        None => Err("no free RTP port".to_string()),
                    };
                    let started_at = now_ms();
                    let mut rec = Fork {
                        target: number.clone(),
                        contact: contact_text,
                        auth_tried: false,
                        dialog: None,
                        call_id: String::new(),
                        started_at,
                        answered_at: None,
                        ended: None,
                        answer: None,
                        status: None,
                        srtp: fork_srtp,
                        outside: out,
                        offer: fork_offer,
                        sockets: media.map(|(sockets, _)| sockets),
                    };
                    match opt.and_then(|o| {
                        caller
                            .dialogs
                            .do_invite_async(o, fork_state_tx.clone())
                            .map_err(|e| e.to_string())
                    }) {
                        Ok((dialog, handle)) => {
                            rec.call_id = dialog.id().call_id.clone();
                            rec.dialog = Some(dialog);
                            finals.spawn(async move { (fork, joined(handle.await)) });
                        }
                        Err(e) => {
                            // The error may name the number dialled: debug only.
                            tracing::debug!(call = %caller.call_id, error = %e, "INVITE not sent");
                            tracing::warn!(call = %caller.call_id, "cannot ring a phone or call out");
                            rec.end("failed to send");
                            // Told after this batch of actions.
                            finals.spawn(async move {
                                (fork, Err(rsipstack::Error::Error("not sent".into())))
                            });
                        }
                    }
                    fork_of_ringer.push(forks.len());
                    forks.push(rec);
                }
                ringer::Action::Cancel { fork, why } => {
                    forks[fork_of_ringer[fork]].cancel(why);
                }
                ringer::Action::Connect { fork } => {
                    connected = Some(fork);
                    break 'ringing;
                }
                ringer::Action::NoAnswer => {
                    outcome = Some(Rung::NobodyAnswered(crate::routing::Unanswered::NoAnswer));
                }
            }
        }
        if outcome.is_some() || ended.is_some() {
            break;
        }
        // The fork whose early media plays ended (failed, cancelled just
        // now): back to our ringback.
        if early
            .as_ref()
            .is_some_and(|e| forks[e.fork].ended.is_some())
            && let Some(e) = early.take()
        {
            e.stop(
                &mut forks,
                ringing_leg.as_ref(),
                Some(ringback(ctx.cfg.site.country)),
            )
            .await;
        }
        let deadline = ringer
            .poll_timeout()
            .map(|t| origin + Duration::from_millis(t));
        tokio::select! {
            // The target's early media starts flowing: the caller hears it
            // from now on instead of our ringback (a 183 that never sends
            // leaves the ringback on).
            Some((_, ev)) = async { early.as_mut().expect("guarded").events.recv().await }, if early.as_ref().is_some_and(|e| !e.playing) => {
                if matches!(ev, LegEvent::FirstPacket { .. })
                    && let (Some(e), Some(caller_leg)) = (early.as_mut(), &ringing_leg)
                {
                    let (to_caller, to_target) = leg::bridge_pair(e.relay);
                    let _ = caller_leg.control.send(Control::Tone(None));
                    let _ = caller_leg.control.send(to_caller);
                    let _ = e.leg.control.send(to_target);
                    e.playing = true;
                    tracing::debug!(call = %caller.call_id, "a target's early media is relayed to the caller");
                }
            },
            ev = caller.events.recv() => match ev {
                Some(DialogEvent::Terminated(reason)) => {
                    ringer.caller_gone();
                    ended = Some(match reason {
                        TerminatedReason::UacBye if answered.is_some() => EndReason::CallerHungUp,
                        TerminatedReason::UacCancel | TerminatedReason::UacBye => EndReason::CallerCancelled,
                        TerminatedReason::Timeout => EndReason::SignallingTimeout,
                        _ => EndReason::DialogEnded,
                    });
                }
                None => {
                    ringer.caller_gone();
                    ended = Some(EndReason::DialogEnded);
                }
                // An answered caller's re-INVITE waits for the phones
                // (491: try again later); INFO is acknowledged.
                Some(DialogEvent::ReInvite { handle, .. }) => {
                    let _ = handle.reply(StatusCode::RequestPending).await;
                }
                Some(DialogEvent::Info { handle }) => {
                    let _ = handle.reply(StatusCode::OK).await;
                }
                // Nothing else comes before our answer.
                Some(_) => {}
            },
            cmd = caller.commands.recv() => {
                let _ = cmd;
                ringer.caller_gone();
                // An answered caller is hung up; one still ringing refused.
                if answered.is_some() {
                    let _ = caller.server.bye().await;
                } else {
                    let _ = caller.server.reject(Some(StatusCode::ServiceUnavailable), None);
                }
                ended = Some(EndReason::AgentShutdown);
            },
            Some(r) = finals.join_next() => {
                let Ok((fork, result)) = r else { continue };
                let f = &mut forks[fork_of_ringer[fork]];
                match result {
                    Ok((_, Some(resp))) if resp.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful => {
                        f.answered_at = Some(now_ms());
                        f.answer = Some(String::from_utf8_lossy(resp.body()).to_string());
                        ringer.answered(fork);
                    }
                    Ok((_, Some(resp)))
                        if matches!(resp.status_code.code(), 401 | 407)
                            && !f.auth_tried
                            && f.outside.is_some() =>
                    {
                        // The provider challenges calls out: once more, with
                        // the trunk's credentials, on the same Call-ID.
                        f.auth_tried = true;
                        let Some(Outside { trunk, number, cli }) = f.outside.clone() else { unreachable!() };
                        let retry = trunk_invite(ctx, &trunk, &number, &cli, &f.offer, Some(&resp), Some(f.call_id.clone())).await;
                        match retry.and_then(|o| caller.dialogs.do_invite_async(o, fork_state_tx.clone()).map_err(|e| e.to_string())) {
                            Ok((dialog, handle)) => {
                                f.dialog = Some(dialog);
                                finals.spawn(async move { (fork, joined(handle.await)) });
                            }
                            Err(e) => {
                                tracing::debug!(call = %caller.call_id, error = %e, "challenge not answered");
                                tracing::warn!(call = %caller.call_id, "cannot answer the provider's challenge");
                                f.end(outcome_of(resp.status_code.code()));
                                f.status = Some(resp.status_code.code());
                                ringer.failed(fork, mono());
                            }
                        }
                    }
                    Ok((_, Some(resp))) => {
                        f.end(outcome_of(resp.status_code.code()));
                        f.status = Some(resp.status_code.code());
                        ringer.failed(fork, mono());
                    }
                    Ok((_, None)) => {
                        f.end("no final response");
                        ringer.failed(fork, mono());
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "a fork failed");
                        f.end("unreachable");
                        ringer.failed(fork, mono());
                    }
                }
            },
            Some(st) = fork_states.recv() => {
                // Before the bridge a fork's end matters (its final response
                // says how, above), and its early media.
                match st {
                    DialogState::Terminated(id, _) => caller.dialogs.remove_dialog(&id),
                    DialogState::Early(id, resp)
                        if resp.status_code == StatusCode::SessionProgress
                            && !resp.body().is_empty()
                            && early.is_none() =>
                    {
                        let fork = forks
                            .iter()
                            .position(|f| f.call_id == id.call_id && f.ended.is_none());
                        if let Some(i) = fork
                            && ringing_leg.is_some()
                            && let Some(sockets) = forks[i].sockets.take()
                        {
                            match early_media(ctx, &caller, &forks[i], resp.body(), sockets, ring_ms) {
                                Ok(mut e) => {
                                    e.fork = i;
                                    early = Some(e);
                                }
                                Err(sockets) => forks[i].sockets = Some(sockets),
                            }
                        }
                    }
                    _ => {}
                }
            },
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                ringer.handle_timeout(mono());
            },
        }
    }
    // Let cancels and BYEs of the other forks go out with what they need.
    while let Some(a) = ringer.poll_action() {
        if let ringer::Action::Cancel { fork, why } = a {
            forks[fork_of_ringer[fork]].cancel(why);
        }
    }
    // The other forks' INVITEs may still end, one even with a late 2xx:
    // hang those up and forget their dialogs, whatever this call does next.
    let others: Vec<(ForkId, Option<InviteDialog>)> = fork_of_ringer
        .iter()
        .enumerate()
        .filter(|(f, _)| Some(*f) != connected)
        .map(|(f, &i)| (f, forks[i].dialog.clone()))
        .collect();
    let dialogs = caller.dialogs.clone();
    tokio::spawn(async move {
        while let Some(Ok((fork, r))) = finals.join_next().await {
            if let Ok((id, Some(resp))) = r
                && resp.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful
            {
                if let Some((_, Some(d))) = others.iter().find(|(f, _)| *f == fork) {
                    let _ = d.hangup().await;
                }
                dialogs.remove_dialog(&id);
            }
        }
    });
    // Early media ends with the ringing: its sockets go back to its fork
    // (the B leg's, if that fork answered).
    if let Some(e) = early.take() {
        e.stop(&mut forks, ringing_leg.as_ref(), None).await;
    }
    // Not bridged: the ringback stops, and the caller's sockets come back
    // for the agent to answer with.
    if connected.is_none()
        && let Some(r) = ringing_leg.take()
    {
        match answered.take() {
            // Back to the box's conversation, or (the caller gone) its
            // leg ends and its tap finishes the call's transcript.
            Some((callee_copy, pair)) => {
                let _ = r.control.send(Control::Tone(None));
                if ended.is_some() {
                    r.cancel.cancel();
                    // The leg ran the whole call (the conversation, then
                    // the ringback): its figures are the call's.
                    if let Ok((_, stats, _)) = r.task.await {
                        super::store_media(ctx, caller.call_id, &stats);
                    }
                } else {
                    *caller.answered = Some(Answered {
                        leg: r,
                        callee_copy,
                        pair,
                    });
                }
            }
            None => *caller.sockets = r.stop().await,
        }
    }
    let result = match (connected, ended) {
        (Some(fork), None) => {
            let i = fork_of_ringer[fork];
            bridged(
                ctx,
                &mut caller,
                &mut forks[i],
                &mut fork_states,
                (ringing_leg.take(), leg_events_tx, leg_events),
                (caller_user.clone(), fork_state_tx.clone()),
                answered.take(),
            )
            .await;
            Rung::Done
        }
        (_, Some(reason)) if was_answered => {
            // Gone while the receptionist rang someone: its tap completes
            // the transcript.
            ctx.store
                .end_call(caller.call_id, now_ms(), reason.as_str());
            tracing::info!(call = %caller.call_id, reason = reason.as_str(), "the caller left while phones rang");
            Rung::Done
        }
        (_, Some(reason)) => {
            let at = now_ms();
            ctx.store.end_call(caller.call_id, at, reason.as_str());
            ctx.store.transcript_complete(caller.call_id);
            tracing::info!(call = %caller.call_id, from = %Pii(caller.from), reason = reason.as_str(), "missed call");
            Rung::Done
        }
        (None, None) if agent_fallback => {
            // Busy if every phone that could be rung refused; unreachable
            // if none could be rung at all.
            let statuses: Vec<u16> = forks.iter().filter_map(|f| f.status).collect();
            let how = if forks.is_empty() {
                crate::routing::Unanswered::Unreachable
            } else if !statuses.is_empty()
                && statuses.len() == forks.len()
                && statuses.iter().all(|s| matches!(s, 486 | 600 | 603))
            {
                crate::routing::Unanswered::Busy
            } else {
                crate::routing::Unanswered::NoAnswer
            };
            tracing::info!(call = %caller.call_id, outcome = %how, "nobody answered");
            let _ = outcome;
            Rung::NobodyAnswered(how)
        }
        (None, None) => {
            // Tell the caller how it went: busy if anyone was, the
            // provider's own answer for a call out, else unavailable.
            let statuses: Vec<u16> = forks
                .iter()
                .chain(legs.iter())
                .filter_map(|f| f.status)
                .collect();
            let code = if statuses.iter().any(|c| matches!(c, 486 | 600)) {
                486
            } else if let (Plan::Out { .. }, Some(&c)) = (&plan, statuses.last()) {
                if matches!(c, 401 | 407) { 503 } else { c }
            } else if statuses.contains(&603) {
                603
            } else {
                480
            };
            let _ = caller.server.reject(Some(StatusCode::from(code)), None);
            let reason = match code {
                486 | 600 => EndReason::Busy,
                480 | 408 | 487 => EndReason::NoAnswer,
                _ => EndReason::NotConnected,
            };
            ctx.store
                .end_call(caller.call_id, now_ms(), reason.as_str());
            ctx.store.transcript_complete(caller.call_id);
            tracing::info!(call = %caller.call_id, status = code, reason = reason.as_str(), "call not answered");
            Rung::Done
        }
    };
    legs.extend(forks);
    ctx.store.add_legs(
        caller.call_id,
        legs.into_iter()
            .map(|f| {
                let (ended_at, outcome) = f.ended.unwrap_or((now_ms(), "ended".into()));
                LegRow {
                    target: f.target,
                    contact: f.contact,
                    started_at_ms: f.started_at,
                    answered_at_ms: f.answered_at,
                    ended_at_ms: ended_at,
                    outcome,
                }
            })
            .collect(),
    );
    result
}

/// Is the signalling to `dest` over TLS (where an SDES key may travel)?
fn dest_tls(dest: &Dest) -> bool {
    match dest {
        Dest::Phone(b) => b.transport == "tls",
        Dest::Outside(o) => o.trunk.transport == crate::config::TrunkTransport::Tls,
    }
}

/// `offer` keyed with `key` when SRTP is to be offered on this leg
/// (`media.srtp`, and TLS signalling for best-effort SRTP), and the
/// profile it was offered in.
fn keyed_offer(
    ctx: &CallCtx,
    offer: &str,
    tls: bool,
) -> (String, Option<(crate::media::srtp::Crypto, sdp::Profile)>) {
    match crate::media::srtp::offer_profile(ctx.cfg.media.srtp, tls) {
        Some(p) => {
            let key = crate::media::srtp::our_key();
            (sdp::keyed(offer, p, &key), Some((key, p)))
        }
        None => (offer.to_string(), None),
    }
}

/// The INVITE to one contact of an extension: From the caller's number
/// (what the phone shows), sent where the phone registered from.
fn invite_option(
    ctx: &CallCtx,
    caller_user: &str,
    b: &Binding,
    offer: &str,
) -> Result<InviteOption, String> {
    let sip = &ctx.cfg.sip;
    let (transport, suffix, port) = match b.transport {
        "tcp" => (Transport::Tcp, ";transport=tcp", sip.port),
        "tls" => (Transport::Tls, ";transport=tls", sip.tls_port),
        _ => (Transport::Udp, "", sip.port),
    };
    let host = SocketAddr::new(crate::sip::local_ip_towards(sip.bind, b.reach), port);
    let uri =
        |s: String| rsipstack::sip::Uri::try_from(s.as_str()).map_err(|e| format!("{s}: {e}"));
    let contact_uri = b
        .contact
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string();
    Ok(InviteOption {
        caller_display_name: None,
        caller_params: vec![],
        caller: uri(format!("sip:{caller_user}@{host}"))?,
        callee: uri(contact_uri)?,
        destination: Some(SipAddr {
            r#type: Some(transport),
            addr: b.reach.into(),
        }),
        content_type: Some("application/sdp".into()),
        offer: Some(offer.as_bytes().to_vec()),
        contact: uri(format!("sip:{}@{host}{suffix}", sip.user))?,
        credential: None,
        headers: None,
        support_prack: false,
        call_id: None,
        session_id: None,
        route_set: vec![],
    })
}

/// The INVITE out through `trunk` to `number`, showing `cli`; with
/// `challenge` (the provider's 401/407), answered with the trunk's
/// credentials on the first attempt's Call-ID.
async fn trunk_invite(
    ctx: &CallCtx,
    trunk: &crate::sip::trunk::Trunk,
    number: &str,
    cli: &str,
    offer: &str,
    challenge: Option<&rsipstack::sip::Response>,
    call_id: Option<String>,
) -> Result<InviteOption, String> {
    let server = trunk.resolve().await?;
    let sip = &ctx.cfg.sip;
    let suffix = trunk.transport.uri_suffix();
    let uri =
        |s: String| rsipstack::sip::Uri::try_from(s.as_str()).map_err(|e| format!("{s}: {e}"));
    let callee = uri(format!("sip:{number}@{}{suffix}", trunk.host))?;
    let host = SocketAddr::new(crate::sip::local_ip_towards(sip.bind, server), sip.port);
    let mut headers = Vec::new();
    if trunk.pai {
        headers.push(Header::Other(
            "P-Asserted-Identity".into(),
            format!("<sip:{cli}@{}>", trunk.host),
        ));
    }
    if let Some(resp) = challenge {
        let (c, proxy) = crate::sip::digest::Challenge::from_response(resp)
            .map_err(|e| format!("the provider's challenge: {e}"))?;
        let user = trunk.auth_username.as_deref().unwrap_or(&trunk.username);
        let cnonce = format!("{:016x}", rand::random::<u64>());
        let value = c.answer(
            user,
            trunk.password.expose(),
            "INVITE",
            &callee.to_string(),
            &cnonce,
            1,
        );
        headers.push(if proxy {
            Header::ProxyAuthorization(value.into())
        } else {
            Header::Authorization(value.into())
        });
    }
    Ok(InviteOption {
        caller_display_name: None,
        caller_params: vec![],
        caller: uri(format!("sip:{cli}@{}", trunk.host))?,
        callee,
        destination: Some(SipAddr {
            r#type: Some(crate::sip::trunk::client::transport_of(trunk)),
            addr: server.into(),
        }),
        content_type: Some("application/sdp".into()),
        offer: Some(offer.as_bytes().to_vec()),
        contact: uri(format!("sip:{}@{host}{suffix}", trunk.username))?,
        credential: None,
        headers: (!headers.is_empty()).then_some(headers),
        support_prack: false,
        call_id,
        session_id: None,
        route_set: vec![],
    })
}

/// Our side of one leg's session.
struct Session {
    local: Option<SocketAddr>,
    id: u64,
    /// Raised with every description we send of it.
    version: u64,
    pt: u8,
    codec: Codec,
    telephone_event: Option<u8>,
    rtcp_mux: bool,
    /// The leg's SRTP keys and profile (ours goes into every description
    /// of it; the peer's tells a re-key from a refresh).
    srtp: Option<(crate::media::srtp::Keys, sdp::Profile)>,
}

/// Our answer to a re-offer of `s` whose direction is `offered`.
fn directed(s: &mut Session, offered: sdp::MediaDirection) -> String {
    let Some(local) = s.local else {
        return String::new();
    };
    s.version += 1;
    let text = sdp::write_directed(
        local,
        (s.id, s.version),
        &[(s.pt, s.codec)],
        s.telephone_event,
        s.rtcp_mux,
        offered.answer(),
    );
    match &s.srtp {
        Some((keys, profile)) => sdp::keyed(&text, *profile, &keys.local),
        None => text,
    }
}

/// Answer a re-INVITE on one leg of the bridge: the same session back in
/// the direction it asks (the other party hears the hold tone while it
/// holds), or 488 for a codec switch we cannot follow mid-call.
async fn reinvite(
    handle: rsipstack::dialog::dialog::TransactionHandle,
    request: &rsipstack::sip::Request,
    (session, other_codec, policy): (&mut Session, Option<Codec>, crate::config::SrtpPolicy),
    (holder, held): (&Running, &Running),
    call_id: &str,
    who: &str,
) {
    let offer = String::from_utf8_lossy(request.body()).to_string();
    // Its SRTP: the same keys, the peer's new key, or refused as a first
    // offer would be (an offerless re-INVITE keeps what there is).
    let keyed = match AudioDescription::parse(&offer) {
        Ok(d) => crate::media::srtp::reanswer(session.srtp.as_ref(), &d, policy),
        Err(_) => Ok(session.srtp.clone()),
    };
    let mut re = super::re_offer(&offer, session.pt, session.codec);
    // A switch to another codec we speak: this leg takes it, and the bridge
    // relays or transcodes as the two codecs now say.
    if matches!(re, super::ReOffer::Incompatible)
        && keyed.is_ok()
        && let Some((pt, codec, te)) = super::switched_codec(&offer)
    {
        let _ = holder.control.send(Control::Codec(codec, pt, te));
        (session.pt, session.codec, session.telephone_event) = (pt, codec, te);
        // Re-paired only while bridged (not while a transfer's new party
        // is being rung and the caller hears the hold tone).
        if let Some(other) = other_codec {
            let (to_holder, to_held) = leg::bridge_pair(codec == other);
            let _ = holder.control.send(to_holder);
            let _ = held.control.send(to_held);
        }
        tracing::info!(call = %call_id, who, codec = codec.name(), "a party switched codec");
        re = super::re_offer(&offer, pt, codec);
    }
    let _ = match (re, keyed) {
        (super::ReOffer::Incompatible, _) | (_, Err(_)) => {
            handle.reply(StatusCode::NotAcceptableHere).await
        }
        (_, Ok(keys)) => {
            if keys != session.srtp {
                let _ = holder
                    .control
                    .send(Control::Srtp(keys.as_ref().map(|(k, _)| k.clone())));
                session.srtp = keys;
            }
            hold(holder, held, is_hold(&offer), call_id, who);
            let body = directed(session, direction_of(&offer));
            handle
                .respond(
                    StatusCode::OK,
                    Some(vec![Header::ContentType("application/sdp".into())]),
                    Some(body.into_bytes()),
                )
                .await
        }
    };
}

/// Does this re-offer put the other party on hold? Only a direction that
/// says so (`sendonly`, `inactive`) or the old `c=0.0.0.0`; a re-INVITE
/// without SDP (a session refresh) does not.
fn is_hold(offer: &str) -> bool {
    match AudioDescription::parse(offer) {
        Ok(d) => d.direction.is_hold(),
        Err(sdp::SdpError::BadAddress(ip)) => ip.is_unspecified(),
        Err(_) => false,
    }
}

/// The session id of a description we wrote (`o=handlet <id> ...`).
fn session_of(sdp: &str) -> u64 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("o=handlet "))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn direction_of(offer: &str) -> sdp::MediaDirection {
    AudioDescription::parse(offer)
        .map(|d| d.direction)
        .unwrap_or(sdp::MediaDirection::SendRecv)
}

/// `holder` put the call on hold (or took it off): the other party hears
/// the hold tone instead of the holder, and the holder gets silence.
fn hold(holder: &Running, held: &Running, on: bool, call_id: &str, who: &str) {
    tracing::info!(call = %call_id, who, on, "hold");
    let _ = held.control.send(Control::Hold(on));
    let _ = held
        .control
        .send(Control::Tone(on.then_some(handlet_dsp::playout::HOLD)));
    let _ = holder.control.send(Control::Hold(on));
}

/// A NOTIFY with the transfer's progress as a sipfrag (RFC 3515), sent
/// without waiting for its answer.
fn notify_refer(
    dialog: &InviteDialog,
    code: u16,
    reason: &str,
    state: &str,
    after: Option<tokio::task::JoinHandle<()>>,
) -> tokio::task::JoinHandle<()> {
    let d = dialog.clone();
    let headers = vec![
        Header::Event("refer".into()),
        Header::SubscriptionState(state.into()),
        Header::ContentType("message/sipfrag".into()),
    ];
    let body = format!("SIP/2.0 {code} {reason}\r\n").into_bytes();
    tokio::spawn(async move {
        // In order: the previous NOTIFY of this subscription first.
        if let Some(a) = after {
            let _ = a.await;
        }
        let _ = d.notify(Some(headers), Some(body)).await;
    })
}

/// Where a transfer's INVITEs go: each contact and its INVITE.
type Attempts = Vec<(
    String,
    Result<InviteOption, String>,
    Option<(crate::media::srtp::Crypto, sdp::Profile)>,
)>;

/// A fork's INVITE task as it ended. (The large error is rsipstack's own
/// result type, passed through.)
#[allow(clippy::result_large_err)]
fn joined(r: Result<InviteAsyncResult, tokio::task::JoinError>) -> InviteAsyncResult {
    match r {
        Ok(r) => r,
        Err(e) => Err(rsipstack::Error::Error(e.to_string())),
    }
}

/// The party a transfer reached.
struct Placed {
    /// Our SRTP key and profile in the offer it answered.
    srtp: Option<(crate::media::srtp::Crypto, sdp::Profile)>,
    dialog: InviteDialog,
    answer: String,
    call_id: String,
    target: String,
    contact: String,
    started_at: i64,
    answered_at: i64,
    sockets: leg::Sockets,
    local: Option<SocketAddr>,
    /// Of our offer to it, which later descriptions keep.
    session_id: u64,
}

/// Ring what `plan` names (every contact of an extension at once, or out
/// through the trunk) for a transfer; the first to answer, or the status
/// it failed with.
async fn place(
    ctx: Arc<CallCtx>,
    plan: Plan,
    caller_user: String,
    dialogs: Arc<DialogLayer>,
    states: rsipstack::dialog::dialog::DialogStateSender,
    cancel: CancellationToken,
) -> Result<Placed, u16> {
    let m = &ctx.cfg.media;
    let (rtp, rtcp) = crate::media::bind_rtp(m.rtp_address, m.rtp_port_min, m.rtp_port_max, true)
        .await
        .map_err(|_| 503u16)?;
    let local = rtp.local_addr().ok();
    let session_id = rand::random::<u32>() as u64;
    let offer = sdp::write(
        local.ok_or(503u16)?,
        session_id,
        &OFFER,
        Some(TELEPHONE_EVENT_PT),
        false,
    );
    let (target, ring_ms, options): (String, u64, Attempts) = match &plan {
        Plan::Extensions {
            numbers, ring_ms, ..
        } => {
            let n = numbers.first().cloned().unwrap_or_default();
            let opts = ctx
                .registrar
                .contacts_of(&n)
                .iter()
                .map(|b| {
                    let (text, profile) = keyed_offer(&ctx, &offer, b.transport == "tls");
                    (
                        b.contact.clone(),
                        invite_option(&ctx, &caller_user, b, &text),
                        profile,
                    )
                })
                .collect();
            (n, *ring_ms, opts)
        }
        Plan::Out { trunk, number, cli } => {
            let tls = trunk.transport == crate::config::TrunkTransport::Tls;
            let (text, profile) = keyed_offer(&ctx, &offer, tls);
            (
                number.clone(),
                OUT_RING_MS,
                vec![(
                    format!("trunk {}", trunk.name),
                    trunk_invite(&ctx, trunk, number, cli, &text, None, None).await,
                    profile,
                )],
            )
        }
    };
    if options.is_empty() {
        return Err(480);
    }
    let started_at = now_ms();
    let mut pending: JoinSet<(usize, InviteAsyncResult)> = JoinSet::new();
    let mut dialogs_of: Vec<(String, Option<InviteDialog>)> = Vec::new();
    let mut profiles = Vec::new();
    for (i, (contact, o, profile)) in options.into_iter().enumerate() {
        profiles.push(profile);
        match o.and_then(|o| {
            dialogs
                .do_invite_async(o, states.clone())
                .map_err(|e| e.to_string())
        }) {
            Ok((d, h)) => {
                dialogs_of.push((contact, Some(d)));
                pending.spawn(async move { (i, joined(h.await)) });
            }
            Err(_) => dialogs_of.push((contact, None)),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ring_ms);
    let mut last = 480u16;
    let mut auth_tried = false;
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
            n = tokio::time::timeout_at(deadline, pending.join_next()) => n,
        };
        let Ok(Some(Ok((i, r)))) = next else { break };
        match r {
            Ok((id, Some(resp)))
                if resp.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful =>
            {
                // The others are cancelled (or hung up if they answered too).
                for (j, (_, d)) in dialogs_of.iter().enumerate() {
                    if j != i
                        && let Some(d) = d.clone()
                    {
                        tokio::spawn(async move {
                            let _ = d.hangup().await;
                        });
                    }
                }
                let (contact, d) = dialogs_of.swap_remove(i);
                return Ok(Placed {
                    srtp: profiles[i].clone(),
                    dialog: d.ok_or(503u16)?,
                    answer: String::from_utf8_lossy(resp.body()).to_string(),
                    call_id: id.call_id.clone(),
                    target,
                    contact,
                    started_at,
                    answered_at: now_ms(),
                    sockets: leg::Sockets { rtp, rtcp },
                    local,
                    session_id,
                });
            }
            Ok((id, Some(resp))) if matches!(resp.status_code.code(), 401 | 407) && !auth_tried => {
                auth_tried = true;
                let text = match &profiles[i] {
                    Some((key, p)) => sdp::keyed(&offer, *p, key),
                    None => offer.clone(),
                };
                if let Plan::Out { trunk, number, cli } = &plan
                    && let Ok(o) = trunk_invite(
                        &ctx,
                        trunk,
                        number,
                        cli,
                        &text,
                        Some(&resp),
                        Some(id.call_id.clone()),
                    )
                    .await
                    && let Ok((d, h)) = dialogs.do_invite_async(o, states.clone())
                {
                    dialogs_of[i].1 = Some(d);
                    pending.spawn(async move { (i, joined(h.await)) });
                } else {
                    last = 503;
                }
            }
            Ok((_, Some(resp))) => last = resp.status_code.code(),
            _ => {}
        }
        if pending.is_empty() {
            break;
        }
    }
    for (_, d) in dialogs_of.into_iter() {
        if let Some(d) = d {
            tokio::spawn(async move {
                let _ = d.hangup().await;
            });
        }
    }
    Err(last)
}

/// Every leg's events, tagged with its side.
type LegEventsTx = mpsc::UnboundedSender<(Channel, LegEvent)>;
type LegEventsRx = mpsc::UnboundedReceiver<(Channel, LegEvent)>;

/// A leg's task and how to steer it.
pub(super) struct Running {
    pub control: mpsc::UnboundedSender<Control>,
    pub cancel: CancellationToken,
    pub task: tokio::task::JoinHandle<(LegEnd, LegStats, ShellStats)>,
    /// Shared with the task while it runs.
    pub sockets: Arc<leg::Sockets>,
}

fn start_leg(
    sockets: leg::Sockets,
    leg: RtpLeg,
    sink: Box<dyn crate::media::sink::FrameSink>,
    events: LegEventsTx,
    channel: Channel,
) -> Running {
    let (control, control_rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let sockets = Arc::new(sockets);
    let task = tokio::spawn({
        let cancel = cancel.clone();
        let sockets = sockets.clone();
        async move {
            let mut on_event = move |e: LegEvent| {
                let _ = events.send((channel, e));
            };
            leg::run(
                &sockets,
                leg,
                tokio::time::Instant::now(),
                sink,
                control_rx,
                &mut on_event,
                cancel,
            )
            .await
        }
    });
    Running {
        control,
        cancel,
        task,
        sockets,
    }
}

impl Running {
    /// Stop the leg and have its sockets back (a ringing call the agent
    /// answers after all).
    async fn stop(self) -> Option<leg::Sockets> {
        self.cancel.cancel();
        let _ = self.task.await;
        Arc::try_unwrap(self.sockets).ok()
    }
}

/// The phone answered but the call cannot be bridged: it is hung up, the
/// caller refused (503) and the call ended for `reason`.
async fn abandon(
    ctx: &CallCtx,
    (dialogs, server, ringing): (&DialogLayer, &InviteDialog, Option<&Running>),
    dialog: &InviteDialog,
    (call_id, answered): (&str, bool),
    reason: EndReason,
) {
    // The caller's ringback stops with the call.
    if let Some(r) = ringing {
        r.cancel.cancel();
    }
    let _ = dialog.bye().await;
    dialogs.remove_dialog(&dialog.id());
    ctx.store.end_call(call_id, now_ms(), reason.as_str());
    if answered {
        // Its own tap completes the transcript when its leg ends.
        let _ = server.bye().await;
    } else {
        let _ = server.reject(Some(StatusCode::ServiceUnavailable), None);
        ctx.store.transcript_complete(call_id);
    }
}

/// The leg that plays a target's early media (its 183's SDP) to the
/// caller while it rings: it hears the target, never sends to it. The
/// sockets come back when the answer cannot be used.
fn early_media(
    ctx: &CallCtx,
    caller: &Caller<'_>,
    fork: &Fork,
    body: &[u8],
    sockets: leg::Sockets,
    ring_ms: u64,
) -> Result<EarlyMedia, leg::Sockets> {
    let Ok(desc) = AudioDescription::parse(&String::from_utf8_lossy(body)) else {
        return Err(sockets);
    };
    let Ok((pt, codec)) = desc.choose() else {
        return Err(sockets);
    };
    let Ok(keys) = crate::media::srtp::from_answer(fork.srtp.as_ref(), &desc, ctx.cfg.media.srtp)
    else {
        return Err(sockets);
    };
    let mut cfg = leg_config(ctx, codec, pt, &desc, false, keys);
    cfg.timeout_ms += ring_ms;
    let Ok(leg) = RtpLeg::new(cfg, 0) else {
        return Err(sockets);
    };
    // Its own events: it is not the answering party (its keys are not
    // the call's), and its first packet is what switches the caller over.
    let (events_tx, events) = mpsc::unbounded_channel();
    Ok(EarlyMedia {
        fork: 0,
        leg: start_leg(
            sockets,
            leg,
            Box::new(leg::Discard),
            events_tx,
            Channel::Callee,
        ),
        events,
        relay: codec == caller.codec,
        playing: false,
    })
}

/// A target's early media while the call rings.
struct EarlyMedia {
    /// Index of its fork in `forks`.
    fork: usize,
    leg: Running,
    events: LegEventsRx,
    /// Relayed packet for packet (same codec as the caller's leg).
    relay: bool,
    /// The caller hears it (its first packet came).
    playing: bool,
}

impl EarlyMedia {
    /// Stop it: its sockets back to its fork, the caller's leg unbridged
    /// and given `tone` (our ringback again) if it heard the target.
    async fn stop(
        self,
        forks: &mut [Fork],
        caller_leg: Option<&Running>,
        tone: Option<handlet_dsp::playout::ToneSpec>,
    ) {
        forks[self.fork].sockets = self.leg.stop().await;
        if self.playing
            && let Some(c) = caller_leg
        {
            let _ = c.control.send(Control::Unbridge);
            if tone.is_some() {
                let _ = c.control.send(Control::Tone(tone));
            }
        }
    }
}

/// A fork's own RTP (and RTCP) sockets and our offer on them, or None
/// when no port is free.
async fn fork_media(ctx: &CallCtx, codecs: &[(u8, Codec)]) -> Option<(leg::Sockets, String)> {
    let m = &ctx.cfg.media;
    let (rtp, rtcp) = crate::media::bind_rtp(m.rtp_address, m.rtp_port_min, m.rtp_port_max, true)
        .await
        .ok()?;
    let local = rtp.local_addr().ok()?;
    let offer = sdp::write(
        local,
        rand::random::<u32>() as u64,
        codecs,
        Some(TELEPHONE_EVENT_PT),
        false,
    );
    Some((leg::Sockets { rtp, rtcp }, offer))
}

/// The ringback callers of the site's country expect.
fn ringback(country: crate::phone::Country) -> handlet_dsp::playout::ToneSpec {
    use crate::phone::Country;
    match country {
        Country::US | Country::CA => handlet_dsp::playout::RINGBACK_US,
        _ => handlet_dsp::playout::RINGBACK_UK,
    }
}

fn leg_config(
    ctx: &CallCtx,
    codec: Codec,
    pt: u8,
    remote: &AudioDescription,
    rtcp_mux: bool,
    srtp: Option<crate::media::srtp::Keys>,
) -> RtpLegConfig {
    let m = &ctx.cfg.media;
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
        srtp,
    }
}

/// The caller and the phone that answered, bridged until one hangs up.
#[allow(clippy::too_many_arguments)]
async fn bridged(
    ctx: &Arc<CallCtx>,
    caller: &mut Caller<'_>,
    fork: &mut Fork,
    fork_states: &mut rsipstack::dialog::dialog::DialogStateReceiver,
    (ringing_leg, leg_events_tx, mut leg_events): (Option<Running>, LegEventsTx, LegEventsRx),
    (caller_user, fork_state_tx): (String, rsipstack::dialog::dialog::DialogStateSender),
    answered: Option<(crossbeam_channel::Sender<Vec<f32>>, Option<tap::Pair>)>,
) {
    let was_answered = answered.is_some();
    let call_id = caller.call_id.to_string();
    let Some(mut dialog) = fork.dialog.clone() else {
        return;
    };
    let offer = fork.offer.clone();
    // Lent to early media and not given back: cannot happen while the
    // leg's task ends when stopped, but it is no panic if it does.
    let Some(b_sockets) = fork.sockets.take() else {
        tracing::error!(call = %call_id, "the answering phone's RTP sockets are gone; it is hung up");
        abandon(
            ctx,
            (caller.dialogs, caller.server, ringing_leg.as_ref()),
            &dialog,
            (&call_id, was_answered),
            EndReason::AgentError,
        )
        .await;
        return;
    };
    let answer = fork.answer.clone().unwrap_or_default();
    let b_offered = fork.srtp.clone();
    let described = AudioDescription::parse(&answer)
        .and_then(|d| {
            let (pt, c) = d.choose()?;
            Ok((d, pt, c))
        })
        .map_err(|e| e.to_string())
        .and_then(|(d, pt, c)| {
            // Its key for our SRTP offer; refused when SRTP is required.
            let keys = crate::media::srtp::from_answer(b_offered.as_ref(), &d, ctx.cfg.media.srtp)
                .map_err(|e| e.to_string())?;
            Ok(((d, pt, c), keys))
        });
    let ((b_remote, b_pt, b_codec), b_keys) = match described {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(call = %call_id, error = %e, "the answering phone's SDP is unusable");
            fork.end("unusable answer");
            abandon(
                ctx,
                (caller.dialogs, caller.server, ringing_leg.as_ref()),
                &dialog,
                (&call_id, was_answered),
                EndReason::MediaError,
            )
            .await;
            return;
        }
    };
    // Our side of each session, for re-INVITEs (hold, refresh).
    let mut b_session = Session {
        local: b_sockets.rtp.local_addr().ok(),
        id: session_of(&offer),
        version: session_of(&offer),
        pt: b_pt,
        codec: b_codec,
        telephone_event: b_remote.telephone_event,
        rtcp_mux: false,
        srtp: b_keys.clone().zip(b_offered.as_ref().map(|(_, p)| *p)),
    };
    let mut caller_session = Session {
        local: caller.local,
        id: caller.session_id,
        version: caller.session_id,
        pt: caller.pt,
        codec: caller.codec,
        telephone_event: caller.remote.telephone_event,
        rtcp_mux: caller.rtcp_mux,
        srtp: caller.srtp.clone(),
    };
    let a_sockets = caller.sockets.take();
    if a_sockets.is_none() && ringing_leg.is_none() {
        return;
    }
    // Taps first, so no audio is missed: the caller's records the call
    // (with the phone's audio on the right) and summarises it.
    // A caller the box answered keeps its own tap (it has transcribed and
    // recorded the call from the start): the phone's side joins it.
    let (copy_tx, copy_rx, lead, other) = match answered {
        Some((copy, pair)) => (copy, None, None, pair),
        None => {
            let (copy_tx, copy_rx) = crossbeam_channel::bounded(256);
            let (lead, other) = tap::pair();
            (copy_tx, Some(copy_rx), Some(lead), Some(other))
        }
    };
    let caller_tap = lead
        .map(|lead| {
            tap::start(
                call_id.clone(),
                Channel::Caller,
                ctx.vads.clone(),
                crate::transcribe::tap_config(&ctx.cfg),
                ctx.pool.clone(),
                tap::Outputs {
                    events: None,
                    store: ctx.store.clone(),
                    after: Some(tap::AfterCall {
                        understanding: ctx.understanding.clone(),
                        caller_id: crate::understand::caller_number(
                            caller.from,
                            ctx.cfg.site.country,
                        ),
                    }),
                    record: ctx.cfg.privacy.recording.then(|| tap::RecordPlan {
                        data_dir: ctx.cfg.data_dir.clone(),
                        retention_days: ctx.retention.recording_days(),
                        announcement: None,
                        callee: copy_rx,
                    }),
                    hold: caller.hold.take(),
                    pair: Some(lead),
                },
            )
        })
        .transpose();
    let callee_tap = tap::start(
        call_id.clone(),
        Channel::Callee,
        ctx.vads.clone(),
        crate::transcribe::tap_config(&ctx.cfg),
        ctx.pool.clone(),
        tap::Outputs {
            events: None,
            store: ctx.store.clone(),
            after: None,
            record: None,
            hold: None,
            pair: other,
        },
    );
    let a_leg = RtpLeg::new(
        leg_config(
            ctx,
            caller.codec,
            caller.pt,
            caller.remote,
            caller.rtcp_mux,
            caller.srtp.as_ref().map(|(k, _)| k.clone()),
        ),
        0,
    );
    let b_leg = RtpLeg::new(
        leg_config(ctx, b_codec, b_pt, &b_remote, false, b_keys.clone()),
        0,
    );
    let (caller_tap, callee_tap, a_leg, b_leg) = match (caller_tap, callee_tap, a_leg, b_leg) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        _ => {
            tracing::error!(call = %call_id, "cannot start the bridged call's media");
            abandon(
                ctx,
                (caller.dialogs, caller.server, ringing_leg.as_ref()),
                &dialog,
                (&call_id, was_answered),
                EndReason::AgentError,
            )
            .await;
            return;
        }
    };
    // The caller's leg: already running if it played ringback (its audio
    // is kept from now on), else started now.
    let mut a = match (ringing_leg, a_sockets) {
        (Some(r), _) => {
            let _ = r
                .control
                .send(Control::Timeout(ctx.cfg.media.rtp_timeout_secs * 1000));
            let _ = r.control.send(Control::Tone(None));
            match caller_tap {
                Some(t) => {
                    let _ = r.control.send(Control::Sink(Box::new(t.sink)));
                }
                // The phone's audio is the right channel from now on, not
                // what the box sends.
                None => {
                    let _ = r.control.send(Control::Monitor(None));
                }
            }
            r
        }
        (None, Some(sockets)) => {
            let Some(t) = caller_tap else { return };
            start_leg(
                sockets,
                a_leg,
                Box::new(t.sink),
                leg_events_tx.clone(),
                Channel::Caller,
            )
        }
        (None, None) => return,
    };
    let mut b = start_leg(
        b_sockets,
        b_leg,
        Box::new(Tee {
            inner: callee_tap.sink,
            copy: copy_tx.clone(),
        }),
        leg_events_tx.clone(),
        Channel::Callee,
    );
    // The phone has our ACK: its leg sends at once. The caller's waits
    // for the caller's ACK of our 200.
    let _ = b.control.send(Control::StartSending);
    let relay = caller.codec == b_codec;
    let (to_a, to_b) = leg::bridge_pair(relay);
    let _ = a.control.send(to_a);
    let _ = b.control.send(to_b);
    let answered_at = now_ms();
    if !was_answered {
        let headers = vec![Header::ContentType("application/sdp".into())];
        if let Err(e) = caller
            .server
            .accept(Some(headers), Some(caller.answer.as_bytes().to_vec()))
        {
            tracing::warn!(call = %call_id, error = %e, "answering the caller failed");
        }
        ctx.store.answered(&call_id, answered_at);
    }
    tracing::info!(
        call = %call_id,
        from = %Pii(caller.from),
        target = %Pii(&fork.target),
        caller_codec = caller.codec.name(),
        phone_codec = b_codec.name(),
        relay,
        "call bridged"
    );
    let max_call = tokio::time::Instant::now() + Duration::from_secs(ctx.cfg.limits.max_call_secs);
    let mut b_call_id = fork.call_id.clone();
    let mut a_result = None;
    let mut b_result = None;
    // A blind transfer in progress: the new party being rung, how to stop
    // it, the NOTIFYs in flight (sent in order), and whether the
    // transferring phone has already hung up.
    let mut transfer: Option<tokio::task::JoinHandle<Result<Placed, u16>>> = None;
    let transfer_cancel = CancellationToken::new();
    let mut notifying: Option<tokio::task::JoinHandle<()>> = None;
    let mut transferor_gone = false;
    // Legs that took part after a transfer, for the call's record.
    let mut transferred: Vec<LegRow> = Vec::new();
    let reason: EndReason = loop {
        tokio::select! {
            ev = caller.events.recv() => match ev {
                Some(DialogEvent::Confirmed) => {
                    let _ = a.control.send(Control::StartSending);
                }
                Some(DialogEvent::ReInvite { request, handle }) => {
                    let other = (!transferor_gone).then_some(b_session.codec);
                    reinvite(handle, &request, (&mut caller_session, other, ctx.cfg.media.srtp), (&a, &b), &call_id, "caller").await;
                }
                Some(DialogEvent::Info { handle }) => {
                    let _ = handle.reply(StatusCode::OK).await;
                }
                Some(DialogEvent::Terminated(r)) => {
                    break match r {
                        TerminatedReason::UacBye => EndReason::CallerHungUp,
                        TerminatedReason::Timeout => EndReason::SignallingTimeout,
                        _ => EndReason::DialogEnded,
                    };
                }
                None => break EndReason::DialogEnded,
            },
            st = fork_states.recv() => match st {
                Some(DialogState::Terminated(id, _)) if id.call_id == b_call_id && transfer.is_some() => {
                    // The transferring phone hung up once its REFER was
                    // accepted (many do): the caller hears the hold tone
                    // until the new party answers.
                    caller.dialogs.remove_dialog(&id);
                    transferor_gone = true;
                    let _ = a.control.send(Control::Unbridge);
                    let _ = a.control.send(Control::Tone(Some(handlet_dsp::playout::HOLD)));
                }
                Some(DialogState::Terminated(id, r)) if id.call_id == b_call_id => {
                    caller.dialogs.remove_dialog(&id);
                    break match r {
                        TerminatedReason::UasBye => EndReason::CalleeHungUp,
                        _ => EndReason::DialogEnded,
                    };
                }
                Some(DialogState::Terminated(id, _)) => caller.dialogs.remove_dialog(&id),
                Some(DialogState::Updated(_, request, handle)) => {
                    let other = Some(caller_session.codec);
                    reinvite(handle, &request, (&mut b_session, other, ctx.cfg.media.srtp), (&b, &a), &call_id, "phone").await;
                }
                Some(DialogState::Info(_, _, handle)) | Some(DialogState::Options(_, _, handle)) => {
                    let _ = handle.reply(StatusCode::OK).await;
                }
                Some(DialogState::Refer(id, _, handle))
                    if id.call_id == b_call_id && !ctx.registrar.is_extension(&fork.target) =>
                {
                    // Only the business's own phones may transfer: a far
                    // end out through the trunk must not make the box
                    // dial anywhere it likes (toll fraud).
                    crate::limits::count(&crate::limits::COUNTERS.toll_fraud_refused, 1);
                    tracing::warn!(call = %call_id, "refused a REFER from the far end of a call out");
                    let _ = handle.reply(StatusCode::Forbidden).await;
                }
                Some(DialogState::Refer(id, request, handle)) if id.call_id == b_call_id && transfer.is_none() => {
                    // A blind transfer (RFC 3515): the phone hands the
                    // caller to another extension or number.
                    let to = request
                        .headers
                        .iter()
                        .find(|h| h.name().eq_ignore_ascii_case("Refer-To"))
                        .and_then(|h| crate::sip::registrar::user_of(h.value()).map(str::to_string));
                    let plan = to.as_deref().map(|t| super::phone_plan(ctx, &fork.target, t));
                    match plan {
                        Some(Ok(Some(plan))) => {
                            let _ = handle.reply(StatusCode::Accepted).await;
                            notifying = Some(notify_refer(&dialog, 100, "Trying", "active;expires=60", notifying.take()));
                            tracing::info!(call = %call_id, "blind transfer");
                            transfer = Some(tokio::spawn(place(
                                ctx.clone(),
                                plan,
                                caller_user.clone(),
                                caller.dialogs.clone(),
                                fork_state_tx.clone(),
                                transfer_cancel.clone(),
                            )));
                        }
                        Some(Err(code)) => {
                            let _ = handle.reply(StatusCode::from(code)).await;
                        }
                        _ => {
                            let _ = handle.reply(StatusCode::BadRequest).await;
                        }
                    }
                }
                Some(DialogState::Refer(_, _, handle))
                | Some(DialogState::Notify(_, _, handle))
                | Some(DialogState::Message(_, _, handle))
                | Some(DialogState::Publish(_, _, handle)) => {
                    let _ = handle.reply(StatusCode::NotImplemented).await;
                }
                Some(_) => {}
                None => break EndReason::DialogEnded,
            },
            r = async { transfer.as_mut().expect("guarded").await }, if transfer.is_some() => {
                transfer = None;
                match r {
                    Ok(Ok(p)) => {
                        // The new party answered: it takes the transferring
                        // phone's place. Its media is set up before anyone
                        // is told the transfer worked.
                        let setup = AudioDescription::parse(&p.answer).ok().and_then(|desc| {
                            let (pt, codec) = desc.choose().ok()?;
                            let keys = crate::media::srtp::from_answer(p.srtp.as_ref(), &desc, ctx.cfg.media.srtp).ok()?;
                            let leg = RtpLeg::new(leg_config(ctx, codec, pt, &desc, false, keys.clone()), 0).ok()?;
                            let tap = tap::start(
                                call_id.clone(),
                                Channel::Callee,
                                ctx.vads.clone(),
                                crate::transcribe::tap_config(&ctx.cfg),
                                ctx.pool.clone(),
                                tap::Outputs { events: None, store: ctx.store.clone(), after: None, record: None, hold: None, pair: None },
                            ).ok()?;
                            Some((desc, pt, codec, leg, tap, keys))
                        });
                        let Some((desc, pt, codec, leg, callee_tap, keys)) = setup else {
                            tracing::warn!(call = %call_id, "the transfer's new party cannot be bridged; it is hung up");
                            let d = p.dialog.clone();
                            let dialogs = caller.dialogs.clone();
                            tokio::spawn(async move {
                                let _ = d.bye().await;
                                dialogs.remove_dialog(&d.id());
                            });
                            notifying = Some(notify_refer(&dialog, 503, "Service Unavailable", "terminated;reason=noresource", notifying.take()));
                            if transferor_gone {
                                break EndReason::CalleeHungUp;
                            }
                            continue;
                        };
                        notifying = Some(notify_refer(&dialog, 200, "OK", "terminated;reason=noresource", notifying.take()));
                        let _ = a.control.send(Control::Unbridge);
                        b.cancel.cancel();
                        let old = std::mem::replace(&mut b, start_leg(
                            p.sockets,
                            leg,
                            Box::new(Tee { inner: callee_tap.sink, copy: copy_tx.clone() }),
                            leg_events_tx.clone(),
                            Channel::Callee,
                        ));
                        let _ = old.task.await;
                        let _ = b.control.send(Control::StartSending);
                        let (to_a, to_c) = leg::bridge_pair(caller_session.codec == codec);
                        let _ = a.control.send(Control::Hold(false));
                        let _ = a.control.send(Control::Tone(None));
                        let _ = a.control.send(to_a);
                        let _ = b.control.send(to_c);
                        transferred.push(LegRow {
                            target: fork.target.clone(),
                            contact: fork.contact.clone(),
                            started_at_ms: fork.started_at,
                            answered_at_ms: fork.answered_at,
                            ended_at_ms: now_ms(),
                            outcome: "transferred".into(),
                        });
                        fork.target = p.target;
                        fork.contact = p.contact;
                        fork.started_at = p.started_at;
                        fork.answered_at = Some(p.answered_at);
                        let old_dialog = std::mem::replace(&mut dialog, p.dialog);
                        // The transferring phone hangs up when told; if it
                        // does not, the box does, after the NOTIFY.
                        let dialogs = caller.dialogs.clone();
                        let told = notifying.take();
                        tokio::spawn(async move {
                            if let Some(t) = told {
                                let _ = t.await;
                            }
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            let _ = old_dialog.bye().await;
                            dialogs.remove_dialog(&old_dialog.id());
                        });
                        transferor_gone = false;
                        b_call_id = p.call_id;
                        b_session = Session {
                            local: p.local,
                            id: p.session_id,
                            version: p.session_id,
                            pt,
                            codec,
                            telephone_event: desc.telephone_event,
                            rtcp_mux: false,
                            srtp: keys.zip(p.srtp.as_ref().map(|(_, profile)| *profile)),
                        };
                        tracing::info!(call = %call_id, target = %Pii(&fork.target), "call transferred");
                    }
                    failed => {
                        // Failed: the caller stays with the transferring phone.
                        let code = match failed {
                            Ok(Err(code)) => code,
                            _ => 503,
                        };
                        notifying = Some(notify_refer(&dialog, code, "Transfer Failed", "terminated;reason=noresource", notifying.take()));
                        if transferor_gone {
                            // Nobody left to return the caller to.
                            tracing::info!(call = %call_id, status = code, "blind transfer failed and the transferring phone has hung up");
                            break EndReason::CalleeHungUp;
                        }
                        tracing::info!(call = %call_id, status = code, "blind transfer failed; the caller stays");
                    }
                }
            },
            cmd = caller.commands.recv() => {
                let _ = cmd;
                break EndReason::AgentShutdown;
            },
            Some((channel, ev)) = leg_events.recv() => {
                if let LegEvent::Digit { key, at_ms, how } = ev {
                    let who = if channel == Channel::Caller { "caller" } else { "phone" };
                    tracing::info!(call = %call_id, who, how = how.as_str(), "key pressed");
                    ctx.store.add_event(&call_id, at_ms as i64, crate::store::EventKind::Dtmf, format!("{key} ({}, {who})", how.as_str()));
                }
            },
            r = &mut a.task, if a_result.is_none() => {
                a_result = Some(r.unwrap_or((LegEnd::SocketError, LegStats::default(), ShellStats::default())));
                break match a_result.as_ref().map(|r| r.0) {
                    Some(LegEnd::Timeout) => EndReason::RtpTimeout,
                    _ => EndReason::MediaError,
                };
            },
            r = &mut b.task, if b_result.is_none() => {
                b_result = Some(r.unwrap_or((LegEnd::SocketError, LegStats::default(), ShellStats::default())));
                break match b_result.as_ref().map(|r| r.0) {
                    Some(LegEnd::Timeout) => EndReason::RtpTimeout,
                    _ => EndReason::MediaError,
                };
            },
            _ = tokio::time::sleep_until(max_call) => break EndReason::MaxDuration,
        }
    };
    // Media stops at once; whoever did not hang up is told, both at the
    // same time (a BYE to a side that vanished waits out its timer).
    a.cancel.cancel();
    b.cancel.cancel();
    let bye_a = async {
        if reason != EndReason::CallerHungUp {
            let _ = caller.server.bye().await;
        }
    };
    let bye_b = async {
        if reason != EndReason::CalleeHungUp {
            let _ = dialog.bye().await;
        }
    };
    let _ =
        tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(bye_a, bye_b) }).await;
    // Ours to forget (rsipstack keeps a confirmed client dialog until
    // told), with any other fork's that ends meanwhile.
    caller.dialogs.remove_dialog(&dialog.id());
    while let Ok(Some(st)) =
        tokio::time::timeout(Duration::from_millis(200), fork_states.recv()).await
    {
        if let DialogState::Terminated(id, _) = st {
            caller.dialogs.remove_dialog(&id);
        }
    }
    let a_result = match a_result {
        Some(r) => r,
        None => a.task.await.unwrap_or((
            LegEnd::SocketError,
            LegStats::default(),
            ShellStats::default(),
        )),
    };
    let b_result = match b_result {
        Some(r) => r,
        None => b.task.await.unwrap_or((
            LegEnd::SocketError,
            LegStats::default(),
            ShellStats::default(),
        )),
    };
    let ended_at = now_ms();
    fork.end("answered");
    fork.ended = Some((ended_at, "answered".into()));
    if let Some(t) = transfer.take() {
        // Ringing someone for a call that has ended: they are cancelled.
        transfer_cancel.cancel();
        if let Ok(Ok(Ok(p))) = tokio::time::timeout(Duration::from_secs(3), t).await {
            let _ = p.dialog.bye().await;
            caller.dialogs.remove_dialog(&p.dialog.id());
        }
    }
    if !transferred.is_empty() {
        ctx.store.add_legs(&call_id, transferred);
    }
    ctx.store.end_call(&call_id, ended_at, reason.as_str());
    super::store_media(ctx, &call_id, &a_result.1);
    tracing::info!(
        call = %call_id,
        reason = reason.as_str(),
        duration_ms = ended_at - answered_at,
        caller_packets = a_result.1.packets,
        phone_packets = b_result.1.packets,
        bridge_dropped = a_result.2.bridge_dropped + b_result.2.bridge_dropped,
        "bridged call ended"
    );
}
