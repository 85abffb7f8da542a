//! `peerport demo`: a real tunnel on this machine, no internet needed.
//!
//! Starts the embedded rendezvous servers (iroh relay, pkarr/DNS) on
//! 127.0.0.1, local TCP and UDP echo services, then for each path kind a
//! sender and a receiver (real iroh endpoints and the same engine the binary
//! uses), moves traffic through, verifies it by SHA-256, and prints a table.
//! Rows: `iroh` direct and relay-only, `iroh-manual`, `ice` direct and
//! through the embedded TURN server, `nostr` (embedded Nostr relay); TCP and UDP each.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use iroh::SecretKey;
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use peerport_signaling::{
    blob::{find_and_decode, Blob, Body, Expect, Kind},
    nostr::NostrConfig,
};

use crate::{
    addr::ForwardAddr,
    engine::{self, Authorizer, BoundTarget, EngineConfig, SenderContext},
    identity,
    modes::{
        ice::{IcePath, TurnServer},
        iroh::{self as iroh_mode, IrohOptions},
        iroh_manual::IrohManualPath,
        manual::{unix_now, ManualPath, Side},
    },
    rendezvous::Rendezvous,
    transport::{iroh::IrohAcceptor, Acceptor, TunnelConnection},
};

/// A TCP echo service on 127.0.0.1; runs until the returned set is dropped.
pub async fn spawn_tcp_echo(tasks: &mut JoinSet<()>) -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = l.local_addr()?;
    tasks.spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((s, _)) = l.accept().await {
            conns.spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// A UDP echo service on 127.0.0.1; runs until the returned set is dropped.
pub async fn spawn_udp_echo(tasks: &mut JoinSet<()>) -> std::io::Result<SocketAddr> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = s.local_addr()?;
    tasks.spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    Ok(addr)
}

/// Deterministic test data.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Row {
    mode: &'static str,
    proto: &'static str,
    path: String,
    setup: Duration,
    throughput: String,
    check: String,
}

/// Options for endpoints that stay on loopback and use only the embedded servers.
pub fn local_options(r: &Rendezvous, relay_only: bool) -> IrohOptions {
    IrohOptions {
        relay_urls: vec![r.relay_url.clone()],
        relay_quic_port: Some(r.relay_quic_port),
        relay_ca: vec![r.relay_cert.clone()],
        relay_only,
        dns_server: Some(r.pkarr_url.clone()),
        mdns: false,
        bind: Some((Ipv4Addr::LOCALHOST, 0).into()),
        portmap: false,
        idle_timeout: Duration::from_secs(30),
    }
}

fn ice_path(r: &Rendezvous, relay_only: bool) -> IcePath {
    IcePath {
        bind: (Ipv4Addr::LOCALHOST, 0).into(),
        stun_servers: vec![r.turn_addr.to_string()],
        turn_servers: vec![TurnServer {
            host_port: r.turn_addr.to_string(),
            user: r.turn_user.clone(),
            password: r.turn_password.clone(),
        }],
        relay_only,
        idle_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(30),
    }
}

/// Run the demo and print the table.
pub async fn run(megabytes: usize) -> Result<()> {
    let started = Instant::now();
    let rdv = Rendezvous::start(Ipv4Addr::LOCALHOST.into()).await?;
    eprintln!(
        "embedded relay {}, discovery {}, STUN/TURN {} on 127.0.0.1",
        rdv.relay_url, rdv.pkarr_url, rdv.turn_addr
    );
    let mut services = JoinSet::new();
    let tcp_echo = spawn_tcp_echo(&mut services).await?;
    let udp_echo = spawn_udp_echo(&mut services).await?;
    let sources: [ForwardAddr; 2] = [
        format!("tcp://{tcp_echo}").parse()?,
        format!("udp://{udp_echo}").parse()?,
    ];
    let mut rows = Vec::new();
    for source in &sources {
        for relay_only in [false, true] {
            let mode = if relay_only {
                "iroh --relay-only"
            } else {
                "iroh"
            };
            eprintln!("running {mode} {}", source.protocol);
            rows.push(iroh_row(&rdv, mode, source, relay_only, megabytes).await?);
        }
        eprintln!("running iroh-manual {}", source.protocol);
        let p = IrohManualPath {
            bind: (Ipv4Addr::LOCALHOST, 0).into(),
            stun_servers: vec![rdv.turn_addr.to_string()],
            portmap: false,
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
        };
        rows.push(manual_row(&p, "iroh-manual", source, megabytes).await?);
        for (mode, relay_only) in [("ice", false), ("ice --relay-only (TURN)", true)] {
            eprintln!("running {mode} {}", source.protocol);
            rows.push(manual_row(&ice_path(&rdv, relay_only), mode, source, megabytes).await?);
        }
        eprintln!("running nostr {}", source.protocol);
        rows.push(nostr_row(&rdv, source, megabytes).await?);
    }
    rdv.shutdown().await;
    services.shutdown().await;

    println!();
    println!("| mode | traffic | path | setup | throughput | check |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} ms | {} | {} |",
            r.mode,
            r.proto,
            r.path,
            r.setup.as_millis(),
            r.throughput,
            r.check
        );
    }
    println!(
        "\ndemo finished in {:.1} s: every byte verified",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn iroh_row(
    rdv: &Rendezvous,
    mode: &'static str,
    source: &ForwardAddr,
    relay_only: bool,
    megabytes: usize,
) -> Result<Row> {
    let secret = SecretKey::generate();
    let token = identity::derive_token(&secret).to_vec();
    let sender_ep = iroh_mode::bind_endpoint(secret.clone(), &local_options(rdv, false)).await?;
    iroh_mode::wait_online(&sender_ep, Duration::from_secs(10)).await;
    let t0 = Instant::now();
    let recv_ep =
        iroh_mode::bind_endpoint(SecretKey::generate(), &local_options(rdv, relay_only)).await?;
    let mut acceptor = IrohAcceptor::new(sender_ep.clone());
    let (accepted, dialed) = tokio::join!(
        acceptor.accept(),
        iroh_mode::connect(&recv_ep, secret.public(), Duration::from_secs(30))
    );
    let sender_conn = accepted
        .context("sender endpoint closed")?
        .map_err(anyhow::Error::msg)?;
    let row = run_row(
        mode,
        source,
        sender_conn,
        dialed?,
        Some(token),
        t0,
        megabytes,
    )
    .await;
    recv_ep.close().await;
    sender_ep.close().await;
    row
}

async fn manual_row<P: ManualPath>(
    path: &P,
    mode: &'static str,
    source: &ForwardAddr,
    megabytes: usize,
) -> Result<Row> {
    let t0 = Instant::now();
    // the copy-paste exchange, in-process (armored text both ways)
    let (r_prep, offer) = path
        .prepare(Side::Offerer)
        .await
        .map_err(anyhow::Error::msg)?;
    let (s_prep, answer) = path
        .prepare(Side::Answerer)
        .await
        .map_err(anyhow::Error::msg)?;
    let through_text = |kind, body| -> Result<Body> {
        let b = Blob {
            kind,
            session: [7; 8],
            created: unix_now(),
            body,
        };
        let e = Expect {
            kind,
            mode: P::MODE,
            session: None,
            now: unix_now(),
            max_age: 60,
        };
        Ok(find_and_decode(&b.to_armor(), &e)?.body)
    };
    let offer = through_text(Kind::Offer, offer)?;
    let answer = through_text(Kind::Answer, answer)?;
    let (s, r) = tokio::join!(
        path.connect(s_prep, offer, Side::Answerer, None),
        path.connect(r_prep, answer, Side::Offerer, None)
    );
    let (s, r) = (
        s.map_err(anyhow::Error::msg)?,
        r.map_err(anyhow::Error::msg)?,
    );
    run_row(mode, source, s, r, None, t0, megabytes).await
}

async fn nostr_row(rdv: &Rendezvous, source: &ForwardAddr, megabytes: usize) -> Result<Row> {
    let (a_sec, a_pub) = peerport_signaling::nostr::generate();
    let (b_sec, b_pub) = peerport_signaling::nostr::generate();
    let cfg = |secret: String, peer: String| NostrConfig {
        secret,
        peer,
        relays: vec![rdv.nostr_url()],
        kind: peerport_signaling::nostr::DEFAULT_KIND,
    };
    let path = Arc::new(ice_path(rdv, false));
    let mut acceptor =
        crate::modes::nostr::NostrAcceptor::start(&cfg(a_sec, b_pub), path.clone(), 4).await?;
    let t0 = Instant::now();
    let receiver_cfg = cfg(b_sec, a_pub);
    let (accepted, dialed) = tokio::join!(
        acceptor.accept(),
        crate::modes::nostr::receiver_connect(&receiver_cfg, &path, Duration::from_secs(30))
    );
    let s = accepted
        .context("nostr acceptor ended")?
        .map_err(anyhow::Error::msg)?;
    let row = run_row("nostr", source, s, dialed?, None, t0, megabytes).await;
    acceptor.shutdown().await;
    row
}

/// Run a sender and a receiver session over an established pair of
/// connections, move traffic, verify it.
async fn run_row<C: TunnelConnection>(
    mode: &'static str,
    source: &ForwardAddr,
    sender_conn: C,
    receiver_conn: C,
    token: Option<Vec<u8>>,
    t0: Instant,
    megabytes: usize,
) -> Result<Row> {
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let auth = match &token {
        Some(t) => Authorizer::new(t.clone(), []),
        None => Authorizer::transport_pinned(),
    };
    let ctx = Arc::new(SenderContext {
        source: Arc::new(source.clone()),
        auth,
        engine: Arc::new(EngineConfig::default()),
    });
    let (sc, c) = (sender_conn.clone(), cancel.clone());
    tasks.spawn(async move {
        let _ = engine::serve_sender_session(sc, ctx, c).await;
    });
    let target: ForwardAddr = format!("{}://127.0.0.1:0", source.protocol).parse()?;
    let bound = BoundTarget::bind(&target).await?;
    let local = bound.local_addr()?;
    let (rc, c) = (receiver_conn.clone(), cancel.clone());
    tasks.spawn(async move {
        if let Err(e) =
            engine::run_receiver_session(rc, bound, token, Arc::new(EngineConfig::default()), c)
                .await
        {
            tracing::warn!("demo receiver ended: {e}");
        }
    });
    let traffic = match source.protocol {
        crate::addr::Protocol::Tcp => tcp_traffic(local, megabytes, t0).await,
        crate::addr::Protocol::Udp => udp_traffic(local, t0).await,
    };
    let path = receiver_conn.path_summary();
    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    for c in [&sender_conn, &receiver_conn] {
        c.close(0, "demo done");
        c.shutdown().await;
    }
    let (setup, throughput, check) = traffic?;
    Ok(Row {
        mode,
        proto: source.protocol.as_str(),
        path: path.split(" ->").next().unwrap_or("?").to_string(),
        setup,
        throughput,
        check,
    })
}

async fn tcp_traffic(
    local: SocketAddr,
    megabytes: usize,
    t0: Instant,
) -> Result<(Duration, String, String)> {
    let mut s = TcpStream::connect(local).await?;
    s.write_all(b"x").await?;
    let mut one = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut one))
        .await
        .context("no echo through the tunnel in 20 s")??;
    let setup = t0.elapsed();
    let data = pattern(megabytes << 20, 42);
    let want = Sha256::digest(&data);
    let (mut r, mut w) = s.into_split();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await?;
        w.shutdown().await?;
        Ok::<_, std::io::Error>(())
    });
    let mut got = Vec::with_capacity(megabytes << 20);
    tokio::time::timeout(Duration::from_secs(300), r.read_to_end(&mut got))
        .await
        .context("echo transfer took over 300 s")??;
    writer.await??;
    let secs = start.elapsed().as_secs_f64();
    if Sha256::digest(&got) != want {
        bail!(
            "TCP data corrupted in the tunnel ({} bytes back)",
            got.len()
        );
    }
    Ok((
        setup,
        format!("{:.0} MB/s each way", megabytes as f64 * 1.048_576 / secs),
        format!("{megabytes} MiB sha256 ok"),
    ))
}

async fn udp_traffic(local: SocketAddr, t0: Instant) -> Result<(Duration, String, String)> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    s.connect(local).await?;
    let mut buf = vec![0u8; 65_536];
    // first packet: setup time
    let mut setup = None;
    for _ in 0..100 {
        s.send(b"hello").await?;
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), s.recv(&mut buf)).await
        {
            setup = Some(t0.elapsed());
            break;
        }
    }
    let setup = setup.context("no UDP echo through the tunnel in 20 s")?;
    let sizes: Vec<usize> = (0..300)
        .map(|i| match i % 10 {
            0 => 8000,
            1 => 1450,
            _ => 1200,
        })
        .collect();
    let (mut sent, mut ok, mut bytes) = (0, 0, 0usize);
    let start = Instant::now();
    for (i, size) in sizes.iter().enumerate() {
        let p = pattern(*size, i as u64 + 1);
        s.send(&p).await?;
        sent += 1;
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf)).await
        {
            if buf[..n] == p[..] {
                ok += 1;
                bytes += n;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((
        setup,
        format!("{:.1} MB/s ping-pong", bytes as f64 / secs / 1e6),
        format!("{ok}/{sent} packets (1200-8000 B) echoed intact"),
    ))
}
