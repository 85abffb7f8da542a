//! The data `peerport status --json` prints: the process, its sessions,
//! counts and recent events.

use serde::{Deserialize, Serialize};

use super::Event;
use crate::{
    engine::tally::{PathChange, ServiceStatus, Sums},
    transport::PathKind,
};

/// What a process is, for its status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Info {
    /// "sender" or "receiver".
    pub role: String,
    /// Signaling mode ("iroh", "iroh-manual", "ice", "nostr").
    pub mode: String,
    /// The process's name (`--name`; `peerport status NAME`).
    pub name: String,
    /// The service (sender: `--source`) or local target (receiver).
    pub service: String,
    /// Where local clients connect (receiver).
    pub listen: Option<String>,
    /// What a receiver waits for while no session is up ("the sender
    /// (endpoint 3f2a...)").
    pub waiting_for: Option<String>,
    /// Process id.
    pub pid: u32,
    /// peerport's version.
    pub version: String,
}

impl Info {
    /// A process of `role` in `mode`, named `name`.
    pub fn new(role: &str, mode: &str, name: &str) -> Self {
        Info {
            role: role.into(),
            mode: mode.into(),
            name: name.into(),
            service: String::new(),
            listen: None,
            waiting_for: None,
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// One second of a session, for the chart.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Bits per second sent.
    pub tx_bps: f64,
    /// Bits per second received.
    pub rx_bps: f64,
    /// Smoothed RTT, milliseconds.
    pub rtt_ms: f64,
}

/// One session at one moment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionStatus {
    /// Session id within the process.
    pub id: u64,
    /// The peer's identity (public key or certificate fingerprint).
    pub peer: String,
    /// Whether a connection serves it now (else it waits to be resumed).
    pub connected: bool,
    /// Up, stale, reconnecting (receiver) or waiting for the receiver to
    /// come back (sender).
    pub state: SessionState,
    /// Seconds since a packet from the peer was last noticed (to within a
    /// quarter of a second); keep-alives make it at most a few seconds on
    /// a live connection.
    pub last_heard_secs: Option<f64>,
    /// Seconds since the current connection began serving the session.
    pub connected_secs: Option<f64>,
    /// Seconds since it began.
    pub uptime_secs: f64,
    /// Current path ("direct 10.0.0.2:4433"), empty between connections.
    pub path: String,
    /// Direct or relay.
    pub path_kind: PathKind,
    /// Path changes, oldest first.
    pub path_log: Vec<PathChange>,
    /// Smoothed RTT, milliseconds.
    pub rtt_ms: f64,
    /// Smallest RTT seen, milliseconds (quinn modes).
    pub min_rtt_ms: Option<f64>,
    /// Congestion window, bytes.
    pub cwnd_bytes: u64,
    /// Congestion events of the current connection.
    pub congestion_events: u64,
    /// Packets sent by the current connection.
    pub sent_packets: u64,
    /// Bytes in lost packets, current connection.
    pub lost_bytes: u64,
    /// Bits per second sent, over the last second.
    pub tx_bps: f64,
    /// Bits per second received, over the last second.
    pub rx_bps: f64,
    /// Largest UDP payload of the path.
    pub mtu: u16,
    /// Connections that served the session (1 + reconnects).
    pub connections: u64,
    /// TCP connections and UDP flows; bytes and packets lost over every
    /// connection of the session.
    #[serde(flatten)]
    pub sums: Sums,
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// A connection serves it and the peer was heard recently.
    Up,
    /// A connection serves it, but nothing was heard from the peer for
    /// longer than keep-alives allow: the peer or the path may be gone.
    Stale,
    /// No connection serves it; the receiver is reaching the sender again.
    Reconnecting,
    /// No connection serves it; the sender keeps it for the receiver's
    /// return (resume window).
    Waiting,
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionState::Up => "up",
            SessionState::Stale => "stale",
            SessionState::Reconnecting => "reconnecting",
            SessionState::Waiting => "waiting",
        })
    }
}

/// Counts over the process's life.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    /// Sessions open now.
    pub sessions_open: u64,
    /// Sessions that ended.
    pub sessions_ended: u64,
    /// Connections that completed the hello.
    pub connections: u64,
    /// Connections in their hello now (sender).
    pub handshakes_in_flight: u64,
    /// Receivers refused: wrong token or not allowed.
    pub refused_unauthorized: u64,
    /// Receivers refused: full.
    pub refused_busy: u64,
    /// Receivers refused: protocol mismatch or broken hello.
    pub refused_protocol: u64,
    /// Sessions resumed on a new connection.
    pub resumes: u64,
    /// Reconnects (receiver).
    pub reconnects: u64,
    /// Failed attempts to reach the sender (receiver).
    pub dial_failures: u64,
    /// The sessions' counts, ended and live.
    #[serde(flatten)]
    pub sums: Sums,
}

/// Everything `peerport status --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// The process.
    pub info: Info,
    /// When taken, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Seconds since the process started.
    pub uptime_secs: f64,
    /// "up" (a connection serves a session and the peer is heard),
    /// "stale" (connections serve sessions, but their peers went silent),
    /// "reconnecting" (a receiver whose session lost its connection),
    /// "waiting" (a receiver without a session), or "listening" (a sender
    /// without a live session).
    pub state: String,
    /// Seconds in the current state.
    pub state_secs: f64,
    /// Live sessions, oldest first.
    pub sessions: Vec<SessionStatus>,
    /// Counts over the process's life.
    pub totals: Totals,
    /// Per service (sender: service or destination; receiver: target).
    #[serde(default)]
    pub services: Vec<ServiceStatus>,
    /// Recent events, oldest first.
    pub events: Vec<Event>,
}
