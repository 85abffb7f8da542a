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

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    close_code,
    io::{read_reply, read_request},
    open_bi_retry,
    resume::{self, read_ext, Registry},
    tally::{Gauge, Ledger, Tally},
    tcp, udp, Authorizer, EngineConfig, Front,
};
use crate::{
    addr::{ForwardAddr, Protocol},
    proto::{
        header::{Kind, Reply, Request, ResumeOffer, Status},
        resume::ReplyExt,
    },
    transport::{CloseReason, ConnError, TunnelConnection},
};

/// Why the sender refused a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Wrong or missing token, or not an allowed peer.
    Unauthorized,
    /// The sender forwards the other protocol (tcp vs udp).
    ProtocolMismatch,
    /// The sender serves its `--max-sessions` already.
    Busy,
    /// Another receiver with the same identity connected, and the sender
    /// keeps only the newest session per identity.
    Superseded,
    /// Any other refusal.
    Other,
}

impl RefusalKind {
    /// Whether asking again later may succeed (only a full sender).
    pub fn retryable(self) -> bool {
        self == RefusalKind::Busy
    }

    fn from_status(s: Status) -> Self {
        match s {
            Status::Unauthorized => RefusalKind::Unauthorized,
            Status::ProtocolMismatch => RefusalKind::ProtocolMismatch,
            Status::Busy => RefusalKind::Busy,
            _ => RefusalKind::Other,
        }
    }

    /// The refusal a close code stands for, if it is one.
    pub fn from_close(reason: &CloseReason) -> Option<Self> {
        match reason {
            CloseReason::Peer { code, .. } => match *code {
                close_code::UNAUTHORIZED => Some(RefusalKind::Unauthorized),
                close_code::PROTOCOL => Some(RefusalKind::ProtocolMismatch),
                close_code::BUSY => Some(RefusalKind::Busy),
                close_code::SUPERSEDED => Some(RefusalKind::Superseded),
                _ => None,
            },
            _ => None,
        }
    }
}

/// How a session ended, other than by request.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The sender said no.
    #[error("the sender refused this receiver: {message}")]
    Refused {
        /// Why.
        kind: RefusalKind,
        /// Sender's message.
        message: String,
    },
    /// The peer failed authentication (sender side).
    #[error("refused peer {peer}: {reason}")]
    Unauthorized {
        /// Peer id.
        peer: String,
        /// Why.
        reason: String,
    },
    /// The QUIC connection died.
    #[error("tunnel connection lost: {0}")]
    ConnectionLost(CloseReason),
    /// The peer did not follow the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl SessionError {
    /// The refusal behind this end, whether the sender replied with a
    /// status or closed the connection with a refusal code.
    pub fn refusal(&self) -> Option<RefusalKind> {
        match self {
            SessionError::Refused { kind, .. } => Some(*kind),
            SessionError::ConnectionLost(r) => RefusalKind::from_close(r),
            _ => None,
        }
    }

    /// Whether a new session may succeed where this one ended.
    pub fn retryable(&self) -> bool {
        match self {
            SessionError::Refused { kind, .. } => kind.retryable(),
            SessionError::Unauthorized { .. } => false,
            SessionError::ConnectionLost(r) => r.retryable(),
            SessionError::Protocol(_) => true,
        }
    }
}

impl From<ConnError> for SessionError {
    fn from(e: ConnError) -> Self {
        let ConnError::Lost(r) = e;
        SessionError::ConnectionLost(r)
    }
}

/// What a sender needs to serve sessions.
#[derive(Debug, Clone)]
pub struct SenderContext {
    /// The service to forward to.
    pub source: Arc<ForwardAddr>,
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
        let _ = send
            .write_all(&Reply::err(Status::Unauthorized, &reason).encode())
            .await;
        let _ = send.shutdown().await;
        // give the reply a moment to leave before closing the connection
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        conn.close(close_code::UNAUTHORIZED, "unauthorized");
        return Err(SessionError::Unauthorized { peer, reason });
    }
    let wanted = req.protocol.unwrap_or(Protocol::Tcp);
    if wanted != ctx.source.protocol {
        let msg = format!(
            "this sender forwards {} ({}), but the receiver's --target is {}: use a {}:// target",
            ctx.source.protocol, ctx.source, wanted, ctx.source.protocol
        );
        ledger.refused_protocol.fetch_add(1, Relaxed);
        let _ = send
            .write_all(&Reply::err(Status::ProtocolMismatch, &msg).encode())
            .await;
        let _ = send.shutdown().await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        conn.close(close_code::PROTOCOL, "protocol mismatch");
        return Err(SessionError::Protocol(msg));
    }
    let opened = match (&req.resume, &registry, ctx.source.protocol) {
        (Some(offer), Some(reg), _) => reg.open(offer.ticket(), &peer, || ledger.open_session()),
        _ => None,
    };
    let reply = match &opened {
        Some(o) => ReplyExt {
            ticket: Some(o.session.ticket()),
            resumed: Some(o.resumed),
            window_secs: Some(o.session.window().as_secs().min(u32::MAX as u64) as u32),
            delivered: None,
        }
        .reply_ok(),
        None => Reply::ok().encode(),
    };
    if send.write_all(&reply).await.is_err() {
        return Err(SessionError::ConnectionLost(conn.closed().await));
    }
    info!(%peer, software = req.software.as_deref().unwrap_or("?"), "peer authenticated");
    drop(handshake);
    ledger.connections.fetch_add(1, Relaxed);
    let Some(opened) = opened else {
        let tally = ledger.open_session();
        tally.attach(&conn);
        let (source, engine) = (ctx.source.clone(), ctx.engine.clone());
        let r = match ctx.source.protocol {
            Protocol::Tcp => {
                let stopping = ctx.stopping.clone();
                tcp::serve_sender(conn, source, engine, None, tally.clone(), stopping, cancel).await
            }
            Protocol::Udp => {
                udp::serve_sender(conn, source, engine, None, tally.clone(), cancel).await
            }
        };
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
    let generation = session.attach_connection();
    if opened.resumed {
        session.abandon_unclaimed(generation, ctx.engine.header_timeout * 3);
    }
    let forward = async {
        match ctx.source.protocol {
            Protocol::Tcp => {
                tcp::serve_sender(
                    conn,
                    ctx.source.clone(),
                    ctx.engine.clone(),
                    Some(session.clone()),
                    tally.clone(),
                    ctx.stopping.clone(),
                    cancel,
                )
                .await
            }
            Protocol::Udp => {
                let flows = Some(session.udp_flows());
                let (source, engine) = (ctx.source.clone(), ctx.engine.clone());
                udp::serve_sender(conn, source, engine, flows, tally.clone(), cancel).await
            }
        }
    };
    let result = resume::with_control(session.clone(), generation, (send, recv), forward).await;
    tally.detach();
    if let Some(reg) = &registry {
        if result.as_ref().err().is_some_and(ended_on_purpose) {
            info!("the receiver ended the session: closing its connections");
            reg.end(&session).await;
        } else {
            reg.detached(&session, generation);
        }
    }
    result
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
    protocol: Protocol,
    engine: &EngineConfig,
    resume: Option<ResumeOffer>,
) -> Result<Hello<C>, SessionError> {
    let started = Instant::now();
    let (mut send, mut recv) = open_bi_retry(conn).await?;
    let lost = |conn: &C| {
        let conn = conn.clone();
        async move {
            // the connection is going down: tell the reason (a refusal code?)
            match tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await {
                Ok(reason) => match RefusalKind::from_close(&reason) {
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
        .write_all(&Request::hello(token, protocol).with_resume(resume).encode())
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
                Ok(Ok(e)) if e.ticket.is_some() => Some(e),
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
    info!(
        path = %conn.path_summary(),
        ms = started.elapsed().as_millis() as u64,
        "session established"
    );
    Ok(Hello {
        stream: (send, recv),
        ext,
    })
}

/// Receiver side of an established session: forward the receiver's local
/// side until the connection ends or `cancel` fires. The local side stays
/// with the caller for the next session.
pub async fn forward<C: TunnelConnection>(
    conn: C,
    hello: Hello<C>,
    front: &mut Front,
    engine: Arc<EngineConfig>,
    resumable: Option<Arc<resume::Session<C>>>,
    tally: Arc<Tally>,
    cancel: CancellationToken,
) -> Result<(), SessionError> {
    let (send, recv) = hello.stream;
    let Some(session) = resumable else {
        let _keep = (send, recv);
        return match front {
            Front::Tcp(q) => tcp::run_receiver(conn, q, None, tally, cancel).await,
            Front::Udp(u) => udp::run_receiver(conn, u, engine, cancel).await,
        };
    };
    let generation = session.attach_connection();
    let resumed = session.resume_all(&conn);
    if resumed > 0 {
        info!(
            streams = resumed,
            "session resumed: resuming its open connections"
        );
    }
    let forward = async {
        match front {
            Front::Tcp(q) => tcp::run_receiver(conn, q, Some(session.clone()), tally, cancel).await,
            Front::Udp(u) => udp::run_receiver(conn, u, engine, cancel).await,
        }
    };
    resume::with_control(session.clone(), generation, (send, recv), forward).await
}
