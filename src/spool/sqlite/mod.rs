//! The SQLite backend of the spool: one database file that holds every
//! accepted callback and its delivery state per sink, for a single process.
//!
//! Writes go through one writer thread that commits concurrent writes
//! together (see [`writer`]); reads use their own connection, which WAL mode
//! lets run beside the writer. Because that one thread commits records in
//! seq order, a per-sink cursor ("handled up to seq N") never skips a record
//! that commits late (see the contract in [`crate::spool`]).
//!
//! One server process per spool: the dedup index lives in the process, so a
//! second server on the same file would not know the first one's event ids
//! and would store (and deliver) their duplicates. Opening for the server
//! takes an exclusive advisory lock (`flock`) on `{path}.lock`, held until
//! the writer has closed the database. The admin commands do not take it:
//! they never accept, and run beside the server.

mod body;
mod browse;
mod dedup;
mod deliveries;
mod files;
mod fingerprints;
mod indexes;
mod reconciliation;
mod schema;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::mpsc;

use super::queue::JobQueue;
use super::{Acceptance, NewRecord, SpoolError, StorageError, unix_ms};
use crate::record::Record;
use body::StoredBody;
use indexes::MemoryIndexes;
use writer::{ClosureJob, WriteJob};

/// Writes that may wait for the writer before callers are slowed down.
const WRITE_QUEUE: usize = 4_096;

/// Event ids looked up per hold of the dedup index's lock by
/// [`SqliteSpool::known_event_ids`]: the writer waits for that lock before
/// each commit, so a long list is looked up in short turns (about a
/// millisecond each) rather than all at once.
const KNOWN_IDS_PER_LOCK: usize = 512;

/// WAL pages (4 KiB each) after which a commit also checkpoints. Callbacks
/// waiting for that commit wait for the checkpoint too, so small and often
/// is kinder to tail latency: SQLite's default, 1000, made p99 ~9 ms under
/// load in bench/; 256 ~4-5 ms; 64 a further 0.1-0.4 ms lower in four paired
/// runs, at the same throughput (bench/BENCHMARKS.md).
const CHECKPOINT_PAGES: i64 = 64;

/// An error met on the read connection (through `?`) is a failed read; the
/// writer thread reports its own errors as failed writes.
impl From<rusqlite::Error> for SpoolError {
    fn from(err: rusqlite::Error) -> Self {
        Self::read(err)
    }
}

/// Handle to the SQLite spool; cheap to clone.
#[derive(Clone)]
pub(super) struct SqliteSpool {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    dedup_window_ms: i64,
    /// Changed only by jobs on the writer thread; a metrics scrape and the
    /// admin API's lookups read them. So the lock is all but uncontended.
    indexes: Arc<Mutex<MemoryIndexes>>,
    /// Opened by an admin command: no in-memory indexes, so it must not
    /// accept, and it looks records up by scanning.
    admin: bool,
    /// Work for the writer thread.
    jobs: JobQueue<Box<dyn WriteJob>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    reader: Arc<Mutex<Connection>>,
}

/// The file whose lock says which process serves the spool at `path`.
fn lock_path(path: &Path) -> PathBuf {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    PathBuf::from(lock)
}

/// Takes the server's lock on the spool at `path`, without waiting: the
/// spool is this process's while the returned file stays open. The lock
/// file is left in place when the spool closes; deleting it could let two
/// processes lock two different files of one name.
fn lock_for_server(path: &Path) -> Result<std::fs::File, StorageError> {
    let lock = lock_path(path);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(|err| StorageError::io(format!("open {}", lock.display()), err))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StorageError::Locked { lock }),
        Err(std::fs::TryLockError::Error(err)) => {
            Err(StorageError::io(format!("lock {}", lock.display()), err))
        }
    }
}

/// A failure to open the spool at `path`.
fn open_error(path: &Path, source: StorageError) -> SpoolError {
    SpoolError::Open {
        location: path.display().to_string(),
        source,
    }
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    schema::configure(&conn)?;
    Ok(conn)
}

impl SqliteSpool {
    /// Opens (creating when missing) the spool at `path`, with no size limit.
    #[cfg(test)]
    pub fn open(path: &Path, dedup_window: Duration) -> Result<Self, SpoolError> {
        Self::open_limited(path, dedup_window, 0)
    }

    /// Opens the spool for the server, with its database capped at
    /// `max_bytes` (0: no cap). At the cap, writes fail like on a full disk
    /// (SQLite's "database or disk is full"), so callbacks get 503 while
    /// space already used by delivered records is reused once retention
    /// removes them. Refused while another process (or handle) serves the
    /// spool; the lock is released once [`SqliteSpool::close`] returns.
    pub fn open_limited(
        path: &Path,
        dedup_window: Duration,
        max_bytes: u64,
    ) -> Result<Self, SpoolError> {
        let dedup_window_ms = i64::try_from(dedup_window.as_millis()).unwrap_or(i64::MAX);
        Self::open_server(path, dedup_window_ms, max_bytes).map_err(|err| open_error(path, err))
    }

    /// [`SqliteSpool::open_limited`], its errors not yet named by the path.
    fn open_server(
        path: &Path,
        dedup_window_ms: i64,
        max_bytes: u64,
    ) -> Result<Self, StorageError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|err| StorageError::io(format!("create {}", parent.display()), err))?;
        }
        // Before anything else, so two servers never even migrate at once.
        let lock = lock_for_server(path)?;
        let mut conn = open_connection(path)?;
        schema::migrate(&mut conn)?;
        // Whoever held a lease in this file held it in a process that has
        // since ended (the lock above says no other process has the spool):
        // a lease outliving a SIGKILL must not keep this one waiting.
        conn.execute("DELETE FROM leases", [])?;
        // Small, frequent checkpoints: each copies little, so it adds little
        // to the commit that runs it, and the WAL stays a few MiB. (A separate
        // checkpoint thread was measured: under continuous writes it never
        // reaches the WAL's head, so the WAL grew without bound.)
        conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
        if max_bytes > 0 {
            let page_size: i64 = conn.pragma_query_value(None, "page_size", |row| row.get(0))?;
            let pages = i64::try_from(max_bytes).unwrap_or(i64::MAX) / page_size.max(1);
            conn.pragma_update(None, "max_page_count", pages.max(1))?;
        }
        let indexes = MemoryIndexes::load(&conn)?;
        Self::start(path, conn, indexes, dedup_window_ms, Some(lock))
    }

    /// Opens an existing spool for an admin command beside a running
    /// server: no migration (another schema version is refused), no dedup
    /// memory (loading it takes time and memory, and admin commands never
    /// accept), no checkpoint on close (it would hold the lock the server
    /// commits under).
    pub fn open_for_admin(path: &Path) -> Result<Self, SpoolError> {
        if !path.exists() {
            return Err(open_error(path, StorageError::NoFile));
        }
        let conn = open_connection(path).map_err(|err| open_error(path, err.into()))?;
        let found = schema::version(&conn).map_err(|err| open_error(path, err.into()))?;
        let expected = schema::CURRENT_VERSION;
        if found != expected {
            return Err(SpoolError::SchemaMismatch {
                location: path.display().to_string(),
                found,
                expected,
            });
        }
        Self::start(path, conn, MemoryIndexes::empty(), 0, None)
            .map_err(|err| open_error(path, err))
    }

    /// Starts the writer thread on `conn` and opens the read connection.
    /// `lock` is the server's lock (see [`lock_for_server`]); `None` opens
    /// for administration. The writer thread holds the lock and lets go of
    /// it after closing the database, so another server can only open the
    /// spool once nothing more of this one's can be written.
    fn start(
        path: &Path,
        conn: Connection,
        indexes: MemoryIndexes,
        dedup_window_ms: i64,
        lock: Option<std::fs::File>,
    ) -> Result<Self, StorageError> {
        let admin = lock.is_none();
        let reader = open_connection(path)?;
        let indexes = Arc::new(Mutex::new(indexes));
        let (sender, receiver) = mpsc::channel(WRITE_QUEUE);
        let writer_indexes = Arc::clone(&indexes);
        let writer = std::thread::Builder::new()
            .name("spool-writer".to_owned())
            .spawn(move || {
                writer::run(conn, writer_indexes, receiver, !admin);
                // The database is closed: another server may have it now.
                drop(lock);
            })
            .map_err(|err| StorageError::io("start the spool writer thread".to_owned(), err))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                dedup_window_ms,
                indexes,
                admin,
                jobs: JobQueue::new(sender),
                writer: Mutex::new(Some(writer)),
                reader: Arc::new(Mutex::new(reader)),
            }),
        })
    }

    /// Runs `work` in the writer's next transaction and returns its result once committed.
    async fn write<T, F>(&self, mut work: F) -> Result<T, SpoolError>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.write_indexed(move |conn, _| work(conn)).await
    }

    /// Like [`SqliteSpool::write`], for work that also changes the
    /// in-memory indexes: it stages its changes, which take effect once
    /// committed.
    async fn write_indexed<T, F>(&self, work: F) -> Result<T, SpoolError>
    where
        T: Send + 'static,
        F: FnMut(&Connection, &mut MemoryIndexes) -> rusqlite::Result<T> + Send + 'static,
    {
        self.inner
            .jobs
            .submit(|reply| Box::new(ClosureJob::new(work, reply)) as Box<dyn WriteJob>)
            .await
    }

    /// The in-memory indexes when they describe the database (a server's
    /// handle), for lookups that would otherwise scan; `None` for an admin
    /// handle, whose indexes are empty.
    fn lookup_indexes(&self) -> Option<Arc<Mutex<MemoryIndexes>>> {
        (!self.inner.admin).then(|| Arc::clone(&self.inner.indexes))
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
                .map_err(|_| SpoolError::Read(StorageError::ReaderPoisoned))?;
            work(&conn)
        })
        .await
        .map_err(SpoolError::read)?
    }

    /// Stores `record`, unless its event id was accepted within the dedup
    /// window. Returns only after the commit is durable. Sinks pick it up from
    /// their cursors.
    pub async fn accept(
        &self,
        record: NewRecord,
        now: SystemTime,
    ) -> Result<Acceptance, SpoolError> {
        if self.inner.admin {
            return Err(SpoolError::Write(StorageError::AdminAccept));
        }
        let now_ms = unix_ms(now);
        let window_start = now_ms.saturating_sub(self.inner.dedup_window_ms);
        self.write_indexed(move |conn, indexes| {
            if indexes
                .dedup
                .accepted_since(conn, &record.id, window_start)?
            {
                return Ok(Acceptance::Duplicate);
            }
            let body = body::pack(&record.json);
            conn.prepare_cached(
                "INSERT INTO records
                 (event_id, event_type, received_at_ms, body, stream_id, file_id, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                record.id,
                record.event_type,
                now_ms,
                body,
                record.stream_id,
                record.file_id,
                record.source.as_str()
            ])?;
            let seq = conn.last_insert_rowid();
            indexes.dedup.record(conn, &record.id, now_ms, seq)?;
            if let Some(file_id) = &record.file_id {
                indexes.files.stored(file_id, seq);
            }
            Ok(Acceptance::Stored { seq })
        })
        .await
    }

    /// Which of `ids` were accepted within the dedup window before `now`:
    /// those [`SqliteSpool::accept`] would call duplicates. Looked up in the
    /// dedup index from the read connection. The writer holds the index's
    /// lock for a whole transaction and applies its changes before letting
    /// go, so while this holds the lock the index and the committed rows
    /// agree (what an open transaction staged is not visible to either).
    pub async fn known_event_ids(
        &self,
        ids: Vec<String>,
        now: SystemTime,
    ) -> Result<HashSet<String>, SpoolError> {
        if self.inner.admin {
            return Err(SpoolError::Read(StorageError::AdminDedup));
        }
        let since_ms = unix_ms(now).saturating_sub(self.inner.dedup_window_ms);
        let indexes = Arc::clone(&self.inner.indexes);
        self.read(move |conn| {
            let mut known = HashSet::new();
            for turn in ids.chunks(KNOWN_IDS_PER_LOCK) {
                let indexes = indexes.lock().unwrap_or_else(PoisonError::into_inner);
                for id in turn {
                    if indexes.dedup.accepted_since(conn, id, since_ms)? {
                        known.insert(id.clone());
                    }
                }
            }
            Ok(known)
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
                .query_map([], |row| row.get::<_, StoredBody>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            bodies
                .iter()
                .map(|body| serde_json::from_str(&body.0).map_err(SpoolError::unreadable))
                .collect()
        })
        .await
    }

    /// Removes up to `limit` records received before `before_ms` that every
    /// sink has handled (behind every cursor) and that no failed delivery (a
    /// retry or a dead letter) still needs. Returns how many went.
    pub async fn purge_delivered(&self, before_ms: i64, limit: usize) -> Result<usize, SpoolError> {
        self.write_indexed(move |conn, indexes| {
            // Bounds first, each an indexed lookup, then a plain rowid range:
            // as one statement SQLite checked the time bound row by row, which
            // held the writer for ~190 ms on a spool of 380k records even with
            // nothing to purge. Records arrive in seq order, so the purgeable
            // ones lie before the first record that is too young.
            let Some(cursor) = conn
                .prepare_cached("SELECT MIN(seq) FROM cursors")?
                .query_row([], |row| row.get::<_, Option<i64>>(0))?
            else {
                return Ok(0);
            };
            let first_young: Option<i64> = conn
                .prepare_cached(
                    "SELECT seq FROM records WHERE received_at_ms >= ?1 ORDER BY seq LIMIT 1",
                )?
                .query_row([before_ms], |row| row.get(0))
                .optional()?;
            let upper = first_young.map_or(cursor, |young| cursor.min(young - 1));
            let mut purge = conn.prepare_cached(
                "DELETE FROM records WHERE seq IN (
                     SELECT r.seq FROM records r WHERE r.seq <= ?1
                     AND NOT EXISTS (SELECT 1 FROM failures f WHERE f.seq = r.seq)
                     ORDER BY r.seq LIMIT ?2)
                 RETURNING seq, file_id",
            )?;
            let mut deleted = purge.query(params![upper, limit as i64])?;
            let mut purged = 0;
            while let Some(row) = deleted.next()? {
                purged += 1;
                if let Some(file_id) = row.get::<_, Option<String>>(1)? {
                    indexes.files.deleted(&file_id, row.get(0)?);
                }
            }
            Ok(purged)
        })
        .await
    }

    /// Forgets up to `limit` event ids accepted before `before_ms` (outside
    /// the dedup window). Returns how many went.
    pub async fn prune_seen(&self, before_ms: i64, limit: usize) -> Result<usize, SpoolError> {
        self.write_indexed(move |conn, indexes| indexes.dedup.prune(conn, before_ms, limit))
            .await
    }

    /// Event ids the dedup index holds (accepted within the dedup window,
    /// or since not yet pruned).
    pub fn dedup_entries(&self) -> usize {
        self.inner
            .indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dedup
            .len()
    }

    /// Bytes available to recordhook on the spool's filesystem, if known.
    pub fn free_bytes(&self) -> Option<u64> {
        let directory = self
            .inner
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let stats = rustix::fs::statvfs(directory).ok()?;
        Some(stats.f_bavail.saturating_mul(stats.f_frsize))
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

    /// Stops accepting writes, lets the writer commit what is queued, and
    /// waits for it to checkpoint and close the database.
    pub async fn close(&self) {
        self.inner.jobs.close();
        let writer = self.inner.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let joined = tokio::task::spawn_blocking(move || writer.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("spool writer thread ended abnormally");
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::{Authenticator, TimeWindow, UnverifiedCallback};
    use std::time::UNIX_EPOCH;

    const WINDOW: TimeWindow = TimeWindow {
        clock_skew_secs: 0,
        max_validity_secs: 1,
        expiry_grace_secs: 0,
    };

    /// A record of `event_type` with this file id.
    pub(crate) fn record_of(event_type: i64, file_id: &str) -> Record {
        let body =
            format!(r#"{{"event_type":{event_type},"file_id":"{file_id}","stream_id":"s"}}"#);
        let verified = Authenticator::unsigned(WINDOW)
            .verify(UnverifiedCallback::parse(body.as_bytes()).unwrap(), 0)
            .unwrap();
        Record::from_verified(verified, UNIX_EPOCH).unwrap()
    }

    /// A recording (event type 100) with this file id, as the spool takes it.
    pub(crate) fn record(file_id: &str) -> NewRecord {
        NewRecord::try_from(&record_of(100, file_id)).unwrap()
    }

    pub(crate) fn open(dir: &tempfile::TempDir) -> SqliteSpool {
        SqliteSpool::open(&dir.path().join("nested/spool.db"), Duration::from_secs(60)).unwrap()
    }

    pub(crate) fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[tokio::test]
    async fn callbacks_refused_by_a_full_spool_leave_the_dedup_memory_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SqliteSpool::open_limited(
            &dir.path().join("spool.db"),
            Duration::from_secs(60),
            256 * 1024,
        )
        .unwrap();
        let mut n = 0;
        while spool
            .accept(record(&format!("fill{n}")), at(1))
            .await
            .is_ok()
        {
            n += 1;
            assert!(n < 100_000, "the spool never filled");
        }
        let entries = spool.dedup_entries();
        assert_eq!(entries, n);
        for m in 0..200 {
            let refused = spool.accept(record(&format!("late{m}")), at(2)).await;
            assert!(matches!(refused, Err(SpoolError::Write(_))), "{refused:?}");
        }
        assert_eq!(spool.dedup_entries(), entries);
        // And an id refused then is not taken for a duplicate once there is room.
        assert_eq!(
            spool
                .prune_seen(unix_ms(at(100)), usize::MAX)
                .await
                .unwrap(),
            n
        );
        assert_eq!(spool.dedup_entries(), 0);
        spool.close().await;
    }

    #[tokio::test]
    async fn an_admin_handle_refuses_another_schema_version_and_never_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/spool.db");
        let missing = SqliteSpool::open_for_admin(&path).err().unwrap();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        open(&dir).close().await;
        let admin = SqliteSpool::open_for_admin(&path).unwrap();
        assert!(admin.accept(record("f"), at(1)).await.is_err());
        // It has no dedup memory to answer from.
        let known = admin.known_event_ids(vec!["f".to_owned()], at(1)).await;
        assert!(known.is_err(), "{known:?}");
        admin.close().await;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 1)
            .unwrap();
        let err = SqliteSpool::open_for_admin(&path).err().unwrap();
        assert!(
            matches!(err, SpoolError::SchemaMismatch { found: 1, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn records_stored_as_text_by_earlier_versions_read_back_beside_compressed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/spool.db");
        let spool = open(&dir);
        let sink = crate::spool::SinkRegistration {
            name: "s".to_owned(),
            event_types: crate::protocol::EventTypes::All,
            single_writer: false,
        };
        spool.register_sinks(vec![sink], at(1)).await.unwrap();
        spool.accept(record("new"), at(1)).await.unwrap();
        spool.close().await;
        // A row as versions before compressed bodies wrote it.
        let old = record("old");
        Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO records (event_id, event_type, received_at_ms, body)
                 VALUES (?1, 100, 1000, ?2)",
                params![old.id, old.json],
            )
            .unwrap();
        let compressed: String = Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT typeof(body) FROM records ORDER BY seq LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(compressed, "blob");

        let reopened = open(&dir);
        let claimed = reopened
            .claim("s", &crate::protocol::EventTypes::All, at(2), 10)
            .await
            .unwrap();
        let bodies: Vec<&str> = claimed
            .deliveries
            .iter()
            .map(|d| d.record.json.as_str())
            .collect();
        assert_eq!(bodies, [record("new").json.as_str(), old.json.as_str()]);
        assert_eq!(reopened.records().await.unwrap().len(), 2);
        let detail = reopened.event(&old.id).await.unwrap().unwrap();
        assert_eq!(detail.body, old.json);
    }

    #[tokio::test]
    async fn a_closed_spool_refuses_writes_and_reopens_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(&dir);
        spool.accept(record("f"), at(1)).await.unwrap();
        spool.close().await;
        assert!(matches!(
            spool.accept(record("g"), at(1)).await,
            Err(SpoolError::Closed)
        ));
        let reopened = open(&dir);
        assert_eq!(reopened.records().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_second_server_open_is_refused_until_the_first_closes_and_admin_runs_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/spool.db");
        let server = open(&dir);
        server.accept(record("f"), at(1)).await.unwrap();
        let refused = SqliteSpool::open(&path, Duration::from_secs(60))
            .err()
            .unwrap();
        let SpoolError::Open {
            source: reason @ StorageError::Locked { lock },
            ..
        } = &refused
        else {
            panic!("{refused:?}");
        };
        assert!(lock.ends_with("nested/spool.db.lock"), "{refused}");
        let reason = reason.to_string();
        assert!(
            reason.starts_with("another recordhook process has this spool open")
                && reason.contains("nested/spool.db.lock")
                && reason.contains("admin commands"),
            "{refused}"
        );
        // The admin commands take no lock: they run beside the server.
        let admin = SqliteSpool::open_for_admin(&path).unwrap();
        assert!(admin.dead_letters(None).await.unwrap().is_empty());
        admin.close().await;
        server.close().await;
        let reopened = open(&dir);
        assert_eq!(reopened.records().await.unwrap().len(), 1);
        reopened.close().await;
    }

    #[tokio::test]
    async fn a_spool_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteSpool::open(&path, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
