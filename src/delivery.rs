//! Delivery workers: one per sink, each claiming from the spool the sink's
//! retries that are due and the records it has not been offered yet,
//! attempting them, and
//! writing back the outcome (delivered, retry later with backoff, or dead
//! letter) together with the new cursor. Delivery is
//! at-least-once: an attempt whose outcome was not written back (a crash) is
//! made again after a restart.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::record::StoredRecord;
use crate::sinks::{ConfiguredSink, DeliveryError};
use crate::spool::{Claim, Outcome, Settlement, Spool, unix_ms};
use crate::telemetry::traces;

/// Records attempted together; the file sink writes them with one fsync.
const BATCH: usize = 256;

/// Longest sleep between looks at the spool, so dead letters queued again by
/// another process (`recordhook dead-letters retry`) are picked up promptly.
const POLL: Duration = Duration::from_secs(1);

/// Delay before the attempt after `attempts_made` failed ones: exponential from
/// `initial`, with "equal jitter" (half fixed, half random by `jitter` in
/// 0..1) so retries from many records do not arrive in lockstep; at least
/// what the target asked for with `Retry-After`; never more than `max`.
pub fn retry_delay(
    attempts_made: u32,
    initial: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exponent = attempts_made.saturating_sub(1).min(31);
    let base = initial.saturating_mul(1u32 << exponent).min(max);
    let jittered = base / 2 + base.mul_f64(jitter.clamp(0.0, 1.0) / 2.0);
    jittered.max(retry_after.unwrap_or_default()).min(max)
}

/// What to write back for one attempt's `result`.
fn settlement(
    sink: &ConfiguredSink,
    attempts: u32,
    result: Result<(), DeliveryError>,
    now: SystemTime,
) -> Settlement {
    match result {
        Ok(()) => Settlement::Delivered,
        Err(DeliveryError::Permanent { reason }) => Settlement::Dead { error: reason },
        Err(DeliveryError::Retriable { reason, .. }) if attempts >= sink.max_attempts => {
            Settlement::Dead {
                error: format!("gave up after {attempts} attempts: {reason}"),
            }
        }
        Err(DeliveryError::Retriable {
            reason,
            retry_after,
        }) => {
            let delay = retry_delay(
                attempts,
                sink.retry_initial,
                sink.retry_max,
                retry_after,
                fastrand::f64(),
            );
            Settlement::Retry {
                at_ms: unix_ms(now + delay),
                error: reason,
            }
        }
    }
}

/// The `outcome` label of `settlement`, in metrics and traces.
fn outcome_label(settlement: &Settlement) -> &'static str {
    match settlement {
        Settlement::Delivered => "delivered",
        Settlement::Retry { .. } => "retried",
        Settlement::Dead { .. } => "dead",
    }
}

fn log_outcome(sink: &str, record: &StoredRecord, attempts: u32, settlement: &Settlement) {
    let event_id = record.id.as_str();
    if matches!(settlement, Settlement::Delivered) {
        tracing::debug!(sink, event_id, attempts, outcome = "delivered", "delivered");
        return;
    }
    // Failures are rare: worth parsing the record for its stream.
    let stream_id = record.stream_id();
    match settlement {
        Settlement::Delivered => {}
        Settlement::Retry { at_ms, error } => tracing::warn!(
            sink, event_id, stream_id, attempts, outcome = "retry", error = %error,
            retry_at = %crate::spool::format_ms(*at_ms), "delivery failed; will retry"
        ),
        Settlement::Dead { error } => tracing::error!(
            sink, event_id, stream_id, attempts, outcome = "dead", error = %error,
            "delivery failed for good; kept as a dead letter"
        ),
    }
}

/// One result per record, in order: what the sink answered when it
/// answered for exactly the batch, else a retriable failure for every
/// record. A sink that answered for another slice cannot say which of the
/// records it took, so none counts as delivered.
fn one_result_per_record(
    results: Vec<Result<(), DeliveryError>>,
    records: usize,
) -> Vec<Result<(), DeliveryError>> {
    if results.len() == records {
        return results;
    }
    tracing::error!(
        records,
        results = results.len(),
        "sink broke the one-result-per-record rule"
    );
    let reason = format!(
        "the sink returned {} results for {records} records; retrying them all",
        results.len()
    );
    vec![Err(DeliveryError::retriable(reason)); records]
}

/// Delivers `sink`'s records until `shutdown` is cancelled: claims a batch
/// (due retries and fresh records, see [`Spool::claim`]), attempts it, and
/// settles the outcomes. `wake` is notified when new records are accepted,
/// so delivery starts without waiting for the next poll.
pub async fn run(
    spool: Spool,
    sink: Arc<ConfiguredSink>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let name = sink.name.as_str();
    while !shutdown.is_cancelled() {
        let now = SystemTime::now();
        let claim = match spool.claim(name, &sink.event_types, now, BATCH).await {
            Ok(claim) => claim,
            Err(err) => {
                tracing::error!(sink = name, error = %err, "could not read pending deliveries");
                Claim::default()
            }
        };
        if claim.deliveries.is_empty() {
            // Records of other event types only: move past them and look again
            // at once. If that write fails (a full disk), wait like an idle
            // round instead of retrying it in a tight loop.
            if claim.makes_progress() {
                match spool.settle(name, claim.receipt, Vec::new(), now).await {
                    Ok(_) => continue,
                    Err(err) => tracing::error!(
                        sink = name, error = %err, "could not move the delivery cursor"
                    ),
                }
            }
            let next_retry = spool.next_retry_ms(name).await.ok().flatten();
            let wait = next_retry.map_or(POLL, |at| {
                Duration::from_millis(u64::try_from(at - unix_ms(now)).unwrap_or(0)).min(POLL)
            });
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => break,
            }
            continue;
        }
        if claim.sink_taken_over() {
            // Another replica may have written the sink's file meanwhile
            // (a shared volume): start from the file as it is now.
            sink.sink.reopen();
        }
        let receipt = claim.receipt;
        // The records move into the batch; what settling needs stays beside it.
        let (positions, records): (Vec<_>, Vec<StoredRecord>) = claim
            .deliveries
            .into_iter()
            .map(|d| {
                (
                    (d.seq, d.attempts.saturating_add(1), d.received_at_ms),
                    d.record,
                )
            })
            .unzip();
        let attempt_spans: Vec<tracing::Span> = positions
            .iter()
            .zip(&records)
            .filter(|_| traces::enabled())
            .map(|((_, attempts, _), record)| {
                traces::delivery_attempt_span(name, &record.id, record.event_type, *attempts)
            })
            .collect();
        let span = tracing::info_span!("delivery", sink = name, records = records.len());
        // Each record's traceparent names its own attempt span.
        let traced: Vec<(&str, &tracing::Span)> = records
            .iter()
            .map(|record| record.id.as_str())
            .zip(&attempt_spans)
            .collect();
        let attempt =
            traces::within_attempts(&traced, sink.sink.deliver_batch(&records).instrument(span));
        // One outcome per record by construction (`Outcomes` is only built
        // from a batch). A sink could still build it from another slice, and
        // the cursor would then pass records over without an answer: checked
        // once more here, where a loss would happen.
        let results = one_result_per_record(
            spool
                .hold_while(name, &receipt, attempt)
                .await
                .into_iter()
                .collect(),
            records.len(),
        );
        let finished = SystemTime::now();
        let finished_ms = unix_ms(finished);
        let outcomes: Vec<Outcome> = positions
            .into_iter()
            .zip(&records)
            .zip(results)
            .map(|(((seq, attempts, received_at_ms), record), result)| {
                let settlement = settlement(&sink, attempts, result, finished);
                log_outcome(name, record, attempts, &settlement);
                match &settlement {
                    Settlement::Delivered => metrics.observe_success(name, finished_ms),
                    Settlement::Retry { error, .. } | Settlement::Dead { error } => {
                        metrics.observe_failure(name, finished_ms, error);
                    }
                }
                if let Settlement::Delivered = &settlement {
                    let lag = finished_ms.saturating_sub(received_at_ms);
                    metrics.observe_delivery_lag(
                        name,
                        Duration::from_millis(u64::try_from(lag).unwrap_or(0)),
                    );
                }
                metrics.observe_delivery(name, outcome_label(&settlement));
                Outcome {
                    seq,
                    attempts,
                    settlement,
                }
            })
            .collect();
        // Each attempt's span ends here, with its outcome.
        for (span, outcome) in attempt_spans.iter().zip(&outcomes) {
            traces::set_attribute(span, "outcome", outcome_label(&outcome.settlement));
        }
        drop(attempt_spans);
        match spool.settle(name, receipt, outcomes, finished).await {
            Ok(0) => {}
            Ok(refused) => {
                // Another replica took these over when this claim's lease ran
                // out (this process was paused or cut off); it attempts them.
                tracing::warn!(
                    sink = name,
                    refused,
                    "late outcomes refused: the claim had passed to another replica"
                );
                metrics.observe_refused_settlements(name, refused);
            }
            Err(err) => {
                // The attempts will be made again: at-least-once, never lost.
                tracing::error!(sink = name, error = %err, "could not record delivery outcomes");
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const TEN_MINUTES: Duration = Duration::from_secs(600);

    #[test]
    fn retry_delay_doubles_from_the_initial_delay_up_to_the_maximum() {
        let no_jitter: Vec<u64> = (1..=12)
            .map(|n| retry_delay(n, SECOND, TEN_MINUTES, None, 1.0).as_secs())
            .collect();
        assert_eq!(no_jitter, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
    }

    #[test]
    fn jitter_takes_at_most_half_of_the_delay_away() {
        assert_eq!(
            retry_delay(3, SECOND, TEN_MINUTES, None, 0.0),
            Duration::from_secs(2)
        );
        assert_eq!(
            retry_delay(3, SECOND, TEN_MINUTES, None, 0.5),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn retry_after_is_honoured_but_capped_at_the_maximum() {
        let asked = Some(Duration::from_secs(30));
        assert_eq!(
            retry_delay(1, SECOND, TEN_MINUTES, asked, 1.0),
            Duration::from_secs(30)
        );
        let too_long = Some(Duration::from_secs(3_600));
        assert_eq!(
            retry_delay(1, SECOND, TEN_MINUTES, too_long, 1.0),
            TEN_MINUTES
        );
    }

    #[test]
    fn a_sink_that_answers_for_another_slice_gets_every_record_retried() {
        for results in [vec![Ok(())], vec![Ok(()), Ok(()), Ok(()), Ok(())], vec![]] {
            let checked = one_result_per_record(results, 3);
            assert_eq!(checked.len(), 3);
            assert!(
                checked
                    .iter()
                    .all(|r| matches!(r, Err(DeliveryError::Retriable { .. }))),
                "{checked:?}"
            );
        }
        let honest = vec![Ok(()), Err(DeliveryError::permanent("no"))];
        assert_eq!(one_result_per_record(honest.clone(), 2), honest);
    }

    #[test]
    fn the_default_schedule_waits_28_to_57_minutes_before_a_dead_letter() {
        // The README's figure: the waits between the default 15 attempts.
        let defaults = crate::sinks::SinkSettings::log("x");
        let (initial, max) = (
            Duration::from_millis(defaults.retry_initial_ms),
            Duration::from_millis(defaults.retry_max_ms),
        );
        let total = |jitter: f64| -> Duration {
            (1..defaults.max_attempts)
                .map(|n| retry_delay(n, initial, max, None, jitter))
                .sum()
        };
        assert_eq!(defaults.max_attempts, 15);
        assert_eq!(total(0.0).as_secs(), 1_711);
        assert_eq!(total(1.0).as_secs(), 3_423);
    }

    /// A sink with 3 attempts, retried after 10 s doubling to 60 s.
    fn three_attempt_sink() -> ConfiguredSink {
        let mut settings = crate::sinks::SinkSettings::log("s");
        settings.max_attempts = 3;
        settings.retry_initial_ms = 10_000;
        settings.retry_max_ms = 60_000;
        crate::sinks::build(&[settings]).unwrap().remove(0)
    }

    fn retriable(retry_after: Option<Duration>) -> Result<(), DeliveryError> {
        Err(DeliveryError::Retriable {
            reason: "503".into(),
            retry_after,
        })
    }

    #[test]
    fn a_failed_attempt_is_retried_from_the_time_it_ended_until_attempts_run_out() {
        let sink = three_attempt_sink();
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |attempts, result| match settlement(&sink, attempts, result, now) {
            Settlement::Retry { at_ms, .. } => Some(at_ms - unix_ms(now)),
            _ => None,
        };
        // First retry 5-10 s after `now` (equal jitter), the second 10-20 s.
        let first = at(1, retriable(None)).unwrap();
        assert!((5_000..=10_000).contains(&first), "{first}");
        let second = at(2, retriable(None)).unwrap();
        assert!((10_000..=20_000).contains(&second), "{second}");
        // Retry-After wins when longer, but never past retry_max.
        assert_eq!(
            at(1, retriable(Some(Duration::from_secs(45)))),
            Some(45_000)
        );
        assert_eq!(
            at(1, retriable(Some(Duration::from_secs(999)))),
            Some(60_000)
        );
        // The third failure is the last: a dead letter, as is any permanent one.
        assert!(matches!(
            settlement(&sink, 3, retriable(None), now),
            Settlement::Dead { error } if error.starts_with("gave up after 3 attempts")
        ));
        assert!(matches!(
            settlement(
                &sink,
                1,
                Err(DeliveryError::Permanent {
                    reason: "400".into()
                }),
                now
            ),
            Settlement::Dead { .. }
        ));
        assert!(matches!(
            settlement(&sink, 1, Ok(()), now),
            Settlement::Delivered
        ));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        assert_eq!(
            retry_delay(u32::MAX, SECOND, TEN_MINUTES, None, 1.0),
            TEN_MINUTES
        );
    }
}
