//! Moving bytes between a local socket and a QUIC stream without copying
//! them in between: what a socket read brings is handed to the QUIC stack
//! (and a replay buffer) as is, and what the stack received is written to
//! the socket from its own buffers, several segments per write.

use std::{io::IoSlice, time::Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::priority::{Class, TURNS};
use crate::transport::{TunnelRecv, TunnelSend};

/// Most received segments taken from a QUIC stream (and written to a
/// socket) at once: about 330 KB of full-sized packets, more than a read
/// of the local socket brings (fewer segments per write cost CPU:
/// docs/benchmarks.md).
pub const SEGMENTS: usize = 256;

/// Received segments of a QUIC stream on their way to a local socket.
#[derive(Debug)]
pub struct Segments {
    bufs: Vec<Bytes>,
    /// `bufs[next..filled]` are still to be written.
    next: usize,
    filled: usize,
}

impl Default for Segments {
    fn default() -> Self {
        Segments {
            bufs: vec![Bytes::new(); SEGMENTS],
            next: 0,
            filled: 0,
        }
    }
}

impl Segments {
    /// Take the next segments off `recv` (waiting for at least one);
    /// `false` at the end of the stream. Cancel safe.
    pub async fn read<R: TunnelRecv>(&mut self, recv: &mut R) -> std::io::Result<bool> {
        debug_assert!(self.is_empty());
        match recv.read_chunks(&mut self.bufs).await? {
            Some(n) => {
                self.next = 0;
                self.filled = n;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Whether everything read has been written.
    pub fn is_empty(&self) -> bool {
        self.next == self.filled
    }

    /// One vectored write of what is left; how many bytes it took. A
    /// dropped future has written nothing more than it reported.
    pub async fn write_some<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> std::io::Result<usize> {
        let mut io = [IoSlice::new(&[]); SEGMENTS];
        let mut m = 0;
        for b in self.bufs[self.next..self.filled]
            .iter()
            .filter(|b| !b.is_empty())
        {
            io[m] = IoSlice::new(b);
            m += 1;
        }
        let mut k = if m == 0 {
            0
        } else {
            match w.write_vectored(&io[..m]).await? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                k => k,
            }
        };
        let wrote = k;
        while self.next < self.filled {
            let b = &mut self.bufs[self.next];
            if k < b.len() {
                b.advance(k);
                break;
            }
            k -= b.len();
            *b = Bytes::new();
            self.next += 1;
        }
        Ok(wrote)
    }
}

/// A stream's local socket on its way into the tunnel: reads without
/// copies ([`ChunkBuf`]), and the stream's priority kept up to date from
/// them ([`Class`]).
#[derive(Debug)]
pub struct ToTunnel {
    buf: ChunkBuf,
    class: Class,
}

impl ToTunnel {
    /// Reads of up to `max` bytes; the stream starts light.
    pub fn new(max: usize) -> Self {
        ToTunnel {
            buf: ChunkBuf::new(max),
            class: Class::new(Instant::now()),
        }
    }

    /// How many bytes the next read may bring, at most `limit` (at least one).
    pub fn room(&mut self, limit: usize) -> usize {
        self.buf.room(limit)
    }

    /// Read at most `limit` bytes from `r` (`Ok(None)` at its end), and
    /// move `send` to its class's priority when the read changed it.
    /// Cancel safe like [`ChunkBuf::read`].
    pub async fn read<R: AsyncRead + Unpin, S: TunnelSend>(
        &mut self,
        r: &mut R,
        limit: usize,
        send: &mut S,
    ) -> std::io::Result<Option<Bytes>> {
        let asked = Instant::now();
        let read = self.buf.read(r, limit).await?;
        if let Some(data) = &read {
            let now = Instant::now();
            if let Some(p) = self.class.sent(data.len(), now, now - asked, &TURNS) {
                send.set_priority(p);
            }
        }
        Ok(read)
    }
}

/// A read buffer whose reads come out as [`Bytes`] that share its memory.
///
/// Reads fill one allocation front to back and each read is split off as
/// its own chunk, so an allocation is freed once every chunk of it has
/// been sent (and acknowledged, where a replay buffer keeps it). A fresh
/// allocation is taken when less than [`Self::MIN_ROOM`] is left, so at
/// most that much of each one goes unused. Its size starts small for
/// interactive and short connections and grows fourfold while reads fill
/// it, up to `max`.
#[derive(Debug)]
pub struct ChunkBuf {
    buf: BytesMut,
    /// Size of the next allocation.
    size: usize,
    max: usize,
}

impl ChunkBuf {
    /// First size of an allocation.
    pub const START: usize = 16 * 1024;
    /// Below this much room left, the next read gets a fresh allocation.
    pub const MIN_ROOM: usize = 4 * 1024;

    /// A buffer whose allocations grow from [`Self::START`] up to `max` bytes.
    pub fn new(max: usize) -> Self {
        let size = Self::START.min(max).max(1);
        ChunkBuf {
            buf: BytesMut::with_capacity(size),
            size,
            max: max.max(1),
        }
    }

    /// How many bytes the next read may bring, at most `limit` (at least one).
    pub fn room(&mut self, limit: usize) -> usize {
        if self.buf.capacity() < Self::MIN_ROOM.min(self.size) {
            self.buf = BytesMut::with_capacity(self.size);
        }
        self.buf.capacity().min(limit.max(1))
    }

    /// Read at most `limit` bytes (call [`Self::room`] first for the
    /// figure); `Ok(None)` at end of stream. Cancel safe: nothing is read
    /// unless the future completes.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        limit: usize,
    ) -> std::io::Result<Option<Bytes>> {
        let offered = self.room(limit);
        let n = r.read_buf(&mut (&mut self.buf).limit(offered)).await?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(self.take(n, offered)))
    }

    /// Split off the `n` bytes just read, out of `offered`; a read that
    /// filled all the room offered makes the next allocation larger.
    fn take(&mut self, n: usize, offered: usize) -> Bytes {
        if n == offered && self.size < self.max {
            self.size = (self.size * 4).min(self.max);
        }
        self.buf.split_to(n).freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_share_one_allocation_until_it_runs_low() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut src: &[u8] = &data;
        let mut b = ChunkBuf::new(256 * 1024);
        let mut out = Vec::new();
        let mut chunks = Vec::new();
        while let Some(c) = b.read(&mut src, 1000).await.unwrap() {
            assert!(c.len() <= 1000);
            out.extend_from_slice(&c);
            chunks.push(c);
        }
        assert_eq!(out, data);
        // consecutive chunks of one allocation are adjacent in memory
        let adjacent = chunks
            .windows(2)
            .filter(|w| w[0].as_ptr() as usize + w[0].len() == w[1].as_ptr() as usize)
            .count();
        assert!(
            adjacent > chunks.len() * 3 / 4,
            "{adjacent} of {}",
            chunks.len()
        );
    }

    #[tokio::test]
    async fn allocations_grow_while_reads_fill_them() {
        let data = vec![7u8; 4 << 20];
        let mut src: &[u8] = &data;
        let mut b = ChunkBuf::new(256 * 1024);
        let first = b.read(&mut src, usize::MAX).await.unwrap().unwrap();
        assert_eq!(first.len(), ChunkBuf::START);
        let mut biggest = 0;
        for _ in 0..10 {
            let c = b.read(&mut src, usize::MAX).await.unwrap().unwrap();
            biggest = biggest.max(c.len());
        }
        assert_eq!(biggest, 256 * 1024);
        assert_eq!(b.room(10), 10);
        assert_eq!(b.room(0), 1);
    }

    #[tokio::test]
    async fn segments_are_written_in_order_across_short_writes() {
        // a pipe with a small buffer makes the vectored writes short
        let (mut w, mut r) = tokio::io::duplex(1000);
        let mut s = Segments::default();
        let parts: Vec<Bytes> = (0..10u8)
            .map(|i| Bytes::from(vec![i; 300 + i as usize]))
            .collect();
        let want: Vec<u8> = parts.iter().flat_map(|b| b.to_vec()).collect();
        s.bufs[..parts.len()].clone_from_slice(&parts);
        s.filled = parts.len();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut total = 0;
        while !s.is_empty() {
            total += s.write_some(&mut w).await.unwrap();
        }
        drop(w);
        assert_eq!(total, want.len());
        assert_eq!(reader.await.unwrap(), want);
    }

    #[tokio::test]
    async fn small_reads_stay_small_and_end_is_none() {
        let mut src: &[u8] = b"hi";
        let mut b = ChunkBuf::new(256 * 1024);
        assert_eq!(
            b.read(&mut src, usize::MAX).await.unwrap().unwrap(),
            &b"hi"[..]
        );
        assert!(b.read(&mut src, usize::MAX).await.unwrap().is_none());
        assert_eq!(b.room(usize::MAX), ChunkBuf::START - 2);
    }
}
