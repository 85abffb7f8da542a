//! How a session ends on the wire: the QUIC application close codes and
//! the refusals a receiver can be told (by a reply status or a close code).

use super::header::Status;

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

/// Why the sender refused a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Wrong or missing token, or not an allowed peer.
    Unauthorized,
    /// The sender forwards the other protocol (tcp vs udp).
    ProtocolMismatch,
    /// The sender serves its `--max-sessions` already.
    Busy,
    /// Another receiver with the same identity connected, and the sender
    /// keeps only the newest session per identity.
    Superseded,
    /// Any other refusal.
    Other,
}

impl RefusalKind {
    /// Whether asking again later may succeed (only a full sender).
    pub fn retryable(self) -> bool {
        self == RefusalKind::Busy
    }

    /// The refusal a reply status stands for.
    pub fn from_status(s: Status) -> Self {
        match s {
            Status::Unauthorized => RefusalKind::Unauthorized,
            Status::ProtocolMismatch => RefusalKind::ProtocolMismatch,
            Status::Busy => RefusalKind::Busy,
            _ => RefusalKind::Other,
        }
    }

    /// The refusal an application close code stands for, if it is one.
    pub fn from_close_code(code: u32) -> Option<Self> {
        match code {
            close_code::UNAUTHORIZED | close_code::FORBIDDEN => Some(RefusalKind::Unauthorized),
            close_code::PROTOCOL => Some(RefusalKind::ProtocolMismatch),
            close_code::BUSY => Some(RefusalKind::Busy),
            close_code::SUPERSEDED => Some(RefusalKind::Superseded),
            _ => None,
        }
    }
}
