//! A tunnel inside one program, through the library API: an embedded
//! relay and discovery server on 127.0.0.1, a TCP echo service, a
//! [`peerport::Sender`] in front of it and a [`peerport::Receiver`] that
//! listens locally; a client then talks to the service through the tunnel.
//!
//! Run: `cargo run --release -p peerport --example embedded`

use std::net::Ipv4Addr;

use peerport::{
    modes::{iroh::PeerSpec, IrohMode, Mode, ModeContext},
    Receiver, Sender,
};
use peerport_rendezvous::Rendezvous;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // infrastructure: relay + pkarr discovery on 127.0.0.1 (no internet)
    let rdv = Rendezvous::start(Ipv4Addr::LOCALHOST.into()).await?;
    let opts = rdv.iroh_options(false);

    // the service: a TCP echo
    let service = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let service_addr = service.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = service.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });

    let shutdown = CancellationToken::new();

    // sender side: the iroh mode with a fresh identity; setting it up binds
    // the endpoint and yields the acceptor, the authorizer that admits
    // receivers presenting the ticket's token, and the ticket to hand out
    let cx = ModeContext::default();
    let sender_mode = IrohMode {
        options: opts.clone(),
        ..Default::default()
    };
    let accepting = sender_mode.acceptor(&cx).await?;
    let ticket = accepting
        .announce
        .ticket
        .clone()
        .expect("iroh has a ticket");
    let sender = Sender::builder(format!("tcp://{service_addr}").parse()?)
        .auth(accepting.auth)
        .build();
    let sender_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { sender.run(accepting.acceptor, shutdown).await }
    });

    // receiver side: listen on 127.0.0.1 (any port) and dial the sender
    // named by the ticket; it reconnects by itself if the session is lost
    let receiver = Receiver::builder("tcp://127.0.0.1:0".parse()?)
        .bind()
        .await?;
    let local = receiver.local_addr();
    let receiver_mode = IrohMode {
        options: opts,
        peer: Some(PeerSpec::try_from(&ticket)?),
        ..Default::default()
    };
    let dialer = receiver_mode.dialer(&cx).await?.dialer;
    let receiver_task = tokio::spawn(receiver.run(dialer, shutdown.clone()));

    // a client of the tunnel
    let mut client = tokio::net::TcpStream::connect(local).await?;
    client.write_all(b"hello through peerport").await?;
    client.shutdown().await?;
    let mut reply = String::new();
    client.read_to_string(&mut reply).await?;
    println!("{local} -> tunnel -> {service_addr}: echoed {reply:?}");

    shutdown.cancel();
    receiver_task.await??;
    sender_task.await?;
    rdv.shutdown().await;
    Ok(())
}
