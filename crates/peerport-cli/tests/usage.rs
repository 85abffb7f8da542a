//! Settings a person gets wrong, and the ways to keep secrets off the
//! command line: each mistake is bad usage (exit 2) with a message that
//! says what to do, caught where the value is read.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use peerport_testkit::spawn_tcp_echo;
use tokio::task::JoinSet;

fn file(dir: &std::path::Path, name: &str, text: &str, mode: u32) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p.to_str().unwrap().to_string()
}

/// A duration beyond a year is refused where it is read (flag or file),
/// before any arithmetic on it could overflow.
#[tokio::test]
async fn durations_are_bounded_where_they_are_read() {
    let (code, _, err) = run_to_end(&[
        "receiver",
        "ice",
        "--target",
        "tcp://127.0.0.1:0",
        "--connect-timeout",
        "18446744073709551615",
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--connect-timeout") && err.contains("0..=31536000"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let f = file(
        dir.path(),
        "r.toml",
        "role = \"receiver\"\nmode = \"ice\"\ntarget = \"tcp://127.0.0.1:0\"\nresume-window = 99999999999\n",
        0o644,
    );
    let (code, _, err) = run_to_end(&["config", "check", &f]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("line 4") && err.contains("longer than a year"),
        "{err}"
    );
}

/// A mistyped config key is named with the key it was probably meant to be.
#[tokio::test]
async fn a_mistyped_config_key_gets_a_did_you_mean() {
    let dir = tempfile::tempdir().unwrap();
    let f = file(
        dir.path(),
        "r.toml",
        "role = \"receiver\"\nmode = \"ice\"\ntarget = \"tcp://127.0.0.1:0\"\nidle-timout = 10\n",
        0o644,
    );
    let (code, _, err) = run_to_end(&["config", "check", &f]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown key `idle-timout`: did you mean `idle-timeout`?"),
        "{err}"
    );
    assert!(!err.contains("expected one of"), "{err}");
}

/// A dashboard on an address others reach, without a token, is bad usage
/// (exit 2, so a unit does not restart-loop on it), on the command line and
/// in `config check`.
#[tokio::test]
async fn a_remote_dashboard_without_a_token_is_bad_usage() {
    let (code, _, err) = run_to_end(&[
        "receiver",
        "ice",
        "--target",
        "tcp://127.0.0.1:0",
        "--dashboard",
        "0.0.0.0:0",
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--dashboard-token-file"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let f = file(
        dir.path(),
        "r.toml",
        "role = \"receiver\"\nmode = \"ice\"\ntarget = \"tcp://127.0.0.1:0\"\ndashboard = \"0.0.0.0:8080\"\n",
        0o644,
    );
    let (code, _, err) = run_to_end(&["config", "check", &f]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a loopback address"), "{err}");
}

/// The ticket reaches a receiver from a file only its owner reads, or from
/// PEERPORT_TICKET, so it is not on the command line (`ps`); a file others
/// can read, or two tickets, are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ticket_from_a_file_or_the_environment() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let (_tx, ticket) = sender(&r, &format!("tcp://{echo}"), &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let base = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["receiver", "iroh", "--target", "tcp://127.0.0.1:0"]
            .map(String::from)
            .to_vec();
        a.extend(local_flags(&r));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    let private = file(dir.path(), "ticket", &format!("{ticket}\n"), 0o600);
    let mut rx = Proc::spawn(&base(&["--ticket-file", &private]));
    let local = listen_addr(&mut rx).await;
    rx.wait_session().await;
    assert_eq!(echo_roundtrip(local, b"from a file").await, b"from a file");
    drop(rx);

    let env = format!("PEERPORT_TICKET={ticket}");
    let mut rx = Proc::spawn_wrapped(&["env".to_string(), env], &base(&[]));
    let local = listen_addr(&mut rx).await;
    rx.wait_session().await;
    assert_eq!(
        echo_roundtrip(local, b"from the env").await,
        b"from the env"
    );
    drop(rx);

    let open = file(dir.path(), "open", &ticket, 0o644);
    let args = base(&["--ticket-file", &open]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = run_to_end(&args).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--ticket-file") && err.contains("chmod"),
        "{err}"
    );

    let args = base(&["--ticket-file", &private, "--node-id", &ticket]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = run_to_end(&args).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not both"), "{err}");
}

/// `config init` writes a sender whose identity (and so its ticket)
/// survives restarts: `secret-file` is set, not commented out, and the
/// file passes `config check` as written.
#[tokio::test]
async fn config_init_keeps_the_senders_identity() {
    let (code, out, err) =
        run_to_end(&["config", "init", "--role", "sender", "--mode", "iroh"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("secret-file = \"/var/lib/peerport/")),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "s.toml", &out, 0o644);
    let (code, _, err) = run_to_end(&["config", "check", &f]).await;
    assert_eq!(code, 0, "{err}");
}
