//! The small interface the forwarding engine needs from a QUIC connection.
//!
//! iroh 1.x runs its own QUIC fork (noq) and the ICE modes use quinn 0.11:
//! the two expose similar but distinct types. Each stack implements
//! [`TunnelConnection`] once (see [`iroh`] and [`quinn`]); TCP and UDP forwarding,
//! keepalive handling and stream retry in the engine are generic over it.

pub mod bbr;
pub mod congestion;
#[cfg(feature = "iroh")]
pub mod gate;
#[cfg(feature = "iroh")]
pub mod iroh;
mod path;
pub mod quinn;
pub mod tls;

pub use path::{Candidate, Hop, PathInfo, PathKind};

use std::{future::Future, time::Duration};

use bytes::Bytes;

use crate::proto::close::RefusalKind;
use tokio::io::{AsyncRead, AsyncWrite};

/// Congestion controller of the tunnel's QUIC connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Congestion {
    /// Cubic, the stacks' own: shrinks its window at every loss, so 1 %
    /// random loss on a 100 ms path leaves about 1.5 Mbit/s, and it fills
    /// the flow-control windows on a loss-free path (a keystroke waits
    /// behind them).
    Cubic,
    /// peerport's model-based controller ([`bbr`]): paces at the measured
    /// bottleneck rate, ignores random loss below 2 % and follows a path
    /// whose RTT grows. 82-86 % of a 200 Mbit/s, 100 ms path with 1 % loss
    /// in `ice`, Cubic's loopback throughput. The default of every mode;
    /// in the iroh modes noq's reassembly limit caps the stream window, so
    /// it gains less on long paths there (docs/benchmarks.md, "Long fat
    /// path").
    Bbr,
}

impl std::str::FromStr for Congestion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bbr" => Ok(Congestion::Bbr),
            "cubic" => Ok(Congestion::Cubic),
            _ => Err(format!(
                "`{s}` is not a congestion controller; write bbr or cubic"
            )),
        }
    }
}

/// QUIC settings both stacks take from the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicSettings {
    /// Close the connection after this long without a packet from the peer.
    pub idle_timeout: Duration,
    /// Congestion controller; `None`: the stack's default
    /// ([`QuicSettings::bbr`]).
    pub congestion: Option<Congestion>,
    /// Send a keep-alive after this long without sending; `None`: a third
    /// of the idle timeout, at most [`KEEP_ALIVE`] ([`QuicSettings::keep_alive`]).
    pub keep_alive: Option<Duration>,
    /// Flow-control windows in bytes (per stream, per connection); `None`:
    /// the stack's own.
    pub windows: Option<(u64, u64)>,
}

/// The keep-alive interval when none is set: each side sends a packet the
/// peer acknowledges after this long without hearing from it, so a live peer is
/// heard at least this often and a silent one is noticed within seconds
/// (status turns `stale`, see [`crate::status::STALE_AFTER`]); far below
/// the UDP mapping timeout of common NATs (30 s and up). A stack resets
/// the timer whenever it receives, so an idle tunnel carries about one
/// keep-alive and its acknowledgement (~60 bytes each) per second. A
/// restarted or vanished sender is noticed after this plus a second
/// ([`crate::status::STALE_AFTER`]); `--keepalive` trades that for fewer
/// packets.
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);

impl Default for QuicSettings {
    fn default() -> Self {
        QuicSettings {
            idle_timeout: Duration::from_secs(30),
            congestion: None,
            keep_alive: None,
            windows: None,
        }
    }
}

impl QuicSettings {
    /// The keep-alive interval: the one set, else a third of the idle
    /// timeout (the peer may negotiate a shorter one) and at most
    /// [`KEEP_ALIVE`]; at least 200 ms.
    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
            .unwrap_or_else(|| KEEP_ALIVE.min(self.idle_timeout / 3))
            .max(Duration::from_millis(200))
    }

    /// How long a peer may stay silent before its session counts as
    /// `stale` and a receiver gives the connection up: the keep-alive
    /// interval plus a second (both sides send keep-alives, so a live
    /// peer is heard at least that often).
    pub fn silence_limit(&self) -> Duration {
        self.keep_alive() + Duration::from_secs(1)
    }

    /// Whether to run BBR (peerport's controller, the default of every
    /// mode) rather than the stack's Cubic.
    pub fn bbr(&self) -> bool {
        self.congestion.unwrap_or(Congestion::Bbr) == Congestion::Bbr
    }
}

/// Sending half of a QUIC stream. `shutdown()` (from `AsyncWrite`) finishes it
/// gracefully, which is how TCP half-close crosses the tunnel.
pub trait TunnelSend: AsyncWrite + Unpin + Send + 'static {
    /// Abort the stream; the peer sees an error, not a clean end.
    fn reset(&mut self, code: u32);
    /// Where this stream stands when the stack picks what to send next:
    /// higher first (see [`crate::engine::priority`]).
    fn set_priority(&mut self, priority: i32);
    /// Write all of `data`, handing the buffer to the QUIC stack without
    /// copying it.
    fn write_bytes(&mut self, data: Bytes) -> impl Future<Output = std::io::Result<()>> + Send;
    /// After `shutdown()`: wait until the peer's stack has acknowledged
    /// every byte, or the peer stopped the stream, or the stream is gone.
    fn acked(&mut self) -> impl Future<Output = ()> + Send;
}

/// Receiving half of a QUIC stream.
pub trait TunnelRecv: AsyncRead + Unpin + Send + 'static {
    /// Tell the peer to stop sending.
    fn stop(&mut self, code: u32);
    /// Fill `bufs` with the next received segments, in order, without
    /// copying them; how many, or `None` at the end of the stream.
    fn read_chunks(
        &mut self,
        bufs: &mut [Bytes],
    ) -> impl Future<Output = std::io::Result<Option<usize>>> + Send;
}

/// Why a QUIC connection ended: typed, so callers decide whether to retry
/// without reading message text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed it with an application code (see
    /// [`crate::proto::close::close_code`]) and a reason.
    Peer {
        /// Application close code.
        code: u32,
        /// The peer's reason text.
        reason: String,
    },
    /// This side closed it.
    Local,
    /// Nothing was heard from the peer within the idle timeout (peer gone,
    /// path lost).
    IdleTimeout,
    /// The peer reset the connection (it restarted or forgot it).
    Reset,
    /// A transport error (protocol violation, version mismatch, ...).
    Transport(String),
    /// This side closed it because its path can never work again (see
    /// [`TunnelConnection::path_gone`]).
    PathGone(String),
    /// This side gave it up: nothing was heard from the peer for this
    /// long, although both sides send keep-alives.
    Silent(std::time::Duration),
}

impl CloseReason {
    /// Whether establishing a new connection may help: not after closing it
    /// ourselves, nor after a refusal that would be repeated (see
    /// [`RefusalKind`]).
    pub fn retryable(&self) -> bool {
        match self {
            CloseReason::Local => false,
            other => other.refusal().is_none_or(RefusalKind::retryable),
        }
    }

    /// The refusal this close stands for, if the peer closed with one.
    pub fn refusal(&self) -> Option<RefusalKind> {
        match self {
            CloseReason::Peer { code, .. } => RefusalKind::from_close_code(*code),
            _ => None,
        }
    }
}

/// The typed errors behind a QUIC stack's connection and datagram
/// errors: iroh's noq and quinn have the same shapes.
macro_rules! stack_errors {
    ($conn:path, $datagram:path) => {
        /// The typed reason behind a connection error of this stack.
        pub fn close_reason(e: $conn) -> $crate::transport::CloseReason {
            use $conn as E;
            use $crate::transport::CloseReason;
            match e {
                E::ApplicationClosed(c) => CloseReason::Peer {
                    code: u32::try_from(c.error_code.into_inner()).unwrap_or(u32::MAX),
                    reason: String::from_utf8_lossy(&c.reason).into_owned(),
                },
                E::LocallyClosed => CloseReason::Local,
                E::TimedOut => CloseReason::IdleTimeout,
                E::Reset => CloseReason::Reset,
                other => CloseReason::Transport(other.to_string()),
            }
        }

        /// Why this stack could not send a datagram.
        fn datagram_error(e: $datagram) -> $crate::transport::DatagramError {
            use $crate::transport::DatagramError;
            use $datagram as E;
            match e {
                E::TooLarge => DatagramError::TooLarge,
                E::ConnectionLost(e) => DatagramError::Lost(close_reason(e)),
                _ => DatagramError::Unsupported,
            }
        }
    };
}
pub(crate) use stack_errors;

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Peer { code, reason } if reason.is_empty() => {
                write!(f, "closed by the peer (code {code})")
            }
            CloseReason::Peer { code, reason } => {
                write!(f, "closed by the peer (code {code}: {reason})")
            }
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::IdleTimeout => {
                f.write_str("nothing heard from the peer within the idle timeout")
            }
            CloseReason::Reset => f.write_str("reset by the peer"),
            CloseReason::Transport(e) => write!(f, "transport error: {e}"),
            CloseReason::PathGone(why) => f.write_str(why),
            CloseReason::Silent(silent) => write!(
                f,
                "nothing heard from the peer for {:.1} s, keep-alives unanswered",
                silent.as_secs_f64()
            ),
        }
    }
}

/// Connection-level failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnError {
    /// The connection is gone, with the reason.
    #[error("connection lost: {0}")]
    Lost(CloseReason),
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
    Lost(CloseReason),
}

/// What the QUIC stack reports about a connection's current path: read
/// from the stack (quinn's `Connection::stats()`, noq's per-path stats),
/// never estimated.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConnStats {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Smallest round-trip time seen (`None` where the stack does not say: noq).
    pub min_rtt: Option<Duration>,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Congestion events (window reductions).
    pub congestion_events: u64,
    /// QUIC packets sent.
    pub sent_packets: u64,
    /// QUIC packets declared lost.
    pub lost_packets: u64,
    /// Bytes in lost packets.
    pub lost_bytes: u64,
    /// UDP payload bytes sent (every path, with QUIC overhead).
    pub tx_bytes: u64,
    /// UDP payload bytes received.
    pub rx_bytes: u64,
    /// Largest UDP payload the path carries now.
    pub mtu: u16,
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
    fn closed(&self) -> impl Future<Output = CloseReason> + Send;
    /// Close the connection with an application code and reason.
    fn close(&self, code: u32, reason: &str);
    /// Release what the connection owns (a per-session endpoint), after `close`.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;
    /// Stable identifier of the authenticated peer (public key or certificate fingerprint).
    fn peer_id(&self) -> String;
    /// Cancelled (by the engine) once the session this connection served
    /// continues on a newer connection, after a resume. Whatever is kept to
    /// bring this connection back (a copy-paste rejoin's endpoint) can then
    /// go. Clones share it.
    fn superseded(&self) -> tokio_util::sync::CancellationToken;
    /// The path in use now.
    fn path(&self) -> PathInfo;
    /// Log every change of the path in use until the connection closes.
    fn watch_path(&self) -> impl Future<Output = ()> + Send;
    /// Resolves (with the reason) when the path can never work again, such
    /// as when this host lost the address the connection is bound to. Then
    /// the receiver reconnects at once instead of after the idle timeout.
    /// Stacks that move to a new path by themselves never resolve it.
    fn path_gone(&self) -> impl Future<Output = String> + Send {
        std::future::pending()
    }
    /// The stack's figures for the connection (see [`ConnStats`]).
    fn stats(&self) -> ConnStats {
        ConnStats::default()
    }
}

/// One receiver that could not be accepted (a failed setup or handshake):
/// logged, and the acceptor goes on. The back-end's own error is the
/// source.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct AcceptError {
    /// What went wrong, as the back-end types it.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl AcceptError {
    /// Wrap a back-end's error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        AcceptError {
            source: Box::new(e),
        }
    }
}

/// A sender-side source of connections from receivers: one per back-end
/// (iroh endpoint, pasted offers, Nostr requests). The session loop in
/// the engine (`engine::server`) is written once over it.
pub trait Acceptor: Send {
    /// The connection type produced.
    type Conn: TunnelConnection;
    /// The next connection from a receiver; `None` once the back-end is shut down.
    /// An `Err` is one failed attempt (logged), not the end.
    fn accept(&mut self) -> impl Future<Output = Option<Result<Self::Conn, AcceptError>>> + Send;
    /// Stop and release what the back-end holds (relay connections,
    /// endpoints kept for reconnects), bounded in time.
    fn shutdown(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }
}

/// Why a receiver could not establish a connection to its sender.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// Not reachable this time (peer down, no path, no answer, relay
    /// unreachable): trying again later may work.
    #[error("{0}")]
    Unreachable(String),
    /// The sender (or its signaling) refused us: asking again will not help.
    #[error("{0}")]
    Refused(String),
    /// The sender is full: asking again later may work.
    #[error("{0}")]
    Busy(String),
    /// Something a person must fix (closed input, unusable setup).
    #[error("{0}")]
    Fatal(String),
}

/// A receiver-side way to reach the sender: one per back-end (iroh
/// endpoint id, Nostr keys, copy-paste offers). [`crate::Receiver`] calls
/// [`Dialer::dial`] for its first session and again after each loss.
pub trait Dialer: Send {
    /// The connection type produced.
    type Conn: TunnelConnection;
    /// Whether [`Dialer::dial`] can run again without a person (a
    /// copy-paste back-end may need a new paste).
    fn unattended(&self) -> bool;
    /// The access token to present in the session hello, if any.
    fn token(&self) -> Option<Vec<u8>> {
        None
    }
    /// Establish a new connection to the sender (bounded in time by the
    /// back-end's connect timeout).
    fn dial(&mut self) -> impl Future<Output = Result<Self::Conn, DialError>> + Send;
    /// Release what the dialer owns (endpoint, relay connections).
    fn close(self) -> impl Future<Output = ()> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_is_the_one_set_or_a_third_of_a_short_idle_timeout() {
        let q = |idle: u64, keep_alive: Option<u64>| QuicSettings {
            idle_timeout: Duration::from_secs(idle),
            keep_alive: keep_alive.map(Duration::from_secs),
            ..Default::default()
        };
        assert_eq!(q(30, None).keep_alive(), KEEP_ALIVE);
        assert_eq!(q(60, None).keep_alive(), KEEP_ALIVE);
        assert_eq!(q(3, None).keep_alive(), Duration::from_secs(1));
        assert_eq!(q(30, Some(5)).keep_alive(), Duration::from_secs(5));
        assert_eq!(q(0, None).keep_alive(), Duration::from_millis(200));
    }

    #[test]
    fn the_default_silence_limit_is_the_status_one() {
        assert_eq!(
            QuicSettings::default().silence_limit(),
            crate::status::STALE_AFTER
        );
    }
}
