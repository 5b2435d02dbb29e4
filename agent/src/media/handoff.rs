//! Frames go from a leg's media task to its listener thread as `Vec<f32>`s
//! over a bounded channel. Sending a fresh vector every 20 ms would mean an
//! allocation and a free per frame per call; instead the listener hands each
//! vector back once it has read it, and the leg fills the next frame into a
//! returned one. After the first few frames nothing is allocated.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// More than the frames in flight between the two sides in steady state; a
/// vector returned when this many are waiting is simply freed.
const POOL: usize = 16;

/// The leg's side: where emptied vectors come back.
pub struct Spares(Receiver<Vec<f32>>);

/// The listener's side: gives read vectors back.
pub struct Returns(SyncSender<Vec<f32>>);

pub fn pool() -> (Returns, Spares) {
    let (tx, rx) = sync_channel(POOL);
    (Returns(tx), Spares(rx))
}

impl Spares {
    /// Take the filled frame out of `filling`, leaving an empty vector with
    /// room in its place (a returned one when there is one).
    pub fn swap(&mut self, filling: &mut Vec<f32>) -> Vec<f32> {
        let spare = self
            .0
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(filling.capacity()));
        std::mem::replace(filling, spare)
    }
}

impl Returns {
    pub fn give_back(&self, mut v: Vec<f32>) {
        v.clear();
        let _ = self.0.try_send(v);
    }
}
