//! Group commit for the PostgreSQL spool: concurrent callbacks are stored by
//! one statement, which is one transaction and one round trip, however many
//! records it holds. A few committers run at once, each on its own
//! connection, so one batch's commit (the WAL flush) overlaps the next
//! batch's gathering.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc};
use tokio_postgres::error::SqlState;

use super::listener::Announcer;
use crate::spool::queue::Reply;
use crate::spool::{Acceptance, NewRecord, SpoolError, StorageError};

/// Times a batch is tried again after PostgreSQL aborted it to resolve a
/// conflict (a deadlock or serialization failure), before its callbacks get
/// 503: such an abort says nothing about the batch itself.
const RETRIES: usize = 3;

/// Why a batch was not stored.
enum StoreError {
    /// PostgreSQL aborted it to resolve a conflict; trying again may work.
    Transient(tokio_postgres::Error),
    /// Anything else.
    Failed(StorageError),
}

impl From<StoreError> for SpoolError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Transient(err) => SpoolError::write(err),
            StoreError::Failed(err) => SpoolError::Write(err),
        }
    }
}

/// Most records one statement stores.
pub(super) const MAX_BATCH: usize = 512;

/// Stores a batch: remembers each event id in `accepted_ids` (or refreshes an
/// entry older than the dedup window), and for the ids that were new there
/// inserts the record and its deliveries, one per sink that takes its type.
/// `ON CONFLICT` on the primary key makes the dedup atomic: a concurrent
/// insert of the same id by another replica waits for that one to commit,
/// then counts as a duplicate. Ids are inserted in sorted order, so two
/// batches sharing ids wait for each other in one direction only: inserted
/// in arrival order, batches [a, b] and [b, a] deadlocked (found by
/// `the_same_callback_sent_to_two_replicas_at_once_is_stored_once`).
///
/// Each array is read through a sub-select, `(SELECT $1::text[])`, so the
/// planner cannot see its length even when it plans with the values: its
/// plans for a given batch then cost what the generic plan costs, and after
/// its first five executions on a connection PostgreSQL keeps the generic
/// plan instead of planning every batch again. Seen with the arrays, a
/// batch of one looked ten times cheaper than the generic plan, and every
/// execution was planned (a quarter of the statement's time,
/// bench/BENCHMARKS.md, issue 21).
const STORE: &str = "
WITH input AS (
    SELECT * FROM unnest((SELECT $1::text[]), (SELECT $2::bigint[]), (SELECT $3::bigint[]),
                         (SELECT $4::text[]), (SELECT $6::text[]), (SELECT $7::text[]),
                         (SELECT $8::text[]))
        WITH ORDINALITY AS i (event_id, event_type, received_at_ms, body, stream_id, file_id,
                              source, position)
), fresh AS (
    INSERT INTO accepted_ids AS a (event_id, accepted_at_ms)
    SELECT event_id, received_at_ms FROM input ORDER BY event_id
    ON CONFLICT (event_id) DO UPDATE SET accepted_at_ms = excluded.accepted_at_ms
        WHERE a.accepted_at_ms < excluded.accepted_at_ms - $5
    RETURNING a.event_id
), stored AS (
    INSERT INTO records (event_id, event_type, received_at_ms, body, stream_id, file_id, source)
    SELECT i.event_id, i.event_type, i.received_at_ms, i.body, i.stream_id, i.file_id, i.source
    FROM input i JOIN fresh f ON f.event_id = i.event_id
    ORDER BY i.position
    RETURNING seq, event_id, event_type
), fanned_out AS (
    INSERT INTO deliveries (seq, sink)
    SELECT r.seq, s.sink FROM stored r
    JOIN sinks s ON s.event_types IS NULL OR r.event_type = ANY (s.event_types)
)
SELECT seq, event_id FROM stored";

/// One callback waiting to be stored.
pub(super) struct Job {
    /// The record, as the spool stores it.
    pub record: NewRecord,
    /// When it was accepted, database-clock Unix ms.
    pub at_ms: i64,
    /// Where the outcome goes.
    pub reply: Reply<Acceptance>,
}

/// Runs a committer until every sender of `jobs` is gone and the queue is
/// empty: takes what is waiting (up to [`MAX_BATCH`]) and stores it.
/// What was stored is passed to `announcer` ([`Announcer`]).
pub(super) async fn run(
    pool: Pool,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    window_ms: i64,
    announcer: Arc<Announcer>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut queue = jobs.lock().await;
            if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        commit(&pool, batch, window_ms, &announcer).await;
    }
}

/// Stores `batch` and answers every job in it.
async fn commit(pool: &Pool, batch: Vec<Job>, window_ms: i64, announcer: &Announcer) {
    // An id twice in one batch goes to the statement once (ON CONFLICT DO
    // UPDATE may not touch a row twice); the later copies are duplicates.
    let mut seen = HashSet::with_capacity(batch.len());
    let unique: Vec<&Job> = batch
        .iter()
        .filter(|job| seen.insert(job.record.id.as_str()))
        .collect();
    let records = || unique.iter().map(|job| &job.record);
    let ids: Vec<&str> = records().map(|record| record.id.as_str()).collect();
    let types: Vec<i64> = records().map(|record| record.event_type).collect();
    let times: Vec<i64> = unique.iter().map(|job| job.at_ms).collect();
    let bodies: Vec<&str> = records().map(|record| record.json.as_str()).collect();
    let streams: Vec<Option<&str>> = records()
        .map(|record| record.stream_id.as_deref())
        .collect();
    let files: Vec<Option<&str>> = records().map(|record| record.file_id.as_deref()).collect();
    let sources: Vec<&str> = records().map(|record| record.source.as_str()).collect();
    let columns = Columns {
        ids: &ids,
        types: &types,
        times: &times,
        bodies: &bodies,
        streams: &streams,
        files: &files,
        sources: &sources,
    };
    let mut result = store(pool, &columns, window_ms).await;
    for _ in 0..RETRIES {
        match &result {
            Err(StoreError::Transient(_)) => result = store(pool, &columns, window_ms).await,
            _ => break,
        }
    }
    let result = result.map_err(SpoolError::from);
    match result {
        Ok(mut stored) => {
            announcer.stored(
                batch
                    .iter()
                    .filter(|job| stored.contains_key(&job.record.id))
                    .map(|job| job.record.event_type),
            );
            for job in batch {
                // The first copy of an id takes the row's seq; any later
                // copy in the batch is a duplicate of it.
                let outcome = match stored.remove(&job.record.id) {
                    Some(seq) => Acceptance::Stored { seq },
                    None => Acceptance::Duplicate,
                };
                let _ = job.reply.send(Ok(outcome));
            }
        }
        Err(err) => {
            for job in batch {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
    }
}

/// A batch as the arrays [`STORE`] takes, one element per record.
struct Columns<'a> {
    ids: &'a [&'a str],
    types: &'a [i64],
    times: &'a [i64],
    bodies: &'a [&'a str],
    streams: &'a [Option<&'a str>],
    files: &'a [Option<&'a str>],
    sources: &'a [&'a str],
}

/// Runs [`STORE`]; returns the seq of each event id that was stored.
async fn store(
    pool: &Pool,
    columns: &Columns<'_>,
    window_ms: i64,
) -> Result<HashMap<String, i64>, StoreError> {
    let write = |err: tokio_postgres::Error| {
        let transient = err.code().is_some_and(|code| {
            [
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::T_R_SERIALIZATION_FAILURE,
            ]
            .contains(code)
        });
        if transient {
            StoreError::Transient(err)
        } else {
            StoreError::Failed(err.into())
        }
    };
    let client = pool
        .get()
        .await
        .map_err(|err| StoreError::Failed(err.into()))?;
    let statement = client.prepare_cached(STORE).await.map_err(write)?;
    let rows = client
        .query(
            &statement,
            &[
                &columns.ids,
                &columns.types,
                &columns.times,
                &columns.bodies,
                &window_ms,
                &columns.streams,
                &columns.files,
                &columns.sources,
            ],
        )
        .await
        .map_err(write)?;
    Ok(rows
        .into_iter()
        .map(|row| (row.get::<_, String>(1), row.get::<_, i64>(0)))
        .collect())
}
