//! QUIC address discovery (QAD) against an iroh relay, for `netcheck`: the
//! relay's QAD endpoint is how iroh learns its public address behind NAT.
//! Without an answer iroh cannot hole-punch and stays on the relay.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use futures::StreamExt;
use rustls::pki_types::CertificateDer;

/// What the relay saw and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct QadAnswer {
    /// Our address as the relay observed it.
    pub observed: SocketAddr,
    /// Handshake plus first observation.
    pub rtt: Duration,
}

/// Ask the relay at `url` (QAD on UDP `port`) for our public address, from
/// a socket bound to `bind`, trusting the web roots plus `extra_roots`.
pub async fn probe(
    url: &url::Url,
    port: u16,
    extra_roots: &[CertificateDer<'static>],
    bind: SocketAddr,
    limit: Duration,
) -> Result<QadAnswer, String> {
    let host = url
        .host_str()
        .ok_or("the relay URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let server = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .find(|a| a.is_ipv4() == bind.is_ipv4())
        .ok_or_else(|| format!("{host} has no address of the bind address's family"))?;
    let tls = iroh_relay::tls::CaTlsConfig::default()
        .with_extra_roots(extra_roots.iter().cloned())
        .client_config(iroh_relay::tls::default_provider())
        .map_err(|e| format!("TLS setup: {e}"))?;
    let ep = noq::Endpoint::client(bind).map_err(|e| format!("cannot bind {bind}: {e}"))?;
    let client = iroh_relay::quic::QuicClient::new(ep.clone(), tls);
    let start = Instant::now();
    let result = tokio::time::timeout(limit, async {
        let conn = client
            .create_conn(server, &host)
            .await
            .map_err(|e| format!("QUIC to {server}: {e}"))?;
        let observed = conn
            .observed_external_addr()
            .next()
            .await
            .ok_or("the relay closed without reporting our address")?;
        conn.close(0u32.into(), b"netcheck done");
        Ok::<_, String>(observed)
    })
    .await;
    let rtt = start.elapsed();
    ep.close(0u32.into(), b"netcheck done");
    match result {
        Ok(Ok(observed)) => Ok(QadAnswer {
            observed: SocketAddr::new(observed.ip().to_canonical(), observed.port()),
            rtt,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "no answer from {server} within {} s (UDP blocked, or no QAD on that port?)",
            limit.as_secs()
        )),
    }
}
