//! Running as a service: `peerport run -c FILE` in every mode, `peerport
//! config init` / `config check`, SIGTERM draining open connections,
//! readiness for systemd (`NOTIFY_SOCKET`), and the unit files checked by
//! `systemd-analyze verify`. Real binary, loopback only.

mod common;

use std::{os::unix::fs::PermissionsExt, path::Path, process::Stdio, time::Duration};

use common::*;
use peerport_testkit::{pattern, spawn_tcp_echo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    task::JoinSet,
};

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

fn run_c(file: &str) -> Proc {
    Proc::spawn(&["run".into(), "-c".into(), file.into()])
}

fn nostr_key(dir: &Path, name: &str) -> (String, String) {
    let (nsec, npub) = peerport_signaling::nostr::generate();
    let f = dir.join(name);
    std::fs::write(&f, format!("{nsec}\n")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    (f.display().to_string(), npub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_c_starts_a_sender_and_a_receiver_in_every_mode() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let source = format!("tcp://{tcp}");
    for mode in ["iroh", "iroh-manual", "ice", "nostr"] {
        let dir = tempfile::tempdir().unwrap();
        let (sflags, rflags): (Vec<String>, Vec<String>) = match mode {
            "iroh" => (local_flags(&r), local_flags(&r)),
            "nostr" => {
                let (ka, na) = nostr_key(dir.path(), "a");
                let (kb, nb) = nostr_key(dir.path(), "b");
                let common = |k: &str, peer: &str| -> Vec<String> {
                    [
                        "--nsec-file",
                        k,
                        "--peer-npub",
                        peer,
                        "--relay",
                        &r.nostr_url(),
                        "--no-stun",
                        "--no-portmap",
                        "--bind",
                        "127.0.0.1:0",
                    ]
                    .map(String::from)
                    .into()
                };
                (common(&ka, &nb), common(&kb, &na))
            }
            _ => (manual_flags(dir.path()), manual_flags(dir.path())),
        };
        let mut sflags = sflags;
        sflags.extend(["--source".into(), source.clone()]);
        let sfile = write(
            &dir.path().join("sender.toml"),
            &toml_of("sender", mode, &sflags),
        );
        let mut s = run_c(&sfile);
        let mut rflags = rflags;
        rflags.extend(["--target".into(), "tcp://127.0.0.1:0".into()]);
        if mode == "iroh" {
            let ticket = s.first_stdout_line().await;
            rflags.extend(["--node-id".into(), ticket]);
        }
        let rfile = write(
            &dir.path().join("receiver.toml"),
            &toml_of("receiver", mode, &rflags),
        );
        let (code, out, err) = run_to_end(&["config", "check", &rfile]).await;
        assert_eq!(code, 0, "{mode}: config check: {out}{err}");
        assert!(out.contains("ok: a receiver in mode"), "{out}");
        let mut rx = run_c(&rfile);
        let local = listen_addr(&mut rx).await;
        rx.wait_session().await;
        tcp_echo_check(local, 256 << 10, 1).await;
        s.signal(libc::SIGTERM);
        assert_eq!(
            s.wait_exit(Duration::from_secs(20)).await,
            Some(143),
            "{mode}: {}",
            s.stderr_text()
        );
    }
}

#[tokio::test]
async fn config_init_writes_examples_that_check_and_errors_say_where() {
    let dir = tempfile::tempdir().unwrap();
    for role in ["sender", "receiver"] {
        for mode in ["iroh", "iroh-manual", "ice", "nostr"] {
            let f = dir.path().join(format!("{role}-{mode}.toml"));
            let fs = f.display().to_string();
            let (code, _, err) =
                run_to_end(&["config", "init", "--role", role, "--mode", mode, "-o", &fs]).await;
            assert_eq!(code, 0, "{err}");
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(
                text.contains(&format!("role = \"{role}\""))
                    && text.contains("# drain-timeout = 10"),
                "{text}"
            );
            let (code, out, err) = run_to_end(&["config", "check", &fs]).await;
            // an example is complete unless it needs something only the
            // person has: the sender's ticket, Nostr keys
            let complete = !(mode == "nostr" || (mode == "iroh" && role == "receiver"));
            if complete {
                assert_eq!(code, 0, "{role} {mode}: {out}{err}\n{text}");
            } else {
                assert_eq!(code, 2, "{role} {mode}: {out}{err}");
                assert!(
                    !err.contains("unknown field") && !err.contains("not a setting"),
                    "{err}"
                );
            }
        }
    }
    // writing over a file needs --force
    let f = dir.path().join("sender-ice.toml").display().to_string();
    let (code, _, err) = run_to_end(&[
        "config", "init", "--role", "sender", "--mode", "ice", "-o", &f,
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force"), "{err}");
    // the flags' names are the keys, including the no-* switches
    let ok = write(
        &dir.path().join("ok.toml"),
        "role = \"sender\"\nmode = \"ice\"\nsource = \"tcp://127.0.0.1:22\"\nno-stun = true\nno-portmap = true\ndrain-timeout = 3\n",
    );
    let (code, out, err) = run_to_end(&["config", "check", &ok]).await;
    assert_eq!(code, 0, "{out}{err}");
    // a wrong value: the line and column
    let bad = write(
        &dir.path().join("bad.toml"),
        "role = \"sender\"\nmode = \"ice\"\nmax-sessions = \"ten\"\n",
    );
    let (code, _, err) = run_to_end(&["config", "check", &bad]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 3, column 16"), "{err}");
    // no role: says what to add
    let norole = write(&dir.path().join("norole.toml"), "mode = \"ice\"\n");
    let (code, _, err) = run_to_end(&["run", "-c", &norole]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs `role`"), "{err}");
}

/// A service that echoes slowly: the transfer outlasts the signal.
async fn slow_echo(n: usize) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                let mut done = 0;
                while done < n {
                    let Ok(k) = s.read(&mut buf).await else {
                        return;
                    };
                    if k == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    if s.write_all(&buf[..k]).await.is_err() {
                        return;
                    }
                    done += k;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Connect to `local` and send `data` in 64 KiB pieces, 100 ms apart, then
/// half-close; returns the reading half and the writer.
async fn send_slowly(
    local: std::net::SocketAddr,
    data: Vec<u8>,
) -> (tokio::net::tcp::OwnedReadHalf, tokio::task::JoinHandle<()>) {
    let c = tokio::net::TcpStream::connect(local).await.unwrap();
    let (r, mut w) = c.into_split();
    let writer = tokio::spawn(async move {
        for chunk in data.chunks(64 << 10) {
            w.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        w.shutdown().await.unwrap();
    });
    (r, writer)
}

/// Read the echo of a [`send_slowly`] transfer to its end: it must be
/// `data`, whole (the drain did not cut it).
async fn received_intact(
    mut r: tokio::net::tcp::OwnedReadHalf,
    writer: tokio::task::JoinHandle<()>,
    data: &[u8],
) {
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, r.read_to_end(&mut got))
        .await
        .expect("transfer in time")
        .unwrap();
    writer.await.unwrap();
    assert!(
        got == data,
        "the transfer was cut during the drain: {} of {} bytes",
        got.len(),
        data.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_open_transfer_finish_then_exits() {
    const N: usize = 1 << 20;
    let svc = slow_echo(N).await;
    let dir = tempfile::tempdir().unwrap();
    let drain = ["--drain-timeout".to_string(), "20".to_string()];
    let mut s = manual_sender("ice", &format!("tcp://{svc}"), dir.path(), &drain);
    let (mut rx, local) = manual_receiver("ice", "tcp", dir.path(), &[]).await;
    let data = pattern(N, 5);
    let (r, writer) = send_slowly(local, data.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.signal(libc::SIGTERM);
    s.wait_stderr("draining").await;
    // a new connection during the drain is refused, and nothing reaches the service
    let mut late = tokio::net::TcpStream::connect(local).await.unwrap();
    let _ = late.write_all(b"late").await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, late.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "a connection opened during the drain got data"
    );
    s.wait_stderr("the sender is stopping").await;
    received_intact(r, writer, &data).await;
    assert_eq!(
        s.wait_exit(Duration::from_secs(10)).await,
        Some(143),
        "{}",
        s.stderr_text()
    );
    assert!(
        s.stderr_text()
            .contains("drained: every connection finished"),
        "{}",
        s.stderr_text()
    );
    let _ = rx.child.kill().await;

    // an idle connection is closed when the drain timeout passes
    let dir = tempfile::tempdir().unwrap();
    let drain = ["--drain-timeout".to_string(), "2".to_string()];
    let mut s = manual_sender("ice", &format!("tcp://{svc}"), dir.path(), &drain);
    let (_rx, local) = manual_receiver("ice", "tcp", dir.path(), &[]).await;
    let mut held = Held::open(local).await;
    assert!(held.echo(b"hi", WAIT).await.is_some());
    let t0 = std::time::Instant::now();
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(15)).await, Some(143));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "exited before the drain timeout: {took:?}"
    );
    assert!(
        s.stderr_text().contains("drain over"),
        "{}",
        s.stderr_text()
    );
    assert!(
        held.closed_within(WAIT).await,
        "the held connection was not closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_systemd_when_ready_and_when_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    let mut args = vec![
        "sender".to_string(),
        "ice".into(),
        "--source".into(),
        "tcp://127.0.0.1:9".into(),
    ];
    args.extend(manual_flags(dir.path()));
    let mut child = tokio::process::Command::new(bin())
        .args(&args)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("XDG_RUNTIME_DIR", runtime_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
        .await
        .expect("a notification")
        .unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        msg.contains("READY=1") && msg.contains("STATUS=sender"),
        "{msg}"
    );
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
        .await
        .expect("a notification")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(143));
}

#[tokio::test]
async fn the_unit_files_pass_systemd_analyze_verify() {
    if !tool("systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd");
    for (file, unit) in [
        ("peerport.service", "peerport.service"),
        ("peerport@.service", "peerport@test.service"),
    ] {
        // the unit as installed, with this build standing in for /usr/bin/peerport
        let text = std::fs::read_to_string(src.join(file))
            .unwrap()
            .replace("/usr/bin/peerport", bin());
        std::fs::write(dir.path().join(file), text).unwrap();
        let out = tokio::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(dir.path().join(unit))
            .output()
            .await
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "systemd-analyze verify {unit}:\n{said}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_drains_too_and_stops_listening() {
    const N: usize = 512 << 10;
    let svc = slow_echo(N).await;
    let dir = tempfile::tempdir().unwrap();
    let _s = manual_sender("ice", &format!("tcp://{svc}"), dir.path(), &[]);
    let drain = ["--drain-timeout".to_string(), "20".to_string()];
    let (mut rx, local) = manual_receiver("ice", "tcp", dir.path(), &drain).await;
    let data = pattern(N, 6);
    let (r, writer) = send_slowly(local, data.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    rx.signal(libc::SIGTERM);
    rx.wait_stderr("draining").await;
    // the local port no longer accepts (the listener closes right after)
    let mut refused = false;
    for _ in 0..20 {
        if tokio::net::TcpStream::connect(local).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the receiver still accepts during its drain");
    received_intact(r, writer, &data).await;
    assert_eq!(
        rx.wait_exit(Duration::from_secs(10)).await,
        Some(143),
        "{}",
        rx.stderr_text()
    );
}
