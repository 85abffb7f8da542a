//! Connecting again over the same ICE session after a loss, before a fresh
//! offer: both sides punch the old pair and QUIC reconnects.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use webrtc_ice::agent::Agent;

use super::handoff::accept_peer;
use crate::transport::quinn::{self as q, QuinnConnection};

/// The QUIC side of an ICE session.
pub(super) enum Role {
    /// The receiver (offerer) dials.
    Client(quinn::ClientConfig),
    /// The sender (answerer) accepts; only the pinned peer's certificate gets in.
    Server(quinn::ServerConfig),
}

/// A direct path's socket and the peer's address on it: what a waiting
/// sender opens its NAT with.
pub(super) struct Opener {
    pub(super) socket: std::net::UdpSocket,
    pub(super) remote: SocketAddr,
}

/// What lets an `ice` session come back without a new exchange: both sides
/// keep the QUIC endpoint on the pair ICE selected (the socket of a direct
/// pair, or the ICE agent and its TURN allocation; a relayed pair a punch
/// moved to a direct 5-tuple keeps that 5-tuple's socket), the peer's
/// address on it and both pinned certificates. After a lost session the receiver
/// dials the same address again and the sender accepts on the same
/// endpoint, which only takes the certificate from the blob; meanwhile the
/// sender sends a small STUN indication to the receiver every few seconds,
/// so its own NAT lets the receiver's packets in. Works while both
/// addresses still work; otherwise the receiver makes a fresh offer.
pub struct IceRejoin {
    pub(super) endpoint: quinn::Endpoint,
    pub(super) peer_addr: SocketAddr,
    pub(super) peer_fp: [u8; 32],
    pub(super) role: Role,
    /// The path in use; a punch changes it from relay to direct.
    pub(super) path: tokio::sync::watch::Sender<crate::transport::PathInfo>,
    /// Kept alive on a relay pair (quinn runs over its `Conn`).
    pub(super) relay_agent: Option<Arc<Agent>>,
    /// Stops the relay socket's helper tasks and a punch's upgrade.
    pub(super) stop: CancellationToken,
    /// The direct path's socket, for NAT-opening packets: set with a
    /// direct pair, or once a punch moved the connection.
    pub(super) opener: Arc<Mutex<Option<Opener>>>,
}

/// How often a sender waiting for its receiver opens its NAT towards it.
pub(super) const PUNCH_EVERY: Duration = Duration::from_secs(2);

impl IceRejoin {
    /// A tunnel connection over this state's endpoint.
    pub(super) fn connection(&self, conn: quinn::Connection) -> QuinnConnection {
        let keep = self.relay_agent.clone().map(|a| a as q::KeepAlive);
        QuinnConnection::new(
            conn,
            self.endpoint.clone(),
            self.peer_fp,
            self.path.borrow().clone(),
            keep,
            Some(self.stop.clone()),
        )
        .following(self.path.subscribe())
    }

    /// The direct path's socket, if any.
    pub(super) fn opener(&self) -> std::sync::MutexGuard<'_, Option<Opener>> {
        self.opener.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the path goes through the TURN relay now.
    pub(super) fn relayed(&self) -> bool {
        self.path.borrow().kind == crate::transport::PathKind::Relay
    }

    /// A connection that owns the endpoint (nothing is kept for a rejoin).
    pub(super) fn into_connection(self, conn: quinn::Connection) -> QuinnConnection {
        self.connection(conn)
    }

    /// Receiver: dial the sender's address again until it answers.
    pub(super) async fn redial(
        &self,
        cfg: &quinn::ClientConfig,
        limit: Duration,
    ) -> Result<quinn::Connection, String> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut delay = Duration::from_millis(200);
        let mut last = String::from("no answer");
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the sender at {} did not answer within {} s ({last})",
                    self.describe_peer(),
                    limit.as_secs()
                ));
            }
            // one handshake at most a few seconds: its retransmissions back
            // off, a fresh attempt does not
            let each = left.min(Duration::from_secs(3));
            match self
                .endpoint
                .connect_with(cfg.clone(), self.peer_addr, q::SERVER_NAME)
            {
                Ok(connecting) => match tokio::time::timeout(each, connecting).await {
                    Ok(Ok(c)) => return Ok(c),
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "no answer".into(),
                },
                Err(e) => last = e.to_string(),
            }
            tracing::debug!("redial failed: {last}; retrying");
            tokio::time::sleep(
                delay.min(deadline.saturating_duration_since(tokio::time::Instant::now())),
            )
            .await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Sender: accept the receiver's next connection on the kept endpoint.
    pub(super) async fn await_peer(
        &self,
        cfg: &quinn::ServerConfig,
        limit: Duration,
    ) -> Result<quinn::Connection, String> {
        struct Closed<'a>(&'a quinn::Endpoint);
        impl Drop for Closed<'_> {
            fn drop(&mut self) {
                self.0.set_server_config(None);
            }
        }
        self.endpoint.set_server_config(Some(cfg.clone()));
        let _closed = Closed(&self.endpoint);
        let punch = async {
            loop {
                // a STUN Binding Indication: the peer's socket filter drops it
                let mut p = vec![0x00, 0x11, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
                p.extend_from_slice(&rand::random::<[u8; 12]>());
                if let Some(Opener { socket, remote }) = self.opener().as_ref() {
                    let _ = socket.send_to(&p, remote);
                }
                tokio::time::sleep(PUNCH_EVERY).await;
            }
        };
        tokio::select! {
            r = tokio::time::timeout(limit, accept_peer(&self.endpoint)) => match r {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "the receiver at {} did not reconnect within {} s",
                    self.describe_peer(),
                    limit.as_secs()
                )),
            },
            () = punch => unreachable!("the punch loop never ends"),
        }
    }

    /// On a direct pair: whether this host lost the address the pair's
    /// socket is bound to (renumbered, interface gone), so the same pair
    /// can never work again.
    pub(super) fn local_address_gone(&self) -> Option<String> {
        let ip = self.opener().as_ref()?.socket.local_addr().ok()?.ip();
        if ip.is_unspecified() {
            // bound to every address (a punch's socket): any will do
            return None;
        }
        crate::net::address_gone(ip).then(|| {
            format!("this host no longer has the address {ip} that the path used (renumbered?)")
        })
    }

    pub(super) fn describe_peer(&self) -> String {
        match self.opener().as_ref() {
            Some(o) => o.remote.to_string(),
            None => format!("the end of {}", *self.path.borrow()),
        }
    }

    /// Close the endpoint (after its last connection's close went out)
    /// and the relay agent.
    pub(super) async fn release(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.endpoint.close(0u32.into(), b"");
        self.stop.cancel();
        if let Some(agent) = self.relay_agent {
            let _ = tokio::time::timeout(Duration::from_secs(5), agent.close()).await;
        }
    }
}
