//! The commands behind the binary: each reads settings, runs the library,
//! and turns failures into messages that say what to do.

use anyhow::{Context, Result};
use iroh::SecretKey;

use crate::{
    cli::{Cli, Command},
    observe::Progress,
    out,
    settings::Role,
    settings::{self, Settings},
};
use peerport::{identity, modes::iroh as iroh_mode};
use peerport_rendezvous::Rendezvous;

pub mod exit;
mod signals;
mod tunnel;
mod verbs;

pub use exit::{exit_code, render_error};
pub use signals::{shutdown_signal, stop_signal};
use tunnel::{run_receiver, run_sender};

/// Re-reads the settings from the config file (SIGHUP).
pub(crate) type Reload = Box<dyn Fn() -> Result<Settings, settings::ConfigError> + Send + Sync>;

/// Run a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let progress = match cli.log_format {
        crate::cli::LogFormat::Json => Progress::Log,
        crate::cli::LogFormat::Text => Progress::Terminal,
    };
    match cli.command {
        Command::Sender { mode: cmd } => {
            let (mode, partial, cfg) = (cmd.mode, cmd.partial, cmd.config);
            let s = settings::load(partial.clone(), &cfg, Role::Sender, mode)?;
            let reload: Option<Reload> = (cfg.config.is_some() || cfg.default_config).then(|| {
                Box::new(move || settings::load(partial.clone(), &cfg, Role::Sender, mode))
                    as Reload
            });
            run_sender(s, progress, reload).await
        }
        Command::Receiver { mode: cmd } => {
            let s = settings::load(cmd.partial, &cmd.config, Role::Receiver, cmd.mode)?;
            run_receiver(s, progress).await
        }
        Command::Status {
            name,
            json,
            watch,
            control_socket,
        } => status_command(name, json, watch, control_socket).await,
        Command::Share {
            what,
            network,
            name,
        } => {
            let s = verbs::share(&what, network, name)?;
            run_sender(s, progress, None).await
        }
        Command::Connect {
            args,
            network,
            name,
        } => {
            let s = verbs::connect(args, network, name).await?;
            run_receiver(s, progress).await
        }
        Command::Run { config, name } => {
            let (role, mode, s) = from_file(&config, name.clone())?;
            match role {
                Role::Sender => {
                    let reload: Reload = Box::new(move || {
                        let (r, m, s) = from_file(&config, name.clone())?;
                        if (r, m) != (role, mode) {
                            return Err(settings::ConfigError::Invalid {
                                key: None,
                                reason: "role or mode changed in the file: restart the process to apply that".into(),
                            });
                        }
                        Ok(s)
                    });
                    run_sender(s, progress, Some(reload)).await
                }
                Role::Receiver => run_receiver(s, progress).await,
            }
        }
        Command::Config { action } => config_command(action),
        Command::GenerateSecret { output, force } => {
            let key = SecretKey::generate();
            identity::write(&output, &key, force)?;
            crate::out::say!("wrote a new secret key to {} (mode 0600)", output.display());
            print_identity(&key, None)
        }
        Command::ShowId {
            secret_file,
            network,
        } => {
            let key = identity::load(&secret_file)?;
            print_identity(&key, network)
        }
        Command::GenerateNostrKey { output, force } => {
            let (nsec, npub) = peerport_signaling::nostr::generate();
            match output {
                Some(path) => {
                    identity::write_private(&path, &nsec, force)?;
                    crate::out::say!(
                        "wrote a new Nostr secret key to {} (mode 0600)",
                        path.display()
                    );
                }
                None => out::println(&nsec)?,
            }
            out::println(npub)
        }
        Command::ShowNpub { nsec_file } => {
            let hex = settings::read_nsec(nsec_file.as_ref())?;
            out::println(peerport_signaling::nostr::npub_of(&hex)?)
        }
        Command::Netcheck {
            stun_server,
            relay_url,
            relay_quic_port,
            relay_ca,
            relay,
            bind,
            json,
            turn,
        } => {
            let partial = turn.partial;
            let probe = peerport::netcheck::Probe {
                bind: bind
                    .map(|b| b.parse())
                    .transpose()
                    .context("--bind must be IP:PORT")?,
                stun_servers: if stun_server.is_empty() {
                    peerport::stun::DEFAULT_STUN_SERVERS
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                } else {
                    stun_server
                },
                turn_servers: settings::turn_servers(&partial)?,
                relay_urls: relay_url,
                relay_quic_port,
                relay_ca: match relay_ca {
                    Some(f) => crate::tlsfile::load_certs(&f)
                        .map_err(|e| anyhow::anyhow!("--relay-ca: {e}"))?,
                    None => Vec::new(),
                },
                nostr_relays: relay,
            };
            let report = peerport::netcheck::run(&probe).await?;
            if json {
                out::println(serde_json::to_string_pretty(&report)?)
            } else {
                out::print(report.text())
            }
        }
        Command::Demo { megabytes } => crate::demo::run(megabytes).await,
        Command::Rendezvous { bind, state } => {
            let r = match state {
                Some(dir) => Rendezvous::start_in(bind, &dir).await?,
                None => Rendezvous::start(bind).await?,
            };
            let printed = out::print(format!(
                "relay-url {}\nrelay-quic-port {}\nrelay-ca {}\ndns-server {}\ndns-udp {}\n\
                 stun-server {}\nnostr-relay {}\nturn-server turn:{} user {} password {}\n",
                r.relay_url,
                r.relay_quic_port,
                r.relay_ca_file.display(),
                r.pkarr_url,
                r.dns_addr,
                r.turn_addr,
                r.nostr_url(),
                r.turn_addr,
                r.turn_user,
                r.turn_password
            ));
            if let Err(e) = printed {
                r.shutdown().await;
                return Err(e);
            }
            let network = match write_network(&r) {
                Ok(n) => n,
                Err(e) => {
                    r.shutdown().await;
                    return Err(e);
                }
            };
            if let Err(e) = out::print(format!("network {}\n", network.display())) {
                r.shutdown().await;
                return Err(e);
            }
            crate::out::say!(
                "embedded rendezvous servers running; Ctrl-C stops them\nsenders and receivers use them with: --network {}",
                network.display()
            );
            shutdown_signal().cancelled().await;
            r.shutdown().await;
            Ok(())
        }
    }
}

/// Write the network file of running rendezvous servers (and the TURN
/// password beside it, 0600) into their state directory; returns its path.
fn write_network(r: &Rendezvous) -> Result<std::path::PathBuf> {
    let dir = r
        .relay_ca_file
        .parent()
        .context("the rendezvous state directory")?;
    let password = dir.join("turn-password");
    identity::write_private(&password, &r.turn_password, true)?;
    let ca = r
        .relay_ca_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = settings::network::render(
        r.relay_url.as_str(),
        r.relay_quic_port,
        &ca,
        r.pkarr_url.as_str(),
        &r.turn_addr.to_string(),
        &r.turn_user,
        "turn-password",
        &r.nostr_url(),
    );
    let path = dir.join("network.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The endpoint id and the ticket a sender with this key prints (on
/// `network`: naming its relays).
fn print_identity(key: &SecretKey, network: Option<String>) -> Result<()> {
    let options = settings::network_iroh_options(network)?;
    out::print(format!(
        "endpoint-id {}\nticket {}\n",
        key.public(),
        iroh_mode::ticket_for(key, &options).encode()
    ))
}

/// `peerport status`: ask running processes, print text or JSON.
async fn status_command(
    name: Option<String>,
    json: bool,
    watch: Option<f64>,
    explicit: Option<std::path::PathBuf>,
) -> Result<()> {
    use crate::views::{control, text};
    let targets = control::targets(explicit.as_deref(), name.as_deref());
    let stop = shutdown_signal();
    loop {
        let all = control::query_all(&targets).await?;
        let shown = if json {
            let v = if all.len() == 1 && (name.is_some() || explicit.is_some()) {
                serde_json::to_string_pretty(&all[0])?
            } else {
                serde_json::to_string_pretty(&all)?
            };
            v + "\n"
        } else {
            all.iter().map(text::render).collect::<Vec<_>>().join("\n")
        };
        let Some(every) = watch else {
            return out::print(shown);
        };
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            // clear the screen and go home, like watch(1)
            out::print(format!("\x1b[H\x1b[2J{shown}"))?;
        } else {
            out::print(shown)?;
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(std::time::Duration::from_secs_f64(every.max(0.2))) => {}
        }
    }
}

/// The settings a config file for `peerport run -c` describes: its `role`
/// and `mode` keys say which command it is.
fn from_file(
    path: &std::path::Path,
    name: Option<String>,
) -> Result<(Role, peerport_signaling::Mode, Settings), settings::ConfigError> {
    use settings::ConfigError;
    let file = settings::file::load(path)?;
    let shown = path.display().to_string();
    let need = |what: &str, example: &str| {
        ConfigError::Mismatch {
        path: shown.clone(),
        message: format!("`peerport run` needs `{what}` in the file (e.g. {example}); `peerport config init` writes an example"),
    }
    };
    let role = match file.role.as_deref() {
        Some("sender") => Role::Sender,
        Some("receiver") => Role::Receiver,
        Some(other) => {
            return Err(ConfigError::Mismatch {
                path: shown,
                message: format!("role = \"{other}\": write \"sender\" or \"receiver\""),
            })
        }
        None => return Err(need("role", "role = \"sender\"")),
    };
    let mode: peerport_signaling::Mode = file
        .mode
        .as_deref()
        .ok_or_else(|| need("mode", "mode = \"iroh\""))?
        .parse()
        .map_err(|e| ConfigError::Mismatch {
            path: shown.clone(),
            message: format!("{e}"),
        })?;
    let cfg = settings::file::ConfigArgs {
        config: Some(path.to_owned()),
        default_config: false,
    };
    let cli = settings::Partial {
        name,
        ..Default::default()
    };
    let s = settings::load(cli, &cfg, role, mode)?;
    Ok((role, mode, s))
}

/// `peerport config init|check`.
fn config_command(action: crate::cli::ConfigAction) -> Result<()> {
    match action {
        crate::cli::ConfigAction::Init {
            role,
            mode,
            output,
            force,
        } => {
            let role = if role == "sender" {
                Role::Sender
            } else {
                Role::Receiver
            };
            let text = settings::template::render(role, mode);
            match output {
                None => out::print(text)?,
                Some(path) => {
                    if path.exists() && !force {
                        return Err(settings::ConfigError::Invalid {
                            key: None,
                            reason: format!(
                                "{} exists: pass --force to overwrite it",
                                path.display()
                            ),
                        }
                        .into());
                    }
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    crate::out::say!(
                        "wrote {}: fill in the required values, then `peerport config check {}`",
                        path.display(),
                        path.display()
                    );
                }
            }
            Ok(())
        }
        crate::cli::ConfigAction::Check { file } => {
            let (role, mode, s) = from_file(&file, None)?;
            out::println(format!(
                "{}: ok: a {} in mode {mode}, {} {}",
                file.display(),
                role.as_str(),
                if role == Role::Sender {
                    "forwarding"
                } else {
                    "listening on"
                },
                s.describe()
            ))
        }
    }
}
