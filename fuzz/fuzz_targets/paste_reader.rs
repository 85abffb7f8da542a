//! The copy-paste modes' reader of pasted text and followed files
//! (`BlobReader`): bytes arriving in pieces (split anywhere, invalid
//! UTF-8 included), armored blocks found, decoded and checked as they
//! complete, what a quiet paste lacks. The pieces the input is cut into
//! must not change what is read: the same blocks as from all the bytes
//! at once (how a sender reads its answer file). Memory stays bounded.
#![no_main]

mod common;

use std::path::PathBuf;

use common::Input;
use libfuzzer_sys::fuzz_target;
use peerport::modes::manual::{decode_utf8_lossy, BlobReader, BlobSource};
use peerport_signaling::{
    blob::{self, scan_blocks, Kind},
    Mode,
};

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let cuts = input.u64();
    let mode = if cuts & 1 == 0 {
        Mode::Ice
    } else {
        Mode::IrohManual
    };
    let kind = if cuts & 2 == 0 {
        Kind::Offer
    } else {
        Kind::Answer
    };
    let e = common::expect_blob(kind, mode);
    let text = input.rest();

    // all at once
    let mut raw = text.to_vec();
    let mut all = String::new();
    let skipped = decode_utf8_lossy(&mut raw, &mut all);
    assert!(raw.len() < 4, "at most an incomplete character waits");
    assert_eq!(skipped + all.len() + raw.len(), text.len());
    let (whole, used) = scan_blocks(&all, &e);
    assert!(used <= all.len() && all.is_char_boundary(used));
    let _ = blob::incomplete(&all[used..]);

    // in pieces, as a console or a growing file delivers them
    let mut reader = BlobReader::new(BlobSource::File(PathBuf::from("fuzz")));
    let mut rest = text;
    let mut x = cuts | 1;
    let mut pieces = Vec::new();
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = 1 + (x % 64) as usize;
        let (piece, r) = rest.split_at(n.min(rest.len()));
        rest = r;
        reader.feed(piece);
        reader.take_blocks(&e);
        pieces.extend(reader.take_ready());
        let (undecoded, pending) = reader.buffered();
        assert!(undecoded < 4 && pending <= 1 << 20);
    }
    assert_eq!(
        pieces, whole,
        "cut into pieces, the same text reads differently"
    );
});
