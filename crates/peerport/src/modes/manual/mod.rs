//! Copy-paste signaling shared by `iroh-manual` and `ice`.
//!
//! The receiver makes an OFFER, the sender answers each offer with an ANSWER
//! and a fresh per-session QUIC stack. Blobs travel by copy-paste (through a
//! [`Console`] the CLI implements over the terminal) or by files (`--offer-file`,
//! `--answer-file`, `-` meaning stdin/stdout), so scripts and tests can drive
//! both sides. Files are followed as they grow: several offers appended to
//! one file start several sessions, and several answers in one file are told
//! apart by session id.
//!
//! A path back-end implements [`ManualPath`]: prepare local state and
//! describe it as a blob [`Body`], then connect given the peer's body.

use std::{
    future::Future,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use peerport_signaling::{blob::Body, Mode};

use crate::transport::{DialError, TunnelConnection};

/// How old a blob may be before it is refused.
pub const MAX_BLOB_AGE: Duration = Duration::from_secs(15 * 60);

/// Which side of the session (decides ICE roles and connection races).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Made the offer.
    Offerer,
    /// Answered.
    Answerer,
}

/// A path back-end for copy-paste signaling.
pub trait ManualPath: Send + Sync + 'static {
    /// Connection produced.
    type Conn: TunnelConnection;
    /// Local state between `prepare` and `connect` (endpoint, ICE agent, ...).
    type Prepared: Send + 'static;
    /// What lets both sides connect again after a lost session without a
    /// new exchange (`iroh-manual`: both endpoints stay up and know each
    /// other's id and addresses; `ice`: both QUIC endpoints stay on the
    /// selected pair). Paths that cannot return `None` from `connect`.
    type Rejoin: Send + Sync + 'static;
    /// Mode written into blobs.
    const MODE: Mode;
    /// Create per-session local state and describe it.
    fn prepare(
        &self,
        side: Side,
    ) -> impl Future<Output = Result<(Self::Prepared, Body), PathError>> + Send;
    /// Connect to the peer described by `peer` (authenticating it by what the blob pins).
    ///
    /// `peer_deadline`: until when the peer may take to show up at all (a
    /// copy-paste answerer waits as long as the offer is valid, because the
    /// person may paste the answer minutes later); the connect timeout runs
    /// from the peer's first sign of life. `None`: the connect timeout alone.
    fn connect(
        &self,
        prepared: Self::Prepared,
        peer: Body,
        side: Side,
        peer_deadline: Option<tokio::time::Instant>,
    ) -> impl Future<Output = Result<(Self::Conn, Option<Self::Rejoin>), PathError>> + Send;
    /// Connect again to the same peer through `rejoin`, within `limit`.
    fn rejoin(
        &self,
        rejoin: &Self::Rejoin,
        side: Side,
        limit: Duration,
    ) -> impl Future<Output = Result<Self::Conn, RejoinError>> + Send;
    /// Release what `rejoin` holds (an endpoint).
    fn release(&self, rejoin: Self::Rejoin) -> impl Future<Output = ()> + Send;
    /// The path's metrics for `/metrics`, if it has any.
    fn metrics(&self) -> Option<crate::status::Extra> {
        None
    }
}

/// Why a copy-paste path could not prepare its side or connect: typed, so
/// that a receiver stops on settings that can never work and tries again
/// on a failure that may pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// This host's settings cannot work (a `--stun-server` or
    /// `--turn-server` that does not parse, `--relay-only` without a TURN
    /// server, a QUIC configuration the stack refuses): a person must fix
    /// them.
    #[error("{0}")]
    Setup(String),
    /// The peer's blob does not fit this mode (another mode's body, an
    /// invalid key): exchange fresh blobs.
    #[error("{0}")]
    Blob(String),
    /// No connection this time (a port in use, no candidate, ICE or the
    /// QUIC handshake failed or timed out, the peer never showed up):
    /// trying again may work.
    #[error("{0}")]
    Unreachable(String),
}

impl From<PathError> for DialError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::Setup(m) => DialError::Fatal(m),
            // a new offer is a fresh exchange
            PathError::Blob(m) | PathError::Unreachable(m) => DialError::Unreachable(m),
        }
    }
}

/// Why connecting again without a new exchange failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RejoinError {
    /// What happened.
    pub message: String,
    /// Trying again cannot help (this host's address is gone): make a
    /// fresh offer at once.
    pub permanent: bool,
}

impl RejoinError {
    /// A failure that another try may fix.
    pub fn again(message: impl Into<String>) -> Self {
        RejoinError {
            message: message.into(),
            permanent: false,
        }
    }
}

/// How long a sender keeps a lost session's endpoint for its receiver to
/// reconnect without a new exchange.
pub const REJOIN_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Current unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

mod acceptor;
mod blobs;
mod console;
mod dialer;
mod mode;

pub use acceptor::{ManualAcceptor, MAX_SETUPS};
pub use blobs::{decode_utf8_lossy, BlobReader, BlobSink, BlobSource};
pub use console::{Console, NoConsole};
pub use dialer::ManualDialer;
pub use mode::ManualMode;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_work_stop_a_receiver_other_failures_retry() {
        let m = || "x".to_string();
        assert!(matches!(
            DialError::from(PathError::Setup(m())),
            DialError::Fatal(_)
        ));
        for e in [PathError::Blob(m()), PathError::Unreachable(m())] {
            assert!(matches!(DialError::from(e), DialError::Unreachable(_)));
        }
    }

    /// Found by the fuzz target `paste_reader` (crash input
    /// fuzz/corpus/paste_reader/regression_end_line_text, without its
    /// first 8 bytes, which say where the target cuts the input): the
    /// blocks a paste gives must not depend on the pieces it arrives in.
    #[test]
    fn a_paste_reads_the_same_in_any_pieces() {
        use peerport_signaling::{
            blob::{Expect, Kind},
            Mode,
        };
        let e = Expect {
            kind: Kind::Offer,
            mode: Mode::Ice,
            session: None,
            now: 1_700_000_000,
            max_age: 900,
        };
        let paste = b"-----BEGIN PEERPORT-----END PEERPORT-----\xff\x00";
        let read = |pieces: &[&[u8]]| {
            let mut r = BlobReader::new(BlobSource::File("paste".into()));
            for p in pieces {
                r.feed(p);
                r.take_blocks(&e);
            }
            r.take_ready()
        };
        let whole = read(&[paste]);
        assert_eq!(whole.len(), 1);
        let (a, b) = paste.split_at(paste.len() - 2);
        assert_eq!(read(&[a, b]), whole);
        let bytes: Vec<&[u8]> = paste.chunks(1).collect();
        assert_eq!(read(&bytes), whole);
    }

    #[test]
    fn invalid_utf8_is_skipped_and_split_characters_wait() {
        let mut raw = b"ab\xffcd\xe2\x82".to_vec();
        let mut out = String::new();
        assert_eq!(decode_utf8_lossy(&mut raw, &mut out), 1);
        assert_eq!(out, "abcd");
        assert_eq!(raw, b"\xe2\x82"); // first two bytes of the euro sign
        raw.extend_from_slice(b"\xac!");
        assert_eq!(decode_utf8_lossy(&mut raw, &mut out), 0);
        assert_eq!(out, "abcd\u{20ac}!");
        assert!(raw.is_empty());
    }
}
