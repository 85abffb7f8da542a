//! Copy a TCP connection both ways over one QUIC stream pair, for
//! sessions without resumption (resumable streams have their own pump in
//! [`super::resume`]).
//!
//! When the local socket fails (its end reset it, usually right after
//! writing a last answer), what that end sent before is still valid: the
//! stream is finished there and the pump waits, at most [`LINGER`], for
//! the peer to acknowledge it before it aborts. Without that wait the
//! abort would discard the last bytes still queued in the stack.

use std::{future::Future, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tracing::debug;

use super::{
    chunks::{Segments, ToTunnel},
    tally::StreamGuard,
};
use crate::{
    proto::close::close_code,
    transport::{TunnelRecv, TunnelSend},
};

/// Most bytes read from the local socket per stack write.
const COPY_BUF: usize = 256 * 1024;

/// How long a connection whose local socket failed still gets to deliver
/// what that socket sent before (the longest a lingering TCP close waits
/// for acknowledgements, in spirit).
pub const LINGER: Duration = Duration::from_secs(10);

/// Errors of one direction of a copy (here and in resumable streams).
pub(super) enum DirError {
    /// The local socket failed.
    Local(std::io::Error),
    /// The QUIC stream failed (connection lost, or reset by the peer).
    Tunnel(std::io::Error),
}

/// How [`pump`]'s copying ended.
enum Outcome {
    Done,
    /// The stream failed, or `until` fired: abort at once.
    Failed(String),
    /// The local socket failed: deliver what it sent, then abort.
    LocalFailed {
        why: String,
        /// The stream is not finished yet.
        finish: bool,
        deadline: Instant,
    },
}

/// Copy both ways between `tcp` and a stream pair until both directions
/// end. On a stream error both sides are aborted, so the local socket
/// closes promptly; on a local error the peer first gets what the local
/// end sent (see the module doc). The connection counts as open (`_open`)
/// until this returns, or until `until` resolves with the reason to close
/// it early.
pub(super) async fn pump<S, R, U>(
    tcp: TcpStream,
    mut send: S,
    mut recv: R,
    _open: StreamGuard,
    until: U,
) -> Result<(), String>
where
    S: TunnelSend,
    R: TunnelRecv,
    U: Future<Output = String>,
{
    let (tcp_r, mut tcp_w) = tcp.into_split();
    let outcome = {
        let up = copy_to_tunnel(tcp_r, &mut send);
        let down = async {
            let r = copy_from_tunnel(&mut recv, &mut tcp_w).await;
            if r.is_err() {
                recv.stop(close_code::STREAM_ABORT);
            }
            r
        };
        tokio::pin!(up, down, until);
        let (mut up_done, mut down_done) = (false, false);
        // set when writing to the local socket failed: the local end is
        // gone, but what it sent may still be on its way up
        let mut local_failed: Option<(String, Instant)> = None;
        loop {
            if up_done && down_done {
                break match local_failed.take() {
                    None => Outcome::Done,
                    Some((why, deadline)) => Outcome::LocalFailed {
                        why,
                        finish: false,
                        deadline,
                    },
                };
            }
            let deadline = local_failed.as_ref().map(|(_, d)| *d);
            tokio::select! {
                why = &mut until => break Outcome::Failed(why),
                r = &mut up, if !up_done => match r {
                    Ok(n) => { up_done = true; debug!(bytes = n, "local side finished sending"); }
                    Err(DirError::Local(e)) => break Outcome::LocalFailed {
                        why: format!("local to tunnel: {e}"),
                        finish: true,
                        deadline: deadline.unwrap_or_else(|| Instant::now() + LINGER),
                    },
                    Err(DirError::Tunnel(e)) => break Outcome::Failed(format!("local to tunnel: {e}")),
                },
                r = &mut down, if !down_done => match r {
                    Ok(n) => { down_done = true; debug!(bytes = n, "tunnel side finished sending"); }
                    Err(DirError::Local(e)) => {
                        // keep reading the local socket: its last bytes, then its end
                        down_done = true;
                        local_failed = Some((format!("tunnel to local: {e}"), Instant::now() + LINGER));
                    }
                    Err(DirError::Tunnel(e)) => break Outcome::Failed(format!("tunnel to local: {e}")),
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    let (why, _) = local_failed.take().expect("set with the deadline");
                    break Outcome::Failed(why);
                }
            }
        }
    };
    match outcome {
        Outcome::Done => Ok(()),
        Outcome::Failed(why) => {
            send.reset(close_code::STREAM_ABORT);
            Err(why)
        }
        Outcome::LocalFailed {
            why,
            finish,
            deadline,
        } => {
            let delivered = async {
                if finish {
                    send.shutdown().await?;
                }
                send.acked().await;
                Ok::<_, std::io::Error>(())
            };
            if !matches!(
                tokio::time::timeout_at(deadline, delivered).await,
                Ok(Ok(()))
            ) {
                // not delivered in time: the peer sees an abort, not an end
                send.reset(close_code::STREAM_ABORT);
            }
            Err(why)
        }
    }
}

/// Copy a local socket into a QUIC stream, handing each read to the
/// stack as it is (no copy), then finish the stream.
async fn copy_to_tunnel<R, S>(mut reader: R, send: &mut S) -> Result<u64, DirError>
where
    R: AsyncRead + Unpin,
    S: TunnelSend,
{
    let mut local = ToTunnel::new(COPY_BUF);
    let mut total = 0u64;
    while let Some(data) = local
        .read(&mut reader, usize::MAX, send)
        .await
        .map_err(DirError::Local)?
    {
        total += data.len() as u64;
        send.write_bytes(data).await.map_err(DirError::Tunnel)?;
    }
    send.shutdown().await.map_err(DirError::Tunnel)?;
    Ok(total)
}

/// Copy a QUIC stream into a local socket from the stack's own buffers,
/// then shut the socket's sending side.
async fn copy_from_tunnel<R, W>(recv: &mut R, writer: &mut W) -> Result<u64, DirError>
where
    R: TunnelRecv,
    W: AsyncWrite + Unpin,
{
    let mut segs = Segments::default();
    let mut total = 0u64;
    while segs.read(recv).await.map_err(DirError::Tunnel)? {
        while !segs.is_empty() {
            total += segs.write_some(writer).await.map_err(DirError::Local)? as u64;
        }
    }
    writer.shutdown().await.map_err(DirError::Local)?;
    Ok(total)
}
