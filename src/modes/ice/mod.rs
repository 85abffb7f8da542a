//! The `ice` mode (alias `custom`): full ICE (webrtc-ice) for the path,
//! then quinn with certificates pinned by the fingerprints in the blobs.
//!
//! The receiver (offerer) is the ICE controlling agent and the QUIC client;
//! the sender (answerer) is controlled and the QUIC server. Both demand the
//! other's certificate, so only the peer that exchanged blobs gets in.

pub mod socket;

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
    candidate::{candidate_base::unmarshal_candidate, Candidate, CandidateType},
    mdns::MulticastDnsMode,
    network_type::NetworkType,
    url::Url,
};

use self::socket::{DynConn, IceSocket, StunFilter, FAKE_PEER};
use super::manual::{ManualPath, Side};
use crate::transport::quinn::{self as q, Identity, QuinnConnection};

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
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// Bound on ICE plus QUIC setup after the exchange.
    pub connect_timeout: Duration,
}

/// Per-session state between blob creation and connecting.
pub struct Prepared {
    agent: Arc<Agent>,
    identity: Identity,
    side: Side,
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

impl IcePath {
    async fn agent(&self, controlling: bool) -> Result<Agent, String> {
        let mut urls = Vec::new();
        let mut types = Vec::new();
        if !self.relay_only {
            types.push(CandidateType::Host);
            if !self.stun_servers.is_empty() {
                types.push(CandidateType::ServerReflexive);
                for s in &self.stun_servers {
                    urls.push(stun_url(s)?);
                }
            }
        }
        if !self.turn_servers.is_empty() {
            types.push(CandidateType::Relay);
            for t in &self.turn_servers {
                urls.push(turn_url(t)?);
            }
        }
        if types.is_empty() {
            return Err("--relay-only needs at least one --turn-server".into());
        }
        let ip = self.bind.ip();
        let mut network_types = vec![NetworkType::Udp4];
        if ip.is_unspecified() || ip.is_ipv6() {
            network_types.push(NetworkType::Udp6);
        }
        let cfg = AgentConfig {
            network_types,
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
            failed_timeout: Some(Duration::from_secs(20)),
            keepalive_interval: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        Agent::new(cfg)
            .await
            .map_err(|e| format!("cannot create the ICE agent: {e}"))
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

fn describe(c: &Arc<dyn Candidate + Send + Sync>) -> String {
    format!("{} {}", c.candidate_type(), c.addr())
}

impl ManualPath for IcePath {
    type Conn = QuinnConnection;
    type Prepared = Prepared;
    const MODE: Mode = Mode::Ice;

    async fn prepare(&self, side: Side) -> Result<(Prepared, Body), String> {
        let identity = Identity::generate()?;
        let agent = self.agent(side == Side::Offerer).await?;
        let t0 = Instant::now();
        let candidates = gather(&agent, Duration::from_secs(10)).await?;
        let (ufrag, pwd) = agent.get_local_user_credentials().await;
        info!(
            candidates = candidates.len(),
            ms = t0.elapsed().as_millis() as u64,
            "ICE candidates gathered"
        );
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
            },
            body,
        ))
    }

    async fn connect(
        &self,
        p: Prepared,
        peer: Body,
        side: Side,
    ) -> Result<QuinnConnection, String> {
        let Body::Ice {
            ufrag,
            pwd,
            fingerprint,
            candidates,
        } = peer
        else {
            return Err("the peer's blob is not an ice blob".into());
        };
        debug_assert_eq!(side, p.side);
        let agent = p.agent.clone();
        let r = tokio::time::timeout(
            self.connect_timeout,
            self.establish(&p, ufrag, pwd, fingerprint, candidates),
        )
        .await;
        match r {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => {
                let _ = agent.close().await;
                Err(e)
            }
            Err(_) => {
                let _ = agent.close().await;
                Err(format!(
                    "ICE/QUIC setup did not finish within {} s: no candidate pair works (symmetric NAT or UDP blocked?) and no TURN relay was usable; add --turn-server, or exchange fresh blobs",
                    self.connect_timeout.as_secs()
                ))
            }
        }
    }
}

impl IcePath {
    async fn establish(
        &self,
        p: &Prepared,
        ufrag: String,
        pwd: String,
        peer_fp: [u8; 32],
        candidates: Vec<String>,
    ) -> Result<QuinnConnection, String> {
        let agent = &p.agent;
        for s in &candidates {
            match unmarshal_candidate(s) {
                Ok(c) => {
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
        .map_err(|e| format!("ICE failed: {e}"))?;
        let mut pair = None;
        for _ in 0..100 {
            pair = agent.get_selected_candidate_pair();
            if pair.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pair = pair.ok_or("ICE connected but selected no candidate pair")?;
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
        let (socket, peer_addr, keep): (
            Arc<dyn quinn::AsyncUdpSocket>,
            SocketAddr,
            Option<q::KeepAlive>,
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
                let native = quinn::TokioRuntime
                    .wrap_udp_socket(std_sock)
                    .map_err(|e| format!("cannot use the selected socket: {e}"))?;
                (StunFilter::new(native, early), remote, None)
            }
            _ => {
                let keep: q::KeepAlive = agent.clone();
                (IceSocket::new(conn, stop.clone()), FAKE_PEER, Some(keep))
            }
        };
        let server = if controlling {
            None
        } else {
            Some(q::server_config(&p.identity, peer_fp, self.idle_timeout)?)
        };
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            server,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| format!("cannot start QUIC: {e}"))?;
        let t1 = Instant::now();
        let qconn = if controlling {
            let cfg = q::client_config(&p.identity, peer_fp, self.idle_timeout)?;
            endpoint
                .connect_with(cfg, peer_addr, q::SERVER_NAME)
                .map_err(|e| format!("QUIC connect failed: {e}"))?
                .await
                .map_err(|e| format!("QUIC handshake failed: {e}"))?
        } else {
            loop {
                let incoming = endpoint
                    .accept()
                    .await
                    .ok_or("QUIC endpoint closed before the peer connected")?;
                match incoming.await {
                    Ok(c) => break c,
                    // a wrong certificate fails here; keep waiting for the right peer
                    Err(e) => warn!("refused a QUIC connection: {e}"),
                }
            }
        };
        info!(ms = t1.elapsed().as_millis() as u64, "QUIC up over {path}");
        Ok(QuinnConnection::new(
            qconn,
            endpoint,
            peer_fp,
            path,
            keep,
            Some(stop),
        ))
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
