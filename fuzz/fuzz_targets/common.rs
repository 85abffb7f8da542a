//! What the targets share: running a future that never waits, and reading
//! structured values off the fuzzer's bytes.
#![allow(dead_code)]

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

/// Run `f` to completion; it must never wait (readers over in-memory bytes).
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory read waited"),
    }
}

/// The fuzzer's bytes read front to back; reads past the end give zeros
/// (and `more()` turns false), so every input is a valid program.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn more(&self) -> bool {
        !self.0.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) << 32 | self.u32() as u64
    }
    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(usize::MAX)
    }
}

/// What a reader of pasted blobs expects: `kind` of `mode`, any session,
/// made up to 900 s before a fixed now.
pub fn expect_blob(
    kind: peerport_signaling::blob::Kind,
    mode: peerport_signaling::Mode,
) -> peerport_signaling::blob::Expect {
    peerport_signaling::blob::Expect {
        kind,
        mode,
        session: None,
        now: 1_700_000_000,
        max_age: 900,
    }
}
