//! `handlet call`: a small SIP user agent that calls the agent, plays a WAV as
//! the caller's voice over PCMU, hangs up, and reads back the transcript the
//! agent stored.

use crate::Error;
use crate::media::{self, rtp, sdp};
use crate::store::{Reader, SegmentRow};
use handlet_dsp::g711::Law;
use handlet_dsp::resample::Resampler;
use rsipstack::EndpointBuilder;
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::transport::TransportLayer;
use rsipstack::transport::udp::UdpConnection;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct CallOptions<'a> {
    pub wav: &'a Path,
    pub to: String,
    /// Where the agent's database is, to read the transcript back.
    pub database: Option<&'a Path>,
    pub wait: Duration,
    /// Keys to press after the WAV, sent as RFC 4733 telephone-events.
    pub digits: String,
    /// The caller's user part (a number such as `+447700900123`); defaults
    /// to `handlet-cli`.
    pub from: Option<String>,
    /// Write what the agent sent back (8 kHz mono WAV): its announcement.
    pub hear: Option<&'a Path>,
}

pub struct CallOutcome {
    pub sip_call_id: String,
    pub call_id: Option<String>,
    pub segments: Vec<SegmentRow>,
    /// (summary, intent, urgency, follow-up) once the agent has written it.
    pub summary: Option<(String, String, String, String)>,
}

fn target_ip(uri: &str) -> IpAddr {
    uri.split('@')
        .nth(1)
        .or_else(|| uri.strip_prefix("sip:"))
        .and_then(|h| h.split([':', ';', '>']).next())
        .and_then(|h| h.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

pub async fn place_call(opts: CallOptions<'_>) -> Result<CallOutcome, Error> {
    let audio = handlet_dsp::wav::read(opts.wav)?;
    let pcm8k = Resampler::clip(&audio.samples, audio.rate, 8000)?;
    let remote_ip = target_ip(&opts.to);
    let local_ip = if remote_ip.is_loopback() {
        remote_ip
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };

    let cancel = CancellationToken::new();
    let layer = TransportLayer::new(cancel.clone());
    let conn = UdpConnection::create_connection(
        SocketAddr::new(local_ip, 0),
        None,
        Some(cancel.child_token()),
    )
    .await?;
    let sip_local = conn.get_addr().clone();
    layer.add_transport(conn.into());
    let endpoint = EndpointBuilder::new()
        .with_cancel_token(cancel.clone())
        .with_transport_layer(layer)
        .build();
    let ep = endpoint.inner.clone();
    let serve = tokio::spawn(async move { ep.serve().await });
    let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
    let (state_tx, mut state_rx) = dialogs.new_dialog_state_channel();
    // Requests from the agent inside our dialog (its BYE, re-INVITE) go to the dialog.
    let mut incoming = endpoint.incoming_transactions()?;
    let in_dialogs = dialogs.clone();
    let requests = tokio::spawn(async move {
        while let Some(mut tx) = incoming.recv().await {
            match in_dialogs.match_dialog(&tx) {
                Some(mut d) => {
                    tokio::spawn(async move {
                        let _ = d.handle(&mut tx).await;
                    });
                }
                None => {
                    let _ = tx
                        .reply(rsipstack::sip::StatusCode::CallTransactionDoesNotExist)
                        .await;
                }
            }
        }
    });

    let rtp_sock = Arc::new(media::bind_rtp(local_ip, 30000, 39999, false).await?.0);
    let rtp_local = rtp_sock
        .local_addr()
        .map_err(|e| Error::Io(e.to_string()))?;
    let offer = sdp::write(
        rtp_local,
        1,
        &[(0, sdp::Codec::Pcmu), (8, sdp::Codec::Pcma)],
        Some(sdp::TELEPHONE_EVENT_PT),
        false,
    );
    let me = format!(
        "sip:{}@{}",
        opts.from.as_deref().unwrap_or("handlet-cli"),
        sip_local.addr
    );
    let parse_uri = |s: &str| {
        rsipstack::sip::Uri::try_from(s).map_err(|e| Error::Call(format!("bad SIP URI {s}: {e}")))
    };
    let opt = InviteOption {
        caller: parse_uri(&me)?,
        callee: parse_uri(&opts.to)?,
        contact: parse_uri(&me)?,
        content_type: Some("application/sdp".into()),
        offer: Some(offer.into_bytes()),
        ..Default::default()
    };
    let (dialog, resp) =
        tokio::time::timeout(Duration::from_secs(15), dialogs.do_invite(opt, state_tx))
            .await
            .map_err(|_| Error::Call(format!("no answer from {} within 15 s", opts.to)))??;
    let resp = resp.ok_or_else(|| Error::Call("INVITE got no final response".into()))?;
    if resp.status_code.kind() != rsipstack::sip::StatusCodeKind::Successful {
        return Err(Error::Call(format!("call refused: {}", resp.status_code)));
    }
    let sip_call_id = dialog.id().call_id.clone();
    let answer = sdp::AudioDescription::parse(&String::from_utf8_lossy(resp.body()))
        .map_err(|e| Error::Call(format!("agent's SDP answer: {e}")))?;
    let (pt, codec) = answer.choose().map_err(|e| Error::Call(e.to_string()))?;
    let law = if codec == sdp::Codec::Pcma {
        Law::A
    } else {
        Law::Mu
    };

    // The WAV, 20 ms per packet, then each digit as RFC 4733 events (100 ms
    // key, 60 ms gap), then half a second of silence.
    let mut samples: Vec<i16> = pcm8k.iter().map(|&s| handlet_dsp::wav::to_i16(s)).collect();
    samples.resize(samples.len().div_ceil(160) * 160, 0);
    let mut packets: Vec<(u8, u32, Vec<u8>)> = Vec::new();
    let mut ts: u32 = 0;
    let audio = |frame: &[i16]| {
        let mut p = vec![0u8; frame.len()];
        law.encode_into(frame, &mut p);
        p
    };
    for frame in samples.chunks(160) {
        packets.push((pt, ts, audio(frame)));
        ts = ts.wrapping_add(160);
    }
    if !opts.digits.is_empty() {
        let te = answer
            .telephone_event
            .ok_or_else(|| Error::Call("the agent did not accept telephone-event".into()))?;
        for d in opts.digits.chars() {
            let events = handlet_dsp::telephone_event::generate(d, 800, 160, 10);
            if events.is_empty() {
                return Err(Error::Call(format!(
                    "{d:?} is not a DTMF key (0-9, *, #, A-D)"
                )));
            }
            for (_, e) in &events {
                packets.push((te, ts, e.to_vec()));
            }
            ts = ts.wrapping_add(160 * events.len() as u32);
            for _ in 0..3 {
                packets.push((pt, ts, audio(&[0; 160])));
                ts = ts.wrapping_add(160);
            }
        }
    }
    for _ in 0..25 {
        packets.push((pt, ts, audio(&[0; 160])));
        ts = ts.wrapping_add(160);
    }
    // What the agent sends, in arrival order (loopback does not reorder).
    let heard = Arc::new(std::sync::Mutex::new(Vec::<i16>::new()));
    let listen = opts.hear.map(|_| {
        let (sock, heard) = (rtp_sock.clone(), heard.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut pcm = [0i16; 2048];
            while let Ok(n) = sock.recv(&mut buf).await {
                if let Ok((h, payload)) = rtp::parse(&buf[..n])
                    && h.payload_type == pt
                {
                    let k = law.decode_into(payload, &mut pcm);
                    heard.lock().unwrap().extend_from_slice(&pcm[..k]);
                }
            }
        })
    });
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut pkt = Vec::with_capacity(172);
    let ssrc: u32 = rand::random();
    let mut agent_hung_up = false;
    let mut last_pt = None;
    for (i, (payload_type, timestamp, payload)) in packets.iter().enumerate() {
        tick.tick().await;
        while let Ok(state) = state_rx.try_recv() {
            if matches!(
                state,
                rsipstack::dialog::dialog::DialogState::Terminated(..)
            ) {
                agent_hung_up = true;
            }
        }
        if agent_hung_up {
            break;
        }
        // Marker on the first packet of the stream and of each event.
        let marker = i == 0 || (last_pt != Some(*payload_type) && *payload_type != pt);
        last_pt = Some(*payload_type);
        let h = rtp::Header {
            marker,
            payload_type: *payload_type,
            sequence: i as u16,
            timestamp: *timestamp,
            ssrc,
        };
        rtp::write(&h, payload, &mut pkt);
        rtp_sock
            .send_to(&pkt, answer.remote)
            .await
            .map_err(|e| Error::Io(format!("sending RTP: {e}")))?;
    }
    if agent_hung_up {
        tracing::info!("the agent hung up");
    } else {
        dialog.bye().await?;
    }
    if let (Some(path), Some(task)) = (opts.hear, listen) {
        task.abort();
        let pcm = std::mem::take(&mut *heard.lock().unwrap());
        handlet_dsp::wav::write_interleaved(path, 8000, 1, &pcm)
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    }

    let mut outcome = CallOutcome {
        sip_call_id: sip_call_id.clone(),
        call_id: None,
        segments: Vec::new(),
        summary: None,
    };
    if let Some(db) = opts.database {
        let deadline = tokio::time::Instant::now() + opts.wait;
        loop {
            if let Ok(r) = Reader::open(db)
                && let Some(id) = r.call_by_sip_id(&sip_call_id)?
                && let Some(call) = r.call(&id)?
                && call.transcript_complete
            {
                outcome.segments = r.segments(&id)?;
                outcome.summary = r.summary(&id)?;
                outcome.call_id = Some(id);
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Call(format!(
                    "the agent did not finish the transcript within {} s",
                    opts.wait.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    cancel.cancel();
    serve.abort();
    requests.abort();
    Ok(outcome)
}
