//! The HTTP side ports (`--metrics`, `--dashboard`) must never cost the
//! tunnel its descriptors: anyone who can reach them may connect before
//! any token is checked. [`Guarded`] caps the connections (in all and per
//! client address; beyond, a connection is closed at once) and closes a
//! connection that has not been answered within [`FIRST_ANSWER`] of its
//! start (a request head sent slowly or never) or that moved no byte for
//! [`IDLE`] (server-sent events write every second, so a watching page
//! is never idle).

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::{Instant, Sleep},
};
use tracing::debug;

/// Most connections open at once on one side port.
pub const MAX_CONNECTIONS: usize = 64;
/// Most connections open at once from one client address.
pub const MAX_PER_CLIENT: usize = 16;
/// A connection must have its first answer within this (header-read timeout).
pub const FIRST_ANSWER: Duration = Duration::from_secs(10);
/// A connection that moves no byte for this long is closed.
pub const IDLE: Duration = Duration::from_secs(60);

/// A listener that admits at most [`MAX_CONNECTIONS`] (and
/// [`MAX_PER_CLIENT`] per address) connections, each [`GuardedIo`].
pub struct Guarded {
    listener: TcpListener,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

impl Guarded {
    /// Guard `listener`.
    pub fn new(listener: TcpListener) -> Self {
        Guarded {
            listener,
            open: Arc::default(),
        }
    }

    /// Count a connection from `ip` in, if there is room.
    fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().expect("open");
        let from = open.by_client.get(&ip).copied().unwrap_or(0);
        if open.total >= MAX_CONNECTIONS || from >= MAX_PER_CLIENT {
            return None;
        }
        open.total += 1;
        *open.by_client.entry(ip).or_default() += 1;
        Some(Slot {
            open: self.open.clone(),
            ip,
        })
    }
}

/// One admitted connection's place in the count, given back on drop.
struct Slot {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("open");
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_client.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.ip);
            }
        }
    }
}

impl axum::serve::Listener for Guarded {
    type Io = GuardedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GuardedIo, SocketAddr) {
        loop {
            let (stream, addr) = axum::serve::Listener::accept(&mut self.listener).await;
            match self.admit(addr.ip()) {
                Some(slot) => return (GuardedIo::new(stream, slot), addr),
                // closed at once: it holds no descriptor
                None => debug!(client = %addr, "side port full: connection closed"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An admitted connection with its deadlines.
pub struct GuardedIo {
    inner: TcpStream,
    _slot: Slot,
    /// Until the first byte written: the first answer's deadline; then
    /// the idle deadline, pushed on by every byte moved.
    deadline: Pin<Box<Sleep>>,
    answered: bool,
}

impl GuardedIo {
    fn new(inner: TcpStream, slot: Slot) -> Self {
        GuardedIo {
            inner,
            _slot: slot,
            deadline: Box::pin(tokio::time::sleep(FIRST_ANSWER)),
            answered: false,
        }
    }

    /// Bytes moved: the idle clock starts again (once answered).
    fn moved(&mut self) {
        if self.answered {
            self.deadline.as_mut().reset(Instant::now() + IDLE);
        }
    }

    /// After a write: bytes written answer the client and move the idle
    /// clock; a write that waits fails once the deadline passed.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.answered = true;
                    self.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => match self.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            other => other,
        }
    }

    /// An error once the deadline passed (the waker is registered otherwise).
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.deadline.as_mut().poll(cx).is_ready().then(|| {
            let why = if self.answered {
                "idle side-port connection"
            } else {
                "no request in time"
            };
            io::Error::new(io::ErrorKind::TimedOut, why)
        })
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        self.wrote(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admits_up_to_the_caps_and_counts_back() {
        let g = Guarded::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mut slots: Vec<Slot> = (0..MAX_PER_CLIENT).map(|_| g.admit(a).unwrap()).collect();
        assert!(g.admit(a).is_none(), "per-client cap");
        let others: Vec<Slot> = (0..MAX_CONNECTIONS - MAX_PER_CLIENT)
            .map(|i| g.admit(IpAddr::from([198, 51, 100, i as u8])).unwrap())
            .collect();
        assert!(
            g.admit("203.0.113.9".parse().unwrap()).is_none(),
            "total cap"
        );
        slots.pop();
        assert!(g.admit(a).is_some(), "a closed connection makes room");
        drop(others);
        assert_eq!(g.open.lock().unwrap().by_client.len(), 1);
    }
}
