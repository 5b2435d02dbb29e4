//! SRTP (RFC 3711) keyed by SDES (RFC 4568): each side names its own
//! sending key in an `a=crypto` line of its SDP, so a leg encrypts with the
//! key we wrote and decrypts with the key the peer wrote. The cipher is
//! rtc-srtp's (the webrtc-rs family, on ring): nothing here is
//! cryptography, only keying, parsing and the bounds a peer cannot push.
//!
//! Keys are secrets: [`Crypto`]'s `Debug` never shows them, and nothing in
//! this module logs. They travel in SDP, which is why SDES is only worth
//! offering over TLS signalling (`call::bridge` decides that).

use base64::Engine;
use rtc_srtp::context::Context;
use rtc_srtp::protection_profile::ProtectionProfile;

/// The crypto suites we speak (RFC 4568 §6.2), in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// `AES_CM_128_HMAC_SHA1_80`: the one every SDES peer supports.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`: the same with a 32-bit tag (some phones).
    AesCm128HmacSha1_32,
}

impl Suite {
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    fn parse(s: &str) -> Option<Suite> {
        match s {
            "AES_CM_128_HMAC_SHA1_80" => Some(Suite::AesCm128HmacSha1_80),
            "AES_CM_128_HMAC_SHA1_32" => Some(Suite::AesCm128HmacSha1_32),
            _ => None,
        }
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            Suite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            Suite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        }
    }
}

/// Master key (16 bytes) and salt (14) of the AES-128 suites.
const KEY_LEN: usize = 16;
const SALT_LEN: usize = 14;

/// Why an `a=crypto` line is not one we can use (the line is skipped; the
/// offer may have another).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("a=crypto line is malformed")]
    Malformed,
    #[error("crypto suite {0} is not supported (we speak AES_CM_128_HMAC_SHA1_80 and _32)")]
    Suite(String),
    #[error("a=crypto key is not {} bytes of base64", KEY_LEN + SALT_LEN)]
    Key,
    /// MKIs and session parameters (UNENCRYPTED_SRTP, KDR...) change how
    /// packets are protected; we do not speak them.
    #[error("a=crypto uses {0}, which is not supported")]
    Unsupported(&'static str),
}

/// One `a=crypto` attribute: a tag, a suite and one side's sending key.
#[derive(Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: Suite,
    key: [u8; KEY_LEN + SALT_LEN],
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .field("key", &"[secret]")
            .finish()
    }
}

impl Crypto {
    /// A fresh key of ours, from the OS's random source.
    pub fn generate(tag: u32, suite: Suite) -> Crypto {
        let mut key = [0u8; KEY_LEN + SALT_LEN];
        rand::fill(&mut key);
        Crypto { tag, suite, key }
    }

    /// The value of an `a=crypto:` attribute (what follows the colon):
    /// `1 AES_CM_128_HMAC_SHA1_80 inline:<base64>[|lifetime][|mki:len]`.
    pub fn parse(value: &str) -> Result<Crypto, CryptoError> {
        let mut parts = value.split_whitespace();
        let tag = parts
            .next()
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|t| *t < 1_000_000_000)
            .ok_or(CryptoError::Malformed)?;
        let suite_name = parts.next().ok_or(CryptoError::Malformed)?;
        let suite = Suite::parse(suite_name)
            .ok_or_else(|| CryptoError::Suite(suite_name.chars().take(40).collect::<String>()))?;
        let params = parts.next().ok_or(CryptoError::Malformed)?;
        if parts.next().is_some() {
            return Err(CryptoError::Unsupported("session parameters"));
        }
        // Several key-params (";"-separated) are for rekeying: we take one
        // key for the call and refuse the line rather than mis-key.
        if params.contains(';') {
            return Err(CryptoError::Unsupported("several keys"));
        }
        let inline = params
            .strip_prefix("inline:")
            .ok_or(CryptoError::Malformed)?;
        let mut fields = inline.split('|');
        let b64 = fields.next().ok_or(CryptoError::Malformed)?;
        for f in fields {
            // A lifetime ("2^31" or a number) is a limit we never reach in a
            // call; an MKI changes the packet format.
            if f.contains(':') {
                return Err(CryptoError::Unsupported("an MKI"));
            }
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| CryptoError::Key)?;
        let key: [u8; KEY_LEN + SALT_LEN] = raw.try_into().map_err(|_| CryptoError::Key)?;
        Ok(Crypto { tag, suite, key })
    }

    /// Our `a=crypto` line, without its line end.
    pub fn attribute(&self) -> String {
        format!(
            "a=crypto:{} {} inline:{}",
            self.tag,
            self.suite.name(),
            base64::engine::general_purpose::STANDARD.encode(self.key)
        )
    }

    /// Ours, answering `offered`: the same tag and suite, our own key.
    pub fn answering(offered: &Crypto) -> Crypto {
        Crypto::generate(offered.tag, offered.suite)
    }

    fn context(&self) -> Result<Context, String> {
        let provider = rtc_srtp::crypto::default_provider().map_err(|e| e.to_string())?;
        Context::new(
            &self.key[..KEY_LEN],
            &self.key[KEY_LEN..],
            self.suite.profile(),
            Some(rtc_srtp::option::srtp_replay_protection(REPLAY_WINDOW)),
            Some(rtc_srtp::option::srtcp_replay_protection(REPLAY_WINDOW)),
            provider.crypto(),
        )
        .map_err(|e| e.to_string())
    }
}

/// SRTCP's authentication tag: 80 bits for both suites (RFC 4568 §6.2.1).
const SRTCP_TAG_LEN: usize = 10;

/// Packets a late or reordered one may trail the newest by (libsrtp's 128).
const REPLAY_WINDOW: usize = 128;

/// Streams (SSRCs) a receiving context keeps state for at most. rtc-srtp
/// makes a stream's state before its packet authenticates, so packets of
/// unknown SSRCs are first tried in a throwaway probe context (started
/// over past this many); only a stream that authenticated gets state in
/// the real one, whose replay window and rollover counter a forged packet
/// therefore cannot touch (a real peer has one or two streams per call).
const MAX_RX_STREAMS: usize = 8;

/// The two keys of an SDES-keyed leg: ours for what we send, the peer's
/// for what we receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub local: Crypto,
    pub remote: Crypto,
}

/// Why a packet was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Failed authentication, a replay, or too short: not from the peer.
    Unauthentic,
    /// We could not protect a packet of ours (the key's packet limit).
    Protect,
}

/// A leg's SRTP state: one context for each direction (rtc-srtp's contexts
/// are one-way), each for both RTP and RTCP.
pub struct Session {
    keys: Keys,
    tx: Context,
    rx: Context,
    /// Streams that authenticated, which `rx` keeps state for.
    rx_streams: Vec<u32>,
    /// Where packets of other streams are checked first.
    probe: Context,
    probe_streams: usize,
    /// Times a context started over ([`MAX_RX_STREAMS`]).
    pub rx_resets: u64,
}

impl Session {
    /// The peer's key now (a re-INVITE re-keyed it): only the receiving
    /// side starts over; ours goes on, so its packet index never repeats.
    pub fn set_remote(&mut self, remote: Crypto) -> Result<(), crate::Error> {
        if remote == self.keys.remote {
            return Ok(());
        }
        let err = |e: String| crate::Error::Call(format!("SRTP: {e}"));
        self.rx = remote.context().map_err(err)?;
        self.probe = remote.context().map_err(err)?;
        self.rx_streams.clear();
        self.probe_streams = 0;
        self.keys.remote = remote;
        Ok(())
    }

    /// Our key and the peer's, as they are now.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn new(keys: Keys) -> Result<Session, crate::Error> {
        let err = |e: String| crate::Error::Call(format!("SRTP: {e}"));
        Ok(Session {
            tx: keys.local.context().map_err(err)?,
            rx: keys.remote.context().map_err(err)?,
            probe: keys.remote.context().map_err(err)?,
            keys,
            rx_streams: Vec::new(),
            probe_streams: 0,
            rx_resets: 0,
        })
    }

    /// May the real context see `packet` of stream `ssrc`? Yes for a
    /// stream that authenticated before; else only if `check` passes it
    /// in the probe context, and then the stream is admitted.
    fn admit(&mut self, ssrc: u32, packet: &[u8], check: fn(&mut Context, &[u8]) -> bool) -> bool {
        if self.rx_streams.contains(&ssrc) {
            return true;
        }
        if self.probe_streams >= MAX_RX_STREAMS {
            if let Ok(p) = self.keys.remote.context() {
                self.probe = p;
            }
            self.probe_streams = 0;
            self.rx_resets += 1;
        }
        self.probe_streams += 1;
        if !check(&mut self.probe, packet) {
            return false;
        }
        if self.rx_streams.len() >= MAX_RX_STREAMS {
            // Eight streams that authenticated: the peer itself restarts
            // its stream over and over. Start over.
            if let Ok(rx) = self.keys.remote.context() {
                self.rx = rx;
            }
            self.rx_streams.clear();
            self.rx_resets += 1;
        }
        self.rx_streams.push(ssrc);
        true
    }

    /// Encrypt and sign an RTP packet of ours in place.
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), Reject> {
        let out = self.tx.encrypt_rtp(packet).map_err(|_| Reject::Protect)?;
        packet.clear();
        packet.extend_from_slice(&out);
        Ok(())
    }

    /// Check and decrypt a received SRTP packet: the plain RTP packet.
    pub fn unprotect_rtp(&mut self, packet: &[u8]) -> Result<Vec<u8>, Reject> {
        if packet.len() < 12 {
            return Err(Reject::Unauthentic);
        }
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        if !self.admit(ssrc, packet, |c, p| c.decrypt_rtp(p).is_ok()) {
            return Err(Reject::Unauthentic);
        }
        self.rx
            .decrypt_rtp(packet)
            .map(|b| b.to_vec())
            .map_err(|_| Reject::Unauthentic)
    }

    /// Encrypt and sign an RTCP compound packet of ours in place.
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), Reject> {
        let out = self.tx.encrypt_rtcp(packet).map_err(|_| Reject::Protect)?;
        packet.clear();
        packet.extend_from_slice(&out);
        Ok(())
    }

    /// Check and decrypt a received SRTCP packet.
    pub fn unprotect_rtcp(&mut self, packet: &[u8]) -> Result<Vec<u8>, Reject> {
        // rtc-srtp 0.21.1 passes an SRTCP packet whose E flag (the top bit
        // of the index before the tag) is clear without checking its tag:
        // anyone could forge RTCP. We never agree to unencrypted SRTCP, so
        // such a packet is refused here (RFC 3711 §3.4: the tag is
        // mandatory either way).
        let index_at = packet.len().checked_sub(SRTCP_TAG_LEN + 4);
        if packet.len() < 8 + SRTCP_TAG_LEN + 4 || index_at.is_none_or(|i| packet[i] & 0x80 == 0) {
            return Err(Reject::Unauthentic);
        }
        let ssrc = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        if !self.admit(ssrc, packet, |c, p| c.decrypt_rtcp(p).is_ok()) {
            return Err(Reject::Unauthentic);
        }
        self.rx
            .decrypt_rtcp(packet)
            .map(|b| b.to_vec())
            .map_err(|_| Reject::Unauthentic)
    }
}

/// SRTP was required and the peer would not (or offered only what we do
/// not speak): the call is refused with 488, or our leg hung up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the peer's media is not SRTP we can use, and SRTP is required")]
pub struct Refused;

use super::sdp::{AudioDescription, Profile};
use crate::config::SrtpPolicy;

/// How we answer a peer's offer: `Some` keys (with the offer's profile) to
/// key the leg, `None` for plain RTP, or refused.
pub fn answer(
    offer: &AudioDescription,
    policy: SrtpPolicy,
) -> Result<Option<(Keys, Profile)>, Refused> {
    let theirs = offer.crypto.first().filter(|_| policy != SrtpPolicy::Off);
    match (theirs, offer.profile, policy) {
        // RTP/SAVPF, UDP/TLS/RTP/SAVPF (DTLS-SRTP): not ours to answer.
        (_, Profile::Other, _) => Err(Refused),
        (Some(c), profile, _) => Ok(Some((
            Keys {
                local: Crypto::answering(c),
                remote: c.clone(),
            },
            profile,
        ))),
        // RTP/SAVP without a key we can use: there is no plain fallback.
        (None, Profile::Savp, _) | (None, _, SrtpPolicy::Required) => Err(Refused),
        (None, _, _) => Ok(None),
    }
}

/// The profile we offer SRTP in on a leg we place, or None for plain RTP.
/// Optional SRTP is offered best-effort (`RTP/AVP` with `a=crypto`, which
/// a phone without SRTP ignores) and only over TLS signalling: over UDP or
/// TCP the key would cross the network in the clear beside the media it
/// protects.
pub fn offer_profile(policy: SrtpPolicy, tls: bool) -> Option<Profile> {
    match policy {
        SrtpPolicy::Required => Some(Profile::Savp),
        SrtpPolicy::Optional if tls => Some(Profile::Avp),
        _ => None,
    }
}

/// A key of ours to offer (one per leg; its forks share it).
pub fn our_key() -> Crypto {
    Crypto::generate(1, Suite::AesCm128HmacSha1_80)
}

/// The keys of a leg we offered `ours` on, from the peer's answer: its key
/// for our tag and suite; plain RTP when we offered best-effort and it
/// declined; refused when SRTP was required.
pub fn from_answer(
    ours: Option<&(Crypto, Profile)>,
    answer: &AudioDescription,
    policy: SrtpPolicy,
) -> Result<Option<Keys>, Refused> {
    let Some((mine, profile)) = ours else {
        return Ok(None);
    };
    let theirs = answer
        .crypto
        .iter()
        .find(|c| c.tag == mine.tag && c.suite == mine.suite);
    match theirs {
        Some(c) => Ok(Some(Keys {
            local: mine.clone(),
            remote: c.clone(),
        })),
        None if *profile == Profile::Savp || policy == SrtpPolicy::Required => Err(Refused),
        None => Ok(None),
    }
}

/// How a leg keyed with `current` answers a re-offer (a re-INVITE: hold,
/// resume, a refresh): the keys and profile it goes on with (the same, or
/// the peer's new key: our own key stays, so our stream's packet index
/// and keystream carry on), plain RTP when the peer drops SRTP and that is
/// allowed, or refused (488) as for a first offer.
pub fn reanswer(
    current: Option<&(Keys, Profile)>,
    reoffer: &AudioDescription,
    policy: SrtpPolicy,
) -> Result<Option<(Keys, Profile)>, Refused> {
    let Some((keys, profile)) = current else {
        // A plain leg stays plain: what it offered first decided.
        return match reoffer.profile {
            Profile::Avp => Ok(None),
            _ => Err(Refused),
        };
    };
    if reoffer.crypto.contains(&keys.remote) {
        return Ok(Some((keys.clone(), *profile)));
    }
    match answer(reoffer, policy)? {
        None => Ok(None),
        Some((fresh, profile)) => {
            // Our key again when the suite allows, under the peer's tag.
            let local = if fresh.remote.suite == keys.local.suite {
                Crypto {
                    tag: fresh.remote.tag,
                    ..keys.local.clone()
                }
            } else {
                fresh.local
            };
            Ok(Some((
                Keys {
                    local,
                    remote: fresh.remote,
                },
                profile,
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4568 §9.1's example key line.
    const RFC_LINE: &str =
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32";

    fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0, (seq >> 8) as u8, seq as u8, 0, 0, 0, 160];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend(std::iter::repeat_n(0xffu8, 160));
        p
    }

    fn pair() -> (Session, Session) {
        let a = Crypto::generate(1, Suite::AesCm128HmacSha1_80);
        let b = Crypto::answering(&a);
        (
            Session::new(Keys {
                local: a.clone(),
                remote: b.clone(),
            })
            .unwrap(),
            Session::new(Keys {
                local: b,
                remote: a,
            })
            .unwrap(),
        )
    }

    #[test]
    fn lines_parse_and_round_trip() {
        // The RFC's line has an MKI: refused, never mis-keyed.
        assert_eq!(
            Crypto::parse(RFC_LINE),
            Err(CryptoError::Unsupported("an MKI"))
        );
        let c = Crypto::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20",
        )
        .unwrap();
        assert_eq!((c.tag, c.suite), (1, Suite::AesCm128HmacSha1_80));
        let line = c.attribute();
        let back = Crypto::parse(line.strip_prefix("a=crypto:").unwrap()).unwrap();
        assert_eq!(back, c);
        for bad in [
            "",
            "x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80 PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=",
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
            "1 F8_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTP",
        ] {
            assert!(Crypto::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_never_show_in_debug() {
        let c = Crypto::generate(1, Suite::AesCm128HmacSha1_80);
        let b64 = c.attribute();
        let key = b64.rsplit(':').next().unwrap();
        let dbg = format!(
            "{:?}",
            Keys {
                local: c.clone(),
                remote: c
            }
        );
        assert!(!dbg.contains(key), "{dbg}");
        assert!(dbg.contains("[secret]"));
    }

    #[test]
    fn packets_cross_encrypted_and_only_authentic_ones_are_accepted() {
        let (mut a, mut b) = pair();
        let plain = rtp(1, 0x1234);
        let mut wire = plain.clone();
        a.protect_rtp(&mut wire).unwrap();
        assert_eq!(wire.len(), plain.len() + 10, "80-bit tag");
        assert_ne!(&wire[12..172], &plain[12..172], "payload encrypted");
        assert_eq!(b.unprotect_rtp(&wire).unwrap(), plain);
        // A replay, a flipped bit, our own packet back: all refused.
        assert_eq!(b.unprotect_rtp(&wire), Err(Reject::Unauthentic));
        let mut next = rtp(2, 0x1234);
        a.protect_rtp(&mut next).unwrap();
        let mut tampered = next.clone();
        tampered[40] ^= 1;
        assert_eq!(b.unprotect_rtp(&tampered), Err(Reject::Unauthentic));
        assert!(b.unprotect_rtp(&next).is_ok());
        assert_eq!(a.unprotect_rtp(&next), Err(Reject::Unauthentic));
        assert_eq!(b.unprotect_rtp(&plain[..5]), Err(Reject::Unauthentic));
    }

    #[test]
    fn rtcp_crosses_encrypted() {
        let (mut a, mut b) = pair();
        // An empty receiver report from SSRC 0x1234.
        let plain = vec![0x80, 201, 0, 1, 0, 0, 0x12, 0x34];
        let mut wire = plain.clone();
        a.protect_rtcp(&mut wire).unwrap();
        assert!(wire.len() > plain.len());
        assert_eq!(b.unprotect_rtcp(&wire).unwrap(), plain);
    }

    fn described(profile: &str, crypto: &[&str]) -> AudioDescription {
        let mut sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 {profile} 0\r\n"
        );
        for c in crypto {
            sdp.push_str(&format!("a=crypto:{c}\r\n"));
        }
        AudioDescription::parse(&sdp).unwrap()
    }

    const KEY: &str = "AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";

    #[test]
    fn offers_are_answered_per_policy() {
        use SrtpPolicy::*;
        let keyed = described("RTP/AVP", &[&format!("1 {KEY}")]);
        let strict = described("RTP/SAVP", &[&format!("2 {KEY}")]);
        let plain = described("RTP/AVP", &[]);
        // Only an MKI line: nothing we can use.
        let unusable = described("RTP/SAVP", &[&format!("1 {KEY}|2^20|1:4")]);
        let (keys, profile) = answer(&keyed, Optional).unwrap().unwrap();
        assert_eq!(
            (keys.remote.tag, keys.local.tag, profile),
            (1, 1, Profile::Avp)
        );
        assert_ne!(
            keys.local, keys.remote,
            "our own key, not an echo of theirs"
        );
        let (keys, profile) = answer(&strict, Required).unwrap().unwrap();
        assert_eq!((keys.local.tag, profile), (2, Profile::Savp));
        assert_eq!(answer(&plain, Optional), Ok(None));
        assert_eq!(answer(&keyed, Off), Ok(None));
        assert_eq!(answer(&plain, Required), Err(Refused));
        assert_eq!(answer(&strict, Off), Err(Refused));
        assert_eq!(answer(&unusable, Optional), Err(Refused));
        let browser = described("RTP/SAVPF", &[&format!("1 {KEY}")]);
        assert_eq!(answer(&browser, Optional), Err(Refused));
    }

    #[test]
    fn our_offers_and_their_answers() {
        use SrtpPolicy::*;
        assert!(
            offer_profile(Optional, false).is_none(),
            "no key in the clear"
        );
        assert!(offer_profile(Off, true).is_none());
        let best = (our_key(), offer_profile(Optional, true).unwrap());
        assert_eq!(best.1, Profile::Avp);
        let strict = (our_key(), offer_profile(Required, false).unwrap());
        assert_eq!(strict.1, Profile::Savp);
        let their = format!("1 {KEY}");
        let keyed = described("RTP/AVP", &[&their]);
        let keys = from_answer(Some(&best), &keyed, Optional).unwrap().unwrap();
        assert_eq!(keys.local, best.0);
        assert_eq!(keys.remote, Crypto::parse(&their).unwrap());
        let plain = described("RTP/AVP", &[]);
        assert_eq!(from_answer(Some(&best), &plain, Optional), Ok(None));
        assert_eq!(from_answer(Some(&strict), &plain, Required), Err(Refused));
        let other_tag = described("RTP/AVP", &[&format!("7 {KEY}")]);
        assert_eq!(
            from_answer(Some(&strict), &other_tag, Required),
            Err(Refused)
        );
        assert_eq!(from_answer(None, &keyed, Optional), Ok(None));
    }

    #[test]
    fn re_offers_keep_or_change_the_keys() {
        use SrtpPolicy::*;
        let first = described("RTP/AVP", &[&format!("1 {KEY}")]);
        let current = answer(&first, Optional).unwrap().unwrap();
        // A hold with the same key: nothing changes.
        let same = reanswer(Some(&current), &first, Optional).unwrap().unwrap();
        assert_eq!(same, current);
        // The peer re-keys under another tag: its new key heard, ours kept.
        let other = Crypto::generate(2, Suite::AesCm128HmacSha1_80);
        let rekeyed = described(
            "RTP/AVP",
            &[other.attribute().strip_prefix("a=crypto:").unwrap()],
        );
        let (keys, _) = reanswer(Some(&current), &rekeyed, Optional)
            .unwrap()
            .unwrap();
        assert_eq!(keys.remote, other);
        assert_eq!(keys.local.tag, 2);
        assert_eq!(
            keys.local.key, current.0.local.key,
            "our stream's key goes on"
        );
        // Dropping SRTP: plain if allowed, else refused.
        let plain = described("RTP/AVP", &[]);
        assert_eq!(reanswer(Some(&current), &plain, Optional), Ok(None));
        assert_eq!(reanswer(Some(&current), &plain, Required), Err(Refused));
        // A plain leg does not turn SRTP mid-call.
        assert_eq!(reanswer(None, &plain, Optional), Ok(None));
        assert_eq!(reanswer(None, &rekeyed, Optional), Ok(None));
    }

    #[test]
    fn keyed_sdp_carries_the_profile_and_our_line() {
        let local: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let plain = super::super::sdp::write(
            local,
            1,
            &[(0, super::super::sdp::Codec::Pcmu)],
            Some(101),
            false,
        );
        let c = Crypto::generate(1, Suite::AesCm128HmacSha1_80);
        let text = super::super::sdp::keyed(&plain, Profile::Savp, &c);
        let back = AudioDescription::parse(&text).unwrap();
        assert_eq!(back.profile, Profile::Savp);
        assert_eq!(back.crypto, vec![c]);
        assert_eq!(back.payload_types, vec![0, 101]);
    }

    #[test]
    fn forged_packets_never_touch_the_real_stream_state() {
        let (mut a, mut b) = pair();
        for seq in 1..=3u16 {
            let mut p = rtp(seq, 0x1234);
            a.protect_rtp(&mut p).unwrap();
            b.unprotect_rtp(&p).unwrap();
        }
        let mut old = rtp(4, 0x1234);
        a.protect_rtp(&mut old).unwrap();
        assert!(b.unprotect_rtp(&old).is_ok());
        assert_eq!(b.unprotect_rtp(&old), Err(Reject::Unauthentic), "before");
        // A storm of forged streams (and forged RTCP) from anyone...
        for ssrc in 0..100u32 {
            let _ = b.unprotect_rtp(&rtp(1, ssrc));
            // An "unencrypted" SRTCP packet (E flag clear) with a junk tag,
            // which rtc-srtp alone would pass unchecked.
            let mut forged = vec![0x80, 201, 0, 1, 0, 0, 0, ssrc as u8];
            forged.extend_from_slice(&[0, 0, 0, 1]);
            forged.extend_from_slice(&[0; 10]);
            assert_eq!(b.unprotect_rtcp(&forged), Err(Reject::Unauthentic));
        }
        // ...and the real stream's replay window still holds.
        assert_eq!(b.unprotect_rtp(&old), Err(Reject::Unauthentic));
        let mut next = rtp(5, 0x1234);
        a.protect_rtp(&mut next).unwrap();
        assert!(b.unprotect_rtp(&next).is_ok());
        assert_eq!(b.rx_streams, vec![0x1234]);
    }

    #[test]
    fn a_spray_of_streams_keeps_the_state_bounded() {
        let (mut a, mut b) = pair();
        for ssrc in 0..1000u32 {
            let _ = b.unprotect_rtp(&rtp(1, ssrc));
            assert!(b.rx_streams.len() <= MAX_RX_STREAMS);
            assert!(b.probe_streams <= MAX_RX_STREAMS);
        }
        assert!(b.rx_resets > 100);
        // The real stream still gets through.
        let mut wire = rtp(7, 0x1234);
        a.protect_rtp(&mut wire).unwrap();
        assert!(b.unprotect_rtp(&wire).is_ok());
    }
}
