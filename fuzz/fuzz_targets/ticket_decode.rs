//! The `iroh` mode's ticket: any text given as --node-id (or in a config
//! file) decodes to a ticket or a clear error. A decoded ticket encodes
//! back to the same text (lower case, trimmed). The input is also tried
//! as a ticket's binary form with its checksum made right, so the relay
//! part behind the checksum is fuzzed too.
#![no_main]

use data_encoding::BASE32_NOPAD;
use libfuzzer_sys::fuzz_target;
use peerport_signaling::Ticket;
use sha2::{Digest, Sha256};

fn round_trip(text: &str) {
    if let Ok(t) = Ticket::decode(text) {
        assert!(Ticket::looks_like_ticket(text));
        assert_eq!(t.encode(), text.trim().to_ascii_lowercase());
        assert_eq!(Ticket::decode(&t.encode()), Ok(t));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        round_trip(text);
    }
    let mut summed = data.to_vec();
    summed.extend_from_slice(&Sha256::digest(data)[..4]);
    round_trip(&format!("ppt1{}", BASE32_NOPAD.encode(&summed)));
});
