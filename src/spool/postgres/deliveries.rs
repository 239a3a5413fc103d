//! Delivery state in the PostgreSQL spool: one `deliveries` row per (record,
//! sink), claimed under a lease.
//!
//! A claim marks its rows with a random token and a lease end
//! (`FOR UPDATE SKIP LOCKED`, so replicas claiming at once take different
//! rows). While the sink works, the worker renews the lease
//! ([`PgSpool::hold_while`]). Settling writes back only rows that still
//! carry the claim's token: if the lease ran out (the replica was paused or
//! cut off) and another replica claimed them, the late outcomes are refused
//! and counted, never written over the other's.
//!
//! A single-writer sink (the file sink, whose file is local to a replica) is
//! in addition held by one replica at a time through a lease on its `sinks`
//! row. Its `fence` number grows each time the lease changes hands, and
//! settling checks it, so a former holder that comes back cannot settle.
//! A replica that found the sink held by another asks again only after
//! [`HOLD_RECHECK`]: its worker is woken by every record stored, and asking
//! each time cost two statements per wake-up (half of all statements under
//! load, bench/BENCHMARKS.md, PostgreSQL section of issue 21).

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use tokio_postgres::Row;

use super::{NOW_MS, PgSpool, newest_seq_of};
use crate::protocol::EventTypes;
use crate::record::StoredRecord;
use crate::spool::{
    Claim, ClaimReceipt, DeadLetter, DeliveryState, Outcome, PendingDelivery, Receipt, Settlement,
    SinkCounts, SinkRegistration, SpoolError, format_ms,
};

/// How long a replica that found a single-writer sink held by another
/// leaves it be before asking again. A lease that ran out, or one released
/// by a replica shutting down, is taken over this much later at most.
const HOLD_RECHECK: Duration = Duration::from_millis(200);

/// Event types as stored in `sinks.event_types`: NULL for every type.
fn type_array(event_types: &EventTypes) -> Option<Vec<i64>> {
    event_types.listed().map(<[i64]>::to_vec)
}

/// Claims up to `$2` rows of sink `$1` chosen by `condition` and `order`,
/// with token `$3` and a lease of `$4` ms; `$5` is "now" on the database's
/// clock, for due times.
fn claim_statement(condition: &str, order: &str) -> String {
    format!(
        "WITH picked AS (
             SELECT seq FROM deliveries
             WHERE sink = $1 AND state = 'pending' AND {condition}
               AND (lease_until_ms IS NULL OR lease_until_ms < {NOW_MS})
             ORDER BY {order} LIMIT $2
             FOR UPDATE SKIP LOCKED
         )
         UPDATE deliveries d SET claim_token = $3, lease_until_ms = {NOW_MS} + $4
         FROM picked p, records r
         WHERE d.sink = $1 AND d.seq = p.seq AND r.seq = p.seq AND $5::bigint IS NOT NULL
         RETURNING d.seq, d.attempts, r.received_at_ms, r.event_id, r.event_type, r.body,
                   d.next_attempt_ms"
    )
}

impl PgSpool {
    fn lease_ms(&self) -> i64 {
        i64::try_from(self.inner.lease.as_millis()).unwrap_or(i64::MAX)
    }

    fn single_writer(&self, sink: &str) -> bool {
        self.inner
            .single_writers
            .lock()
            .is_ok_and(|sinks| sinks.contains(sink))
    }

    /// Whether another replica held single-writer `sink` at this process's
    /// last try, less than [`HOLD_RECHECK`] ago.
    fn held_elsewhere(&self, sink: &str) -> bool {
        self.inner
            .held_elsewhere
            .lock()
            .is_ok_and(|held| held.get(sink).is_some_and(|until| Instant::now() < *until))
    }

    /// Remembers whether another replica holds single-writer `sink`.
    fn note_held_elsewhere(&self, sink: &str, elsewhere: bool) {
        if let Ok(mut held) = self.inner.held_elsewhere.lock() {
            if elsewhere {
                held.insert(sink.to_owned(), Instant::now() + HOLD_RECHECK);
            } else {
                held.remove(sink);
            }
        }
    }

    /// Makes the configured sinks known (see [`crate::spool::Spool::register_sinks`]).
    /// Replicas starting together take turns (a transaction lock on the
    /// `sinks` table). A sink's changed event types apply to what it has not
    /// been offered yet.
    pub async fn register_sinks(
        &self,
        sinks: Vec<SinkRegistration>,
        now: SystemTime,
    ) -> Result<Vec<(String, usize)>, SpoolError> {
        let now_ms = self.inner.clock.db_ms(now);
        if let Ok(mut single) = self.inner.single_writers.lock() {
            *single = sinks
                .iter()
                .filter(|sink| sink.single_writer)
                .map(|sink| sink.name.clone())
                .collect();
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(SpoolError::write)?;
        tx.execute("LOCK TABLE sinks IN SHARE ROW EXCLUSIVE MODE", &[])
            .await
            .map_err(SpoolError::write)?;
        for sink in &sinks {
            let types = type_array(&sink.event_types);
            tx.execute(
                "INSERT INTO sinks (sink, event_types, single_writer) VALUES ($1, $2, $3)
                 ON CONFLICT (sink) DO UPDATE SET event_types = excluded.event_types,
                     single_writer = excluded.single_writer",
                &[&sink.name, &types, &sink.single_writer],
            )
            .await
            .map_err(SpoolError::write)?;
            if let Some(types) = types {
                tx.execute(
                    "DELETE FROM deliveries d USING records r
                     WHERE d.sink = $1 AND d.state = 'pending' AND d.last_attempt_ms IS NULL
                       AND r.seq = d.seq AND NOT (r.event_type = ANY ($2))",
                    &[&sink.name, &types],
                )
                .await
                .map_err(SpoolError::write)?;
            }
        }
        let known: Vec<&str> = sinks.iter().map(|sink| sink.name.as_str()).collect();
        let retired: Vec<String> = tx
            .query(
                "SELECT sink FROM sinks WHERE NOT (sink = ANY ($1))",
                &[&known],
            )
            .await
            .map_err(SpoolError::write)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut counts = Vec::new();
        for sink in retired {
            let error = format!("sink `{sink}` is no longer configured");
            let count = tx
                .execute(
                    "UPDATE deliveries SET state = 'dead', last_error = $2, last_attempt_ms = $3,
                         claim_token = NULL, lease_until_ms = NULL
                     WHERE sink = $1 AND state = 'pending'",
                    &[&sink, &error, &now_ms],
                )
                .await
                .map_err(SpoolError::write)?;
            tx.execute("DELETE FROM sinks WHERE sink = $1", &[&sink])
                .await
                .map_err(SpoolError::write)?;
            counts.push((sink, usize::try_from(count).unwrap_or(usize::MAX)));
        }
        tx.commit().await.map_err(SpoolError::write)?;
        Ok(counts)
    }

    /// Takes or renews this replica's lease on a single-writer sink; its
    /// fence number, or `None` while another replica holds it.
    async fn hold_sink(&self, sink: &str) -> Result<Option<i64>, SpoolError> {
        let client = self.client().await?;
        // Prepared once per connection: it runs before every claim.
        let statement = client
            .prepare_cached(&format!(
                "UPDATE sinks SET
                     fence = fence + CASE WHEN holder IS NOT DISTINCT FROM $2 THEN 0 ELSE 1 END,
                     holder = $2, lease_until_ms = {NOW_MS} + $3
                 WHERE sink = $1
                   AND (holder IS NULL OR holder = $2 OR lease_until_ms < {NOW_MS})
                 RETURNING fence"
            ))
            .await
            .map_err(SpoolError::write)?;
        let row = client
            .query_opt(&statement, &[&sink, &self.inner.replica, &self.lease_ms()])
            .await
            .map_err(SpoolError::write)?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Up to `limit` deliveries for `sink`: due retries first, up to half of
    /// `limit`, then fresh ones in acceptance order, then more due retries
    /// if room is left. Each is leased to this claim. (The sink's event
    /// types need not be given: its deliveries exist only for those.)
    pub async fn claim(
        &self,
        sink: &str,
        _event_types: &EventTypes,
        now: SystemTime,
        limit: usize,
    ) -> Result<Claim, SpoolError> {
        let fence = if self.single_writer(sink) {
            if self.held_elsewhere(sink) {
                return Ok(Claim::default());
            }
            let fence = self.hold_sink(sink).await?;
            self.note_held_elsewhere(sink, fence.is_none());
            match fence {
                Some(fence) => Some(fence),
                None => return Ok(Claim::default()),
            }
        } else {
            None
        };
        let token = fastrand::i64(1..);
        let now_ms = self.inner.clock.db_ms(now);
        let client = self.client().await?;
        let retries = client
            .prepare_cached(&claim_statement(
                "last_attempt_ms IS NOT NULL AND next_attempt_ms <= $5",
                "next_attempt_ms, seq",
            ))
            .await
            .map_err(SpoolError::read)?;
        let fresh = client
            .prepare_cached(&claim_statement("last_attempt_ms IS NULL", "seq"))
            .await
            .map_err(SpoolError::read)?;
        let lease = self.lease_ms();
        let take = |statement, count: usize| {
            let client = &client;
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            async move {
                client
                    .query(statement, &[&sink, &count, &token, &lease, &now_ms])
                    .await
                    .map_err(SpoolError::write)
            }
        };
        let mut due = take(&retries, limit / 2).await?;
        let mut new = take(&fresh, limit - due.len()).await?;
        let room = limit - due.len() - new.len();
        if room > 0 && due.len() == limit / 2 {
            due.extend(take(&retries, room).await?);
        }
        due.sort_by_key(|row| (row.get::<_, i64>(6), row.get::<_, i64>(0)));
        new.sort_by_key(|row| row.get::<_, i64>(0));
        let deliveries: Vec<PendingDelivery> = due
            .iter()
            .chain(&new)
            .map(|row| self.pending(row))
            .collect();
        if deliveries.is_empty() {
            return Ok(Claim::default());
        }
        let took_over = fence.is_some_and(|fence| {
            self.inner
                .fences
                .lock()
                .is_ok_and(|mut fences| fences.insert(sink.to_owned(), fence) != Some(fence))
        });
        Ok(Claim {
            receipt: ClaimReceipt(Receipt::Postgres {
                token,
                fence,
                claimed: deliveries.iter().map(|d| d.seq).collect(),
                took_over,
            }),
            deliveries,
        })
    }

    fn pending(&self, row: &Row) -> PendingDelivery {
        PendingDelivery {
            seq: row.get(0),
            attempts: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
            received_at_ms: self.inner.clock.local_ms(row.get(2)),
            record: StoredRecord {
                id: row.get(3),
                event_type: row.get(4),
                json: row.get(5),
            },
        }
    }

    /// Extends the lease of the claim `token` on the records `claimed` (and
    /// of its single-writer sink, held under `fence`); false when the claim
    /// has been lost.
    async fn renew(
        &self,
        sink: &str,
        token: i64,
        fence: Option<i64>,
        claimed: &[i64],
    ) -> Result<bool, SpoolError> {
        let client = self.client().await?;
        let lease = self.lease_ms();
        if let Some(fence) = fence {
            let held = client
                .execute(
                    &format!(
                        "UPDATE sinks SET lease_until_ms = {NOW_MS} + $3
                         WHERE sink = $1 AND holder = $2 AND fence = $4"
                    ),
                    &[&sink, &self.inner.replica, &lease, &fence],
                )
                .await
                .map_err(SpoolError::write)?;
            if held == 0 {
                return Ok(false);
            }
        }
        let renewed = client
            .execute(
                &format!(
                    "UPDATE deliveries SET lease_until_ms = {NOW_MS} + $4
                     WHERE sink = $1 AND seq = ANY ($2) AND claim_token = $3"
                ),
                &[&sink, &claimed, &token, &lease],
            )
            .await
            .map_err(SpoolError::write)?;
        Ok(renewed > 0)
    }

    /// Runs `work` (the sink's attempt at a claim), renewing the claim's
    /// lease every third of it meanwhile.
    pub async fn hold_while<F: Future>(
        &self,
        sink: &str,
        receipt: &ClaimReceipt,
        work: F,
    ) -> F::Output {
        let ClaimReceipt(Receipt::Postgres {
            token,
            fence,
            claimed,
            ..
        }) = receipt
        else {
            // Nothing leased, nothing to renew.
            return work.await;
        };
        let mut renewals = tokio::time::interval(self.inner.lease / 3);
        renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renewals.tick().await;
        tokio::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return output,
                _ = renewals.tick() => match self.renew(sink, *token, *fence, claimed).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(
                        sink, "lost the lease on a claim while delivering it: another replica \
                               has it now, and this attempt's outcome will be refused"
                    ),
                    Err(err) => tracing::warn!(sink, error = %err, "could not renew a claim's lease"),
                },
            }
        }
    }

    /// Writes back a claim's outcomes, one statement; returns how many were
    /// refused because the claim (or the sink's lease) had passed to
    /// another replica.
    pub async fn settle(
        &self,
        sink: &str,
        receipt: ClaimReceipt,
        outcomes: Vec<Outcome>,
        now: SystemTime,
    ) -> Result<usize, SpoolError> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        let ClaimReceipt(Receipt::Postgres { token, fence, .. }) = receipt else {
            // No claim of this database's rows: none of them is this
            // caller's to settle.
            return Ok(outcomes.len());
        };
        let now_ms = self.inner.clock.db_ms(now);
        let mut seqs = Vec::with_capacity(outcomes.len());
        let mut states = Vec::with_capacity(outcomes.len());
        let mut attempts = Vec::with_capacity(outcomes.len());
        let mut next = Vec::with_capacity(outcomes.len());
        let mut errors: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
        for outcome in &outcomes {
            seqs.push(outcome.seq);
            attempts.push(i32::try_from(outcome.attempts).unwrap_or(i32::MAX));
            let (state, at, error) = match &outcome.settlement {
                Settlement::Delivered => ("delivered", now_ms, None),
                Settlement::Retry { at_ms, error } => (
                    "pending",
                    self.inner.clock.to_db(*at_ms),
                    Some(error.clone()),
                ),
                Settlement::Dead { error } => ("dead", now_ms, Some(error.clone())),
            };
            states.push(state);
            next.push(at);
            errors.push(error);
        }
        let client = self.client().await?;
        // `claim_token + 0`: claim_token is NULL on all but claimed rows, so
        // the planner expected one match and scanned `deliveries`, running
        // the unnest for each row (a 200-row settle: 36 ms; with this, 3.3 ms,
        // bench/BENCHMARKS.md, PostgreSQL spool).
        let statement = client
            .prepare_cached(
                "UPDATE deliveries d SET state = u.state, attempts = u.attempts,
                     next_attempt_ms = u.next_ms, last_attempt_ms = $4, last_error = u.error,
                     claim_token = NULL, lease_until_ms = NULL
                 FROM unnest($2::bigint[], $3::text[], $5::int[], $6::bigint[], $7::text[])
                     AS u (seq, state, attempts, next_ms, error)
                 WHERE d.sink = $1 AND d.seq = u.seq AND d.claim_token + 0 = $8
                   AND ($9::bigint IS NULL OR EXISTS (
                       SELECT 1 FROM sinks s WHERE s.sink = $1 AND s.holder = $10 AND s.fence = $9))",
            )
            .await
            .map_err(SpoolError::write)?;
        let settled = client
            .execute(
                &statement,
                &[
                    &sink,
                    &seqs,
                    &states,
                    &now_ms,
                    &attempts,
                    &next,
                    &errors,
                    &token,
                    &fence,
                    &self.inner.replica,
                ],
            )
            .await
            .map_err(SpoolError::write)?;
        Ok(outcomes
            .len()
            .saturating_sub(usize::try_from(settled).unwrap_or(usize::MAX)))
    }

    /// When the next retry to `sink` falls due (this host's Unix ms). None
    /// for a single-writer sink another replica holds: its retries are that
    /// replica's to make.
    pub async fn next_retry_ms(&self, sink: &str) -> Result<Option<i64>, SpoolError> {
        if self.held_elsewhere(sink) {
            return Ok(None);
        }
        let client = self.client().await?;
        // Prepared once per connection: an idle worker asks at every round.
        let statement = client
            .prepare_cached(
                "SELECT MIN(next_attempt_ms) FROM deliveries
                 WHERE sink = $1 AND state = 'pending' AND last_attempt_ms IS NOT NULL",
            )
            .await
            .map_err(SpoolError::read)?;
        let row = client
            .query_one(&statement, &[&sink])
            .await
            .map_err(SpoolError::read)?;
        Ok(row
            .get::<_, Option<i64>>(0)
            .map(|at| self.inner.clock.local_ms(at)))
    }

    /// Dead letters, of one sink or all, oldest first.
    pub async fn dead_letters(&self, sink: Option<String>) -> Result<Vec<DeadLetter>, SpoolError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT r.event_id, d.sink, d.attempts, COALESCE(d.last_error, ''),
                        COALESCE(d.last_attempt_ms, 0)
                 FROM deliveries d JOIN records r ON r.seq = d.seq
                 WHERE d.state = 'dead' AND ($1::text IS NULL OR d.sink = $1)
                 ORDER BY d.seq, d.sink",
                &[&sink],
            )
            .await
            .map_err(SpoolError::read)?;
        Ok(rows
            .iter()
            .map(|row| DeadLetter {
                id: row.get(0),
                sink: row.get(1),
                attempts: u32::try_from(row.get::<_, i32>(2)).unwrap_or(0),
                last_error: row.get(3),
                last_attempt_at: format_ms(self.inner.clock.local_ms(row.get(4))),
            })
            .collect())
    }

    /// Queues dead letters again with their attempts reset. By event id: the
    /// records of every copy of it, reached from the dead letters (few) by
    /// seq, since `records.event_id` has no index (schema version 7).
    pub async fn requeue_dead(
        &self,
        sink: Option<String>,
        event_id: Option<String>,
        now: SystemTime,
    ) -> Result<usize, SpoolError> {
        let now_ms = self.inner.clock.db_ms(now);
        let count = self
            .client()
            .await?
            .execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_ms = $3
                 WHERE state = 'dead' AND ($1::text IS NULL OR sink = $1)
                   AND ($2::text IS NULL OR EXISTS (
                       SELECT 1 FROM records r WHERE r.seq = deliveries.seq AND r.event_id = $2))",
                &[&sink, &event_id, &now_ms],
            )
            .await
            .map_err(SpoolError::write)?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Gives dead letters up for good (their records then leave with retention).
    pub async fn purge_dead(
        &self,
        sink: Option<String>,
        event_id: Option<String>,
    ) -> Result<usize, SpoolError> {
        let count = self
            .client()
            .await?
            .execute(
                "UPDATE deliveries SET state = 'purged'
                 WHERE state = 'dead' AND ($1::text IS NULL OR sink = $1)
                   AND ($2::text IS NULL OR EXISTS (
                       SELECT 1 FROM records r WHERE r.seq = deliveries.seq AND r.event_id = $2))",
                &[&sink, &event_id],
            )
            .await
            .map_err(SpoolError::write)?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Where the latest record with `event_id` stands with `sink` (whose
    /// event types need not be given: it has deliveries of those only).
    pub async fn delivery_state(
        &self,
        event_id: &str,
        sink: &str,
        _event_types: &EventTypes,
    ) -> Result<Option<DeliveryState>, SpoolError> {
        let client = self.client().await?;
        let Some(seq) = newest_seq_of(&client, event_id)
            .await
            .map_err(SpoolError::read)?
        else {
            return Ok(None);
        };
        let row = client
            .query_opt(
                "SELECT state, attempts, last_error FROM deliveries WHERE sink = $2 AND seq = $1",
                &[&seq, &sink],
            )
            .await
            .map_err(SpoolError::read)?;
        Ok(row.map(|row| {
            let state: String = row.get(0);
            // Like SQLite: handled is "delivered", and only failures count.
            let handled = matches!(state.as_str(), "delivered" | "purged");
            DeliveryState {
                state: if handled {
                    "delivered".to_owned()
                } else {
                    state
                },
                attempts: if handled {
                    0
                } else {
                    u32::try_from(row.get::<_, i32>(1)).unwrap_or(0)
                },
                last_error: if handled { None } else { row.get(2) },
            }
        }))
    }

    /// Pending and dead deliveries of `sink` (whose event types need not be
    /// given: it has deliveries of those only).
    pub async fn counts(
        &self,
        sink: &str,
        _event_types: &EventTypes,
    ) -> Result<SinkCounts, SpoolError> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT (SELECT COUNT(*) FROM deliveries WHERE sink = $1 AND state = 'pending'
                             AND last_attempt_ms IS NULL),
                        (SELECT COUNT(*) FROM deliveries WHERE sink = $1 AND state = 'pending'
                             AND last_attempt_ms IS NOT NULL),
                        (SELECT COUNT(*) FROM deliveries WHERE sink = $1 AND state = 'dead'),
                        (SELECT received_at_ms FROM records WHERE seq = LEAST(
                            (SELECT MIN(seq) FROM deliveries WHERE sink = $1
                                 AND state = 'pending' AND last_attempt_ms IS NULL),
                            (SELECT MIN(seq) FROM deliveries WHERE sink = $1
                                 AND state = 'pending' AND last_attempt_ms IS NOT NULL)))",
                &[&sink],
            )
            .await
            .map_err(SpoolError::read)?;
        let count = |index: usize| u64::try_from(row.get::<_, i64>(index)).unwrap_or(0);
        Ok(SinkCounts {
            pending: count(0) + count(1),
            dead: count(2),
            // `seq` follows acceptance, so the lowest pending is the oldest;
            // stored on the database's clock, reported on this host's.
            oldest_pending_received_ms: row
                .get::<_, Option<i64>>(3)
                .map(|at| self.inner.clock.local_ms(at)),
        })
    }
}
