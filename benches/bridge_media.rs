//! CPU per bridged call in the media path: the two sans-IO legs of a
//! bridge (`media::rtp_leg`), the caller's and the answering phone's, each
//! taking its peer's 50 packets a second and sending 50 back, for one
//! minute of call: relayed packet for packet (same codec), relayed with
//! SRTP on both legs, and transcoded (PCMU caller, G.722 phone). The
//! phones' packets are made beforehand by legs of their own playing a
//! tone, so only the box's work is timed. Socket system calls, the
//! transcription and the recording are not in these figures (the
//! `recording` and `whisper` benches measure those).
//!
//! `cargo bench --bench bridge_media` (HANDLET_BENCH_CALL_SECS=60 the
//! simulated call length, HANDLET_BENCH_RUNS=5 how many calls per case).

use handlet_agent::media::rtp_leg::{RtpLeg, RtpLegConfig, pcm_rate};
use handlet_agent::media::sdp::Codec;
use handlet_agent::media::srtp::{Crypto, Keys, Session, Suite};
use std::net::SocketAddr;
use std::time::Instant;

fn config(codec: Codec, pt: u8, remote: SocketAddr, srtp: Option<Keys>) -> RtpLegConfig {
    RtpLegConfig {
        codec,
        payload_type: pt,
        telephone_event: Some(101),
        remote,
        symmetric: true,
        min_delay_ms: 20,
        max_delay_ms: 200,
        timeout_ms: 3_600_000,
        ssrc: rand_u32(),
        first_seq: 1,
        first_ts: 0,
        rtcp_remote: SocketAddr::new(remote.ip(), remote.port() + 1),
        rtcp_mux: false,
        wall_ms: 1_796_126_400_000,
        srtp,
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish() as u32
}

/// One minute (or `secs`) of a phone's packets in `codec`: a 440 Hz tone
/// at speech level, protected with `srtp` when given.
fn phone_packets(codec: Codec, pt: u8, secs: u64, mut srtp: Option<Session>) -> Vec<Vec<u8>> {
    let to: SocketAddr = "127.0.0.1:30000".parse().unwrap();
    let mut leg = RtpLeg::new(config(codec, pt, to, None), 0).unwrap();
    let rate = pcm_rate(codec) as f32;
    let tone: Vec<f32> = (0..(rate as u64 * secs) as usize)
        .map(|i| 0.3 * (i as f32 * 440.0 * std::f32::consts::TAU / rate).sin())
        .collect();
    leg.play(tone).unwrap();
    leg.start_sending(0);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for t in (0..secs * 1000).step_by(20) {
        leg.handle_timeout(t);
        while leg.poll_transmit(t, &mut buf).is_some() {
            let mut p = buf.clone();
            if let Some(s) = srtp.as_mut() {
                s.protect_rtp(&mut p).unwrap();
            }
            out.push(p);
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Case {
    Relay,
    RelaySrtp,
    Transcode,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Relay => "relay (PCMU both legs)",
            Case::RelaySrtp => "relay, SRTP on both legs",
            Case::Transcode => "transcode (PCMU caller, G.722 phone)",
        }
    }
}

/// Keys for one leg (the box's side) and its phone's side.
fn keys() -> (Keys, Session) {
    let ours = Crypto::generate(1, Suite::AesCm128HmacSha1_80);
    let theirs = Crypto::generate(1, Suite::AesCm128HmacSha1_80);
    let phone = Session::new(Keys {
        local: theirs.clone(),
        remote: ours.clone(),
    })
    .unwrap();
    (
        Keys {
            local: ours,
            remote: theirs,
        },
        phone,
    )
}

/// Seconds of CPU the box's two legs take for one call of `secs`.
fn one_call(case: Case, secs: u64) -> (f64, u64) {
    let caller_addr: SocketAddr = "127.0.0.1:30000".parse().unwrap();
    let phone_addr: SocketAddr = "127.0.0.1:30002".parse().unwrap();
    let (b_codec, b_pt) = match case {
        Case::Transcode => (Codec::G722, 9),
        _ => (Codec::Pcmu, 0),
    };
    let (a_keys, b_keys, a_phone, b_phone) = match case {
        Case::RelaySrtp => {
            let (a, ap) = keys();
            let (b, bp) = keys();
            (Some(a), Some(b), Some(ap), Some(bp))
        }
        _ => (None, None, None, None),
    };
    let from_caller = phone_packets(Codec::Pcmu, 0, secs, a_phone);
    let from_phone = phone_packets(b_codec, b_pt, secs, b_phone);
    let relay = !matches!(case, Case::Transcode);
    let mut a = RtpLeg::new(config(Codec::Pcmu, 0, caller_addr, a_keys), 0).unwrap();
    let mut b = RtpLeg::new(config(b_codec, b_pt, phone_addr, b_keys), 0).unwrap();
    a.set_bridged(true, relay).unwrap();
    b.set_bridged(true, relay).unwrap();
    a.start_sending(0);
    b.start_sending(0);
    let mut buf = Vec::with_capacity(1500);
    let mut sent = 0u64;
    let started = Instant::now();
    for (i, t) in (0..secs * 1000).step_by(20).enumerate() {
        if let Some(p) = from_caller.get(i) {
            a.handle_datagram(t, caller_addr, p);
        }
        if let Some(p) = from_phone.get(i) {
            b.handle_datagram(t, phone_addr, p);
        }
        a.handle_timeout(t);
        b.handle_timeout(t);
        if relay {
            while let Some(p) = a.poll_forward() {
                b.relay(p, t);
            }
            while let Some(p) = b.poll_forward() {
                a.relay(p, t);
            }
        } else {
            let pa = std::mem::take(a.audio());
            let pb = std::mem::take(b.audio());
            b.feed(&pa);
            a.feed(&pb);
        }
        // What the taps would take (transcription and the recording).
        a.audio().clear();
        b.audio().clear();
        for leg in [&mut a, &mut b] {
            while leg.poll_transmit(t, &mut buf).is_some() {
                sent += 1;
            }
            while leg.poll_transmit_rtcp(t, &mut buf).is_some() {}
        }
    }
    (started.elapsed().as_secs_f64(), sent)
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let secs = env("HANDLET_BENCH_CALL_SECS", 60);
    let runs = env("HANDLET_BENCH_RUNS", 5);
    println!("media path of one bridged call, {secs} s of call, {runs} calls per case");
    println!("| case | CPU per call (% of one core) | packets sent per s |");
    println!("|---|---|---|");
    for case in [Case::Relay, Case::RelaySrtp, Case::Transcode] {
        let mut cpu: Vec<f64> = Vec::new();
        let mut sent = 0;
        for _ in 0..runs {
            let (s, n) = one_call(case, secs);
            cpu.push(s / secs as f64 * 100.0);
            sent = n;
        }
        cpu.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = cpu[cpu.len() / 2];
        println!(
            "| {} | {median:.3} % (min {:.3}, max {:.3}) | {:.0} |",
            case.name(),
            cpu[0],
            cpu[cpu.len() - 1],
            sent as f64 / secs as f64
        );
    }
}
