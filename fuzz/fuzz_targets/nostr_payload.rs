//! The `nostr` mode's receive side: events from relays (JSON), the checks
//! of the inbox (kind, author, tags, expiry, size, freshness, replay), the
//! NIP-44 content, the decrypted JSON payload, and the offer or answer
//! blob it carries (base64, as the `peerport` crate's nostr mode decodes
//! it). The first byte picks where the input enters:
//!
//! * 0: the decrypted payload JSON itself;
//! * 1: the payload JSON, sealed by the peer to us in an otherwise valid
//!   event, through the inbox (it must come out as parsed directly);
//! * 2: any content in an otherwise valid event (what decryption sees);
//! * 3: a whole event as a relay delivers it (JSON);
//! * else: key text (nsec/npub/hex, as flags and key files give it).
#![no_main]

mod common;

use std::{sync::OnceLock, time::Duration};

use base64::{engine::general_purpose::STANDARD_NO_PAD, Engine};
use common::Input;
use libfuzzer_sys::fuzz_target;
use nostr::prelude::*;
use peerport_signaling::{
    blob::{Blob, Expect, Kind as BlobKind},
    nostr::{Inbox, MsgType, Payload, Reject, DEFAULT_KIND},
    Mode,
};

const NOW: u64 = 1_700_000_000;

/// The peer (author) and us (recipient): fixed keys, so the corpus's
/// events stay addressed right.
fn keys() -> &'static (Keys, Keys) {
    static K: OnceLock<(Keys, Keys)> = OnceLock::new();
    K.get_or_init(|| {
        let peer = Keys::parse(&"11".repeat(32)).unwrap();
        let me = Keys::parse(&"22".repeat(32)).unwrap();
        (peer, me)
    })
}

fn inbox() -> Inbox {
    let (peer, me) = keys();
    Inbox::new(me.clone(), peer.public_key(), DEFAULT_KIND)
}

/// An event from the peer to us carrying `content`, as the sender builds it.
fn event(content: String) -> Event {
    let (peer, me) = keys();
    let t = Timestamp::from_secs(NOW);
    EventBuilder::new(Kind::Custom(DEFAULT_KIND), content)
        .tags([
            Tag::public_key(me.public_key()),
            Tag::expiration(t + Duration::from_secs(60)),
        ])
        .custom_created_at(t)
        .sign_with_keys(peer)
        .unwrap()
}

/// What the mode does with a payload: the blob in `data` (base64 of the
/// binary blob, padding tolerated), checked as an offer or an answer.
fn use_payload(p: &Payload) {
    let back: Payload = serde_json::from_str(&serde_json::to_string(p).unwrap()).unwrap();
    assert_eq!(&back, p);
    let kind = match p.msg_type {
        MsgType::Request => BlobKind::Offer,
        MsgType::Answer => BlobKind::Answer,
        MsgType::Refusal => return,
    };
    let Ok(bytes) = STANDARD_NO_PAD.decode(p.data.trim_end_matches('=')) else {
        return;
    };
    if let Ok(blob) = Blob::from_bytes(&bytes) {
        assert_eq!(blob.to_bytes(), bytes);
        let _ = blob.check(&Expect {
            kind,
            mode: Mode::Ice,
            session: None,
            now: NOW,
            max_age: 900,
        });
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let entry = input.u8();
    let rest = input.rest();
    match entry {
        0 => {
            if let Ok(p) = serde_json::from_slice::<Payload>(rest) {
                use_payload(&p);
            }
        }
        1 => {
            let Ok(json) = std::str::from_utf8(rest) else {
                return;
            };
            let (peer, me) = keys();
            let Ok(sealed) = nip44::encrypt(
                peer.secret_key(),
                &me.public_key(),
                json,
                nip44::Version::V2,
            ) else {
                return; // empty or too long for NIP-44
            };
            let direct = serde_json::from_str::<Payload>(json);
            match inbox().accept(&event(sealed), NOW) {
                Ok(p) => {
                    assert_eq!(direct.as_ref().ok(), Some(&p));
                    use_payload(&p);
                }
                Err(Reject::BadPayload) => assert!(direct.is_err()),
                Err(Reject::Stale) => assert!(direct.unwrap().created_at.abs_diff(NOW) > 30),
                Err(Reject::TooLarge) => {
                    assert!(json.len() > peerport_signaling::nostr::MAX_CONTENT / 2)
                }
                Err(r) => panic!("a sealed payload was rejected: {r:?}"),
            }
        }
        2 => {
            let content = String::from_utf8_lossy(rest).into_owned();
            if let Ok(p) = inbox().accept(&event(content), NOW) {
                use_payload(&p);
            }
        }
        3 => {
            if let Ok(ev) = Event::from_json(rest) {
                let mut inbox = inbox();
                let now = ev.created_at.as_secs();
                let first = inbox.accept(&ev, now);
                if let Ok(p) = &first {
                    use_payload(p);
                    // the same event again is a replay
                    assert_eq!(inbox.accept(&ev, now), Err(Reject::Duplicate));
                }
            }
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(hex) = peerport_signaling::nostr::parse_secret(&text) {
                assert_eq!(peerport_signaling::nostr::parse_secret(&hex).unwrap(), hex);
            }
            if let Ok(hex) = peerport_signaling::nostr::parse_public(&text) {
                assert_eq!(peerport_signaling::nostr::parse_public(&hex).unwrap(), hex);
                let _ = peerport_signaling::nostr::npub_of_public(&hex);
            }
            let _ = peerport_signaling::nostr::npub_of(&text);
        }
    }
});
