//! Keeps the background workers (one delivery worker per sink, and spool
//! maintenance) running: a worker that panics is logged, counted, shown as
//! down to `/readyz` and in `recordhook_worker_up`, and started again after a backoff that doubles while
//! it keeps failing. A panic in one sink's worker never stops the others, and
//! the records it was working on stay pending in the spool.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// First wait before restarting a worker that panicked.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A worker that ran this long before panicking starts again from
/// [`FIRST_BACKOFF`]: its earlier failures were not a crash loop.
const STABLE_AFTER: Duration = Duration::from_secs(300);

/// Which workers are down (waiting to be restarted after a panic).
#[derive(Debug, Default)]
pub struct WorkerHealth {
    down: Mutex<BTreeSet<String>>,
}

impl WorkerHealth {
    /// A registry where every worker is up.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Names of the workers that are down now, sorted.
    pub fn down(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    /// Marks `worker` as down (the supervisor does, after a panic).
    pub fn mark_down(&self, worker: &str) {
        self.lock().insert(worker.to_owned());
    }

    /// Marks `worker` as running again.
    pub fn mark_up(&self, worker: &str) {
        self.lock().remove(worker);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.down.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The wait before restart number `restarts` (1 for the first).
fn backoff(restarts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << restarts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// Runs the worker `start` makes until it returns by itself (it saw `stop`)
/// or `stop` is cancelled; restarts it after each panic. Returns when the
/// worker has ended for good.
pub async fn supervise<F, Fut>(
    worker: String,
    health: Arc<WorkerHealth>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    mut start: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut restarts = 0u32;
    metrics.set_worker_up(&worker, true);
    loop {
        let started = Instant::now();
        let task = tokio::spawn(start());
        let abort = task.abort_handle();
        // Dropping this future (a shutdown that gave up waiting) must not
        // leave the worker running on its own.
        let _guard = AbortOnDrop(abort);
        let err = match task.await {
            Ok(()) => return,
            Err(err) if err.is_cancelled() => return,
            Err(err) => err,
        };
        if started.elapsed() >= STABLE_AFTER {
            restarts = 0;
        }
        restarts = restarts.saturating_add(1);
        let wait = backoff(restarts);
        metrics.observe_worker_restart(&worker);
        health.mark_down(&worker);
        metrics.set_worker_up(&worker, false);
        tracing::error!(
            worker = %worker,
            error = %err,
            restart_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "background worker panicked; it will be restarted"
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => {
                health.mark_up(&worker);
                return;
            }
        }
        health.mark_up(&worker);
        metrics.set_worker_up(&worker, true);
        tracing::info!(worker = %worker, restarts, "background worker restarted");
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_worker_shows_up_with_no_restarts() {
        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(
            "maintenance".to_owned(),
            WorkerHealth::new(),
            Arc::clone(&metrics),
            stop.clone(),
            {
                let stop = stop.clone();
                move || {
                    let stop = stop.clone();
                    async move { stop.cancelled().await }
                }
            },
        ));
        let shown = r#"recordhook_worker_up{worker="maintenance"} 1"#;
        while !metrics.render_plain().contains(shown) {
            tokio::task::yield_now().await;
        }
        // Its restart counter exists at 0, so `increase()` sees the first panic.
        let text = metrics.render_plain();
        assert!(
            text.contains(r#"recordhook_worker_restarts_total{worker="maintenance"} 0"#),
            "{text}"
        );
        stop.cancel();
        supervisor.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_worker_is_counted_shown_down_and_restarted() {
        let health = WorkerHealth::new();
        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let starts = Arc::new(AtomicU32::new(0));
        let supervisor = {
            let (health, metrics, stop, starts) = (
                Arc::clone(&health),
                Arc::clone(&metrics),
                stop.clone(),
                Arc::clone(&starts),
            );
            tokio::spawn(supervise(
                "delivery:a".to_owned(),
                health,
                metrics,
                stop.clone(),
                move || {
                    let (starts, stop) = (Arc::clone(&starts), stop.clone());
                    async move {
                        // The first two runs panic; the third works until stopped.
                        if starts.fetch_add(1, Ordering::SeqCst) < 2 {
                            panic!("boom");
                        }
                        stop.cancelled().await;
                    }
                },
            ))
        };
        // Wait (in paused time) for the first panic to be noticed.
        while health.down().is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(health.down(), ["delivery:a"]);
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        let text = metrics.render_plain();
        assert!(
            text.contains(r#"recordhook_worker_up{worker="delivery:a"} 0"#),
            "{text}"
        );
        // The backoffs (1 s, then 2 s) pass; the third run stays up.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert!(health.down().is_empty());
        let text = metrics.render_plain();
        assert!(
            text.contains(r#"recordhook_worker_restarts_total{worker="delivery:a"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"recordhook_worker_up{worker="delivery:a"} 1"#),
            "{text}"
        );
        stop.cancel();
        supervisor.await.unwrap();
    }
}
