//! The encrypted recording file, sans-IO: header and chunk framing, sealing
//! and opening. No I/O, no clocks; the writer and reader do the files.
//!
//! ```text
//! header  "HNDLREC1" | recording id u64 | rate u32 | channels u8 | codec u8 | nonce prefix [19]
//! chunk*  ciphertext length u32 | XChaCha20-Poly1305(data key, prefix | index u32 | last u8, aad = header)
//! ```
//! All integers big-endian. This is the STREAM construction (Hoang, Reyhanitabar,
//! Rogaway, Vizár 2015) with XChaCha20-Poly1305: every chunk is authenticated on
//! its own, its position is in its nonce (chunks cannot be reordered, dropped
//! from the middle or spliced from another file: the header is the AAD), and
//! the last chunk is flagged, so a file that ends without it was cut short.
//! A crash loses at most the chunk being written; a corrupt chunk fails on its
//! own and the ones after it still open, because the framing is in the clear.
//!
//! A chunk's plaintext is a run of Opus packets, each `len u16 | bytes`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

pub const MAGIC: &[u8; 8] = b"HNDLREC1";
pub const HEADER_LEN: usize = 8 + 8 + 4 + 1 + 1 + 19;
pub const CODEC_OPUS: u8 = 1;
/// AEAD tag per chunk.
pub const TAG_LEN: usize = 16;
/// No chunk is bigger than this; a larger length field is corruption.
pub const MAX_CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub recording_id: u64,
    pub rate: u32,
    pub channels: u8,
    pub codec: u8,
    pub nonce_prefix: [u8; 19],
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(MAGIC);
        h[8..16].copy_from_slice(&self.recording_id.to_be_bytes());
        h[16..20].copy_from_slice(&self.rate.to_be_bytes());
        h[20] = self.channels;
        h[21] = self.codec;
        h[22..].copy_from_slice(&self.nonce_prefix);
        h
    }

    pub fn decode(b: &[u8]) -> Result<Header, String> {
        if b.len() < HEADER_LEN {
            return Err(format!("file too short for a header ({} bytes)", b.len()));
        }
        if &b[..8] != MAGIC {
            return Err("not a handlet recording (bad magic)".into());
        }
        let mut nonce_prefix = [0u8; 19];
        nonce_prefix.copy_from_slice(&b[22..HEADER_LEN]);
        Ok(Header {
            recording_id: u64::from_be_bytes(b[8..16].try_into().unwrap_or_default()),
            rate: u32::from_be_bytes(b[16..20].try_into().unwrap_or_default()),
            channels: b[20],
            codec: b[21],
            nonce_prefix,
        })
    }
}

fn nonce(prefix: &[u8; 19], index: u32, last: bool) -> XNonce {
    let mut n = [0u8; 24];
    n[..19].copy_from_slice(prefix);
    n[19..23].copy_from_slice(&index.to_be_bytes());
    n[23] = last as u8;
    XNonce::from(n)
}

/// Seals chunks of one recording in order.
pub struct Sealer {
    aead: XChaCha20Poly1305,
    header: [u8; HEADER_LEN],
    prefix: [u8; 19],
    index: u32,
}

impl Sealer {
    pub fn new(key: &[u8; 32], header: &Header) -> Sealer {
        Sealer {
            aead: XChaCha20Poly1305::new(key.into()),
            header: header.encode(),
            prefix: header.nonce_prefix,
            index: 0,
        }
    }

    /// The framed, sealed chunk (length prefix included), ready to append.
    pub fn seal(&mut self, plaintext: &[u8], last: bool) -> Result<Vec<u8>, String> {
        let ct = self
            .aead
            .encrypt(
                &nonce(&self.prefix, self.index, last),
                Payload {
                    msg: plaintext,
                    aad: &self.header,
                },
            )
            .map_err(|_| "encryption failed".to_string())?;
        self.index = self
            .index
            .checked_add(1)
            .ok_or("recording has too many chunks")?;
        let mut out = Vec::with_capacity(4 + ct.len());
        out.extend_from_slice(&(ct.len() as u32).to_be_bytes());
        out.extend_from_slice(&ct);
        Ok(out)
    }
}

/// What one chunk turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Opened; `last` says it closes the recording.
    Open { plaintext: Vec<u8>, last: bool },
    /// Framing is intact but it does not authenticate (bit rot, tampering).
    Corrupt,
}

/// Splits a file's bytes (after the header) into chunks and opens them.
pub struct Opener {
    aead: XChaCha20Poly1305,
    header: [u8; HEADER_LEN],
    prefix: [u8; 19],
}

/// One framed chunk found in the bytes, or why the bytes end.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Whole {
        body: &'a [u8],
        next: usize,
    },
    /// The bytes end inside this chunk: it was being written when the
    /// process died. `at` is where the clean part of the file ends.
    Torn {
        at: usize,
    },
    /// Nothing after `at`.
    End,
    /// A length no writer produces: the framing itself is damaged here.
    BadLength {
        at: usize,
    },
}

/// The chunk framed at `at` in `bytes`.
pub fn frame_at(bytes: &[u8], at: usize) -> Frame<'_> {
    if at == bytes.len() {
        return Frame::End;
    }
    if bytes.len() - at < 4 {
        return Frame::Torn { at };
    }
    let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
    if !(TAG_LEN..=MAX_CHUNK).contains(&len) {
        return Frame::BadLength { at };
    }
    let end = at + 4 + len;
    if end > bytes.len() {
        return Frame::Torn { at };
    }
    Frame::Whole {
        body: &bytes[at + 4..end],
        next: end,
    }
}

impl Opener {
    pub fn new(key: &[u8; 32], header: &Header) -> Opener {
        Opener {
            aead: XChaCha20Poly1305::new(key.into()),
            header: header.encode(),
            prefix: header.nonce_prefix,
        }
    }

    /// Open chunk number `index`: as a middle chunk, else as the last one.
    pub fn open(&self, index: u32, body: &[u8]) -> Chunk {
        for last in [false, true] {
            if let Ok(plaintext) = self.aead.decrypt(
                &nonce(&self.prefix, index, last),
                Payload {
                    msg: body,
                    aad: &self.header,
                },
            ) {
                return Chunk::Open { plaintext, last };
            }
        }
        Chunk::Corrupt
    }
}

/// Append one Opus packet to a chunk's plaintext.
pub fn push_packet(chunk: &mut Vec<u8>, packet: &[u8]) {
    chunk.extend_from_slice(&(packet.len() as u16).to_be_bytes());
    chunk.extend_from_slice(packet);
}

/// The Opus packets in a chunk's plaintext.
pub fn packets(plaintext: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < plaintext.len() {
        if plaintext.len() - at < 2 {
            return Err("chunk ends inside a packet length".into());
        }
        let n = u16::from_be_bytes([plaintext[at], plaintext[at + 1]]) as usize;
        at += 2;
        if plaintext.len() - at < n {
            return Err("chunk ends inside a packet".into());
        }
        out.push(&plaintext[at..at + n]);
        at += n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            recording_id: 42,
            rate: 16000,
            channels: 2,
            codec: CODEC_OPUS,
            nonce_prefix: [7; 19],
        }
    }

    fn file(key: &[u8; 32], chunks: &[&[u8]], close: bool) -> Vec<u8> {
        let h = header();
        let mut s = Sealer::new(key, &h);
        let mut out = h.encode().to_vec();
        for (i, c) in chunks.iter().enumerate() {
            out.extend(s.seal(c, close && i + 1 == chunks.len()).unwrap());
        }
        out
    }

    fn read(key: &[u8; 32], bytes: &[u8]) -> (Vec<Chunk>, Frame<'static>) {
        let h = Header::decode(bytes).unwrap();
        let o = Opener::new(key, &h);
        let mut at = HEADER_LEN;
        let mut out = Vec::new();
        loop {
            match frame_at(bytes, at) {
                Frame::Whole { body, next } => {
                    out.push(o.open(out.len() as u32, body));
                    at = next;
                }
                Frame::Torn { at } => return (out, Frame::Torn { at }),
                Frame::BadLength { at } => return (out, Frame::BadLength { at }),
                Frame::End => return (out, Frame::End),
            }
        }
    }

    #[test]
    fn round_trip_marks_the_last_chunk() {
        let k = [1u8; 32];
        let bytes = file(&k, &[b"one", b"two", b"three"], true);
        let (chunks, end) = read(&k, &bytes);
        assert_eq!(end, Frame::End);
        assert_eq!(
            chunks,
            vec![
                Chunk::Open {
                    plaintext: b"one".to_vec(),
                    last: false
                },
                Chunk::Open {
                    plaintext: b"two".to_vec(),
                    last: false
                },
                Chunk::Open {
                    plaintext: b"three".to_vec(),
                    last: true
                },
            ]
        );
        // Nothing of the plaintext is in the file.
        assert!(!bytes.windows(5).any(|w| w == b"three"));
    }

    #[test]
    fn torn_tail_keeps_every_whole_chunk() {
        let k = [1u8; 32];
        let bytes = file(&k, &[b"one", b"two", b"three"], false);
        for cut in HEADER_LEN..bytes.len() {
            let (chunks, end) = read(&k, &bytes[..cut]);
            assert!(
                chunks
                    .iter()
                    .all(|c| matches!(c, Chunk::Open { last: false, .. }))
            );
            assert!(
                matches!(end, Frame::Torn { .. } | Frame::End),
                "{cut}: {end:?}"
            );
        }
    }

    #[test]
    fn a_corrupt_chunk_fails_alone_and_a_wrong_key_opens_nothing() {
        let k = [1u8; 32];
        let mut bytes = file(&k, &[b"one", b"two", b"three"], true);
        let second = HEADER_LEN + 4 + 3 + TAG_LEN + 4;
        bytes[second] ^= 0x40;
        let (chunks, end) = read(&k, &bytes);
        assert_eq!(end, Frame::End);
        assert!(matches!(chunks[0], Chunk::Open { .. }));
        assert_eq!(chunks[1], Chunk::Corrupt);
        assert!(matches!(chunks[2], Chunk::Open { last: true, .. }));
        let (chunks, _) = read(&[2u8; 32], &bytes);
        assert!(chunks.iter().all(|c| *c == Chunk::Corrupt));
    }

    #[test]
    fn chunks_cannot_be_reordered_or_moved_between_files() {
        let k = [1u8; 32];
        let bytes = file(&k, &[b"aaa", b"bbb"], true);
        let len = 4 + 3 + TAG_LEN;
        let mut swapped = bytes[..HEADER_LEN].to_vec();
        swapped.extend_from_slice(&bytes[HEADER_LEN + len..]);
        swapped.extend_from_slice(&bytes[HEADER_LEN..HEADER_LEN + len]);
        let (chunks, _) = read(&k, &swapped);
        assert!(chunks.iter().all(|c| *c == Chunk::Corrupt));
        let mut other = bytes.clone();
        other[15] ^= 1; // another recording id in the header
        let (chunks, _) = read(&k, &other);
        assert!(chunks.iter().all(|c| *c == Chunk::Corrupt));
    }

    #[test]
    fn packets_round_trip_and_bad_lengths_are_errors() {
        let mut c = Vec::new();
        push_packet(&mut c, b"ab");
        push_packet(&mut c, b"");
        push_packet(&mut c, b"xyz");
        assert_eq!(packets(&c).unwrap(), vec![&b"ab"[..], b"", b"xyz"]);
        assert!(packets(&c[..c.len() - 1]).is_err());
        assert!(frame_at(&[0, 0, 0, 1, 9], 0) == Frame::BadLength { at: 0 });
    }
}
