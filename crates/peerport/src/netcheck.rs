//! `peerport netcheck`: what this network allows, like `tailscale netcheck`.
//!
//! * local address (the source address the OS picks towards the first STUN server);
//! * public address(es) from every STUN server, queried from ONE socket, and
//!   whether the NAT keeps the same external address for different
//!   destinations (endpoint-independent, "cone") or not ("symmetric"), and
//!   whether it preserves the local port;
//! * how it picks the ports of new mappings (preserving, sequential or
//!   random; [`allocation`]), from two more sockets asking the first
//!   STUN server that answered;
//! * UDP reachability and latency of each STUN server, TURN allocation
//!   through each TURN server, TCP reachability of iroh relays and Nostr relays,
//!   and each iroh relay's QUIC address discovery over UDP (what iroh needs
//!   to learn its public address and hole-punch);
//! * a one-line verdict per mode.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::net::{TcpStream, UdpSocket};

use crate::{
    modes::ice::TurnServer,
    stun::{self, allocation},
};

pub use crate::stun::allocation::PortAllocation;

/// What to probe.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// Local bind address (default 0.0.0.0:0).
    pub bind: Option<SocketAddr>,
    /// STUN servers.
    pub stun_servers: Vec<String>,
    /// TURN servers.
    pub turn_servers: Vec<TurnServer>,
    /// iroh relay URLs.
    pub relay_urls: Vec<String>,
    /// UDP port of the relays' QUIC address discovery (0 = skip).
    pub relay_quic_port: u16,
    /// Extra trusted roots for the relays' TLS.
    pub relay_ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Nostr relay URLs.
    pub nostr_relays: Vec<String>,
}

/// One server's result.
#[derive(Debug, Clone, Serialize)]
pub struct Reach {
    /// What was probed.
    pub server: String,
    /// Reachable?
    pub ok: bool,
    /// Round trip or setup time.
    pub ms: Option<u64>,
    /// Mapped address (STUN) or detail.
    pub detail: String,
}

/// NAT mapping behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// No NAT: the public address is the local one.
    None,
    /// Same external address for every destination ("cone").
    EndpointIndependent,
    /// A different external address per destination ("symmetric").
    EndpointDependent,
    /// Fewer than two STUN answers: cannot tell.
    Unknown,
}

impl Mapping {
    /// In words, for the text report.
    pub fn words(self) -> &'static str {
        match self {
            Mapping::None => "none (no NAT: the public address is the local one)",
            Mapping::EndpointIndependent => {
                "endpoint-independent (cone NAT: one public address for every destination)"
            }
            Mapping::EndpointDependent => {
                "endpoint-dependent (symmetric NAT: a public address per destination)"
            }
            Mapping::Unknown => "unknown (needs answers from two STUN servers)",
        }
    }
}

/// yes, no or unknown.
fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Local UDP address used for the probes.
    pub local: Option<String>,
    /// Distinct public addresses seen.
    pub public: Vec<String>,
    /// NAT mapping behaviour.
    pub mapping: Mapping,
    /// Whether the NAT kept the local port.
    pub port_preserved: Option<bool>,
    /// How the NAT picks the ports of new mappings.
    pub port_allocation: PortAllocation,
    /// STUN results.
    pub stun: Vec<Reach>,
    /// TURN results.
    pub turn: Vec<Reach>,
    /// iroh relay results.
    pub relays: Vec<Reach>,
    /// iroh relays' QUIC address discovery (UDP), with the observed address.
    pub relay_qad: Vec<Reach>,
    /// Nostr relay results.
    pub nostr: Vec<Reach>,
    /// One line per mode.
    pub verdicts: Vec<(String, String)>,
}

/// Classify from STUN mappings (sans-IO, unit-tested).
pub fn classify(local: Option<SocketAddr>, mapped: &[SocketAddr]) -> (Mapping, Option<bool>) {
    let Some(first) = mapped.first() else {
        return (Mapping::Unknown, None);
    };
    let preserved = local.map(|l| l.port() == first.port());
    if local.is_some_and(|l| l == *first) {
        return (Mapping::None, preserved);
    }
    if mapped.len() < 2 {
        return (Mapping::Unknown, preserved);
    }
    if mapped.iter().all(|m| m == first) {
        (Mapping::EndpointIndependent, preserved)
    } else {
        (Mapping::EndpointDependent, preserved)
    }
}

async fn tcp_reach(url: &str) -> Reach {
    let hostport = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let target = if hostport.contains(':') {
        hostport.clone()
    } else if url.starts_with("https") || url.starts_with("wss") {
        format!("{hostport}:443")
    } else {
        format!("{hostport}:80")
    };
    let t = Instant::now();
    match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(&target)).await {
        Ok(Ok(_)) => Reach {
            server: url.to_string(),
            ok: true,
            ms: Some(t.elapsed().as_millis() as u64),
            detail: "tcp ok".into(),
        },
        Ok(Err(e)) => Reach {
            server: url.to_string(),
            ok: false,
            ms: None,
            detail: e.to_string(),
        },
        Err(_) => Reach {
            server: url.to_string(),
            ok: false,
            ms: None,
            detail: "timed out".into(),
        },
    }
}

/// Run every probe (bounded: a few seconds per server).
pub async fn run(p: &Probe) -> std::io::Result<Report> {
    let bind = p
        .bind
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let sock = UdpSocket::bind(bind).await?;
    let mut local = None;
    let mut stun_res = Vec::new();
    let mut mapped = Vec::new();
    for s in &p.stun_servers {
        if local.is_none() {
            // the source address the OS picks towards the first server
            if let Ok(Some(a)) = tokio::net::lookup_host(s).await.map(|mut i| i.next()) {
                let probe = UdpSocket::bind(bind).await?;
                if probe.connect(a).await.is_ok() {
                    local = probe.local_addr().ok().map(|l| {
                        SocketAddr::new(l.ip(), sock.local_addr().map(|x| x.port()).unwrap_or(0))
                    });
                }
            }
        }
        match stun::query(&sock, s, Duration::from_secs(3)).await {
            Ok(m) => {
                mapped.push(m.mapped);
                stun_res.push(Reach {
                    server: s.clone(),
                    ok: true,
                    ms: Some(m.rtt.as_millis() as u64),
                    detail: m.mapped.to_string(),
                });
            }
            Err(e) => stun_res.push(Reach {
                server: s.clone(),
                ok: false,
                ms: None,
                detail: e.to_string(),
            }),
        }
    }
    let (mapping, port_preserved) = classify(local, &mapped);
    let port_allocation = port_allocation(&sock, bind, &mapped, &stun_res).await;
    let mut public: Vec<String> = mapped.iter().map(|m| m.to_string()).collect();
    public.dedup();

    let mut turn = Vec::new();
    for t in &p.turn_servers {
        let start = Instant::now();
        let r = crate::modes::ice::turn_probe::probe(t, bind.ip(), Duration::from_secs(5)).await;
        turn.push(match r {
            Ok(relayed) => Reach {
                server: format!("turn:{}", t.host_port),
                ok: true,
                ms: Some(start.elapsed().as_millis() as u64),
                detail: format!("relay allocated ({relayed})"),
            },
            Err(e) => Reach {
                server: format!("turn:{}", t.host_port),
                ok: false,
                ms: None,
                detail: e,
            },
        });
    }
    let mut relays = Vec::new();
    for r in &p.relay_urls {
        relays.push(tcp_reach(r).await);
    }
    let mut relay_qad = Vec::new();
    for r in p.relay_urls.iter().filter(|_| p.relay_quic_port != 0) {
        let server = format!("{r} quic:{}", p.relay_quic_port);
        let res = match url::Url::parse(r) {
            Ok(u) => {
                crate::qad::probe(
                    &u,
                    p.relay_quic_port,
                    &p.relay_ca,
                    bind,
                    Duration::from_secs(3),
                )
                .await
            }
            Err(e) => Err(format!("not a URL: {e}")),
        };
        relay_qad.push(match res {
            Ok(a) => Reach {
                server,
                ok: true,
                ms: Some(a.rtt.as_millis() as u64),
                detail: format!("observed {}", a.observed),
            },
            Err(e) if e.contains("certificate") => Reach {
                server,
                ok: false,
                ms: None,
                detail: format!("{e} (trust the relay's certificate with --relay-ca FILE)"),
            },
            Err(e) => Reach {
                server,
                ok: false,
                ms: None,
                detail: e,
            },
        });
    }
    let mut nostr = Vec::new();
    for r in &p.nostr_relays {
        nostr.push(tcp_reach(r).await);
    }
    let mut verdicts = verdicts(mapping, &stun_res, &turn, &relays, &nostr);
    if any_ok(&relay_qad) == Some(false) {
        if let Some((_, v)) = verdicts.iter_mut().find(|(m, _)| m == "iroh") {
            v.push_str(
                "; the relay's QUIC address discovery failed: iroh cannot learn its public address and will stay on the relay",
            );
        }
    }
    Ok(Report {
        local: local.map(|l| l.to_string()),
        public,
        mapping,
        port_preserved,
        port_allocation,
        stun: stun_res,
        turn,
        relays,
        relay_qad,
        nostr,
        verdicts,
    })
}

/// The mappings `sock` got (each new external address once), then one
/// each for two new sockets asking the first server that answered; then
/// how their ports were picked.
async fn port_allocation(
    sock: &UdpSocket,
    bind: SocketAddr,
    mapped: &[SocketAddr],
    stun_res: &[Reach],
) -> PortAllocation {
    let Ok(port) = sock.local_addr().map(|a| a.port()) else {
        return PortAllocation::Unknown;
    };
    let mut made: Vec<(u16, u16)> = Vec::new();
    for (i, m) in mapped.iter().enumerate() {
        if !mapped[..i].contains(m) {
            made.push((port, m.port()));
        }
    }
    let Some(server) = stun_res.iter().find(|r| r.ok) else {
        return PortAllocation::Unknown;
    };
    for _ in 0..2 {
        let Ok(s) = UdpSocket::bind(bind).await else {
            break;
        };
        let (Ok(local), Ok(m)) = (
            s.local_addr(),
            stun::query(&s, &server.server, Duration::from_secs(3)).await,
        ) else {
            break;
        };
        made.push((local.port(), m.mapped.port()));
    }
    allocation::classify(&made)
}

fn any_ok(v: &[Reach]) -> Option<bool> {
    (!v.is_empty()).then(|| v.iter().any(|r| r.ok))
}

/// One line per mode (sans-IO).
pub fn verdicts(
    mapping: Mapping,
    stun: &[Reach],
    turn: &[Reach],
    relays: &[Reach],
    nostr: &[Reach],
) -> Vec<(String, String)> {
    let udp = stun.iter().any(|r| r.ok);
    // what the lab shows for each (README, "What works where")
    let direct = |symmetric: &'static str| match (udp, mapping) {
        (false, _) => "no UDP to the STUN servers: direct paths unlikely",
        (true, Mapping::None) => "no NAT: direct paths likely",
        (true, Mapping::EndpointIndependent) => "cone NAT: direct paths likely",
        (true, Mapping::EndpointDependent) => symmetric,
        (true, Mapping::Unknown) => "NAT type unknown (give two STUN servers)",
    };
    let ice = direct(
        "symmetric NAT: direct through the punch when the peer's NAT is cone, otherwise relayed",
    );
    let iroh = direct(
        "symmetric NAT: iroh stays on its relay (it does not punch through a symmetric NAT: use ice or nostr for a direct path)",
    );
    let relay = match any_ok(relays) {
        Some(true) => "relay fallback reachable",
        Some(false) => "iroh relay NOT reachable",
        None => "no relay given",
    };
    let turn_s = match any_ok(turn) {
        Some(true) => "TURN fallback works",
        Some(false) => "TURN NOT usable",
        None => "no TURN server given: no fallback",
    };
    let nostr_s = match any_ok(nostr) {
        Some(true) => "Nostr relay reachable",
        Some(false) => "no Nostr relay reachable: nostr mode cannot signal",
        None => "no Nostr relay given",
    };
    let manual = match (udp, mapping) {
        (false, _) => "unlikely: needs UDP".to_string(),
        (true, Mapping::EndpointDependent) => {
            "unlikely: a symmetric NAT defeats its direct dial and it has no relay fallback (use ice or nostr)".to_string()
        }
        _ => format!("{} (no relay fallback)", direct("")),
    };
    vec![
        ("iroh".into(), format!("{iroh}; {relay}")),
        ("iroh-manual".into(), manual),
        ("ice".into(), format!("{ice}; {turn_s}")),
        ("nostr".into(), format!("{nostr_s}; {ice}; {turn_s}")),
    ]
}

impl Report {
    /// Human-readable text.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let line = |s: &mut String, k: &str, v: String| s.push_str(&format!("{k:<20} {v}\n"));
        line(
            &mut s,
            "local address",
            self.local.clone().unwrap_or_else(|| "unknown".into()),
        );
        line(
            &mut s,
            "public address",
            if self.public.is_empty() {
                "unknown".into()
            } else {
                self.public.join(", ")
            },
        );
        line(&mut s, "nat mapping", self.mapping.words().into());
        line(&mut s, "port preserved", yes_no(self.port_preserved).into());
        line(&mut s, "port allocation", self.port_allocation.words());
        for (label, list) in [
            ("stun", &self.stun),
            ("turn", &self.turn),
            ("iroh relay", &self.relays),
            ("iroh relay qad", &self.relay_qad),
            ("nostr relay", &self.nostr),
        ] {
            for r in list {
                line(
                    &mut s,
                    label,
                    format!(
                        "{} {} {}{}",
                        r.server,
                        if r.ok { "ok" } else { "FAILED" },
                        r.ms.map(|m| format!("{m} ms ")).unwrap_or_default(),
                        r.detail
                    ),
                );
            }
        }
        for (mode, v) in &self.verdicts {
            line(&mut s, &format!("verdict {mode}"), v.clone());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classification() {
        let local = Some(a("192.168.1.2:5000"));
        assert_eq!(classify(local, &[]).0, Mapping::Unknown);
        assert_eq!(
            classify(local, &[a("1.2.3.4:5000")]),
            (Mapping::Unknown, Some(true))
        );
        assert_eq!(
            classify(local, &[a("1.2.3.4:5000"), a("1.2.3.4:5000")]),
            (Mapping::EndpointIndependent, Some(true))
        );
        assert_eq!(
            classify(local, &[a("1.2.3.4:6001"), a("1.2.3.4:6002")]),
            (Mapping::EndpointDependent, Some(false))
        );
        assert_eq!(classify(local, &[a("192.168.1.2:5000")]).0, Mapping::None);
    }

    /// The text report reads as words: no Rust debug text (`None`,
    /// `Some(true)`, `EndpointIndependent`).
    #[test]
    fn text_report_is_words() {
        let report = |local: Option<&str>, mapping, port_preserved| Report {
            local: local.map(String::from),
            public: Vec::new(),
            mapping,
            port_preserved,
            port_allocation: PortAllocation::Unknown,
            stun: vec![Reach {
                server: "stun.example:3478".into(),
                ok: false,
                ms: None,
                detail: "timed out".into(),
            }],
            turn: Vec::new(),
            relays: Vec::new(),
            relay_qad: Vec::new(),
            nostr: Vec::new(),
            verdicts: verdicts(mapping, &[], &[], &[], &[]),
        };
        let value = |text: &str, key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in\n{text}"))
                .trim()
                .to_string()
        };
        for (mapping, preserved, want_mapping, want_preserved) in [
            (Mapping::Unknown, None, "unknown", "unknown"),
            (Mapping::None, Some(true), "none", "yes"),
            (
                Mapping::EndpointIndependent,
                Some(true),
                "endpoint-independent",
                "yes",
            ),
            (
                Mapping::EndpointDependent,
                Some(false),
                "endpoint-dependent",
                "no",
            ),
        ] {
            let text = report(None, mapping, preserved).text();
            assert_eq!(value(&text, "local address"), "unknown", "{text}");
            assert!(
                value(&text, "nat mapping").starts_with(want_mapping),
                "{text}"
            );
            assert_eq!(value(&text, "port preserved"), want_preserved, "{text}");
            for debug in ["None", "Some(", "Endpoint", "Unknown", "?"] {
                assert!(!text.contains(debug), "`{debug}` in\n{text}");
            }
        }
        let text = report(Some("192.168.1.2:5000"), Mapping::Unknown, None).text();
        assert_eq!(value(&text, "local address"), "192.168.1.2:5000");
    }

    #[test]
    fn verdict_lines_cover_every_mode() {
        let ok = |s: &str| Reach {
            server: s.into(),
            ok: true,
            ms: Some(1),
            detail: String::new(),
        };
        let v = verdicts(Mapping::EndpointDependent, &[ok("s")], &[ok("t")], &[], &[]);
        assert_eq!(v.len(), 4);
        assert!(v[0].1.contains("stays on its relay"));
        assert!(v[1].1.contains("defeats its direct dial"));
        assert!(v[2]
            .1
            .contains("through the punch when the peer's NAT is cone"));
        assert!(v[2].1.contains("TURN fallback works"));
    }
}
