//! The commands behind the binary: each reads settings, runs the library,
//! and turns failures into messages that say what to do.

use std::sync::Arc;

use anyhow::{Context, Result};
use iroh::SecretKey;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    cli::{Cli, Command, IrohReceiverArgs, IrohSenderArgs, ReceiverMode, SenderMode},
    config::Role,
    engine::{self, Authorizer, BoundTarget, SenderContext},
    identity,
    modes::iroh as iroh_mode,
    rendezvous::Rendezvous,
    settings::{self, IrohReceiverSettings, IrohSenderSettings},
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
        Command::Demo { megabytes } => crate::demo::run(megabytes).await,
        Command::Rendezvous { bind } => {
            let r = Rendezvous::start(bind).await?;
            println!("relay-url {}", r.relay_url);
            println!("dns-server {}", r.pkarr_url);
            println!("dns-udp {}", r.dns_addr);
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

/// A token cancelled on Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        }
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
    engine::server::serve(IrohAcceptor(ep.clone()), ctx, s.max_sessions, cancel).await;
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
    let conn = tokio::select! {
        c = iroh_mode::connect(&ep, s.peer.id, s.connect_timeout) => c?,
        _ = cancel.cancelled() => { ep.close().await; return Ok(()); }
    };
    let result = tokio::select! {
        r = engine::run_receiver_session(conn.clone(), target, s.peer.token.clone(), s.engine.clone(), cancel.clone()) => r,
        _ = async { conn.watch_path().await; std::future::pending::<()>().await } => unreachable!(),
    };
    ep.close().await;
    result
        .map_err(|e| anyhow::anyhow!(e))
        .context("the tunnel ended; local listener closed (restart the receiver to reconnect)")
}
