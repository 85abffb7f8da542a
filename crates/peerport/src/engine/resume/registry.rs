//! The sender's resumable sessions by id, and who may resume which.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use super::session::Session;
use super::ResumeConfig;
use crate::{proto::resume::Ticket, transport::TunnelConnection};

/// The sender's resumable sessions, by id.
pub struct Registry<C: TunnelConnection> {
    pub(super) sessions: Mutex<HashMap<[u8; 16], Arc<Session<C>>>>,
    pub(super) cfg: ResumeConfig,
    pub(super) cancel: CancellationToken,
    pub(super) reapers: TaskTracker,
}

/// Most sessions a sender keeps; past it, new sessions are not resumable.
pub const MAX_SESSIONS: usize = 4096;

/// What the sender answers to a hello that asks for resumption.
pub struct Opened<C: TunnelConnection> {
    /// The session this connection serves.
    pub session: Arc<Session<C>>,
    /// Whether it is the one the receiver asked to resume.
    pub resumed: bool,
}

impl<C: TunnelConnection> Registry<C> {
    /// An empty registry; `cancel` stops every session.
    pub fn new(cfg: ResumeConfig, cancel: CancellationToken) -> Arc<Self> {
        Arc::new(Registry {
            sessions: Mutex::new(HashMap::new()),
            cfg,
            cancel,
            reapers: TaskTracker::new(),
        })
    }

    /// Settings.
    pub fn config(&self) -> &ResumeConfig {
        &self.cfg
    }

    /// Resume the session `offer` names if its secret matches, else start a
    /// new one (`None` when the sender holds too many sessions already).
    pub fn open(
        &self,
        offer: Option<&Ticket>,
        peer: &str,
        tally: impl FnOnce() -> Arc<crate::engine::tally::Tally>,
    ) -> Option<Opened<C>> {
        let mut m = self.sessions.lock().expect("sessions");
        if let Some(t) = offer {
            match m.get(&t.id) {
                Some(s) if s.ticket().secret_matches(t) => {
                    s.set_ticket(t.rotate());
                    return Some(Opened {
                        session: s.clone(),
                        resumed: true,
                    });
                }
                Some(_) => warn!(
                    %peer,
                    session = %hex::encode(&t.id[..4]),
                    "refusing to resume a session: wrong or stale secret (the receiver gets a new session; no stream of the old one is reachable)"
                ),
                None => info!(
                    %peer,
                    session = %hex::encode(&t.id[..4]),
                    "the receiver asked to resume a session this sender does not have (restarted, or its window passed): starting a new one"
                ),
            }
        }
        if m.len() >= MAX_SESSIONS {
            return None;
        }
        let ticket = Ticket::generate();
        let s = Session::new(
            ticket.clone(),
            self.cfg.clone(),
            self.cancel.child_token(),
            tally(),
        );
        m.insert(ticket.id, s.clone());
        Some(Opened {
            session: s,
            resumed: false,
        })
    }

    /// The connection of generation `g` of `session` ended: forget the
    /// session once its window passes without a newer connection (at once
    /// when it has no streams left).
    pub fn detached(self: &Arc<Self>, session: &Arc<Session<C>>, g: u64) {
        let me = self.clone();
        let s = session.clone();
        self.reapers.spawn(async move {
            let window = s.window();
            if s.holds_anything() {
                tokio::select! {
                    _ = me.cancel.cancelled() => {}
                    _ = tokio::time::sleep(window) => {}
                }
            }
            if s.is_current(g) {
                let id = s.ticket().id;
                me.sessions.lock().expect("sessions").remove(&id);
                s.close().await;
            }
        });
    }

    /// The receiver ended `session` on purpose (it closed the connection
    /// normally): forget it and close its streams now, not after the window.
    pub async fn end(&self, session: &Arc<Session<C>>) {
        let id = session.ticket().id;
        self.sessions.lock().expect("sessions").remove(&id);
        session.close().await;
    }

    /// Stop every session and wait (bounded).
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let all: Vec<_> = self
            .sessions
            .lock()
            .expect("sessions")
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in all {
            s.close().await;
        }
        self.reapers.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.reapers.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::quinn::QuinnConnection;

    #[test]
    fn only_the_current_secret_resumes_a_session() {
        let reg =
            Registry::<QuinnConnection>::new(ResumeConfig::default(), CancellationToken::new());
        let first = reg
            .open(None, "peer", crate::engine::tally::Tally::unobserved)
            .unwrap();
        assert!(!first.resumed);
        let t1 = first.session.ticket();
        // the right ticket resumes, and the secret changes
        let again = reg
            .open(Some(&t1), "peer", crate::engine::tally::Tally::unobserved)
            .unwrap();
        assert!(again.resumed);
        assert!(Arc::ptr_eq(&again.session, &first.session));
        let t2 = again.session.ticket();
        assert_eq!(t2.id, t1.id);
        assert!(!t2.secret_matches(&t1));
        // the old (stale) secret and a forged one get a new, empty session
        for bad in [
            t1.clone(),
            Ticket {
                id: t1.id,
                secret: [0; 32],
            },
        ] {
            let o = reg
                .open(Some(&bad), "peer", crate::engine::tally::Tally::unobserved)
                .unwrap();
            assert!(!o.resumed);
            assert!(!Arc::ptr_eq(&o.session, &first.session));
            assert_ne!(o.session.ticket().id, t1.id);
        }
        // the real session still resumes with its current secret
        assert!(
            reg.open(Some(&t2), "peer", crate::engine::tally::Tally::unobserved)
                .unwrap()
                .resumed
        );
    }

    #[tokio::test]
    async fn a_newer_connection_supersedes_the_one_before() {
        let s = Session::<QuinnConnection>::new(
            Ticket::generate(),
            ResumeConfig::default(),
            CancellationToken::new(),
            crate::engine::Tally::unobserved(),
        );
        let (first, _a) = QuinnConnection::loopback_pair().await.unwrap();
        let (second, _b) = QuinnConnection::loopback_pair().await.unwrap();
        let g1 = s.attach_connection(&first);
        assert!(!first.superseded().is_cancelled());
        let g2 = s.attach_connection(&second);
        assert!(g2 > g1 && s.is_current(g2));
        // every clone of the old connection sees it; the new one is current
        assert!(first.clone().superseded().is_cancelled());
        assert!(!second.superseded().is_cancelled());
    }

    #[test]
    fn new_stream_ids_are_checked() {
        let s = Session::<QuinnConnection>::new(
            Ticket::generate(),
            ResumeConfig::default(),
            CancellationToken::new(),
            crate::engine::Tally::unobserved(),
        );
        assert!(s.check_new_stream(0).is_ok());
        assert_eq!(s.next_stream_id(), 0);
        assert_eq!(s.next_stream_id(), 1);
    }
}
