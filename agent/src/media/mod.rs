//! Media: SDP offer/answer, RTP parsing, and the per-leg RTP task that feeds the
//! audio path (reorder → decode → 16 kHz → a frame sink).

pub mod decode;
pub mod handoff;
pub mod leg;
pub mod outgoing;
pub mod rtcp;
pub mod rtp;
pub mod rtp_leg;
pub mod sdp;
pub mod sink;
pub mod srtp;

use std::net::{IpAddr, SocketAddr};
use tokio::net::UdpSocket;

/// Bind an RTP socket on an even port in the configured range and, unless
/// RTCP is muxed onto it, an RTCP socket on the next port (RFC 3550 §11).
pub async fn bind_rtp(
    ip: IpAddr,
    min: u16,
    max: u16,
    with_rtcp: bool,
) -> Result<(UdpSocket, Option<UdpSocket>), crate::Error> {
    let span = (max - min) as u32 + 1;
    let offset = rand::random::<u32>() % span;
    for i in 0..span {
        let port = min as u32 + (offset + i) % span;
        if port % 2 == 1 || port >= u16::MAX as u32 || (with_rtcp && port + 1 > max as u32) {
            continue;
        }
        let Ok(rtp) = UdpSocket::bind(SocketAddr::new(ip, port as u16)).await else {
            continue;
        };
        if !with_rtcp {
            return Ok((rtp, None));
        }
        if let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(ip, port as u16 + 1)).await {
            return Ok((rtp, Some(rtcp)));
        }
    }
    Err(crate::Error::Bind(format!(
        "no free RTP port in {ip}:{min}-{max}; widen media.rtp_port_min/max"
    )))
}
