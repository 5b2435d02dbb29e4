//! Silero VAD (v6 ONNX) on ONNX Runtime, loaded by path.
//!
//! Input frames are 512 samples at 16 kHz (32 ms), each prefixed with the last
//! 64 samples of the previous frame; the recurrent state [2, 1, 128] is carried
//! between calls.

use crate::Error;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use std::path::Path;
use std::sync::OnceLock;

pub const FRAME: usize = 512;
const CONTEXT: usize = 64;
const STATE: usize = 2 * 128;

static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Load ONNX Runtime from `lib` once per process.
pub fn init_runtime(lib: &Path) -> Result<(), Error> {
    let r = ENV.get_or_init(|| {
        ort::init_from(lib)
            .map_err(|e| format!("loading {}: {e}", lib.display()))?
            .with_name("handlet")
            .build()
            .map_err(|e| e.to_string())
    });
    r.as_ref().map(|_| ()).map_err(|e| Error::Onnx(e.clone()))
}

fn env() -> Result<&'static ort::environment::Environment, Error> {
    match ENV.get() {
        Some(Ok(e)) => Ok(e),
        Some(Err(e)) => Err(Error::Onnx(e.clone())),
        None => Err(Error::Onnx("ONNX Runtime not initialised".into())),
    }
}

/// An ONNX session on one thread: inference shares two cores with calls.
pub(crate) fn session(model: &Path) -> Result<Session, Error> {
    Ok(Session::builder(env()?)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| Error::Onnx(e.to_string()))?
        .with_intra_threads(1)
        .map_err(|e| Error::Onnx(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| Error::Onnx(e.to_string()))?
        .commit_from_file(model)?)
}

/// One VAD stream (one per call leg).
pub struct Vad {
    session: Session,
    input: Vec<f32>,
    state: Vec<f32>,
    sr: [i64; 1],
}

impl Vad {
    pub fn load(model: &Path) -> Result<Self, Error> {
        let session = session(model)?;
        Ok(Vad {
            session,
            input: vec![0.0; CONTEXT + FRAME],
            state: vec![0.0; STATE],
            sr: [16_000],
        })
    }

    /// Speech probability of one 512-sample frame.
    pub fn process(&mut self, frame: &[f32]) -> Result<f32, Error> {
        if frame.len() != FRAME {
            return Err(Error::Format(format!(
                "VAD frame must be {FRAME} samples, got {}",
                frame.len()
            )));
        }
        // Shift the context: last 64 samples of the previous frame lead.
        self.input.copy_within(FRAME.., 0);
        self.input[CONTEXT..].copy_from_slice(frame);
        let outputs = self.session.run(ort::inputs![
            "input" => TensorRef::from_array_view(([1usize, CONTEXT + FRAME], &self.input[..]))?,
            "state" => TensorRef::from_array_view(([2usize, 1, 128], &self.state[..]))?,
            "sr" => TensorRef::from_array_view(([0usize; 0], &self.sr[..]))?,
        ])?;
        let (_, prob) = outputs["output"].try_extract_tensor::<f32>()?;
        let p = prob.first().copied().unwrap_or(0.0);
        let (_, st) = outputs["stateN"].try_extract_tensor::<f32>()?;
        if st.len() == STATE {
            self.state.copy_from_slice(st);
        }
        Ok(p)
    }

    pub fn reset(&mut self) {
        self.input.fill(0.0);
        self.state.fill(0.0);
    }
}
