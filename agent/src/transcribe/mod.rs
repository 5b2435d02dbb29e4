//! Transcription of a call leg: a sans-IO core ([`core::Transcriber`]:
//! frames, speech probabilities and `now` in; jobs, partial and final text
//! out), the thread that runs it for one leg ([`tap`]: gate, VAD, pool,
//! store, recording) and the VAD sessions prepared for it ([`vad_pool`]).
//! Depends on `media` (it is a [`crate::media::sink::FrameSink`]) and on
//! the inference pool; nothing here knows about SIP or calls.

pub mod core;
pub mod tap;
pub mod vad_pool;

#[cfg(test)]
mod tests;

pub use self::core::TapConfig;

/// The tap settings from the configuration.
pub fn tap_config(cfg: &crate::config::Config) -> TapConfig {
    let t = &cfg.transcription;
    TapConfig {
        endpoint: handlet_models::endpoint::EndpointConfig {
            start_threshold: t.vad_start_threshold,
            stop_threshold: t.vad_stop_threshold,
            min_silence_ms: t.min_silence_ms,
            min_speech_ms: t.min_speech_ms,
            pad_ms: 200,
            max_utterance_ms: t.max_utterance_ms,
        },
        partial_interval_ms: t.partial_interval_ms,
        early_final_ms: t.early_final_ms,
    }
}
