//! Reconciliation: asking Tencent's API which callbacks CSS sent, and
//! recovering those that never arrived (CSS gives up after about 12 minutes
//! of retries, so a receiver unreachable for longer loses them otherwise).
//!
//! A run lists the streams pushed in its window
//! (`DescribeLiveStreamEventList`), reads each stream's callback records
//! (`DescribeCallbackRecordsList`, at most a day per request), and settles
//! every record against the spool: already there; missing and recovered —
//! stored through [`crate::spool::Spool::accept`] like a live callback, so
//! dedup, routing and every sink apply, marked `source = "reconciled"`; or
//! missing and unrecoverable, kept as a gap. Authenticity comes from the
//! signed API channel: [`crate::protocol::VerifiedCallback`]'s crate-private
//! `from_tencent_api` is used here and nowhere else.
//!
//! Modules: [`settings`] (`[reconcile]`), [`windows`] (which time to ask
//! about), [`recover`] (a record's body back into a callback), [`report`]
//! (what a run found), [`run`] (one run), and here the leased run and the
//! server's schedule.

pub mod recover;
pub mod report;
pub mod run;
pub mod settings;
pub mod windows;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

pub use report::{Report, TypeCounts};
pub use run::{LEASE, LEASE_NAME, ReconcileError, Reconciler, RunOptions};
pub use settings::{RECONCILABLE_EVENT_TYPES, ReconcileSettings};

use crate::spool::{SpoolError, unix_ms};

/// Newest runs looked at for ones left "running" by a process that died.
const STALE_RUNS_CHECKED: usize = 20;

/// Why a leased run did not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum LeasedRunError {
    /// Another replica (or a `recordhook reconcile`) holds the lease.
    #[error("another recordhook process is reconciling right now (it holds the lease)")]
    Busy,
    /// The lease was lost during the run (another process took it over).
    #[error("the reconciliation lease was lost during the run; its progress so far is kept")]
    LeaseLost,
    /// The run was stopped (shutdown); its progress so far is kept.
    #[error("the run was stopped before its end; its progress so far is kept")]
    Interrupted,
    /// The run failed.
    #[error(transparent)]
    Run(#[from] ReconcileError),
    /// The spool failed around the run.
    #[error("the spool failed: {0}")]
    Spool(#[from] SpoolError),
}

/// One run under the reconciliation lease, recorded in the spool's run
/// history (a dry run is not recorded and needs no lease: it writes nothing).
pub async fn run_leased(
    reconciler: &Reconciler,
    holder: &str,
    options: &RunOptions,
    cancel: &CancellationToken,
) -> Result<Report, LeasedRunError> {
    let spool = reconciler.spool().clone();
    let now = SystemTime::now();
    if options.dry_run {
        return tokio::select! {
            report = reconciler.run(options, now) => Ok(report?),
            () = cancel.cancelled() => Err(LeasedRunError::Interrupted),
        };
    }
    if !spool.acquire_lease(LEASE_NAME, holder, LEASE).await? {
        return Err(LeasedRunError::Busy);
    }
    // Holding the lease, nobody else runs: a run still marked running was
    // cut short (its process killed, or its lease lost) and is closed now,
    // so the history does not show it running for ever.
    for stale in spool.reconcile_runs(STALE_RUNS_CHECKED).await? {
        if stale.status == crate::spool::reconciliation::RUNNING {
            spool
                .finish_reconcile_run(
                    stale.id,
                    unix_ms(now),
                    "interrupted",
                    Some("its process stopped before the end (killed, or its lease lost)".into()),
                    "{}".to_owned(),
                )
                .await?;
        }
    }
    let window = reconciler.window(options, now);
    let run_id = spool
        .start_reconcile_run(holder, unix_ms(now), window.from * 1000, window.to * 1000)
        .await?;
    let renew = async {
        loop {
            tokio::time::sleep(LEASE / 3).await;
            match spool.acquire_lease(LEASE_NAME, holder, LEASE).await {
                Ok(true) => {}
                Ok(false) => return LeasedRunError::LeaseLost,
                // A spool that cannot renew cannot store either; the run
                // finds out by itself, and a lease that runs out while the
                // spool is away only lets another replica resume the work.
                Err(err) => {
                    tracing::warn!(error = %err, "could not renew the reconciliation lease")
                }
            }
        }
    };
    let outcome = tokio::select! {
        report = reconciler.run(options, now) => report.map_err(LeasedRunError::from),
        lost = renew => Err(lost),
        () = cancel.cancelled() => Err(LeasedRunError::Interrupted),
    };
    let finished = unix_ms(SystemTime::now());
    let (status, error, report) = match &outcome {
        Ok(report) => ("ok", None, report.clone()),
        Err(LeasedRunError::Interrupted) => ("interrupted", None, Report::default()),
        Err(err) => ("failed", Some(err.to_string()), Report::default()),
    };
    let report_json = serde_json::to_string(&report).unwrap_or_default();
    spool
        .finish_reconcile_run(run_id, finished, status, error, report_json)
        .await?;
    if let Err(err) = spool.release_lease(LEASE_NAME, holder).await {
        tracing::warn!(error = %err, "could not release the reconciliation lease; it runs out by itself");
    }
    outcome
}

/// The server's schedule: a run at start-up, then one every
/// `interval_secs`, each under the lease (so with several replicas one of
/// them runs), until `cancel`.
pub async fn run_periodically(
    reconciler: Arc<Reconciler>,
    holder: String,
    cancel: CancellationToken,
) {
    let interval = Duration::from_secs(reconciler.settings().interval_secs);
    let metrics = reconciler.metrics().cloned();
    loop {
        // Another replica's run that finished within the interval stands for
        // this one: replicas that waited for the lease do not each run again
        // as soon as it is released, sharing the account's request limit.
        if let Some(wait) = recent_run_covers(&reconciler, interval).await {
            tokio::select! {
                () = tokio::time::sleep(wait) => continue,
                () = cancel.cancelled() => return,
            }
        }
        let options = RunOptions {
            resume: true,
            ..RunOptions::default()
        };
        let outcome = run_leased(&reconciler, &holder, &options, &cancel).await;
        let label = match &outcome {
            // Streams left after an API error: the run finished, but not
            // everything was checked; alerts watch for it.
            Ok(report) if !report.errors.is_empty() => "partial",
            Ok(_) => "ok",
            Err(LeasedRunError::Busy) => "busy",
            Err(LeasedRunError::Interrupted) => "interrupted",
            Err(_) => "failed",
        };
        if let Some(metrics) = &metrics {
            metrics.observe_reconcile_run(label);
        }
        match outcome {
            Ok(report) => {
                let total = report.total();
                if let Some(metrics) = &metrics
                    && report.errors.is_empty()
                {
                    let window_end = tencent_end_secs(&report).unwrap_or_default();
                    metrics
                        .observe_reconcile_success(unix_ms(SystemTime::now()) / 1000, window_end);
                }
                tracing::info!(
                    window_start = %report.window_start,
                    window_end = %report.window_end,
                    streams = report.streams,
                    streams_checked = report.streams_checked,
                    api_calls = report.api_calls,
                    sent = total.sent,
                    present = total.present,
                    recovered = total.recovered,
                    unrecoverable = total.unrecoverable,
                    failed_at_css_but_present = total.failed_at_css_but_present,
                    streams_left = report.errors.len(),
                    "reconciliation run finished"
                );
                if report.has_missing() {
                    tracing::warn!(
                        unrecoverable = total.unrecoverable,
                        streams_left = report.errors.len(),
                        "reconciliation found callbacks it could not recover (see the gaps in \
                         the console or GET /api/v1/reconciliation)"
                    );
                }
            }
            Err(LeasedRunError::Busy) => {
                tracing::debug!("another replica is reconciling; skipping this run");
            }
            Err(LeasedRunError::Interrupted) => return,
            Err(err) => tracing::error!(error = %err, "reconciliation run failed"),
        }
        // A replica that found the lease taken tries again when a lease
        // would have run out: if the holder died (its lease not renewed),
        // another replica takes over within a lease, not an interval.
        let pause = if label == "busy" {
            interval.min(LEASE)
        } else {
            interval
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// How long to wait when the newest run in the spool finished `ok` less
/// than `interval` ago (any replica's); `None` when a run is due.
async fn recent_run_covers(reconciler: &Reconciler, interval: Duration) -> Option<Duration> {
    let latest = reconciler.spool().reconcile_runs(1).await.ok()?.pop()?;
    if latest.status != "ok" {
        return None;
    }
    let due_ms = latest
        .started_at_ms
        .saturating_add(i64::try_from(interval.as_millis()).unwrap_or(i64::MAX));
    let now_ms = unix_ms(SystemTime::now());
    (due_ms > now_ms).then(|| Duration::from_millis(u64::try_from(due_ms - now_ms).unwrap_or(0)))
}

/// The last second a report checked, in Unix seconds.
fn tencent_end_secs(report: &Report) -> Option<i64> {
    crate::tencent::time::parse(&report.window_end).ok()
}

/// A reconciler for `settings` on `spool` (whose dedup window is
/// `dedup_window`, the furthest back any run may look): its API client, with every
/// request counted in `metrics`. Fails (with a message free of secrets)
/// when the credentials or the endpoint are unusable.
pub fn build(
    settings: &ReconcileSettings,
    spool: crate::spool::Spool,
    dedup_window: Duration,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    on_stored: Arc<dyn Fn(i64) + Send + Sync>,
) -> Result<Reconciler, String> {
    settings
        .fits_dedup_window(dedup_window.as_secs())
        .map_err(|err| err.to_string())?;
    let credentials = settings.credentials().map_err(|err| err.to_string())?;
    let mut client = crate::tencent::TencentClient::new(credentials, settings.client_options())
        .map_err(|err| err.to_string())?;
    if let Some(metrics) = &metrics {
        let metrics = Arc::clone(metrics);
        client = client.with_observer(Arc::new(move |action: &str, outcome: &str| {
            metrics.observe_reconcile_api_call(action, outcome);
        }));
    }
    Ok(Reconciler::new(
        client,
        spool,
        settings.clone(),
        metrics,
        on_stored,
        dedup_window,
    ))
}

/// This process's name as a lease holder: host, process id and a random
/// part (a restarted process with the same pid is another holder).
pub fn holder_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "recordhook".to_owned());
    format!("{host}:{}:{:08x}", std::process::id(), fastrand::u32(..))
}
