//! The copy-paste modes at a real terminal: each side runs in its own
//! pseudo-terminal (session leader, the pty as its controlling terminal,
//! stdin, stdout and stderr all on it), and the test reads the screen and
//! types into it the way a person does: blocks are copied off the screen
//! and pasted back quoted as a chat app quotes them, with the `\r` line
//! ends a terminal sends, Ctrl-C and Ctrl-D are the bytes the keys send.
//! Everything on 127.0.0.1, no STUN; every wait bounded; children killed.
//!
//! The pty comes from `libc::openpty` (libc is already a dependency of
//! this crate), so no pty crate is needed.

mod common;

use std::{
    io::{Read, Write},
    net::SocketAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{bin, runtime_dir, tcp_echo_check};
use peerport_signaling::blob::{Blob, Body, Kind};
use peerport_testkit::spawn_tcp_echo;
use tokio::{sync::watch, task::JoinSet};

/// The longest any single step may take (connecting included).
const LONG: Duration = Duration::from_secs(30);
/// How soon a person must hear about a bad paste, or a stop must happen.
const PROMPTLY: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------- the pty

/// The modes of a terminal that matter to a person typing at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Modes {
    iflag: libc::tcflag_t,
    oflag: libc::tcflag_t,
    cflag: libc::tcflag_t,
    lflag: libc::tcflag_t,
}

fn modes(fd: &OwnedFd) -> Modes {
    // SAFETY: termios is plain data; tcgetattr fills it for an open tty fd.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) };
    assert_eq!(rc, 0, "tcgetattr: {}", std::io::Error::last_os_error());
    Modes {
        iflag: t.c_iflag,
        oflag: t.c_oflag,
        cflag: t.c_cflag,
        lflag: t.c_lflag,
    }
}

/// A fresh pty pair (master, slave), both close-on-exec, 120x40.
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut m, mut s) = (-1, -1);
    let ws = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: two out-pointers to ints, no name buffer, default modes.
    let rc = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    for fd in [m, s] {
        // SAFETY: fcntl on fds just opened; other tests' children must not
        // inherit them (a held slave would hide this child's exit).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: openpty returned two new fds that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) }
}

/// Screen text without carriage returns and ANSI escape sequences.
fn clean(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // parameters, then one final byte in @..~
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// One `peerport` at its own terminal.
struct Term {
    what: &'static str,
    child: tokio::process::Child,
    /// The master side: what the person types goes here.
    keys: std::fs::File,
    /// The slave side, kept open to read the terminal's modes after the
    /// child is gone.
    slave: OwnedFd,
    /// The terminal's modes before the child started.
    initial: Modes,
    screen: Arc<Mutex<Vec<u8>>>,
    changed: watch::Receiver<usize>,
    args: Vec<String>,
    pid: Option<u32>,
}

impl Term {
    fn spawn(what: &'static str, args: &[String]) -> Term {
        let (master, slave) = openpty();
        let initial = modes(&slave);
        let mut cmd = tokio::process::Command::new(bin());
        cmd.args(args)
            // what a person gets: the default log level, not the tests' debug
            .env_remove("RUST_LOG")
            .env_remove("XDG_CONFIG_HOME")
            .env("XDG_RUNTIME_DIR", runtime_dir())
            .env("TERM", "xterm-256color")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()))
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // a new session whose controlling terminal is the pty (on
                // fd 0 by now): Ctrl-C reaches the child's process group
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn peerport in a pty");
        let pid = child.id();
        drop(cmd); // the parent's copies of the slave given to the child
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (tx, changed) = watch::channel(0usize);
        let mut reader = std::fs::File::from(master.try_clone().unwrap());
        let sc = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if std::env::var_os("PEERPORT_TEST_ECHO").is_some() {
                            eprint!("[{what}] {}", String::from_utf8_lossy(&buf[..n]));
                        }
                        let len = {
                            let mut g = sc.lock().unwrap();
                            g.extend_from_slice(&buf[..n]);
                            g.len()
                        };
                        if tx.send(len).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break, // EIO: the test closed its end
                }
            }
        });
        Term {
            what,
            child,
            keys: std::fs::File::from(master),
            slave,
            initial,
            screen,
            changed,
            args: args.to_vec(),
            pid,
        }
    }

    /// Everything on the screen so far (escape sequences removed).
    fn text(&self) -> String {
        clean(&self.screen.lock().unwrap())
    }

    /// A place in the screen's output, for [`Term::text_since`].
    fn mark(&self) -> usize {
        self.screen.lock().unwrap().len()
    }

    fn text_since(&self, mark: usize) -> String {
        clean(&self.screen.lock().unwrap()[mark..])
    }

    /// What the program wrote since `mark`, without the terminal's echo of
    /// the `typed` text (and without blank lines).
    fn said_since(&self, mark: usize, typed: &str) -> String {
        let echoed: Vec<&str> = typed.split(['\r', '\n']).map(str::trim_end).collect();
        self.text_since(mark)
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty() && !echoed.contains(l))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Type (or paste) `text`, as a terminal sends it.
    fn type_(&mut self, text: &str) {
        self.keys.write_all(text.as_bytes()).unwrap();
        self.keys.flush().unwrap();
    }

    /// Wait (bounded by `limit`) until the screen satisfies `pred`;
    /// returns the screen text, or `None` when the time is up.
    async fn try_wait(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let t = self.text();
            if pred(&t) {
                return Some(t);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            // the reader thread ends only with the test's end of the pty:
            // a plain timeout covers a child that went quiet or exited
            let tick = left.min(Duration::from_millis(200));
            if let Ok(Err(_)) = tokio::time::timeout(tick, self.changed.changed()).await {
                tokio::time::sleep(tick).await;
            }
        }
    }

    /// Wait until the screen satisfies `pred`, else fail with the screen.
    async fn wait(&mut self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        match self.try_wait(limit, pred).await {
            Some(t) => t,
            None => panic!(
                "{}: {what}: not within {limit:?}; exit: {:?}; the terminal shows:\n{}",
                self.what,
                self.child.try_wait().ok().flatten(),
                self.text()
            ),
        }
    }

    async fn wait_text(&mut self, needle: &str) -> String {
        let n = needle.to_string();
        self.wait(&format!("`{needle}` on the screen"), LONG, move |t| {
            t.contains(&n)
        })
        .await
    }

    /// Wait (bounded) for the exit; returns its code and how long it took.
    async fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let t0 = Instant::now();
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(s)) => (s.code(), t0.elapsed()),
            _ => panic!(
                "{} did not exit within {limit:?}; the terminal shows:\n{}",
                self.what,
                self.text()
            ),
        }
    }

    /// After the exit: the last output has arrived, nothing panicked, and
    /// the terminal is left in the modes it had.
    async fn assert_clean_exit(&mut self) {
        // what the child wrote last is read by the reader thread shortly
        tokio::time::sleep(Duration::from_millis(300)).await;
        let text = self.text();
        for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
            assert!(
                !text.contains(bad),
                "{}: `{bad}` on the terminal:\n{text}",
                self.what
            );
        }
        assert_eq!(
            modes(&self.slave),
            self.initial,
            "{}: the terminal's modes changed (echo, canonical input, signals...); the terminal shows:\n{text}",
            self.what
        );
    }

    /// Kill the child (if it still runs) and reap it.
    async fn close(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// A killed child leaves its control socket (`--name NAME` or ROLE-PID)
/// behind: remove it.
impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let dir = runtime_dir().join("peerport");
        let name = self
            .args
            .iter()
            .position(|a| a == "--name")
            .and_then(|i| self.args.get(i + 1))
            .map(|n| format!("{n}.sock"));
        let pid = self.pid.map(|p| format!("-{p}.sock"));
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            if Some(&f) == name.as_ref() || pid.as_ref().is_some_and(|p| f.ends_with(p)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

// ---------------------------------------------------------------- helpers

/// Loopback-only flags for `ice` and `iroh-manual` (what `manual_flags`
/// gives the file-based tests, without the files: the terminal is used).
fn local() -> [String; 4] {
    ["--no-stun", "--no-portmap", "--bind", "127.0.0.1:0"].map(String::from)
}

fn receiver_args(mode: &str, name: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "receiver",
        mode,
        "--target",
        "tcp://127.0.0.1:0",
        "--name",
        name,
    ]
    .map(String::from)
    .to_vec();
    v.extend(local());
    v
}

fn sender_args(mode: &str, source: &str) -> Vec<String> {
    let mut v: Vec<String> = ["sender", mode, "--source", source]
        .map(String::from)
        .to_vec();
    v.extend(local());
    v
}

/// A name for a receiver's control socket, unique to this test process.
fn unique(what: &str) -> String {
    format!("tty-{what}-{}", std::process::id())
}

/// The program's own armored `kind` block on the screen (its lines exactly
/// as shown; not an echo of a quoted paste), with `\n` line ends.
fn own_block(screen: &str, kind: &str) -> Option<String> {
    let begin = format!("-----BEGIN PEERPORT {kind}-----");
    let end = format!("-----END PEERPORT {kind}-----");
    let lines: Vec<&str> = screen.lines().collect();
    let b = lines.iter().position(|l| *l == begin)?;
    let e = b + lines[b..].iter().position(|l| *l == end)?;
    Some(lines[b..=e].iter().map(|l| format!("{l}\n")).collect())
}

/// Nothing (a log line, a progress line) inside a block to copy.
fn assert_base64_lines(block: &str, screen: &str) {
    for l in block.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='),
            "a line in a block that is not base64: `{l}`; the terminal shows:\n{screen}"
        );
    }
}

/// `block` as a chat app or a mail reply quotes it, pasted into a
/// terminal: a line of chat around it, blank lines before and after,
/// `> ` on every line, stray trailing spaces, `\r` line ends.
fn chat_quote(block: &str) -> String {
    let mut s = String::from("\r\r> here it is:\r>\r");
    for (i, l) in block.lines().enumerate() {
        s.push_str("> ");
        s.push_str(l);
        if i % 2 == 1 {
            s.push_str("   ");
        }
        s.push('\r');
    }
    s.push_str(">\r\r\r");
    s
}

/// The address a receiver's screen says to connect to.
fn connect_to(screen: &str) -> Option<SocketAddr> {
    let at = screen.find("tunnel up: connect to tcp://")? + "tunnel up: connect to tcp://".len();
    screen[at..].split([' ', '\n']).next()?.parse().ok()
}

/// The `listen` of a process's status, from its control socket.
async fn status_listen(name: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = runtime_dir().join("peerport").join(format!("{name}.sock"));
    let read = async {
        let mut s = tokio::net::UnixStream::connect(&path).await.ok()?;
        s.write_all(b"status\n").await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let snap: peerport::status::Snapshot = serde_json::from_slice(&out).ok()?;
        snap.info.listen
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()
        .flatten()
}

/// An `ice` blob of `kind` for no one (well-formed, fresh).
fn ice_blob(kind: Kind) -> String {
    Blob {
        kind,
        session: rand_session(),
        created: peerport::modes::manual::unix_now(),
        body: Body::Ice {
            ufrag: "abcdEFGH".into(),
            pwd: "0123456789abcdefghijklmn".into(),
            fingerprint: [1; 32],
            candidates: vec![],
        },
    }
    .to_armor()
}

fn rand_session() -> [u8; 8] {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    (n ^ u64::from(std::process::id())).to_le_bytes()
}

/// Lines as a terminal sends them.
fn keys(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\r")).collect()
}

// ---------------------------------------------------------------- tests

/// The whole exchange as two people do it: the receiver's OFFER copied off
/// its screen and pasted, chat-quoted, into the sender's; the sender's
/// ANSWER back the same way; then the tunnel carries data.
async fn quoted_pastes_between_two_terminals_make_a_tunnel(mode: &str) {
    let mut svc = JoinSet::new();
    let echo = spawn_tcp_echo(&mut svc).await.unwrap();
    let name = unique(&format!("rx-{mode}"));
    let mut rx = Term::spawn("receiver", &receiver_args(mode, &name));
    let mut tx = Term::spawn("sender", &sender_args(mode, &format!("tcp://{echo}")));

    // the receiver: what to do, the block, then the prompt, in that order
    let prompt = "then paste the sender's ANSWER here:";
    let screen = rx.wait_text(prompt).await;
    let offer = own_block(&screen, "OFFER")
        .unwrap_or_else(|| panic!("no OFFER block on the receiver's terminal:\n{screen}"));
    let at = |s: &str| {
        screen
            .find(s)
            .unwrap_or_else(|| panic!("`{s}` not on the receiver's terminal:\n{screen}"))
    };
    assert!(
        at("send this OFFER") < at("-----BEGIN PEERPORT OFFER-----")
            && at("-----END PEERPORT OFFER-----") < at(prompt),
        "the receiver's terminal, out of order:\n{screen}"
    );
    // the prompt is a line of its own, not a log line
    assert!(screen.lines().any(|l| l == prompt), "{screen}");
    assert_base64_lines(&offer, &screen);

    // the sender: its prompt, then the quoted offer
    let screen = tx.wait_text("paste a receiver's OFFER").await;
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("paste a receiver's OFFER")),
        "{screen}"
    );
    tx.type_(&chat_quote(&offer));
    let screen = tx
        .wait("an ANSWER for the chat-quoted OFFER", LONG, |t| {
            own_block(t, "ANSWER").is_some()
        })
        .await;
    let answer = own_block(&screen, "ANSWER").unwrap();
    // what to do with it, on the line right above it
    let lines: Vec<&str> = screen.lines().collect();
    let begin = lines
        .iter()
        .position(|l| *l == "-----BEGIN PEERPORT ANSWER-----")
        .unwrap();
    assert_eq!(
        lines[begin - 1],
        "send this ANSWER back to the receiver:",
        "the sender's terminal:\n{screen}"
    );
    assert_base64_lines(&answer, &screen);

    // back to the receiver, quoted too
    rx.type_(&chat_quote(&answer));
    let screen = rx
        .wait("the tunnel up", LONG, |t| connect_to(t).is_some())
        .await;
    let local = connect_to(&screen).unwrap();
    // the address the screen gives is the one the status reports
    let listen = status_listen(&name).await;
    assert_eq!(
        listen.as_deref(),
        Some(format!("tcp://{local}").as_str()),
        "status listen vs the terminal:\n{screen}"
    );
    tcp_echo_check(local, 100_000, 11).await;
    tx.wait_text("a receiver connected").await;

    for t in [&rx, &tx] {
        assert!(!t.text().contains("panicked"), "{}", t.text());
    }
    if std::env::var_os("PEERPORT_TEST_SCREENS").is_some() {
        eprintln!(
            "=== receiver ({mode})\n{}\n=== sender ({mode})\n{}",
            rx.text(),
            tx.text()
        );
    }
    rx.close().await;
    tx.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_chat_quoted_pastes_at_two_terminals_make_a_tunnel() {
    quoted_pastes_between_two_terminals_make_a_tunnel("ice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iroh_manual_chat_quoted_pastes_at_two_terminals_make_a_tunnel() {
    quoted_pastes_between_two_terminals_make_a_tunnel("iroh-manual").await;
}

/// Ctrl-C at `role`'s paste prompt in `mode` (after half a block when
/// `half_paste`): the exit code, how long it took, and what the terminal
/// showed from the Ctrl-C on.
async fn ctrl_c_at_the_prompt(
    role: &'static str,
    mode: &str,
    half_paste: bool,
) -> (Option<i32>, Duration, String) {
    let (mut t, prompt) = match role {
        "receiver" => (
            Term::spawn(
                role,
                &receiver_args(mode, &unique(&format!("rx-ctrl-c-{mode}"))),
            ),
            "then paste the sender's ANSWER here:",
        ),
        _ => (
            Term::spawn(role, &sender_args(mode, "tcp://127.0.0.1:9")),
            "paste a receiver's OFFER",
        ),
    };
    t.wait_text(prompt).await;
    if half_paste {
        let kind = if role == "receiver" {
            Kind::Answer
        } else {
            Kind::Offer
        };
        let block = ice_blob(kind);
        let half: Vec<&str> = block.lines().take(2).collect();
        t.type_(&keys(&half));
        // a person sees the paste before pressing Ctrl-C (and Ctrl-C
        // flushes the terminal's queued output, echo included)
        let line = half[1].to_string();
        t.wait("the paste echoed", PROMPTLY, move |s| s.contains(&line))
            .await;
    }
    let mark = t.mark();
    t.type_("\x03");
    let (code, took) = t.wait_exit(PROMPTLY).await;
    t.assert_clean_exit().await;
    let after = t.text_since(mark);
    if std::env::var_os("PEERPORT_TEST_SCREENS").is_some() {
        eprintln!(
            "=== {role} ({mode}), Ctrl-C: {code:?} after {took:?}\n{}",
            t.text()
        );
    }
    t.close().await;
    (code, took, after)
}

/// Ctrl-C (the byte the key sends; the terminal makes it SIGINT for the
/// foreground process group) at either paste prompt, in both modes, also
/// in the middle of a paste, stops at once with 130, without a panic, and
/// leaves the terminal's modes (echo, line editing, signals) as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_at_a_paste_prompt_stops_at_once_and_leaves_the_terminal_as_it_was() {
    let cases = [
        ("receiver", "iroh-manual", false),
        ("receiver", "ice", true),
        ("sender", "ice", true),
        ("sender", "iroh-manual", false),
    ];
    let runs = cases.map(|(role, mode, half)| ctrl_c_at_the_prompt(role, mode, half));
    let results = futures::future::join_all(runs).await;
    for ((role, mode, _), (code, took, after)) in cases.iter().zip(results) {
        assert_eq!(
            code,
            Some(130),
            "{role} ({mode}): after Ctrl-C the terminal shows:\n{after}"
        );
        assert!(took < PROMPTLY, "{role} ({mode}): {took:?}");
        // what the person reads after pressing Ctrl-C: nothing alarming
        let errors: Vec<&str> = after.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert!(
            errors.is_empty(),
            "{role} ({mode}): after Ctrl-C the terminal shows:\n{after}"
        );
        // the log line after the terminal's ^C starts a line of its own
        assert!(
            !after.contains("^C2") && !after.contains("^C "),
            "{role} ({mode}): after Ctrl-C the terminal shows:\n{after}"
        );
    }
}

/// Ctrl-D at the sender's prompt (end of input on a terminal) is said on
/// the terminal, and the sender ends with 1 and the way to run without a
/// terminal; at the receiver's prompt it ends the receiver with 1 and the
/// reason. Neither panics or leaves the terminal changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_d_at_a_paste_prompt_is_explained() {
    let mut tx = Term::spawn("sender", &sender_args("ice", "tcp://127.0.0.1:9"));
    tx.wait_text("paste a receiver's OFFER").await;
    tx.type_("\x04");
    let (code, _) = tx.wait_exit(Duration::from_secs(10)).await;
    tx.assert_clean_exit().await;
    let screen = tx.text();
    assert_eq!(code, Some(1), "the terminal shows:\n{screen}");
    assert!(screen.contains("input closed"), "{screen}");
    assert!(screen.contains("--offer-file"), "{screen}");

    let mut rx = Term::spawn("receiver", &receiver_args("ice", &unique("rx-ctrl-d")));
    rx.wait_text("then paste the sender's ANSWER here:").await;
    rx.type_("\x04");
    let (code, _) = rx.wait_exit(Duration::from_secs(10)).await;
    rx.assert_clean_exit().await;
    let screen = rx.text();
    assert_eq!(code, Some(1), "the terminal shows:\n{screen}");
    assert!(
        screen.contains("input closed before an ANSWER arrived"),
        "{screen}"
    );
    if std::env::var_os("PEERPORT_TEST_SCREENS").is_some() {
        eprintln!("=== sender\n{}\n=== receiver\n{}", tx.text(), rx.text());
    }
    tx.close().await;
    rx.close().await;
}

/// What a person sees after a bad paste at a prompt, within a couple of
/// seconds: base64 lines without their BEGIN/END lines, and a block cut off
/// half way (then nothing). Pasting the whole block afterwards reports the
/// cut-off one and works. At both prompts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_only_and_cut_off_pastes_at_the_terminal() {
    // the sender's OFFER prompt
    let mut tx = Term::spawn("sender", &sender_args("ice", "tcp://127.0.0.1:9"));
    tx.wait_text("paste a receiver's OFFER").await;
    let offer = ice_blob(Kind::Offer);
    let lines: Vec<&str> = offer.lines().collect();
    let body = &lines[1..lines.len() - 1];

    // base64 only
    let typed = keys(body);
    let mark = tx.mark();
    tx.type_(&typed);
    tokio::time::sleep(PROMPTLY).await;
    let said = tx.said_since(mark, &typed);
    eprintln!("sender, base64-only paste, said within {PROMPTLY:?}: {said:?}");
    assert!(
        said.contains("without its -----BEGIN and -----END lines"),
        "the sender said {said:?} after a base64-only paste; the terminal shows:\n{}",
        tx.text()
    );

    // cut off: BEGIN and half the base64, then nothing
    let cut: Vec<&str> = lines[..1 + body.len().div_ceil(2)].to_vec();
    let typed = keys(&cut);
    let mark = tx.mark();
    tx.type_(&typed);
    tokio::time::sleep(PROMPTLY).await;
    let said = tx.said_since(mark, &typed);
    eprintln!("sender, cut-off paste, said within {PROMPTLY:?}: {said:?}");
    assert!(
        said.contains("block has not ended"),
        "the sender said {said:?} after a cut-off paste; the terminal shows:\n{}",
        tx.text()
    );

    // the whole block again: the cut-off one is named, this one answered
    tx.type_(&offer.replace('\n', "\r"));
    tx.wait("the cut-off block reported", PROMPTLY, |t| {
        t.contains("no END line")
    })
    .await;
    tx.wait("an ANSWER for the whole block", LONG, |t| {
        own_block(t, "ANSWER").is_some()
    })
    .await;

    // the receiver's ANSWER prompt: a cut-off answer, then nothing
    let mut rx = Term::spawn("receiver", &receiver_args("ice", &unique("rx-cut")));
    rx.wait_text("then paste the sender's ANSWER here:").await;
    let answer = ice_blob(Kind::Answer); // another session's
    let lines: Vec<&str> = answer.lines().collect();
    let cut: Vec<&str> = lines[..1 + (lines.len() - 2).div_ceil(2)].to_vec();
    let typed = keys(&cut);
    let mark = rx.mark();
    rx.type_(&typed);
    tokio::time::sleep(PROMPTLY).await;
    let said = rx.said_since(mark, &typed);
    eprintln!("receiver, cut-off paste, said within {PROMPTLY:?}: {said:?}");
    assert!(
        said.contains("block has not ended"),
        "the receiver said {said:?} after a cut-off paste; the terminal shows:\n{}",
        rx.text()
    );
    rx.type_(&answer.replace('\n', "\r"));
    rx.wait(
        "the cut-off block and the other session named",
        PROMPTLY,
        |t| t.contains("no END line") && t.contains("belongs to another session"),
    )
    .await;
    assert!(rx.child.try_wait().unwrap().is_none(), "{}", rx.text());

    for t in [&tx, &rx] {
        assert!(!t.text().contains("panicked"), "{}", t.text());
    }
    if std::env::var_os("PEERPORT_TEST_SCREENS").is_some() {
        eprintln!("=== sender\n{}\n=== receiver\n{}", tx.text(), rx.text());
    }
    tx.close().await;
    rx.close().await;
}
