//! The seam every signaling back-end implements: given its settings, a
//! mode builds the sender's [`Acceptor`] and the receiver's [`Dialer`],
//! with what goes with them (who is admitted, what to tell the person,
//! the mode's own metrics). The CLI, the demo and programs embedding the
//! library run any mode through one generic path over [`Mode`].

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use crate::{
    engine::Authorizer,
    status::Extra,
    transport::{Acceptor, Dialer},
};

use super::manual::{Console, NoConsole};

/// A signaling back-end, implemented by its settings type
/// ([`super::IrohMode`], [`super::ManualMode`], [`super::NostrMode`]).
pub trait Mode: Send + Sync + 'static {
    /// The name the mode goes by (`peerport sender NAME`).
    const NAME: peerport_signaling::Mode;
    /// What a sender accepts receivers with.
    type Acceptor: Acceptor + 'static;
    /// What a receiver reaches the sender with.
    type Dialer: Dialer + 'static;

    /// Set up the sender side: bind, connect to signaling, load identities.
    fn acceptor(
        &self,
        cx: &ModeContext,
    ) -> impl Future<Output = Result<Accepting<Self::Acceptor>, ModeError>> + Send;

    /// Set up the receiver side (the first dial happens in the receiver).
    fn dialer(
        &self,
        cx: &ModeContext,
    ) -> impl Future<Output = Result<Dialing<Self::Dialer>, ModeError>> + Send;

    /// Who a receiver waits for while no session is up.
    fn awaiting(&self) -> Awaiting;
}

/// What both sides share with their mode.
#[derive(Clone)]
pub struct ModeContext {
    /// Where the copy-paste modes show blobs and read pastes when no
    /// file is given.
    pub console: Arc<dyn Console>,
    /// Sender: most sessions at once (0 = unlimited); the Nostr acceptor
    /// refuses beyond it before any ICE work.
    pub max_sessions: usize,
    /// How long one attempt to connect may take.
    pub connect_timeout: Duration,
}

impl Default for ModeContext {
    fn default() -> Self {
        ModeContext {
            console: Arc::new(NoConsole),
            max_sessions: 0,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

impl ModeContext {
    /// How long a copy-paste receiver tries to reconnect to the same
    /// endpoints before asking for a new exchange: such a rejoin works
    /// within seconds or not at all.
    pub fn rejoin_limit(&self) -> Duration {
        self.connect_timeout.min(Duration::from_secs(10))
    }
}

/// A sender's acceptor and what goes with it.
pub struct Accepting<A> {
    /// The source of connections from receivers.
    pub acceptor: A,
    /// How the sender admits a receiver (access token, pinned ids, or the
    /// transport's own pinning).
    pub auth: Authorizer,
    /// What the person starting the sender needs to know.
    pub announce: Announce,
    /// The mode's metrics for `/metrics`, if it has any.
    pub metrics: Option<Extra>,
    /// Set once the acceptor ended because its input (a terminal) closed.
    pub input_closed: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// A receiver's dialer and what goes with it.
pub struct Dialing<D> {
    /// The way to reach the sender.
    pub dialer: D,
    /// The mode's metrics for `/metrics`, if it has any.
    pub metrics: Option<Extra>,
}

/// What a sender tells the person who started it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announce {
    /// What the receiver's person must be given (the iroh ticket): shown
    /// alone on standard output, so it can be piped.
    pub ticket: Option<peerport_signaling::Ticket>,
    /// This sender's public identity (endpoint id, npub).
    pub identity: Option<String>,
    /// The one peer this sender answers (the receiver's npub).
    pub answers: Option<String>,
    /// How many signaling relays it uses (Nostr).
    pub relays: usize,
    /// How many receiver ids are pinned (`--allowed-peer`); 0 means any
    /// receiver with the ticket.
    pub pinned: usize,
}

/// Who a receiver waits for while no session is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Awaiting {
    /// The iroh sender, by endpoint id (if the receiver knows it).
    Endpoint(Option<String>),
    /// The Nostr sender, by npub.
    Npub(String),
    /// The sender's answer, appended to this file.
    AnswerFile(PathBuf),
    /// A paste on the console (its prompt says so).
    Paste,
}

/// Why a mode could not set up.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    /// The identity file could not be read or created.
    #[error("{0}")]
    #[cfg(feature = "iroh")]
    Identity(#[source] crate::identity::IdentityError),
    /// The iroh endpoint could not start.
    #[error("{0}")]
    #[cfg(feature = "iroh")]
    Iroh(#[source] super::iroh::IrohError),
    /// The Nostr relays could not be used.
    #[error("{0}")]
    #[cfg(feature = "nostr")]
    Nostr(#[source] peerport_signaling::nostr::NostrError),
    /// A setting the role needs is missing.
    #[error("{0}")]
    Missing(&'static str),
}
