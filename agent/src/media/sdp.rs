//! Just enough SDP (RFC 4566 / 3264) for audio offer/answer: parse the peer's
//! offer or answer, choose a codec, and write ours. Peer input never panics.

use std::net::{IpAddr, SocketAddr};

/// Audio codecs the agent speaks, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
    /// G.722 (RFC 3551): 16 kHz audio on an 8 kHz RTP clock, "G722/8000".
    G722,
    /// Opus (RFC 7587): always a 48 kHz RTP clock and "/2" in SDP, sent mono.
    Opus,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
        }
    }
    /// RTP clock rate.
    pub fn rate(self) -> u32 {
        match self {
            Codec::Opus => 48000,
            _ => 8000,
        }
    }
    fn from_rtpmap(name: &str, rate: u32) -> Option<Codec> {
        match (name.to_ascii_uppercase().as_str(), rate) {
            ("PCMU", 8000) => Some(Codec::Pcmu),
            ("PCMA", 8000) => Some(Codec::Pcma),
            ("G722", 8000) => Some(Codec::G722),
            ("OPUS", 48000) => Some(Codec::Opus),
            _ => None,
        }
    }
}

/// Payload type we offer for RFC 4733 telephone-event.
pub const TELEPHONE_EVENT_PT: u8 = 101;

/// The audio part of a peer's session description.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioDescription {
    /// Where to send RTP.
    pub remote: SocketAddr,
    /// Payload types in the m= line, in the peer's order.
    pub payload_types: Vec<u8>,
    /// (payload type, encoding name, clock rate) from a=rtpmap.
    pub rtpmap: Vec<(u8, String, u32)>,
    /// Peer's telephone-event payload type, if offered.
    pub telephone_event: Option<u8>,
    pub ptime_ms: Option<u32>,
    /// `a=rtcp:` (RFC 3605): where the peer wants RTCP, if not port + 1.
    pub rtcp: Option<SocketAddr>,
    /// `a=rtcp-mux` (RFC 5761): the peer offers RTCP on the RTP port.
    pub rtcp_mux: bool,
    /// Which way the peer wants audio to flow (RFC 3264 §5.1): a phone
    /// putting a call on hold offers `sendonly` (or `inactive`).
    pub direction: MediaDirection,
    /// The m= line's transport: `RTP/AVP`, or `RTP/SAVP` (SRTP only).
    pub profile: Profile,
    /// Its usable `a=crypto` lines (SDES, RFC 4568), in the peer's order;
    /// lines we cannot use (other suites, MKIs) are left out.
    pub crypto: Vec<super::srtp::Crypto>,
}

/// The transport of an audio m= line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// `RTP/AVP`: plain RTP, or SRTP when both sides add `a=crypto`
    /// (what phones do when SRTP is optional).
    #[default]
    Avp,
    /// `RTP/SAVP`: SRTP or nothing.
    Savp,
    /// Anything else (`RTP/SAVPF` of a browser, `UDP/TLS/...`): not ours.
    Other,
}

impl Profile {
    fn parse(s: &str) -> Profile {
        match s {
            "RTP/AVP" => Profile::Avp,
            "RTP/SAVP" => Profile::Savp,
            _ => Profile::Other,
        }
    }
}

/// `a=crypto` lines kept from one m= line.
const MAX_CRYPTO: usize = 8;

/// `a=sendrecv` (the default), `a=sendonly`, `a=recvonly`, `a=inactive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaDirection {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl MediaDirection {
    fn parse(s: &str) -> Option<MediaDirection> {
        Some(match s {
            "sendrecv" => MediaDirection::SendRecv,
            "sendonly" => MediaDirection::SendOnly,
            "recvonly" => MediaDirection::RecvOnly,
            "inactive" => MediaDirection::Inactive,
            _ => return None,
        })
    }

    /// What we answer to an offer with this direction.
    pub fn answer(self) -> MediaDirection {
        match self {
            MediaDirection::SendOnly => MediaDirection::RecvOnly,
            MediaDirection::RecvOnly => MediaDirection::SendOnly,
            d => d,
        }
    }

    /// Does the offerer put us on hold (it will not listen, or send)?
    pub fn is_hold(self) -> bool {
        matches!(self, MediaDirection::SendOnly | MediaDirection::Inactive)
    }

    fn attribute(self) -> &'static str {
        match self {
            MediaDirection::SendRecv => "a=sendrecv",
            MediaDirection::SendOnly => "a=sendonly",
            MediaDirection::RecvOnly => "a=recvonly",
            MediaDirection::Inactive => "a=inactive",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP has no audio media line")]
    NoAudio,
    #[error("SDP has no usable connection address")]
    NoAddress,
    #[error("SDP line {0} is malformed")]
    Malformed(usize),
    #[error("no common codec (we speak G.722, PCMU, PCMA and Opus)")]
    NoCommonCodec,
    /// `m=audio 0`: the stream is declined, not something to send to.
    #[error("SDP audio stream is disabled (port 0)")]
    Disabled,
    /// Unspecified, broadcast or multicast: not a peer to send media to.
    #[error("SDP connection address {0} cannot receive our audio")]
    BadAddress(IpAddr),
    #[error("SDP is {0} bytes or lines over the limit")]
    TooLarge(usize),
}

/// Bounds on a peer's SDP: a real offer is well under 2 KB and 40 lines.
pub const MAX_SDP_BYTES: usize = 8 * 1024;
pub const MAX_SDP_LINES: usize = 128;
/// Payload types and rtpmap entries kept from one m= line.
const MAX_FORMATS: usize = 32;

/// True for an address a peer may name as its RTP destination.
fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

impl AudioDescription {
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        if text.len() > MAX_SDP_BYTES {
            return Err(SdpError::TooLarge(text.len() - MAX_SDP_BYTES));
        }
        let lines = text.lines().count();
        if lines > MAX_SDP_LINES {
            return Err(SdpError::TooLarge(lines - MAX_SDP_LINES));
        }
        let mut session_addr: Option<IpAddr> = None;
        let mut media_addr: Option<IpAddr> = None;
        let mut in_audio = false;
        let mut seen_audio = false;
        let mut port = None;
        let mut pts = Vec::new();
        let mut rtpmap = Vec::new();
        let mut ptime = None;
        let mut rtcp_attr: Option<(u16, Option<IpAddr>)> = None;
        let mut rtcp_mux = false;
        let mut session_dir = None;
        let mut media_dir = None;
        let mut profile = Profile::Avp;
        let mut crypto = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            let Some((kind, value)) = line.split_once('=') else {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(SdpError::Malformed(i + 1));
            };
            match kind {
                "m" => {
                    in_audio = false;
                    let mut parts = value.split_whitespace();
                    if parts.next() == Some("audio") && !seen_audio {
                        let p: u16 = parts
                            .next()
                            .and_then(|p| p.split('/').next()?.parse().ok())
                            .ok_or(SdpError::Malformed(i + 1))?;
                        profile = Profile::parse(parts.next().ok_or(SdpError::Malformed(i + 1))?);
                        pts = parts
                            .filter_map(|p| p.parse::<u8>().ok())
                            .filter(|p| *p < 128)
                            .take(MAX_FORMATS)
                            .collect();
                        port = Some(p);
                        in_audio = true;
                        seen_audio = true;
                    }
                }
                "c" => {
                    // c=IN IP4 192.0.2.1
                    let addr = value
                        .split_whitespace()
                        .nth(2)
                        .and_then(|a| a.split('/').next()?.parse::<IpAddr>().ok());
                    if in_audio {
                        media_addr = addr.or(media_addr);
                    } else if !seen_audio {
                        session_addr = addr;
                    }
                }
                "a" if !in_audio && !seen_audio => {
                    session_dir = MediaDirection::parse(value.trim()).or(session_dir);
                }
                "a" if in_audio => {
                    if let Some(d) = MediaDirection::parse(value.trim()) {
                        media_dir = Some(d);
                    } else if let Some(v) = value.strip_prefix("rtpmap:") {
                        let mut it = v.splitn(2, ' ');
                        let pt = it.next().and_then(|p| p.trim().parse::<u8>().ok());
                        let enc = it.next().unwrap_or("");
                        let mut e = enc.split('/');
                        let name = e.next().unwrap_or("").to_string();
                        let rate = e.next().and_then(|r| r.parse::<u32>().ok()).unwrap_or(0);
                        if let Some(pt) = pt
                            && rtpmap.len() < MAX_FORMATS
                        {
                            rtpmap.push((pt, name, rate));
                        }
                    } else if let Some(v) = value.strip_prefix("ptime:") {
                        ptime = v.trim().parse().ok();
                    } else if let Some(v) = value.strip_prefix("crypto:") {
                        if let Ok(c) = super::srtp::Crypto::parse(v)
                            && crypto.len() < MAX_CRYPTO
                        {
                            crypto.push(c);
                        }
                    } else if value == "rtcp-mux" {
                        rtcp_mux = true;
                    } else if let Some(v) = value.strip_prefix("rtcp:") {
                        // a=rtcp:53020 [IN IP4 126.16.64.4]; a bad one is ignored.
                        let mut it = v.split_whitespace();
                        if let Some(p) = it.next().and_then(|p| p.parse::<u16>().ok()) {
                            let ip = it.nth(2).and_then(|a| a.parse::<IpAddr>().ok());
                            rtcp_attr = Some((p, ip));
                        }
                    }
                }
                _ => {}
            }
        }
        let port = port.ok_or(SdpError::NoAudio)?;
        if port == 0 {
            return Err(SdpError::Disabled);
        }
        let ip = media_addr.or(session_addr).ok_or(SdpError::NoAddress)?;
        if !usable(ip) {
            return Err(SdpError::BadAddress(ip));
        }
        let telephone_event = rtpmap
            .iter()
            .find(|(pt, name, rate)| {
                name.eq_ignore_ascii_case("telephone-event") && *rate == 8000 && pts.contains(pt)
            })
            .map(|(pt, _, _)| *pt);
        // An RTCP address we could not send to is ignored, not obeyed.
        let rtcp = rtcp_attr
            .filter(|(p, _)| *p != 0)
            .map(|(p, a)| SocketAddr::new(a.unwrap_or(ip), p))
            .filter(|a| usable(a.ip()) && a.is_ipv4() == ip.is_ipv4());
        Ok(AudioDescription {
            rtcp,
            rtcp_mux,
            direction: media_dir.or(session_dir).unwrap_or_default(),
            remote: SocketAddr::new(ip, port),
            payload_types: pts,
            rtpmap,
            telephone_event,
            ptime_ms: ptime,
            profile,
            crypto,
        })
    }

    /// The codec for a payload type, by rtpmap or static assignment.
    pub fn codec_of(&self, pt: u8) -> Option<Codec> {
        if let Some((_, name, rate)) = self.rtpmap.iter().find(|(p, _, _)| *p == pt) {
            return Codec::from_rtpmap(name, *rate);
        }
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            9 => Some(Codec::G722),
            _ => None,
        }
    }

    /// Where to send RTCP: the RTP address with rtcp-mux, else `a=rtcp`,
    /// else the RTP port + 1 (RFC 3550 §11).
    pub fn rtcp_remote(&self) -> SocketAddr {
        if self.rtcp_mux {
            return self.remote;
        }
        self.rtcp.unwrap_or_else(|| {
            SocketAddr::new(self.remote.ip(), self.remote.port().wrapping_add(1))
        })
    }

    /// First payload type in the peer's order that we support (RFC 3264 §6.1).
    pub fn choose(&self) -> Result<(u8, Codec), SdpError> {
        self.payload_types
            .iter()
            .find_map(|&pt| self.codec_of(pt).map(|c| (pt, c)))
            .ok_or(SdpError::NoCommonCodec)
    }
}

/// Our session description `sdp` (from [`write`]) keyed for SRTP: the m=
/// line's transport set to `profile` and our `a=crypto` line added. The
/// key is in the text: it goes only into signalling, never into a log.
pub fn keyed(sdp: &str, profile: Profile, crypto: &super::srtp::Crypto) -> String {
    let proto = match profile {
        Profile::Savp => "RTP/SAVP",
        _ => "RTP/AVP",
    };
    let mut out = String::with_capacity(sdp.len() + 80);
    for line in sdp.split_inclusive("\r\n") {
        if let Some(rest) = line.strip_prefix("m=audio ")
            && let Some((port, formats)) = rest.split_once(" RTP/AVP ")
        {
            out.push_str(&format!("m=audio {port} {proto} {formats}"));
            out.push_str(&crypto.attribute());
            out.push_str("\r\n");
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Our session description, as an answer (one codec) or an offer (several).
pub fn write(
    local: SocketAddr,
    session_id: u64,
    codecs: &[(u8, Codec)],
    telephone_event: Option<u8>,
    rtcp_mux: bool,
) -> String {
    write_directed(
        local,
        (session_id, session_id),
        codecs,
        telephone_event,
        rtcp_mux,
        MediaDirection::SendRecv,
    )
}

/// [`write`], with the media direction given (a hold's answer) and the
/// session's (id, version): a changed description of the same session
/// keeps its id and has a higher version (RFC 3264 §8).
pub fn write_directed(
    local: SocketAddr,
    (session_id, version): (u64, u64),
    codecs: &[(u8, Codec)],
    telephone_event: Option<u8>,
    rtcp_mux: bool,
    direction: MediaDirection,
) -> String {
    let ip_kind = if local.is_ipv4() { "IP4" } else { "IP6" };
    let ip = local.ip();
    let mut pts: Vec<String> = codecs.iter().map(|(pt, _)| pt.to_string()).collect();
    if let Some(te) = telephone_event {
        pts.push(te.to_string());
    }
    let mut s = format!(
        "v=0\r\no=handlet {session_id} {version} IN {ip_kind} {ip}\r\ns=handlet\r\nc=IN {ip_kind} {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP {}\r\n",
        local.port(),
        pts.join(" ")
    );
    for (pt, c) in codecs {
        if *c == Codec::Opus {
            s.push_str(&format!(
                "a=rtpmap:{pt} opus/48000/2\r\na=fmtp:{pt} useinbandfec=1\r\n"
            ));
        } else {
            s.push_str(&format!("a=rtpmap:{pt} {}/{}\r\n", c.name(), c.rate()));
        }
    }
    if let Some(te) = telephone_event {
        s.push_str(&format!(
            "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"
        ));
    }
    if rtcp_mux {
        s.push_str("a=rtcp-mux\r\n");
    }
    s.push_str("a=ptime:20\r\n");
    s.push_str(direction.attribute());
    s.push_str("\r\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_is_read_from_the_media_or_session_direction_and_answered() {
        let base = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n";
        let m = "m=audio 10000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        let d = |s: &str| AudioDescription::parse(s).unwrap().direction;
        assert_eq!(d(&format!("{base}{m}")), MediaDirection::SendRecv);
        assert_eq!(
            d(&format!("{base}{m}a=sendonly\r\n")),
            MediaDirection::SendOnly
        );
        assert_eq!(
            d(&format!("{base}a=inactive\r\n{m}")),
            MediaDirection::Inactive
        );
        assert_eq!(
            d(&format!("{base}a=inactive\r\n{m}a=sendrecv\r\n")),
            MediaDirection::SendRecv,
            "the media's own attribute wins"
        );
        assert!(MediaDirection::SendOnly.is_hold() && MediaDirection::Inactive.is_hold());
        assert_eq!(MediaDirection::SendOnly.answer(), MediaDirection::RecvOnly);
        let ans = write_directed(
            "127.0.0.1:20000".parse().unwrap(),
            (1, 2),
            &[(0, Codec::Pcmu)],
            None,
            false,
            MediaDirection::RecvOnly,
        );
        assert!(
            ans.contains("a=recvonly\r\n") && !ans.contains("sendrecv"),
            "{ans}"
        );
        assert_eq!(d(&ans), MediaDirection::RecvOnly);
    }

    const BARESIP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 10000 RTP/AVP 9 0 8 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

    #[test]
    fn parses_a_typical_offer() {
        let d = AudioDescription::parse(BARESIP).unwrap();
        assert_eq!(d.remote, "127.0.0.1:10000".parse().unwrap());
        assert_eq!(d.payload_types, vec![9, 0, 8, 101]);
        assert_eq!(d.telephone_event, Some(101));
        // A desk phone lists wideband G.722 first; we take it.
        assert_eq!(d.choose().unwrap(), (9, Codec::G722));
        // Static payload type 9 needs no rtpmap line (RFC 3551).
        let bare =
            AudioDescription::parse(&BARESIP.replace("a=rtpmap:9 G722/8000\r\n", "")).unwrap();
        assert_eq!(bare.choose().unwrap(), (9, Codec::G722));
        let answer = write(
            "127.0.0.1:4000".parse().unwrap(),
            1,
            &[(9, Codec::G722)],
            None,
            false,
        );
        assert!(answer.contains("a=rtpmap:9 G722/8000\r\n"), "{answer}");
    }

    #[test]
    fn follows_the_peers_preference() {
        let d =
            AudioDescription::parse(&BARESIP.replace("RTP/AVP 9 0 8 101", "RTP/AVP 8 0")).unwrap();
        assert_eq!(d.choose().unwrap(), (8, Codec::Pcma));
    }

    #[test]
    fn media_level_address_wins() {
        let s = BARESIP.replace("a=ptime:20", "c=IN IP4 10.0.0.9\r\na=ptime:20");
        assert_eq!(
            AudioDescription::parse(&s).unwrap().remote.ip().to_string(),
            "10.0.0.9"
        );
    }

    #[test]
    fn opus_is_chosen_when_offered_first_and_answered_with_fec() {
        let offer = BARESIP
            .replace("RTP/AVP 9 0 8 101", "RTP/AVP 111 0 101")
            .replace("a=rtpmap:9 G722/8000", "a=rtpmap:111 opus/48000/2");
        let d = AudioDescription::parse(&offer).unwrap();
        assert_eq!(d.choose().unwrap(), (111, Codec::Opus));
        let answer = write(
            "127.0.0.1:20000".parse().unwrap(),
            1,
            &[(111, Codec::Opus)],
            Some(101),
            false,
        );
        assert!(
            answer.contains("a=rtpmap:111 opus/48000/2") && answer.contains("useinbandfec=1"),
            "{answer}"
        );
        assert_eq!(
            AudioDescription::parse(&answer).unwrap().choose().unwrap(),
            (111, Codec::Opus)
        );
    }

    #[test]
    fn no_common_codec_is_an_error() {
        // G.729 (static 18) and GSM (static 3) only.
        let d =
            AudioDescription::parse(&BARESIP.replace("RTP/AVP 9 0 8 101", "RTP/AVP 18 3")).unwrap();
        assert_eq!(d.choose(), Err(SdpError::NoCommonCodec));
    }

    #[test]
    fn our_answer_parses_back() {
        let s = write(
            "127.0.0.1:20000".parse().unwrap(),
            7,
            &[(0, Codec::Pcmu)],
            Some(101),
            false,
        );
        let d = AudioDescription::parse(&s).unwrap();
        assert_eq!(d.choose().unwrap(), (0, Codec::Pcmu));
        assert_eq!(d.telephone_event, Some(101));
    }

    #[test]
    fn rtcp_goes_to_port_plus_one_or_where_the_peer_says() {
        let d = AudioDescription::parse(BARESIP).unwrap();
        assert_eq!(d.rtcp_remote(), "127.0.0.1:10001".parse().unwrap());
        let with = |attr: &str| {
            AudioDescription::parse(
                &BARESIP.replace("a=ptime:20", &format!("{attr}\r\na=ptime:20")),
            )
            .unwrap()
        };
        assert_eq!(
            with("a=rtcp:53020").rtcp_remote(),
            "127.0.0.1:53020".parse().unwrap()
        );
        assert_eq!(
            with("a=rtcp:53020 IN IP4 10.1.2.3").rtcp_remote(),
            "10.1.2.3:53020".parse().unwrap()
        );
        let mux = with("a=rtcp-mux");
        assert!(mux.rtcp_mux);
        assert_eq!(mux.rtcp_remote(), mux.remote);
        // Addresses RTP would refuse are ignored for RTCP too.
        for bad in [
            "a=rtcp:0",
            "a=rtcp:9 IN IP4 224.0.0.1",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=rtcp:x",
        ] {
            assert_eq!(
                with(bad).rtcp_remote(),
                "127.0.0.1:10001".parse().unwrap(),
                "{bad}"
            );
        }
        let ours = write(
            "127.0.0.1:20000".parse().unwrap(),
            1,
            &[(0, Codec::Pcmu)],
            None,
            true,
        );
        assert!(AudioDescription::parse(&ours).unwrap().rtcp_mux);
    }

    #[test]
    fn streams_that_cannot_be_sent_to_are_refused() {
        let with = |from: &str, to: &str| AudioDescription::parse(&BARESIP.replace(from, to));
        assert_eq!(with("audio 10000", "audio 0"), Err(SdpError::Disabled));
        for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "239.1.2.3"] {
            assert!(
                matches!(
                    with("IP4 127.0.0.1\r\nt", &format!("IP4 {bad}\r\nt")),
                    Err(SdpError::BadAddress(_))
                ),
                "{bad}"
            );
        }
        for bad in ["::", "ff02::1"] {
            assert!(matches!(
                with("c=IN IP4 127.0.0.1", &format!("c=IN IP6 {bad}")),
                Err(SdpError::BadAddress(_))
            ));
        }
        assert!(with("c=IN IP4 127.0.0.1", "c=IN IP6 2001:db8::5").is_ok());
        // é in a session name is fine (SDP is UTF-8).
        assert!(with("s=-", "s=caf\u{e9} \u{2615}").is_ok());
    }

    #[test]
    fn oversized_sdp_is_refused_and_format_lists_are_bounded() {
        let many = format!("{BARESIP}{}", "a=x-junk:1\r\n".repeat(MAX_SDP_LINES));
        assert!(matches!(
            AudioDescription::parse(&many),
            Err(SdpError::TooLarge(_))
        ));
        let huge = format!("{BARESIP}a=x-junk:{}\r\n", "z".repeat(MAX_SDP_BYTES));
        assert!(matches!(
            AudioDescription::parse(&huge),
            Err(SdpError::TooLarge(_))
        ));
        let pts: Vec<String> = (0..120).map(|p| p.to_string()).collect();
        let long = BARESIP.replace("RTP/AVP 9 0 8 101", &format!("RTP/AVP {}", pts.join(" ")));
        let d = AudioDescription::parse(&long).unwrap();
        assert_eq!(d.payload_types.len(), MAX_FORMATS);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 7;
        let alphabet = b"vmcat=IN IP4 audio RTP/AVP 0 8 101 rtpmap:/\r\n. 1234567890";
        for _ in 0..20_000 {
            let len = (x % 200) as usize;
            let s: String = (0..len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    alphabet[(x >> 33) as usize % alphabet.len()] as char
                })
                .collect();
            let _ = AudioDescription::parse(&s);
        }
    }
}
