//! A tunnel in this process through the library's [`Mode`] seam, as the
//! CLI runs one: a real [`Sender`] over the mode's acceptor, a real
//! [`Receiver`] over its dialer, and waits on typed state (the receiver's
//! path), not on log lines.

use std::{error::Error, net::SocketAddr, time::Duration};

use peerport::{
    addr::ForwardAddr,
    modes::{Announce, Mode, ModeContext},
    transport::PathInfo,
    Receiver, Reconnect, Sender,
};
use tokio::{sync::watch, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

/// Errors of the harness: whatever the library or the setup returned.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// A sender and a receiver of one mode, connected through loopback.
pub struct Tunnel {
    /// Where local clients connect (the receiver's target).
    pub local: SocketAddr,
    /// When the sender's mode was ready (the acceptor set up, the ticket
    /// known): setup times count from here.
    pub sender_ready: Instant,
    path: watch::Receiver<Option<PathInfo>>,
    stop_receiver: CancellationToken,
    stop_sender: CancellationToken,
    receiver: JoinSet<Result<(), String>>,
    sender: JoinSet<()>,
}

impl Tunnel {
    /// Start a sender in `sender_mode` forwarding to `source`, then a
    /// receiver (listening on 127.0.0.1, any port, reconnecting off) in
    /// the mode `receiver_mode` makes of what the sender announced.
    pub async fn start<S: Mode, R: Mode>(
        source: &ForwardAddr,
        sender_mode: &S,
        receiver_mode: impl FnOnce(&Announce) -> Result<R, BoxError>,
    ) -> Result<Tunnel, BoxError> {
        let cx = ModeContext::default();
        let accepting = sender_mode.acceptor(&cx).await?;
        let sender_ready = Instant::now();
        let dialer = receiver_mode(&accepting.announce)?
            .dialer(&cx)
            .await?
            .dialer;
        let (stop_receiver, stop_sender) = (CancellationToken::new(), CancellationToken::new());
        let mut sender = JoinSet::new();
        let s = Sender::builder(source.clone()).auth(accepting.auth).build();
        let c = stop_sender.clone();
        sender.spawn(async move { s.run(accepting.acceptor, c).await });
        let target: ForwardAddr = format!("{}://127.0.0.1:0", source.protocol).parse()?;
        let r = Receiver::builder(target)
            .reconnect(Reconnect {
                enabled: false,
                ..Default::default()
            })
            .bind()
            .await?;
        let (local, path) = (r.local_addr(), r.path());
        let mut receiver = JoinSet::new();
        let c = stop_receiver.clone();
        receiver.spawn(async move { r.run(dialer, c).await.map_err(|e| e.to_string()) });
        Ok(Tunnel {
            local,
            sender_ready,
            path,
            stop_receiver,
            stop_sender,
            receiver,
            sender,
        })
    }

    /// Wait (at most `limit`) until a session is up; its path.
    pub async fn wait_up(&mut self, limit: Duration) -> Result<PathInfo, BoxError> {
        let up = tokio::time::timeout(limit, self.path.wait_for(Option::is_some)).await;
        match up {
            Ok(Ok(p)) => Ok(p.clone().unwrap_or_default()),
            Ok(Err(_)) => Err("the receiver ended before a session was up".into()),
            Err(_) => Err(format!("no session within {limit:?}").into()),
        }
    }

    /// The current session's path (`None` while none is up).
    pub fn path(&self) -> Option<PathInfo> {
        self.path.borrow().clone()
    }

    /// Stop the receiver, then the sender (stopped first, the sender
    /// would end the receiver's session: an error with reconnecting off);
    /// the receiver's error, if it ended with one.
    pub async fn stop(mut self) -> Result<(), BoxError> {
        self.stop_receiver.cancel();
        let mut result = Ok(());
        while let Some(r) = self.receiver.join_next().await {
            if let Ok(Err(e)) = r {
                result = Err(e.into());
            }
        }
        self.stop_sender.cancel();
        while self.sender.join_next().await.is_some() {}
        result
    }
}
