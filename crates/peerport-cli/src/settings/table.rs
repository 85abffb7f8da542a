//! Every setting of `peerport sender|receiver MODE` and of config files,
//! declared once: its doc comment is the flag's help and the template's
//! comment, its field name gives the flag and the key (`resume_window`:
//! `--resume-window`, `resume-window = 300`), its scope the roles and modes
//! that have it, its default what `--help` shows (taken from the library or
//! from [`super`], never written twice). Adding a setting is one entry here
//! plus the code that uses it ([`super::Settings::from_partial`]).

use std::path::PathBuf;

use peerport::{engine::EngineConfig, transport::QuicSettings};
use peerport_signaling::Mode::{Ice, Iroh, IrohManual, Nostr};

use super::declare::{settings, Scope, Secs, ALL_MODES};
use super::file::ServiceTable;

/// Modes that exchange addresses themselves (STUN).
const PATH_MODES: &[peerport_signaling::Mode] = &[IrohManual, Ice, Nostr];
/// Modes that run ICE (TURN).
const ICE_MODES: &[peerport_signaling::Mode] = &[Ice, Nostr];
/// Modes that pair by pasting blobs.
const PASTE_MODES: &[peerport_signaling::Mode] = &[IrohManual, Ice];

settings! {
    /// Service to forward: tcp://HOST:PORT or udp://HOST:PORT, or a named
    /// service NAME=URL (repeatable: one session carries them all).
    source: Vec<String> {
        scope: Scope::sender(ALL_MODES), value: "[NAME=]URL", short: 's', serde: "super::file::one_or_many",
    }
    /// Let receivers ask for destinations HOST_OR_CIDR:PORTS (repeatable;
    /// e.g. 10.0.0.0/24:22,443 or db.internal:5432; default: none).
    allow: Vec<String> { scope: Scope::sender(ALL_MODES), value: "HOST_OR_CIDR:PORTS" }
    /// Most receivers served at once (0 = unlimited).
    max_sessions: usize {
        scope: Scope::sender(ALL_MODES), value: "N", default: peerport::sender::DEFAULT_MAX_SESSIONS,
    }
    /// Local address to listen on: tcp://HOST:PORT or udp://HOST:PORT for
    /// the sender's default service, NAME=URL for its service NAME,
    /// URL=HOST:PORT for a destination the sender allows, or
    /// socks5://HOST:PORT for a SOCKS5 proxy to such destinations (repeatable).
    target: Vec<String> {
        scope: Scope::receiver(ALL_MODES), value: "[NAME=]URL[=HOST:PORT]", short: 't',
        serde: "super::file::one_or_many",
    }
    /// End when the tunnel is lost instead of reconnecting.
    no_reconnect: bool { scope: Scope::receiver(ALL_MODES) }
    /// Stop reconnecting (exit 3) after this many seconds without a tunnel.
    give_up_after: Secs { scope: Scope::receiver(ALL_MODES), value: "SECS", default: "0 = never" }
    /// How long a local TCP client waits for the tunnel before it is closed.
    reconnect_wait: Secs {
        scope: Scope::receiver(ALL_MODES), value: "SECS", default: super::DEFAULT_RECONNECT_WAIT.as_secs(),
    }
    /// Most TCP connections the tunnel carries at once; a client beyond
    /// is closed at once, with a log line.
    max_connections: usize {
        scope: Scope::receiver(ALL_MODES), value: "N", default: peerport::engine::MAX_CONNECTIONS,
    }
    /// Admit only this receiver endpoint id (repeatable); replaces ticket tokens.
    allowed_peer: Vec<String> { scope: Scope::sender(&[Iroh]), value: "ID" }
    /// File of admitted receiver ids, one per line (# comments allowed).
    authorized_peers_file: PathBuf { scope: Scope::sender(&[Iroh]), value: "FILE" }
    /// The sender's ticket (ppt1...), or its bare endpoint id if the sender pins this receiver.
    node_id: String { scope: Scope::receiver(&[Iroh]), value: "TICKET", alias: "ticket" }
    /// File holding the sender's ticket, readable only by its owner: keeps
    /// the ticket off the command line, where `ps` shows it to every local
    /// user (or set PEERPORT_TICKET).
    ticket_file: PathBuf { scope: Scope::receiver(&[Iroh]), value: "FILE" }
    /// Persistent identity; created 0600 if missing.
    secret_file: PathBuf { scope: Scope::both(&[Iroh]), value: "FILE" }
    /// Self-hosted rendezvous servers described once: the file `peerport
    /// rendezvous` writes, or NAME for ~/.config/peerport/networks/NAME.toml.
    /// Fills in the relay, discovery, STUN/TURN and Nostr relay settings
    /// this mode has; a flag or key given as well wins.
    network: String { scope: Scope::both(ALL_MODES), value: "FILE|NAME" }
    /// Relay server to use instead of the public n0 relays (repeatable).
    relay_url: Vec<String> { scope: Scope::both(&[Iroh]), value: "URL" }
    /// UDP port of those relays' QUIC address discovery, which tells this
    /// host its public address for hole punching (0 = off).
    relay_quic_port: u16 {
        scope: Scope::both(&[Iroh]), value: "PORT", default: peerport::modes::iroh_defaults::DEFAULT_RELAY_QUIC_PORT,
    }
    /// PEM file of extra trusted CA certificates for the relays' TLS (e.g. a
    /// self-hosted relay's self-signed certificate).
    relay_ca: PathBuf { scope: Scope::both(&[Iroh]), value: "FILE" }
    /// pkarr/DNS discovery server to publish to and resolve from, e.g.
    /// https://dns.example.com/pkarr (default: n0's public DNS).
    dns_server: String { scope: Scope::both(&[Iroh]), value: "URL" }
    /// Do not use mDNS on the local network.
    no_mdns: bool { scope: Scope::both(&[Iroh]) }
    /// File the OFFER is written to (receiver) or read from (sender); `-` = stdout/stdin.
    offer_file: PathBuf { scope: Scope::both(PASTE_MODES), value: "FILE" }
    /// File the ANSWER is read from (receiver) or appended to (sender); `-` = stdin/stdout.
    answer_file: PathBuf { scope: Scope::both(PASTE_MODES), value: "FILE" }
    /// File holding our nsec (bech32 or hex), mode 0600; or set PEERPORT_NSEC.
    nsec_file: PathBuf { scope: Scope::both(&[Nostr]), value: "FILE" }
    /// The peer's public key (npub or hex).
    peer_npub: String { scope: Scope::both(&[Nostr]), value: "NPUB" }
    /// Nostr relay URL (repeatable; default: a few public relays).
    relay: Vec<String> { scope: Scope::both(&[Nostr]), value: "wss://..." }
    /// Ephemeral event kind for signaling (20000..29999).
    nostr_kind: u16 {
        scope: Scope::both(&[Nostr]), value: "KIND", default: peerport_signaling::nostr::DEFAULT_KIND,
    }
    /// STUN server HOST:PORT to learn the public address (repeatable; default: public servers).
    stun_server: Vec<String> { scope: Scope::both(PATH_MODES), value: "HOST:PORT" }
    /// Do not use STUN (LAN or port-forwarded setups).
    no_stun: bool { scope: Scope::both(PATH_MODES) }
    /// TURN server turn:HOST:PORT (UDP), repeatable; used when no direct pair works.
    turn_server: Vec<String> { scope: Scope::both(ICE_MODES), value: "turn:HOST:PORT" }
    /// TURN user name.
    turn_user: String { scope: Scope::both(ICE_MODES), value: "USER" }
    /// File holding the TURN password (or set PEERPORT_TURN_PASSWORD).
    turn_password_file: PathBuf { scope: Scope::both(ICE_MODES), value: "FILE" }
    /// Never send directly: everything goes through the relay (iroh) or
    /// through TURN relay candidates (ice, nostr).
    relay_only: bool { scope: Scope::both(&[Iroh, Ice, Nostr]) }
    /// Do not punch through a symmetric NAT when the peer's NAT is a cone
    /// (up to 256 sockets and 2048 probes towards the peer's address, 5 s).
    no_punch: bool { scope: Scope::both(ICE_MODES) }
    /// Do not ask the router for a port mapping (UPnP/PCP/NAT-PMP).
    no_portmap: bool { scope: Scope::both(ALL_MODES) }
    /// Local address for the QUIC/ICE socket, e.g. 127.0.0.1:0 (default: all interfaces).
    bind: String { scope: Scope::both(ALL_MODES), value: "ADDR" }
    /// Close the tunnel after this many seconds without hearing from the peer.
    idle_timeout: Secs {
        scope: Scope::both(ALL_MODES), value: "SECS", default: QuicSettings::default().idle_timeout.as_secs(),
    }
    /// Send a keep-alive after this many seconds without sending, so the
    /// peer and the NATs between hear from this side (under --idle-timeout;
    /// lower it for NATs that forget a mapping sooner).
    keepalive: Secs {
        scope: Scope::both(ALL_MODES), value: "SECS",
        default: format!(
            "{} (a third of --idle-timeout, at most {} s)",
            QuicSettings::default().keep_alive().as_secs(),
            peerport::transport::KEEP_ALIVE.as_secs()
        ),
    }
    /// Congestion controller of the tunnel: bbr paces at the path's
    /// measured rate and keeps it through random loss (Wi-Fi, mobile, long
    /// paths); cubic halves its rate at every loss.
    congestion: String {
        scope: Scope::both(ALL_MODES), value: "bbr|cubic", default: "bbr",
    }
    /// QUIC flow-control window per stream in bytes (the connection's is 4
    /// times it): how much one TCP connection may have in flight; raise it
    /// for long fat paths.
    stream_window: u64 {
        scope: Scope::both(ALL_MODES), value: "BYTES",
        default: format!(
            "{} in ice and nostr; {} in the iroh modes (with cubic: the QUIC stack's own)",
            peerport::transport::quinn::WINDOWS.0,
            peerport::modes::iroh_defaults::BBR_WINDOWS.0
        ),
    }
    /// Forget a UDP client after this many idle seconds.
    udp_idle_timeout: Secs {
        scope: Scope::both(ALL_MODES), value: "SECS", default: EngineConfig::default().udp_idle_timeout.as_secs(),
    }
    /// Most UDP clients per session.
    max_udp_flows: usize {
        scope: Scope::both(ALL_MODES), value: "N", default: EngineConfig::default().max_udp_flows,
    }
    /// Give up one attempt to connect after this many seconds (receivers:
    /// to reach the sender; copy-paste and Nostr: after the exchange).
    connect_timeout: Secs {
        scope: Scope::both(ALL_MODES), value: "SECS", default: super::DEFAULT_CONNECT_TIMEOUT.as_secs(),
    }
    /// Keep open TCP connections across a lost tunnel for this long, to be
    /// resumed without a byte lost; 0 turns resumption off.
    resume_window: Secs {
        scope: Scope::both(ALL_MODES), value: "SECS", default: EngineConfig::default().resume.window.as_secs(),
    }
    /// Most bytes kept per TCP connection for a resume, in MiB; reading
    /// from the local socket waits while it is full.
    resume_buffer: u64 {
        scope: Scope::both(ALL_MODES), value: "MIB", default: EngineConfig::default().resume.stream_buffer >> 20,
    }
    /// On SIGTERM, accept nothing new and let open TCP connections finish
    /// for up to SECS before closing them; Ctrl-C or a second signal closes
    /// at once.
    drain_timeout: Secs {
        scope: Scope::both(ALL_MODES), value: "SECS", default: super::DEFAULT_DRAIN_TIMEOUT.as_secs(),
    }
    /// Name of this process for `peerport status NAME` (its control socket
    /// is NAME.sock).
    name: String { scope: Scope::both(ALL_MODES), value: "NAME", default: "sender-PID or receiver-PID" }
    /// Where to put the control socket `peerport status` asks; `none` for
    /// no socket.
    control_socket: PathBuf {
        scope: Scope::both(ALL_MODES), value: "PATH",
        default: "$XDG_RUNTIME_DIR/peerport/NAME.sock, /run/peerport for root",
    }
    /// Serve Prometheus/OpenMetrics metrics at http://ADDR/metrics, e.g. 127.0.0.1:9090.
    metrics: String { scope: Scope::both(ALL_MODES), value: "ADDR" }
    /// Serve a live dashboard at http://ADDR/, e.g. 127.0.0.1:8080 (an
    /// address other than loopback needs --dashboard-token-file).
    dashboard: String { scope: Scope::both(ALL_MODES), value: "ADDR" }
    /// File holding the secret the dashboard asks for (?token=...).
    dashboard_token_file: PathBuf { scope: Scope::both(ALL_MODES), value: "FILE" }
}
