//! Signals: SIGTERM/Ctrl-C stop the process (drain first), SIGHUP makes a
//! sender re-read its config file.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Reload;
use peerport::sender::Sender;

/// The signal that asked the process to stop (0: none yet).
static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The signal (2 = SIGINT/Ctrl-C, 15 = SIGTERM) that stopped the process, if
/// any: the binary then exits with 128 + its number, as shells expect.
pub fn stop_signal() -> Option<i32> {
    match STOP_SIGNAL.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        n => Some(n),
    }
}

async fn recv_signal(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Two tokens: the first signal (SIGTERM or Ctrl-C) cancels the first
/// (stop accepting, drain); Ctrl-C, or a second signal, also the second
/// (close at once). See [`stop_signal`].
pub fn stop_signals() -> (CancellationToken, CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (drain, now) = (CancellationToken::new(), CancellationToken::new());
    let (d, n) = (drain.clone(), now.clone());
    // Registered here, before the caller goes on (and, for a service,
    // before it tells systemd it is ready): a signal that arrives before
    // the task below first runs is then queued for it, instead of meeting
    // the default action, which ends the process without draining.
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = recv_signal(&mut int) => 2,
            _ = recv_signal(&mut term) => 15,
        };
        let _ = STOP_SIGNAL.compare_exchange(
            0,
            first,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        );
        if first == 2 && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            // the terminal echoed ^C without a line break: start a new line
            crate::out::say!();
        }
        info!("shutting down");
        d.cancel();
        if first == 2 {
            n.cancel();
            return;
        }
        tokio::select! {
            _ = recv_signal(&mut int) => {}
            _ = recv_signal(&mut term) => {}
        }
        n.cancel();
    });
    (drain, now)
}

/// A token cancelled on Ctrl-C or SIGTERM (see [`stop_signal`]).
pub fn shutdown_signal() -> CancellationToken {
    stop_signals().0
}

/// Run `f` on every SIGHUP until `stop` fires (and no longer die of it,
/// which is SIGHUP's default).
fn on_hangup(stop: CancellationToken, mut f: impl FnMut() + Send + 'static) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = hup.recv() => if r.is_none() { return },
            }
            f();
        }
    });
}

/// On every SIGHUP: re-read the config file and serve its services and
/// rules (sessions that still comply go on); a bad file keeps the old ones.
pub(super) fn reload_on_hangup(sender: Sender, reload: Option<Reload>, stop: CancellationToken) {
    on_hangup(stop, move || {
        let Some(reload) = &reload else {
            info!("SIGHUP: nothing to re-read (started without a config file)");
            return;
        };
        match reload().map(|s| s.catalog) {
            Ok(Some(new)) if *sender.catalog() == new => {
                info!("SIGHUP: configuration re-read, services and rules unchanged")
            }
            Ok(Some(new)) => {
                info!(services = %new.summary(), "SIGHUP: configuration re-read: serving these services and rules now (other settings need a restart)");
                sender.reload(new);
            }
            Ok(None) => {}
            Err(e) => warn!(
                "SIGHUP: the config file has an error, keeping the running configuration: {e}"
            ),
        }
    });
}

/// What a receiver does on SIGHUP: nothing but say so (its listeners are
/// bound once).
pub(super) fn ignore_hangup(stop: CancellationToken) {
    on_hangup(stop, || {
        info!("SIGHUP: a receiver re-reads nothing; restart it to change its targets")
    });
}
