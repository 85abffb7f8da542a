//! [`Sender`]: the service side of a tunnel as a long-lived object. It owns
//! the service address and every live session; connections from receivers
//! come from a back-end's [`Acceptor`] (iroh endpoint, pasted offers, Nostr
//! requests).
//!
//! ```no_run
//! # async fn example(acceptor: impl peerport::transport::Acceptor) -> Result<(), Box<dyn std::error::Error>> {
//! use peerport::{engine::Authorizer, Sender};
//! let sender = Sender::builder("tcp://127.0.0.1:22".parse()?)
//!     .auth(Authorizer::transport_pinned())
//!     .max_sessions(10)
//!     .build();
//! sender.run(acceptor, tokio_util::sync::CancellationToken::new()).await;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{
    addr::ForwardAddr,
    engine::{policy::Catalog, server, Authorizer, EngineConfig, Ledger, SenderContext},
    transport::Acceptor,
};

/// Default most sessions served at once.
pub const DEFAULT_MAX_SESSIONS: usize = 10;

/// Builds a [`Sender`].
#[derive(Debug, Clone)]
pub struct SenderBuilder {
    catalog: Catalog,
    auth: Authorizer,
    engine: EngineConfig,
    max_sessions: usize,
    drain: std::time::Duration,
}

impl SenderBuilder {
    /// On shutdown, let open TCP connections finish for up to this long
    /// before closing them (default 0: close at once). See [`Sender::run_until`].
    pub fn drain_timeout(mut self, d: std::time::Duration) -> Self {
        self.drain = d;
        self
    }

    /// Several named services and destination rules instead of one source.
    pub fn catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = catalog;
        self
    }

    /// Who may use the sender (default: peers pinned by the transport, as
    /// in the copy-paste and Nostr modes).
    pub fn auth(mut self, auth: Authorizer) -> Self {
        self.auth = auth;
        self
    }

    /// Engine tunables.
    pub fn engine(mut self, engine: EngineConfig) -> Self {
        self.engine = engine;
        self
    }

    /// Most receivers served at once (0 = unlimited).
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = n;
        self
    }

    /// The sender.
    pub fn build(self) -> Sender {
        Sender {
            ctx: Arc::new(SenderContext {
                catalog: Arc::new(tokio::sync::watch::Sender::new(Arc::new(self.catalog))),
                auth: self.auth,
                engine: Arc::new(self.engine),
                ledger: Ledger::new(),
                stopping: CancellationToken::new(),
            }),
            max_sessions: self.max_sessions,
            drain: self.drain,
        }
    }
}

/// The sending end of a tunnel: forwards receivers' streams and datagrams
/// to its service.
#[derive(Debug, Clone)]
pub struct Sender {
    ctx: Arc<SenderContext>,
    max_sessions: usize,
    drain: std::time::Duration,
}

impl Sender {
    /// Start building a sender that serves `catalog`: named services and
    /// destination rules.
    pub fn serving(catalog: Catalog) -> SenderBuilder {
        SenderBuilder {
            catalog,
            auth: Authorizer::transport_pinned(),
            engine: EngineConfig::default(),
            max_sessions: DEFAULT_MAX_SESSIONS,
            drain: std::time::Duration::ZERO,
        }
    }

    /// Start building a sender that forwards to `source`.
    pub fn builder(source: ForwardAddr) -> SenderBuilder {
        Sender::serving(Catalog::single(source))
    }

    /// What this sender serves now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.ctx.catalog.borrow().clone()
    }

    /// Serve `catalog` from now on (a reload): new streams and flows use
    /// it at once; a session it no longer allows is closed with the reason
    /// (close code [`crate::engine::close_code::FORBIDDEN`]), the others go on.
    pub fn reload(&self, catalog: Catalog) {
        self.ctx.catalog.send_replace(Arc::new(catalog));
    }

    /// What the sender counts: its live sessions and totals (see
    /// [`crate::status`]).
    pub fn ledger(&self) -> Arc<Ledger> {
        self.ctx.ledger.clone()
    }

    /// Serve sessions from `acceptor` until `shutdown` fires (then drain,
    /// see [`SenderBuilder::drain_timeout`]) or the acceptor ends; every
    /// session is closed before this returns.
    pub async fn run<A: Acceptor>(&self, acceptor: A, shutdown: CancellationToken) {
        self.run_until(acceptor, shutdown, CancellationToken::new())
            .await
    }

    /// As [`Sender::run`], and `now` ends a drain at once (a second
    /// signal).
    pub async fn run_until<A: Acceptor>(
        &self,
        acceptor: A,
        shutdown: CancellationToken,
        now: CancellationToken,
    ) {
        let stop = server::Stop {
            shutdown,
            now,
            drain: self.drain,
            stopping: Some(self.ctx.stopping.clone()),
        };
        server::serve(acceptor, self.ctx.clone(), self.max_sessions, stop).await
    }
}
