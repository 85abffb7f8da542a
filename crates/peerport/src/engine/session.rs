//! One session = one QUIC connection between a receiver and a sender.
//!
//! The receiver opens the first stream and sends a Hello (token, protocol);
//! the sender checks it against its [`Authorizer`] and its `--source`
//! protocol and replies. Only after an OK does the sender accept TCP streams
//! or read datagrams, so an unauthorized peer never reaches the service.
//! The Hello stream stays open for the life of the session.
//!
//! A receiver runs [`hello`] then [`forward`] per session; its local side
//! ([`Front`]) outlives every session (see [`crate::Receiver`]).

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Instant,
};

use crate::EVENT;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use super::error::SessionError;
use super::{
    auth::Authorizer,
    config::EngineConfig,
    front::Front,
    io::open_bi_retry,
    io::{read_reply, read_request},
    policy::Catalog,
    resume::{self, read_ext, Registry},
    routes::Routes,
    tally::{Gauge, Ledger, Tally},
    tcp, udp,
};
use crate::proto::close::{close_code, RefusalKind};
use crate::{
    addr::Protocol,
    proto::{
        header::{Kind, Reply, Request, ResumeOffer, Status, Want},
        resume::ReplyExt,
    },
    transport::{CloseReason, TunnelConnection},
};

/// What a sender needs to serve sessions.
#[derive(Debug, Clone)]
pub struct SenderContext {
    /// The services and destination rules (replaced on reload).
    pub catalog: Arc<tokio::sync::watch::Sender<Arc<Catalog>>>,
    /// Who may connect.
    pub auth: Authorizer,
    /// Engine tunables.
    pub engine: Arc<EngineConfig>,
    /// Where sessions are counted.
    pub ledger: Arc<Ledger>,
    /// Fires when the sender starts to stop (drain): new TCP connections
    /// are refused, open ones go on.
    pub stopping: CancellationToken,
}

/// Sender side of one session: authenticate, then forward until the
/// connection ends or `cancel` fires. With a `registry`, a receiver that
/// asks gets a resumable session: TCP streams continue and UDP flows keep their sockets.
pub async fn serve_sender_session<C: TunnelConnection>(
    conn: C,
    ctx: Arc<SenderContext>,
    registry: Option<Arc<Registry<C>>>,
    cancel: CancellationToken,
) -> Result<(), SessionError> {
    let peer = conn.peer_id();
    let ledger = &ctx.ledger;
    let handshake = Gauge::up(&ledger.handshakes);
    let hello = tokio::time::timeout(ctx.engine.header_timeout, async {
        let (send, mut recv) = conn.accept_bi().await?;
        let req = read_request(&mut recv)
            .await
            .map_err(|e| SessionError::Protocol(format!("bad hello: {e}")))?;
        Ok::<_, SessionError>((send, recv, req))
    })
    .await;
    let (mut send, recv, req) = match hello {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            ledger.refused_protocol.fetch_add(1, Relaxed);
            conn.close(close_code::PROTOCOL, "no valid hello");
            return Err(e);
        }
        Err(_) => {
            ledger.refused_protocol.fetch_add(1, Relaxed);
            conn.close(close_code::PROTOCOL, "no hello in time");
            return Err(SessionError::Protocol("peer sent no hello in time".into()));
        }
    };
    if req.kind != Some(Kind::Hello) {
        ledger.refused_protocol.fetch_add(1, Relaxed);
        conn.close(close_code::PROTOCOL, "expected hello");
        return Err(SessionError::Protocol(
            "first stream was not a hello".into(),
        ));
    }
    if let Err(reason) = ctx.auth.check(&peer, req.token.as_deref()) {
        warn!(%peer, "refusing unauthorized peer: {reason}");
        ledger.refused_unauthorized.fetch_add(1, Relaxed);
        refuse_hello(&conn, &mut send, Status::Unauthorized, &reason).await;
        return Err(SessionError::Unauthorized { peer, reason });
    }
    let routes = match Routes::from_hello(&req, &peer, ctx.catalog.subscribe(), ledger.clone()) {
        Ok(r) => Arc::new(r),
        Err(refusal) => {
            warn!(%peer, "refusing the receiver: {}", refusal.message);
            let counter = match refusal.status {
                Status::Unauthorized => &ledger.refused_unauthorized,
                _ => &ledger.refused_protocol,
            };
            counter.fetch_add(1, Relaxed);
            refuse_hello(&conn, &mut send, refusal.status, &refusal.message).await;
            return Err(match refusal.status {
                Status::Unauthorized => SessionError::Unauthorized {
                    peer,
                    reason: refusal.message,
                },
                _ => SessionError::Protocol(refusal.message),
            });
        }
    };
    let opened = match (&req.resume, &registry) {
        (Some(offer), Some(reg)) => reg.open(offer.ticket(), &peer, || ledger.open_session()),
        _ => None,
    };
    let services = (!routes.legacy()).then_some(routes.len() as u16);
    let reply = match &opened {
        Some(o) => Reply::ok_with(&ReplyExt {
            ticket: Some(o.session.ticket()),
            resumed: Some(o.resumed),
            window_secs: Some(o.session.window().as_secs().min(u32::MAX as u64) as u32),
            delivered: None,
            services,
            refused: routes.refused().to_vec(),
        }),
        None if services.is_some() => Reply::ok_with(&ReplyExt {
            services,
            refused: routes.refused().to_vec(),
            ..Default::default()
        }),
        None => Reply::ok().encode(),
    };
    if send.write_all(&reply).await.is_err() {
        return Err(SessionError::ConnectionLost(conn.closed().await));
    }
    info!(target: EVENT, %peer, software = req.software.as_deref().unwrap_or("?"), services = %routes.summary(), "peer authenticated");
    drop(handshake);
    ledger.connections.fetch_add(1, Relaxed);
    let Some(opened) = opened else {
        let tally = ledger.open_session();
        tally.attach(&conn);
        let r = serve_routes(conn, &ctx, routes, None, tally.clone(), cancel).await;
        tally.detach();
        return r;
    };
    let session = opened.session;
    let tally = session.tally().clone();
    tally.attach(&conn);
    if opened.resumed {
        ledger.resumes.fetch_add(1, Relaxed);
        info!(
            streams = session.streams(),
            "session resumed: its open connections continue"
        );
    }
    let generation = session.attach_connection(&conn);
    if opened.resumed {
        session.abandon_unclaimed(generation, ctx.engine.header_timeout * 3);
    }
    let forward = serve_routes(
        conn,
        &ctx,
        routes,
        Some(session.clone()),
        tally.clone(),
        cancel,
    );
    let result = resume::with_control(session.clone(), generation, (send, recv), forward).await;
    tally.detach();
    if let Some(reg) = &registry {
        match &result {
            Err(e) if ended_on_purpose(e) => {
                info!("the receiver ended the session: closing its connections");
                reg.end(&session).await;
            }
            Err(SessionError::Unauthorized { .. }) => reg.end(&session).await,
            _ => reg.detached(&session, generation),
        }
    }
    result
}

/// Refuse a hello: the reply with its status and message, then close the
/// connection with the matching code once the reply had a moment to leave.
async fn refuse_hello<C: TunnelConnection>(
    conn: &C,
    send: &mut C::Send,
    status: Status,
    message: &str,
) {
    let _ = send.write_all(&Reply::err(status, message).encode()).await;
    let _ = send.shutdown().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (code, why) = match status {
        Status::Unauthorized => (close_code::UNAUTHORIZED, "unauthorized"),
        Status::ProtocolMismatch => (close_code::PROTOCOL, "protocol mismatch"),
        _ => (close_code::PROTOCOL, "refused"),
    };
    conn.close(code, why);
}

/// Serve a session's routes: TCP streams and UDP flows as its wants ask,
/// side by side, until the connection ends, `cancel` fires, or a reload
/// allows none of them (the connection is then closed with
/// [`close_code::FORBIDDEN`] and the reason; a reload that disallows some
/// closes only their streams and flows).
async fn serve_routes<C: TunnelConnection>(
    conn: C,
    ctx: &SenderContext,
    routes: Arc<Routes>,
    session: Option<Arc<resume::Session<C>>>,
    tally: Arc<Tally>,
    cancel: CancellationToken,
) -> Result<(), SessionError> {
    let stop = cancel.child_token();
    // the watcher first: when it closes the connection, its reason is the result
    let policy = async {
        tokio::select! {
            _ = stop.cancelled() => Ok(()),
            r = routes.nothing_allowed() => {
                warn!(peer = %conn.peer_id(), "the reloaded configuration no longer allows this session: {}", r.message);
                conn.close(close_code::FORBIDDEN, &r.message);
                Err(SessionError::Unauthorized { peer: conn.peer_id(), reason: r.message })
            }
        }
    };
    let mut parts: Vec<Part<'_>> = vec![Box::pin(policy)];
    if routes.carries(Protocol::Tcp) {
        parts.push(Box::pin(tcp::serve_sender(
            conn.clone(),
            routes.clone(),
            ctx.engine.clone(),
            session.clone(),
            tally.clone(),
            ctx.stopping.clone(),
            stop.clone(),
        )));
    }
    if routes.carries(Protocol::Udp) {
        parts.push(Box::pin(udp::serve_sender(
            conn.clone(),
            routes.clone(),
            ctx.engine.clone(),
            session.as_ref().map(|s| s.udp_flows()),
            tally.clone(),
            stop.clone(),
        )));
    }
    first_error(parts, &stop).await
}

/// One part of a session (TCP, UDP, a watcher).
type Part<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SessionError>> + Send + 'a>>;

/// Run `parts` (each stops when `stop` fires) to the end; the first to end
/// stops the others. The first error, if any, is the result.
async fn first_error(parts: Vec<Part<'_>>, stop: &CancellationToken) -> Result<(), SessionError> {
    let results = futures::future::join_all(parts.into_iter().map(|p| async move {
        let r = p.await;
        stop.cancel();
        r
    }))
    .await;
    results.into_iter().find(|r| r.is_err()).unwrap_or(Ok(()))
}

/// Whether the peer closed the connection normally (it stopped, or ended
/// the session): nothing is left to resume.
pub fn ended_on_purpose(e: &SessionError) -> bool {
    matches!(
        e,
        SessionError::ConnectionLost(CloseReason::Peer {
            code: close_code::NORMAL,
            ..
        })
    )
}

/// The receiver's open hello stream: kept for the life of the session
/// (it carries the acknowledgements of resumable streams).
pub struct Hello<C: TunnelConnection> {
    stream: (C::Send, C::Recv),
    /// The sender's reply extension: present when it made the session resumable.
    pub ext: Option<ReplyExt>,
}

/// Receiver side of a new session: say hello (token, protocol) and read the
/// sender's answer. A refusal is typed, whether the sender replied with a
/// status or closed the connection with a refusal code.
pub async fn hello<C: TunnelConnection>(
    conn: &C,
    token: Option<&[u8]>,
    wants: &[Want],
    engine: &EngineConfig,
    resume: Option<ResumeOffer>,
) -> Result<Hello<C>, SessionError> {
    let started = Instant::now();
    let asked_resume = resume.is_some();
    let protocol = wants.first().map_or(Protocol::Tcp, |w| w.protocol);
    // one default service: today's hello, which every sender understands
    let listed = if Want::default_only(wants) {
        Vec::new()
    } else {
        wants.to_vec()
    };
    let listed_n = listed.len();
    let (mut send, mut recv) = open_bi_retry(conn).await?;
    let lost = |conn: &C| {
        let conn = conn.clone();
        async move {
            // the connection is going down: tell the reason (a refusal code?)
            match tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await {
                Ok(reason) => match reason.refusal() {
                    Some(kind) => SessionError::Refused {
                        kind,
                        message: format!("the sender closed the connection ({reason})"),
                    },
                    None => SessionError::ConnectionLost(reason),
                },
                Err(_) => SessionError::Protocol("the hello stream failed".into()),
            }
        }
    };
    if send
        .write_all(
            &Request::hello(token, protocol)
                .with_resume(resume)
                .with_wants(listed)
                .encode(),
        )
        .await
        .is_err()
    {
        return Err(lost(conn).await);
    }
    let reply = match tokio::time::timeout(engine.header_timeout, read_reply(&mut recv)).await {
        Err(_) => {
            return Err(SessionError::Protocol(
                "the sender did not answer the hello in time".into(),
            ))
        }
        Ok(Err(_)) => return Err(lost(conn).await),
        Ok(Ok(r)) => r,
    };
    let ext = match reply.status {
        Status::Ok => None,
        Status::OkExt => {
            match tokio::time::timeout(engine.header_timeout, read_ext(&mut recv)).await {
                Ok(Ok(e)) if e.ticket.is_some() || !asked_resume => Some(e),
                Ok(Ok(_)) => {
                    return Err(SessionError::Protocol(
                        "the sender's hello reply has no session ticket".into(),
                    ))
                }
                Ok(Err(e)) => return Err(SessionError::Protocol(format!("bad hello reply: {e}"))),
                Err(_) => return Err(lost(conn).await),
            }
        }
        status => {
            return Err(SessionError::Refused {
                kind: RefusalKind::from_status(status),
                message: reply.message,
            })
        }
    };
    if listed_n > 0 && ext.as_ref().and_then(|e| e.services) != Some(listed_n as u16) {
        return Err(SessionError::Refused {
            kind: RefusalKind::Other,
            message: "the sender runs an older peerport that serves one service only: upgrade it to reach named services or destinations".into(),
        });
    }
    for (i, why) in ext.iter().flat_map(|e| &e.refused) {
        if let Some(w) = wants.get(*i as usize) {
            warn!("the sender does not allow {w} now, and refuses its connections (the tunnel carries the others): {why}");
        }
    }
    info!(
        target: EVENT,
        path = %conn.path(),
        ms = started.elapsed().as_millis() as u64,
        "session established"
    );
    Ok(Hello {
        stream: (send, recv),
        ext,
    })
}

/// Receiver side of an established session: forward every local front
/// (front `i` is the hello's want `i`; `legacy`: the hello listed none)
/// until the connection ends or `cancel` fires. The fronts stay with the
/// caller for the next session.
#[allow(clippy::too_many_arguments)]
pub async fn forward<C: TunnelConnection>(
    conn: C,
    hello: Hello<C>,
    fronts: &mut [Front],
    legacy: bool,
    engine: Arc<EngineConfig>,
    resumable: Option<Arc<resume::Session<C>>>,
    tally: Arc<Tally>,
    cancel: CancellationToken,
) -> Result<(), SessionError> {
    let (send, recv) = hello.stream;
    let generation = resumable.as_ref().map(|s| {
        let generation = s.attach_connection(&conn);
        let resumed = s.resume_all(&conn);
        if resumed > 0 {
            info!(
                streams = resumed,
                "session resumed: resuming its open connections"
            );
        }
        generation
    });
    let stop = cancel.child_token();
    let mut udp = Vec::new();
    let mut parts: Vec<Part<'_>> = Vec::new();
    for (i, f) in fronts.iter_mut().enumerate() {
        match f {
            Front::Tcp(q) => parts.push(Box::pin(tcp::run_receiver(
                conn.clone(),
                q,
                (!legacy).then_some(i as u16),
                resumable.clone(),
                tally.clone(),
                engine.max_connections,
                stop.clone(),
            ))),
            Front::Udp(u) => udp.push(&*u),
        }
    }
    if !udp.is_empty() {
        parts.push(Box::pin(udp::run_receiver(
            conn.clone(),
            &udp,
            engine,
            stop.clone(),
        )));
    }
    let all = first_error(parts, &stop);
    match (resumable, generation) {
        (Some(s), Some(g)) => resume::with_control(s, g, (send, recv), all).await,
        _ => {
            let _keep = (send, recv);
            all.await
        }
    }
}
