//! What a sender lets receivers reach: its named services, and the
//! destinations receivers may ask for under `--allow` rules.
//!
//! * A **service** is a name and a source (`--source ssh=tcp://127.0.0.1:22`);
//!   a bare `--source URL` is the default service (name `""`). A service may
//!   pin which receivers may use it (`allowed-peer` in its `[[service]]`
//!   table).
//! * A **destination** is a `HOST:PORT` the receiver names (like `ssh -L`).
//!   Default deny: only what an `--allow HOST_OR_CIDR:PORTS` rule covers.
//!   Names resolve on the sender, and every resolved address must be
//!   allowed; the connection then goes to exactly the addresses checked, so
//!   a name that changes its answer between check and connect (DNS
//!   rebinding) cannot reach anything else. A rule that names a host
//!   (`db.internal:5432`) allows that name whatever it resolves to: the
//!   sender's operator chose it.
//!
//! Everything here is plain data and checks (no IO but the resolver call in
//! [`Catalog::resolve`]), unit-tested below.

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, SocketAddr},
    ops::RangeInclusive,
    str::FromStr,
    sync::Arc,
};

use ipnet::IpNet;

use crate::{
    addr::{check_service_name, ForwardAddr, Protocol},
    proto::header::{Status, Want, Wanted},
};

/// Most services or destinations one receiver may ask for in a session
/// (UDP flows carry the index in one byte).
pub const MAX_WANTS: usize = 64;

/// One `--allow HOST_OR_CIDR:PORTS` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    host: HostMatch,
    /// Empty: every port.
    ports: Vec<RangeInclusive<u16>>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Net(IpNet),
    Name(String),
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const ALLOW_SYNTAX: &str = "write HOST_OR_CIDR:PORTS, e.g. 10.0.0.0/24:22,443 or db.internal:5432 or [fd00::/64]:8000-8100 (ports `*` = all)";

impl FromStr for AllowRule {
    type Err = String;
    fn from_str(input: &str) -> Result<Self, String> {
        let s = input.trim();
        let bad = |why: &str| format!("--allow `{input}`: {why}; {ALLOW_SYNTAX}");
        let (host, ports) = s.rsplit_once(':').ok_or_else(|| bad("no ports"))?;
        let (host, bracketed) = match host.strip_prefix('[') {
            Some(h) => (
                h.strip_suffix(']').ok_or_else(|| bad("unclosed `[`"))?,
                true,
            ),
            None if host.contains(':') => {
                return Err(bad("write an IPv6 address or network in brackets"))
            }
            None => (host, false),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let host = if let Ok(net) = host.parse::<IpNet>() {
            HostMatch::Net(net.trunc())
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostMatch::Net(IpNet::from(ip.to_canonical()))
        } else if bracketed {
            return Err(bad(&format!(
                "`[{host}]` is not an IPv6 address or network (brackets hold one, e.g. [fd00::1] or [fd00::/64])"
            )));
        } else if looks_like_ipv4(host) {
            return Err(bad(&format!(
                "`{host}` looks like an IPv4 address but is not one (four numbers from 0 to 255, e.g. 10.0.0.1)"
            )));
        } else if host.contains('/') {
            return Err(bad(&format!("`{host}` is not a network")));
        } else {
            HostMatch::Name(normalize_name(host).map_err(|e| bad(&e))?)
        };
        Ok(AllowRule {
            host,
            ports: parse_ports(ports).map_err(|e| bad(&e))?,
            text: s.to_string(),
        })
    }
}

fn parse_ports(s: &str) -> Result<Vec<RangeInclusive<u16>>, String> {
    if s.trim() == "*" {
        return Ok(Vec::new());
    }
    let port = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("`{p}` is not a port from 1 to 65535")),
        }
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        let r = match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (port(a)?, port(b)?);
                if a > b {
                    return Err(format!("port range `{part}` runs backwards"));
                }
                a..=b
            }
            None => {
                let p = port(part)?;
                p..=p
            }
        };
        out.push(r);
    }
    Ok(out)
}

/// Numbers and dots only (`300.0.0.1`, `10.1`): meant as an IPv4
/// address, never a host name (no top-level domain is all digits).
fn looks_like_ipv4(host: &str) -> bool {
    host.trim_end_matches('.')
        .split('.')
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

/// Lower case, no trailing dot; letters, digits, '-', '_' and '.' only.
fn normalize_name(host: &str) -> Result<String, String> {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(h)
    } else {
        Err(format!(
            "`{host}` is not a host name, IP address or network"
        ))
    }
}

impl AllowRule {
    fn port_ok(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.iter().any(|r| r.contains(&port))
    }

    fn allows_addr(&self, ip: IpAddr, port: u16) -> bool {
        matches!(&self.host, HostMatch::Net(n) if n.contains(&ip.to_canonical()))
            && self.port_ok(port)
    }

    fn allows_name(&self, name: &str, port: u16) -> bool {
        matches!(&self.host, HostMatch::Name(n) if *n == name) && self.port_ok(port)
    }
}

/// A refusal: the reply status and a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Status for the reply.
    pub status: Status,
    /// What the receiver (and the sender's log) is told.
    pub message: String,
}

impl Refusal {
    fn new(status: Status, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// One service a sender exposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Its name (`""`: the default service).
    pub name: String,
    /// Where its connections go.
    pub source: ForwardAddr,
    /// Receivers that may use it (`None`: every receiver the sender admits).
    pub peers: Option<HashSet<String>>,
    /// Start each TCP connection with a PROXY protocol v2 header (the
    /// receiver-side client's address).
    pub proxy_protocol: bool,
}

impl Service {
    /// A service open to every admitted receiver.
    pub fn new(name: impl Into<String>, source: ForwardAddr) -> Self {
        Service {
            name: name.into(),
            source,
            peers: None,
            proxy_protocol: false,
        }
    }

    /// How logs and messages name it.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!("source {}", self.source)
        } else {
            format!("service `{}` (source {})", self.name, self.source)
        }
    }
}

/// Everything a sender serves: its services and its destination rules.
/// Replaced as a whole on reload (SIGHUP).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Shared with the routes that grant them (no copy per stream).
    services: Vec<Arc<Service>>,
    allow: Vec<AllowRule>,
}

/// Where a granted want goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A service's source.
    Service(Arc<Service>),
    /// Destinations each connection names (SOCKS5), each checked then.
    Dynamic,
    /// A receiver-chosen destination, allowed by the rules.
    Destination {
        /// TCP or UDP.
        protocol: Protocol,
        /// Host (name or IP literal).
        host: String,
        /// Port.
        port: u16,
    },
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Service(s) => f.write_str(&s.label()),
            Route::Dynamic => f.write_str("destinations named by SOCKS5 clients"),
            Route::Destination {
                protocol,
                host,
                port,
            } => write!(f, "destination {protocol}://{}", host_port(host, *port)),
        }
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Catalog {
    /// Services (names unique) and destination rules.
    pub fn new(services: Vec<Service>, allow: Vec<AllowRule>) -> Result<Self, String> {
        let mut seen = HashSet::new();
        for s in &services {
            if !s.name.is_empty() {
                check_service_name(&s.name)?;
            }
            if !seen.insert(s.name.as_str()) {
                return Err(if s.name.is_empty() {
                    "more than one default service: name them (--source NAME=URL)".into()
                } else {
                    format!("service `{}` is defined twice", s.name)
                });
            }
        }
        if services.is_empty() && allow.is_empty() {
            return Err(
                "nothing to serve: give --source URL (or NAME=URL, or [[service]] tables) or --allow rules"
                    .into(),
            );
        }
        Ok(Catalog {
            services: services.into_iter().map(Arc::new).collect(),
            allow,
        })
    }

    /// One default service, no destinations (today's single `--source`).
    pub fn single(source: ForwardAddr) -> Self {
        Catalog {
            services: vec![Arc::new(Service::new("", source))],
            allow: Vec::new(),
        }
    }

    /// The services.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    /// The destination rules.
    pub fn allow_rules(&self) -> &[AllowRule] {
        &self.allow
    }

    /// The service a receiver gets when it names none: the one named `""`,
    /// or the only service there is.
    pub fn default_service(&self) -> Option<&Arc<Service>> {
        self.services
            .iter()
            .find(|s| s.name.is_empty())
            .or(match self.services.as_slice() {
                [only] => Some(only),
                _ => None,
            })
    }

    /// A one-line description for logs and status: `ssh=tcp://..., web=...`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .services
            .iter()
            .map(|s| {
                if s.name.is_empty() {
                    s.source.to_string()
                } else {
                    format!("{}={}", s.name, s.source)
                }
            })
            .collect();
        for r in &self.allow {
            parts.push(format!("allow {r}"));
        }
        parts.join(", ")
    }

    fn names(&self) -> String {
        let names: Vec<&str> = self
            .services
            .iter()
            .filter(|s| !s.name.is_empty())
            .map(|s| s.name.as_str())
            .collect();
        if names.is_empty() {
            "none by name".into()
        } else {
            names.join(", ")
        }
    }

    /// Whether `peer` may have `want`, and where it goes. Destinations are
    /// checked as far as possible without resolving (an IP literal, or a
    /// name a rule names); [`Catalog::resolve`] checks every address.
    pub fn grant(&self, want: &Want, peer: &str) -> Result<Route, Refusal> {
        match &want.what {
            Wanted::Service(name) => {
                if self.services.is_empty() {
                    return Err(Refusal::new(
                        Status::BadRequest,
                        "this sender has no services, only destinations its --allow rules cover: ask for one with --target URL=HOST:PORT",
                    ));
                }
                let svc = if name.is_empty() {
                    self.default_service().ok_or_else(|| {
                        Refusal::new(
                            Status::BadRequest,
                            format!(
                                "this sender has no default service: name one with --target NAME=URL (its services: {})",
                                self.names()
                            ),
                        )
                    })?
                } else {
                    self.services
                        .iter()
                        .find(|s| s.name == *name)
                        .ok_or_else(|| {
                            Refusal::new(
                                Status::BadRequest,
                                format!(
                                    "this sender has no service `{name}` (its services: {})",
                                    self.names()
                                ),
                            )
                        })?
                };
                if let Some(peers) = &svc.peers {
                    if !peers.contains(peer) {
                        return Err(Refusal::new(
                            Status::Unauthorized,
                            format!(
                                "peer {peer} may not use {} (not in its allowed-peer list)",
                                svc.label()
                            ),
                        ));
                    }
                }
                if svc.source.protocol != want.protocol {
                    let p = svc.source.protocol;
                    return Err(Refusal::new(
                        Status::ProtocolMismatch,
                        format!(
                            "this sender's {} forwards {p}, but the receiver's --target for it is {}: use a {p}:// target",
                            svc.label(),
                            want.protocol
                        ),
                    ));
                }
                Ok(Route::Service(svc.clone()))
            }
            Wanted::Dynamic if self.allow.is_empty() => Err(Refusal::new(
                Status::Unauthorized,
                "a SOCKS5 target refused: this sender allows no receiver-chosen destinations (it has no --allow rules)",
            )),
            Wanted::Dynamic => Ok(Route::Dynamic),
            Wanted::Destination { host, port } => {
                let route = Route::Destination {
                    protocol: want.protocol,
                    host: host.clone(),
                    port: *port,
                };
                if self.allow.is_empty() {
                    return Err(Refusal::new(
                        Status::Unauthorized,
                        format!("{route} refused: this sender allows no receiver-chosen destinations (it has no --allow rules)"),
                    ));
                }
                if let Ok(ip) = host.parse::<IpAddr>() {
                    if !self.addr_allowed(ip, *port) {
                        return Err(self.forbidden(&route, SocketAddr::new(ip, *port)));
                    }
                }
                Ok(route)
            }
        }
    }

    fn addr_allowed(&self, ip: IpAddr, port: u16) -> bool {
        self.allow.iter().any(|r| r.allows_addr(ip, port))
    }

    fn forbidden(&self, route: &Route, addr: SocketAddr) -> Refusal {
        Refusal::new(
            Status::Unauthorized,
            format!("{route} refused: {addr} is not allowed by the sender's --allow rules"),
        )
    }

    /// The addresses to connect to for `route`: a service's resolved
    /// source, or a destination's addresses, every one of them allowed.
    pub async fn resolve(&self, route: &Route) -> Result<Vec<SocketAddr>, Refusal> {
        let unreachable = |what: String, e: std::io::Error| {
            Refusal::new(Status::ConnectFailed, format!("cannot resolve {what}: {e}"))
        };
        match route {
            Route::Dynamic => Err(Refusal::new(
                Status::BadRequest,
                "a SOCKS5 connection without a destination",
            )),
            Route::Service(s) => s
                .source
                .resolve()
                .await
                .map_err(|e| unreachable(s.label(), e)),
            Route::Destination { host, port, .. } => {
                if let Ok(ip) = host.parse::<IpAddr>() {
                    let a = SocketAddr::new(ip, *port);
                    return if self.addr_allowed(ip, *port) {
                        Ok(vec![a])
                    } else {
                        Err(self.forbidden(route, a))
                    };
                }
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host_port(host, *port))
                    .await
                    .map_err(|e| unreachable(route.to_string(), e))?
                    .collect();
                if addrs.is_empty() {
                    return Err(Refusal::new(
                        Status::ConnectFailed,
                        format!("{route}: the name has no address"),
                    ));
                }
                let name = normalize_name(host).unwrap_or_default();
                if self.allow.iter().any(|r| r.allows_name(&name, *port)) {
                    return Ok(addrs);
                }
                match addrs.iter().find(|a| !self.addr_allowed(a.ip(), *port)) {
                    Some(bad) => {
                        let all: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                        Err(Refusal::new(
                            Status::Unauthorized,
                            format!(
                                "{route} refused: the name resolves to {}, and {bad} is not allowed by the sender's --allow rules (every address must be)",
                                all.join(", ")
                            ),
                        ))
                    }
                    None => Ok(addrs),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
