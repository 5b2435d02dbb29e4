//! Where a media leg's decoded audio goes. The leg knows nothing about
//! transcription or recording: it hands each 20 ms of 16 kHz audio to a
//! sink, which must never block (the leg runs on the async runtime).

pub trait FrameSink: Send + 'static {
    /// Take the samples out of `frame` (leaving it empty, ideally with its
    /// capacity, so the leg allocates nothing per frame). Returns false when
    /// the sink had no room and the frame was dropped.
    fn frame(&mut self, frame: &mut Vec<f32>) -> bool;
    /// The leg has ended; no more frames.
    fn end(&mut self);
}

/// A sink that also copies every frame to a second, bounded channel (a
/// bridged call's recorder, which takes the answering party's audio for
/// its right channel); a copy the channel has no room for is dropped.
pub struct Tee<S: FrameSink> {
    pub inner: S,
    pub copy: crossbeam_channel::Sender<Vec<f32>>,
}

impl<S: FrameSink> FrameSink for Tee<S> {
    fn frame(&mut self, frame: &mut Vec<f32>) -> bool {
        if !frame.is_empty() {
            let _ = self.copy.try_send(frame.clone());
        }
        self.inner.frame(frame)
    }

    fn end(&mut self) {
        self.inner.end();
    }
}
