//! Prometheus metrics. Each [`Metrics`] owns its registry (no process-global
//! state), so several servers in one process — as in the tests — count apart.
//!
//! Gauges that describe the spool (pending and dead deliveries, size on disk)
//! are read from the spool at scrape time rather than tracked, so they are
//! right even after a restart or a `dead-letters retry` from another process.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::protocol::{EventTypes, event_type_label, event_type_name};
use crate::spool::Spool;

/// Label: what became of a callback (`accepted`, `duplicate`, or a rejection reason).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// Labels: an event type's name (`other` for undocumented numbers, so the
/// set stays bounded) and what became of the callback (`accepted`, `duplicate`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event_type: &'static str,
    outcome: &'static str,
}

/// Labels: a sink and what became of one delivery attempt.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    sink: String,
    outcome: String,
}

/// Label: a sink.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

/// Histogram constructor, for families (a plain `fn` so the family is nameable).
fn latency_histogram() -> Histogram {
    // 0.5 ms up to ~8 min in powers of four.
    Histogram::new(exponential_buckets(0.000_5, 4.0, 13))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    callbacks: Family<OutcomeLabels, Counter>,
    callback_seconds: Histogram,
    events: Family<EventLabels, Counter>,
    undocumented_events: Counter,
    deliveries: Family<DeliveryLabels, Counter>,
    delivery_lag_seconds: HistogramFamily<SinkLabels>,
    pending: Family<SinkLabels, Gauge>,
    oldest_pending_age: Family<SinkLabels, Gauge>,
    dead: Family<SinkLabels, Gauge>,
    spool_bytes: Gauge,
    dedup_entries: Gauge,
    worker_restarts: Family<WorkerLabels, Counter>,
    worker_up: Family<WorkerLabels, Gauge>,
    refused_settlements: Family<SinkLabels, Counter>,
    last_success: Family<SinkLabels, Gauge>,
    last_failure: Family<SinkLabels, Gauge>,
    reconcile: ReconcileMetrics,
    /// Each sink's last success and last failure, for the admin API.
    activity: std::sync::Mutex<std::collections::HashMap<String, SinkActivity>>,
}

/// What a sink did last, as this process saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkActivity {
    /// When a delivery last succeeded (Unix ms).
    pub last_success_ms: Option<i64>,
    /// When an attempt last failed (Unix ms).
    pub last_failure_ms: Option<i64>,
    /// Why it failed.
    pub last_error: Option<String>,
}

/// Labels: one request to Tencent's API (`action`) and how it ended
/// (`ok`, or Tencent's error code, `http_503`, `transport`, `decode`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiCallLabels {
    action: String,
    outcome: String,
}

/// Labels: a reconciled callback's event type name and what reconciliation
/// found (`present`, `recovered`, `missing` in a dry run, `unrecoverable`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconciledLabels {
    event_type: &'static str,
    outcome: &'static str,
}

/// Reconciliation's metrics (`recordhook_reconcile_*`).
struct ReconcileMetrics {
    runs: Family<OutcomeLabels, Counter>,
    api_calls: Family<ApiCallLabels, Counter>,
    callbacks: Family<ReconciledLabels, Counter>,
    last_success: Gauge,
    checked_until: Gauge,
    lag_seconds: Gauge,
    gaps: Gauge,
}

impl ReconcileMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            runs: Family::default(),
            api_calls: Family::default(),
            callbacks: Family::default(),
            last_success: Gauge::default(),
            checked_until: Gauge::default(),
            lag_seconds: Gauge::default(),
            gaps: Gauge::default(),
        };
        registry.register(
            "reconcile_runs",
            "Reconciliation runs, by outcome: ok, failed, busy (another replica held the \
             lease), interrupted",
            metrics.runs.clone(),
        );
        registry.register(
            "reconcile_api_calls",
            "Requests to Tencent's API, by action and outcome (ok or the error code)",
            metrics.api_calls.clone(),
        );
        registry.register(
            "reconcile_callbacks",
            "Callbacks Tencent says CSS sent, checked by reconciliation, by event type and \
             outcome: present, recovered, missing (dry run), unrecoverable",
            metrics.callbacks.clone(),
        );
        registry.register(
            "reconcile_last_success_timestamp_seconds",
            "When a reconciliation run last finished, Unix seconds (this process's runs)",
            metrics.last_success.clone(),
        );
        registry.register(
            "reconcile_checked_until_timestamp_seconds",
            "The end of the window the last finished run checked, Unix seconds",
            metrics.checked_until.clone(),
        );
        registry.register(
            "reconcile_lag_seconds",
            "How far behind now reconciliation has checked (now minus the end of the last \
             finished run's window); 0 until a run finished in this process",
            metrics.lag_seconds.clone(),
        );
        registry.register(
            "reconcile_gaps",
            "Callbacks CSS sent that reconciliation found missing and could not recover",
            metrics.gaps.clone(),
        );
        // Every outcome starts at 0, so `increase()` in an alert sees the
        // first failed run (a series born at 1 shows no increase).
        for outcome in ["ok", "partial", "failed", "busy", "interrupted"] {
            let _ = metrics.runs.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
        metrics
    }
}

/// Label: a background worker (`delivery:<sink>` or `maintenance`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

impl Metrics {
    /// Registers every metric under the `recordhook_` prefix.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("recordhook");
        let callbacks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "callbacks",
            "Callbacks received, by outcome: accepted, duplicate, or the rejection reason",
            callbacks.clone(),
        );
        // The refusals alerts watch start at 0, so `rate()` sees the first one.
        for outcome in ["spool_unavailable", "shutting_down"] {
            let _ = callbacks.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
        let callback_seconds = latency_histogram();
        registry.register(
            "callback_request_duration_seconds",
            "Time from receiving a callback request to answering it",
            callback_seconds.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Authentic callbacks, by event type name (other for undocumented types) and outcome: \
             accepted, duplicate",
            events.clone(),
        );
        let undocumented_events = Counter::default();
        registry.register(
            "undocumented_events",
            "Authentic callbacks of an event type no documentation names, accepted and stored",
            undocumented_events.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts, by sink and outcome: delivered, retried, dead",
            deliveries.clone(),
        );
        let delivery_lag_seconds: HistogramFamily<SinkLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "delivery_lag_seconds",
            "Time from accepting a callback to its delivery, by sink",
            delivery_lag_seconds.clone(),
        );
        let pending = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "pending_deliveries",
            "Deliveries waiting for an attempt, by sink",
            pending.clone(),
        );
        let oldest_pending_age = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "oldest_pending_age_seconds",
            "Seconds since the record of a sink's oldest pending delivery was received, by \
             sink; 0 when nothing is pending",
            oldest_pending_age.clone(),
        );
        let dead = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "dead_letters",
            "Deliveries given up on, by sink",
            dead.clone(),
        );
        let spool_bytes = Gauge::default();
        registry.register(
            "spool_size_bytes",
            "Size of the spool on disk: the SQLite database and its WAL, or the whole \
             PostgreSQL database (as of the last maintenance round)",
            spool_bytes.clone(),
        );
        let dedup_entries = Gauge::default();
        registry.register(
            "dedup_index_entries",
            "Event ids remembered for deduplication (accepted within the dedup window): held \
             in memory with SQLite, PostgreSQL's row estimate with PostgreSQL",
            dedup_entries.clone(),
        );
        let worker_restarts = Family::<WorkerLabels, Counter>::default();
        registry.register(
            "worker_restarts",
            "Background workers restarted after a panic, by worker",
            worker_restarts.clone(),
        );
        let worker_up = Family::<WorkerLabels, Gauge>::default();
        registry.register(
            "worker_up",
            "Whether a background worker runs (1) or waits to be restarted after a panic (0), \
             by worker",
            worker_up.clone(),
        );
        let refused_settlements = Family::<SinkLabels, Counter>::default();
        registry.register(
            "refused_settlements",
            "Delivery outcomes refused because the claim had passed to another replica \
             (its lease ran out while this one was paused or cut off), by sink",
            refused_settlements.clone(),
        );
        let last_success = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "sink_last_success_timestamp_seconds",
            "When a delivery to the sink last succeeded, Unix seconds (this process's deliveries)",
            last_success.clone(),
        );
        let last_failure = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "sink_last_failure_timestamp_seconds",
            "When a delivery attempt on the sink last failed, Unix seconds (this process's)",
            last_failure.clone(),
        );
        let reconcile = ReconcileMetrics::register(&mut registry);
        Arc::new(Self {
            reconcile,
            registry,
            worker_restarts,
            worker_up,
            refused_settlements,
            last_success,
            last_failure,
            activity: std::sync::Mutex::default(),
            callbacks,
            callback_seconds,
            events,
            undocumented_events,
            deliveries,
            delivery_lag_seconds,
            pending,
            oldest_pending_age,
            dead,
            spool_bytes,
            dedup_entries,
        })
    }

    /// Counts one answered callback and how long it took.
    pub fn observe_callback(&self, outcome: &str, elapsed: Duration) {
        self.callbacks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.callback_seconds.observe(elapsed.as_secs_f64());
    }

    /// Counts one authentic callback of `event_type` by its name; `outcome`
    /// is `accepted` or `duplicate`. An undocumented type is also counted apart.
    pub fn observe_event(&self, event_type: i64, outcome: &'static str) {
        self.events
            .get_or_create(&EventLabels {
                event_type: event_type_label(event_type),
                outcome,
            })
            .inc();
        if event_type_name(event_type).is_none() {
            self.undocumented_events.inc();
        }
    }

    /// Counts one delivery attempt on `sink`.
    pub fn observe_delivery(&self, sink: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                sink: sink.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records how long a record waited from acceptance to delivery on `sink`.
    pub fn observe_delivery_lag(&self, sink: &str, lag: Duration) {
        self.delivery_lag_seconds
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .observe(lag.as_secs_f64());
    }

    /// Counts one restart of `worker` after a panic.
    pub fn observe_worker_restart(&self, worker: &str) {
        self.worker_restarts
            .get_or_create(&WorkerLabels {
                worker: worker.to_owned(),
            })
            .inc();
    }

    /// Shows `worker` as running (`up`) or waiting to be restarted after a
    /// panic. Its restart counter starts at 0 with it, so `increase()` in an
    /// alert sees the first restart.
    pub fn set_worker_up(&self, worker: &str, up: bool) {
        let labels = WorkerLabels {
            worker: worker.to_owned(),
        };
        let _ = self.worker_restarts.get_or_create(&labels);
        self.worker_up.get_or_create(&labels).set(i64::from(up));
    }

    /// Notes a delivery to `sink` that succeeded at `at_ms`.
    pub fn observe_success(&self, sink: &str, at_ms: i64) {
        self.last_success
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .set(at_ms / 1000);
        if let Ok(mut activity) = self.activity.lock() {
            activity.entry(sink.to_owned()).or_default().last_success_ms = Some(at_ms);
        }
    }

    /// Notes an attempt on `sink` that failed at `at_ms` with `error`.
    pub fn observe_failure(&self, sink: &str, at_ms: i64, error: &str) {
        self.last_failure
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .set(at_ms / 1000);
        if let Ok(mut activity) = self.activity.lock() {
            let entry = activity.entry(sink.to_owned()).or_default();
            entry.last_failure_ms = Some(at_ms);
            entry.last_error = Some(error.to_owned());
        }
    }

    /// What `sink` did last, as this process saw it.
    pub fn sink_activity(&self, sink: &str) -> SinkActivity {
        self.activity
            .lock()
            .ok()
            .and_then(|activity| activity.get(sink).cloned())
            .unwrap_or_default()
    }

    /// Counts `count` outcomes on `sink` refused because their claim had
    /// passed to another replica.
    pub fn observe_refused_settlements(&self, sink: &str, count: usize) {
        self.refused_settlements
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    /// Counts one reconciliation run by its outcome.
    pub fn observe_reconcile_run(&self, outcome: &str) {
        self.reconcile
            .runs
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one request to Tencent's API.
    pub fn observe_reconcile_api_call(&self, action: &str, outcome: &str) {
        self.reconcile
            .api_calls
            .get_or_create(&ApiCallLabels {
                action: action.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one callback reconciliation checked.
    pub fn observe_reconciled(&self, event_type: i64, outcome: &'static str) {
        self.reconcile
            .callbacks
            .get_or_create(&ReconciledLabels {
                event_type: event_type_label(event_type),
                outcome,
            })
            .inc();
    }

    /// Notes a finished run at `now_secs` that checked up to `checked_until_secs`.
    pub fn observe_reconcile_success(&self, now_secs: i64, checked_until_secs: i64) {
        self.reconcile.last_success.set(now_secs);
        self.reconcile.checked_until.set(checked_until_secs);
    }

    /// Reads the spool gauges and renders everything in the text format.
    pub async fn render(&self, spool: &Spool, sinks: &[(String, EventTypes)]) -> String {
        let now_ms = crate::spool::unix_ms(std::time::SystemTime::now());
        for (sink, event_types) in sinks {
            if let Ok(counts) = spool.counts(sink, event_types).await {
                let labels = SinkLabels { sink: sink.clone() };
                self.pending
                    .get_or_create(&labels)
                    .set(saturating_i64(counts.pending));
                self.oldest_pending_age
                    .get_or_create(&labels)
                    .set(pending_age_secs(counts.oldest_pending_received_ms, now_ms));
                self.dead
                    .get_or_create(&labels)
                    .set(saturating_i64(counts.dead));
            }
        }
        self.spool_bytes.set(saturating_i64(spool.disk_bytes()));
        self.dedup_entries
            .set(saturating_i64(spool.dedup_entries() as u64));
        if let Ok(gaps) = spool.gap_count().await {
            self.reconcile.gaps.set(saturating_i64(gaps));
        }
        let checked_until = self.reconcile.checked_until.get();
        if checked_until > 0 {
            let now = now_ms / 1000;
            self.reconcile
                .lag_seconds
                .set(now.saturating_sub(checked_until).max(0));
        }
        self.encode()
    }

    /// The metrics as they stand, without reading the spool (for tests).
    #[cfg(test)]
    pub(crate) fn render_plain(&self) -> String {
        self.encode()
    }

    fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Whole seconds from `received_ms` to `now_ms`; 0 with nothing pending, or
/// for a record stamped ahead of this replica's clock.
fn pending_age_secs(received_ms: Option<i64>, now_ms: i64) -> i64 {
    received_ms.map_or(0, |received| now_ms.saturating_sub(received).max(0) / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pending_age_is_whole_seconds_and_never_negative() {
        assert_eq!(pending_age_secs(None, 10_000), 0);
        assert_eq!(pending_age_secs(Some(1_000), 10_999), 9);
        assert_eq!(pending_age_secs(Some(20_000), 10_000), 0);
        assert_eq!(pending_age_secs(Some(i64::MIN), i64::MAX), i64::MAX / 1_000);
    }

    #[tokio::test]
    async fn counters_and_gauges_render_with_their_labels() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&crate::spool::SpoolOptions {
            path: dir.path().join("s.db"),
            postgres: None,
            dedup_window: Duration::from_secs(1),
            max_bytes: 0,
        })
        .await
        .unwrap();
        let metrics = Metrics::new();
        metrics.observe_callback("accepted", Duration::from_millis(2));
        metrics.observe_callback("sign_mismatch", Duration::from_millis(1));
        metrics.observe_callback("sign_mismatch", Duration::from_millis(1));
        metrics.observe_delivery("archive", "delivered");
        metrics.observe_event(100, "accepted");
        metrics.observe_event(318, "accepted");
        metrics.observe_event(9_999, "duplicate");
        metrics.observe_delivery_lag("archive", Duration::from_millis(30));
        metrics.observe_reconcile_api_call("DescribeCallbackRecordsList", "RequestLimitExceeded");
        metrics.observe_reconciled(100, "recovered");
        metrics.observe_reconcile_run("ok");
        metrics.observe_reconcile_success(2_000, 1_000);
        let text = metrics
            .render(&spool, &[("archive".to_owned(), vec![100].into())])
            .await;
        for expected in [
            r#"recordhook_callbacks_total{outcome="accepted"} 1"#,
            r#"recordhook_callbacks_total{outcome="sign_mismatch"} 2"#,
            "recordhook_callback_request_duration_seconds_count 3",
            r#"recordhook_deliveries_total{sink="archive",outcome="delivered"} 1"#,
            r#"recordhook_delivery_lag_seconds_count{sink="archive"} 1"#,
            r#"recordhook_pending_deliveries{sink="archive"} 0"#,
            r#"recordhook_oldest_pending_age_seconds{sink="archive"} 0"#,
            r#"recordhook_dead_letters{sink="archive"} 0"#,
            "recordhook_spool_size_bytes ",
            "recordhook_dedup_index_entries 0",
            r#"recordhook_events_total{event_type="record",outcome="accepted"} 1"#,
            r#"recordhook_events_total{event_type="other",outcome="accepted"} 1"#,
            r#"recordhook_events_total{event_type="other",outcome="duplicate"} 1"#,
            "recordhook_undocumented_events_total 2",
            r#"recordhook_reconcile_api_calls_total{action="DescribeCallbackRecordsList",outcome="RequestLimitExceeded"} 1"#,
            r#"recordhook_reconcile_callbacks_total{event_type="record",outcome="recovered"} 1"#,
            r#"recordhook_reconcile_runs_total{outcome="ok"} 1"#,
            "recordhook_reconcile_gaps 0",
            "recordhook_reconcile_checked_until_timestamp_seconds 1000",
            // Series alerts take increase() or rate() of start at 0.
            r#"recordhook_reconcile_runs_total{outcome="failed"} 0"#,
            r#"recordhook_reconcile_runs_total{outcome="partial"} 0"#,
            r#"recordhook_callbacks_total{outcome="spool_unavailable"} 0"#,
            r#"recordhook_callbacks_total{outcome="shutting_down"} 0"#,
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
