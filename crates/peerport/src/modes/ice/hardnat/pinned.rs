//! quinn on a punched 5-tuple, under the addresses it already knows.
//!
//! A connection that started on a TURN relay knows its peer under the
//! relay's address: [`FAKE_PEER`](super::super::socket::FAKE_PEER) when our own allocation carries it
//! (the relay path hides the real addresses), or the peer's allocation
//! when we send to it straight from a host socket. Moving it to the
//! punched socket with `Endpoint::rebind_abstract` must not look like a
//! migration, which would need path validation and a client that may
//! change its peer's address: so [`Pinned`] sends what quinn addresses
//! to that peer to the punched remote, and hands quinn only datagrams
//! from that remote, as from that peer. STUN datagrams (the punch's late
//! messages) are dropped by the magic cookie, as on direct pairs; a
//! retransmitted nomination is answered first, since the peer's punch
//! waits for that answer (its first may have been lost).

#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::{
    io::{self, IoSliceMut},
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use quinn::{
    udp::{RecvMeta, Transmit},
    AsyncUdpSocket, Runtime, UdpPoller,
};

use super::{
    super::socket::drop_stun_with,
    wire::{self, Keys, Role},
};

/// How many datagrams one read of a native socket returns at most (GRO),
/// as quinn sizes its buffers for it: an endpoint that may move onto a
/// punched socket must be created with buffers this large.
pub fn gro_segments() -> usize {
    static N: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| quinn::udp::UdpSocketState::new((&s).into()))
            .map_or(1, |state| state.gro_segments())
    });
    *N
}

/// A punched socket as quinn's socket (see the module docs).
#[derive(Debug)]
pub struct Pinned {
    inner: Arc<dyn AsyncUdpSocket>,
    remote: SocketAddr,
    /// The peer's address as quinn knows it.
    seen_as: SocketAddr,
    /// Datagrams handed to quinn (tests only: nothing extra per packet
    /// in a build that ships).
    #[cfg(test)]
    received: AtomicU64,
    /// Answers the peer's punch requests on this 5-tuple.
    answer: Option<(Keys, Role)>,
}

impl Pinned {
    /// quinn's native socket (GSO/GRO) on `socket`, pinned to `remote`,
    /// which quinn knows as `seen_as`.
    pub fn new(
        socket: std::net::UdpSocket,
        remote: SocketAddr,
        seen_as: SocketAddr,
    ) -> io::Result<Arc<Pinned>> {
        Self::answering(socket, remote, seen_as, None)
    }

    /// [`Pinned::new`], answering the peer's punch requests (`keys`,
    /// as `role`).
    pub fn answering(
        socket: std::net::UdpSocket,
        remote: SocketAddr,
        seen_as: SocketAddr,
        answer: Option<(Keys, Role)>,
    ) -> io::Result<Arc<Pinned>> {
        socket.set_nonblocking(true)?;
        Ok(Arc::new(Pinned {
            inner: quinn::TokioRuntime.wrap_udp_socket(socket)?,
            remote,
            seen_as,
            #[cfg(test)]
            received: AtomicU64::new(0),
            answer,
        }))
    }

    /// Answer a valid punch request from the peer (best effort).
    fn answer(&self, stun: &[u8]) {
        let Some((keys, role)) = &self.answer else {
            return;
        };
        if let Ok(req) = wire::parse_request(keys, stun) {
            let bytes = wire::response(keys, &req, self.remote, *role);
            let _ = self.inner.try_send(&Transmit {
                destination: self.remote,
                ecn: None,
                contents: &bytes,
                segment_size: None,
                src_ip: None,
            });
        }
    }

    /// Datagrams handed to quinn so far.
    #[cfg(test)]
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl AsyncUdpSocket for Pinned {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        if t.destination != self.seen_as {
            // quinn only knows the one peer; anything else has no route here
            return Ok(());
        }
        self.inner.try_send(&Transmit {
            destination: self.remote,
            ecn: t.ecn,
            contents: t.contents,
            segment_size: t.segment_size,
            src_ip: None,
        })
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let mut any = false;
            for (m, buf) in meta.iter_mut().zip(bufs.iter_mut()).take(n) {
                if m.addr != self.remote {
                    // a stranger, or a late probe from another of the peer's ports
                    m.len = 0;
                    continue;
                }
                m.addr = self.seen_as;
                m.dst_ip = None;
                let kept = drop_stun_with(m, buf, |stun| self.answer(stun));
                #[cfg(test)]
                self.received.fetch_add(kept as u64, Ordering::Relaxed);
                any |= kept > 0;
            }
            if any {
                return Poll::Ready(Ok(n));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        // the real one: a connection watching its local address for
        // renumbering watches this socket's
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
    use std::time::Duration;

    use super::*;
    use crate::modes::ice::socket::FAKE_PEER;
    use crate::transport::{
        quinn::{client_config, server_config, Identity, SERVER_NAME},
        QuicSettings,
    };

    fn pair() -> (
        std::net::UdpSocket,
        std::net::UdpSocket,
        SocketAddr,
        SocketAddr,
    ) {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // the buffers the path's sockets get
        let _ = crate::net::tune_udp(&a);
        let _ = crate::net::tune_udp(&b);
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        (a, b, aa, ba)
    }

    /// Stands for the relay's socket: one datagram per send and per
    /// read, quinn's buffers sized for `segments` datagrams per read.
    #[derive(Debug)]
    struct RelayLike {
        inner: Arc<Pinned>,
        segments: usize,
    }

    impl AsyncUdpSocket for RelayLike {
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
            self.inner.poll_recv(cx, bufs, meta)
        }
        fn local_addr(&self) -> io::Result<SocketAddr> {
            self.inner.local_addr()
        }
        fn max_transmit_segments(&self) -> usize {
            1
        }
        fn max_receive_segments(&self) -> usize {
            self.segments
        }
    }

    /// A connection that started on one 5-tuple (under the fake
    /// addresses, through a socket that reads a datagram at a time, as
    /// on a relay) moves to another in the middle of an 8 MiB transfer,
    /// both ends rebinding; every byte arrives in order, the rest of it
    /// came over the new 5-tuple, and GRO batches there were not cut
    /// down to quinn's buffers (a second transfer on it loses nearly
    /// nothing).
    #[tokio::test]
    async fn a_stream_survives_the_move_to_a_punched_tuple() {
        let quic = QuicSettings::default();
        let (ka, kb) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let runtime = Arc::new(quinn::TokioRuntime);
        let (a1, b1, a1_addr, b1_addr) = pair();
        let relay_like = |s, to| {
            Arc::new(RelayLike {
                inner: Pinned::new(s, to, FAKE_PEER).unwrap(),
                segments: gro_segments(),
            })
        };
        let client = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            relay_like(a1, b1_addr),
            runtime.clone(),
        )
        .unwrap();
        let server = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server_config(&kb, ka.fingerprint(), &quic).unwrap()),
            relay_like(b1, a1_addr),
            runtime,
        )
        .unwrap();
        let cfg = client_config(&ka, kb.fingerprint(), &quic).unwrap();
        let connecting = client.connect_with(cfg, FAKE_PEER, SERVER_NAME).unwrap();
        let (cc, sc) = tokio::join!(connecting, async {
            server.accept().await.expect("incoming").await
        });
        let (cc, sc) = (cc.unwrap(), sc.unwrap());

        let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
        let (mut send, _keep) = cc.open_bi().await.unwrap();
        let out = data.clone();
        let writer = tokio::spawn(async move {
            send.write_all(&out).await.unwrap();
            send.finish().unwrap();
            let _ = send.stopped().await;
        });
        let (_keep2, mut recv) = sc.accept_bi().await.unwrap();
        let mut got = vec![0u8; 2 << 20];
        recv.read_exact(&mut got).await.unwrap();

        let (a2, b2, a2_addr, b2_addr) = pair();
        let (pa, pb) = (
            Pinned::new(a2, b2_addr, FAKE_PEER).unwrap(),
            Pinned::new(b2, a2_addr, FAKE_PEER).unwrap(),
        );
        client.rebind_abstract(pa.clone()).unwrap();
        server.rebind_abstract(pb.clone()).unwrap();

        let rest = tokio::time::timeout(Duration::from_secs(30), recv.read_to_end(16 << 20))
            .await
            .expect("the rest arrives")
            .unwrap();
        got.extend_from_slice(&rest);
        writer.await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes differ after the move");
        assert!(
            pa.received() > 0 && pb.received() > 0,
            "the new 5-tuple carried it"
        );
        // After the move, the new 5-tuple alone: a second transfer loses
        // (nearly) nothing. (What was queued on the old sockets when quinn
        // dropped them is lost at the move itself, more or less depending
        // on scheduling: not counted.) GRO batches cut to quinn's buffers
        // would lose most of it.
        let before = cc.stats().path;
        let (mut send, _keep3) = cc.open_bi().await.unwrap();
        let more = data.clone();
        let writer = tokio::spawn(async move {
            send.write_all(&more).await.unwrap();
            send.finish().unwrap();
            let _ = send.stopped().await;
        });
        let (_keep4, mut recv) = sc.accept_bi().await.unwrap();
        let again = tokio::time::timeout(Duration::from_secs(30), recv.read_to_end(16 << 20))
            .await
            .expect("the second transfer arrives")
            .unwrap();
        writer.await.unwrap();
        assert!(again == data, "bytes differ on the new 5-tuple");
        let after = cc.stats().path;
        let (lost, sent) = (
            after.lost_packets - before.lost_packets,
            after.sent_packets - before.sent_packets,
        );
        assert!(
            lost * 20 < sent,
            "{lost} of {sent} packets lost after the move"
        );
        cc.close(0u32.into(), b"done");
        client.wait_idle().await;
    }
}
