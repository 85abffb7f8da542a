//! Settings: the table that declares each one once ([`table`], with the
//! machinery in [`declare`]), config files ([`file`]), the `config init`
//! template ([`template`]), and the validation of merged [`Partial`]
//! settings into typed [`Settings`], with errors that say which flag or key
//! to fix ([`validate`]).

pub mod declare;
pub mod file;
mod modes;
pub mod network;
mod table;
pub mod template;
mod validate;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use peerport_signaling::Mode;

pub use declare::{
    applies, Role, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRAIN_TIMEOUT, DEFAULT_RECONNECT_WAIT,
};
pub use file::ConfigError;
pub use modes::{ModeSettings, ModeVisitor};
pub use table::{Partial, SETTINGS};
pub use validate::{read_nsec, turn_servers, TICKET_ENV};

pub use peerport::sender::DEFAULT_MAX_SESSIONS;

use declare::Secs;
use file::ConfigArgs;
use peerport::{
    addr::TargetSpec, engine::policy::Catalog, engine::EngineConfig, receiver::Reconnect,
    transport::QuicSettings,
};
use validate::{catalog, engine, invalid, observe, secs, targets};

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
    /// Started by `peerport share` or `connect`: the hints name those.
    pub short_verbs: bool,
    /// The `--network` given (the other side needs the same).
    pub network: Option<String>,
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
    /// Silence after which status calls a session stale: the keep-alive
    /// interval plus a second.
    pub stale_after: std::time::Duration,
}

/// What the copy-paste and ICE modes share, before it becomes a mode's
/// settings (`iroh-manual`, `ice`, `nostr`).
#[derive(Debug, Clone)]
pub(super) struct PathSettings {
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
    /// Punch through a symmetric NAT (ICE modes).
    pub punch: bool,
}

impl PathSettings {
    /// The ICE path of the `ice` and `nostr` modes.
    pub fn ice_path(&self) -> peerport::modes::ice::IcePath {
        peerport::modes::ice::IcePath {
            bind: self.bind,
            stun_servers: self.stun_servers.clone(),
            turn_servers: self.turn_servers.clone(),
            relay_only: self.relay_only,
            punch: self.punch,
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

    /// A copy-paste mode over `path`, with this side's blob files.
    pub fn manual<P>(&self, path: P) -> peerport::modes::ManualMode<P> {
        peerport::modes::ManualMode {
            path,
            offer_file: self.offer_file.clone(),
            answer_file: self.answer_file.clone(),
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
        (None, true) => Some(
            file::default_path(role).ok_or_else(|| ConfigError::Invalid {
                key: Some("default-config"),
                reason: "--default-config: neither XDG_CONFIG_HOME nor HOME is set".into(),
            })?,
        ),
        (None, false) => None,
    };
    let file = match path {
        Some(p) => {
            let f = file::load(&p)?;
            file::check_file(&p.display().to_string(), &f, role, mode)?;
            f
        }
        None => Partial::default(),
    };
    with_network(Partial::overlay(file, cli), role, mode)
}

/// Fill in what a `--network` (or `network = ...` in the file) describes
/// and neither the command line nor the file set.
pub fn with_network(p: Partial, role: Role, mode: Mode) -> Result<Partial, ConfigError> {
    match p.network.as_deref() {
        Some(n) => {
            let net = network::load(&network::path_of(n)?)?;
            Ok(Partial::overlay(network::for_command(net, role, mode), p))
        }
        None => Ok(p),
    }
}

/// A sender's iroh options from `--network` alone (`show-id`: the ticket
/// names the network's relays, as the sender's does).
pub fn network_iroh_options(
    network: Option<String>,
) -> Result<peerport::modes::iroh::IrohOptions, ConfigError> {
    let p = Partial {
        network,
        ..Default::default()
    };
    validate::iroh_options(&with_network(p, Role::Sender, Mode::Iroh)?)
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
            return Err(invalid(
                "connect-timeout",
                "--connect-timeout must be at least 1 second",
            ));
        }
        let reconnect = Reconnect {
            enabled: p.no_reconnect != Some(true),
            give_up_after: p.give_up_after.filter(|s| s.0 > 0).map(Secs::duration),
            // a sender silent for longer than its keep-alives allow gets a
            // replacement connection dialed (status calls it stale then)
            silence_limit: Some(validate::stale_after(&p)),
            ..Reconnect::default()
        };
        let mode_settings = ModeSettings::build(mode, &p, role, connect_timeout)?;
        Ok(Settings {
            catalog,
            targets,
            engine: engine(&p)?,
            max_sessions: p.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS),
            reconnect,
            reconnect_wait: secs(p.reconnect_wait, DEFAULT_RECONNECT_WAIT),
            connect_timeout,
            drain_timeout: secs(p.drain_timeout, DEFAULT_DRAIN_TIMEOUT),
            mode: mode_settings,
            observe: observe(&p)?,
            short_verbs: false,
            network: p.network.clone(),
        })
    }
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
        let file = file::parse(
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
        let pinned = file::parse(
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
    fn keepalive_reaches_every_mode_and_stays_under_the_idle_timeout() {
        let p = Partial {
            target: Some(vec!["tcp://127.0.0.1:0".into()]),
            keepalive: Some(Secs(5)),
            ..Default::default()
        };
        let quic = |s: Settings| match s.mode {
            ModeSettings::Iroh(i) => i.options.quic,
            ModeSettings::IrohManual(m) => m.path.quic,
            ModeSettings::Ice(m) => m.path.quic,
            ModeSettings::Nostr(n) => n.ice.quic,
        };
        for mode in [Mode::Iroh, Mode::IrohManual, Mode::Ice] {
            let s = Settings::from_partial(
                Partial {
                    node_id: (mode == Mode::Iroh)
                        .then(|| "ppt1aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into()),
                    ..p.clone()
                },
                Role::Receiver,
                mode,
            );
            if mode == Mode::Iroh {
                // the ticket above is not a real one; the sender has none
                let s = Settings::from_partial(
                    Partial {
                        source: Some(vec!["tcp://127.0.0.1:22".into()]),
                        keepalive: Some(Secs(5)),
                        ..Default::default()
                    },
                    Role::Sender,
                    mode,
                )
                .unwrap();
                assert_eq!(quic(s).keep_alive(), Duration::from_secs(5));
                continue;
            }
            assert_eq!(
                quic(s.unwrap()).keep_alive(),
                Duration::from_secs(5),
                "{mode}"
            );
        }
        for (keepalive, idle) in [(0, None), (30, None), (10, Some(10))] {
            let e = Settings::from_partial(
                Partial {
                    keepalive: Some(Secs(keepalive)),
                    idle_timeout: idle.map(Secs),
                    ..p.clone()
                },
                Role::Receiver,
                Mode::Ice,
            )
            .unwrap_err();
            assert!(e.to_string().contains("--keepalive"), "{e}");
        }
    }

    #[test]
    fn stream_window_sets_both_windows_within_bounds() {
        let p = |w: u64| Partial {
            target: Some(vec!["tcp://127.0.0.1:0".into()]),
            stream_window: Some(w),
            ..Default::default()
        };
        let s = Settings::from_partial(p(4 << 20), Role::Receiver, Mode::Ice).unwrap();
        let ModeSettings::Ice(path) = s.mode else {
            panic!("ice settings")
        };
        assert_eq!(path.path.quic.windows, Some((4 << 20, 16 << 20)));
        for bad in [1000, 2 << 30] {
            let e = Settings::from_partial(p(bad), Role::Receiver, Mode::Ice).unwrap_err();
            assert!(e.to_string().contains("--stream-window"), "{e}");
        }
    }

    #[test]
    fn invalid_settings_name_their_key() {
        let e = Settings::from_partial(
            Partial {
                target: Some(vec!["tcp://127.0.0.1:0".into()]),
                connect_timeout: Some(Secs(0)),
                ..Default::default()
            },
            Role::Receiver,
            Mode::Ice,
        )
        .unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { key: Some("connect-timeout"), reason } if reason.contains("--connect-timeout")),
            "{e:?}"
        );
        let e = sender(Partial::default()).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Invalid {
                    key: Some("source"),
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_dashboard_token_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "0123456789abcdef0123\n").unwrap();
        let p = Partial {
            target: Some(vec!["tcp://127.0.0.1:0".into()]),
            dashboard: Some("127.0.0.1:0".into()),
            dashboard_token_file: Some(f.clone()),
            ..Default::default()
        };
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Settings::from_partial(p.clone(), Role::Receiver, Mode::Ice).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { key: Some("dashboard-token-file"), reason } if reason.contains("chmod 600")),
            "{e}"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = Settings::from_partial(p, Role::Receiver, Mode::Ice).unwrap();
        assert_eq!(
            s.observe.dashboard_token.as_deref(),
            Some("0123456789abcdef0123")
        );
    }

    #[test]
    fn reconnect_policy_from_flags() {
        let p = Partial {
            target: Some(vec!["tcp://127.0.0.1:0".into()]),
            no_reconnect: Some(true),
            give_up_after: Some(Secs(90)),
            reconnect_wait: Some(Secs(3)),
            ..Default::default()
        };
        let s = Settings::from_partial(p, Role::Receiver, Mode::Ice).unwrap();
        assert!(!s.reconnect.enabled);
        assert_eq!(s.reconnect.give_up_after, Some(Duration::from_secs(90)));
        assert_eq!(s.reconnect_wait, Duration::from_secs(3));
    }
}
