//! The sender side of the `iroh` mode: receivers arrive on the sender's
//! endpoint, through the transport's gate (ALPN check, bounded handshakes).

use iroh::{endpoint::Connection, Endpoint};
use tracing::Instrument;

use crate::transport::{gate::accept_gated, iroh::IrohConnection, AcceptError, Acceptor};

/// Accepts receivers on an iroh endpoint, through [`accept_gated`].
#[derive(Debug)]
pub struct IrohAcceptor {
    ep: Endpoint,
    rx: tokio::sync::mpsc::Receiver<Connection>,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

impl IrohAcceptor {
    /// Accept connections on `ep` (a sender's endpoint) until it closes;
    /// [`Acceptor::shutdown`] closes it.
    pub fn new(ep: Endpoint) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let task = tokio::spawn(accept_gated(ep.clone(), tx).in_current_span());
        IrohAcceptor {
            ep,
            rx,
            _task: tokio_util::task::AbortOnDropHandle::new(task),
        }
    }
}

impl Acceptor for IrohAcceptor {
    type Conn = IrohConnection;

    async fn accept(&mut self) -> Option<Result<IrohConnection, AcceptError>> {
        self.rx.recv().await.map(|c| Ok(IrohConnection::new(c)))
    }

    /// Close the endpoint: its relay connection and sockets.
    async fn shutdown(self) {
        self.ep.close().await;
    }
}
