//! Speech models for Handlet Edge: provisioning (pinned files, the CTranslate2 →
//! ggml converter), speech-to-text on whisper.cpp, and Silero voice activity
//! detection on ONNX Runtime, plus the sans-IO end-pointer that turns VAD
//! probabilities into utterances, and text-to-speech with Piper voices.

pub mod convert;
pub mod ct2;
pub mod embed;
pub mod endpoint;
pub mod entities;
pub mod guard;
pub mod intent;
pub mod manifest;
pub mod mel;
pub mod stt;
pub mod summary;
pub mod tts;
pub mod vad;
pub mod wordpiece;

use std::path::PathBuf;

/// Errors from the models crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("model file {path} is missing; provision the models with `{fix}`")]
    Missing { path: PathBuf, fix: &'static str },
    #[error(
        "model file {path} is corrupt (sha256 {actual}, expected {expected}); re-provision with `{fix}`"
    )]
    Corrupt {
        path: PathBuf,
        actual: String,
        expected: String,
        fix: &'static str,
    },
    #[error("model format: {0}")]
    Format(String),
    #[error("whisper: {0}")]
    Whisper(String),
    #[error("onnx runtime: {0}")]
    Onnx(String),
    #[error("audio too long: {0} samples (limit {1})")]
    TooLong(usize, usize),
    #[error("text too long to speak: {0} characters (limit {1})")]
    TextTooLong(usize, usize),
    #[error("espeak-ng: {0}")]
    Espeak(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<ort::Error> for Error {
    fn from(e: ort::Error) -> Self {
        Error::Onnx(e.to_string())
    }
}

impl From<whisper_rs::WhisperError> for Error {
    fn from(e: whisper_rs::WhisperError) -> Self {
        Error::Whisper(e.to_string())
    }
}

/// The command a user runs to (re)provision models; quoted in every error.
pub const PROVISION_COMMAND: &str = "make models";
