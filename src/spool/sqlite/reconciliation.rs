//! Reconciliation's bookkeeping in the SQLite spool (see
//! [`crate::spool::reconciliation`]): writes go through the writer thread
//! like every other, reads through the read connection. Lists of streams
//! and event types travel as one JSON array parameter (`json_each`), so a
//! call is one statement however long its list.

use std::collections::HashMap;
use std::time::SystemTime;

use rusqlite::{Row, params};

use super::SqliteSpool;
use crate::spool::reconciliation::{Gap, KEPT_RUNS, ReconcileRun};
use crate::spool::{SpoolError, StorageError, unix_ms};

/// `list` as a JSON array, the one parameter `json_each` reads it from.
fn json_list<T: serde::Serialize>(list: &[T]) -> Result<String, SpoolError> {
    serde_json::to_string(list).map_err(|err| SpoolError::Write(StorageError::encode(err)))
}

fn run(row: &Row<'_>) -> rusqlite::Result<ReconcileRun> {
    Ok(ReconcileRun {
        id: row.get(0)?,
        holder: row.get(1)?,
        started_at_ms: row.get(2)?,
        finished_at_ms: row.get(3)?,
        window_start_ms: row.get(4)?,
        window_end_ms: row.get(5)?,
        status: row.get(6)?,
        error: row.get(7)?,
        report: row.get(8)?,
    })
}

impl SqliteSpool {
    /// Each checkpoint of `streams`, by (stream, event type).
    pub async fn reconcile_checkpoints(
        &self,
        streams: Vec<String>,
    ) -> Result<HashMap<(String, i64), i64>, SpoolError> {
        let streams = json_list(&streams)?;
        self.read(move |conn| {
            let checkpoints = conn
                .prepare_cached(
                    "SELECT stream, event_type, checked_until_ms FROM reconcile_checkpoints
                     WHERE stream IN (SELECT value FROM json_each(?1))",
                )?
                .query_map([streams], |row| {
                    Ok(((row.get(0)?, row.get(1)?), row.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(checkpoints)
        })
        .await
    }

    /// Moves `stream`'s checkpoints of `event_types` (distinct) forward to
    /// `checked_until_ms`, never back.
    pub async fn save_reconcile_checkpoint(
        &self,
        stream: String,
        event_types: Vec<i64>,
        checked_until_ms: i64,
    ) -> Result<(), SpoolError> {
        let event_types = json_list(&event_types)?;
        self.write(move |conn| {
            // `WHERE true`: without it SQLite would read ON CONFLICT as part
            // of the SELECT's join.
            conn.prepare_cached(
                "INSERT INTO reconcile_checkpoints (stream, event_type, checked_until_ms)
                 SELECT ?1, value, ?2 FROM json_each(?3) WHERE true
                 ON CONFLICT (stream, event_type) DO UPDATE
                 SET checked_until_ms = MAX(checked_until_ms, excluded.checked_until_ms)",
            )?
            .execute(params![stream, checked_until_ms, event_types])?;
            Ok(())
        })
        .await
    }

    /// Stores the gaps not stored yet; how many were new.
    pub async fn record_gaps(&self, gaps: Vec<Gap>) -> Result<usize, SpoolError> {
        let digests: Vec<String> = gaps.iter().map(Gap::excerpt_digest).collect();
        self.write(move |conn| {
            let mut insert = conn.prepare_cached(
                "INSERT INTO reconcile_gaps (stream, event_type, event_time_ms, excerpt_digest,
                     result_code, request_id, reason, request_excerpt, found_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (stream, event_type, event_time_ms, excerpt_digest) DO NOTHING",
            )?;
            let mut new = 0;
            for (gap, digest) in gaps.iter().zip(&digests) {
                new += insert.execute(params![
                    gap.stream,
                    gap.event_type,
                    gap.event_time_ms,
                    digest,
                    gap.result_code,
                    gap.request_id,
                    gap.reason,
                    gap.request_excerpt,
                    gap.found_at_ms
                ])?;
            }
            Ok(new)
        })
        .await
    }

    /// Up to `limit` gaps, the most recently found first.
    pub async fn gaps(&self, limit: usize) -> Result<Vec<Gap>, SpoolError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let gaps = conn
                .prepare_cached(
                    "SELECT stream, event_type, event_time_ms, result_code, request_id, reason,
                            request_excerpt, found_at_ms
                     FROM reconcile_gaps ORDER BY found_at_ms DESC, id DESC LIMIT ?1",
                )?
                .query_map([limit], |row| {
                    Ok(Gap {
                        stream: row.get(0)?,
                        event_type: row.get(1)?,
                        event_time_ms: row.get(2)?,
                        result_code: row.get(3)?,
                        request_id: row.get(4)?,
                        reason: row.get(5)?,
                        request_excerpt: row.get(6)?,
                        found_at_ms: row.get(7)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(gaps)
        })
        .await
    }

    /// How many gaps are stored.
    pub async fn gap_count(&self) -> Result<u64, SpoolError> {
        self.read(|conn| {
            let count: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM reconcile_gaps")?
                .query_row([], |row| row.get(0))?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    /// Stores `run` (its id is ignored) and deletes all but the newest
    /// [`KEPT_RUNS`] runs; returns its id.
    pub async fn start_reconcile_run(&self, run: ReconcileRun) -> Result<i64, SpoolError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO reconcile_runs (holder, started_at_ms, finished_at_ms,
                     window_start_ms, window_end_ms, status, error, report)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                run.holder,
                run.started_at_ms,
                run.finished_at_ms,
                run.window_start_ms,
                run.window_end_ms,
                run.status,
                run.error,
                run.report
            ])?;
            let id = conn.last_insert_rowid();
            // NULL while fewer than KEPT_RUNS are stored: nothing goes.
            conn.prepare_cached(
                "DELETE FROM reconcile_runs WHERE id <
                     (SELECT id FROM reconcile_runs ORDER BY id DESC LIMIT 1 OFFSET ?1)",
            )?
            .execute([KEPT_RUNS as i64 - 1])?;
            Ok(id)
        })
        .await
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
        self.write(move |conn| {
            let updated = conn
                .prepare_cached(
                    "UPDATE reconcile_runs SET finished_at_ms = ?2, status = ?3, error = ?4,
                         report = ?5
                     WHERE id = ?1",
                )?
                .execute(params![id, finished_at_ms, status, error, report])?;
            Ok(updated > 0)
        })
        .await
    }

    /// Up to `limit` runs, the latest started first.
    pub async fn reconcile_runs(&self, limit: usize) -> Result<Vec<ReconcileRun>, SpoolError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let runs = conn
                .prepare_cached(
                    "SELECT id, holder, started_at_ms, finished_at_ms, window_start_ms,
                            window_end_ms, status, error, report
                     FROM reconcile_runs ORDER BY id DESC LIMIT ?1",
                )?
                .query_map([limit], run)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(runs)
        })
        .await
    }

    /// Takes or renews the lease `name` for `holder` for `lease_ms`; whether
    /// `holder` holds it now. "Now" is read on the writer thread, when the
    /// statement runs: this host's clock is the database's.
    pub async fn acquire_lease(
        &self,
        name: String,
        holder: String,
        lease_ms: i64,
    ) -> Result<bool, SpoolError> {
        self.write(move |conn| {
            let now_ms = unix_ms(SystemTime::now());
            // Counts 0 when the row exists and its WHERE is false: another
            // holder's lease is running.
            let taken = conn
                .prepare_cached(
                    "INSERT INTO leases (name, holder, lease_until_ms) VALUES (?1, ?2, ?4)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                         lease_until_ms = excluded.lease_until_ms
                     WHERE leases.holder = excluded.holder OR leases.lease_until_ms < ?3",
                )?
                .execute(params![
                    name,
                    holder,
                    now_ms,
                    now_ms.saturating_add(lease_ms)
                ])?;
            Ok(taken > 0)
        })
        .await
    }

    /// Gives up the lease `name` if `holder` holds it.
    pub async fn release_lease(&self, name: String, holder: String) -> Result<(), SpoolError> {
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")?
                .execute(params![name, holder])?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::SqliteSpool;
    use super::super::tests::open;

    async fn take(spool: &SqliteSpool, holder: &str) -> bool {
        spool
            .acquire_lease("reconcile".into(), holder.into(), 60_000)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_lease_is_exclusive_while_open_and_gone_when_the_spool_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(&dir);
        assert!(take(&spool, "server").await);
        assert!(!take(&spool, "cli").await, "held by another holder");
        assert!(take(&spool, "server").await, "renewed by its holder");
        spool.close().await;
        // Only one process has a SQLite spool open (its lock file), so a
        // lease found on opening belonged to a process that is gone, e.g.
        // SIGKILLed mid-run: it must not make the next one wait.
        let reopened = open(&dir);
        assert!(take(&reopened, "cli").await);
        reopened.close().await;
    }
}
