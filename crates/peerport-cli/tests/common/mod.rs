//! Shared test helpers: embedded rendezvous servers in the test process,
//! the real `peerport` binary as child processes, local services.
//! Everything binds 127.0.0.1; every wait is bounded; children die on drop.
#![allow(dead_code)]

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use peerport::status::{SessionStatus, Snapshot};
#[allow(unused_imports, reason = "not every test file uses both")]
pub use peerport::transport::{Candidate, PathKind};

/// The ICE candidate type of this side's end of a session's path.
pub fn local_candidate(s: &SessionStatus) -> Option<Candidate> {
    s.path_log.last()?.info.local?.candidate
}

/// Assert a session's path: its kind and this side's ICE candidate type.
pub fn assert_ice_path(s: &SessionStatus, kind: PathKind, local: Candidate) {
    assert_eq!(
        (s.path_kind, local_candidate(s)),
        (kind, Some(local)),
        "{s:?}"
    );
}

use peerport_rendezvous::Rendezvous;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::watch,
};

pub const WAIT: Duration = Duration::from_secs(40);

/// Where the test processes put their control sockets (not the machine's
/// /run/peerport).
pub fn runtime_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("peerport-tests-run")
}

/// Whether an outside tool (promtool, chromium, systemd-analyze) is
/// installed; a missing one skips its check, saying so, unless
/// PEERPORT_REQUIRE_TOOLS=1 (CI) makes it a failure.
pub fn tool(name: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("PEERPORT_REQUIRE_TOOLS").is_none(),
            "{name} is required (PEERPORT_REQUIRE_TOOLS is set)"
        );
        eprintln!("skipping the {name} check: {name} is not installed");
    }
    found
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_peerport")
}

pub async fn rendezvous() -> Rendezvous {
    Rendezvous::start(Ipv4Addr::LOCALHOST.into())
        .await
        .expect("embedded rendezvous")
}

/// Flags that keep an endpoint on loopback with the embedded servers only.
pub fn local_flags(r: &Rendezvous) -> Vec<String> {
    let qad = (r.relay_quic_port, r.relay_ca_file.display().to_string());
    iroh_flags(&r.relay_url.to_string(), Some(qad), r.pkarr_url.as_str())
}

/// iroh flags for a loopback endpoint with one relay (its QUIC address
/// discovery port and CA, if it has them) and one pkarr server.
pub fn iroh_flags(relay: &str, qad: Option<(u16, String)>, pkarr: &str) -> Vec<String> {
    let (port, ca) = match qad {
        Some((port, ca)) => (port.to_string(), Some(ca)),
        None => ("0".to_string(), None),
    };
    let mut v: Vec<String> = vec![
        "--relay-url".into(),
        relay.into(),
        "--relay-quic-port".into(),
        port,
    ];
    if let Some(ca) = ca {
        v.extend(["--relay-ca".into(), ca]);
    }
    v.extend(
        [
            "--dns-server",
            pkarr,
            "--no-mdns",
            "--no-portmap",
            "--bind",
            "127.0.0.1:0",
        ]
        .map(String::from),
    );
    v
}

/// A running peerport process whose output is collected.
pub struct Proc {
    pub child: Child,
    pub stdout: watch::Receiver<Vec<String>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    stderr_rx: watch::Receiver<usize>,
    pid: Option<u32>,
    args: Vec<String>,
}

/// A test ends its processes with SIGKILL (`kill_on_drop`), which leaves
/// them no chance to remove their control sockets: remove them for them.
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let Some(pid) = self.pid else { return };
        let suffix = format!("-{pid}.sock");
        let dir = runtime_dir().join("peerport");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().ends_with(&suffix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

impl Proc {
    pub fn spawn(args: &[String]) -> Proc {
        Self::spawn_with(args, Stdio::null())
    }

    /// Spawn with stdin as a pipe the test writes to (paste prompts).
    pub fn spawn_piped(args: &[String]) -> (Proc, tokio::process::ChildStdin) {
        let mut p = Self::spawn_with(args, Stdio::piped());
        let stdin = p.child.stdin.take().unwrap();
        (p, stdin)
    }

    /// Spawn the binary under `wrapper` (e.g. `unshare -m sh -c ... --`):
    /// the wrapper's arguments come first, then the binary and `args`.
    pub fn spawn_wrapped(wrapper: &[String], args: &[String]) -> Proc {
        let mut all: Vec<String> = wrapper[1..].to_vec();
        all.push(bin().to_string());
        all.extend(args.iter().cloned());
        Self::spawn_program(&wrapper[0], &all, Stdio::null())
    }

    fn spawn_with(args: &[String], stdin: Stdio) -> Proc {
        Self::spawn_program(bin(), args, stdin)
    }

    fn spawn_program(program: &str, args: &[String], stdin: Stdio) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "warn,peerport=debug")
            .env_remove("XDG_CONFIG_HOME")
            .env("XDG_RUNTIME_DIR", runtime_dir())
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn peerport");
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (out_tx, out_rx) = watch::channel(Vec::new());
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                out_tx.send_modify(|v| v.push(l));
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (err_tx, err_rx) = watch::channel(0usize);
        let st = stderr.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if std::env::var_os("PEERPORT_TEST_ECHO").is_some() {
                    eprintln!("[child] {l}");
                }
                let n = {
                    let mut g = st.lock().unwrap();
                    g.push(l);
                    g.len()
                };
                let _ = err_tx.send(n);
            }
        });
        Proc {
            pid: child.id(),
            args: args.to_vec(),
            child,
            stdout: out_rx,
            stderr,
            stderr_rx: err_rx,
        }
    }

    /// First stdout line (the sender's ticket).
    pub async fn first_stdout_line(&mut self) -> String {
        let got = match tokio::time::timeout(WAIT, self.stdout.wait_for(|v| !v.is_empty())).await {
            Ok(Ok(v)) => Some(v[0].clone()),
            _ => None,
        };
        got.unwrap_or_else(|| panic!("no stdout line; stderr:\n{}", self.stderr_text()))
    }

    /// The first stdout line that starts with `prefix` (waits, bounded).
    pub async fn stdout_line(&mut self, prefix: &str) -> String {
        let got = tokio::time::timeout(
            WAIT,
            self.stdout
                .wait_for(|v| v.iter().any(|l| l.starts_with(prefix))),
        )
        .await
        .ok()
        .and_then(|r| r.ok())
        .map(|v| v.iter().find(|l| l.starts_with(prefix)).cloned());
        match got.flatten() {
            Some(l) => l,
            None => panic!(
                "no stdout line `{prefix}...`; stderr:\n{}",
                self.stderr_text()
            ),
        }
    }

    /// Wait until a stderr line contains `needle`; returns that line.
    pub async fn wait_stderr(&mut self, needle: &str) -> String {
        self.wait_stderr_nth(needle, 1).await
    }

    /// Wait until `n` stderr lines contain `needle`; returns the n-th.
    pub async fn wait_stderr_nth(&mut self, needle: &str, n: usize) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(l) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle))
                .nth(n - 1)
            {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero()
                || tokio::time::timeout(left, self.stderr_rx.changed())
                    .await
                    .is_err()
            {
                panic!(
                    "`{needle}` never appeared on stderr:\n{}",
                    self.stderr_text()
                );
            }
        }
    }

    /// Where the process answers `peerport status`: `--control-socket`,
    /// else its `--name`, else the default `ROLE-PID`.
    pub fn control_socket(&self) -> Option<PathBuf> {
        let arg = |flag: &str| {
            self.args
                .iter()
                .position(|a| a == flag)
                .and_then(|i| self.args.get(i + 1))
        };
        let dir = runtime_dir().join("peerport");
        if let Some(p) = arg("--control-socket") {
            return Some(p.into());
        }
        if let Some(name) = arg("--name") {
            return Some(dir.join(format!("{name}.sock")));
        }
        // the newest: a process killed earlier with the same PID (PIDs are
        // reused, up to 32768 here) may have left its socket behind
        let suffix = format!("-{}.sock", self.pid?);
        std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(&suffix))
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| e.path())
    }

    /// The process's status, read from its control socket (`None` while
    /// it does not answer).
    pub async fn status(&self) -> Option<Snapshot> {
        self.try_status().await.ok()
    }

    /// The same, or why there is none (which socket, which step failed,
    /// what came back), for a failing test's message.
    pub async fn try_status(&self) -> Result<Snapshot, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let path = self.control_socket().ok_or("no control socket found")?;
        let shown = path.display();
        let read = async {
            let mut s = tokio::net::UnixStream::connect(&path)
                .await
                .map_err(|e| format!("connect {shown}: {e}"))?;
            s.write_all(b"status\n")
                .await
                .map_err(|e| format!("write {shown}: {e}"))?;
            let mut out = Vec::new();
            s.read_to_end(&mut out)
                .await
                .map_err(|e| format!("read {shown}: {e}"))?;
            serde_json::from_slice(&out).map_err(|e| {
                format!(
                    "parse the reply of {shown} ({e}): {}",
                    String::from_utf8_lossy(&out)
                )
            })
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .map_err(|_| format!("{shown} gave no reply within 5 s"))?
    }

    /// Wait (bounded) until the status satisfies `pred`, and return it.
    pub async fn wait_status(&mut self, what: &str, pred: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last = None;
        let mut failed = String::new();
        loop {
            match self.try_status().await {
                Ok(s) if pred(&s) => return s,
                Ok(s) => last = Some(s),
                Err(e) => failed = e,
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!(
                    "the process ended ({exit}) before {what}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{what}: not within {WAIT:?}; last status: {last:?}; last failure to read one: {failed}\nstderr:\n{}",
                    self.stderr_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the process's `n`-th connection (1 = the first) serves
    /// a session; returns that session's status.
    pub async fn wait_session_nth(&mut self, n: u64) -> SessionStatus {
        let s = self
            .wait_status(&format!("connection {n} up"), |s| {
                s.totals.connections >= n && s.sessions.iter().any(|x| x.connected)
            })
            .await;
        s.sessions.into_iter().find(|x| x.connected).unwrap()
    }

    /// Wait until a connection serves a session; returns its status.
    pub async fn wait_session(&mut self) -> SessionStatus {
        self.wait_session_nth(1).await
    }

    /// Wait until the receiver has lost its tunnel at least once (and
    /// set out to reconnect); returns the status.
    pub async fn wait_lost(&mut self) -> Snapshot {
        self.wait_status("the tunnel lost", |s| s.totals.reconnects >= 1)
            .await
    }

    /// How many connections have served sessions so far (0 while the
    /// status does not answer).
    pub async fn connections(&self) -> u64 {
        self.status().await.map_or(0, |s| s.totals.connections)
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Send a signal (SIGINT = 2, SIGTERM = 15) to the process.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait for exit (bounded) and return the status code.
    /// Its output is read to the end first (bounded), so that what it
    /// printed last is in [`Proc::stderr_text`] when this returns.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(s)) => {
                // the readers end at EOF, which drops their senders
                let (mut out, mut err) = (self.stdout.clone(), self.stderr_rx.clone());
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while out.changed().await.is_ok() {}
                    while err.changed().await.is_ok() {}
                })
                .await;
                s.code()
            }
            _ => panic!(
                "process did not exit in {limit:?}; stderr:\n{}",
                self.stderr_text()
            ),
        }
    }
}

/// Start a sender; returns it and its ticket.
pub async fn sender(r: &Rendezvous, source: &str, extra: &[&str]) -> (Proc, String) {
    let mut args: Vec<String> = vec![
        "sender".into(),
        "iroh".into(),
        "--source".into(),
        source.into(),
    ];
    args.extend(local_flags(r));
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut p = Proc::spawn(&args);
    let ticket = p.first_stdout_line().await;
    assert!(
        ticket.starts_with("ppt1"),
        "unexpected ticket line {ticket}"
    );
    (p, ticket)
}

/// Start a receiver on `proto://127.0.0.1:0` and wait for its session; returns it and its local address.
pub async fn receiver(
    r: &Rendezvous,
    proto: &str,
    ticket: &str,
    extra: &[&str],
) -> (Proc, SocketAddr) {
    let mut p = receiver_proc(r, proto, ticket, extra);
    let addr = listen_addr(&mut p).await;
    p.wait_session().await;
    (p, addr)
}

/// How many stderr lines contain `needle`.
pub fn count_stderr(p: &Proc, needle: &str) -> usize {
    p.stderr
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

/// Ask a UDP echo behind `local` until it answers (bounded by `limit`).
pub async fn udp_echo_within(local: SocketAddr, payload: &[u8], limit: Duration) -> bool {
    let s = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    s.connect(local).await.unwrap();
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = vec![0u8; 65_536];
    while tokio::time::Instant::now() < deadline {
        s.send(payload).await.unwrap();
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(300), s.recv(&mut buf)).await
        {
            if buf[..n] == *payload {
                return true;
            }
        }
    }
    false
}

pub fn receiver_proc(r: &Rendezvous, proto: &str, ticket: &str, extra: &[&str]) -> Proc {
    let mut args: Vec<String> = vec![
        "receiver".into(),
        "iroh".into(),
        "--target".into(),
        format!("{proto}://127.0.0.1:0"),
        "--node-id".into(),
        ticket.into(),
    ];
    args.extend(local_flags(r));
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(&args)
}

/// Run the binary to completion (bounded) with `args`; returns (code, stdout, stderr).
pub async fn run_to_end(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        WAIT,
        Command::new(bin())
            .args(args)
            .env_remove("XDG_CONFIG_HOME")
            .env("XDG_RUNTIME_DIR", runtime_dir())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("command finished in time")
    .expect("ran");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Flags that keep a copy-paste-mode endpoint on loopback without STUN.
pub fn manual_flags(dir: &std::path::Path) -> Vec<String> {
    vec![
        "--offer-file".into(),
        dir.join("offers.txt").display().to_string(),
        "--answer-file".into(),
        dir.join("answers.txt").display().to_string(),
        "--no-stun".into(),
        "--no-portmap".into(),
        "--bind".into(),
        "127.0.0.1:0".into(),
    ]
}

/// Write a secret file with mode 0600 (peerport refuses looser ones).
pub fn write_secret(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// TURN flags for the embedded server (password through a file, not argv).
pub fn turn_flags(r: &Rendezvous, dir: &std::path::Path) -> Vec<String> {
    let pw = dir.join("turn-password");
    write_secret(&pw, &r.turn_password);
    vec![
        "--turn-server".into(),
        format!("turn:{}", r.turn_addr),
        "--turn-user".into(),
        r.turn_user.clone(),
        "--turn-password-file".into(),
        pw.display().to_string(),
    ]
}

/// Start a copy-paste-mode sender reading offers from `dir`.
pub fn manual_sender(mode: &str, source: &str, dir: &std::path::Path, extra: &[String]) -> Proc {
    let mut args: Vec<String> = vec![
        "sender".into(),
        mode.into(),
        "--source".into(),
        source.into(),
    ];
    args.extend(manual_flags(dir));
    args.extend(extra.iter().cloned());
    Proc::spawn(&args)
}

/// Start a copy-paste-mode receiver; wait for its session; returns it and its local address.
pub async fn manual_receiver(
    mode: &str,
    proto: &str,
    dir: &std::path::Path,
    extra: &[String],
) -> (Proc, SocketAddr) {
    let mut p = manual_receiver_proc(mode, proto, dir, extra);
    let addr = listen_addr(&mut p).await;
    p.wait_session().await;
    (p, addr)
}

pub fn manual_receiver_proc(
    mode: &str,
    proto: &str,
    dir: &std::path::Path,
    extra: &[String],
) -> Proc {
    let mut args: Vec<String> = vec![
        "receiver".into(),
        mode.into(),
        "--target".into(),
        format!("{proto}://127.0.0.1:0"),
    ];
    args.extend(manual_flags(dir));
    args.extend(extra.iter().cloned());
    Proc::spawn(&args)
}

pub async fn listen_addr(p: &mut Proc) -> SocketAddr {
    listen_addr_nth(p, 1).await
}

/// The local address of the receiver's `n`-th target (1-based, in
/// order), from its status.
pub async fn listen_addr_nth(p: &mut Proc, n: usize) -> SocketAddr {
    let s = p
        .wait_status("the receiver listens", |s| s.info.listen.is_some())
        .await;
    let listen = s.info.listen.unwrap_or_default();
    listen
        .split(", ")
        .nth(n - 1)
        .and_then(|a| a.split("://").nth(1))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address {n} in the status's listen `{listen}`"))
}

/// Send `data` through a TCP echo at `addr`, half-close, and return what came back.
pub async fn echo_roundtrip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let d = data.to_vec();
    let wr = tokio::spawn(async move {
        w.write_all(&d).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, r.read_to_end(&mut got))
        .await
        .expect("echo in time")
        .unwrap();
    wr.await.unwrap();
    got
}

/// Echo `len` bytes of a pattern through `addr` and compare.
pub async fn tcp_echo_check(addr: SocketAddr, len: usize, seed: u64) {
    let data = peerport_testkit::pattern(len, seed);
    let got = echo_roundtrip(addr, &data).await;
    assert!(
        got == data,
        "echo of {len} bytes came back as {} bytes, different",
        got.len()
    );
}

/// coturn started by the test on 127.0.0.1 (Debian package `coturn`).
pub struct Coturn {
    pub port: u16,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Coturn {
    /// coturn on a free port of 127.0.0.1, once it answers STUN. A port
    /// found free can be taken before coturn binds it (the other tests'
    /// sockets): coturn then never answers, and it is started again on
    /// another port (at most five times).
    pub async fn start() -> Option<Coturn> {
        let bin = ["/usr/bin/turnserver", "/usr/sbin/turnserver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(bin) = bin else {
            if std::env::var_os("PEERPORT_REQUIRE_COTURN").is_some() {
                panic!("coturn (turnserver) is required but not installed: apt-get install coturn");
            }
            eprintln!("SKIPPED: coturn not installed (apt-get install coturn); .ci/run installs it and requires it");
            return None;
        };
        for _ in 0..5 {
            if let Some(c) = Self::start_once(bin).await {
                return Some(c);
            }
        }
        panic!("coturn did not answer STUN on 127.0.0.1 in five starts");
    }

    async fn start_once(bin: &str) -> Option<Coturn> {
        // below Linux's ephemeral range (32768-60999), where the other
        // tests' sockets get their ports
        let base = 20_000 + (std::process::id() % 1_000) as u16 * 10;
        let port =
            (base..base + 100).find(|p| std::net::UdpSocket::bind(("127.0.0.1", *p)).is_ok())?;
        let dir = tempfile::tempdir().unwrap();
        let child = tokio::process::Command::new(bin)
            .args([
                "-n",
                "--listening-ip",
                "127.0.0.1",
                "--relay-ip",
                "127.0.0.1",
                "--listening-port",
                &port.to_string(),
                "--min-port",
                "49152",
                "--max-port",
                "65535",
                "--lt-cred-mech",
                "--user",
                "peerport:s3cret",
                "--realm",
                "peerport",
                "--no-tls",
                "--no-dtls",
                "--no-tcp-relay",
                "--no-cli",
                "--allow-loopback-peers",
                "--log-file",
                "stdout",
                "--pidfile",
                &dir.path().join("pid").display().to_string(),
                "--userdb",
                &dir.path().join("db").display().to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start coturn");
        // ready when it answers a STUN Binding request (bounded)
        let probe = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        request.extend_from_slice(b"peerport-tst");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        let mut buf = [0u8; 512];
        while tokio::time::Instant::now() < deadline {
            let _ = probe.send_to(&request, ("127.0.0.1", port)).await;
            let answer =
                tokio::time::timeout(Duration::from_millis(200), probe.recv_from(&mut buf)).await;
            if matches!(answer, Ok(Ok((n, _))) if n >= 20 && buf[..2] == [0x01, 0x01]) {
                return Some(Coturn {
                    port,
                    _child: child,
                    _dir: dir,
                });
            }
        }
        eprintln!("coturn did not answer STUN on 127.0.0.1:{port} within 8 s: starting it again on another port");
        None
    }
}

/// An iroh sender with a persistent key (the same ticket after a restart).
pub struct KeyedSender {
    pub proc: Proc,
    pub ticket: String,
    source: String,
    key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl KeyedSender {
    pub async fn start(r: &peerport_rendezvous::Rendezvous, source: String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("sender.key");
        let (proc, ticket) = sender(r, &source, &["--secret-file", key.to_str().unwrap()]).await;
        KeyedSender {
            proc,
            ticket,
            source,
            key,
            _dir: dir,
        }
    }

    /// Start it again after a kill; the ticket must not change.
    pub async fn start_again(&mut self, r: &peerport_rendezvous::Rendezvous) {
        let k = self.key.to_str().unwrap();
        let (proc, ticket) = sender(r, &self.source, &["--secret-file", k]).await;
        assert_eq!(ticket, self.ticket);
        self.proc = proc;
    }
}

/// A TCP connection through the tunnel to an echo service, kept open
/// across tunnel losses.
pub struct Held {
    r: tokio::net::tcp::OwnedReadHalf,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Held {
    pub async fn open(local: SocketAddr) -> Held {
        let c = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(local))
            .await
            .expect("connect in time")
            .expect("connect");
        let (r, w) = c.into_split();
        Held { r, w }
    }

    /// Send `data`, read the same number of bytes back within `limit`
    /// (writing and reading at once); `None` if the connection ended first.
    pub async fn echo(&mut self, data: &[u8], limit: Duration) -> Option<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (r, w) = (&mut self.r, &mut self.w);
        let write = async {
            for chunk in data.chunks(64 * 1024) {
                w.write_all(chunk).await.ok()?;
            }
            Some(())
        };
        let read = async {
            let mut got = vec![0u8; data.len()];
            r.read_exact(&mut got).await.ok()?;
            Some(got)
        };
        let (wrote, got) = tokio::time::timeout(limit, async { tokio::join!(write, read) })
            .await
            .ok()?;
        wrote?;
        got
    }

    /// Whether the connection is closed (EOF or error) within `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(limit, self.r.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// Keys whose config value is a list (repeatable flags).
pub const LISTS: [&str; 8] = [
    "source",
    "target",
    "allow",
    "relay-url",
    "allowed-peer",
    "stun-server",
    "turn-server",
    "relay",
];

/// A config file saying what `peerport ROLE MODE FLAGS...` says.
pub fn toml_of(role: &str, mode: &str, flags: &[String]) -> String {
    let mut out = format!("role = \"{role}\"\nmode = \"{mode}\"\n");
    let mut lists: Vec<(String, Vec<String>)> = Vec::new();
    let mut i = 0;
    while i < flags.len() {
        let key = flags[i].strip_prefix("--").expect("a flag").to_string();
        let value = flags.get(i + 1).filter(|v| !v.starts_with("--")).cloned();
        i += if value.is_some() { 2 } else { 1 };
        match value {
            None => out.push_str(&format!("{key} = true\n")),
            Some(v) if LISTS.contains(&key.as_str()) => {
                match lists.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, l)) => l.push(v),
                    None => lists.push((key, vec![v])),
                }
            }
            Some(v) if v.parse::<u64>().is_ok() => out.push_str(&format!("{key} = {v}\n")),
            Some(v) => out.push_str(&format!("{key} = \"{v}\"\n")),
        }
    }
    for (k, l) in lists {
        let items: Vec<String> = l.iter().map(|v| format!("\"{v}\"")).collect();
        out.push_str(&format!("{k} = [{}]\n", items.join(", ")));
    }
    out
}
