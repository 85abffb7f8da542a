//! Each mode that needs no server, run in the test process through the
//! [`peerport::modes::Mode`] seam (the test kit's `Tunnel`), waiting on the
//! receiver's typed path: the copy-paste modes through blob files.

use std::{net::Ipv4Addr, time::Duration};

use peerport::{
    modes::{ice::IcePath, iroh_manual::IrohManualPath, manual::ManualPath, ManualMode},
    transport::{Candidate, PathKind},
    ForwardAddr,
};
use peerport_testkit::{pattern, spawn_tcp_echo, tunnel::Tunnel};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    task::JoinSet,
};

const LIMIT: Duration = Duration::from_secs(30);

async fn echo_through(local: std::net::SocketAddr, len: usize) {
    let data = pattern(len, 5);
    let mut s = tokio::net::TcpStream::connect(local).await.unwrap();
    let (mut r, mut w) = s.split();
    let (_, got) = tokio::join!(
        async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        },
        async {
            let mut got = Vec::new();
            tokio::time::timeout(LIMIT, r.read_to_end(&mut got))
                .await
                .expect("echo within the limit")
                .unwrap();
            got
        }
    );
    assert!(got == data, "{} of {len} bytes back", got.len());
}

/// Both sides of a copy-paste mode, blobs through files in `dir`.
fn through_files<P: ManualPath + Clone>(path: P, dir: &std::path::Path) -> ManualMode<P> {
    ManualMode {
        path,
        offer_file: Some(dir.join("offers")),
        answer_file: Some(dir.join("answers")),
    }
}

async fn run<P: ManualPath + Clone>(path: P) -> peerport::transport::PathInfo {
    let mut services = JoinSet::new();
    let echo = spawn_tcp_echo(&mut services).await.unwrap();
    let source: ForwardAddr = format!("tcp://{echo}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mode = through_files(path, dir.path());
    let mut tunnel = Tunnel::start(&source, &mode, |_| Ok(mode.clone()))
        .await
        .unwrap();
    let up = tunnel.wait_up(LIMIT).await.unwrap();
    echo_through(tunnel.local, 1 << 20).await;
    tunnel.stop().await.unwrap();
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_by_files_goes_direct_between_host_candidates() {
    let path = IcePath {
        bind: (Ipv4Addr::LOCALHOST, 0).into(),
        stun_servers: Vec::new(),
        turn_servers: Vec::new(),
        relay_only: false,
        punch: true,
        quic: Default::default(),
        connect_timeout: LIMIT,
    };
    let up = run(path).await;
    assert_eq!(up.kind, PathKind::Direct, "{up}");
    assert_eq!(
        up.local.and_then(|h| h.candidate),
        Some(Candidate::Host),
        "{up}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iroh_manual_by_files_goes_direct() {
    let path = IrohManualPath {
        bind: (Ipv4Addr::LOCALHOST, 0).into(),
        stun_servers: Vec::new(),
        portmap: false,
        quic: Default::default(),
        connect_timeout: LIMIT,
        metrics: Default::default(),
    };
    let up = run(path).await;
    assert_eq!(up.kind, PathKind::Direct, "{up}");
}
