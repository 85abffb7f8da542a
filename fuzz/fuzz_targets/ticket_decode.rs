//! Any text given as --node-id must decode to a ticket or a clear error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = peerport_signaling::Ticket::decode(text);
    }
});
