//! Prometheus / OpenMetrics exposition of a [`Monitor`] (`--metrics ADDR`,
//! served at `/metrics`).
//!
//! Encoded with `prometheus-client` (the Prometheus project's Rust client):
//! a collector reads one [`Snapshot`] per scrape, so nothing is counted
//! twice and an idle process does no work. In the `iroh` mode the
//! endpoint's own metrics (iroh-metrics, prefix `iroh_`) follow ours; in
//! `iroh-manual` those of every session's endpoint, labelled `endpoint`
//! ([`peerport::status::iroh_endpoints`]).
//!
//! Names follow the conventions: counters end in `_total`, units are in
//! the name (`_seconds`, `_bytes`). Per-session series carry `session`
//! (the id in `peerport status`) and `peer` (the first 12 characters of
//! its id).

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};

use peerport::{
    engine::tally::ServiceStatus,
    status::{Monitor, Snapshot},
};

use super::text::short;

/// Exposition formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (what Prometheus asks for first).
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (for older scrapers and `promtool`).
    Prometheus,
}

impl Format {
    /// The format an HTTP `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// The metrics of `monitor` now, in `format`.
pub fn encode(monitor: &Monitor, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(monitor.clone())));
    let mut out = String::new();
    let ok = match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        }
    };
    if ok.is_err() {
        out.clear();
    }
    let body = out.strip_suffix("# EOF\n").unwrap_or(&out).len();
    out.truncate(body);
    let mut more = String::new();
    if let Some(Ok(())) = monitor.write_extra_metrics(&mut more) {
        match format {
            Format::OpenMetrics => out.push_str(&more),
            // 0.0.4 has no UNIT lines and names a counter's family
            // as its samples
            Format::Prometheus => out.push_str(&to_prometheus_text(&more)),
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// OpenMetrics text (counters and gauges) as Prometheus text 0.0.4.
fn to_prometheus_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut counters = std::collections::HashSet::new();
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line.starts_with("# EOF") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
                out.push_str(&format!("# TYPE {name}_total counter\n"));
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, help)) = rest.split_once(' ') {
                if counters.contains(name) || om.contains(&format!("# TYPE {name} counter")) {
                    out.push_str(&format!("# HELP {name}_total {help}\n"));
                    continue;
                }
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[derive(Debug)]
struct Scrape(Monitor);

type Labels = Vec<(&'static str, String)>;

/// A counter's family name: the encoder adds `_total` to the samples.
fn family_name(name: &str, kind: MetricType) -> &str {
    match kind {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let kind = MetricType::Counter;
    ConstCounter::new(v).encode(e.encode_descriptor(family_name(name, kind), help, None, kind)?)
}

fn gauge<V>(e: &mut DescriptorEncoder, name: &str, help: &str, v: V) -> std::fmt::Result
where
    ConstGauge<V>: EncodeMetric,
{
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A family: one descriptor, one series per label set.
fn family<M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: Vec<(Labels, M)>,
) -> std::fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(family_name(name, kind), help, None, kind)?;
    for (labels, v) in series {
        v.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.snapshot();
        process(&mut e, &s)?;
        services(&mut e, &s)?;
        sessions(&mut e, &s)
    }
}

fn process(e: &mut DescriptorEncoder, s: &Snapshot) -> std::fmt::Result {
    let i = &s.info;
    let info: Labels = vec![
        ("role", i.role.clone()),
        ("mode", i.mode.clone()),
        ("name", i.name.clone()),
        ("version", i.version.clone()),
    ];
    let mut m = e.encode_descriptor(
        "peerport",
        "The process: role, mode, name and version",
        None,
        MetricType::Info,
    )?;
    m.encode_info(&info)?;
    let t = &s.totals;
    gauge(
        e,
        "peerport_uptime_seconds",
        "Seconds since the process started",
        s.uptime_secs,
    )?;
    gauge(
        e,
        "peerport_up",
        "1 while a connection serves a session and its peer is heard",
        u64::from(s.state == "up"),
    )?;
    gauge(
        e,
        "peerport_sessions_open",
        "Sessions open now",
        t.sessions_open,
    )?;
    counter(
        e,
        "peerport_sessions_ended_total",
        "Sessions that ended",
        t.sessions_ended,
    )?;
    counter(
        e,
        "peerport_connections_total",
        "QUIC connections that completed the hello",
        t.connections,
    )?;
    gauge(
        e,
        "peerport_handshakes_in_flight",
        "Connections in their hello now",
        t.handshakes_in_flight,
    )?;
    let refused = [
        ("unauthorized", t.refused_unauthorized),
        ("busy", t.refused_busy),
        ("protocol", t.refused_protocol),
    ];
    family(
        e,
        "peerport_refused_total",
        "Receivers refused, by cause",
        MetricType::Counter,
        refused
            .iter()
            .map(|(c, n)| (vec![("cause", c.to_string())], ConstCounter::new(*n)))
            .collect(),
    )?;
    gauge(
        e,
        "peerport_tcp_connections_open",
        "TCP connections open now",
        t.sums.tcp_open,
    )?;
    for (name, help, v) in [
        (
            "peerport_resumes_total",
            "Sessions resumed on a new connection",
            t.resumes,
        ),
        (
            "peerport_reconnects_total",
            "Connections lost and dialled again (receiver)",
            t.reconnects,
        ),
        (
            "peerport_dial_failures_total",
            "Failed attempts to reach the sender (receiver)",
            t.dial_failures,
        ),
        (
            "peerport_tcp_connections_total",
            "TCP connections carried",
            t.sums.tcp_total,
        ),
        (
            "peerport_tcp_connections_refused_full_total",
            "Local clients closed at once: the session carried --max-connections",
            t.sums.tcp_refused_full,
        ),
        (
            "peerport_source_connect_failures_total",
            "Failed connects to the source service",
            t.sums.connect_failures,
        ),
        (
            "peerport_tcp_streams_resumed_total",
            "TCP connections carried over to a new QUIC connection",
            t.sums.streams_resumed,
        ),
        (
            "peerport_sent_bytes_total",
            "UDP payload bytes sent by the QUIC connections",
            t.sums.tx_bytes,
        ),
        (
            "peerport_received_bytes_total",
            "UDP payload bytes received by the QUIC connections",
            t.sums.rx_bytes,
        ),
        (
            "peerport_lost_packets_total",
            "QUIC packets declared lost",
            t.sums.lost_packets,
        ),
    ] {
        counter(e, name, help, v)?;
    }
    let u = &t.sums.udp;
    family(
        e,
        "peerport_udp_packets_total",
        "UDP packets forwarded, into (in) and out of (out) the tunnel",
        MetricType::Counter,
        vec![
            (
                vec![("direction", "in".into())],
                ConstCounter::new(u.packets_in),
            ),
            (
                vec![("direction", "out".into())],
                ConstCounter::new(u.packets_out),
            ),
        ],
    )?;
    family(
        e,
        "peerport_udp_dropped_total",
        "UDP packets dropped, by cause",
        MetricType::Counter,
        u.drops()
            .iter()
            .map(|(c, n)| (vec![("cause", c.to_string())], ConstCounter::new(*n)))
            .collect(),
    )?;
    gauge(e, "peerport_udp_flows_open", "UDP flows open now", u.flows)?;
    counter(
        e,
        "peerport_udp_flows_total",
        "UDP flows opened",
        u.flows_total,
    )
}

/// One number of a service.
type Field = fn(&ServiceStatus) -> u64;

fn services(e: &mut DescriptorEncoder, s: &Snapshot) -> std::fmt::Result {
    let per = |f: Field| -> Vec<(Labels, ConstCounter<u64>)> {
        s.services
            .iter()
            .map(|v| (vec![("service", v.name.clone())], ConstCounter::new(f(v))))
            .collect()
    };
    family(
        e,
        "peerport_service_tcp_connections_open",
        "TCP connections open now, per service (or destination, or receiver target)",
        MetricType::Gauge,
        s.services
            .iter()
            .map(|v| {
                (
                    vec![("service", v.name.clone())],
                    ConstGauge::new(v.tcp_open as i64),
                )
            })
            .collect(),
    )?;
    let counters: [(&str, &str, Field); 4] = [
        (
            "peerport_service_tcp_connections_total",
            "TCP connections carried, per service",
            |v| v.tcp_total,
        ),
        (
            "peerport_service_connect_failures_total",
            "Connections that failed, per service",
            |v| v.connect_failures,
        ),
        (
            "peerport_service_refused_total",
            "Connections and flows refused by the sender's policy, per service",
            |v| v.refused,
        ),
        (
            "peerport_service_udp_flows_total",
            "UDP flows opened, per service",
            |v| v.udp_flows_total,
        ),
    ];
    for (name, help, f) in counters {
        family(e, name, help, MetricType::Counter, per(f))?;
    }
    Ok(())
}

fn sessions(e: &mut DescriptorEncoder, s: &Snapshot) -> std::fmt::Result {
    let labels = |x: &peerport::status::SessionStatus| -> Labels {
        vec![
            ("session", x.id.to_string()),
            ("peer", short(&x.peer).to_string()),
        ]
    };
    let per =
        |f: &dyn Fn(&peerport::status::SessionStatus) -> f64| -> Vec<(Labels, ConstGauge<f64>)> {
            s.sessions
                .iter()
                .map(|x| (labels(x), ConstGauge::new(f(x))))
                .collect()
        };
    // only the sessions that have the value
    let per_some = |f: &dyn Fn(&peerport::status::SessionStatus) -> Option<f64>| -> Vec<(Labels, ConstGauge<f64>)> {
        s.sessions
            .iter()
            .filter_map(|x| f(x).map(|v| (labels(x), ConstGauge::new(v))))
            .collect()
    };
    let per_counter =
        |f: &dyn Fn(&peerport::status::SessionStatus) -> u64| -> Vec<(Labels, ConstCounter<u64>)> {
            s.sessions
                .iter()
                .map(|x| (labels(x), ConstCounter::new(f(x))))
                .collect()
        };
    let g = MetricType::Gauge;
    let c = MetricType::Counter;
    family(
        e,
        "peerport_session_path",
        "The session's path: 1 for the kind in use (direct or relay)",
        g,
        s.sessions
            .iter()
            .filter(|x| x.connected)
            .map(|x| {
                let mut l = labels(x);
                l.push(("kind", x.path_kind.as_str().into()));
                (l, ConstGauge::new(1u64))
            })
            .collect(),
    )?;
    family(
        e,
        "peerport_session_connected",
        "1 while a connection serves the session",
        g,
        per(&|x| f64::from(u8::from(x.connected))),
    )?;
    family(
        e,
        "peerport_session_stale",
        "1 while a connection serves the session but nothing was heard from the peer for longer than keep-alives allow",
        g,
        per(&|x| f64::from(u8::from(x.state == peerport::status::SessionState::Stale))),
    )?;
    family(
        e,
        "peerport_session_last_heard_seconds",
        "Seconds since a packet from the peer was last noticed",
        g,
        per_some(&|x| x.last_heard_secs),
    )?;
    family(
        e,
        "peerport_session_uptime_seconds",
        "Seconds since the session began",
        g,
        per(&|x| x.uptime_secs),
    )?;
    family(
        e,
        "peerport_session_rtt_seconds",
        "Smoothed round-trip time",
        g,
        per(&|x| x.rtt_ms / 1000.0),
    )?;
    family(
        e,
        "peerport_session_min_rtt_seconds",
        "Smallest round-trip time seen (quinn modes)",
        g,
        per_some(&|x| x.min_rtt_ms.map(|m| m / 1000.0)),
    )?;
    family(
        e,
        "peerport_session_cwnd_bytes",
        "Congestion window",
        g,
        per(&|x| x.cwnd_bytes as f64),
    )?;
    family(
        e,
        "peerport_session_lost_packets_total",
        "QUIC packets declared lost",
        c,
        per_counter(&|x| x.sums.lost_packets),
    )?;
    family(
        e,
        "peerport_session_sent_bytes_total",
        "UDP payload bytes sent",
        c,
        per_counter(&|x| x.sums.tx_bytes),
    )?;
    family(
        e,
        "peerport_session_received_bytes_total",
        "UDP payload bytes received",
        c,
        per_counter(&|x| x.sums.rx_bytes),
    )?;
    family(
        e,
        "peerport_session_send_bytes_per_second",
        "Send rate over the last second",
        g,
        per(&|x| x.tx_bps / 8.0),
    )?;
    family(
        e,
        "peerport_session_receive_bytes_per_second",
        "Receive rate over the last second",
        g,
        per(&|x| x.rx_bps / 8.0),
    )?;
    family(
        e,
        "peerport_session_tcp_connections_open",
        "TCP connections open",
        g,
        per(&|x| x.sums.tcp_open as f64),
    )?;
    family(
        e,
        "peerport_session_tcp_connections_total",
        "TCP connections carried",
        c,
        per_counter(&|x| x.sums.tcp_total),
    )?;
    family(
        e,
        "peerport_session_connections_total",
        "QUIC connections that served the session",
        c,
        per_counter(&|x| x.connections),
    )?;
    family(
        e,
        "peerport_session_tcp_streams_resumed_total",
        "TCP connections resumed",
        c,
        per_counter(&|x| x.sums.streams_resumed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerport::{engine::Ledger, status::Info};
    use std::fmt::Write;

    /// Ends as OpenMetrics requires: one `# EOF`, last.
    fn well_terminated(text: &str) -> bool {
        text.ends_with("# EOF\n") && text.matches("# EOF").count() == 1
    }

    #[test]
    fn exposition_has_conventional_names_and_one_eof() {
        let ledger = Ledger::new();
        let m = Monitor::new(Info::new("sender", "ice", "t"), ledger.clone());
        let _t = ledger.open_session();
        m.sample();
        let text = encode(&m, Format::OpenMetrics);
        assert!(well_terminated(&text), "{text}");
        assert!(text.contains("peerport_info{role=\"sender\""), "{text}");
        assert!(
            text.contains("peerport_refused_total{cause=\"busy\"} 0"),
            "{text}"
        );
        assert!(!text.contains("_total_total"), "{text}");
        assert!(
            text.contains("peerport_session_rtt_seconds{session=\"1\""),
            "{text}"
        );
        m.add_metrics(Box::new(|w| {
            w.write_str(
                "# HELP iroh_x Xs.\n# TYPE iroh_x counter\n# UNIT iroh_x x\niroh_x_total 3\n",
            )
        }));
        let text = encode(&m, Format::OpenMetrics);
        assert!(well_terminated(&text), "{text}");
        assert!(text.contains("iroh_x_total 3\n# EOF\n"), "{text}");
        let plain = encode(&m, Format::Prometheus);
        assert!(
            !plain.contains("# EOF") && !plain.contains("# UNIT"),
            "{plain}"
        );
        assert!(
            plain.contains("# TYPE iroh_x_total counter\niroh_x_total 3\n"),
            "{plain}"
        );
        assert!(
            plain.contains("# TYPE peerport_refused_total counter"),
            "{plain}"
        );
    }
}
