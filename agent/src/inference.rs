//! The inference pool: whisper workers on their own std threads (never on a
//! tokio worker), fed by one bounded queue shared by every call.

use handlet_models::stt::{Segment, Stt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

/// One utterance to transcribe; the result goes back on `reply`.
pub struct Job {
    pub samples: Vec<f32>,
    pub reply: Box<dyn FnOnce(Result<Vec<Segment>, String>) + Send>,
}

#[derive(Clone)]
pub struct Pool {
    tx: mpsc::SyncSender<Job>,
    pub stats: Arc<PoolStats>,
}

#[derive(Default)]
pub struct PoolStats {
    pub done: AtomicU64,
    pub failed: AtomicU64,
}

impl Pool {
    /// Start `workers` threads, each with its own whisper state.
    pub fn start(stt: &Stt, workers: usize, queue: usize) -> Result<Pool, crate::Error> {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(PoolStats::default());
        for i in 0..workers {
            let mut w = stt.worker()?;
            let rx = rx.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name(format!("whisper-{i}"))
                .spawn(move || {
                    loop {
                        // Hold the lock only to take a job, not while transcribing.
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let r = w.transcribe(&job.samples).map_err(|e| e.to_string());
                        let counter = if r.is_ok() {
                            &stats.done
                        } else {
                            &stats.failed
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        (job.reply)(r);
                    }
                })
                .map_err(|e| crate::Error::Io(e.to_string()))?;
        }
        Ok(Pool { tx, stats })
    }

    /// Queue a job, waiting for room. Only call from std threads, never from
    /// async code: it blocks when the queue is full.
    pub fn submit_blocking(&self, job: Job) -> Result<(), crate::Error> {
        self.tx
            .send(job)
            .map_err(|_| crate::Error::Io("inference pool stopped".into()))
    }
}
