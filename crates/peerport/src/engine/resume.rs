//! Resumable TCP streams: a TCP connection outlives the QUIC connection
//! that carried it.
//!
//! A receiver that asks for it gets a resumable *session* from the sender
//! (a [`Ticket`]: id and secret, handed out inside the encrypted hello
//! reply). Each TCP stream of that session has an id and a [`Slot`]: its
//! [`ReplayBuf`] of bytes the peer has not yet confirmed, and the count of
//! bytes delivered to the local socket. Both sides confirm what they
//! delivered with [`Ack`] frames on the hello stream.
//!
//! When the QUIC connection is lost, every stream task parks with its local
//! socket open (reading nothing from it meanwhile) for the resume window.
//! The receiver reconnects and presents the ticket; the sender checks the
//! secret (constant time; a wrong or stale one is refused and logged, and
//! the receiver gets a fresh session instead), and for each parked stream
//! the receiver opens a resume stream: both sides say how much they
//! delivered, replay the rest from their buffers and carry on. The local
//! sockets never notice. A stream the sender no longer has (it restarted,
//! or the window passed) is closed with a log line saying why.
//!
//! Stream tasks belong to the session (not to one connection), so they
//! live through reconnects; the session's token stops them all.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpStream,
    },
    sync::{mpsc, Notify, Semaphore},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, warn, Instrument};

pub use super::config::ResumeConfig;
use super::{
    io::open_bi_retry,
    io::{read_reply, Scratch},
};
use crate::proto::close::close_code;
use crate::{
    proto::{
        header::{Reply, Request, Status},
        resume::{Ack, ReplayBuf, ReplyExt, Ticket, ACK_LEN},
    },
    transport::{CloseReason, TunnelConnection, TunnelRecv, TunnelSend},
};

/// Largest read from a local socket.
const READ_CHUNK: usize = 256 * 1024;

/// How long a delivery may wait before it is acknowledged: acks of small
/// writes (interactive traffic) go out in batches, not one packet each.
const ACK_DELAY: Duration = Duration::from_millis(50);

/// Most streams one session holds, open or parked.
pub const MAX_STREAMS: usize = 8192;

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
    id: u64,
    out: Mutex<ReplayBuf>,
    /// We read EOF from the local socket (our FIN is due).
    out_fin: AtomicBool,
    /// The peer delivered our FIN.
    peer_fin: AtomicBool,
    /// Bytes from the peer written to the local socket.
    delivered: AtomicU64,
    /// The peer's FIN was delivered (local write side shut down).
    in_fin: AtomicBool,
    changed: Notify,
    attach: mpsc::Sender<Attach<C>>,
    budget: Arc<Semaphore>,
    /// The generation of the connection it last moved to.
    attached_gen: AtomicU64,
    /// Closed by the sender when a resumed session did not claim it.
    abandon: CancellationToken,
}

impl<C: TunnelConnection> Drop for Slot<C> {
    fn drop(&mut self) {
        let kept = self.out.lock().map(|o| o.unacked()).unwrap_or(0);
        self.budget.add_permits(kept);
    }
}

impl<C: TunnelConnection> Slot<C> {
    fn complete(&self) -> bool {
        self.out_fin.load(Ordering::SeqCst)
            && self.in_fin.load(Ordering::SeqCst)
            && self.peer_fin.load(Ordering::SeqCst)
            && self.out.lock().map(|o| o.unacked() == 0).unwrap_or(true)
    }

    /// Wait until `cond` holds (re-checked after every ack).
    async fn wait_for(&self, cond: impl Fn(&Self) -> bool) {
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

    fn room(&self) -> usize {
        self.out.lock().map(|o| o.room()).unwrap_or(0)
    }

    fn delivered(&self) -> (u64, bool) {
        (
            self.delivered.load(Ordering::SeqCst),
            self.in_fin.load(Ordering::SeqCst),
        )
    }
}

/// Delivered count (and FIN) per stream id.
type Delivered = HashMap<u64, (u64, bool)>;

/// Acks waiting to be written, newest per stream.
#[derive(Default)]
struct AckQueue {
    /// (generation of the connection that may write them, pending acks)
    pending: Mutex<(u64, Delivered)>,
    /// An ack that must go out now (a FIN, or a full share of the buffer).
    notify: Notify,
    /// An ack that may wait up to [`ACK_DELAY`] (batched with others).
    lazy: Notify,
}

/// A resumable session: its ticket and its streams, across connections.
pub struct Session<C: TunnelConnection> {
    ticket: Mutex<Ticket>,
    slots: Mutex<HashMap<u64, Arc<Slot<C>>>>,
    next_id: AtomicU64,
    acks: AckQueue,
    budget: Arc<Semaphore>,
    cfg: ResumeConfig,
    tasks: TaskTracker,
    cancel: CancellationToken,
    generation: AtomicU64,
    /// Cancelled when a newer connection takes over the current one's place
    /// (see [`TunnelConnection::superseded`]).
    superseded: Mutex<Option<CancellationToken>>,
    /// The sender's UDP flows, when the session forwards UDP.
    udp: std::sync::OnceLock<Arc<super::udp::SenderFlows<C>>>,
    tally: Arc<super::tally::Tally>,
}

impl<C: TunnelConnection> Session<C> {
    /// A session under `ticket`, counted in `tally`; its streams stop when
    /// `cancel` fires.
    pub fn new(
        ticket: Ticket,
        cfg: ResumeConfig,
        cancel: CancellationToken,
        tally: Arc<super::tally::Tally>,
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
    pub fn tally(&self) -> &Arc<super::tally::Tally> {
        &self.tally
    }

    /// The sender's UDP flows of this session (kept across its connections).
    pub fn udp_flows(&self) -> Arc<super::udp::SenderFlows<C>> {
        self.udp
            .get_or_init(|| {
                super::udp::SenderFlows::new(self.cancel.child_token(), self.tally.udp.clone())
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
    fn note_ack(&self, id: u64, delivered: (u64, bool), urgent: bool) {
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

    fn on_ack(&self, a: Ack) {
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

    /// Carry a set-up TCP connection as resumable stream `id`; the task
    /// belongs to the session and outlives the connection.
    pub fn spawn_stream(
        self: &Arc<Self>,
        id: u64,
        tcp: TcpStream,
        sent: Bytes,
        first: Attach<C>,
        open: super::tally::StreamGuard,
    ) {
        let (tx, rx) = mpsc::channel(4);
        let mut out = ReplayBuf::new(self.cfg.stream_buffer.max(READ_CHUNK));
        let n = sent.len();
        out.push(sent);
        let slot = Arc::new(Slot {
            id,
            out: Mutex::new(out),
            out_fin: AtomicBool::new(false),
            peer_fin: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            in_fin: AtomicBool::new(false),
            changed: Notify::new(),
            attach: tx,
            budget: self.budget.clone(),
            attached_gen: AtomicU64::new(0),
            abandon: self.cancel.child_token(),
        });
        // bytes sent before the stream was set up count against the budget
        // (without waiting: they are already on their way)
        self.budget.forget_permits(n);
        self.slots.lock().expect("slots").insert(id, slot.clone());
        let me = self.clone();
        let span = tracing::info_span!("resumable", stream = id);
        self.tasks.spawn(
            async move {
                run_stream(&me, &slot, tcp, first, rx).await;
                me.slots.lock().expect("slots").remove(&id);
                drop(open);
            }
            .instrument(span),
        );
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
async fn run_control<C: TunnelConnection>(
    session: Arc<Session<C>>,
    generation: u64,
    mut send: C::Send,
    mut recv: C::Recv,
) {
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

/// How one attachment of a stream ended.
enum End<C: TunnelConnection> {
    /// Both directions done and confirmed.
    Complete,
    /// The connection went away: park and wait for the next.
    Lost,
    /// A newer connection took over.
    Replaced(Attach<C>),
    /// The stream cannot go on (local socket failed, peer reset it, or the
    /// peer no longer has it).
    Fatal(String),
    /// The peer ended the session on purpose.
    Closed(String),
    /// The session is stopping.
    Shutdown,
}

/// Errors of one direction.
enum DirError {
    /// The local socket failed.
    Local(std::io::Error),
    /// The QUIC stream failed (connection lost, or reset by the peer).
    Tunnel(std::io::Error),
}

async fn run_stream<C: TunnelConnection>(
    session: &Session<C>,
    slot: &Slot<C>,
    tcp: TcpStream,
    first: Attach<C>,
    mut rx: mpsc::Receiver<Attach<C>>,
) {
    let _ = tcp.set_nodelay(true);
    let (mut tcp_r, mut tcp_w) = tcp.into_split();
    let mut next = Some(first);
    let mut lost_since: Option<tokio::time::Instant> = None;
    loop {
        let attach = match next.take() {
            Some(a) => a,
            None => {
                let since = *lost_since.get_or_insert_with(tokio::time::Instant::now);
                let until = since + session.cfg.window;
                tokio::select! {
                    _ = session.cancel.cancelled() => return,
                    _ = slot.abandon.cancelled() => {
                        info!("the receiver resumed the session without this connection (it never saw it set up): closing it");
                        return;
                    }
                    a = rx.recv() => match a {
                        Some(a) => a,
                        None => return,
                    },
                    _ = tokio::time::sleep_until(until) => {
                        info!(
                            "not resumed within {} s (the resume window): closing this connection",
                            session.cfg.window.as_secs()
                        );
                        return;
                    }
                }
            }
        };
        let (conn, send, recv, resumed) = match setup(session, slot, attach).await {
            Ok(x) => {
                let g = session.generation.load(Ordering::SeqCst);
                slot.attached_gen.store(g, Ordering::SeqCst);
                x
            }
            Err(SetupEnd::Lost) => continue,
            Err(SetupEnd::Fatal(e)) => {
                info!("{e}: closing this connection");
                return;
            }
        };
        if let Some(replayed) = resumed {
            if let Some(t) = lost_since.take() {
                session
                    .tally
                    .streams_resumed
                    .fetch_add(1, Ordering::Relaxed);
                info!(
                    replayed,
                    delivered = slot.delivered.load(Ordering::SeqCst),
                    outage_ms = t.elapsed().as_millis() as u64,
                    "stream resumed"
                );
            } else {
                debug!(replayed, "stream moved to a new connection");
            }
        }
        match pump(
            session, slot, &mut tcp_r, &mut tcp_w, conn, send, recv, &mut rx,
        )
        .await
        {
            End::Complete => {
                debug!("connection finished");
                return;
            }
            End::Lost => {
                debug!("tunnel lost: this connection waits for the session to resume");
                lost_since.get_or_insert_with(tokio::time::Instant::now);
            }
            End::Replaced(a) => next = Some(a),
            End::Fatal(e) => {
                warn!("connection closed: {e}");
                return;
            }
            End::Closed(e) => {
                debug!("connection closed: {e}");
                return;
            }
            End::Shutdown => return,
        }
    }
}

enum SetupEnd {
    Lost,
    Fatal(String),
}

/// Exchange delivered counts on a new stream pair and replay what the peer
/// is missing. Returns the pair and, for a resume, the bytes replayed.
#[allow(clippy::type_complexity)]
async fn setup<C: TunnelConnection>(
    session: &Session<C>,
    slot: &Slot<C>,
    attach: Attach<C>,
) -> Result<(C, C::Send, C::Recv, Option<usize>), SetupEnd> {
    let (conn, mut send, recv, peer) = match attach {
        Attach::Fresh { conn, send, recv } => return Ok((conn, send, recv, None)),
        Attach::Dial(conn) => {
            let (mut send, mut recv) = open_bi_retry(&conn).await.map_err(|_| SetupEnd::Lost)?;
            let head = Request::resume(slot.id, slot.delivered()).encode();
            send.write_all(&head).await.map_err(|_| SetupEnd::Lost)?;
            let reply = tokio::time::timeout(Duration::from_secs(10), read_reply(&mut recv))
                .await
                .map_err(|_| SetupEnd::Lost)?
                .map_err(|_| SetupEnd::Lost)?;
            match reply.status {
                Status::OkExt => {}
                Status::Gone => {
                    return Err(SetupEnd::Fatal(
                        "the sender no longer has this connection (its side ended)".into(),
                    ))
                }
                _ => {
                    return Err(SetupEnd::Fatal(format!(
                        "resume refused: {}",
                        reply.message
                    )))
                }
            }
            let ext = read_ext(&mut recv).await.map_err(|_| SetupEnd::Lost)?;
            let peer = ext.delivered.ok_or_else(|| {
                SetupEnd::Fatal("the sender's resume reply has no byte count".into())
            })?;
            (conn, send, recv, peer)
        }
        Attach::Accepted {
            conn,
            mut send,
            recv,
            peer,
        } => {
            let reply = Reply::ok_with(&ReplyExt {
                delivered: Some(slot.delivered()),
                ..Default::default()
            });
            send.write_all(&reply).await.map_err(|_| SetupEnd::Lost)?;
            (conn, send, recv, peer)
        }
    };
    if peer.1 {
        slot.peer_fin.store(true, Ordering::SeqCst);
    }
    let replay = {
        let mut out = slot.out.lock().expect("out");
        let before = out.unacked();
        let r = out.replay_from(peer.0);
        let freed = before - out.unacked();
        session.budget.add_permits(freed);
        r.map_err(|e| SetupEnd::Fatal(format!("cannot resume: {e}")))?
    };
    slot.changed.notify_waiters();
    let mut replayed = 0;
    for chunk in replay {
        replayed += chunk.len();
        send.write_bytes(chunk).await.map_err(|_| SetupEnd::Lost)?;
    }
    if slot.out_fin.load(Ordering::SeqCst) {
        let _ = send.shutdown().await;
    }
    Ok((conn, send, recv, Some(replayed)))
}

/// Read a reply extension (`length u16 | TLV*`).
pub async fn read_ext<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> Result<ReplyExt, crate::engine::io::ReadHeaderError> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len).await?;
    let len = u16::from_be_bytes(len) as usize;
    if len > crate::proto::header::MAX_BODY {
        return Err(crate::proto::header::HeaderError::TooLarge(len).into());
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(ReplyExt::decode_body(&body)?)
}

#[allow(clippy::too_many_arguments)]
async fn pump<C: TunnelConnection>(
    session: &Session<C>,
    slot: &Slot<C>,
    tcp_r: &mut OwnedReadHalf,
    tcp_w: &mut OwnedWriteHalf,
    conn: C,
    mut send: C::Send,
    mut recv: C::Recv,
    rx: &mut mpsc::Receiver<Attach<C>>,
) -> End<C> {
    let up = async {
        let mut buf = Scratch::new(READ_CHUNK);
        loop {
            if slot.out_fin.load(Ordering::SeqCst) {
                return Ok(());
            }
            slot.wait_for(|s| s.room() > 0).await;
            let room = buf.room(slot.room());
            let chunk = room.len();
            let Ok(permit) = session.budget.acquire_many(chunk as u32).await else {
                return Ok(());
            };
            let n = tcp_r.read(room).await.map_err(DirError::Local)?;
            buf.filled(n);
            permit.forget();
            session.budget.add_permits(chunk - n);
            if n == 0 {
                slot.out_fin.store(true, Ordering::SeqCst);
                send.shutdown().await.map_err(DirError::Tunnel)?;
                return Ok(());
            }
            // a copy of exactly what was read: small writes keep small buffers
            let data = Bytes::copy_from_slice(buf.data(n));
            slot.out.lock().expect("out").push(data.clone());
            send.write_bytes(data).await.map_err(DirError::Tunnel)?;
        }
    };
    let down = async {
        if slot.in_fin.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut buf = Scratch::new(READ_CHUNK);
        let ack_every = (session.cfg.stream_buffer as u64 / 4).clamp(READ_CHUNK as u64, 1 << 20);
        let mut last_urgent = slot.delivered.load(Ordering::SeqCst);
        loop {
            let n = recv
                .read(buf.room(usize::MAX))
                .await
                .map_err(DirError::Tunnel)?;
            buf.filled(n);
            if n == 0 {
                tcp_w.shutdown().await.map_err(DirError::Local)?;
                slot.in_fin.store(true, Ordering::SeqCst);
                session.note_ack(slot.id, slot.delivered(), true);
                return Ok(());
            }
            // one write at a time, counted as it lands: if this future is
            // dropped (a newer connection took over), the count is exact
            let mut off = 0;
            while off < n {
                let k = tcp_w
                    .write(&buf.data(n)[off..])
                    .await
                    .map_err(DirError::Local)?;
                if k == 0 {
                    return Err(DirError::Local(std::io::ErrorKind::WriteZero.into()));
                }
                off += k;
                slot.delivered.fetch_add(k as u64, Ordering::SeqCst);
            }
            // at once after a share of the peer's buffer, else batched
            let d = slot.delivered.load(Ordering::SeqCst);
            let urgent = d - last_urgent >= ack_every;
            if urgent {
                last_urgent = d;
            }
            session.note_ack(slot.id, slot.delivered(), urgent);
        }
    };
    let failed = {
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                biased;
                _ = session.cancel.cancelled() => return End::Shutdown,
                a = rx.recv() => match a {
                    Some(a) => break Err(a),
                    None => return End::Shutdown,
                },
                r = &mut up, if !up_done => match r {
                    Ok(()) => up_done = true,
                    Err(e) => break Ok(e),
                },
                r = &mut down, if !down_done => match r {
                    Ok(()) => down_done = true,
                    Err(e) => break Ok(e),
                },
                _ = slot.wait_for(Slot::complete), if up_done && down_done => return End::Complete,
                reason = conn.closed() => return lost(&reason),
            }
        }
    };
    match failed {
        // a newer connection took over: the old stream must not look finished
        Err(a) => {
            send_abort(&mut send, &mut recv);
            End::Replaced(a)
        }
        Ok(DirError::Local(e)) => {
            // our local socket failed: the peer closes its side too
            send_abort(&mut send, &mut recv);
            End::Fatal(format!("local socket: {e}"))
        }
        Ok(DirError::Tunnel(e)) => {
            // the stream failed: a lost connection (park), or the peer reset it
            match tokio::time::timeout(Duration::from_millis(300), conn.closed()).await {
                Ok(reason) => lost(&reason),
                Err(_) => {
                    send_abort(&mut send, &mut recv);
                    End::Fatal(format!("the peer closed it: {e}"))
                }
            }
        }
    }
}

/// A connection that ended on purpose (the peer closed the session
/// normally) ends its streams; any other loss parks them.
fn lost<C: TunnelConnection>(reason: &CloseReason) -> End<C> {
    match reason {
        CloseReason::Peer {
            code: close_code::NORMAL,
            ..
        } => End::Closed(format!("the peer ended the session ({reason})")),
        _ => End::Lost,
    }
}

fn send_abort<S: TunnelSend, R: TunnelRecv>(send: &mut S, recv: &mut R) {
    send.reset(close_code::STREAM_ABORT);
    recv.stop(close_code::STREAM_ABORT);
}

/// The sender's resumable sessions, by id.
pub struct Registry<C: TunnelConnection> {
    sessions: Mutex<HashMap<[u8; 16], Arc<Session<C>>>>,
    cfg: ResumeConfig,
    cancel: CancellationToken,
    reapers: TaskTracker,
}

/// Most sessions a sender keeps; past it, new sessions are not resumable.
pub const MAX_SESSIONS: usize = 4096;

/// What the sender answers to a hello that asks for resumption.
pub struct Opened<C: TunnelConnection> {
    /// The session this connection serves.
    pub session: Arc<Session<C>>,
    /// Whether it is the one the receiver asked to resume.
    pub resumed: bool,
}

impl<C: TunnelConnection> Registry<C> {
    /// An empty registry; `cancel` stops every session.
    pub fn new(cfg: ResumeConfig, cancel: CancellationToken) -> Arc<Self> {
        Arc::new(Registry {
            sessions: Mutex::new(HashMap::new()),
            cfg,
            cancel,
            reapers: TaskTracker::new(),
        })
    }

    /// Settings.
    pub fn config(&self) -> &ResumeConfig {
        &self.cfg
    }

    /// Resume the session `offer` names if its secret matches, else start a
    /// new one (`None` when the sender holds too many sessions already).
    pub fn open(
        &self,
        offer: Option<&Ticket>,
        peer: &str,
        tally: impl FnOnce() -> Arc<super::tally::Tally>,
    ) -> Option<Opened<C>> {
        let mut m = self.sessions.lock().expect("sessions");
        if let Some(t) = offer {
            match m.get(&t.id) {
                Some(s) if s.ticket().secret_matches(t) => {
                    s.set_ticket(t.rotate());
                    return Some(Opened {
                        session: s.clone(),
                        resumed: true,
                    });
                }
                Some(_) => warn!(
                    %peer,
                    session = %hex::encode(&t.id[..4]),
                    "refusing to resume a session: wrong or stale secret (the receiver gets a new session; no stream of the old one is reachable)"
                ),
                None => info!(
                    %peer,
                    session = %hex::encode(&t.id[..4]),
                    "the receiver asked to resume a session this sender does not have (restarted, or its window passed): starting a new one"
                ),
            }
        }
        if m.len() >= MAX_SESSIONS {
            return None;
        }
        let ticket = Ticket::generate();
        let s = Session::new(
            ticket.clone(),
            self.cfg.clone(),
            self.cancel.child_token(),
            tally(),
        );
        m.insert(ticket.id, s.clone());
        Some(Opened {
            session: s,
            resumed: false,
        })
    }

    /// The connection of generation `g` of `session` ended: forget the
    /// session once its window passes without a newer connection (at once
    /// when it has no streams left).
    pub fn detached(self: &Arc<Self>, session: &Arc<Session<C>>, g: u64) {
        let me = self.clone();
        let s = session.clone();
        self.reapers.spawn(async move {
            let window = s.window();
            if s.holds_anything() {
                tokio::select! {
                    _ = me.cancel.cancelled() => {}
                    _ = tokio::time::sleep(window) => {}
                }
            }
            if s.is_current(g) {
                let id = s.ticket().id;
                me.sessions.lock().expect("sessions").remove(&id);
                s.close().await;
            }
        });
    }

    /// The receiver ended `session` on purpose (it closed the connection
    /// normally): forget it and close its streams now, not after the window.
    pub async fn end(&self, session: &Arc<Session<C>>) {
        let id = session.ticket().id;
        self.sessions.lock().expect("sessions").remove(&id);
        session.close().await;
    }

    /// Stop every session and wait (bounded).
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let all: Vec<_> = self
            .sessions
            .lock()
            .expect("sessions")
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in all {
            s.close().await;
        }
        self.reapers.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.reapers.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::quinn::QuinnConnection;

    #[test]
    fn only_the_current_secret_resumes_a_session() {
        let reg =
            Registry::<QuinnConnection>::new(ResumeConfig::default(), CancellationToken::new());
        let first = reg
            .open(None, "peer", crate::engine::tally::Tally::unobserved)
            .unwrap();
        assert!(!first.resumed);
        let t1 = first.session.ticket();
        // the right ticket resumes, and the secret changes
        let again = reg
            .open(Some(&t1), "peer", crate::engine::tally::Tally::unobserved)
            .unwrap();
        assert!(again.resumed);
        assert!(Arc::ptr_eq(&again.session, &first.session));
        let t2 = again.session.ticket();
        assert_eq!(t2.id, t1.id);
        assert!(!t2.secret_matches(&t1));
        // the old (stale) secret and a forged one get a new, empty session
        for bad in [
            t1.clone(),
            Ticket {
                id: t1.id,
                secret: [0; 32],
            },
        ] {
            let o = reg
                .open(Some(&bad), "peer", crate::engine::tally::Tally::unobserved)
                .unwrap();
            assert!(!o.resumed);
            assert!(!Arc::ptr_eq(&o.session, &first.session));
            assert_ne!(o.session.ticket().id, t1.id);
        }
        // the real session still resumes with its current secret
        assert!(
            reg.open(Some(&t2), "peer", crate::engine::tally::Tally::unobserved)
                .unwrap()
                .resumed
        );
    }

    #[tokio::test]
    async fn a_newer_connection_supersedes_the_one_before() {
        let s = Session::<QuinnConnection>::new(
            Ticket::generate(),
            ResumeConfig::default(),
            CancellationToken::new(),
            crate::engine::Tally::unobserved(),
        );
        let (first, _a) = QuinnConnection::loopback_pair().await.unwrap();
        let (second, _b) = QuinnConnection::loopback_pair().await.unwrap();
        let g1 = s.attach_connection(&first);
        assert!(!first.superseded().is_cancelled());
        let g2 = s.attach_connection(&second);
        assert!(g2 > g1 && s.is_current(g2));
        // every clone of the old connection sees it; the new one is current
        assert!(first.clone().superseded().is_cancelled());
        assert!(!second.superseded().is_cancelled());
    }

    #[test]
    fn new_stream_ids_are_checked() {
        let s = Session::<QuinnConnection>::new(
            Ticket::generate(),
            ResumeConfig::default(),
            CancellationToken::new(),
            crate::engine::Tally::unobserved(),
        );
        assert!(s.check_new_stream(0).is_ok());
        assert_eq!(s.next_stream_id(), 0);
        assert_eq!(s.next_stream_id(), 1);
    }
}
