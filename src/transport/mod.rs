//! The small interface the forwarding engine needs from a QUIC connection.
//!
//! iroh 1.x runs its own QUIC fork (noq) and the ICE modes use quinn 0.11:
//! the two expose similar but distinct types. Each stack implements
//! [`TunnelConnection`] once (see [`iroh`]); TCP and UDP forwarding,
//! keepalive handling and stream retry in [`crate::engine`] are generic over it.

pub mod gate;
pub mod iroh;
pub mod quinn;

use std::future::Future;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

/// Sending half of a QUIC stream. `shutdown()` (from `AsyncWrite`) finishes it
/// gracefully, which is how TCP half-close crosses the tunnel.
pub trait TunnelSend: AsyncWrite + Unpin + Send + 'static {
    /// Abort the stream; the peer sees an error, not a clean end.
    fn reset(&mut self, code: u32);
}

/// Receiving half of a QUIC stream.
pub trait TunnelRecv: AsyncRead + Unpin + Send + 'static {
    /// Tell the peer to stop sending.
    fn stop(&mut self, code: u32);
}

/// Connection-level failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnError {
    /// The connection is gone (idle timeout, peer closed, network lost).
    #[error("connection lost: {0}")]
    Lost(String),
}

/// Why a datagram could not be sent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DatagramError {
    /// Larger than the path allows (the engine fragments, so this is a bug or a PMTU drop).
    #[error("datagram larger than the path allows")]
    TooLarge,
    /// The peer does not accept datagrams.
    #[error("the peer does not accept QUIC datagrams")]
    Unsupported,
    /// The connection is gone.
    #[error("connection lost: {0}")]
    Lost(String),
}

/// A QUIC connection as the forwarding engine sees it.
pub trait TunnelConnection: Clone + Send + Sync + 'static {
    /// Sending half of a stream.
    type Send: TunnelSend;
    /// Receiving half of a stream.
    type Recv: TunnelRecv;

    /// Open a bidirectional stream.
    fn open_bi(&self) -> impl Future<Output = Result<(Self::Send, Self::Recv), ConnError>> + Send;
    /// Accept the peer's next bidirectional stream.
    fn accept_bi(&self)
        -> impl Future<Output = Result<(Self::Send, Self::Recv), ConnError>> + Send;
    /// Send one datagram, waiting for buffer space rather than dropping.
    fn send_datagram(&self, data: Bytes) -> impl Future<Output = Result<(), DatagramError>> + Send;
    /// Receive the next datagram.
    fn read_datagram(&self) -> impl Future<Output = Result<Bytes, ConnError>> + Send;
    /// Current datagram size limit of the path, `None` if datagrams are off.
    fn max_datagram_size(&self) -> Option<usize>;
    /// Resolves when the connection is closed, with the reason.
    fn closed(&self) -> impl Future<Output = String> + Send;
    /// Close the connection with an application code and reason.
    fn close(&self, code: u32, reason: &str);
    /// Release what the connection owns (a per-session endpoint), after `close`.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;
    /// Stable identifier of the authenticated peer (public key or certificate fingerprint).
    fn peer_id(&self) -> String;
    /// Human-readable description of the path in use ("direct 1.2.3.4:5" or "relay URL").
    fn path_summary(&self) -> String;
    /// Log every change of the path in use until the connection closes.
    fn watch_path(&self) -> impl Future<Output = ()> + Send;
}

/// A sender-side source of connections from receivers: one per back-end
/// (iroh endpoint, pasted offers, Nostr requests). The session loop in
/// [`crate::engine::server`] is written once over it.
pub trait Acceptor: Send {
    /// The connection type produced.
    type Conn: TunnelConnection;
    /// The next connection from a receiver; `None` once the back-end is shut down.
    /// An `Err` is one failed attempt (logged), not the end.
    fn accept(&mut self) -> impl Future<Output = Option<Result<Self::Conn, String>>> + Send;
}
