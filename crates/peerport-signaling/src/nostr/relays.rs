//! The relay connections: how they retry, start over, publish and stay
//! subscribed.

use std::time::Duration;

use nostr_sdk::prelude::*;
use tokio::{sync::broadcast, task::JoinHandle};

use super::{filter, NostrError};

/// How every relay connection retries.
pub(super) fn relay_options() -> RelayOptions {
    RelayOptions::new()
        .retry_interval(Duration::from_secs(2))
        .adjust_retry_interval(true)
}

/// Replace every relay with a new one that connects at once (and
/// subscribes again when it is up, see [`spawn_watcher`]): the old
/// connection is dropped, with whatever it was waiting for (a dead
/// WebSocket, a TCP handshake in its retransmission backoff).
pub(super) async fn reconnect_relays(client: &Client) {
    for url in client.relays().await.into_keys() {
        if let Err(e) = client.force_remove_relay(url.clone()).await {
            tracing::warn!(relay = %url, "could not drop the relay connection: {e}");
            continue;
        }
        match client.pool().add_relay(url.clone(), relay_options()).await {
            Ok(_) => {
                if let Err(e) = client.connect_relay(url.clone()).await {
                    tracing::warn!(relay = %url, "reconnecting failed: {e}");
                }
            }
            Err(e) => tracing::warn!(relay = %url, "could not add the relay again: {e}"),
        }
    }
}

/// While no relay is up, every relay connection starts over after this
/// long, then after twice as long each time (up to 30 s, so a relay slow
/// to answer gets its time): a TCP handshake sent into an outage retries
/// after 1, 3, 7, 15 s, so one started afresh finds a network that came
/// back sooner.
pub(super) const CONNECT_AGAIN_AFTER: Duration = Duration::from_secs(3);

/// Publish to every relay in parallel; return as soon as any says OK.
pub(super) async fn publish_any(client: &Client, ev: &Event) -> Result<String, NostrError> {
    let relays = client.relays().await;
    let mut set = tokio::task::JoinSet::new();
    for (url, relay) in relays {
        let ev = ev.clone();
        set.spawn(async move { (url, relay.send_event(&ev).await.map_err(|e| e.to_string())) });
    }
    let mut errs = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((url, Ok(_))) => {
                // the other relays keep trying in the background, bounded by the SDK's timeout
                set.detach_all();
                return Ok(url.to_string());
            }
            Ok((url, Err(e))) => {
                tracing::warn!(relay = %url, "relay refused or unreachable: {e}");
                errs.push(format!("{url}: {e}"));
            }
            Err(e) => errs.push(e.to_string()),
        }
    }
    Err(NostrError::Publish(errs.join("; ")))
}

/// Re-subscribe when a relay sends CLOSED (nostr-sdk 0.44 drops such a
/// subscription for good, even across reconnects) and on every reconnect.
pub(super) fn spawn_watcher(
    client: Client,
    sub: SubscriptionId,
    peer: PublicKey,
    me: PublicKey,
    kind: u16,
) -> JoinHandle<()> {
    let mut notes = client.notifications();
    let status = client.monitor().map(|m| m.subscribe());
    tokio::spawn(async move {
        let Some(mut status) = status else { return };
        let mut backoff = Duration::from_millis(200);
        loop {
            let target: RelayUrl = tokio::select! {
                n = notes.recv() => match n {
                    Ok(RelayPoolNotification::Message { relay_url, message: RelayMessage::Closed { subscription_id, message } })
                        if *subscription_id == sub => {
                        tracing::warn!(relay = %relay_url, "relay closed the subscription ({message}); re-subscribing in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        relay_url
                    }
                    Ok(RelayPoolNotification::Shutdown) | Err(broadcast::error::RecvError::Closed) => return,
                    _ => continue,
                },
                s = status.recv() => match s {
                    Ok(MonitorNotification::StatusChanged { relay_url, status }) => {
                        if status == RelayStatus::Connected {
                            tracing::info!(relay = %relay_url, "relay connected");
                            backoff = Duration::from_millis(200);
                            relay_url
                        } else {
                            if matches!(status, RelayStatus::Disconnected | RelayStatus::Terminated) {
                                tracing::warn!(relay = %relay_url, %status, "relay connection lost; retrying");
                            }
                            continue;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                },
            };
            if let Err(e) = client
                .subscribe_with_id_to([target.clone()], sub.clone(), filter(peer, me, kind), None)
                .await
            {
                tracing::warn!(relay = %target, "re-subscribe failed: {e}");
            }
        }
    })
}
