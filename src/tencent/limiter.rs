//! A client-side rate limiter: request starts are spaced at least
//! `1 / rate` seconds apart, across every caller sharing the limiter, so no
//! one-second window ever holds more than `rate` starts. No bursts: Tencent
//! counts requests per second, and an even pace never trips that count where
//! a burst allowance could (a full bucket spent at the end of one second and
//! again at the start of the next).
//!
//! On tokio's clock, so tests can check the pacing with paused time. A
//! well-kept crate (`governor`) was considered: it keeps its own clock and
//! waits with its own timer, so paused-time tests could not drive it.

use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Paces request starts to at most `rate` per second.
#[derive(Debug)]
pub struct RateLimiter {
    /// The spacing between two starts: one second divided by the rate.
    interval: Duration,
    /// The earliest instant the next start may take. Only ever moves forward;
    /// `None` until the first start.
    next_slot: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter allowing `per_sec` starts per second.
    pub fn new(per_sec: NonZeroU32) -> Self {
        Self {
            interval: Duration::from_secs(1) / per_sec.get(),
            next_slot: Mutex::new(None),
        }
    }

    /// Waits until this caller may start a request. Callers are served in
    /// the order they call; a caller dropped while waiting leaves its slot
    /// unused, which only slows the others down, never speeds them up.
    pub async fn acquire(&self) {
        let slot = {
            // Nothing panics while the lock is held, so poisoning cannot
            // leave the slot half-updated; carry on with the value inside.
            let mut next_slot = self
                .next_slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            // An idle limiter does not bank unused slots: the next start is
            // `now`, not somewhere in the past.
            let slot = next_slot.map_or(now, |next| next.max(now));
            *next_slot = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limiter(per_sec: u32) -> Arc<RateLimiter> {
        Arc::new(RateLimiter::new(NonZeroU32::new(per_sec).unwrap()))
    }

    /// Starts `callers` concurrent acquirers and returns when each got through,
    /// relative to `origin`, sorted.
    async fn grants(limiter: &Arc<RateLimiter>, callers: usize, origin: Instant) -> Vec<Duration> {
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let limiter = Arc::clone(limiter);
                tokio::spawn(async move {
                    limiter.acquire().await;
                    Instant::now() - origin
                })
            })
            .collect();
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap());
        }
        times.sort();
        times
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_are_spaced_one_interval_apart() {
        let limiter = limiter(4);
        let origin = Instant::now();
        let times = grants(&limiter, 10, origin).await;
        assert_eq!(times[0], Duration::ZERO, "the first start does not wait");
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(250), "{times:?}");
        }
        // Ten starts at four per second take at least 9 intervals.
        assert!(times[9] >= Duration::from_millis(2_250), "{times:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_one_second_window_holds_more_than_the_rate() {
        let limiter = limiter(3);
        let origin = Instant::now();
        let times = grants(&limiter, 12, origin).await;
        for (i, start) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|t| **t < *start + Duration::from_secs(1))
                .count();
            assert!(
                in_window <= 3,
                "{in_window} starts within 1 s of {start:?}: {times:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_limiter_does_not_bank_a_burst() {
        let limiter = limiter(2);
        limiter.acquire().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let origin = Instant::now();
        let times = grants(&limiter, 3, origin).await;
        assert_eq!(
            times,
            vec![
                Duration::ZERO,
                Duration::from_millis(500),
                Duration::from_secs(1)
            ]
        );
    }
}
