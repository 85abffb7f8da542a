//! A resumable session: its slots, tickets, the connection it runs on now,
//! and the control loop on the hello stream (acks both ways).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::warn;

use super::ResumeConfig;
use super::{
    slot::{AckQueue, Attach, Slot},
    ACK_DELAY, MAX_STREAMS,
};
use crate::{
    proto::resume::{Ack, Ticket, ACK_LEN},
    transport::TunnelConnection,
};

/// A resumable session: its ticket and its streams, across connections.
pub struct Session<C: TunnelConnection> {
    pub(super) ticket: Mutex<Ticket>,
    pub(super) slots: Mutex<HashMap<u64, Arc<Slot<C>>>>,
    pub(super) next_id: AtomicU64,
    pub(super) acks: AckQueue,
    pub(super) budget: Arc<Semaphore>,
    pub(super) cfg: ResumeConfig,
    pub(super) tasks: TaskTracker,
    pub(super) cancel: CancellationToken,
    pub(super) generation: AtomicU64,
    /// Cancelled when a newer connection takes over the current one's place
    /// (see [`TunnelConnection::superseded`]).
    pub(super) superseded: Mutex<Option<CancellationToken>>,
    /// The sender's UDP flows, when the session forwards UDP.
    pub(super) udp: std::sync::OnceLock<Arc<crate::engine::udp::SenderFlows<C>>>,
    pub(super) tally: Arc<crate::engine::tally::Tally>,
}

impl<C: TunnelConnection> Session<C> {
    /// A session under `ticket`, counted in `tally`; its streams stop when
    /// `cancel` fires.
    pub fn new(
        ticket: Ticket,
        cfg: ResumeConfig,
        cancel: CancellationToken,
        tally: Arc<crate::engine::tally::Tally>,
    ) -> Arc<Self> {
        Arc::new(Session {
            ticket: Mutex::new(ticket),
            slots: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            acks: AckQueue::default(),
            budget: Arc::new(Semaphore::new(cfg.session_buffer)),
            cfg,
            tasks: TaskTracker::new(),
            cancel,
            generation: AtomicU64::new(0),
            superseded: Mutex::new(None),
            udp: std::sync::OnceLock::new(),
            tally,
        })
    }

    /// What the session counts (it outlives each connection, and so does this).
    pub fn tally(&self) -> &Arc<crate::engine::tally::Tally> {
        &self.tally
    }

    /// The sender's UDP flows of this session (kept across its connections).
    pub fn udp_flows(&self) -> Arc<crate::engine::udp::SenderFlows<C>> {
        self.udp
            .get_or_init(|| {
                crate::engine::udp::SenderFlows::new(
                    self.cancel.child_token(),
                    self.tally.udp.clone(),
                )
            })
            .clone()
    }

    /// Whether a lost connection leaves anything to resume: open or parked
    /// TCP streams, or UDP flows.
    pub fn holds_anything(&self) -> bool {
        self.streams() > 0 || self.udp.get().is_some_and(|u| !u.is_empty())
    }

    /// The current ticket.
    pub fn ticket(&self) -> Ticket {
        self.ticket.lock().expect("ticket").clone()
    }

    /// Replace the ticket (a resumed session gets a new secret each time).
    pub fn set_ticket(&self, t: Ticket) {
        *self.ticket.lock().expect("ticket") = t;
    }

    /// Streams still held (open or parked).
    pub fn streams(&self) -> usize {
        self.slots.lock().expect("slots").len()
    }

    /// The id for the next stream the receiver opens.
    pub fn next_stream_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// How long parked streams wait.
    pub fn window(&self) -> Duration {
        self.cfg.window
    }

    /// Stop every stream (closing its local socket) and wait for them.
    pub async fn close(&self) {
        self.cancel.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
        if let Some(u) = self.udp.get() {
            u.close().await;
        }
    }

    /// A new connection serves this session from now on: returns its
    /// generation, which its control tasks carry. The connection it
    /// replaces is told it is superseded.
    pub fn attach_connection(&self, conn: &C) -> u64 {
        let old = self
            .superseded
            .lock()
            .expect("superseded")
            .replace(conn.superseded());
        if let Some(old) = old {
            old.cancel();
        }
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.acks.pending.lock().expect("acks").0 = g;
        self.acks.notify.notify_waiters();
        g
    }

    /// Whether connection generation `g` is still the current one.
    pub fn is_current(&self, g: u64) -> bool {
        self.generation.load(Ordering::SeqCst) == g
    }

    /// Receiver: have every parked stream resume over `conn`.
    pub fn resume_all(&self, conn: &C) -> usize {
        let slots: Vec<_> = self
            .slots
            .lock()
            .expect("slots")
            .values()
            .cloned()
            .collect();
        for s in &slots {
            let _ = s.attach.try_send(Attach::Dial(conn.clone()));
        }
        slots.len()
    }

    /// Sender: hand a resume stream to its slot; given back if the stream
    /// is unknown (or already being resumed).
    pub fn resume_one(&self, id: u64, a: Attach<C>) -> Result<(), Attach<C>> {
        let slot = self.slots.lock().expect("slots").get(&id).cloned();
        match slot {
            Some(s) => s.attach.try_send(a).map_err(|e| e.into_inner()),
            None => Err(a),
        }
    }

    /// Sender: after a resume on connection `g`, close the streams that
    /// have not moved to it once `grace` has passed: the receiver claims
    /// every stream it holds at once, so these are ones it never saw set up
    /// (their reply was lost with the old connection).
    pub fn abandon_unclaimed(self: &Arc<Self>, g: u64, grace: Duration) {
        let me = self.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = me.cancel.cancelled() => {}
                _ = tokio::time::sleep(grace) => {
                    let slots: Vec<_> = me.slots.lock().expect("slots").values().cloned().collect();
                    for s in slots {
                        if s.attached_gen.load(Ordering::SeqCst) < g {
                            s.abandon.cancel();
                        }
                    }
                }
            }
        });
    }

    /// Sender: whether the receiver may open stream `id` now.
    pub fn check_new_stream(&self, id: u64) -> Result<(), String> {
        let slots = self.slots.lock().expect("slots");
        if slots.contains_key(&id) {
            return Err(format!("stream id {id} is in use"));
        }
        if slots.len() >= MAX_STREAMS {
            return Err(format!(
                "this session holds {MAX_STREAMS} connections already (open or waiting to resume)"
            ));
        }
        Ok(())
    }

    /// Queue an ack of stream `id`; `urgent` sends it at once, otherwise
    /// within [`ACK_DELAY`].
    pub(super) fn note_ack(&self, id: u64, delivered: (u64, bool), urgent: bool) {
        self.acks
            .pending
            .lock()
            .expect("acks")
            .1
            .insert(id, delivered);
        if urgent {
            self.acks.notify.notify_one();
        } else {
            self.acks.lazy.notify_one();
        }
    }

    pub(super) fn on_ack(&self, a: Ack) {
        let Some(slot) = self.slots.lock().expect("slots").get(&a.stream).cloned() else {
            return;
        };
        let freed = slot.out.lock().map(|mut o| o.ack(a.delivered));
        match freed {
            Ok(Ok(n)) => self.budget.add_permits(n),
            Ok(Err(e)) => warn!(stream = a.stream, "ignoring a bad acknowledgement: {e}"),
            Err(_) => {}
        }
        if a.fin {
            slot.peer_fin.store(true, Ordering::SeqCst);
        }
        slot.changed.notify_waiters();
    }
}

/// Run `main` (a connection's forwarding) with the session's
/// acknowledgements on that connection's hello stream beside it.
pub async fn with_control<C: TunnelConnection, T>(
    session: Arc<Session<C>>,
    generation: u64,
    hello: (C::Send, C::Recv),
    main: impl std::future::Future<Output = T>,
) -> T {
    let control = run_control(session, generation, hello.0, hello.1);
    tokio::select! {
        r = main => r,
        // the control side ends with the connection; `main` says how
        _ = async { control.await; std::future::pending::<()>().await } => unreachable!(),
    }
}

/// The acknowledgement side of a session on one connection's hello
/// stream: write our acks, apply the peer's. Ends when the connection
/// does or a newer connection took over.
pub(super) async fn run_control<C: TunnelConnection>(
    session: Arc<Session<C>>,
    generation: u64,
    mut send: C::Send,
    mut recv: C::Recv,
) {
    crate::transport::TunnelSend::set_priority(&mut send, crate::engine::priority::CONTROL);
    let writer = async {
        loop {
            // an urgent ack goes at once; a lazy one after ACK_DELAY, with
            // whatever else came meanwhile (and now and then anyway)
            tokio::select! {
                _ = session.acks.notify.notified() => {}
                _ = async {
                    session.acks.lazy.notified().await;
                    tokio::select! {
                        _ = session.acks.notify.notified() => {}
                        _ = tokio::time::sleep(ACK_DELAY) => {}
                    }
                } => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let batch: Vec<(u64, (u64, bool))> = {
                let mut p = session.acks.pending.lock().expect("acks");
                if p.0 != generation {
                    // a newer connection writes the acks: pass the wakeup on
                    session.acks.notify.notify_one();
                    return;
                }
                p.1.drain().collect()
            };
            if batch.is_empty() {
                continue;
            }
            let mut buf = Vec::with_capacity(batch.len() * ACK_LEN);
            for (stream, (delivered, fin)) in batch {
                buf.extend_from_slice(
                    &Ack {
                        stream,
                        delivered,
                        fin,
                    }
                    .encode(),
                );
            }
            if send.write_all(&buf).await.is_err() {
                return;
            }
        }
    };
    let reader = async {
        let mut frame = [0u8; ACK_LEN];
        loop {
            if recv.read_exact(&mut frame).await.is_err() {
                return;
            }
            match Ack::decode(&frame) {
                Ok(a) => session.on_ack(a),
                Err(e) => {
                    warn!("the peer sent a malformed acknowledgement ({e}): ignoring the rest");
                    return;
                }
            }
        }
    };
    tokio::join!(writer, reader);
}
