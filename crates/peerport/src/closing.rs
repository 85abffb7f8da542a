//! Closing what was dropped without its async close: an endpoint or ICE
//! agent made for an exchange that was given up midway (Ctrl-C at a paste
//! prompt, the other way back won) closes on this tracker, and a program
//! waits for it ([`wait`]) before its runtime stops, so nothing is cut off
//! halfway (iroh logs an error for an endpoint dropped unclosed).

use std::{future::Future, sync::LazyLock, time::Duration};

use tokio_util::task::TaskTracker;

static CLOSING: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// Run `close` in the background, tracked (nothing without a runtime).
pub fn spawn<F: Future<Output = ()> + Send + 'static>(close: F) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(CLOSING.track_future(close));
    }
}

/// Wait up to `limit` for every close under way.
pub async fn wait(limit: Duration) {
    CLOSING.close();
    let _ = tokio::time::timeout(limit, CLOSING.wait()).await;
}
