//! UDP through the real binary in `iroh` mode.

mod common;

use std::{collections::HashSet, net::Ipv4Addr, time::Duration};

use common::*;
use peerport_testkit::{pattern, spawn_udp_echo};
use tokio::{net::UdpSocket, task::JoinSet};

async fn udp_ask(s: &UdpSocket, msg: &[u8]) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65_536];
    for _ in 0..20 {
        s.send(msg).await.unwrap();
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf)).await
        {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_no_crosstalk() {
    let r = rendezvous().await;
    // the service answers with the address it saw, so distinct flows are visible
    let svc = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let svc_addr = svc.local_addr().unwrap();
    let svc_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = svc.recv_from(&mut buf).await {
            let mut reply = format!("{from}|").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = svc.send_to(&reply, from).await;
        }
    });
    let (_s, ticket) = sender(&r, &format!("udp://{svc_addr}"), &[]).await;
    let (_rx, local) = receiver(&r, "udp", &ticket, &[]).await;

    let mut set = JoinSet::new();
    for c in 0..3 {
        set.spawn(async move {
            let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
            s.connect(local).await.unwrap();
            let mut seen = HashSet::new();
            for i in 0..20 {
                let msg = format!("client{c}-msg{i}");
                let reply = udp_ask(&s, msg.as_bytes()).await.expect("reply");
                let reply = String::from_utf8(reply).unwrap();
                let (from, body) = reply.split_once('|').unwrap();
                assert!(
                    body.starts_with(&format!("client{c}-")),
                    "client {c} got {body}"
                );
                seen.insert(from.to_string());
            }
            assert_eq!(seen.len(), 1, "one flow per client");
            seen.into_iter().next().unwrap()
        });
    }
    let mut froms = HashSet::new();
    while let Some(r) = tokio::time::timeout(WAIT, set.join_next()).await.unwrap() {
        froms.insert(r.unwrap());
    }
    assert_eq!(
        froms.len(),
        3,
        "the service must see three distinct clients"
    );
    svc_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_packets_are_fragmented_and_delivered() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_udp_echo(&mut svc).await.unwrap();
    let (_s, ticket) = sender(&r, &format!("udp://{echo}"), &[]).await;
    let (_rx, local) = receiver(&r, "udp", &ticket, &[]).await;
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    s.connect(local).await.unwrap();
    for (i, size) in [1500usize, 8000, 1200, 1450, 30_000, 60_000]
        .into_iter()
        .enumerate()
    {
        let p = pattern(size, i as u64 + 9);
        let got = udp_ask(&s, &p)
            .await
            .unwrap_or_else(|| panic!("{size}-byte packet lost"));
        assert!(
            got == p,
            "{size}-byte packet corrupted ({} bytes back)",
            got.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_relay_only() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_udp_echo(&mut svc).await.unwrap();
    let (_s, ticket) = sender(&r, &format!("udp://{echo}"), &[]).await;
    let (mut rx, local) = receiver(&r, "udp", &ticket, &["--relay-only"]).await;
    let session = rx.wait_session().await;
    assert_eq!(session.path_kind, PathKind::Relay, "{session:?}");
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    s.connect(local).await.unwrap();
    let p = pattern(8000, 1);
    assert!(udp_ask(&s, &p).await.unwrap() == p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_mismatch_is_explained() {
    let r = rendezvous().await;
    let (_s, ticket) = sender(&r, "udp://127.0.0.1:9", &[]).await;
    let mut rx = receiver_proc(&r, "tcp", &ticket, &[]);
    assert_ne!(rx.wait_exit(WAIT).await, Some(0));
    assert!(
        rx.stderr_text().contains("use a udp:// target"),
        "{}",
        rx.stderr_text()
    );
}
