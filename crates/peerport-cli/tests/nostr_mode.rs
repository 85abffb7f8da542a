//! `nostr` mode: pairing by keys over real Nostr relays (nostr-relay-builder's
//! LocalRelay, websockets on 127.0.0.1), then ICE + quinn.

mod common;

use std::{net::Ipv4Addr, os::unix::fs::PermissionsExt, path::Path, time::Duration};

use common::*;
use peerport_rendezvous::LocalNostrRelay;
use peerport_signaling::nostr::generate;
use peerport_testkit::{pattern, spawn_tcp_echo, spawn_udp_echo};
use tokio::{net::UdpSocket, task::JoinSet};

struct Key {
    file: String,
    npub: String,
}

fn key(dir: &Path, name: &str) -> Key {
    let (nsec, npub) = generate();
    let f = dir.join(name);
    std::fs::write(&f, format!("{nsec}\n")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    Key {
        file: f.display().to_string(),
        npub,
    }
}

fn flags(me: &Key, peer: &Key, relays: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--nsec-file".into(),
        me.file.clone(),
        "--peer-npub".into(),
        peer.npub.clone(),
        "--no-stun".into(),
        "--no-portmap".into(),
        "--bind".into(),
        "127.0.0.1:0".into(),
    ];
    for r in relays {
        v.push("--relay".into());
        v.push(r.to_string());
    }
    v
}

/// A port no relay listens on (yet), and its ws:// URL.
fn unused_relay() -> (u16, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (port, format!("ws://127.0.0.1:{port}"))
}

fn sender(source: &str, me: &Key, peer: &Key, relays: &[&str], extra: &[&str]) -> Proc {
    let mut args: Vec<String> = vec![
        "sender".into(),
        "nostr".into(),
        "--source".into(),
        source.into(),
    ];
    args.extend(flags(me, peer, relays));
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(&args)
}

fn receiver_proc(proto: &str, me: &Key, peer: &Key, relays: &[&str], extra: &[&str]) -> Proc {
    let mut args: Vec<String> = vec![
        "receiver".into(),
        "nostr".into(),
        "--target".into(),
        format!("{proto}://127.0.0.1:0"),
    ];
    args.extend(flags(me, peer, relays));
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_udp_round_trips_over_two_relays() {
    let r1 = LocalNostrRelay::start_local().await.unwrap();
    let r2 = LocalNostrRelay::start_local().await.unwrap();
    let relays = [r1.url.as_str(), r2.url.as_str()];
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (key(dir.path(), "a"), key(dir.path(), "b"));
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let udp = spawn_udp_echo(&mut svc).await.unwrap();

    let _s = sender(&format!("tcp://{tcp}"), &a, &b, &relays, &[]);
    let mut rx = receiver_proc("tcp", &b, &a, &relays, &[]);
    let local = listen_addr(&mut rx).await;
    let line = rx.wait_stderr("answer received over nostr").await;
    eprintln!("signaling: {line}");
    rx.wait_session().await;
    tcp_echo_check(local, 4 << 20, 77).await;

    // a second pair of keys: the TCP sender above would answer the same peer
    let (c, d) = (key(dir.path(), "c"), key(dir.path(), "d"));
    let _su = sender(&format!("udp://{udp}"), &c, &d, &relays, &[]);
    let mut rxu = receiver_proc("udp", &d, &c, &relays, &[]);
    let local = listen_addr(&mut rxu).await;
    rxu.wait_session().await;
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    s.connect(local).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    for size in [100usize, 1450, 8000] {
        let p = pattern(size, size as u64);
        let mut ok = false;
        for _ in 0..20 {
            s.send(&p).await.unwrap();
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf)).await
            {
                assert!(buf[..n] == p[..]);
                ok = true;
                break;
            }
        }
        assert!(ok, "{size}-byte packet not echoed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_with_one_relay_down() {
    let live = LocalNostrRelay::start_local().await.unwrap();
    // a relay address where nothing listens
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead_url = format!("ws://127.0.0.1:{dead_port}");
    let relays = [live.url.as_str(), dead_url.as_str()];
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (key(dir.path(), "a"), key(dir.path(), "b"));
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let mut s = sender(&format!("tcp://{tcp}"), &a, &b, &relays, &[]);
    let mut rx = receiver_proc("tcp", &b, &a, &relays, &[]);
    let local = listen_addr(&mut rx).await;
    rx.wait_session().await;
    tcp_echo_check(local, 1 << 20, 77).await;
    s.wait_stderr("relay not connected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_key_gets_no_answer() {
    let r = LocalNostrRelay::start_local().await.unwrap();
    let relays = [r.url.as_str()];
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        key(dir.path(), "a"),
        key(dir.path(), "b"),
        key(dir.path(), "c"),
    );
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let s = sender(&format!("tcp://{tcp}"), &a, &b, &relays, &[]);
    // C knows A's npub but A only listens to B
    let mut rx = receiver_proc("tcp", &c, &a, &relays, &["--connect-timeout", "6"]);
    assert_eq!(rx.wait_exit(Duration::from_secs(30)).await, Some(3));
    assert!(
        rx.stderr_text().contains("no answer from the sender"),
        "{}",
        rx.stderr_text()
    );
    assert!(
        !s.stderr_text().contains("setup{"),
        "sender reacted to a stranger:\n{}",
        s.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_receiver_is_told_the_sender_is_full() {
    let r = LocalNostrRelay::start_local().await.unwrap();
    let relays = [r.url.as_str()];
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (key(dir.path(), "a"), key(dir.path(), "b"));
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let _s = sender(
        &format!("tcp://{tcp}"),
        &a,
        &b,
        &relays,
        &["--max-sessions", "2"],
    );
    let mut first = receiver_proc("tcp", &b, &a, &relays, &[]);
    let l1 = listen_addr(&mut first).await;
    first.wait_session().await;
    let mut second = receiver_proc("tcp", &b, &a, &relays, &[]);
    let l2 = listen_addr(&mut second).await;
    second.wait_session().await;
    let mut third = receiver_proc("tcp", &b, &a, &relays, &[]);
    assert_eq!(third.wait_exit(Duration::from_secs(30)).await, Some(4));
    assert!(
        third.stderr_text().contains("the sender is full"),
        "{}",
        third.stderr_text()
    );
    tcp_echo_check(l1, 100_000, 77).await;
    tcp_echo_check(l2, 100_000, 77).await;
}

#[tokio::test]
async fn keys_are_generated_checked_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("k");
    let k = f.to_str().unwrap();
    let (code, out, _) = run_to_end(&["generate-nostr-key", "--output", k]).await;
    assert_eq!(code, 0);
    let npub = out.trim().to_string();
    assert!(npub.starts_with("npub1"), "{out}");
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (code, out, _) = run_to_end(&["show-npub", "--nsec-file", k]).await;
    assert_eq!((code, out.trim()), (0, npub.as_str()));

    let base = [
        "receiver",
        "nostr",
        "--target",
        "tcp://127.0.0.1:0",
        "--relay",
        "ws://127.0.0.1:9",
    ];
    // a wrong peer key
    let mut args = base.to_vec();
    args.extend(["--nsec-file", k, "--peer-npub", "npub1notakey"]);
    let (code, _, err) = run_to_end(&args).await;
    assert_eq!(code, 2);
    assert!(err.contains("--peer-npub"), "{err}");
    // garbage in the key file
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "nsec1garbage\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut args = base.to_vec();
    args.extend(["--nsec-file", bad.to_str().unwrap(), "--peer-npub", &npub]);
    let (code, _, err) = run_to_end(&args).await;
    assert_eq!(code, 2);
    assert!(err.contains("not a Nostr secret key"), "{err}");
    // a world-readable key file
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut args = base.to_vec();
    args.extend(["--nsec-file", k, "--peer-npub", &npub]);
    let (code, _, err) = run_to_end(&args).await;
    assert_eq!(code, 2);
    assert!(err.contains("chmod 600"), "{err}");
    // no key at all
    let mut args = base.to_vec();
    args.extend(["--peer-npub", &npub]);
    let (code, _, err) = run_to_end(&args).await;
    assert_eq!(code, 2);
    assert!(err.contains("generate-nostr-key"), "{err}");
}

/// With every relay down at startup, the sender keeps retrying for as long
/// as it runs (and pairs once the relay comes up); the receiver gives up at
/// its --connect-timeout with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_down_at_startup_is_retried() {
    let (port, url) = unused_relay();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (key(dir.path(), "a"), key(dir.path(), "b"));
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();

    let mut rx = receiver_proc("tcp", &b, &a, &[&url], &["--connect-timeout", "4"]);
    assert_eq!(rx.wait_exit(Duration::from_secs(20)).await, Some(3));
    assert!(
        rx.stderr_text().contains("no relay reachable within 4 s"),
        "{}",
        rx.stderr_text()
    );

    let mut s = sender(&format!("tcp://{tcp}"), &a, &b, &[&url], &[]);
    s.wait_stderr("no relay reachable yet").await;
    // past the old 10 s give-up: still running
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "the sender gave up:\n{}",
        s.stderr_text()
    );
    let _relay = LocalNostrRelay::start(std::net::Ipv4Addr::LOCALHOST.into(), port)
        .await
        .unwrap();
    let mut rx = receiver_proc("tcp", &b, &a, &[&url], &[]);
    let local = listen_addr(&mut rx).await;
    rx.wait_session().await;
    tcp_echo_check(local, 100_000, 9).await;
}

/// A sender still waiting for its relays stops at SIGTERM (it went on
/// retrying them before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_waiting_for_its_relays_stops_on_sigterm() {
    let (_, url) = unused_relay();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (key(dir.path(), "a"), key(dir.path(), "b"));
    let mut s = sender("tcp://127.0.0.1:9", &a, &b, &[&url], &[]);
    s.wait_stderr("no relay reachable yet").await;
    s.signal(libc::SIGTERM);
    assert_eq!(
        s.wait_exit(Duration::from_secs(5)).await,
        Some(143),
        "{}",
        s.stderr_text()
    );
}

/// The Nostr relay restarts on the same port and the sender is killed and
/// restarted meanwhile: the same receiver re-signals through the restarted
/// relay and serves TCP again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_sender_restart_are_survived() {
    let relay = LocalNostrRelay::start_local().await.unwrap();
    let url = relay.url.clone();
    let port: u16 = url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let relays = [url.as_str()];
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (key(dir.path(), "a"), key(dir.path(), "b"));
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let source = format!("tcp://{tcp}");
    let mut s = sender(&source, &a, &b, &relays, &[]);
    let idle = ["--idle-timeout", "3"];
    let mut rx = receiver_proc("tcp", &b, &a, &relays, &idle);
    let local = listen_addr(&mut rx).await;
    rx.wait_session().await;
    tcp_echo_check(local, 100_000, 1).await;

    relay.shutdown();
    s.child.kill().await.unwrap();
    rx.wait_lost().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _relay = LocalNostrRelay::start(Ipv4Addr::LOCALHOST.into(), port)
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    let _s2 = sender(&source, &a, &b, &relays, &[]);
    rx.wait_session_nth(2).await;
    tcp_echo_check(local, 100_000, 2).await;
    eprintln!(
        "nostr: recovered {} ms after the relay and the sender restarted",
        t0.elapsed().as_millis()
    );
}
