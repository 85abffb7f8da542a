//! `peerport demo`: a real tunnel on this machine, no internet needed.
//!
//! Starts the embedded rendezvous servers (iroh relay, pkarr/DNS) on
//! 127.0.0.1, local TCP and UDP echo services, then for each path kind a
//! real [`peerport::Sender`] and [`peerport::Receiver`] over the mode's real acceptor and dialer
//! (copy-paste blobs through files), moves traffic through, verifies it by
//! SHA-256, and prints a table.
//! Rows: `iroh` direct and relay-only, `iroh-manual`, `ice` direct and
//! through the embedded TURN server, `nostr` (embedded Nostr relay); TCP and UDP each.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    task::JoinSet,
};

use peerport_signaling::nostr::NostrConfig;

use peerport::{
    addr::ForwardAddr,
    modes::{
        ice::{IcePath, TurnServer},
        iroh::{IrohOptions, PeerSpec},
        iroh_manual::IrohManualPath,
        manual::ManualPath,
        Announce, IrohMode, ManualMode, Mode, NostrMode,
    },
};
use peerport_rendezvous::Rendezvous;
use peerport_testkit::{pattern, spawn_tcp_echo, spawn_udp_echo, tunnel::Tunnel};

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
    r.iroh_options(relay_only)
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
        punch: true,
        quic: Default::default(),
        connect_timeout: Duration::from_secs(30),
    }
}

/// Run the demo and print the table.
pub async fn run(megabytes: usize) -> Result<()> {
    let started = Instant::now();
    let rdv = Rendezvous::start(Ipv4Addr::LOCALHOST.into()).await?;
    crate::out::say!(
        "embedded relay {}, discovery {}, STUN/TURN {} on 127.0.0.1",
        rdv.relay_url,
        rdv.pkarr_url,
        rdv.turn_addr
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
            crate::out::say!("running {mode} {}", source.protocol);
            rows.push(iroh_row(&rdv, mode, source, relay_only, megabytes).await?);
        }
        crate::out::say!("running iroh-manual {}", source.protocol);
        let p = IrohManualPath {
            bind: (Ipv4Addr::LOCALHOST, 0).into(),
            stun_servers: vec![rdv.turn_addr.to_string()],
            portmap: false,
            quic: Default::default(),
            connect_timeout: Duration::from_secs(30),
            metrics: Default::default(),
        };
        rows.push(manual_row(&p, "iroh-manual", source, megabytes).await?);
        for (mode, relay_only) in [("ice", false), ("ice --relay-only (TURN)", true)] {
            crate::out::say!("running {mode} {}", source.protocol);
            rows.push(manual_row(&ice_path(&rdv, relay_only), mode, source, megabytes).await?);
        }
        crate::out::say!("running nostr {}", source.protocol);
        rows.push(nostr_row(&rdv, source, megabytes).await?);
    }
    rdv.shutdown().await;
    services.shutdown().await;

    let mut table = String::from(
        "\n| mode | traffic | path | setup | throughput | check |\n|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} ms | {} | {} |\n",
            r.mode,
            r.proto,
            r.path,
            r.setup.as_millis(),
            r.throughput,
            r.check
        ));
    }
    table.push_str(&format!(
        "\ndemo finished in {:.1} s: every byte verified\n",
        started.elapsed().as_secs_f64()
    ));
    crate::out::print(table)
}

async fn iroh_row(
    rdv: &Rendezvous,
    mode: &'static str,
    source: &ForwardAddr,
    relay_only: bool,
    megabytes: usize,
) -> Result<Row> {
    let sender = IrohMode {
        options: local_options(rdv, false),
        ..Default::default()
    };
    let receiver = |a: &Announce| {
        anyhow::Ok(IrohMode {
            options: local_options(rdv, relay_only),
            peer: Some(PeerSpec::try_from(
                a.ticket.as_ref().context("the sender has no ticket")?,
            )?),
            ..Default::default()
        })
    };
    run_row(mode, source, &sender, receiver, megabytes).await
}

/// A copy-paste mode through blob files, as `--offer-file`/`--answer-file` do.
async fn manual_row<P: ManualPath + Clone>(
    path: &P,
    mode: &'static str,
    source: &ForwardAddr,
    megabytes: usize,
) -> Result<Row> {
    let dir = tempfile::tempdir()?;
    let both = ManualMode {
        path: path.clone(),
        offer_file: Some(dir.path().join("offers")),
        answer_file: Some(dir.path().join("answers")),
    };
    run_row(mode, source, &both, |_| anyhow::Ok(both.clone()), megabytes).await
}

async fn nostr_row(rdv: &Rendezvous, source: &ForwardAddr, megabytes: usize) -> Result<Row> {
    let (a_sec, a_pub) = peerport_signaling::nostr::generate();
    let (b_sec, b_pub) = peerport_signaling::nostr::generate();
    let mode = |secret: String, peer: String| NostrMode {
        signaling: NostrConfig {
            secret,
            peer,
            relays: vec![rdv.nostr_url()],
            kind: peerport_signaling::nostr::DEFAULT_KIND,
        },
        ice: ice_path(rdv, false),
    };
    let receiver = mode(b_sec, a_pub);
    run_row(
        "nostr",
        source,
        &mode(a_sec, b_pub),
        |_| anyhow::Ok(receiver),
        megabytes,
    )
    .await
}

/// Run a real [`peerport::Sender`] in `sender_mode` and a real [`peerport::Receiver`] in the
/// mode `receiver_mode` makes of what the sender announced (the ticket),
/// through the same [`Mode`] seam as the CLI; move traffic through, verify it.
async fn run_row<S: Mode, R: Mode>(
    mode: &'static str,
    source: &ForwardAddr,
    sender_mode: &S,
    receiver_mode: impl FnOnce(&Announce) -> Result<R>,
    megabytes: usize,
) -> Result<Row> {
    let tunnel = Tunnel::start(source, sender_mode, |a| Ok(receiver_mode(a)?))
        .await
        .map_err(|e| anyhow::anyhow!("{mode}: {e}"))?;
    let (local, t0) = (tunnel.local, tunnel.sender_ready.into_std());
    let traffic = match source.protocol {
        peerport::addr::Protocol::Tcp => tcp_traffic(local, megabytes, t0).await,
        peerport::addr::Protocol::Udp => udp_traffic(local, t0).await,
    };
    let path = tunnel.path().map_or("?".into(), |p| p.brief());
    if let Err(e) = tunnel.stop().await {
        tracing::warn!("demo receiver ended: {e}");
    }
    let (setup, throughput, check) = traffic?;
    Ok(Row {
        mode,
        proto: source.protocol.as_str(),
        path,
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
    // first packet: setup time (packets sent before the session is up are
    // dropped, so ask again every 20 ms: the figure's resolution)
    let mut setup = None;
    for _ in 0..1000 {
        s.send(b"hello").await?;
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(20), s.recv(&mut buf)).await {
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
