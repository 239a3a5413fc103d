//! The spool's single writer: a dedicated thread that owns the write
//! connection and commits every write that is waiting in one transaction
//! (group commit). Concurrent callbacks then share one fsync instead of
//! paying one each, and SQLite never sees two writers competing for its lock.

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::SpoolError;

/// Most jobs committed in one transaction; bounds the latency one commit adds.
const MAX_BATCH: usize = 512;

/// A unit of work run inside the writer's transaction.
pub(super) trait WriteJob: Send {
    /// Runs the job's statements; an error rolls back the whole batch.
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<()>;
    /// Reports the outcome after the commit (or the failure).
    fn finish(self: Box<Self>, result: Result<(), SpoolError>);
}

/// A job built from a closure; its result is sent back once committed.
pub(super) struct ClosureJob<T, F> {
    work: F,
    output: Option<T>,
    reply: oneshot::Sender<Result<T, SpoolError>>,
}

impl<T, F> ClosureJob<T, F> {
    pub(super) fn new(work: F, reply: oneshot::Sender<Result<T, SpoolError>>) -> Self {
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
    F: FnMut(&Connection) -> rusqlite::Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.output = Some((self.work)(conn)?);
        Ok(())
    }

    fn finish(self: Box<Self>, result: Result<(), SpoolError>) {
        let Self { output, reply, .. } = *self;
        let outcome = result.and_then(|()| {
            output.ok_or_else(|| SpoolError::Write("job finished without output".to_owned()))
        });
        // The requester may have gone (client disconnected); nothing to tell then.
        let _ = reply.send(outcome);
    }
}

/// The writer thread's loop; returns when every sender is gone, after
/// checkpointing the WAL so the database file is complete on its own.
pub(super) fn run(conn: Connection, mut jobs: mpsc::Receiver<Box<dyn WriteJob>>) {
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
        match commit(&conn, &mut batch) {
            Ok(()) => finish_all(batch, None),
            Err(err) if batch.len() == 1 => finish_all(batch, Some(&err)),
            Err(_) => {
                // One job's failure must not fail its neighbours: retry each alone.
                for job in batch {
                    let mut single = vec![job];
                    let result = commit(&conn, &mut single);
                    finish_all(single, result.err().as_ref());
                }
            }
        }
    }
    tracing::info!(
        commits,
        jobs = committed_jobs,
        jobs_per_commit = committed_jobs as f64 / commits.max(1) as f64,
        "spool writer stopped"
    );
    if let Err(err) = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
        tracing::warn!(error = %err, "spool checkpoint at shutdown failed; the WAL will be replayed on next start");
    }
    if let Err((_, err)) = conn.close() {
        tracing::warn!(error = %err, "spool did not close cleanly");
    }
}

fn finish_all(batch: Vec<Box<dyn WriteJob>>, error: Option<&rusqlite::Error>) {
    for job in batch {
        job.finish(match error {
            None => Ok(()),
            Some(err) => Err(SpoolError::Write(err.to_string())),
        });
    }
}

/// Runs `batch` in one transaction. BEGIN, COMMIT and ROLLBACK go through the
/// statement cache: rusqlite's `Transaction` parses them anew every time,
/// which at a thousand commits a second was measurable.
fn commit(conn: &Connection, batch: &mut [Box<dyn WriteJob>]) -> rusqlite::Result<()> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let outcome = batch
        .iter_mut()
        .try_for_each(|job| job.run(conn))
        .and_then(|()| conn.prepare_cached("COMMIT")?.execute([]).map(drop));
    if outcome.is_err() && !conn.is_autocommit() {
        // A failed COMMIT can leave the transaction open; end it so the next
        // batch starts clean. Its own failure changes nothing for this batch.
        let _ = conn
            .prepare_cached("ROLLBACK")
            .and_then(|mut s| s.execute([]));
    }
    outcome
}
