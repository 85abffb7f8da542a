//! `peerport-lab bench-flood`: QUIC v1 Initials that decrypt, for
//! `scripts/flood`. Each is a real first flight (a TLS ClientHello with
//! peerport's ALPN, sealed with the Initial keys) from a fresh connection,
//! made with quinn-proto and never continued: it reaches the handshake and
//! Retry paths of a sender, which random bytes never do.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use peerport::transport::quinn as q;

/// How many Initials were sent, and at what rate.
#[derive(Debug, serde::Serialize)]
pub struct FloodReport {
    /// Packets sent.
    pub sent: u64,
    /// Packets per second reached.
    pub pps: u64,
}

/// Send sealed Initials to `targets` (round robin) at up to `rate` per
/// second for `secs`.
pub fn run(targets: &[SocketAddr], rate: u64, secs: f64) -> anyhow::Result<FloodReport> {
    anyhow::ensure!(!targets.is_empty(), "give at least one --target");
    let me = q::Identity::generate().map_err(anyhow::Error::msg)?;
    let mut cfg =
        q::client_config(&me, [0; 32], &Default::default()).map_err(anyhow::Error::msg)?;
    // default transport settings: cheaper to set up per connection
    cfg.transport_config(Arc::new(quinn_proto::TransportConfig::default()));
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut endpoint = fresh_endpoint();
    let mut buf = Vec::with_capacity(1500);
    let mut sent = 0u64;
    while Instant::now() < end {
        for _ in 0..64 {
            let to = targets[(sent as usize) % targets.len()];
            let now = Instant::now();
            let Ok((_, mut conn)) = endpoint.connect(now, cfg.clone(), to, q::SERVER_NAME) else {
                endpoint = fresh_endpoint();
                continue;
            };
            buf.clear();
            if let Some(t) = conn.poll_transmit(now, 1, &mut buf) {
                let _ = sock.send_to(&buf[..t.size], t.destination);
                sent += 1;
            }
        }
        // the endpoint keeps a record per connection: start over now and then
        if sent % 8192 < 64 {
            endpoint = fresh_endpoint();
        }
        let ahead = Duration::from_secs_f64(sent as f64 / rate.max(1) as f64)
            .saturating_sub(start.elapsed());
        if !ahead.is_zero() {
            std::thread::sleep(ahead);
        }
    }
    Ok(FloodReport {
        sent,
        pps: (sent as f64 / start.elapsed().as_secs_f64()) as u64,
    })
}

fn fresh_endpoint() -> quinn_proto::Endpoint {
    quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn sends_sealed_quic_v1_initials() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let r = super::run(&[rx.local_addr().unwrap()], 1000, 0.05).unwrap();
        assert!(r.sent > 0);
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        assert!(n >= 1200, "Initials are padded to 1200 bytes, got {n}");
        assert_eq!(buf[0] & 0xf0, 0xc0, "long header, Initial");
        assert_eq!(&buf[1..5], &[0, 0, 0, 1], "QUIC v1");
    }
}
