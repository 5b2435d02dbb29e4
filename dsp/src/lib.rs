//! Pure audio for Handlet Edge: codecs, resampling, jitter buffering, WAV I/O.
//! No I/O beyond WAV files, no async, no allocation per frame on the hot path.
#![forbid(unsafe_code)]

pub mod dtmf;
pub mod g711;
pub mod g722;
pub mod gate;
pub mod jitter;
pub mod opus;
pub mod playout;
pub mod plc;
pub mod resample;
pub mod stereo;
pub mod telephone_event;
pub mod wav;

/// Errors from the dsp crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("resampler: {0}")]
    Resample(String),
    #[error("codec: {0}")]
    Codec(String),
    #[error("unsupported audio: {0}")]
    Unsupported(String),
    #[error("wav: {0}")]
    Wav(#[from] hound::Error),
}
