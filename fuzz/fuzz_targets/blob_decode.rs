//! Any pasted text or payload bytes must decode to a blob or a clear error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use peerport_signaling::{
    blob::{find_and_decode, scan_blocks, Blob, Expect, Kind},
    Mode,
};

fuzz_target!(|data: &[u8]| {
    let _ = Blob::from_bytes(data);
    if let Ok(text) = std::str::from_utf8(data) {
        for (kind, mode) in [(Kind::Offer, Mode::Ice), (Kind::Answer, Mode::IrohManual)] {
            let e = Expect { kind, mode, session: None, now: 1_700_000_000, max_age: 900 };
            let _ = find_and_decode(text, &e);
            let _ = scan_blocks(text, &e);
        }
    }
});
