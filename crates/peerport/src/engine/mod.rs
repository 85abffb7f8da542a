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
//! * [`tally`]: what each session counts (read by [`crate::status`]).
//! * [`server`]: the sender's session loop over an [`crate::transport::Acceptor`].

pub mod auth;
pub mod front;
pub mod io;
pub mod policy;
pub mod resume;
pub mod routes;
pub mod server;
pub mod session;
pub mod socks;
pub mod tally;
pub mod target;
pub mod tcp;
pub mod udp;

use std::time::Duration;

pub use auth::Authorizer;
pub use front::Front;
pub use session::{serve_sender_session, RefusalKind, SenderContext, SessionError};
pub use tally::{Ledger, Tally};
pub use target::{BindError, BoundTarget};

use crate::transport::{ConnError, TunnelConnection};

/// Tunables shared by both roles.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A UDP flow with no packet in either direction for this long is removed.
    pub udp_idle_timeout: Duration,
    /// Most UDP flows (distinct client addresses) per session.
    pub max_udp_flows: usize,
    /// Timeout for connecting to the source service.
    pub connect_timeout: Duration,
    /// Timeout for a peer to send a stream header.
    pub header_timeout: Duration,
    /// Resumable TCP streams.
    pub resume: resume::ResumeConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            udp_idle_timeout: Duration::from_secs(60),
            max_udp_flows: 1024,
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            resume: resume::ResumeConfig::default(),
        }
    }
}

/// Backoff before each retry of `open_bi`: three retries, 100, 200, 400 ms.
pub const OPEN_RETRY_BACKOFF: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
];

/// Application close codes.
pub mod close_code {
    /// Normal shutdown.
    pub const NORMAL: u32 = 0;
    /// The peer failed authentication.
    pub const UNAUTHORIZED: u32 = 1;
    /// Protocol error.
    pub const PROTOCOL: u32 = 2;
    /// The sender is full.
    pub const BUSY: u32 = 3;
    /// A newer session from the same peer identity replaced this one.
    pub const SUPERSEDED: u32 = 4;
    /// This side's path can never work again (its address is gone); the
    /// session is lost, not ended: streams wait for a resume.
    pub const PATH_GONE: u32 = 5;
    /// The session failed (a protocol error, not a refusal): the peer
    /// may reconnect and resume.
    pub const SESSION_ERROR: u32 = 6;
    /// The sender's reloaded configuration no longer allows a service or
    /// destination the session uses (the reason says which).
    pub const FORBIDDEN: u32 = 7;
    /// Stream aborted because the local socket failed.
    pub const STREAM_ABORT: u32 = 10;
}

/// Open a bidirectional stream, retrying three times with backoff.
pub async fn open_bi_retry<C: TunnelConnection>(conn: &C) -> Result<(C::Send, C::Recv), ConnError> {
    let mut attempt = 0;
    loop {
        match conn.open_bi().await {
            Ok(s) => return Ok(s),
            Err(e) if attempt < OPEN_RETRY_BACKOFF.len() => {
                tracing::debug!(attempt, error = %e, "open stream failed, retrying");
                tokio::time::sleep(OPEN_RETRY_BACKOFF[attempt]).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
