//! The spool's single writer: a dedicated thread that owns the write
//! connection and commits every write that is waiting in one transaction
//! (group commit). Concurrent callbacks then share one fsync instead of
//! paying one each, and SQLite never sees two writers competing for its lock.
//!
//! The thread also owns the changes to the in-memory indexes: jobs stage
//! them, and they take effect only once the transaction has committed (or
//! are dropped with a rollback), so the indexes never describe rows that are
//! not in the database.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, ErrorCode};
use tokio::sync::mpsc;

use super::indexes::MemoryIndexes;
use crate::spool::queue::Reply;
use crate::spool::{SpoolError, StorageError};

/// Most jobs committed in one transaction; bounds the latency one commit adds.
const MAX_BATCH: usize = 512;

/// A unit of work run inside the writer's transaction.
pub(super) trait WriteJob: Send {
    /// Runs the job's statements, staging any change to the in-memory
    /// indexes in `indexes`; an error rolls back the whole batch.
    fn run(&mut self, conn: &Connection, indexes: &mut MemoryIndexes) -> rusqlite::Result<()>;
    /// Reports the outcome after the commit (or the failure).
    fn finish(self: Box<Self>, result: Result<(), SpoolError>);
}

/// A job built from a closure; its result is sent back once committed.
pub(super) struct ClosureJob<T, F> {
    work: F,
    output: Option<T>,
    reply: Reply<T>,
}

impl<T, F> ClosureJob<T, F> {
    pub(super) fn new(work: F, reply: Reply<T>) -> Self {
        Self {
            work,
            output: None,
            reply,
        }
    }
}

impl<T, F> WriteJob for ClosureJob<T, F>
where
    T: Send,
    F: FnMut(&Connection, &mut MemoryIndexes) -> rusqlite::Result<T> + Send,
{
    fn run(&mut self, conn: &Connection, indexes: &mut MemoryIndexes) -> rusqlite::Result<()> {
        self.output = Some((self.work)(conn, indexes)?);
        Ok(())
    }

    fn finish(self: Box<Self>, result: Result<(), SpoolError>) {
        let Self { output, reply, .. } = *self;
        let outcome = result.and_then(|()| output.ok_or(SpoolError::Write(StorageError::JobLost)));
        // The requester may have gone (client disconnected); nothing to tell then.
        let _ = reply.send(outcome);
    }
}

/// The writer thread's loop; returns when every sender is gone. With
/// `checkpoint_on_close` it then checkpoints the WAL so the database file is
/// complete on its own (the server does; the admin commands must not, as a
/// full checkpoint would hold the lock a running server writes under).
pub(super) fn run(
    conn: Connection,
    indexes: Arc<Mutex<MemoryIndexes>>,
    mut jobs: mpsc::Receiver<Box<dyn WriteJob>>,
    checkpoint_on_close: bool,
) {
    // Reported at shutdown: how well group commit is batching.
    let (mut commits, mut committed_jobs) = (0u64, 0u64);
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commits += 1;
        committed_jobs += batch.len() as u64;
        let mut indexes = indexes.lock().unwrap_or_else(PoisonError::into_inner);
        commit_batch(&conn, &mut indexes, batch);
    }
    tracing::info!(
        commits,
        jobs = committed_jobs,
        jobs_per_commit = committed_jobs as f64 / commits.max(1) as f64,
        "spool writer stopped"
    );
    if checkpoint_on_close && let Err(err) = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")
    {
        tracing::warn!(error = %err, "spool checkpoint at shutdown failed; the WAL will be replayed on next start");
    }
    if let Err((_, err)) = conn.close() {
        tracing::warn!(error = %err, "spool did not close cleanly");
    }
}

/// Commits `batch` in one transaction and tells every job how it went. When
/// the batch fails because of one job (a constraint, a value that does not
/// convert), each job is tried alone so that one job's failure does not fail
/// its neighbours. Errors of the database itself (busy, full disk, I/O) fail
/// the whole batch at once: retrying each job alone would only repeat the
/// failure hundreds of times while callbacks wait.
fn commit_batch(conn: &Connection, indexes: &mut MemoryIndexes, mut batch: Vec<Box<dyn WriteJob>>) {
    match commit(conn, indexes, &mut batch) {
        Ok(()) => finish_all(batch, None),
        Err(err) if batch.len() == 1 || !belongs_to_one_job(&err) => {
            finish_all(batch, Some(err.into()));
        }
        Err(_) => {
            for job in batch {
                let mut single = vec![job];
                let result = commit(conn, indexes, &mut single);
                finish_all(single, result.err().map(StorageError::from));
            }
        }
    }
}

/// Whether `err` is about one job's statements rather than the database as
/// a whole, so that the job's neighbours may succeed without it.
fn belongs_to_one_job(err: &rusqlite::Error) -> bool {
    match err {
        rusqlite::Error::SqliteFailure(failure, _) => matches!(
            failure.code,
            ErrorCode::ConstraintViolation
                | ErrorCode::TooBig
                | ErrorCode::TypeMismatch
                | ErrorCode::ParameterOutOfRange
        ),
        // Conversion and API errors raised on our side, for one statement.
        rusqlite::Error::ToSqlConversionFailure(_)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::InvalidParameterCount(..)
        | rusqlite::Error::QueryReturnedNoRows
        | rusqlite::Error::Utf8Error(..) => true,
        _ => false,
    }
}

/// Tells every job of `batch` that it committed, or that it did not
/// because of `error` (the same error for each).
fn finish_all(batch: Vec<Box<dyn WriteJob>>, error: Option<StorageError>) {
    for job in batch {
        job.finish(match &error {
            None => Ok(()),
            Some(err) => Err(SpoolError::Write(err.clone())),
        });
    }
}

/// Runs `batch` in one transaction, then applies the in-memory index changes
/// the jobs staged if it committed, or drops them if not. BEGIN, COMMIT and
/// ROLLBACK go through the statement cache: rusqlite's `Transaction` parses
/// them anew every time, which at a thousand commits a second was measurable.
fn commit(
    conn: &Connection,
    indexes: &mut MemoryIndexes,
    batch: &mut [Box<dyn WriteJob>],
) -> rusqlite::Result<()> {
    let outcome = conn
        .prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut begin| begin.execute([]))
        .and_then(|_| batch.iter_mut().try_for_each(|job| job.run(conn, indexes)))
        .and_then(|()| conn.prepare_cached("COMMIT")?.execute([]).map(drop));
    if outcome.is_ok() {
        indexes.apply_staged();
    } else {
        indexes.discard_staged();
    }
    if outcome.is_err() && !conn.is_autocommit() {
        // A failed COMMIT can leave the transaction open; end it so the next
        // batch starts clean. Its own failure changes nothing for this batch.
        let _ = conn
            .prepare_cached("ROLLBACK")
            .and_then(|mut s| s.execute([]));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::sync::oneshot;

    /// A migrated spool database in `dir`.
    fn database(dir: &tempfile::TempDir) -> Connection {
        let mut conn = super::super::open_connection(&dir.path().join("spool.db")).unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        conn
    }

    /// A job that writes `value` under `key` in `meta` and counts its runs;
    /// the receiver gets its outcome.
    fn meta_job(
        key: &str,
        value: Option<String>,
        runs: &Arc<AtomicU32>,
    ) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<(), SpoolError>>) {
        let (key, runs) = (key.to_owned(), Arc::clone(runs));
        let (reply, outcome) = oneshot::channel();
        let work = move |conn: &Connection, _: &mut MemoryIndexes| {
            runs.fetch_add(1, Ordering::SeqCst);
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                rusqlite::params![key, value],
            )
            .map(drop)
        };
        (Box::new(ClosureJob::new(work, reply)), outcome)
    }

    #[test]
    fn a_job_that_breaks_a_constraint_fails_alone_and_its_neighbours_commit() {
        let dir = tempfile::tempdir().unwrap();
        let conn = database(&dir);
        let runs = Arc::new(AtomicU32::new(0));
        let (good, good_outcome) = meta_job("a", Some("1".into()), &runs);
        // `value` is NOT NULL.
        let (bad, bad_outcome) = meta_job("b", None, &runs);
        let (also_good, also_good_outcome) = meta_job("c", Some("3".into()), &runs);
        commit_batch(
            &conn,
            &mut MemoryIndexes::empty(),
            vec![good, bad, also_good],
        );
        assert!(good_outcome.blocking_recv().unwrap().is_ok());
        assert!(bad_outcome.blocking_recv().unwrap().is_err());
        assert!(also_good_outcome.blocking_recv().unwrap().is_ok());
        let stored: i64 = conn
            .query_row("SELECT COUNT(*) FROM meta", [], |row| row.get(0))
            .unwrap();
        assert_eq!(stored, 2);
    }

    #[test]
    fn a_full_database_fails_the_batch_once_without_retrying_each_job() {
        let dir = tempfile::tempdir().unwrap();
        let conn = database(&dir);
        // No page beyond those in use: the next write that needs one is "full".
        let pages: i64 = conn
            .pragma_query_value(None, "page_count", |row| row.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages).unwrap();
        let runs = Arc::new(AtomicU32::new(0));
        let big = "x".repeat(64 * 1024);
        let (jobs, outcomes): (Vec<_>, Vec<_>) = (0..5)
            .map(|n| meta_job(&format!("k{n}"), Some(big.clone()), &runs))
            .unzip();
        commit_batch(&conn, &mut MemoryIndexes::empty(), jobs);
        for outcome in outcomes {
            let result = outcome.blocking_recv().unwrap();
            assert!(
                matches!(&result, Err(SpoolError::Write(cause @ StorageError::Sqlite(_)))
                    if cause.to_string().contains("full")),
                "{result:?}"
            );
        }
        // The first job hit the full disk; nobody was tried again one by one.
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn errors_of_the_database_are_not_blamed_on_one_job() {
        let failure = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        for code in [
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_LOCKED,
        ] {
            assert!(!belongs_to_one_job(&failure(code)), "code {code}");
        }
        assert!(belongs_to_one_job(&failure(
            rusqlite::ffi::SQLITE_CONSTRAINT
        )));
    }
}
