//! Runs a [`Machine`] over real sockets: one task, every socket polled
//! in one future (no task per socket), until the machine is done or over
//! its budget. The winning socket is handed back; the others close when
//! dropped here.

use std::{future::poll_fn, net::SocketAddr, task::Poll};

use tokio::{io::ReadBuf, net::UdpSocket};
use tracing::debug;

use super::{
    machine::{Machine, Output},
    wire::{self, Keys, Role},
};

/// The 5-tuple a punch found.
#[derive(Debug)]
pub struct Punched {
    /// Our end: the socket that won (the others are closed).
    pub socket: UdpSocket,
    /// The peer's end, as this socket sees it.
    pub remote: SocketAddr,
}

/// Why no 5-tuple was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PunchError {
    /// The machine gave up (its reason).
    #[error("{0}")]
    NoPath(&'static str),
    /// Nothing to punch with.
    #[error("no sockets to punch with")]
    NoSockets,
    /// As many punches as the process allows are under way.
    #[error("other punches are under way")]
    Busy,
}

/// Drive `machine` over `sockets` (its socket `i` is `sockets[i]`).
pub async fn run(mut machine: Machine, sockets: Vec<UdpSocket>) -> Result<Punched, PunchError> {
    if sockets.is_empty() {
        return Err(PunchError::NoSockets);
    }
    let mut buf = vec![0u8; 2048];
    let mut send_errors = 0u64;
    loop {
        while let Some(out) = machine.poll_output() {
            match out {
                Output::Send { sock, to, bytes } => {
                    // a full send buffer or an unreachable port loses one probe: fine
                    if let Some(s) = sockets.get(sock) {
                        if s.try_send_to(&bytes, to).is_err() {
                            send_errors += 1;
                        }
                    }
                }
                Output::Done { sock, remote } => {
                    debug!(sock, %remote, send_errors, "punched");
                    let socket = sockets.into_iter().nth(sock).ok_or(PunchError::NoSockets)?;
                    return Ok(Punched { socket, remote });
                }
                Output::Failed(why) => {
                    debug!(why, send_errors, "punch failed");
                    return Err(PunchError::NoPath(why));
                }
            }
        }
        let Some(at) = machine.poll_timeout() else {
            return Err(PunchError::NoPath("the punch ended"));
        };
        let got = tokio::select! {
            _ = tokio::time::sleep_until(at) => None,
            r = recv_any(&sockets, &mut buf) => Some(r),
        };
        let now = tokio::time::Instant::now();
        match got {
            Some((sock, Ok((n, from)))) => machine.datagram(sock, from, &buf[..n], now),
            // an ICMP error surfaced on one socket: that probe is lost, the rest go on
            Some((_, Err(_))) | None => {}
        }
        machine.tick(now);
    }
}

/// After the punch, until `until` resolves: answer the peer's requests
/// on the won 5-tuple (a nomination sent again because our answer was
/// lost), so the peer's punch ends too while this side waits to move
/// its connection there. Anything else that arrives is dropped.
pub async fn hold(p: &Punched, keys: &Keys, role: Role, until: impl std::future::Future) {
    let mut buf = vec![0u8; 2048];
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = &mut until => return,
            r = p.socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else {
                    // an error that repeats must not spin
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                if from != p.remote {
                    continue;
                }
                if let Ok(req) = wire::parse_request(keys, &buf[..n]) {
                    let _ = p.socket.try_send_to(&wire::response(keys, &req, from, role), from);
                }
            }
        }
    }
}

/// The next datagram on any of `sockets`: its index, length and source.
async fn recv_any(
    sockets: &[UdpSocket],
    buf: &mut [u8],
) -> (usize, std::io::Result<(usize, SocketAddr)>) {
    poll_fn(|cx| {
        for (i, s) in sockets.iter().enumerate() {
            let mut rb = ReadBuf::new(buf);
            if let Poll::Ready(r) = s.poll_recv_from(cx, &mut rb) {
                return Poll::Ready((i, r.map(|from| (rb.filled().len(), from))));
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::modes::ice::hardnat::{schedule::Bounds, Side};

    /// On loopback (no NAT): the easy side probes decoy ports and, among
    /// them, the port of one of the hard side's sockets, while the hard
    /// side's probes reach the easy socket directly (nothing filters);
    /// both sides end on the same 5-tuple and can use it.
    #[tokio::test]
    async fn two_drivers_find_the_same_tuple() {
        let easy_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let easy_addr = easy_sock.local_addr().unwrap();
        let mut hard_socks = Vec::new();
        for _ in 0..16 {
            hard_socks.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        let hard_ports: Vec<SocketAddr> =
            hard_socks.iter().map(|s| s.local_addr().unwrap()).collect();
        let target = hard_ports[11];
        // decoys: ports of sockets that are bound but never answer
        let mut decoys = Vec::new();
        for _ in 0..5 {
            decoys.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        let mut ports: Vec<u16> = decoys
            .iter()
            .map(|d| d.local_addr().unwrap().port())
            .collect();
        ports.insert(3, target.port());
        let bounds = Bounds {
            budget: Duration::from_secs(10),
            ..Bounds::default()
        };
        let now = tokio::time::Instant::now();
        let ke = Keys::new(
            "e",
            "easy-0123456789abcdefghij",
            "h",
            "hard-0123456789abcdefghij",
        );
        let kh = Keys::new(
            "h",
            "hard-0123456789abcdefghij",
            "e",
            "easy-0123456789abcdefghij",
        );
        let lo = "127.0.0.1:0".parse::<SocketAddr>().unwrap();
        let easy = Machine::new(
            Side::Easy,
            Role::Controlling,
            ke,
            &bounds,
            lo,
            ports,
            1,
            [1; 4],
            now,
        );
        let hard = Machine::new(
            Side::Hard,
            Role::Controlled,
            kh,
            &bounds,
            easy_addr,
            vec![],
            16,
            [2; 4],
            now,
        );
        let (e, h) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(run(easy, vec![easy_sock]), run(hard, hard_socks))
        })
        .await
        .expect("both end within the budget");
        let (e, h) = (e.unwrap(), h.unwrap());
        assert!(hard_ports.contains(&e.remote), "{}", e.remote);
        assert_eq!(h.remote, easy_addr);
        assert_eq!(h.socket.local_addr().unwrap(), e.remote);
        // the tuple carries data (late punch messages may come first: the
        // path's own filter drops STUN by its magic cookie)
        e.socket.send_to(b"ping", e.remote).await.unwrap();
        let mut b = [0u8; 2048];
        let mut got = None;
        for _ in 0..100 {
            let read = tokio::time::timeout(Duration::from_secs(5), h.socket.recv_from(&mut b));
            let (n, from) = read.await.expect("the datagram arrives").unwrap();
            if n < 8 || b[4..8] != [0x21, 0x12, 0xa4, 0x42] {
                got = Some((b[..n].to_vec(), from));
                break;
            }
        }
        assert_eq!(got, Some((b"ping".to_vec(), easy_addr)));
        // the decoys got probes but never answered: they are still quiet sockets
        assert!(decoys[0].try_recv_from(&mut b).is_ok());
    }

    #[tokio::test]
    async fn no_answer_ends_at_the_budget() {
        let easy_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let bounds = Bounds {
            budget: Duration::from_millis(300),
            ..Bounds::default()
        };
        let k = Keys::new(
            "e",
            "p-0123456789abcdefghijkl",
            "h",
            "q-0123456789abcdefghijkl",
        );
        let lo = "127.0.0.1:0".parse::<SocketAddr>().unwrap();
        let m = Machine::new(
            Side::Easy,
            Role::Controlling,
            k,
            &bounds,
            lo,
            vec![silent.local_addr().unwrap().port()],
            1,
            [0; 4],
            tokio::time::Instant::now(),
        );
        let r = tokio::time::timeout(Duration::from_secs(5), run(m, vec![easy_sock]))
            .await
            .expect("ends by itself");
        assert!(matches!(r, Err(PunchError::NoPath(_))));
        assert_eq!(
            run(
                Machine::new(
                    Side::Easy,
                    Role::Controlling,
                    Keys::new("a", "b", "c", "d"),
                    &bounds,
                    lo,
                    vec![],
                    1,
                    [0; 4],
                    tokio::time::Instant::now()
                ),
                vec![]
            )
            .await
            .unwrap_err(),
            PunchError::NoSockets
        );
    }
}
