//! One listener per call leg, on its own std thread: 16 kHz audio in, Silero
//! VAD and the end-pointer split it into utterances, the inference pool
//! transcribes them, and the segments go to the store with offsets from the
//! start of the call.

use crate::inference::{Job, Pool};
use crate::store::{SegmentRow, Store};
use handlet_models::endpoint::{EndpointConfig, Endpointer, Utterance};
use handlet_models::vad::{FRAME, Vad};
use std::path::Path;
use std::sync::mpsc;

pub enum Msg {
    /// 16 kHz mono audio, in order.
    Audio(Vec<f32>),
    /// The leg ended: flush, wait for transcripts, mark complete.
    End,
    /// A transcription came back.
    Done(Result<Vec<handlet_models::stt::Segment>, String>),
}

pub struct ListenerHandle {
    pub tx: mpsc::SyncSender<Msg>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Start a listener for `channel` ("caller") of call `call_id`.
pub fn start(
    call_id: String,
    channel: &'static str,
    vad_model: &Path,
    cfg: EndpointConfig,
    pool: Pool,
    store: Store,
) -> Result<ListenerHandle, crate::Error> {
    let vad = Vad::load(vad_model)?;
    // ~10 s of 20 ms frames; the media task drops (and counts) beyond that.
    let (tx, rx) = mpsc::sync_channel::<Msg>(512);
    let back = tx.clone();
    let thread = std::thread::Builder::new()
        .name("listener".into())
        .spawn(move || run(call_id, channel, vad, cfg, pool, store, rx, back))
        .map_err(|e| crate::Error::Io(e.to_string()))?;
    Ok(ListenerHandle { tx, thread })
}

#[allow(clippy::too_many_arguments)]
fn run(
    call_id: String,
    channel: &'static str,
    mut vad: Vad,
    cfg: EndpointConfig,
    pool: Pool,
    store: Store,
    rx: mpsc::Receiver<Msg>,
    back: mpsc::SyncSender<Msg>,
) {
    let mut ep = Endpointer::new(cfg);
    let mut buf: Vec<f32> = Vec::with_capacity(FRAME * 4);
    let mut outstanding = 0u64;
    let mut ended = false;
    let submit = |u: Utterance, outstanding: &mut u64| {
        let back = back.clone();
        let offset = u.start_ms;
        let job = Job {
            samples: u.samples,
            reply: Box::new(move |r| {
                let r = r.map(|segs| {
                    segs.into_iter()
                        .map(|mut s| {
                            s.start_ms += offset;
                            s.end_ms += offset;
                            s
                        })
                        .collect()
                });
                // Blocking is fine: this runs on a whisper worker thread.
                let _ = back.send(Msg::Done(r));
            }),
        };
        if pool.submit_blocking(job).is_ok() {
            *outstanding += 1;
        }
    };
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Audio(samples) if !ended => {
                buf.extend_from_slice(&samples);
                let mut used = 0;
                while buf.len() - used >= FRAME {
                    let frame = &buf[used..used + FRAME];
                    used += FRAME;
                    let p = match vad.process(frame) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(error = %e, "VAD failed on a frame");
                            0.0
                        }
                    };
                    if let Some(u) = ep.push(frame, p) {
                        submit(u, &mut outstanding);
                    }
                }
                buf.drain(..used);
            }
            Msg::Audio(_) => {}
            Msg::End => {
                if !ended {
                    ended = true;
                    if !buf.is_empty() {
                        buf.resize(FRAME, 0.0);
                        let p = vad.process(&buf).unwrap_or(0.0);
                        if let Some(u) = ep.push(&buf, p) {
                            submit(u, &mut outstanding);
                        }
                    }
                    if let Some(u) = ep.flush() {
                        submit(u, &mut outstanding);
                    }
                }
            }
            Msg::Done(r) => {
                outstanding = outstanding.saturating_sub(1);
                match r {
                    Ok(segs) => {
                        for s in segs {
                            tracing::debug!(call = %call_id, start_ms = s.start_ms, "transcript segment");
                            store.add_segment(
                                &call_id,
                                SegmentRow {
                                    channel: channel.into(),
                                    start_ms: s.start_ms as i64,
                                    end_ms: s.end_ms as i64,
                                    text: s.text,
                                },
                            );
                        }
                    }
                    Err(e) => tracing::warn!(call = %call_id, error = %e, "transcription failed"),
                }
            }
        }
        if ended && outstanding == 0 {
            store.transcript_complete(&call_id);
            tracing::info!(call = %call_id, "transcript complete");
            return;
        }
    }
}
