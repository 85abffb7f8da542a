//! The HTTP side ports (`--metrics`, `--dashboard`) cannot cost the tunnel
//! its descriptors: idle connections from anyone who can reach them are
//! capped (beyond, closed at once) and closed when no request comes in
//! time, so a sender with few descriptors goes on carrying new
//! connections. The real binary in mode `ice` on loopback, under
//! `prlimit --nofile`.

mod common;

use std::time::Duration;

use common::*;
use peerport_testkit::spawn_tcp_echo;
use tokio::{io::AsyncReadExt, net::TcpStream, task::JoinSet};

/// How many descriptors the sender may have.
const NOFILE: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_side_port_connections_cannot_starve_the_tunnel() {
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec![
        "sender".into(),
        "ice".into(),
        "--source".into(),
        format!("tcp://{echo}"),
        "--metrics".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(manual_flags(dir.path()));
    let limit = format!("--nofile={NOFILE}:{NOFILE}");
    let mut tx = Proc::spawn_wrapped(&["prlimit".into(), limit, "--".into()], &args);
    let line = tx.wait_stderr("metrics at http://").await;
    let url = line[line.find("http://").unwrap()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // twice the descriptors the sender has, each silent
    let mut idle = Vec::new();
    for _ in 0..2 * NOFILE {
        idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // most are closed at once (the caps); the rest wait for a request
    let mut closed = 0;
    for s in &mut idle {
        let mut b = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(20), s.read(&mut b)).await
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 2 * NOFILE - 64,
        "only {closed} of {} idle connections were closed at once",
        2 * NOFILE
    );

    // the tunnel still carries new connections, many at once
    let (_rx, local) = manual_receiver("ice", "tcp", dir.path(), &[]).await;
    let mut clients = JoinSet::new();
    for i in 0..40u8 {
        clients.spawn(async move { echo_roundtrip(local, &[i; 1000]).await == [i; 1000] });
    }
    while let Some(ok) = clients.join_next().await {
        assert!(ok.unwrap(), "a connection through the tunnel failed");
    }
    assert!(
        !tx.stderr_text().contains("Too many open files"),
        "{}",
        tx.stderr_text()
    );

    // the admitted ones are closed when no request comes in time, and the
    // port answers again
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let out = tokio::process::Command::new("curl")
            .args(["-sf", "--max-time", "2", &url])
            .output()
            .await
            .expect("curl");
        if out.status.success() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the metrics port stayed full"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(idle);
}
