//! Building a [`Receiver`]: its targets, settings, and binding them.

use std::{sync::Arc, time::Duration};

use tracing::{info, warn};

use super::{Receiver, Reconnect};
use crate::{
    addr::TargetSpec,
    engine::{udp::UdpStats, BindError, EngineConfig, Front, Ledger},
    proto::header::{Want, Wanted},
};

/// Builds a [`Receiver`].
#[derive(Debug, Clone)]
pub struct ReceiverBuilder {
    pub(super) targets: Vec<TargetSpec>,
    pub(super) engine: EngineConfig,
    pub(super) reconnect: Reconnect,
    pub(super) reconnect_wait: Duration,
    pub(super) drain: Duration,
}

impl ReceiverBuilder {
    /// On shutdown, let open TCP connections finish for up to this long
    /// before closing them (default 0: close at once).
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain = d;
        self
    }

    /// Engine tunables (UDP flow limits, timeouts).
    pub fn engine(mut self, engine: EngineConfig) -> Self {
        self.engine = engine;
        self
    }

    /// The reconnect policy.
    pub fn reconnect(mut self, reconnect: Reconnect) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// How long a local TCP client waits for a session before it is closed.
    pub fn reconnect_wait(mut self, wait: Duration) -> Self {
        self.reconnect_wait = wait;
        self
    }

    /// Several local targets, each reaching a named service or a
    /// destination (see [`TargetSpec`]), all carried by one session.
    pub fn targets(mut self, targets: Vec<TargetSpec>) -> Self {
        self.targets = targets;
        self
    }

    /// Bind every local target (a busy port fails here, before any network work).
    pub async fn bind(self) -> Result<Receiver, BindError> {
        let udp_stats = Arc::new(UdpStats::default());
        let ledger = if self
            .targets
            .iter()
            .any(|t| t.local.protocol == crate::addr::Protocol::Udp)
        {
            Ledger::with_shared_udp(udp_stats.clone())
        } else {
            Ledger::new()
        };
        let (mut fronts, mut locals, mut wants) = (Vec::new(), Vec::new(), Vec::new());
        for (i, t) in self.targets.iter().enumerate() {
            let index = u8::try_from(i).unwrap_or(u8::MAX);
            let want = Want {
                protocol: t.local.protocol,
                what: t.want.clone(),
            };
            let (front, local) = Front::bind(
                &t.local,
                t.want == Wanted::Dynamic,
                index,
                &self.engine,
                self.reconnect_wait,
                udp_stats.clone(),
                ledger.service(&want.short()),
            )
            .await?;
            match &t.want {
                Wanted::Service(n) if n.is_empty() => {
                    info!(listen = %local, "listening for local clients")
                }
                _ => info!(listen = %local, to = %want, "listening for local clients"),
            }
            if t.want == Wanted::Dynamic && !local.ip().is_loopback() {
                warn!(listen = %local, "this SOCKS5 listener takes no password: anyone who can reach it may use every destination the sender's --allow rules cover");
            }
            fronts.push(front);
            locals.push(local);
            wants.push(want);
        }
        Ok(Receiver {
            ledger,
            drain: self.drain,
            fronts,
            locals,
            wants,
            engine: Arc::new(self.engine),
            reconnect: self.reconnect,
            path: tokio::sync::watch::Sender::new(None),
        })
    }
}
