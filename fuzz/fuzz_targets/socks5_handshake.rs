//! The receiver's SOCKS5 front: a local client's greeting and CONNECT
//! request (the `socks5-proto` wire format, then peerport's own checks on
//! the destination), from a stream that gives the input's bytes and
//! takes the replies. Any bytes give a destination or a reason, never a
//! panic; a destination is a real port and an IP address or a DNS name.
#![no_main]

mod common;

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use common::block_on;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A client that sends `input` (then end of stream) and swallows replies.
struct Client<'a> {
    input: &'a [u8],
    replies: Vec<u8>,
}

impl AsyncRead for Client<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.input.len().min(buf.remaining());
        buf.put_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Client<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.replies.extend_from_slice(b);
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut client = Client {
        input: data,
        replies: Vec::new(),
    };
    if let Ok((host, port)) = block_on(peerport::engine::socks::negotiate(&mut client)) {
        assert!(port > 0);
        let dns = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c));
        assert!(dns || host.parse::<std::net::IpAddr>().is_ok(), "{host:?}");
        // the greeting was answered with "no authentication"
        assert_eq!(client.replies[..2], [5, 0]);
    }
});
