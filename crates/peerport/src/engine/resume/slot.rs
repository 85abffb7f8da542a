//! A stream's slot (its replay buffer and delivered count) and the acks
//! waiting to be sent.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{proto::resume::ReplayBuf, transport::TunnelConnection};

/// A new QUIC stream pair for a slot.
pub enum Attach<C: TunnelConnection> {
    /// A stream just set up (no exchange, nothing to replay).
    Fresh {
        /// The connection it belongs to.
        conn: C,
        /// Towards the peer.
        send: C::Send,
        /// From the peer.
        recv: C::Recv,
    },
    /// Receiver: open a resume stream on this (new) connection.
    Dial(C),
    /// Sender: the receiver opened a resume stream and said how much it delivered.
    Accepted {
        /// The connection it belongs to.
        conn: C,
        /// Towards the peer.
        send: C::Send,
        /// From the peer.
        recv: C::Recv,
        /// The receiver's delivered count and whether it delivered our FIN.
        peer: (u64, bool),
    },
}

/// One resumable TCP stream's shared state.
pub struct Slot<C: TunnelConnection> {
    pub(super) id: u64,
    pub(super) out: Mutex<ReplayBuf>,
    /// We read EOF from the local socket (our FIN is due).
    pub(super) out_fin: AtomicBool,
    /// The peer delivered our FIN.
    pub(super) peer_fin: AtomicBool,
    /// Bytes from the peer written to the local socket.
    pub(super) delivered: AtomicU64,
    /// The peer's FIN was delivered (local write side shut down).
    pub(super) in_fin: AtomicBool,
    pub(super) changed: Notify,
    pub(super) attach: mpsc::Sender<Attach<C>>,
    pub(super) budget: Arc<Semaphore>,
    /// The generation of the connection it last moved to.
    pub(super) attached_gen: AtomicU64,
    /// Closed by the sender when a resumed session did not claim it.
    pub(super) abandon: CancellationToken,
}

impl<C: TunnelConnection> Drop for Slot<C> {
    fn drop(&mut self) {
        let kept = self.out.lock().map(|o| o.unacked()).unwrap_or(0);
        self.budget.add_permits(kept);
    }
}

impl<C: TunnelConnection> Slot<C> {
    pub(super) fn complete(&self) -> bool {
        self.out_fin.load(Ordering::SeqCst)
            && self.in_fin.load(Ordering::SeqCst)
            && self.peer_fin.load(Ordering::SeqCst)
            && self.all_acked()
    }

    /// The peer has confirmed every byte we sent.
    pub(super) fn all_acked(&self) -> bool {
        self.out.lock().map(|o| o.unacked() == 0).unwrap_or(true)
    }

    /// Wait until `cond` holds (re-checked after every ack).
    pub(super) async fn wait_for(&self, cond: impl Fn(&Self) -> bool) {
        loop {
            let n = self.changed.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if cond(self) {
                return;
            }
            n.await;
        }
    }

    /// Wait until the replay buffer has room, and say how much (one lock
    /// per check).
    pub(super) async fn wait_room(&self) -> usize {
        loop {
            let n = self.changed.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            let room = self.room();
            if room > 0 {
                return room;
            }
            n.await;
        }
    }

    pub(super) fn room(&self) -> usize {
        self.out.lock().map(|o| o.room()).unwrap_or(0)
    }

    pub(super) fn delivered(&self) -> (u64, bool) {
        (
            self.delivered.load(Ordering::SeqCst),
            self.in_fin.load(Ordering::SeqCst),
        )
    }
}

/// Delivered count (and FIN) per stream id.
pub(super) type Delivered = HashMap<u64, (u64, bool)>;

/// Acks waiting to be written, newest per stream.
#[derive(Default)]
pub(super) struct AckQueue {
    /// (generation of the connection that may write them, pending acks)
    pub(super) pending: Mutex<(u64, Delivered)>,
    /// An ack that must go out now (a FIN, or a full share of the buffer).
    pub(super) notify: Notify,
    /// An ack that may wait up to [`ACK_DELAY`] (batched with others).
    pub(super) lazy: Notify,
}
