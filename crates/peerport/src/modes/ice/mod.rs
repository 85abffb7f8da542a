//! The `ice` mode (alias `custom`): full ICE (webrtc-ice) for the path,
//! then quinn with certificates pinned by the fingerprints in the blobs.
//!
//! The receiver (offerer) is the ICE controlling agent and the QUIC client;
//! the sender (answerer) is controlled and the QUIC server. Both demand the
//! other's certificate, so only the peer that exchanged blobs gets in.

pub mod hardnat;
pub mod remote_filter;
pub mod socket;
pub mod turn_probe;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use webrtc_ice::{agent::Agent, url::Url};

use super::manual::Side;
use crate::transport::{quinn::Identity, QuicSettings};

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
    /// Punch through one symmetric NAT when the other side's NAT is a
    /// cone (see [`hardnat`]); needs two STUN servers.
    pub punch: bool,
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
    /// Whether this side's blob has a relay candidate.
    has_relay: bool,
    /// This side's punch hint and (easy side) socket; taken by the connect.
    punch: std::sync::Mutex<Option<hardnat::gather::Learned>>,
    /// Not connected yet: dropped now (an exchange given up before its
    /// answer came, a connect cancelled), the agent and its TURN
    /// allocations close.
    unused: std::sync::atomic::AtomicBool,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.unused.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let agent = self.agent.clone();
        // closing tells the agent's tasks to stop and releases its
        // allocations (bounded)
        crate::closing::spawn(async move {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), agent.close()).await;
        });
    }
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

mod agent;
mod establish;
mod handoff;
mod path;
mod rejoin;
mod upgrade;

pub use rejoin::IceRejoin;
