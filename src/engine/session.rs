//! One session = one QUIC connection between a receiver and a sender.
//!
//! The receiver opens the first stream and sends a Hello (token, protocol);
//! the sender checks it against its [`Authorizer`] and its `--source`
//! protocol and replies. Only after an OK does the sender accept TCP streams
//! or read datagrams, so an unauthorized peer never reaches the service.
//! The Hello stream stays open for the life of the session.

use std::{sync::Arc, time::Instant};

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    close_code,
    io::{read_reply, read_request},
    open_bi_retry, tcp, udp, Authorizer, BoundTarget, EngineConfig,
};
use crate::{
    addr::{ForwardAddr, Protocol},
    proto::header::{Kind, Reply, Request, Status},
    transport::TunnelConnection,
};

/// How a session ended, other than by request.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The sender said no.
    #[error("the sender refused this receiver ({status:?}): {message}")]
    Refused {
        /// Reason code.
        status: Status,
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
    ConnectionLost(String),
    /// The peer did not follow the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
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
}

/// Sender side of one session: authenticate, then forward until the
/// connection ends or `cancel` fires.
pub async fn serve_sender_session<C: TunnelConnection>(
    conn: C,
    ctx: Arc<SenderContext>,
    cancel: CancellationToken,
) -> Result<(), SessionError> {
    let peer = conn.peer_id();
    let hello = tokio::time::timeout(ctx.engine.header_timeout, async {
        let (send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(|e| SessionError::ConnectionLost(e.to_string()))?;
        let req = read_request(&mut recv)
            .await
            .map_err(|e| SessionError::Protocol(format!("bad hello: {e}")))?;
        Ok::<_, SessionError>((send, recv, req))
    })
    .await;
    let (mut send, _recv, req) = match hello {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            conn.close(close_code::PROTOCOL, "no valid hello");
            return Err(e);
        }
        Err(_) => {
            conn.close(close_code::PROTOCOL, "no hello in time");
            return Err(SessionError::Protocol("peer sent no hello in time".into()));
        }
    };
    if req.kind != Some(Kind::Hello) {
        conn.close(close_code::PROTOCOL, "expected hello");
        return Err(SessionError::Protocol(
            "first stream was not a hello".into(),
        ));
    }
    if let Err(reason) = ctx.auth.check(&peer, req.token.as_deref()) {
        warn!(%peer, "refusing unauthorized peer: {reason}");
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
        let _ = send
            .write_all(&Reply::err(Status::ProtocolMismatch, &msg).encode())
            .await;
        let _ = send.shutdown().await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        conn.close(close_code::PROTOCOL, "protocol mismatch");
        return Err(SessionError::Protocol(msg));
    }
    send.write_all(&Reply::ok().encode())
        .await
        .map_err(|e| SessionError::ConnectionLost(e.to_string()))?;
    info!(%peer, software = req.software.as_deref().unwrap_or("?"), "peer authenticated");
    match ctx.source.protocol {
        Protocol::Tcp => {
            tcp::serve_sender(conn, ctx.source.clone(), ctx.engine.clone(), cancel).await
        }
        Protocol::Udp => {
            udp::serve_sender(conn, ctx.source.clone(), ctx.engine.clone(), cancel).await
        }
    }
}

/// Receiver side of one session: say hello, then forward the bound target
/// until the connection ends (an error: the caller exits non-zero) or
/// `cancel` fires.
pub async fn run_receiver_session<C: TunnelConnection>(
    conn: C,
    target: BoundTarget,
    token: Option<Vec<u8>>,
    engine: Arc<EngineConfig>,
    cancel: CancellationToken,
) -> Result<(), SessionError> {
    let started = Instant::now();
    let (mut send, mut recv) = open_bi_retry(&conn)
        .await
        .map_err(|e| SessionError::ConnectionLost(e.to_string()))?;
    send.write_all(&Request::hello(token.as_deref(), target.protocol()).encode())
        .await
        .map_err(|e| SessionError::ConnectionLost(e.to_string()))?;
    let reply = tokio::time::timeout(engine.header_timeout, read_reply(&mut recv))
        .await
        .map_err(|_| SessionError::Protocol("the sender did not answer the hello in time".into()))?
        .map_err(|e| match conn_close_hint(&e.to_string()) {
            Some(m) => SessionError::Refused {
                status: Status::Unauthorized,
                message: m,
            },
            None => SessionError::Protocol(format!("no answer to hello: {e}")),
        })?;
    if reply.status != Status::Ok {
        return Err(SessionError::Refused {
            status: reply.status,
            message: reply.message,
        });
    }
    info!(
        path = %conn.path_summary(),
        ms = started.elapsed().as_millis() as u64,
        "session established"
    );
    let _hello_stream = (send, recv);
    match target {
        BoundTarget::Tcp(listener) => tcp::run_receiver(conn, listener, cancel).await,
        BoundTarget::Udp(sock) => udp::run_receiver(conn, sock, engine, cancel).await,
    }
}

fn conn_close_hint(err: &str) -> Option<String> {
    err.contains("unauthorized")
        .then(|| "the sender closed the connection as unauthorized".to_string())
}
