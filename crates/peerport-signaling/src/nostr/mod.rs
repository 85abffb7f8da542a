//! Nostr signaling: encrypted offer/answer messages between two static keys,
//! carried by ordinary Nostr relays. All nostr-sdk code lives here (its API
//! changes in 0.45), behind plain types.
//!
//! Protocol (see docs/nostr.md):
//! * events of an ephemeral kind (default 21059; 20000..29999, relays
//!   forward but do not store);
//! * content: NIP-44 v2 encryption, to the peer, of a JSON [`Payload`]
//!   (session id, message type, nonce, time, blob);
//! * public tags: only the recipient `p` tag and a NIP-40 `expiration`
//!   (no stable pair identifier that would link sessions);
//! * subscription: authors = [peer], kinds = [kind], #p = [me],
//!   since = now - 10 s, so relays drop strangers' events;
//! * receive checks ([`Inbox`]): kind, author, recipient, exactly the two
//!   tags, not expired, content at most 64 KiB before decrypting, created
//!   within ±30 s, event id not seen before.

use std::{collections::HashSet, time::Duration};

use nostr_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::{sync::broadcast, task::JoinHandle};

mod relays;
use relays::{
    publish_any, reconnect_relays, relay_options, spawn_watcher, AGAIN_MAX, CONNECT_AGAIN_AFTER,
};

/// Default event kind (ephemeral range; not 24242, which Blossom uses).
pub const DEFAULT_KIND: u16 = 21059;
/// Largest content accepted before decrypting.
pub const MAX_CONTENT: usize = 64 * 1024;
/// Freshness window for events and payloads.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Public relays used when none is configured (tests never use them).
pub const DEFAULT_RELAYS: &[&str] = &[
    "wss://relay.damus.io",
    "wss://nos.lol",
    "wss://relay.primal.net",
    "wss://relay.nostr.band",
];

/// Errors of the Nostr back-end.
#[derive(Debug, thiserror::Error)]
pub enum NostrError {
    /// A key could not be read.
    #[error("{0}")]
    Key(String),
    /// Relay or client problem.
    #[error("nostr: {0}")]
    Relay(String),
    /// No relay accepted a message.
    #[error("no relay accepted the message: {0}")]
    Publish(String),
}

/// Message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MsgType {
    /// Receiver asks for a session (carries its offer).
    Request,
    /// Sender answers (carries its answer).
    Answer,
    /// Sender refuses (at capacity), with a reason.
    Refusal,
}

/// The encrypted payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// Session id chosen by the receiver (hex).
    pub session_id: String,
    /// Message type.
    pub msg_type: MsgType,
    /// Random nonce (hex), so equal payloads differ.
    pub nonce: String,
    /// Creation time, unix seconds.
    pub created_at: u64,
    /// Offer/answer blob (base64 of the binary blob) or refusal reason.
    #[serde(default)]
    pub data: String,
}

/// A secret key, parsed from nsec or hex.
pub fn parse_secret(text: &str) -> Result<String, NostrError> {
    let keys = Keys::parse(text.trim()).map_err(|_| {
        NostrError::Key("not a Nostr secret key: expected nsec1... or 64 hex characters".into())
    })?;
    Ok(keys.secret_key().to_secret_hex())
}

/// A public key, parsed from npub or hex; returns hex.
pub fn parse_public(text: &str) -> Result<String, NostrError> {
    PublicKey::parse(text.trim())
        .map(|p| p.to_hex())
        .map_err(|_| {
            NostrError::Key(format!(
                "`{}` is not a Nostr public key: expected npub1... or 64 hex characters",
                text.trim()
            ))
        })
}

/// Generate a key pair: (nsec, npub).
pub fn generate() -> (String, String) {
    let k = Keys::generate();
    (
        k.secret_key().to_bech32().unwrap_or_default(),
        k.public_key().to_bech32().unwrap_or_default(),
    )
}

/// The npub of a secret key (nsec or hex).
pub fn npub_of(secret: &str) -> Result<String, NostrError> {
    let k =
        Keys::parse(secret.trim()).map_err(|_| NostrError::Key("not a Nostr secret key".into()))?;
    k.public_key()
        .to_bech32()
        .map_err(|e| NostrError::Key(e.to_string()))
}

/// npub form of a hex public key.
pub fn npub_of_public(hex: &str) -> String {
    PublicKey::parse(hex)
        .ok()
        .and_then(|p| p.to_bech32().ok())
        .unwrap_or_else(|| hex.to_string())
}

/// Why an event was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// Other kind.
    WrongKind,
    /// Not from the peer.
    WrongAuthor,
    /// Not addressed to us.
    NotForMe,
    /// Extra or missing tags.
    Tags,
    /// NIP-40 expired.
    Expired,
    /// Content too large.
    TooLarge,
    /// Outside the freshness window.
    Stale,
    /// Seen before.
    Duplicate,
    /// Could not decrypt.
    Decrypt,
    /// Payload not valid JSON of the expected shape.
    BadPayload,
}

/// Receive-side checks and event-id dedupe (no IO: unit-tested).
pub struct Inbox {
    keys: Keys,
    peer: PublicKey,
    kind: u16,
    seen: HashSet<EventId>,
}

impl Inbox {
    /// Checks for events of `kind` from `peer` to `keys`' owner.
    #[doc(hidden)] // pub for the fuzz target `nostr_payload`
    pub fn new(keys: Keys, peer: PublicKey, kind: u16) -> Self {
        Inbox {
            keys,
            peer,
            kind,
            seen: HashSet::new(),
        }
    }

    /// Check and decrypt one event.
    pub fn accept(&mut self, ev: &Event, now: u64) -> Result<Payload, Reject> {
        if ev.kind != Kind::Custom(self.kind) {
            return Err(Reject::WrongKind);
        }
        if ev.pubkey != self.peer {
            return Err(Reject::WrongAuthor);
        }
        let me = self.keys.public_key();
        let p: Vec<&PublicKey> = ev.tags.public_keys().collect();
        if p.len() != 1 || *p[0] != me {
            return Err(Reject::NotForMe);
        }
        if ev.tags.len() != 2 || ev.tags.expiration().is_none() {
            return Err(Reject::Tags);
        }
        if ev.is_expired_at(&Timestamp::from_secs(now)) {
            return Err(Reject::Expired);
        }
        if ev.content.len() > MAX_CONTENT {
            return Err(Reject::TooLarge);
        }
        let w = WINDOW.as_secs();
        if ev.created_at.as_secs().abs_diff(now) > w {
            return Err(Reject::Stale);
        }
        if !self.seen.insert(ev.id) {
            return Err(Reject::Duplicate);
        }
        if self.seen.len() > 100_000 {
            self.seen.clear();
        }
        let json = nip44::decrypt(self.keys.secret_key(), &ev.pubkey, &ev.content)
            .map_err(|_| Reject::Decrypt)?;
        let pl: Payload = serde_json::from_str(&json).map_err(|_| Reject::BadPayload)?;
        if pl.created_at.abs_diff(now) > w {
            return Err(Reject::Stale);
        }
        Ok(pl)
    }
}

fn unix_now() -> u64 {
    Timestamp::now().as_secs()
}

fn filter(peer: PublicKey, me: PublicKey, kind: u16) -> Filter {
    Filter::new()
        .author(peer)
        .kind(Kind::Custom(kind))
        .pubkey(me)
        .since(Timestamp::now() - Duration::from_secs(10))
}

/// Settings of a Nostr signaling endpoint.
#[derive(Debug, Clone)]
pub struct NostrConfig {
    /// Our secret key (nsec or hex).
    pub secret: String,
    /// The peer's public key (npub or hex).
    pub peer: String,
    /// Relay URLs (ws:// or wss://).
    pub relays: Vec<String>,
    /// Event kind.
    pub kind: u16,
}

/// A connected Nostr signaling endpoint: publish to every relay, receive
/// checked payloads from the peer. Dropping it stops its watcher task.
pub struct NostrSignaling {
    out: NostrPublisher,
    inbox: Inbox,
    notes: broadcast::Receiver<RelayPoolNotification>,
    sub: SubscriptionId,
    watcher: JoinHandle<()>,
}

/// Publishes encrypted payloads to the peer; see [`NostrSignaling::publisher`].
#[derive(Clone)]
pub struct NostrPublisher {
    client: Client,
    keys: Keys,
    peer: PublicKey,
    kind: u16,
}

impl NostrPublisher {
    /// Open every relay connection afresh (this host's address changed: a
    /// WebSocket from the old address is dead, but an idle one learns that
    /// only from its next ping, up to a minute later).
    pub async fn reconnect_relays(&self) {
        reconnect_relays(&self.client).await;
    }

    /// Publish one payload to every relay; returns when any accepted it.
    pub async fn send(
        &self,
        msg_type: MsgType,
        session_id: &str,
        data: String,
    ) -> Result<String, NostrError> {
        let payload = Payload {
            session_id: session_id.to_string(),
            msg_type,
            nonce: format!("{:016x}", rand_u64()),
            created_at: unix_now(),
            data,
        };
        let json = serde_json::to_string(&payload).map_err(|e| NostrError::Relay(e.to_string()))?;
        let content = nip44::encrypt(self.keys.secret_key(), &self.peer, json, nip44::Version::V2)
            .map_err(|e| NostrError::Relay(e.to_string()))?;
        let created = Timestamp::now();
        let ev = EventBuilder::new(Kind::Custom(self.kind), content)
            .tags([
                Tag::public_key(self.peer),
                Tag::expiration(created + Duration::from_secs(60)),
            ])
            .custom_created_at(created)
            .sign_with_keys(&self.keys)
            .map_err(|e| NostrError::Relay(e.to_string()))?;
        publish_any(&self.client, &ev).await
    }
}

impl Drop for NostrSignaling {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl NostrSignaling {
    /// Connect to the relays and subscribe. Proceeds as soon as one relay is
    /// up (the others keep retrying in the background); while none is, it
    /// keeps retrying (with the pool's backoff) until `wait` has passed, or
    /// for as long as it takes when `wait` is `None` (a sender).
    pub async fn connect(cfg: &NostrConfig, wait: Option<Duration>) -> Result<Self, NostrError> {
        let keys = Keys::parse(cfg.secret.trim())
            .map_err(|_| NostrError::Key("not a Nostr secret key".into()))?;
        let peer = PublicKey::parse(cfg.peer.trim())
            .map_err(|_| NostrError::Key("--peer-npub is not a Nostr public key".into()))?;
        if !(20000..30000).contains(&cfg.kind) {
            return Err(NostrError::Key(format!(
                "event kind {} is not ephemeral: use 20000..29999",
                cfg.kind
            )));
        }
        let client = Client::builder()
            .signer(keys.clone())
            .monitor(Monitor::new(256))
            .build();
        for url in &cfg.relays {
            client
                .pool()
                .add_relay(url.as_str(), relay_options())
                .await
                .map_err(|e| NostrError::Relay(format!("relay `{url}`: {e}")))?;
        }
        let notes = client.notifications();
        client.connect().await;
        // proceed as soon as any relay is up; the others keep retrying
        let started = tokio::time::Instant::now();
        let deadline = wait.map(|w| started + w);
        let mut first_up: Option<tokio::time::Instant> = None;
        let mut told = false;
        let (mut kicked, mut kick_after) = (started, CONNECT_AGAIN_AFTER);
        let connected = loop {
            let mut up = 0;
            let mut down = Vec::new();
            for (url, r) in client.relays().await {
                if r.status() == RelayStatus::Connected {
                    up += 1;
                } else {
                    down.push((url, r.status()));
                }
            }
            let now = tokio::time::Instant::now();
            if up > 0 && first_up.is_none() {
                first_up = Some(now);
            }
            let settled = first_up.is_some_and(|t| now - t > Duration::from_millis(300));
            let waited_long = now - started > Duration::from_secs(10);
            if down.is_empty() || settled || (up > 0 && waited_long) {
                if !down.is_empty() {
                    for (url, status) in down {
                        tracing::warn!(relay = %url, %status, "relay not connected (will keep retrying)");
                    }
                }
                break up;
            }
            if deadline.is_some_and(|d| now >= d) {
                break 0;
            }
            if up == 0 && waited_long && !told {
                told = true;
                let until = match wait {
                    Some(w) => format!("for up to {} s in all", w.as_secs()),
                    None => "until one answers".to_string(),
                };
                for (url, status) in &down {
                    tracing::warn!(relay = %url, %status, "no relay reachable yet; retrying {until}");
                }
            }
            if up == 0 && now - kicked >= kick_after {
                kicked = now;
                kick_after = (kick_after * 2).min(AGAIN_MAX);
                reconnect_relays(&client).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if connected == 0 {
            client.shutdown().await;
            return Err(NostrError::Relay(format!(
                "no relay reachable within {} s: check the --relay URLs and the network",
                wait.unwrap_or_default().as_secs()
            )));
        }
        let me = keys.public_key();
        let sub = client
            .subscribe(filter(peer, me, cfg.kind), None)
            .await
            .map_err(|e| NostrError::Relay(e.to_string()))?
            .val;
        let watcher = spawn_watcher(client.clone(), sub.clone(), peer, me, cfg.kind);
        Ok(NostrSignaling {
            inbox: Inbox::new(keys.clone(), peer, cfg.kind),
            out: NostrPublisher {
                client,
                keys,
                peer,
                kind: cfg.kind,
            },
            notes,
            sub,
            watcher,
        })
    }

    /// Our public key (hex).
    pub fn me(&self) -> String {
        self.out.keys.public_key().to_hex()
    }

    /// The handle that publishes to the peer (cloneable, so tasks answering
    /// several sessions can publish while this value keeps receiving).
    pub fn publisher(&self) -> NostrPublisher {
        self.out.clone()
    }

    /// The next valid payload from the peer (`None` when the client shut down).
    pub async fn recv(&mut self) -> Option<Payload> {
        loop {
            match self.notes.recv().await {
                Ok(RelayPoolNotification::Event {
                    subscription_id,
                    event,
                    relay_url,
                }) if subscription_id == self.sub => match self.inbox.accept(&event, unix_now()) {
                    Ok(p) => return Some(p),
                    Err(r) => tracing::debug!(relay = %relay_url, "ignored a nostr event: {r:?}"),
                },
                Ok(RelayPoolNotification::Shutdown) | Err(broadcast::error::RecvError::Closed) => {
                    return None
                }
                _ => {}
            }
        }
    }

    /// Disconnect from every relay.
    pub async fn shutdown(self) {
        self.out.client.shutdown().await;
    }
}

fn rand_u64() -> u64 {
    Keys::generate().public_key().to_bytes()[..8]
        .iter()
        .fold(0u64, |a, b| (a << 8) | *b as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(author: &Keys, to: &PublicKey, kind: u16, created: u64, payload: &Payload) -> Event {
        let content = nip44::encrypt(
            author.secret_key(),
            to,
            serde_json::to_string(payload).unwrap(),
            nip44::Version::V2,
        )
        .unwrap();
        let t = Timestamp::from_secs(created);
        EventBuilder::new(Kind::Custom(kind), content)
            .tags([
                Tag::public_key(*to),
                Tag::expiration(t + Duration::from_secs(60)),
            ])
            .custom_created_at(t)
            .sign_with_keys(author)
            .unwrap()
    }

    fn payload(now: u64) -> Payload {
        Payload {
            session_id: "s1".into(),
            msg_type: MsgType::Request,
            nonce: "n".into(),
            created_at: now,
            data: "blob".into(),
        }
    }

    #[test]
    fn inbox_accepts_only_fresh_events_from_the_peer_to_me() {
        let (a, b, c) = (Keys::generate(), Keys::generate(), Keys::generate());
        let now = unix_now();
        let mut inbox = Inbox::new(b.clone(), a.public_key(), DEFAULT_KIND);
        let good = event(&a, &b.public_key(), DEFAULT_KIND, now, &payload(now));
        assert_eq!(inbox.accept(&good, now).unwrap(), payload(now));
        // replay of the same event
        assert_eq!(inbox.accept(&good, now), Err(Reject::Duplicate));
        // an old event (replayed by a relay)
        let old = event(
            &a,
            &b.public_key(),
            DEFAULT_KIND,
            now - 120,
            &payload(now - 120),
        );
        assert!(matches!(
            inbox.accept(&old, now),
            Err(Reject::Stale) | Err(Reject::Expired)
        ));
        // a third key
        let stranger = event(&c, &b.public_key(), DEFAULT_KIND, now, &payload(now));
        assert_eq!(inbox.accept(&stranger, now), Err(Reject::WrongAuthor));
        // addressed to someone else
        let other = event(&a, &c.public_key(), DEFAULT_KIND, now, &payload(now));
        assert_eq!(inbox.accept(&other, now), Err(Reject::NotForMe));
        // another kind
        let kind = event(&a, &b.public_key(), 21060, now, &payload(now));
        assert_eq!(inbox.accept(&kind, now), Err(Reject::WrongKind));
    }

    #[test]
    fn key_parsing() {
        let (nsec, npub) = generate();
        assert!(nsec.starts_with("nsec1") && npub.starts_with("npub1"));
        assert_eq!(npub_of(&nsec).unwrap(), npub);
        let hex = parse_secret(&nsec).unwrap();
        assert_eq!(npub_of(&hex).unwrap(), npub);
        assert!(parse_public(&npub).is_ok());
        assert!(parse_secret("nsec1garbage").is_err());
        assert!(parse_public("npub1xyz").is_err());
        assert!(parse_public(&nsec).is_err());
    }
}
