//! The `ice` mode (alias `custom`): full ICE (webrtc-ice) for the path,
//! then quinn with certificates pinned by the fingerprints in the blobs.
//!
//! The receiver (offerer) is the ICE controlling agent and the QUIC client;
//! the sender (answerer) is controlled and the QUIC server. Both demand the
//! other's certificate, so only the peer that exchanged blobs gets in.

pub mod remote_filter;
pub mod socket;
pub mod turn_probe;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use peerport_signaling::{blob::Body, Mode};
use quinn::Runtime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use webrtc_ice::{
    agent::{agent_config::AgentConfig, Agent},
    candidate::{
        candidate_base::unmarshal_candidate, Candidate, CandidatePairState, CandidateType,
    },
    mdns::MulticastDnsMode,
    network_type::NetworkType,
    udp_network::{EphemeralUDP, UDPNetwork},
    url::Url,
};

use self::socket::{DynConn, IceSocket, StunFilter, FAKE_PEER};
use super::manual::{ManualPath, PathError, RejoinError, Side};
use crate::transport::{
    quinn::{self as q, Identity, QuinnConnection},
    QuicSettings,
};

/// A TURN server with long-term credentials.
#[derive(Clone)]
pub struct TurnServer {
    /// `host:port`.
    pub host_port: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "turn:{} (user {})", self.host_port, self.user)
    }
}

/// Settings of the ICE path.
#[derive(Debug, Clone)]
pub struct IcePath {
    /// Local address: unspecified = all interfaces; a specific IP limits gathering to it.
    pub bind: SocketAddr,
    /// STUN servers `host:port`.
    pub stun_servers: Vec<String>,
    /// TURN servers.
    pub turn_servers: Vec<TurnServer>,
    /// Only relay candidates.
    pub relay_only: bool,
    /// Idle timeout and congestion controller.
    pub quic: QuicSettings,
    /// Bound on ICE plus QUIC setup after the exchange.
    pub connect_timeout: Duration,
}

/// Per-session state between blob creation and connecting.
pub struct Prepared {
    agent: Arc<Agent>,
    identity: Identity,
    side: Side,
    /// Why configured TURN servers gave no relay candidate (one line each).
    turn_problems: Vec<String>,
}

fn stun_url(s: &str) -> Result<Url, String> {
    Url::parse_url(&format!("stun:{s}")).map_err(|e| format!("--stun-server `{s}`: {e}"))
}

fn turn_url(t: &TurnServer) -> Result<Url, String> {
    let mut u = Url::parse_url(&format!("turn:{}?transport=udp", t.host_port))
        .map_err(|e| format!("--turn-server `{}`: {e}", t.host_port))?;
    // webrtc-ice does not take credentials from the URL string: set the fields
    u.username = t.user.clone();
    u.password = t.password.clone();
    Ok(u)
}

/// What is wrong when `--relay-only` has no TURN server to relay through
/// (checked by the settings before anything binds, and by [`IcePath`] for
/// programs that build one themselves).
pub fn relay_only_problem(relay_only: bool, turn_servers: &[TurnServer]) -> Option<&'static str> {
    (relay_only && turn_servers.is_empty()).then_some("--relay-only needs a --turn-server")
}

impl IcePath {
    /// The ICE agent for one session; every failure is a setting that
    /// cannot work.
    async fn agent(&self, controlling: bool) -> Result<Agent, PathError> {
        if let Some(problem) = relay_only_problem(self.relay_only, &self.turn_servers) {
            return Err(PathError::Setup(problem.into()));
        }
        let mut urls = Vec::new();
        let mut types = Vec::new();
        if !self.relay_only {
            types.push(CandidateType::Host);
            if !self.stun_servers.is_empty() {
                types.push(CandidateType::ServerReflexive);
                for s in &self.stun_servers {
                    urls.push(stun_url(s).map_err(PathError::Setup)?);
                }
            }
        }
        if !self.turn_servers.is_empty() {
            types.push(CandidateType::Relay);
            for t in &self.turn_servers {
                urls.push(turn_url(t).map_err(PathError::Setup)?);
            }
        }
        let ip = self.bind.ip();
        // that family only; `[::]` means both, as a dual-stack socket would
        let network_types = match ip {
            IpAddr::V4(_) => vec![NetworkType::Udp4],
            IpAddr::V6(v6) if v6.is_unspecified() => vec![NetworkType::Udp4, NetworkType::Udp6],
            IpAddr::V6(_) => vec![NetworkType::Udp6],
        };
        // a port given with --bind is the port of the host candidate
        let udp_network = match self.bind.port() {
            0 => UDPNetwork::default(),
            p => UDPNetwork::Ephemeral(
                EphemeralUDP::new(p, p)
                    .map_err(|e| PathError::Setup(format!("--bind port {p}: {e}")))?,
            ),
        };
        let cfg = AgentConfig {
            network_types,
            udp_network,
            candidate_types: types,
            urls,
            multicast_dns_mode: MulticastDnsMode::Disabled,
            include_loopback: ip.is_loopback(),
            ip_filter: Arc::new(if ip.is_unspecified() {
                None
            } else {
                Some(Box::new(move |c: IpAddr| c == ip))
            }),
            is_controlling: controlling,
            relay_acceptance_min_wait: Some(Duration::from_millis(if self.relay_only {
                0
            } else {
                1000
            })),
            disconnected_timeout: Some(Duration::from_secs(10)),
            // ICE never gives up by itself: a copy-paste answerer waits for
            // its receiver as long as the offer is valid, and a relay pair
            // must outlive a blackout for a rejoin ([`IceRejoin`]). Setup is
            // bounded by the connect timeout above ICE, a session by QUIC's
            // idle timeout, a rejoin by its window.
            failed_timeout: Some(super::manual::MAX_BLOB_AGE + Duration::from_secs(60)),
            keepalive_interval: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        Agent::new(cfg)
            .await
            .map_err(|e| PathError::Setup(format!("cannot create the ICE agent: {e}")))
    }
}

async fn gather(agent: &Agent, limit: Duration) -> Result<Vec<String>, String> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<String>>();
    agent.on_candidate(Box::new(
        move |c: Option<Arc<dyn Candidate + Send + Sync>>| {
            let _ = tx.send(c.map(|c| c.marshal()));
            Box::pin(async {})
        },
    ));
    agent
        .gather_candidates()
        .map_err(|e| format!("cannot gather ICE candidates: {e}"))?;
    let mut out = vec![];
    let _ = tokio::time::timeout(limit, async {
        while let Some(Some(c)) = rx.recv().await {
            out.push(c);
        }
    })
    .await;
    if out.is_empty() {
        return Err("no ICE candidates: no usable interface, STUN or TURN server".into());
    }
    Ok(out)
}

/// Server-reflexive candidate lines for STUN-learned public addresses of a
/// fixed-port host candidate (skipping ones already gathered).
fn srflx_candidates(mapped: &[SocketAddr], bind: SocketAddr, have: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, m) in mapped.iter().enumerate() {
        let line = format!(
            "candidate:pps{i} 1 udp 1694498815 {} {} typ srflx raddr {} rport {}",
            m.ip(),
            m.port(),
            bind.ip(),
            bind.port()
        );
        let addr = format!(" {} {} typ ", m.ip(), m.port());
        if m.is_ipv4() == bind.is_ipv4()
            && !have.iter().chain(out.iter()).any(|c| c.contains(&addr))
        {
            out.push(line);
        }
    }
    out
}

fn describe(c: &Arc<dyn Candidate + Send + Sync>) -> String {
    format!("{} {}", c.candidate_type(), c.addr())
}

impl ManualPath for IcePath {
    type Conn = QuinnConnection;
    type Prepared = Prepared;
    type Rejoin = IceRejoin;
    const MODE: Mode = Mode::Ice;

    async fn prepare(&self, side: Side) -> Result<(Prepared, Body), PathError> {
        let identity = Identity::generate().map_err(PathError::Setup)?;
        // With a fixed port, webrtc-ice cannot open its separate STUN socket
        // on that port: learn the public mapping from the port itself first.
        let fixed_port_mappings = self
            .fixed_port_mappings()
            .await
            .map_err(PathError::Unreachable)?;
        let agent = self.agent(side == Side::Offerer).await?;
        let t0 = Instant::now();
        let candidates = match gather(&agent, Duration::from_secs(10)).await {
            Ok(mut c) => {
                c.extend(srflx_candidates(&fixed_port_mappings, self.bind, &c));
                c
            }
            Err(e) if !self.turn_servers.is_empty() => {
                let _ = agent.close().await;
                return Err(PathError::Unreachable(format!(
                    "{e}: {}",
                    self.turn_problems().await.join("; ")
                )));
            }
            Err(e) => {
                let _ = agent.close().await;
                return Err(PathError::Unreachable(e));
            }
        };
        let (ufrag, pwd) = agent.get_local_user_credentials().await;
        let relays = candidates
            .iter()
            .filter(|c| c.contains(" typ relay"))
            .count();
        info!(
            candidates = candidates.len(),
            relays,
            ms = t0.elapsed().as_millis() as u64,
            "ICE candidates gathered"
        );
        let turn_problems = if relays < self.turn_servers.len() {
            self.turn_problems().await
        } else {
            Vec::new()
        };
        for p in &turn_problems {
            warn!("TURN relay unavailable for this session: {p}");
        }
        let body = Body::Ice {
            ufrag,
            pwd,
            fingerprint: identity.fingerprint(),
            candidates,
        };
        Ok((
            Prepared {
                agent: Arc::new(agent),
                identity,
                side,
                turn_problems,
            },
            body,
        ))
    }

    async fn connect(
        &self,
        p: Prepared,
        peer: Body,
        side: Side,
        peer_deadline: Option<tokio::time::Instant>,
    ) -> Result<(QuinnConnection, Option<IceRejoin>), PathError> {
        let (conn, rejoin) = self.connect_path(p, peer, side, peer_deadline).await?;
        let conn = rejoin.connection(conn).sharing_endpoint();
        Ok((conn, Some(rejoin)))
    }

    async fn rejoin(
        &self,
        r: &IceRejoin,
        _side: Side,
        limit: Duration,
    ) -> Result<QuinnConnection, RejoinError> {
        if let Some(gone) = r.local_address_gone() {
            return Err(RejoinError {
                message: gone,
                permanent: true,
            });
        }
        let conn = match &r.role {
            Role::Client(cfg) => r.redial(cfg, limit).await,
            Role::Server(cfg) => r.await_peer(cfg, limit).await,
        };
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => return Err(self.why_rejoin_failed(r, e).await),
        };
        info!(
            "reconnected to the same peer over {} (no new exchange)",
            r.path
        );
        Ok(r.connection(conn).sharing_endpoint())
    }

    async fn release(&self, r: IceRejoin) {
        r.release().await;
    }
}

impl IcePath {
    /// ICE, then QUIC over the selected pair; the connection owns its
    /// endpoint (the Nostr mode re-signals instead of rejoining).
    pub async fn connect_ice(
        &self,
        p: Prepared,
        peer: Body,
        side: Side,
        peer_deadline: Option<tokio::time::Instant>,
    ) -> Result<QuinnConnection, PathError> {
        let (conn, rejoin) = self.connect_path(p, peer, side, peer_deadline).await?;
        Ok(rejoin.into_connection(conn))
    }

    /// ICE, then QUIC over the selected pair, and what it takes to connect
    /// again over the same pair.
    async fn connect_path(
        &self,
        p: Prepared,
        peer: Body,
        side: Side,
        peer_deadline: Option<tokio::time::Instant>,
    ) -> Result<(quinn::Connection, IceRejoin), PathError> {
        let Body::Ice {
            ufrag,
            pwd,
            fingerprint,
            candidates,
        } = peer
        else {
            return Err(PathError::Blob("the peer's blob is not an ice blob".into()));
        };
        debug_assert_eq!(side, p.side);
        let agent = p.agent.clone();
        let start = tokio::time::Instant::now();
        let work = self.establish(&p, ufrag, pwd, fingerprint, candidates);
        tokio::pin!(work);
        // Phase 1: until the peer shows any sign of life (a check answered
        // or received). A copy-paste answerer waits as long as the offer is
        // valid: the person may carry the answer back minutes later.
        let first = peer_deadline
            .unwrap_or(start)
            .max(start + self.connect_timeout);
        let seen = tokio::select! {
            r = &mut work => return close_on_error(r, &agent).await,
            _ = peer_seen(&agent) => true,
            _ = tokio::time::sleep_until(first) => false,
        };
        let r = if seen {
            // Phase 2: the peer is there; the connect timeout runs from now
            // (copy-paste answerer) or from the start (everyone else).
            let until = match peer_deadline {
                Some(_) => tokio::time::Instant::now() + self.connect_timeout,
                None => start + self.connect_timeout,
            };
            match tokio::time::timeout_at(until, &mut work).await {
                Ok(r) => r,
                Err(_) => Err(PathError::Unreachable(format!(
                    "ICE/QUIC setup did not finish within {} s although the peer answered: no candidate pair works{}",
                    self.connect_timeout.as_secs(),
                    p.relay_hint(&self.turn_servers)
                ))),
            }
        } else {
            let waited = start.elapsed().as_secs();
            Err(PathError::Unreachable(match side {
                Side::Answerer => format!(
                    "the receiver never showed up: no connectivity check arrived within {waited} s of answering (it did not get this ANSWER while its offer was valid, or it stopped); if it did paste the answer, no path exists between the hosts{}",
                    p.relay_hint(&self.turn_servers)
                ),
                Side::Offerer => format!(
                    "the sender never answered a connectivity check within {waited} s: check that it still runs and answered this offer; if it does, no path exists between the hosts{}",
                    p.relay_hint(&self.turn_servers)
                ),
            }))
        };
        close_on_error(r, &agent).await
    }
}

/// Close the agent when setting up failed (its TURN allocations go with it).
async fn close_on_error<T>(r: Result<T, PathError>, agent: &Agent) -> Result<T, PathError> {
    if r.is_err() {
        let _ = agent.close().await;
    }
    r
}

/// Resolves once the peer has shown a sign of life: a candidate pair
/// succeeded (it answered a check) or a check arrived from an address it did
/// not announce (a peer-reflexive candidate).
async fn peer_seen(agent: &Agent) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if agent
            .get_candidate_pairs_stats()
            .await
            .iter()
            .any(|s| s.state == CandidatePairState::Succeeded)
            || agent
                .get_remote_candidates_stats()
                .await
                .iter()
                .any(|c| c.candidate_type == CandidateType::PeerReflexive)
        {
            return;
        }
    }
}

impl Prepared {
    /// What to add to a failure message about the relay fallback.
    fn relay_hint(&self, turn: &[TurnServer]) -> String {
        if turn.is_empty() {
            return " (symmetric NAT or UDP blocked?) and no TURN server is configured: add --turn-server".into();
        }
        if !self.turn_problems.is_empty() {
            return format!(
                " and no TURN relay was usable: {}",
                self.turn_problems.join("; ")
            );
        }
        let servers: Vec<String> = turn
            .iter()
            .map(|t| format!("turn:{}", t.host_port))
            .collect();
        format!(
            "; {} handed out a relay but no check passed through it (the peer could not use it, or the server does not relay between its clients: check its denied-peer-ip rules)",
            servers.join(", ")
        )
    }
}

impl IcePath {
    /// Public addresses of `--bind IP:PORT` (fixed port only) from STUN,
    /// asked from that very socket before the agent binds it.
    async fn fixed_port_mappings(&self) -> Result<Vec<SocketAddr>, String> {
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
    async fn why_rejoin_failed(&self, r: &IceRejoin, e: String) -> RejoinError {
        if r.relay_agent.is_none() || self.turn_servers.is_empty() {
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
    async fn probe_turn_servers(&self, limit: Duration) -> Vec<Result<SocketAddr, String>> {
        let ip = self.bind.ip();
        let probes = self
            .turn_servers
            .iter()
            .map(|t| turn_probe::probe(t, ip, limit));
        futures::future::join_all(probes).await
    }

    /// Why TURN servers gave no relay candidate: each is tried directly.
    async fn turn_problems(&self) -> Vec<String> {
        self.probe_turn_servers(Duration::from_secs(4))
            .await
            .into_iter()
            .filter_map(|r| r.err())
            .collect()
    }

    async fn establish(
        &self,
        p: &Prepared,
        ufrag: String,
        pwd: String,
        peer_fp: [u8; 32],
        candidates: Vec<String>,
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
        let path = format!(
            "{} {} -> {}",
            if relayed || pair.remote.candidate_type() == CandidateType::Relay {
                "relay"
            } else {
                "direct"
            },
            describe(&pair.local),
            describe(&pair.remote)
        );
        info!(
            ms = t0.elapsed().as_millis() as u64,
            "ICE selected pair: {path}"
        );

        let stop = CancellationToken::new();
        let (socket, peer_addr, relay_agent, punch): (
            Arc<dyn quinn::AsyncUdpSocket>,
            SocketAddr,
            Option<Arc<Agent>>,
            Option<std::net::UdpSocket>,
        ) = match handoff(&pair) {
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
                let punch = std_sock.try_clone().ok();
                let native = quinn::TokioRuntime.wrap_udp_socket(std_sock).map_err(|e| {
                    PathError::Unreachable(format!("cannot use the selected socket: {e}"))
                })?;
                (StunFilter::new(native, early), remote, None, punch)
            }
            _ => (
                IceSocket::new(conn, stop.clone()),
                FAKE_PEER,
                Some(agent.clone()),
                None,
            ),
        };
        let role = if controlling {
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
            path,
            relay_agent,
            stop,
            punch,
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
            "QUIC up over {}", state.path
        );
        Ok((qconn, state))
    }
}

/// Accept the pinned peer's QUIC connection on `endpoint` (its server
/// config demands the peer's certificate, so strangers fail the handshake).
async fn accept_peer(endpoint: &quinn::Endpoint) -> Result<quinn::Connection, String> {
    let mut attempts = 0u32;
    loop {
        let incoming = endpoint
            .accept()
            .await
            .ok_or("QUIC endpoint closed before the peer connected")?;
        attempts += 1;
        // after a failed attempt, strangers must prove their address
        if attempts > 1 && !incoming.remote_address_validated() && incoming.may_retry() {
            let _ = incoming.retry();
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(10), incoming).await {
            Ok(Ok(c)) => return Ok(c),
            // a wrong certificate fails here (logged by the verifier);
            // keep waiting for the right peer
            Ok(Err(e)) => tracing::debug!("refused a QUIC connection: {e}"),
            Err(_) => tracing::debug!("a QUIC handshake timed out"),
        }
    }
}

/// The QUIC side of an ICE session.
enum Role {
    /// The receiver (offerer) dials.
    Client(quinn::ClientConfig),
    /// The sender (answerer) accepts; only the pinned peer's certificate gets in.
    Server(quinn::ServerConfig),
}

/// What lets an `ice` session come back without a new exchange: both sides
/// keep the QUIC endpoint on the pair ICE selected (the socket of a direct
/// pair, or the ICE agent and its TURN allocation), the peer's address on
/// it and both pinned certificates. After a lost session the receiver
/// dials the same address again and the sender accepts on the same
/// endpoint, which only takes the certificate from the blob; meanwhile the
/// sender sends a small STUN indication to the receiver every few seconds,
/// so its own NAT lets the receiver's packets in. Works while both
/// addresses still work; otherwise the receiver makes a fresh offer.
pub struct IceRejoin {
    endpoint: quinn::Endpoint,
    peer_addr: SocketAddr,
    peer_fp: [u8; 32],
    role: Role,
    path: String,
    /// Kept alive on a relay pair (quinn runs over its `Conn`).
    relay_agent: Option<Arc<Agent>>,
    /// Stops the relay socket's helper tasks.
    stop: CancellationToken,
    /// The direct pair's socket, for NAT-opening packets.
    punch: Option<std::net::UdpSocket>,
}

/// How often a sender waiting for its receiver opens its NAT towards it.
const PUNCH_EVERY: Duration = Duration::from_secs(2);

impl IceRejoin {
    /// A tunnel connection over this state's endpoint.
    fn connection(&self, conn: quinn::Connection) -> QuinnConnection {
        let keep = self.relay_agent.clone().map(|a| a as q::KeepAlive);
        QuinnConnection::new(
            conn,
            self.endpoint.clone(),
            self.peer_fp,
            self.path.clone(),
            keep,
            Some(self.stop.clone()),
        )
    }

    /// A connection that owns the endpoint (nothing is kept for a rejoin).
    fn into_connection(self, conn: quinn::Connection) -> QuinnConnection {
        self.connection(conn)
    }

    /// Receiver: dial the sender's address again until it answers.
    async fn redial(
        &self,
        cfg: &quinn::ClientConfig,
        limit: Duration,
    ) -> Result<quinn::Connection, String> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut delay = Duration::from_millis(200);
        let mut last = String::from("no answer");
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the sender at {} did not answer within {} s ({last})",
                    self.describe_peer(),
                    limit.as_secs()
                ));
            }
            // one handshake at most a few seconds: its retransmissions back
            // off, a fresh attempt does not
            let each = left.min(Duration::from_secs(3));
            match self
                .endpoint
                .connect_with(cfg.clone(), self.peer_addr, q::SERVER_NAME)
            {
                Ok(connecting) => match tokio::time::timeout(each, connecting).await {
                    Ok(Ok(c)) => return Ok(c),
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "no answer".into(),
                },
                Err(e) => last = e.to_string(),
            }
            tracing::debug!("redial failed: {last}; retrying");
            tokio::time::sleep(
                delay.min(deadline.saturating_duration_since(tokio::time::Instant::now())),
            )
            .await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Sender: accept the receiver's next connection on the kept endpoint.
    async fn await_peer(
        &self,
        cfg: &quinn::ServerConfig,
        limit: Duration,
    ) -> Result<quinn::Connection, String> {
        struct Closed<'a>(&'a quinn::Endpoint);
        impl Drop for Closed<'_> {
            fn drop(&mut self) {
                self.0.set_server_config(None);
            }
        }
        self.endpoint.set_server_config(Some(cfg.clone()));
        let _closed = Closed(&self.endpoint);
        let punch = async {
            let Some(sock) = &self.punch else {
                return std::future::pending().await;
            };
            loop {
                // a STUN Binding Indication: the peer's socket filter drops it
                let mut p = vec![0x00, 0x11, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
                p.extend_from_slice(&rand::random::<[u8; 12]>());
                let _ = sock.send_to(&p, self.peer_addr);
                tokio::time::sleep(PUNCH_EVERY).await;
            }
        };
        tokio::select! {
            r = tokio::time::timeout(limit, accept_peer(&self.endpoint)) => match r {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "the receiver at {} did not reconnect within {} s",
                    self.describe_peer(),
                    limit.as_secs()
                )),
            },
            () = punch => unreachable!("the punch loop never ends"),
        }
    }

    /// On a direct pair: whether this host lost the address the pair's
    /// socket is bound to (renumbered, interface gone), so the same pair
    /// can never work again.
    fn local_address_gone(&self) -> Option<String> {
        if self.relay_agent.is_some() {
            return None;
        }
        let ip = self.endpoint.local_addr().ok()?.ip();
        crate::net::address_gone(ip).then(|| {
            format!("this host no longer has the address {ip} that the path used (renumbered?)")
        })
    }

    fn describe_peer(&self) -> String {
        match self.relay_agent {
            Some(_) => format!("the end of {}", self.path),
            None => self.peer_addr.to_string(),
        }
    }

    /// Close the endpoint (after its last connection's close went out)
    /// and the relay agent.
    async fn release(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.endpoint.close(0u32.into(), b"");
        self.stop.cancel();
        if let Some(agent) = self.relay_agent {
            let _ = tokio::time::timeout(Duration::from_secs(5), agent.close()).await;
        }
    }
}

/// Take the data packets the ICE `Conn` has buffered (without waiting).
async fn drain(conn: &DynConn, from: SocketAddr) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while out.len() < 256 {
        match tokio::time::timeout(Duration::ZERO, conn.recv(&mut buf)).await {
            Ok(Ok(n)) if !socket::is_stun(&buf[..n]) => out.push((buf[..n].to_vec(), from)),
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    if !out.is_empty() {
        tracing::debug!(
            packets = out.len(),
            "handed early QUIC packets from ICE to quinn"
        );
    }
    out
}

/// Duplicate the selected local candidate's socket (host/srflx pairs only).
fn handoff(
    pair: &webrtc_ice::candidate::CandidatePair,
) -> Option<(std::net::UdpSocket, SocketAddr)> {
    use std::os::fd::AsFd;
    if !matches!(
        pair.local.candidate_type(),
        CandidateType::Host | CandidateType::ServerReflexive | CandidateType::PeerReflexive
    ) {
        return None;
    }
    let conn = pair.local.get_conn()?;
    let sock = conn.as_any().downcast_ref::<tokio::net::UdpSocket>()?;
    let fd = sock.as_fd().try_clone_to_owned().ok()?;
    let std_sock = std::net::UdpSocket::from(fd);
    std_sock.set_nonblocking(true).ok()?;
    Some((std_sock, pair.remote.addr()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_port_srflx_lines_parse_and_skip_duplicates() {
        let bind: SocketAddr = "0.0.0.0:40555".parse().unwrap();
        let have = vec!["candidate:1 1 udp 2130706431 10.0.0.2 40555 typ host".to_string()];
        let mapped: Vec<SocketAddr> = vec![
            "203.0.113.7:40555".parse().unwrap(),
            "203.0.113.7:40555".parse().unwrap(),
            "10.0.0.2:40555".parse().unwrap(),
        ];
        let lines = srflx_candidates(&mapped, bind, &have);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let c = unmarshal_candidate(&lines[0]).unwrap();
        assert_eq!(c.candidate_type(), CandidateType::ServerReflexive);
        assert_eq!(c.addr(), "203.0.113.7:40555".parse().unwrap());
    }
}
