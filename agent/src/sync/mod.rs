//! Upstream sync (issue 15): what the box tells the business's account.
//!
//! Pure parts: the payloads, as a pure function of the stored facts and
//! the workspace's `share` policy (`payload`); the keyed hash that stands
//! in for a phone number where the policy does not let the number itself
//! go (`NumberKey`); commands (`command`) and the desired config
//! document (`desired`) from upstream, read and bounded. The outbox is in
//! `store::outbox`, the inbox in `store::inbox`, the MQTT client in
//! `uplink`.
//!
//! The rule the payloads keep: nothing is copied across wholesale. Each
//! payload is built field by field from structured facts (intent, urgency,
//! outcome, times), so a quote of the caller or a number can only appear
//! where a field for it exists and `share` names it. docs/SYNC.md lists
//! every field and what governs it.

pub mod command;
pub mod desired;
pub mod payload;

use serde::{Deserialize, Serialize};

/// What a workspace may choose to send beyond the default fields
/// (`[sync] share = [...]`). Audio, recordings and transcripts are not on
/// the list: they never leave the box in this version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Share {
    /// Callers' phone numbers as numbers (else a keyed hash).
    Numbers,
    /// The caller's own words: the summary's text, what a message is about.
    Quotes,
    /// Names callers gave.
    Names,
    /// Addresses callers gave.
    Addresses,
}

/// The workspace's choice: which of [`Share`] it allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    share: Vec<Share>,
}

impl Policy {
    pub fn new(share: &[Share]) -> Policy {
        let mut share = share.to_vec();
        share.sort();
        share.dedup();
        Policy { share }
    }

    pub fn allows(&self, s: Share) -> bool {
        self.share.contains(&s)
    }
}

/// The workspace's secret for hashing phone numbers: the same number
/// hashes the same on every box of the workspace (so the backend can
/// count a repeat caller) and, unlike a plain hash, cannot be reversed by
/// hashing every possible number without the key.
#[derive(Clone)]
pub struct NumberKey([u8; 32]);

impl std::fmt::Debug for NumberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NumberKey(<hidden>)")
    }
}

impl NumberKey {
    pub fn new(key: [u8; 32]) -> NumberKey {
        NumberKey(key)
    }

    /// HMAC-SHA256 of the E.164 number under the key, the first 16 bytes
    /// in hex: 128 bits, as unique as the numbers need.
    pub fn hash(&self, e164: &str) -> String {
        hmac_sha256(&self.0, e164.as_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// HMAC (RFC 2104) over SHA-256, on the `sha2` already in the tree.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| -> [u8; BLOCK] { std::array::from_fn(|i| k[i] ^ b) };
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test cases 1 and 2, and 6 (a key longer than the block).
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_number_hashes_the_same_under_one_key_and_differently_under_another() {
        let a = NumberKey::new([1; 32]);
        let b = NumberKey::new([2; 32]);
        let h = a.hash("+447700900123");
        assert_eq!(h.len(), 32);
        assert_eq!(h, a.hash("+447700900123"));
        assert_ne!(h, a.hash("+447700900124"));
        assert_ne!(h, b.hash("+447700900123"));
        assert!(!h.contains("7700900123"));
        assert_eq!(format!("{a:?}"), "NumberKey(<hidden>)");
    }

    #[test]
    fn a_policy_allows_only_what_it_names() {
        let p = Policy::new(&[Share::Names, Share::Names]);
        assert!(p.allows(Share::Names));
        assert!(!p.allows(Share::Numbers));
        assert!(!Policy::default().allows(Share::Quotes));
    }
}
