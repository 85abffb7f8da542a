//! Dead-peer detection in seconds: both sides send keep-alives, so a live
//! sender is heard every few seconds. A session whose sender has been
//! silent for the silence limit is given up at once and dialed again (its
//! open connections wait and resume on the next connection), instead of
//! waiting for the idle timeout. The old connection is closed before the
//! new one is dialed: iroh keeps using the dead connection's path for a
//! new handshake to the same endpoint while the old connection is open
//! (a replacement dialed beside it took 15 s; after closing it, 26 ms).

use std::time::Duration;

use crate::{engine::tally::Tally, transport::TunnelConnection};

/// How often the peer's silence is checked.
const TICK: Duration = Duration::from_millis(250);

/// The silence that ends a connection: `limit` plus four round trips.
/// Both sides send a keep-alive after a keep-alive interval without
/// hearing from the other, and the QUIC stack sends an unanswered one
/// again after a probe timeout (about 1.5 round trips, doubling each
/// time): with the default limit (keep-alive + 1 s) each side gets at
/// least two tries even on a 200 ms path, so a few lost packets on a
/// lossy path are not taken for a dead peer. The round trip is the
/// smoothed one, queueing included: a sender that dies in the middle of
/// a download into a deep queue is given up a little later.
fn scaled(limit: Duration, rtt: Duration) -> Duration {
    limit.saturating_add(rtt.saturating_mul(4))
}

/// Resolves with how long `conn`'s peer has been silent, once that is the
/// silence limit (see [`scaled`]); pending while the peer is heard from.
pub(super) async fn silent<C: TunnelConnection>(
    conn: &C,
    tally: &Tally,
    limit: Duration,
) -> Duration {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let (_, heard) = tally.listen();
        let silent = heard.map_or(Duration::ZERO, |h| h.elapsed());
        if silent >= scaled(limit, conn.stats().rtt) {
            return silent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_grows_with_the_round_trip() {
        let limit = Duration::from_secs(2);
        assert_eq!(
            scaled(limit, Duration::from_micros(100)),
            Duration::from_micros(2_000_400)
        );
        assert_eq!(
            scaled(limit, Duration::from_millis(200)),
            Duration::from_millis(2800)
        );
    }
}
