//! Give memory back to the operating system after a burst.
//!
//! Thousands of TCP connections at once leave glibc's allocator with a heap
//! (one per thread arena) full of free chunks it keeps for reuse; without
//! help the RSS stays at the burst's peak for good (a 5,000-connection burst
//! left the sender at 155-176 MB against 22-27 MB idle; docs/benchmarks.md,
//! "Memory after a burst"). [`reclaim`] watches how much the program has in
//! use and, once that has fallen well below its recent peak, asks the
//! allocator to release its free pages (`malloc_trim`). A steady load never
//! triggers it; an idle process costs one `mallinfo2` call per interval.
//! Other allocators than glibc's: nothing to do, [`reclaim`] just waits.
//!
//! Buffers of a megabyte or more (each QUIC endpoint's receive buffer is
//! about 3 MB) get pages of their own that go back to the system when they
//! are freed: glibc would otherwise, after the first such buffer is freed,
//! serve the next ones from its heaps, where each freed buffer leaves a hole
//! the RSS keeps (a renumbering soak grew the `ice` sender by 1-2 MB per
//! fresh offer that way; docs/benchmarks.md, "Soak").
//!
//! Fixing that threshold also fixes glibc's trim threshold at its 128 KiB
//! default: every free that left that much at the heap's top gave the
//! pages back, and the next packets' buffers faulted them in again (page
//! faults and `brk` were 3 % of an `iroh` sender's profile). The top now
//! keeps up to [`DROP`] free; more than that comes back through
//! [`reclaim`] anyway.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the allocator is asked how much is in use.
const INTERVAL: Duration = Duration::from_secs(2);
/// Release once the bytes in use fell this far below their peak since the last release.
const DROP: usize = 16 << 20;
/// Allocations of this size or more get pages of their own (`mmap`).
const OWN_PAGES_FROM: usize = 1 << 20;

/// The pure decision: release when use fell `DROP` below the peak since
/// the last release.
#[derive(Debug, Default)]
struct Watch {
    peak: usize,
}

impl Watch {
    /// Feed the bytes in use now; true when it is time to release.
    fn release_now(&mut self, in_use: usize) -> bool {
        self.peak = self.peak.max(in_use);
        if self.peak - in_use >= DROP {
            self.peak = in_use;
            return true;
        }
        false
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    /// Bytes handed out by malloc and not yet freed (small and mmapped).
    pub fn in_use() -> Option<usize> {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let m = unsafe { libc::mallinfo2() };
        Some(m.uordblks + m.hblkhd)
    }

    /// Release free pages of every arena; returns whether any were released.
    pub fn release() -> bool {
        // SAFETY: malloc_trim is thread-safe and only returns free memory.
        unsafe { libc::malloc_trim(0) == 1 }
    }

    /// Serve allocations of `bytes` or more from pages of their own, for
    /// good (a fixed threshold also stops glibc from raising it).
    pub fn own_pages_from(bytes: usize) -> bool {
        set(libc::M_MMAP_THRESHOLD, bytes)
    }

    /// Keep up to `bytes` free at the heap's top instead of giving them
    /// back at every free.
    pub fn keep_top(bytes: usize) -> bool {
        set(libc::M_TRIM_THRESHOLD, bytes)
    }

    fn set(param: libc::c_int, bytes: usize) -> bool {
        let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes the allocator's tuning.
        unsafe { libc::mallopt(param, bytes) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub fn in_use() -> Option<usize> {
        None
    }
    pub fn release() -> bool {
        false
    }
    pub fn own_pages_from(_bytes: usize) -> bool {
        false
    }
    pub fn keep_top(_bytes: usize) -> bool {
        false
    }
}

/// Until `cancel`: release the allocator's free memory after each burst.
/// First gives large buffers pages of their own and lets the heap's top
/// keep [`DROP`] (see the module's text). The binary runs one per process.
pub async fn reclaim(cancel: CancellationToken) {
    glibc::own_pages_from(OWN_PAGES_FROM);
    glibc::keep_top(DROP);
    if glibc::in_use().is_none() {
        return cancel.cancelled().await;
    }
    let mut watch = Watch::default();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(now) = glibc::in_use() else { return };
        if watch.release_now(now) {
            let released = tokio::task::spawn_blocking(glibc::release)
                .await
                .unwrap_or(false);
            tracing::debug!(
                in_use_mb = now >> 20,
                released,
                "returned free memory to the system"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_once_after_a_fall_not_under_steady_load() {
        let mut w = Watch::default();
        let mb = |n: usize| n << 20;
        assert!(!w.release_now(mb(20)));
        assert!(!w.release_now(mb(150)));
        assert!(!w.release_now(mb(140)), "a small dip is not a burst's end");
        assert!(w.release_now(mb(25)));
        assert!(!w.release_now(mb(25)), "nothing new to release");
        assert!(!w.release_now(mb(30)));
        assert!(!w.release_now(mb(60)));
        assert!(w.release_now(mb(40)), "a second burst's end");
    }

    #[test]
    fn reports_use_where_it_can() {
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(glibc::in_use().is_some_and(|n| n > 0));
            assert!(glibc::own_pages_from(OWN_PAGES_FROM));
            assert!(glibc::keep_top(DROP));
        }
    }
}
