//! Open TCP connections outlive the tunnel: after a blackout longer than
//! the idle timeout the receiver reconnects, presents its session ticket,
//! and both sides replay what the other had not delivered, so the local
//! sockets never notice. When the sender restarted, the old connections
//! end cleanly (with a line saying why) and new ones work. A sender that
//! stops answering is given up after seconds of silence, not at the idle
//! timeout.

mod common;

use std::time::Duration;

use common::*;
use peerport_testkit::{pattern, spawn_tcp_echo};
use tokio::task::JoinSet;

/// iroh: the sender is stopped (SIGSTOP) for longer than the idle
/// timeout; an open connection carries on afterwards, with the bytes
/// written during the outage, then 4 MiB exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iroh_blackout_keeps_open_connections() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let s = KeyedSender::start(&r, format!("tcp://{echo}")).await;
    let (mut rx, local) = receiver(&r, "tcp", &s.ticket, &["--idle-timeout", "3"]).await;
    let mut held = Held::open(local).await;
    assert_eq!(held.echo(b"before", WAIT).await.unwrap(), b"before");
    s.proc.signal(19); // SIGSTOP
    rx.wait_lost().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = std::time::Instant::now();
    s.proc.signal(18); // SIGCONT
    let during = held.echo(b"written while the tunnel was down", WAIT).await;
    assert_eq!(
        during.as_deref(),
        Some(&b"written while the tunnel was down"[..]),
        "{}",
        rx.stderr_text()
    );
    eprintln!(
        "iroh: open connection resumed {} ms after the path came back",
        t0.elapsed().as_millis()
    );
    let data = pattern(4 << 20, 7);
    assert!(held.echo(&data, WAIT).await.unwrap() == data);
    rx.wait_status("a stream resumed", |s| s.totals.resumes >= 1)
        .await;
}

/// The sender process restarted: its side of the old connections is gone,
/// so they end (the receiver says why) and new connections work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_restart_ends_old_connections_cleanly() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let mut s = KeyedSender::start(&r, format!("tcp://{echo}")).await;
    let (mut rx, local) = receiver(&r, "tcp", &s.ticket, &["--idle-timeout", "3"]).await;
    let mut held = Held::open(local).await;
    assert_eq!(held.echo(b"before", WAIT).await.unwrap(), b"before");
    s.proc.child.kill().await.unwrap();
    rx.wait_lost().await;
    s.start_again(&r).await;
    rx.wait_stderr("the sender did not resume the session")
        .await;
    assert!(
        held.closed_within(WAIT).await,
        "the old connection stays open"
    );
    let mut fresh = Held::open(local).await;
    assert_eq!(fresh.echo(b"after", WAIT).await.unwrap(), b"after");
}

/// A sender that stops answering (SIGSTOP) is given up after a few
/// seconds of silence, not at the idle timeout (here 120 s, longer than
/// any wait below): the receiver redials, reconnects as soon as the
/// sender answers again, and the open connection resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sender_is_given_up_in_seconds_not_at_the_idle_timeout() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let s = KeyedSender::start(&r, format!("tcp://{echo}")).await;
    let (mut rx, local) = receiver(&r, "tcp", &s.ticket, &["--idle-timeout", "120"]).await;
    let mut held = Held::open(local).await;
    assert_eq!(held.echo(b"before", WAIT).await.unwrap(), b"before");
    s.proc.signal(19); // SIGSTOP
    let stopped = std::time::Instant::now();
    rx.wait_lost().await;
    eprintln!(
        "the silent sender was given up {} ms after SIGSTOP",
        stopped.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = std::time::Instant::now();
    s.proc.signal(18); // SIGCONT
    let during = held
        .echo(b"written while the sender was stopped", WAIT)
        .await;
    assert_eq!(
        during.as_deref(),
        Some(&b"written while the sender was stopped"[..]),
        "{}",
        rx.stderr_text()
    );
    eprintln!(
        "the open connection resumed {} ms after SIGCONT",
        t0.elapsed().as_millis()
    );
    rx.wait_status("a stream resumed", |s| s.totals.resumes >= 1)
        .await;
}
