//! Which streams the QUIC stack sends first.
//!
//! Both stacks keep their default `send_fairness(true)`: before every
//! packet the stream of the highest priority with data goes first, and
//! streams of one priority take turns packet by packet. (With
//! `send_fairness(false)` a stream that has started keeps the sender for
//! as long as it has data, whatever the priorities: one download starved
//! a shell beside it for its whole length, docs/benchmarks.md.)
//!
//! So that a bulk transfer cannot hold back an interactive connection
//! beside it (a shell next to a copy), a stream that sends more than
//! [`Class::BULK_BYTES`] within [`Class::WINDOW`] drops below every light
//! stream, and comes back once its local application has been silent for
//! a window (a read of the local socket waited that long). Time spent
//! blocked on the tunnel does not count as silence: a bulk stream waiting
//! behind another stays bulk. The session's acknowledgements go above all
//! ([`CONTROL`]).
//!
//! Bulk streams take turns by [`Class::QUANTUM`] rather than by packet:
//! a stream that turns bulk, or has sent a quantum as bulk, draws the next
//! number from [`Turns`] and goes to the priority below every bulk stream
//! that drew before it. The stream that waited longest sends next, and it
//! keeps the sender for a quantum, so each batch of packets carries one
//! stream instead of a piece of every one.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The session's control stream (resume acknowledgements).
pub const CONTROL: i32 = 1;
/// Every stream starts here: interactive and request/response traffic.
pub const LIGHT: i32 = 0;
/// The highest priority of a stream moving bulk data; each turn goes
/// lower ([`Turns`]).
pub const BULK: i32 = -1;

/// Numbers drawn by bulk streams for their next turn: the later the
/// number, the lower the priority. One counter for the process serves
/// every connection, as only the order within a connection matters. It
/// wraps after 2^30 turns (a month of 10 Gbit/s): once then, one turn
/// comes early.
#[derive(Debug, Default)]
pub struct Turns(AtomicU32);

impl Turns {
    /// A counter at zero.
    pub const fn new() -> Self {
        Turns(AtomicU32::new(0))
    }

    /// The priority of the next turn: below every earlier one.
    pub fn next(&self) -> i32 {
        let n = self.0.fetch_add(1, Ordering::Relaxed) & ((1 << 30) - 1);
        BULK - n as i32
    }
}

/// The process's turns.
pub static TURNS: Turns = Turns::new();

/// A stream's sending class, from how much it sent lately. No IO: the
/// caller passes the time.
#[derive(Debug)]
pub struct Class {
    start: Instant,
    bytes: usize,
    bulk: bool,
    /// Bytes sent as bulk since this stream's turn began.
    turn: usize,
}

impl Class {
    /// How long a window of counting lasts.
    pub const WINDOW: Duration = Duration::from_millis(100);
    /// Bytes within one window that make a stream bulk (about 20 Mbit/s).
    pub const BULK_BYTES: usize = 256 * 1024;
    /// Bytes a bulk stream sends in one turn.
    pub const QUANTUM: usize = 256 * 1024;

    /// A light stream.
    pub fn new(now: Instant) -> Self {
        Class {
            start: now,
            bytes: 0,
            bulk: false,
            turn: 0,
        }
    }

    /// Count `n` bytes read from the local socket at `now`, after the read
    /// waited `waited` for them: the new priority when it changed (the
    /// class, or a bulk stream's turn, drawn from `turns`).
    pub fn sent(&mut self, n: usize, now: Instant, waited: Duration, turns: &Turns) -> Option<i32> {
        let was = self.bulk;
        if waited >= Self::WINDOW {
            // the application was silent for a window: light again
            self.bulk = false;
            self.start = now;
            self.bytes = 0;
        } else if now.saturating_duration_since(self.start) >= Self::WINDOW {
            self.start = now;
            self.bytes = 0;
        }
        self.bytes += n;
        if self.bytes >= Self::BULK_BYTES {
            self.bulk = true;
        }
        if !self.bulk {
            return was.then_some(LIGHT);
        }
        if was {
            self.turn += n;
            if self.turn < Self::QUANTUM {
                return None;
            }
        }
        // just turned bulk, or its turn is over: behind the others
        self.turn = 0;
        Some(turns.next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Bulk priorities are below light ones.
    fn is_bulk(p: Option<i32>) -> bool {
        matches!(p, Some(p) if p <= BULK)
    }

    #[test]
    fn keystrokes_stay_light() {
        let t = Instant::now();
        let mut c = Class::new(t);
        let turns = Turns::new();
        for i in 0..10_000 {
            assert_eq!(c.sent(100, t + i * 10 * MS, 10 * MS, &turns), None);
        }
    }

    #[test]
    fn a_transfer_turns_bulk_at_once_and_light_after_a_silence() {
        let t = Instant::now();
        let turns = Turns::new();
        let mut c = Class::new(t);
        assert_eq!(c.sent(200 * 1024, t, MS, &turns), None);
        assert!(is_bulk(c.sent(100 * 1024, t + MS, MS, &turns)));
        // still sending: stays bulk across windows (new turns only)
        for i in 1..20 {
            let p = c.sent(300 * 1024, t + i * 100 * MS, MS, &turns);
            assert!(p.is_none() || is_bulk(p), "{p:?}");
        }
        // the application paused for a window: light
        assert_eq!(c.sent(10, t + 3000 * MS, 500 * MS, &turns), Some(LIGHT));
    }

    #[test]
    fn blocked_on_the_tunnel_is_no_silence() {
        let t = Instant::now();
        let turns = Turns::new();
        let mut c = Class::new(t);
        assert!(is_bulk(c.sent(1 << 20, t, MS, &turns)));
        // a second passed waiting for the stack, then the next read came at once
        assert_eq!(c.sent(10, t + 1000 * MS, Duration::ZERO, &turns), None);
        assert!(is_bulk(c.sent(
            1 << 20,
            t + 1001 * MS,
            Duration::ZERO,
            &turns
        )));
    }

    #[test]
    fn bulk_streams_take_turns_by_quantum() {
        let t = Instant::now();
        let turns = Turns::new();
        let (mut a, mut b) = (Class::new(t), Class::new(t));
        let pa = c_sent(&mut a, Class::BULK_BYTES, &turns).unwrap();
        let pb = c_sent(&mut b, Class::BULK_BYTES, &turns).unwrap();
        // the one that turned bulk first goes first
        assert!(pa <= BULK && pb < pa);
        // within a quantum the priority stays
        assert_eq!(c_sent(&mut a, Class::QUANTUM / 2, &turns), None);
        // after a quantum, a goes behind b
        let pa2 = c_sent(&mut a, Class::QUANTUM / 2, &turns).unwrap();
        assert!(pa2 < pb);
        // and b's next turn behind a's
        let pb2 = c_sent(&mut b, Class::QUANTUM, &turns).unwrap();
        assert!(pb2 < pa2);
    }

    /// `n` bytes at once, in the first window.
    fn c_sent(c: &mut Class, n: usize, turns: &Turns) -> Option<i32> {
        c.sent(n, c.start, Duration::ZERO, turns)
    }

    #[test]
    fn turns_stay_below_light_after_wrapping() {
        let turns = Turns(AtomicU32::new(u32::MAX - 1));
        for _ in 0..4 {
            let p = turns.next();
            assert!((i32::MIN..=BULK).contains(&p), "{p}");
        }
    }
}
