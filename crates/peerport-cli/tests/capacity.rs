//! A session carries at most `--max-connections` TCP connections at once:
//! a client beyond is closed at once (never left waiting for a stream the
//! QUIC connection cannot open), counted in the status and said in the
//! log; a place that frees up is used again. The real binary in mode
//! `ice` on loopback.

mod common;

use std::time::Duration;

use common::*;
use peerport_testkit::spawn_tcp_echo;
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_beyond_the_connection_limit_is_closed_at_once() {
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _tx = manual_sender("ice", &format!("tcp://{echo}"), dir.path(), &[]);
    let limit = ["--max-connections".to_string(), "3".to_string()];
    let (mut rx, local) = manual_receiver("ice", "tcp", dir.path(), &limit).await;
    let mut held = Vec::new();
    for i in 0..3u8 {
        let mut c = Held::open(local).await;
        assert_eq!(
            c.echo(&[i; 100], WAIT).await.as_deref(),
            Some(&[i; 100][..])
        );
        held.push(c);
    }
    let mut beyond = Held::open(local).await;
    assert!(
        beyond.closed_within(Duration::from_secs(5)).await,
        "a client beyond the limit was left waiting"
    );
    let st = rx
        .wait_status("the refusal counted", |s| {
            s.totals.sums.tcp_refused_full >= 1
        })
        .await;
    assert_eq!(st.totals.sums.tcp_open, 3);
    rx.wait_stderr("this session carries 3 connections, the most it may")
        .await;

    // a place that frees up is used again
    drop(held.pop());
    rx.wait_status("a place freed", |s| s.totals.sums.tcp_open == 2)
        .await;
    let mut again = Held::open(local).await;
    assert_eq!(
        again.echo(b"again", WAIT).await.as_deref(),
        Some(&b"again"[..])
    );
}
