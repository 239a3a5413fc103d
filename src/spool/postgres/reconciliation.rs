//! Reconciliation's bookkeeping in the PostgreSQL spool (see
//! [`crate::spool::reconciliation`]), shared by the replicas. Lists travel
//! as array parameters, so a call is one statement however long its list;
//! the lease is one atomic upsert on the database's clock.

use std::collections::HashMap;

use tokio_postgres::Row;

use super::{NOW_MS, PgSpool};
use crate::spool::SpoolError;
use crate::spool::reconciliation::{Gap, KEPT_RUNS, ReconcileRun};

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn sql_limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn run(row: &Row) -> ReconcileRun {
    ReconcileRun {
        id: row.get(0),
        holder: row.get(1),
        started_at_ms: row.get(2),
        finished_at_ms: row.get(3),
        window_start_ms: row.get(4),
        window_end_ms: row.get(5),
        status: row.get(6),
        error: row.get(7),
        report: row.get(8),
    }
}

impl PgSpool {
    /// Each checkpoint of `streams`, by (stream, event type).
    pub async fn reconcile_checkpoints(
        &self,
        streams: Vec<String>,
    ) -> Result<HashMap<(String, i64), i64>, SpoolError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT stream, event_type, checked_until_ms FROM reconcile_checkpoints
                 WHERE stream = ANY ($1)",
                &[&streams],
            )
            .await
            .map_err(SpoolError::read)?;
        Ok(rows
            .iter()
            .map(|row| ((row.get(0), row.get(1)), row.get(2)))
            .collect())
    }

    /// Moves `stream`'s checkpoints of `event_types` (distinct: an upsert
    /// may not touch a row twice) forward to `checked_until_ms`, never back.
    pub async fn save_reconcile_checkpoint(
        &self,
        stream: String,
        event_types: Vec<i64>,
        checked_until_ms: i64,
    ) -> Result<(), SpoolError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO reconcile_checkpoints AS c (stream, event_type, checked_until_ms)
                 SELECT $1, event_type, $3 FROM unnest($2::bigint[]) AS t (event_type)
                 ON CONFLICT (stream, event_type) DO UPDATE
                 SET checked_until_ms = GREATEST(c.checked_until_ms, excluded.checked_until_ms)",
                &[&stream, &event_types, &checked_until_ms],
            )
            .await
            .map_err(SpoolError::write)?;
        Ok(())
    }

    /// Stores the gaps not stored yet, in one statement; how many were new.
    /// A gap found by two replicas at once is stored once: the second insert
    /// waits for the first and then does nothing.
    pub async fn record_gaps(&self, gaps: Vec<Gap>) -> Result<usize, SpoolError> {
        let digests: Vec<String> = gaps.iter().map(Gap::excerpt_digest).collect();
        let streams: Vec<&str> = gaps.iter().map(|gap| gap.stream.as_str()).collect();
        let types: Vec<i64> = gaps.iter().map(|gap| gap.event_type).collect();
        let times: Vec<i64> = gaps.iter().map(|gap| gap.event_time_ms).collect();
        let codes: Vec<Option<i64>> = gaps.iter().map(|gap| gap.result_code).collect();
        let requests: Vec<&str> = gaps.iter().map(|gap| gap.request_id.as_str()).collect();
        let reasons: Vec<&str> = gaps.iter().map(|gap| gap.reason.as_str()).collect();
        let excerpts: Vec<&str> = gaps
            .iter()
            .map(|gap| gap.request_excerpt.as_str())
            .collect();
        let found: Vec<i64> = gaps.iter().map(|gap| gap.found_at_ms).collect();
        let new = self
            .client()
            .await?
            .execute(
                "INSERT INTO reconcile_gaps (stream, event_type, event_time_ms, excerpt_digest,
                     result_code, request_id, reason, request_excerpt, found_at_ms)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[],
                                      $5::bigint[], $6::text[], $7::text[], $8::text[],
                                      $9::bigint[])
                 ON CONFLICT (stream, event_type, event_time_ms, excerpt_digest) DO NOTHING",
                &[
                    &streams, &types, &times, &digests, &codes, &requests, &reasons, &excerpts,
                    &found,
                ],
            )
            .await
            .map_err(SpoolError::write)?;
        Ok(count(new))
    }

    /// Up to `limit` gaps, the most recently found first.
    pub async fn gaps(&self, limit: usize) -> Result<Vec<Gap>, SpoolError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT stream, event_type, event_time_ms, result_code, request_id, reason,
                        request_excerpt, found_at_ms
                 FROM reconcile_gaps ORDER BY found_at_ms DESC, id DESC LIMIT $1",
                &[&sql_limit(limit)],
            )
            .await
            .map_err(SpoolError::read)?;
        Ok(rows
            .iter()
            .map(|row| Gap {
                stream: row.get(0),
                event_type: row.get(1),
                event_time_ms: row.get(2),
                result_code: row.get(3),
                request_id: row.get(4),
                reason: row.get(5),
                request_excerpt: row.get(6),
                found_at_ms: row.get(7),
            })
            .collect())
    }

    /// How many gaps are stored.
    pub async fn gap_count(&self) -> Result<u64, SpoolError> {
        let row = self
            .client()
            .await?
            .query_one("SELECT count(*) FROM reconcile_gaps", &[])
            .await
            .map_err(SpoolError::read)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// Stores `run` (its id is ignored) and deletes all but the newest
    /// [`KEPT_RUNS`] runs, in one transaction; returns its id.
    pub async fn start_reconcile_run(&self, run: ReconcileRun) -> Result<i64, SpoolError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(SpoolError::write)?;
        let id: i64 = tx
            .query_one(
                "INSERT INTO reconcile_runs (holder, started_at_ms, finished_at_ms,
                     window_start_ms, window_end_ms, status, error, report)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                &[
                    &run.holder,
                    &run.started_at_ms,
                    &run.finished_at_ms,
                    &run.window_start_ms,
                    &run.window_end_ms,
                    &run.status,
                    &run.error,
                    &run.report,
                ],
            )
            .await
            .map_err(SpoolError::write)?
            .get(0);
        // NULL while fewer than KEPT_RUNS are stored: nothing goes.
        tx.execute(
            "DELETE FROM reconcile_runs WHERE id <
                 (SELECT id FROM reconcile_runs ORDER BY id DESC LIMIT 1 OFFSET $1)",
            &[&sql_limit(KEPT_RUNS - 1)],
        )
        .await
        .map_err(SpoolError::write)?;
        tx.commit().await.map_err(SpoolError::write)?;
        Ok(id)
    }

    /// Records how run `id` ended; whether it was there to update.
    pub async fn finish_reconcile_run(
        &self,
        id: i64,
        finished_at_ms: i64,
        status: String,
        error: Option<String>,
        report: String,
    ) -> Result<bool, SpoolError> {
        let updated = self
            .client()
            .await?
            .execute(
                "UPDATE reconcile_runs SET finished_at_ms = $2, status = $3, error = $4,
                     report = $5
                 WHERE id = $1",
                &[&id, &finished_at_ms, &status, &error, &report],
            )
            .await
            .map_err(SpoolError::write)?;
        Ok(updated > 0)
    }

    /// Up to `limit` runs, the latest started first.
    pub async fn reconcile_runs(&self, limit: usize) -> Result<Vec<ReconcileRun>, SpoolError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, holder, started_at_ms, finished_at_ms, window_start_ms,
                        window_end_ms, status, error, report
                 FROM reconcile_runs ORDER BY id DESC LIMIT $1",
                &[&sql_limit(limit)],
            )
            .await
            .map_err(SpoolError::read)?;
        Ok(rows.iter().map(run).collect())
    }

    /// Takes or renews the lease `name` for `holder` for `lease_ms`, on the
    /// database's clock; whether `holder` holds it now. One statement: of
    /// two replicas inserting at once, the second waits for the first's
    /// row and then finds it held.
    pub async fn acquire_lease(
        &self,
        name: String,
        holder: String,
        lease_ms: i64,
    ) -> Result<bool, SpoolError> {
        let taken = self
            .client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO leases AS l (name, holder, lease_until_ms)
                     VALUES ($1, $2, {NOW_MS} + $3)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                         lease_until_ms = excluded.lease_until_ms
                     WHERE l.holder = excluded.holder OR l.lease_until_ms < {NOW_MS}"
                ),
                &[&name, &holder, &lease_ms],
            )
            .await
            .map_err(SpoolError::write)?;
        Ok(taken > 0)
    }

    /// Gives up the lease `name` if `holder` holds it.
    pub async fn release_lease(&self, name: String, holder: String) -> Result<(), SpoolError> {
        self.client()
            .await?
            .execute(
                "DELETE FROM leases WHERE name = $1 AND holder = $2",
                &[&name, &holder],
            )
            .await
            .map_err(SpoolError::write)?;
        Ok(())
    }
}
