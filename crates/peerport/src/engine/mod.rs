//! The forwarding engine: written once, generic over [`TunnelConnection`].
//!
//! * [`session`]: the per-connection protocol (Hello, authentication,
//!   protocol check) for both roles.
//! * [`tcp`]: one QUIC stream per TCP connection, half-close both ways.
//! * [`udp`]: one flow per client address, packets as (fragmented) datagrams.
//! * [`auth`]: who may use a sender.
//! * [`policy`]: the sender's services and `--allow` destination rules.
//! * [`routes`]: a session's services, checked per stream and on reload.
//! * [`socks`]: the receiver's SOCKS5 front for destinations chosen per connection.
//! * [`target`]: binding the receiver's local listener with clear errors.
//! * [`front`]: the receiver's local side, kept across sessions.
//! * [`resume`]: TCP streams that outlive a lost connection.
//! * [`tally`]: what each session counts (read by the status monitor).
//! * [`server`]: the sender's session loop over an [`crate::transport::Acceptor`].

pub mod auth;
pub mod chunks;
pub mod config;
pub mod error;
mod flow_table;
pub mod front;
pub mod io;
mod ledger;
pub mod policy;
pub mod priority;
pub mod pump;
pub mod resume;
pub mod routes;
pub mod server;
pub mod session;
pub mod socks;
pub mod tally;
pub mod target;
pub mod tcp;
pub mod udp;
pub mod udp_stats;

pub use crate::proto::close::{close_code, RefusalKind};
pub use auth::Authorizer;
pub use config::{EngineConfig, MAX_CONNECTIONS};
pub use error::SessionError;
pub use front::Front;
pub use io::{open_bi_retry, OPEN_RETRY_BACKOFF};
pub use session::{serve_sender_session, SenderContext};
pub use tally::{Ledger, Tally};
pub use target::{BindError, BoundTarget};
