//! Encrypted call recordings: written while the call runs, never in the
//! clear on disk. Stereo (caller left, callee right) Opus at 16 kHz, sealed
//! in one-second chunks under a fresh data key per recording; the data key
//! is stored wrapped by the device key (see [`keys`]) in `recording_keys`.
//! Deleting that row is what deletes the recording (crypto-shredding); the
//! file goes after it.
//!
//! Why XChaCha20-Poly1305 in the STREAM construction rather than the `age`
//! format: the recorder must append one sealed second at a time while the
//! call runs and the reader must open every whole chunk of a file cut short
//! by a crash. age's payload is STREAM too, but the crate exposes it as a
//! writer whose unfinished tail is unreadable, and it brings its own key
//! wrapping (X25519/scrypt recipients) that we do not need: our data key is
//! wrapped by a local symmetric device key. Doing it directly is ~150 lines
//! over one well-reviewed RustCrypto crate (`chacha20poly1305`), with the
//! truncation, reordering and corruption cases tested in [`format`](self::format). The
//! 192-bit nonce lets every nonce prefix be random without a counter store.

pub mod format;
pub mod keys;
pub mod rotation;

pub use rotation::{missing_keys, rotate};

use format::{Chunk, Frame, HEADER_LEN, Header, Opener, Sealer};
use handlet_dsp::opus;
use handlet_dsp::stereo::{Channel, StereoFramer};
use keys::DeviceKeys;
use rusqlite::{Connection, OptionalExtension, params};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

type Error = crate::Error;

fn err(msg: String) -> Error {
    Error::Recording(msg)
}

pub const RATE: u32 = 16_000;
/// Samples per channel per 20 ms frame.
const FRAME: usize = 320;
/// Frames per sealed chunk: one second. A crash loses at most this much.
pub const FRAMES_PER_CHUNK: usize = 50;
/// Opus bitrate for the stereo pair. Speech at 16 kHz is clear at this rate,
/// and a silent channel costs almost nothing (VBR).
pub const BITRATE: i32 = 24_000;

/// Where recordings live under the data dir.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("recordings")
}

pub fn keys_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("keys")
}

fn file_name(id: u64) -> String {
    format!("{id:016x}.hrec")
}

/// The highest device key id any wrapped key refers to.
pub fn max_key_id(conn: &Connection) -> Result<u32, Error> {
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(key_id), 0) FROM recording_keys",
        [],
        |r| r.get::<_, i64>(0),
    )? as u32)
}

/// Writes one call's recording. Create it when the call is answered; push
/// the caller's 16 kHz audio as it arrives; `finish` at the end.
pub struct Recorder {
    id: u64,
    file: File,
    path: PathBuf,
    sealer: Sealer,
    enc: opus::Encoder,
    framer: StereoFramer,
    /// Caller samples pushed but not yet framed.
    pending: usize,
    chunk: Vec<u8>,
    frames_in_chunk: usize,
    frames: u64,
    bytes: u64,
    stereo: Vec<f32>,
    packet: Vec<u8>,
}

/// What a finished recording came to.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub id: u64,
    pub duration_ms: u64,
    pub bytes: u64,
}

impl Recorder {
    /// Start a recording for `call_id`: a fresh data key, wrapped and stored
    /// (committed) before the first byte of audio is written.
    ///
    /// The device keys are read from disk inside the write transaction, not
    /// kept from start-up: `handlet keys rotate` may have replaced them
    /// while the agent runs, and its rewrap holds the same lock, so a new
    /// recording is either rewrapped by the rotation or wrapped under the
    /// new key, never under one the rotation deletes.
    pub fn create(
        conn: &Connection,
        data_dir: &Path,
        call_id: &str,
        now_ms: i64,
        retention_days: u32,
    ) -> Result<Recorder, Error> {
        let id = rand::random::<u64>() >> 1; // fits SQLite's signed INTEGER
        let data_key = keys::random_key();
        let dir = dir(data_dir);
        std::fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let name = file_name(id);
        let expires = now_ms + retention_days as i64 * 86_400_000;
        let tx =
            rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
        let keys = DeviceKeys::load(&keys_dir(data_dir))?;
        let (key_id, wrapped) = keys.wrap(id, &data_key)?;
        tx.execute(
            "INSERT INTO recordings (id, call_id, file, started_at_ms, expires_at_ms, state)
             VALUES (?1, ?2, ?3, ?4, ?5, 'recording')",
            params![id as i64, call_id, name, now_ms, expires],
        )?;
        tx.execute(
            "INSERT INTO recording_keys (recording_id, key_id, wrapped) VALUES (?1, ?2, ?3)",
            params![id as i64, key_id, wrapped],
        )?;
        tx.commit()?;
        let mut nonce_prefix = [0u8; 19];
        nonce_prefix.copy_from_slice(&keys::random_key()[..19]);
        let header = Header {
            recording_id: id,
            rate: RATE,
            channels: 2,
            codec: format::CODEC_OPUS,
            nonce_prefix,
        };
        let path = dir.join(name);
        let mut file = File::create(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        file.write_all(&header.encode())
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        Ok(Recorder {
            id,
            file,
            path,
            sealer: Sealer::new(&data_key, &header),
            enc: opus::Encoder::stereo(RATE, BITRATE)?,
            framer: StereoFramer::new(FRAME, FRAME * 10),
            pending: 0,
            chunk: Vec::with_capacity(8 * 1024),
            frames_in_chunk: 0,
            frames: 0,
            bytes: HEADER_LEN as u64,
            stereo: vec![0.0; 2 * FRAME],
            packet: vec![0u8; 1500],
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The caller's audio (16 kHz mono), in order. The caller's leg is the
    /// recording's clock: one stereo frame per 20 ms of caller audio.
    pub fn push_caller(&mut self, samples: &[f32]) -> Result<(), Error> {
        self.framer.push(Channel::Caller, samples);
        self.pending += samples.len();
        while self.pending >= FRAME {
            self.pending -= FRAME;
            self.framer.pop(&mut self.stereo);
            let n = self.enc.encode(&self.stereo, &mut self.packet)?;
            format::push_packet(&mut self.chunk, &self.packet[..n]);
            self.frames += 1;
            self.frames_in_chunk += 1;
            if self.frames_in_chunk == FRAMES_PER_CHUNK {
                self.seal(false)?;
            }
        }
        Ok(())
    }

    /// The answering party's audio (16 kHz mono), in order: the right
    /// channel, paired with the caller's as it comes.
    pub fn push_callee(&mut self, samples: &[f32]) {
        self.framer.push(Channel::Callee, samples);
    }

    fn seal(&mut self, last: bool) -> Result<(), Error> {
        let sealed = self.sealer.seal(&self.chunk, last).map_err(err)?;
        self.file
            .write_all(&sealed)
            .map_err(|e| err(format!("{}: {e}", self.path.display())))?;
        self.bytes += sealed.len() as u64;
        self.chunk.clear();
        self.frames_in_chunk = 0;
        Ok(())
    }

    /// Seal the last chunk, sync the file and mark the recording complete.
    pub fn finish(mut self, conn: &Connection) -> Result<Written, Error> {
        self.seal(true)?;
        self.file
            .sync_all()
            .map_err(|e| err(format!("{}: {e}", self.path.display())))?;
        let w = Written {
            id: self.id,
            duration_ms: self.frames * 20,
            bytes: self.bytes,
        };
        conn.execute(
            "UPDATE recordings SET state = 'complete', duration_ms = ?2, bytes = ?3 WHERE id = ?1",
            params![w.id as i64, w.duration_ms as i64, w.bytes as i64],
        )?;
        Ok(w)
    }
}

/// A recording read back.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Interleaved stereo, 16 kHz.
    pub samples: Vec<f32>,
    pub chunks: u32,
    /// Chunks that failed authentication (replaced by silence).
    pub corrupt: Vec<u32>,
    /// The last chunk was found: the recording was closed properly.
    pub complete: bool,
    /// Bytes from this offset on are an unfinished chunk (or damaged framing).
    pub torn_at: Option<u64>,
}

impl Decoded {
    pub fn duration_ms(&self) -> u64 {
        (self.samples.len() / 2) as u64 * 1000 / RATE as u64
    }
}

/// Decrypt and decode a recording file with its data key.
pub fn decode_file(path: &Path, id: u64, data_key: &[u8; 32]) -> Result<Decoded, Error> {
    let bytes = std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let header = Header::decode(&bytes).map_err(|e| err(format!("{}: {e}", path.display())))?;
    if header.recording_id != id {
        return Err(err(format!(
            "{} belongs to recording {}, not {id}",
            path.display(),
            header.recording_id
        )));
    }
    let opener = Opener::new(data_key, &header);
    let mut dec = opus::Decoder::stereo(RATE)?;
    let mut out = Decoded::default();
    let mut pcm = vec![0f32; 2 * RATE as usize * 120 / 1000];
    let mut at = HEADER_LEN;
    loop {
        match format::frame_at(&bytes, at) {
            Frame::Whole { body, next } => {
                let index = out.chunks;
                out.chunks += 1;
                at = next;
                match opener.open(index, body) {
                    Chunk::Open { plaintext, last } => {
                        let packets = format::packets(&plaintext).map_err(err)?;
                        for p in packets {
                            let n = dec.decode(p, &mut pcm)?;
                            out.samples.extend_from_slice(&pcm[..2 * n]);
                        }
                        if last {
                            out.complete = true;
                            break;
                        }
                    }
                    Chunk::Corrupt => {
                        out.corrupt.push(index);
                        // Keep the timeline: a chunk is one second.
                        let n = 2 * FRAME * FRAMES_PER_CHUNK;
                        out.samples.resize(out.samples.len() + n, 0.0);
                    }
                }
            }
            Frame::End => break,
            Frame::Torn { at } | Frame::BadLength { at } => {
                out.torn_at = Some(at as u64);
                break;
            }
        }
    }
    Ok(out)
}

/// One row of `recordings`.
#[derive(Debug, Clone)]
pub struct RecordingRow {
    pub id: u64,
    pub call_id: String,
    pub file: String,
    pub started_at_ms: i64,
    pub expires_at_ms: i64,
    pub state: String,
    pub duration_ms: i64,
    pub bytes: i64,
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<RecordingRow> {
    Ok(RecordingRow {
        id: r.get::<_, i64>(0)? as u64,
        call_id: r.get(1)?,
        file: r.get(2)?,
        started_at_ms: r.get(3)?,
        expires_at_ms: r.get(4)?,
        state: r.get(5)?,
        duration_ms: r.get(6)?,
        bytes: r.get(7)?,
    })
}

const COLUMNS: &str = "id, call_id, file, started_at_ms, expires_at_ms, state, duration_ms, bytes";

pub fn list(conn: &Connection) -> Result<Vec<RecordingRow>, Error> {
    let mut q = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM recordings ORDER BY started_at_ms, id"
    ))?;
    let rows = q.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A call's recordings.
pub fn for_call(conn: &Connection, call_id: &str) -> Result<Vec<RecordingRow>, Error> {
    let mut q = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM recordings WHERE call_id = ?1 ORDER BY started_at_ms, id"
    ))?;
    let rows = q
        .query_map([call_id], row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn get(conn: &Connection, id: u64) -> Result<Option<RecordingRow>, Error> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM recordings WHERE id = ?1"),
            [id as i64],
            row,
        )
        .optional()?)
}

/// The recording's data key, unwrapped.
pub fn data_key(conn: &Connection, keys: &DeviceKeys, id: u64) -> Result<[u8; 32], Error> {
    let found: Option<(u32, Vec<u8>)> = conn
        .query_row(
            "SELECT key_id, wrapped FROM recording_keys WHERE recording_id = ?1",
            [id as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (key_id, wrapped) =
        found.ok_or_else(|| err(format!("recording {id} has no key (it was erased)")))?;
    keys.unwrap(key_id, id, &wrapped)
}

/// Decrypt a recording and write it as a 16-bit stereo WAV at `out`. The
/// WAV is written next to `out` under a temporary name and renamed, so a
/// failed export leaves nothing half-written.
pub fn export_wav(
    conn: &Connection,
    data_dir: &Path,
    keys: &DeviceKeys,
    id: u64,
    out: &Path,
) -> Result<Decoded, Error> {
    let rec = get(conn, id)?.ok_or_else(|| err(format!("no recording {id}")))?;
    let key = data_key(conn, keys, id)?;
    let decoded = decode_file(&dir(data_dir).join(&rec.file), id, &key)?;
    let pcm: Vec<i16> = decoded
        .samples
        .iter()
        .map(|&s| handlet_dsp::wav::to_i16(s))
        .collect();
    let tmp = out.with_extension("wav.part");
    handlet_dsp::wav::write_interleaved(&tmp, RATE, 2, &pcm)
        .map_err(|e| err(format!("cannot write {}: {e}", out.display())))?;
    std::fs::rename(&tmp, out).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(format!("cannot write {}: {e}", out.display()))
    })?;
    Ok(decoded)
}

/// The caller's side (the left channel) of recording `id` from wall time
/// `from_ms` on, as a mono WAV: a voicemail without the box's greeting.
/// Returns the length written, in ms.
pub fn export_caller_wav(
    conn: &Connection,
    data_dir: &Path,
    keys: &DeviceKeys,
    id: u64,
    from_ms: i64,
    out: &Path,
) -> Result<i64, Error> {
    let rec = get(conn, id)?.ok_or_else(|| err(format!("no recording {id}")))?;
    let key = data_key(conn, keys, id)?;
    let decoded = decode_file(&dir(data_dir).join(&rec.file), id, &key)?;
    let skip = ((from_ms - rec.started_at_ms).max(0) as usize) * RATE as usize / 1000;
    let pcm: Vec<i16> = decoded
        .samples
        .iter()
        .step_by(2)
        .skip(skip)
        .map(|&s| handlet_dsp::wav::to_i16(s))
        .collect();
    let tmp = out.with_extension("wav.part");
    handlet_dsp::wav::write_interleaved(&tmp, RATE, 1, &pcm)
        .map_err(|e| err(format!("cannot write {}: {e}", out.display())))?;
    std::fs::rename(&tmp, out).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(format!("cannot write {}: {e}", out.display()))
    })?;
    Ok((pcm.len() * 1000 / RATE as usize) as i64)
}

/// After a crash: recordings still marked `recording` were cut off. Cut the
/// unfinished chunk off each file, count what is left, mark them
/// `truncated`. Run at start, before any call. Returns how many.
pub fn recover(conn: &Connection, data_dir: &Path, keys: &DeviceKeys) -> Result<usize, Error> {
    let mut q = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM recordings WHERE state = 'recording'"
    ))?;
    let open = q.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
    for rec in &open {
        let path = dir(data_dir).join(&rec.file);
        let (duration_ms, bytes) = match data_key(conn, keys, rec.id)
            .and_then(|k| decode_file(&path, rec.id, &k))
        {
            Ok(d) => {
                if let Some(at) = d.torn_at {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| err(format!("{}: {e}", path.display())))?;
                    f.set_len(at)
                        .and_then(|_| f.sync_all())
                        .map_err(|e| err(format!("{}: {e}", path.display())))?;
                }
                let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                (d.duration_ms() as i64, bytes as i64)
            }
            Err(e) => {
                // The file never got a header (killed at once) or its key is
                // gone: keep the row for the sweeper, say what happened.
                tracing::warn!(recording = rec.id, error = %e, "recording could not be recovered");
                (0, 0)
            }
        };
        conn.execute(
            "UPDATE recordings SET state = 'truncated', duration_ms = ?2, bytes = ?3 WHERE id = ?1",
            params![rec.id as i64, duration_ms, bytes],
        )?;
    }
    Ok(open.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice(seconds: usize) -> Vec<f32> {
        (0..RATE as usize * seconds)
            .map(|i| {
                let t = i as f32 / RATE as f32;
                let env = 0.5 + 0.5 * (std::f32::consts::TAU * 2.0 * t).sin();
                env * (1..8)
                    .map(|h| 0.04 * (std::f32::consts::TAU * 150.0 * h as f32 * t).sin())
                    .sum::<f32>()
            })
            .collect()
    }

    /// A minute recorded and read back; its size is the figure for
    /// docs/PERFORMANCE.md (`cargo test -p handlet-agent --lib recording -- --nocapture`).
    #[test]
    fn a_minute_round_trips_and_stays_small() {
        let dir = std::env::temp_dir().join(format!("handlet-rec-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conn = crate::store::open_for_tools(&dir.join("db.sqlite")).unwrap();
        conn.execute(
            "INSERT INTO calls (id, sip_call_id, direction, from_uri, to_uri, transport, started_at_ms)
             VALUES ('c1', 's', 'in', 'a', 'b', 'udp', 0)",
            [],
        )
        .unwrap();
        let keys = DeviceKeys::load_or_create(&keys_dir(&dir), 0).unwrap();
        let mut r = Recorder::create(&conn, &dir, "c1", 0, 30).unwrap();
        let audio = voice(60);
        for f in audio.chunks(320) {
            r.push_caller(f).unwrap();
        }
        let w = r.finish(&conn).unwrap();
        assert_eq!(w.duration_ms, 60_000);
        println!("one minute of stereo Opus, encrypted: {} bytes", w.bytes);
        assert!(w.bytes < 250_000, "{} bytes per minute", w.bytes);
        let key = data_key(&conn, &keys, w.id).unwrap();
        let rows = list(&conn).unwrap();
        assert_eq!(
            (rows[0].state.as_str(), rows[0].expires_at_ms),
            ("complete", 30 * 86_400_000)
        );
        let d = decode_file(&super::dir(&dir).join(&rows[0].file), w.id, &key).unwrap();
        assert!(d.complete && d.corrupt.is_empty() && d.torn_at.is_none());
        assert_eq!(d.duration_ms(), 60_000);
        let left: Vec<f32> = d.samples.iter().step_by(2).copied().collect();
        let e_in: f32 = audio[16_000..].iter().map(|x| x * x).sum();
        let e_out: f32 = left[16_000..].iter().map(|x| x * x).sum();
        assert!(
            (e_out / e_in - 1.0).abs() < 0.5,
            "level {e_in} in, {e_out} out"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
