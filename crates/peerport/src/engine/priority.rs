//! Which streams the QUIC stack sends first.
//!
//! Both stacks run with `send_fairness(false)`: a stream keeps the sender
//! until it has nothing more to send (or its flow-control window is
//! used up) instead of taking turns packet by packet. Round-robin over
//! eight bulk streams spreads every batch of packets over all of them,
//! and each side then works on eight small pieces instead of one large
//! one (docs/benchmarks.md: 8 streams +45 % in `iroh-manual`).
//!
//! So that a bulk transfer cannot hold back an interactive connection
//! beside it (a shell next to a copy), a stream that sends more than
//! [`Class::BULK_BYTES`] within [`Class::WINDOW`] drops to [`BULK`], below
//! every other stream, and comes back once a window passes below that.
//! The session's acknowledgements go above all ([`CONTROL`]).

use std::time::{Duration, Instant};

/// The session's control stream (resume acknowledgements).
pub const CONTROL: i32 = 1;
/// Every stream starts here: interactive and request/response traffic.
pub const LIGHT: i32 = 0;
/// A stream moving bulk data.
pub const BULK: i32 = -1;

/// A stream's sending class, from how much it sent lately. No IO: the
/// caller passes the time.
#[derive(Debug)]
pub struct Class {
    start: Instant,
    bytes: usize,
    bulk: bool,
}

impl Class {
    /// How long a window of counting lasts.
    pub const WINDOW: Duration = Duration::from_millis(100);
    /// Bytes within one window that make a stream bulk (about 20 Mbit/s).
    pub const BULK_BYTES: usize = 256 * 1024;

    /// A light stream.
    pub fn new(now: Instant) -> Self {
        Class {
            start: now,
            bytes: 0,
            bulk: false,
        }
    }

    /// Count `n` bytes handed to the stack at `now`: the new priority when
    /// the class changed.
    pub fn sent(&mut self, n: usize, now: Instant) -> Option<i32> {
        let was = self.bulk;
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= Self::WINDOW {
            // a window (or more, idle) passed below the mark: light again
            if self.bytes < Self::BULK_BYTES || elapsed >= 2 * Self::WINDOW {
                self.bulk = false;
            }
            self.start = now;
            self.bytes = 0;
        }
        self.bytes += n;
        if self.bytes >= Self::BULK_BYTES {
            self.bulk = true;
        }
        (self.bulk != was).then_some(if self.bulk { BULK } else { LIGHT })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn keystrokes_stay_light() {
        let t = Instant::now();
        let mut c = Class::new(t);
        for i in 0..10_000 {
            assert_eq!(c.sent(100, t + i * 10 * MS), None);
        }
    }

    #[test]
    fn a_transfer_turns_bulk_at_once_and_light_after_a_quiet_window() {
        let t = Instant::now();
        let mut c = Class::new(t);
        assert_eq!(c.sent(200 * 1024, t), None);
        assert_eq!(c.sent(100 * 1024, t + MS), Some(BULK));
        // still sending fast: stays bulk across windows
        for i in 1..20 {
            assert_eq!(c.sent(300 * 1024, t + i * 100 * MS), None);
        }
        // a window with little, then the next send finds it light
        assert_eq!(c.sent(10, t + 2000 * MS), None);
        assert_eq!(c.sent(10, t + 2100 * MS), Some(LIGHT));
    }

    #[test]
    fn an_idle_gap_makes_it_light() {
        let t = Instant::now();
        let mut c = Class::new(t);
        assert_eq!(c.sent(1 << 20, t), Some(BULK));
        assert_eq!(c.sent(10, t + 500 * MS), Some(LIGHT));
    }
}
