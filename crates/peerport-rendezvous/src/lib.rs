//! Embedded rendezvous infrastructure: real servers, in-process, on a local
//! address. Used by `peerport demo`, `peerport rendezvous` and the tests, so
//! nothing needs the internet.
//!
//! * an iroh relay (the `iroh-relay` crate's server, plain HTTP) with its
//!   QUIC address discovery (QAD) endpoint, which tells iroh endpoints their
//!   public address so they can hole-punch; QAD runs over TLS with a
//!   self-signed certificate for the bind IP, written to `relay-ca.pem` for
//!   clients to trust (`--relay-ca`);
//! * a pkarr relay + DNS server (the `iroh-dns-server` crate) for discovery;
//! * a STUN/TURN server (the `turn` crate) for the ICE modes, with a
//!   generated long-term credential;
//! * a Nostr relay (`nostr-relay-builder`'s `LocalRelay`, real websockets).
//!
//! With a state directory ([`Rendezvous::start_in`], `peerport rendezvous
//! --state DIR`) a restarted rendezvous comes back on the same ports with the
//! same certificate and TURN password, as a restarted public relay or TURN
//! server would: the fault lab restarts it under a running tunnel.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use iroh::RelayUrl;

mod nostr_relay;
pub use nostr_relay::LocalNostrRelay;
use serde::{Deserialize, Serialize};
use url::Url;

/// Errors starting the embedded servers.
#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    /// Relay failed.
    #[error("cannot start the embedded iroh relay: {0}")]
    Relay(String),
    /// DNS/pkarr failed.
    #[error("cannot start the embedded discovery server: {0}")]
    Dns(String),
    /// TURN failed.
    #[error("cannot start the embedded STUN/TURN server: {0}")]
    Turn(String),
    /// The Nostr relay failed.
    #[error("cannot start the embedded Nostr relay: {0}")]
    Nostr(String),
    /// The state directory could not be read or written.
    #[error("rendezvous state in {dir}: {message}")]
    State {
        /// The directory.
        dir: String,
        /// What went wrong.
        message: String,
    },
}

/// What a state directory keeps between runs (`state.json`, mode 0600).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    relay_port: u16,
    qad_port: u16,
    pkarr_port: u16,
    dns_port: u16,
    turn_port: u16,
    nostr_port: u16,
    turn_password: String,
    /// The relay's certificate and key, DER, hex.
    cert_der: String,
    key_der: String,
}

impl Saved {
    fn read(dir: &Path) -> Result<Option<Saved>, RendezvousError> {
        let err = |message: String| RendezvousError::State {
            dir: dir.display().to_string(),
            message,
        };
        match std::fs::read_to_string(dir.join("state.json")) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                err(format!(
                    "state.json is unreadable ({e}); delete it to start afresh"
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(e.to_string())),
        }
    }

    fn write(&self, dir: &Path) -> Result<(), RendezvousError> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        peerport::identity::write_private(&dir.join("state.json"), &text, true).map_err(|e| {
            RendezvousError::State {
                dir: dir.display().to_string(),
                message: e.to_string(),
            }
        })
    }
}

/// Running rendezvous servers; dropped or [`Rendezvous::shutdown`] stops them.
pub struct Rendezvous {
    relay: iroh_relay::server::Server,
    dns: iroh_dns_server::Server,
    _dir: Option<tempfile::TempDir>,
    /// URL of the iroh relay (`--relay-url`).
    pub relay_url: RelayUrl,
    /// UDP port of the relay's QUIC address discovery (`--relay-quic-port`).
    pub relay_quic_port: u16,
    /// The relay's self-signed certificate (DER), to trust for QAD.
    pub relay_cert: rustls::pki_types::CertificateDer<'static>,
    /// `relay-ca.pem`: the same certificate as a PEM file (`--relay-ca`).
    pub relay_ca_file: std::path::PathBuf,
    /// URL of the pkarr relay (`--dns-server`).
    pub pkarr_url: Url,
    /// Address of the DNS server answering for published endpoints.
    pub dns_addr: std::net::SocketAddr,
    turn: turn::server::Server,
    /// STUN/TURN server address (UDP).
    pub turn_addr: std::net::SocketAddr,
    /// TURN user name.
    pub turn_user: String,
    /// TURN password.
    pub turn_password: String,
    nostr: LocalNostrRelay,
}

struct StaticAuth {
    user: String,
    password: String,
}

impl turn::auth::AuthHandler for StaticAuth {
    fn auth_handle(
        &self,
        user: &str,
        realm: &str,
        _src: std::net::SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        if user == self.user {
            Ok(turn::auth::generate_auth_key(user, realm, &self.password))
        } else {
            Err(turn::Error::ErrNoSuchUser)
        }
    }
}

async fn start_turn(
    ip: IpAddr,
    port: u16,
    user: &str,
    password: &str,
) -> Result<(turn::server::Server, std::net::SocketAddr), String> {
    use turn::{
        relay::relay_static::RelayAddressGeneratorStatic,
        server::config::{ConnConfig, ServerConfig},
    };
    let sock = tokio::net::UdpSocket::bind((ip, port))
        .await
        .map_err(|e| e.to_string())?;
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    let server = turn::server::Server::new(ServerConfig {
        conn_configs: vec![ConnConfig {
            conn: std::sync::Arc::new(sock),
            relay_addr_generator: Box::new(RelayAddressGeneratorStatic {
                relay_address: ip,
                address: ip.to_string(),
                net: std::sync::Arc::new(webrtc_util::vnet::net::Net::new(None)),
            }),
        }],
        realm: "peerport".into(),
        auth_handler: std::sync::Arc::new(StaticAuth {
            user: user.into(),
            password: password.into(),
        }),
        channel_bind_timeout: std::time::Duration::ZERO,
        alloc_close_notify: None,
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok((server, addr))
}

type SelfSigned = (
    rustls::pki_types::CertificateDer<'static>,
    String,
    rustls::ServerConfig,
    Vec<u8>,
);

/// A self-signed certificate for `ip` (DER and PEM), a TLS 1.3 server config
/// using it, and its key (DER); `saved` (certificate, key) reuses one.
fn self_signed_tls(
    ip: IpAddr,
    saved: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<SelfSigned, RendezvousError> {
    let err = |e: String| RendezvousError::Relay(format!("relay TLS certificate: {e}"));
    let (cert, key_der) = match saved {
        Some((c, k)) => (rustls::pki_types::CertificateDer::from(c), k),
        None => {
            let ck = rcgen::generate_simple_self_signed(vec![ip.to_string()])
                .map_err(|e| err(e.to_string()))?;
            (ck.cert.der().clone(), ck.signing_key.serialize_der())
        }
    };
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE", cert.to_vec()));
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.clone().into());
    let tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| err(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .map_err(|e| err(e.to_string()))?;
    Ok((cert, pem, tls, key_der))
}

impl Rendezvous {
    /// Start every server on `ip` with OS-assigned ports. Retried a few times:
    /// some servers bind a UDP and a TCP socket on the same OS-chosen port
    /// number, which can already be taken on the other protocol.
    pub async fn start(ip: IpAddr) -> Result<Self, RendezvousError> {
        Self::start_with(ip, None).await
    }

    /// Start every server on `ip`, keeping ports, certificate and TURN
    /// password in `state` (created if missing): started again with the same
    /// directory, the servers come back exactly where clients expect them.
    pub async fn start_in(ip: IpAddr, state: &Path) -> Result<Self, RendezvousError> {
        std::fs::create_dir_all(state).map_err(|e| RendezvousError::State {
            dir: state.display().to_string(),
            message: e.to_string(),
        })?;
        Self::start_with(ip, Some(state)).await
    }

    async fn start_with(ip: IpAddr, state: Option<&Path>) -> Result<Self, RendezvousError> {
        let saved = match state {
            Some(dir) => Saved::read(dir)?,
            None => None,
        };
        let mut last = None;
        for attempt in 1..=4 {
            if attempt > 1 && saved.is_some() {
                // the same ports: give a socket of the previous run time to go
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            match Self::start_once(ip, state, saved.as_ref()).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    tracing::warn!(attempt, "embedded rendezvous did not start: {e}; retrying");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| RendezvousError::Relay("no attempt made".into())))
    }

    async fn start_once(
        ip: IpAddr,
        state: Option<&Path>,
        saved: Option<&Saved>,
    ) -> Result<Self, RendezvousError> {
        let (tmp, data_dir): (Option<tempfile::TempDir>, PathBuf) = match state {
            Some(d) => (None, d.to_path_buf()),
            None => {
                let t = tempfile::tempdir().map_err(|e| RendezvousError::Dns(e.to_string()))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let port = |f: fn(&Saved) -> u16| saved.map(f).unwrap_or(0);
        let keys = match saved {
            Some(s) => Some((
                hex::decode(&s.cert_der).map_err(|e| RendezvousError::Relay(e.to_string()))?,
                hex::decode(&s.key_der).map_err(|e| RendezvousError::Relay(e.to_string()))?,
            )),
            None => None,
        };
        let (relay_cert, relay_pem, qad_tls, key_der) = self_signed_tls(ip, keys)?;
        let relay_ca_file = data_dir.join("relay-ca.pem");
        std::fs::write(&relay_ca_file, relay_pem)
            .map_err(|e| RendezvousError::Relay(format!("writing relay-ca.pem: {e}")))?;
        let mut relay_cfg = iroh_relay::server::ServerConfig::default();
        let mut rc = iroh_relay::server::RelayConfig::new((ip, port(|s| s.relay_port)));
        rc.key_cache_capacity = Some(1024);
        relay_cfg.relay = Some(rc);
        let mut qad = iroh_relay::server::QuicConfig::new((ip, port(|s| s.qad_port)));
        qad.server_config = Some(qad_tls);
        relay_cfg.quic = Some(qad);
        relay_cfg.metrics_addr = None;
        let relay = iroh_relay::server::Server::spawn(relay_cfg)
            .await
            .map_err(|e| RendezvousError::Relay(e.to_string()))?;
        let relay_addr = relay
            .http_addr()
            .ok_or_else(|| RendezvousError::Relay("no HTTP address".into()))?;
        let relay_url: RelayUrl = format!("http://{relay_addr}")
            .parse()
            .map_err(|e| RendezvousError::Relay(format!("{e}")))?;
        let relay_quic_port = relay
            .quic_addr()
            .ok_or_else(|| RendezvousError::Relay("no QUIC address discovery socket".into()))?
            .port();

        let mut cfg = iroh_dns_server::config::Config::default();
        if let Some(http) = cfg.http.as_mut() {
            http.port = port(|s| s.pkarr_port);
            http.bind_addr = Some(ip);
        }
        cfg.https = None;
        cfg.dns.port = port(|s| s.dns_port);
        cfg.dns.bind_addr = Some(ip);
        cfg.metrics = Some(iroh_dns_server::config::MetricsConfig::disabled());
        cfg.mainline = None;
        cfg.pkarr_put_rate_limit = iroh_dns_server::config::RateLimitConfig::Disabled;
        cfg.data_dir = Some(data_dir.clone());
        let dns = iroh_dns_server::Server::bind(cfg)
            .await
            .map_err(|e| RendezvousError::Dns(e.to_string()))?;
        let http = dns
            .http_addr()
            .ok_or_else(|| RendezvousError::Dns("no HTTP address".into()))?;
        let pkarr_url: Url = format!("http://{http}/pkarr")
            .parse()
            .map_err(|e: url::ParseError| RendezvousError::Dns(e.to_string()))?;
        let dns_addr = dns.dns_addr();
        let turn_user = "peerport".to_string();
        let turn_password = match saved {
            Some(s) => s.turn_password.clone(),
            None => hex::encode(rand::random::<[u8; 12]>()),
        };
        let (turn, turn_addr) = start_turn(ip, port(|s| s.turn_port), &turn_user, &turn_password)
            .await
            .map_err(RendezvousError::Turn)?;
        let nostr = LocalNostrRelay::start(ip, port(|s| s.nostr_port)).await?;
        if let Some(dir) = state {
            let nostr_port = Url::parse(&nostr.url)
                .ok()
                .and_then(|u| u.port())
                .unwrap_or_default();
            Saved {
                relay_port: relay_addr.port(),
                qad_port: relay_quic_port,
                pkarr_port: http.port(),
                dns_port: dns_addr.port(),
                turn_port: turn_addr.port(),
                nostr_port,
                turn_password: turn_password.clone(),
                cert_der: hex::encode(relay_cert.as_ref()),
                key_der: hex::encode(&key_der),
            }
            .write(dir)?;
        }
        Ok(Rendezvous {
            nostr,
            turn,
            turn_addr,
            turn_user,
            turn_password,
            relay,
            dns,
            _dir: tmp,
            relay_url,
            relay_quic_port,
            relay_cert,
            relay_ca_file,
            pkarr_url,
            dns_addr,
        })
    }

    /// URL of the embedded Nostr relay (ws://).
    pub fn nostr_url(&self) -> String {
        self.nostr.url.clone()
    }

    /// Stop the servers.
    /// Options for an iroh endpoint on the bind address (port chosen by the
    /// OS) that uses only these servers: relay (with its certificate and
    /// QUIC address discovery) and pkarr discovery; no mDNS, no port mapping.
    pub fn iroh_options(&self, relay_only: bool) -> peerport::modes::iroh::IrohOptions {
        peerport::modes::iroh::IrohOptions {
            relay_urls: vec![self.relay_url.clone()],
            relay_quic_port: Some(self.relay_quic_port),
            relay_ca: vec![self.relay_cert.clone()],
            relay_only,
            dns_server: Some(self.pkarr_url.clone()),
            mdns: false,
            bind: Some((self.dns_addr.ip(), 0).into()),
            portmap: false,
            ..Default::default()
        }
    }

    /// Stop every server.
    pub async fn shutdown(self) {
        self.nostr.shutdown();
        let _ = self.relay.shutdown().await;
        let _ = self.dns.shutdown().await;
        let _ = self.turn.close().await;
    }
}

/// A plain-HTTP iroh relay (no QUIC address discovery) on exactly `addr`:
/// for tests that stop a relay and start it again on the same address.
pub async fn relay_at(
    addr: std::net::SocketAddr,
) -> Result<iroh_relay::server::Server, RendezvousError> {
    let mut cfg = iroh_relay::server::ServerConfig::default();
    let mut rc = iroh_relay::server::RelayConfig::new(addr);
    rc.key_cache_capacity = Some(1024);
    cfg.relay = Some(rc);
    cfg.metrics_addr = None;
    iroh_relay::server::Server::spawn(cfg)
        .await
        .map_err(|e| RendezvousError::Relay(e.to_string()))
}
