//! Typed configuration: an embedded default, overlaid by an optional TOML file,
//! validated with errors that name the field and what was expected.

use crate::Error;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub models_dir: PathBuf,
    pub sip: Sip,
    pub media: Media,
    pub transcription: Transcription,
    pub log: Log,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sip {
    pub bind: IpAddr,
    pub port: u16,
    pub udp: bool,
    pub tcp: bool,
    pub user: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Media {
    pub rtp_address: IpAddr,
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    pub reorder_depth: usize,
    pub rtp_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Transcription {
    pub workers: usize,
    pub queue: usize,
    pub vad_start_threshold: f32,
    pub vad_stop_threshold: f32,
    pub min_silence_ms: u64,
    pub min_speech_ms: u64,
    pub max_utterance_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub filter: String,
}

impl Config {
    /// The embedded default.
    pub fn default_config() -> Config {
        Self::parse(DEFAULT_TOML, "embedded default").expect("embedded default config is valid")
    }

    /// Load: the embedded default, with `path` (if any) laid over it.
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        let Some(path) = path else {
            return Ok(Self::default_config());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut base: toml::Table = toml::from_str(DEFAULT_TOML).expect("embedded default parses");
        let over: toml::Table = toml::from_str(&text).map_err(|e| {
            Error::Config(format!("{}: {}", path.display(), one_line(&e.to_string())))
        })?;
        merge(&mut base, over);
        let merged = toml::to_string(&base).map_err(|e| Error::Config(e.to_string()))?;
        Self::parse(&merged, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Config, Error> {
        let c: Config = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{origin}: {}", one_line(&e.to_string()))))?;
        c.validate()
            .map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        let m = &self.media;
        if m.rtp_port_min == 0 || m.rtp_port_min > m.rtp_port_max {
            return Err(format!(
                "media.rtp_port_min ({}) must be between 1 and media.rtp_port_max ({})",
                m.rtp_port_min, m.rtp_port_max
            ));
        }
        if m.rtp_port_max - m.rtp_port_min < 1 {
            return Err("media: the RTP port range must hold at least two ports".into());
        }
        if !(1..=50).contains(&m.reorder_depth) {
            return Err(format!(
                "media.reorder_depth must be 1..=50 packets, got {}",
                m.reorder_depth
            ));
        }
        if m.rtp_timeout_secs == 0 {
            return Err("media.rtp_timeout_secs must be at least 1".into());
        }
        if !self.sip.udp && !self.sip.tcp {
            return Err("sip: enable at least one of sip.udp and sip.tcp".into());
        }
        if self.sip.user.is_empty()
            || !self
                .sip
                .user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "sip.user must be letters, digits, '-', '_' or '.', got {:?}",
                self.sip.user
            ));
        }
        let t = &self.transcription;
        if !(1..=16).contains(&t.workers) {
            return Err(format!(
                "transcription.workers must be 1..=16, got {}",
                t.workers
            ));
        }
        if t.queue == 0 {
            return Err("transcription.queue must be at least 1".into());
        }
        for (name, v) in [
            ("vad_start_threshold", t.vad_start_threshold),
            ("vad_stop_threshold", t.vad_stop_threshold),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!(
                    "transcription.{name} must be between 0 and 1, got {v}"
                ));
            }
        }
        if t.vad_stop_threshold > t.vad_start_threshold {
            return Err(
                "transcription.vad_stop_threshold must not exceed vad_start_threshold".into(),
            );
        }
        if !(1000..=30_000).contains(&t.max_utterance_ms) {
            return Err(format!(
                "transcription.max_utterance_ms must be 1000..=30000 (whisper's window is 30 s), got {}",
                t.max_utterance_ms
            ));
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("handlet.sqlite")
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(s: &str) -> Result<Config, Error> {
        let p = std::env::temp_dir().join(format!(
            "handlet-cfg-{}-{}.toml",
            std::process::id(),
            s.len()
        ));
        std::fs::write(&p, s).unwrap();
        let r = Config::load(Some(&p));
        std::fs::remove_file(&p).ok();
        r
    }

    #[test]
    fn default_is_valid_and_listens_on_5060() {
        let c = Config::default_config();
        assert_eq!(c.sip.port, 5060);
        assert!(c.sip.udp && c.sip.tcp);
    }

    #[test]
    fn partial_file_overrides_only_what_it_names() {
        let c = load_str("[sip]\nport = 5080\n").unwrap();
        assert_eq!(c.sip.port, 5080);
        assert!(c.sip.tcp);
        assert_eq!(c.media, Config::default_config().media);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = load_str("[sip]\nport = \"five\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port"), "{e}");
        assert!(e.contains("u16") || e.contains("integer"), "{e}");
    }

    #[test]
    fn unknown_field_is_rejected_by_name() {
        let e = load_str("[sip]\nprot = 5060\n").unwrap_err().to_string();
        assert!(e.contains("prot"), "{e}");
    }

    #[test]
    fn invalid_range_is_explained() {
        let e = load_str("[media]\nrtp_port_min = 30000\nrtp_port_max = 20000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("media.rtp_port_min"), "{e}");
    }

    #[test]
    fn round_trips_through_show() {
        let c = Config::default_config();
        let again: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(c, again);
    }
}
