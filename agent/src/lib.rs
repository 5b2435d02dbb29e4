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
pub mod netblock;
pub mod notify;
pub mod phone;
pub mod pii;
pub mod privacy;
pub mod receptionist;
pub mod recording;
pub mod routing;
pub mod selfcheck;
pub mod sip;
pub mod store;
pub mod sync;
pub mod transcribe;
pub mod understand;
pub mod uplink;
pub mod voice;

/// Errors from the agent; each is one line a user can act on. Errors from
/// the libraries underneath keep them as their `source()`, so a caller
/// (or a log at debug) can walk the chain; the message variants are for
/// errors this crate finds itself.
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
    /// A query or statement SQLite refused.
    #[error("database: {0}")]
    Db(#[source] rusqlite::Error),
    #[error(transparent)]
    Models(#[from] handlet_models::Error),
    #[error("audio: {0}")]
    Audio(#[from] handlet_dsp::Error),
    #[error("sip: {0}")]
    Sip(String),
    /// The SIP stack failed (boxed: rsipstack's error is large).
    #[error("sip: {0}")]
    SipStack(#[source] Box<rsipstack::Error>),
    #[error("call: {0}")]
    Call(String),
    #[error("recording: {0}")]
    Recording(String),
    #[error("privacy: {0}")]
    Privacy(String),
    /// Something a peer or a file asked for is over one of our limits.
    #[error("{what} is over the limit of {limit}")]
    Limit { what: &'static str, limit: u64 },
    #[error("{context}: {source}")]
    IoAt {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(String),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Db(e)
    }
}

impl From<rsipstack::Error> for Error {
    fn from(e: rsipstack::Error) -> Self {
        Error::SipStack(Box::new(e))
    }
}

#[cfg(test)]
mod error_tests {
    use super::Error;
    use std::error::Error as _;

    #[test]
    fn library_errors_are_kept_as_sources() {
        let db: Error = rusqlite::Error::InvalidQuery.into();
        assert!(db.source().is_some());
        assert!(db.to_string().starts_with("database: "));
        let io = Error::IoAt {
            context: "control socket".into(),
            source: std::io::Error::other("gone"),
        };
        assert_eq!(io.to_string(), "control socket: gone");
        assert!(io.source().is_some());
        let l = Error::Limit {
            what: "SDP",
            limit: 8192,
        };
        assert_eq!(l.to_string(), "SDP is over the limit of 8192");
    }
}
