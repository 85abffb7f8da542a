//! [`Receiver`]: the client side of a tunnel as a long-lived object.
//!
//! A receiver binds its local `--target` once and keeps it for its whole
//! life. Sessions (QUIC connections to the sender) come and go beneath it:
//! when one ends for a reason worth retrying, the receiver dials again
//! through its [`Dialer`] with exponential backoff and jitter, while local
//! TCP clients wait (bounded by `reconnect_wait`) and UDP packets are
//! dropped and counted.
//!
//! ```no_run
//! # async fn example(dialer: impl peerport::transport::Dialer) -> Result<(), Box<dyn std::error::Error>> {
//! use peerport::{Receiver, Reconnect};
//! let receiver = Receiver::builder("tcp://127.0.0.1:2222".parse()?)
//!     .reconnect(Reconnect::default())
//!     .bind()
//!     .await?;
//! println!("listening on {}", receiver.local_addr());
//! receiver.run(dialer, tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(()) }
//! ```

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;
use tracing::{warn, Instrument};

use crate::{
    addr::{ForwardAddr, TargetSpec},
    engine::{close_code, resume, session, EngineConfig, Front, Ledger, RefusalKind, SessionError},
    proto::{
        header::{ResumeOffer, Want, Wanted},
        resume::ReplyExt,
    },
    transport::{CloseReason, DialError, Dialer, PathInfo, TunnelConnection},
};

mod builder;
mod reconnect;
mod silence;

pub use builder::ReceiverBuilder;
use reconnect::Backoff;
pub use reconnect::Reconnect;

/// Why a receiver stopped (other than by its shutdown token).
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The first session could not be established.
    #[error("{0}")]
    Unreachable(String),
    /// The sender refused this receiver (token, allowed peers, protocol,
    /// or full at the first attempt): retrying would not help.
    #[error("{0}")]
    Refused(String),
    /// The reconnect policy's time limit passed without a session.
    #[error("gave up reconnecting after {secs} s (--give-up-after); last attempt: {last}")]
    GaveUp {
        /// Seconds without a session.
        secs: u64,
        /// The last attempt's failure.
        last: String,
    },
    /// The session ended and reconnecting is off.
    #[error("the tunnel ended ({0}) and reconnecting is off (--no-reconnect)")]
    Ended(String),
    /// Something a person must fix (closed input, unusable setup).
    #[error("{0}")]
    Fatal(String),
}

/// The receiving end of a tunnel: a bound local target plus the sessions
/// that carry it to the sender.
#[derive(Debug)]
pub struct Receiver {
    fronts: Vec<Front>,
    locals: Vec<SocketAddr>,
    wants: Vec<Want>,
    engine: Arc<EngineConfig>,
    reconnect: Reconnect,
    path: tokio::sync::watch::Sender<Option<PathInfo>>,
    ledger: Arc<Ledger>,
    drain: Duration,
}

/// How one session went.
enum Outcome {
    /// Stopped by the shutdown token.
    Shutdown,
    /// The sender said no.
    Refused(RefusalKind, String),
    /// Ended; `established`: the hello went through (a session was up).
    Ended {
        err: SessionError,
        established: bool,
        lasted: Duration,
    },
}

impl Receiver {
    /// Start building a receiver that listens on `target`.
    pub fn builder(target: ForwardAddr) -> ReceiverBuilder {
        ReceiverBuilder {
            targets: vec![TargetSpec {
                local: target,
                want: Wanted::Service(String::new()),
            }],
            engine: EngineConfig::default(),
            reconnect: Reconnect::default(),
            reconnect_wait: Duration::from_secs(10),
            drain: Duration::ZERO,
        }
    }

    /// The first bound local address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.locals[0]
    }

    /// Every bound local address, in the order of the targets.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.locals
    }

    /// What the receiver counts: its session and totals (see
    /// [`crate::status`]).
    pub fn ledger(&self) -> Arc<Ledger> {
        self.ledger.clone()
    }

    /// The path of the current session, `None` while no session is up;
    /// refreshed every second.
    pub fn path(&self) -> tokio::sync::watch::Receiver<Option<PathInfo>> {
        self.path.subscribe()
    }

    /// Run sessions through `dialer` until `shutdown` fires (`Ok`), or the
    /// first session cannot be established, the sender refuses, or the
    /// reconnect policy gives up (`Err`).
    pub async fn run<D: Dialer>(
        self,
        dialer: D,
        shutdown: CancellationToken,
    ) -> Result<(), ReceiverError> {
        self.run_until(dialer, shutdown, CancellationToken::new())
            .await
    }

    /// As [`Receiver::run`]; on `shutdown` open TCP connections may finish
    /// for up to the drain timeout ([`ReceiverBuilder::drain_timeout`]),
    /// unless `now` fires.
    pub async fn run_until<D: Dialer>(
        mut self,
        mut dialer: D,
        shutdown: CancellationToken,
        now: CancellationToken,
    ) -> Result<(), ReceiverError> {
        let mut resumable = None;
        let stop = crate::engine::server::Stop {
            shutdown,
            now,
            drain: self.drain,
            stopping: None,
        };
        let ledger = self.ledger.clone();
        let listeners: Vec<_> = self
            .fronts
            .iter()
            .filter_map(Front::accept_handle)
            .collect();
        let hard = CancellationToken::new();
        let result = {
            let sessions = self.sessions(&mut dialer, &hard, &mut resumable);
            tokio::pin!(sessions);
            tokio::select! {
                r = &mut sessions => r,
                _ = async {
                    stop.shutdown.cancelled().await;
                    // accept no new local clients while open ones finish
                    for l in &listeners {
                        l.abort();
                    }
                    crate::engine::server::drain(&stop, &ledger).await
                } => {
                    hard.cancel();
                    sessions.await
                }
            }
        };
        if let Some(s) = resumable {
            s.close().await;
        }
        dialer.close().await;
        result
    }

    async fn sessions<D: Dialer>(
        &mut self,
        dialer: &mut D,
        shutdown: &CancellationToken,
        resumable: &mut Option<Arc<resume::Session<D::Conn>>>,
    ) -> Result<(), ReceiverError> {
        let mut backoff = Backoff::new(&self.reconnect);
        let mut was_up = false;
        let mut down_since = Instant::now();
        let mut attempt = 0u32;
        let mut id = 0u64;
        let mut last_failure: Option<String> = None;
        loop {
            attempt += 1;
            // --give-up-after counts from the loss, and ends an attempt
            // still under way when it passes
            let give_up_at = self
                .reconnect
                .give_up_after
                .filter(|_| was_up)
                .map(|limit| tokio::time::Instant::from_std(down_since + limit));
            let dialed = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = hold(&mut self.fronts) => unreachable!("hold never returns"),
                _ = until(give_up_at) => {
                    return Err(ReceiverError::GaveUp {
                        secs: down_since.elapsed().as_secs(),
                        last: last_failure.unwrap_or_else(|| "an attempt was still under way".into()),
                    });
                }
                r = dialer.dial() => r,
            };
            if dialed.is_err() {
                self.ledger.dial_failures.fetch_add(1, Relaxed);
            }
            let failure = match dialed {
                Err(DialError::Refused(m)) => return Err(ReceiverError::Refused(m)),
                Err(DialError::Busy(m)) if !was_up => return Err(ReceiverError::Refused(m)),
                Err(DialError::Fatal(m)) => return Err(ReceiverError::Fatal(m)),
                Err(DialError::Busy(m)) | Err(DialError::Unreachable(m)) => m,
                Ok(conn) => {
                    id += 1;
                    let span = tracing::info_span!("session", id);
                    let token = dialer.token();
                    let silence = self
                        .reconnect
                        .silence_limit
                        .filter(|_| dialer.unattended() && self.reconnect.enabled);
                    let outcome = self
                        .session(conn, token.as_deref(), shutdown, resumable, silence)
                        .instrument(span)
                        .await;
                    match outcome {
                        Outcome::Shutdown => return Ok(()),
                        Outcome::Refused(kind, m) if !(kind.retryable() && was_up) => {
                            return Err(ReceiverError::Refused(format!(
                                "the sender refused this receiver: {m}"
                            )))
                        }
                        Outcome::Refused(_, m) => m,
                        Outcome::Ended {
                            err,
                            established: false,
                            ..
                        } => err.to_string(),
                        Outcome::Ended { err, lasted, .. } => {
                            was_up = true;
                            if session::ended_on_purpose(&err) {
                                // the sender stopped (a drain, a restart):
                                // its side of every connection is gone
                                if let Some(s) = resumable.take() {
                                    let n = s.streams();
                                    if n > 0 {
                                        warn!("the sender ended the session (it stopped): closing {n} connection(s) that were open");
                                    }
                                    s.close().await;
                                }
                            }
                            down_since = Instant::now();
                            attempt = 0;
                            if lasted >= self.reconnect.stable_after {
                                backoff.reset();
                            }
                            if !self.reconnect.enabled {
                                return Err(ReceiverError::Ended(err.to_string()));
                            }
                            if let Some(reason) = forbidden(&err) {
                                return Err(ReceiverError::Refused(format!(
                                    "the sender's reloaded configuration no longer allows this receiver: {reason}"
                                )));
                            }
                            match err.refusal() {
                                Some(RefusalKind::Superseded) => {
                                    return Err(ReceiverError::Refused(
                                        "the sender closed this session: another receiver with the same identity (--secret-file) connected, and a sender keeps only the newest session per identity".into(),
                                    ))
                                }
                                Some(kind) if !kind.retryable() => {
                                    return Err(ReceiverError::Refused(format!(
                                        "the sender refused this receiver ({err})"
                                    )))
                                }
                                _ => {}
                            }
                            self.ledger.reconnects.fetch_add(1, Relaxed);
                            if dialer.unattended() {
                                warn!("tunnel lost ({err}); reconnecting");
                            } else {
                                warn!("tunnel lost ({err}); a new offer/answer exchange is needed");
                            }
                            continue;
                        }
                    }
                }
            };
            if !was_up {
                return Err(ReceiverError::Unreachable(failure));
            }
            let down = down_since.elapsed();
            if let Some(limit) = self.reconnect.give_up_after {
                if down >= limit {
                    return Err(ReceiverError::GaveUp {
                        secs: down.as_secs(),
                        last: failure,
                    });
                }
            }
            let mut delay = backoff.delay();
            if let Some(at) = give_up_at {
                delay = delay.min(at.saturating_duration_since(tokio::time::Instant::now()));
            }
            last_failure = Some(failure.clone());
            warn!(
                attempt,
                "reconnecting failed: {failure}; next attempt in {:.1} s",
                delay.as_secs_f64()
            );
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = hold(&mut self.fronts) => unreachable!("hold never returns"),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// After a hello: continue the resumable session the sender resumed, or
    /// start the one it handed out (closing the streams of one it did not
    /// resume, with a line saying why).
    async fn adopt<C: TunnelConnection>(
        &self,
        ext: Option<ReplyExt>,
        resumable: &mut Option<Arc<resume::Session<C>>>,
        shutdown: &CancellationToken,
    ) -> Option<Arc<resume::Session<C>>> {
        let ext = ext.as_ref();
        let ticket = ext.and_then(|e| e.ticket.clone());
        if let (Some(s), Some(t), Some(true)) =
            (resumable.as_ref(), &ticket, ext.and_then(|e| e.resumed))
        {
            self.ledger.resumes.fetch_add(1, Relaxed);
            s.set_ticket(t.clone());
            return Some(s.clone());
        }
        if let Some(old) = resumable.take() {
            let n = old.streams();
            if n > 0 {
                let why = if ticket.is_some() {
                    "it restarted, or the outage outlasted its resume window"
                } else {
                    "it does not resume sessions (an older version, or --resume-window 0)"
                };
                warn!("the sender did not resume the session ({why}): closing {n} connection(s) that were open");
            }
            old.close().await;
        }
        let t = ticket?;
        let mut cfg = self.engine.resume.clone();
        if let Some(w) = ext.and_then(|e| e.window_secs) {
            cfg.window = cfg.window.min(Duration::from_secs(w.into()));
        }
        let s = resume::Session::new(t, cfg, shutdown.child_token(), self.ledger.open_session());
        *resumable = Some(s.clone());
        Some(s)
    }

    /// One session: hello, then forward until it ends (or, with a
    /// `silence` limit, until the sender has been silent that long); the
    /// connection is closed and released before returning.
    async fn session<C: TunnelConnection>(
        &mut self,
        conn: C,
        token: Option<&[u8]>,
        shutdown: &CancellationToken,
        resumable: &mut Option<Arc<resume::Session<C>>>,
        silence: Option<Duration>,
    ) -> Outcome {
        // sessions are resumable when both sides allow it: TCP streams
        // continue, and UDP flows keep their sockets towards the service
        let offer = self
            .engine
            .resume
            .enabled()
            .then(|| match resumable.as_ref() {
                Some(s) => ResumeOffer::Resume(s.ticket()),
                None => ResumeOffer::New,
            });
        let hello = session::hello(&conn, token, &self.wants, &self.engine, offer).await;
        let outcome = match hello {
            Err(SessionError::Refused { kind, message }) => Outcome::Refused(kind, message),
            Err(err) => Outcome::Ended {
                err,
                established: false,
                lasted: Duration::ZERO,
            },
            Ok(hello) => {
                self.ledger.connections.fetch_add(1, Relaxed);
                let session = self.adopt(hello.ext.clone(), resumable, shutdown).await;
                let tally = match &session {
                    Some(s) => s.tally().clone(),
                    None => self.ledger.open_session(),
                };
                tally.attach(&conn);
                let started = Instant::now();
                let path = &self.path;
                let publish = async {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tick.tick().await;
                        let now = Some(conn.path());
                        path.send_if_modified(|p| {
                            let changed = *p != now;
                            p.clone_from(&now);
                            changed
                        });
                    }
                };
                let legacy = Want::default_only(&self.wants);
                let silent = async {
                    match silence {
                        Some(limit) => silence::silent(&conn, &tally, limit).await,
                        None => std::future::pending().await,
                    }
                };
                let forwarded = tokio::select! {
                    r = session::forward(conn.clone(), hello, &mut self.fronts, legacy, self.engine.clone(), session, tally.clone(), shutdown.child_token()) => r,
                    why = conn.path_gone() => {
                        // lost, not ended: open streams wait for the resume
                        conn.close(close_code::PATH_GONE, &why);
                        Err(SessionError::ConnectionLost(CloseReason::PathGone(why)))
                    }
                    silent = silent => {
                        // lost, not ended: open streams resume on the next one
                        let why = CloseReason::Silent(silent);
                        conn.close(close_code::PATH_GONE, &why.to_string());
                        Err(SessionError::ConnectionLost(why))
                    }
                    _ = async { conn.watch_path().await; std::future::pending::<()>().await } => unreachable!(),
                    _ = publish => unreachable!(),
                };
                self.path.send_replace(None);
                tally.detach();
                match forwarded {
                    Ok(()) => Outcome::Shutdown,
                    Err(err) => Outcome::Ended {
                        err,
                        established: true,
                        lasted: started.elapsed(),
                    },
                }
            }
        };
        // a lost connection keeps its reason; anything else is closed here:
        // NORMAL only when this side is done on purpose (the sender then
        // ends the session), else the session may resume
        match &outcome {
            Outcome::Ended {
                err: SessionError::ConnectionLost(_),
                ..
            } => {}
            Outcome::Ended { .. } => conn.close(close_code::SESSION_ERROR, "session failed"),
            Outcome::Shutdown | Outcome::Refused(..) => {
                conn.close(close_code::NORMAL, "receiver done")
            }
        }
        conn.shutdown().await;
        outcome
    }
}

/// The reason the sender gave when a reload no longer allowed the session.
fn forbidden(err: &SessionError) -> Option<&str> {
    match err {
        SessionError::ConnectionLost(CloseReason::Peer {
            code: close_code::FORBIDDEN,
            reason,
        }) => Some(reason),
        _ => None,
    }
}

/// While no session is up: every front holds its clients. Never returns.
/// Resolves at `at`; never without one.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn hold(fronts: &mut [Front]) {
    futures::future::join_all(fronts.iter_mut().map(Front::hold)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_resets() {
        let mut b = Backoff::new(&Reconnect {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(4),
            ..Default::default()
        });
        let d: Vec<f64> = (0..4).map(|_| b.delay().as_secs_f64()).collect();
        for (got, base) in d.iter().zip([1.0, 2.0, 4.0, 4.0]) {
            assert!(
                *got >= base * 0.8 - 1e-9 && *got <= base * 1.2 + 1e-9,
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.delay() <= Duration::from_millis(1200));
    }
}
