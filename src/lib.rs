//! peerport: forward TCP and UDP ports between two hosts, even when both are
//! behind NAT, over a QUIC connection found by a signaling back-end.
//!
//! Layers, bottom up:
//! * [`proto`]: wire formats without IO (stream headers, UDP fragments);
//! * [`transport`]: the small trait over a QUIC stack (iroh's noq, later quinn);
//! * [`engine`]: TCP and UDP forwarding, sessions, auth, written once;
//! * [`modes`]: signaling back-ends that produce connections;
//! * [`app`]/[`cli`]/[`config`]/[`settings`]: the binary's edge.

pub mod addr;
pub mod app;
pub mod benchflood;
pub mod benchquic;
pub mod cli;
pub mod config;
pub mod demo;
pub mod engine;
pub mod identity;
pub mod modes;
pub mod net;
pub mod netcheck;
pub mod proto;
pub mod qad;
pub mod receiver;
pub mod rendezvous;
pub mod sender;
pub mod settings;
pub mod stun;
pub mod tlsfile;
pub mod transport;

pub use receiver::{Receiver, ReceiverBuilder, ReceiverError, Reconnect};
pub use sender::{Sender, SenderBuilder};
