//! QUIC on a punched 5-tuple.
//!
//! * From the TURN relay, under a running connection ([`spawn`]): when the
//!   session's punch finds a direct 5-tuple, the QUIC endpoint moves onto
//!   it ([`Pinned`]: quinn keeps seeing the same peer address, so nothing
//!   migrates and no stream notices), the path changes to direct (logged
//!   once, shown by status), and the ICE agent with its TURN allocation
//!   closes a little later, once the peer has moved too.
//! * From the start, when nothing could relay ([`IcePath::punched`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tracing::{debug, info};
use webrtc_ice::agent::Agent;

use super::{
    establish::Route,
    hardnat::{attempt::Attempt, pinned::Pinned},
    rejoin::{IceRejoin, Opener},
    IcePath, Prepared,
};
use crate::modes::manual::PathError;
use crate::transport::{Candidate, Hop, PathInfo, PathKind};

/// How long the relay stays up after the move: the peer moves when its
/// own punch ends (at most a nomination's retries later), and until then
/// its packets come over the relay.
const RELAY_GRACE: Duration = Duration::from_secs(10);

/// Move `r`'s connection onto `attempt`'s 5-tuple once it is found; the
/// task ends then (after the relay's grace), when the punch fails, or
/// when the connection's `stop` is cancelled.
pub(super) fn spawn(attempt: Attempt, r: &IceRejoin) {
    let endpoint = r.endpoint.clone();
    let seen_as = r.peer_addr;
    let path = r.path.clone();
    let opener = r.opener.clone();
    let agent = r.relay_agent.clone();
    let stop = r.stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = upgrade(attempt, endpoint, seen_as, path, opener, agent) => {}
            () = stop.cancelled() => {}
        }
    });
}

async fn upgrade(
    attempt: Attempt,
    endpoint: quinn::Endpoint,
    seen_as: std::net::SocketAddr,
    path: tokio::sync::watch::Sender<PathInfo>,
    opener: Arc<std::sync::Mutex<Option<Opener>>>,
    agent: Option<Arc<Agent>>,
) {
    let (side, answer) = (attempt.side(), attempt.answer());
    let punched = match attempt.result().await {
        Ok(p) => p,
        Err(e) => {
            info!("no direct path through the symmetric NAT ({e}): staying on the relay");
            return;
        }
    };
    let remote = punched.remote;
    let moved = punched.socket.into_std().and_then(|socket| {
        // the buffers a direct pair's socket gets
        let _ = crate::net::tune_udp(&socket);
        let own = socket.try_clone()?;
        let local = socket.local_addr()?;
        endpoint.rebind_abstract(Pinned::answering(socket, remote, seen_as, Some(answer))?)?;
        Ok((own, local))
    });
    let (own, local) = match moved {
        Ok(m) => m,
        Err(e) => {
            info!("cannot move to the punched path ({e}): staying on the relay");
            return;
        }
    };
    debug!(?side, %local, %remote, "moved onto the punched 5-tuple");
    *opener.lock().unwrap_or_else(|e| e.into_inner()) = Some(Opener {
        socket: own,
        remote,
    });
    path.send_replace(punched_path(local, remote));
    tokio::time::sleep(RELAY_GRACE).await;
    if let Some(agent) = agent {
        let _ = tokio::time::timeout(Duration::from_secs(5), agent.close()).await;
    }
}

/// A punched 5-tuple as a path: our socket (when bound to one address)
/// and the peer's address as our socket sees it (peer-reflexive).
fn punched_path(local: SocketAddr, remote: SocketAddr) -> PathInfo {
    PathInfo {
        kind: PathKind::Direct,
        local: (!local.ip().is_unspecified()).then_some(Hop {
            addr: local,
            candidate: Some(Candidate::Host),
        }),
        remote: Some(Hop {
            addr: remote,
            candidate: Some(Candidate::Prflx),
        }),
        relay_url: None,
    }
}

impl IcePath {
    /// QUIC on the punch's 5-tuple from the start (no relay on either
    /// side to start on).
    pub(super) async fn punched(
        &self,
        p: &Prepared,
        attempt: Attempt,
        peer_fp: [u8; 32],
    ) -> Result<(quinn::Connection, IceRejoin), PathError> {
        let answer = attempt.answer();
        let found = attempt.result().await.map_err(|e| {
            PathError::Unreachable(format!(
                "no direct path through the symmetric NAT ({e}), and no TURN server on either side to relay: add --turn-server"
            ))
        })?;
        let remote = found.remote;
        let setup = |e: std::io::Error| {
            PathError::Unreachable(format!("cannot use the punched socket: {e}"))
        };
        let socket = found.socket.into_std().map_err(setup)?;
        let _ = crate::net::tune_udp(&socket);
        let local = socket.local_addr().map_err(setup)?;
        let opener = socket
            .try_clone()
            .ok()
            .map(|socket| Opener { socket, remote });
        let route = Route {
            socket: Pinned::answering(socket, remote, remote, Some(answer)).map_err(setup)?,
            peer_addr: remote,
            relay_agent: None,
            opener,
            path: punched_path(local, remote),
            stop: tokio_util::sync::CancellationToken::new(),
        };
        self.quic_over(p, peer_fp, route).await
    }
}
