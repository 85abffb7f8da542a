//! Signaling for peerport: how a sender and a receiver find each other before
//! they open a QUIC connection.
//!
//! * [`Mode`] names the four back-ends (`iroh`, `iroh-manual`, `ice`, `nostr`).
//! * [`ticket`] is the `iroh` mode's credential: the sender's endpoint id plus
//!   an access token, as one pasteable string.
//! * [`SignalingChannel`] is the seam the offer/answer back-ends (manual
//!   copy-paste, Nostr) implement; the `iroh` mode needs none because iroh's
//!   own discovery (pkarr/DNS/mDNS) finds the peer from its id.
//!
//! Everything here is sans-IO or trait definitions, so it is unit-tested on
//! plain bytes.

pub mod blob;
pub mod mode;
pub mod nostr;
pub mod ticket;

pub use mode::{Mode, UnknownMode};
pub use ticket::{Ticket, TicketError, TOKEN_LEN};

use std::future::Future;

/// Error of a signaling channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The peer or the channel went away before a message arrived.
    #[error("signaling channel closed: {0}")]
    Closed(String),
    /// A message arrived but could not be understood.
    #[error("malformed signaling message: {0}")]
    Malformed(String),
    /// No message arrived in time.
    #[error("timed out waiting for the peer's signaling message")]
    Timeout,
}

/// A bidirectional channel that carries opaque offer/answer messages between
/// two peers (copy-paste, files, Nostr relays).
///
/// Back-ends implement this once each; the session code above it is generic.
pub trait SignalingChannel: Send {
    /// Deliver one message to the peer.
    fn send(&mut self, message: &[u8]) -> impl Future<Output = Result<(), ChannelError>> + Send;
    /// Wait for the next message from the peer.
    fn recv(&mut self) -> impl Future<Output = Result<Vec<u8>, ChannelError>> + Send;
}
