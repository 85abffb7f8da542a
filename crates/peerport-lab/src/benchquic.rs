//! `peerport-lab bench-quic`: the bare QUIC stacks, no tunnel around them, as
//! the baseline for `scripts/bench`. Two endpoints in this process on
//! 127.0.0.1 with the same transport settings peerport uses, written once
//! over [`TunnelConnection`] for quinn and iroh's noq:
//!
//! * bulk: one stream moves N bytes, then eight streams N/8 each at once;
//! * ping-pong: 1-byte request/response on one stream, p50/p99;
//! * datagrams: a paced stream of UDP-sized packets (fragmented exactly as
//!   the tunnel does), received rate and loss.
//!
//! Prints JSON.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use iroh::{endpoint::presets, Endpoint, EndpointAddr, RelayMode, SecretKey, TransportAddr};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use peerport::{
    proto::datagram::{fragment, Reassembler},
    transport::{iroh::IrohConnection, quinn::QuinnConnection, TunnelConnection},
};

const CHUNK: usize = 256 * 1024;

/// What `bench-quic` measures.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// Bytes for the bulk transfer.
    pub bulk_bytes: usize,
    /// Ping-pong rounds.
    pub pings: usize,
    /// Datagram runs: (offered Mbit/s, packet bytes).
    pub datagram_runs: Vec<(u64, usize)>,
    /// Seconds per datagram run.
    pub datagram_secs: f64,
}

/// Results for one stack.
#[derive(Debug, Serialize)]
pub struct StackResult {
    /// Bulk throughput, bytes per second.
    pub bulk_bytes_per_sec: f64,
    /// Bulk throughput over eight streams at once, bytes per second.
    pub bulk8_bytes_per_sec: f64,
    /// CPU seconds (both endpoints: this process) per GiB of the bulk transfer.
    pub bulk_cpu_s_per_gib: Option<f64>,
    /// Ping-pong round trip p50, microseconds.
    pub ping_p50_us: f64,
    /// Ping-pong round trip p99, microseconds.
    pub ping_p99_us: f64,
    /// One entry per datagram run.
    pub datagrams: Vec<DatagramResult>,
}

/// One paced datagram run.
#[derive(Debug, Serialize)]
pub struct DatagramResult {
    /// Offered rate, Mbit/s.
    pub offered_mbps: u64,
    /// Packet size, bytes.
    pub packet_bytes: usize,
    /// Packets offered.
    pub sent: u64,
    /// Packets received whole.
    pub received: u64,
    /// Loss, percent.
    pub loss_pct: f64,
    /// Path datagram limit when the run started.
    pub max_datagram: usize,
}

/// CPU seconds this process has used (user + system), from /proc.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// `n` streams at once, `bytes / n` each: total bytes per second.
async fn bulk_streams<C: TunnelConnection>(
    client: &C,
    server: &C,
    bytes: usize,
    n: usize,
) -> Result<f64> {
    let each = bytes / n;
    let srv = server.clone();
    let rx = tokio::spawn(async move {
        let mut readers = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (_s, mut r) = srv.accept_bi().await?;
            readers.spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                let mut total = 0;
                loop {
                    let k = r.read(&mut buf).await?;
                    if k == 0 {
                        return anyhow::Ok((total, _s));
                    }
                    total += k;
                }
            });
        }
        let mut total = 0;
        while let Some(r) = readers.join_next().await {
            total += r??.0;
        }
        anyhow::Ok(total)
    });
    let t = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (mut s, r) = client.open_bi().await?;
        writers.spawn(async move {
            let buf = vec![0x5au8; CHUNK];
            let mut left = each;
            while left > 0 {
                let k = left.min(CHUNK);
                s.write_all(&buf[..k]).await?;
                left -= k;
            }
            s.shutdown().await?;
            anyhow::Ok(r)
        });
    }
    let mut keep = Vec::new();
    while let Some(w) = writers.join_next().await {
        keep.push(w??);
    }
    let got = rx.await??;
    anyhow::ensure!(got == each * n, "received {got} of {}", each * n);
    Ok(got as f64 / t.elapsed().as_secs_f64())
}

async fn pingpong<C: TunnelConnection>(client: &C, server: &C, n: usize) -> Result<(f64, f64)> {
    let srv = server.clone();
    let echo = tokio::spawn(async move {
        let (mut s, mut r) = srv.accept_bi().await?;
        let mut b = [0u8; 1];
        while r.read_exact(&mut b).await.is_ok() {
            s.write_all(&b).await?;
        }
        anyhow::Ok(())
    });
    let (mut s, mut r) = client.open_bi().await?;
    let mut b = [0u8; 1];
    s.write_all(b"x").await?; // warm-up: the stream exists on both sides
    r.read_exact(&mut b).await?;
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(b"x").await?;
        r.read_exact(&mut b).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    s.shutdown().await?;
    let _ = echo.await;
    lat.sort_by(f64::total_cmp);
    Ok((lat[n / 2], lat[n * 99 / 100]))
}

async fn datagrams<C: TunnelConnection>(
    client: &C,
    server: &C,
    mbps: u64,
    len: usize,
    secs: f64,
) -> Result<DatagramResult> {
    let max = client
        .max_datagram_size()
        .context("datagrams are off on this connection")?;
    let received = Arc::new(AtomicU64::new(0));
    let srv = server.clone();
    let got = received.clone();
    let counter = tokio::spawn(async move {
        let mut reasm = Reassembler::new(512, Duration::from_secs(2));
        while let Ok(d) = srv.read_datagram().await {
            if reasm.push(d, Instant::now()).is_some() {
                got.fetch_add(1, Relaxed);
            }
        }
    });
    // pace in 1 ms ticks like iperf3 does
    let per_sec = (mbps * 1_000_000 / 8) as f64 / len as f64;
    let packet = vec![0xa5u8; len];
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sent: u64 = 0;
    let mut seq: u16 = 0;
    while start.elapsed().as_secs_f64() < secs {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * per_sec) as u64;
        while sent < due {
            let max_now = client.max_datagram_size().unwrap_or(max);
            for f in fragment(1, seq, &packet, max_now)? {
                client.send_datagram(f).await?;
            }
            seq = seq.wrapping_add(1);
            sent += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    counter.abort();
    let received = received.load(Relaxed);
    Ok(DatagramResult {
        offered_mbps: mbps,
        packet_bytes: len,
        sent,
        received,
        loss_pct: 100.0 * sent.saturating_sub(received) as f64 / sent.max(1) as f64,
        max_datagram: max,
    })
}

async fn run_stack<C: TunnelConnection>(
    client: C,
    server: C,
    spec: &BenchSpec,
) -> Result<StackResult> {
    let cpu0 = process_cpu_seconds();
    let bulk_bytes_per_sec = bulk_streams(&client, &server, spec.bulk_bytes, 1).await?;
    let bulk_cpu_s_per_gib = cpu0
        .zip(process_cpu_seconds())
        .map(|(a, b)| (b - a) / (spec.bulk_bytes as f64 / f64::from(1u32 << 30)));
    let bulk8_bytes_per_sec = bulk_streams(&client, &server, spec.bulk_bytes, 8).await?;
    let (ping_p50_us, ping_p99_us) = pingpong(&client, &server, spec.pings).await?;
    let mut dg = Vec::new();
    for &(mbps, len) in &spec.datagram_runs {
        dg.push(datagrams(&client, &server, mbps, len, spec.datagram_secs).await?);
    }
    client.close(0, "done");
    server.close(0, "done");
    client.shutdown().await;
    server.shutdown().await;
    Ok(StackResult {
        bulk_bytes_per_sec,
        bulk8_bytes_per_sec,
        bulk_cpu_s_per_gib,
        ping_p50_us,
        ping_p99_us,
        datagrams: dg,
    })
}

/// A connected iroh pair (client, server), direct on loopback, peerport's settings.
pub async fn iroh_pair() -> Result<(IrohConnection, IrohConnection)> {
    const ALPN: &[u8] = b"peerport/bench/1";
    let mk = || async {
        Endpoint::builder(presets::Minimal)
            .secret_key(SecretKey::generate())
            .alpns(vec![ALPN.to_vec()])
            .relay_mode(RelayMode::Disabled)
            .transport_config(peerport::modes::iroh::transport_config(&Default::default()))
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
    let accept =
        tokio::spawn(async move { anyhow::Ok(bb.accept().await.context("no connection")?.await?) });
    let cc = a.connect(baddr, ALPN).await?;
    let sc = accept.await??;
    Ok((IrohConnection::owning(cc, a), IrohConnection::owning(sc, b)))
}

/// Run both stacks and print JSON.
pub async fn run(spec: BenchSpec) -> Result<()> {
    let (qc, qs) = QuinnConnection::loopback_pair().await?;
    let quinn = run_stack(qc, qs, &spec).await.context("quinn")?;
    let (ic, is) = iroh_pair().await?;
    let iroh = run_stack(ic, is, &spec).await.context("iroh")?;
    println!(
        "{}",
        serde_json::json!({
            "quinn": quinn,
            "iroh": iroh,
            // kept for older readers of the output
            "quinn_bytes_per_sec": quinn.bulk_bytes_per_sec,
            "iroh_bytes_per_sec": iroh.bulk_bytes_per_sec,
        })
    );
    Ok(())
}
