//! `iroh-manual` and `ice`: copy-paste signaling driven through files, real
//! endpoints on 127.0.0.1, TURN relays (embedded and coturn).

mod common;

use std::{net::Ipv4Addr, time::Duration};

use common::*;
use peerport_testkit::{pattern, spawn_tcp_echo, spawn_udp_echo};
use tokio::{net::UdpSocket, task::JoinSet};

async fn udp_echo_check(addr: std::net::SocketAddr, sizes: &[usize]) {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    s.connect(addr).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    for (i, size) in sizes.iter().enumerate() {
        let p = pattern(*size, i as u64 + 1);
        let mut ok = false;
        for _ in 0..20 {
            s.send(&p).await.unwrap();
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf)).await
            {
                assert!(buf[..n] == p[..], "{size}-byte packet corrupted");
                ok = true;
                break;
            }
        }
        assert!(ok, "{size}-byte UDP packet never echoed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iroh_manual_tcp_and_udp() {
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let udp = spawn_udp_echo(&mut svc).await.unwrap();
    for (proto, source) in [
        ("tcp", format!("tcp://{tcp}")),
        ("udp", format!("udp://{udp}")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let _s = manual_sender("iroh-manual", &source, dir.path(), &[]);
        let (_r, local) = manual_receiver("iroh-manual", proto, dir.path(), &[]).await;
        if proto == "tcp" {
            tcp_echo_check(local, 8 << 20, 1).await;
        } else {
            udp_echo_check(local, &[100, 1450, 8000]).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_direct_tcp_and_udp() {
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let udp = spawn_udp_echo(&mut svc).await.unwrap();
    for (proto, source) in [
        ("tcp", format!("tcp://{tcp}")),
        ("udp", format!("udp://{udp}")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let _s = manual_sender("ice", &source, dir.path(), &[]);
        let (mut r, local) = manual_receiver("ice", proto, dir.path(), &[]).await;
        let session = r.wait_session().await;
        assert_ice_path(&session, PathKind::Direct, Candidate::Host);
        if proto == "tcp" {
            tcp_echo_check(local, 8 << 20, 2).await;
        } else {
            udp_echo_check(local, &[100, 1350, 1450, 8000, 60_000]).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_relay_only_through_embedded_turn() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let udp = spawn_udp_echo(&mut svc).await.unwrap();
    for (proto, source) in [
        ("tcp", format!("tcp://{tcp}")),
        ("udp", format!("udp://{udp}")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut flags = turn_flags(&r, dir.path());
        let _s = manual_sender("ice", &source, dir.path(), &flags);
        flags.push("--relay-only".into());
        let (mut rx, local) = manual_receiver("ice", proto, dir.path(), &flags).await;
        let session = rx.wait_session().await;
        assert_ice_path(&session, PathKind::Relay, Candidate::Relay);
        if proto == "tcp" {
            tcp_echo_check(local, 2 << 20, 3).await;
        } else {
            udp_echo_check(local, &[100, 1450, 8000]).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_relay_only_through_coturn() {
    let Some(coturn) = Coturn::start().await else {
        return;
    };
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    write_secret(&pw, "s3cret");
    let mut flags: Vec<String> = vec![
        "--turn-server".into(),
        format!("turn:127.0.0.1:{}", coturn.port),
        "--turn-user".into(),
        "peerport".into(),
        "--turn-password-file".into(),
        pw.display().to_string(),
        "--relay-only".into(),
    ];
    let _s = manual_sender("ice", &format!("tcp://{tcp}"), dir.path(), &flags);
    flags.pop();
    let mut rflags = flags.clone();
    rflags.push("--relay-only".into());
    let (mut rx, local) = manual_receiver("ice", "tcp", dir.path(), &rflags).await;
    let session = rx.wait_session().await;
    assert_ice_path(&session, PathKind::Relay, Candidate::Relay);
    tcp_echo_check(local, 2 << 20, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_concurrent_sessions_on_one_sender() {
    for mode in ["ice", "iroh-manual"] {
        let mut svc = JoinSet::new();
        let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut s = manual_sender(
            mode,
            &format!("tcp://{tcp}"),
            dir.path(),
            &["--idle-timeout".into(), "5".into()],
        );
        let mut rs = Vec::new();
        for _ in 0..3 {
            rs.push(manual_receiver(mode, "tcp", dir.path(), &[]).await);
        }
        let mut set = JoinSet::new();
        for (i, (_, local)) in rs.iter().enumerate() {
            let local = *local;
            set.spawn(async move { tcp_echo_check(local, 1 << 20, 10 + i as u64).await });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        // one session ends; the others keep working
        let (mut first, _) = rs.remove(0);
        first.child.kill().await.unwrap();
        // its connection ends: the session is gone, or waits to resume
        s.wait_status("the killed receiver's connection ended", |s| {
            s.totals.sessions_ended >= 1 || s.sessions.iter().any(|x| !x.connected)
        })
        .await;
        for (_, local) in &rs {
            tcp_echo_check(*local, 64 * 1024, 20).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pastes_are_explained_and_asked_again() {
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    // the receiver reads answers from answers.txt; the sender writes its answer elsewhere
    let mut rx = manual_receiver_proc("ice", "tcp", dir.path(), &[]);
    let local = listen_addr(&mut rx).await;
    let offers = dir.path().join("offers.txt");
    let answers = dir.path().join("answers.txt");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&offers)
        .unwrap_or_default()
        .contains("END PEERPORT OFFER")
    {
        assert!(tokio::time::Instant::now() < deadline, "no offer written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let offer = std::fs::read_to_string(&offers).unwrap();
    let append = |text: &str| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&answers)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    // 1. garbage inside a block
    append(
        "hi\n-----BEGIN PEERPORT ANSWER-----\nnot base64 at all!!\n-----END PEERPORT ANSWER-----\n",
    );
    rx.wait_stderr("ignoring a block in").await;
    // 2. an offer where an answer is expected
    append(&offer);
    rx.wait_stderr("this is an OFFER but an ANSWER is expected")
        .await;
    // 3. an iroh-manual answer in the ice receiver
    let wrong_mode = peerport_signaling::blob::Blob {
        kind: peerport_signaling::blob::Kind::Answer,
        session: [0; 8],
        created: peerport::modes::manual::unix_now(),
        body: peerport_signaling::blob::Body::Iroh {
            endpoint_id: [1; 32],
            addrs: vec![],
        },
    };
    append(&wrong_mode.to_armor());
    rx.wait_stderr("start both sides in the same mode").await;
    // 4. an expired blob of the right kind and mode
    let mut expired = peerport_signaling::blob::find_and_decode(
        &offer,
        &peerport_signaling::blob::Expect {
            kind: peerport_signaling::blob::Kind::Offer,
            mode: peerport_signaling::Mode::Ice,
            session: None,
            now: peerport::modes::manual::unix_now(),
            max_age: 600,
        },
    )
    .unwrap();
    expired.kind = peerport_signaling::blob::Kind::Answer;
    expired.created -= 3600;
    append(&expired.to_armor());
    rx.wait_stderr("create a fresh one").await;
    // finally the real sender answers into the same file and the session comes up
    let _s = manual_sender("ice", &format!("tcp://{tcp}"), dir.path(), &[]);
    rx.wait_session().await;
    tcp_echo_check(local, 100_000, 5).await;
    assert!(real.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_with_wrong_certificate_is_refused() {
    use peerport_signaling::blob::{scan_blocks, Body, Expect, Kind};
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("sender");
    std::fs::create_dir(&sdir).unwrap();
    // receiver writes its offer into dir; we forward a tampered copy to the sender's dir
    let mut rx = manual_receiver_proc(
        "ice",
        "tcp",
        dir.path(),
        &["--connect-timeout".into(), "8".into()],
    );
    let offers = dir.path().join("offers.txt");
    let deadline = tokio::time::Instant::now() + WAIT;
    let offer = loop {
        let t = std::fs::read_to_string(&offers).unwrap_or_default();
        if t.contains("END PEERPORT OFFER") {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "no offer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let e = Expect {
        kind: Kind::Offer,
        mode: peerport_signaling::Mode::Ice,
        session: None,
        now: peerport::modes::manual::unix_now(),
        max_age: 600,
    };
    let mut blob = scan_blocks(&offer, &e).0.remove(0).unwrap();
    if let Body::Ice { fingerprint, .. } = &mut blob.body {
        fingerprint[0] ^= 0xff; // the sender now expects a different receiver certificate
    }
    std::fs::write(sdir.join("offers.txt"), blob.to_armor()).unwrap();
    let mut s = manual_sender("ice", &format!("tcp://{tcp}"), &sdir, &[]);
    // hand the sender's answer back to the receiver
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let t = std::fs::read_to_string(sdir.join("answers.txt")).unwrap_or_default();
        if t.contains("END PEERPORT ANSWER") {
            std::fs::write(dir.path().join("answers.txt"), t).unwrap();
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.wait_stderr("certificate is not the one in the blob")
        .await;
    assert_eq!(rx.wait_exit(Duration::from_secs(40)).await, Some(3));
    assert_eq!(s.connections().await, 0, "{}", s.stderr_text());
}
