//! The engine's tunables, one value for every session of a sender or receiver.

use std::time::Duration;

/// The most TCP connections a session can carry at once: both QUIC stacks
/// allow 4096 concurrent streams per connection, and the session's own
/// hello and resume streams need a few.
pub const MAX_CONNECTIONS: usize = 4000;

/// Tunables shared by both roles.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A UDP flow with no packet in either direction for this long is removed.
    pub udp_idle_timeout: Duration,
    /// Most UDP flows (distinct client addresses) per session.
    pub max_udp_flows: usize,
    /// Receiver: most TCP connections one session carries at once (at
    /// most [`MAX_CONNECTIONS`]); a client beyond it is closed at once.
    pub max_connections: usize,
    /// Timeout for connecting to the source service.
    pub connect_timeout: Duration,
    /// Timeout for a peer to send a stream header.
    pub header_timeout: Duration,
    /// Resumable TCP streams.
    pub resume: ResumeConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            udp_idle_timeout: Duration::from_secs(60),
            max_udp_flows: 1024,
            max_connections: MAX_CONNECTIONS,
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            resume: ResumeConfig::default(),
        }
    }
}

/// Resumption settings (both roles).
#[derive(Debug, Clone)]
pub struct ResumeConfig {
    /// How long a lost session's streams wait for a reconnect; zero turns
    /// resumption off.
    pub window: Duration,
    /// Most unconfirmed bytes kept per stream; reading the local socket
    /// waits while it is full.
    pub stream_buffer: usize,
    /// Most unconfirmed bytes kept per session, all streams together.
    pub session_buffer: usize,
}

impl Default for ResumeConfig {
    fn default() -> Self {
        ResumeConfig {
            window: Duration::from_secs(300),
            stream_buffer: 8 << 20,
            session_buffer: 256 << 20,
        }
    }
}

impl ResumeConfig {
    /// Whether streams are resumable at all.
    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }
}
