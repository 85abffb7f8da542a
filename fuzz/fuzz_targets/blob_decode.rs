//! The copy-paste modes' blobs: any pasted text or payload bytes decode to
//! a blob or a clear error, never a panic. A decoded blob encodes back to
//! the same bytes, and its armor reads back to the same blob. The input
//! is also tried as a payload with its checksum made right, so the
//! decoder past the checksum is fuzzed too.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use peerport_signaling::{
    blob::{find_and_decode, scan_blocks, Blob, Expect, Kind},
    Mode,
};
use sha2::{Digest, Sha256};

fn round_trip(bytes: &[u8]) {
    let Ok(blob) = Blob::from_bytes(bytes) else {
        return;
    };
    assert_eq!(blob.to_bytes(), bytes);
    let e = Expect {
        kind: blob.kind,
        mode: blob.mode(),
        session: Some(blob.session),
        now: blob.created,
        max_age: 0,
    };
    assert_eq!(find_and_decode(&blob.to_armor(), &e), Ok(blob));
}

fuzz_target!(|data: &[u8]| {
    round_trip(data);
    let mut summed = data.to_vec();
    summed.extend_from_slice(&Sha256::digest(data)[..4]);
    round_trip(&summed);

    if let Ok(text) = std::str::from_utf8(data) {
        for (kind, mode) in [(Kind::Offer, Mode::Ice), (Kind::Answer, Mode::IrohManual)] {
            let e = common::expect_blob(kind, mode);
            let _ = find_and_decode(text, &e);
            let (_, used) = scan_blocks(text, &e);
            assert!(used <= text.len() && text.is_char_boundary(used));
        }
    }
});
