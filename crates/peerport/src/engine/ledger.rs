//! [`Ledger`]: what a sender or receiver counts over its life (sessions
//! ended, refusals, reconnects, per-service counts) beside its live
//! sessions' [`Tally`]s, and [`Sums`], those counts added up.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use super::{
    tally::{OnEnd, Reading, Tally},
    udp_stats::UdpStats,
};

/// What one service counted over the process's life: a sender's service
/// or destination, a receiver's target.
#[derive(Debug, Default)]
pub struct ServiceCounts {
    /// TCP connections open now.
    pub tcp_open: AtomicU64,
    /// TCP connections carried.
    pub tcp_total: AtomicU64,
    /// Connections to it that failed (sender: connect; receiver: the
    /// sender could not).
    pub connect_failures: AtomicU64,
    /// Connections and flows refused by the sender's policy.
    pub refused: AtomicU64,
    /// UDP flows opened.
    pub udp_flows_total: AtomicU64,
}

impl ServiceCounts {
    /// Count a connection or flow the sender did not carry: a failed
    /// connect (`ConnectFailed`) or a refusal by its policy (any other).
    pub fn failed(&self, status: crate::proto::header::Status) {
        let n = match status {
            crate::proto::header::Status::ConnectFailed => &self.connect_failures,
            _ => &self.refused,
        };
        n.fetch_add(1, Relaxed);
    }
}

/// [`ServiceCounts`] read at one moment, with the service's name.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceStatus {
    /// Service name (`default`), or a destination (`tcp://HOST:PORT`).
    pub name: String,
    /// TCP connections open now.
    pub tcp_open: u64,
    /// TCP connections carried.
    pub tcp_total: u64,
    /// Failed connections.
    pub connect_failures: u64,
    /// Refused by policy.
    pub refused: u64,
    /// UDP flows opened.
    pub udp_flows_total: u64,
}

/// Most services and destinations counted by name in one process; the
/// rest are counted together as `other`.
pub const MAX_SERVICES: usize = 64;

/// Counts over a sender's or receiver's life, and its live sessions.
/// `peerport status`, the metrics and the dashboard read it.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Receivers refused: wrong token or not an allowed peer.
    pub refused_unauthorized: AtomicU64,
    /// Receivers refused: the sender was full (`--max-sessions`).
    pub refused_busy: AtomicU64,
    /// Receivers refused: protocol mismatch or a broken hello.
    pub refused_protocol: AtomicU64,
    /// Connections in their hello now (sender).
    pub handshakes: AtomicU64,
    /// Connections that completed the hello.
    pub connections: AtomicU64,
    /// Sessions that continued on a new connection (resumed).
    pub resumes: AtomicU64,
    /// Connections lost and dialled again (receiver).
    pub reconnects: AtomicU64,
    /// Attempts to reach the sender that failed (receiver).
    pub dial_failures: AtomicU64,
    next_id: AtomicU64,
    sessions: Mutex<std::collections::BTreeMap<u64, std::sync::Weak<Tally>>>,
    ended: Mutex<Ended>,
    shared_udp: Option<Arc<UdpStats>>,
    services: Mutex<std::collections::BTreeMap<String, Arc<ServiceCounts>>>,
}

/// What sessions counted, added up (ended ones in [`Ledger::ended`],
/// every one in a status's totals).
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sums {
    /// TCP connections open.
    pub tcp_open: u64,
    /// TCP connections carried.
    pub tcp_total: u64,
    /// Local clients closed at once: the session carried the most
    /// connections it may (receiver, `--max-connections`).
    #[serde(default)]
    pub tcp_refused_full: u64,
    /// Failed connects to the source.
    pub connect_failures: u64,
    /// TCP connections resumed.
    pub streams_resumed: u64,
    /// UDP bytes sent by the QUIC connections.
    pub tx_bytes: u64,
    /// UDP bytes received.
    pub rx_bytes: u64,
    /// Packets lost.
    pub lost_packets: u64,
    /// UDP counters (a receiver's: its whole life).
    pub udp: super::udp_stats::UdpCounts,
}

impl Sums {
    /// One session's counts (`r`: a reading of it).
    pub fn of(t: &Tally, r: &Reading) -> Self {
        Sums {
            tcp_open: t.tcp_open.load(Relaxed),
            tcp_total: t.tcp_total.load(Relaxed),
            tcp_refused_full: t.tcp_refused_full.load(Relaxed),
            connect_failures: t.connect_failures.load(Relaxed),
            streams_resumed: t.streams_resumed.load(Relaxed),
            tx_bytes: r.tx_bytes,
            rx_bytes: r.rx_bytes,
            lost_packets: r.lost_packets,
            udp: t.udp.counts(),
        }
    }

    /// Add `o`.
    pub fn add(&mut self, o: &Sums) {
        self.tcp_open += o.tcp_open;
        self.tcp_total += o.tcp_total;
        self.tcp_refused_full += o.tcp_refused_full;
        self.connect_failures += o.connect_failures;
        self.streams_resumed += o.streams_resumed;
        self.tx_bytes += o.tx_bytes;
        self.rx_bytes += o.rx_bytes;
        self.lost_packets += o.lost_packets;
        self.udp.add(&o.udp);
    }
}

/// What ended sessions counted (so totals never go down).
#[derive(Debug, Default, Clone)]
pub struct Ended {
    /// Sessions ended.
    pub sessions: u64,
    /// Their counts (UDP only when each session has its own counters).
    pub sums: Sums,
}

impl Ledger {
    /// A ledger whose sessions each count their own UDP packets (a sender).
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A ledger whose sessions share one set of UDP counters kept by the
    /// caller for its whole life (a receiver's local socket).
    pub fn with_shared_udp(udp: Arc<UdpStats>) -> Arc<Self> {
        Arc::new(Ledger {
            shared_udp: Some(udp),
            ..Default::default()
        })
    }

    /// Start counting a new session; it leaves the ledger (its counts
    /// added to the totals) when its last reference goes.
    pub fn open_session(self: &Arc<Self>) -> Arc<Tally> {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let me = Arc::downgrade(self);
        let udp = self.shared_udp.clone().unwrap_or_default();
        let on_end: OnEnd = Box::new(move |t: &Tally| {
            if let Some(l) = me.upgrade() {
                l.close_session(t);
            }
        });
        let t = Tally::new(id, udp, Some(on_end));
        self.sessions
            .lock()
            .expect("ledger")
            .insert(id, Arc::downgrade(&t));
        t
    }

    fn close_session(&self, t: &Tally) {
        let mut sums = Sums::of(t, &t.sample());
        if self.shared_udp.is_some() {
            sums.udp = Default::default();
        }
        let mut e = self.ended.lock().expect("ledger");
        e.sessions += 1;
        e.sums.add(&sums);
        drop(e);
        self.sessions.lock().expect("ledger").remove(&t.id);
    }

    /// The counts of service `name` (made on first use; past
    /// [`MAX_SERVICES`] names, those of `other`).
    pub fn service(&self, name: &str) -> Arc<ServiceCounts> {
        let mut m = self.services.lock().expect("ledger");
        if let Some(c) = m.get(name) {
            return c.clone();
        }
        let key = if m.len() >= MAX_SERVICES {
            "other"
        } else {
            name
        };
        m.entry(key.to_string()).or_default().clone()
    }

    /// Every service's counts, by name.
    pub fn services(&self) -> Vec<ServiceStatus> {
        self.services
            .lock()
            .expect("ledger")
            .iter()
            .map(|(name, c)| ServiceStatus {
                name: name.clone(),
                tcp_open: c.tcp_open.load(Relaxed),
                tcp_total: c.tcp_total.load(Relaxed),
                connect_failures: c.connect_failures.load(Relaxed),
                refused: c.refused.load(Relaxed),
                udp_flows_total: c.udp_flows_total.load(Relaxed),
            })
            .collect()
    }

    /// The live sessions, oldest first.
    pub fn sessions(&self) -> Vec<Arc<Tally>> {
        self.sessions
            .lock()
            .expect("ledger")
            .values()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    }

    /// TCP connections open now, over every live session.
    pub fn open_streams(&self) -> u64 {
        self.sessions()
            .iter()
            .map(|t| t.tcp_open.load(Relaxed))
            .sum()
    }

    /// Wait until no TCP connection is open, `limit` has passed, or `stop`
    /// fires (how a sender or receiver drains); says whether none is open.
    pub async fn drained(
        &self,
        limit: Duration,
        stop: &tokio_util::sync::CancellationToken,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.open_streams() == 0 {
                return true;
            }
            if stop.is_cancelled() || tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    /// What the ended sessions counted.
    pub fn ended(&self) -> Ended {
        self.ended.lock().expect("ledger").clone()
    }

    /// The counts over the whole life: the ended sessions' plus `live`
    /// (their sums); UDP from the shared counters when there are.
    pub fn totals(&self, live: &[Sums]) -> Sums {
        let mut total = self.ended().sums;
        for s in live {
            total.add(s);
        }
        if let Some(u) = &self.shared_udp {
            total.udp = u.counts();
        }
        total
    }
}
