//! What a leg sends, sans-IO: a prompt, the other party of a bridge
//! (decoded and re-encoded when the two legs' codecs differ, or relayed
//! packet for packet when they are the same), a tone (ringback, hold), or
//! silence. The leg asks for one 20 ms frame at a time on its own clock,
//! except relayed packets, which go out as they arrive.

use super::sdp::Codec;
use handlet_dsp::playout::{Prompt, Tone, ToneSpec};
use handlet_dsp::resample::Resampler;
use std::collections::VecDeque;

/// Bridged audio held for the leg at most (ms): a party whose clock runs
/// fast, or a burst after a stall, is trimmed to this, oldest first.
const FEED_MAX_MS: usize = 200;
/// Speech held at most (s): far more than one reply; a runaway producer
/// is cut here rather than allowed to grow the leg without bound.
const SPEECH_MAX_SECS: usize = 60;
/// Relayed packets held at most before the oldest is dropped.
const RELAY_MAX: usize = 16;
/// Relaying counts as flowing for this long after its last packet; after
/// it the leg sends its own frames again (silence keeps the peer's NAT
/// binding and jitter buffer alive when the other side goes quiet).
const RELAY_QUIET_MS: u64 = 100;

/// One packet of the other leg's stream, to be sent as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    pub payload: Vec<u8>,
    /// The sender's timestamp (its clock: the same codec as ours).
    pub ts: u32,
    pub marker: bool,
}

/// What the next paced frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Audio to encode (in [`Outgoing::frame`]).
    Audio,
    /// The prompt just ended: this frame and the event that says so.
    PromptEnded,
    /// Nothing to say: the codec's silence.
    Silence,
    /// Relayed packets are flowing: send no frame of our own.
    Skip,
}

/// Speech being streamed in as it is synthesised.
struct Speech {
    buf: VecDeque<f32>,
    /// No more will come: once `buf` drains, the speech has ended.
    last: bool,
}

pub struct Outgoing {
    /// Samples per frame at the leg's encoding rate.
    frame_len: usize,
    frame: Vec<f32>,
    prompt: Option<Prompt>,
    speech: Option<Speech>,
    speech_max: usize,
    tone: Option<Tone>,
    /// The bridged party's audio at the leg's rate, oldest first.
    feed: VecDeque<f32>,
    feed_max: usize,
    /// 16 kHz (what every leg decodes to) to the leg's rate, if lower.
    down: Option<Resampler>,
    scratch: Vec<f32>,
    relay: VecDeque<Relayed>,
    relay_seen_ms: Option<u64>,
    /// Bridged audio is being fed (otherwise the feed is ignored).
    bridged: bool,
    /// Held: the bridged party hears the hold tone or silence, not audio.
    held: bool,
    pub stats: OutgoingStats,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutgoingStats {
    /// Bridged samples dropped because the feed was over its bound.
    pub feed_dropped: u64,
    /// Frames sent short of bridged audio (the other leg was late).
    pub feed_underruns: u64,
    pub relayed: u64,
    pub relay_dropped: u64,
    /// Speech samples over the bound, not sent.
    pub speech_dropped: u64,
    /// Frames of silence while speech was due but not yet synthesised.
    pub speech_underruns: u64,
}

impl Outgoing {
    pub fn new(codec: Codec) -> Outgoing {
        let rate = super::rtp_leg::pcm_rate(codec) as usize;
        let frame_len = rate / 50;
        Outgoing {
            frame_len,
            frame: vec![0.0; frame_len],
            prompt: None,
            speech: None,
            speech_max: rate * SPEECH_MAX_SECS,
            tone: None,
            feed: VecDeque::with_capacity(rate * FEED_MAX_MS / 1000 + frame_len),
            feed_max: rate * FEED_MAX_MS / 1000,
            // 320 samples in: 20 ms at 16 kHz.
            down: (rate != 16_000)
                .then(|| Resampler::new(16_000, rate as u32, 320).ok())
                .flatten(),
            scratch: Vec::with_capacity(frame_len * 2),
            relay: VecDeque::new(),
            relay_seen_ms: None,
            bridged: false,
            held: false,
            stats: OutgoingStats::default(),
        }
    }

    /// Play `samples` (at the leg's rate) before anything else.
    pub fn play(&mut self, samples: Vec<f32>) {
        self.prompt = Some(Prompt::new(samples));
    }

    pub fn is_playing(&self) -> bool {
        self.prompt.is_some() || self.speech.is_some()
    }

    /// Speech (at the leg's rate) as it is synthesised: each piece is
    /// queued behind the last; `last` says no more will come, and the
    /// speech ends ([`Frame::PromptEnded`]) once it has all gone out. A
    /// producer slower than real time makes gaps of silence, not an end.
    pub fn speak(&mut self, samples: &[f32], last: bool) {
        let sp = self.speech.get_or_insert_with(|| Speech {
            buf: VecDeque::new(),
            last: false,
        });
        let room = self.speech_max.saturating_sub(sp.buf.len());
        if samples.len() > room {
            self.stats.speech_dropped += (samples.len() - room) as u64;
        }
        sp.buf.extend(samples.iter().take(room));
        sp.last |= last;
    }

    /// Stop talking at once (the caller barged in); no end is reported.
    pub fn stop_speaking(&mut self) {
        self.speech = None;
    }

    /// A tone under everything else (ringback while the call rings, the
    /// hold tone), or none.
    pub fn set_tone(&mut self, spec: Option<ToneSpec>) {
        self.tone = spec.map(|s| Tone::new(s, (self.frame_len * 50) as u32));
    }

    /// Start or stop taking the other leg's audio.
    pub fn set_bridged(&mut self, on: bool) {
        self.bridged = on;
        if !on {
            self.feed.clear();
            self.relay.clear();
            self.relay_seen_ms = None;
        }
    }

    pub fn is_bridged(&self) -> bool {
        self.bridged
    }

    /// Hold (or resume) what the bridge gives this leg.
    pub fn set_held(&mut self, held: bool) {
        self.held = held;
        if held {
            self.feed.clear();
            self.relay.clear();
        }
    }

    /// The other leg's decoded audio (16 kHz), in order.
    pub fn feed(&mut self, samples_16k: &[f32]) {
        if !self.bridged || self.held {
            return;
        }
        match self.down.as_mut() {
            Some(r) => {
                self.scratch.clear();
                if r.process(samples_16k, &mut self.scratch).is_err() {
                    return;
                }
                self.feed.extend(self.scratch.iter().copied());
            }
            None => self.feed.extend(samples_16k.iter().copied()),
        }
        let over = self.feed.len().saturating_sub(self.feed_max);
        if over > 0 {
            self.feed.drain(..over);
            self.stats.feed_dropped += over as u64;
        }
    }

    /// A packet of the other leg's stream (same codec) to send as it is.
    pub fn relay(&mut self, p: Relayed, now_ms: u64) {
        if !self.bridged || self.held {
            return;
        }
        if self.relay.len() >= RELAY_MAX {
            self.relay.pop_front();
            self.stats.relay_dropped += 1;
        }
        self.relay.push_back(p);
        self.relay_seen_ms = Some(now_ms);
    }

    /// A relayed packet to send now, if one is waiting.
    pub fn poll_relayed(&mut self) -> Option<Relayed> {
        let p = self.relay.pop_front()?;
        self.stats.relayed += 1;
        Some(p)
    }

    /// Has relaying stopped since `now_ms - RELAY_QUIET_MS`? (The next
    /// relayed packet then starts a new timestamp mapping.)
    pub fn relay_flowing(&self, now_ms: u64) -> bool {
        self.relay_seen_ms
            .is_some_and(|t| now_ms < t + RELAY_QUIET_MS)
    }

    /// The next 20 ms frame, due now: its kind, and the samples in
    /// [`Outgoing::frame`] when it is audio.
    pub fn next_frame(&mut self, now_ms: u64) -> Frame {
        if let Some(p) = self.prompt.as_mut() {
            if p.fill(&mut self.frame) {
                return Frame::Audio;
            }
            self.prompt = None;
            self.frame.fill(0.0);
            return Frame::PromptEnded;
        }
        if let Some(sp) = self.speech.as_mut() {
            let n = self.frame_len.min(sp.buf.len());
            if n == self.frame_len || (sp.last && n > 0) {
                for (o, x) in self.frame.iter_mut().zip(sp.buf.drain(..n)) {
                    *o = x;
                }
                self.frame[n..].fill(0.0);
                return Frame::Audio;
            }
            if sp.last {
                self.speech = None;
                self.frame.fill(0.0);
                return Frame::PromptEnded;
            }
            // Not synthesised yet: a gap, not the end (bridged audio and
            // tones wait too: the box is talking).
            self.stats.speech_underruns += 1;
            return Frame::Silence;
        }
        if self.relay_flowing(now_ms) {
            return Frame::Skip;
        }
        let mut have = false;
        if self.bridged && !self.held && !self.feed.is_empty() {
            let n = self.frame_len.min(self.feed.len());
            for (o, s) in self.frame.iter_mut().zip(self.feed.drain(..n)) {
                *o = s;
            }
            self.frame[n..].fill(0.0);
            if n < self.frame_len {
                self.stats.feed_underruns += 1;
            }
            have = true;
        } else if self.bridged && !self.held {
            self.stats.feed_underruns += 1;
        }
        if let Some(t) = self.tone.as_mut() {
            if have {
                // A tone under bridged audio (call waiting): mixed.
                let mut tone = [0.0f32; 320];
                let tone = &mut tone[..self.frame_len];
                t.fill(tone);
                for (o, x) in self.frame.iter_mut().zip(tone.iter()) {
                    *o += *x;
                }
            } else {
                t.fill(&mut self.frame);
                have = true;
            }
        }
        if have { Frame::Audio } else { Frame::Silence }
    }

    /// The frame [`Outgoing::next_frame`] filled.
    pub fn frame(&self) -> &[f32] {
        &self.frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use handlet_dsp::playout::RINGBACK_UK;

    fn energy(x: &[f32]) -> f32 {
        x.iter().map(|s| s * s).sum::<f32>() / x.len().max(1) as f32
    }

    #[test]
    fn a_prompt_comes_first_then_its_end_then_silence() {
        let mut o = Outgoing::new(Codec::Pcmu);
        o.play(vec![0.5; 200]);
        assert_eq!(o.next_frame(0), Frame::Audio);
        assert_eq!(o.frame().len(), 160);
        assert_eq!(o.next_frame(20), Frame::Audio, "40 samples and padding");
        assert_eq!(o.next_frame(40), Frame::PromptEnded);
        assert_eq!(o.next_frame(60), Frame::Silence);
    }

    #[test]
    fn streamed_speech_waits_for_what_is_not_synthesised_yet_and_ends_once() {
        let mut o = Outgoing::new(Codec::Pcmu);
        o.speak(&[0.5; 200], false);
        assert!(o.is_playing());
        assert_eq!(o.next_frame(0), Frame::Audio);
        // 40 samples left, more to come: silence, not the end.
        assert_eq!(o.next_frame(20), Frame::Silence);
        assert_eq!(o.stats.speech_underruns, 1);
        o.speak(&[0.5; 120], true);
        assert_eq!(o.next_frame(40), Frame::Audio, "the 160 left");
        assert_eq!(o.next_frame(60), Frame::PromptEnded);
        assert!(!o.is_playing());
        assert_eq!(o.next_frame(80), Frame::Silence);
        // Stopped: nothing more is said and no end is reported.
        o.speak(&[0.5; 1600], true);
        assert_eq!(o.next_frame(100), Frame::Audio);
        o.stop_speaking();
        assert_eq!(o.next_frame(120), Frame::Silence);
        // Bounded: a minute at most.
        o.speak(&vec![0.1; 8000 * 61], false);
        assert_eq!(o.stats.speech_dropped, 8000);
    }

    #[test]
    fn ringback_plays_until_the_bridge_takes_over() {
        let mut o = Outgoing::new(Codec::G722);
        o.set_tone(Some(RINGBACK_UK));
        assert_eq!(o.next_frame(0), Frame::Audio);
        assert_eq!(o.frame().len(), 320);
        assert!(energy(o.frame()) > 0.001);
        o.set_tone(None);
        o.set_bridged(true);
        o.feed(&[0.25; 320]);
        assert_eq!(o.next_frame(20), Frame::Audio);
        assert!(o.frame().iter().all(|&s| s == 0.25), "wideband: as it came");
        // Nothing more from the other side: silence, counted.
        assert_eq!(o.next_frame(40), Frame::Silence);
        assert_eq!(o.stats.feed_underruns, 1);
    }

    #[test]
    fn bridged_audio_is_resampled_for_narrowband_and_bounded() {
        let mut o = Outgoing::new(Codec::Pcma);
        o.set_bridged(true);
        // A 1 kHz tone at 16 kHz comes out at 8 kHz with its level.
        let tone: Vec<f32> = (0..3200)
            .map(|i| 0.5 * (std::f32::consts::TAU * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        o.feed(&tone);
        let mut out = Vec::new();
        for i in 0..8 {
            assert_eq!(o.next_frame(i * 20), Frame::Audio);
            out.extend_from_slice(o.frame());
        }
        let e = energy(&out[400..]);
        assert!(
            (0.10..0.15).contains(&e),
            "tone kept through 16 -> 8 kHz: {e}"
        );
        // A burst of 2 s is cut to the newest 200 ms.
        o.feed(&vec![0.1; 32_000]);
        assert!(o.stats.feed_dropped > 10_000);
        let mut frames = 0;
        while o.next_frame(0) == Frame::Audio && o.frame().iter().any(|&s| s != 0.0) {
            frames += 1;
            assert!(frames < 20);
        }
        assert!((9..=11).contains(&frames), "about 200 ms held: {frames}");
    }

    #[test]
    fn relayed_packets_go_out_and_pause_our_own_frames() {
        let mut o = Outgoing::new(Codec::Pcmu);
        let p = |ts| Relayed {
            payload: vec![0xff; 160],
            ts,
            marker: false,
        };
        // Not bridged: ignored.
        o.relay(p(0), 0);
        assert!(o.poll_relayed().is_none());
        o.set_bridged(true);
        o.relay(p(160), 0);
        assert_eq!(o.poll_relayed().unwrap().ts, 160);
        assert_eq!(o.next_frame(10), Frame::Skip);
        // The other side went quiet: our own frames again.
        assert_eq!(o.next_frame(200), Frame::Silence);
        // Bounded.
        for i in 0..40 {
            o.relay(p(i), 300);
        }
        assert_eq!(o.stats.relay_dropped, 24);
        // Held: nothing of the other side reaches the held party.
        o.set_held(true);
        assert!(o.poll_relayed().is_none());
        o.feed(&[0.5; 320]);
        o.set_tone(None);
        assert_eq!(o.next_frame(1000), Frame::Silence);
    }
}
