//! The spool: a SQLite database that holds every accepted callback and its
//! delivery state per sink. A callback is answered 200 only after the
//! transaction that stores it has committed; deliveries run from here, so
//! nothing that was accepted depends on a sink being up.
//!
//! Writes go through one writer thread that commits concurrent writes
//! together (see [`writer`]); reads use their own connection, which WAL mode
//! lets run beside the writer.

mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::record::Record;
use writer::{ClosureJob, WriteJob};

/// Writes that may wait for the writer before callers are slowed down.
const WRITE_QUEUE: usize = 4_096;

/// Why the spool could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    /// The database could not be opened or migrated.
    #[error("spool `{path}` could not be opened: {reason}")]
    Open {
        /// The configured path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A write did not commit (disk full, I/O error, …); nothing of it was stored.
    #[error("spool write failed: {0}")]
    Write(String),
    /// A read failed.
    #[error("spool read failed: {0}")]
    Read(String),
    /// The spool is closing or closed (the service is shutting down).
    #[error("spool is closed")]
    Closed,
}

impl From<rusqlite::Error> for SpoolError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Read(err.to_string())
    }
}

/// What became of a callback offered to the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Newly stored under this sequence number, with a pending delivery per sink.
    Stored {
        /// Position in the spool.
        seq: i64,
    },
    /// The same event id was accepted within the dedup window; nothing was stored.
    Duplicate,
}

/// A record waiting to be delivered to one sink.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    /// Position of the record in the spool.
    pub seq: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the record was accepted, Unix ms.
    pub received_at_ms: i64,
    /// The record.
    pub record: Record,
}

/// How one delivery attempt ended, to be written back.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// The sink has the record.
    Delivered,
    /// Try again at `at` (Unix milliseconds).
    Retry {
        /// When to try again.
        at_ms: i64,
        /// Why this attempt failed.
        error: String,
    },
    /// Give up: a permanent failure or attempts exhausted.
    Dead {
        /// Why.
        error: String,
    },
}

/// A delivery that was given up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Event id of the record.
    pub id: String,
    /// The sink it was not delivered to.
    pub sink: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub last_error: String,
    /// Time of the last attempt, RFC 3339 UTC.
    pub last_attempt_at: String,
}

/// Where one record stands with one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryState {
    /// The sink.
    pub sink: String,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last error, if an attempt failed.
    pub last_error: Option<String>,
}

/// Delivery counts of one sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkCounts {
    /// Waiting for (another) attempt.
    pub pending: u64,
    /// Given up on.
    pub dead: u64,
}

/// Handle to the spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    dedup_window_ms: i64,
    /// `None` once closing has begun.
    jobs: RwLock<Option<mpsc::Sender<Box<dyn WriteJob>>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    reader: Arc<Mutex<Connection>>,
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    schema::configure(&conn)?;
    Ok(conn)
}

impl Spool {
    /// Opens (creating when missing) the spool at `path` and starts its writer.
    pub fn open(path: &Path, dedup_window: Duration) -> Result<Self, SpoolError> {
        let open_error = |reason: String| SpoolError::Open {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| open_error(err.to_string()))?;
        }
        let mut conn = open_connection(path).map_err(|err| open_error(err.to_string()))?;
        schema::migrate(&mut conn).map_err(open_error)?;
        let reader = open_connection(path).map_err(|err| open_error(err.to_string()))?;
        let (sender, receiver) = mpsc::channel(WRITE_QUEUE);
        let writer = std::thread::Builder::new()
            .name("spool-writer".to_owned())
            .spawn(move || writer::run(conn, receiver))
            .map_err(|err| open_error(err.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                dedup_window_ms: i64::try_from(dedup_window.as_millis()).unwrap_or(i64::MAX),
                jobs: RwLock::new(Some(sender)),
                writer: Mutex::new(Some(writer)),
                reader: Arc::new(Mutex::new(reader)),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `work` in the writer's next transaction and returns its result once committed.
    async fn write<T, F>(&self, work: F) -> Result<T, SpoolError>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let sender = self
            .inner
            .jobs
            .read()
            .map_err(|_| SpoolError::Closed)?
            .clone()
            .ok_or(SpoolError::Closed)?;
        let (reply, outcome) = oneshot::channel();
        sender
            .send(Box::new(ClosureJob::new(work, reply)))
            .await
            .map_err(|_| SpoolError::Closed)?;
        outcome.await.map_err(|_| SpoolError::Closed)?
    }

    /// Runs `work` on the read connection off the async runtime.
    async fn read<T, F>(&self, work: F) -> Result<T, SpoolError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, SpoolError> + Send + 'static,
    {
        let reader = Arc::clone(&self.inner.reader);
        tokio::task::spawn_blocking(move || {
            let conn = reader
                .lock()
                .map_err(|_| SpoolError::Read("reader lock poisoned".to_owned()))?;
            work(&conn)
        })
        .await
        .map_err(|err| SpoolError::Read(err.to_string()))?
    }

    /// Stores `record` with a pending delivery for each of `sinks`, unless its
    /// event id was accepted within the dedup window. Returns only after the
    /// commit is durable.
    pub async fn accept(
        &self,
        record: &Record,
        sinks: Vec<String>,
        now: SystemTime,
    ) -> Result<Acceptance, SpoolError> {
        let body =
            serde_json::to_string(record).map_err(|err| SpoolError::Write(err.to_string()))?;
        let event_id = record.id.clone();
        let event_type = record.event_type;
        let now_ms = unix_ms(now);
        let window_start = now_ms.saturating_sub(self.inner.dedup_window_ms);
        self.write(move |conn| {
            let seen_at: Option<i64> = conn
                .prepare_cached("SELECT accepted_at_ms FROM seen WHERE event_id = ?1")?
                .query_row([&event_id], |row| row.get(0))
                .optional()?;
            if seen_at.is_some_and(|at| at >= window_start) {
                return Ok(Acceptance::Duplicate);
            }
            conn.prepare_cached(
                "INSERT INTO seen (event_id, accepted_at_ms) VALUES (?1, ?2)
                 ON CONFLICT (event_id) DO UPDATE SET accepted_at_ms = excluded.accepted_at_ms",
            )?
            .execute(params![event_id, now_ms])?;
            conn.prepare_cached(
                "INSERT INTO records (event_id, event_type, received_at_ms, body) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![event_id, event_type, now_ms, body])?;
            let seq = conn.last_insert_rowid();
            let mut insert = conn.prepare_cached(
                "INSERT INTO deliveries (sink, seq, state, next_attempt_ms) VALUES (?1, ?2, 'pending', ?3)",
            )?;
            for sink in &sinks {
                insert.execute(params![sink, seq, now_ms])?;
            }
            Ok(Acceptance::Stored { seq })
        })
        .await
    }

    /// Proves the spool can commit a write right now (for `/readyz`).
    pub async fn check_writable(&self) -> Result<(), SpoolError> {
        let now = unix_ms(SystemTime::now()).to_string();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('ready_probe', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([&now])?;
            Ok(())
        })
        .await
    }

    /// Every stored record, oldest first.
    pub async fn records(&self) -> Result<Vec<Record>, SpoolError> {
        self.read(|conn| {
            let mut statement = conn.prepare("SELECT body FROM records ORDER BY seq")?;
            let bodies = statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            bodies.iter().map(|body| decode(body)).collect()
        })
        .await
    }

    /// Up to `limit` deliveries to `sink` that are due at `now_ms`, oldest due first.
    pub async fn due(
        &self,
        sink: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>, SpoolError> {
        let sink = sink.to_owned();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT d.seq, d.attempts, r.received_at_ms, r.body FROM deliveries d JOIN records r ON r.seq = d.seq
                 WHERE d.sink = ?1 AND d.state = 'pending' AND d.next_attempt_ms <= ?2
                 ORDER BY d.next_attempt_ms, d.seq LIMIT ?3",
            )?;
            let rows = statement
                .query_map(params![sink, now_ms, limit as i64], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, u32>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(seq, attempts, received_at_ms, body)| {
                    Ok(PendingDelivery {
                        seq,
                        attempts,
                        received_at_ms,
                        record: decode(&body)?,
                    })
                })
                .collect()
        })
        .await
    }

    /// When the next pending delivery to `sink` falls due (Unix ms), if any.
    pub async fn next_due_ms(&self, sink: &str) -> Result<Option<i64>, SpoolError> {
        let sink = sink.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT MIN(next_attempt_ms) FROM deliveries WHERE sink = ?1 AND state = 'pending'",
                )?
                .query_row([sink], |row| row.get(0))?)
        })
        .await
    }

    /// Writes back the outcome of attempts on `sink`, each counting one attempt.
    pub async fn settle(
        &self,
        sink: &str,
        outcomes: Vec<(i64, Settlement)>,
        now: SystemTime,
    ) -> Result<(), SpoolError> {
        let sink = sink.to_owned();
        let now_ms = unix_ms(now);
        self.write(move |conn| {
            let mut update = conn.prepare_cached(
                "UPDATE deliveries SET state = ?3, attempts = attempts + 1, next_attempt_ms = ?4,
                 last_attempt_ms = ?5, last_error = ?6 WHERE sink = ?1 AND seq = ?2",
            )?;
            for (seq, settlement) in &outcomes {
                let (state, next, error) = match settlement {
                    Settlement::Delivered => ("delivered", now_ms, None),
                    Settlement::Retry { at_ms, error } => ("pending", *at_ms, Some(error.as_str())),
                    Settlement::Dead { error } => ("dead", now_ms, Some(error.as_str())),
                };
                update.execute(params![sink, seq, state, next, now_ms, error])?;
            }
            Ok(())
        })
        .await
    }

    /// Dead letters, of one sink or all, oldest first.
    pub async fn dead_letters(&self, sink: Option<String>) -> Result<Vec<DeadLetter>, SpoolError> {
        self.read(move |conn| {
            let mut statement = conn.prepare(
                "SELECT r.event_id, d.sink, d.attempts, COALESCE(d.last_error, ''), COALESCE(d.last_attempt_ms, 0)
                 FROM deliveries d JOIN records r ON r.seq = d.seq
                 WHERE d.state = 'dead' AND (?1 IS NULL OR d.sink = ?1) ORDER BY d.seq, d.sink",
            )?;
            let letters = statement
                .query_map([sink], |row| {
                    let at_ms: i64 = row.get(4)?;
                    Ok(DeadLetter {
                        id: row.get(0)?,
                        sink: row.get(1)?,
                        attempts: row.get(2)?,
                        last_error: row.get(3)?,
                        last_attempt_at: format_ms(at_ms),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(letters)
        })
        .await
    }

    /// Queues dead letters again (attempts reset), of one sink or all, one event
    /// id or all. Returns how many were queued.
    pub async fn requeue_dead(
        &self,
        sink: Option<String>,
        event_id: Option<String>,
        now: SystemTime,
    ) -> Result<usize, SpoolError> {
        let now_ms = unix_ms(now);
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_ms = ?3
                 WHERE state = 'dead' AND (?1 IS NULL OR sink = ?1)
                 AND (?2 IS NULL OR seq IN (SELECT seq FROM records WHERE event_id = ?2))",
            )?
            .execute(params![sink, event_id, now_ms])
        })
        .await
    }

    /// The delivery state of one event, per sink, ordered by sink name.
    pub async fn delivery_states(&self, event_id: &str) -> Result<Vec<DeliveryState>, SpoolError> {
        let event_id = event_id.to_owned();
        self.read(move |conn| {
            let mut statement = conn.prepare(
                "SELECT d.sink, d.state, d.attempts, d.last_error FROM deliveries d
                 JOIN records r ON r.seq = d.seq WHERE r.event_id = ?1 ORDER BY d.sink",
            )?;
            let states = statement
                .query_map([event_id], |row| {
                    Ok(DeliveryState {
                        sink: row.get(0)?,
                        state: row.get(1)?,
                        attempts: row.get(2)?,
                        last_error: row.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(states)
        })
        .await
    }

    /// Removes up to `limit` records received before `before_ms` whose every
    /// delivery is done (none pending, none dead). Returns how many went.
    pub async fn purge_delivered(&self, before_ms: i64, limit: usize) -> Result<usize, SpoolError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM records WHERE seq IN (
                     SELECT r.seq FROM records r WHERE r.received_at_ms < ?1
                     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = r.seq AND d.state != 'delivered')
                     LIMIT ?2)",
            )?
            .execute(params![before_ms, limit as i64])
        })
        .await
    }

    /// Forgets event ids accepted before `before_ms` (outside the dedup window).
    pub async fn prune_seen(&self, before_ms: i64) -> Result<usize, SpoolError> {
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM seen WHERE accepted_at_ms < ?1")?
                .execute([before_ms])
        })
        .await
    }

    /// Deletes dead letters, of one sink or all, one event id or all. The
    /// records themselves go once retention allows. Returns how many were deleted.
    pub async fn purge_dead(
        &self,
        sink: Option<String>,
        event_id: Option<String>,
    ) -> Result<usize, SpoolError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "DELETE FROM deliveries WHERE state = 'dead' AND (?1 IS NULL OR sink = ?1)
                 AND (?2 IS NULL OR seq IN (SELECT seq FROM records WHERE event_id = ?2))",
            )?
            .execute(params![sink, event_id])
        })
        .await
    }

    /// Turns the pending deliveries of sinks that are no longer configured into
    /// dead letters (kept, and retried if the sink comes back). Returns each
    /// such sink with the number of deliveries it had pending.
    pub async fn retire_unknown_sinks(
        &self,
        known: Vec<String>,
        now: SystemTime,
    ) -> Result<Vec<(String, usize)>, SpoolError> {
        let now_ms = unix_ms(now);
        self.write(move |conn| {
            let sinks = conn
                .prepare_cached("SELECT DISTINCT sink FROM deliveries WHERE state = 'pending'")?
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut retired = Vec::new();
            for sink in sinks.into_iter().filter(|sink| !known.contains(sink)) {
                let error = format!("sink `{sink}` is no longer configured");
                let count = conn
                    .prepare_cached(
                        "UPDATE deliveries SET state = 'dead', last_error = ?2, last_attempt_ms = ?3
                         WHERE sink = ?1 AND state = 'pending'",
                    )?
                    .execute(params![sink, error, now_ms])?;
                retired.push((sink, count));
            }
            Ok(retired)
        })
        .await
    }

    /// Size of the spool on disk, database and WAL together, in bytes.
    pub fn disk_bytes(&self) -> u64 {
        let wal = PathBuf::from(format!("{}-wal", self.inner.path.display()));
        [self.inner.path.as_path(), wal.as_path()]
            .iter()
            .filter_map(|path| std::fs::metadata(path).ok())
            .map(|metadata| metadata.len())
            .sum()
    }

    /// Delivery counts per sink.
    pub async fn counts(&self, sink: &str) -> Result<SinkCounts, SpoolError> {
        let sink = sink.to_owned();
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT state, COUNT(*) FROM deliveries WHERE sink = ?1 AND state != 'delivered' GROUP BY state",
            )?;
            let mut counts = SinkCounts::default();
            for row in statement.query_map([sink], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))? {
                let (state, count) = row?;
                let count = u64::try_from(count).unwrap_or(0);
                match state.as_str() {
                    "pending" => counts.pending = count,
                    _ => counts.dead = count,
                }
            }
            Ok(counts)
        })
        .await
    }

    /// Stops accepting writes, lets the writer commit what is queued, and
    /// waits for it to checkpoint and close the database.
    pub async fn close(&self) {
        if let Ok(mut jobs) = self.inner.jobs.write() {
            jobs.take();
        }
        let writer = self.inner.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let joined = tokio::task::spawn_blocking(move || writer.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("spool writer thread ended abnormally");
            }
        }
    }
}

fn decode(body: &str) -> Result<Record, SpoolError> {
    serde_json::from_str(body)
        .map_err(|err| SpoolError::Read(format!("stored record is unreadable: {err}")))
}

/// Formats Unix milliseconds as RFC 3339 UTC.
pub fn format_ms(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Authenticator, TimeWindow, UnverifiedCallback};

    const WINDOW: TimeWindow = TimeWindow {
        clock_skew_secs: 0,
        max_validity_secs: 1,
        expiry_grace_secs: 0,
    };

    fn record(file_id: &str) -> Record {
        let body = format!(r#"{{"event_type":100,"file_id":"{file_id}","stream_id":"s"}}"#);
        let verified = Authenticator::unsigned(WINDOW)
            .verify(UnverifiedCallback::parse(body.as_bytes()).unwrap(), 0)
            .unwrap();
        Record::from_verified(verified, UNIX_EPOCH).unwrap()
    }

    fn open(dir: &tempfile::TempDir) -> Spool {
        Spool::open(&dir.path().join("nested/spool.db"), Duration::from_secs(60)).unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[tokio::test]
    async fn concurrent_accepts_all_commit_and_duplicates_in_one_batch_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(&dir);
        let mut tasks = Vec::new();
        for n in 0..200 {
            let spool = spool.clone();
            // Every file id is sent twice, concurrently, so pairs share a batch.
            let record = record(&format!("f{}", n / 2));
            tasks.push(tokio::spawn(async move {
                spool
                    .accept(&record, vec!["a".into()], at(1_000))
                    .await
                    .unwrap()
            }));
        }
        let mut stored = 0;
        for task in tasks {
            if matches!(task.await.unwrap(), Acceptance::Stored { .. }) {
                stored += 1;
            }
        }
        assert_eq!(stored, 100);
        assert_eq!(spool.records().await.unwrap().len(), 100);
        assert_eq!(spool.counts("a").await.unwrap().pending, 100);
        spool.close().await;
    }

    #[tokio::test]
    async fn a_duplicate_outside_the_window_is_stored_again() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(&dir);
        let r = record("f");
        assert!(matches!(
            spool.accept(&r, vec![], at(1_000)).await.unwrap(),
            Acceptance::Stored { .. }
        ));
        assert_eq!(
            spool.accept(&r, vec![], at(1_060)).await.unwrap(),
            Acceptance::Duplicate
        );
        assert!(matches!(
            spool.accept(&r, vec![], at(1_061)).await.unwrap(),
            Acceptance::Stored { .. }
        ));
        // The window restarts from the latest acceptance.
        assert_eq!(
            spool.accept(&r, vec![], at(1_100)).await.unwrap(),
            Acceptance::Duplicate
        );
    }

    #[tokio::test]
    async fn deliveries_move_from_pending_to_retry_to_dead_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(&dir);
        let r = record("f");
        let Acceptance::Stored { seq } = spool
            .accept(&r, vec!["a".into(), "b".into()], at(1_000))
            .await
            .unwrap()
        else {
            panic!("not stored")
        };
        let due = spool.due("a", unix_ms(at(1_000)), 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].record, r);
        let retry = Settlement::Retry {
            at_ms: unix_ms(at(2_000)),
            error: "503".into(),
        };
        spool
            .settle("a", vec![(seq, retry)], at(1_001))
            .await
            .unwrap();
        assert!(
            spool
                .due("a", unix_ms(at(1_999)), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            spool.next_due_ms("a").await.unwrap(),
            Some(unix_ms(at(2_000)))
        );
        let due = spool.due("a", unix_ms(at(2_000)), 10).await.unwrap();
        assert_eq!(due[0].attempts, 1);
        spool
            .settle(
                "a",
                vec![(
                    seq,
                    Settlement::Dead {
                        error: "400 Bad Request".into(),
                    },
                )],
                at(2_001),
            )
            .await
            .unwrap();
        spool
            .settle("b", vec![(seq, Settlement::Delivered)], at(2_001))
            .await
            .unwrap();
        let dead = spool.dead_letters(None).await.unwrap();
        assert_eq!(
            dead,
            [DeadLetter {
                id: r.id.clone(),
                sink: "a".into(),
                attempts: 2,
                last_error: "400 Bad Request".into(),
                last_attempt_at: "1970-01-01T00:33:21.000Z".into(),
            }]
        );
        assert_eq!(
            spool.counts("a").await.unwrap(),
            SinkCounts {
                pending: 0,
                dead: 1
            }
        );
        assert_eq!(
            spool
                .requeue_dead(Some("b".into()), None, at(3_000))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            spool
                .requeue_dead(None, Some("other".into()), at(3_000))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            spool
                .requeue_dead(Some("a".into()), Some(r.id.clone()), at(3_000))
                .await
                .unwrap(),
            1
        );
        let due = spool.due("a", unix_ms(at(3_000)), 10).await.unwrap();
        assert_eq!((due.len(), due[0].attempts), (1, 0));
    }

    #[tokio::test]
    async fn retention_removes_only_old_records_that_every_sink_has_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(&dir);
        let mut seqs = Vec::new();
        for (n, sinks) in [vec!["a"], vec!["a", "b"], vec![], vec!["a"]]
            .into_iter()
            .enumerate()
        {
            let sinks = sinks.into_iter().map(String::from).collect();
            let Acceptance::Stored { seq } = spool
                .accept(&record(&format!("f{n}")), sinks, at(1_000))
                .await
                .unwrap()
            else {
                panic!("not stored")
            };
            seqs.push(seq);
        }
        spool
            .settle(
                "a",
                vec![
                    (seqs[0], Settlement::Delivered),
                    (seqs[1], Settlement::Delivered),
                ],
                at(1_001),
            )
            .await
            .unwrap();
        spool
            .settle(
                "a",
                vec![(seqs[3], Settlement::Dead { error: "no".into() })],
                at(1_001),
            )
            .await
            .unwrap();
        // Too young: nothing goes.
        assert_eq!(
            spool
                .purge_delivered(unix_ms(at(1_000)), 100)
                .await
                .unwrap(),
            0
        );
        // Old enough: the fully delivered one and the one no sink wanted go;
        // the one still pending for `b` and the dead letter stay.
        assert_eq!(
            spool
                .purge_delivered(unix_ms(at(2_000)), 100)
                .await
                .unwrap(),
            2
        );
        let left: Vec<String> = spool
            .records()
            .await
            .unwrap()
            .iter()
            .map(|r| r.event["file_id"].to_string())
            .collect();
        assert_eq!(left, ["\"f1\"", "\"f3\""]);
        // Purging the dead letter lets its record go too.
        assert_eq!(spool.purge_dead(Some("a".into()), None).await.unwrap(), 1);
        assert_eq!(
            spool
                .purge_delivered(unix_ms(at(2_000)), 100)
                .await
                .unwrap(),
            1
        );
        // Dedup memory is pruned separately.
        assert_eq!(spool.prune_seen(unix_ms(at(2_000))).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn pending_deliveries_of_removed_sinks_become_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(&dir);
        spool
            .accept(&record("f"), vec!["kept".into(), "gone".into()], at(1))
            .await
            .unwrap();
        let retired = spool
            .retire_unknown_sinks(vec!["kept".into()], at(2))
            .await
            .unwrap();
        assert_eq!(retired, [("gone".to_owned(), 1)]);
        let dead = spool.dead_letters(None).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].last_error, "sink `gone` is no longer configured");
        assert_eq!(spool.counts("kept").await.unwrap().pending, 1);
    }

    #[tokio::test]
    async fn a_closed_spool_refuses_writes_and_reopens_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(&dir);
        spool.accept(&record("f"), vec![], at(1)).await.unwrap();
        spool.close().await;
        assert!(matches!(
            spool.accept(&record("g"), vec![], at(1)).await,
            Err(SpoolError::Closed)
        ));
        let reopened = open(&dir);
        assert_eq!(reopened.records().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_spool_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Spool::open(&path, Duration::from_secs(1)).err().unwrap();
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
