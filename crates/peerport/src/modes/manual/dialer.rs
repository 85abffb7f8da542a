//! The receiver's side of the copy-paste modes: offer, wait for the answer,
//! connect; rejoin the same endpoint after a loss before offering again.

use std::time::Duration;

use peerport_signaling::blob::{Blob, Kind};
use tracing::{info, warn};

use super::{
    blobs::{expect, BlobReader, BlobSink, BlobSource},
    unix_now, ManualPath, Side, REJOIN_ATTEMPTS,
};
use crate::transport::{DialError, Dialer};

/// Receiver side of a copy-paste mode: each [`Dialer::dial`] writes a
/// fresh OFFER, waits for the matching ANSWER (asking again after a bad
/// paste) and connects. After a lost session it first connects again to
/// the same sender endpoint without a person (it is unattended while it
/// holds that way back), and makes a fresh offer when that fails.
pub struct ManualDialer<P: ManualPath> {
    pub(super) path: P,
    pub(super) offers: BlobSink,
    pub(super) reader: BlobReader,
    pub(super) answers_from: String,
    pub(super) limit: Duration,
    /// The last session's way back to the sender, and failed tries.
    pub(super) rejoin: Option<(P::Rejoin, u32)>,
    pub(super) rejoin_limit: Duration,
}

impl<P: ManualPath> ManualDialer<P> {
    /// Offers go to `offers`, answers are read from `answers`; each
    /// exchange must complete within `limit`. After a lost session the
    /// dialer first reconnects without a new exchange (each try within
    /// `rejoin_limit`), and makes a fresh
    /// offer after a few failed tries.
    pub fn new(
        path: P,
        offers: BlobSink,
        answers: BlobSource,
        limit: Duration,
        rejoin_limit: Duration,
    ) -> Self {
        let answers_from = match &answers {
            BlobSource::Console(_) => "then paste the sender's ANSWER here:".to_string(),
            BlobSource::File(p) => format!("waiting for the ANSWER in {}", p.display()),
        };
        ManualDialer {
            path,
            offers,
            reader: BlobReader::new(answers),
            answers_from,
            limit,
            rejoin: None,
            rejoin_limit,
        }
    }

    pub(super) async fn try_rejoin(&mut self) -> Option<Result<P::Conn, DialError>> {
        let (state, failures) = self.rejoin.as_mut()?;
        match self
            .path
            .rejoin(state, Side::Offerer, self.rejoin_limit)
            .await
        {
            Ok(conn) => {
                *failures = 0;
                Some(Ok(conn))
            }
            Err(e) => {
                *failures += 1;
                if *failures >= REJOIN_ATTEMPTS || e.permanent {
                    if let Some((state, _)) = self.rejoin.take() {
                        self.path.release(state).await;
                    }
                    warn!("could not reconnect without a new exchange ({e}); making a fresh offer");
                }
                Some(Err(DialError::Unreachable(format!(
                    "reconnecting to the same sender endpoint failed: {e}"
                ))))
            }
        }
    }
}

impl<P: ManualPath> Dialer for ManualDialer<P> {
    type Conn = P::Conn;

    fn unattended(&self) -> bool {
        self.rejoin.is_some()
    }

    async fn dial(&mut self) -> Result<P::Conn, DialError> {
        match self.try_rejoin().await {
            None => {}
            // the way back is given up (this host was renumbered, or the
            // tries ran out): the fresh offer comes now, not after a backoff
            Some(Err(_)) if self.rejoin.is_none() => {}
            Some(r) => return r,
        }
        let (prepared, body) = self.path.prepare(Side::Offerer).await?;
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
        info!("answer accepted; connecting");
        let (conn, rejoin) = self
            .path
            .connect(prepared, answer.body, Side::Offerer, None)
            .await?;
        self.rejoin = rejoin.map(|r| (r, 0));
        Ok(conn)
    }

    async fn close(self) {
        if let Some((state, _)) = self.rejoin {
            self.path.release(state).await;
        }
    }
}
