//! The receiver's side of the copy-paste modes: offer, wait for the answer,
//! connect; after a loss, rejoin the same endpoint while a fresh offer is
//! made beside it.

use std::time::Duration;

use peerport_signaling::blob::{Blob, Kind};
use tracing::{debug, info, warn};

use super::{
    blobs::{expect, BlobReader, BlobSink, BlobSource},
    unix_now, ManualPath, RejoinError, Side, REJOIN_WINDOW,
};
use crate::transport::{DialError, Dialer};

/// After a lost session, how long the receiver tries only the old endpoint
/// before it also makes a fresh offer, when answers come from a file (no
/// person involved): a live sender answers a rejoin within a few round
/// trips; a restarted one never will, and its new process answers the
/// fresh offer at once.
pub const FRESH_OFFER_AFTER: Duration = Duration::from_millis(300);

/// The same when a person pastes the answer: a short outage should not ask
/// them for a new exchange, a restarted sender should not keep them waiting.
pub const FRESH_OFFER_AFTER_PASTE: Duration = Duration::from_secs(3);

/// Receiver side of a copy-paste mode: each [`Dialer::dial`] writes a
/// fresh OFFER, waits for the matching ANSWER (asking again after a bad
/// paste) and connects. After a lost session it first connects again to
/// the same sender endpoint; a fresh offer follows shortly, and whichever
/// comes back first (the old endpoint, or an answer) carries the session.
pub struct ManualDialer<P: ManualPath> {
    pub(super) path: P,
    pub(super) exchange: Exchange,
    /// The last session's way back to the sender, and since when it has
    /// been tried (`None`: the session was not lost yet).
    pub(super) rejoin: Option<(P::Rejoin, Option<tokio::time::Instant>)>,
    pub(super) rejoin_limit: Duration,
    /// Old endpoints being closed while the new session runs (closing an
    /// endpoint whose connection was lost can take seconds).
    releasing: tokio_util::task::TaskTracker,
}

/// The receiver's half of an offer/answer exchange.
pub(super) struct Exchange {
    offers: BlobSink,
    reader: BlobReader,
    answers_from: String,
    /// Answers are read from a file: a fresh exchange needs no person.
    automatic: bool,
    limit: Duration,
}

impl<P: ManualPath + Clone> ManualDialer<P> {
    /// Offers go to `offers`, answers are read from `answers`; each
    /// exchange must complete within `limit`. After a lost session the
    /// dialer reconnects to the same endpoint (each try within
    /// `rejoin_limit`) and makes a fresh offer beside it.
    pub fn new(
        path: P,
        offers: BlobSink,
        answers: BlobSource,
        limit: Duration,
        rejoin_limit: Duration,
    ) -> Self {
        let (answers_from, automatic) = match &answers {
            BlobSource::Console(_) => ("then paste the sender's ANSWER here:".to_string(), false),
            BlobSource::File(p) => (format!("waiting for the ANSWER in {}", p.display()), true),
        };
        ManualDialer {
            path,
            exchange: Exchange {
                offers,
                reader: BlobReader::new(answers),
                answers_from,
                automatic,
                limit,
            },
            rejoin: None,
            rejoin_limit,
            releasing: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Connect to the sender that answered; keep what a rejoin needs.
    async fn connect(&mut self, prepared: P::Prepared, answer: Blob) -> Result<P::Conn, DialError> {
        info!("answer accepted; connecting");
        let (conn, rejoin) = self
            .path
            .connect(prepared, answer.body, Side::Offerer, None)
            .await?;
        self.rejoin = rejoin.map(|r| (r, None));
        Ok(conn)
    }

    /// After a loss: the old endpoint and a fresh offer, side by side,
    /// until one of them connects (the other is dropped; its local state
    /// closes itself) or both failed.
    async fn rejoin_or_offer(
        &mut self,
        state: P::Rejoin,
        since: Option<tokio::time::Instant>,
    ) -> Result<P::Conn, DialError> {
        let grace = if self.exchange.automatic {
            FRESH_OFFER_AFTER
        } else {
            FRESH_OFFER_AFTER_PASTE
        };
        enum First<C, R> {
            Rejoined(C),
            Fresh(C, Option<R>),
            /// And whether the old endpoint is still worth trying.
            Failed(DialError, bool),
        }
        let lost = since.unwrap_or_else(tokio::time::Instant::now);
        let first = {
            let (path, limit) = (&self.path, self.rejoin_limit);
            let rejoining = rejoin_until(path, &state, lost + REJOIN_WINDOW, limit);
            let exchange = &mut self.exchange;
            let fresh = async {
                if since.is_none() {
                    tokio::time::sleep(grace).await;
                    exchange.offers.say(&format!(
                        "the sender did not answer at its old endpoint within {:.1} s: if it restarted, it needs a new OFFER (still trying the old endpoint meanwhile)",
                        grace.as_secs_f64()
                    ));
                }
                let (prepared, answer) = exchange.offer(path).await?;
                info!("answer accepted; connecting (and still trying the old endpoint)");
                path.connect(prepared, answer.body, Side::Offerer, None)
                    .await
                    .map_err(DialError::from)
            };
            tokio::pin!(rejoining, fresh);
            let mut rejoin_failed = false;
            // both ways go on until one connects: after an outage the old
            // endpoint may come back before a fresh exchange can work (an
            // offer made during the outage lacks this host's public
            // address), after a restart only the fresh one can. A failed
            // fresh exchange ends this dial (the next one, after the
            // receiver's backoff, makes another offer); the old endpoint is
            // tried on across dials
            loop {
                tokio::select! {
                    r = &mut rejoining, if !rejoin_failed => match r {
                        Ok(conn) => break First::Rejoined(conn),
                        Err(e) => {
                            warn!("could not reconnect without a new exchange ({e})");
                            rejoin_failed = true;
                        }
                    },
                    r = &mut fresh => match r {
                        Ok((conn, rejoin)) => break First::Fresh(conn, rejoin),
                        Err(e) => break First::Failed(e, !rejoin_failed),
                    },
                }
            }
        };
        match first {
            First::Rejoined(conn) => {
                self.rejoin = Some((state, None));
                Ok(conn)
            }
            First::Fresh(conn, rejoin) => {
                // the old endpoint closes in the background (closing one
                // whose connection was lost can take seconds)
                let path = self.path.clone();
                self.releasing
                    .spawn(async move { path.release(state).await });
                self.rejoin = rejoin.map(|r| (r, None));
                Ok(conn)
            }
            First::Failed(e, keep) => {
                if keep {
                    self.rejoin = Some((state, Some(lost)));
                } else {
                    self.path.release(state).await;
                }
                Err(e)
            }
        }
    }
}

/// Rejoin tries until one works, one fails for good, or `until` passed
/// (the sender keeps a lost session's endpoint for [`REJOIN_WINDOW`]).
async fn rejoin_until<P: ManualPath>(
    path: &P,
    state: &P::Rejoin,
    until: tokio::time::Instant,
    limit: Duration,
) -> Result<P::Conn, RejoinError> {
    loop {
        match path.rejoin(state, Side::Offerer, limit).await {
            Ok(conn) => return Ok(conn),
            Err(e) if e.permanent || tokio::time::Instant::now() >= until => return Err(e),
            Err(e) => {
                debug!("reconnecting to the same sender endpoint failed: {e}; trying again")
            }
        }
    }
}

impl Exchange {
    /// Write a fresh OFFER and wait for its ANSWER (asking again after a
    /// bad paste).
    async fn offer<P: ManualPath>(&mut self, path: &P) -> Result<(P::Prepared, Blob), DialError> {
        let (prepared, body) = path.prepare(Side::Offerer).await?;
        let session: [u8; 8] = rand::random();
        let offer = Blob {
            kind: Kind::Offer,
            session,
            created: unix_now(),
            body,
        };
        self.offers.say(&format!(
            "peerport receiver ({}): send this OFFER ({} characters) to the sender:",
            P::MODE,
            offer.to_armor().len()
        ));
        self.offers
            .write(&offer)
            .await
            .map_err(|e| DialError::Fatal(format!("cannot write the offer: {e}")))?;
        self.offers.say(&self.answers_from);
        let want = expect(Kind::Answer, P::MODE, Some(session));
        let reader = &mut self.reader;
        let answer = tokio::time::timeout(self.limit, async {
            loop {
                match reader.next(&want).await {
                    None => {
                        return Err(DialError::Fatal(
                            "input closed before an ANSWER arrived: paste the sender's answer"
                                .into(),
                        ))
                    }
                    Some(Ok(a)) => return Ok(a),
                    Some(Err(e)) => reader.complain(&e, "ANSWER"),
                }
            }
        })
        .await
        .map_err(|_| {
            DialError::Unreachable(format!(
                "no valid ANSWER within {} s: start again and exchange fresh blobs",
                self.limit.as_secs()
            ))
        })??;
        Ok((prepared, answer))
    }
}

impl<P: ManualPath + Clone> Dialer for ManualDialer<P> {
    type Conn = P::Conn;

    fn unattended(&self) -> bool {
        self.exchange.automatic || self.rejoin.is_some()
    }

    async fn dial(&mut self) -> Result<P::Conn, DialError> {
        if let Some((state, since)) = self.rejoin.take() {
            return self.rejoin_or_offer(state, since).await;
        }
        let (prepared, answer) = self.exchange.offer(&self.path).await?;
        self.connect(prepared, answer).await
    }

    async fn close(self) {
        if let Some((state, _)) = self.rejoin {
            self.path.release(state).await;
        }
        self.releasing.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.releasing.wait()).await;
    }
}
