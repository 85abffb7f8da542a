//! Moving QUIC onto the pair ICE chose: take the packets the agent already
//! buffered, hand the socket to quinn, and accept only the pinned peer.

use std::{net::SocketAddr, time::Duration};

use webrtc_ice::candidate::CandidateType;

use super::socket::{self, DynConn};

/// Accept the pinned peer's QUIC connection on `endpoint` (its server
/// config demands the peer's certificate, so strangers fail the handshake).
pub(super) async fn accept_peer(endpoint: &quinn::Endpoint) -> Result<quinn::Connection, String> {
    let mut attempts = 0u32;
    loop {
        let incoming = endpoint
            .accept()
            .await
            .ok_or("QUIC endpoint closed before the peer connected")?;
        attempts += 1;
        // after a failed attempt, strangers must prove their address
        if attempts > 1 && !incoming.remote_address_validated() && incoming.may_retry() {
            let _ = incoming.retry();
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(10), incoming).await {
            Ok(Ok(c)) => return Ok(c),
            // a wrong certificate fails here (logged by the verifier);
            // keep waiting for the right peer
            Ok(Err(e)) => tracing::debug!("refused a QUIC connection: {e}"),
            Err(_) => tracing::debug!("a QUIC handshake timed out"),
        }
    }
}

/// Take the data packets the ICE `Conn` has buffered (without waiting).
pub(super) async fn drain(conn: &DynConn, from: SocketAddr) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while out.len() < 256 {
        match tokio::time::timeout(Duration::ZERO, conn.recv(&mut buf)).await {
            Ok(Ok(n)) if !socket::is_stun(&buf[..n]) => out.push((buf[..n].to_vec(), from)),
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    if !out.is_empty() {
        tracing::debug!(
            packets = out.len(),
            "handed early QUIC packets from ICE to quinn"
        );
    }
    out
}

/// Duplicate the selected local candidate's socket (host/srflx pairs only).
pub(super) fn handoff(
    pair: &webrtc_ice::candidate::CandidatePair,
) -> Option<(std::net::UdpSocket, SocketAddr)> {
    use std::os::fd::AsFd;
    if !matches!(
        pair.local.candidate_type(),
        CandidateType::Host | CandidateType::ServerReflexive | CandidateType::PeerReflexive
    ) {
        return None;
    }
    let conn = pair.local.get_conn()?;
    let sock = conn.as_any().downcast_ref::<tokio::net::UdpSocket>()?;
    let fd = sock.as_fd().try_clone_to_owned().ok()?;
    let std_sock = std::net::UdpSocket::from(fd);
    std_sock.set_nonblocking(true).ok()?;
    Some((std_sock, pair.remote.addr()))
}
