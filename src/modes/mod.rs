//! Signaling back-ends. Each turns its way of finding the peer into QUIC
//! connections ([`crate::transport::TunnelConnection`]); everything after
//! that is the shared engine.
//!
//! * [`iroh`]: iroh discovery (pkarr/DNS/mDNS), hole punching, relay fallback.

pub mod iroh;
