//! The recording announcement ("this call may be recorded"): loaded,
//! resampled and transcribed once at start.

use crate::media::{leg, sdp};

/// The "this call may be recorded" prompt, resampled once at start for
/// each rate a leg encodes from, and transcribed once: it is what the
/// agent's leg says, and goes into each call's transcript as such.
pub struct Announcement {
    at_8k: Vec<f32>,
    at_16k: Vec<f32>,
    pub text: String,
}

impl Announcement {
    pub fn load(
        path: &std::path::Path,
        stt: &handlet_models::stt::Stt,
    ) -> Result<Announcement, crate::Error> {
        let a = handlet_dsp::wav::read(path)?;
        let at = |rate| handlet_dsp::resample::Resampler::clip(&a.samples, a.rate, rate);
        let at_16k = at(16_000)?;
        let text = stt
            .worker()?
            .transcribe(&at_16k)?
            .into_iter()
            .map(|s| s.text)
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Announcement {
            at_8k: at(8_000)?,
            at_16k,
            text,
        })
    }

    pub fn duration_ms(&self) -> i64 {
        (self.at_16k.len() / 16) as i64
    }

    pub fn for_codec(&self, c: sdp::Codec) -> Vec<f32> {
        if leg::pcm_rate(c) == 8_000 {
            self.at_8k.clone()
        } else {
            self.at_16k.clone()
        }
    }
}
