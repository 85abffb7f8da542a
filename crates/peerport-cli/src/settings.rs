//! Turning merged [`Partial`] settings into typed, validated settings, with
//! errors that say which flag or key to fix.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use iroh::RelayUrl;

use peerport_signaling::Mode;

use crate::{
    cli::ConfigArgs,
    config::{self, ConfigError, Partial, Role},
};
pub use peerport::sender::DEFAULT_MAX_SESSIONS;
use peerport::{
    addr::{SourceSpec, TargetSpec},
    engine::policy::{self, AllowRule, Catalog, Service},
    engine::EngineConfig,
    modes::iroh::{IrohOptions, PeerSpec},
    receiver::Reconnect,
    transport::QuicSettings,
};

/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Validated settings of a sender or receiver in any mode.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sender: its services and destination rules (`--source`, `[[service]]`, `--allow`).
    pub catalog: Option<Catalog>,
    /// Receiver: its local targets (`--target`, at least one).
    pub targets: Vec<TargetSpec>,
    /// Engine tunables.
    pub engine: EngineConfig,
    /// Sender: most sessions at once (0 = unlimited).
    pub max_sessions: usize,
    /// Receiver: the reconnect policy.
    pub reconnect: Reconnect,
    /// Receiver: how long a local TCP client waits for the tunnel.
    pub reconnect_wait: Duration,
    /// How long one attempt to connect may take.
    pub connect_timeout: Duration,
    /// Longest drain on SIGTERM.
    pub drain_timeout: Duration,
    /// The mode's own settings.
    pub mode: ModeSettings,
    /// How the process shows what it does.
    pub observe: Observe,
}

/// `--name`, `--control-socket`, `--metrics`, `--dashboard`.
#[derive(Debug, Clone, Default)]
pub struct Observe {
    /// The process's name (`None`: role-PID).
    pub name: Option<String>,
    /// The control socket (`None`: the default place; `Some(None)`: no socket).
    pub control_socket: Option<Option<PathBuf>>,
    /// Prometheus endpoint.
    pub metrics: Option<SocketAddr>,
    /// Dashboard address.
    pub dashboard: Option<SocketAddr>,
    /// The dashboard's token.
    pub dashboard_token: Option<String>,
}

fn observe(p: &Partial) -> Result<Observe, ConfigError> {
    let addr = |v: &Option<String>, flag: &str| -> Result<Option<SocketAddr>, ConfigError> {
        v.as_deref()
            .map(|a| {
                a.parse().map_err(|_| {
                    invalid(format!(
                        "{flag} `{a}` is not an address: write IP:PORT, e.g. 127.0.0.1:9090"
                    ))
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
            return Err(invalid(format!(
                "--name `{n}`: use up to 64 letters, digits, '-', '_' or '.' (it names a socket file)"
            )));
        }
    }
    let dashboard_token = match &p.dashboard_token_file {
        None => None,
        Some(f) => {
            let t = std::fs::read_to_string(f)
                .map_err(|e| invalid(format!("--dashboard-token-file {}: {e}", f.display())))?;
            let t = t.trim().to_string();
            if t.len() < 16 || !t.chars().all(|c| c.is_ascii_graphic()) {
                return Err(invalid(format!(
                    "--dashboard-token-file {}: the token must be at least 16 printable characters without spaces (e.g. `openssl rand -hex 16`)",
                    f.display()
                )));
            }
            Some(t)
        }
    };
    let dashboard = addr(&p.dashboard, "--dashboard")?;
    if p.dashboard_token_file.is_some() && dashboard.is_none() {
        return Err(invalid("--dashboard-token-file needs --dashboard ADDR"));
    }
    Ok(Observe {
        name: p.name.clone(),
        control_socket: p
            .control_socket
            .as_ref()
            .map(|c| (c.as_os_str() != "none").then(|| c.clone())),
        metrics: addr(&p.metrics, "--metrics")?,
        dashboard,
        dashboard_token,
    })
}

/// The settings only one mode has.
#[derive(Debug, Clone)]
pub enum ModeSettings {
    /// `iroh`.
    Iroh(IrohSettings),
    /// `iroh-manual`.
    IrohManual(PathSettings),
    /// `ice`.
    Ice(PathSettings),
    /// `nostr`: the ICE path plus the signaling keys and relays.
    Nostr(PathSettings, peerport_signaling::nostr::NostrConfig),
}

/// Settings of the `iroh` mode.
#[derive(Debug, Clone)]
pub struct IrohSettings {
    /// Identity file (sender: stable ticket; receiver: stable id for `--allowed-peer`).
    pub secret_file: Option<PathBuf>,
    /// Endpoint options.
    pub iroh: IrohOptions,
    /// Sender: pinned receiver ids (empty = token auth).
    pub allowed_peers: Vec<String>,
    /// Receiver: who to reach.
    pub peer: Option<PeerSpec>,
}

/// Settings of the modes that exchange addresses (`iroh-manual`, `ice`, `nostr`).
#[derive(Debug, Clone)]
pub struct PathSettings {
    /// Offer file (`None` = the console).
    pub offer_file: Option<PathBuf>,
    /// Answer file (`None` = the console).
    pub answer_file: Option<PathBuf>,
    /// Local UDP bind address.
    pub bind: SocketAddr,
    /// STUN servers (empty = none).
    pub stun_servers: Vec<String>,
    /// Port mapping on/off.
    pub portmap: bool,
    /// Idle timeout and congestion controller.
    pub quic: QuicSettings,
    /// Bound on connecting after the exchange.
    pub connect_timeout: Duration,
    /// TURN servers (ICE modes).
    pub turn_servers: Vec<peerport::modes::ice::TurnServer>,
    /// Relay candidates only (ICE modes).
    pub relay_only: bool,
}

impl PathSettings {
    /// The ICE path of the `ice` and `nostr` modes.
    pub fn ice_path(&self) -> peerport::modes::ice::IcePath {
        peerport::modes::ice::IcePath {
            bind: self.bind,
            stun_servers: self.stun_servers.clone(),
            turn_servers: self.turn_servers.clone(),
            relay_only: self.relay_only,
            quic: self.quic,
            connect_timeout: self.connect_timeout,
        }
    }

    /// The path of the `iroh-manual` mode.
    pub fn iroh_manual_path(&self) -> peerport::modes::iroh_manual::IrohManualPath {
        peerport::modes::iroh_manual::IrohManualPath {
            bind: self.bind,
            stun_servers: self.stun_servers.clone(),
            portmap: self.portmap,
            quic: self.quic,
            connect_timeout: self.connect_timeout,
            metrics: Default::default(),
        }
    }
}

/// Read the config file (if any), check it belongs to `role` and `mode`,
/// overlay the command line, and validate: the one way settings are made.
pub fn load(
    cli: Partial,
    cfg: &ConfigArgs,
    role: Role,
    mode: Mode,
) -> Result<Settings, ConfigError> {
    Settings::from_partial(merge(cli, cfg, role, mode)?, role, mode)
}

/// Load the config file the flags point to (if any), check it, and overlay the command line.
pub fn merge(
    cli: Partial,
    cfg: &ConfigArgs,
    role: Role,
    mode: Mode,
) -> Result<Partial, ConfigError> {
    let path = match (&cfg.config, cfg.default_config) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(config::default_path(role).ok_or_else(|| {
            ConfigError::Invalid("--default-config: neither XDG_CONFIG_HOME nor HOME is set".into())
        })?),
        (None, false) => None,
    };
    let file = match path {
        Some(p) => {
            let f = config::load(&p)?;
            config::check_file(&p.display().to_string(), &f, role, mode)?;
            f
        }
        None => Partial::default(),
    };
    Ok(config::overlay(file, cli))
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

fn iroh_options(p: &Partial) -> Result<IrohOptions, ConfigError> {
    let mut o = IrohOptions::default();
    for u in p.relay_url.iter().flatten() {
        o.relay_urls.push(RelayUrl::from_str(u).map_err(|e| {
            invalid(format!(
                "--relay-url `{u}` is not a URL ({e}); write e.g. https://relay.example.com"
            ))
        })?);
    }
    o.relay_quic_port = p.relay_quic_port;
    if let Some(f) = &p.relay_ca {
        o.relay_ca =
            crate::tlsfile::load_certs(f).map_err(|e| invalid(format!("--relay-ca: {e}")))?;
    }
    o.relay_only = p.relay_only.unwrap_or(false);
    if let Some(d) = &p.dns_server {
        o.dns_server = Some(d.parse().map_err(|e| {
            invalid(format!(
                "--dns-server `{d}` is not a URL ({e}); write e.g. https://dns.example.com/pkarr"
            ))
        })?);
    }
    o.mdns = p.no_mdns != Some(true);
    o.portmap = p.no_portmap != Some(true);
    if let Some(b) = &p.bind {
        o.bind = Some(SocketAddr::from_str(b).map_err(|_| {
            invalid(format!(
                "--bind `{b}` is not an IP:PORT address; write e.g. 0.0.0.0:0 or 127.0.0.1:4433"
            ))
        })?);
    }
    if let Some(s) = p.idle_timeout {
        if s == 0 {
            return Err(invalid("--idle-timeout must be at least 1 second"));
        }
        o.quic.idle_timeout = Duration::from_secs(s);
    }
    if let Some(c) = &p.congestion {
        let c = c
            .parse()
            .map_err(|e| invalid(format!("--congestion: {e}")))?;
        o.quic.congestion = Some(c);
    }
    Ok(o)
}

fn engine(p: &Partial) -> Result<EngineConfig, ConfigError> {
    let mut e = EngineConfig::default();
    if let Some(s) = p.udp_idle_timeout {
        if s == 0 {
            return Err(invalid("--udp-idle-timeout must be at least 1 second"));
        }
        e.udp_idle_timeout = Duration::from_secs(s);
    }
    if let Some(n) = p.max_udp_flows {
        if n == 0 {
            return Err(invalid("--max-udp-flows must be at least 1"));
        }
        e.max_udp_flows = n;
    }
    if let Some(s) = p.resume_window {
        e.resume.window = Duration::from_secs(s);
    }
    if let Some(m) = p.resume_buffer {
        if !(1..=1024).contains(&m) {
            return Err(invalid(
                "--resume-buffer must be between 1 and 1024 MiB (turn resumption off with --resume-window 0)",
            ));
        }
        e.resume.stream_buffer = (m as usize) << 20;
        e.resume.session_buffer = e.resume.session_buffer.max(e.resume.stream_buffer * 4);
    }
    Ok(e)
}

/// The sender's services and rules: `--source` (repeatable), `[[service]]`
/// tables, `--allow`.
fn catalog(p: &Partial, mode: Mode) -> Result<Catalog, ConfigError> {
    let mut services = Vec::new();
    for v in p.source.iter().flatten() {
        let spec: SourceSpec = v.parse().map_err(invalid)?;
        services.push(Service::new(spec.name, spec.source));
    }
    for t in p.service.iter().flatten() {
        let what = format!("[[service]] `{}`", t.name);
        let spec = SourceSpec::new(Some(&t.name), &t.source)
            .map_err(|e| invalid(format!("{what}: {e}")))?;
        let mut svc = Service::new(spec.name, spec.source);
        svc.proxy_protocol = t.proxy_protocol == Some(true);
        if svc.proxy_protocol && svc.source.protocol != peerport::addr::Protocol::Tcp {
            return Err(invalid(format!(
                "{what}: proxy-protocol is for tcp services"
            )));
        }
        if let Some(ids) = &t.allowed_peer {
            if mode != Mode::Iroh {
                return Err(invalid(format!(
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
        .map(|r| r.parse::<AllowRule>().map_err(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    if services.is_empty() && allow.is_empty() {
        return Err(invalid(
            "--source is required, e.g. --source tcp://127.0.0.1:22 (or NAME=URL, repeatable; or [[service]] tables, or --allow rules for destinations receivers choose)",
        ));
    }
    Catalog::new(services, allow).map_err(invalid)
}

/// The receiver's `--target`s (at least one; ports unique).
fn targets(p: &Partial) -> Result<Vec<TargetSpec>, ConfigError> {
    let list = p.target.as_deref().unwrap_or_default();
    if list.is_empty() {
        return Err(invalid(
            "--target is required, e.g. --target tcp://127.0.0.1:2222",
        ));
    }
    if list.len() > policy::MAX_WANTS {
        return Err(invalid(format!(
            "{} --target values: one receiver carries at most {}",
            list.len(),
            policy::MAX_WANTS
        )));
    }
    let specs = list
        .iter()
        .map(|t| t.parse::<TargetSpec>().map_err(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, a) in specs.iter().enumerate() {
        if a.local.port != 0
            && specs[..i].iter().any(|b| {
                b.local.protocol == a.local.protocol && b.local.host_port() == a.local.host_port()
            })
        {
            return Err(invalid(format!("--target {} is given twice", a.local)));
        }
    }
    Ok(specs)
}

/// A file that grants access must not be writable by others: whoever can
/// write it can let themselves in.
fn check_not_writable_by_others(path: &std::path::Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(invalid(format!(
            "{p} grants access but can be written by group or others (mode {mode:o}): run `chmod go-w {p}` and try again",
            p = path.display()
        )));
    }
    Ok(())
}

fn read_peers_file(path: &PathBuf) -> Result<Vec<String>, ConfigError> {
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

fn normalize_peer(id: &str) -> Result<String, ConfigError> {
    iroh::EndpointId::from_str(id.trim())
        .map(|k| k.to_string())
        .map_err(|e| {
            invalid(format!(
                "allowed peer `{id}` is not an endpoint id ({e}); get it with `peerport show-id`"
            ))
        })
}

fn allowed_peers(p: &Partial) -> Result<Vec<String>, ConfigError> {
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

fn secs(v: Option<u64>, default: Duration) -> Duration {
    v.map(Duration::from_secs).unwrap_or(default)
}

impl Settings {
    /// What the process forwards, in one line: the sender's services and
    /// rules, or the receiver's targets.
    pub fn describe(&self) -> String {
        match &self.catalog {
            Some(c) => c.summary(),
            None => {
                let all: Vec<String> = self.targets.iter().map(|t| t.to_string()).collect();
                all.join(", ")
            }
        }
    }

    /// Validate merged settings for `role` in `mode`.
    pub fn from_partial(p: Partial, role: Role, mode: Mode) -> Result<Self, ConfigError> {
        let (catalog, targets) = match role {
            Role::Sender => (Some(catalog(&p, mode)?), Vec::new()),
            Role::Receiver => (None, targets(&p)?),
        };
        let connect_timeout = secs(p.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        if connect_timeout.is_zero() {
            return Err(invalid("--connect-timeout must be at least 1 second"));
        }
        let reconnect = Reconnect {
            enabled: p.no_reconnect != Some(true),
            give_up_after: p.give_up_after.filter(|s| *s > 0).map(Duration::from_secs),
            ..Reconnect::default()
        };
        let mode_settings = match mode {
            Mode::Iroh => ModeSettings::Iroh(IrohSettings {
                secret_file: p.secret_file.clone(),
                iroh: iroh_options(&p)?,
                allowed_peers: allowed_peers(&p)?,
                peer: match role {
                    Role::Sender => None,
                    Role::Receiver => Some(peer_spec(&p)?),
                },
            }),
            Mode::IrohManual => ModeSettings::IrohManual(path_settings(&p, connect_timeout)?),
            Mode::Ice => ModeSettings::Ice(path_settings(&p, connect_timeout)?),
            Mode::Nostr => {
                ModeSettings::Nostr(path_settings(&p, connect_timeout)?, nostr_config(&p)?)
            }
        };
        Ok(Settings {
            catalog,
            targets,
            engine: engine(&p)?,
            max_sessions: p.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS),
            reconnect,
            reconnect_wait: secs(p.reconnect_wait, Duration::from_secs(10)),
            connect_timeout,
            drain_timeout: secs(p.drain_timeout, Duration::from_secs(10)),
            mode: mode_settings,
            observe: observe(&p)?,
        })
    }
}

fn peer_spec(p: &Partial) -> Result<PeerSpec, ConfigError> {
    let node = p.node_id.as_deref().ok_or_else(|| {
        invalid("--node-id is required: paste the ticket the sender printed (ppt1...)")
    })?;
    node.parse().map_err(|e| invalid(format!("--node-id: {e}")))
}

/// Environment variable holding the TURN password.
pub const TURN_PASSWORD_ENV: &str = "PEERPORT_TURN_PASSWORD";

/// TURN servers from the merged settings (password from file or environment).
pub fn turn_servers(p: &Partial) -> Result<Vec<peerport::modes::ice::TurnServer>, ConfigError> {
    let Some(list) = p.turn_server.as_ref().filter(|l| !l.is_empty()) else {
        return Ok(Vec::new());
    };
    let user = p.turn_user.clone().ok_or_else(|| {
        invalid("--turn-server needs --turn-user and a password (--turn-password-file or PEERPORT_TURN_PASSWORD)")
    })?;
    let password = match &p.turn_password_file {
        // a password file is a secret: refused when group or others can read it
        Some(f) => peerport::identity::read_private(f)
            .map_err(|e| invalid(format!("--turn-password-file: {e}")))?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        None => std::env::var(TURN_PASSWORD_ENV).map_err(|_| {
            invalid("--turn-server needs a password: --turn-password-file FILE or the PEERPORT_TURN_PASSWORD environment variable")
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
                return Err(invalid(format!(
                    "--turn-server `{u}`: write turn:HOST:PORT (UDP TURN; turns: is not supported)"
                )));
            }
            Ok(peerport::modes::ice::TurnServer {
                host_port: hp.to_string(),
                user: user.clone(),
                password: password.clone(),
            })
        })
        .collect()
}

fn path_settings(p: &Partial, connect_timeout: Duration) -> Result<PathSettings, ConfigError> {
    let iroh = iroh_options(&Partial {
        bind: None,
        ..p.clone()
    })?;
    let bind = match &p.bind {
        None => SocketAddr::from(([0, 0, 0, 0], 0)),
        Some(b) => SocketAddr::from_str(b).map_err(|_| {
            invalid(format!(
                "--bind `{b}` is not an IP:PORT address; write e.g. 0.0.0.0:0"
            ))
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
        return Err(invalid(problem));
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
    })
}

/// Environment variable holding the nsec (instead of a file).
pub const NSEC_ENV: &str = "PEERPORT_NSEC";

/// Read the nsec from `--nsec-file` (which must not be group/world readable) or `PEERPORT_NSEC`.
pub fn read_nsec(file: Option<&PathBuf>) -> Result<String, ConfigError> {
    let text = match file {
        Some(f) => peerport::identity::read_private(f).map_err(|e| invalid(e.to_string()))?,
        None => std::env::var(NSEC_ENV).map_err(|_| {
            invalid("no Nostr key: pass --nsec-file FILE (create one with `peerport generate-nostr-key --output FILE`) or set PEERPORT_NSEC")
        })?,
    };
    peerport_signaling::nostr::parse_secret(&text).map_err(|e| invalid(format!("--nsec-file: {e}")))
}

fn nostr_config(p: &Partial) -> Result<peerport_signaling::nostr::NostrConfig, ConfigError> {
    let secret = read_nsec(p.nsec_file.as_ref())?;
    let peer = p.peer_npub.as_deref().ok_or_else(|| {
        invalid("--peer-npub is required: the other side's npub (`peerport show-npub` prints it)")
    })?;
    let peer = peerport_signaling::nostr::parse_public(peer)
        .map_err(|e| invalid(format!("--peer-npub: {e}")))?;
    let relays = match &p.relay {
        Some(r) if !r.is_empty() => r.clone(),
        _ => peerport_signaling::nostr::DEFAULT_RELAYS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    for r in &relays {
        if !(r.starts_with("ws://") || r.starts_with("wss://")) {
            return Err(invalid(format!(
                "--relay `{r}`: write wss://HOST or ws://HOST:PORT"
            )));
        }
    }
    let kind = p
        .nostr_kind
        .unwrap_or(peerport_signaling::nostr::DEFAULT_KIND);
    if !(20000..30000).contains(&kind) {
        return Err(invalid(format!(
            "--nostr-kind {kind}: use an ephemeral kind, 20000..29999 (relays forward, don't store)"
        )));
    }
    Ok(peerport_signaling::nostr::NostrConfig {
        secret,
        peer,
        relays,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(p: Partial) -> Result<Settings, ConfigError> {
        Settings::from_partial(p, Role::Sender, Mode::Iroh)
    }

    #[test]
    fn sender_needs_valid_source() {
        let e = sender(Partial::default()).unwrap_err();
        assert!(e.to_string().contains("--source is required"));
        let e = sender(Partial {
            source: Some(vec!["127.0.0.1:22".into()]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("tcp://"), "{e}");
        let s = sender(Partial {
            source: Some(vec!["udp://127.0.0.1:53".into()]),
            max_sessions: Some(0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.max_sessions, 0);
    }

    #[test]
    fn services_tables_and_allow_rules() {
        let file = crate::config::parse(
            "x.toml",
            r#"
            source = ["ssh=tcp://127.0.0.1:22", "udp://127.0.0.1:53"]
            allow = ["10.0.0.0/24:22,443"]
            [[service]]
            name = "web"
            source = "tcp://127.0.0.1:80"
            "#,
        )
        .unwrap();
        let s = sender(file.clone()).unwrap();
        let c = s.catalog.as_ref().unwrap();
        assert_eq!(c.services().len(), 3);
        assert_eq!(c.default_service().unwrap().source.port, 53);
        assert_eq!(
            s.describe(),
            "ssh=tcp://127.0.0.1:22, udp://127.0.0.1:53, web=tcp://127.0.0.1:80, allow 10.0.0.0/24:22,443"
        );
        // a name used twice, a bad rule, per-service peers outside iroh
        let twice = Partial {
            source: Some(vec!["web=tcp://127.0.0.1:81".into()]),
            ..file.clone()
        };
        assert!(sender(twice)
            .unwrap_err()
            .to_string()
            .contains("`web` is defined twice"));
        let bad = Partial {
            allow: Some(vec!["10.0.0.0/24".into()]),
            ..Default::default()
        };
        assert!(sender(bad)
            .unwrap_err()
            .to_string()
            .contains("HOST_OR_CIDR:PORTS"));
        let pinned = crate::config::parse(
            "x.toml",
            "[[service]]\nname = \"ssh\"\nsource = \"tcp://127.0.0.1:22\"\nallowed-peer = [\"x\"]\n",
        )
        .unwrap();
        let e = Settings::from_partial(pinned, Role::Sender, Mode::Ice).unwrap_err();
        assert!(e.to_string().contains("needs mode iroh"), "{e}");
        // receivers: several targets, each port once
        let r = Settings::from_partial(
            Partial {
                target: Some(vec![
                    "ssh=tcp://127.0.0.1:2222".into(),
                    "udp://127.0.0.1:5353=10.0.0.53:53".into(),
                ]),
                ..Default::default()
            },
            Role::Receiver,
            Mode::Ice,
        )
        .unwrap();
        assert_eq!(r.targets.len(), 2);
        let e = Settings::from_partial(
            Partial {
                target: Some(vec![
                    "tcp://127.0.0.1:1".into(),
                    "a=tcp://127.0.0.1:1".into(),
                ]),
                ..Default::default()
            },
            Role::Receiver,
            Mode::Ice,
        )
        .unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
    }

    #[test]
    fn receiver_rejects_bad_ticket_and_bind() {
        let e = Settings::from_partial(
            Partial {
                target: Some(vec!["tcp://127.0.0.1:2222".into()]),
                node_id: Some("garbage".into()),
                ..Default::default()
            },
            Role::Receiver,
            Mode::Iroh,
        )
        .unwrap_err();
        assert!(e.to_string().contains("--node-id"), "{e}");
        let e = sender(Partial {
            source: Some(vec!["tcp://127.0.0.1:22".into()]),
            bind: Some("localhost".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("--bind"), "{e}");
    }

    #[test]
    fn relay_only_needs_a_turn_server_before_anything_binds() {
        let p = Partial {
            target: Some(vec!["tcp://127.0.0.1:0".into()]),
            relay_only: Some(true),
            ..Default::default()
        };
        for mode in [Mode::Ice, Mode::Nostr] {
            let e = Settings::from_partial(p.clone(), Role::Receiver, mode).unwrap_err();
            assert!(
                e.to_string().contains("--relay-only needs a --turn-server"),
                "{e}"
            );
        }
    }

    #[test]
    fn reconnect_policy_from_flags() {
        let p = Partial {
            target: Some(vec!["tcp://127.0.0.1:0".into()]),
            no_reconnect: Some(true),
            give_up_after: Some(90),
            reconnect_wait: Some(3),
            ..Default::default()
        };
        let s = Settings::from_partial(p, Role::Receiver, Mode::Ice).unwrap();
        assert!(!s.reconnect.enabled);
        assert_eq!(s.reconnect.give_up_after, Some(Duration::from_secs(90)));
        assert_eq!(s.reconnect_wait, Duration::from_secs(3));
    }
}
