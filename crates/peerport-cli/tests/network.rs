//! Self-hosting in one flag: `peerport rendezvous` describes its servers
//! in a network file, `--network FILE` gives a sender or receiver all of
//! them, the sender's ticket names its relays (so an iroh receiver needs
//! no flag at all), and `peerport share` / `peerport connect` print what
//! the other side types. Everything on 127.0.0.1: the rendezvous servers are
//! the real binary's, and no public server is named in any log.

mod common;

use common::*;
use peerport_testkit::spawn_tcp_echo;
use tokio::task::JoinSet;

/// `peerport rendezvous` in its own process; returns it and the network
/// file it wrote.
async fn rendezvous_process(state: &std::path::Path) -> (Proc, String) {
    let mut p = Proc::spawn(&[
        "rendezvous".into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--state".into(),
        state.to_str().unwrap().into(),
    ]);
    let line = p.stdout_line("network ").await;
    let file = line["network ".len()..].to_string();
    let hint = p.wait_stderr("--network").await;
    assert!(hint.ends_with(&format!("--network {file}")), "{hint}");
    (p, file)
}

/// The sender's hint, run as printed (only the local port changed to a
/// free one), with the ticket from the sender's stdout pasted where the
/// hint says: the receiver needs no flag, as the ticket names the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_and_connect_over_a_self_hosted_network_with_one_flag() {
    let state = tempfile::tempdir().unwrap();
    let (_rdv, network) = rendezvous_process(state.path()).await;
    let text = std::fs::read_to_string(&network).unwrap();
    for key in [
        "relay-url",
        "relay-ca",
        "dns-server",
        "turn-server",
        "relay =",
    ] {
        assert!(
            text.contains(key),
            "{key} missing from the network file:\n{text}"
        );
    }
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let data_home = format!("XDG_DATA_HOME={}", data.path().display());

    // the sender: `peerport share PORT --network FILE`
    let share = &[
        "share".to_string(),
        echo.port().to_string(),
        "--network".into(),
        network.clone(),
    ];
    let env = ["env".to_string(), data_home.clone()];
    let mut tx = Proc::spawn_wrapped(&env, share);
    let ticket = tx.first_stdout_line().await;
    let decoded = peerport_signaling::Ticket::decode(&ticket).unwrap();
    assert_eq!(decoded.relays.urls.len(), 1, "{decoded:?}");
    assert_eq!(decoded.relays.pins.len(), 1, "{decoded:?}");
    assert!(ticket.len() < 200, "{} characters: {ticket}", ticket.len());
    let hint = tx.wait_stderr("on the other machine, run: ").await;
    let command = hint
        .split("run: ")
        .nth(1)
        .and_then(|c| c.split(',').next())
        .unwrap()
        .to_string();
    assert_eq!(command, "peerport connect 2222");
    assert!(
        !hint.contains(&ticket),
        "the ticket reached a non-terminal stderr"
    );
    // the identity is kept: the same ticket after a restart, and
    // `show-id` on the same network prints it too
    let key = data.path().join("peerport/share.key");
    let (code, out, err) = run_to_end(&[
        "show-id",
        "--secret-file",
        key.to_str().unwrap(),
        "--network",
        &network,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("ticket {ticket}\n")), "{out}");

    // the receiver: exactly that command, with the pasted ticket
    let mut words: Vec<String> = command.split(' ').skip(1).map(String::from).collect();
    words[1] = "0".into();
    let env = ["env".to_string(), format!("PEERPORT_TICKET={ticket}")];
    let mut rx = Proc::spawn_wrapped(&env, &words);
    let local = listen_addr(&mut rx).await;
    rx.wait_session().await;
    assert_eq!(echo_roundtrip(local, b"one flag").await, b"one flag");
    let st = rx.status().await.unwrap();
    assert_eq!(st.info.mode, "iroh");

    // the ticket alone gets through the relay: no mDNS, no direct path
    let mut relayed = Proc::spawn_wrapped(
        &env,
        &[
            "receiver".into(),
            "iroh".into(),
            "--target".into(),
            "tcp://127.0.0.1:0".into(),
            "--relay-only".into(),
            "--no-mdns".into(),
        ],
    );
    let local = listen_addr(&mut relayed).await;
    relayed.wait_session().await;
    assert_eq!(echo_roundtrip(local, b"relayed").await, b"relayed");

    // nothing tried the public servers (every one of them is self-hosted)
    for l in rx
        .stderr_text()
        .lines()
        .chain(tx.stderr_text().lines())
        .chain(relayed.stderr_text().lines())
    {
        assert!(
            !l.contains("n0.computer") && !l.contains("iroh.link"),
            "a public server was named: {l}"
        );
    }

    // restart the sender: the same ticket
    drop(tx);
    let mut tx = Proc::spawn_wrapped(&["env".to_string(), data_home], share);
    assert_eq!(tx.first_stdout_line().await, ticket);
}

/// A network file with a key that is no network setting, and a network
/// name that does not exist, are bad usage naming what to do.
#[tokio::test]
async fn a_wrong_network_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("net.toml");
    std::fs::write(&f, "source = \"tcp://127.0.0.1:22\"\n").unwrap();
    let (code, _, err) = run_to_end(&[
        "sender",
        "iroh",
        "--source",
        "tcp://127.0.0.1:22",
        "--network",
        f.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not belong in a network file"), "{err}");
    let missing = dir.path().join("missing.toml");
    let (code, _, err) = run_to_end(&[
        "receiver",
        "ice",
        "--target",
        "tcp://127.0.0.1:0",
        "--network",
        missing.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("peerport rendezvous --state DIR"), "{err}");
}
