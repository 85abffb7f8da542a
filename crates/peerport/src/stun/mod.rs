//! A minimal STUN Binding client (RFC 8489) on top of the `stun` crate's
//! codec: which public address does a NAT give our UDP socket?
//!
//! The caller owns the socket, so the query can run from the very port a
//! QUIC endpoint will use afterwards.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use stun::{
    agent::TransactionId,
    message::{Getter, Message, BINDING_REQUEST},
    xoraddr::XorMappedAddress,
};
use tokio::net::UdpSocket;

pub mod allocation;
pub mod punch;

/// Public servers used when no `--stun-server` is given (tests never use them).
pub const DEFAULT_STUN_SERVERS: &[&str] = &[
    "stun.l.google.com:19302",
    "stun.cloudflare.com:3478",
    "stun.nextcloud.com:443",
];

/// STUN failures.
#[derive(Debug, thiserror::Error)]
pub enum StunError {
    /// No answer.
    #[error("STUN server {0} did not answer")]
    Timeout(String),
    /// Socket error.
    #[error("STUN query to {server} failed: {source}")]
    Io {
        /// Server.
        server: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Server name did not resolve.
    #[error("cannot resolve STUN server {0}")]
    Resolve(String),
}

/// One STUN result.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Server asked.
    pub server: SocketAddr,
    /// Address the server saw.
    pub mapped: SocketAddr,
    /// Round-trip time.
    pub rtt: Duration,
}

/// Ask `server` for our mapped address, retrying (3 tries within `timeout`).
pub async fn query(
    sock: &UdpSocket,
    server: &str,
    timeout: Duration,
) -> Result<Mapping, StunError> {
    let server_addr = tokio::net::lookup_host(server)
        .await
        .map_err(|_| StunError::Resolve(server.to_string()))?
        .find(|a| a.is_ipv4() == sock.local_addr().map(|l| l.is_ipv4()).unwrap_or(true))
        .ok_or_else(|| StunError::Resolve(server.to_string()))?;
    let mut msg = Message::new();
    let tid = TransactionId::new();
    msg.build(&[Box::new(tid), Box::new(BINDING_REQUEST)])
        .map_err(|e| StunError::Io {
            server: server.into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    let mut buf = [0u8; 1500];
    let per_try = timeout / 3;
    for _ in 0..3 {
        let start = Instant::now();
        sock.send_to(&msg.raw, server_addr)
            .await
            .map_err(|source| StunError::Io {
                server: server.into(),
                source,
            })?;
        let deadline = tokio::time::Instant::now() + per_try;
        while let Ok(r) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
            let Ok((n, from)) = r else { break };
            if from != server_addr {
                continue;
            }
            let mut resp = Message::new();
            if resp.unmarshal_binary(&buf[..n]).is_err() || resp.transaction_id != tid {
                continue;
            }
            let mut xor = XorMappedAddress::default();
            if xor.get_from(&resp).is_ok() {
                return Ok(Mapping {
                    server: server_addr,
                    mapped: SocketAddr::new(xor.ip, xor.port),
                    rtt: start.elapsed(),
                });
            }
        }
    }
    Err(StunError::Timeout(server.to_string()))
}

/// Query every server from `sock`; returns the successes (failures logged).
pub async fn query_all(sock: &UdpSocket, servers: &[String], timeout: Duration) -> Vec<Mapping> {
    let mut out = Vec::new();
    for s in servers {
        match query(sock, s, timeout).await {
            Ok(m) => {
                tracing::debug!(server = %s, mapped = %m.mapped, rtt_ms = m.rtt.as_millis() as u64, "STUN mapping");
                out.push(m);
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    out
}
