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
            eot: self.ctx.token_eot(),
        })
    }
}

/// How to run one transcription.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Size whisper's encoder window to the audio instead of the fixed 30 s.
    /// The encoder dominates the cost, so a 3 s utterance runs ~5x faster.
    pub sized_ctx: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { sized_ctx: true }
    }
}

/// Encoder frames per second of audio (1500 per 30 s window).
const CTX_PER_SEC: usize = 50;

/// The encoder context for `samples` of audio: the audio's frames plus a
/// margin, rounded up to a multiple of 64 and never below 384 (shorter
/// windows make tiny.en stumble on the first words), capped at the full 1500.
pub fn audio_ctx_for(samples: usize) -> i32 {
    let frames = samples * CTX_PER_SEC / SAMPLE_RATE as usize + 64;
    let rounded = frames.div_ceil(64) * 64;
    rounded.clamp(384, 1500) as i32
}

/// Tokens whisper may decode per second of audio, and on top of that for
/// any utterance (see [`max_tokens_for`]).
const TOKENS_PER_SEC: usize = 8;
const TOKENS_BASE: usize = 16;

/// The most tokens (text, punctuation and timestamps) whisper may decode for
/// `samples` of audio.
///
/// Without a bound, greedy decoding that falls into a loop ("5, 5, 5, ...")
/// runs on to whisper.cpp's own cap of 220 tokens per 30 s window whatever
/// the audio's length: a 1.3 s "five, five" on the phone path took 3.3 s of
/// compute (0.7 s bounded; 0.4 s for a clean decode that long) and came out
/// as one segment timed to the window's end.
///
/// Fast speech is ~4 words a second at ~1.3 tokens a word, plus punctuation
/// and a pair of timestamps every few seconds: espeak-ng at 240 words a
/// minute decodes to 6-6.5 tokens a second, digit strings to ~4. 8 a second
/// is 6 words a second at 1.3 tokens a word, the rate above which
/// [`crate::guard`] calls text invented anyway, and the constant covers the
/// initial timestamp, a short utterance's punctuation and closing timestamps.
/// The bound is whisper.cpp's `max_tokens`, which counts per decoding pass
/// (one seek through the window), not per output segment. A pass cut by it
/// keeps its text up to its last timestamp and whisper decodes the rest of
/// the audio from there in a new pass (it times speech every few seconds),
/// so a bound too tight for some speech costs an extra pass, not words; a
/// loop emits no timestamps, so the decode ends at the bound.
pub fn max_tokens_for(samples: usize) -> usize {
    (samples * TOKENS_PER_SEC).div_ceil(SAMPLE_RATE as usize) + TOKENS_BASE
}

/// One transcription and what whisper decoded to produce it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// The segments kept, as [`SttWorker::transcribe_with`] returns them.
    pub segments: Vec<Segment>,
    /// Every segment whisper returned, its text as decoded, before
    /// [`crate::guard`] drops or cleans it.
    pub decoded: Vec<Segment>,
    /// Tokens in the decoded segments: text, punctuation and timestamps
    /// (a pass whisper.cpp itself drops as no speech is not counted).
    pub tokens: usize,
    /// Of those, text and punctuation tokens (no timestamps).
    pub text_tokens: usize,
    /// The bound on tokens decoded per pass this ran with (0: none).
    pub max_tokens: usize,
}

/// Per-worker decoding state.
pub struct SttWorker {
    state: WhisperState,
    /// Ids at or above this are special tokens.
    eot: i32,
}

impl SttWorker {
    /// Transcribe 16 kHz mono samples in [-1, 1] with the default options.
    pub fn transcribe(&mut self, samples: &[f32]) -> Result<Vec<Segment>, Error> {
        self.transcribe_with(samples, Options::default())
    }

    /// Transcribe 16 kHz mono samples in [-1, 1]. Text whisper is known to
    /// invent on silence and noise is dropped, and repeated-phrase loops are
    /// collapsed (see [`crate::guard`]).
    pub fn transcribe_with(
        &mut self,
        samples: &[f32],
        opts: Options,
    ) -> Result<Vec<Segment>, Error> {
        Ok(self.transcribe_detailed(samples, opts, None)?.segments)
    }

    /// [`Self::transcribe_with`], also returning what whisper decoded.
    /// `max_tokens` bounds the tokens decoded: `None` by the audio's length
    /// ([`max_tokens_for`], what [`Self::transcribe_with`] does), `Some(0)`
    /// not at all (whisper.cpp's own 220 per pass), `Some(n)` to n.
    pub fn transcribe_detailed(
        &mut self,
        samples: &[f32],
        opts: Options,
        max_tokens: Option<usize>,
    ) -> Result<Transcript, Error> {
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
        // No temperature fallback: when greedy decoding looks unsure or loops,
        // whisper.cpp would otherwise re-decode up to five more times at
        // higher temperatures, turning a 0.4 s decode into several seconds
        // and stalling every other call's text behind it. The guard below
        // deals with loops; a live box needs bounded time per utterance.
        p.set_temperature_inc(0.0);
        p.set_suppress_nst(true);
        p.set_print_special(false);
        p.set_print_progress(false);
        p.set_print_realtime(false);
        p.set_print_timestamps(false);
        if opts.sized_ctx {
            p.set_audio_ctx(audio_ctx_for(audio.len()));
        }
        let max_tokens = max_tokens.unwrap_or_else(|| max_tokens_for(audio.len()));
        p.set_max_tokens(max_tokens.min(i32::MAX as usize) as i32);
        self.state.full(p, audio)?;
        let mut out = Vec::new();
        let mut decoded = Vec::new();
        let (mut tokens, mut text_tokens) = (0, 0);
        let secs = audio.len() as f32 / SAMPLE_RATE as f32;
        // Whisper's times can run past the audio: a segment it did not close
        // with a timestamp (a loop cut by the bound) ends at the window's end,
        // and tiny.en often rounds an end up to a whole second. Nothing was
        // said after the audio.
        let audio_ms = (samples.len() as u64 * 1000).div_ceil(SAMPLE_RATE as u64);
        for seg in self.state.as_iter() {
            let raw = seg.to_str_lossy()?;
            let start_ms = (seg.start_timestamp().max(0) as u64 * 10).min(audio_ms);
            let end_ms = (seg.end_timestamp().max(0) as u64 * 10).min(audio_ms);
            decoded.push(Segment {
                start_ms,
                end_ms,
                text: raw.to_string(),
            });
            let n = seg.n_tokens();
            tokens += n.max(0) as usize;
            let mut prob_sum = 0.0f32;
            let mut counted = 0u32;
            for i in 0..n {
                if let Some(t) = seg.get_token(i) {
                    // Special tokens (timestamps, end of text) say nothing
                    // about how sure whisper is of the words.
                    if t.token_id() < self.eot {
                        prob_sum += t.token_probability();
                        counted += 1;
                    }
                }
            }
            text_tokens += counted as usize;
            let confidence = if counted > 0 {
                prob_sum / counted as f32
            } else {
                0.0
            };
            let heard = crate::guard::Heard {
                text: &raw,
                no_speech: seg.no_speech_probability(),
                confidence,
            };
            let Some(text) = crate::guard::accept(&heard, secs) else {
                continue;
            };
            out.push(Segment {
                start_ms,
                end_ms,
                text,
            });
        }
        Ok(Transcript {
            segments: out,
            decoded,
            tokens,
            text_tokens,
            max_tokens,
        })
    }
}
