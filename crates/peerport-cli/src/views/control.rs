//! The local control socket: `peerport status` asks a running sender or
//! receiver over a Unix socket that only its user can open (mode 0600 in
//! a directory of mode 0700).
//!
//! Where: `--control-socket PATH`, else `DIR/NAME.sock` where DIR is
//! `$XDG_RUNTIME_DIR/peerport`, `/run/peerport` for root, or
//! `/tmp/peerport-UID`, and NAME is `--name` (default `sender-PID` or
//! `receiver-PID`).
//!
//! Protocol: the client sends one line (`status`), the process answers
//! with one JSON [`Snapshot`] and closes.

use std::{
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::debug;

use peerport::status::{Monitor, Snapshot};

/// Longest answer a client reads (a snapshot with many sessions).
const MAX_ANSWER: u64 = 16 << 20;

/// Why the control socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another live process answers on the socket.
    #[error("another peerport process already uses the control socket {0}: give this one another --name (or --control-socket PATH)")]
    InUse(PathBuf),
    /// Creating the socket or its directory failed.
    #[error("cannot create the control socket {path}: {source} (choose another place with --control-socket PATH)")]
    Create {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// No process answers.
    #[error("no running peerport process found ({0}); start a sender or receiver first, or name its socket with --control-socket PATH")]
    NoneRunning(String),
    /// A process answered with something unreadable.
    #[error("the process on {path} answered badly: {why}")]
    BadAnswer {
        /// The socket path.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
}

/// The directory of control sockets.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("peerport");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        PathBuf::from("/run/peerport")
    } else {
        PathBuf::from(format!("/tmp/peerport-{uid}"))
    }
}

/// The socket of the process named `name`.
pub fn path_for(name: &str) -> PathBuf {
    default_dir().join(format!("{name}.sock"))
}

/// A bound control socket; the file goes away when this drops.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Bind `path` (mode 0600; its directory is created with mode 0700 when
    /// missing). A stale socket left by a process that died is replaced; one
    /// a live process answers on is an error.
    pub async fn bind(path: &Path) -> Result<Self, ControlError> {
        let create = |source| ControlError::Create {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(create)?;
            } else if dir == default_dir() {
                // a directory someone else made could hand our clients a
                // socket of theirs
                use std::os::unix::fs::MetadataExt;
                let m = std::fs::metadata(dir).map_err(create)?;
                // SAFETY: geteuid has no preconditions and cannot fail.
                let me = unsafe { libc::geteuid() };
                if m.uid() != me || m.mode() & 0o022 != 0 {
                    return Err(create(std::io::Error::other(format!(
                        "{} belongs to another user or others may write to it",
                        dir.display()
                    ))));
                }
            }
        }
        if path.exists() {
            let live =
                tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await;
            if matches!(live, Ok(Ok(_))) {
                return Err(ControlError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(create)?;
        }
        // bind under a private name, restrict it, then move it in place: the
        // socket is never reachable with wider permissions
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(create)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(create)?;
        std::fs::rename(&tmp, path).map_err(create)?;
        Ok(ControlSocket {
            listener,
            path: path.to_owned(),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answer clients until `cancel` fires.
    pub async fn serve(self, monitor: Monitor, cancel: CancellationToken) {
        let tasks = TaskTracker::new();
        loop {
            let (stream, _) = tokio::select! {
                _ = cancel.cancelled() => break,
                a = self.listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        debug!("control socket accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let m = monitor.clone();
            tasks.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &m)).await;
            });
        }
        tasks.close();
        tasks.wait().await;
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(stream: UnixStream, m: &Monitor) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r.take(256)).read_line(&mut line).await?;
    let reply = match line.trim() {
        "status" | "" => serde_json::to_string(&m.snapshot()).map_err(std::io::Error::other)?,
        other => serde_json::json!({ "error": format!("unknown request `{other}`; ask `status`") })
            .to_string(),
    };
    w.write_all(reply.as_bytes()).await?;
    w.write_all(b"\n").await?;
    w.shutdown().await
}

/// Ask the process on `path` for its status.
pub async fn query(path: &Path) -> Result<Snapshot, ControlError> {
    let bad = |why: String| ControlError::BadAnswer {
        path: path.to_owned(),
        why,
    };
    let mut s = tokio::time::timeout(Duration::from_secs(3), UnixStream::connect(path))
        .await
        .map_err(|_| bad("no answer within 3 s".into()))?
        .map_err(|e| ControlError::NoneRunning(format!("{}: {e}", path.display())))?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        s.write_all(b"status\n").await?;
        (&mut s).take(MAX_ANSWER).read_to_end(&mut buf).await
    })
    .await
    .map_err(|_| bad("no answer within 5 s".into()))?
    .map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(&buf).map_err(|e| bad(e.to_string()))
}

/// The sockets to ask: `explicit`, else the one of `name`, else every
/// socket in the default directory.
pub fn targets(explicit: Option<&Path>, name: Option<&str>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_owned()];
    }
    if let Some(n) = name {
        return vec![path_for(n)];
    }
    let mut all: Vec<PathBuf> = std::fs::read_dir(default_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    all.sort();
    all
}

/// Every running process among `targets` (sockets nobody answers on are
/// skipped); an error when none answers.
pub async fn query_all(targets: &[PathBuf]) -> Result<Vec<Snapshot>, ControlError> {
    let mut out = Vec::new();
    let mut last_bad = None;
    for p in targets {
        match query(p).await {
            Ok(s) => out.push(s),
            Err(e @ ControlError::BadAnswer { .. }) => last_bad = Some(e),
            Err(_) => {}
        }
    }
    if out.is_empty() {
        if let Some(e) = last_bad {
            return Err(e);
        }
        let looked = match targets {
            [] => format!("no socket in {}", default_dir().display()),
            [one] => format!("nothing answers on {}", one.display()),
            _ => format!("nothing answers in {}", default_dir().display()),
        };
        return Err(ControlError::NoneRunning(looked));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerport::{
        engine::Ledger,
        status::{Info, Monitor},
    };

    #[tokio::test]
    async fn answers_status_and_refuses_a_second_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("t.sock");
        let sock = ControlSocket::bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
        let m = Monitor::new(Info::new("sender", "ice", "t"), Ledger::new());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(sock.serve(m, cancel.clone()));
        let s = query(&path).await.unwrap();
        assert_eq!(s.info.name, "t");
        assert!(matches!(
            ControlSocket::bind(&path).await,
            Err(ControlError::InUse(_))
        ));
        cancel.cancel();
        task.await.unwrap();
        assert!(!path.exists(), "socket file removed on exit");
        assert!(matches!(
            query_all(std::slice::from_ref(&path)).await,
            Err(ControlError::NoneRunning(_))
        ));
    }
}
