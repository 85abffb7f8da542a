//! The `iroh` mode (alias `iroh-default`).
//!
//! The sender has a persistent ed25519 identity (`--secret-file`), publishes
//! its addresses via pkarr (to the n0 DNS server by default, or to
//! `--dns-server`) and optionally mDNS, and waits for receivers. A receiver
//! needs the sender's ticket: the endpoint id (which iroh dials and
//! authenticates) plus an access token the sender checks before forwarding.
//! A sender on self-hosted relays puts them in its ticket (version 2), with
//! their QUIC address-discovery port and the pins of self-signed relay
//! certificates, so that a receiver given only the ticket dials the sender
//! through its relay, with no flag and no discovery server.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use iroh::{
    address_lookup::{DnsAddressLookup, PkarrPublisher, PkarrResolver},
    endpoint::{presets, IdleTimeout, PortmapperConfig, QuicTransportConfig, VarInt},
    Endpoint, EndpointAddr, EndpointId, RelayMode, RelayUrl, SecretKey, TransportAddr,
};
use iroh_relay::{RelayConfig, RelayMap, RelayQuicConfig};
use peerport_signaling::{Relays, Ticket};
use tracing::debug;
use url::Url;

use crate::{identity, transport::QuicSettings};

mod acceptor;
mod dialer;
mod mode;
mod pin;

pub use acceptor::IrohAcceptor;
pub use dialer::{connect, IrohDialer};
pub use mode::{IrohMode, Secret};
pub use pin::pin_of;

/// ALPN of peerport's iroh mode.
pub const ALPN: &[u8] = b"peerport/iroh/1";

pub use super::iroh_defaults::{BBR_WINDOWS, DEFAULT_RELAY_QUIC_PORT};

/// Infrastructure settings of an iroh endpoint.
#[derive(Debug, Clone)]
pub struct IrohOptions {
    /// Relay servers; empty means the public n0 relays.
    pub relay_urls: Vec<RelayUrl>,
    /// UDP port of the custom relays' QUIC address discovery; `None` means
    /// [`DEFAULT_RELAY_QUIC_PORT`], `Some(0)` turns it off.
    pub relay_quic_port: Option<u16>,
    /// Extra trusted root certificates for the relays' TLS (HTTPS and QUIC
    /// address discovery), e.g. a self-hosted relay's self-signed certificate.
    pub relay_ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// SHA-256 pins of relay certificates to trust as their own roots (from
    /// a version 2 ticket); see [`pin_of`].
    pub relay_pins: Vec<[u8; 32]>,
    /// Use only the relay (no direct UDP).
    pub relay_only: bool,
    /// pkarr relay URL used to publish and resolve; `None` means n0's DNS.
    pub dns_server: Option<Url>,
    /// Without `dns_server`: publish to and resolve from n0's public DNS.
    /// Off for a receiver whose ticket names the sender's relays (it needs
    /// no discovery, and publishes nowhere public).
    pub public_discovery: bool,
    /// Announce and look up on the local network via mDNS.
    pub mdns: bool,
    /// Local address to bind (e.g. 127.0.0.1:0 in tests); `None` binds all interfaces.
    pub bind: Option<SocketAddr>,
    /// Ask the router for a port mapping (UPnP/PCP/NAT-PMP).
    pub portmap: bool,
    /// Idle timeout and congestion controller.
    pub quic: QuicSettings,
}

impl Default for IrohOptions {
    fn default() -> Self {
        IrohOptions {
            relay_urls: Vec::new(),
            relay_quic_port: None,
            relay_ca: Vec::new(),
            relay_pins: Vec::new(),
            relay_only: false,
            dns_server: None,
            public_discovery: true,
            mdns: true,
            bind: None,
            portmap: true,
            quic: QuicSettings::default(),
        }
    }
}

/// Errors of the iroh mode.
#[derive(Debug, thiserror::Error)]
pub enum IrohError {
    /// Endpoint could not start.
    #[error("cannot start the iroh endpoint: {0}")]
    Bind(String),
    /// Peer id/ticket unreadable.
    #[error("{0}")]
    BadPeer(String),
    /// Could not reach the peer.
    #[error("cannot reach sender {peer} within {secs} s: {last}. Check that the sender runs, that both sides use the same relay/--dns-server, and the ticket")]
    Unreachable {
        /// Peer id.
        peer: String,
        /// Seconds tried.
        secs: u64,
        /// Last error.
        last: String,
    },
}

/// The acknowledgement delay an iroh endpoint asks its peer for.
const ACK_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

/// QUIC settings shared by both roles: keep-alive below NAT timeouts
/// ([`QuicSettings::keep_alive`]), configurable idle
/// timeout and congestion controller, room for thousands of streams,
/// datagram buffers for 500 Mbit/s bursts, [`BBR_WINDOWS`] with BBR,
/// bulk streams sent below the others and in turns, acknowledgements within
/// [`ACK_DELAY`].
pub fn transport_config(q: &QuicSettings) -> QuicTransportConfig {
    let keep_alive = q.keep_alive();
    let idle = IdleTimeout::try_from(q.idle_timeout)
        .unwrap_or_else(|_| IdleTimeout::from(VarInt::from_u32(30_000)));
    let bbr = q.bbr();
    let mut b = QuicTransportConfig::builder()
        .keep_alive_interval(keep_alive)
        .max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(VarInt::from_u32(4096))
        .datagram_receive_buffer_size(Some(8 << 20))
        .datagram_send_buffer_size(8 << 20);
    // the highest priority with data sends first, streams of one priority
    // take turns (noq's default, `send_fairness(true)`); bulk streams go
    // below the others, each turn of 256 KiB at a priority of its own
    // (crate::engine::priority)
    // ask the peer to acknowledge within 2 ms (it may wait up to 25 ms
    // for a second packet): with several busy streams, noq's sender
    // otherwise stalls on that wait (docs/benchmarks.md)
    let mut ack = noq_proto::AckFrequencyConfig::default();
    ack.max_ack_delay(Some(ACK_DELAY));
    b = b.ack_frequency_config(Some(ack));
    if bbr {
        b = b.congestion_controller_factory(std::sync::Arc::new(
            crate::transport::congestion::noq_cc::ModelBbrConfig,
        ));
    }
    let windows = q.windows.or(bbr.then_some(BBR_WINDOWS));
    if let Some((stream, conn)) = windows {
        b = b
            .stream_receive_window(VarInt::from_u64(stream).unwrap_or(VarInt::MAX))
            .receive_window(VarInt::from_u64(conn).unwrap_or(VarInt::MAX))
            .send_window(conn);
    }
    b.build()
}

/// Bind an iroh endpoint with peerport's settings.
pub async fn bind_endpoint(secret: SecretKey, opts: &IrohOptions) -> Result<Endpoint, IrohError> {
    let mut b = Endpoint::builder(presets::Minimal)
        .crypto_provider(crate::transport::tls::provider())
        .secret_key(secret)
        .alpns(vec![ALPN.to_vec()])
        .transport_config(transport_config(&opts.quic));
    b = if opts.relay_urls.is_empty() {
        b.relay_mode(RelayMode::Default)
    } else {
        b.relay_mode(RelayMode::Custom(relay_map(opts)))
    };
    if !opts.relay_ca.is_empty() || !opts.relay_pins.is_empty() {
        b = b.ca_tls_config(pin::ca_tls_config(
            opts.relay_ca.clone(),
            opts.relay_pins.clone(),
        ));
    }
    b = match &opts.dns_server {
        Some(url) => b
            .address_lookup(PkarrPublisher::builder(url.clone()))
            .address_lookup(PkarrResolver::builder(url.clone())),
        None if opts.public_discovery => b
            .address_lookup(PkarrPublisher::n0_dns())
            .address_lookup(PkarrResolver::n0_dns())
            .address_lookup(DnsAddressLookup::n0_dns()),
        None => b,
    };
    if opts.mdns {
        b = b.address_lookup(iroh_mdns_address_lookup::MdnsAddressLookup::builder());
    }
    if !opts.portmap {
        b = b.portmapper_config(PortmapperConfig::Disabled);
    }
    if let Some(addr) = opts.bind {
        // exactly that address: no extra socket on the other family's
        // unspecified address
        b = b
            .clear_ip_transports()
            .bind_addr(addr)
            .map_err(|e| IrohError::Bind(format!("--bind {addr}: {e}")))?;
    }
    if opts.relay_only {
        b = b.clear_ip_transports();
    }
    let ep = b.bind().await.map_err(|e| IrohError::Bind(e.to_string()))?;
    debug!(id = %ep.id(), sockets = ?ep.bound_sockets(), "iroh endpoint bound");
    Ok(ep)
}

/// The custom relays, each with its QUIC address discovery port: without
/// QAD an endpoint behind NAT never learns its public address and cannot
/// hole-punch, so everything would go through the relay.
fn relay_map(opts: &IrohOptions) -> RelayMap {
    let quic = match opts.relay_quic_port {
        Some(0) => None,
        Some(port) => Some(RelayQuicConfig::new(port)),
        None => Some(RelayQuicConfig::default()),
    };
    opts.relay_urls
        .iter()
        .map(|u| RelayConfig::new(u.clone(), quic.clone()))
        .collect()
}

/// Wait (bounded) until the endpoint has a home relay, so that it can be
/// found. Returns whether it got online.
pub async fn wait_online(ep: &Endpoint, limit: Duration) -> bool {
    tokio::time::timeout(limit, ep.online()).await.is_ok()
}

impl IrohOptions {
    /// A receiver's options for `peer`: a ticket naming the sender's
    /// relays makes them this endpoint's relays unless relays are set,
    /// with their QUIC address-discovery port, and then, without a
    /// discovery server of its own, the endpoint uses no discovery server
    /// (the ticket says where the sender is). The ticket's certificate pins
    /// are trusted either way.
    pub fn for_peer(mut self, peer: &PeerSpec) -> Self {
        self.relay_pins.extend_from_slice(&peer.relay_pins);
        if self.relay_urls.is_empty() && !peer.relays.is_empty() {
            self.relay_urls = peer.relays.clone();
            self.relay_quic_port = Some(peer.relay_quic_port);
            if self.dns_server.is_none() {
                self.public_discovery = false;
            }
        }
        self
    }

    /// The self-hosted relays a sender's ticket names: its custom relays,
    /// their QUIC port, and the pins of its trusted relay certificates
    /// (a self-signed relay certificate is its own pin); none with the
    /// public relays.
    fn ticket_relays(&self) -> Relays {
        if self.relay_urls.is_empty() {
            return Relays::default();
        }
        Relays {
            urls: self.relay_urls.iter().map(|u| u.to_string()).collect(),
            quic_port: self.relay_quic_port.unwrap_or(DEFAULT_RELAY_QUIC_PORT),
            pins: self
                .relay_ca
                .iter()
                .map(pin_of)
                .chain(self.relay_pins.iter().copied())
                .collect(),
        }
    }
}

/// The ticket a sender with these options hands out: version 2 naming its
/// relays when they are self-hosted, else version 1.
pub fn ticket_for(secret: &SecretKey, opts: &IrohOptions) -> Ticket {
    Ticket {
        endpoint_id: *secret.public().as_bytes(),
        token: identity::derive_token(secret),
        relays: opts.ticket_relays(),
    }
}

/// What the receiver was given: a full ticket, or a bare endpoint id (then
/// the sender must pin this receiver with `--allowed-peer`).
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// Sender's endpoint id.
    pub id: EndpointId,
    /// Access token, if a ticket was given.
    pub token: Option<Vec<u8>>,
    /// The sender's relays, if its ticket names them.
    pub relays: Vec<RelayUrl>,
    /// Their QUIC address-discovery port (0: none).
    pub relay_quic_port: u16,
    /// Pins of relay certificates to trust.
    pub relay_pins: Vec<[u8; 32]>,
}

impl PeerSpec {
    /// Where to dial: the endpoint id, and the sender's relays if known.
    pub fn addr(&self) -> EndpointAddr {
        EndpointAddr::from_parts(
            self.id,
            self.relays.iter().cloned().map(TransportAddr::Relay),
        )
    }
}

/// The sender a ticket names: its id, token and relays.
impl TryFrom<&Ticket> for PeerSpec {
    type Error = IrohError;
    fn try_from(t: &Ticket) -> Result<Self, IrohError> {
        let id = EndpointId::from_bytes(&t.endpoint_id).map_err(|_| {
            IrohError::BadPeer(
                "the ticket's endpoint id is not a valid key; copy the ticket again".into(),
            )
        })?;
        let relays = t
            .relays
            .urls
            .iter()
            .map(|u| RelayUrl::from_str(u))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                IrohError::BadPeer(format!(
                    "the ticket names a relay that is not a URL ({e}); copy the ticket again"
                ))
            })?;
        Ok(PeerSpec {
            id,
            token: Some(t.token.to_vec()),
            relays,
            relay_quic_port: t.relays.quic_port,
            relay_pins: t.relays.pins.clone(),
        })
    }
}

impl FromStr for PeerSpec {
    type Err = IrohError;
    fn from_str(s: &str) -> Result<Self, IrohError> {
        let s = s.trim();
        if Ticket::looks_like_ticket(s) {
            let t = Ticket::decode(s).map_err(|e| IrohError::BadPeer(e.to_string()))?;
            return PeerSpec::try_from(&t);
        }
        let id = EndpointId::from_str(s).map_err(|e| {
            IrohError::BadPeer(format!(
                "`{s}` is neither a peerport ticket (ppt1...) nor an endpoint id ({e}): paste the ticket the sender printed"
            ))
        })?;
        Ok(PeerSpec {
            id,
            token: None,
            relays: Vec::new(),
            relay_quic_port: 0,
            relay_pins: Vec::new(),
        })
    }
}
