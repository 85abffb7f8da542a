//! From a checked pair to a QUIC connection: the controlling side dials, the
//! controlled side accepts, over the pair's socket or through the agent.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use quinn::Runtime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use webrtc_ice::{
    agent::Agent,
    candidate::{candidate_base::unmarshal_candidate, Candidate, CandidateType},
};

use super::{
    agent::hop,
    handoff::{accept_peer, drain, handoff},
    rejoin::{IceRejoin, Opener, Role},
    socket::{DynConn, IceSocket, StunFilter, FAKE_PEER},
    IcePath, Prepared,
};
use super::{remote_filter, turn_probe};
use crate::modes::manual::{PathError, RejoinError, Side};
use crate::transport::{quinn as q, PathInfo};

impl IcePath {
    /// Public addresses of `--bind IP:PORT` (fixed port only) from STUN,
    /// asked from that very socket before the agent binds it.
    pub(super) async fn fixed_port_mappings(&self) -> Result<Vec<SocketAddr>, String> {
        if self.bind.port() == 0 || self.stun_servers.is_empty() || self.relay_only {
            return Ok(Vec::new());
        }
        let probe = tokio::net::UdpSocket::bind(self.bind)
            .await
            .map_err(|e| format!("cannot bind --bind {}: {e}", self.bind))?;
        let found =
            crate::stun::query_all(&probe, &self.stun_servers, Duration::from_secs(3)).await;
        Ok(found.into_iter().map(|m| m.mapped).collect())
    }

    /// A failed rejoin over a relay pair: when a TURN server answers a
    /// fresh allocation now, the server is up, so the pair's allocation
    /// is what is gone (the server restarted and forgot it): no use trying
    /// it again, the next step is a fresh exchange. Otherwise (a direct
    /// pair, or no TURN server answers yet) the rejoin may be tried again.
    pub(super) async fn why_rejoin_failed(&self, r: &IceRejoin, e: String) -> RejoinError {
        if !r.relayed() || self.turn_servers.is_empty() {
            return RejoinError::again(e);
        }
        let answered = self
            .probe_turn_servers(Duration::from_secs(3))
            .await
            .iter()
            .any(|p| p.is_ok());
        if answered {
            RejoinError {
                message: format!(
                    "{e}; the TURN server answers, so the relay allocation this path used is gone (the server restarted?)"
                ),
                permanent: true,
            }
        } else {
            RejoinError::again(format!("{e}; no TURN server answers yet"))
        }
    }

    /// A fresh allocation on every TURN server at once, each within `limit`.
    pub(super) async fn probe_turn_servers(
        &self,
        limit: Duration,
    ) -> Vec<Result<SocketAddr, String>> {
        let ip = self.bind.ip();
        let probes = self
            .turn_servers
            .iter()
            .map(|t| turn_probe::probe(t, ip, limit));
        futures::future::join_all(probes).await
    }

    /// Why TURN servers gave no relay candidate: each is tried directly.
    pub(super) async fn turn_problems(&self) -> Vec<String> {
        self.probe_turn_servers(Duration::from_secs(4))
            .await
            .into_iter()
            .filter_map(|r| r.err())
            .collect()
    }

    pub(super) async fn establish(
        &self,
        p: &Prepared,
        ufrag: String,
        pwd: String,
        peer_fp: [u8; 32],
        candidates: Vec<String>,
        may_move: bool,
    ) -> Result<(quinn::Connection, IceRejoin), PathError> {
        let agent = &p.agent;
        // With a TURN relay, keep the peer's private host addresses only
        // when they are on one of our networks (see `remote_filter`).
        let local_nets = if self.turn_servers.is_empty() {
            None
        } else {
            Some(remote_filter::local_networks())
        };
        for s in &candidates {
            match unmarshal_candidate(s) {
                Ok(c) => {
                    if let Some(nets) = &local_nets {
                        let ip = c.addr().ip();
                        if c.candidate_type() == CandidateType::Host
                            && !remote_filter::reachable_host(ip, nets)
                        {
                            tracing::debug!(
                                "not pairing with the peer's host address {ip}: a private address on none of our networks (a TURN server cannot reach it)"
                            );
                            continue;
                        }
                    }
                    let c: Arc<dyn Candidate + Send + Sync> = Arc::new(c);
                    if let Err(e) = agent.add_remote_candidate(&c) {
                        warn!("ignoring remote candidate `{s}`: {e}");
                    }
                }
                Err(e) => warn!("ignoring malformed remote candidate `{s}`: {e}"),
            }
        }
        let t0 = Instant::now();
        // dropping the cancel sender would cancel dial/accept: keep it
        let (_keep, cancel_rx) = mpsc::channel(1);
        let controlling = p.side == Side::Offerer;
        let conn: DynConn = if controlling {
            agent
                .dial(cancel_rx, ufrag, pwd)
                .await
                .map(|c| c as DynConn)
        } else {
            agent
                .accept(cancel_rx, ufrag, pwd)
                .await
                .map(|c| c as DynConn)
        }
        .map_err(|e| PathError::Unreachable(format!("ICE failed: {e}")))?;
        let mut pair = None;
        for _ in 0..100 {
            pair = agent.get_selected_candidate_pair();
            if pair.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pair = pair.ok_or_else(|| {
            PathError::Unreachable("ICE connected but selected no candidate pair".into())
        })?;
        let relayed = pair.local.candidate_type() == CandidateType::Relay;
        let path = PathInfo::ice(hop(&pair.local), hop(&pair.remote));
        info!(
            ms = t0.elapsed().as_millis() as u64,
            "ICE selected pair: {path}"
        );

        let stop = CancellationToken::new();
        let route = match handoff(&pair) {
            Some((std_sock, remote)) if !relayed => {
                // Stop ICE reading the socket: close the selected candidate first
                // (its receive loop ends at once), then take the QUIC packets the
                // agent already buffered, then close the rest of the agent in the
                // background (a TURN deallocation can take seconds).
                let _ = pair.local.close().await;
                let early = drain(&conn, remote).await;
                let closing = agent.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(30), closing.close()).await;
                });
                let _ = crate::net::tune_udp(&std_sock);
                // a second handle on the socket, to open our NAT towards the
                // peer while waiting for it to reconnect
                let opener = std_sock
                    .try_clone()
                    .ok()
                    .map(|socket| Opener { socket, remote });
                let native = quinn::TokioRuntime.wrap_udp_socket(std_sock).map_err(|e| {
                    PathError::Unreachable(format!("cannot use the selected socket: {e}"))
                })?;
                Route {
                    socket: StunFilter::new(native, early),
                    peer_addr: remote,
                    relay_agent: None,
                    opener,
                    path,
                    stop,
                }
            }
            _ => Route {
                // a punch may move the endpoint onto a native socket later
                socket: IceSocket::new(
                    conn,
                    stop.clone(),
                    if may_move {
                        super::hardnat::pinned::gro_segments()
                    } else {
                        1
                    },
                ),
                peer_addr: FAKE_PEER,
                relay_agent: Some(agent.clone()),
                opener: None,
                path,
                stop,
            },
        };
        self.quic_over(p, peer_fp, route).await
    }

    /// QUIC over `route`: the receiver (controlling) dials, the sender
    /// accepts the pinned peer only.
    pub(super) async fn quic_over(
        &self,
        p: &Prepared,
        peer_fp: [u8; 32],
        route: Route,
    ) -> Result<(quinn::Connection, IceRejoin), PathError> {
        let Route {
            socket,
            peer_addr,
            relay_agent,
            opener,
            path,
            stop,
        } = route;
        let role = if p.side == Side::Offerer {
            Role::Client(
                q::client_config(&p.identity, peer_fp, &self.quic).map_err(PathError::Setup)?,
            )
        } else {
            Role::Server(
                q::server_config(&p.identity, peer_fp, &self.quic).map_err(PathError::Setup)?,
            )
        };
        let server = match &role {
            Role::Server(cfg) => Some(cfg.clone()),
            Role::Client(_) => None,
        };
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            server,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| PathError::Setup(format!("cannot start QUIC: {e}")))?;
        let state = IceRejoin {
            endpoint,
            peer_addr,
            peer_fp,
            role,
            path: tokio::sync::watch::channel(path).0,
            relay_agent,
            stop,
            opener: Arc::new(std::sync::Mutex::new(opener)),
        };
        let t1 = Instant::now();
        let qconn = match &state.role {
            Role::Client(cfg) => state
                .endpoint
                .connect_with(cfg.clone(), peer_addr, q::SERVER_NAME)
                .map_err(|e| PathError::Unreachable(format!("QUIC connect failed: {e}")))?
                .await
                .map_err(|e| PathError::Unreachable(format!("QUIC handshake failed: {e}")))?,
            Role::Server(_) => {
                let c = accept_peer(&state.endpoint)
                    .await
                    .map_err(PathError::Unreachable)?;
                // the one peer is in: later attempts are dropped without state
                state.endpoint.set_server_config(None);
                c
            }
        };
        info!(
            ms = t1.elapsed().as_millis() as u64,
            "QUIC up over {}",
            *state.path.borrow()
        );
        Ok((qconn, state))
    }
}

/// Where QUIC runs: quinn's socket, the peer's address on it, what keeps
/// the path alive, and what it is.
pub(super) struct Route {
    pub(super) socket: Arc<dyn quinn::AsyncUdpSocket>,
    pub(super) peer_addr: SocketAddr,
    pub(super) relay_agent: Option<Arc<Agent>>,
    pub(super) opener: Option<Opener>,
    pub(super) path: PathInfo,
    pub(super) stop: CancellationToken,
}
