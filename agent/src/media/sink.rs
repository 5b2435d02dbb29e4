//! Where a media leg's decoded audio goes. The leg knows nothing about
//! transcription or recording: it hands each 20 ms of 16 kHz audio to a
//! sink, which must never block (the leg runs on the async runtime).

pub trait FrameSink: Send {
    /// Take the samples out of `frame` (leaving it empty, ideally with its
    /// capacity, so the leg allocates nothing per frame). Returns false when
    /// the sink had no room and the frame was dropped.
    fn frame(&mut self, frame: &mut Vec<f32>) -> bool;
    /// The leg has ended; no more frames.
    fn end(&mut self);
}
