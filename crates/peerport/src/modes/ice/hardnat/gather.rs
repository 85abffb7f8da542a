//! This side's hint, learned beside ICE's gathering: one socket asks two
//! STUN servers (the same public address for both: endpoint-independent
//! mapping; two: endpoint-dependent), and behind an endpoint-dependent
//! NAT a second socket asks once more, so the port allocation shows
//! (three mappings, [`allocation::classify`]). The easy side keeps its
//! socket: the hint names its mapping, and the punch runs on it.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::{net::UdpSocket, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};

use super::hint::{Hint, Mapping};
use crate::stun::{self, allocation, allocation::PortAllocation};

/// How often a kept socket refreshes its NAT mapping while it waits for
/// the peer (copy-paste can take minutes; UDP mappings last 30 s or more).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// What the gathering found.
pub struct Learned {
    /// The line for this side's blob.
    pub hint: Hint,
    /// The easy side's punch socket (its mapping is in the hint).
    pub socket: Option<KeptSocket>,
}

/// The easy side's punch socket while it waits: a STUN Binding to the
/// first server every [`KEEPALIVE`] keeps its mapping. Dropped, the
/// socket closes.
pub struct KeptSocket {
    stop: CancellationToken,
    task: AbortOnDropHandle<UdpSocket>,
}

impl KeptSocket {
    fn keep(socket: UdpSocket, server: SocketAddr) -> KeptSocket {
        let stop = CancellationToken::new();
        let until = stop.clone();
        let task: JoinHandle<UdpSocket> = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = until.cancelled() => return socket,
                    _ = tokio::time::sleep(KEEPALIVE) => {
                        let _ = socket.send_to(&binding_request(), server).await;
                    }
                }
            }
        });
        KeptSocket {
            stop,
            task: AbortOnDropHandle::new(task),
        }
    }

    /// A socket kept without refreshing (tests).
    #[cfg(test)]
    pub fn holding(socket: UdpSocket) -> KeptSocket {
        let stop = CancellationToken::new();
        let until = stop.clone();
        let task = tokio::spawn(async move {
            until.cancelled().await;
            socket
        });
        KeptSocket {
            stop,
            task: AbortOnDropHandle::new(task),
        }
    }

    /// The socket, for the punch (the keepalive stops).
    pub async fn take(self) -> Option<UdpSocket> {
        self.stop.cancel();
        self.task.await.ok()
    }
}

/// A STUN Binding request with a random transaction (its answer is
/// ignored: it only refreshes the mapping).
fn binding_request() -> Vec<u8> {
    let mut p = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    p.extend_from_slice(&rand::random::<[u8; 12]>());
    p
}

/// Learn this side's hint from the first two STUN servers, within
/// `limit`. `None` when fewer than two answer (the mapping cannot be
/// told) or a socket cannot be opened.
pub async fn learn(bind: IpAddr, servers: &[String], limit: Duration) -> Option<Learned> {
    let [s1, s2, ..] = servers else {
        return None;
    };
    let work = async {
        let p = UdpSocket::bind(SocketAddr::new(bind, 0)).await.ok()?;
        let each = limit / 2;
        let m1 = stun::query(&p, s1, each).await.ok()?;
        let m2 = stun::query(&p, s2, each).await.ok()?;
        if m1.mapped == m2.mapped {
            let hint = Hint {
                mapping: Mapping::Independent,
                public: m1.mapped.ip(),
                port: m1.mapped.port(),
                allocation: PortAllocation::Unknown,
            };
            return Some(Learned {
                hint,
                socket: Some(KeptSocket::keep(p, m1.server)),
            });
        }
        // endpoint-dependent: one more mapping from a new socket shows
        // how ports are allocated; its port is where prediction starts
        let local = p.local_addr().ok()?.port();
        let q = UdpSocket::bind(SocketAddr::new(bind, 0)).await.ok()?;
        let mq = stun::query(&q, s1, each).await.ok();
        let mut made = vec![(local, m1.mapped.port()), (local, m2.mapped.port())];
        if let (Some(mq), Ok(ql)) = (&mq, q.local_addr()) {
            made.push((ql.port(), mq.mapped.port()));
        }
        let last = mq.as_ref().map_or(m2.mapped, |m| m.mapped);
        Some(Learned {
            hint: Hint {
                mapping: Mapping::Dependent,
                public: m1.mapped.ip(),
                port: last.port(),
                allocation: allocation::classify(&made),
            },
            socket: None,
        })
    };
    // the queries retry within their share; this bounds the whole
    tokio::time::timeout(limit + Duration::from_millis(200), work)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::stun::{
        message::{Message, BINDING_SUCCESS},
        xoraddr::XorMappedAddress,
    };

    /// A STUN server on loopback (bounded: it ends with the test's runtime).
    async fn stun_server() -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let mut req = Message::new();
                if req.unmarshal_binary(&buf[..n]).is_err() {
                    continue;
                }
                let mut resp = Message::new();
                let xor = XorMappedAddress {
                    ip: from.ip(),
                    port: from.port(),
                };
                if resp
                    .build(&[
                        Box::new(req.transaction_id),
                        Box::new(BINDING_SUCCESS),
                        Box::new(xor),
                    ])
                    .is_ok()
                {
                    let _ = s.send_to(&resp.raw, from).await;
                }
            }
        });
        addr
    }

    /// A STUN server on loopback that answers with the address it sees,
    /// as every STUN server does: loopback has no NAT, so one socket
    /// gets the same mapping from both (endpoint-independent), and the
    /// kept socket is the one the hint names.
    #[tokio::test]
    async fn one_address_for_both_servers_is_the_easy_side() {
        let s1 = stun_server().await;
        let s2 = stun_server().await;
        let learned = learn(
            "127.0.0.1".parse().unwrap(),
            &[s1.to_string(), s2.to_string()],
            Duration::from_secs(2),
        )
        .await
        .expect("two answers");
        assert_eq!(learned.hint.mapping, Mapping::Independent);
        let sock = learned.socket.expect("kept").take().await.unwrap();
        assert_eq!(sock.local_addr().unwrap().port(), learned.hint.port);
        // one server is not enough to tell
        assert!(learn(
            "127.0.0.1".parse().unwrap(),
            &[s1.to_string()],
            Duration::from_secs(1)
        )
        .await
        .is_none());
    }
}
