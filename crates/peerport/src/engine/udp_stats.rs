//! What a UDP session counts (packets, flows, drops by cause), and the
//! warning line when drops change.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use tracing::warn;

use crate::proto::datagram::Reassembler;

const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Counters of a UDP session; drops are logged when they change.
#[derive(Debug, Default)]
pub struct UdpStats {
    /// Packets from local clients/service into the tunnel.
    pub packets_in: AtomicU64,
    /// Packets out of the tunnel to local clients/service.
    pub packets_out: AtomicU64,
    /// Dropped: flow table full.
    pub dropped_flow_cap: AtomicU64,
    /// Dropped: could not be framed or the path refused it.
    pub dropped_too_large: AtomicU64,
    /// Dropped: for a flow that no longer exists.
    pub dropped_unknown_flow: AtomicU64,
    /// Dropped: local socket send failed.
    pub dropped_send_error: AtomicU64,
    /// Dropped (receiver): no tunnel was up.
    pub dropped_no_tunnel: AtomicU64,
    /// Flows open now.
    pub flows: AtomicU64,
    /// Flows opened so far.
    pub flows_total: AtomicU64,
}

/// [`UdpStats`] read at one moment (plain numbers, can be added up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UdpCounts {
    /// Packets into the tunnel.
    pub packets_in: u64,
    /// Packets out of the tunnel.
    pub packets_out: u64,
    /// Dropped: flow table full.
    pub dropped_flow_cap: u64,
    /// Dropped: too large for the path.
    pub dropped_too_large: u64,
    /// Dropped: unknown flow.
    pub dropped_unknown_flow: u64,
    /// Dropped: local send failed.
    pub dropped_send_error: u64,
    /// Dropped: no tunnel up.
    pub dropped_no_tunnel: u64,
    /// Flows open.
    pub flows: u64,
    /// Flows opened.
    pub flows_total: u64,
}

impl UdpCounts {
    /// Add `o` (the gauge `flows` too: the sum of open flows).
    pub fn add(&mut self, o: &UdpCounts) {
        self.packets_in += o.packets_in;
        self.packets_out += o.packets_out;
        self.dropped_flow_cap += o.dropped_flow_cap;
        self.dropped_too_large += o.dropped_too_large;
        self.dropped_unknown_flow += o.dropped_unknown_flow;
        self.dropped_send_error += o.dropped_send_error;
        self.dropped_no_tunnel += o.dropped_no_tunnel;
        self.flows += o.flows;
        self.flows_total += o.flows_total;
    }

    /// Drops by cause, as (cause, count).
    pub fn drops(&self) -> [(&'static str, u64); 5] {
        [
            ("flow_cap", self.dropped_flow_cap),
            ("too_large", self.dropped_too_large),
            ("unknown_flow", self.dropped_unknown_flow),
            ("send_error", self.dropped_send_error),
            ("no_tunnel", self.dropped_no_tunnel),
        ]
    }
}

impl UdpStats {
    /// The counters now.
    pub fn counts(&self) -> UdpCounts {
        UdpCounts {
            packets_in: self.packets_in.load(Relaxed),
            packets_out: self.packets_out.load(Relaxed),
            dropped_flow_cap: self.dropped_flow_cap.load(Relaxed),
            dropped_too_large: self.dropped_too_large.load(Relaxed),
            dropped_unknown_flow: self.dropped_unknown_flow.load(Relaxed),
            dropped_send_error: self.dropped_send_error.load(Relaxed),
            dropped_no_tunnel: self.dropped_no_tunnel.load(Relaxed),
            flows: self.flows.load(Relaxed),
            flows_total: self.flows_total.load(Relaxed),
        }
    }

    pub(crate) fn set_flows(&self, open: usize, opened: bool) {
        self.flows.store(open as u64, Relaxed);
        if opened {
            self.flows_total.fetch_add(1, Relaxed);
        }
    }

    fn total_dropped(&self) -> u64 {
        self.dropped_flow_cap.load(Relaxed)
            + self.dropped_too_large.load(Relaxed)
            + self.dropped_unknown_flow.load(Relaxed)
            + self.dropped_send_error.load(Relaxed)
            + self.dropped_no_tunnel.load(Relaxed)
    }

    pub(super) fn summary(&self, reasm: &Reassembler) -> String {
        let r = reasm.drops();
        format!(
            "packets in {} out {}; dropped: flow cap {}, too large {}, unknown flow {}, send error {}, no tunnel {}, reassembly timeout {}, evicted {}, malformed {}",
            self.packets_in.load(Relaxed),
            self.packets_out.load(Relaxed),
            self.dropped_flow_cap.load(Relaxed),
            self.dropped_too_large.load(Relaxed),
            self.dropped_unknown_flow.load(Relaxed),
            self.dropped_send_error.load(Relaxed),
            self.dropped_no_tunnel.load(Relaxed),
            r.timed_out,
            r.evicted,
            r.malformed
        )
    }
}

/// Logs the drop counters when they changed, at most every [`REPORT_EVERY`].
pub(super) struct Reporter {
    last_total: u64,
    last_at: Instant,
}

impl Reporter {
    pub(super) fn new() -> Self {
        Reporter {
            last_total: 0,
            last_at: Instant::now(),
        }
    }

    pub(super) fn maybe_report(&mut self, stats: &UdpStats, reasm: &Reassembler, now: Instant) {
        if now.duration_since(self.last_at) < REPORT_EVERY {
            return;
        }
        let d = reasm.drops();
        let total = stats.total_dropped() + d.timed_out + d.evicted + d.malformed;
        if total != self.last_total {
            warn!("udp drops: {}", stats.summary(reasm));
            self.last_total = total;
        }
        self.last_at = now;
    }
}
