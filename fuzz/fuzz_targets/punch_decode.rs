//! The hard-NAT punch's formats: the hint line among a blob's candidates
//! and the punch's STUN messages off the network. Bad input gives an
//! error, never a panic; a hint reads back from its own line; a request
//! that verifies is answered with a response no larger than it (no
//! amplification) that verifies at the peer. Requests made from the input
//! (its bytes as transaction id and socket index) reach the decoder past
//! the integrity check, where random bytes never get.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerport::stun::punch::{
    hint::Hint,
    wire::{self, Keys, Kind, Punch, Role},
};

fn keys() -> (Keys, Keys) {
    let (pa, pb) = ("pa-0123456789abcdefghij", "pb-0123456789abcdefghij");
    (Keys::new("ua", pa, "ub", pb), Keys::new("ub", pb, "ua", pa))
}

/// `a` answers what arrives; its answer must verify at `b`.
fn answer(a: &Keys, b: &Keys, bytes: &[u8]) {
    let Ok(req) = wire::parse_request(a, bytes) else {
        return;
    };
    let from = "198.18.0.12:20004".parse().unwrap();
    let resp = wire::response(a, &req, from, Role::Controlled);
    assert!(resp.len() <= bytes.len(), "a response larger than its request");
    let r = wire::parse_response(b, &resp).expect("our own response verifies");
    assert_eq!((r.tid, r.punch.kind, r.mapped), (req.tid, req.punch.kind, from));
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines().take(64) {
            if let Some(Ok(h)) = Hint::parse(line) {
                assert_eq!(Hint::parse(&h.line()), Some(Ok(h)), "{line}");
            }
        }
    }
    let (a, b) = keys();
    let _ = wire::parse_response(&a, data);
    answer(&a, &b, data);
    if data.len() >= 15 {
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&data[..12]);
        let punch = Punch {
            kind: if data[12] & 1 == 0 { Kind::Probe } else { Kind::Nominate },
            role: if data[12] & 2 == 0 { Role::Controlling } else { Role::Controlled },
            index: u16::from_be_bytes([data[13], data[14]]),
        };
        let req = wire::request(&b, tid, punch);
        let got = wire::parse_request(&a, &req).expect("a request made for us verifies");
        assert_eq!((got.tid, got.punch), (tid, punch));
        answer(&a, &b, &req);
        // not for the other side, and not a response
        assert!(wire::parse_request(&b, &req).is_err());
        assert!(wire::parse_response(&a, &req).is_err());
    }
});
