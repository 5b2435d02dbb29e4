//! Handlet Edge agent: everything that talks to the world (SIP, RTP, SQLite,
//! systemd), built around sans-IO cores in `handlet-dsp` and `handlet-models`.

pub mod agent;
pub mod call;
pub mod calls;
pub mod client;
pub mod clock;
pub mod config;
pub mod control;
pub mod inference;
pub mod limits;
pub mod logging;
pub mod media;
pub mod notify;
pub mod phone;
pub mod pii;
pub mod privacy;
pub mod recording;
pub mod selfcheck;
pub mod sip;
pub mod store;
pub mod transcribe;
pub mod understand;

/// Errors from the agent; each is one line a user can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("config: {0}")]
    Config(String),
    #[error("{0}")]
    Bind(String),
    #[error("data dir: {0}")]
    DataDir(String),
    #[error("database: {0}")]
    Store(String),
    #[error(transparent)]
    Models(#[from] handlet_models::Error),
    #[error("audio: {0}")]
    Audio(#[from] handlet_dsp::Error),
    #[error("sip: {0}")]
    Sip(String),
    #[error("call: {0}")]
    Call(String),
    #[error("recording: {0}")]
    Recording(String),
    #[error("privacy: {0}")]
    Privacy(String),
    #[error("{0}")]
    Io(String),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Store(e.to_string())
    }
}

impl From<rsipstack::Error> for Error {
    fn from(e: rsipstack::Error) -> Self {
        Error::Sip(e.to_string())
    }
}
