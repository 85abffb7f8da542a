//! `peerport status` as text: one block per process, one per session.

use std::fmt::Write;

use peerport::status::{secs, SessionState, SessionStatus, Snapshot};

/// "1.5 MB", "312 B" (powers of 1000, as network tools count).
pub fn bytes(n: u64) -> String {
    scaled(n as f64, "B")
}

/// "12.3 Mbit/s".
pub fn bits(bps: f64) -> String {
    scaled(bps, "bit/s")
}

fn scaled(v: f64, unit: &str) -> String {
    const STEPS: [&str; 5] = ["", "k", "M", "G", "T"];
    let mut v = v.max(0.0);
    let mut i = 0;
    while v >= 1000.0 && i + 1 < STEPS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {unit}")
    } else {
        format!("{v:.1} {}{unit}", STEPS[i])
    }
}

/// The first characters of a peer id.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The whole snapshot as `peerport status` prints it.
pub fn render(s: &Snapshot) -> String {
    let mut o = String::new();
    let i = &s.info;
    let _ = write!(
        o,
        "{} \"{}\" ({}, pid {}), up {}",
        i.role,
        i.name,
        i.mode,
        i.pid,
        secs(s.uptime_secs)
    );
    match &i.listen {
        Some(l) => {
            let _ = writeln!(o, ", clients connect to {l}");
        }
        None => {
            let _ = writeln!(o, ", forwarding {}", i.service);
        }
    }
    match s.state.as_str() {
        "stale" => {
            let _ = writeln!(
                o,
                "  stale for {}: nothing heard from the peer (it may be gone; the connection is not closed yet)",
                secs(s.state_secs)
            );
        }
        "reconnecting" => {
            let what = i.waiting_for.as_deref().unwrap_or("the sender");
            let _ = writeln!(o, "  reconnecting to {what} for {}", secs(s.state_secs));
        }
        "waiting" => {
            let what = i.waiting_for.as_deref().unwrap_or("the sender");
            let _ = writeln!(o, "  waiting for {what} for {}", secs(s.state_secs));
        }
        "listening" if s.sessions.is_empty() => {
            let _ = writeln!(o, "  no receiver connected");
        }
        _ => {}
    }
    for x in &s.sessions {
        session(&mut o, x);
    }
    let t = &s.totals;
    let _ = write!(
        o,
        "  totals: {} session(s) open, {} ended; tcp {} open / {} total",
        t.sessions_open, t.sessions_ended, t.sums.tcp_open, t.sums.tcp_total
    );
    if i.role == "sender" {
        let _ = write!(
            o,
            "; refused: {} unauthorized, {} busy, {} protocol; {} handshake(s) in flight",
            t.refused_unauthorized, t.refused_busy, t.refused_protocol, t.handshakes_in_flight
        );
    } else {
        let _ = write!(
            o,
            "; {} reconnect(s), {} failed attempt(s)",
            t.reconnects, t.dial_failures
        );
    }
    let _ = writeln!(o);
    // one line per service when there is more than the default one
    let plain =
        matches!(s.services.as_slice(), [] | [_]) && s.services.iter().all(|v| v.name == "default");
    if !plain {
        for v in &s.services {
            let _ = write!(
                o,
                "  service {}: tcp {} open / {} total",
                v.name, v.tcp_open, v.tcp_total
            );
            if v.udp_flows_total > 0 {
                let _ = write!(o, ", udp {} flow(s)", v.udp_flows_total);
            }
            if v.connect_failures + v.refused > 0 {
                let _ = write!(o, ", {} failed, {} refused", v.connect_failures, v.refused);
            }
            let _ = writeln!(o);
        }
    }
    if let Some(e) = s.events.last() {
        let _ = writeln!(o, "  last event: {e}");
    }
    o
}

fn session(o: &mut String, x: &SessionStatus) {
    let path = match x.state {
        SessionState::Up | SessionState::Stale => x.path.as_str(),
        SessionState::Reconnecting => "(no connection: reconnecting)",
        SessionState::Waiting => "(no connection: waiting for the receiver to resume)",
    };
    let heard = x
        .last_heard_secs
        .map(|h| format!(", last heard {} ago", secs(h)))
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "  session {}  {}  peer {}  {}  up {}{heard}",
        x.id,
        x.state,
        short(&x.peer),
        path,
        secs(x.uptime_secs)
    );
    let min = x
        .min_rtt_ms
        .map(|m| format!(" (min {m:.1} ms)"))
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "    rtt {:.1} ms{min}, cwnd {}, lost {} packet(s)",
        x.rtt_ms,
        bytes(x.cwnd_bytes),
        x.sums.lost_packets
    );
    let _ = writeln!(
        o,
        "    sent {} ({}), received {} ({})",
        bytes(x.sums.tx_bytes),
        bits(x.tx_bps),
        bytes(x.sums.rx_bytes),
        bits(x.rx_bps)
    );
    let mut line = format!(
        "    tcp {} open / {} total",
        x.sums.tcp_open, x.sums.tcp_total
    );
    if x.sums.tcp_refused_full > 0 {
        let _ = write!(
            line,
            ", {} closed at once (the session carried the most it may, --max-connections)",
            x.sums.tcp_refused_full
        );
    }
    if x.sums.connect_failures > 0 {
        let _ = write!(
            line,
            ", {} failed connect(s) to the service",
            x.sums.connect_failures
        );
    }
    if x.sums.udp.flows_total > 0 || x.sums.udp.packets_in > 0 {
        let dropped: u64 = x.sums.udp.drops().iter().map(|(_, n)| n).sum();
        let _ = write!(
            line,
            "; udp {} flow(s), {} in / {} out, {} dropped",
            x.sums.udp.flows, x.sums.udp.packets_in, x.sums.udp.packets_out, dropped
        );
    }
    if x.connections > 1 {
        let _ = write!(
            line,
            "; {} reconnect(s), {} stream(s) resumed",
            x.connections - 1,
            x.sums.streams_resumed
        );
    }
    let _ = writeln!(o, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_500_000), "1.5 MB");
        assert_eq!(bits(12_300_000.0), "12.3 Mbit/s");
        assert_eq!(secs(4.24), "4.2 s");
        assert_eq!(secs(187.0), "3m07s");
        assert_eq!(secs(7500.0), "2h05m");
        assert_eq!(secs(273600.0), "3d04h");
    }
}
