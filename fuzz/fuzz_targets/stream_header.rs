//! The header that opens every QUIC stream (`Request`, from the receiver,
//! with its TLVs and wants) and the sender's `Reply`: decoded from a
//! buffer and read off a stream, re-encoded, and the wants checked
//! against a sender's rules. Bad bytes are an error, never a panic.
#![no_main]

mod common;

use std::sync::OnceLock;

use common::block_on;
use libfuzzer_sys::fuzz_target;
use peerport::{
    engine::{
        io::{read_reply, read_request},
        policy::{AllowRule, Catalog, Service},
    },
    proto::header::{Reply, Request, MAX_BODY},
};

fn catalog() -> &'static Catalog {
    static C: OnceLock<Catalog> = OnceLock::new();
    C.get_or_init(|| {
        let services = vec![
            Service::new("", "tcp://127.0.0.1:22".parse().unwrap()),
            Service::new("dns", "udp://127.0.0.1:53".parse().unwrap()),
        ];
        let allow = ["10.0.0.0/8:22,443", "[fd00::/64]:1-1000", "db.internal:*"]
            .iter()
            .map(|r| r.parse::<AllowRule>().unwrap())
            .collect();
        Catalog::new(services, allow).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    match Request::decode(data) {
        Ok(Some((req, n))) => {
            assert!((6..=data.len()).contains(&n));
            // a shorter prefix of a whole header asks for more bytes
            for cut in (0..n.min(8)).chain([n - 1]) {
                assert_eq!(Request::decode(&data[..cut]), Ok(None), "cut {cut}");
            }
            // reading it off a stream takes exactly the same header
            let mut stream = data;
            assert_eq!(block_on(read_request(&mut stream)).unwrap(), req);
            assert_eq!(stream.len(), data.len() - n);
            // round trip: what was decoded encodes to a header that decodes
            // to the same (unknown and repeated tags are gone)
            let enc = req.encode();
            if enc.len() - 6 <= MAX_BODY {
                assert_eq!(Request::decode(&enc), Ok(Some((req.clone(), enc.len()))));
                assert_eq!(Request::decode(&enc).unwrap().unwrap().0.encode(), enc);
            }
            for w in &req.wants {
                let _ = catalog().grant(w, "fuzz");
                let _ = (w.to_string(), w.short());
            }
        }
        Ok(None) => assert!(block_on(read_request(&mut &data[..])).is_err()),
        Err(_) => assert!(block_on(read_request(&mut &data[..])).is_err()),
    }

    match Reply::decode(data) {
        Ok(Some((rep, n))) => {
            assert!((4..=data.len()).contains(&n));
            let mut stream = data;
            assert_eq!(block_on(read_reply(&mut stream)).unwrap(), rep);
            assert_eq!(stream.len(), data.len() - n);
            // round trip, unless the lossy UTF-8 of the message grew past
            // the limit (then it is cut on a character boundary)
            let enc = rep.encode();
            let (back, m) = Reply::decode(&enc).unwrap().unwrap();
            assert_eq!((back.status, m), (rep.status, enc.len()));
            if rep.message.len() <= MAX_BODY {
                assert_eq!(back, rep);
            } else {
                assert!(rep.message.starts_with(&back.message));
            }
        }
        Ok(None) => assert!(block_on(read_reply(&mut &data[..])).is_err()),
        Err(_) => assert!(block_on(read_reply(&mut &data[..])).is_err()),
    }
});
