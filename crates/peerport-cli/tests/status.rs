//! `peerport status`, `--metrics` and `--dashboard` against live tunnels
//! (the real binary, loopback only), checked with real parsers: `promtool`
//! (Prometheus text), Python's `prometheus_client` OpenMetrics parser, and
//! headless Chromium for the dashboard. A missing tool skips its check,
//! saying so, unless PEERPORT_REQUIRE_TOOLS=1 (CI) makes it a failure.

mod common;

use std::{path::Path, process::Stdio, time::Duration};

use common::*;
use peerport::status::Snapshot;
use peerport_testkit::spawn_tcp_echo;
use serde_json::Value;
use tokio::task::JoinSet;

/// The URL a process logged for `what` ("metrics at http://...").
async fn url_of(p: &mut Proc, what: &str) -> String {
    let line = p.wait_stderr(&format!("{what} at http://")).await;
    let at = line.find("http://").unwrap();
    line[at..].split_whitespace().next().unwrap().to_string()
}

async fn status_json(sock: &Path) -> Snapshot {
    let (code, out, err) = run_to_end(&[
        "status",
        "--json",
        "--control-socket",
        sock.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "status failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}: {out}"))
}

async fn http_get(url: &str, accept: &str) -> String {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "10",
            "-H",
            &format!("Accept: {accept}"),
            url,
        ])
        .output()
        .await
        .expect("curl");
    assert!(out.status.success(), "GET {url} failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Run `cmd` with `input` on stdin; (success, stdout+stderr).
async fn pipe(cmd: &str, args: &[&str], input: &str) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut c = tokio::process::Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT, c.wait_with_output())
        .await
        .expect("in time")
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The value of the first sample of `name` (any labels) in exposition text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_metrics_and_dashboard_show_a_live_direct_tunnel() {
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (rx_sock, tx_sock) = (dir.path().join("rx.sock"), dir.path().join("tx.sock"));
    let rflags: Vec<String> = [
        "--name",
        "test-rx",
        "--control-socket",
        rx_sock.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
        "--dashboard",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .into();
    let mut rx = manual_receiver_proc("ice", "tcp", dir.path(), &rflags);
    let local = listen_addr(&mut rx).await;
    let sflags: Vec<String> = [
        "--control-socket",
        tx_sock.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .into();
    let mut tx = manual_sender("ice", &format!("tcp://{tcp}"), dir.path(), &sflags);
    let metrics = url_of(&mut rx, "metrics").await;
    let dashboard = url_of(&mut rx, "dashboard").await;
    let tx_metrics = url_of(&mut tx, "metrics").await;
    // the progress line says where to connect and over which path
    let up = rx.wait_stderr("tunnel up: connect to").await;
    assert!(
        up.contains(&format!("tcp://{local}")) && up.contains("path: direct"),
        "{up}"
    );
    for seed in 0..3 {
        tcp_echo_check(local, 1 << 20, seed).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // status over the control socket: JSON and text
    let s = status_json(&rx_sock).await;
    assert_eq!(
        (s.info.role.as_str(), s.info.name.as_str(), s.state.as_str()),
        ("receiver", "test-rx", "up")
    );
    assert_eq!(s.sessions.len(), 1, "{s:?}");
    let x = &s.sessions[0];
    assert!(x.connected && x.path.starts_with("direct"), "{x:?}");
    assert_eq!(x.path_kind, peerport::transport::PathKind::Direct);
    assert_eq!(x.sums.tcp_total, 3);
    assert!(
        x.sums.rx_bytes > 3 << 20 && x.sums.tx_bytes > 3 << 20,
        "{x:?}"
    );
    assert!(x.rtt_ms > 0.0 && x.cwnd_bytes > 0, "{x:?}");
    let t = status_json(&tx_sock).await;
    assert_eq!((t.info.role.as_str(), t.state.as_str()), ("sender", "up"));
    assert_eq!(t.sessions[0].sums.tcp_total, 3);
    assert_eq!(
        t.sessions[0].peer.len(),
        64,
        "the receiver's certificate fingerprint"
    );
    let (code, text, _) =
        run_to_end(&["status", "--control-socket", rx_sock.to_str().unwrap()]).await;
    assert_eq!(code, 0);
    assert!(
        text.contains("receiver \"test-rx\" (ice")
            && text.contains("session 1")
            && text.contains("tcp 0 open / 3 total"),
        "{text}"
    );

    // metrics: Prometheus text checked by promtool, OpenMetrics by a parser
    let plain = http_get(&metrics, "text/plain").await;
    assert_eq!(sample(&plain, "peerport_tcp_connections_total"), 3.0);
    assert_eq!(sample(&plain, "peerport_up"), 1.0);
    assert!(
        plain.contains("peerport_session_path{session=\"1\""),
        "{plain}"
    );
    let om = http_get(&metrics, "application/openmetrics-text; version=1.0.0").await;
    assert!(om.ends_with("# EOF\n"), "{om}");
    let sender_om = http_get(&tx_metrics, "application/openmetrics-text; version=1.0.0").await;
    assert_eq!(sample(&sender_om, "peerport_refused_total"), 0.0);
    if tool("promtool") {
        for text in [&plain, &http_get(&tx_metrics, "text/plain").await] {
            let (ok, out) = pipe("promtool", &["check", "metrics"], text).await;
            assert!(ok, "promtool check metrics: {out}\n{text}");
        }
    }
    // Debian's python3-prometheus-client lands in /usr/bin/python3's
    // dist-packages; a python3 earlier on PATH (pyenv) would not see it.
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    if tool(python) {
        let parse = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nn = sum(1 for _ in p(sys.stdin.read()))\nprint(n)";
        let (ok, out) = pipe(python, &["-c", parse], &om).await;
        if out.contains("No module named") {
            assert!(
                std::env::var_os("PEERPORT_REQUIRE_TOOLS").is_none(),
                "python3-prometheus-client is required: {out}"
            );
            eprintln!("skipping the OpenMetrics parser check: {out}");
        } else {
            assert!(
                ok && out.trim().parse::<u32>().unwrap_or(0) > 20,
                "OpenMetrics parser: {out}\n{om}"
            );
        }
    }

    // the dashboard in headless Chromium shows what status shows
    if tool("chromium") {
        let dom = chromium(&["--dump-dom", &dashboard]).await;
        assert!(
            dom.contains("data-loaded=\"1\"") && dom.contains("data-state=\"up\""),
            "{dom}"
        );
        let now = status_json(&rx_sock).await;
        let row = dom
            .split("<tr data-session=\"1\">")
            .nth(1)
            .expect("session row")
            .split("</tr>")
            .next()
            .unwrap();
        let x = &now.sessions[0];
        assert!(
            row.contains(&format!(
                "data-open=\"{}\" data-total=\"{}\"",
                x.sums.tcp_open, x.sums.tcp_total
            )),
            "{row}"
        );
        assert!(
            row.contains(&format!("kind {}", x.path_kind.as_str())),
            "{row}"
        );
        assert!(row.contains(&x.peer[..12]), "{row}");
        // the RTT shown is the one status reads (within what a second may change)
        let shown: f64 = row
            .split("data-field=\"rtt_ms\" data-value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(shown > 0.0 && shown < 1000.0, "{row}");
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        let _ = std::fs::remove_file(&shot);
        chromium(&[
            "--hide-scrollbars",
            "--window-size=1200,820",
            &format!("--screenshot={}", shot.display()),
            &dashboard,
        ])
        .await;
        assert!(
            std::fs::metadata(&shot)
                .map(|m| m.len() > 10_000)
                .unwrap_or(false),
            "no screenshot at {}",
            shot.display()
        );
    }
    drop(tx);
}

async fn chromium(args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut all = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--no-first-run".into(),
        "--timeout=3000".into(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("chromium")
            .args(&all)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finished in time")
    .expect("chromium ran");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_relayed_session_and_json_logs_parse() {
    let r = rendezvous().await;
    let mut svc = JoinSet::new();
    let tcp = spawn_tcp_echo(&mut svc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rx.sock");
    let mut flags = turn_flags(&r, dir.path());
    let _s = manual_sender("ice", &format!("tcp://{tcp}"), dir.path(), &flags);
    flags.extend(
        [
            "--relay-only",
            "--control-socket",
            sock.to_str().unwrap(),
            "--log-format",
            "json",
        ]
        .map(String::from),
    );
    let mut rx = manual_receiver_proc("ice", "tcp", dir.path(), &flags);
    let up = rx.wait_stderr("tunnel up: connect to").await;
    let local: std::net::SocketAddr = up
        .split("tcp://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    tcp_echo_check(local, 1 << 20, 9).await;
    let s = status_json(&sock).await;
    let x = &s.sessions[0];
    assert_eq!(x.path_kind, peerport::transport::PathKind::Relay, "{x:?}");
    assert!(x.path.starts_with("relay"), "{x:?}");
    let (_, text, _) = run_to_end(&["status", "--control-socket", sock.to_str().unwrap()]).await;
    assert!(text.contains("  relay "), "{text}");
    // --log-format json: every stderr line is one JSON object
    for line in rx.stderr_text().lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
}

#[tokio::test]
async fn status_without_a_running_process_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nobody.sock");
    let (code, out, err) =
        run_to_end(&["status", "--control-socket", sock.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("no running peerport process") && err.contains("nobody.sock"),
        "{err}"
    );
}

/// `iroh-manual` binds one endpoint per session: `/metrics` shows the iroh
/// metrics of each, every family once, each series labelled with its
/// endpoint, and a closed session's series go with its endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iroh_manual_metrics_show_every_sessions_endpoint_once() {
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut tx = manual_sender(
        "iroh-manual",
        &format!("tcp://{echo}"),
        dir.path(),
        &["--metrics".into(), "127.0.0.1:0".into()],
    );
    let metrics = url_of(&mut tx, "metrics").await;
    let (mut first, local) = manual_receiver("iroh-manual", "tcp", dir.path(), &[]).await;
    tcp_echo_check(local, 64 << 10, 1).await;
    let (_second, local) = manual_receiver("iroh-manual", "tcp", dir.path(), &[]).await;
    tcp_echo_check(local, 64 << 10, 1).await;
    let endpoints = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with("iroh_"))
            .filter_map(|l| l.split("endpoint=\"").nth(1))
            .filter_map(|r| r.split('"').next())
            .map(str::to_string)
            .collect()
    };
    let plain = http_get(&metrics, "text/plain").await;
    assert_eq!(endpoints(&plain).len(), 2, "{plain}");
    let types: Vec<_> = plain.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let distinct: std::collections::BTreeSet<_> = types.iter().collect();
    assert_eq!(
        types.len(),
        distinct.len(),
        "a family written twice:\n{plain}"
    );
    if tool("promtool") {
        let (ok, out) = pipe("promtool", &["check", "metrics"], &plain).await;
        assert!(ok, "promtool check metrics: {out}\n{plain}");
    }
    // the first receiver ends its session on purpose: its endpoint goes
    first.signal(15);
    first.wait_exit(Duration::from_secs(20)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = http_get(&metrics, "text/plain").await;
        if endpoints(&text).len() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed session's endpoint is still listed:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
