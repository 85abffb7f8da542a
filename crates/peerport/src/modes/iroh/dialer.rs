//! The receiver side of the `iroh` mode: dial the sender's endpoint id,
//! retrying while discovery catches up.

use std::time::Duration;

use iroh::{Endpoint, EndpointAddr};
use tracing::{debug, info};

use super::{IrohError, PeerSpec, ALPN};
use crate::transport::iroh::IrohConnection;

/// Dial the sender (its id, and its relays if known), retrying while
/// discovery catches up (bounded by `limit`).
pub async fn connect(
    ep: &Endpoint,
    addr: EndpointAddr,
    limit: Duration,
) -> Result<IrohConnection, IrohError> {
    let peer = addr.id;
    let deadline = tokio::time::Instant::now() + limit;
    let mut delay = Duration::from_millis(250);
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let attempt = tokio::time::timeout(
            remaining.max(Duration::from_millis(1)),
            ep.connect(addr.clone(), ALPN),
        )
        .await;
        let last = match attempt {
            Ok(Ok(conn)) => {
                info!(target: crate::EVENT, peer = %peer.fmt_short(), "connected to sender");
                return Ok(IrohConnection::new(conn));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        if tokio::time::Instant::now() + delay >= deadline {
            return Err(IrohError::Unreachable {
                peer: peer.to_string(),
                secs: limit.as_secs(),
                last,
            });
        }
        debug!("connect attempt failed ({last}); retrying in {delay:?}");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Receiver side of the `iroh` mode: dials the sender's endpoint id
/// (discovery and relay find it again after a restart), so it reconnects
/// without a person.
#[derive(Debug)]
pub struct IrohDialer {
    ep: Endpoint,
    peer: PeerSpec,
    connect_timeout: Duration,
    _ignore: tokio_util::task::AbortOnDropHandle<()>,
}

impl IrohDialer {
    /// Dial `peer` from `ep`, each attempt bounded by `connect_timeout`.
    /// The endpoint only dials: incoming attempts are ignored statelessly.
    pub fn new(ep: Endpoint, peer: PeerSpec, connect_timeout: Duration) -> Self {
        let ignore = tokio::spawn(crate::transport::gate::ignore_all(ep.clone()));
        IrohDialer {
            ep,
            peer,
            connect_timeout,
            _ignore: tokio_util::task::AbortOnDropHandle::new(ignore),
        }
    }
}

impl crate::transport::Dialer for IrohDialer {
    type Conn = IrohConnection;

    fn unattended(&self) -> bool {
        true
    }

    fn token(&self) -> Option<Vec<u8>> {
        self.peer.token.clone()
    }

    async fn dial(&mut self) -> Result<IrohConnection, crate::transport::DialError> {
        connect(&self.ep, self.peer.addr(), self.connect_timeout)
            .await
            .map_err(|e| crate::transport::DialError::Unreachable(e.to_string()))
    }

    async fn close(self) {
        self.ep.close().await;
    }
}
