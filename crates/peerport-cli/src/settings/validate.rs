//! Each group of merged settings checked and turned into the library's
//! types; every error names the flag (and so the key) to fix.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use iroh::RelayUrl;
use peerport::{
    addr::{SourceSpec, TargetSpec},
    engine::policy::{self, AllowRule, Catalog, Service},
    engine::EngineConfig,
    modes::iroh::{IrohOptions, PeerSpec},
    transport::QuicSettings,
};
use peerport_signaling::Mode;

use super::{declare::Secs, ConfigError, Observe, Partial, PathSettings};

pub(super) fn observe(p: &Partial) -> Result<Observe, ConfigError> {
    let addr = |v: &Option<String>, key: &'static str| -> Result<Option<SocketAddr>, ConfigError> {
        v.as_deref()
            .map(|a| {
                a.parse().map_err(|_| {
                    invalid(
                        key,
                        format!(
                            "--{key} `{a}` is not an address: write IP:PORT, e.g. 127.0.0.1:9090"
                        ),
                    )
                })
            })
            .transpose()
    };
    if let Some(n) = &p.name {
        let ok = !n.is_empty()
            && n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !n.starts_with('.');
        if !ok {
            return Err(invalid("name", format!(
                "--name `{n}`: use up to 64 letters, digits, '-', '_' or '.' (it names a socket file)"
            )));
        }
    }
    let dashboard_token = match &p.dashboard_token_file {
        None => None,
        Some(f) => {
            // a secret like the keys: refused when group or others can read it
            let t = peerport::identity::read_private(f).map_err(|e| {
                invalid(
                    "dashboard-token-file",
                    format!("--dashboard-token-file {}: {e}", f.display()),
                )
            })?;
            let t = t.trim().to_string();
            if t.len() < 16 || !t.chars().all(|c| c.is_ascii_graphic()) {
                return Err(invalid("dashboard-token-file", format!(
                    "--dashboard-token-file {}: the token must be at least 16 printable characters without spaces (e.g. `openssl rand -hex 16`)",
                    f.display()
                )));
            }
            Some(t)
        }
    };
    let dashboard = addr(&p.dashboard, "dashboard")?;
    if let Some(d) = dashboard {
        // checked with the settings: bad usage (exit 2, `config check`)
        crate::views::web::token_rule(d, dashboard_token.as_deref())
            .map_err(|e| invalid("dashboard", e.to_string()))?;
    }
    if p.dashboard_token_file.is_some() && dashboard.is_none() {
        return Err(invalid(
            "dashboard-token-file",
            "--dashboard-token-file needs --dashboard ADDR",
        ));
    }
    Ok(Observe {
        name: p.name.clone(),
        control_socket: p
            .control_socket
            .as_ref()
            .map(|c| (c.as_os_str() != "none").then(|| c.clone())),
        metrics: addr(&p.metrics, "metrics")?,
        dashboard,
        dashboard_token,
        stale_after: stale_after(p),
    })
}

/// The silence limit of the QUIC settings `p` gives
/// ([`QuicSettings::silence_limit`]).
pub(super) fn stale_after(p: &Partial) -> Duration {
    let d = QuicSettings::default();
    let q = QuicSettings {
        idle_timeout: p.idle_timeout.map_or(d.idle_timeout, Secs::duration),
        keep_alive: p.keepalive.map(Secs::duration),
        ..d
    };
    q.silence_limit()
}

/// The setting `key` (its flag without `--`, its key in a config file)
/// is invalid: `reason` says why and what to do.
pub(super) fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: Some(key),
        reason: reason.into(),
    }
}

/// Settings that are invalid together, or a file one of them names.
pub(super) fn unkeyed(reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: None,
        reason: reason.into(),
    }
}

pub(super) fn iroh_options(p: &Partial) -> Result<IrohOptions, ConfigError> {
    let mut o = IrohOptions::default();
    for u in p.relay_url.iter().flatten() {
        o.relay_urls.push(RelayUrl::from_str(u).map_err(|e| {
            invalid(
                "relay-url",
                format!(
                    "--relay-url `{u}` is not a URL ({e}); write e.g. https://relay.example.com"
                ),
            )
        })?);
    }
    o.relay_quic_port = p.relay_quic_port;
    if let Some(f) = &p.relay_ca {
        o.relay_ca = crate::tlsfile::load_certs(f)
            .map_err(|e| invalid("relay-ca", format!("--relay-ca: {e}")))?;
    }
    o.relay_only = p.relay_only.unwrap_or(false);
    if let Some(d) = &p.dns_server {
        o.dns_server = Some(d.parse().map_err(|e| {
            invalid(
                "dns-server",
                format!(
                "--dns-server `{d}` is not a URL ({e}); write e.g. https://dns.example.com/pkarr"
            ),
            )
        })?);
    }
    o.mdns = p.no_mdns != Some(true);
    o.portmap = p.no_portmap != Some(true);
    if let Some(b) = &p.bind {
        o.bind = Some(SocketAddr::from_str(b).map_err(|_| {
            invalid(
                "bind",
                format!(
                "--bind `{b}` is not an IP:PORT address; write e.g. 0.0.0.0:0 or 127.0.0.1:4433"
            ),
            )
        })?);
    }
    if let Some(s) = p.idle_timeout {
        if s.0 == 0 {
            return Err(invalid(
                "idle-timeout",
                "--idle-timeout must be at least 1 second",
            ));
        }
        o.quic.idle_timeout = s.duration();
    }
    if let Some(k) = p.keepalive {
        let k = k.duration();
        if k.is_zero() || k >= o.quic.idle_timeout {
            return Err(invalid(
                "keepalive",
                format!(
                    "--keepalive must be at least 1 second and below --idle-timeout ({} s)",
                    o.quic.idle_timeout.as_secs()
                ),
            ));
        }
        o.quic.keep_alive = Some(k);
    }
    if let Some(w) = p.stream_window {
        if !(64 << 10..=1 << 30).contains(&w) {
            return Err(invalid(
                "stream-window",
                "--stream-window must be between 65536 and 1073741824 bytes",
            ));
        }
        o.quic.windows = Some((w, w.saturating_mul(4)));
    }
    if let Some(c) = &p.congestion {
        let c = c
            .parse()
            .map_err(|e| invalid("congestion", format!("--congestion: {e}")))?;
        o.quic.congestion = Some(c);
    }
    Ok(o)
}

pub(super) fn engine(p: &Partial) -> Result<EngineConfig, ConfigError> {
    let mut e = EngineConfig::default();
    if let Some(s) = p.udp_idle_timeout {
        if s.0 == 0 {
            return Err(invalid(
                "udp-idle-timeout",
                "--udp-idle-timeout must be at least 1 second",
            ));
        }
        e.udp_idle_timeout = s.duration();
    }
    if let Some(n) = p.max_udp_flows {
        if n == 0 {
            return Err(invalid(
                "max-udp-flows",
                "--max-udp-flows must be at least 1",
            ));
        }
        e.max_udp_flows = n;
    }
    if let Some(n) = p.max_connections {
        if !(1..=peerport::engine::MAX_CONNECTIONS).contains(&n) {
            return Err(invalid(
                "max-connections",
                format!(
                    "--max-connections must be between 1 and {} (a QUIC connection carries at most 4096 streams at once)",
                    peerport::engine::MAX_CONNECTIONS
                ),
            ));
        }
        e.max_connections = n;
    }
    if let Some(s) = p.resume_window {
        e.resume.window = s.duration();
    }
    if let Some(m) = p.resume_buffer {
        if !(1..=1024).contains(&m) {
            return Err(invalid(
                "resume-buffer", "--resume-buffer must be between 1 and 1024 MiB (turn resumption off with --resume-window 0)",
            ));
        }
        e.resume.stream_buffer = (m as usize) << 20;
        e.resume.session_buffer = e.resume.session_buffer.max(e.resume.stream_buffer * 4);
    }
    Ok(e)
}

/// The sender's services and rules: `--source` (repeatable), `[[service]]`
/// tables, `--allow`.
pub(super) fn catalog(p: &Partial, mode: Mode) -> Result<Catalog, ConfigError> {
    let mut services = Vec::new();
    for v in p.source.iter().flatten() {
        let spec: SourceSpec = v.parse().map_err(|e| invalid("source", e))?;
        services.push(Service::new(spec.name, spec.source));
    }
    for t in p.service.iter().flatten() {
        let what = format!("[[service]] `{}`", t.name);
        let spec = SourceSpec::new(Some(&t.name), &t.source)
            .map_err(|e| invalid("service", format!("{what}: {e}")))?;
        let mut svc = Service::new(spec.name, spec.source);
        svc.proxy_protocol = t.proxy_protocol == Some(true);
        if svc.proxy_protocol && svc.source.protocol != peerport::addr::Protocol::Tcp {
            return Err(invalid(
                "service",
                format!("{what}: proxy-protocol is for tcp services"),
            ));
        }
        if let Some(ids) = &t.allowed_peer {
            if mode != Mode::Iroh {
                return Err(invalid("service", format!(
                    "{what}: allowed-peer needs mode iroh (in mode {mode} the exchange itself pins the one peer)"
                )));
            }
            svc.peers = Some(
                ids.iter()
                    .map(|i| normalize_peer(i))
                    .collect::<Result<_, _>>()?,
            );
        }
        services.push(svc);
    }
    let allow = p
        .allow
        .iter()
        .flatten()
        .map(|r| r.parse::<AllowRule>().map_err(|e| invalid("allow", e)))
        .collect::<Result<Vec<_>, _>>()?;
    if services.is_empty() && allow.is_empty() {
        return Err(invalid(
            "source", "--source is required, e.g. --source tcp://127.0.0.1:22 (or NAME=URL, repeatable; or [[service]] tables, or --allow rules for destinations receivers choose)",
        ));
    }
    Catalog::new(services, allow).map_err(unkeyed)
}

/// The receiver's `--target`s (at least one; ports unique).
pub(super) fn targets(p: &Partial) -> Result<Vec<TargetSpec>, ConfigError> {
    let list = p.target.as_deref().unwrap_or_default();
    if list.is_empty() {
        return Err(invalid(
            "target",
            "--target is required, e.g. --target tcp://127.0.0.1:2222",
        ));
    }
    if list.len() > policy::MAX_WANTS {
        return Err(invalid(
            "target",
            format!(
                "{} --target values: one receiver carries at most {}",
                list.len(),
                policy::MAX_WANTS
            ),
        ));
    }
    let specs = list
        .iter()
        .map(|t| t.parse::<TargetSpec>().map_err(|e| invalid("target", e)))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, a) in specs.iter().enumerate() {
        if a.local.port != 0
            && specs[..i].iter().any(|b| {
                b.local.protocol == a.local.protocol && b.local.host_port() == a.local.host_port()
            })
        {
            return Err(invalid(
                "target",
                format!("--target {} is given twice", a.local),
            ));
        }
    }
    Ok(specs)
}

/// A file that grants access must not be writable by others: whoever can
/// write it can let themselves in.
pub(super) fn check_not_writable_by_others(path: &std::path::Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(unkeyed(format!(
            "{p} grants access but can be written by group or others (mode {mode:o}): run `chmod go-w {p}` and try again",
            p = path.display()
        )));
    }
    Ok(())
}

pub(super) fn read_peers_file(path: &PathBuf) -> Result<Vec<String>, ConfigError> {
    check_not_writable_by_others(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or(l).to_string())
        .collect())
}

pub(super) fn normalize_peer(id: &str) -> Result<String, ConfigError> {
    iroh::EndpointId::from_str(id.trim())
        .map(|k| k.to_string())
        .map_err(|e| {
            invalid(
                "allowed-peer",
                format!(
                "allowed peer `{id}` is not an endpoint id ({e}); get it with `peerport show-id`"
            ),
            )
        })
}

pub(super) fn allowed_peers(p: &Partial) -> Result<Vec<String>, ConfigError> {
    let mut allowed = Vec::new();
    for id in p.allowed_peer.iter().flatten() {
        allowed.push(normalize_peer(id)?);
    }
    if let Some(f) = &p.authorized_peers_file {
        for id in read_peers_file(f)? {
            allowed.push(normalize_peer(&id)?);
        }
    }
    Ok(allowed)
}

pub(super) fn secs(v: Option<Secs>, default: Duration) -> Duration {
    v.map(Secs::duration).unwrap_or(default)
}

/// Environment variable holding the sender's ticket (instead of
/// `--node-id` or `--ticket-file`).
pub const TICKET_ENV: &str = "PEERPORT_TICKET";

/// The sender a receiver reaches: its ticket from `--node-id`,
/// `--ticket-file` or [`TICKET_ENV`], in that order.
pub(super) fn peer_spec(p: &Partial) -> Result<PeerSpec, ConfigError> {
    let (key, node) = match (&p.node_id, &p.ticket_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "ticket-file",
                "give the ticket once: --node-id or --ticket-file, not both",
            ))
        }
        (Some(n), None) => ("node-id", n.trim().to_string()),
        (None, Some(f)) => {
            // the ticket grants access: refused when group or others can read it
            let t = peerport::identity::read_private(f)
                .map_err(|e| invalid("ticket-file", format!("--ticket-file {}: {e}", f.display())))?;
            ("ticket-file", t.trim().to_string())
        }
        (None, None) => match std::env::var(TICKET_ENV) {
            Ok(t) if !t.trim().is_empty() => ("node-id", t.trim().to_string()),
            _ => {
                return Err(invalid(
                    "node-id",
                    format!("the sender's ticket is needed: --ticket-file FILE (a file holding the line the sender printed, ppt1...), {TICKET_ENV}=TICKET, or --node-id TICKET"),
                ))
            }
        },
    };
    node.parse()
        .map_err(|e| invalid(key, format!("--{key}: {e}")))
}

/// Environment variable holding the TURN password.
pub const TURN_PASSWORD_ENV: &str = "PEERPORT_TURN_PASSWORD";

/// TURN servers from the merged settings (password from file or environment).
pub fn turn_servers(p: &Partial) -> Result<Vec<peerport::modes::ice::TurnServer>, ConfigError> {
    let Some(list) = p.turn_server.as_ref().filter(|l| !l.is_empty()) else {
        return Ok(Vec::new());
    };
    let user = p.turn_user.clone().ok_or_else(|| {
        invalid("turn-server", "--turn-server needs --turn-user and a password (--turn-password-file or PEERPORT_TURN_PASSWORD)")
    })?;
    let password = match &p.turn_password_file {
        // a password file is a secret: refused when group or others can read it
        Some(f) => peerport::identity::read_private(f)
            .map_err(|e| invalid("turn-password-file", format!("--turn-password-file: {e}")))?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        None => std::env::var(TURN_PASSWORD_ENV).map_err(|_| {
            invalid("turn-server", "--turn-server needs a password: --turn-password-file FILE or the PEERPORT_TURN_PASSWORD environment variable")
        })?,
    };
    list.iter()
        .map(|u| {
            let hp = u
                .strip_prefix("turn:")
                .unwrap_or(u)
                .split('?')
                .next()
                .unwrap_or("");
            let ok = hp
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok || u.starts_with("turns:") {
                return Err(invalid(
                    "turn-server",
                    format!(
                    "--turn-server `{u}`: write turn:HOST:PORT (UDP TURN; turns: is not supported)"
                ),
                ));
            }
            Ok(peerport::modes::ice::TurnServer {
                host_port: hp.to_string(),
                user: user.clone(),
                password: password.clone(),
            })
        })
        .collect()
}

pub(super) fn path_settings(
    p: &Partial,
    connect_timeout: Duration,
) -> Result<PathSettings, ConfigError> {
    let iroh = iroh_options(&Partial {
        bind: None,
        ..p.clone()
    })?;
    let bind = match &p.bind {
        None => SocketAddr::from(([0, 0, 0, 0], 0)),
        Some(b) => SocketAddr::from_str(b).map_err(|_| {
            invalid(
                "bind",
                format!("--bind `{b}` is not an IP:PORT address; write e.g. 0.0.0.0:0"),
            )
        })?,
    };
    let stun_servers = if p.no_stun == Some(true) {
        Vec::new()
    } else {
        match &p.stun_server {
            Some(v) => v.clone(),
            None => peerport::stun::DEFAULT_STUN_SERVERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    };
    let relay_only = p.relay_only.unwrap_or(false);
    let turn_servers = turn_servers(p)?;
    // checked before anything binds, so the error comes first and alone
    if let Some(problem) = peerport::modes::ice::relay_only_problem(relay_only, &turn_servers) {
        return Err(invalid("relay-only", problem));
    }
    Ok(PathSettings {
        offer_file: p.offer_file.clone().filter(|f| f.as_os_str() != "-"),
        answer_file: p.answer_file.clone().filter(|f| f.as_os_str() != "-"),
        bind,
        stun_servers,
        portmap: p.no_portmap != Some(true),
        quic: iroh.quic,
        connect_timeout,
        turn_servers,
        relay_only,
        punch: p.no_punch != Some(true),
    })
}

/// Environment variable holding the nsec (instead of a file).
pub const NSEC_ENV: &str = "PEERPORT_NSEC";

/// Read the nsec from `--nsec-file` (which must not be group/world readable) or `PEERPORT_NSEC`.
pub fn read_nsec(file: Option<&PathBuf>) -> Result<String, ConfigError> {
    let text = match file {
        Some(f) => peerport::identity::read_private(f).map_err(|e| invalid("nsec-file", e.to_string()))?,
        None => std::env::var(NSEC_ENV).map_err(|_| {
            invalid("nsec-file", "no Nostr key: pass --nsec-file FILE (create one with `peerport generate-nostr-key --output FILE`) or set PEERPORT_NSEC")
        })?,
    };
    peerport_signaling::nostr::parse_secret(&text)
        .map_err(|e| invalid("nsec-file", format!("--nsec-file: {e}")))
}

pub(super) fn nostr_config(
    p: &Partial,
) -> Result<peerport_signaling::nostr::NostrConfig, ConfigError> {
    let secret = read_nsec(p.nsec_file.as_ref())?;
    let peer = p.peer_npub.as_deref().ok_or_else(|| {
        invalid(
            "peer-npub",
            "--peer-npub is required: the other side's npub (`peerport show-npub` prints it)",
        )
    })?;
    let peer = peerport_signaling::nostr::parse_public(peer)
        .map_err(|e| invalid("peer-npub", format!("--peer-npub: {e}")))?;
    let own = peerport_signaling::nostr::npub_of(&secret)
        .map_err(|e| invalid("nsec-file", format!("--nsec-file: {e}")))?;
    if peerport_signaling::nostr::parse_public(&own).is_ok_and(|own| own == peer) {
        return Err(invalid(
            "peer-npub",
            format!("--peer-npub {own} is this side's own npub (of its --nsec-file or PEERPORT_NSEC): give the other side's npub (`peerport show-npub` there prints it)"),
        ));
    }
    let relays = match &p.relay {
        Some(r) if !r.is_empty() => r.clone(),
        _ => peerport_signaling::nostr::DEFAULT_RELAYS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    for r in &relays {
        if !(r.starts_with("ws://") || r.starts_with("wss://")) {
            return Err(invalid(
                "relay",
                format!("--relay `{r}`: write wss://HOST or ws://HOST:PORT"),
            ));
        }
    }
    let kind = p
        .nostr_kind
        .unwrap_or(peerport_signaling::nostr::DEFAULT_KIND);
    if !(20000..30000).contains(&kind) {
        return Err(invalid(
            "nostr-kind",
            format!(
            "--nostr-kind {kind}: use an ephemeral kind, 20000..29999 (relays forward, don't store)"
        ),
        ));
    }
    Ok(peerport_signaling::nostr::NostrConfig {
        secret,
        peer,
        relays,
        kind,
    })
}
