//! A model-based congestion controller for long, lossy paths (the
//! `--congestion bbr` of the quinn modes), after BBR
//! (draft-ietf-ccwg-bbr), without IO: it sees sends, acks and losses as
//! plain numbers and answers with a window.
//!
//! Why not quinn's own BBR: quinn estimates the bottleneck rate from the
//! gap between two consecutive acks, so a burst of acks reads as many
//! times the link's rate, and quinn paces at `window / RTT` rather than
//! at the controller's rate. On a 200 Mbit/s, 100 ms path with 1 % loss
//! its window grew to 20-60 MB, it sent 220 Mbit/s into the link and lost
//! a third of it (`scripts/lab/lfn.sh`, `path.jsonl`).
//!
//! What this model does:
//! * **Delivery rate** per acked packet as in BBR: bytes delivered between
//!   the packet's send and its ack, over the longer of the send and ack
//!   intervals; the bottleneck rate is the largest sample of the last 10
//!   rounds.
//! * **Minimum RTT** over the last 10 s of samples (a path whose RTT grows
//!   is followed within 10 s; the connection's lifetime minimum is not
//!   used).
//! * **The window** is the bandwidth-delay product times a gain that
//!   cycles over eight phases of one minimum RTT each: 1.5 (probe for
//!   more), 0.75 (drain the queue the probe built, so the RTT floor is
//!   seen every cycle), then 1.25, plus the bytes that acks delivered in
//!   bursts beyond the rate. The delay product is taken over at least
//!   2 ms, so a LAN's window is not starved by the hosts' own delays. Since quinn paces at `window / RTT`, the window sets
//!   the rate too.
//! * **Loss** is a congestion signal only above 2 % of a round's bytes
//!   (`BBRLossThresh`): random loss below it leaves the window alone; a
//!   round above it caps the window at 85 % of what was in flight, but not
//!   below one delay product (the cap grows back by a quarter per probe
//!   that stays under the threshold).
//!   Persistent congestion starts over from the minimum window.
//! * **Startup** doubles the window per round until the rate stops
//!   growing by 25 % for three rounds or a round loses more than 2 %.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Loss rate (lost / (delivered + lost) bytes in a round) above which a
/// round counts as congested.
pub const LOSS_THRESHOLD: f64 = 0.02;
/// Rounds the bandwidth filter remembers.
const BW_ROUNDS: usize = 10;
/// How long a minimum RTT sample is trusted.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// Window gains of the probing cycle, one phase per minimum RTT.
const CYCLE: [f64; 8] = [1.5, 0.75, 1.25, 1.25, 1.25, 1.25, 1.25, 1.25];
/// The window never plans for less than this RTT: on a LAN or loopback,
/// where the RTT is far below the hosts' scheduling and ack delays, a
/// window of one BDP would starve the path.
const MIN_BDP_RTT: Duration = Duration::from_millis(2);
/// Growth a startup round must show to count as still growing.
const STARTUP_GROWTH: f64 = 1.25;
/// Cap on the window after a congested round, of the bytes in flight (at
/// least one delay product).
const LOSS_BACKOFF: f64 = 0.85;
/// A loss rate is read over at least this many packets.
const MIN_LOSS_SAMPLE_PACKETS: u64 = 400;
/// Send marks kept for rate samples (packets in flight, about).
const MAX_MARKS: usize = 1 << 16;

/// What the model knew when a packet was sent.
#[derive(Debug, Clone, Copy)]
struct SendMark {
    sent: Instant,
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
}

/// Largest value per round over the last [`BW_ROUNDS`] rounds.
#[derive(Debug, Clone, Default)]
struct RoundMax {
    slots: [(u64, u64); BW_ROUNDS],
}

impl RoundMax {
    fn update(&mut self, round: u64, value: u64) {
        let slot = &mut self.slots[(round % BW_ROUNDS as u64) as usize];
        if slot.0 != round {
            *slot = (round, value);
        } else {
            slot.1 = slot.1.max(value);
        }
    }

    fn get(&self, round: u64) -> u64 {
        self.slots
            .iter()
            .filter(|(r, _)| round.saturating_sub(*r) < BW_ROUNDS as u64)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0)
    }
}

/// The path's RTT floor: the smallest sample of the last 10 s. Samples
/// are also kept in two halves of 5 s, so that an expired floor is
/// replaced by the floor of the recent samples rather than by whichever
/// sample comes next. A path that got slower (a new route, a relay) is
/// followed sooner: when even the smallest sample of three probing cycles
/// in a row (each with a drain phase) is above twice the floor, that
/// becomes the floor.
#[derive(Debug, Clone, Default)]
struct RttFloor {
    floor: Option<(Duration, Instant)>,
    /// Smallest samples of the previous and the current half window.
    halves: [Option<Duration>; 2],
    half_start: Option<Instant>,
    cycle_min: Option<Duration>,
    high_cycles: u8,
}

impl RttFloor {
    fn get(&self) -> Option<Duration> {
        self.floor.map(|(d, _)| d)
    }

    fn sample(&mut self, now: Instant, rtt: Duration) {
        let age = self.half_start.map(|s| now.saturating_duration_since(s));
        if age.is_none_or(|a| a >= MIN_RTT_WINDOW) {
            self.halves = [None, None];
            self.half_start = Some(now);
        } else if age.is_some_and(|a| a >= MIN_RTT_WINDOW / 2) {
            self.halves = [self.halves[1], None];
            self.half_start = Some(now);
        }
        let lower = |a: Option<Duration>| Some(a.map_or(rtt, |a| a.min(rtt)));
        self.halves[1] = lower(self.halves[1]);
        self.cycle_min = lower(self.cycle_min);
        match self.floor {
            Some((m, at)) if rtt > m && now.saturating_duration_since(at) < MIN_RTT_WINDOW => {}
            Some((m, _)) if rtt > m => {
                let recent = self.halves.iter().flatten().min().copied();
                self.floor = Some((recent.unwrap_or(rtt), now));
            }
            _ => self.floor = Some((rtt, now)),
        }
    }

    /// A probing cycle ended.
    fn end_cycle(&mut self, now: Instant) {
        let (Some(c), Some((m, _))) = (self.cycle_min.take(), self.floor) else {
            return; // no sample this cycle
        };
        if c <= 2 * m {
            self.high_cycles = 0;
            return;
        }
        self.high_cycles += 1;
        if self.high_cycles >= 3 {
            self.floor = Some((c, now));
            self.high_cycles = 0;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Doubling per round; `best` is the rate the next rounds must beat.
    Startup { best: u64, flat_rounds: u8 },
    /// Cycling the gains; `index` into [`CYCLE`], started at `since`.
    Cruise { index: usize, since: Instant },
}

/// The controller's state. Feed it with `on_*`, read [`Model::window`].
#[derive(Debug, Clone)]
pub struct Model {
    mtu: u64,
    initial_window: u64,
    window: u64,
    phase: Phase,
    in_flight: u64,
    // delivery-rate sampling
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    marks: VecDeque<SendMark>,
    // rounds
    round: u64,
    round_end: u64,
    /// Bytes (delivered, lost) in this round and the one before: a loss
    /// rate is read over both, since losses are noticed a round late.
    round_bytes: (u64, u64),
    prev_round_bytes: (u64, u64),
    round_congested: bool,
    // filters
    bw: RoundMax,
    min_rtt: RttFloor,
    extra_acked: RoundMax,
    epoch_start: Instant,
    epoch_acked: u64,
    // the cap left by congested rounds
    inflight_hi: Option<u64>,
    /// When the window last backed off for loss.
    backoff_at: Option<Instant>,
    /// When the state was last logged (debug, once a second).
    logged_at: Instant,
}

impl Model {
    /// A fresh model at `now` with this initial window and packet size.
    pub fn new(now: Instant, initial_window: u64, mtu: u16) -> Self {
        Model {
            mtu: u64::from(mtu),
            initial_window,
            window: initial_window,
            phase: Phase::Startup {
                best: 0,
                flat_rounds: 0,
            },
            in_flight: 0,
            delivered: 0,
            delivered_time: now,
            first_sent_time: now,
            marks: VecDeque::new(),
            round: 0,
            round_end: 0,
            round_bytes: (0, 0),
            prev_round_bytes: (0, 0),
            round_congested: false,
            bw: RoundMax::default(),
            min_rtt: RttFloor::default(),
            extra_acked: RoundMax::default(),
            epoch_start: now,
            epoch_acked: 0,
            inflight_hi: None,
            backoff_at: None,
            logged_at: now,
        }
    }

    fn min_window(&self) -> u64 {
        4 * self.mtu
    }

    /// The bytes that may be in flight.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// The bottleneck rate estimate, bytes per second (0 before a sample).
    pub fn bandwidth(&self) -> u64 {
        self.bw.get(self.round)
    }

    /// The minimum RTT of the last 10 s.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.get()
    }

    /// One line of the model's state, for debug logs.
    pub fn describe(&self) -> String {
        format!(
            "window={} bw={} min_rtt={:?} phase={:?} inflight_hi={:?} in_flight={} round={}",
            self.window,
            self.bandwidth(),
            self.min_rtt(),
            self.phase,
            self.inflight_hi,
            self.in_flight,
            self.round
        )
    }

    /// The path's packet size changed.
    pub fn set_mtu(&mut self, mtu: u16) {
        self.mtu = u64::from(mtu);
        self.window = self.window.max(self.min_window());
    }

    /// Packets of `bytes` were sent at `now`.
    pub fn on_sent(&mut self, now: Instant, _bytes: u64) {
        if self.in_flight == 0 {
            // after idle, intervals start now, not at the last ack
            self.delivered_time = now;
            self.first_sent_time = now;
        }
        if self.marks.back().is_none_or(|m| m.sent != now) {
            if self.marks.len() >= MAX_MARKS {
                self.marks.pop_front();
            }
            self.marks.push_back(SendMark {
                sent: now,
                delivered: self.delivered,
                delivered_time: self.delivered_time,
                first_sent_time: self.first_sent_time,
            });
        }
    }

    /// A packet of `bytes` sent at `sent` was acknowledged at `now`.
    pub fn on_ack(&mut self, now: Instant, sent: Instant, bytes: u64, app_limited: bool) {
        self.delivered = self.delivered.saturating_add(bytes);
        self.delivered_time = now;
        self.round_bytes.0 = self.round_bytes.0.saturating_add(bytes);
        self.epoch_acked = self.epoch_acked.saturating_add(bytes);
        if let Phase::Startup { .. } = self.phase {
            self.window = self.window.saturating_add(bytes);
        }

        self.min_rtt
            .sample(now, now.saturating_duration_since(sent));

        while self.marks.front().is_some_and(|m| m.sent < sent) {
            self.marks.pop_front();
        }
        let Some(mark) = self.marks.front().copied().filter(|m| m.sent == sent) else {
            return; // acked out of order: no sample
        };
        self.first_sent_time = sent;

        if mark.delivered >= self.round_end {
            self.end_round(app_limited);
        }

        let send_elapsed = sent.saturating_duration_since(mark.first_sent_time);
        let ack_elapsed = now.saturating_duration_since(mark.delivered_time);
        let interval = send_elapsed.max(ack_elapsed);
        let floor = self.min_rtt().unwrap_or_default();
        if interval.is_zero() || interval < floor {
            return;
        }
        let rate = rate(self.delivered - mark.delivered, interval);
        if !app_limited || rate > self.bandwidth() {
            self.bw.update(self.round, rate);
        }
    }

    /// A batch of acks ended; `in_flight` bytes are still unacknowledged.
    pub fn on_end_acks(&mut self, now: Instant, in_flight: u64) {
        self.in_flight = in_flight;
        self.update_extra_acked(now);
        self.advance_phase(now);
        self.set_window();
        if tracing::enabled!(tracing::Level::DEBUG)
            && now.saturating_duration_since(self.logged_at) >= Duration::from_secs(1)
        {
            self.logged_at = now;
            tracing::debug!("bbr: {}", self.describe());
        }
    }

    /// `bytes` were declared lost at `now`, the latest of them sent at
    /// `sent`; `persistent` if everything sent over several RTTs was.
    pub fn on_loss(&mut self, now: Instant, sent: Instant, bytes: u64, persistent: bool) {
        if persistent {
            *self = Model {
                window: self.min_window(),
                ..Model::new(now, self.initial_window, self.mtu as u16)
            };
            return;
        }
        self.round_bytes.1 = self.round_bytes.1.saturating_add(bytes);
        // packets sent before the last backoff say nothing about the window since
        let fresh = self.backoff_at.is_none_or(|at| sent > at);
        if fresh && !self.round_congested && self.round_loss_too_high() {
            self.round_congested = true;
            self.backoff_at = Some(now);
            tracing::debug!(
                round = ?self.round_bytes,
                previous = ?self.prev_round_bytes,
                "bbr: a round lost more than 2 %: {}",
                self.describe()
            );
            // back off, but not below the delay product the rate filter
            // still measures: a shallow queue that overflowed says the path
            // holds less than was in flight, not less than it delivers
            let backed = ((self.in_flight.max(self.window) as f64) * LOSS_BACKOFF) as u64;
            let cap = backed.max(self.bdp().unwrap_or(0));
            self.inflight_hi = Some(cap.max(self.min_window()));
            if let Phase::Startup { .. } = self.phase {
                self.enter_cruise(now, 1);
            }
            self.set_window();
        }
    }

    fn round_loss_too_high(&self) -> bool {
        let (cur, prev) = (self.round_bytes, self.prev_round_bytes);
        let lost = cur.1.saturating_add(prev.1);
        let total = [cur.0, cur.1, prev.0, prev.1]
            .into_iter()
            .fold(0u64, u64::saturating_add)
            .max(MIN_LOSS_SAMPLE_PACKETS * self.mtu);
        lost as f64 > LOSS_THRESHOLD * total as f64
    }

    fn end_round(&mut self, app_limited: bool) {
        self.round += 1;
        self.round_end = self.delivered;
        // a probe round that stayed under the loss threshold lifts the cap
        if !self.round_congested && matches!(self.phase, Phase::Cruise { index: 0, .. }) {
            if let Some(hi) = self.inflight_hi {
                let hi = hi + hi / 4;
                let bdp = self.bdp().unwrap_or(u64::MAX / 2);
                self.inflight_hi = (hi < 2 * bdp).then_some(hi);
            }
        }
        self.prev_round_bytes = self.round_bytes;
        self.round_bytes = (0, 0);
        self.round_congested = false;
        if let Phase::Startup { best, flat_rounds } = self.phase {
            if app_limited {
                return; // an idle round says nothing about the path's rate
            }
            let bw = self.bandwidth();
            self.phase = if bw as f64 >= best as f64 * STARTUP_GROWTH {
                Phase::Startup {
                    best: bw,
                    flat_rounds: 0,
                }
            } else {
                Phase::Startup {
                    best,
                    flat_rounds: flat_rounds + 1,
                }
            };
        }
    }

    fn update_extra_acked(&mut self, now: Instant) {
        let expected = (self.bandwidth() as f64
            * now
                .saturating_duration_since(self.epoch_start)
                .as_secs_f64()) as u64;
        if self.epoch_acked <= expected || self.bandwidth() == 0 {
            self.epoch_start = now;
            self.epoch_acked = 0;
            return;
        }
        let extra = (self.epoch_acked - expected).min(self.window);
        self.extra_acked.update(self.round, extra);
    }

    fn enter_cruise(&mut self, now: Instant, index: usize) {
        if index == 0 {
            self.min_rtt.end_cycle(now);
        }
        self.phase = Phase::Cruise { index, since: now };
    }

    fn bdp(&self) -> Option<u64> {
        let bw = self.bandwidth();
        let rtt = self.min_rtt()?.max(MIN_BDP_RTT);
        (bw > 0).then_some((bw as f64 * rtt.as_secs_f64()) as u64)
    }

    fn advance_phase(&mut self, now: Instant) {
        match self.phase {
            Phase::Startup { flat_rounds, .. } if flat_rounds >= 3 => {
                // drain what startup queued, then cycle
                self.enter_cruise(now, 1);
            }
            Phase::Startup { .. } => {}
            Phase::Cruise { index, since } => {
                let rtt = self.min_rtt().unwrap_or(Duration::from_millis(100));
                if now.saturating_duration_since(since) >= rtt {
                    self.enter_cruise(now, (index + 1) % CYCLE.len());
                }
            }
        }
    }

    fn set_window(&mut self) {
        let target = match (self.phase, self.bdp()) {
            // slow start (grown in on_ack), at most 2 BDPs once one is known
            (Phase::Startup { .. }, bdp) => match bdp {
                Some(bdp) => self.window.min((2 * bdp).max(self.initial_window)),
                None => self.window,
            },
            (Phase::Cruise { .. }, None) => self.window,
            (Phase::Cruise { index, .. }, Some(bdp)) => {
                (bdp as f64 * CYCLE[index]) as u64 + self.extra_acked.get(self.round)
            }
        };
        let capped = match self.inflight_hi {
            Some(hi) => target.min(hi),
            None => target,
        };
        self.window = capped.max(self.min_window());
    }
}

/// Bytes per second of `bytes` over `interval`.
fn rate(bytes: u64, interval: Duration) -> u64 {
    let ns = interval.as_nanos().max(1);
    (u128::from(bytes) * 1_000_000_000 / ns).min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests;
