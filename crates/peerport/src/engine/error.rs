//! How a session ends, other than by request: the one error type of the
//! forwarding loops, with what a receiver needs to decide whether to retry.

use crate::{
    proto::close::RefusalKind,
    transport::{CloseReason, ConnError},
};

/// How a session ended, other than by request.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The sender said no.
    #[error("the sender refused this receiver: {message}")]
    Refused {
        /// Why.
        kind: RefusalKind,
        /// Sender's message.
        message: String,
    },
    /// The peer failed authentication (sender side).
    #[error("refused peer {peer}: {reason}")]
    Unauthorized {
        /// Peer id.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The QUIC connection died.
    #[error("tunnel connection lost: {0}")]
    ConnectionLost(CloseReason),
    /// The peer did not follow the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl SessionError {
    /// The refusal behind this end, whether the sender replied with a
    /// status or closed the connection with a refusal code.
    pub fn refusal(&self) -> Option<RefusalKind> {
        match self {
            SessionError::Refused { kind, .. } => Some(*kind),
            SessionError::ConnectionLost(r) => r.refusal(),
            _ => None,
        }
    }

    /// Whether a new session may succeed where this one ended.
    pub fn retryable(&self) -> bool {
        match self {
            SessionError::Refused { kind, .. } => kind.retryable(),
            SessionError::Unauthorized { .. } => false,
            SessionError::ConnectionLost(r) => r.retryable(),
            SessionError::Protocol(_) => true,
        }
    }
}

impl From<ConnError> for SessionError {
    fn from(e: ConnError) -> Self {
        let ConnError::Lost(r) = e;
        SessionError::ConnectionLost(r)
    }
}
