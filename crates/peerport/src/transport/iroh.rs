//! [`TunnelConnection`] for iroh's QUIC stack (noq types re-exported by iroh).

use bytes::Bytes;
use futures::StreamExt;
use iroh::{
    endpoint::{Connection, PathEvent, RecvStream, SendStream, VarInt},
    Endpoint, TransportAddr,
};
use tracing::info;

use super::{
    CloseReason, ConnError, DatagramError, PathInfo, TunnelConnection, TunnelRecv, TunnelSend,
};

/// An iroh connection used as a tunnel. It may own its endpoint (one
/// endpoint per session in the copy-paste mode), which then closes with it.
#[derive(Clone, Debug)]
pub struct IrohConnection {
    conn: Connection,
    owned: Option<Owned>,
    watch_local: WatchLocal,
    superseded: tokio_util::sync::CancellationToken,
}

/// Whether [`TunnelConnection::path_gone`] watches the local address of
/// the selected path (the copy-paste mode: no relay to fall back on, and
/// iroh does not move a direct path to a new local address by itself).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct WatchLocal(bool);

/// An endpoint that exists only for one connection, and the task that
/// ignores other attempts to it (ends with the last clone).
#[derive(Clone, Debug)]
struct Owned {
    ep: Endpoint,
    _ignore: std::sync::Arc<tokio_util::task::AbortOnDropHandle<()>>,
}

impl IrohConnection {
    /// Wrap a connection of a shared endpoint.
    pub fn new(conn: Connection) -> Self {
        IrohConnection {
            conn,
            owned: None,
            watch_local: WatchLocal(false),
            superseded: Default::default(),
        }
    }

    /// Resolve [`TunnelConnection::path_gone`] when this host loses the
    /// address the selected direct path leaves from, so that the receiver
    /// reconnects at once (from its new address) instead of after the idle
    /// timeout.
    pub fn watching_local_address(mut self) -> Self {
        self.watch_local = WatchLocal(true);
        self
    }

    /// The remote address of the selected direct path.
    fn selected_direct(&self) -> Option<std::net::SocketAddr> {
        self.conn
            .paths()
            .iter()
            .find(|p| p.is_selected())
            .and_then(|p| match p.remote_addr() {
                TransportAddr::Ip(a) => Some(*a),
                _ => None,
            })
    }

    /// Wrap a connection whose endpoint exists only for it.
    /// Further connection attempts to that endpoint are ignored (no state
    /// kept for them) until it closes.
    pub fn owning(conn: Connection, endpoint: Endpoint) -> Self {
        let ignore = tokio::spawn(super::gate::ignore_all(endpoint.clone()));
        IrohConnection {
            owned: Some(Owned {
                ep: endpoint,
                _ignore: std::sync::Arc::new(tokio_util::task::AbortOnDropHandle::new(ignore)),
            }),
            ..IrohConnection::new(conn)
        }
    }
}

impl TunnelSend for SendStream {
    fn reset(&mut self, code: u32) {
        let _ = SendStream::reset(self, VarInt::from_u32(code));
    }

    fn set_priority(&mut self, priority: i32) {
        let _ = SendStream::set_priority(self, priority);
    }

    async fn write_bytes(&mut self, data: Bytes) -> std::io::Result<()> {
        self.write_chunk(data).await.map_err(std::io::Error::from)
    }

    async fn acked(&mut self) {
        let _ = self.stopped().await;
    }
}

impl TunnelRecv for RecvStream {
    fn stop(&mut self, code: u32) {
        let _ = RecvStream::stop(self, VarInt::from_u32(code));
    }

    async fn read_chunks(&mut self, bufs: &mut [Bytes]) -> std::io::Result<Option<usize>> {
        RecvStream::read_many_chunks(self, bufs)
            .await
            .map_err(std::io::Error::from)
    }
}

/// The path to a transport address: direct to an IP, or through a relay.
pub fn path_to(addr: &TransportAddr) -> PathInfo {
    match addr {
        TransportAddr::Ip(a) => PathInfo::direct(*a),
        TransportAddr::Relay(url) => PathInfo::relay(url.to_string()),
        _ => PathInfo::none(),
    }
}

impl TunnelConnection for IrohConnection {
    type Send = SendStream;
    type Recv = RecvStream;

    async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnError> {
        self.conn
            .open_bi()
            .await
            .map_err(|e| ConnError::Lost(close_reason(e)))
    }

    async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnError> {
        self.conn
            .accept_bi()
            .await
            .map_err(|e| ConnError::Lost(close_reason(e)))
    }

    async fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError> {
        self.conn
            .send_datagram_wait(data)
            .await
            .map_err(datagram_error)
    }

    async fn read_datagram(&self) -> Result<Bytes, ConnError> {
        self.conn
            .read_datagram()
            .await
            .map_err(|e| ConnError::Lost(close_reason(e)))
    }

    fn max_datagram_size(&self) -> Option<usize> {
        self.conn.max_datagram_size()
    }

    async fn closed(&self) -> CloseReason {
        close_reason(self.conn.closed().await)
    }

    fn close(&self, code: u32, reason: &str) {
        self.conn.close(VarInt::from_u32(code), reason.as_bytes());
    }

    async fn shutdown(&self) {
        if let Some(o) = &self.owned {
            o.ep.close().await;
        }
    }

    fn superseded(&self) -> tokio_util::sync::CancellationToken {
        self.superseded.clone()
    }

    fn peer_id(&self) -> String {
        self.conn.remote_id().to_string()
    }

    fn path(&self) -> PathInfo {
        let paths = self.conn.paths();
        for p in paths.iter() {
            if p.is_selected() {
                return path_to(p.remote_addr());
            }
        }
        PathInfo::none()
    }

    fn stats(&self) -> super::ConnStats {
        let all = self.conn.stats();
        let mut out = super::ConnStats {
            sent_packets: all.sent_packets,
            lost_packets: all.lost_packets,
            lost_bytes: all.lost_bytes,
            tx_bytes: all.udp_tx.bytes,
            rx_bytes: all.udp_rx.bytes,
            ..Default::default()
        };
        if let Some(p) = self.conn.paths().iter().find(|p| p.is_selected()) {
            let ps = p.stats();
            out.rtt = ps.rtt;
            out.cwnd = ps.cwnd;
            out.congestion_events = ps.congestion_events;
            out.mtu = ps.current_mtu;
        }
        out
    }

    async fn path_gone(&self) -> String {
        if self.watch_local != WatchLocal(true) {
            return std::future::pending().await;
        }
        // the local address the kernel routes the first selected direct path from
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let ip = loop {
            tick.tick().await;
            if let Some(ip) = self.selected_direct().and_then(crate::net::route_source) {
                break ip;
            }
        };
        crate::net::watch_address(ip).await
    }

    async fn watch_path(&self) {
        let mut events = self.conn.path_events();
        while let Some(ev) = events.next().await {
            match ev {
                PathEvent::Selected { remote_addr, .. } => {
                    let path = path_to(&remote_addr);
                    info!(target: crate::EVENT, path = %path.kind, "path selected: {path}");
                }
                PathEvent::Opened { remote_addr, .. } => {
                    tracing::debug!("path opened: {}", path_to(&remote_addr));
                }
                PathEvent::Closed { remote_addr, .. } => {
                    tracing::debug!("path closed: {}", path_to(&remote_addr));
                }
                _ => {}
            }
        }
    }
}

super::stack_errors!(
    iroh::endpoint::ConnectionError,
    iroh::endpoint::SendDatagramError
);
