//! Media: SDP offer/answer, RTP parsing, and the per-leg RTP task that feeds the
//! audio path (reorder → decode → 16 kHz → a frame sink).

pub mod decode;
pub mod handoff;
pub mod leg;
pub mod rtp;
pub mod rtp_leg;
pub mod sdp;
pub mod sink;

use std::net::{IpAddr, SocketAddr};
use tokio::net::UdpSocket;

/// Bind an RTP socket on an even port in the configured range.
pub async fn bind_rtp(ip: IpAddr, min: u16, max: u16) -> Result<UdpSocket, crate::Error> {
    let span = (max - min) as u32 + 1;
    let offset = rand::random::<u32>() % span;
    for i in 0..span {
        let port = min as u32 + (offset + i) % span;
        if port % 2 == 1 || port > u16::MAX as u32 {
            continue;
        }
        if let Ok(s) = UdpSocket::bind(SocketAddr::new(ip, port as u16)).await {
            return Ok(s);
        }
    }
    Err(crate::Error::Bind(format!(
        "no free RTP port in {ip}:{min}-{max}; widen media.rtp_port_min/max"
    )))
}
