//! The binary's views of a running sender or receiver: the control
//! socket, `--metrics`, `--dashboard`, and the terminal's progress lines,
//! all over one [`Monitor`]; started beside the tunnel and stopped after it.

use std::{io::IsTerminal, io::Write, time::Duration};

use anyhow::{Context, Result};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use sd_notify::NotifyState;

use crate::{
    settings::Observe,
    views::{control, web},
};
use peerport::status::{EventKind, Monitor};

/// How progress reaches the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Lines on stderr (updated in place when it is a terminal).
    Terminal,
    /// Log events (`--log-format json`: stderr carries only JSON).
    Log,
}

/// The running views; [`Observers::stop`] ends them.
pub struct Observers {
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Observers {
    /// Start every view `o` asks for, plus the monitor's sampling and the
    /// progress lines. Fails when an address or socket asked for is not
    /// usable.
    pub async fn start(o: &Observe, monitor: Monitor, progress: Progress) -> Result<Self> {
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        monitor.set_stale_after(o.stale_after);
        let socket = match &o.control_socket {
            Some(None) => None,
            Some(Some(p)) => Some(control::ControlSocket::bind(p).await?),
            None => {
                let p = control::path_for(&monitor.info().name);
                match control::ControlSocket::bind(&p).await {
                    Ok(s) => Some(s),
                    Err(e @ control::ControlError::InUse(_)) => return Err(e.into()),
                    Err(e) => {
                        warn!("`peerport status` will not see this process: {e}");
                        None
                    }
                }
            }
        };
        if let Some(s) = socket {
            tracing::debug!(path = %s.path().display(), "control socket ready");
            tasks.spawn(s.serve(monitor.clone(), cancel.clone()));
        }
        if let Some(addr) = o.metrics {
            let l = web::bind("--metrics", addr).await?;
            let at = l.local_addr().context("--metrics")?;
            info!("metrics at http://{at}/metrics");
            tasks.spawn(web::serve_metrics(l, monitor.clone(), cancel.clone()));
        }
        if let Some(addr) = o.dashboard {
            let l = web::bind("--dashboard", addr).await?;
            let at = l.local_addr().context("--dashboard")?;
            let url = match &o.dashboard_token {
                Some(_) => format!("http://{at}/?token=(the token in --dashboard-token-file)"),
                None => format!("http://{at}/"),
            };
            info!("dashboard at {url}");
            let (m, t, c) = (monitor.clone(), o.dashboard_token.clone(), cancel.clone());
            tasks.spawn(async move {
                if let Err(e) = web::serve_dashboard(l, m, t, c).await {
                    warn!("dashboard stopped: {e}");
                }
            });
        }
        {
            let (m, c) = (monitor.clone(), cancel.clone());
            tasks.spawn(async move { m.run(c).await });
        }
        let i = monitor.info();
        let what = match &i.listen {
            Some(l) => format!("{} {}: clients connect to {l}", i.role, i.name),
            None => format!("{} {}: forwarding {}", i.role, i.name, i.service),
        };
        tasks.spawn(progress_lines(monitor, progress, cancel.clone()));
        // systemd (Type=notify): ready; nothing happens without NOTIFY_SOCKET
        notify(&[NotifyState::Ready, NotifyState::Status(&what)]);
        Ok(Observers { tasks, cancel })
    }

    /// Stop every view (the control socket file is removed).
    pub async fn stop(self) {
        notify(&[NotifyState::Stopping]);
        self.cancel.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.tasks.wait()).await;
    }
}

/// Tell systemd (when it started us with `NOTIFY_SOCKET`).
fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!("cannot notify systemd: {e}");
    }
}

/// Whether a progress line is on the terminal now, not ended by a line
/// break (the waiting line, redrawn in place).
static PROGRESS_SHOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Clear the progress line, if one is shown, so that the next line starts
/// at the left margin (called before each log line is written).
pub fn clear_progress() {
    if PROGRESS_SHOWN.swap(false, std::sync::atomic::Ordering::SeqCst) {
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K");
        let _ = e.flush();
    }
}

/// Log lines go to stderr, after the progress line is cleared.
#[derive(Debug, Clone, Copy)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = std::io::Stderr;
    fn make_writer(&'a self) -> Self::Writer {
        clear_progress();
        std::io::stderr()
    }
}

/// How often a waiting line is repeated when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(30);

/// One line per event; while a receiver waits, a line that says for what
/// and how long (in place on a terminal).
async fn progress_lines(monitor: Monitor, progress: Progress, cancel: CancellationToken) {
    let info = monitor.info().clone();
    let tty = progress == Progress::Terminal && std::io::stderr().is_terminal();
    let mut events = monitor.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut was_up = false; // a tunnel was up before (the next is "back")
    let mut last_plain: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => { clear_progress(); return; }
            ev = events.recv() => {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                };
                clear_progress();
                last_plain = None;
                let line = match (&ev.kind, info.listen.as_deref()) {
                    (EventKind::Up { path, after_ms, connection, .. }, Some(listen)) => {
                        let took = after_ms.map(peerport::status::took).unwrap_or_default();
                        let first = *connection <= 1 && !std::mem::replace(&mut was_up, true);
                        if first {
                            format!("tunnel up: connect to {listen} (path: {path}, after {took})")
                        } else {
                            format!("tunnel back: connect to {listen} (path: {path}, after an outage of {took})")
                        }
                    }
                    (EventKind::Up { path, connection, .. }, None) => {
                        let what = if *connection <= 1 { "connected" } else { "reconnected" };
                        format!("session {}: a receiver {what} over {path}", ev.session)
                    }
                    // a receiver's own warning says the loss, with its reason
                    (EventKind::Lost, Some(_)) => continue,
                    _ => ev.to_string(),
                };
                match progress {
                    Progress::Terminal => crate::out::say!("{line}"),
                    Progress::Log => info!(session = ev.session, "{line}"),
                }
                notify(&[NotifyState::Status(&line)]);
            }
            _ = tick.tick() => {
                let Some(what) = info.waiting_for.as_deref() else { continue };
                let snap = monitor.snapshot();
                if snap.state != "waiting" {
                    continue;
                }
                let line = format!("waiting for {what} ({})", peerport::status::secs(snap.state_secs));
                if tty {
                    let mut e = std::io::stderr().lock();
                    let _ = write!(e, "\r\x1b[2K{line}");
                    let _ = e.flush();
                    PROGRESS_SHOWN.store(true, std::sync::atomic::Ordering::SeqCst);
                } else if last_plain.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
                    last_plain = Some(tokio::time::Instant::now());
                    match progress {
                        Progress::Terminal => crate::out::say!("{line}"),
                        Progress::Log => info!("{line}"),
                    }
                }
            }
        }
    }
}
