//! The ice mode as a copy-paste path: prepare an agent and describe it in a
//! blob, then connect given the peer's blob.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use peerport_signaling::{blob::Body, Mode};
use tracing::{debug, info, warn};
use webrtc_ice::{
    agent::Agent,
    candidate::{CandidatePairState, CandidateType},
};

use super::{
    agent::{gather, srflx_candidates},
    hardnat::{
        self,
        attempt::{Attempt, Setup},
        hint::Hint,
        schedule::Bounds,
        wire,
    },
    rejoin::{IceRejoin, Role},
    upgrade, IcePath, Prepared, TurnServer,
};
use crate::modes::manual::{ManualPath, PathError, RejoinError, Side};
use crate::transport::quinn::{Identity, QuinnConnection};

/// How long learning the punch hint may take (beside ICE's gathering).
const LEARN_LIMIT: Duration = Duration::from_secs(1);

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
        // this side's NAT for a punch, beside the gathering (not after it)
        let learn = async {
            if !self.punch || self.relay_only {
                return None;
            }
            hardnat::gather::learn(self.bind.ip(), &self.stun_servers, LEARN_LIMIT).await
        };
        let (gathered, learned) = tokio::join!(gather(&agent, Duration::from_secs(10)), learn);
        let mut candidates = match gathered {
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
        let relays = candidates.iter().filter(|c| is_relay(c)).count();
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
        if let Some(l) = &learned {
            debug!(hint = %l.hint.line(), "punch hint");
            candidates.push(l.hint.line());
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
                has_relay: relays > 0,
                punch: std::sync::Mutex::new(learned),
                unused: true.into(),
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
        let (conn, rejoin) = self
            .connect_path(p, peer, side, peer_deadline, false)
            .await?;
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
            *r.path.borrow()
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
        let (conn, rejoin) = self
            .connect_path(p, peer, side, peer_deadline, true)
            .await?;
        Ok(rejoin.into_connection(conn))
    }

    /// ICE, then QUIC over the selected pair, and what it takes to connect
    /// again over the same pair. `punch_only`: when both sides start at
    /// once (Nostr) and neither blob has a relay candidate, a planned punch
    /// is the path itself (ICE cannot go direct through a symmetric NAT,
    /// and nothing could relay).
    pub(super) async fn connect_path(
        &self,
        p: Prepared,
        peer: Body,
        side: Side,
        peer_deadline: Option<tokio::time::Instant>,
        punch_only: bool,
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
        let (candidates, peer_hint) = split_hint(candidates);
        let peer_relays = candidates.iter().any(|c| is_relay(c));
        let punch = self
            .punch_attempt(&p, &ufrag, &pwd, peer_hint, peer_deadline)
            .await;
        if punch_only && !p.has_relay && !peer_relays {
            if let Some(attempt) = punch {
                let work = self.punched(&p, attempt, fingerprint);
                let r = match tokio::time::timeout_at(start + self.connect_timeout, work).await {
                    Ok(r) => r,
                    Err(_) => Err(PathError::Unreachable(format!(
                        "no direct path through the symmetric NAT within {} s, and no TURN server on either side to relay: add --turn-server",
                        self.connect_timeout.as_secs()
                    ))),
                };
                // ICE had no part in it
                let _ = agent.close().await;
                return p.settled(r);
            }
        }
        let work = self.establish(&p, ufrag, pwd, fingerprint, candidates, punch.is_some());
        tokio::pin!(work);
        // Phase 1: until the peer shows any sign of life (a check answered
        // or received). A copy-paste answerer waits as long as the offer is
        // valid: the person may carry the answer back minutes later.
        let first = peer_deadline
            .unwrap_or(start)
            .max(start + self.connect_timeout);
        let seen = tokio::select! {
            r = &mut work => return p.settled(close_on_error(r, &agent).await),
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
        let (conn, rejoin) = p.settled(close_on_error(r, &agent).await)?;
        if let Some(attempt) = punch {
            // on a direct pair already, the attempt stops (dropped here)
            if rejoin.relayed() {
                upgrade::spawn(attempt, &rejoin);
            }
        }
        Ok((conn, rejoin))
    }

    /// The session's punch, when both hints call for one: started now,
    /// or for a copy-paste answerer once the peer shows up (its budget
    /// would run out while the answer is carried back).
    async fn punch_attempt(
        &self,
        p: &Prepared,
        peer_ufrag: &str,
        peer_pwd: &str,
        peer_hint: Option<Hint>,
        peer_deadline: Option<tokio::time::Instant>,
    ) -> Option<Attempt> {
        // nothing was learned with --no-punch or --relay-only
        let mine = p.punch.lock().ok()?.take()?;
        let side = hardnat::plan(Some(&mine.hint), peer_hint.as_ref())?;
        let (ufrag, pwd) = p.agent.get_local_user_credentials().await;
        let keys = wire::Keys::new(&ufrag, &pwd, peer_ufrag, peer_pwd);
        let role = match p.side {
            Side::Offerer => wire::Role::Controlling,
            Side::Answerer => wire::Role::Controlled,
        };
        debug!(?side, "punching through the symmetric NAT beside ICE");
        let setup = Setup {
            side,
            role,
            keys,
            mine,
            peer: peer_hint?,
            bind: self.bind.ip(),
            bounds: Bounds::default(),
        };
        let agent = p.agent.clone();
        let wait = p.side == Side::Answerer && peer_deadline.is_some();
        let go = async move {
            if wait {
                peer_seen(&agent).await;
            }
        };
        Some(Attempt::start(setup, go))
    }
}

/// Whether a candidate line is a TURN relay candidate.
fn is_relay(line: &str) -> bool {
    line.contains(" typ relay")
}

/// The peer's candidate lines without peerport's own lines (`x-peerport-`,
/// which ICE would not understand), and its punch hint among them (an
/// unreadable or later one is ignored: the session goes on without a
/// punch).
fn split_hint(lines: Vec<String>) -> (Vec<String>, Option<Hint>) {
    let mut hint = None;
    let candidates = lines
        .into_iter()
        .filter(|l| match Hint::parse(l) {
            None => !l.starts_with(hardnat::hint::OWN_LINES),
            Some(Ok(h)) => {
                hint = Some(h);
                false
            }
            Some(Err(e)) => {
                debug!("{e}");
                false
            }
        })
        .collect();
    (candidates, hint)
}

/// Close the agent when setting up failed (its TURN allocations go with it).
pub(super) async fn close_on_error<T>(
    r: Result<T, PathError>,
    agent: &Agent,
) -> Result<T, PathError> {
    if r.is_err() {
        let _ = agent.close().await;
    }
    r
}

/// Resolves once the peer has shown a sign of life: a candidate pair
/// succeeded (it answered a check) or a check arrived from an address it did
/// not announce (a peer-reflexive candidate).
pub(super) async fn peer_seen(agent: &Agent) {
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
    /// The connect is over: connected (the agent lives on with the path)
    /// or failed (the agent was closed): dropping this closes nothing.
    fn settled<T>(&self, r: T) -> T {
        self.unused
            .store(false, std::sync::atomic::Ordering::Relaxed);
        r
    }

    /// What to add to a failure message about the relay fallback.
    pub(super) fn relay_hint(&self, turn: &[TurnServer]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_and_peerports_own_lines_stay_out_of_ice() {
        let lines = vec![
            "candidate:1 1 udp 2130706431 10.0.0.2 5000 typ host".to_string(),
            "x-peerport-punch 1 edm 198.18.0.12 20004 seq:+1".to_string(),
            "x-peerport-punch 2 something later".to_string(),
            "x-peerport-other 1".to_string(),
        ];
        let (candidates, hint) = split_hint(lines);
        assert_eq!(candidates.len(), 1);
        assert!(candidates[0].starts_with("candidate:"));
        assert_eq!(hint.expect("read").port, 20004);
        // a broken hint: no punch, the candidates still go to ICE
        let (candidates, hint) = split_hint(vec![
            "x-peerport-punch 1 edm nowhere 1 random".to_string(),
            "candidate:1 1 udp 2130706431 10.0.0.2 5000 typ host".to_string(),
        ]);
        assert_eq!((candidates.len(), hint), (1, None));
    }
}
