//! Command-line definitions (clap). A sender or receiver command is the
//! role's shared flags ([`SenderArgs`], [`ReceiverArgs`]) plus one mode's
//! own ([`ModeFlags`]); every flag group converts into a [`Partial`]
//! ([`ToPartial`]) so the command line and config files merge by one rule.

use std::{net::IpAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use peerport_signaling::Mode;

use crate::config::{self, Partial};

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
    /// Run next to the service and let receivers reach it.
    Sender {
        /// Signaling mode.
        #[command(subcommand)]
        mode: SenderMode,
    },
    /// Run next to the client and listen locally.
    Receiver {
        /// Signaling mode.
        #[command(subcommand)]
        mode: ReceiverMode,
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
        ice: IceArgs,
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

/// Sender modes: the shared sender flags plus each mode's own.
#[derive(Debug, Subcommand)]
pub enum SenderMode {
    /// iroh discovery, hole punching and relay fallback.
    #[command(name = "iroh", alias = "iroh-default")]
    Iroh(SenderArgs<IrohSenderFlags>),
    /// iroh QUIC, paired by copy-pasting offer/answer blobs; no servers.
    #[command(name = "iroh-manual")]
    IrohManual(SenderArgs<IrohManualFlags>),
    /// Full ICE + quinn, paired by copy-paste, TURN fallback.
    #[command(name = "ice", alias = "custom")]
    Ice(SenderArgs<IceFlags>),
    /// Automatic pairing by Nostr keys over relays, then ICE + quinn.
    #[command(name = "nostr")]
    Nostr(SenderArgs<NostrFlags>),
}

/// Receiver modes: the shared receiver flags plus each mode's own.
#[derive(Debug, Subcommand)]
pub enum ReceiverMode {
    /// iroh discovery, hole punching and relay fallback.
    #[command(name = "iroh", alias = "iroh-default")]
    Iroh(ReceiverArgs<IrohReceiverFlags>),
    /// iroh QUIC, paired by copy-pasting offer/answer blobs; no servers.
    #[command(name = "iroh-manual")]
    IrohManual(ReceiverArgs<IrohManualFlags>),
    /// Full ICE + quinn, paired by copy-paste, TURN fallback.
    #[command(name = "ice", alias = "custom")]
    Ice(ReceiverArgs<IceFlags>),
    /// Automatic pairing by Nostr keys over relays, then ICE + quinn.
    #[command(name = "nostr")]
    Nostr(ReceiverArgs<NostrFlags>),
}

/// A group of flags that turns into the settings it gives.
pub trait ToPartial {
    /// The settings these flags give (unset flags stay `None`).
    fn partial(&self) -> Partial;
}

/// One mode's own flags.
pub trait ModeFlags: Args + ToPartial {
    /// The mode they belong to.
    const MODE: Mode;
}

impl SenderMode {
    /// The mode, its command-line settings and its config-file flags.
    pub fn parts(&self) -> (Mode, Partial, &ConfigArgs) {
        match self {
            SenderMode::Iroh(a) => a.parts(),
            SenderMode::IrohManual(a) => a.parts(),
            SenderMode::Ice(a) => a.parts(),
            SenderMode::Nostr(a) => a.parts(),
        }
    }
}

impl ReceiverMode {
    /// The mode, its command-line settings and its config-file flags.
    pub fn parts(&self) -> (Mode, Partial, &ConfigArgs) {
        match self {
            ReceiverMode::Iroh(a) => a.parts(),
            ReceiverMode::IrohManual(a) => a.parts(),
            ReceiverMode::Ice(a) => a.parts(),
            ReceiverMode::Nostr(a) => a.parts(),
        }
    }
}

/// Config-file selection, shared by every role and mode.
#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArgs {
    /// Read settings from this TOML file (command-line flags win).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Read ~/.config/peerport/sender.toml or receiver.toml.
    #[arg(long, conflicts_with = "config")]
    pub default_config: bool,
}

/// Tunnel flags of every mode and role.
#[derive(Debug, Args, Clone, Default)]
pub struct TunnelArgs {
    /// Local address for the QUIC/ICE socket, e.g. 127.0.0.1:0 (default: all interfaces).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Close the tunnel after this many seconds without hearing from the peer [default: 30].
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<u64>,
    /// Congestion controller of the tunnel: bbr paces at the path's
    /// measured rate and keeps it through random loss (Wi-Fi, mobile, long
    /// paths); cubic halves its rate at every loss [default: bbr in ice and
    /// nostr, cubic in the iroh modes].
    #[arg(long, value_name = "bbr|cubic")]
    pub congestion: Option<String>,
    /// Forget a UDP client after this many idle seconds [default: 60].
    #[arg(long, value_name = "SECS")]
    pub udp_idle_timeout: Option<u64>,
    /// Most UDP clients per session [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_udp_flows: Option<usize>,
    /// Give up one attempt to connect after this many seconds (receivers:
    /// to reach the sender; copy-paste and Nostr: after the exchange) [default: 30].
    #[arg(long, value_name = "SECS")]
    pub connect_timeout: Option<u64>,
    /// Keep open TCP connections across a lost tunnel for this long, to be
    /// resumed without a byte lost; 0 turns resumption off [default: 300].
    #[arg(long, value_name = "SECS")]
    pub resume_window: Option<u64>,
    /// Most bytes kept per TCP connection for a resume, in MiB; reading
    /// from the local socket waits while it is full [default: 8].
    #[arg(long, value_name = "MIB")]
    pub resume_buffer: Option<u64>,
    /// On SIGTERM, accept nothing new and let open TCP connections finish
    /// for up to SECS before closing them; Ctrl-C or a second signal closes
    /// at once [default: 10].
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<u64>,
    /// Name of this process for `peerport status NAME` (its control socket
    /// is NAME.sock) [default: sender-PID or receiver-PID].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Where to put the control socket `peerport status` asks; `none` for
    /// no socket [default: $XDG_RUNTIME_DIR/peerport/NAME.sock, /run/peerport
    /// for root].
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Serve Prometheus/OpenMetrics metrics at http://ADDR/metrics, e.g. 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Serve a live dashboard at http://ADDR/, e.g. 127.0.0.1:8080 (an
    /// address other than loopback needs --dashboard-token-file).
    #[arg(long, value_name = "ADDR")]
    pub dashboard: Option<String>,
    /// File holding the secret the dashboard asks for (?token=...).
    #[arg(long, value_name = "FILE")]
    pub dashboard_token_file: Option<PathBuf>,
}

impl ToPartial for TunnelArgs {
    fn partial(&self) -> Partial {
        Partial {
            connect_timeout: self.connect_timeout,
            bind: self.bind.clone(),
            idle_timeout: self.idle_timeout,
            congestion: self.congestion.clone(),
            udp_idle_timeout: self.udp_idle_timeout,
            max_udp_flows: self.max_udp_flows,
            resume_window: self.resume_window,
            resume_buffer: self.resume_buffer,
            drain_timeout: self.drain_timeout,
            name: self.name.clone(),
            control_socket: self.control_socket.clone(),
            metrics: self.metrics.clone(),
            dashboard: self.dashboard.clone(),
            dashboard_token_file: self.dashboard_token_file.clone(),
            ..Default::default()
        }
    }
}

/// `peerport sender MODE` and `peerport receiver MODE`: the role's own
/// flags, the mode's own flags, and the flags every command has.
#[derive(Debug, Args, Clone)]
pub struct RoleArgs<R: Args + ToPartial, M: ModeFlags> {
    /// The role's flags.
    #[command(flatten)]
    pub role: R,
    /// The mode's flags.
    #[command(flatten)]
    pub mode: M,
    /// Tunnel flags of every mode and role.
    #[command(flatten)]
    pub tunnel: TunnelArgs,
    /// `-c FILE` / `--default-config`.
    #[command(flatten)]
    pub config: ConfigArgs,
}

impl<R: Args + ToPartial, M: ModeFlags> RoleArgs<R, M> {
    fn parts(&self) -> (Mode, Partial, &ConfigArgs) {
        let own = config::overlay(self.role.partial(), self.tunnel.partial());
        (
            M::MODE,
            config::overlay(own, self.mode.partial()),
            &self.config,
        )
    }
}

/// A sender in mode `M`.
pub type SenderArgs<M> = RoleArgs<SenderFlags, M>;
/// A receiver in mode `M`.
pub type ReceiverArgs<M> = RoleArgs<ReceiverFlags, M>;

/// Flags of every sender.
#[derive(Debug, Args, Clone, Default)]
pub struct SenderFlags {
    /// Service to forward: tcp://HOST:PORT or udp://HOST:PORT, or a named
    /// service NAME=URL (repeatable: one session carries them all).
    #[arg(long, short = 's', value_name = "[NAME=]URL")]
    pub source: Vec<String>,
    /// Let receivers ask for destinations HOST_OR_CIDR:PORTS (repeatable;
    /// e.g. 10.0.0.0/24:22,443 or db.internal:5432; default: none).
    #[arg(long, value_name = "HOST_OR_CIDR:PORTS")]
    pub allow: Vec<String>,
    /// Most receivers served at once (0 = unlimited) [default: 10].
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,
}

impl ToPartial for SenderFlags {
    fn partial(&self) -> Partial {
        Partial {
            source: opt_vec(&self.source),
            allow: opt_vec(&self.allow),
            max_sessions: self.max_sessions,
            ..Default::default()
        }
    }
}

/// Flags of every receiver.
#[derive(Debug, Args, Clone, Default)]
pub struct ReceiverFlags {
    /// Local address to listen on: tcp://HOST:PORT or udp://HOST:PORT for
    /// the sender's default service, NAME=URL for its service NAME,
    /// URL=HOST:PORT for a destination the sender allows, or
    /// socks5://HOST:PORT for a SOCKS5 proxy to such destinations (repeatable).
    #[arg(long, short = 't', value_name = "[NAME=]URL[=HOST:PORT]")]
    pub target: Vec<String>,
    /// End when the tunnel is lost instead of reconnecting.
    #[arg(long)]
    pub no_reconnect: bool,
    /// Stop reconnecting (exit 3) after this many seconds without a tunnel [default: 0 = never].
    #[arg(long, value_name = "SECS")]
    pub give_up_after: Option<u64>,
    /// How long a local TCP client waits for the tunnel before it is closed [default: 10].
    #[arg(long, value_name = "SECS")]
    pub reconnect_wait: Option<u64>,
}

impl ToPartial for ReceiverFlags {
    fn partial(&self) -> Partial {
        Partial {
            target: opt_vec(&self.target),
            no_reconnect: self.no_reconnect.then_some(true),
            give_up_after: self.give_up_after,
            reconnect_wait: self.reconnect_wait,
            ..Default::default()
        }
    }
}

fn opt_vec(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

/// Flags of the iroh endpoint, shared by both roles of the `iroh` mode.
#[derive(Debug, Args, Clone, Default)]
pub struct IrohArgs {
    /// Persistent identity; created 0600 if missing.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Relay server to use instead of the public n0 relays (repeatable).
    #[arg(long = "relay-url", value_name = "URL")]
    pub relay_url: Vec<String>,
    /// UDP port of those relays' QUIC address discovery, which tells this
    /// host its public address for hole punching (0 = off) [default: 7842].
    #[arg(long, value_name = "PORT")]
    pub relay_quic_port: Option<u16>,
    /// PEM file of extra trusted CA certificates for the relays' TLS (e.g. a
    /// self-hosted relay's self-signed certificate).
    #[arg(long, value_name = "FILE")]
    pub relay_ca: Option<PathBuf>,
    /// Never send directly: everything goes through the relay.
    #[arg(long)]
    pub relay_only: bool,
    /// pkarr/DNS discovery server to publish to and resolve from, e.g.
    /// https://dns.example.com/pkarr (default: n0's public DNS).
    #[arg(long, value_name = "URL")]
    pub dns_server: Option<String>,
    /// Do not use mDNS on the local network.
    #[arg(long)]
    pub no_mdns: bool,
    /// Do not ask the router for a port mapping (UPnP/PCP/NAT-PMP).
    #[arg(long)]
    pub no_portmap: bool,
}

impl ToPartial for IrohArgs {
    fn partial(&self) -> Partial {
        Partial {
            secret_file: self.secret_file.clone(),
            relay_url: opt_vec(&self.relay_url),
            relay_quic_port: self.relay_quic_port,
            relay_ca: self.relay_ca.clone(),
            relay_only: self.relay_only.then_some(true),
            dns_server: self.dns_server.clone(),
            no_mdns: self.no_mdns.then_some(true),
            no_portmap: self.no_portmap.then_some(true),
            ..Default::default()
        }
    }
}

/// `peerport sender iroh`: the endpoint and who may connect.
#[derive(Debug, Args, Clone, Default)]
pub struct IrohSenderFlags {
    /// Admit only this receiver endpoint id (repeatable); replaces ticket tokens.
    #[arg(long = "allowed-peer", value_name = "ID")]
    pub allowed_peer: Vec<String>,
    /// File of admitted receiver ids, one per line (# comments allowed).
    #[arg(long, value_name = "FILE")]
    pub authorized_peers_file: Option<PathBuf>,
    /// The iroh endpoint flags.
    #[command(flatten)]
    pub iroh: IrohArgs,
}

impl ToPartial for IrohSenderFlags {
    fn partial(&self) -> Partial {
        Partial {
            allowed_peer: opt_vec(&self.allowed_peer),
            authorized_peers_file: self.authorized_peers_file.clone(),
            ..self.iroh.partial()
        }
    }
}

impl ModeFlags for IrohSenderFlags {
    const MODE: Mode = Mode::Iroh;
}

/// `peerport receiver iroh`: the sender to reach and the endpoint.
#[derive(Debug, Args, Clone, Default)]
pub struct IrohReceiverFlags {
    /// The sender's ticket (ppt1...), or its bare endpoint id if the sender pins this receiver.
    #[arg(long, alias = "ticket", value_name = "TICKET")]
    pub node_id: Option<String>,
    /// The iroh endpoint flags.
    #[command(flatten)]
    pub iroh: IrohArgs,
}

impl ToPartial for IrohReceiverFlags {
    fn partial(&self) -> Partial {
        Partial {
            node_id: self.node_id.clone(),
            ..self.iroh.partial()
        }
    }
}

impl ModeFlags for IrohReceiverFlags {
    const MODE: Mode = Mode::Iroh;
}

/// Where copy-paste blobs go and come from.
#[derive(Debug, Args, Clone, Default)]
pub struct BlobFileArgs {
    /// File the OFFER is written to (receiver) or read from (sender); `-` = stdout/stdin.
    #[arg(long, value_name = "FILE")]
    pub offer_file: Option<PathBuf>,
    /// File the ANSWER is read from (receiver) or appended to (sender); `-` = stdin/stdout.
    #[arg(long, value_name = "FILE")]
    pub answer_file: Option<PathBuf>,
}

impl ToPartial for BlobFileArgs {
    fn partial(&self) -> Partial {
        Partial {
            offer_file: self.offer_file.clone(),
            answer_file: self.answer_file.clone(),
            ..Default::default()
        }
    }
}

/// Address discovery flags of the modes that exchange addresses
/// (`iroh-manual`, `ice`, `nostr`).
#[derive(Debug, Args, Clone, Default)]
pub struct PathArgs {
    /// STUN server HOST:PORT to learn the public address (repeatable; default: public servers).
    #[arg(long = "stun-server", value_name = "HOST:PORT")]
    pub stun_server: Vec<String>,
    /// Do not use STUN (LAN or port-forwarded setups).
    #[arg(long)]
    pub no_stun: bool,
    /// Do not ask the router for a port mapping.
    #[arg(long)]
    pub no_portmap: bool,
}

impl ToPartial for PathArgs {
    fn partial(&self) -> Partial {
        Partial {
            stun_server: opt_vec(&self.stun_server),
            no_stun: self.no_stun.then_some(true),
            no_portmap: self.no_portmap.then_some(true),
            ..Default::default()
        }
    }
}

/// TURN and relay flags of the ICE modes (`ice`, `nostr`, `netcheck`).
#[derive(Debug, Args, Clone, Default)]
pub struct IceArgs {
    /// TURN server turn:HOST:PORT (UDP), repeatable; used when no direct pair works.
    #[arg(long = "turn-server", value_name = "turn:HOST:PORT")]
    pub turn_server: Vec<String>,
    /// TURN user name.
    #[arg(long, value_name = "USER")]
    pub turn_user: Option<String>,
    /// File holding the TURN password (or set PEERPORT_TURN_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub turn_password_file: Option<PathBuf>,
    /// Use only TURN relay candidates.
    #[arg(long)]
    pub relay_only: bool,
}

impl ToPartial for IceArgs {
    fn partial(&self) -> Partial {
        Partial {
            turn_server: opt_vec(&self.turn_server),
            turn_user: self.turn_user.clone(),
            turn_password_file: self.turn_password_file.clone(),
            relay_only: self.relay_only.then_some(true),
            ..Default::default()
        }
    }
}

/// `iroh-manual` flags (both roles).
#[derive(Debug, Args, Clone, Default)]
pub struct IrohManualFlags {
    /// Blob files.
    #[command(flatten)]
    pub files: BlobFileArgs,
    /// Address discovery.
    #[command(flatten)]
    pub path: PathArgs,
}

impl ToPartial for IrohManualFlags {
    fn partial(&self) -> Partial {
        config::overlay(self.files.partial(), self.path.partial())
    }
}

impl ModeFlags for IrohManualFlags {
    const MODE: Mode = Mode::IrohManual;
}

/// `ice` flags (both roles).
#[derive(Debug, Args, Clone, Default)]
pub struct IceFlags {
    /// Blob files.
    #[command(flatten)]
    pub files: BlobFileArgs,
    /// Address discovery.
    #[command(flatten)]
    pub path: PathArgs,
    /// TURN and relay.
    #[command(flatten)]
    pub ice: IceArgs,
}

impl ToPartial for IceFlags {
    fn partial(&self) -> Partial {
        config::overlay(
            config::overlay(self.files.partial(), self.path.partial()),
            self.ice.partial(),
        )
    }
}

impl ModeFlags for IceFlags {
    const MODE: Mode = Mode::Ice;
}

/// Nostr signaling flags.
#[derive(Debug, Args, Clone, Default)]
pub struct NostrArgs {
    /// File holding our nsec (bech32 or hex), mode 0600; or set PEERPORT_NSEC.
    #[arg(long, value_name = "FILE")]
    pub nsec_file: Option<PathBuf>,
    /// The peer's public key (npub or hex).
    #[arg(long, value_name = "NPUB")]
    pub peer_npub: Option<String>,
    /// Nostr relay URL (repeatable; default: a few public relays).
    #[arg(long = "relay", value_name = "wss://...")]
    pub relay: Vec<String>,
    /// Ephemeral event kind for signaling (20000..29999) [default: 21059].
    #[arg(long, value_name = "KIND")]
    pub nostr_kind: Option<u16>,
}

impl ToPartial for NostrArgs {
    fn partial(&self) -> Partial {
        Partial {
            nsec_file: self.nsec_file.clone(),
            peer_npub: self.peer_npub.clone(),
            relay: opt_vec(&self.relay),
            nostr_kind: self.nostr_kind,
            ..Default::default()
        }
    }
}

/// `nostr` flags (both roles).
#[derive(Debug, Args, Clone, Default)]
pub struct NostrFlags {
    /// Nostr signaling.
    #[command(flatten)]
    pub nostr: NostrArgs,
    /// Address discovery.
    #[command(flatten)]
    pub path: PathArgs,
    /// TURN and relay.
    #[command(flatten)]
    pub ice: IceArgs,
}

impl ToPartial for NostrFlags {
    fn partial(&self) -> Partial {
        config::overlay(
            config::overlay(self.nostr.partial(), self.path.partial()),
            self.ice.partial(),
        )
    }
}

impl ModeFlags for NostrFlags {
    const MODE: Mode = Mode::Nostr;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every long flag of `sender MODE` and `receiver MODE` is a config key
    /// of that role and mode, with the same name (`-c FILE` itself aside).
    #[test]
    fn every_long_flag_is_a_config_key() {
        let keys: Vec<String> = match serde_json::to_value(Partial::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => unreachable!(),
        };
        let cli = Cli::command();
        let mut checked = 0;
        for (role_name, role) in [
            ("sender", config::Role::Sender),
            ("receiver", config::Role::Receiver),
        ] {
            let role_cmd = cli.find_subcommand(role_name).unwrap();
            for mode_cmd in role_cmd.get_subcommands() {
                let mode: Mode = mode_cmd.get_name().parse().unwrap();
                for arg in mode_cmd.get_arguments() {
                    let Some(long) = arg.get_long() else { continue };
                    if crate::config_init::NOT_KEYS.contains(&long) {
                        continue;
                    }
                    assert!(keys.iter().any(|k| k == long), "--{long} has no config key");
                    assert!(
                        config::key_applies(long, role, mode),
                        "--{long} is a flag of `{role_name} {mode}` but not one of its config keys"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 100, "{checked}");
    }
}
