//! Copy-paste signaling that forgives people: late answers, damaged files,
//! truncated pastes, other sessions' answers, restarts, Ctrl-C at a prompt,
//! and TURN problems named with their server. Real processes on 127.0.0.1.

mod common;

use std::{path::Path, time::Duration};

use common::*;
use peerport_testkit::spawn_tcp_echo;
use tokio::{io::AsyncWriteExt, task::JoinSet};

/// Wait (bounded) until `path` holds a complete block of `kind`; return its text.
async fn wait_block(path: &Path, kind: &str) -> String {
    let end = format!("-----END PEERPORT {kind}-----");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
        if text.contains(&end) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// An `ice` side on loopback that talks through the terminal (no files).
fn prompt_args(role: &str) -> Vec<String> {
    let local = match role {
        "receiver" => ["--target", "tcp://127.0.0.1:0"],
        _ => ["--source", "tcp://127.0.0.1:9"],
    };
    let mut v = vec![role, "ice"];
    v.extend(local);
    v.extend(["--no-stun", "--bind", "127.0.0.1:0"]);
    v.into_iter().map(String::from).collect()
}

/// The sender's clock does not start when it writes its answer: an answer
/// carried back after both sides' connect timeouts still connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_answer_still_connects_and_damaged_offer_files_are_read() {
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let (ds, dr) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let timeout = ["--connect-timeout".to_string(), "3".to_string()];
    let mut rx = manual_receiver_proc("ice", "tcp", dr.path(), &timeout);
    let local = listen_addr(&mut rx).await;
    let mut s = manual_sender("ice", &format!("tcp://{tcp}"), ds.path(), &timeout);
    let offer = wait_block(&dr.path().join("offers.txt"), "OFFER").await;
    // bytes that are not text, and a block cut off by a new BEGIN line,
    // before the real offer: neither may hide it
    let sender_offers = ds.path().join("offers.txt");
    append(&sender_offers, b"\xff\xfe garbage \xc3\n");
    let cut: String = offer.lines().take(2).map(|l| format!("{l}\n")).collect();
    append(&sender_offers, cut.as_bytes());
    append(&sender_offers, offer.as_bytes());
    let answer = wait_block(&ds.path().join("answers.txt"), "ANSWER").await;
    s.wait_stderr("not text").await;
    s.wait_stderr("no END line").await;
    // the person takes a while: longer than both connect timeouts
    tokio::time::sleep(Duration::from_secs(7)).await;
    append(&dr.path().join("answers.txt"), answer.as_bytes());
    rx.wait_session().await;
    tcp_echo_check(local, 50_000, 3).await;
}

/// A restarted sender does not answer offers it already answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_sender_skips_answered_offers() {
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut first = manual_sender("ice", &format!("tcp://{tcp}"), dir.path(), &[]);
    let (_rx, _) = manual_receiver("ice", "tcp", dir.path(), &[]).await;
    first.child.kill().await.unwrap();
    let answers = dir.path().join("answers.txt");
    let count = || {
        std::fs::read_to_string(&answers)
            .unwrap_or_default()
            .matches("BEGIN PEERPORT ANSWER")
            .count()
    };
    assert_eq!(count(), 1);
    let mut again = manual_sender("ice", &format!("tcp://{tcp}"), dir.path(), &[]);
    again.wait_stderr("already answered").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count(),
        1,
        "the restarted sender answered an old offer again"
    );
}

/// Ctrl-C at a paste prompt stops at once with 130; SIGTERM with 143.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_at_a_paste_prompt_stop_at_once() {
    let args = prompt_args("receiver");
    let (mut rx, _stdin) = Proc::spawn_piped(&args);
    rx.wait_stderr("paste the sender's ANSWER").await;
    rx.signal(2);
    assert_eq!(rx.wait_exit(Duration::from_secs(5)).await, Some(130));

    let args = prompt_args("sender");
    let (mut tx, _stdin) = Proc::spawn_piped(&args);
    tx.wait_stderr("paste a receiver's OFFER").await;
    tx.signal(15);
    assert_eq!(tx.wait_exit(Duration::from_secs(5)).await, Some(143));
}

/// A sender whose standard input closes says so and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_with_closed_stdin_fails_with_a_message() {
    let args = prompt_args("sender");
    let mut tx = Proc::spawn(&args); // stdin is /dev/null
    assert_eq!(tx.wait_exit(Duration::from_secs(10)).await, Some(1));
    assert!(
        tx.stderr_text().contains("--offer-file"),
        "{}",
        tx.stderr_text()
    );
}

/// An answer pasted from another session is explained, then the right one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_sessions_answer_is_explained() {
    let args = prompt_args("receiver");
    let (mut rx, mut stdin) = Proc::spawn_piped(&args);
    rx.wait_stderr("paste the sender's ANSWER").await;
    let other = peerport_signaling::blob::Blob {
        kind: peerport_signaling::blob::Kind::Answer,
        session: [7; 8],
        created: peerport::modes::manual::unix_now(),
        body: peerport_signaling::blob::Body::Ice {
            ufrag: "abcdEFGH".into(),
            pwd: "0123456789abcdefghijklmn".into(),
            fingerprint: [1; 32],
            candidates: vec![],
        },
    };
    // a truncated paste first, then the other session's whole answer
    let armor = other.to_armor();
    let cut: String = armor.lines().take(2).map(|l| format!("{l}\n")).collect();
    stdin.write_all(cut.as_bytes()).await.unwrap();
    stdin.write_all(armor.as_bytes()).await.unwrap();
    stdin.flush().await.unwrap();
    rx.wait_stderr("no END line").await;
    rx.wait_stderr("belongs to another session").await;
    rx.signal(2);
    assert_eq!(rx.wait_exit(Duration::from_secs(5)).await, Some(130));
}

/// TURN credentials refused and an unreachable TURN server are named, with
/// the reason, within the connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_problems_name_the_server_and_the_reason() {
    let r = rendezvous().await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    write_secret(&pw, "not-the-password");
    let dead = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let coturn = Coturn::start().await;
    let mut cases = vec![
        (
            format!("turn:{}", r.turn_addr),
            r.turn_user.clone(),
            "credentials",
        ),
        (format!("turn:{dead}"), r.turn_user.clone(), "no answer"),
    ];
    if let Some(c) = &coturn {
        // coturn answers a wrong password with 401 after the nonce round trip
        cases.push((
            format!("turn:127.0.0.1:{}", c.port),
            "peerport".into(),
            "401",
        ));
    }
    for (server, user, reason) in cases {
        let args: Vec<String> = [
            "receiver",
            "ice",
            "--target",
            "tcp://127.0.0.1:0",
            "--no-stun",
            "--bind",
            "127.0.0.1:0",
            "--relay-only",
            "--turn-server",
            &server,
            "--turn-user",
            &user,
            "--turn-password-file",
            pw.to_str().unwrap(),
            "--offer-file",
            dir.path().join("o").to_str().unwrap(),
            "--answer-file",
            dir.path().join("a").to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        let mut rx = Proc::spawn(&args);
        assert_eq!(rx.wait_exit(Duration::from_secs(40)).await, Some(3));
        let err = rx.stderr_text();
        assert!(err.contains(&server), "{err}");
        assert!(err.contains(reason), "{err}");
    }
}

/// Files that grant access or hold a secret are refused when others may
/// write (or read) them, with the chmod to run.
#[tokio::test]
async fn loose_permissions_on_access_files_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "x").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = run_to_end(&[
        "receiver",
        "ice",
        "--target",
        "tcp://127.0.0.1:0",
        "--turn-server",
        "turn:127.0.0.1:3478",
        "--turn-user",
        "u",
        "--turn-password-file",
        pw.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("chmod 600"), "{err}");

    let peers = dir.path().join("peers");
    std::fs::write(&peers, "").unwrap();
    std::fs::set_permissions(&peers, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, _, err) = run_to_end(&[
        "sender",
        "iroh",
        "--source",
        "tcp://127.0.0.1:22",
        "--authorized-peers-file",
        peers.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("chmod go-w"), "{err}");
}
