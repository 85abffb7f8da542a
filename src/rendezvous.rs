//! Embedded rendezvous infrastructure: real servers, in-process, on a local
//! address. Used by `peerport demo`, `peerport rendezvous` and the tests, so
//! nothing needs the internet.
//!
//! * an iroh relay (the `iroh-relay` crate's server, plain HTTP);
//! * a pkarr relay + DNS server (the `iroh-dns-server` crate) for discovery;
//! * a STUN/TURN server (the `turn` crate) for the ICE modes, with a
//!   generated long-term credential;
//! * a Nostr relay (`nostr-relay-builder`'s `LocalRelay`, real websockets).

use std::net::IpAddr;

use iroh::RelayUrl;
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
}

/// Running rendezvous servers; dropped or [`Rendezvous::shutdown`] stops them.
pub struct Rendezvous {
    relay: iroh_relay::server::Server,
    dns: iroh_dns_server::Server,
    _dir: tempfile::TempDir,
    /// URL of the iroh relay (`--relay-url`).
    pub relay_url: RelayUrl,
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
    nostr: peerport_signaling::nostr::LocalNostrRelay,
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
    user: &str,
    password: &str,
) -> Result<(turn::server::Server, std::net::SocketAddr), String> {
    use turn::{
        relay::relay_static::RelayAddressGeneratorStatic,
        server::config::{ConnConfig, ServerConfig},
    };
    let sock = tokio::net::UdpSocket::bind((ip, 0))
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

impl Rendezvous {
    /// Start every server on `ip` with OS-assigned ports. Retried a few times:
    /// some servers bind a UDP and a TCP socket on the same OS-chosen port
    /// number, which can already be taken on the other protocol.
    pub async fn start(ip: IpAddr) -> Result<Self, RendezvousError> {
        let mut last = None;
        for attempt in 1..=4 {
            match Self::start_once(ip).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    tracing::warn!(attempt, "embedded rendezvous did not start: {e}; retrying");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| RendezvousError::Relay("no attempt made".into())))
    }

    async fn start_once(ip: IpAddr) -> Result<Self, RendezvousError> {
        let mut relay_cfg = iroh_relay::server::ServerConfig::default();
        let mut rc = iroh_relay::server::RelayConfig::new((ip, 0));
        rc.key_cache_capacity = Some(1024);
        relay_cfg.relay = Some(rc);
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

        let dir = tempfile::tempdir().map_err(|e| RendezvousError::Dns(e.to_string()))?;
        let mut cfg = iroh_dns_server::config::Config::default();
        if let Some(http) = cfg.http.as_mut() {
            http.port = 0;
            http.bind_addr = Some(ip);
        }
        cfg.https = None;
        cfg.dns.port = 0;
        cfg.dns.bind_addr = Some(ip);
        cfg.metrics = Some(iroh_dns_server::config::MetricsConfig::disabled());
        cfg.mainline = None;
        cfg.pkarr_put_rate_limit = iroh_dns_server::config::RateLimitConfig::Disabled;
        cfg.data_dir = Some(dir.path().to_path_buf());
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
        let turn_password = hex::encode(rand::random::<[u8; 12]>());
        let (turn, turn_addr) = start_turn(ip, &turn_user, &turn_password)
            .await
            .map_err(RendezvousError::Turn)?;
        let nostr = peerport_signaling::nostr::LocalNostrRelay::start(ip, 0)
            .await
            .map_err(|e| RendezvousError::Turn(e.to_string()))?;
        Ok(Rendezvous {
            nostr,
            turn,
            turn_addr,
            turn_user,
            turn_password,
            relay,
            dns,
            _dir: dir,
            relay_url,
            pkarr_url,
            dns_addr,
        })
    }

    /// URL of the embedded Nostr relay (ws://).
    pub fn nostr_url(&self) -> String {
        self.nostr.url.clone()
    }

    /// Stop the servers.
    pub async fn shutdown(self) {
        self.nostr.shutdown();
        let _ = self.relay.shutdown().await;
        let _ = self.dns.shutdown().await;
        let _ = self.turn.close().await;
    }
}
