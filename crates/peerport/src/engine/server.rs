//! The sender's session loop, written once for every back-end: accept
//! connections from an [`Acceptor`], run each as its own session (with a
//! tracing span), enforce `--max-sessions`, and shut down cleanly.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::EVENT;
use tokio::{io::AsyncWriteExt, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn, Instrument};

use super::{
    error::SessionError, io::read_request, resume::Registry, session::serve_sender_session,
    session::SenderContext,
};
use crate::proto::close::close_code;
use crate::{
    proto::header::{Reply, Status},
    transport::{Acceptor, TunnelConnection},
};

/// How a sender stops: on `shutdown` it accepts no more receivers and lets
/// open TCP connections finish for up to `drain`, unless `now` fires.
#[derive(Debug, Clone)]
pub struct Stop {
    /// Stop accepting, then drain.
    pub shutdown: CancellationToken,
    /// Close everything at once (a drain in progress ends).
    pub now: CancellationToken,
    /// Longest drain.
    pub drain: std::time::Duration,
    /// Cancelled when the drain starts (new TCP connections are refused).
    pub stopping: Option<CancellationToken>,
}

/// Wait for `stop.shutdown`, then drain (see [`Stop`]); returns when
/// everything must close.
pub async fn drain(stop: &Stop, ledger: &super::tally::Ledger) {
    stop.shutdown.cancelled().await;
    if let Some(s) = &stop.stopping {
        s.cancel();
    }
    if stop.drain.is_zero() || stop.now.is_cancelled() {
        return;
    }
    let open = ledger.open_streams();
    if open == 0 {
        return;
    }
    info!(
        open,
        "draining: accepting nothing new; open connections may finish for up to {} s (--drain-timeout; a second signal stops at once)",
        stop.drain.as_secs()
    );
    if ledger.drained(stop.drain, &stop.now).await {
        info!("drained: every connection finished");
    } else {
        info!(
            open = ledger.open_streams(),
            "drain over: closing the connections still open"
        );
    }
}

/// Serve sessions until `stop` says (see [`Stop`]) or the acceptor ends.
/// `max_sessions == 0` means unlimited.
pub async fn serve<A: Acceptor>(
    mut acceptor: A,
    ctx: Arc<SenderContext>,
    max_sessions: usize,
    stop: Stop,
) {
    let cancel = stop.shutdown.clone();
    // sessions and their streams end on `hard`, after the drain
    let hard = CancellationToken::new();
    let limit = if max_sessions == 0 {
        Semaphore::MAX_PERMITS
    } else {
        max_sessions
    };
    let slots = Arc::new(Semaphore::new(limit));
    let tasks = TaskTracker::new();
    let mut next_id: u64 = 0;
    // the newest session per peer identity: a receiver that reconnects
    // (its old connection not yet timed out here) replaces its dead session
    let by_peer: Arc<Mutex<NewestByPeer<A::Conn>>> = Arc::default();
    // resumable sessions outlive their connections
    let registry = ctx
        .engine
        .resume
        .enabled()
        .then(|| Registry::<A::Conn>::new(ctx.engine.resume.clone(), hard.child_token()));
    loop {
        let conn = tokio::select! {
            _ = cancel.cancelled() => break,
            c = acceptor.accept() => match c {
                None => break,
                Some(Err(e)) => { warn!("incoming connection failed: {e}"); continue; }
                Some(Ok(c)) => c,
            }
        };
        next_id += 1;
        let id = next_id;
        let peer = conn.peer_id();
        let span = tracing::info_span!("session", id, peer = %short(&peer));
        let old = by_peer
            .lock()
            .expect("sessions")
            .insert(peer.clone(), (id, conn.clone()));
        let superseded = old.is_some();
        if let Some((old_id, old)) = old {
            info!(parent: &span, "closing session {old_id} of the same peer: this new session replaces it");
            old.close(
                close_code::SUPERSEDED,
                "superseded by a newer session of the same peer",
            );
        }
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => Ok(p),
            // the replaced session frees its slot as soon as its tasks end
            Err(_) if superseded => tokio::time::timeout(
                std::time::Duration::from_secs(2),
                slots.clone().acquire_owned(),
            )
            .await
            .map_err(|_| ())
            .and_then(|r| r.map_err(|_| ())),
            Err(_) => Err(()),
        };
        let Ok(permit) = permit else {
            forget(&by_peer, &peer, id);
            ctx.ledger
                .refused_busy
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            warn!(parent: &span, "refusing a receiver: already serving {max_sessions} sessions (--max-sessions)");
            tasks
                .spawn(refuse_busy(conn, max_sessions, ctx.engine.header_timeout).instrument(span));
            continue;
        };
        let (ctx, cancel, by_peer) = (ctx.clone(), hard.child_token(), by_peer.clone());
        let registry = registry.clone();
        tasks.spawn(
            async move {
                info!(target: EVENT, path = %conn.path(), "session started");
                let result = tokio::select! {
                    r = serve_sender_session(conn.clone(), ctx, registry, cancel.clone()) => r,
                    _ = async { conn.watch_path().await; std::future::pending::<()>().await } => unreachable!(),
                };
                match &result {
                    Ok(()) => info!(target: EVENT, "session ended"),
                    Err(SessionError::ConnectionLost(r)) => info!(target: EVENT, "session ended: {r}"),
                    Err(e) => warn!("session ended: {e}"),
                }
                // a lost connection keeps its reason (a back-end may look at
                // it); NORMAL only when the sender stops on purpose (the
                // receiver then ends the session), else it may resume
                match &result {
                    Err(SessionError::ConnectionLost(_)) => {}
                    Ok(()) => conn.close(close_code::NORMAL, "the sender is stopping"),
                    Err(_) => conn.close(close_code::SESSION_ERROR, "session failed"),
                }
                conn.shutdown().await;
                forget(&by_peer, &peer, id);
                drop(permit);
            }
            .instrument(span),
        );
    }
    tasks.close();
    if cancel.is_cancelled() {
        drain(&stop, &ctx.ledger).await;
    } else {
        // the acceptor ended by itself: sessions go on until they end, or
        // until told to stop
        tokio::select! {
            _ = tasks.wait() => {}
            _ = drain(&stop, &ctx.ledger) => {}
        }
    }
    hard.cancel();
    tasks.wait().await;
    if let Some(r) = registry {
        r.shutdown().await;
    }
    acceptor.shutdown().await;
}

/// The newest session (id and connection) of each peer identity.
type NewestByPeer<C> = HashMap<String, (u64, C)>;

/// Forget session `id` of `peer` unless a newer session replaced it.
fn forget<C>(by_peer: &Mutex<NewestByPeer<C>>, peer: &str, id: u64) {
    let mut m = by_peer.lock().expect("sessions");
    if m.get(peer).is_some_and(|(i, _)| *i == id) {
        m.remove(peer);
    }
}

async fn refuse_busy<C: TunnelConnection>(conn: C, max: usize, timeout: std::time::Duration) {
    let _ = tokio::time::timeout(timeout, async {
        let (mut send, mut recv) = conn.accept_bi().await.ok()?;
        read_request(&mut recv).await.ok()?;
        let msg = format!("the sender is full: it already serves {max} sessions (its --max-sessions); try again later");
        send.write_all(&Reply::err(Status::Busy, msg).encode()).await.ok()?;
        send.shutdown().await.ok()?;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        Some(())
    })
    .await;
    conn.close(close_code::BUSY, "busy");
    conn.shutdown().await;
}

fn short(id: &str) -> &str {
    id.get(..10).unwrap_or(id)
}
