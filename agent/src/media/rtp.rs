//! RTP fixed header (RFC 3550 §5.1): parse and write. Peer input never panics.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("RTP packet shorter than its header")]
    Short,
    #[error("not RTP version 2")]
    Version,
    #[error("RTP padding or extension runs past the packet")]
    Length,
}

/// Parse a packet; returns the header and the payload slice.
pub fn parse(pkt: &[u8]) -> Result<(Header, &[u8]), RtpError> {
    if pkt.len() < 12 {
        return Err(RtpError::Short);
    }
    if pkt[0] >> 6 != 2 {
        return Err(RtpError::Version);
    }
    let padding = pkt[0] & 0x20 != 0;
    let extension = pkt[0] & 0x10 != 0;
    let cc = (pkt[0] & 0x0F) as usize;
    let mut start = 12 + cc * 4;
    if extension {
        if pkt.len() < start + 4 {
            return Err(RtpError::Length);
        }
        let words = u16::from_be_bytes([pkt[start + 2], pkt[start + 3]]) as usize;
        start += 4 + words * 4;
    }
    let mut end = pkt.len();
    if padding {
        let pad = pkt[pkt.len() - 1] as usize;
        if pad == 0 || pad > end {
            return Err(RtpError::Length);
        }
        end -= pad;
    }
    if start > end {
        return Err(RtpError::Length);
    }
    let h = Header {
        marker: pkt[1] & 0x80 != 0,
        payload_type: pkt[1] & 0x7F,
        sequence: u16::from_be_bytes([pkt[2], pkt[3]]),
        timestamp: u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]),
        ssrc: u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]),
    };
    Ok((h, &pkt[start..end]))
}

/// Write header + payload into `out` (cleared first).
pub fn write(h: &Header, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(0x80);
    out.push((h.marker as u8) << 7 | (h.payload_type & 0x7F));
    out.extend_from_slice(&h.sequence.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.extend_from_slice(&h.ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = Header {
            marker: true,
            payload_type: 8,
            sequence: 65535,
            timestamp: 0xDEADBEEF,
            ssrc: 42,
        };
        let mut buf = Vec::new();
        write(&h, &[1, 2, 3], &mut buf);
        let (g, p) = parse(&buf).unwrap();
        assert_eq!(g, h);
        assert_eq!(p, &[1, 2, 3]);
    }

    #[test]
    fn csrc_extension_and_padding_are_skipped() {
        let mut pkt = vec![0x80 | 0x20 | 0x10 | 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        pkt.extend([9, 9, 9, 9]); // one CSRC
        pkt.extend([0xBE, 0xDE, 0, 1, 7, 7, 7, 7]); // extension, one word
        pkt.extend([5, 6]); // payload
        pkt.extend([0, 2]); // two bytes of padding
        let (_, p) = parse(&pkt).unwrap();
        assert_eq!(p, &[5, 6]);
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(parse(&[0x80; 5]), Err(RtpError::Short));
        assert_eq!(parse(&[0x40; 12]), Err(RtpError::Version));
        let mut pkt = vec![0x80 | 0x0F; 12]; // 15 CSRCs claimed, none present
        pkt[1] = 0;
        assert_eq!(parse(&pkt), Err(RtpError::Length));
        let mut x: u32 = 1;
        for _ in 0..50_000 {
            let len = (x % 64) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (x >> 24) as u8 | 0x80
                })
                .collect();
            let _ = parse(&buf);
        }
    }
}
