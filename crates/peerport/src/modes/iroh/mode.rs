//! The `iroh` mode behind the [`Mode`] seam: the sender loads its identity,
//! derives the access token and the ticket, binds and waits (bounded) for
//! a home relay; the receiver binds and dials the ticket's endpoint id.

use std::{path::PathBuf, time::Duration};

use iroh::SecretKey;
use tracing::warn;

use super::{
    bind_endpoint, ticket_for, wait_online, IrohAcceptor, IrohDialer, IrohOptions, PeerSpec,
};
use crate::{
    engine::Authorizer,
    identity,
    modes::{Accepting, Announce, Awaiting, Dialing, Mode, ModeContext, ModeError},
    status::iroh_endpoints::iroh_endpoint,
};

/// How long a sender waits for a home relay before it announces itself.
const ONLINE_WAIT: Duration = Duration::from_secs(10);

/// Where an endpoint's identity comes from.
#[derive(Debug, Clone, Default)]
pub enum Secret {
    /// A new one each start (the ticket changes with it).
    #[default]
    Fresh,
    /// This file, created with mode 0600 if missing (`--secret-file`).
    File(PathBuf),
    /// This key.
    Key(SecretKey),
}

impl Secret {
    fn load(&self) -> Result<SecretKey, ModeError> {
        match self {
            Secret::Fresh => Ok(SecretKey::generate()),
            Secret::File(p) => identity::load_or_create(p).map_err(ModeError::Identity),
            Secret::Key(k) => Ok(k.clone()),
        }
    }
}

/// Settings of the `iroh` mode.
#[derive(Debug, Clone, Default)]
pub struct IrohMode {
    /// The endpoint's identity (sender: a stable ticket; receiver: a
    /// stable id for the sender's `--allowed-peer`).
    pub secret: Secret,
    /// Relays, discovery, bind address, QUIC settings.
    pub options: IrohOptions,
    /// Sender: the receiver ids it admits (empty: anyone with the ticket).
    pub allowed_peers: Vec<String>,
    /// Receiver: the sender to reach (`--node-id`).
    pub peer: Option<PeerSpec>,
}

impl Mode for IrohMode {
    const NAME: peerport_signaling::Mode = peerport_signaling::Mode::Iroh;
    type Acceptor = IrohAcceptor;
    type Dialer = IrohDialer;

    async fn acceptor(&self, _cx: &ModeContext) -> Result<Accepting<IrohAcceptor>, ModeError> {
        let secret = self.secret.load()?;
        let ticket = ticket_for(&secret, &self.options);
        let auth = Authorizer::new(
            identity::derive_token(&secret).to_vec(),
            self.allowed_peers.clone(),
        );
        let ep = bind_endpoint(secret, &self.options)
            .await
            .map_err(ModeError::Iroh)?;
        if !wait_online(&ep, ONLINE_WAIT).await {
            warn!("no relay reachable yet: receivers can only find this sender directly (mDNS/LAN) until one is");
        }
        Ok(Accepting {
            announce: Announce {
                ticket: Some(ticket),
                identity: Some(ep.id().to_string()),
                pinned: self.allowed_peers.len(),
                ..Default::default()
            },
            metrics: Some(iroh_endpoint(&ep)),
            acceptor: IrohAcceptor::new(ep),
            auth,
            input_closed: None,
        })
    }

    async fn dialer(&self, cx: &ModeContext) -> Result<Dialing<IrohDialer>, ModeError> {
        let peer = self.peer.clone().ok_or(ModeError::Missing(
            "a receiver needs the sender's ticket: pass --node-id TICKET",
        ))?;
        let options = self.options.clone().for_peer(&peer);
        let ep = bind_endpoint(self.secret.load()?, &options)
            .await
            .map_err(ModeError::Iroh)?;
        Ok(Dialing {
            metrics: Some(iroh_endpoint(&ep)),
            dialer: IrohDialer::new(ep, peer, cx.connect_timeout),
        })
    }

    fn awaiting(&self) -> Awaiting {
        Awaiting::Endpoint(self.peer.as_ref().map(|p| p.id.to_string()))
    }
}
