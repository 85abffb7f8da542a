//! [`Tally`]: what one tunnel session counts, kept by the engine as it
//! works and read by [`crate::status`] (`peerport status`, metrics, the
//! dashboard).
//!
//! A session here is what a person calls "the tunnel to that peer": it
//! begins with a connection and, when resumable, lives on across the
//! connections that replace a lost one (its TCP streams and UDP flows go
//! on). Stream and flow counters are atomics bumped where the work
//! happens; the QUIC figures (RTT, window, loss, bytes) are read from the
//! current connection when someone looks ([`Tally::sample`]).

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

pub use super::ledger::{Ended, Ledger, ServiceCounts, ServiceStatus, Sums};
use super::udp_stats::UdpStats;
use crate::transport::{ConnStats, PathInfo, TunnelConnection};

/// Path changes kept per session (the oldest go first).
pub const PATH_LOG: usize = 32;

/// One change of the path a session's packets take.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PathChange {
    /// When, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The path in words ("direct 10.0.0.2:4433", "relay https://...").
    pub path: String,
    /// The path as data (its `kind`, addresses, relay URL).
    #[serde(flatten)]
    pub info: PathInfo,
}

/// Reads the current connection's figures and path.
type Probe = Box<dyn Fn() -> (ConnStats, PathInfo) + Send + Sync>;

/// Called once when a session ends, with its final counts.
pub type OnEnd = Box<dyn Fn(&Tally) + Send + Sync>;

#[derive(Default)]
struct Current {
    probe: Option<Probe>,
    /// The figures of the connection last read (kept after it ends).
    last: ConnStats,
    /// Bytes of the connections that came before the current one.
    earlier_tx: u64,
    earlier_rx: u64,
    earlier_lost_packets: u64,
    path: Option<PathInfo>,
    log: VecDeque<PathChange>,
    /// When the current connection began serving the session.
    attached_at: Option<Instant>,
    /// When a packet from the peer was last noticed (kept between
    /// connections).
    heard_at: Option<Instant>,
    /// The current connection's received bytes when last read.
    heard_rx: u64,
    /// The outage the current connection ended: from the last packet
    /// heard over the connection before it to its start.
    outage: Option<Duration>,
}

impl Current {
    /// Read the current connection (if any): figures, path change, and
    /// whether the peer was heard from since the last read.
    fn read(&mut self) {
        let Some(probe) = &self.probe else { return };
        let (stats, path) = probe();
        if stats.rx_bytes != self.heard_rx {
            self.heard_rx = stats.rx_bytes;
            self.heard_at = Some(Instant::now());
        }
        self.last = stats;
        if self.path.as_ref() != Some(&path) {
            if self.log.len() == PATH_LOG {
                self.log.pop_front();
            }
            self.log.push_back(PathChange {
                at_ms: unix_ms(),
                path: path.to_string(),
                info: path.clone(),
            });
            self.path = Some(path);
        }
    }
}

/// Counters of one session (see the module docs).
pub struct Tally {
    /// Session number within the process (1, 2, ...).
    pub id: u64,
    /// When the session began.
    pub started: Instant,
    /// The same, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// TCP connections open now.
    pub tcp_open: AtomicU64,
    /// TCP connections carried so far.
    pub tcp_total: AtomicU64,
    /// Receiver: local clients being set up (not yet open).
    pub tcp_starting: AtomicU64,
    /// Receiver: local clients closed at once because the session carried
    /// the most connections it may.
    pub tcp_refused_full: AtomicU64,
    /// Connections to the source service that failed (sender).
    pub connect_failures: AtomicU64,
    /// TCP connections carried over to a new QUIC connection.
    pub streams_resumed: AtomicU64,
    /// QUIC connections that served the session (1 + reconnects).
    pub connections: AtomicU64,
    /// UDP counters (packets, drops by cause, flows).
    pub udp: Arc<UdpStats>,
    peer: Mutex<String>,
    current: Mutex<Current>,
    on_end: Option<OnEnd>,
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally").field("id", &self.id).finish()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Tally {
    /// A session's counters; `on_end` runs once when the last reference
    /// goes. `udp`: the counters UDP forwarding bumps (a receiver keeps
    /// one set for its whole life).
    pub fn new(id: u64, udp: Arc<UdpStats>, on_end: Option<OnEnd>) -> Arc<Self> {
        Arc::new(Tally {
            id,
            started: Instant::now(),
            started_unix_ms: unix_ms(),
            tcp_open: AtomicU64::new(0),
            tcp_total: AtomicU64::new(0),
            tcp_starting: AtomicU64::new(0),
            tcp_refused_full: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            streams_resumed: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            udp,
            peer: Mutex::new(String::new()),
            current: Mutex::new(Current::default()),
            on_end,
        })
    }

    /// Counters that nobody reads (a library user without a monitor).
    pub fn unobserved() -> Arc<Self> {
        Tally::new(0, Arc::default(), None)
    }

    /// Receiver: room for one more local client, counted as starting
    /// until the guard drops (by then it is open, or gone); `None` (and
    /// counted as refused) when the session carries `limit` already.
    pub fn start_stream(self: &Arc<Self>, limit: usize) -> Option<Starting> {
        let busy = self.tcp_open.load(Relaxed) + self.tcp_starting.load(Relaxed);
        if busy >= limit as u64 {
            self.tcp_refused_full.fetch_add(1, Relaxed);
            return None;
        }
        self.tcp_starting.fetch_add(1, Relaxed);
        Some(Starting(self.clone()))
    }

    /// A TCP connection starts; it counts as open until the guard drops.
    pub fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.stream_opened_for(None)
    }

    /// The same, counted for its service too.
    pub fn stream_opened_for(self: &Arc<Self>, service: Option<Arc<ServiceCounts>>) -> StreamGuard {
        self.tcp_open.fetch_add(1, Relaxed);
        self.tcp_total.fetch_add(1, Relaxed);
        if let Some(s) = &service {
            s.tcp_open.fetch_add(1, Relaxed);
            s.tcp_total.fetch_add(1, Relaxed);
        }
        StreamGuard(self.clone(), service)
    }

    /// The peer's identity (public key or certificate fingerprint).
    pub fn peer(&self) -> String {
        self.peer.lock().expect("peer").clone()
    }

    /// `conn` serves the session from now on.
    pub fn attach<C: TunnelConnection>(&self, conn: &C) {
        *self.peer.lock().expect("peer") = conn.peer_id();
        self.connections.fetch_add(1, Relaxed);
        let conn = conn.clone();
        let probe: Probe = Box::new(move || (conn.stats(), conn.path()));
        let now = Instant::now();
        let mut cur = self.current.lock().expect("tally");
        let (tx, rx, lost) = (cur.last.tx_bytes, cur.last.rx_bytes, cur.last.lost_packets);
        cur.earlier_tx += tx;
        cur.earlier_rx += rx;
        cur.earlier_lost_packets += lost;
        cur.last = ConnStats::default();
        cur.probe = Some(probe);
        // the handshake that made this connection was heard from the peer
        cur.outage = cur.heard_at.map(|h| now.saturating_duration_since(h));
        cur.attached_at = Some(now);
        cur.heard_at = Some(now);
        cur.heard_rx = 0;
        drop(cur);
        self.sample();
    }

    /// The connection ended: keep its last figures, let it go.
    pub fn detach(&self) {
        self.sample();
        let mut cur = self.current.lock().expect("tally");
        cur.probe = None;
        cur.path = None;
        cur.attached_at = None;
    }

    /// Note whether the peer was heard from (cheaper than
    /// [`Tally::sample`]; the monitor calls it several times a second so
    /// that silence is noticed early).
    /// Returns whether a connection serves the session, and when the
    /// peer was last heard.
    pub fn listen(&self) -> (bool, Option<Instant>) {
        let mut cur = self.current.lock().expect("tally");
        cur.read();
        (cur.probe.is_some(), cur.heard_at)
    }

    /// Whether a connection serves the session now.
    pub fn connected(&self) -> bool {
        self.current.lock().expect("tally").probe.is_some()
    }

    /// Read the current connection's figures (and note a path change).
    pub fn sample(&self) -> Reading {
        let mut cur = self.current.lock().expect("tally");
        cur.read();
        Reading {
            attached_at: cur.attached_at,
            heard_at: cur.heard_at,
            outage: cur.outage,
            connected: cur.probe.is_some(),
            stats: cur.last.clone(),
            path: cur.path.clone(),
            tx_bytes: cur.earlier_tx + cur.last.tx_bytes,
            rx_bytes: cur.earlier_rx + cur.last.rx_bytes,
            lost_packets: cur.earlier_lost_packets + cur.last.lost_packets,
            path_log: cur.log.iter().cloned().collect(),
        }
    }

    /// How long the session has lasted.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self);
        }
    }
}

/// A session's figures at one moment (see [`Tally::sample`]).
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// Whether a connection serves the session now.
    pub connected: bool,
    /// When the current connection began serving the session.
    pub attached_at: Option<Instant>,
    /// When a packet from the peer was last noticed, over this connection
    /// or an earlier one.
    pub heard_at: Option<Instant>,
    /// For a connection that replaced a lost one: from the last packet
    /// heard over the lost one to this one's start.
    pub outage: Option<Duration>,
    /// The current (or last) connection's figures.
    pub stats: ConnStats,
    /// The current path, `None` between connections.
    pub path: Option<PathInfo>,
    /// UDP bytes sent over every connection of the session.
    pub tx_bytes: u64,
    /// UDP bytes received over every connection of the session.
    pub rx_bytes: u64,
    /// Packets lost over every connection of the session.
    pub lost_packets: u64,
    /// Path changes, oldest first.
    pub path_log: Vec<PathChange>,
}

/// One in a gauge (such as [`Ledger::handshakes`]) until dropped.
#[derive(Debug)]
pub struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    /// Count one more in `g` until the guard drops.
    pub fn up(g: &'a AtomicU64) -> Self {
        g.fetch_add(1, Relaxed);
        Gauge(g)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// An open TCP connection in a [`Tally`] (and its service's counts):
/// dropping it closes it.
#[derive(Debug)]
pub struct StreamGuard(Arc<Tally>, Option<Arc<ServiceCounts>>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.tcp_open.fetch_sub(1, Relaxed);
        if let Some(s) = &self.1 {
            s.tcp_open.fetch_sub(1, Relaxed);
        }
    }
}

/// A local client being set up (see [`Tally::start_stream`]).
pub struct Starting(Arc<Tally>);

impl Drop for Starting {
    fn drop(&mut self) {
        self.0.tcp_starting.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn streams_count_open_and_total_and_end_runs_once() {
        let ended = Arc::new(AtomicBool::new(false));
        let e = ended.clone();
        let t = Tally::new(
            7,
            Arc::default(),
            Some(Box::new(move |t: &Tally| {
                assert_eq!(t.tcp_total.load(Relaxed), 2);
                assert!(!e.swap(true, Relaxed), "on_end ran twice");
            })),
        );
        let a = t.stream_opened();
        let b = t.stream_opened();
        assert_eq!(t.tcp_open.load(Relaxed), 2);
        drop(a);
        assert_eq!(t.tcp_open.load(Relaxed), 1);
        drop(b);
        assert_eq!(t.tcp_open.load(Relaxed), 0);
        assert!(!t.connected());
        assert!(t.sample().path.is_none());
        drop(t);
        assert!(ended.load(Relaxed));
    }

    #[test]
    fn ledger_keeps_the_counts_of_ended_sessions() {
        let l = Ledger::new();
        let a = l.open_session();
        let b = l.open_session();
        assert_eq!((a.id, b.id), (1, 2));
        drop(a.stream_opened());
        a.udp.packets_in.fetch_add(3, Relaxed);
        b.udp.packets_in.fetch_add(1, Relaxed);
        assert_eq!(l.sessions().len(), 2);
        drop(a);
        let live = l.sessions();
        assert_eq!(live.len(), 1);
        assert_eq!(l.ended().sessions, 1);
        assert_eq!(l.ended().sums.tcp_total, 1);
        let sums: Vec<Sums> = live.iter().map(|t| Sums::of(t, &t.sample())).collect();
        assert_eq!(l.totals(&sums).udp.packets_in, 4);
        assert_eq!(l.totals(&sums).tcp_total, 1);
    }
}
