//! Any datagram along the path to a call's first decision: our vetting,
//! then rsipstack's parser as the agent uses it, then, for an INVITE, the
//! SDP offer and the codec choice. Never panics; whatever the vetting
//! answers is a SIP response.
#![no_main]
use handlet_agent::sip::vet::{Verdict, vet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match vet(data) {
        Verdict::Respond(r) => assert!(r.starts_with("SIP/2.0 ")),
        Verdict::Drop(_) => {}
        Verdict::Pass => {
            if let Ok(rsipstack::sip::SipMessage::Request(req)) =
                rsipstack::sip::SipMessage::try_from(data)
                && req.method == rsipstack::sip::Method::Invite
            {
                let offer = String::from_utf8_lossy(req.body());
                if let Ok(d) = handlet_agent::media::sdp::AudioDescription::parse(&offer) {
                    let _ = d.choose();
                }
            }
        }
    }
});
