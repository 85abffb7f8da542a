//! The `nostr` mode: automated pairing of two static Nostr keys through
//! relays, then full ICE + quinn exactly as the `ice` mode (the same
//! [`IcePath`]). The receiver goes first with a request that carries its
//! ICE offer; the sender answers (or refuses when at capacity). The
//! receiver republishes with backoff until answered, bounded overall.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use base64::{engine::general_purpose::STANDARD_NO_PAD, Engine};
use peerport_signaling::{
    blob::{Blob, BlobError, Body, Expect, Kind},
    nostr::{MsgType, NostrConfig, NostrSignaling, Payload},
    Mode,
};
use tokio::{sync::mpsc, task::JoinSet};
use tracing::{info, warn, Instrument};

use super::{
    ice::IcePath,
    manual::{unix_now, ManualPath, Side, MAX_BLOB_AGE},
};
use crate::transport::{
    quinn::QuinnConnection, AcceptError, Acceptor, DialError, Dialer, TunnelConnection,
};

fn encode(kind: Kind, session: [u8; 8], body: Body) -> String {
    let b = Blob {
        kind,
        session,
        created: unix_now(),
        body,
    };
    STANDARD_NO_PAD.encode(b.to_bytes())
}

fn decode(data: &str, kind: Kind, session: Option<[u8; 8]>) -> Result<Blob, BlobError> {
    let bytes = STANDARD_NO_PAD
        .decode(data.trim_end_matches('='))
        .map_err(|_| BlobError::Encoding)?;
    let b = Blob::from_bytes(&bytes)?;
    b.check(&Expect {
        kind,
        mode: Mode::Ice,
        session,
        now: unix_now(),
        max_age: MAX_BLOB_AGE.as_secs(),
    })?;
    Ok(b)
}

fn session_hex(s: [u8; 8]) -> String {
    hex::encode(s)
}

/// Receiver side of the `nostr` mode: each [`Dialer::dial`] requests a
/// session over the relays (republishing until answered), then connects
/// over ICE. Needs no person, so the receiver reconnects by itself.
#[derive(Debug)]
pub struct NostrDialer {
    cfg: NostrConfig,
    ice: IcePath,
    limit: Duration,
}

impl NostrDialer {
    /// Signal with `cfg`, connect over `ice`, each attempt bounded by `limit`.
    pub fn new(cfg: NostrConfig, ice: IcePath, limit: Duration) -> Self {
        NostrDialer { cfg, ice, limit }
    }
}

impl Dialer for NostrDialer {
    type Conn = QuinnConnection;

    fn unattended(&self) -> bool {
        true
    }

    async fn dial(&mut self) -> Result<QuinnConnection, DialError> {
        receiver_connect(&self.cfg, &self.ice, self.limit).await
    }

    async fn close(self) {}
}

/// The longest wait between two publications of the same request.
const REPUBLISH_MAX: Duration = Duration::from_secs(2);

/// Request a session, wait (republishing) for the answer, connect.
async fn receiver_connect(
    cfg: &NostrConfig,
    ice: &IcePath,
    limit: Duration,
) -> Result<QuinnConnection, DialError> {
    let started = tokio::time::Instant::now();
    let mut sig = NostrSignaling::connect(cfg, Some(limit))
        .await
        .map_err(|e| DialError::Unreachable(e.to_string()))?;
    let (prepared, body) = match ice.prepare(Side::Offerer).await {
        Ok(x) => x,
        Err(e) => {
            sig.shutdown().await;
            return Err(e.into());
        }
    };
    let session: [u8; 8] = rand::random();
    let sid = session_hex(session);
    let data = encode(Kind::Offer, session, body);
    let deadline = started + limit;
    let mut delay = Duration::from_secs(1);
    let mut next = started;
    info!(session = %sid, relays = cfg.relays.len(), "requesting a session over nostr");
    let answer = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                sig.shutdown().await;
                return Err(DialError::Unreachable(format!(
                    "no answer from the sender within {} s: is it running with --peer-npub {} and at least one relay in common?",
                    limit.as_secs(),
                    sig_me(cfg)
                )));
            }
            _ = tokio::time::sleep_until(next) => {
                match sig.publisher().send(MsgType::Request, &sid, data.clone()).await {
                    Ok(relay) => tracing::debug!(%relay, "request published"),
                    Err(e) => warn!("publishing the request failed: {e}"),
                }
                // requests are ephemeral events (relays keep none): a sender
                // whose relay connection comes back sees the next one only
                next = tokio::time::Instant::now() + delay;
                delay = (delay * 2).min(REPUBLISH_MAX);
            }
            p = sig.recv() => {
                let Some(p) = p else {
                    return Err(DialError::Unreachable("the nostr client shut down".into()));
                };
                if p.session_id != sid {
                    continue;
                }
                match p.msg_type {
                    MsgType::Answer => break p,
                    MsgType::Refusal => {
                        sig.shutdown().await;
                        return Err(DialError::Busy(format!("the sender refused this receiver: {}", p.data)));
                    }
                    MsgType::Request => {}
                }
            }
        }
    };
    info!(
        ms = started.elapsed().as_millis() as u64,
        "answer received over nostr; connecting"
    );
    sig.shutdown().await;
    let blob = decode(&answer.data, Kind::Answer, Some(session))
        .map_err(|e| DialError::Unreachable(format!("the sender's answer is unusable: {e}")))?;
    Ok(ice
        .connect_ice(prepared, blob.body, Side::Offerer, None)
        .await?)
}

/// Our own npub, for messages.
fn sig_me(cfg: &NostrConfig) -> String {
    peerport_signaling::nostr::parse_secret(&cfg.secret)
        .ok()
        .and_then(|hex| peerport_signaling::nostr::npub_of(&hex).ok())
        .unwrap_or_else(|| "(this receiver's npub)".into())
}

/// Sender: answers requests from the peer key, one ICE+QUIC session each,
/// refusing with a reason when `max_sessions` are active.
pub struct NostrAcceptor {
    rx: mpsc::Receiver<Result<QuinnConnection, AcceptError>>,
    stop: tokio_util::sync::CancellationToken,
    tasks: JoinSet<()>,
}

impl NostrAcceptor {
    /// Connect to the relays (errors surface here) and start answering.
    pub async fn start(
        cfg: &NostrConfig,
        ice: Arc<IcePath>,
        max_sessions: usize,
    ) -> Result<Self, peerport_signaling::nostr::NostrError> {
        let sig = NostrSignaling::connect(cfg, None).await?;
        let routes = crate::net::RouteWatch::new(relay_addresses(&cfg.relays).await);
        let (tx, rx) = mpsc::channel(16);
        let stop = tokio_util::sync::CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(
            answer_requests(sig, routes, ice, max_sessions, tx, stop.clone()).in_current_span(),
        );
        Ok(NostrAcceptor { rx, stop, tasks })
    }
}

impl Acceptor for NostrAcceptor {
    type Conn = QuinnConnection;
    async fn accept(&mut self) -> Option<Result<QuinnConnection, AcceptError>> {
        self.rx.recv().await
    }

    /// Stop answering and disconnect from the relays in order (a dropped
    /// acceptor leaves the relays to see a reset connection).
    async fn shutdown(mut self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
    }
}

/// Why one Nostr request could not be answered.
#[derive(Debug, thiserror::Error)]
enum AnswerError {
    /// This side's ICE agent could not start.
    #[error("cannot prepare ICE: {0}")]
    Prepare(#[source] super::manual::PathError),
    /// No relay took the answer.
    #[error("sending the answer failed: {0}")]
    Send(#[source] peerport_signaling::nostr::NostrError),
}

/// An answer by session id (`blob` is `None` while it is being prepared),
/// so a receiver's republished request gets the same answer again.
#[derive(Clone, Default)]
struct Answer {
    blob: Option<String>,
    /// When its session ended: the entry is forgotten once the offer it
    /// answered has expired, so the map stays bounded.
    ended: Option<std::time::Instant>,
}

type Answered = Arc<std::sync::Mutex<HashMap<String, Answer>>>;

/// The relays' socket addresses (each name looked up once, briefly; a
/// relay whose name does not resolve now is left out).
async fn relay_addresses(relays: &[String]) -> Vec<std::net::SocketAddr> {
    let mut out = Vec::new();
    for r in relays {
        let Ok(u) = url::Url::parse(r) else { continue };
        let (Some(host), Some(port)) = (u.host_str(), u.port_or_known_default()) else {
            continue;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if let Ok(Ok(addrs)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::lookup_host((host, port)),
        )
        .await
        {
            out.extend(addrs);
        }
    }
    out
}

async fn answer_requests(
    mut sig: NostrSignaling,
    mut routes: crate::net::RouteWatch,
    ice: Arc<IcePath>,
    max_sessions: usize,
    tx: mpsc::Sender<Result<QuinnConnection, AcceptError>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let answered: Answered = Arc::default();
    let publisher = sig.publisher();
    let mut sessions = JoinSet::new();
    loop {
        let p = tokio::select! {
            _ = stop.cancelled() => break,
            p = sig.recv() => match p { Some(p) => p, None => break },
            // renumbered: the relay connections left from the old address
            // and are dead, though idle ones would learn it only from their
            // next ping; the receiver's new requests need them now
            change = routes.changed() => {
                info!("{change}: reconnecting to the relays");
                publisher.reconnect_relays().await;
                continue;
            }
        };
        while sessions.try_join_next().is_some() {}
        answered
            .lock()
            .expect("answers")
            .retain(|_, a| a.ended.is_none_or(|t| t.elapsed() < MAX_BLOB_AGE));
        let Payload {
            session_id,
            msg_type,
            data,
            ..
        } = p;
        if msg_type != MsgType::Request {
            continue;
        }
        let known = answered
            .lock()
            .expect("answers")
            .get(&session_id)
            .map(|a| a.blob.clone());
        match known {
            // the receiver republished: our answer may have been lost
            Some(Some(answer)) => {
                if let Err(e) = publisher.send(MsgType::Answer, &session_id, answer).await {
                    warn!("re-sending the answer failed: {e}");
                }
                continue;
            }
            Some(None) => continue, // still preparing that answer
            None => {}
        }
        let offer = match decode(&data, Kind::Offer, None) {
            Ok(b) => b,
            Err(e) => {
                warn!(session = %session_id, "ignoring a request with an unusable offer: {e}");
                continue;
            }
        };
        if session_hex(offer.session) != session_id {
            warn!(session = %session_id, "ignoring a request whose offer names another session");
            continue;
        }
        if max_sessions > 0 && active.load(Ordering::SeqCst) >= max_sessions {
            let reason = format!(
                "the sender is full: it already serves {max_sessions} sessions (its --max-sessions); try again later"
            );
            warn!(session = %session_id, "refusing a request: at capacity");
            if let Err(e) = publisher.send(MsgType::Refusal, &session_id, reason).await {
                warn!("sending the refusal failed: {e}");
            }
            continue;
        }
        // Each request is answered in its own task (ICE gathering and
        // publishing take a while), so many receivers connect in parallel.
        answered
            .lock()
            .expect("answers")
            .insert(session_id.clone(), Answer::default());
        active.fetch_add(1, Ordering::SeqCst);
        let (ice, tx, active, answered, publisher) = (
            ice.clone(),
            tx.clone(),
            active.clone(),
            answered.clone(),
            publisher.clone(),
        );
        let span = tracing::info_span!("setup", session = %session_id);
        sessions.spawn(
            async move {
                let result = async {
                    let (prepared, body) = ice
                        .prepare(Side::Answerer)
                        .await
                        .map_err(|e| AcceptError::new(AnswerError::Prepare(e)))?;
                    let answer = encode(Kind::Answer, offer.session, body);
                    publisher
                        .send(MsgType::Answer, &session_id, answer.clone())
                        .await
                        .map_err(|e| AcceptError::new(AnswerError::Send(e)))?;
                    answered.lock().expect("answers").insert(
                        session_id.clone(),
                        Answer {
                            blob: Some(answer),
                            ended: None,
                        },
                    );
                    ice.connect_ice(prepared, offer.body, Side::Answerer, None)
                        .await
                        .map_err(AcceptError::new)
                }
                .await;
                match result {
                    Ok(conn) => {
                        let watch = conn.clone();
                        if tx.send(Ok(conn)).await.is_ok() {
                            watch.closed().await;
                        }
                        if let Some(a) = answered.lock().expect("answers").get_mut(&session_id) {
                            a.ended = Some(std::time::Instant::now());
                        }
                    }
                    Err(e) => {
                        // forget it, so a republished request is answered afresh
                        answered.lock().expect("answers").remove(&session_id);
                        let _ = tx.send(Err(e)).await;
                    }
                }
                active.fetch_sub(1, Ordering::SeqCst);
            }
            .instrument(span),
        );
    }
    sig.shutdown().await;
    while sessions.join_next().await.is_some() {}
}

/// Settings of the `nostr` mode: the signaling keys and relays, and the
/// ICE path the sessions then take.
#[derive(Debug, Clone)]
pub struct NostrMode {
    /// This side's key, the peer's, the relays.
    pub signaling: NostrConfig,
    /// How the two sides connect once paired.
    pub ice: IcePath,
}

impl super::Mode for NostrMode {
    const NAME: Mode = Mode::Nostr;
    type Acceptor = NostrAcceptor;
    type Dialer = NostrDialer;

    async fn acceptor(
        &self,
        cx: &super::ModeContext,
    ) -> Result<super::Accepting<NostrAcceptor>, super::ModeError> {
        use peerport_signaling::nostr::{npub_of, npub_of_public};
        let n = &self.signaling;
        let acceptor = NostrAcceptor::start(n, Arc::new(self.ice.clone()), cx.max_sessions)
            .await
            .map_err(super::ModeError::Nostr)?;
        Ok(super::Accepting {
            acceptor,
            // the blobs pin each side's certificate: the transport authenticates
            auth: crate::engine::Authorizer::transport_pinned(),
            announce: super::Announce {
                identity: Some(npub_of(&n.secret).map_err(super::ModeError::Nostr)?),
                answers: Some(npub_of_public(&n.peer)),
                relays: n.relays.len(),
                ..Default::default()
            },
            metrics: None,
            input_closed: None,
        })
    }

    async fn dialer(
        &self,
        cx: &super::ModeContext,
    ) -> Result<super::Dialing<NostrDialer>, super::ModeError> {
        Ok(super::Dialing {
            dialer: NostrDialer::new(self.signaling.clone(), self.ice.clone(), cx.connect_timeout),
            metrics: None,
        })
    }

    fn awaiting(&self) -> super::Awaiting {
        super::Awaiting::Npub(peerport_signaling::nostr::npub_of_public(
            &self.signaling.peer,
        ))
    }
}
