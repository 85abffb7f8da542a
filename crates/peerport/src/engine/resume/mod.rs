//! Resumable TCP streams: a TCP connection outlives the QUIC connection
//! that carried it.
//!
//! A receiver that asks for it gets a resumable *session* from the sender
//! (a [`Ticket`]: id and secret, handed out inside the encrypted hello
//! reply). Each TCP stream of that session has an id and a [`Slot`]: its
//! [`ReplayBuf`] of bytes the peer has not yet confirmed, and the count of
//! bytes delivered to the local socket. Both sides confirm what they
//! delivered with [`Ack`] frames on the hello stream.
//!
//! When the QUIC connection is lost, every stream task parks with its local
//! socket open (reading nothing from it meanwhile) for the resume window.
//! The receiver reconnects and presents the ticket; the sender checks the
//! secret (constant time; a wrong or stale one is refused and logged, and
//! the receiver gets a fresh session instead), and for each parked stream
//! the receiver opens a resume stream: both sides say how much they
//! delivered, replay the rest from their buffers and carry on. The local
//! sockets never notice. A stream the sender no longer has (it restarted,
//! or the window passed) is closed with a log line saying why.
//!
//! Stream tasks belong to the session (not to one connection), so they
//! live through reconnects; the session's token stops them all.

mod registry;
mod session;
mod slot;
mod stream;

use std::time::Duration;

pub use super::config::ResumeConfig;
pub use registry::{Opened, Registry, MAX_SESSIONS};
pub use session::{with_control, Session};
pub use slot::{Attach, Slot};
pub use stream::{read_ext, Until};

/// Largest read from a local socket.
const READ_CHUNK: usize = 256 * 1024;

/// How long a delivery may wait before it is acknowledged: acks of small
/// writes (interactive traffic) go out in batches, not one packet each.
const ACK_DELAY: Duration = Duration::from_millis(50);

/// Most streams one session holds, open or parked.
pub const MAX_STREAMS: usize = 8192;
