//! Command-line definitions (clap). The flags of `peerport sender MODE`
//! and `peerport receiver MODE` come from the settings table
//! ([`crate::settings::SETTINGS`]): [`TunnelCommand`] builds each role's
//! mode subcommands from it and reads them back into a [`Partial`], so the
//! command line and config files merge by one rule.

use std::{net::IpAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use peerport_signaling::Mode;

use crate::settings::{self, file::ConfigArgs, Partial, Role};

/// peerport: forward TCP and UDP ports between two hosts behind NAT, over QUIC.
#[derive(Debug, Parser)]
#[command(name = "peerport", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log lines as text, or as JSON objects (one per line, for log
    /// shippers; progress lines become log events too).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `peerport config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print (or write) a commented example config for a role and mode:
    /// every setting with its flag's help, the required ones filled in.
    Init {
        /// sender or receiver.
        #[arg(long, value_parser = ["sender", "receiver"])]
        role: String,
        /// iroh, iroh-manual, ice or nostr.
        #[arg(long)]
        mode: Mode,
        /// Write to FILE instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite an existing FILE.
        #[arg(long)]
        force: bool,
    },
    /// Check a config file as `peerport run -c FILE` would read it, without
    /// starting anything.
    Check {
        /// The config file.
        file: PathBuf,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sender or receiver a config file describes (its `role` and
    /// `mode` keys say which): for services (contrib/systemd).
    Run {
        /// The config file.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
        /// The process's name for `peerport status NAME` (wins over the
        /// file's `name`; the systemd template passes its instance).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Write an example config file, or check one without starting.
    Config {
        /// What to do.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Show what running senders and receivers are doing: sessions, path
    /// (direct or relay), RTT, throughput, streams (like `wg show`).
    Status {
        /// The process started with --name NAME (default: every one running).
        name: Option<String>,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
        /// Refresh every SECS seconds until Ctrl-C.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<f64>,
        /// Ask the process on this control socket.
        #[arg(long, value_name = "PATH")]
        control_socket: Option<PathBuf>,
    },
    /// Share a port, the short way: `peerport share 22` runs `peerport
    /// sender iroh --source tcp://127.0.0.1:22` with an identity kept in
    /// ~/.local/share/peerport/share.key (created on first use), so the
    /// ticket it prints stays the same. The other side runs `peerport
    /// connect`.
    Share {
        /// The port on 127.0.0.1 to share, or tcp://HOST:PORT, udp://HOST:PORT.
        what: String,
        /// Self-hosted rendezvous servers: the file `peerport rendezvous`
        /// writes, or NAME for ~/.config/peerport/networks/NAME.toml.
        #[arg(long, value_name = "FILE|NAME")]
        network: Option<String>,
        /// The process's name for `peerport status NAME`.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Reach what `peerport share` shares: `peerport connect TICKET 2222`
    /// listens on 127.0.0.1:2222 (`peerport receiver iroh`). Without the
    /// TICKET it takes PEERPORT_TICKET, or asks for it on the terminal,
    /// which keeps it out of `ps`.
    Connect {
        /// [TICKET] [LOCAL]: the ticket `peerport share` printed (ppt1...),
        /// and the local port on 127.0.0.1 (or tcp://HOST:PORT,
        /// udp://HOST:PORT) to listen on [default: a free port].
        #[arg(num_args = 0..=2, value_name = "TICKET LOCAL")]
        args: Vec<String>,
        /// Self-hosted rendezvous servers: the file `peerport rendezvous`
        /// writes, or NAME for ~/.config/peerport/networks/NAME.toml.
        #[arg(long, value_name = "FILE|NAME")]
        network: Option<String>,
        /// The process's name for `peerport status NAME`.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Run next to the service and let receivers reach it.
    Sender {
        /// Signaling mode and its flags.
        #[command(subcommand)]
        mode: TunnelCommand<AsSender>,
    },
    /// Run next to the client and listen locally.
    Receiver {
        /// Signaling mode and its flags.
        #[command(subcommand)]
        mode: TunnelCommand<AsReceiver>,
    },
    /// Create a persistent identity (secret key file, mode 0600).
    GenerateSecret {
        /// Where to write the key.
        #[arg(long, short)]
        output: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the endpoint id and ticket of a secret key file.
    ShowId {
        /// The key file.
        #[arg(long)]
        secret_file: PathBuf,
        /// The sender's network (FILE or NAME, as given to it): the ticket
        /// then names its relays, as the sender's own does.
        #[arg(long, value_name = "FILE|NAME")]
        network: Option<String>,
    },
    /// Run a real tunnel on this machine with embedded relay and discovery
    /// servers, move TCP and UDP traffic through it and print a summary.
    Demo {
        /// Megabytes to move through each TCP tunnel.
        #[arg(long, default_value_t = 32)]
        megabytes: usize,
    },
    /// Create a Nostr key: the nsec is written 0600 (or printed), the npub printed.
    GenerateNostrKey {
        /// Where to write the nsec.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print the npub of a Nostr secret key (from --nsec-file or PEERPORT_NSEC).
    ShowNpub {
        /// File holding the nsec (hex or bech32).
        #[arg(long)]
        nsec_file: Option<PathBuf>,
    },
    /// Probe this network: public address, NAT type, STUN/TURN/relay reachability, per-mode verdict.
    Netcheck {
        /// STUN server HOST:PORT (repeatable; give two to tell cone from symmetric NATs).
        #[arg(long = "stun-server", value_name = "HOST:PORT")]
        stun_server: Vec<String>,
        /// iroh relay URL to check (repeatable).
        #[arg(long = "relay-url", value_name = "URL")]
        relay_url: Vec<String>,
        /// UDP port of the relays' QUIC address discovery (0 = skip that check).
        #[arg(long, value_name = "PORT", default_value_t = 7842)]
        relay_quic_port: u16,
        /// PEM file of extra CA certificates trusted for the relays.
        #[arg(long, value_name = "FILE")]
        relay_ca: Option<PathBuf>,
        /// Nostr relay URL to check (repeatable).
        #[arg(long = "relay", value_name = "wss://...")]
        relay: Vec<String>,
        /// Local UDP address to probe from.
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        #[allow(missing_docs)]
        turn: TurnFlags,
    },
    /// Run the embedded relay and discovery servers (for labs and tests).
    Rendezvous {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        /// Keep ports, certificate and TURN password in this directory, so
        /// that a restart comes back exactly where clients expect it.
        #[arg(long, value_name = "DIR")]
        state: Option<std::path::PathBuf>,
    },
}

/// `peerport sender MODE ...` or `peerport receiver MODE ...`: the mode,
/// the settings its flags give, and the config-file flags. The flags of
/// each role and mode come from the settings table.
#[derive(Debug, Clone)]
pub struct TunnelCommand<R> {
    /// The mode (the subcommand).
    pub mode: Mode,
    /// What the flags set.
    pub partial: Partial,
    /// `-c FILE` / `--default-config`.
    pub config: ConfigArgs,
    role: std::marker::PhantomData<R>,
}

/// A role as a type, for [`TunnelCommand`].
pub trait RoleType {
    /// The role.
    const ROLE: Role;
}

/// `peerport sender`.
#[derive(Debug, Clone)]
pub enum AsSender {}
/// `peerport receiver`.
#[derive(Debug, Clone)]
pub enum AsReceiver {}

impl RoleType for AsSender {
    const ROLE: Role = Role::Sender;
}
impl RoleType for AsReceiver {
    const ROLE: Role = Role::Receiver;
}

/// The one-line help of each mode's subcommand.
fn mode_about(mode: Mode) -> &'static str {
    match mode {
        Mode::Iroh => "iroh discovery, hole punching and relay fallback",
        Mode::IrohManual => "iroh QUIC, paired by copy-pasting offer/answer blobs; no servers",
        Mode::Ice => "Full ICE + quinn, paired by copy-paste, TURN fallback",
        Mode::Nostr => "Automatic pairing by Nostr keys over relays, then ICE + quinn",
    }
}

impl<R: RoleType> clap::FromArgMatches for TunnelCommand<R> {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let (name, sub) = m
            .subcommand()
            .ok_or_else(|| clap::Error::new(clap::error::ErrorKind::MissingSubcommand))?;
        let mode: Mode = name
            .parse()
            .map_err(|_| clap::Error::new(clap::error::ErrorKind::InvalidSubcommand))?;
        Ok(TunnelCommand {
            mode,
            partial: Partial::from_matches(sub, |field| settings::applies(field, R::ROLE, mode)),
            config: ConfigArgs::from_arg_matches(sub)?,
            role: std::marker::PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl<R: RoleType> clap::Subcommand for TunnelCommand<R> {
    fn augment_subcommands(mut cmd: clap::Command) -> clap::Command {
        for mode in Mode::ALL {
            let flags = clap::Command::new(mode.as_str())
                .args(Partial::args(|s| s.scope.applies(R::ROLE, mode)));
            // the about text last: the config-file flags' group sets its own
            let mut sub = ConfigArgs::augment_args(flags).about(mode_about(mode));
            if let Some(alias) = mode.alias() {
                sub = sub.alias(alias);
            }
            cmd = cmd.subcommand(sub);
        }
        cmd.subcommand_required(true)
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_subcommands(cmd)
    }

    fn has_subcommand(name: &str) -> bool {
        Mode::ALL
            .iter()
            .any(|m| m.as_str() == name || m.alias() == Some(name))
    }
}

/// `peerport sender --source ...` with no mode: clap would only call the
/// first flag unexpected. Returns the message that says the mode is
/// missing, lists the modes and shows the command with one; `None` for
/// any other error. `args` is the whole command line, program first.
pub fn missing_mode(args: &[String], e: &clap::Error) -> Option<String> {
    if e.kind() != clap::error::ErrorKind::UnknownArgument {
        return None;
    }
    // the words without the global flags (-v, --verbose, --log-format X)
    let mut words: Vec<&str> = Vec::new();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let verbose = a == "--verbose"
            || (a.len() > 1 && a.starts_with('-') && a[1..].bytes().all(|b| b == b'v'));
        if a == "--log-format" {
            it.next();
        } else if !verbose && !a.starts_with("--log-format=") {
            words.push(a);
        }
    }
    let role = *words.first()?;
    if !["sender", "receiver"].contains(&role) {
        return None;
    }
    let first = words.get(1)?;
    if !first.starts_with('-') || ["-h", "--help", "-V", "--version"].contains(first) {
        return None;
    }
    let shell = |w: &str| {
        let plain = !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
        if plain {
            w.to_string()
        } else {
            format!("'{}'", w.replace('\'', r"'\''"))
        }
    };
    let flags: Vec<String> = words[1..].iter().map(|w| shell(w)).collect();
    let modes: Vec<String> = Mode::ALL
        .iter()
        .map(|m| format!("  {:<12} {}", m.as_str(), mode_about(*m)))
        .collect();
    Some(format!(
        "`peerport {role}` needs a mode before its flags, e.g.\n  peerport {role} iroh {}\nthe modes:\n{}\n(`peerport {role} MODE --help` lists a mode's flags)",
        flags.join(" "),
        modes.join("\n")
    ))
}

/// The TURN flags of `peerport netcheck`: the settings table's, so their
/// names and help are those of `sender ice`.
#[derive(Debug, Clone, Default)]
pub struct TurnFlags {
    /// What they set.
    pub partial: Partial,
}

/// The settings [`TurnFlags`] has.
const TURN_FIELDS: [&str; 4] = [
    "turn_server",
    "turn_user",
    "turn_password_file",
    "relay_only",
];

impl clap::FromArgMatches for TurnFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(TurnFlags {
            partial: Partial::from_matches(m, |f| TURN_FIELDS.contains(&f)),
        })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for TurnFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.args(Partial::args(|s| TURN_FIELDS.contains(&s.field)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_commands_are_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_and_aliases_parse_into_settings() {
        let cli = Cli::try_parse_from([
            "peerport",
            "receiver",
            "iroh-default",
            "-t",
            "tcp://127.0.0.1:1",
            "--ticket",
            "T",
            "--no-mdns",
            "--relay-url",
            "http://a",
            "--relay-url",
            "http://b",
            "--idle-timeout",
            "15",
            "--keepalive",
            "5",
        ])
        .unwrap();
        let Command::Receiver { mode } = cli.command else {
            panic!("a receiver")
        };
        assert_eq!(mode.mode, Mode::Iroh);
        let p = mode.partial;
        assert_eq!(p.target, Some(vec!["tcp://127.0.0.1:1".to_string()]));
        assert_eq!(p.node_id.as_deref(), Some("T"));
        assert_eq!(p.no_mdns, Some(true));
        assert_eq!(p.relay_url.map(|v| v.len()), Some(2));
        assert_eq!(p.idle_timeout, Some(crate::settings::declare::Secs(15)));
        assert_eq!(p.keepalive, Some(crate::settings::declare::Secs(5)));
        assert_eq!(p.no_reconnect, None);
        // a flag of another mode is refused, as before
        assert!(Cli::try_parse_from(["peerport", "sender", "ice", "--no-mdns"]).is_err());
        assert!(Cli::try_parse_from(["peerport", "sender", "custom", "-s", "tcp://x:1"]).is_ok());
    }

    /// The message for a command line, if it lacks a mode.
    fn missing(line: &[&str]) -> Option<String> {
        let args: Vec<String> = line.iter().map(|s| s.to_string()).collect();
        let e = Cli::try_parse_from(&args).expect_err("a bad command line");
        missing_mode(&args, &e)
    }

    #[test]
    fn a_missing_mode_is_named_with_the_modes_and_an_example() {
        let m = missing(&["peerport", "receiver", "--node-id", "X"]).unwrap();
        assert!(
            m.contains("`peerport receiver` needs a mode")
                && m.contains("peerport receiver iroh --node-id X\n"),
            "{m}"
        );
        for mode in Mode::ALL {
            assert!(m.contains(&format!("\n  {mode} ")), "{m}");
        }
        let m = missing(&[
            "peerport",
            "-v",
            "--log-format",
            "json",
            "sender",
            "--source",
            "tcp://127.0.0.1:22",
            "--name",
            "a b",
        ])
        .unwrap();
        assert!(
            m.contains("peerport sender iroh --source tcp://127.0.0.1:22 --name 'a b'\n"),
            "{m}"
        );
        // other mistakes keep clap's own message
        assert_eq!(missing(&["peerport", "sender", "iroh", "--bogus"]), None);
        assert_eq!(missing(&["peerport", "sender", "iorh"]), None);
        assert_eq!(missing(&["peerport", "status", "--bogus"]), None);
        assert_eq!(missing(&["peerport", "sender"]), None);
    }
}
