//! An ICE agent for one session: created with the STUN and TURN servers, its
//! candidates gathered (and a server-reflexive one for a fixed port).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tokio::sync::mpsc;
use webrtc_ice::{
    agent::{agent_config::AgentConfig, Agent},
    candidate::{Candidate, CandidateType},
    mdns::MulticastDnsMode,
    network_type::NetworkType,
    udp_network::{EphemeralUDP, UDPNetwork},
};

use super::{relay_only_problem, stun_url, turn_url, IcePath};
use crate::modes::manual::PathError;
use crate::transport::Hop;

impl IcePath {
    /// The ICE agent for one session; every failure is a setting that
    /// cannot work.
    pub(super) async fn agent(&self, controlling: bool) -> Result<Agent, PathError> {
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
            // nominate a working direct pair after 0.2 s, not webrtc-ice's
            // 0.5 s (server-reflexive) or 1 s (peer-reflexive: the usual
            // remote behind a NAT): a better pair has had its checks by
            // then, and each reconnect paid the full second
            srflx_acceptance_min_wait: Some(Duration::from_millis(200)),
            prflx_acceptance_min_wait: Some(Duration::from_millis(200)),
            disconnected_timeout: Some(Duration::from_secs(10)),
            // ICE never gives up by itself: a copy-paste answerer waits for
            // its receiver as long as the offer is valid, and a relay pair
            // must outlive a blackout for a rejoin ([`IceRejoin`]). Setup is
            // bounded by the connect timeout above ICE, a session by QUIC's
            // idle timeout, a rejoin by its window.
            failed_timeout: Some(crate::modes::manual::MAX_BLOB_AGE + Duration::from_secs(60)),
            keepalive_interval: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        Agent::new(cfg)
            .await
            .map_err(|e| PathError::Setup(format!("cannot create the ICE agent: {e}")))
    }
}

pub(super) async fn gather(agent: &Agent, limit: Duration) -> Result<Vec<String>, String> {
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
pub(super) fn srflx_candidates(
    mapped: &[SocketAddr],
    bind: SocketAddr,
    have: &[String],
) -> Vec<String> {
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

/// A candidate as one end of a path.
pub(super) fn hop(c: &Arc<dyn Candidate + Send + Sync>) -> Hop {
    use crate::transport::Candidate as Typ;
    Hop {
        addr: c.addr(),
        candidate: match c.candidate_type() {
            CandidateType::Host => Some(Typ::Host),
            CandidateType::ServerReflexive => Some(Typ::Srflx),
            CandidateType::PeerReflexive => Some(Typ::Prflx),
            CandidateType::Relay => Some(Typ::Relay),
            CandidateType::Unspecified => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use webrtc_ice::candidate::{candidate_base::unmarshal_candidate, Candidate, CandidateType};

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
