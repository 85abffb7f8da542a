//! peerport: forward TCP and UDP ports between two hosts, even when both are
//! behind NAT, over a QUIC connection found by a signaling back-end.
//!
//! The API is [`Sender`] (next to the service) and [`Receiver`] (next to the
//! client), each a long-lived object over a mode's [`transport::Acceptor`]
//! or [`transport::Dialer`]. Each mode's settings type implements the
//! [`modes::Mode`] seam, which builds both:
//!
//! * `iroh`: [`modes::IrohMode`];
//! * copy-paste (`iroh-manual`, `ice`): [`modes::ManualMode`] over a
//!   [`modes::manual::ManualPath`] ([`modes::iroh_manual::IrohManualPath`],
//!   [`modes::ice::IcePath`]);
//! * `nostr`: [`modes::NostrMode`].
//!
//! `examples/embedded.rs` runs both ends in one program.
//!
//! Layers, bottom up:
//! * [`proto`]: wire formats without IO (stream headers, UDP fragments);
//! * [`transport`]: the small traits over a QUIC stack (iroh's noq, quinn);
//! * [`engine`]: TCP and UDP forwarding, sessions, auth, written once;
//! * [`modes`]: signaling back-ends that produce connections;
//! * [`sender`] / [`receiver`]: the long-lived core.
//!
//! The `peerport` command (crate `peerport-cli`), the embedded rendezvous
//! servers (`peerport-rendezvous`), the lab tools (`peerport-lab`) and the
//! test kit (`peerport-testkit`) are crates of their own over this one.

#![warn(missing_docs)]

/// The log target of lines that record an event a status view also shows
/// (a session up or ended, a path chosen): a program that shows the
/// events itself, as the `peerport` command does on a terminal, can filter
/// them out (`peerport::event=warn`); the lab scripts read them.
pub const EVENT: &str = "peerport::event";

pub mod addr;
pub mod closing;
pub mod engine;
#[cfg(feature = "iroh")]
pub mod identity;
pub mod modes;
#[cfg(all(feature = "iroh", feature = "ice"))]
pub mod netcheck;
pub mod proto;
pub mod receiver;
pub mod sender;
pub mod status;
pub mod stun;
pub mod transport;

pub(crate) mod net;
#[cfg(all(feature = "iroh", feature = "ice"))]
pub(crate) mod qad;

pub use addr::{ForwardAddr, Protocol};
pub use receiver::{Receiver, ReceiverBuilder, ReceiverError, Reconnect};
pub use sender::{Sender, SenderBuilder};
