//! Signaling back-ends. Each turns its way of finding the peer into QUIC
//! connections ([`crate::transport::TunnelConnection`]); everything after
//! that is the shared engine. Each implements the [`Mode`] seam: its
//! settings type builds the sender's acceptor and the receiver's dialer.
//!
//! * [`iroh`]: iroh discovery (pkarr/DNS/mDNS), hole punching, relay fallback.
//! * [`manual`]: copy-paste offer/answer signaling shared by the manual modes.
//! * [`ice`]: full ICE (webrtc-ice) + quinn with pinned certificates, TURN fallback.
//! * [`nostr`]: pairing by Nostr keys over relays, then the `ice` path.
//! * [`iroh_manual`]: iroh QUIC paired by copy-paste, STUN addresses, racing dials.

#[cfg(feature = "ice")]
pub mod ice;
#[cfg(feature = "iroh")]
pub mod iroh;
pub mod iroh_defaults;
#[cfg(feature = "iroh")]
pub mod iroh_manual;
pub mod manual;
#[cfg(feature = "nostr")]
pub mod nostr;
mod seam;

#[cfg(feature = "iroh")]
pub use iroh::IrohMode;
pub use manual::ManualMode;
#[cfg(feature = "nostr")]
pub use nostr::NostrMode;
pub use seam::{Accepting, Announce, Awaiting, Dialing, Mode, ModeContext, ModeError};
