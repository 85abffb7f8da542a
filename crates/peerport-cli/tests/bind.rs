//! `--bind` means exactly that address, that family and that port, in every
//! mode; blobs advertise only what is bound.

mod common;

use std::collections::HashSet;

use common::*;

/// Socket inodes of a process.
fn socket_inodes(pid: u32) -> HashSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(String::from)
        })
        .collect()
}

/// Local addresses (hex, as in /proc/net/udp*) of a process's UDP sockets of one table.
fn udp_sockets(pid: u32, table: &str) -> Vec<String> {
    let inodes = socket_inodes(pid);
    std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && inodes.contains(f[9])).then(|| f[1].to_string())
        })
        .collect()
}

async fn wait_sockets(p: &Proc, table: &str) -> Vec<String> {
    let pid = p.child.id().unwrap();
    for _ in 0..50 {
        let s = udp_sockets(pid, table);
        if !s.is_empty() {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Vec::new()
}

/// The offer a receiver wrote to `dir/offers.txt` (bounded wait), decoded.
async fn written_offer(
    dir: &std::path::Path,
    mode: peerport_signaling::Mode,
    rx: &Proc,
) -> peerport_signaling::blob::Body {
    let offers = dir.join("offers.txt");
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&offers).unwrap_or_default();
        if text.contains("END PEERPORT OFFER") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    peerport_signaling::blob::find_and_decode(
        &text,
        &peerport_signaling::blob::Expect {
            kind: peerport_signaling::blob::Kind::Offer,
            mode,
            session: None,
            now: peerport::modes::manual::unix_now(),
            max_age: 600,
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {text}\n{}", rx.stderr_text()))
    .body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iroh_binds_only_the_given_address() {
    let r = rendezvous().await;
    let (s, _ticket) = sender(&r, "tcp://127.0.0.1:9", &[]).await;
    let pid = s.child.id().unwrap();
    let v4 = wait_sockets(&s, "udp").await;
    // 0100007F = 127.0.0.1 in /proc's byte order
    assert!(
        !v4.is_empty() && v4.iter().all(|a| a.starts_with("0100007F:")),
        "{v4:?}"
    );
    assert!(
        udp_sockets(pid, "udp6").is_empty(),
        "{:?}",
        udp_sockets(pid, "udp6")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iroh_manual_on_ipv6_loopback_binds_and_advertises_only_it() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: this machine has no IPv6 loopback");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = vec![
        "receiver".into(),
        "iroh-manual".into(),
        "--target".into(),
        "tcp://127.0.0.1:0".into(),
    ];
    args.extend(manual_flags(dir.path()));
    // manual_flags ends with `--bind 127.0.0.1:0`: replace the address
    let n = args.len();
    args[n - 1] = "[::1]:0".into();
    let rx = Proc::spawn(&args);
    let body = written_offer(dir.path(), peerport_signaling::Mode::IrohManual, &rx).await;
    let peerport_signaling::blob::Body::Iroh { addrs, .. } = body else {
        panic!("not an iroh-manual offer")
    };
    assert!(!addrs.is_empty());
    assert!(
        addrs
            .iter()
            .all(|a| a.ip() == std::net::Ipv6Addr::LOCALHOST),
        "{addrs:?}"
    );
    let pid = rx.child.id().unwrap();
    assert!(
        udp_sockets(pid, "udp").is_empty(),
        "{:?}",
        udp_sockets(pid, "udp")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_offer_uses_the_given_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let mut args: Vec<String> = vec![
        "receiver".into(),
        "ice".into(),
        "--target".into(),
        "tcp://127.0.0.1:0".into(),
    ];
    args.extend(manual_flags(dir.path()));
    let n = args.len();
    args[n - 1] = format!("127.0.0.1:{port}");
    let rx = Proc::spawn(&args);
    let body = written_offer(dir.path(), peerport_signaling::Mode::Ice, &rx).await;
    let peerport_signaling::blob::Body::Ice { candidates, .. } = body else {
        panic!("not an ice offer")
    };
    let want = format!("127.0.0.1 {port} typ host");
    assert!(
        candidates.iter().any(|c| c.contains(&want)),
        "{candidates:?}"
    );
    assert!(
        candidates.iter().all(|c| c.contains(" 127.0.0.1 ")),
        "{candidates:?}"
    );
}
