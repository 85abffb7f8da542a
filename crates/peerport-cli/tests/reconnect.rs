//! A receiver outlives its sessions: it keeps its listener, reconnects
//! after the sender or the relay restarts, holds local clients while it
//! does, and stops only by its policy, with the documented exit codes.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::*;
use peerport_testkit::{spawn_tcp_echo, spawn_udp_echo};
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, net::TcpStream, task::JoinSet};

/// Echo through `local`, retrying (each try bounded) until it works or `limit` passes.
async fn tcp_echo_within(local: SocketAddr, data: &[u8], limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let ok = tokio::time::timeout(Duration::from_secs(5), async {
            let mut s = TcpStream::connect(local).await.ok()?;
            s.write_all(data).await.ok()?;
            s.shutdown().await.ok()?;
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.ok()?;
            (got == data).then_some(())
        })
        .await;
        if matches!(ok, Ok(Some(()))) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// kill -9 the sender, start it again with the same key: the same receiver
/// process serves TCP again, including a client that connected during the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iroh_sender_restart_tcp() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let mut s = KeyedSender::start(&r, format!("tcp://{echo}")).await;
    let (mut rx, local) = receiver(
        &r,
        "tcp",
        &s.ticket,
        &["--idle-timeout", "3", "--reconnect-wait", "60"],
    )
    .await;
    assert_eq!(echo_roundtrip(local, b"before").await, b"before");

    s.proc.child.kill().await.unwrap();
    rx.wait_lost().await;
    // a client arriving while the tunnel is down waits for the next session
    let waiting = tokio::spawn(async move {
        let mut c = TcpStream::connect(local).await.unwrap();
        c.write_all(b"held").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        got
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = std::time::Instant::now();
    s.start_again(&r).await;
    rx.wait_session_nth(2).await;
    assert!(tcp_echo_within(local, b"after", Duration::from_secs(30)).await);
    eprintln!(
        "iroh tcp: recovered {} ms after the sender restarted",
        t0.elapsed().as_millis()
    );
    let held = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert_eq!(held, b"held");
    assert!(rx.child.try_wait().unwrap().is_none(), "receiver exited");
}

/// The same for UDP: the receiver's socket stays, packets flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iroh_sender_restart_udp() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_udp_echo(&mut svc).await.unwrap();
    let mut s = KeyedSender::start(&r, format!("udp://{echo}")).await;
    let (mut rx, local) = receiver(&r, "udp", &s.ticket, &["--idle-timeout", "3"]).await;
    assert!(udp_echo_within(local, b"one", WAIT).await);
    s.proc.child.kill().await.unwrap();
    rx.wait_lost().await;
    s.start_again(&r).await;
    rx.wait_session_nth(2).await;
    assert!(udp_echo_within(local, b"two", WAIT).await);
}

/// --give-up-after ends an attempt still under way: with a connect
/// timeout far beyond the wait, the receiver still stops at the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn give_up_after_ends_the_attempt_under_way() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let (mut s, ticket) = sender(&r, &format!("tcp://{echo}"), &[]).await;
    let flags = [
        "--idle-timeout",
        "3",
        "--connect-timeout",
        "600",
        "--give-up-after",
        "2",
    ];
    let (mut rx, local) = receiver(&r, "tcp", &ticket, &flags).await;
    assert_eq!(echo_roundtrip(local, b"x").await, b"x");
    s.child.kill().await.unwrap();
    rx.wait_lost().await;
    // the first redial would run for 600 s; the limit ends it
    assert_eq!(rx.wait_exit(WAIT).await, Some(3));
    assert!(
        rx.stderr_text().contains("gave up reconnecting after 2 s"),
        "{}",
        rx.stderr_text()
    );
}

/// The sender is gone for good: local clients are closed after
/// --reconnect-wait with a log line, and the receiver gives up after
/// --give-up-after with exit code 3, closing its listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_gone_for_good() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let (mut s, ticket) = sender(&r, &format!("tcp://{echo}"), &[]).await;
    let (mut rx, local) = receiver(
        &r,
        "tcp",
        &ticket,
        &[
            "--idle-timeout",
            "3",
            "--connect-timeout",
            "3",
            "--give-up-after",
            "8",
            "--reconnect-wait",
            "1",
        ],
    )
    .await;
    assert_eq!(echo_roundtrip(local, b"x").await, b"x");
    s.child.kill().await.unwrap();
    rx.wait_lost().await;
    let mut c = TcpStream::connect(local).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
        .await
        .expect("a waiting client is closed within --reconnect-wait");
    assert!(matches!(n, Ok(0) | Err(_)));
    rx.wait_stderr("no tunnel within 1 s").await;
    assert_eq!(rx.wait_exit(WAIT).await, Some(3));
    assert!(
        rx.stderr_text().contains("gave up reconnecting"),
        "{}",
        rx.stderr_text()
    );
    assert!(TcpStream::connect(local).await.is_err());
}

/// With --no-reconnect the receiver ends with the tunnel (exit 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reconnect_ends_with_the_tunnel() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let (mut s, ticket) = sender(&r, &format!("tcp://{echo}"), &[]).await;
    let (mut rx, local) = receiver(
        &r,
        "tcp",
        &ticket,
        &["--idle-timeout", "3", "--no-reconnect"],
    )
    .await;
    assert_eq!(echo_roundtrip(local, b"x").await, b"x");
    s.child.kill().await.unwrap();
    assert_eq!(rx.wait_exit(WAIT).await, Some(3));
    assert!(
        rx.stderr_text().contains("reconnecting is off"),
        "{}",
        rx.stderr_text()
    );
}

/// The relay (the only path: --relay-only) stops and starts again on the
/// same address: the tunnel works again without touching either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_restart_is_survived() {
    let r = rendezvous().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let relay = peerport_rendezvous::relay_at(addr).await.unwrap();
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let infra = |role: &str| -> Vec<String> {
        let mut v: Vec<String> = vec![role.into(), "iroh".into()];
        // this relay has no QUIC address discovery and plain HTTP: no CA
        v.extend(iroh_flags(
            &format!("http://{addr}"),
            None,
            r.pkarr_url.as_str(),
        ));
        v.extend(["--idle-timeout".into(), "5".into()]);
        if role == "receiver" {
            v.push("--relay-only".into());
        }
        v
    };
    let mut sargs = infra("sender");
    sargs.extend(["--source".into(), format!("tcp://{echo}")]);
    let mut s = Proc::spawn(&sargs);
    let ticket = s.first_stdout_line().await;
    let mut rargs = infra("receiver");
    rargs.extend([
        "--target".into(),
        "tcp://127.0.0.1:0".into(),
        "--node-id".into(),
        ticket,
    ]);
    let mut rx = Proc::spawn(&rargs);
    let local = listen_addr(&mut rx).await;
    rx.wait_session().await;
    assert_eq!(echo_roundtrip(local, b"relayed").await, b"relayed");

    let _ = relay.shutdown().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = std::time::Instant::now();
    let _relay = peerport_rendezvous::relay_at(addr).await.unwrap();
    assert!(
        tcp_echo_within(local, b"again", Duration::from_secs(60)).await,
        "no echo after the relay restart:\n{}",
        rx.stderr_text()
    );
    eprintln!(
        "iroh relay-only: tunnel back {} ms after the relay restarted",
        t0.elapsed().as_millis()
    );
    assert!(rx.child.try_wait().unwrap().is_none(), "receiver exited");
}

/// Copy-paste modes with blob files: a restarted sender follows the same
/// offer file; the receiver writes a fresh offer after the loss and the
/// tunnel comes back without a person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_sender_restart_with_blob_files() {
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = format!("tcp://{echo}");
    // the old endpoint is tried, and a fresh offer follows within a second
    let idle: Vec<String> = ["--idle-timeout", "3", "--connect-timeout", "3"]
        .map(String::from)
        .to_vec();
    let mut s = manual_sender("ice", &source, dir.path(), &idle);
    let (mut rx, local) = manual_receiver("ice", "tcp", dir.path(), &idle).await;
    assert_eq!(echo_roundtrip(local, b"first").await, b"first");
    s.child.kill().await.unwrap();
    rx.wait_lost().await;
    let t0 = std::time::Instant::now();
    let _s2 = manual_sender("ice", &source, dir.path(), &idle);
    rx.wait_session_nth(2).await;
    assert!(tcp_echo_within(local, b"second", WAIT).await);
    eprintln!(
        "ice (blob files): recovered {} ms after the sender restarted",
        t0.elapsed().as_millis()
    );
}

/// A copy-paste mode after a blackout: the path goes silent for longer
/// than the idle timeout (the sender is stopped with SIGSTOP); both sides
/// keep their endpoints, the receiver also writes a fresh offer to the
/// file, and the tunnel comes back by whichever answers first, with the
/// open connection resumed. `extra` goes to both sides; returns the
/// receiver's stderr.
async fn rejoins_without_a_new_paste(mode: &str, extra: &[String]) -> String {
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut flags: Vec<String> = vec!["--idle-timeout".into(), "3".into()];
    flags.extend(extra.iter().cloned());
    let s = manual_sender(mode, &format!("tcp://{echo}"), dir.path(), &flags);
    let (mut rx, local) = manual_receiver(mode, "tcp", dir.path(), &flags).await;
    assert_eq!(echo_roundtrip(local, b"first").await, b"first");
    // a connection open across the blackout carries on (resumed)
    let mut held = Held::open(local).await;
    assert_eq!(held.echo(b"held", WAIT).await.unwrap(), b"held");
    s.signal(19); // SIGSTOP
    rx.wait_lost().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = std::time::Instant::now();
    s.signal(18); // SIGCONT
    rx.wait_session_nth(2).await;
    assert!(tcp_echo_within(local, b"second", WAIT).await);
    assert_eq!(
        held.echo(b"still here", WAIT).await.as_deref(),
        Some(&b"still here"[..]),
        "{}",
        rx.stderr_text()
    );
    let via = if extra.iter().any(|f| f == "--relay-only") {
        " over TURN"
    } else {
        ""
    };
    eprintln!(
        "{mode}{via}: rejoined {} ms after the path came back",
        t0.elapsed().as_millis()
    );
    // at most the one fresh offer beside the rejoin (the receiver's
    // backoff bounds any more)
    let offers = std::fs::read_to_string(dir.path().join("offers.txt")).unwrap();
    assert!(
        offers.matches("BEGIN PEERPORT OFFER").count() <= 2,
        "more than one fresh offer:\n{}",
        rx.stderr_text()
    );
    rx.stderr_text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iroh_manual_rejoins_without_a_new_paste() {
    rejoins_without_a_new_paste("iroh-manual", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_rejoins_without_a_new_paste() {
    rejoins_without_a_new_paste("ice", &[]).await;
}

/// The same over a TURN relay: both ICE agents and their allocations stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_rejoins_over_turn_without_a_new_paste() {
    let r = rendezvous().await;
    let dir = tempfile::tempdir().unwrap();
    let mut flags = turn_flags(&r, dir.path());
    flags.push("--relay-only".into());
    let log = rejoins_without_a_new_paste("ice", &flags).await;
    assert_eq!(log.matches("path=relay relay").count(), 2, "{log}");
}

/// A receiver killed and started again with the same identity gets in at
/// once although the sender still holds its dead session and allows only
/// one (--max-sessions 1): the newer session replaces the dead one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_receiver_replaces_its_dead_session() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("receiver.key");
    let k = key.to_str().unwrap();
    let (mut s, ticket) = sender(&r, &format!("tcp://{echo}"), &["--max-sessions", "1"]).await;
    let (mut rx, local) = receiver(&r, "tcp", &ticket, &["--secret-file", k]).await;
    assert_eq!(echo_roundtrip(local, b"one").await, b"one");
    rx.child.kill().await.unwrap();
    let (_rx2, local2) = receiver(&r, "tcp", &ticket, &["--secret-file", k]).await;
    assert_eq!(echo_roundtrip(local2, b"two").await, b"two");
    s.wait_stderr("this new session replaces it").await;
    assert_eq!(
        count_stderr(&s, "refusing a receiver"),
        0,
        "{}",
        s.stderr_text()
    );
}

/// iroh-manual when the sender process is gone (restarted): its old
/// endpoint never answers, and the fresh offer the receiver writes a second
/// after the loss is answered by the restarted sender (same blob files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iroh_manual_sender_restart_falls_back_to_a_fresh_offer() {
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = format!("tcp://{echo}");
    let flags: Vec<String> = ["--idle-timeout", "3", "--connect-timeout", "3"]
        .map(String::from)
        .to_vec();
    let mut s = manual_sender("iroh-manual", &source, dir.path(), &flags);
    let (mut rx, local) = manual_receiver("iroh-manual", "tcp", dir.path(), &flags).await;
    assert_eq!(echo_roundtrip(local, b"first").await, b"first");
    s.child.kill().await.unwrap();
    let t0 = std::time::Instant::now();
    let _s2 = manual_sender("iroh-manual", &source, dir.path(), &flags);
    rx.wait_session_nth(2).await;
    assert!(tcp_echo_within(local, b"second", WAIT).await);
    eprintln!(
        "iroh-manual: back {} ms after the sender restarted (a fresh offer beside the rejoin)",
        t0.elapsed().as_millis()
    );
    let offers = std::fs::read_to_string(dir.path().join("offers.txt")).unwrap();
    assert_eq!(offers.matches("BEGIN PEERPORT OFFER").count(), 2);
}

/// kill -9 the sender of an idle tunnel: within 5 s the receiver's status
/// says so (the session `stale`, or already `reconnecting`), and last
/// heard grows; when the sender is back, the reconnect event reports the
/// whole outage, from the last packet heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_a_dead_sender_within_seconds() {
    use peerport::status::{EventKind, SessionState};
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let mut s = KeyedSender::start(&r, format!("tcp://{echo}")).await;
    let (mut rx, local) = receiver(&r, "tcp", &s.ticket, &["--reconnect-wait", "60"]).await;
    assert_eq!(echo_roundtrip(local, b"before").await, b"before");
    let up = rx.wait_session().await;
    assert_eq!(up.state, SessionState::Up);
    assert!(up.last_heard_secs.is_some_and(|h| h < 3.0), "{up:?}");

    s.proc.child.kill().await.unwrap();
    let killed = std::time::Instant::now();
    let mut said = None;
    while killed.elapsed() < Duration::from_secs(5) {
        if let Some(st) = rx.status().await {
            if st.sessions.iter().any(|x| x.state != SessionState::Up) {
                said = Some(st);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = said.unwrap_or_else(|| {
        panic!(
            "5 s after kill -9 of the sender, the receiver's status still says up:\n{}",
            rx.stderr_text()
        )
    });
    let x = &st.sessions[0];
    assert!(
        matches!(x.state, SessionState::Stale | SessionState::Reconnecting),
        "{x:?}"
    );
    assert!(
        matches!(st.state.as_str(), "stale" | "reconnecting"),
        "{}",
        st.state
    );
    assert!(x.last_heard_secs.is_some_and(|h| h >= 2.0), "{x:?}");
    eprintln!(
        "{:.1} s after kill -9: state {}, last heard {:.1} s ago",
        killed.elapsed().as_secs_f64(),
        x.state,
        x.last_heard_secs.unwrap()
    );
    let (code, text, _) = run_to_end(&[
        "status",
        "--control-socket",
        rx.control_socket().unwrap().to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0);
    assert!(
        text.contains("stale") || text.contains("reconnecting"),
        "{text}"
    );
    eprintln!("peerport status:\n{text}");

    tokio::time::sleep(Duration::from_secs(2)).await;
    s.start_again(&r).await;
    let back = rx.wait_session_nth(2).await;
    assert_eq!(back.state, SessionState::Up);
    // the restarted sender does not know the old session: a new one, up
    // after the outage
    let reconnected = |e: &peerport::status::Event| match e.kind {
        EventKind::Up { connection, .. } => connection >= 2 || e.session >= 2,
        _ => false,
    };
    let st = rx
        .wait_status("the reconnect event", |s| s.events.iter().any(reconnected))
        .await;
    let outage = st
        .events
        .iter()
        .rev()
        .filter(|e| reconnected(e))
        .find_map(|e| match &e.kind {
            EventKind::Up { after_ms, .. } => Some(after_ms.expect("a reconnect says its outage")),
            _ => None,
        })
        .expect("a reconnect event");
    // dead since the kill, at least the 2 s slept plus the sender's start
    assert!(
        outage as u128 >= 2000 && outage as u128 <= killed.elapsed().as_millis() + 1000,
        "outage {outage} ms, {} ms since the kill",
        killed.elapsed().as_millis()
    );
    assert!(
        st.events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Stale { .. })),
        "{:?}",
        st.events
    );
}
