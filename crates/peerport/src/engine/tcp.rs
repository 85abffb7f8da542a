//! TCP over QUIC streams: one bidirectional stream per TCP connection.
//!
//! The receiver writes the stream header as soon as it opens a stream, so the
//! sender sees the stream (and connects to its source) before the client
//! sends anything: server-speaks-first protocols such as SSH work. Each
//! direction ends on its own: a client that shuts down its write side
//! finishes the QUIC stream, the sender shuts down its write side towards the
//! service, and the reply still flows back (half-close).
//!
//! In a resumable session (see [`super::resume`]) each stream carries an
//! id; once set up, it is handed to the session, which keeps it through
//! lost connections.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, warn, Instrument};

use super::{
    config::EngineConfig,
    error::SessionError,
    front::{TcpQueue, Waiting},
    io::open_bi_retry,
    io::{read_reply, read_request},
    policy::Route,
    pump::pump,
    resume::{Attach, Session},
    routes::Routes,
    socks,
    tally::{ServiceCounts, Tally},
};
use crate::proto::close::close_code;
use std::sync::atomic::Ordering::Relaxed;

use crate::{
    addr::Protocol,
    net,
    proto::header::{Kind, Reply, Request, Status},
    transport::{TunnelConnection, TunnelSend},
};

/// Receiver: carry each local TCP client waiting in `queue` over a new
/// stream until the connection dies or `cancel` fires; a client beyond
/// `limit` connections in the session is closed at once (never left
/// waiting for a stream the QUIC connection cannot open). The queue (and
/// its listener) stays with the caller for the next session.
#[allow(clippy::too_many_arguments)]
pub async fn run_receiver<C: TunnelConnection>(
    conn: C,
    queue: &mut TcpQueue,
    service: Option<u16>,
    session: Option<Arc<Session<C>>>,
    tally: Arc<Tally>,
    limit: usize,
    cancel: CancellationToken,
) -> Result<(), SessionError> {
    let tasks = TaskTracker::new();
    let child = cancel.child_token();
    let requeue = queue.requeue();
    let mut full = Full::default();
    let result = loop {
        tokio::select! {
            // a connection known to be gone takes no more clients
            biased;
            _ = cancel.cancelled() => break Ok(()),
            reason = conn.closed() => break Err(SessionError::ConnectionLost(reason)),
            w = queue.next() => {
                let Some(starting) = tally.start_stream(limit) else {
                    full.refused(&w.client, limit);
                    continue; // dropping `w` closes the client
                };
                let (conn, child, requeue) = (conn.clone(), child.clone(), requeue.clone());
                let (session, tally, counts) = (session.clone(), tally.clone(), queue.counts.clone());
                let span = tracing::info_span!("tcp", client = %w.client);
                tasks.spawn(async move {
                    let _starting = starting;
                    tokio::select! {
                        _ = child.cancelled() => {}
                        r = receiver_stream(conn, w, service, session, tally, counts) => match r {
                            Ok(()) => debug!("connection finished or handed to the session"),
                            Err(StreamEnd::NotStarted(w)) => {
                                debug!("the tunnel went away before this connection started: it waits for the next session");
                                let _ = requeue.send(w).await;
                            }
                            Err(StreamEnd::Failed(e)) => warn!("connection closed: {e}"),
                        }
                    }
                }.instrument(span));
            }
        }
    };
    // On shutdown the child token stops every stream. When the connection
    // is lost, the streams end by themselves (every stream operation fails)
    // and a client that had not started goes back to the queue.
    tasks.close();
    tasks.wait().await;
    result
}

/// Clients closed because the session was full: the first is logged at
/// once, then one line every [`Full::EVERY`] with how many since.
#[derive(Default)]
struct Full {
    last: Option<tokio::time::Instant>,
    since: u64,
}

impl Full {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    fn refused(&mut self, client: &std::net::SocketAddr, limit: usize) {
        self.since += 1;
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        warn!(
            %client,
            closed = self.since,
            "closing new local connections: this session carries {limit} connections, the most it may (--max-connections)"
        );
        self.last = Some(tokio::time::Instant::now());
        self.since = 0;
    }
}

/// Why a receiver's stream ended early.
enum StreamEnd {
    /// The session went away before the sender answered: the client (with
    /// what it sent so far) can go to the next session.
    NotStarted(Waiting),
    /// Failed after it started.
    Failed(String),
}

/// Most bytes read from a client before the sender's reply: kept to be
/// sent again if the session goes away before the reply.
const START_BUF: usize = 64 * 1024;

async fn receiver_stream<C: TunnelConnection>(
    conn: C,
    mut w: Waiting,
    service: Option<u16>,
    session: Option<Arc<Session<C>>>,
    tally: Arc<Tally>,
    counts: Arc<ServiceCounts>,
) -> Result<(), StreamEnd> {
    let Ok((mut send, mut recv)) = open_bi_retry(&conn).await else {
        return Err(StreamEnd::NotStarted(w));
    };
    let id = session.as_ref().map(|s| s.next_stream_id());
    let mut head = match id {
        Some(id) => Request::tcp_stream(id),
        None => Request::tcp(),
    }
    .with_service(service)
    .with_client(w.stream.local_addr().ok().map(|local| (w.client, local)))
    .with_dest(w.dest.clone())
    .encode();
    head.extend_from_slice(&w.prefix);
    if send.write_all(&head).await.is_err() {
        return Err(StreamEnd::NotStarted(w));
    }
    // Until the reply: forward what the client sends (pipelined with the
    // header, for client-speaks-first protocols) and keep a copy.
    let reply = {
        let reply = read_reply(&mut recv);
        tokio::pin!(reply);
        let mut buf = vec![0u8; 16 * 1024];
        let mut eof = false;
        loop {
            tokio::select! {
                r = &mut reply => break r,
                n = w.stream.read(&mut buf), if !eof && w.prefix.len() < START_BUF => match n {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        w.prefix.extend_from_slice(&buf[..n]);
                        if send.write_all(&buf[..n]).await.is_err() {
                            return Err(StreamEnd::NotStarted(w));
                        }
                    }
                    Err(e) => return Err(StreamEnd::Failed(format!("local read failed: {e}"))),
                },
            }
        }
    };
    match reply {
        Err(_) => Err(StreamEnd::NotStarted(w)),
        Ok(r) if r.status != Status::Ok => {
            counts.failed(r.status);
            if w.dest.is_some() {
                let _ = socks::reply(&mut w.stream, Some(r.status)).await;
            }
            Err(StreamEnd::Failed(format!("sender refused: {}", r.message)))
        }
        Ok(_) => {
            if w.dest.is_some() {
                if let Err(e) = socks::reply(&mut w.stream, None).await {
                    return Err(StreamEnd::Failed(format!("SOCKS5 reply failed: {e}")));
                }
            }
            let open = tally.stream_opened_for(Some(counts));
            match (session, id) {
                (Some(session), Some(id)) => {
                    let sent = bytes::Bytes::from(std::mem::take(&mut w.prefix));
                    let first = Attach::Fresh { conn, send, recv };
                    let until = Box::pin(std::future::pending());
                    session.spawn_stream(id, w.stream, sent, first, open, until);
                    Ok(())
                }
                _ => pump(w.stream, send, recv, open, std::future::pending())
                    .await
                    .map_err(StreamEnd::Failed),
            }
        }
    }
}

/// Sender: accept the receiver's streams and connect each to the service
/// or destination its header names (checked against the routes now).
pub async fn serve_sender<C: TunnelConnection>(
    conn: C,
    routes: Arc<Routes>,
    config: Arc<EngineConfig>,
    session: Option<Arc<Session<C>>>,
    tally: Arc<Tally>,
    stopping: CancellationToken,
    cancel: CancellationToken,
) -> Result<(), SessionError> {
    let tasks = TaskTracker::new();
    let child = cancel.child_token();
    let result = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let (routes, config, child) = (routes.clone(), config.clone(), child.clone());
                    let (conn, session, tally) = (conn.clone(), session.clone(), tally.clone());
                    let stopping = stopping.is_cancelled();
                    let stream = Incoming { send, recv, stopping };
                    tasks.spawn(async move {
                        tokio::select! {
                            _ = child.cancelled() => {}
                            r = sender_stream(conn, stream, &routes, &config, session, &tally) => if let Err(e) = r {
                                warn!("stream closed: {e}");
                            }
                        }
                    }.in_current_span());
                }
                Err(e) => break Err(e.into()),
            }
        }
    };
    child.cancel();
    tasks.close();
    tasks.wait().await;
    result
}

/// A stream the receiver opened, and whether the sender was stopping then.
struct Incoming<C: TunnelConnection> {
    send: C::Send,
    recv: C::Recv,
    stopping: bool,
}

async fn sender_stream<C: TunnelConnection>(
    conn: C,
    incoming: Incoming<C>,
    routes: &Routes,
    config: &EngineConfig,
    session: Option<Arc<Session<C>>>,
    tally: &Arc<Tally>,
) -> Result<(), String> {
    let Incoming {
        mut send,
        mut recv,
        stopping,
    } = incoming;
    let req = tokio::time::timeout(config.header_timeout, read_request(&mut recv))
        .await
        .map_err(|_| "no stream header in time".to_string())?
        .map_err(|e| format!("bad stream header: {e}"))?;
    let resumable = match (&session, req.stream) {
        (Some(s), Some(id)) => Some((s, id)),
        _ => None,
    };
    if req.kind == Some(Kind::Resume) {
        let (Some((session, id)), Some(delivered)) = (resumable, req.delivered) else {
            let _ = send
                .write_all(&Reply::err(Status::BadRequest, "not a resumable session").encode())
                .await;
            send.reset(close_code::PROTOCOL);
            return Err("a resume stream outside a resumable session".into());
        };
        let attach = Attach::Accepted {
            conn,
            send,
            recv,
            peer: delivered,
        };
        if let Err(Attach::Accepted { mut send, .. }) = session.resume_one(id, attach) {
            debug!(
                stream = id,
                "asked to resume a connection this sender no longer has"
            );
            let _ = send
                .write_all(&Reply::err(Status::Gone, "this connection is gone").encode())
                .await;
            let _ = send.shutdown().await;
        }
        return Ok(());
    }
    if let Some((session, id)) = resumable {
        if let Err(e) = session.check_new_stream(id) {
            let _ = send
                .write_all(&Reply::err(Status::BadRequest, &e).encode())
                .await;
            send.reset(close_code::PROTOCOL);
            return Err(e);
        }
    }
    if stopping && req.kind == Some(Kind::Tcp) {
        let msg = "the sender is stopping: its open connections may finish, new ones are refused";
        refuse(&mut send, Status::ConnectFailed, msg).await;
        return Err(msg.into());
    }
    if req.kind != Some(Kind::Tcp) {
        let _ = send
            .write_all(&Reply::err(Status::BadRequest, "expected a TCP stream").encode())
            .await;
        send.reset(close_code::PROTOCOL);
        return Err("unexpected stream kind".into());
    }
    let index = req.service.unwrap_or(0) as usize;
    let counts = routes.counts(index);
    // a connection not carried: counted (session and service), refused
    let not_carried = |status: Status| {
        if status == Status::ConnectFailed {
            tally.connect_failures.fetch_add(1, Relaxed);
        }
        if let Some(c) = &counts {
            c.failed(status);
        }
    };
    let (route, addrs) = match routes
        .resolve(index, Protocol::Tcp, req.dest.as_ref())
        .await
    {
        Ok(r) => r,
        Err(refusal) => {
            not_carried(refusal.status);
            refuse(&mut send, refusal.status, &refusal.message).await;
            return Err(refusal.message);
        }
    };
    let mut tcp = match net::connect_any(&addrs, config.connect_timeout).await {
        Ok(t) => t,
        Err(e) => {
            not_carried(Status::ConnectFailed);
            let msg = format!("cannot connect to {route}: {e}");
            refuse(&mut send, Status::ConnectFailed, &msg).await;
            return Err(msg);
        }
    };
    if let Route::Service(svc) = &route {
        if svc.proxy_protocol {
            let header = proxy_header(req.client);
            if let Err(e) = tcp.write_all(&header).await {
                let msg = format!("cannot write the PROXY header to {route}: {e}");
                refuse(&mut send, Status::ConnectFailed, &msg).await;
                return Err(msg);
            }
        }
    }
    info!(to = %route, "stream connected");
    send.write_all(&Reply::ok().encode())
        .await
        .map_err(|e| format!("cannot write reply: {e}"))?;
    let open = tally.stream_opened_for(counts);
    // a reload that no longer allows it closes it
    let permit = routes.permit(index, req.dest.as_ref());
    let revoked = async move {
        format!(
            "no longer allowed by the reloaded configuration ({})",
            permit.revoked().await.message
        )
    };
    match resumable {
        Some((session, id)) => {
            let first = Attach::Fresh { conn, send, recv };
            let until = Box::pin(revoked);
            session.spawn_stream(id, tcp, bytes::Bytes::new(), first, open, until);
            Ok(())
        }
        None => pump(tcp, send, recv, open, revoked).await,
    }
}

/// A PROXY protocol v2 header: the receiver-side client's address and
/// the address it connected to, or LOCAL when the receiver did not say
/// (an older one).
fn proxy_header(client: Option<(std::net::SocketAddr, std::net::SocketAddr)>) -> Vec<u8> {
    use ppp::v2;
    let built = match client {
        Some((from, to)) if from.is_ipv4() == to.is_ipv4() => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (from, to),
        ),
        _ => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        ),
    };
    built.build().unwrap_or_default()
}

async fn refuse<S: TunnelSend>(send: &mut S, status: Status, msg: &str) {
    let _ = send.write_all(&Reply::err(status, msg).encode()).await;
    let _ = send.shutdown().await;
}

#[cfg(test)]
mod proxy_tests {
    use super::proxy_header;

    #[test]
    fn proxy_v2_headers_parse_back() {
        let from = "192.0.2.7:40000".parse().unwrap();
        let to = "127.0.0.1:2222".parse().unwrap();
        let h = proxy_header(Some((from, to)));
        let parsed = ppp::v2::Header::try_from(h.as_slice()).unwrap();
        assert_eq!(parsed.addresses, ppp::v2::Addresses::from((from, to)));
        let local = proxy_header(None);
        let parsed = ppp::v2::Header::try_from(local.as_slice()).unwrap();
        assert_eq!(parsed.command, ppp::v2::Command::Local);
    }
}
