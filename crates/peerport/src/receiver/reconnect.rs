//! The receiver's reconnect policy and its backoff.

use std::time::Duration;

/// When and how a receiver re-establishes a lost session.
#[derive(Debug, Clone)]
pub struct Reconnect {
    /// Reconnect at all (otherwise the receiver ends with the first session).
    pub enabled: bool,
    /// Give up when no session could be re-established for this long
    /// (`None`: never).
    pub give_up_after: Option<Duration>,
    /// Delay before the second attempt; doubles up to `max_delay`.
    pub first_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
    /// A session that lasted this long resets the backoff.
    pub stable_after: Duration,
    /// With a dialer that needs no person: after this long without a
    /// packet from the sender (plus four round trips), give the connection
    /// up and dial again (`None`: wait for the idle timeout). Both sides
    /// send keep-alives, so set it a little above the keep-alive interval.
    pub silence_limit: Option<Duration>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            enabled: true,
            give_up_after: None,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            silence_limit: Some(crate::status::STALE_AFTER),
        }
    }
}

/// Exponential backoff with ±20 % jitter.
#[derive(Debug)]
pub(super) struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub(super) fn new(r: &Reconnect) -> Self {
        Backoff {
            next: r.first_delay,
            first: r.first_delay,
            max: r.max_delay.max(r.first_delay),
        }
    }

    pub(super) fn reset(&mut self) {
        self.next = self.first;
    }

    pub(super) fn delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(rand::random_range(0.8..1.2))
    }
}
