//! This node's share of the gateway-wide bandwidth limit: every copy on the node takes its
//! bytes from one budget before it sends them. The rate can change while copies run (the hub
//! hands each node its share with every heartbeat); 0 means no limit.
//!
//! Virtual scheduling: each send books the time its bytes take at the current rate after the
//! previous booking and waits until its own slot, so the node's total never runs ahead of the
//! rate, however many copies share it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::{Duration, Instant};

/// A shared, live-adjustable rate limit; cheap to clone.
#[derive(Clone, Default)]
pub struct Bandwidth {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    bytes_per_second: AtomicU64,
    /// When the bytes booked so far will have gone out. std Mutex: never held across .await.
    booked_until: Mutex<Option<Instant>>,
}

/// A burst the limiter lets through at once: sends never wait for a debt older than this.
const BURST: Duration = Duration::from_millis(200);

impl Bandwidth {
    /// Sets the rate; 0 turns the limit off.
    pub fn set_bytes_per_second(&self, rate: u64) {
        self.inner.bytes_per_second.store(rate, Ordering::Relaxed);
    }

    pub fn bytes_per_second(&self) -> u64 {
        self.inner.bytes_per_second.load(Ordering::Relaxed)
    }

    /// Waits until `bytes` may be sent.
    pub async fn consume(&self, bytes: u64) {
        let rate = self.bytes_per_second();
        if rate == 0 || bytes == 0 {
            return;
        }
        let start = {
            let Ok(mut booked) = self.inner.booked_until.lock() else { return };
            let now = Instant::now();
            // An idle limiter doesn't bank unused time beyond a short burst.
            let start = booked.map_or(now, |b| b.max(now.checked_sub(BURST).unwrap_or(now)));
            #[allow(clippy::cast_precision_loss, reason = "a schedule needs no more precision")]
            let takes = Duration::from_secs_f64(bytes as f64 / rate as f64);
            *booked = Some(start + takes);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sends_wait_for_their_slot_at_the_rate() {
        let limit = Bandwidth::default();
        limit.set_bytes_per_second(1000);
        let started = Instant::now();
        for _ in 0..5 {
            limit.consume(1000).await;
        }
        // Five seconds' worth booked: the fifth waits four seconds (minus the small burst).
        assert!(started.elapsed() >= Duration::from_millis(3800), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_never_waits_and_a_change_applies_to_the_next_send() {
        let limit = Bandwidth::default();
        let started = Instant::now();
        limit.consume(1 << 30).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        limit.set_bytes_per_second(100);
        limit.consume(100).await;
        limit.consume(100).await;
        assert!(started.elapsed() >= Duration::from_millis(800), "{:?}", started.elapsed());
    }
}
