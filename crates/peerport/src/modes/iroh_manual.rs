//! The `iroh-manual` mode: iroh QUIC with no relay and no discovery; the
//! peers exchange endpoint ids and addresses by copy-paste.
//!
//! iroh 1.x has no STUN client and owns its socket, so the public address is
//! found by a STUN query from a socket bound to the port the endpoint will
//! use, closed just before iroh binds that port. On endpoint-independent
//! ("cone") NATs the mapping survives and the peer can reach us; on
//! symmetric NATs the mapping differs per destination, so the advertised
//! address is useless and the connection only works if the other side is
//! reachable (use `ice` with TURN there).
//!
//! Both sides dial and accept at once to punch holes. Both endpoints stay
//! up for the life of the session and a while after ([`IrohRejoin`]), so a
//! lost session is re-established without a new paste.
//!
//! Both sides dial and accept at once to punch holes. Two simultaneous
//! dials give two connections; the one dialed by the lower endpoint id is
//! kept on both sides (the other is closed), falling back to the other one
//! if the preferred one does not come up within a few seconds.

use std::{net::SocketAddr, time::Duration};

use iroh::{
    endpoint::{presets, Connection, PortmapperConfig},
    Endpoint, EndpointAddr, EndpointId, RelayMode, SecretKey, TransportAddr,
};
use peerport_signaling::{blob::Body, Mode};
use tokio::net::UdpSocket;
use tracing::{debug, info, Instrument};

use super::manual::{ManualPath, PathError, RejoinError, Side};
use crate::{
    status::iroh_endpoints::{IrohEndpoints, Listed},
    stun,
    transport::{iroh::IrohConnection, QuicSettings},
};

/// ALPN of the copy-paste iroh mode.
pub const ALPN: &[u8] = b"peerport/iroh-manual/1";
const PREFER_WAIT: Duration = Duration::from_secs(3);

/// Settings of the `iroh-manual` path.
#[derive(Debug, Clone)]
pub struct IrohManualPath {
    /// Local address to bind (port 0 = any).
    pub bind: SocketAddr,
    /// STUN servers (`host:port`); empty = no STUN.
    pub stun_servers: Vec<String>,
    /// Ask the router for a port mapping.
    pub portmap: bool,
    /// Idle timeout and congestion controller.
    pub quic: QuicSettings,
    /// How long to try connecting after the exchange.
    pub connect_timeout: Duration,
    /// Where each session's endpoint shows its iroh metrics (`/metrics`).
    pub metrics: IrohEndpoints,
}

/// An endpoint made for an exchange that has not connected yet. Dropped
/// unused (the person pressed Ctrl-C at the prompt, the exchange timed
/// out), it is closed in the background: iroh logs an error for an endpoint
/// dropped without `close`.
pub struct Unclosed(Option<Endpoint>);

impl Drop for Unclosed {
    fn drop(&mut self) {
        if let Some(ep) = self.0.take() {
            // closing an endpoint without connections only tells its tasks
            // to stop
            crate::closing::spawn(async move { ep.close().await });
        }
    }
}

impl ManualPath for IrohManualPath {
    type Conn = IrohConnection;
    /// The session's endpoint, listed in the metrics while it lives.
    type Prepared = (Unclosed, Listed);
    type Rejoin = IrohRejoin;
    const MODE: Mode = Mode::IrohManual;

    async fn prepare(&self, _side: Side) -> Result<((Unclosed, Listed), Body), PathError> {
        // STUN from the port the endpoint will use
        let probe = UdpSocket::bind(self.bind)
            .await
            .map_err(|e| PathError::Unreachable(format!("cannot bind {}: {e}", self.bind)))?;
        let local = probe
            .local_addr()
            .map_err(|e| PathError::Unreachable(e.to_string()))?;
        let mappings = stun::query_all(&probe, &self.stun_servers, Duration::from_secs(3)).await;
        drop(probe);
        let mut b = Endpoint::builder(presets::Minimal)
            .crypto_provider(crate::transport::tls::provider())
            .secret_key(SecretKey::generate())
            .alpns(vec![ALPN.to_vec()])
            .relay_mode(RelayMode::Disabled)
            .transport_config(super::iroh::transport_config(&self.quic))
            // exactly the address asked for (no default socket on the other family)
            .clear_ip_transports()
            .bind_addr(local)
            .map_err(|e| PathError::Setup(format!("cannot bind {local}: {e}")))?;
        if !self.portmap {
            b = b.portmapper_config(PortmapperConfig::Disabled);
        }
        for m in &mappings {
            b = b.external_addr(m.mapped);
        }
        let ep = b
            .bind()
            .await
            .map_err(|e| PathError::Unreachable(format!("cannot start the iroh endpoint: {e}")))?;
        let mut addrs: Vec<SocketAddr> = Vec::new();
        // local interface addresses, as iroh sees them (bounded wait)
        for _ in 0..20 {
            // only what is bound: that IP, or that family's interfaces
            addrs = ep
                .addr()
                .ip_addrs()
                .copied()
                .filter(|a| crate::net::within_bind(local, *a))
                .collect();
            if !addrs.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if addrs.is_empty() && !local.ip().is_unspecified() {
            addrs.push(local);
        }
        for m in &mappings {
            if !addrs.contains(&m.mapped) {
                addrs.push(m.mapped);
            }
        }
        addrs.truncate(16);
        info!(id = %ep.id().fmt_short(), ?addrs, stun = mappings.len(), "iroh-manual endpoint ready");
        let body = Body::Iroh {
            endpoint_id: *ep.id().as_bytes(),
            addrs,
        };
        let listed = self.metrics.add(&ep);
        Ok(((Unclosed(Some(ep)), listed), body))
    }

    async fn connect(
        &self,
        (mut ep, listed): (Unclosed, Listed),
        peer: Body,
        side: Side,
        peer_deadline: Option<tokio::time::Instant>,
    ) -> Result<(IrohConnection, Option<IrohRejoin>), PathError> {
        let Some(ep) = ep.0.take() else {
            return Err(PathError::Setup("the endpoint was already used".into()));
        };
        let Body::Iroh { endpoint_id, addrs } = peer else {
            ep.close().await;
            return Err(PathError::Blob(
                "the peer's blob is not an iroh-manual blob".into(),
            ));
        };
        let Ok(id) = EndpointId::from_bytes(&endpoint_id) else {
            ep.close().await;
            return Err(PathError::Blob(
                "the peer's endpoint id is not a valid key: exchange fresh blobs".into(),
            ));
        };
        let addr = EndpointAddr::from_parts(id, addrs.into_iter().map(TransportAddr::Ip));
        let state = IrohRejoin::new(ep, addr, listed);
        // a copy-paste answerer keeps dialing as long as the offer is valid:
        // the person may carry the answer back minutes later
        let now = tokio::time::Instant::now();
        let until = peer_deadline.unwrap_or(now).max(now + self.connect_timeout);
        match tokio::time::timeout_at(until, race(&state)).await {
            Ok(conn) => Ok((
                IrohConnection::new(conn).watching_local_address(),
                Some(state),
            )),
            Err(_) => {
                state.ep.close().await;
                let waited = now.elapsed().as_secs();
                Err(PathError::Unreachable(match side {
                    Side::Answerer => format!(
                        "the receiver did not connect within {waited} s of answering: it did not get this ANSWER while its offer was valid, or it stopped; if it did paste the answer, no direct path exists (a symmetric NAT, or UDP blocked): iroh-manual has no relay, use the `ice` mode with a TURN server"
                    ),
                    Side::Offerer => format!(
                        "could not reach the sender within {waited} s: check that it still runs and answered this offer; if it does, no direct path exists (a symmetric NAT on one side, or UDP blocked): iroh-manual has no relay, use the `ice` mode with a TURN server"
                    ),
                }))
            }
        }
    }

    async fn rejoin(
        &self,
        state: &IrohRejoin,
        _side: Side,
        limit: Duration,
    ) -> Result<IrohConnection, RejoinError> {
        // This host lost the address the path left from (renumbered): the
        // peer's NAT may not let the new one in, so one short try, then a
        // fresh exchange rather than the full tries.
        let gone = state
            .sources
            .iter()
            .find(|ip| crate::net::address_gone(**ip));
        let limit = match gone {
            Some(_) => limit.min(RENUMBERED_TRY),
            None => limit,
        };
        match tokio::time::timeout(limit, race(state)).await {
            Ok(conn) => {
                info!(peer = %state.peer.id.fmt_short(), "reconnected to the same peer endpoint");
                Ok(IrohConnection::new(conn).watching_local_address())
            }
            Err(_) => {
                let message = format!(
                    "the peer endpoint {} did not answer within {} s",
                    state.peer.id.fmt_short(),
                    limit.as_secs()
                );
                Err(match gone {
                    Some(ip) => RejoinError {
                        message: format!("{message}, and this host no longer has the address {ip} the path used (renumbered?)"),
                        permanent: true,
                    },
                    None => RejoinError::again(message),
                })
            }
        }
    }

    async fn release(&self, state: IrohRejoin) {
        state.ep.close().await;
    }

    fn metrics(&self) -> Option<crate::status::Extra> {
        Some(self.metrics.extra())
    }
}

/// Both endpoints of an `iroh-manual` session stay up after the exchange:
/// either side can connect again to the other's id and addresses, so a
/// lost session comes back without a new paste while the addresses work.
/// Only the peer named in the blob gets in; anyone else is refused.
pub struct IrohRejoin {
    ep: Endpoint,
    peer: EndpointAddr,
    from_peer: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Connection>>,
    _accept: tokio_util::task::AbortOnDropHandle<()>,
    /// The local addresses this host reaches the peer's direct addresses
    /// from (as routed when the session began).
    sources: Vec<std::net::IpAddr>,
    /// The endpoint's place in the metrics.
    _listed: Listed,
}

/// Dropped without [`ManualPath::release`] (a connect given up midway,
/// because the other way back won), the endpoint closes in the background,
/// as [`Unclosed`] does.
impl Drop for IrohRejoin {
    fn drop(&mut self) {
        if self.ep.is_closed() {
            return;
        }
        let ep = self.ep.clone();
        crate::closing::spawn(async move { ep.close().await });
    }
}

/// How long a reconnect tries the old path after this host was renumbered.
const RENUMBERED_TRY: Duration = Duration::from_secs(3);

impl IrohRejoin {
    fn new(ep: Endpoint, peer: EndpointAddr, listed: Listed) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let task = tokio::spawn(accept_peer(ep.clone(), peer.id, tx).in_current_span());
        let mut sources: Vec<std::net::IpAddr> = peer
            .ip_addrs()
            .filter_map(|a| crate::net::route_source(*a))
            .filter(|ip| !ip.is_loopback())
            .collect();
        sources.sort();
        sources.dedup();
        IrohRejoin {
            sources,
            ep,
            peer,
            from_peer: tokio::sync::Mutex::new(rx),
            _accept: tokio_util::task::AbortOnDropHandle::new(task),
            _listed: listed,
        }
    }
}

/// Accept connections for as long as the endpoint lives: the peer's go to
/// `tx` (a surplus one is closed), strangers are refused. Handshakes run
/// under the gate: a flood of forged Initials neither grows memory nor
/// delays the real peer.
async fn accept_peer(ep: Endpoint, peer: EndpointId, tx: tokio::sync::mpsc::Sender<Connection>) {
    let (gated_tx, mut gated) = tokio::sync::mpsc::channel(4);
    let _gate = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
        crate::transport::gate::accept_gated(ep, gated_tx),
    ));
    while let Some(c) = gated.recv().await {
        if c.remote_id() != peer {
            tracing::warn!(stranger = %c.remote_id().fmt_short(), "refusing a connection from an endpoint not in the blob");
            c.close(1u32.into(), b"unauthorized");
            continue;
        }
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(c)) = tx.try_send(c) {
            c.close(0u32.into(), b"duplicate");
        }
    }
}

/// How long one handshake attempt may take before a fresh one: the first
/// [`FIRST_DIAL_ATTEMPT`], each next one twice as long, up to this.
const DIAL_ATTEMPT: Duration = Duration::from_secs(3);
/// The first handshake attempt's time. A peer's first Initial often
/// meets a NAT that the other side has not opened yet, and QUIC sends it
/// again only after a second; a fresh attempt goes out sooner.
const FIRST_DIAL_ATTEMPT: Duration = Duration::from_millis(300);

/// Dial and accept at once; keep the connection dialed by the lower id.
async fn race(state: &IrohRejoin) -> Connection {
    let (ep, peer) = (&state.ep, &state.peer);
    let me = ep.id();
    let peer_id = peer.id;
    let i_dial_preferred = me < peer_id;
    let dial = async {
        let mut delay = Duration::from_millis(200);
        let mut attempt = FIRST_DIAL_ATTEMPT;
        loop {
            // one handshake at most a few seconds: its retransmissions back
            // off (after an outage the next one may be many seconds away),
            // a fresh attempt does not
            match tokio::time::timeout(attempt, ep.connect(peer.clone(), ALPN)).await {
                Ok(Ok(c)) => return c,
                Ok(Err(e)) => {
                    debug!("dial failed: {e}; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(_) => debug!("no answer within {attempt:?}; dialing afresh"),
            }
            attempt = (attempt * 2).min(DIAL_ATTEMPT);
        }
    };
    let listen = async {
        let mut from_peer = state.from_peer.lock().await;
        loop {
            let Some(c) = from_peer.recv().await else {
                return std::future::pending().await;
            };
            // a connection queued before an earlier one was chosen may be gone
            if c.close_reason().is_none() {
                return c;
            }
        }
    };
    tokio::pin!(dial, listen);
    let (first, first_is_dial) = tokio::select! {
        c = &mut dial => (c, true),
        c = &mut listen => (c, false),
    };
    let first_preferred = first_is_dial == i_dial_preferred;
    if first_preferred {
        return first;
    }
    // the other connection is the agreed one: give it a moment
    let other = tokio::time::timeout(PREFER_WAIT, async {
        if first_is_dial {
            listen.await
        } else {
            dial.await
        }
    })
    .await;
    match other {
        Ok(c) => {
            first.close(0u32.into(), b"duplicate");
            c
        }
        Err(_) => first,
    }
}
