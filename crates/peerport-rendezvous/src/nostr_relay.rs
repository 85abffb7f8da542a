//! A real Nostr relay (websockets, `nostr-relay-builder`) in-process, for
//! the demo, labs and tests.

use std::net::{IpAddr, Ipv4Addr};

use crate::RendezvousError;

/// A real Nostr relay (websocket) in-process on 127.0.0.1, for the demo and tests.
pub struct LocalNostrRelay {
    relay: nostr_relay_builder::LocalRelay,
    /// ws:// URL.
    pub url: String,
}

impl LocalNostrRelay {
    /// Start on `ip` (port 0 = any free port).
    ///
    /// With `port` 0 the builder picks a free port by probing, which races
    /// with other processes binding ports; a lost race is retried.
    pub async fn start(ip: IpAddr, port: u16) -> Result<Self, RendezvousError> {
        let attempts = if port == 0 { 5 } else { 1 };
        let mut last = String::new();
        for _ in 0..attempts {
            // our own relay for labs, tests and self-hosting: allow a sender
            // to answer many receivers (the default is 60 events a minute)
            let mut b = nostr_relay_builder::RelayBuilder::default()
                .addr(ip)
                .rate_limit(nostr_relay_builder::builder::RateLimit {
                    max_reqs: 500,
                    notes_per_minute: 6000,
                });
            if port != 0 {
                b = b.port(port);
            }
            let relay = nostr_relay_builder::LocalRelay::new(b);
            match relay.run().await {
                Ok(()) => {
                    let url = relay.url().await.to_string();
                    return Ok(LocalNostrRelay { relay, url });
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(RendezvousError::Nostr(last))
    }

    /// Start on 127.0.0.1 with a free port.
    pub async fn start_local() -> Result<Self, RendezvousError> {
        Self::start(IpAddr::V4(Ipv4Addr::LOCALHOST), 0).await
    }

    /// Stop it (drops every connection).
    pub fn shutdown(&self) {
        self.relay.shutdown();
    }
}
