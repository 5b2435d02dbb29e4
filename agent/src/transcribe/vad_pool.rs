//! Silero VAD sessions prepared ahead. Creating an ONNX Runtime session
//! takes tens of milliseconds of CPU and must not happen on a tokio worker
//! when a call comes in, so the agent loads one per leg it may transcribe
//! at once (`limits.max_calls`) at start, and a tap borrows one for its
//! leg's life. Should the pool run dry anyway, the tap loads another on
//! its own thread and gives it back to the pool afterwards.

use handlet_models::vad::Vad;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct VadPool {
    model: PathBuf,
    idle: Mutex<Vec<Vad>>,
    /// Sessions kept idle at most; more are dropped when given back.
    keep: usize,
}

impl VadPool {
    /// Load `n` sessions now (blocking: call at start, off the runtime).
    pub fn prepare(model: PathBuf, n: usize) -> Result<Arc<VadPool>, crate::Error> {
        let mut idle = Vec::with_capacity(n);
        for _ in 0..n {
            idle.push(Vad::load(&model)?);
        }
        Ok(Arc::new(VadPool {
            model,
            idle: Mutex::new(idle),
            keep: n,
        }))
    }

    /// A session for one leg; loads one (blocking) if none is idle, so call
    /// it from a std thread.
    pub fn take(self: &Arc<Self>) -> Result<VadLease, crate::Error> {
        let ready = self.idle.lock().ok().and_then(|mut v| v.pop());
        let vad = match ready {
            Some(mut v) => {
                v.reset();
                v
            }
            None => Vad::load(&self.model)?,
        };
        Ok(VadLease {
            vad: Some(vad),
            pool: self.clone(),
        })
    }
}

/// A borrowed session; goes back to the pool when dropped.
pub struct VadLease {
    vad: Option<Vad>,
    pool: Arc<VadPool>,
}

impl std::ops::Deref for VadLease {
    type Target = Vad;
    fn deref(&self) -> &Vad {
        self.vad.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for VadLease {
    fn deref_mut(&mut self) -> &mut Vad {
        self.vad.as_mut().expect("present until drop")
    }
}

impl Drop for VadLease {
    fn drop(&mut self) {
        if let (Some(v), Ok(mut idle)) = (self.vad.take(), self.pool.idle.lock())
            && idle.len() < self.pool.keep
        {
            idle.push(v);
        }
    }
}
