//! One punch attempt as a state machine (sans-IO): datagrams and time go
//! in, datagrams to send and the outcome come out. The driver owns the
//! sockets (numbered from 0: the hard side's many, the easy side's one).
//!
//! * The hard side sends a probe from each socket in turn to the easy
//!   side's punch address, each socket every `n / rate` (about 0.5 s):
//!   every probe opens a mapping in the hard NAT towards that address.
//! * The easy side probes the hard side's public address on the ports
//!   of [`schedule::probe_order`] at [`Bounds::rate`]; each probe opens
//!   the easy NAT's filter for that port. A probe that meets one of the
//!   hard side's mappings gets through and is answered.
//! * A valid request is answered at once on the socket it came to, and
//!   answered with a probe of our own on the same 5-tuple (a triggered
//!   check), so both sides confirm it. The controlling side nominates
//!   the first 5-tuple its own probe confirmed; the controlled side takes
//!   the nominated one.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::time::Instant;

use super::{
    schedule::{Bounds, Pacer},
    wire::{self, Keys, Kind, Punch, Role},
    Side,
};

/// How often a nomination is sent again until it is answered.
const NOMINATE_EVERY: Duration = Duration::from_millis(100);
/// Most nominations sent.
const NOMINATIONS: u32 = 10;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `bytes` from socket `sock` to `to`.
    Send {
        /// The socket.
        sock: usize,
        /// Where to.
        to: SocketAddr,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// The punch found this 5-tuple, and both sides chose it.
    Done {
        /// Our socket.
        sock: usize,
        /// The peer's address as our socket sees it.
        remote: SocketAddr,
    },
    /// No direct 5-tuple within the budget.
    Failed(&'static str),
}

/// The attempt's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Probing,
    Nominating {
        sock: usize,
        remote: SocketAddr,
        sent: u32,
        next: Instant,
    },
    Over,
}

/// One punch attempt.
pub struct Machine {
    side: Side,
    role: Role,
    keys: Keys,
    deadline: Instant,
    pacer: Pacer,
    /// The easy side's ports to probe, in order (easy side only).
    ports: Vec<u16>,
    /// Probes sent so far (easy), or the next socket to send from (hard).
    cursor: usize,
    /// The hard side's socket count.
    sockets: usize,
    /// The peer: its public address, and (easy side's) punch port.
    peer: SocketAddr,
    /// Our requests waiting for an answer: transaction -> (socket, to).
    pending: HashMap<[u8; 12], (usize, SocketAddr)>,
    tid: u64,
    seed: [u8; 4],
    state: State,
    out: VecDeque<Output>,
}

impl Machine {
    /// A punch as `side` with `role`, towards `peer` (its public address;
    /// the hard side aims at its port, the easy side probes `ports`
    /// there), starting `now`. `sockets` is how many the hard side has;
    /// `seed` makes this attempt's transaction ids its own.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        side: Side,
        role: Role,
        keys: Keys,
        bounds: &Bounds,
        peer: SocketAddr,
        ports: Vec<u16>,
        sockets: usize,
        seed: [u8; 4],
        now: Instant,
    ) -> Machine {
        let rate = match side {
            Side::Easy => bounds.rate,
            // each socket once per n / rate: n sockets, at most `rate` a second
            Side::Hard => bounds
                .rate
                .min(u32::try_from(sockets * 2).unwrap_or(u32::MAX)),
        };
        Machine {
            side,
            role,
            keys,
            deadline: now + bounds.budget,
            pacer: Pacer::new(rate, now),
            ports,
            cursor: 0,
            sockets: sockets.max(1),
            peer,
            pending: HashMap::new(),
            tid: 0,
            seed,
            state: State::Probing,
            out: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Machine::tick`] should run next; `None` once it is over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Over => None,
            State::Nominating { next, .. } => Some(next.min(self.deadline)),
            State::Probing => Some(self.pacer.next_at().min(self.deadline)),
        }
    }

    fn next_tid(&mut self) -> [u8; 12] {
        self.tid += 1;
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(&self.seed);
        t[4..].copy_from_slice(&self.tid.to_be_bytes());
        t
    }

    fn send_request(&mut self, sock: usize, to: SocketAddr, kind: Kind) {
        let tid = self.next_tid();
        let punch = Punch {
            kind,
            role: self.role,
            index: u16::try_from(sock).unwrap_or(u16::MAX),
        };
        self.pending.insert(tid, (sock, to));
        self.out.push_back(Output::Send {
            sock,
            to,
            bytes: wire::request(&self.keys, tid, punch),
        });
    }

    fn finish(&mut self, out: Output) {
        self.state = State::Over;
        self.pending.clear();
        self.out.push_back(out);
    }

    /// Time passed: send what is due; give up at the deadline.
    pub fn tick(&mut self, now: Instant) {
        if self.state == State::Over {
            return;
        }
        if now >= self.deadline {
            return self.finish(Output::Failed(
                "no direct path within the punch's time budget",
            ));
        }
        if let State::Nominating {
            sock,
            remote,
            sent,
            next,
            ..
        } = self.state
        {
            if now >= next && sent < NOMINATIONS {
                self.send_request(sock, remote, Kind::Nominate);
                self.state = State::Nominating {
                    sock,
                    remote,
                    sent: sent + 1,
                    next: now + NOMINATE_EVERY,
                };
            }
            return;
        }
        for _ in 0..self.pacer.take(now) {
            match self.side {
                Side::Easy => {
                    let Some(&port) = self.ports.get(self.cursor) else {
                        break;
                    };
                    self.cursor += 1;
                    let to = SocketAddr::new(self.peer.ip(), port);
                    self.send_request(0, to, Kind::Probe);
                }
                Side::Hard => {
                    let sock = self.cursor % self.sockets;
                    self.cursor += 1;
                    self.send_request(sock, self.peer, Kind::Probe);
                }
            }
        }
    }

    fn is_peer(&self, from: SocketAddr) -> bool {
        same_ip(from.ip(), self.peer.ip())
    }

    /// A datagram arrived on socket `sock` from `from`.
    pub fn datagram(&mut self, sock: usize, from: SocketAddr, bytes: &[u8], now: Instant) {
        if self.state == State::Over || !self.is_peer(from) {
            return;
        }
        if let Ok(req) = wire::parse_request(&self.keys, bytes) {
            self.out.push_back(Output::Send {
                sock,
                to: from,
                bytes: wire::response(&self.keys, &req, from, self.role),
            });
            if req.punch.kind == Kind::Nominate && self.role == Role::Controlled {
                return self.finish(Output::Done { sock, remote: from });
            }
            // the 5-tuple works inbound: check it outbound at once, even
            // when a probe of ours went there before (it may have arrived
            // before the peer's NAT had this mapping, and been dropped)
            if self.state == State::Probing {
                self.send_request(sock, from, Kind::Probe);
            }
            return;
        }
        let Ok(resp) = wire::parse_response(&self.keys, bytes) else {
            return;
        };
        if self.pending.get(&resp.tid) != Some(&(sock, from)) {
            return;
        }
        self.pending.remove(&resp.tid);
        match (resp.punch.kind, self.state) {
            (Kind::Probe, State::Probing) if self.role == Role::Controlling => {
                self.send_request(sock, from, Kind::Nominate);
                self.state = State::Nominating {
                    sock,
                    remote: from,
                    sent: 1,
                    next: now + NOMINATE_EVERY,
                };
            }
            (
                Kind::Nominate,
                State::Nominating {
                    sock: s, remote, ..
                },
            ) if (s, remote) == (sock, from) => {
                self.finish(Output::Done { sock, remote: from });
            }
            // controlled: a confirmed 5-tuple waits for the nomination
            _ => {}
        }
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests;
