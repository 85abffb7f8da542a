//! The commands behind the binary: each reads settings, runs the library,
//! and turns failures into messages that say what to do.

use std::sync::Arc;

use anyhow::{Context, Result};
use iroh::SecretKey;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    cli::{
        Cli, Command, IceReceiverArgs, IceSenderArgs, IrohReceiverArgs, IrohSenderArgs,
        ManualReceiverArgs, ManualSenderArgs, NostrReceiverArgs, NostrSenderArgs, ReceiverMode,
        SenderMode,
    },
    config::Role,
    engine::{self, Authorizer, BoundTarget, SenderContext},
    identity,
    modes::{
        ice::IcePath,
        iroh as iroh_mode,
        iroh_manual::IrohManualPath,
        manual::{self, BlobSink, BlobSource, ManualAcceptor, ManualPath},
    },
    rendezvous::Rendezvous,
    settings::{self, IrohReceiverSettings, IrohSenderSettings, ManualSettings, NostrSettings},
    transport::{iroh::IrohAcceptor, TunnelConnection},
};

/// Run a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Sender {
            mode: SenderMode::Iroh(a),
        } => sender_iroh(a).await,
        Command::Receiver {
            mode: ReceiverMode::Iroh(a),
        } => receiver_iroh(a).await,
        Command::Sender {
            mode: SenderMode::IrohManual(a),
        } => {
            let s = manual_settings_sender(&a, "iroh-manual")?;
            manual_sender(Arc::new(iroh_manual_path(&s)), s).await
        }
        Command::Receiver {
            mode: ReceiverMode::IrohManual(a),
        } => {
            let s = manual_settings_receiver(&a, "iroh-manual")?;
            manual_receiver(&iroh_manual_path(&s), s).await
        }
        Command::Sender {
            mode: SenderMode::Ice(a),
        } => {
            let s = ice_settings_sender(&a)?;
            manual_sender(Arc::new(ice_path(&s)?), s).await
        }
        Command::Receiver {
            mode: ReceiverMode::Ice(a),
        } => {
            let s = ice_settings_receiver(&a)?;
            manual_receiver(&ice_path(&s)?, s).await
        }
        Command::GenerateSecret { output, force } => {
            let key = SecretKey::generate();
            identity::write(&output, &key, force)?;
            eprintln!("wrote a new secret key to {} (mode 0600)", output.display());
            print_identity(&key);
            Ok(())
        }
        Command::ShowId { secret_file } => {
            let key = identity::load(&secret_file)?;
            print_identity(&key);
            Ok(())
        }
        Command::Sender {
            mode: SenderMode::Nostr(a),
        } => sender_nostr(a).await,
        Command::Receiver {
            mode: ReceiverMode::Nostr(a),
        } => receiver_nostr(a).await,
        Command::GenerateNostrKey { output, force } => {
            let (nsec, npub) = peerport_signaling::nostr::generate();
            match output {
                Some(path) => {
                    identity::write_private(&path, &nsec, force)?;
                    eprintln!(
                        "wrote a new Nostr secret key to {} (mode 0600)",
                        path.display()
                    );
                }
                None => println!("{nsec}"),
            }
            println!("{npub}");
            Ok(())
        }
        Command::ShowNpub { nsec_file } => {
            let hex = settings::read_nsec(nsec_file.as_ref())?;
            println!("{}", peerport_signaling::nostr::npub_of(&hex)?);
            Ok(())
        }
        Command::Netcheck {
            stun_server,
            relay_url,
            relay_quic_port,
            relay_ca,
            relay,
            bind,
            json,
            ice,
        } => {
            let partial = crate::config::Partial {
                turn_server: (!ice.turn_server.is_empty()).then(|| ice.turn_server.clone()),
                turn_user: ice.turn_user.clone(),
                turn_password_file: ice.turn_password_file.clone(),
                ..Default::default()
            };
            let probe = crate::netcheck::Probe {
                bind: bind
                    .map(|b| b.parse())
                    .transpose()
                    .context("--bind must be IP:PORT")?,
                stun_servers: if stun_server.is_empty() {
                    crate::stun::DEFAULT_STUN_SERVERS
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                } else {
                    stun_server
                },
                turn_servers: settings::turn_servers(&partial)?,
                relay_urls: relay_url,
                relay_quic_port,
                relay_ca: match relay_ca {
                    Some(f) => crate::tlsfile::load_certs(&f)
                        .map_err(|e| anyhow::anyhow!("--relay-ca: {e}"))?,
                    None => Vec::new(),
                },
                nostr_relays: relay,
            };
            let report = crate::netcheck::run(&probe).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.text());
            }
            Ok(())
        }
        Command::BenchQuic {
            megabytes,
            pings,
            udp_secs,
        } => {
            crate::benchquic::run(crate::benchquic::BenchSpec {
                bulk_bytes: megabytes << 20,
                pings,
                datagram_runs: vec![(100, 1350), (100, 1450), (500, 1350), (500, 1450)],
                datagram_secs: udp_secs,
            })
            .await
        }
        Command::BenchFlood {
            targets,
            rate,
            secs,
        } => {
            anyhow::ensure!(
                targets.iter().all(|t| t.ip().is_loopback()),
                "bench-flood only sends to loopback addresses"
            );
            let r =
                tokio::task::spawn_blocking(move || crate::benchflood::run(&targets, rate, secs))
                    .await??;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Command::Demo { megabytes } => crate::demo::run(megabytes).await,
        Command::Rendezvous { bind } => {
            let r = Rendezvous::start(bind).await?;
            println!("relay-url {}", r.relay_url);
            println!("relay-quic-port {}", r.relay_quic_port);
            println!("relay-ca {}", r.relay_ca_file.display());
            println!("dns-server {}", r.pkarr_url);
            println!("dns-udp {}", r.dns_addr);
            println!("stun-server {}", r.turn_addr);
            println!("nostr-relay {}", r.nostr_url());
            println!(
                "turn-server turn:{} user {} password {}",
                r.turn_addr, r.turn_user, r.turn_password
            );
            eprintln!("embedded rendezvous servers running; Ctrl-C stops them");
            shutdown_signal().cancelled().await;
            r.shutdown().await;
            Ok(())
        }
    }
}

fn print_identity(key: &SecretKey) {
    println!("endpoint-id {}", key.public());
    println!("ticket {}", iroh_mode::ticket_for(key).encode());
}

/// The signal that asked the process to stop (0: none yet).
static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The signal (2 = SIGINT/Ctrl-C, 15 = SIGTERM) that stopped the process, if
/// any: the binary then exits with 128 + its number, as shells expect.
pub fn stop_signal() -> Option<i32> {
    match STOP_SIGNAL.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        n => Some(n),
    }
}

async fn recv_signal(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// A token cancelled on Ctrl-C or SIGTERM (see [`stop_signal`]).
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        let n = tokio::select! {
            _ = recv_signal(&mut int) => 2,
            _ = recv_signal(&mut term) => 15,
        };
        let _ = STOP_SIGNAL.compare_exchange(
            0,
            n,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        );
        info!("shutting down");
        t.cancel();
    });
    token
}

fn load_secret(path: Option<&std::path::Path>) -> Result<SecretKey> {
    Ok(match path {
        Some(p) => identity::load_or_create(p)?,
        None => SecretKey::generate(),
    })
}

async fn sender_iroh(args: IrohSenderArgs) -> Result<()> {
    let merged = settings::merge(args.partial(), &args.config, Role::Sender, "iroh")?;
    let s = IrohSenderSettings::from_partial(merged)?;
    let secret = load_secret(s.secret_file.as_deref())?;
    let ticket = iroh_mode::ticket_for(&secret).encode();
    let auth = Authorizer::new(
        identity::derive_token(&secret).to_vec(),
        s.allowed_peers.clone(),
    );
    let ep = iroh_mode::bind_endpoint(secret, &s.iroh).await?;
    if !iroh_mode::wait_online(&ep, std::time::Duration::from_secs(10)).await {
        warn!("no relay reachable yet: receivers can only find this sender directly (mDNS/LAN) until one is");
    }
    let ctx = Arc::new(SenderContext {
        source: Arc::new(s.source.clone()),
        auth,
        engine: s.engine.clone(),
    });
    // What the person must copy goes to stdout, alone; guidance to stderr.
    println!("{ticket}");
    eprintln!(
        "peerport sender (iroh) forwarding {} as endpoint {}",
        s.source,
        ep.id()
    );
    if s.allowed_peers.is_empty() {
        eprintln!("on the receiver, run:\n  peerport receiver iroh --node-id {ticket} --target {}://127.0.0.1:PORT", s.source.protocol);
    } else {
        eprintln!(
            "admitting only {} pinned receiver id(s); they connect with --node-id {}",
            s.allowed_peers.len(),
            ep.id()
        );
    }
    let cancel = shutdown_signal();
    engine::server::serve(IrohAcceptor::new(ep.clone()), ctx, s.max_sessions, cancel).await;
    ep.close().await;
    Ok(())
}

async fn receiver_iroh(args: IrohReceiverArgs) -> Result<()> {
    let merged = settings::merge(args.partial(), &args.config, Role::Receiver, "iroh")?;
    let s = IrohReceiverSettings::from_partial(merged)?;
    let target = BoundTarget::bind(&s.target).await?;
    let local = target
        .local_addr()
        .context("reading the listener address")?;
    info!(listen = %local, "listening for local clients");
    let secret = load_secret(s.secret_file.as_deref())?;
    let cancel = shutdown_signal();
    let ep = iroh_mode::bind_endpoint(secret, &s.iroh).await?;
    // a receiver only dials: every incoming attempt is ignored, statelessly
    let _ignore = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
        crate::transport::gate::ignore_all(ep.clone()),
    ));
    let conn = tokio::select! {
        c = iroh_mode::connect(&ep, s.peer.id, s.connect_timeout) => c,
        _ = cancel.cancelled() => { ep.close().await; return Ok(()); }
    };
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            ep.close().await;
            return Err(e.into());
        }
    };
    let result = receive_over(
        conn,
        target,
        s.peer.token.clone(),
        s.engine.clone(),
        cancel,
        "restart the receiver to reconnect",
    )
    .await;
    ep.close().await;
    result
}

/// The receiver's session over an established connection, shared by every
/// mode: forward until the tunnel ends, log path changes, release the
/// connection, and explain the end.
async fn receive_over<C: TunnelConnection>(
    conn: C,
    target: BoundTarget,
    token: Option<Vec<u8>>,
    engine_cfg: Arc<engine::EngineConfig>,
    cancel: tokio_util::sync::CancellationToken,
    hint: &str,
) -> Result<()> {
    let result = tokio::select! {
        r = engine::run_receiver_session(conn.clone(), target, token, engine_cfg, cancel) => r,
        _ = async { conn.watch_path().await; std::future::pending::<()>().await } => unreachable!(),
    };
    conn.close(engine::close_code::NORMAL, "receiver done");
    conn.shutdown().await;
    result
        .map_err(|e| anyhow::anyhow!(e))
        .with_context(|| format!("the tunnel ended; local listener closed ({hint})"))
}

fn manual_settings_sender(a: &ManualSenderArgs, mode: &str) -> Result<ManualSettings> {
    let merged = settings::merge(a.partial(), &a.config, Role::Sender, mode)?;
    Ok(ManualSettings::from_partial(merged, Role::Sender)?)
}

fn manual_settings_receiver(a: &ManualReceiverArgs, mode: &str) -> Result<ManualSettings> {
    let merged = settings::merge(a.partial(), &a.config, Role::Receiver, mode)?;
    Ok(ManualSettings::from_partial(merged, Role::Receiver)?)
}

fn ice_settings_sender(a: &IceSenderArgs) -> Result<ManualSettings> {
    let merged = settings::merge(a.partial(), &a.manual.config, Role::Sender, "ice")?;
    Ok(ManualSettings::from_partial(merged, Role::Sender)?)
}

fn ice_settings_receiver(a: &IceReceiverArgs) -> Result<ManualSettings> {
    let merged = settings::merge(a.partial(), &a.manual.config, Role::Receiver, "ice")?;
    Ok(ManualSettings::from_partial(merged, Role::Receiver)?)
}

fn ice_path(s: &ManualSettings) -> Result<IcePath> {
    if s.relay_only && s.turn_servers.is_empty() {
        anyhow::bail!("--relay-only needs a --turn-server");
    }
    Ok(IcePath {
        bind: s.bind,
        stun_servers: s.stun_servers.clone(),
        turn_servers: s.turn_servers.clone(),
        relay_only: s.relay_only,
        idle_timeout: s.idle_timeout,
        connect_timeout: s.connect_timeout,
    })
}

fn iroh_manual_path(s: &ManualSettings) -> IrohManualPath {
    IrohManualPath {
        bind: s.bind,
        stun_servers: s.stun_servers.clone(),
        portmap: s.portmap,
        idle_timeout: s.idle_timeout,
        connect_timeout: s.connect_timeout,
    }
}

/// Sender of a copy-paste mode: answer offers, one session each.
async fn manual_sender<P: ManualPath>(path: Arc<P>, s: ManualSettings) -> Result<()> {
    let ctx = Arc::new(SenderContext {
        source: Arc::new(s.forward.clone()),
        auth: Authorizer::transport_pinned(),
        engine: s.engine.clone(),
    });
    eprintln!("peerport sender ({}) forwarding {}", P::MODE, s.forward);
    let acceptor = ManualAcceptor::start(
        path,
        BlobSource::from_arg(s.offer_file.as_ref()),
        BlobSink::from_arg(s.answer_file.as_ref()),
    );
    let input_closed = acceptor.input_closed_flag();
    engine::server::serve(acceptor, ctx, s.max_sessions, shutdown_signal()).await;
    if input_closed.load(std::sync::atomic::Ordering::SeqCst) && stop_signal().is_none() {
        anyhow::bail!(
            "standard input closed, so no more offers could be read: keep the terminal open, or pass --offer-file FILE (and --answer-file) to run without one"
        );
    }
    Ok(())
}

/// Receiver of a copy-paste mode: offer, read the answer, forward.
async fn manual_receiver<P: ManualPath>(path: &P, s: ManualSettings) -> Result<()> {
    let target = BoundTarget::bind(&s.forward).await?;
    let local = target
        .local_addr()
        .context("reading the listener address")?;
    info!(listen = %local, "listening for local clients");
    let cancel = shutdown_signal();
    let conn = tokio::select! {
        c = manual::receiver_connect(
            path,
            BlobSink::from_arg(s.offer_file.as_ref()),
            BlobSource::from_arg(s.answer_file.as_ref()),
            manual::MAX_BLOB_AGE,
        ) => c?,
        _ = cancel.cancelled() => return Ok(()),
    };
    receive_over(
        conn,
        target,
        None,
        s.engine.clone(),
        cancel,
        "restart the receiver and exchange new blobs to reconnect",
    )
    .await
}

async fn sender_nostr(a: NostrSenderArgs) -> Result<()> {
    let merged = settings::merge(a.partial(), &a.config, Role::Sender, "nostr")?;
    let s = NostrSettings::from_partial(merged, Role::Sender)?;
    let path = Arc::new(ice_path(&s.path)?);
    let acceptor =
        crate::modes::nostr::NostrAcceptor::start(&s.nostr, path, s.path.max_sessions).await?;
    let ctx = Arc::new(SenderContext {
        source: Arc::new(s.path.forward.clone()),
        auth: Authorizer::transport_pinned(),
        engine: s.path.engine.clone(),
    });
    eprintln!(
        "peerport sender (nostr) forwarding {} as {}, answering {} over {} relay(s)",
        s.path.forward,
        peerport_signaling::nostr::npub_of(&s.nostr.secret)?,
        peerport_signaling::nostr::npub_of_public(&s.nostr.peer),
        s.nostr.relays.len()
    );
    engine::server::serve(acceptor, ctx, s.path.max_sessions, shutdown_signal()).await;
    Ok(())
}

async fn receiver_nostr(a: NostrReceiverArgs) -> Result<()> {
    let merged = settings::merge(a.partial(), &a.config, Role::Receiver, "nostr")?;
    let s = NostrSettings::from_partial(merged, Role::Receiver)?;
    let path = ice_path(&s.path)?;
    let target = BoundTarget::bind(&s.path.forward).await?;
    let local = target
        .local_addr()
        .context("reading the listener address")?;
    info!(listen = %local, "listening for local clients");
    let cancel = shutdown_signal();
    let conn = tokio::select! {
        c = crate::modes::nostr::receiver_connect(&s.nostr, &path, s.path.connect_timeout) => c?,
        _ = cancel.cancelled() => return Ok(()),
    };
    receive_over(
        conn,
        target,
        None,
        s.path.engine.clone(),
        cancel,
        "restart the receiver to reconnect",
    )
    .await
}
