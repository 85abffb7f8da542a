//! UDP over QUIC datagrams.
//!
//! The receiver gives each client address its own flow id; the sender gives
//! each flow its own socket towards the service, so replies reach only the
//! client that asked and the service sees distinct clients. Packets larger
//! than the path's datagram limit are fragmented (see
//! [`crate::proto::datagram`]). Idle flows expire, the number of flows is
//! capped, and every drop is counted and reported in the log.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::net::UdpSocket;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, warn, Instrument};

pub use super::udp_stats::{UdpCounts, UdpStats};
use super::{
    config::EngineConfig,
    error::SessionError,
    front::UdpFront,
    policy::{Catalog, Refusal},
    routes::Routes,
    udp_stats::Reporter,
};
use crate::{
    addr::Protocol,
    net,
    proto::datagram::{fragment, Reassembler},
    transport::{DatagramError, TunnelConnection},
};

const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_PARTIAL: usize = 512;
const TICK: Duration = Duration::from_secs(1);

async fn send_packet<C: TunnelConnection>(
    conn: &C,
    flow: u32,
    seq: u16,
    packet: &[u8],
    stats: &UdpStats,
) -> Result<(), SessionError> {
    let Some(max) = conn.max_datagram_size() else {
        return Err(SessionError::Protocol(
            "the peer does not accept QUIC datagrams, so UDP cannot be forwarded".into(),
        ));
    };
    let frags = match fragment(flow, seq, packet, max) {
        Ok(f) => f,
        Err(e) => {
            stats.dropped_too_large.fetch_add(1, Relaxed);
            debug!("udp packet dropped: {e}");
            return Ok(());
        }
    };
    for f in frags {
        match conn.send_datagram(f).await {
            Ok(()) => {}
            Err(DatagramError::Lost(r)) => return Err(SessionError::ConnectionLost(r)),
            Err(DatagramError::TooLarge) => {
                // path MTU shrank between the size check and the send
                stats.dropped_too_large.fetch_add(1, Relaxed);
                return Ok(());
            }
            Err(DatagramError::Unsupported) => {
                return Err(SessionError::Protocol(
                    "the peer does not accept QUIC datagrams".into(),
                ))
            }
        }
    }
    stats.packets_in.fetch_add(1, Relaxed);
    Ok(())
}

// ---------------------------------------------------------------- receiver

/// Receiver: forward packets from the local clients of every UDP front
/// through the tunnel and back (replies find their front by the flow id's
/// high byte). Sockets, flow tables and counters stay with the caller.
pub async fn run_receiver<C: TunnelConnection>(
    conn: C,
    fronts: &[&UdpFront],
    config: Arc<EngineConfig>,
    cancel: CancellationToken,
) -> Result<(), SessionError> {
    let Some(stats) = fronts.first().map(|f| f.stats.clone()) else {
        return Ok(());
    };
    let mut reasm = Reassembler::new(MAX_PARTIAL, REASSEMBLY_TIMEOUT);
    let uplinks = futures::future::try_join_all(fronts.iter().map(|f| uplink(&conn, f)));
    let downlink = async {
        let reasm = &mut reasm;
        let mut tick = tokio::time::interval(TICK);
        let mut reporter = Reporter::new();
        loop {
            tokio::select! {
                d = conn.read_datagram() => {
                    let d = d?;
                    let now = Instant::now();
                    let Some((flow, pkt)) = reasm.push(d, now) else { continue };
                    let front = fronts.iter().find(|f| f.index() == (flow >> 24) as u8);
                    let to = front.and_then(|f| Some((f, f.table.lock().expect("flow table").incoming(flow, now)?)));
                    match to {
                        Some((f, a)) => match f.sock.send_to(&pkt, a).await {
                            Ok(_) => { stats.packets_out.fetch_add(1, Relaxed); }
                            Err(e) => {
                                stats.dropped_send_error.fetch_add(1, Relaxed);
                                debug!("udp send to {a} failed: {e}");
                            }
                        },
                        None => { stats.dropped_unknown_flow.fetch_add(1, Relaxed); }
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    reasm.expire(now);
                    let mut open = 0;
                    for f in fronts {
                        let mut t = f.table.lock().expect("flow table");
                        for id in t.expire(now, config.udp_idle_timeout) {
                            reasm.forget_flow(id);
                        }
                        open += t.len();
                    }
                    stats.set_flows(open, false);
                    reporter.maybe_report(&stats, reasm, now);
                }
            }
        }
    };
    let result: Result<(), SessionError> = tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        reason = conn.closed() => Err(SessionError::ConnectionLost(reason)),
        r = uplinks => r.map(|_| ()),
        r = downlink => r,
    };
    info!("udp session ended: {}", stats.summary(&reasm));
    result
}

/// Packets from one front's clients into the tunnel; ends only on error.
async fn uplink<C: TunnelConnection>(conn: &C, front: &UdpFront) -> Result<(), SessionError> {
    let UdpFront {
        sock, table, stats, ..
    } = front;
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                debug!("udp recv error (ignored): {e}");
                continue;
            }
        };
        let entry = {
            let mut t = table.lock().expect("flow table");
            let e = t.outgoing(from, Instant::now());
            if let Some((_, _, true)) = e {
                stats.flows_total.fetch_add(1, Relaxed);
                stats.flows.fetch_add(1, Relaxed);
            }
            e
        };
        let Some((id, seq, new)) = entry else {
            stats.dropped_flow_cap.fetch_add(1, Relaxed);
            continue;
        };
        if new {
            front.counts.udp_flows_total.fetch_add(1, Relaxed);
            info!(client = %from, flow = id, "new udp flow");
        }
        send_packet(conn, id, seq, &buf[..n], stats).await?;
    }
}

// ---------------------------------------------------------------- sender

struct SenderFlow {
    sock: Arc<UdpSocket>,
    last_seen: Arc<AtomicU64>,
    stop: CancellationToken,
}

/// The sender's UDP flows, each with its own socket towards the service.
/// A resumable session keeps them across its connections, so the service
/// goes on seeing each client at the same source port after a reconnect
/// (a game server or a WireGuard peer keeps its mapping); otherwise they
/// end with the connection.
pub struct SenderFlows<C: TunnelConnection> {
    flows: std::sync::Mutex<HashMap<u32, SenderFlow>>,
    /// Flows the routes refused, with when they were last seen and under
    /// which catalog (a reload decides again).
    refused: std::sync::Mutex<HashMap<u32, (u64, Arc<Catalog>)>>,
    /// The connection replies go out on: `None` between connections (the
    /// generation says whose it is).
    conn: tokio::sync::watch::Sender<(u64, Option<C>)>,
    tasks: TaskTracker,
    stop: CancellationToken,
    stats: Arc<UdpStats>,
    started: Instant,
}

impl<C: TunnelConnection> SenderFlows<C> {
    /// No flows yet; every flow stops when `stop` fires.
    pub fn new(stop: CancellationToken, stats: Arc<UdpStats>) -> Arc<Self> {
        Arc::new(SenderFlows {
            flows: std::sync::Mutex::new(HashMap::new()),
            refused: std::sync::Mutex::new(HashMap::new()),
            conn: tokio::sync::watch::Sender::new((0, None)),
            tasks: TaskTracker::new(),
            stop,
            stats,
            started: Instant::now(),
        })
    }

    /// Flows open now.
    pub fn len(&self) -> usize {
        self.flows.lock().expect("flows").len()
    }

    /// Whether no flow is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn millis(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Stop every flow and wait for their readers.
    pub async fn close(&self) {
        self.stop.cancel();
        self.flows.lock().expect("flows").clear();
        self.stats.set_flows(0, false);
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// The socket of flow `id`, opened (with its reader) on first use;
    /// `None` when the flow cap is reached or the source is unreachable.
    /// The flow ends when a reload no longer allows it.
    async fn socket(
        self: &Arc<Self>,
        id: u32,
        routes: &Routes,
        config: &EngineConfig,
    ) -> Option<Arc<UdpSocket>> {
        if let Some(f) = self.flows.lock().expect("flows").get(&id) {
            f.last_seen.store(self.millis(), Relaxed);
            return Some(f.sock.clone());
        }
        let catalog = routes.catalog_now();
        {
            let mut refused = self.refused.lock().expect("refused");
            match refused.get_mut(&id) {
                Some((since, under)) if Arc::ptr_eq(under, &catalog) => {
                    *since = self.millis();
                    self.stats.dropped_send_error.fetch_add(1, Relaxed);
                    return None;
                }
                Some(_) => {
                    refused.remove(&id);
                }
                None => {}
            }
        }
        if self.len() >= config.max_udp_flows {
            self.stats.dropped_flow_cap.fetch_add(1, Relaxed);
            return None;
        }
        let index = routes.index_of_flow(id);
        let counts = routes.counts(index);
        let sock = match open_flow_socket(routes, index).await {
            Ok(s) => {
                if let Some(c) = &counts {
                    c.udp_flows_total.fetch_add(1, Relaxed);
                }
                Arc::new(s)
            }
            Err(e) => {
                if let Some(c) = &counts {
                    c.failed(e.status);
                }
                let e = e.message;
                // remembered (bounded), so a refused flow costs no lookup per packet
                warn!(flow = id, "udp flow refused: {e}");
                self.stats.dropped_send_error.fetch_add(1, Relaxed);
                let mut refused = self.refused.lock().expect("refused");
                if refused.len() < config.max_udp_flows {
                    refused.insert(id, (self.millis(), catalog));
                }
                return None;
            }
        };
        let mut flows = self.flows.lock().expect("flows");
        if let Some(f) = flows.get(&id) {
            // a connection that is ending opened it meanwhile
            return Some(f.sock.clone());
        }
        info!(flow = id, local = ?sock.local_addr().ok(), "new udp flow to source");
        let flow = SenderFlow {
            sock: sock.clone(),
            last_seen: Arc::new(AtomicU64::new(self.millis())),
            stop: self.stop.child_token(),
        };
        let reader = flow_reader(
            self.conn.subscribe(),
            id,
            sock.clone(),
            flow.last_seen.clone(),
            flow.stop.clone(),
            self.stats.clone(),
            self.started,
        );
        let permit = routes.permit(index, None);
        let me = Arc::downgrade(self);
        self.tasks.spawn(
            async move {
                tokio::select! {
                    _ = reader => {}
                    r = permit.revoked() => if let Some(me) = me.upgrade() {
                        me.revoke(id, &r.message);
                    }
                }
            }
            .in_current_span(),
        );
        flows.insert(id, flow);
        self.stats.set_flows(flows.len(), true);
        Some(sock)
    }

    /// End flow `id`, which a reload no longer allows: its socket closes,
    /// and its next packet is refused like any flow's.
    fn revoke(&self, id: u32, why: &str) {
        let mut flows = self.flows.lock().expect("flows");
        if let Some(f) = flows.remove(&id) {
            f.stop.cancel();
            warn!(
                flow = id,
                "udp flow closed: no longer allowed by the reloaded configuration ({why})"
            );
        }
        self.stats.set_flows(flows.len(), false);
    }

    /// Forget flows idle for `idle`; returns their ids.
    fn expire(&self, idle: Duration) -> Vec<u32> {
        let now = self.millis();
        let idle_ms = idle.as_millis() as u64;
        let mut gone = Vec::new();
        self.refused
            .lock()
            .expect("refused")
            .retain(|_, (since, _)| now.saturating_sub(*since) < idle_ms);
        self.flows.lock().expect("flows").retain(|id, f| {
            let keep = now.saturating_sub(f.last_seen.load(Relaxed)) < idle_ms;
            if !keep {
                debug!(flow = id, "udp flow expired");
                f.stop.cancel();
                gone.push(*id);
            }
            keep
        });
        self.stats.set_flows(self.len(), false);
        gone
    }
}

impl<C: TunnelConnection> Drop for SenderFlows<C> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Sender: one socket per flow towards the service or destination of its
/// route. With `flows` (a resumable session's) the flows outlive this
/// connection; without, they end with it.
pub async fn serve_sender<C: TunnelConnection>(
    conn: C,
    routes: Arc<Routes>,
    config: Arc<EngineConfig>,
    flows: Option<Arc<SenderFlows<C>>>,
    tally: Arc<super::tally::Tally>,
    cancel: CancellationToken,
) -> Result<(), SessionError> {
    let kept = flows.is_some();
    let flows = flows.unwrap_or_else(|| SenderFlows::new(cancel.child_token(), tally.udp.clone()));
    let generation = flows.conn.borrow().0 + 1;
    flows.conn.send_replace((generation, Some(conn.clone())));
    if kept && !flows.is_empty() {
        info!(
            flows = flows.len(),
            "udp flows continue with their sockets towards the source"
        );
    }
    let stats = flows.stats.clone();
    let mut reasm = Reassembler::new(MAX_PARTIAL, REASSEMBLY_TIMEOUT);
    let mut tick = tokio::time::interval(TICK);
    let mut reporter = Reporter::new();

    let result = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            d = conn.read_datagram() => {
                let d = match d {
                    Ok(d) => d,
                    Err(e) => break Err(e.into()),
                };
                let Some((id, pkt)) = reasm.push(d, Instant::now()) else { continue };
                let Some(sock) = flows.socket(id, &routes, &config).await else { continue };
                match sock.send(&pkt).await {
                    Ok(_) => { stats.packets_out.fetch_add(1, Relaxed); }
                    Err(e) => {
                        stats.dropped_send_error.fetch_add(1, Relaxed);
                        debug!(flow = id, "udp send to source failed: {e}");
                    }
                }
            }
            _ = tick.tick() => {
                for id in flows.expire(config.udp_idle_timeout) {
                    reasm.forget_flow(id);
                }
                reasm.expire(Instant::now());
                reporter.maybe_report(&stats, &reasm, Instant::now());
            }
        }
    };
    // replies wait for the next connection (dropped meanwhile), unless a
    // newer one already took over
    flows.conn.send_if_modified(|c| {
        let ours = c.0 == generation;
        if ours {
            c.1 = None;
        }
        ours
    });
    if !kept {
        flows.close().await;
    }
    info!("udp session ended: {}", stats.summary(&reasm));
    result
}

async fn open_flow_socket(routes: &Routes, index: usize) -> Result<UdpSocket, Refusal> {
    let (route, addrs) = routes.resolve(index, Protocol::Udp, None).await?;
    let sock = net::udp_socket_to(addrs[0]).await.map_err(|e| Refusal {
        status: crate::proto::header::Status::ConnectFailed,
        message: format!("cannot open a socket to {route}: {e}"),
    })?;
    debug!(to = %route, "udp flow opened");
    Ok(sock)
}

/// Replies from the service for one flow, sent on whichever connection is
/// current; dropped (and counted) while there is none.
async fn flow_reader<C: TunnelConnection>(
    conn: tokio::sync::watch::Receiver<(u64, Option<C>)>,
    id: u32,
    sock: Arc<UdpSocket>,
    last_seen: Arc<AtomicU64>,
    stop: CancellationToken,
    stats: Arc<UdpStats>,
    started: Instant,
) {
    let mut buf = vec![0u8; 65_536];
    let mut seq: u16 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv(&mut buf) => match r {
                Ok(n) => {
                    last_seen.store(started.elapsed().as_millis() as u64, Relaxed);
                    let current = conn.borrow().1.clone();
                    let Some(c) = current else {
                        stats.dropped_no_tunnel.fetch_add(1, Relaxed);
                        continue;
                    };
                    match send_packet(&c, id, seq, &buf[..n], &stats).await {
                        Ok(()) => seq = seq.wrapping_add(1),
                        // the connection is going: this reply is lost, the flow is not
                        Err(SessionError::ConnectionLost(_)) => {
                            stats.dropped_no_tunnel.fetch_add(1, Relaxed);
                        }
                        Err(e) => {
                            debug!(flow = id, "flow reader ends: {e}");
                            return;
                        }
                    }
                }
                // ICMP port unreachable from a service that is not up yet
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    debug!(flow = id, "source refused a udp packet (is it running?)");
                }
                Err(e) => {
                    warn!(flow = id, "udp receive from source failed: {e}");
                    return;
                }
            }
        }
    }
}
