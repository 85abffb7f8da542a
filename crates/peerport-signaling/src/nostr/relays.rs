//! The relay connections: how they retry, start over, publish and stay
//! subscribed.

use std::{collections::HashMap, time::Duration};

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
        reconnect_relay(client, url).await;
    }
}

/// Replace the relay `url` with a new connection (see [`reconnect_relays`]).
async fn reconnect_relay(client: &Client, url: RelayUrl) {
    if let Err(e) = client.force_remove_relay(url.clone()).await {
        tracing::warn!(relay = %url, "could not drop the relay connection: {e}");
        return;
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

/// A lost relay connection is started afresh after this long, then after
/// twice as long each time, at most [`AGAIN_SOON_MAX`] for the first
/// [`AGAIN_SOON_FOR`] (a restarted relay is back within seconds), then
/// up to 30 s: nostr-sdk's own retries add up to ±3 s of jitter to a
/// growing interval, which left a relay that was back unused for 2-7 s.
const AGAIN_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two fresh starts of a relay connection.
pub(super) const AGAIN_MAX: Duration = Duration::from_secs(30);
const AGAIN_SOON_MAX: Duration = Duration::from_secs(2);
const AGAIN_SOON_FOR: Duration = Duration::from_secs(30);

/// The wait before the next fresh connection to a relay lost `lost_for`
/// ago, after waiting `last`.
fn again_after(last: Duration, lost_for: Duration) -> Duration {
    let cap = if lost_for < AGAIN_SOON_FOR {
        AGAIN_SOON_MAX
    } else {
        AGAIN_MAX
    };
    last.saturating_mul(2).min(cap)
}

/// A lost relay: since when, and when it is started afresh next.
struct Lost {
    since: tokio::time::Instant,
    next: tokio::time::Instant,
    wait: Duration,
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
/// subscription for good, even across reconnects) and on every reconnect;
/// start a lost relay connection afresh on a schedule of its own
/// ([`again_after`]).
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
        let mut lost: HashMap<RelayUrl, Lost> = HashMap::new();
        loop {
            let due = lost.values().map(|l| l.next).min();
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
                            lost.remove(&relay_url);
                            relay_url
                        } else {
                            // a fresh connection that fails reports the same: only the first counts
                            if matches!(status, RelayStatus::Disconnected | RelayStatus::Terminated)
                                && !lost.contains_key(&relay_url)
                            {
                                tracing::warn!(relay = %relay_url, %status, "relay connection lost; retrying");
                                let now = tokio::time::Instant::now();
                                lost.insert(relay_url, Lost { since: now, next: now + AGAIN_FIRST, wait: AGAIN_FIRST });
                            }
                            continue;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                },
                _ = async {
                    match due {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let now = tokio::time::Instant::now();
                    let due: Vec<RelayUrl> =
                        lost.iter().filter(|(_, l)| l.next <= now).map(|(u, _)| u.clone()).collect();
                    for url in due {
                        tracing::debug!(relay = %url, "connecting to the relay afresh");
                        reconnect_relay(&client, url.clone()).await;
                        if let Some(l) = lost.get_mut(&url) {
                            l.wait = again_after(l.wait, now - l.since);
                            l.next = tokio::time::Instant::now() + l.wait;
                        }
                    }
                    continue;
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_relay_is_tried_often_at_first_then_less() {
        let mut wait = AGAIN_FIRST;
        let mut waits = Vec::new();
        let mut lost_for = Duration::ZERO;
        while lost_for < Duration::from_secs(120) {
            lost_for += wait;
            waits.push(wait);
            wait = again_after(wait, lost_for);
        }
        assert_eq!(
            &waits[..4],
            &[
                Duration::from_millis(500),
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(2),
            ]
        );
        assert!(waits.iter().all(|w| *w <= AGAIN_MAX));
        assert_eq!(waits.last(), Some(&AGAIN_MAX));
        // within the first 30 s: at most every 2 s
        assert!(waits.len() < 30, "{waits:?}");
    }
}
