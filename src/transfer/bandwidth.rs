//! This node's share of the gateway-wide bandwidth limit: every copy on the node takes its
//! bytes from one budget before it sends them. The rate can change while copies run (the hub
//! grants each node its share with every heartbeat); 0 means no limit.
//!
//! Pay first, then send: each send books its bytes after everything booked before it and
//! waits until the budget, earned at the rate of the moment, has covered them. So the node's
//! total never runs ahead of the rate (beyond a short burst after an idle spell), however
//! many copies share it, and a lowered rate slows sends already waiting at once.

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
    /// std Mutex: never held across .await.
    budget: Mutex<Budget>,
}

/// Bytes booked and bytes earned since the limiter began, and when `earned` was brought up
/// to date.
#[derive(Default)]
struct Budget {
    booked: f64,
    earned: f64,
    at: Option<Instant>,
}

/// What an idle limiter banks: a send after a pause goes out at once up to this much.
const BURST: Duration = Duration::from_millis(200);
/// How long a waiting send sleeps at most before it looks at the rate again.
const RECHECK: Duration = Duration::from_millis(100);

impl Budget {
    /// Earns what `rate` gave since the last look, banking at most [`BURST`] ahead of the
    /// bookings.
    #[allow(clippy::cast_precision_loss, reason = "a schedule needs no more precision")]
    fn earn(&mut self, now: Instant, rate: u64) {
        let rate = rate as f64;
        let cap = self.booked + BURST.as_secs_f64() * rate;
        self.earned = match self.at {
            Some(at) => (self.earned + now.duration_since(at).as_secs_f64() * rate).min(cap),
            None => cap,
        };
        self.at = Some(now);
    }
}

impl Bandwidth {
    /// Sets the rate; 0 turns the limit off.
    pub fn set_bytes_per_second(&self, rate: u64) {
        self.inner.bytes_per_second.store(rate, Ordering::Relaxed);
    }

    pub fn bytes_per_second(&self) -> u64 {
        self.inner.bytes_per_second.load(Ordering::Relaxed)
    }

    /// Waits until `bytes` may be sent: until the budget has earned them and everything
    /// booked before them.
    #[allow(clippy::cast_precision_loss, reason = "a schedule needs no more precision")]
    pub async fn consume(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut mark = None;
        loop {
            let rate = self.bytes_per_second();
            if rate == 0 {
                return;
            }
            let wait = {
                let Ok(mut budget) = self.inner.budget.lock() else { return };
                budget.earn(Instant::now(), rate);
                let mark = *mark.get_or_insert_with(|| {
                    budget.booked += bytes as f64;
                    budget.booked
                });
                let owed = mark - budget.earned;
                if owed <= 0.0 {
                    return;
                }
                Duration::from_secs_f64(owed / rate as f64).min(RECHECK)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sends_wait_until_their_bytes_are_paid_for_at_the_rate() {
        let limit = Bandwidth::default();
        limit.set_bytes_per_second(1000);
        let started = Instant::now();
        for _ in 0..5 {
            limit.consume(1000).await;
        }
        // Five seconds' worth, the last send's included, less the burst banked at the start.
        assert!(started.elapsed() >= Duration::from_millis(4800), "{:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
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
        assert!(started.elapsed() >= Duration::from_millis(1800), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lowered_rate_slows_a_send_already_waiting() {
        let limit = Bandwidth::default();
        limit.set_bytes_per_second(1000);
        let started = Instant::now();
        let waiting = tokio::spawn({
            let limit = limit.clone();
            async move { limit.consume(2200).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        // 1,200 of 2,200 earned (200 banked + 1 s); the other 1,000 at 100 a second.
        limit.set_bytes_per_second(100);
        waiting.await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(10_900), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_sends_share_the_rate_in_the_order_they_booked() {
        let limit = Bandwidth::default();
        limit.set_bytes_per_second(1000);
        let started = Instant::now();
        let first = tokio::spawn({
            let limit = limit.clone();
            async move {
                limit.consume(1000).await;
                Instant::now()
            }
        });
        tokio::task::yield_now().await;
        limit.consume(1000).await;
        let second = Instant::now();
        let first = first.await.unwrap();
        // Together 2 s of bytes less the burst; the first booked goes first, after 0.8 s.
        assert!(second.duration_since(started) >= Duration::from_millis(1800));
        assert!(first.duration_since(started) < Duration::from_secs(1), "{:?}", first - started);
    }
}
