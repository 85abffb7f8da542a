//! Signaling for peerport: how a sender and a receiver find each other before
//! they open a QUIC connection.
//!
//! * [`Mode`] names the four back-ends (`iroh`, `iroh-manual`, `ice`, `nostr`).
//! * [`ticket`] is the `iroh` mode's credential: the sender's endpoint id plus
//!   an access token, as one pasteable string.
//! * [`blob`] is the copy-paste modes' armored offer/answer codec.
//! * [`nostr`] carries the same offers and answers as encrypted Nostr events.
//!
//! The `iroh` mode needs no exchange: iroh's own discovery (pkarr/DNS/mDNS)
//! finds the peer from its id. The codecs are sans-IO and unit-tested on
//! plain bytes; how a receiver and a sender use them is in the `peerport`
//! crate's `Dialer` and `Acceptor` per mode.

pub mod blob;
pub mod mode;
#[cfg(feature = "nostr")]
pub mod nostr;
pub mod ticket;

pub use mode::{Mode, UnknownMode};
pub use ticket::{Relays, Ticket, TicketError, TOKEN_LEN};
