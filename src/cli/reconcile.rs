//! `recordhook reconcile`: one reconciliation run from the command line,
//! with its report printed; exits 2 when something CSS sent is still
//! missing afterwards.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::configuration::load_for_file;
use crate::reconcile::{self, LeasedRunError, RunOptions};
use crate::spool::Spool;
use crate::telemetry;

/// Exit code when CSS sent callbacks that are still missing after the run.
pub const EXIT_MISSING: u8 = 2;

/// `recordhook reconcile …`
#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// First moment to check: RFC 3339 (`2026-12-01T08:00:00Z`) or a time
    /// ago (`6h`, `2days`). Default: `reconcile.lookback_secs` ago.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Last moment to check, as `--since`; never later than now minus
    /// `reconcile.lag_secs`. Default: that.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only this stream (its name as pushed).
    #[arg(long, value_name = "STREAM")]
    pub stream: Option<String>,
    /// Look only: report what is missing, store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip the windows earlier runs finished (by default a one-off run
    /// checks its whole window again, for a complete report).
    #[arg(long)]
    pub resume: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs once against the configured spool and Tencent account.
///
/// Example: recordhook reconcile --since 2h --dry-run
pub async fn run(config: Option<&Path>, args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let settings = load_for_file(config)?;
    // Operational lines (each recovered callback, each gap) go to stderr;
    // stdout holds the report alone.
    // No traces: a reconciliation run handles no callback.
    let _log_writer = telemetry::init(&settings.log, None, std::io::stderr())?;
    let now = SystemTime::now();
    let options = RunOptions {
        since: args
            .since
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()?,
        stream: args.stream,
        dry_run: args.dry_run,
        resume: args.resume,
    };
    let spool = Spool::open(&settings.spool.options())
        .await
        .context("opening the spool (with SQLite, stop the server first: it reconciles by itself when [reconcile] enabled = true)")?;
    // Recovered records wait in the spool for the server's delivery workers.
    let reconciler = reconcile::build(
        &settings.reconcile,
        spool.clone(),
        Duration::from_secs(settings.spool.dedup_window_secs),
        None,
        Arc::new(|_| {}),
    )
    .map_err(anyhow::Error::msg)?;
    let cancel = CancellationToken::new();
    let interrupt = cancel.clone();
    tokio::spawn(async move {
        crate::startup::shutdown_signal().await;
        interrupt.cancel();
    });
    let outcome =
        reconcile::run_leased(&reconciler, &reconcile::holder_name(), &options, &cancel).await;
    spool.close().await;
    let report = match outcome {
        Ok(report) => report,
        Err(LeasedRunError::Busy) => anyhow::bail!(
            "another recordhook process is reconciling right now; try again when it is done"
        ),
        Err(err) => return Err(err.into()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.has_missing() {
        ExitCode::from(EXIT_MISSING)
    } else {
        ExitCode::SUCCESS
    })
}

/// Unix seconds of an RFC 3339 time or of a time `text` ago.
fn parse_time(text: &str, now: SystemTime) -> anyhow::Result<i64> {
    let time = match humantime::parse_rfc3339_weak(text) {
        Ok(time) => time,
        Err(_) => {
            let ago: Duration = humantime::parse_duration(text).with_context(|| {
                format!("`{text}` is neither an RFC 3339 time nor a duration such as 6h")
            })?;
            now.checked_sub(ago)
                .with_context(|| format!("`{text}` ago is before 1970"))?
        }
    };
    Ok(time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_or_a_duration_ago() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_time("6h", now).unwrap(), 1_800_000_000 - 6 * 3600);
        assert_eq!(
            parse_time("2026-12-01T00:00:00Z", now).unwrap(),
            1_796_083_200
        );
        assert!(parse_time("yesterday-ish", now).is_err());
    }
}
