//! Two machines through modelled NATs, in virtual time: the easy side
//! behind an endpoint-independent NAT with port-restricted filtering (the
//! lab's cone), the hard side behind an endpoint-dependent one that
//! allocates at random or in sequence.

use std::collections::{HashMap, HashSet};

use rand::{rngs::StdRng, Rng, SeedableRng};

use super::*;
use crate::modes::ice::hardnat::{
    hint::{Hint, Mapping},
    schedule::probe_order,
};
use crate::stun::allocation::PortAllocation;

#[derive(Clone, Copy)]
enum Alloc {
    /// Endpoint-independent (the easy side's NAT).
    Eim,
    Random,
    Sequential,
}

/// A NAT in front of one host's sockets.
struct Nat {
    alloc: Alloc,
    public: IpAddr,
    next: u16,
    /// (socket, destination) -> external port (for EIM: destination ignored)
    map: HashMap<(usize, Option<SocketAddr>), u16>,
    /// external port -> (socket, remotes it sent to: the filter)
    open: HashMap<u16, (usize, HashSet<SocketAddr>)>,
}

impl Nat {
    fn new(alloc: Alloc, public: &str, next: u16) -> Nat {
        Nat {
            alloc,
            public: public.parse().unwrap(),
            next,
            map: HashMap::new(),
            open: HashMap::new(),
        }
    }

    fn outbound(&mut self, sock: usize, to: SocketAddr, rng: &mut StdRng) -> SocketAddr {
        let key = match self.alloc {
            Alloc::Eim => (sock, None),
            _ => (sock, Some(to)),
        };
        let port = match self.map.get(&key) {
            Some(&p) => p,
            None => {
                let p = match self.alloc {
                    Alloc::Eim | Alloc::Sequential => {
                        self.next += 1;
                        self.next
                    }
                    Alloc::Random => loop {
                        let p = rng.random_range(1024..=u16::MAX);
                        if !self.open.contains_key(&p) {
                            break p;
                        }
                    },
                };
                self.map.insert(key, p);
                p
            }
        };
        self.open
            .entry(port)
            .or_insert((sock, HashSet::new()))
            .1
            .insert(to);
        SocketAddr::new(self.public, port)
    }

    fn inbound(&self, port: u16, from: SocketAddr) -> Option<usize> {
        let (sock, allowed) = self.open.get(&port)?;
        allowed.contains(&from).then_some(*sock)
    }
}

struct Host {
    m: Machine,
    nat: Nat,
    done: Option<(usize, SocketAddr)>,
    failed: bool,
}

/// One attempt; returns the virtual time to done, or None.
fn attempt(hard_alloc: Alloc, easy_controls: bool, seed: u64, bounds: &Bounds) -> Option<Duration> {
    attempt_late(hard_alloc, easy_controls, seed, bounds, Duration::ZERO)
}

/// [`attempt`] with the hard side starting `late` after the easy side
/// (a copy-paste answerer waits for the peer's first sign of life).
fn attempt_late(
    hard_alloc: Alloc,
    easy_controls: bool,
    seed: u64,
    bounds: &Bounds,
    late: Duration,
) -> Option<Duration> {
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = Instant::now();
    let keys_e = Keys::new(
        "eu",
        "easy-password-0123456789",
        "hu",
        "hard-password-0123456789",
    );
    let keys_h = Keys::new(
        "hu",
        "hard-password-0123456789",
        "eu",
        "easy-password-0123456789",
    );
    let stun: SocketAddr = "198.18.0.1:3478".parse().unwrap();
    // the easy side's punch socket got its mapping from a STUN server
    let mut easy_nat = Nat::new(Alloc::Eim, "198.18.0.11", 40000);
    let easy_addr = easy_nat.outbound(0, stun, &mut rng);
    // the hard side saw its last mapping at 20000 (sequential) before opening its sockets
    let hard_nat = Nat::new(hard_alloc, "198.18.0.12", 20000);
    let hard_hint = Hint {
        mapping: Mapping::Dependent,
        public: hard_nat.public,
        port: 20000,
        allocation: match hard_alloc {
            Alloc::Sequential => PortAllocation::Sequential { step: 1 },
            _ => PortAllocation::Random,
        },
    };
    let (role_e, role_h) = if easy_controls {
        (Role::Controlling, Role::Controlled)
    } else {
        (Role::Controlled, Role::Controlling)
    };
    let sockets = match hard_alloc {
        Alloc::Sequential => bounds.hard_sockets_sequential,
        _ => bounds.hard_sockets,
    };
    let ports = probe_order(&hard_hint, bounds, &mut rng);
    let peer_of_easy = SocketAddr::new(hard_nat.public, 0);
    let mut hosts = [
        Host {
            m: Machine::new(
                Side::Easy,
                role_e,
                keys_e,
                bounds,
                peer_of_easy,
                ports,
                1,
                [1; 4],
                t0,
            ),
            nat: easy_nat,
            done: None,
            failed: false,
        },
        Host {
            m: Machine::new(
                Side::Hard,
                role_h,
                keys_h,
                bounds,
                easy_addr,
                Vec::new(),
                sockets,
                [2; 4],
                t0 + late,
            ),
            nat: hard_nat,
            done: None,
            failed: false,
        },
    ];
    // datagrams in flight: (arrival, to host, from public, to port, bytes)
    let mut wire: Vec<(Instant, usize, SocketAddr, u16, Vec<u8>)> = Vec::new();
    let step = Duration::from_millis(1);
    let mut now = t0;
    while now <= t0 + late + bounds.budget + step {
        for (i, h) in hosts.iter_mut().enumerate() {
            if i == 1 && now < t0 + late {
                continue;
            }
            h.m.tick(now);
            while let Some(o) = h.m.poll_output() {
                match o {
                    Output::Send { sock, to, bytes } => {
                        let from = h.nat.outbound(sock, to, &mut rng);
                        wire.push((now + step, 1 - i, from, to.port(), bytes));
                    }
                    Output::Done { sock, remote } => h.done = Some((sock, remote)),
                    Output::Failed(_) => h.failed = true,
                }
            }
        }
        now += step;
        let (due, later): (Vec<_>, Vec<_>) = wire.drain(..).partition(|d| d.0 <= now);
        wire = later;
        for (_, to, from, port, bytes) in due {
            if to == 1 && now < t0 + late {
                continue;
            }
            let h = &mut hosts[to];
            if let Some(sock) = h.nat.inbound(port, from) {
                h.m.datagram(sock, from, &bytes, now);
            }
        }
        if hosts.iter().all(|h| h.done.is_some()) {
            let (e, h) = (hosts[0].done.unwrap(), hosts[1].done.unwrap());
            // both chose the same 5-tuple, seen from each end
            assert_eq!(h.1, easy_addr, "seed {seed}");
            let hard_port = hosts[1].nat.map[&(h.0, Some(easy_addr))];
            assert_eq!(
                e.1,
                SocketAddr::new(hosts[1].nat.public, hard_port),
                "seed {seed}"
            );
            return Some(now - t0);
        }
        if hosts.iter().any(|h| h.failed) {
            return None;
        }
    }
    None
}

#[test]
fn random_allocator_is_found_within_the_budget() {
    let b = Bounds::default();
    let mut times = Vec::new();
    for seed in 0..40 {
        if let Some(t) = attempt(Alloc::Random, seed % 2 == 0, seed, &b) {
            times.push(t);
        }
    }
    assert!(times.len() >= 39, "{} of 40", times.len());
    times.sort();
    assert!(
        times[times.len() / 2] < Duration::from_secs(2),
        "median {:?}",
        times[times.len() / 2]
    );
}

#[test]
fn sequential_allocator_is_predicted_at_once() {
    let b = Bounds::default();
    for seed in 0..10 {
        let t = attempt(Alloc::Sequential, seed % 2 == 1, seed, &b).expect("punched");
        assert!(t < Duration::from_millis(400), "seed {seed}: {t:?}");
    }
}

/// The easy side has probed the predicted ports before the hard side
/// opened them (its probes died at the hard NAT); the hard side's probes
/// then come through the easy side's open filter, and the easy side
/// checks each such 5-tuple again at once.
#[test]
fn a_late_hard_side_is_still_found() {
    let b = Bounds::default();
    for seed in 0..10 {
        let late = Duration::from_millis(300);
        let t = attempt_late(Alloc::Sequential, seed % 2 == 0, seed, &b, late).expect("punched");
        assert!(t < late + Duration::from_millis(400), "seed {seed}: {t:?}");
        assert!(attempt_late(Alloc::Random, seed % 2 == 0, seed, &b, late).is_some());
    }
}

#[test]
fn a_hopeless_attempt_ends_at_the_deadline() {
    // too few probes for a random allocator: both sides give up in time
    let tiny = Bounds {
        hard_sockets: 1,
        max_probes: 10,
        budget: Duration::from_millis(300),
        ..Bounds::default()
    };
    assert_eq!(attempt(Alloc::Random, true, 3, &tiny), None);
}

#[test]
fn strangers_get_no_answer_and_nothing_after_the_end() {
    let keys = Keys::new("a", "pa-0123456789012345678", "b", "pb-0123456789012345678");
    let t0 = Instant::now();
    let peer: SocketAddr = "198.18.0.12:0".parse().unwrap();
    let mut m = Machine::new(
        Side::Easy,
        Role::Controlled,
        keys,
        &Bounds::default(),
        peer,
        vec![],
        1,
        [0; 4],
        t0,
    );
    let stranger = Keys::new(
        "b",
        "guess-000000000000000000",
        "a",
        "guess-000000000000000000",
    );
    let probe = Punch {
        kind: Kind::Probe,
        role: Role::Controlling,
        index: 0,
    };
    let forged = wire::request(&stranger, [9; 12], probe);
    m.datagram(0, "198.18.0.12:5000".parse().unwrap(), &forged, t0);
    assert_eq!(m.poll_output(), None, "a forged request is not answered");
    // a valid request from another address than the peer's is ignored too
    let peer_keys = Keys::new("b", "pb-0123456789012345678", "a", "pa-0123456789012345678");
    let valid = wire::request(&peer_keys, [8; 12], probe);
    m.datagram(0, "203.0.113.9:5000".parse().unwrap(), &valid, t0);
    assert_eq!(m.poll_output(), None);
    m.tick(t0 + Duration::from_secs(6));
    assert!(matches!(m.poll_output(), Some(Output::Failed(_))));
    assert_eq!(m.poll_timeout(), None);
    m.datagram(0, "198.18.0.12:5000".parse().unwrap(), &valid, t0);
    assert_eq!(m.poll_output(), None, "over is over");
}
