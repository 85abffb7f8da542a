//! One punch of a session, as a task: it waits for its start signal,
//! takes one of the process's few punch permits, opens its sockets and
//! runs the [`driver`](super::driver). Dropping the [`Attempt`] stops it
//! and closes every socket.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::LazyLock,
};

use tokio::{net::UdpSocket, sync::Semaphore};
use tokio_util::task::AbortOnDropHandle;

use super::{
    driver::{self, PunchError, Punched},
    gather::Learned,
    hint::Hint,
    machine::Machine,
    schedule::{probe_order, Bounds},
    wire::{Keys, Role},
    Side,
};
use crate::stun::allocation::PortAllocation;

/// Punches under way at once in this process (a sender with many
/// receivers): each may hold hundreds of sockets.
const MAX_CONCURRENT: usize = 4;
static PERMITS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(MAX_CONCURRENT));

/// Descriptors left free for everything else when the hard side opens
/// its sockets.
const FD_RESERVE: usize = 256;

/// A running punch (see the module docs).
pub struct Attempt {
    side: Side,
    /// How the found 5-tuple answers the peer's late requests.
    answer: (Keys, Role),
    task: AbortOnDropHandle<Result<Punched, PunchError>>,
    /// Dropped when the result is wanted: the found 5-tuple is held
    /// (its late requests answered) until then.
    take: tokio::sync::oneshot::Sender<()>,
}

/// What a punch needs besides its start signal.
pub struct Setup {
    /// This side's part.
    pub side: Side,
    /// The ICE role (the receiver controls).
    pub role: Role,
    /// Both sides' credentials.
    pub keys: Keys,
    /// This side's gathering (the easy side's socket is in it).
    pub mine: Learned,
    /// The peer's hint.
    pub peer: Hint,
    /// The address to bind the hard side's sockets to.
    pub bind: IpAddr,
    /// The limits.
    pub bounds: Bounds,
}

impl Attempt {
    /// Start `setup` once `go` resolves.
    pub fn start(setup: Setup, go: impl Future<Output = ()> + Send + 'static) -> Attempt {
        let side = setup.side;
        let answer = (setup.keys.clone(), setup.role);
        let (take, taken) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            go.await;
            let (keys, role) = (setup.keys.clone(), setup.role);
            let found = {
                let _permit = PERMITS.try_acquire().map_err(|_| PunchError::Busy)?;
                let (machine, sockets) = setup.open().await?;
                driver::run(machine, sockets).await?
            };
            driver::hold(&found, &keys, role, taken).await;
            Ok(found)
        });
        Attempt {
            side,
            answer,
            task: AbortOnDropHandle::new(task),
            take,
        }
    }

    /// This side's part.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The credentials and role the found 5-tuple answers the peer's
    /// late requests with (`Pinned::answering`).
    pub fn answer(&self) -> (Keys, Role) {
        self.answer.clone()
    }

    /// The 5-tuple, once found (or why not).
    pub async fn result(self) -> Result<Punched, PunchError> {
        drop(self.take);
        self.task
            .await
            .unwrap_or_else(|_| Err(PunchError::NoPath("the punch stopped")))
    }
}

impl Setup {
    /// The machine and its sockets.
    async fn open(self) -> Result<(Machine, Vec<UdpSocket>), PunchError> {
        let now = tokio::time::Instant::now();
        let seed = rand::random();
        match self.side {
            Side::Easy => {
                let socket = match self.mine.socket {
                    Some(kept) => kept.take().await.ok_or(PunchError::NoSockets)?,
                    None => return Err(PunchError::NoSockets),
                };
                let ports = probe_order(&self.peer, &self.bounds, &mut rand::rng());
                let peer = SocketAddr::new(self.peer.public, 0);
                let machine = Machine::new(
                    Side::Easy,
                    self.role,
                    self.keys,
                    &self.bounds,
                    peer,
                    ports,
                    1,
                    seed,
                    now,
                );
                Ok((machine, vec![socket]))
            }
            Side::Hard => {
                let want = match self.mine.hint.allocation {
                    PortAllocation::Sequential { .. } => self.bounds.hard_sockets_sequential,
                    _ => self.bounds.hard_sockets,
                };
                let n = want.min(fd_headroom().unwrap_or(want));
                let mut sockets = Vec::with_capacity(n);
                for _ in 0..n {
                    match UdpSocket::bind(SocketAddr::new(self.bind, 0)).await {
                        Ok(s) => sockets.push(s),
                        // out of descriptors or ports: punch with what we have
                        Err(_) => break,
                    }
                }
                if sockets.is_empty() {
                    return Err(PunchError::NoSockets);
                }
                let peer = SocketAddr::new(self.peer.public, self.peer.port);
                let machine = Machine::new(
                    Side::Hard,
                    self.role,
                    self.keys,
                    &self.bounds,
                    peer,
                    Vec::new(),
                    sockets.len(),
                    seed,
                    now,
                );
                Ok((machine, sockets))
            }
        }
    }
}

/// Descriptors this process may still open, less [`FD_RESERVE`];
/// `None` where that cannot be read.
fn fd_headroom() -> Option<usize> {
    let limit = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft: usize = limit
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(soft.saturating_sub(open).saturating_sub(FD_RESERVE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modes::ice::hardnat::hint::Mapping;

    #[test]
    fn headroom_is_read() {
        // /proc is there on Linux; the test process has far fewer than
        // its limit open
        if let Some(h) = fd_headroom() {
            assert!(h > 0);
        }
    }

    /// Two attempts on loopback (no NAT: the hard side's first probes
    /// reach the easy socket): the easy one waits for its start signal,
    /// both end on the same 5-tuple, and the hard side's other sockets
    /// are closed.
    #[tokio::test]
    async fn two_attempts_meet_after_the_start_signal() {
        let easy_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let easy_addr = easy_sock.local_addr().unwrap();
        let lo = "127.0.0.1".parse().unwrap();
        let easy_hint = Hint {
            mapping: Mapping::Independent,
            public: lo,
            port: easy_addr.port(),
            allocation: PortAllocation::Unknown,
        };
        let hard_hint = Hint {
            mapping: Mapping::Dependent,
            public: lo,
            port: 40000,
            allocation: PortAllocation::Random,
        };
        let (pe, ph) = ("easy-0123456789abcdefghij", "hard-0123456789abcdefghij");
        let bounds = Bounds {
            hard_sockets: 8,
            budget: std::time::Duration::from_secs(10),
            ..Bounds::default()
        };
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let easy = Attempt::start(
            Setup {
                side: Side::Easy,
                role: Role::Controlling,
                keys: Keys::new("e", pe, "h", ph),
                mine: Learned {
                    hint: easy_hint,
                    socket: Some(super::super::gather::KeptSocket::holding(easy_sock)),
                },
                peer: hard_hint,
                bind: lo,
                bounds,
            },
            async move {
                let _ = go_rx.await;
            },
        );
        let hard = Attempt::start(
            Setup {
                side: Side::Hard,
                role: Role::Controlled,
                keys: Keys::new("h", ph, "e", pe),
                mine: Learned {
                    hint: hard_hint,
                    socket: None,
                },
                peer: easy_hint,
                bind: lo,
                bounds,
            },
            async {},
        );
        assert_eq!((easy.side(), hard.side()), (Side::Easy, Side::Hard));
        go_tx.send(()).unwrap();
        let limit = std::time::Duration::from_secs(20);
        let (e, h) =
            tokio::time::timeout(limit, async { tokio::join!(easy.result(), hard.result()) })
                .await
                .expect("both end");
        let (e, h) = (e.unwrap(), h.unwrap());
        assert_eq!(h.remote, easy_addr);
        assert_eq!(e.remote, h.socket.local_addr().unwrap());
        assert_eq!(e.socket.local_addr().unwrap(), easy_addr);
    }
}
