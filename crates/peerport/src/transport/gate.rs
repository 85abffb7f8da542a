//! What an endpoint does with connection attempts before any key is
//! checked: the first line against floods of forged QUIC Initials.
//!
//! Every Initial that reaches a QUIC server becomes an `Incoming` that holds
//! its packet and keys until the application accepts, refuses or ignores
//! it; nothing expires them, and the stack queues up to 65,536 (hundreds of
//! MB). So:
//! * a side that never takes connections (a receiver, and a copy-paste
//!   endpoint once its session is up) ignores every attempt at once
//!   ([`ignore_all`]);
//! * a sender drops Initials that do not decrypt, sends a stateless Retry to
//!   unvalidated addresses once a few handshakes are in flight, and never runs
//!   more than [`MAX_HANDSHAKES`] at once ([`Gate::admit`]).

use std::{sync::Arc, time::Duration};

use iroh::endpoint::{Connection, Endpoint, Incoming};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// How long a peer may take to complete the QUIC handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Most handshakes a sender runs at once; more attempts are ignored.
pub const MAX_HANDSHAKES: usize = 64;
/// With this many handshakes in flight, addresses must prove themselves
/// with a Retry round trip first (spoofed sources cannot).
pub const RETRY_ABOVE: usize = 4;

/// Admission control for incoming handshakes.
#[derive(Clone)]
pub struct Gate {
    slots: Arc<Semaphore>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            slots: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
        }
    }
}

impl Gate {
    /// Handshakes in flight.
    pub fn in_flight(&self) -> usize {
        MAX_HANDSHAKES - self.slots.available_permits()
    }

    /// Decide about one attempt: `Some` (with a slot held for the handshake)
    /// to go ahead, `None` when it was ignored or sent a Retry.
    pub fn admit(&self, inc: Incoming) -> Option<(Incoming, OwnedSemaphorePermit)> {
        if inc.decrypt().is_none() {
            // not a QUIC Initial anyone could have sealed: no reply, no state
            inc.ignore();
            return None;
        }
        if self.in_flight() >= RETRY_ABOVE && !inc.remote_addr_validated() {
            if let Err(e) = inc.retry() {
                e.into_incoming().ignore();
            }
            return None;
        }
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Some((inc, permit)),
            Err(_) => {
                inc.ignore();
                None
            }
        }
    }
}

/// Take connection attempts on `ep` until it closes (or `out` is dropped):
/// each admitted by a [`Gate`], handshakes run concurrently, each bounded by
/// [`HANDSHAKE_TIMEOUT`]; completed connections go to `out`. Failed
/// handshakes are logged at debug level: strangers and floods cost no log
/// lines.
pub async fn accept_gated(ep: Endpoint, out: mpsc::Sender<Connection>) {
    let gate = Gate::default();
    let mut handshakes = tokio::task::JoinSet::new();
    loop {
        let inc = tokio::select! {
            inc = ep.accept() => match inc { Some(i) => i, None => break },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
            _ = out.closed() => break,
        };
        let Some((inc, permit)) = gate.admit(inc) else {
            continue;
        };
        let out = out.clone();
        handshakes.spawn(async move {
            let remote = format!("{:?}", inc.remote_addr());
            let r = tokio::time::timeout(HANDSHAKE_TIMEOUT, inc).await;
            drop(permit);
            match r {
                Ok(Ok(conn)) => {
                    let _ = out.send(conn).await;
                }
                Ok(Err(e)) => tracing::debug!("handshake with {remote} failed: {e}"),
                Err(_) => tracing::debug!("handshake with {remote} timed out"),
            }
        });
    }
}

/// Ignore every connection attempt on `ep` until it closes.
pub async fn ignore_all(ep: Endpoint) {
    while let Some(inc) = ep.accept().await {
        tracing::trace!("ignoring an incoming connection attempt");
        inc.ignore();
    }
}
