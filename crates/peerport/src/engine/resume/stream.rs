//! One resumable TCP stream: set up on a connection (new or resumed),
//! then pumped both ways until it ends or its connection is lost.

use std::{
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
    sync::{mpsc, Notify},
    time::Instant,
};
use tracing::{debug, info, warn, Instrument};

use crate::engine::{
    chunks::{Segments, ToTunnel},
    io::open_bi_retry,
    io::read_reply,
    pump::{DirError, LINGER},
};
use crate::proto::close::close_code;
use crate::{
    proto::{
        header::{Reply, Request, Status},
        resume::{ReplayBuf, ReplyExt},
    },
    transport::{CloseReason, TunnelConnection, TunnelRecv, TunnelSend},
};

use super::{
    session::Session,
    slot::{Attach, Slot},
    READ_CHUNK,
};

/// How one attachment of a stream ended.
pub(super) enum End<C: TunnelConnection> {
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

/// Why a connection must close early, when it must (the sender's reload
/// no longer allows it); pending forever for one that may run to its end.
pub type Until = std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>;

pub(super) async fn run_stream<C: TunnelConnection>(
    session: &Session<C>,
    slot: &Slot<C>,
    tcp: TcpStream,
    first: Attach<C>,
    mut rx: mpsc::Receiver<Attach<C>>,
    mut revoked: Until,
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
                // biased: closing the session cancels `abandon` too (a
                // child token), and that is no abandoned stream
                tokio::select! {
                    biased;
                    _ = session.cancel.cancelled() => return,
                    why = &mut revoked => {
                        info!("{why}: closing this connection");
                        return;
                    }
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
            session,
            slot,
            &mut tcp_r,
            &mut tcp_w,
            conn,
            send,
            recv,
            &mut rx,
            &mut revoked,
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

pub(super) enum SetupEnd {
    Lost,
    Fatal(String),
}

/// Exchange delivered counts on a new stream pair and replay what the peer
/// is missing. Returns the pair and, for a resume, the bytes replayed.
#[allow(clippy::type_complexity)]
pub(super) async fn setup<C: TunnelConnection>(
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
pub(super) async fn pump<C: TunnelConnection>(
    session: &Session<C>,
    slot: &Slot<C>,
    tcp_r: &mut OwnedReadHalf,
    tcp_w: &mut OwnedWriteHalf,
    conn: C,
    mut send: C::Send,
    mut recv: C::Recv,
    rx: &mut mpsc::Receiver<Attach<C>>,
    revoked: &mut Until,
) -> End<C> {
    let up = async {
        let mut local = ToTunnel::new(READ_CHUNK);
        loop {
            if slot.out_fin.load(Ordering::SeqCst) {
                return Ok(());
            }
            let room = local.room(slot.wait_room().await);
            let Ok(permit) = session.budget.acquire_many(room as u32).await else {
                return Ok(());
            };
            let read = local
                .read(tcp_r, room, &mut send)
                .await
                .map_err(DirError::Local)?;
            permit.forget();
            session
                .budget
                .add_permits(room - read.as_ref().map_or(0, Bytes::len));
            let Some(data) = read else {
                slot.out_fin.store(true, Ordering::SeqCst);
                send.shutdown().await.map_err(DirError::Tunnel)?;
                return Ok(());
            };
            // the bytes read, shared (not copied) by the replay buffer and the QUIC stack
            slot.out.lock().expect("out").push(data.clone());
            send.write_bytes(data).await.map_err(DirError::Tunnel)?;
        }
    };
    let down = async {
        if slot.in_fin.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut segs = Segments::default();
        let ack_every = (session.cfg.stream_buffer as u64 / 4).clamp(READ_CHUNK as u64, 1 << 20);
        let mut last_urgent = slot.delivered.load(Ordering::SeqCst);
        loop {
            if !segs.read(&mut recv).await.map_err(DirError::Tunnel)? {
                tcp_w.shutdown().await.map_err(DirError::Local)?;
                slot.in_fin.store(true, Ordering::SeqCst);
                session.note_ack(slot.id, slot.delivered(), true);
                return Ok(());
            }
            // counted as each write lands: if this future is dropped (a
            // newer connection took over), the count is exact
            while !segs.is_empty() {
                let k = segs.write_some(tcp_w).await.map_err(DirError::Local)?;
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
        // The local socket failed (its end reset it, often right after a
        // last answer): what it sent before is valid, so the abort waits,
        // at most LINGER, until the peer has delivered all of it. A failed
        // write still lets the up direction read the end's last bytes.
        let mut local_failed: Option<(std::io::Error, Instant)> = None;
        loop {
            let lingering = local_failed.is_some();
            let deadline = local_failed.as_ref().map_or_else(Instant::now, |(_, d)| *d);
            tokio::select! {
                biased;
                _ = session.cancel.cancelled() => return End::Shutdown,
                why = &mut *revoked => break Stop::Revoked(why),
                a = rx.recv() => match a {
                    Some(a) => break Stop::Replaced(a),
                    None => return End::Shutdown,
                },
                r = &mut up, if !up_done => match r {
                    Ok(()) => up_done = true,
                    Err(DirError::Local(e)) => {
                        up_done = true;
                        local_failed.get_or_insert((e, Instant::now() + LINGER));
                    }
                    Err(e) => break Stop::Failed(e),
                },
                r = &mut down, if !down_done => match r {
                    Ok(()) => down_done = true,
                    Err(DirError::Local(e)) => {
                        down_done = true;
                        local_failed.get_or_insert((e, Instant::now() + LINGER));
                    }
                    Err(e) => break Stop::Failed(e),
                },
                _ = slot.wait_for(Slot::all_acked), if lingering && up_done => {
                    break Stop::Failed(DirError::Local(local_failed.take().expect("lingering").0));
                }
                _ = tokio::time::sleep_until(deadline), if lingering => {
                    break Stop::Failed(DirError::Local(local_failed.take().expect("lingering").0));
                }
                _ = slot.wait_for(Slot::complete), if up_done && down_done && !lingering => return End::Complete,
                reason = conn.closed() => return lost(&reason),
            }
        }
    };
    match failed {
        // a newer connection took over: the old stream must not look finished
        Stop::Replaced(a) => {
            send_abort(&mut send, &mut recv);
            End::Replaced(a)
        }
        Stop::Revoked(why) => {
            send_abort(&mut send, &mut recv);
            End::Fatal(why)
        }
        Stop::Failed(DirError::Local(e)) => {
            // our local socket failed: the peer closes its side too
            send_abort(&mut send, &mut recv);
            End::Fatal(format!("local socket: {e}"))
        }
        Stop::Failed(DirError::Tunnel(e)) => {
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
pub(super) fn lost<C: TunnelConnection>(reason: &CloseReason) -> End<C> {
    match reason {
        CloseReason::Peer {
            code: close_code::NORMAL,
            ..
        } => End::Closed(format!("the peer ended the session ({reason})")),
        _ => End::Lost,
    }
}

/// Why [`pump`] stopped before the stream was complete.
enum Stop<C: TunnelConnection> {
    /// A newer connection took over.
    Replaced(Attach<C>),
    /// A direction failed.
    Failed(DirError),
    /// The reason it may not go on.
    Revoked(String),
}

pub(super) fn send_abort<S: TunnelSend, R: TunnelRecv>(send: &mut S, recv: &mut R) {
    send.reset(close_code::STREAM_ABORT);
    recv.stop(close_code::STREAM_ABORT);
}

impl<C: TunnelConnection> Session<C> {
    /// Carry a set-up TCP connection as resumable stream `id`; the task
    /// belongs to the session and outlives the connection, and ends early
    /// when `until` resolves.
    pub fn spawn_stream(
        self: &Arc<Self>,
        id: u64,
        tcp: TcpStream,
        sent: Bytes,
        first: Attach<C>,
        open: crate::engine::tally::StreamGuard,
        until: Until,
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
                run_stream(&me, &slot, tcp, first, rx, until).await;
                me.slots.lock().expect("slots").remove(&id);
                drop(open);
            }
            .instrument(span),
        );
    }
}
