//! Sans-IO end-pointer: turns per-frame speech probabilities into utterances.
//!
//! Time is the sample position of the audio pushed in (16 kHz), so tests drive
//! it with synthetic probabilities and no clock. Hysteresis (a start threshold
//! above the stop threshold) keeps short dips inside words from splitting
//! utterances; padding keeps word onsets and tails whisper needs.

use crate::vad::FRAME;

const RATE_MS: u64 = 16; // samples per millisecond at 16 kHz

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointConfig {
    /// Probability at which speech starts.
    pub start_threshold: f32,
    /// Probability below which silence is counted.
    pub stop_threshold: f32,
    /// Silence that ends an utterance.
    pub min_silence_ms: u64,
    /// Utterances with less speech than this are dropped (clicks, coughs).
    pub min_speech_ms: u64,
    /// Audio kept before the detected start and after the end.
    pub pad_ms: u64,
    /// An utterance is cut here even if the speaker has not paused.
    pub max_utterance_ms: u64,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            start_threshold: 0.5,
            stop_threshold: 0.35,
            min_silence_ms: 600,
            min_speech_ms: 250,
            pad_ms: 200,
            max_utterance_ms: 20_000,
        }
    }
}

/// A finished stretch of speech, offsets from the start of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    pub start_ms: u64,
    pub end_ms: u64,
    /// Where speech (not padding) began and ended: the listener turns these
    /// into wall-clock times to measure how long a caller waits for text.
    pub speech_start_ms: u64,
    pub speech_end_ms: u64,
    pub samples: Vec<f32>,
}

/// See [`Endpointer::tentative`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tentative<'a> {
    pub start_ms: u64,
    pub speech_end_ms: u64,
    /// Silence since speech ended.
    pub silence_ms: u64,
    pub samples: &'a [f32],
}

#[derive(Debug)]
pub struct Endpointer {
    cfg: EndpointConfig,
    /// Recent audio kept for the leading pad.
    history: std::collections::VecDeque<f32>,
    current: Option<Current>,
    /// Samples pushed so far.
    position: u64,
}

#[derive(Debug)]
struct Current {
    start_sample: u64,
    /// First sample of the frame that crossed the start threshold.
    speech_sample: u64,
    samples: Vec<f32>,
    speech_frames: u64,
    silent_samples: u64,
}

impl Endpointer {
    pub fn new(cfg: EndpointConfig) -> Self {
        Endpointer {
            cfg,
            history: std::collections::VecDeque::with_capacity(
                (cfg.pad_ms * RATE_MS) as usize + FRAME,
            ),
            current: None,
            position: 0,
        }
    }

    /// Feed one frame and its speech probability.
    pub fn push(&mut self, frame: &[f32], prob: f32) -> Option<Utterance> {
        let n = frame.len() as u64;
        let start_of_frame = self.position;
        self.position += n;
        let pad = (self.cfg.pad_ms * RATE_MS) as usize;
        let mut done = None;
        match &mut self.current {
            None => {
                if prob >= self.cfg.start_threshold {
                    let mut samples: Vec<f32> = self.history.iter().copied().collect();
                    let start_sample = start_of_frame - samples.len() as u64;
                    samples.extend_from_slice(frame);
                    self.current = Some(Current {
                        start_sample,
                        speech_sample: start_of_frame,
                        samples,
                        speech_frames: 1,
                        silent_samples: 0,
                    });
                }
            }
            Some(cur) => {
                cur.samples.extend_from_slice(frame);
                if prob < self.cfg.stop_threshold {
                    cur.silent_samples += n;
                } else {
                    cur.silent_samples = 0;
                    if prob >= self.cfg.start_threshold {
                        cur.speech_frames += 1;
                    }
                }
                let too_long = cur.samples.len() as u64 >= self.cfg.max_utterance_ms * RATE_MS;
                if cur.silent_samples >= self.cfg.min_silence_ms * RATE_MS || too_long {
                    done = self.finish();
                }
            }
        }
        self.history.extend(frame.iter().copied());
        while self.history.len() > pad {
            self.history.pop_front();
        }
        done
    }

    /// End of stream: return what is in progress, if it is speech.
    pub fn flush(&mut self) -> Option<Utterance> {
        self.finish()
    }

    /// The utterance in progress: its start offset (ms) and audio so far,
    /// for live partial transcripts.
    pub fn current(&self) -> Option<(u64, &[f32])> {
        self.current
            .as_ref()
            .map(|c| (c.start_sample / RATE_MS, c.samples.as_slice()))
    }

    /// Where speech began in the utterance in progress (ms from stream start).
    pub fn current_speech_start_ms(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.speech_sample / RATE_MS)
    }

    /// The utterance in progress as it would be finished now, once the
    /// caller has been silent at least `pad_ms`: the listener decodes it
    /// early (speculatively), and if the silence lasts to `min_silence_ms`
    /// the finished utterance has exactly these samples, so that decode is
    /// the final text and the caller does not wait for a second one.
    pub fn tentative(&self) -> Option<Tentative<'_>> {
        let cur = self.current.as_ref()?;
        let pad = self.cfg.pad_ms * RATE_MS;
        if cur.silent_samples < pad {
            return None;
        }
        let keep = cur.samples.len() - (cur.silent_samples - pad) as usize;
        Some(Tentative {
            start_ms: cur.start_sample / RATE_MS,
            speech_end_ms: (self.position - cur.silent_samples) / RATE_MS,
            silence_ms: cur.silent_samples / RATE_MS,
            samples: &cur.samples[..keep],
        })
    }

    /// Is an utterance in progress?
    pub fn in_speech(&self) -> bool {
        self.current.is_some()
    }

    fn finish(&mut self) -> Option<Utterance> {
        let mut cur = self.current.take()?;
        let speech_end_sample = self.position - cur.silent_samples;
        // Keep `pad_ms` of the trailing silence, drop the rest.
        let trailing = cur.silent_samples.saturating_sub(self.cfg.pad_ms * RATE_MS) as usize;
        cur.samples
            .truncate(cur.samples.len().saturating_sub(trailing));
        let speech_ms = cur.speech_frames * FRAME as u64 / RATE_MS;
        if speech_ms < self.cfg.min_speech_ms {
            return None;
        }
        let start_ms = cur.start_sample / RATE_MS;
        Some(Utterance {
            start_ms,
            end_ms: start_ms + cur.samples.len() as u64 / RATE_MS,
            speech_start_ms: cur.speech_sample / RATE_MS,
            speech_end_ms: speech_end_sample / RATE_MS,
            samples: cur.samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(probs: &[f32]) -> Vec<Utterance> {
        let mut e = Endpointer::new(EndpointConfig::default());
        let frame = [0.1f32; FRAME];
        let mut out: Vec<Utterance> = probs.iter().filter_map(|&p| e.push(&frame, p)).collect();
        out.extend(e.flush());
        out
    }

    #[test]
    fn silence_gives_nothing() {
        assert!(run(&[0.0; 200]).is_empty());
    }

    #[test]
    fn one_utterance_with_padding_and_times() {
        // 10 frames silence (320 ms), 30 speech (960 ms), 40 silence.
        let mut p = vec![0.0; 10];
        p.extend([0.9; 30]);
        p.extend([0.0; 40]);
        let u = run(&p);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].start_ms, 320 - 200); // 200 ms of leading pad
        assert!(
            u[0].end_ms >= 1280 && u[0].end_ms <= 1280 + 200,
            "{}",
            u[0].end_ms
        );
        assert_eq!(u[0].samples.len() as u64 / 16, u[0].end_ms - u[0].start_ms);
        assert_eq!(u[0].speech_start_ms, 320);
        assert_eq!(u[0].speech_end_ms, 1280);
    }

    #[test]
    fn short_dip_does_not_split_but_long_pause_does() {
        let mut p = vec![0.9; 20];
        p.extend([0.1; 5]); // 160 ms dip
        p.extend([0.9; 20]);
        p.extend([0.0; 30]); // 960 ms pause
        p.extend([0.9; 20]);
        assert_eq!(run(&p).len(), 2);
    }

    #[test]
    fn click_is_dropped() {
        let mut p = vec![0.0; 10];
        p.extend([0.9; 2]); // 64 ms
        p.extend([0.0; 40]);
        assert!(run(&p).is_empty());
    }

    #[test]
    fn current_shows_the_utterance_in_progress() {
        let mut e = Endpointer::new(EndpointConfig::default());
        let frame = [0.1f32; FRAME];
        for _ in 0..10 {
            e.push(&frame, 0.0);
        }
        assert!(e.current().is_none());
        for _ in 0..5 {
            e.push(&frame, 0.9);
        }
        let (start, audio) = e.current().unwrap();
        assert_eq!(start, 320 - 200);
        assert_eq!(e.current_speech_start_ms(), Some(320));
        assert_eq!(audio.len(), 200 * 16 + 5 * FRAME);
    }

    #[test]
    fn tentative_utterance_is_the_one_that_finishes() {
        let mut e = Endpointer::new(EndpointConfig::default());
        let mut n = 0.0f32;
        let mut frame = move || {
            n += 1.0;
            [n; FRAME]
        };
        for _ in 0..10 {
            e.push(&frame(), 0.0);
        }
        for _ in 0..30 {
            e.push(&frame(), 0.9);
            assert!(e.tentative().is_none(), "no silence yet");
        }
        let mut seen = None;
        loop {
            let done = e.push(&frame(), 0.0);
            if let Some(u) = done {
                let (start, end, samples) = seen.expect("a tentative before the end");
                assert_eq!((u.start_ms, u.speech_end_ms), (start, end));
                assert_eq!(u.samples, samples, "same audio, so the same text");
                break;
            }
            if let Some(t) = e.tentative() {
                assert!(t.silence_ms >= 200);
                // Frames are distinct, so equal samples mean the same cut.
                seen = Some((t.start_ms, t.speech_end_ms, t.samples.to_vec()));
            }
        }
    }

    #[test]
    fn long_speech_is_cut_at_the_limit() {
        let u = run(&[0.9; 1000]); // 32 s
        assert!(u.len() >= 2);
        assert!(u.iter().all(|u| u.end_ms - u.start_ms <= 20_000 + 32));
    }
}
