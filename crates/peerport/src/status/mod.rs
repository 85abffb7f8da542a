//! What a running sender or receiver is doing, for people and programs:
//! `peerport status` (over a local [`control`] socket), Prometheus
//! [`metrics`], the [`web`] dashboard and the terminal's progress lines
//! all read one [`Monitor`].
//!
//! The engine counts as it works (an [`crate::engine::Ledger`] of
//! [`crate::engine::Tally`]s: streams, flows, drops, refusals); the QUIC
//! figures (RTT, congestion window, loss, bytes) are read from the stack
//! itself. A [`Monitor`] samples them once a second ([`Monitor::run`]):
//! throughput comes from the byte counts between two samples, and path
//! changes, losses and reconnects become [`Event`]s.
//!
//! ```no_run
//! # async fn example(sender: peerport::Sender) {
//! use peerport::status::{Info, Monitor};
//! let monitor = Monitor::new(Info::new("sender", "iroh", "ssh"), sender.ledger());
//! let cancel = tokio_util::sync::CancellationToken::new();
//! tokio::spawn({ let m = monitor.clone(); let c = cancel.clone(); async move { m.run(c).await } });
//! println!("{}", serde_json::to_string(&monitor.snapshot()).unwrap());
//! # }
//! ```

#[cfg(feature = "iroh")]
pub mod iroh_endpoints;

/// A back-end's own metrics, written as OpenMetrics text (without `# EOF`).
pub type Extra = Box<dyn Fn(&mut String) -> std::fmt::Result + Send + Sync>;

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{
    engine::{
        tally::{unix_ms, PathChange, ServiceStatus, Sums},
        Ledger,
    },
    transport::PathKind,
};

/// Samples kept per session for the dashboard's chart (one a second).
pub const HISTORY: usize = 600;
/// Events kept for `status` and the dashboard.
pub const EVENTS: usize = 100;
/// How often the monitor samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

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

/// Something that happened to a session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// When, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Session id.
    pub session: u64,
    /// What.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A connection serves the session (new, or after a loss).
    Up {
        /// The path.
        path: String,
        /// Direct or relay.
        kind: PathKind,
        /// Milliseconds since the process started or the last connection
        /// was lost.
        after_ms: u64,
        /// The session's connections so far (1 for a new session).
        connection: u64,
    },
    /// The session's packets take another path.
    Path {
        /// The new path.
        path: String,
        /// Direct or relay.
        kind: PathKind,
    },
    /// The session lost its connection (it may come back).
    Lost,
    /// The session ended.
    Ended,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.session;
        match &self.kind {
            EventKind::Up {
                path,
                after_ms,
                connection,
                ..
            } if *connection <= 1 => write!(
                f,
                "session {s} up over {path} after {}",
                secs(*after_ms as f64 / 1000.0)
            ),
            EventKind::Up { path, after_ms, .. } => write!(
                f,
                "session {s} reconnected over {path} after {}",
                secs(*after_ms as f64 / 1000.0)
            ),
            EventKind::Path { path, .. } => write!(f, "session {s} path now {path}"),
            EventKind::Lost => write!(f, "session {s} lost its connection"),
            EventKind::Ended => write!(f, "session {s} ended"),
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
    /// "up" (a connection serves a session), "waiting" (a receiver without
    /// one), or "listening" (a sender).
    pub state: String,
    /// Seconds in the current state (receiver waiting or up).
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

#[derive(Default)]
struct Seen {
    connected: bool,
    path: Option<crate::transport::PathInfo>,
    tx: u64,
    rx: u64,
    at: Option<Instant>,
    tx_bps: f64,
    rx_bps: f64,
    history: VecDeque<Sample>,
}

struct State {
    sessions: BTreeMap<u64, Seen>,
    events: VecDeque<Event>,
    /// Since when no connection serves any session (receiver: waiting).
    down_since: Option<Instant>,
    up_since: Option<Instant>,
}

struct Inner {
    info: Info,
    ledger: Arc<Ledger>,
    started: Instant,
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    extra_metrics: Mutex<Option<Extra>>,
}

/// Watches one sender or receiver (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("name", &self.inner.info.name)
            .finish()
    }
}

impl Monitor {
    /// Watch the sessions in `ledger` of the process `info` describes.
    pub fn new(info: Info, ledger: Arc<Ledger>) -> Self {
        let now = Instant::now();
        Monitor {
            inner: Arc::new(Inner {
                info,
                ledger,
                started: now,
                state: Mutex::new(State {
                    sessions: BTreeMap::new(),
                    events: VecDeque::new(),
                    down_since: Some(now),
                    up_since: None,
                }),
                events: broadcast::channel(64).0,
                extra_metrics: Mutex::new(None),
            }),
        }
    }

    /// The process.
    pub fn info(&self) -> &Info {
        &self.inner.info
    }

    /// Events as they happen (a slow reader misses some, never blocks).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Sample every second until `cancel` fires.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.sample(),
            }
        }
    }

    /// Take one sample now: rates, history, events.
    pub fn sample(&self) {
        let live = self.inner.ledger.sessions();
        let now = Instant::now();
        let at_ms = unix_ms();
        let mut new_events = Vec::new();
        let mut st = self.inner.state.lock().expect("monitor");
        let st = &mut *st;
        let ids: Vec<u64> = live.iter().map(|t| t.id).collect();
        st.sessions.retain(|id, _| {
            let keep = ids.contains(id);
            if !keep {
                new_events.push(Event {
                    at_ms,
                    session: *id,
                    kind: EventKind::Ended,
                });
            }
            keep
        });
        for t in &live {
            let r = t.sample();
            let seen = st.sessions.entry(t.id).or_default();
            if let Some(prev) = seen.at {
                let dt = now.duration_since(prev).as_secs_f64().max(1e-3);
                seen.tx_bps = r.tx_bytes.saturating_sub(seen.tx) as f64 * 8.0 / dt;
                seen.rx_bps = r.rx_bytes.saturating_sub(seen.rx) as f64 * 8.0 / dt;
            }
            seen.at = Some(now);
            seen.tx = r.tx_bytes;
            seen.rx = r.rx_bytes;
            if seen.history.len() == HISTORY {
                seen.history.pop_front();
            }
            seen.history.push_back(Sample {
                at_ms,
                tx_bps: seen.tx_bps,
                rx_bps: seen.rx_bps,
                rtt_ms: ms(r.stats.rtt),
            });
            let path = r.path.clone();
            match (seen.connected, r.connected) {
                (false, true) => {
                    let after = st
                        .down_since
                        .map(|d| now.duration_since(d))
                        .unwrap_or_default();
                    let path = path.clone().unwrap_or_default();
                    new_events.push(Event {
                        at_ms,
                        session: t.id,
                        kind: EventKind::Up {
                            kind: path.kind,
                            path: path.to_string(),
                            after_ms: after.as_millis() as u64,
                            connection: t.connections.load(Relaxed),
                        },
                    });
                }
                (true, false) => new_events.push(Event {
                    at_ms,
                    session: t.id,
                    kind: EventKind::Lost,
                }),
                (true, true) if seen.path != path => {
                    let path = path.clone().unwrap_or_default();
                    new_events.push(Event {
                        at_ms,
                        session: t.id,
                        kind: EventKind::Path {
                            kind: path.kind,
                            path: path.to_string(),
                        },
                    });
                }
                _ => {}
            }
            seen.connected = r.connected;
            seen.path = path;
        }
        let any_up = st.sessions.values().any(|s| s.connected);
        match (any_up, st.up_since.is_some()) {
            (true, false) => {
                st.up_since = Some(now);
                st.down_since = None;
            }
            (false, true) => {
                st.up_since = None;
                st.down_since = Some(now);
            }
            _ => {}
        }
        for e in new_events {
            if st.events.len() == EVENTS {
                st.events.pop_front();
            }
            st.events.push_back(e.clone());
            let _ = self.inner.events.send(e);
        }
    }

    /// Everything now (QUIC figures read at this moment; rates from the
    /// last sample).
    pub fn snapshot(&self) -> Snapshot {
        let ledger = &self.inner.ledger;
        let live = ledger.sessions();
        let ended = ledger.ended();
        let st = self.inner.state.lock().expect("monitor");
        let now = Instant::now();
        let mut sums = Vec::with_capacity(live.len());
        let mut totals = Totals {
            sessions_open: live.len() as u64,
            sessions_ended: ended.sessions,
            connections: ledger.connections.load(Relaxed),
            handshakes_in_flight: ledger.handshakes.load(Relaxed),
            refused_unauthorized: ledger.refused_unauthorized.load(Relaxed),
            refused_busy: ledger.refused_busy.load(Relaxed),
            refused_protocol: ledger.refused_protocol.load(Relaxed),
            resumes: ledger.resumes.load(Relaxed),
            reconnects: ledger.reconnects.load(Relaxed),
            dial_failures: ledger.dial_failures.load(Relaxed),
            sums: Sums::default(),
        };
        let sessions: Vec<SessionStatus> = live
            .iter()
            .map(|t| {
                let r = t.sample();
                let seen = st.sessions.get(&t.id);
                let path = r.path.clone();
                let sum = Sums::of(t, &r);
                let s = SessionStatus {
                    id: t.id,
                    peer: t.peer(),
                    connected: r.connected,
                    uptime_secs: t.uptime().as_secs_f64(),
                    path_kind: path.as_ref().map(|p| p.kind).unwrap_or_default(),
                    path: path.map(|p| p.to_string()).unwrap_or_default(),
                    path_log: r.path_log,
                    rtt_ms: ms(r.stats.rtt),
                    min_rtt_ms: r.stats.min_rtt.map(ms),
                    cwnd_bytes: r.stats.cwnd,
                    congestion_events: r.stats.congestion_events,
                    sent_packets: r.stats.sent_packets,
                    lost_bytes: r.stats.lost_bytes,
                    tx_bps: seen.map_or(0.0, |s| s.tx_bps),
                    rx_bps: seen.map_or(0.0, |s| s.rx_bps),
                    mtu: r.stats.mtu,
                    connections: t.connections.load(Relaxed),
                    sums: sum.clone(),
                };
                sums.push(sum);
                s
            })
            .collect();
        totals.sums = ledger.totals(&sums);
        let up = sessions.iter().any(|s| s.connected);
        let (state, since) = match (self.inner.info.role.as_str(), up) {
            (_, true) => ("up", st.up_since),
            ("receiver", false) => ("waiting", st.down_since),
            _ => ("listening", Some(self.inner.started)),
        };
        Snapshot {
            info: self.inner.info.clone(),
            at_ms: unix_ms(),
            uptime_secs: self.inner.started.elapsed().as_secs_f64(),
            state: state.into(),
            state_secs: since.map_or(0.0, |s| now.duration_since(s).as_secs_f64()),
            sessions,
            totals,
            services: ledger.services(),
            events: st.events.iter().cloned().collect(),
        }
    }

    /// Each live session's samples, oldest first (the dashboard's chart).
    pub fn history(&self) -> BTreeMap<u64, Vec<Sample>> {
        let st = self.inner.state.lock().expect("monitor");
        st.sessions
            .iter()
            .map(|(id, s)| (*id, s.history.iter().copied().collect()))
            .collect()
    }

    /// Add a back-end's own metrics (iroh's endpoint) to every scrape.
    pub fn add_metrics(&self, extra: Extra) {
        *self.inner.extra_metrics.lock().expect("monitor") = Some(extra);
    }

    /// Write the back-end's own metrics (see [`Monitor::add_metrics`]);
    /// `None` when it has none.
    pub fn write_extra_metrics(&self, out: &mut String) -> Option<std::fmt::Result> {
        let extra = self.inner.extra_metrics.lock().expect("monitor");
        extra.as_ref().map(|f| f(out))
    }
}

/// "4.2 s", "3m07s", "2h05m", "3d04h".
pub fn secs(s: f64) -> String {
    let s = s.max(0.0);
    if s < 60.0 {
        return format!("{s:.1} s");
    }
    let t = s as u64;
    match t {
        ..3600 => format!("{}m{:02}s", t / 60, t % 60),
        3600..86400 => format!("{}h{:02}m", t / 3600, t % 3600 / 60),
        _ => format!("{}d{:02}h", t / 86400, t % 86400 / 3600),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests;
