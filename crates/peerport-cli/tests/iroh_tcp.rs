//! TCP through the real binary in `iroh` mode, against embedded relay and discovery servers on 127.0.0.1.

mod common;

use std::{
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use common::*;
use peerport_testkit::{pattern, spawn_tcp_echo};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_echo_and_parallel_connections() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let (mut s, ticket) = sender(&r, &format!("tcp://{echo}"), &[]).await;
    let (_rx, local) = receiver(&r, "tcp", &ticket, &[]).await;

    assert_eq!(
        echo_roundtrip(local, b"hello peerport").await,
        b"hello peerport"
    );
    // the ticket (it holds the access token) stays out of a non-terminal stderr
    s.wait_stderr("on the receiver, run").await;
    assert!(!s.stderr_text().contains(&ticket), "{}", s.stderr_text());

    let mut set = JoinSet::new();
    for i in 0..100u64 {
        set.spawn(async move {
            let data = pattern(64 * 1024, i + 1);
            let got = echo_roundtrip(local, &data).await;
            assert!(
                got == data,
                "connection {i} got {} bytes back, wrong content",
                got.len()
            );
        });
    }
    let mut done = 0;
    while let Some(r) = tokio::time::timeout(WAIT, set.join_next())
        .await
        .expect("100 connections in time")
    {
        r.unwrap();
        done += 1;
    }
    assert_eq!(done, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_each_direction() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let (_s, ticket) = sender(&r, &format!("tcp://{echo}"), &[]).await;
    let (_rx, local) = receiver(&r, "tcp", &ticket, &[]).await;
    // echo: 100 MB up and the same 100 MB down at the same time
    let data = pattern(100 << 20, 7);
    let want = Sha256::digest(&data);
    let got = tokio::time::timeout(Duration::from_secs(300), echo_roundtrip(local, &data))
        .await
        .expect("100 MB in 300 s");
    assert_eq!(got.len(), data.len());
    assert_eq!(Sha256::digest(&got), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_and_server_speaks_first() {
    let r = rendezvous().await;
    // a service that greets first, then reads until EOF, then answers with the byte count
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let svc_addr = l.local_addr().unwrap();
    let svc = tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                s.write_all(b"SSH-2.0-peerport-test\r\n").await.unwrap();
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                s.write_all(format!("got {} bytes", buf.len()).as_bytes())
                    .await
                    .unwrap();
                s.shutdown().await.unwrap();
            });
        }
    });
    let (_s, ticket) = sender(&r, &format!("tcp://{svc_addr}"), &[]).await;
    let (_rx, local) = receiver(&r, "tcp", &ticket, &[]).await;

    let mut c = TcpStream::connect(local).await.unwrap();
    // the banner arrives although the client has sent nothing
    let mut banner = [0u8; 23];
    tokio::time::timeout(WAIT, c.read_exact(&mut banner))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&banner, b"SSH-2.0-peerport-test\r\n");
    // half-close: shut our write side, the reply still arrives in full
    c.write_all(&[5u8; 10_000]).await.unwrap();
    c.shutdown().await.unwrap();
    let mut rest = String::new();
    tokio::time::timeout(WAIT, c.read_to_string(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, "got 10000 bytes");
    svc.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_path() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let (_s, ticket) = sender(&r, &format!("tcp://{echo}"), &[]).await;
    let (mut rx, local) = receiver(&r, "tcp", &ticket, &["--relay-only"]).await;
    let session = rx.wait_session().await;
    assert_eq!(
        session.path_kind,
        PathKind::Relay,
        "not relayed: {session:?}"
    );
    let data = pattern(2 << 20, 3);
    assert!(echo_roundtrip(local, &data).await == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_down_closes_client_promptly() {
    let r = rendezvous().await;
    // a port with nothing listening
    let dead = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let (mut s, ticket) = sender(&r, &format!("tcp://{dead}"), &[]).await;
    let (mut rx, local) = receiver(&r, "tcp", &ticket, &[]).await;
    let mut c = TcpStream::connect(local).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
        .await
        .expect("client closed within 10 s");
    assert!(matches!(n, Ok(0) | Err(_)), "unexpected data {n:?}");
    s.wait_stderr("cannot connect to source").await;
    rx.wait_stderr("sender refused").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_receiver_is_refused_before_the_service() {
    let r = rendezvous().await;
    let hits = Arc::new(AtomicUsize::new(0));
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let svc_addr = l.local_addr().unwrap();
    let h = hits.clone();
    let svc = tokio::spawn(async move {
        while l.accept().await.is_ok() {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    let (mut s, ticket) = sender(&r, &format!("tcp://{svc_addr}"), &[]).await;
    let good = peerport_signaling::Ticket::decode(&ticket).unwrap();

    // 1. a forged ticket: right endpoint id, wrong token
    let forged = peerport_signaling::Ticket {
        token: [0; 16],
        ..good.clone()
    }
    .encode();
    let mut rx = receiver_proc(&r, "tcp", &forged, &[]);
    // refused: exit 4 at once, no retry loop
    assert_eq!(rx.wait_exit(WAIT).await, Some(4));
    assert!(
        rx.stderr_text().contains("wrong access token"),
        "{}",
        rx.stderr_text()
    );
    assert_eq!(rx.connections().await, 0);
    assert_eq!(count_stderr(&rx, "reconnect"), 0, "{}", rx.stderr_text());

    // 2. only the endpoint id, no token
    let id = hex::encode(good.endpoint_id);
    let mut rx = receiver_proc(&r, "tcp", &id, &[]);
    assert_ne!(rx.wait_exit(WAIT).await, Some(0));
    assert!(
        rx.stderr_text().contains("no access token"),
        "{}",
        rx.stderr_text()
    );

    s.wait_status("the stranger refused", |s| {
        s.totals.refused_unauthorized >= 1
    })
    .await;
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the service was reached");
    svc.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_peer_admitted_and_others_refused() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("receiver.key");
    let (code, out, _) = run_to_end(&["generate-secret", "--output", key.to_str().unwrap()]).await;
    assert_eq!(code, 0);
    let rid = out
        .lines()
        .find_map(|l| l.strip_prefix("endpoint-id "))
        .unwrap()
        .to_string();
    let (_s, ticket) = sender(&r, &format!("tcp://{echo}"), &["--allowed-peer", &rid]).await;
    let id = hex::encode(
        peerport_signaling::Ticket::decode(&ticket)
            .unwrap()
            .endpoint_id,
    );
    // pinned receiver with only the bare id gets in
    let (_rx, local) = receiver(&r, "tcp", &id, &["--secret-file", key.to_str().unwrap()]).await;
    assert_eq!(echo_roundtrip(local, b"pinned").await, b"pinned");
    // an unpinned receiver is refused even with the full ticket
    let mut other = receiver_proc(&r, "tcp", &ticket, &[]);
    assert_ne!(other.wait_exit(WAIT).await, Some(0));
    assert!(
        other
            .stderr_text()
            .contains("not in the sender's allowed peers"),
        "{}",
        other.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_identity_keeps_ticket_across_restarts() {
    let r = rendezvous().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("sender.key");
    let k = key.to_str().unwrap();
    let (mut s1, t1) = sender(&r, "tcp://127.0.0.1:9", &["--secret-file", k]).await;
    s1.child.kill().await.unwrap();
    let (_s2, t2) = sender(&r, "tcp://127.0.0.1:9", &["--secret-file", k]).await;
    assert_eq!(t1, t2);
    // without the sender's relays (no --network), show-id prints the same
    // identity in a version 1 ticket, which finds the sender by discovery
    let (code, out, _) = run_to_end(&["show-id", "--secret-file", k]).await;
    assert_eq!(code, 0);
    let shown = out.lines().find_map(|l| l.strip_prefix("ticket ")).unwrap();
    let (shown, t1) = (
        peerport_signaling::Ticket::decode(shown).unwrap(),
        peerport_signaling::Ticket::decode(&t1).unwrap(),
    );
    assert_eq!((shown.endpoint_id, shown.token), (t1.endpoint_id, t1.token));
    assert!(shown.relays.urls.is_empty() && !t1.relays.urls.is_empty());
}
