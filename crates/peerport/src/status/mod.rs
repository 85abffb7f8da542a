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

mod event;
mod snapshot;

pub use event::{secs, took, Event, EventKind};
pub use snapshot::{Info, Sample, SessionState, SessionStatus, Snapshot, Totals};

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::engine::{
    tally::{unix_ms, Reading, Sums},
    Ledger, Tally,
};

/// Samples kept per session for the dashboard's chart (one a second).
pub const HISTORY: usize = 600;
/// Events kept for `status` and the dashboard.
pub const EVENTS: usize = 100;
/// How often the monitor samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How often the monitor looks whether peers were heard from.
pub const LISTEN_EVERY: Duration = Duration::from_millis(250);
/// Silence after which a connected session is `stale` when nothing else
/// is set ([`Monitor::set_stale_after`]): the default keep-alive
/// ([`crate::transport::KEEP_ALIVE`]) plus a second.
pub const STALE_AFTER: Duration = Duration::from_secs(crate::transport::KEEP_ALIVE.as_secs() + 1);

#[derive(Default)]
struct Seen {
    connected: bool,
    /// Since when the peer is silent, while the session is stale.
    silent_from: Option<Instant>,
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
    /// Since when no connection serves any session.
    down_since: Option<Instant>,
    up_since: Option<Instant>,
    /// When any session's peer was last heard (ended sessions too).
    last_heard: Option<Instant>,
}

struct Inner {
    info: Info,
    ledger: Arc<Ledger>,
    started: Instant,
    stale_after_ms: AtomicU64,
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
                stale_after_ms: AtomicU64::new(STALE_AFTER.as_millis() as u64),
                state: Mutex::new(State {
                    sessions: BTreeMap::new(),
                    events: VecDeque::new(),
                    down_since: Some(now),
                    up_since: None,
                    last_heard: None,
                }),
                events: broadcast::channel(64).0,
                extra_metrics: Mutex::new(None),
            }),
        }
    }

    /// Call a connected session `stale` after this long without a packet
    /// from its peer: the keep-alive interval plus a margin (both sides
    /// send keep-alives, so a live peer is heard at least that often).
    pub fn set_stale_after(&self, d: Duration) {
        self.inner
            .stale_after_ms
            .store(d.as_millis() as u64, Relaxed);
    }

    fn stale_after(&self) -> Duration {
        Duration::from_millis(self.inner.stale_after_ms.load(Relaxed))
    }

    /// The process.
    pub fn info(&self) -> &Info {
        &self.inner.info
    }

    /// Events as they happen (a slow reader misses some, never blocks).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Sample every second, and look for silent peers four times a
    /// second, until `cancel` fires.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(LISTEN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sample: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    if last_sample.is_none_or(|t| t.elapsed() + LISTEN_EVERY / 2 >= SAMPLE_EVERY) {
                        last_sample = Some(Instant::now());
                        self.sample();
                    } else {
                        self.listen();
                    }
                }
            }
        }
    }

    /// Look whether each session's peer was heard from; a session that
    /// turns stale, or is heard again, becomes an event.
    pub fn listen(&self) {
        // the stack is read before the monitor's lock is taken: a status
        // request never waits on a QUIC stack
        let heard: Vec<(u64, (bool, Option<Instant>))> = self
            .inner
            .ledger
            .sessions()
            .iter()
            .map(|t| (t.id, t.listen()))
            .collect();
        let now = Instant::now();
        let mut new_events = Vec::new();
        let mut st = self.inner.state.lock().expect("monitor");
        for (id, (connected, heard_at)) in heard {
            if let Some(seen) = st.sessions.get_mut(&id) {
                self.staleness(id, seen, connected, heard_at, now, &mut new_events);
            }
        }
        self.publish(&mut st, new_events);
    }

    /// A connected session's silence, and its stale/heard transitions.
    fn staleness(
        &self,
        id: u64,
        seen: &mut Seen,
        connected: bool,
        heard_at: Option<Instant>,
        now: Instant,
        out: &mut Vec<Event>,
    ) {
        let silent = heard_at.map(|h| now.saturating_duration_since(h));
        let stale = connected && silent.is_some_and(|s| s >= self.stale_after());
        let kind = match (seen.silent_from, stale) {
            (None, true) => {
                seen.silent_from = heard_at;
                EventKind::Stale {
                    silent_ms: silent.unwrap_or_default().as_millis() as u64,
                }
            }
            (Some(from), false) if connected => {
                seen.silent_from = None;
                EventKind::Heard {
                    silent_ms: heard_at
                        .map(|h| h.saturating_duration_since(from))
                        .unwrap_or_default()
                        .as_millis() as u64,
                }
            }
            (_, false) => {
                seen.silent_from = None;
                return;
            }
            (Some(_), true) => return,
        };
        out.push(Event {
            at_ms: unix_ms(),
            session: id,
            kind,
        });
    }

    fn publish(&self, st: &mut State, new_events: Vec<Event>) {
        for e in new_events {
            if st.events.len() == EVENTS {
                st.events.pop_front();
            }
            st.events.push_back(e.clone());
            let _ = self.inner.events.send(e);
        }
    }

    /// How long a session's new connection took (see [`EventKind::Up`]).
    /// `down_since`: since when no connection served any session, if so;
    /// `heard`: when any session's peer was last heard before this sample.
    fn took(
        &self,
        t: &Tally,
        r: &Reading,
        down_since: Option<Instant>,
        heard: Option<Instant>,
    ) -> Option<u64> {
        let connection = t.connections.load(Relaxed);
        let ms = |d: Duration| d.as_millis() as u64;
        if connection > 1 {
            return r.outage.map(ms);
        }
        if self.inner.info.role == "sender" {
            return None;
        }
        // a receiver's new session: since it began trying, which is when
        // the last session's peer was last heard (or the process start)
        let from = down_since.or(heard).unwrap_or(self.inner.started);
        Some(ms(r.attached_at?.saturating_duration_since(from)))
    }

    /// Take one sample now: rates, history, events.
    pub fn sample(&self) {
        let live = self.inner.ledger.sessions();
        // read the stack before taking the monitor's lock
        let readings: Vec<Reading> = live.iter().map(|t| t.sample()).collect();
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
        let heard_before = st.last_heard;
        let mut last_heard = heard_before;
        for (t, r) in live.iter().zip(readings) {
            last_heard = last_heard.max(r.heard_at);
            let took = self.took(t, &r, st.down_since, heard_before);
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
                    let path = path.clone().unwrap_or_default();
                    new_events.push(Event {
                        at_ms,
                        session: t.id,
                        kind: EventKind::Up {
                            kind: path.kind,
                            path: path.to_string(),
                            after_ms: took,
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
            self.staleness(t.id, seen, r.connected, r.heard_at, now, &mut new_events);
        }
        let any_up = st.sessions.values().any(|s| s.connected);
        match (any_up, st.up_since.is_some()) {
            (true, false) => {
                st.up_since = Some(now);
                st.down_since = None;
            }
            (false, true) => {
                st.up_since = None;
                // the outage began when the peer was last heard
                st.down_since = Some(last_heard.unwrap_or(now).min(now));
            }
            (false, false) if st.down_since.is_none() => st.down_since = Some(now),
            _ => {}
        }
        st.last_heard = last_heard;
        self.publish(st, new_events);
    }

    /// Everything now (QUIC figures read at this moment; rates from the
    /// last sample).
    pub fn snapshot(&self) -> Snapshot {
        let ledger = &self.inner.ledger;
        let live = ledger.sessions();
        let ended = ledger.ended();
        // read the stack before taking the monitor's lock
        let readings: Vec<Reading> = live.iter().map(|t| t.sample()).collect();
        let st = self.inner.state.lock().expect("monitor");
        let now = Instant::now();
        let stale_after = self.stale_after();
        let receiver = self.inner.info.role == "receiver";
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
        let since = |i: Option<Instant>| i.map(|i| now.saturating_duration_since(i));
        let mut stale_since: Option<Instant> = None;
        let sessions: Vec<SessionStatus> = live
            .iter()
            .zip(readings)
            .map(|(t, r)| {
                let seen = st.sessions.get(&t.id);
                let path = r.path.clone();
                let sum = Sums::of(t, &r);
                let silent = since(r.heard_at);
                let state = match (r.connected, receiver) {
                    (true, _) if silent.is_some_and(|s| s >= stale_after) => {
                        stale_since = stale_since.max(r.heard_at.map(|h| h + stale_after));
                        SessionState::Stale
                    }
                    (true, _) => SessionState::Up,
                    (false, true) => SessionState::Reconnecting,
                    (false, false) => SessionState::Waiting,
                };
                let s = SessionStatus {
                    id: t.id,
                    peer: t.peer(),
                    connected: r.connected,
                    state,
                    last_heard_secs: silent.map(|d| d.as_secs_f64()),
                    connected_secs: since(r.attached_at).map(|d| d.as_secs_f64()),
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
        let any = |state| sessions.iter().any(|s| s.state == state);
        let (state, since) = if any(SessionState::Up) {
            ("up", st.up_since)
        } else if any(SessionState::Stale) {
            ("stale", stale_since)
        } else if receiver && any(SessionState::Reconnecting) {
            ("reconnecting", st.down_since)
        } else if receiver {
            ("waiting", st.down_since)
        } else {
            ("listening", Some(self.inner.started))
        };
        Snapshot {
            info: self.inner.info.clone(),
            at_ms: unix_ms(),
            uptime_secs: self.inner.started.elapsed().as_secs_f64(),
            state: state.into(),
            state_secs: since.map_or(0.0, |s| now.saturating_duration_since(s).as_secs_f64()),
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests;
