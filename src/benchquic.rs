//! `peerport bench-quic`: the bare QUIC stacks, no tunnel around them, as
//! the baseline for `scripts/bench`. Two endpoints in this process on
//! 127.0.0.1 with the same transport settings peerport uses; one stream
//! moves N bytes; prints JSON.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use iroh::{endpoint::presets, Endpoint, EndpointAddr, RelayMode, SecretKey, TransportAddr};

use crate::transport::quinn as q;

const CHUNK: usize = 256 * 1024;

async fn pump_send<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, bytes: usize) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let buf = vec![0x5au8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK);
        w.write_all(&buf[..n]).await?;
        left -= n;
    }
    w.shutdown().await?;
    Ok(())
}

async fn pump_recv<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Result<usize> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

/// quinn: bytes per second over one stream.
pub async fn quinn_bulk(bytes: usize) -> Result<f64> {
    let idle = Duration::from_secs(30);
    let (a, b) = (
        q::Identity::generate().map_err(anyhow::Error::msg)?,
        q::Identity::generate().map_err(anyhow::Error::msg)?,
    );
    let server_cfg = q::server_config(&b, a.fingerprint(), idle).map_err(anyhow::Error::msg)?;
    let client_cfg = q::client_config(&a, b.fingerprint(), idle).map_err(anyhow::Error::msg)?;
    let server = quinn::Endpoint::server(server_cfg, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let saddr = server.local_addr()?;
    let client = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let srv = tokio::spawn(async move {
        let conn = server.accept().await.context("no connection")?.await?;
        let (_s, mut r) = conn.accept_bi().await?;
        let n = pump_recv(&mut r).await?;
        conn.close(0u32.into(), b"");
        anyhow::Ok(n)
    });
    let conn = client
        .connect_with(client_cfg, saddr, q::SERVER_NAME)?
        .await?;
    let (mut s, _r) = conn.open_bi().await?;
    let t = Instant::now();
    pump_send(&mut s, bytes).await?;
    let got = srv.await??;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(got == bytes, "received {got} of {bytes}");
    Ok(bytes as f64 / secs)
}

/// iroh (noq): bytes per second over one stream, direct on loopback.
pub async fn iroh_bulk(bytes: usize) -> Result<f64> {
    const ALPN: &[u8] = b"peerport/bench/1";
    let mk = || async {
        Endpoint::builder(presets::Minimal)
            .secret_key(SecretKey::generate())
            .alpns(vec![ALPN.to_vec()])
            .relay_mode(RelayMode::Disabled)
            .transport_config(crate::modes::iroh::transport_config(Duration::from_secs(
                30,
            )))
            .bind_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .bind()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let (a, b) = (mk().await?, mk().await?);
    let baddr =
        EndpointAddr::from_parts(b.id(), b.bound_sockets().into_iter().map(TransportAddr::Ip));
    let bb = b.clone();
    let srv = tokio::spawn(async move {
        let conn = bb.accept().await.context("no connection")?.await?;
        let (_s, mut r) = conn.accept_bi().await?;
        let n = pump_recv(&mut r).await?;
        conn.close(0u32.into(), b"");
        anyhow::Ok(n)
    });
    let conn = a.connect(baddr, ALPN).await?;
    let (mut s, _r) = conn.open_bi().await?;
    let t = Instant::now();
    pump_send(&mut s, bytes).await?;
    let got = srv.await??;
    let secs = t.elapsed().as_secs_f64();
    a.close().await;
    b.close().await;
    anyhow::ensure!(got == bytes, "received {got} of {bytes}");
    Ok(bytes as f64 / secs)
}

/// Run both and print JSON (`{"quinn": B/s, "iroh": B/s}`).
pub async fn run(megabytes: usize) -> Result<()> {
    let bytes = megabytes << 20;
    let quinn = quinn_bulk(bytes).await?;
    let iroh = iroh_bulk(bytes).await?;
    let _ = Arc::new(());
    println!("{{\"quinn_bytes_per_sec\": {quinn:.0}, \"iroh_bytes_per_sec\": {iroh:.0}}}");
    Ok(())
}
