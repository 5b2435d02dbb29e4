//! Speech-to-text on whisper.cpp (whisper-rs).
//!
//! One [`Stt`] holds the model weights and is shared by every worker; each
//! worker owns one [`SttWorker`] (a whisper state with its own buffers). Workers
//! run with one thread each: ggml's spinning barriers collapse when a second
//! thread loses its core on a 2-core box.

use crate::Error;
use std::path::Path;
use std::sync::Arc;
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

/// Whisper's input rate.
pub const SAMPLE_RATE: u32 = 16_000;

/// Whisper's window is 30 s; longer utterances are split by the caller.
pub const MAX_SAMPLES: usize = 30 * SAMPLE_RATE as usize;

/// A timed piece of transcript, offsets relative to the audio given.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
}

/// Loaded weights; cheap to clone.
#[derive(Clone)]
pub struct Stt {
    ctx: Arc<WhisperContext>,
}

impl Stt {
    pub fn load(path: &Path) -> Result<Self, Error> {
        whisper_rs::install_logging_hooks();
        let mut params = WhisperContextParameters::default();
        params.use_gpu(false);
        let ctx = WhisperContext::new_with_params(path, params)?;
        Ok(Stt { ctx: Arc::new(ctx) })
    }

    pub fn worker(&self) -> Result<SttWorker, Error> {
        Ok(SttWorker {
            state: self.ctx.create_state()?,
        })
    }
}

/// Per-worker decoding state.
pub struct SttWorker {
    state: WhisperState,
}

impl SttWorker {
    /// Transcribe 16 kHz mono samples in [-1, 1].
    pub fn transcribe(&mut self, samples: &[f32]) -> Result<Vec<Segment>, Error> {
        if samples.len() > MAX_SAMPLES {
            return Err(Error::TooLong(samples.len(), MAX_SAMPLES));
        }
        // whisper.cpp refuses audio shorter than ~1 s; pad with silence.
        let min = SAMPLE_RATE as usize + SAMPLE_RATE as usize / 10;
        let padded;
        let audio = if samples.len() < min {
            let mut v = samples.to_vec();
            v.resize(min, 0.0);
            padded = v;
            &padded[..]
        } else {
            samples
        };
        let mut p = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        p.set_n_threads(1);
        p.set_language(Some("en"));
        p.set_translate(false);
        // Each utterance stands alone: carrying text over between utterances is
        // how whisper starts repeating itself on long calls.
        p.set_no_context(true);
        p.set_suppress_blank(true);
        p.set_suppress_nst(true);
        p.set_print_special(false);
        p.set_print_progress(false);
        p.set_print_realtime(false);
        p.set_print_timestamps(false);
        self.state.full(p, audio)?;
        let mut out = Vec::new();
        for seg in self.state.as_iter() {
            let text = seg.to_str_lossy()?.trim().to_string();
            // Segments whisper itself considers non-speech are dropped here;
            // the VAD upstream already keeps most silence away.
            if text.is_empty() || seg.no_speech_probability() > 0.8 {
                continue;
            }
            out.push(Segment {
                start_ms: seg.start_timestamp().max(0) as u64 * 10,
                end_ms: seg.end_timestamp().max(0) as u64 * 10,
                text,
            });
        }
        Ok(out)
    }
}
