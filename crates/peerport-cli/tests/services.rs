//! Several services in one session, receiver-chosen destinations under the
//! sender's `--allow` rules, per-service authorization, and SIGHUP reload.
//! Real binary in mode iroh with the embedded relay and pkarr server;
//! services are echo, greeter and counting servers on 127.0.0.x.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc,
    },
    time::Duration,
};

use common::*;
use peerport_testkit::{pattern, spawn_tcp_echo, spawn_udp_echo};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A server that counts its connections and the bytes it receives, and
/// echoes them (a destination the test can see reached or not).
async fn counting_echo(
    tasks: &mut JoinSet<()>,
    bind: SocketAddr,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let l = TcpListener::bind(bind).await.unwrap();
    let addr = l.local_addr().unwrap();
    let (conns, bytes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, b) = (conns.clone(), bytes.clone());
    tasks.spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c.fetch_add(1, SeqCst);
            let b = b.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 || w.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    b.fetch_add(n, SeqCst);
                }
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, conns, bytes)
}

/// A server that sends `len` bytes of pattern `seed` to each client, then closes.
async fn greeter(tasks: &mut JoinSet<()>, len: usize, seed: u64) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let data = Arc::new(pattern(len, seed));
    tasks.spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let data = data.clone();
            tokio::spawn(async move {
                let _ = s.write_all(&data).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

async fn download(addr: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut got))
        .await
        .expect("download in time")
        .unwrap();
    got
}

/// `peerport receiver iroh` with these `--target`s.
fn receiver_of(r: &peerport_rendezvous::Rendezvous, ticket: &str, targets: &[&str]) -> Proc {
    let mut args: Vec<String> = vec![
        "receiver".into(),
        "iroh".into(),
        "--node-id".into(),
        ticket.into(),
    ];
    for t in targets {
        args.extend(["--target".to_string(), t.to_string()]);
    }
    args.extend(local_flags(r));
    Proc::spawn(&args)
}

/// The local address of each target, in order.
async fn listen_addrs(p: &mut Proc, n: usize) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for i in 1..=n {
        out.push(listen_addr_nth(p, i).await);
    }
    out
}

/// Send `count` distinct datagrams through a UDP echo behind `local`;
/// the sha256 of what came back, in order.
async fn udp_exchange(local: SocketAddr, count: usize) -> (String, String) {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(local).await.unwrap();
    let (mut sent, mut got) = (Sha256::new(), Sha256::new());
    let mut buf = vec![0u8; 65_536];
    for i in 0..count {
        let p = pattern(200 + i * 7, i as u64);
        sent.update(&p);
        // bounded retries: the first packets may arrive before the flow is up
        let mut answer = None;
        for _ in 0..20 {
            s.send(&p).await.unwrap();
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf)).await
            {
                answer = Some(buf[..n].to_vec());
                break;
            }
        }
        got.update(answer.expect("a UDP answer"));
    }
    (hex::encode(sent.finalize()), hex::encode(got.finalize()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_services_share_one_session_each_byte_exact() {
    let r = rendezvous().await;
    let mut tasks = JoinSet::new();
    let name = format!("services-{}", std::process::id());
    let echo = spawn_tcp_echo(&mut tasks).await.unwrap();
    const WEB: usize = 3 << 20;
    let web = greeter(&mut tasks, WEB, 7).await;
    let dns = spawn_udp_echo(&mut tasks).await.unwrap();
    let (mut tx, ticket) = sender(
        &r,
        &format!("ssh=tcp://{echo}"),
        &[
            "--source",
            &format!("web=tcp://{web}"),
            "--source",
            &format!("dns=udp://{dns}"),
            "--name",
            &name,
        ],
    )
    .await;
    let mut rx = receiver_of(
        &r,
        &ticket,
        &[
            "ssh=tcp://127.0.0.1:0",
            "web=tcp://127.0.0.1:0",
            "dns=udp://127.0.0.1:0",
        ],
    );
    let a = listen_addrs(&mut rx, 3).await;
    rx.wait_session().await;

    let ssh_data = pattern(4 << 20, 11);
    let (ssh_back, web_got, (udp_sent, udp_got)) = tokio::join!(
        echo_roundtrip(a[0], &ssh_data),
        download(a[1]),
        udp_exchange(a[2], 200),
    );
    assert_eq!(
        sha(&ssh_back),
        sha(&ssh_data),
        "ssh (tcp echo) through its service"
    );
    assert_eq!(
        sha(&web_got),
        sha(&pattern(WEB, 7)),
        "web (tcp download) through its service"
    );
    assert_eq!(udp_got, udp_sent, "dns (udp echo) through its service");

    // one session carried all three
    let line = tx.wait_stderr("peer authenticated").await;
    assert!(
        line.contains("service `ssh` (tcp), service `web` (tcp), service `dns` (udp)"),
        "{line}"
    );
    assert_eq!(
        count_stderr(&tx, "peer authenticated"),
        1,
        "{}",
        tx.stderr_text()
    );
    assert_eq!(rx.connections().await, 1);

    // status counts each service
    let (code, out, err) = run_to_end(&["status", &name, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let svc = |n: &str, k: &str| {
        v["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .map(|s| s[k].as_u64().unwrap())
            .unwrap_or_else(|| panic!("no service {n} in {out}"))
    };
    assert_eq!(
        (svc("ssh", "tcp_total"), svc("web", "tcp_total")),
        (1, 1),
        "{out}"
    );
    assert_eq!(svc("dns", "udp_flows_total"), 1, "{out}");
    let (_, text, _) = run_to_end(&["status", &name]).await;
    assert!(text.contains("service web: tcp 0 open / 1 total"), "{text}");
    for p in [&tx, &rx] {
        let text = p.stderr_text();
        assert!(!text.contains("ERROR") && !text.contains("WARN"), "{text}");
    }
}

/// Run the sender with `/etc/hosts` replaced (in a private mount
/// namespace) by `hosts`, so a name resolves to chosen addresses without
/// DNS. `None` when this machine cannot (not root, no unshare).
fn wrapper_with_hosts(hosts: &std::path::Path) -> Option<Vec<String>> {
    let wrapper: Vec<String> = vec![
        "unshare".into(),
        "-m".into(),
        "sh".into(),
        "-c".into(),
        format!("mount --bind {} /etc/hosts && exec \"$@\"", hosts.display()),
        "sh".into(),
    ];
    // the whole wrapper, around `true`: unshare and the bind mount must work
    let works = std::process::Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .arg("true")
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        assert!(
            std::env::var_os("PEERPORT_REQUIRE_TOOLS").is_none(),
            "`unshare -m` is required (root) for the DNS-rebinding test"
        );
        eprintln!("skipping the two-address name check: `unshare -m` does not work here");
        return None;
    }
    Some(wrapper)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_services_and_destinations_reach_nothing() {
    let r = rendezvous().await;
    let dir = tempfile::tempdir().unwrap();
    let mut tasks = JoinSet::new();
    let echo = spawn_tcp_echo(&mut tasks).await.unwrap();
    let udp = spawn_udp_echo(&mut tasks).await.unwrap();
    // an allowed destination, and the same port on an address no rule allows
    let (allowed, allowed_conns, allowed_bytes) =
        counting_echo(&mut tasks, "127.0.0.1:0".parse().unwrap()).await;
    let (forbidden, forbidden_conns, forbidden_bytes) = counting_echo(
        &mut tasks,
        SocketAddr::new("127.0.0.2".parse().unwrap(), allowed.port()),
    )
    .await;
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n127.0.0.1 mixed.peerport.test\n127.0.0.2 mixed.peerport.test\n",
    )
    .unwrap();
    // `admin` only for a receiver id that is not ours
    let other = iroh::SecretKey::generate().public().to_string();
    let cfg = dir.path().join("sender.toml");
    std::fs::write(
        &cfg,
        format!("[[service]]\nname = \"admin\"\nsource = \"tcp://{echo}\"\nallowed-peer = [\"{other}\"]\n"),
    )
    .unwrap();
    let mut args: Vec<String> = vec![
        "sender".into(),
        "iroh".into(),
        "-c".into(),
        cfg.display().to_string(),
        "--source".into(),
        format!("ssh=tcp://{echo}"),
        "--allow".into(),
        format!("127.0.0.1/32:{}", allowed.port()),
        "--allow".into(),
        format!("127.0.0.1:{}", udp.port()),
    ];
    args.extend(local_flags(&r));
    let wrapper = wrapper_with_hosts(&hosts);
    let mut tx = match &wrapper {
        Some(w) => Proc::spawn_wrapped(w, &args),
        None => Proc::spawn(&args),
    };
    let ticket = tx.first_stdout_line().await;

    // refused at the hello: the receiver exits 4 with the reason, the sender logs it
    for (target, says) in [
        ("nope=tcp://127.0.0.1:0", "this sender has no service `nope` (its services: ssh, admin)"),
        ("admin=tcp://127.0.0.1:0", "may not use service `admin`"),
        (
            &format!("tcp://127.0.0.1:0={forbidden}"),
            &format!("destination tcp://{forbidden} refused: {forbidden} is not allowed by the sender's --allow rules"),
        ),
        ("udp://127.0.0.1:0=127.0.0.1:53", "is not allowed by the sender's --allow rules"),
    ] {
        let mut rx = receiver_of(&r, &ticket, &[target]);
        assert_eq!(rx.wait_exit(WAIT).await, Some(4), "{target}: {}", rx.stderr_text());
        let text = rx.stderr_text();
        assert!(text.contains(says), "{target}: receiver said:\n{text}");
        assert!(tx.stderr_text().contains(says), "{target}: sender said:\n{}", tx.stderr_text());
    }

    // allowed: reached, byte-exact (a TCP and a UDP destination in one session)
    let mut rx = receiver_of(
        &r,
        &ticket,
        &[
            &format!("tcp://127.0.0.1:0={allowed}"),
            &format!("udp://127.0.0.1:0={udp}"),
        ],
    );
    let a = listen_addrs(&mut rx, 2).await;
    rx.wait_session().await;
    tcp_echo_check(a[0], 256 * 1024, 3).await;
    let (sent, got) = udp_exchange(a[1], 50).await;
    assert_eq!(sent, got, "udp destination");
    assert_eq!(allowed_conns.load(SeqCst), 1);
    drop(rx);

    if wrapper.is_some() {
        // a name that resolves to an allowed and a forbidden address: refused
        // when the connection starts, and neither address is contacted
        let before = (allowed_conns.load(SeqCst), allowed_bytes.load(SeqCst));
        let target = format!("tcp://127.0.0.1:0=mixed.peerport.test:{}", allowed.port());
        let mut rx = receiver_of(&r, &ticket, &[&target]);
        let a = listen_addrs(&mut rx, 1).await;
        rx.wait_session().await;
        let mut c = TcpStream::connect(a[0]).await.unwrap();
        let _ = c.write_all(b"must not arrive anywhere").await;
        let mut buf = Vec::new();
        let n = tokio::time::timeout(WAIT, c.read_to_end(&mut buf))
            .await
            .expect("closed in time");
        assert!(n.is_err() || buf.is_empty(), "got {buf:?}");
        let says = "the name resolves to 127.0.0.1, 127.0.0.2, and 127.0.0.2:";
        rx.wait_stderr(says).await;
        assert!(tx.stderr_text().contains(says), "{}", tx.stderr_text());
        assert_eq!(
            (allowed_conns.load(SeqCst), allowed_bytes.load(SeqCst)),
            before
        );
    }
    assert_eq!(
        (forbidden_conns.load(SeqCst), forbidden_bytes.load(SeqCst)),
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_services_without_dropping_sessions_that_comply() {
    let r = rendezvous().await;
    let dir = tempfile::tempdir().unwrap();
    let mut tasks = JoinSet::new();
    let echo = spawn_tcp_echo(&mut tasks).await.unwrap();
    let web = greeter(&mut tasks, 1 << 20, 5).await;
    let base = toml_of("sender", "iroh", &local_flags(&r));
    let cfg = dir.path().join("sender.toml");
    let ssh = format!("[[service]]\nname = \"ssh\"\nsource = \"tcp://{echo}\"\n");
    let web_svc = format!("[[service]]\nname = \"web\"\nsource = \"tcp://{web}\"\n");
    std::fs::write(&cfg, format!("{base}{ssh}")).unwrap();
    let mut tx = Proc::spawn(&["run".into(), "-c".into(), cfg.display().to_string()]);
    let ticket = tx.first_stdout_line().await;

    let mut a = receiver_of(&r, &ticket, &["ssh=tcp://127.0.0.1:0"]);
    let a_addr = listen_addrs(&mut a, 1).await[0];
    a.wait_session().await;
    let mut held = Held::open(a_addr).await;
    assert!(held.echo(b"before", WAIT).await.is_some());

    // add `web` while ssh carries traffic: 256 KiB echoes, one after the
    // other, until the reload and the new service's download are done
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let (d, n) = (done.clone(), rounds.clone());
    let transfer = tokio::spawn(async move {
        let (mut sent, mut got) = (Sha256::new(), Sha256::new());
        let mut i = 0u64;
        while !d.load(SeqCst) && i < 2000 {
            let chunk = pattern(256 * 1024, i);
            sent.update(&chunk);
            match held.echo(&chunk, WAIT).await {
                Some(back) => got.update(back),
                None => break,
            }
            i += 1;
            n.fetch_add(1, SeqCst);
        }
        let (sent, got) = (hex::encode(sent.finalize()), hex::encode(got.finalize()));
        (Some(got), sent, held)
    });
    while rounds.load(SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(&cfg, format!("{base}{ssh}{web_svc}")).unwrap();
    tx.signal(1);
    tx.wait_stderr("SIGHUP: configuration re-read: serving these services")
        .await;
    let mut b = receiver_of(&r, &ticket, &["web=tcp://127.0.0.1:0"]);
    let b_addr = listen_addrs(&mut b, 1).await[0];
    b.wait_session().await;
    assert_eq!(sha(&download(b_addr).await), sha(&pattern(1 << 20, 5)));
    let during = rounds.load(SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    done.store(true, SeqCst);
    let (got, want, mut held) = transfer.await.unwrap();
    assert!(
        rounds.load(SeqCst) > during,
        "the ssh traffic went on after the reload"
    );
    assert_eq!(
        got.as_deref(),
        Some(want.as_str()),
        "the ssh transfer across the reload"
    );
    assert!(held.echo(b"after", WAIT).await.is_some());
    let status = a.status().await.expect("status");
    assert_eq!(status.totals.reconnects, 0, "{}", a.stderr_text());

    // a broken file keeps what runs
    std::fs::write(&cfg, format!("{base}{ssh}{web_svc}bogus-key = 1\n")).unwrap();
    tx.signal(1);
    tx.wait_stderr("keeping the running configuration").await;
    assert!(held.echo(b"still", WAIT).await.is_some());

    // remove `ssh`: its session is closed with the reason, `web`'s goes on
    std::fs::write(&cfg, format!("{base}{web_svc}")).unwrap();
    tx.signal(1);
    assert_eq!(a.wait_exit(WAIT).await, Some(4), "{}", a.stderr_text());
    assert!(
        a.stderr_text().contains(
            "the sender's reloaded configuration no longer allows this receiver: this sender has no service `ssh`"
        ),
        "{}",
        a.stderr_text()
    );
    assert!(held.closed_within(WAIT).await);
    assert_eq!(sha(&download(b_addr).await), sha(&pattern(1 << 20, 5)));
    tx.wait_stderr("the reloaded configuration no longer allows this session")
        .await;
    assert_eq!(b.connections().await, 1);
}

/// A service that reads a PROXY v2 header and answers with the source
/// address it names.
async fn proxy_reader(tasks: &mut JoinSet<()>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tasks.spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = vec![0u8; 16];
                if s.read_exact(&mut head).await.is_err() {
                    return;
                }
                let len = u16::from_be_bytes([head[14], head[15]]) as usize;
                head.resize(16 + len, 0);
                if s.read_exact(&mut head[16..]).await.is_err() {
                    return;
                }
                let answer = match ppp::v2::Header::try_from(head.as_slice()) {
                    Ok(h) => match h.addresses {
                        ppp::v2::Addresses::IPv4(a) => {
                            format!(
                                "{}:{} -> {}:{}",
                                a.source_address,
                                a.source_port,
                                a.destination_address,
                                a.destination_port
                            )
                        }
                        other => format!("{other:?}"),
                    },
                    Err(e) => format!("bad header: {e}"),
                };
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_tells_the_service_the_client_address() {
    let r = rendezvous().await;
    let dir = tempfile::tempdir().unwrap();
    let mut tasks = JoinSet::new();
    let svc = proxy_reader(&mut tasks).await;
    let cfg = dir.path().join("sender.toml");
    let base = toml_of("sender", "iroh", &local_flags(&r));
    std::fs::write(
        &cfg,
        format!(
            "{base}[[service]]\nname = \"web\"\nsource = \"tcp://{svc}\"\nproxy-protocol = true\n"
        ),
    )
    .unwrap();
    let mut tx = Proc::spawn(&["run".into(), "-c".into(), cfg.display().to_string()]);
    let ticket = tx.first_stdout_line().await;
    let mut rx = receiver_of(&r, &ticket, &["web=tcp://127.0.0.1:0"]);
    let local = listen_addrs(&mut rx, 1).await[0];
    rx.wait_session().await;
    let mut c = TcpStream::connect(local).await.unwrap();
    let me = c.local_addr().unwrap();
    let mut got = String::new();
    tokio::time::timeout(WAIT, c.read_to_string(&mut got))
        .await
        .expect("answer in time")
        .unwrap();
    assert_eq!(got, format!("{me} -> {local}"));
}

/// A SOCKS5 CONNECT to `to` through the proxy at `proxy`; the reply code
/// and the connection (for the data that follows).
async fn socks_connect(proxy: SocketAddr, to: SocketAddr) -> (u8, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 0], "the proxy takes no authentication");
    let std::net::IpAddr::V4(ip) = to.ip() else {
        unreachable!()
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&ip.octets());
    req.extend_from_slice(&to.port().to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 10];
    tokio::time::timeout(WAIT, s.read_exact(&mut reply))
        .await
        .expect("a SOCKS5 reply in time")
        .unwrap();
    (reply[1], s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_destinations_follow_the_senders_rules() {
    let r = rendezvous().await;
    let mut tasks = JoinSet::new();
    let (allowed, conns, _) = counting_echo(&mut tasks, "127.0.0.1:0".parse().unwrap()).await;
    let (forbidden, f_conns, f_bytes) = counting_echo(
        &mut tasks,
        SocketAddr::new("127.0.0.2".parse().unwrap(), allowed.port()),
    )
    .await;
    // a sender with destinations only, no service
    let mut args: Vec<String> = vec![
        "sender".into(),
        "iroh".into(),
        "--allow".into(),
        format!("127.0.0.1/32:{}", allowed.port()),
    ];
    args.extend(local_flags(&r));
    let mut tx = Proc::spawn(&args);
    let ticket = tx.first_stdout_line().await;
    let mut rx = receiver_of(&r, &ticket, &["socks5://127.0.0.1:0"]);
    let proxy = listen_addrs(&mut rx, 1).await[0];
    rx.wait_session().await;

    let (code, mut s) = socks_connect(proxy, allowed).await;
    assert_eq!(code, 0, "CONNECT to an allowed destination succeeds");
    let data = pattern(300 * 1024, 4);
    let (mut rd, mut wr) = s.split();
    let mut back = vec![0u8; data.len()];
    let (w, r2) = tokio::join!(wr.write_all(&data), rd.read_exact(&mut back));
    w.unwrap();
    r2.unwrap();
    assert_eq!(sha(&back), sha(&data));
    assert_eq!(conns.load(SeqCst), 1);

    let (code, mut s) = socks_connect(proxy, forbidden).await;
    assert_eq!(code, 2, "SOCKS5 'connection not allowed by ruleset'");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
    rx.wait_stderr("is not allowed by the sender's --allow rules")
        .await;
    assert_eq!((f_conns.load(SeqCst), f_bytes.load(SeqCst)), (0, 0));

    // a legacy receiver (one plain target) is told what this sender offers
    let mut plain = receiver_proc(&r, "tcp", &ticket, &[]);
    assert_eq!(plain.wait_exit(WAIT).await, Some(4));
    assert!(
        plain
            .stderr_text()
            .contains("this sender has no services, only destinations"),
        "{}",
        plain.stderr_text()
    );
}
