//! Configuration files and the one rule for combining them with the command
//! line: every option given on the command line wins over the file.
//!
//! Files are TOML with the same names as the long flags (`relay-url = [..]`,
//! `secret-file = ".."`), plus `role` and `mode`, which must match the
//! command. Unknown keys are errors that name the key.

use std::path::{Path, PathBuf};

use peerport_signaling::Mode;
use serde::{Deserialize, Serialize};

/// Which side a command or file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs next to the service.
    Sender,
    /// Runs next to the client.
    Receiver,
}

impl Role {
    /// `sender` or `receiver`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }
}

/// Every setting, each optional: what a file or a command line says.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Partial {
    /// `sender` or `receiver` (files only).
    pub role: Option<String>,
    /// Mode name (files only).
    pub mode: Option<String>,
    /// Sender: services to forward (`[NAME=]URL`; a string or a list).
    #[serde(default, deserialize_with = "one_or_many")]
    pub source: Option<Vec<String>>,
    /// Receiver: local targets (`[NAME=]URL[=HOST:PORT]`; a string or a list).
    #[serde(default, deserialize_with = "one_or_many")]
    pub target: Option<Vec<String>>,
    /// Sender: destinations receivers may ask for (`HOST_OR_CIDR:PORTS`).
    pub allow: Option<Vec<String>>,
    /// Sender: `[[service]]` tables (files only).
    pub service: Option<Vec<ServiceTable>>,
    /// Receiver: sender's ticket or endpoint id.
    pub node_id: Option<String>,
    /// Persistent identity file.
    pub secret_file: Option<PathBuf>,
    /// Relay servers.
    pub relay_url: Option<Vec<String>>,
    /// Relays' QUIC address discovery port (0 = off).
    pub relay_quic_port: Option<u16>,
    /// PEM file of extra CA certificates trusted for the relays.
    pub relay_ca: Option<PathBuf>,
    /// Relay only.
    pub relay_only: Option<bool>,
    /// pkarr/DNS discovery server URL.
    pub dns_server: Option<String>,
    /// mDNS off (`--no-mdns`).
    pub no_mdns: Option<bool>,
    /// Port mapping off (`--no-portmap`).
    pub no_portmap: Option<bool>,
    /// Local bind address.
    pub bind: Option<String>,
    /// Sender: session limit (0 = unlimited).
    pub max_sessions: Option<usize>,
    /// Sender: pinned receiver ids.
    pub allowed_peer: Option<Vec<String>>,
    /// Sender: file of pinned receiver ids, one per line.
    pub authorized_peers_file: Option<PathBuf>,
    /// UDP flow idle timeout, seconds.
    pub udp_idle_timeout: Option<u64>,
    /// Most UDP flows per session.
    pub max_udp_flows: Option<usize>,
    /// How long open TCP connections wait for a resume, seconds (0 = off).
    pub resume_window: Option<u64>,
    /// Resume buffer per TCP connection, MiB.
    pub resume_buffer: Option<u64>,
    /// QUIC idle timeout, seconds.
    pub idle_timeout: Option<u64>,
    /// Congestion controller: `bbr` or `cubic`.
    pub congestion: Option<String>,
    /// Longest drain on SIGTERM, seconds.
    pub drain_timeout: Option<u64>,
    /// The process's name (`peerport status NAME`).
    pub name: Option<String>,
    /// Control socket path.
    pub control_socket: Option<PathBuf>,
    /// Prometheus endpoint address.
    pub metrics: Option<String>,
    /// Dashboard address.
    pub dashboard: Option<String>,
    /// File with the dashboard's token.
    pub dashboard_token_file: Option<PathBuf>,
    /// How long one attempt to connect may take, seconds.
    pub connect_timeout: Option<u64>,
    /// Receiver: do not reconnect after a lost tunnel (`--no-reconnect`).
    pub no_reconnect: Option<bool>,
    /// Receiver: stop reconnecting after this many seconds without a tunnel (0 = never).
    pub give_up_after: Option<u64>,
    /// Receiver: how long a local TCP client waits for the tunnel, seconds.
    pub reconnect_wait: Option<u64>,
    /// Copy-paste modes: offer file (`-` = stdio).
    pub offer_file: Option<PathBuf>,
    /// Copy-paste modes: answer file (`-` = stdio).
    pub answer_file: Option<PathBuf>,
    /// STUN servers.
    pub stun_server: Option<Vec<String>>,
    /// STUN off (`--no-stun`).
    pub no_stun: Option<bool>,
    /// TURN servers (`turn:HOST:PORT`).
    pub turn_server: Option<Vec<String>>,
    /// TURN user.
    pub turn_user: Option<String>,
    /// File with the TURN password.
    pub turn_password_file: Option<PathBuf>,
    /// Nostr: file with our nsec.
    pub nsec_file: Option<PathBuf>,
    /// Nostr: the peer's npub.
    pub peer_npub: Option<String>,
    /// Nostr relays.
    pub relay: Option<Vec<String>>,
    /// Nostr event kind.
    pub nostr_kind: Option<u16>,
}

/// A sender's `[[service]]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceTable {
    /// The service's name (what receivers write before `=` in `--target`).
    pub name: String,
    /// Where its connections go: tcp://HOST:PORT or udp://HOST:PORT.
    pub source: String,
    /// Only these receiver ids may use it (mode iroh; absent: every
    /// receiver the sender admits).
    pub allowed_peer: Option<Vec<String>>,
    /// Start each TCP connection to the service with a PROXY protocol v2
    /// header, so it sees the receiver-side client's address.
    pub proxy_protocol: Option<bool>,
}

/// A string or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    }))
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// File unreadable.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML or unknown key.
    #[error("config file {path}: {message}")]
    Parse {
        /// Path.
        path: String,
        /// Parser message (names the key).
        message: String,
    },
    /// role/mode mismatch or foreign key.
    #[error("config file {path}: {message}")]
    Mismatch {
        /// Path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Missing or invalid setting after merging.
    #[error("{0}")]
    Invalid(String),
}

/// Parse a config file's text; an error says where (line and column).
pub fn parse(path: &str, text: &str) -> Result<Partial, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {col}: ")
            })
            .unwrap_or_default();
        ConfigError::Parse {
            path: path.to_string(),
            message: format!("{at}{}", e.message().trim_end()),
        }
    })
}

/// Read and parse a config file.
pub fn load(path: &Path) -> Result<Partial, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&path.display().to_string(), &text)
}

/// `~/.config/peerport/<role>.toml` (honouring `XDG_CONFIG_HOME`).
pub fn default_path(role: Role) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(
        base.join("peerport")
            .join(format!("{}.toml", role.as_str())),
    )
}

/// Whether a setting (by its key) applies to `role` in `mode`.
pub fn key_applies(key: &str, role: Role, mode: Mode) -> bool {
    use Mode::*;
    let sender = role == Role::Sender;
    match key {
        "role"
        | "mode"
        | "bind"
        | "idle-timeout"
        | "congestion"
        | "udp-idle-timeout"
        | "max-udp-flows"
        | "resume-window"
        | "resume-buffer"
        | "drain-timeout"
        | "name"
        | "control-socket"
        | "metrics"
        | "dashboard"
        | "dashboard-token-file" => true,
        "source" | "max-sessions" | "allow" | "service" => sender,
        "target" | "no-reconnect" | "give-up-after" | "reconnect-wait" => !sender,
        "connect-timeout" => true,
        "node-id" => !sender && mode == Iroh,
        "allowed-peer" | "authorized-peers-file" => sender && mode == Iroh,
        "secret-file" | "relay-url" | "relay-quic-port" | "relay-ca" | "dns-server" | "no-mdns" => {
            mode == Iroh
        }
        "relay-only" => mode != IrohManual,
        "no-portmap" => true,
        "offer-file" | "answer-file" => matches!(mode, IrohManual | Ice),
        "stun-server" | "no-stun" => mode != Iroh,
        "turn-server" | "turn-user" | "turn-password-file" => matches!(mode, Ice | Nostr),
        "nsec-file" | "peer-npub" | "relay" | "nostr-kind" => mode == Nostr,
        _ => false,
    }
}

/// The keys a file or command line sets.
pub fn keys_set(p: &Partial) -> Vec<String> {
    match serde_json::to_value(p) {
        Ok(serde_json::Value::Object(m)) => m
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k)
            .collect(),
        _ => Vec::new(),
    }
}

/// Check that a file is meant for this command: `role` and `mode` match and
/// every key it sets belongs to this role and mode.
pub fn check_file(path: &str, file: &Partial, role: Role, mode: Mode) -> Result<(), ConfigError> {
    let mismatch = |message: String| ConfigError::Mismatch {
        path: path.to_string(),
        message,
    };
    if let Some(r) = &file.role {
        if r != role.as_str() {
            return Err(mismatch(format!(
                "role = \"{r}\" but this is the `{}` command: use a {} config file",
                role.as_str(),
                role.as_str()
            )));
        }
    }
    if let Some(m) = &file.mode {
        let got: Mode = m.parse().map_err(|e| mismatch(format!("{e}")))?;
        if mode != got {
            return Err(mismatch(format!(
                "mode = \"{m}\" but the command runs mode `{mode}`"
            )));
        }
    }
    if let Some(key) = keys_set(file)
        .into_iter()
        .find(|k| !key_applies(k, role, mode))
    {
        return Err(mismatch(format!(
            "key `{key}` is not a setting of the {} in mode {mode}: remove it (or use the config file of the right role and mode)",
            role.as_str()
        )));
    }
    Ok(())
}

/// The precedence rule: each setting on the command line wins over the file.
pub fn overlay(file: Partial, cli: Partial) -> Partial {
    macro_rules! pick {
        ($($f:ident),*) => { Partial { $($f: cli.$f.or(file.$f),)* } };
    }
    pick!(
        role,
        mode,
        source,
        target,
        allow,
        service,
        node_id,
        secret_file,
        relay_url,
        relay_quic_port,
        relay_ca,
        relay_only,
        dns_server,
        no_mdns,
        no_portmap,
        bind,
        max_sessions,
        allowed_peer,
        authorized_peers_file,
        udp_idle_timeout,
        max_udp_flows,
        resume_window,
        resume_buffer,
        idle_timeout,
        congestion,
        drain_timeout,
        name,
        control_socket,
        metrics,
        dashboard,
        dashboard_token_file,
        connect_timeout,
        no_reconnect,
        give_up_after,
        reconnect_wait,
        offer_file,
        answer_file,
        stun_server,
        no_stun,
        turn_server,
        turn_user,
        turn_password_file,
        nsec_file,
        peer_npub,
        relay,
        nostr_kind
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_wins_file_fills_gaps() {
        let file = parse(
            "f",
            r#"
            role = "sender"
            mode = "iroh"
            source = "tcp://127.0.0.1:22"
            relay-url = ["http://a"]
            max-sessions = 3
            no-mdns = true
            "#,
        )
        .unwrap();
        let cli = Partial {
            source: Some(vec!["tcp://127.0.0.1:2200".into()]),
            max_sessions: Some(5),
            ..Default::default()
        };
        let m = overlay(file, cli);
        assert_eq!(m.source, Some(vec!["tcp://127.0.0.1:2200".to_string()]));
        assert_eq!(m.relay_url, Some(vec!["http://a".to_string()]));
        assert_eq!(m.max_sessions, Some(5));
        assert_eq!(m.no_mdns, Some(true));
    }

    #[test]
    fn parse_errors_give_line_and_column() {
        let e = parse("f", "source = \"tcp://x:1\"\nmax-sessions = \"ten\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2, column 16"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("f", "sorce = \"tcp://x:1\"").unwrap_err().to_string();
        assert!(e.contains("sorce"), "{e}");
    }

    #[test]
    fn role_and_mode_checked() {
        let f = parse("f", "role = \"receiver\"").unwrap();
        assert!(check_file("f", &f, Role::Sender, Mode::Iroh).is_err());
        assert!(check_file("f", &f, Role::Receiver, Mode::Iroh).is_ok());
        let f = parse("f", "mode = \"iroh-default\"").unwrap();
        assert!(check_file("f", &f, Role::Sender, Mode::Iroh).is_ok());
        let f = parse("f", "mode = \"nostr\"").unwrap();
        assert!(check_file("f", &f, Role::Sender, Mode::Iroh).is_err());
        let f = parse("f", "target = \"tcp://x:1\"").unwrap();
        let e = check_file("f", &f, Role::Sender, Mode::Iroh)
            .unwrap_err()
            .to_string();
        assert!(e.contains("target"), "{e}");
        // a key of another mode is an error, not silently ignored
        let f = parse("f", "nsec-file = \"k\"").unwrap();
        let e = check_file("f", &f, Role::Sender, Mode::Iroh)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nsec-file") && e.contains("iroh"), "{e}");
        assert!(check_file("f", &f, Role::Receiver, Mode::Nostr).is_ok());
    }

    #[test]
    fn every_key_has_a_scope() {
        // a key the scope table does not know would be refused everywhere
        let all = Partial {
            role: Some("sender".into()),
            ..Default::default()
        };
        let mut keys = keys_set(&all);
        let json = serde_json::to_value(Partial::default()).unwrap();
        keys.extend(json.as_object().unwrap().keys().cloned());
        for k in keys {
            let anywhere = [Role::Sender, Role::Receiver].iter().any(|r| {
                [Mode::Iroh, Mode::IrohManual, Mode::Ice, Mode::Nostr]
                    .iter()
                    .any(|m| key_applies(&k, *r, *m))
            });
            assert!(anywhere, "key `{k}` applies nowhere");
        }
    }
}
