//! What peerport's tests share: local echo services, deterministic data,
//! and [`tunnel::Tunnel`], a sender and a receiver of any mode in the test
//! process. Everything stays on 127.0.0.1.

pub mod tunnel;

use std::net::{Ipv4Addr, SocketAddr};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, UdpSocket},
    task::JoinSet,
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
