//! Which streams the QUIC stack sends first.
//!
//! Both stacks keep their default `send_fairness(true)`: streams of one
//! priority take turns packet by packet, and before every packet the
//! stream of the highest priority with data goes first. (With
//! `send_fairness(false)` a stream that has started keeps the sender for
//! as long as it has data, whatever the priorities: one download starved
//! a shell beside it for its whole length, docs/benchmarks.md.)
//!
//! So that a bulk transfer cannot hold back an interactive connection
//! beside it (a shell next to a copy), a stream that sends more than
//! [`Class::BULK_BYTES`] within [`Class::WINDOW`] drops to [`BULK`], below
//! every other stream, and comes back once its local application has been
//! silent for a window (a read of the local socket waited that long). Time
//! spent blocked on the tunnel does not count as silence: a bulk stream
//! waiting behind another stays bulk. The session's acknowledgements go
//! above all ([`CONTROL`]).

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

    /// Count `n` bytes read from the local socket at `now`, after the read
    /// waited `waited` for them: the new priority when the class changed.
    pub fn sent(&mut self, n: usize, now: Instant, waited: Duration) -> Option<i32> {
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
            assert_eq!(c.sent(100, t + i * 10 * MS, 10 * MS), None);
        }
    }

    #[test]
    fn a_transfer_turns_bulk_at_once_and_light_after_a_silence() {
        let t = Instant::now();
        let mut c = Class::new(t);
        assert_eq!(c.sent(200 * 1024, t, MS), None);
        assert_eq!(c.sent(100 * 1024, t + MS, MS), Some(BULK));
        // still sending: stays bulk across windows
        for i in 1..20 {
            assert_eq!(c.sent(300 * 1024, t + i * 100 * MS, MS), None);
        }
        // the application paused for a window: light
        assert_eq!(c.sent(10, t + 3000 * MS, 500 * MS), Some(LIGHT));
    }

    #[test]
    fn blocked_on_the_tunnel_is_no_silence() {
        let t = Instant::now();
        let mut c = Class::new(t);
        assert_eq!(c.sent(1 << 20, t, MS), Some(BULK));
        // a second passed waiting for the stack, then the next read came at once
        assert_eq!(c.sent(10, t + 1000 * MS, Duration::ZERO), None);
        assert_eq!(c.sent(1 << 20, t + 1001 * MS, Duration::ZERO), None);
    }
}
