//! Bad input: clear errors, non-zero exits, nothing half-started.

mod common;

use std::{net::Ipv4Addr, os::unix::fs::PermissionsExt};

use common::*;

#[tokio::test]
async fn malformed_source_and_target() {
    for bad in ["127.0.0.1:22", "tcp://nohost", "ftp://x:1", "tcp://x:99999"] {
        let (code, _, err) = run_to_end(&["sender", "iroh", "--source", bad, "--no-mdns"]).await;
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("--source"), "{bad}: {err}");
    }
    let (code, _, err) = run_to_end(&[
        "receiver",
        "iroh",
        "--target",
        "localhost",
        "--node-id",
        "x",
    ])
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("--target") && err.contains("tcp://"), "{err}");
    let (code, _, err) = run_to_end(&[
        "receiver",
        "iroh",
        "--target",
        "tcp://127.0.0.1:0",
        "--node-id",
        "ppt1zzzz",
    ])
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("--node-id"), "{err}");
}

#[tokio::test]
async fn bad_relay_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("ca.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let missing = dir.path().join("missing.pem");
    for (file, want) in [(&junk, "BEGIN CERTIFICATE"), (&missing, "cannot read")] {
        let (code, _, err) = run_to_end(&[
            "sender",
            "iroh",
            "--source",
            "tcp://127.0.0.1:22",
            "--no-mdns",
            "--relay-ca",
            file.to_str().unwrap(),
        ])
        .await;
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--relay-ca") && err.contains(want), "{err}");
    }
}

#[tokio::test]
async fn world_readable_secret_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let k = key.to_str().unwrap();
    let (code, _, _) = run_to_end(&["generate-secret", "--output", k]).await;
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (code, _, err) = run_to_end(&["generate-secret", "--output", k]).await;
    assert_eq!(code, 2);
    assert!(err.contains("--force"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = run_to_end(&[
        "sender",
        "iroh",
        "--source",
        "tcp://127.0.0.1:22",
        "--secret-file",
        k,
    ])
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("chmod 600"), "{err}");
}

#[tokio::test]
async fn busy_target_port() {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let t = format!("tcp://127.0.0.1:{port}");
    let ticket = peerport_signaling::Ticket {
        endpoint_id: *iroh::SecretKey::generate().public().as_bytes(),
        token: [1; 16],
        relays: Default::default(),
    }
    .encode();
    let (code, _, err) = run_to_end(&[
        "receiver",
        "iroh",
        "--target",
        &t,
        "--node-id",
        &ticket,
        "--no-mdns",
    ])
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("already in use"), "{err}");
}

#[tokio::test]
async fn config_file_rules() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "role = \"receiver\"\nsource = \"tcp://127.0.0.1:22\"\n").unwrap();
    let (code, _, err) = run_to_end(&["sender", "iroh", "-c", f.to_str().unwrap()]).await;
    assert_eq!(code, 2);
    assert!(err.contains("role"), "{err}");
    std::fs::write(&f, "sorce = \"tcp://127.0.0.1:22\"\n").unwrap();
    let (code, _, err) = run_to_end(&["sender", "iroh", "-c", f.to_str().unwrap()]).await;
    assert_eq!(code, 2);
    assert!(err.contains("sorce"), "{err}");
}

#[tokio::test]
async fn unreachable_sender_fails_in_bounded_time() {
    let r = rendezvous().await;
    let ticket = peerport_signaling::Ticket {
        endpoint_id: *iroh::SecretKey::generate().public().as_bytes(),
        token: [1; 16],
        relays: Default::default(),
    }
    .encode();
    let mut p = receiver_proc(&r, "tcp", &ticket, &["--connect-timeout", "5"]);
    assert_eq!(
        p.wait_exit(std::time::Duration::from_secs(30)).await,
        Some(3)
    );
    assert!(
        p.stderr_text().contains("cannot reach sender"),
        "{}",
        p.stderr_text()
    );
}

#[tokio::test]
async fn netcheck_against_embedded_servers() {
    let r = rendezvous().await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    common::write_secret(&pw, &r.turn_password);
    let stun = r.turn_addr.to_string();
    let turn = format!("turn:{}", r.turn_addr);
    let relay = r.relay_url.to_string();
    let nostr = r.nostr_url();
    let qad_port = r.relay_quic_port.to_string();
    let ca = r.relay_ca_file.display().to_string();
    let (code, out, err) = run_to_end(&[
        "netcheck",
        "--json",
        "--bind",
        "127.0.0.1:0",
        "--stun-server",
        &stun,
        "--stun-server",
        &stun,
        "--turn-server",
        &turn,
        "--turn-user",
        &r.turn_user,
        "--turn-password-file",
        pw.to_str().unwrap(),
        "--relay-url",
        &relay,
        "--relay-quic-port",
        &qad_port,
        "--relay-ca",
        &ca,
        "--relay",
        &nostr,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["mapping"], "none", "{out}");
    assert_eq!(v["turn"][0]["ok"], true, "{out}");
    assert_eq!(v["relays"][0]["ok"], true, "{out}");
    // the relay's QUIC address discovery sees us on loopback
    assert_eq!(v["relay_qad"][0]["ok"], true, "{out}");
    assert!(
        v["relay_qad"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("observed 127.0.0.1:"),
        "{out}"
    );
    assert_eq!(v["nostr"][0]["ok"], true, "{out}");
    assert_eq!(v["verdicts"].as_array().unwrap().len(), 4);
    // without the relay's certificate the check fails and says what to do
    let (code, out, err) = run_to_end(&[
        "netcheck",
        "--json",
        "--bind",
        "127.0.0.1:0",
        "--stun-server",
        &stun,
        "--relay-url",
        &relay,
        "--relay-quic-port",
        &qad_port,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["relay_qad"][0]["ok"], false, "{out}");
    assert!(out.contains("--relay-ca"), "{out}");
}

/// A healthy run is quiet: the demo (every mode, TCP and UDP, embedded
/// servers started and stopped in-process) prints no ERROR or WARN line.
#[tokio::test]
async fn demo_prints_no_error_or_warning() {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(240),
        tokio::process::Command::new(bin())
            .args(["demo", "--megabytes", "2"])
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("demo finished in time")
    .expect("demo ran");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("every byte verified"));
    let noisy: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    assert!(noisy.is_empty(), "the demo logged:\n{}", noisy.join("\n"));
}

/// Messages that say what to do, each cause once, with the usage exit code.
#[tokio::test]
async fn messages_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // an unsupported scheme is named as such
    let (code, _, err) = run_to_end(&[
        "receiver",
        "iroh",
        "--target",
        "http://127.0.0.1:8080",
        "--node-id",
        "x",
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("http:// is not supported"), "{err}");
    // show-id on a missing file points at generate-secret
    let missing = dir.path().join("nope.key");
    let (code, _, err) = run_to_end(&["show-id", "--secret-file", missing.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("peerport generate-secret --output"), "{err}");
    // an OS error is said once
    let cfg = dir.path().join("missing.toml");
    let (code, _, err) = run_to_end(&["sender", "iroh", "-c", cfg.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // a key of another mode is an error, not silently ignored
    std::fs::write(&cfg, "source = \"tcp://127.0.0.1:22\"\nnsec-file = \"k\"\n").unwrap();
    let (code, _, err) = run_to_end(&["sender", "iroh", "-c", cfg.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("nsec-file") && err.contains("mode iroh"),
        "{err}"
    );
}

/// A closed stdout (`peerport status --watch 1 | head -1`) ends the
/// command quietly with exit 0, not with a panic (rc 101).
#[tokio::test]
async fn status_watch_into_a_closed_pipe_ends_quietly() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rx.sock");
    let flags = ["--control-socket".to_string(), sock.display().to_string()];
    // waits for an offer, and answers status meanwhile
    let mut rx = manual_receiver_proc("iroh-manual", "tcp", dir.path(), &flags);
    rx.wait_status("the receiver answers", |_| true).await;
    let mut watch = std::process::Command::new(bin())
        .args(["status", "--watch", "0.2", "--control-socket"])
        .arg(&sock)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(watch.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(!line.is_empty(), "status printed nothing");
    drop(out); // the reader goes away, like `head -1`
    let status = exit_of(
        &mut watch,
        "status --watch went on writing into a closed pipe",
    )
    .await;
    let mut err = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "a closed stdout is not an error: {err}");
}

/// A sender whose stdout and stderr readers went away (`peerport sender
/// ... 2>&1 | head -c 10`) goes on running, and stops on SIGTERM with exit
/// 143: a failed log write neither panics a task (the signal task once
/// did, through tracing-subscriber's own report of the failure) nor
/// aborts the process.
#[tokio::test]
async fn a_sender_with_closed_output_pipes_stops_on_sigterm() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("tx.sock");
    let (r, w) = std::io::pipe().unwrap();
    let mut tx = std::process::Command::new(bin())
        .args([
            "sender",
            "iroh",
            "--source",
            "tcp://127.0.0.1:9",
            "--no-mdns",
        ])
        .args([
            "--relay-url",
            "http://127.0.0.1:1/",
            "--dns-server",
            "http://127.0.0.1:1/pkarr",
        ])
        .arg("--control-socket")
        .arg(&sock)
        .stdin(std::process::Stdio::null())
        .stdout(w.try_clone().unwrap())
        .stderr(w)
        .spawn()
        .unwrap();
    // read the first bytes, then go away like `head -c 10`
    let mut first = [0u8; 10];
    let mut r = r;
    r.read_exact(&mut first).unwrap();
    drop(r);
    // it keeps logging (pkarr retries) into the closed pipe meanwhile
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(tx.try_wait().unwrap().is_none(), "the sender died");
    kill_pid(tx.id(), 15);
    let status = exit_of(
        &mut tx,
        "SIGTERM did not stop a sender whose output pipes are closed",
    )
    .await;
    assert_eq!(status.code(), Some(143), "{status:?}");
}

/// How `child` ended, waiting at most [`WAIT`] (else it is killed and
/// the test fails with `stuck`).
async fn exit_of(child: &mut std::process::Child, stuck: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{stuck}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn kill_pid(pid: u32, sig: i32) {
    let status = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A directory given as the secret file is named as such, with what to
/// give instead (not advice to chmod it).
#[tokio::test]
async fn secret_file_that_is_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for args in [
        &[
            "sender",
            "iroh",
            "--source",
            "tcp://127.0.0.1:22",
            "--secret-file",
            d,
        ][..],
        &["show-id", "--secret-file", d],
        &["generate-secret", "--output", d, "--force"],
    ] {
        let (code, _, err) = run_to_end(args).await;
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("is a directory") && err.contains("give the path of a file"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("chmod"), "{args:?}: {err}");
    }
}

/// nostr mode: this side's own npub as --peer-npub (in npub or hex form)
/// is refused at startup, on both sides, saying whose npub is needed.
#[tokio::test]
async fn nostr_own_npub_as_peer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("nsec");
    let k = f.to_str().unwrap();
    let (code, out, err) = run_to_end(&["generate-nostr-key", "--output", k]).await;
    assert_eq!(code, 0, "{err}");
    let npub = out.trim().to_string();
    let hex = peerport_signaling::nostr::parse_public(&npub).unwrap();
    let common = ["--relay", "ws://127.0.0.1:9", "--no-stun", "--nsec-file", k];
    for own in [npub.as_str(), hex.as_str()] {
        for role in [
            &["sender", "nostr", "--source", "tcp://127.0.0.1:22"][..],
            &["receiver", "nostr", "--target", "tcp://127.0.0.1:0"],
        ] {
            let mut args = role.to_vec();
            args.extend(common);
            args.extend(["--peer-npub", own]);
            let (code, _, err) = run_to_end(&args).await;
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(
                err.contains("--peer-npub")
                    && err.contains("own npub")
                    && err.contains("the other side's npub"),
                "{args:?}: {err}"
            );
        }
    }
}

/// An allow rule whose host looks like an IP address but is not one is
/// refused (flag and config file), not taken as a host name.
#[tokio::test]
async fn allow_rule_with_an_invalid_address_is_refused() {
    let base = [
        "sender",
        "iroh",
        "--source",
        "tcp://127.0.0.1:22",
        "--no-mdns",
    ];
    for rule in ["300.0.0.1:22", "[fd00::zz]:22"] {
        let mut args = base.to_vec();
        args.extend(["--allow", rule]);
        let (code, _, err) = run_to_end(&args).await;
        assert_eq!(code, 2, "{rule}: {err}");
        assert!(err.contains(&format!("`{rule}`")), "{rule}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "source = \"tcp://127.0.0.1:22\"\nallow = [\"10.0.0.0/24:22\", \"300.0.0.1:22\"]\n",
    )
    .unwrap();
    let (code, _, err) = run_to_end(&["sender", "iroh", "-c", cfg.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`300.0.0.1:22`") && err.contains("looks like an IPv4 address"),
        "{err}"
    );
}

/// A command line without its mode says the mode is missing, lists the
/// modes and shows the command with one (exit 2).
#[tokio::test]
async fn forgotten_mode_lists_the_modes_with_an_example() {
    for (args, example) in [
        (
            &["receiver", "--node-id", "X"][..],
            "peerport receiver iroh --node-id X",
        ),
        (
            &["sender", "--source", "tcp://127.0.0.1:22"],
            "peerport sender iroh --source tcp://127.0.0.1:22",
        ),
    ] {
        let (code, _, err) = run_to_end(args).await;
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(&format!("`peerport {}` needs a mode", args[0])) && err.contains(example),
            "{args:?}: {err}"
        );
        for mode in ["iroh", "iroh-manual", "ice", "nostr"] {
            assert!(err.contains(&format!("\n  {mode} ")), "{args:?}: {err}");
        }
    }
}

/// A mistyped command or mode is answered with the right one.
#[tokio::test]
async fn mistyped_command_or_mode_suggests_the_right_one() {
    for (args, want) in [
        (&["recever"][..], "'receiver'"),
        (
            &["sender", "iorh", "--source", "tcp://127.0.0.1:22"],
            "'iroh'",
        ),
        (&["receiver", "nostt"], "'nostr'"),
    ] {
        let (code, _, err) = run_to_end(args).await;
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("similar subcommand") && err.contains(want),
            "{args:?}: {err}"
        );
    }
}
