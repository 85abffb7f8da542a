//! The sender's side of the copy-paste modes: answer each offer with a fresh
//! session, and keep each session's endpoint ready for a rejoin.

use std::{collections::HashSet, sync::Arc, time::Duration};

use peerport_signaling::{
    blob::{scan_blocks, Blob, Kind},
    Mode,
};
use tokio::{
    sync::{mpsc, Mutex},
    task::JoinSet,
};
use tracing::{info, warn, Instrument};

use super::{
    blobs::{decode_utf8_lossy, expect, BlobReader, BlobSink, BlobSource},
    unix_now, ManualPath, PathError, Side, MAX_BLOB_AGE, REJOIN_WINDOW,
};
use crate::{
    engine::close_code,
    transport::{AcceptError, Acceptor, CloseReason, TunnelConnection},
};

/// Most offers set up at once (each holds an ICE agent or endpoint while it
/// waits for its receiver); more are refused with a message until one ends.
pub const MAX_SETUPS: usize = 32;

/// Sender side: an [`Acceptor`] that answers every offer read from `offers`
/// with a fresh session; connections are set up concurrently.
pub struct ManualAcceptor<C> {
    pub(super) rx: mpsc::Receiver<Result<C, AcceptError>>,
    pub(super) input_closed: Arc<std::sync::atomic::AtomicBool>,
    pub(super) stop: tokio_util::sync::CancellationToken,
    pub(super) tasks: JoinSet<()>,
}

impl<C: TunnelConnection> ManualAcceptor<C> {
    /// Start reading offers and answering them.
    pub fn start<P: ManualPath<Conn = C>>(
        path: Arc<P>,
        offers: BlobSource,
        answers: BlobSink,
    ) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let input_closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = tokio_util::sync::CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(
            answer_offers(
                path,
                offers,
                answers,
                tx,
                input_closed.clone(),
                stop.clone(),
            )
            .in_current_span(),
        );
        ManualAcceptor {
            rx,
            input_closed,
            stop,
            tasks,
        }
    }

    /// Set when the acceptor ended because its standard input closed.
    pub fn input_closed_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.input_closed.clone()
    }
}

impl<C: TunnelConnection> Acceptor for ManualAcceptor<C> {
    type Conn = C;
    async fn accept(&mut self) -> Option<Result<C, AcceptError>> {
        self.rx.recv().await
    }

    /// Stop answering; close the endpoints kept for reconnects (bounded).
    async fn shutdown(mut self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
    }
}

/// Session ids of the answers already in `sink`'s file: a restarted sender
/// does not answer those offers again.
pub(super) async fn answered_sessions(sink: &BlobSink, mode: Mode) -> HashSet<[u8; 8]> {
    let BlobSink::File(p) = sink else {
        return HashSet::new();
    };
    let Ok(bytes) = tokio::fs::read(p).await else {
        return HashSet::new();
    };
    let mut raw = bytes;
    let mut text = String::new();
    decode_utf8_lossy(&mut raw, &mut text);
    // an expired answer answered an offer that has expired too
    let (blobs, _) = scan_blocks(&text, &expect(Kind::Answer, mode, None));
    blobs
        .into_iter()
        .filter_map(|b| b.ok().map(|b| b.session))
        .collect()
}

pub(super) async fn answer_offers<P: ManualPath>(
    path: Arc<P>,
    offers: BlobSource,
    answers: BlobSink,
    tx: mpsc::Sender<Result<P::Conn, AcceptError>>,
    input_closed: Arc<std::sync::atomic::AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
) {
    let console = match &offers {
        BlobSource::Console(c) => Some(c.clone()),
        BlobSource::File(_) => None,
    };
    let mut reader = BlobReader::new(offers);
    let mut seen = answered_sessions(&answers, P::MODE).await;
    if !seen.is_empty() {
        info!(
            answered = seen.len(),
            "offers already answered in the answer file are not answered again"
        );
    }
    let answers = Arc::new(Mutex::new(answers));
    // setting up holds a slot; a set-up session that can rejoin keeps its
    // task (not its slot) while its receiver may come back
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SETUPS));
    // the setups holding a slot, oldest first (a cancelled token: done)
    let mut waiting = std::collections::VecDeque::new();
    let mut setups = JoinSet::new();
    let want = expect(Kind::Offer, P::MODE, None);
    if let Some(c) = &console {
        c.say("paste a receiver's OFFER (several, one after another, start several sessions):");
    }
    loop {
        let r = tokio::select! {
            // the reader is dropped on the way out: a partial line may go
            _ = stop.cancelled() => break,
            r = reader.next(&want) => match r {
                Some(r) => r,
                None => {
                    if let Some(c) = &console {
                        input_closed.store(true, std::sync::atomic::Ordering::SeqCst);
                        c.say("input closed: no more offers can be read; sessions under way continue");
                    }
                    break;
                }
            },
        };
        let offer = match r {
            Ok(o) => o,
            Err(e) => {
                reader.complain(&e, "OFFER");
                continue;
            }
        };
        if !seen.insert(offer.session) {
            info!(
                session = %hex::encode(offer.session),
                "skipping an offer that was already answered"
            );
            continue;
        }
        while setups.try_join_next().is_some() {}
        let Some(slot) = slot_for_new_offer(&slots, &mut waiting).await else {
            warn!(
                "refusing an offer: {MAX_SETUPS} offers are already being set up; try again when one has connected or expired"
            );
            continue;
        };
        let (path, answers, tx, stop) = (path.clone(), answers.clone(), tx.clone(), stop.clone());
        let evict = tokio_util::sync::CancellationToken::new();
        waiting.push_back(evict.clone());
        let span = tracing::info_span!("setup", session = %hex::encode(offer.session));
        setups.spawn(
            async move {
                let r = tokio::select! {
                    r = setup_session(&*path, offer, &answers) => r,
                    _ = stop.cancelled() => return,
                    _ = evict.cancelled() => {
                        info!("gave up this answered offer: its receiver has not connected, and a newer offer needed the place");
                        return;
                    }
                };
                // no longer waiting: nothing to give up
                evict.cancel();
                drop(slot);
                let (result, rejoin) = match r {
                    Ok((conn, rejoin)) => (Ok(conn), rejoin),
                    Err(e) => (Err(AcceptError::new(e)), None),
                };
                let watch = result.as_ref().ok().cloned();
                let handed_over = tx.send(result).await.is_ok();
                if let Some(rejoin) = rejoin {
                    match watch {
                        Some(conn) if handed_over => {
                            keep_rejoining(&*path, conn, rejoin, &tx, &stop).await
                        }
                        _ => path.release(rejoin).await,
                    }
                }
            }
            .instrument(span),
        );
    }
    // input closed: finish the setups under way, then end
    while setups.join_next().await.is_some() {}
}

/// A place for a new offer's setup. When every place is taken, the oldest
/// answered offer whose receiver has not connected gives way: a receiver
/// that wrote a newer offer (after a restart, or because its earlier try
/// failed) is the likelier one to come, and abandoned offers must not lock
/// out every later one until they expire.
async fn slot_for_new_offer(
    slots: &Arc<tokio::sync::Semaphore>,
    waiting: &mut std::collections::VecDeque<tokio_util::sync::CancellationToken>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if let Ok(slot) = slots.clone().try_acquire_owned() {
        return Some(slot);
    }
    waiting.retain(|t| !t.is_cancelled());
    let oldest = waiting.pop_front()?;
    oldest.cancel();
    // its task ends at its next poll and frees the slot
    tokio::time::timeout(Duration::from_secs(5), slots.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

/// After a session's connection is lost (not closed on purpose), keep its
/// endpoint for [`REJOIN_WINDOW`] so its receiver can reconnect without a
/// new exchange; each reconnection is handed to the session loop.
pub(super) async fn keep_rejoining<P: ManualPath>(
    path: &P,
    mut conn: P::Conn,
    rejoin: P::Rejoin,
    tx: &mpsc::Sender<Result<P::Conn, AcceptError>>,
    stop: &tokio_util::sync::CancellationToken,
) {
    loop {
        // until the connection is lost, then until its receiver is back
        let round = async {
            // closed on purpose: no rejoin. A receiver that gave the
            // connection up (its path is gone, or it heard nothing for
            // seconds) closes with PATH_GONE: lost, so it may come back
            let reason = conn.closed().await;
            let lost = match &reason {
                CloseReason::Peer { code, .. } => *code == close_code::PATH_GONE,
                CloseReason::Local => false,
                _ => true,
            };
            if !lost {
                return None;
            }
            info!(
                "session lost ({reason}); the receiver may reconnect to this endpoint for {} s",
                REJOIN_WINDOW.as_secs()
            );
            Some(path.rejoin(&rejoin, Side::Answerer, REJOIN_WINDOW).await)
        };
        // a resume over a newer connection (a fresh exchange) leaves this
        // one nothing to come back for: its endpoint goes now, not after
        // the window (each holds megabytes of receive buffers)
        let superseded = conn.superseded();
        let again = tokio::select! {
            r = round => r,
            _ = superseded.cancelled() => {
                info!("the session continues on a newer connection: releasing this one's endpoint");
                None
            }
            _ = stop.cancelled() => None,
        };
        match again {
            None => break,
            Some(Ok(c)) => {
                conn = c.clone();
                if tx.send(Ok(c)).await.is_err() {
                    break;
                }
            }
            Some(Err(e)) => {
                info!("the receiver did not come back: {e}");
                break;
            }
        }
    }
    path.release(rejoin).await;
}

pub(super) async fn setup_session<P: ManualPath>(
    path: &P,
    offer: Blob,
    answers: &Mutex<BlobSink>,
) -> Result<(P::Conn, Option<P::Rejoin>), PathError> {
    let (prepared, body) = path.prepare(Side::Answerer).await?;
    let answer = Blob {
        kind: Kind::Answer,
        session: offer.session,
        created: unix_now(),
        body,
    };
    {
        let sink = answers.lock().await;
        if let BlobSink::Console(c) = &*sink {
            c.say("send this ANSWER back to the receiver:");
        }
        sink.write(&answer)
            .await
            .map_err(|e| PathError::Setup(format!("cannot write the answer: {e}")))?;
    }
    // the person may take minutes to carry the answer back: wait for the
    // receiver as long as its offer is valid
    let valid_for = (offer.created + MAX_BLOB_AGE.as_secs()).saturating_sub(unix_now());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(valid_for);
    path.connect(prepared, offer.body, Side::Answerer, Some(deadline))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    /// Every place taken: the oldest waiting setup gives way, the newer
    /// ones keep theirs, and a setup already done is never picked.
    #[tokio::test]
    async fn a_new_offer_evicts_the_oldest_waiting_setup() {
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        let mut waiting = std::collections::VecDeque::new();
        let mut tasks = JoinSet::new();
        let done = CancellationToken::new();
        done.cancel(); // finished earlier: its token is cancelled, its slot free
        waiting.push_back(done);
        let mut tokens = Vec::new();
        for _ in 0..2 {
            let slot = slot_for_new_offer(&slots, &mut waiting).await.unwrap();
            let evict = CancellationToken::new();
            waiting.push_back(evict.clone());
            tokens.push(evict.clone());
            tasks.spawn(async move {
                evict.cancelled().await;
                drop(slot);
            });
        }
        let third = slot_for_new_offer(&slots, &mut waiting).await;
        assert!(third.is_some());
        assert!(tokens[0].is_cancelled(), "the oldest gave way");
        assert!(!tokens[1].is_cancelled(), "the newer one kept its place");
        assert_eq!(waiting.len(), 1);
        // nothing left to give way (the last one holds the only other place)
        let mut none_waiting = std::collections::VecDeque::new();
        let fourth = slot_for_new_offer(&slots, &mut none_waiting).await;
        assert!(fourth.is_none());
        tokens[1].cancel();
        while tasks.join_next().await.is_some() {}
    }
}
