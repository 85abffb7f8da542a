//! The receiver's local side (`--target`), which outlives every session:
//! a TCP listener whose clients queue for the next session, or a UDP socket
//! with its flow table. While no session is up, TCP clients wait at most
//! `--reconnect-wait` and are then closed with a log line; UDP packets are
//! dropped and counted.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
};
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn, Instrument};

use super::{
    config::EngineConfig, flow_table::FlowTable, socks, tally::ServiceCounts, target::BindError,
    target::BoundTarget, udp_stats::UdpStats,
};
use crate::addr::{ForwardAddr, Protocol};

/// Most local TCP clients queued while no session is up.
pub const MAX_WAITING: usize = 1024;

/// A local TCP client accepted by the receiver, waiting for a session.
#[derive(Debug)]
pub struct Waiting {
    /// The client's connection.
    pub stream: TcpStream,
    /// The client's address.
    pub client: SocketAddr,
    /// Bytes the client already sent through a session that went away
    /// before the sender answered: the next session sends them first.
    pub(crate) prefix: Vec<u8>,
    /// Where a SOCKS5 client asked to go.
    pub(crate) dest: Option<(String, u16)>,
    since: Instant,
}

/// The receiver's TCP listener and the clients waiting for a session.
#[derive(Debug)]
pub struct TcpQueue {
    rx: mpsc::Receiver<Waiting>,
    tx: mpsc::Sender<Waiting>,
    held: VecDeque<Waiting>,
    wait: Duration,
    accept: AbortOnDropHandle<()>,
    /// This target's counts.
    pub(crate) counts: Arc<ServiceCounts>,
}

impl TcpQueue {
    fn start(
        listener: TcpListener,
        wait: Duration,
        counts: Arc<ServiceCounts>,
        socks: bool,
    ) -> Self {
        let (tx, rx) = mpsc::channel(MAX_WAITING);
        let task = tokio::spawn(accept_loop(listener, tx.clone(), socks));
        TcpQueue {
            rx,
            tx,
            held: VecDeque::new(),
            wait,
            accept: AbortOnDropHandle::new(task),
            counts,
        }
    }

    fn late(&self, w: &Waiting) -> bool {
        w.since.elapsed() > self.wait
    }

    fn close_late(&self, w: Waiting) {
        warn!(
            client = %w.client,
            "no tunnel within {} s (--reconnect-wait): closing this local connection",
            self.wait.as_secs()
        );
        drop(w.stream);
    }

    /// Where a session puts back a client it could not start (its
    /// connection turned out to be gone before any byte moved): the next
    /// session takes it, within the same `--reconnect-wait`.
    pub fn requeue(&self) -> mpsc::Sender<Waiting> {
        self.tx.clone()
    }

    /// The next client for a live session (clients that waited longer than
    /// `--reconnect-wait` are closed instead).
    pub async fn next(&mut self) -> Waiting {
        loop {
            let w = match self.held.pop_front() {
                Some(w) => w,
                None => match self.rx.recv().await {
                    Some(w) => w,
                    None => std::future::pending().await,
                },
            };
            if self.late(&w) {
                self.close_late(w);
                continue;
            }
            return w;
        }
    }

    /// While no session is up: keep new clients, close the ones that waited
    /// too long. Never returns; run it beside reconnecting.
    async fn hold(&mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                w = self.rx.recv() => match w {
                    Some(w) => {
                        debug!(client = %w.client, "local connection waits for the tunnel");
                        self.held.push_back(w);
                    }
                    None => std::future::pending::<()>().await,
                },
                _ = tick.tick() => {
                    while self.held.front().is_some_and(|w| self.late(w)) {
                        if let Some(w) = self.held.pop_front() {
                            self.close_late(w);
                        }
                    }
                }
            }
        }
    }
}

/// Accept local clients into the queue; on a SOCKS5 front each first says
/// where it goes (at most [`MAX_WAITING`] at a time, each within
/// [`socks::HANDSHAKE_TIMEOUT`]; the handshakes end with this loop).
async fn accept_loop(listener: TcpListener, tx: mpsc::Sender<Waiting>, socks: bool) {
    let mut handshakes = tokio::task::JoinSet::new();
    loop {
        while handshakes.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((mut stream, client)) => {
                let _ = stream.set_nodelay(true);
                if !socks {
                    if !queue(&tx, waiting(stream, client, None)) {
                        return;
                    }
                    continue;
                }
                if handshakes.len() >= MAX_WAITING {
                    warn!(client = %client, "{MAX_WAITING} SOCKS5 clients are still negotiating: closing this one");
                    continue;
                }
                let tx = tx.clone();
                handshakes.spawn(
                    async move {
                        match socks::accept(&mut stream).await {
                            Ok(dest) => {
                                debug!(client = %client, to = %format!("{}:{}", dest.0, dest.1), "SOCKS5 CONNECT");
                                queue(&tx, waiting(stream, client, Some(dest)));
                            }
                            Err(e) => info!(client = %client, "SOCKS5 client refused: {e}"),
                        }
                    }
                    .in_current_span(),
                );
            }
            Err(e) => {
                // e.g. EMFILE: back off instead of spinning
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn waiting(stream: TcpStream, client: SocketAddr, dest: Option<(String, u16)>) -> Waiting {
    Waiting {
        stream,
        client,
        prefix: Vec::new(),
        dest,
        since: Instant::now(),
    }
}

/// Queue a client for the next session; false when the queue is gone.
fn queue(tx: &mpsc::Sender<Waiting>, w: Waiting) -> bool {
    match tx.try_send(w) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(w)) => {
            warn!(
                client = %w.client,
                "{MAX_WAITING} local connections already wait for the tunnel: closing this one"
            );
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// The receiver's UDP socket, its client table (flow ids stay the same
/// across sessions) and counters.
#[derive(Debug)]
pub struct UdpFront {
    /// The socket local clients send to.
    pub sock: Arc<UdpSocket>,
    /// Client address <-> flow id.
    pub(crate) table: Arc<Mutex<FlowTable>>,
    /// Counters over the receiver's life (shared by every UDP front).
    pub stats: Arc<UdpStats>,
    idle_timeout: Duration,
    index: u8,
    /// This target's counts.
    pub(crate) counts: Arc<ServiceCounts>,
}

impl UdpFront {
    /// The `--target`'s index in the hello (the flow ids' high byte).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// While no session is up: drop and count packets, expire idle flows.
    async fn hold(&mut self) {
        let mut buf = vec![0u8; 65_536];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut said = false;
        loop {
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => if let Ok((_, from)) = r {
                    self.stats.dropped_no_tunnel.fetch_add(1, Relaxed);
                    if !std::mem::replace(&mut said, true) {
                        info!(client = %from, "no tunnel: dropping udp packets until it is back");
                    }
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    let gone = self.table.lock().expect("flow table").expire(now, self.idle_timeout);
                    let n = gone.len() as u64;
                    let _ = self.stats.flows.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
                }
            }
        }
    }
}

/// The receiver's local side.
#[derive(Debug)]
pub enum Front {
    /// TCP clients queue for the session.
    Tcp(TcpQueue),
    /// UDP clients share one socket.
    Udp(UdpFront),
}

impl Front {
    /// Bind `target` (fails fast with a clear message on a busy port);
    /// `index` is its place in the receiver's list, UDP fronts share
    /// `udp_stats`; `counts` are the target's own; `socks`: a SOCKS5
    /// listener (TCP).
    #[allow(clippy::too_many_arguments)]
    pub async fn bind(
        target: &ForwardAddr,
        socks: bool,
        index: u8,
        engine: &EngineConfig,
        reconnect_wait: Duration,
        udp_stats: Arc<UdpStats>,
        counts: Arc<ServiceCounts>,
    ) -> Result<(Self, SocketAddr), BindError> {
        let bound = BoundTarget::bind(target).await?;
        let local = bound.local_addr().map_err(|source| BindError::Other {
            addr: target.to_string(),
            source,
        })?;
        let front = match bound {
            BoundTarget::Tcp(l) => Front::Tcp(TcpQueue::start(l, reconnect_wait, counts, socks)),
            BoundTarget::Udp(s) => Front::Udp(UdpFront {
                sock: Arc::new(s),
                table: Arc::new(Mutex::new(FlowTable::new(engine.max_udp_flows, index))),
                stats: udp_stats,
                idle_timeout: engine.udp_idle_timeout,
                index,
                counts,
            }),
        };
        Ok((front, local))
    }

    /// What stops accepting local TCP clients (closing the listener), for
    /// a drain; `None` for UDP.
    pub fn accept_handle(&self) -> Option<tokio::task::AbortHandle> {
        match self {
            Front::Tcp(q) => Some(q.accept.abort_handle()),
            Front::Udp(_) => None,
        }
    }

    /// TCP or UDP.
    pub fn protocol(&self) -> Protocol {
        match self {
            Front::Tcp(_) => Protocol::Tcp,
            Front::Udp(_) => Protocol::Udp,
        }
    }

    /// While no session is up: hold TCP clients (bounded wait), drop and
    /// count UDP packets. Never returns; select it against reconnecting.
    pub async fn hold(&mut self) {
        match self {
            Front::Tcp(q) => q.hold().await,
            Front::Udp(u) => u.hold().await,
        }
    }
}
