//! Reload by service: a SIGHUP that stops allowing some of a session's
//! services closes their connections and flows only; the receiver and its
//! other services go on, and a receiver that reconnects later is granted
//! what is still allowed. Real binary in mode iroh with the embedded relay.

mod common;

use std::time::Duration;

use common::*;
use peerport_testkit::{spawn_tcp_echo, spawn_udp_echo};
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_closes_only_the_services_it_disallows() {
    let r = rendezvous().await;
    let dir = tempfile::tempdir().unwrap();
    let mut tasks = JoinSet::new();
    let (ssh, web) = (
        spawn_tcp_echo(&mut tasks).await.unwrap(),
        spawn_tcp_echo(&mut tasks).await.unwrap(),
    );
    let dns = spawn_udp_echo(&mut tasks).await.unwrap();
    let key = dir.path().join("sender.key");
    let base = format!(
        "{}secret-file = \"{}\"\n",
        toml_of("sender", "iroh", &local_flags(&r)),
        key.display()
    );
    let service =
        |name: &str, url: String| format!("[[service]]\nname = \"{name}\"\nsource = \"{url}\"\n");
    let (ssh, web, dns) = (
        service("ssh", format!("tcp://{ssh}")),
        service("web", format!("tcp://{web}")),
        service("dns", format!("udp://{dns}")),
    );
    let cfg = dir.path().join("sender.toml");
    std::fs::write(&cfg, format!("{base}{ssh}{web}{dns}")).unwrap();
    let run = ["run".to_string(), "-c".into(), cfg.display().to_string()];
    let mut tx = Proc::spawn(&run);
    let ticket = tx.first_stdout_line().await;

    let mut args: Vec<String> = vec!["receiver".into(), "iroh".into(), "--node-id".into(), ticket];
    for t in [
        "ssh=tcp://127.0.0.1:0",
        "web=tcp://127.0.0.1:0",
        "dns=udp://127.0.0.1:0",
    ] {
        args.extend(["--target".to_string(), t.to_string()]);
    }
    args.extend(local_flags(&r));
    let mut rx = Proc::spawn(&args);
    let (ssh_at, web_at, dns_at) = (
        listen_addr_nth(&mut rx, 1).await,
        listen_addr_nth(&mut rx, 2).await,
        listen_addr_nth(&mut rx, 3).await,
    );
    rx.wait_session().await;
    let mut ssh_held = Held::open(ssh_at).await;
    let mut web_held = Held::open(web_at).await;
    assert!(ssh_held.echo(b"ssh", WAIT).await.is_some());
    assert!(web_held.echo(b"web", WAIT).await.is_some());
    let flow = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    flow.connect(dns_at).await.unwrap();
    assert!(udp_roundtrip(&flow, b"dns").await);

    // stop allowing ssh and dns: their connection and flow end, web's goes on
    std::fs::write(&cfg, format!("{base}{web}")).unwrap();
    tx.signal(1);
    tx.wait_stderr("no longer allowed, its connections close")
        .await;
    assert!(ssh_held.closed_within(WAIT).await, "ssh stayed open");
    assert!(
        !udp_roundtrip(&flow, b"dns again").await,
        "dns still answered"
    );
    assert!(web_held.echo(b"web after", WAIT).await.is_some());
    // the ssh listener stays bound and refuses, saying why
    let mut refused = Held::open(ssh_at).await;
    assert!(refused.closed_within(WAIT).await);
    rx.wait_stderr("sender refused: this sender has no service `ssh`")
        .await;
    let st = rx.status().await.expect("status");
    assert_eq!(st.sessions.len(), 1, "{}", rx.stderr_text());
    assert_eq!(st.totals.reconnects, 0, "{}", rx.stderr_text());

    // a sender restart: the reconnecting hello is granted web only, and
    // the receiver is told what is not allowed
    tx.signal(15);
    assert_eq!(tx.wait_exit(WAIT).await, Some(143));
    let mut tx = Proc::spawn(&run);
    tx.first_stdout_line().await;
    rx.wait_stderr("the sender does not allow service `ssh`")
        .await;
    rx.wait_session_nth(2).await;
    assert_eq!(echo_roundtrip(web_at, b"web again").await, b"web again");
    let mut refused = Held::open(ssh_at).await;
    assert!(refused.closed_within(WAIT).await);
    assert!(tx
        .stderr_text()
        .contains("not allowed (the session carries the others)"));
    let st = rx.status().await.expect("the receiver runs");
    assert_eq!(st.sessions.len(), 1, "{}", rx.stderr_text());
}

/// Whether `payload` comes back on `sock` within two seconds.
async fn udp_roundtrip(sock: &tokio::net::UdpSocket, payload: &[u8]) -> bool {
    let mut buf = vec![0u8; 2048];
    for _ in 0..4 {
        if sock.send(payload).await.is_err() {
            return false;
        }
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await
        {
            if &buf[..n] == payload {
                return true;
            }
        }
    }
    false
}

/// The same for destinations under `--allow` rules: a reload that drops
/// one rule closes the connection to that destination only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_closes_only_the_destinations_it_disallows() {
    let r = rendezvous().await;
    let dir = tempfile::tempdir().unwrap();
    let mut tasks = JoinSet::new();
    let (a, b) = (
        spawn_tcp_echo(&mut tasks).await.unwrap(),
        spawn_tcp_echo(&mut tasks).await.unwrap(),
    );
    let base = toml_of("sender", "iroh", &local_flags(&r));
    let rules = |ports: &[u16]| {
        let all: Vec<String> = ports
            .iter()
            .map(|p| format!("\"127.0.0.1/32:{p}\""))
            .collect();
        format!("allow = [{}]\n", all.join(", "))
    };
    let cfg = dir.path().join("sender.toml");
    std::fs::write(&cfg, format!("{base}{}", rules(&[a.port(), b.port()]))).unwrap();
    let mut tx = Proc::spawn(&["run".into(), "-c".into(), cfg.display().to_string()]);
    let ticket = tx.first_stdout_line().await;
    let mut args: Vec<String> = vec!["receiver".into(), "iroh".into(), "--node-id".into(), ticket];
    for to in [a, b] {
        args.extend(["--target".to_string(), format!("tcp://127.0.0.1:0={to}")]);
    }
    args.extend(local_flags(&r));
    let mut rx = Proc::spawn(&args);
    let (a_at, b_at) = (
        listen_addr_nth(&mut rx, 1).await,
        listen_addr_nth(&mut rx, 2).await,
    );
    rx.wait_session().await;
    let (mut to_a, mut to_b) = (Held::open(a_at).await, Held::open(b_at).await);
    assert!(to_a.echo(b"a", WAIT).await.is_some());
    assert!(to_b.echo(b"b", WAIT).await.is_some());

    std::fs::write(&cfg, format!("{base}{}", rules(&[b.port()]))).unwrap();
    tx.signal(1);
    assert!(
        to_a.closed_within(WAIT).await,
        "the connection to a stayed open"
    );
    assert!(to_b.echo(b"b after", WAIT).await.is_some());
    let mut again = Held::open(a_at).await;
    assert!(again.closed_within(WAIT).await);
    rx.wait_stderr("is not allowed by the sender's --allow rules")
        .await;
    let st = rx.status().await.expect("the receiver runs");
    assert_eq!(st.sessions.len(), 1, "{}", rx.stderr_text());
    assert_eq!(st.totals.reconnects, 0, "{}", rx.stderr_text());
}
