//! Sockets that quinn runs on in the ICE modes.
//!
//! * Host and server-reflexive pairs: the selected candidate's own UDP
//!   socket is duplicated (`dup(2)`) and handed to quinn's native socket
//!   layer (GSO/GRO kept) once ICE completes; the ICE agent is then closed.
//!   [`StunFilter`] drops late STUN packets by the STUN magic cookie
//!   (bytes 4..8 = 0x2112A442 and a first byte below 4), never by the first
//!   byte alone: quinn greases the QUIC fixed bit, so first-byte
//!   demultiplexing would drop about 1 packet in 32.
//! * Relay pairs: quinn runs over the ICE `Conn` ([`IceSocket`]), which
//!   frames packets for the TURN server; the agent stays alive.

use std::{
    fmt,
    future::Future,
    io::{self, IoSliceMut},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use quinn::{
    udp::{RecvMeta, Transmit},
    AsyncUdpSocket, UdpPoller,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc_util::Conn;

/// The ICE `Conn` as quinn sees it.
pub type DynConn = Arc<dyn Conn + Send + Sync>;

/// quinn never sees real addresses over the ICE `Conn` (ICE may re-select
/// the pair underneath; quinn must not notice): constant documentation addresses.
pub const FAKE_PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 1);
/// Our own address as quinn sees it on such a path.
const FAKE_LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 1);

/// Whether a datagram is STUN (RFC 7983: first byte 0..=3 and the magic cookie).
pub fn is_stun(p: &[u8]) -> bool {
    p.len() >= 20 && p[0] < 4 && p[4..8] == [0x21, 0x12, 0xA4, 0x42]
}

/// Remove the STUN datagrams from one received buffer (with GRO it holds
/// several datagrams of `stride` bytes): the others move to the front and
/// `m.len` shrinks. Returns how many datagrams were kept.
pub fn drop_stun(m: &mut RecvMeta, buf: &mut [u8]) -> usize {
    drop_stun_with(m, buf, |_| {})
}

/// [`drop_stun`], handing each STUN datagram to `on_stun` first.
pub fn drop_stun_with(m: &mut RecvMeta, buf: &mut [u8], mut on_stun: impl FnMut(&[u8])) -> usize {
    let (mut rd, mut wr, mut kept) = (0, 0, 0);
    let stride = m.stride.max(1);
    while rd < m.len {
        let end = (rd + stride).min(m.len);
        if is_stun(&buf[rd..end]) {
            on_stun(&buf[rd..end]);
        } else {
            buf.copy_within(rd..end, wr);
            wr += end - rd;
            kept += 1;
        }
        rd = end;
    }
    m.len = wr;
    kept
}

/// quinn over the ICE `Conn` (relay pairs). Two helper tasks move packets;
/// they stop when `stop` is cancelled or the `Conn` closes.
pub struct IceSocket {
    out_tx: mpsc::Sender<Vec<u8>>,
    in_rx: Mutex<mpsc::Receiver<Vec<u8>>>,
    /// What quinn sizes its receive buffers for: 1, or a native socket's
    /// GRO batch when the endpoint may move to one (a punch's `Pinned`):
    /// quinn keeps the buffers across a rebind, and a GRO batch read into
    /// a one-datagram buffer would be cut to its first datagram.
    receive_segments: usize,
}

impl fmt::Debug for IceSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IceSocket")
    }
}

impl IceSocket {
    /// Start the helper tasks on `conn`; quinn's receive buffers are sized
    /// for `receive_segments` datagrams per read (see the field).
    pub fn new(conn: DynConn, stop: CancellationToken, receive_segments: usize) -> Arc<Self> {
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(1024);
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(2048);
        let c = conn.clone();
        let s = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = s.cancelled() => break,
                    p = out_rx.recv() => match p {
                        Some(p) => { let _ = c.send(&p).await; } // an error is UDP loss
                        None => break,
                    }
                }
            }
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    r = conn.recv(&mut buf) => match r {
                        Ok(n) => if in_tx.send(buf[..n].to_vec()).await.is_err() { break },
                        Err(_) => break,
                    }
                }
            }
        });
        Arc::new(IceSocket {
            out_tx,
            in_rx: Mutex::new(in_rx),
            receive_segments: receive_segments.max(1),
        })
    }
}

impl AsyncUdpSocket for IceSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(IcePoller {
            tx: self.out_tx.clone(),
            fut: Mutex::new(None),
        })
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        match self.out_tx.try_send(t.contents.to_vec()) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(io::ErrorKind::WouldBlock.into()),
            // the ICE path is gone (session over): the packet is lost, as on
            // a dead UDP path; quinn's idle timer or close ends the connection
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut rx = self.in_rx.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            match rx.poll_recv(cx) {
                Poll::Ready(Some(p)) => {
                    let len = p.len().min(bufs[n].len());
                    bufs[n][..len].copy_from_slice(&p[..len]);
                    meta[n] = RecvMeta {
                        addr: FAKE_PEER,
                        len,
                        stride: len,
                        ..RecvMeta::default()
                    };
                    n += 1;
                }
                // the ICE path is gone: nothing more arrives (an error here
                // would make quinn log an I/O error for an orderly end)
                _ => break,
            }
        }
        if n == 0 {
            Poll::Pending
        } else {
            Poll::Ready(Ok(n))
        }
    }

    fn max_receive_segments(&self) -> usize {
        self.receive_segments
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(FAKE_LOCAL)
    }
}

/// Writable when the outgoing channel has room. The Mutex only makes the
/// boxed (Send, not Sync) future satisfy `UdpPoller: Sync`.
struct IcePoller {
    tx: mpsc::Sender<Vec<u8>>,
    fut: Mutex<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>,
}

impl fmt::Debug for IcePoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IcePoller")
    }
}

impl UdpPoller for IcePoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let slot = this.fut.get_mut().unwrap_or_else(|e| e.into_inner());
        let tx = this.tx.clone();
        let fut = slot.get_or_insert_with(|| {
            Box::pin(async move {
                let _ = tx.reserve().await;
            })
        });
        match fut.as_mut().poll(cx) {
            Poll::Ready(()) => {
                *slot = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// quinn's native socket with STUN datagrams removed (see module docs).
/// `early` holds QUIC packets the ICE agent received before the hand-off;
/// they are delivered first so the peer's first flight is not lost.
#[derive(Debug)]
pub struct StunFilter {
    inner: Arc<dyn AsyncUdpSocket>,
    early: Mutex<std::collections::VecDeque<(Vec<u8>, SocketAddr)>>,
}

impl StunFilter {
    /// Wrap a native quinn socket.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, early: Vec<(Vec<u8>, SocketAddr)>) -> Arc<Self> {
        Arc::new(StunFilter {
            inner,
            early: Mutex::new(early.into()),
        })
    }

    fn pop_early(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> usize {
        let mut q = self.early.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((p, from)) = q.pop_front() else {
                break;
            };
            let len = p.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&p[..len]);
            meta[n] = RecvMeta {
                addr: from,
                len,
                stride: len,
                ..RecvMeta::default()
            };
            n += 1;
        }
        n
    }
}

impl AsyncUdpSocket for StunFilter {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }
    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        self.inner.try_send(t)
    }
    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let n = self.pop_early(bufs, meta);
        if n > 0 {
            return Poll::Ready(Ok(n));
        }
        loop {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let mut any = false;
            for (m, buf) in meta.iter_mut().zip(bufs.iter_mut()).take(n) {
                any |= drop_stun(m, buf) > 0;
            }
            if any {
                return Poll::Ready(Ok(n));
            }
        }
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }
    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }
    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_detection_uses_the_cookie() {
        let mut stun = vec![0u8; 20];
        stun[0] = 0x01;
        stun[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        assert!(is_stun(&stun));
        // a QUIC short header with the fixed bit greased to 0 starts below 0x40:
        // it must not be taken for STUN without the cookie
        let mut quic = vec![0x01u8; 40];
        quic[4..8].copy_from_slice(&[1, 2, 3, 4]);
        assert!(!is_stun(&quic));
        assert!(!is_stun(&stun[..19]));
    }

    #[test]
    fn stun_is_cut_out_of_a_gro_batch() {
        // three datagrams of stride 24, the last one shorter: QUIC, STUN, QUIC
        let mut stun = vec![0u8; 24];
        stun[0] = 0x01;
        stun[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        let mut buf = [vec![0x41u8; 24], stun, vec![0x42u8; 10]].concat();
        let mut m = RecvMeta {
            len: buf.len(),
            stride: 24,
            ..RecvMeta::default()
        };
        assert_eq!(drop_stun(&mut m, &mut buf), 2);
        assert_eq!(m.len, 34);
        assert!(buf[..24].iter().all(|&b| b == 0x41));
        assert!(buf[24..34].iter().all(|&b| b == 0x42));
    }
}
