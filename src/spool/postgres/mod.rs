//! The PostgreSQL backend of the spool: one database shared by every
//! replica, so what one replica acknowledged survives the loss of that
//! replica, deduplication holds across replicas, and any replica delivers.
//!
//! - Accepting: concurrent callbacks are stored together by one statement
//!   ([`committer`]) with `synchronous_commit = on`; the dedup is the
//!   primary key of `accepted_ids`, so it is atomic across replicas.
//! - Delivering ([`deliveries`]): every (record, sink) has its own row,
//!   claimed with `FOR UPDATE SKIP LOCKED` under a lease and a claim token.
//!   There is no "seq > cursor" scan, so a record that commits late (its seq
//!   was handed out before another's that committed first) is never skipped.
//! - Times that replicas compare (retry due times, leases) are on the
//!   database's clock: each replica measures its offset to it ([`Clock`]).

mod browse;
mod committer;
mod deliveries;
mod listener;
mod reconciliation;
mod schema;
mod tls;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use super::queue::JobQueue;
use super::{Acceptance, NewRecord, SpoolError, StorageError, unix_ms};
use crate::record::Record;
use crate::secret_url::SecretUrl;
use crate::spool::OnStored;
pub use tls::{PostgresTls, SslMode, check_tls};

/// Callbacks that may wait for a committer before callers are slowed down.
const WRITE_QUEUE: usize = 4_096;

/// Committers running at once (each holds one connection while it commits).
const COMMITTERS: usize = 4;

/// How long to wait for a pooled connection, or to open one, before the
/// operation fails (and a callback gets 503).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Key of the transaction advisory lock maintenance takes, so one replica at
/// a time purges ("rhookmnt" in ASCII).
const MAINTENANCE_LOCK: i64 = 0x7268_6f6f_6b6d_6e74;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The database URL (with its password, kept secret).
    pub url: SecretUrl,
    /// Connections this replica may hold.
    pub max_connections: usize,
    /// How long a claim (and a single-writer sink) is held without renewal.
    pub lease: Duration,
    /// TLS, as configured (the URL's query may add to it).
    pub tls: PostgresTls,
}

/// The offset from this host's clock to the database's, so times replicas
/// compare are all on one clock.
#[derive(Debug, Default)]
pub(super) struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    /// `time` (on this host's clock) on the database's clock, in Unix ms.
    pub fn db_ms(&self, time: SystemTime) -> i64 {
        self.to_db(unix_ms(time))
    }

    /// This host's Unix ms on the database's clock.
    pub fn to_db(&self, local_ms: i64) -> i64 {
        local_ms.saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Database-clock Unix ms on this host's clock.
    pub fn local_ms(&self, db_ms: i64) -> i64 {
        db_ms.saturating_sub(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Measures the offset again (half the round trip is the error bound).
    async fn measure(&self, client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
        let before = Instant::now();
        let sent = unix_ms(SystemTime::now());
        let row = client.query_one(&format!("SELECT {NOW_MS}"), &[]).await?;
        let round_trip = i64::try_from(before.elapsed().as_millis()).unwrap_or(0);
        let db: i64 = row.get(0);
        self.offset_ms
            .store(db - (sent + round_trip / 2), Ordering::Relaxed);
        Ok(())
    }
}

/// The database's current time as Unix ms, in SQL.
pub(super) const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The seq of the newest record whose event id is `id`, without an index on
/// `records.event_id` (schema version 7).
///
/// Every stored record's id is in `accepted_ids` with `accepted_at_ms` equal
/// to the record's `received_at_ms` (one statement writes both, from one
/// value), until pruning forgets it; a later copy stored outside the dedup
/// window moves it on to the newer record. So the first statement finds the
/// newest record through two index probes (`accepted_ids`' key, then
/// `records_by_received_seq`). When it finds nothing, the record is gone or
/// its id was pruned, and then the record is older than what `accepted_ids`
/// still holds (pruning forgets the oldest first): the second statement reads
/// only records received up to the id's own time or, for a forgotten id, up
/// to the oldest time still remembered, newest first. With retention shorter
/// than the dedup window (the defaults) those are the few records kept past
/// retention for want of delivery. The bound is a value, not a sub-select,
/// so that the planner sees how far back it reaches (as a sub-select, it
/// planned to read the whole table for every missing id).
pub(super) async fn newest_seq_of(
    client: &tokio_postgres::Client,
    id: &str,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT (SELECT r.seq FROM accepted_ids a JOIN records r
                         ON r.received_at_ms = a.accepted_at_ms AND r.event_id = a.event_id
                     WHERE a.event_id = $1 ORDER BY r.seq DESC LIMIT 1),
                    COALESCE((SELECT accepted_at_ms FROM accepted_ids WHERE event_id = $1),
                             (SELECT min(accepted_at_ms) FROM accepted_ids),
                             9223372036854775807)",
            &[&id],
        )
        .await?;
    if let Some(seq) = row.get::<_, Option<i64>>(0) {
        return Ok(Some(seq));
    }
    let bound: i64 = row.get(1);
    let older = client
        .query_opt(
            "SELECT seq FROM records WHERE event_id = $1 AND received_at_ms <= $2
             ORDER BY received_at_ms DESC, seq DESC LIMIT 1",
            &[&id, &bound],
        )
        .await?;
    Ok(older.map(|row| row.get(0)))
}

/// Handle to the PostgreSQL spool; cheap to clone.
#[derive(Clone)]
pub(super) struct PgSpool {
    inner: Arc<Inner>,
}

struct Inner {
    /// How connections are made (the pool's, and the listening one's).
    config: tokio_postgres::Config,
    /// The TLS of every connection (the pool's, and the listening one's).
    connector: MakeRustlsConnect,
    pool: Pool,
    clock: Clock,
    /// This process, as it appears in leases and `replicas`.
    replica: String,
    lease: Duration,
    /// How long an event id counts as a duplicate, in ms (0 on an admin
    /// handle, which never deduplicates).
    dedup_window_ms: i64,
    /// Sinks that one replica at a time drives (see [`deliveries`]).
    single_writers: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The fence of each single-writer sink's lease as of this process's
    /// last claim on it.
    fences: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// Single-writer sinks another replica held at this process's last
    /// try, and until when not to ask again (see [`deliveries`]).
    held_elsewhere: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    /// Opened by an admin command: it must not accept.
    admin: bool,
    /// Callbacks for the committers (closed on an admin handle).
    jobs: JobQueue<committer::Job>,
    committers: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// The task announcing stored records to other replicas (none on an
    /// admin handle); stopped on close.
    announcing: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Refreshed by maintenance: `accepted_ids`' estimated rows and the
    /// database's size.
    dedup_entries: AtomicU64,
    database_bytes: AtomicU64,
    closed: AtomicBool,
}

/// How every connection is made, and with which TLS.
struct Connecting {
    config: tokio_postgres::Config,
    connector: MakeRustlsConnect,
    mode: SslMode,
}

/// How every connection is made: the URL less its TLS parameters (which
/// are [`tls`]'s), a connect timeout, and the connector of the `sslmode`.
fn connection_config(options: &PostgresOptions) -> Result<Connecting, StorageError> {
    let resolved = tls::resolve(&options.url, &options.tls).map_err(StorageError::Tls)?;
    let mut config: tokio_postgres::Config = resolved
        .url
        .expose()
        .parse()
        .map_err(|err| StorageError::InvalidUrl(Arc::new(err)))?;
    config.ssl_mode(resolved.client_mode());
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECTION_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("recordhook");
    }
    config.keepalives(true);
    Ok(Connecting {
        config,
        connector: resolved.connector().map_err(StorageError::Tls)?,
        mode: resolved.mode,
    })
}

/// `synchronous_commit = on` for every pooled session, whatever the
/// database's default, so a commit is on disk (and on any synchronous
/// standby) before a callback is answered. Set by a statement rather than
/// the startup packet's `options`, which PgBouncer refuses (or, with
/// `ignore_startup_parameters = options`, silently drops); checked with
/// `SHOW` so a setting that did not hold is an error, not a surprise.
async fn on_new_session(client: &tokio_postgres::Client) -> Result<(), HookError> {
    client
        .batch_execute("SET synchronous_commit = on")
        .await
        .map_err(HookError::Backend)?;
    let found = synchronous_commit(client)
        .await
        .map_err(HookError::Backend)?;
    if found != "on" {
        return Err(HookError::message(
            StorageError::SynchronousCommit { found }.to_string(),
        ));
    }
    Ok(())
}

/// The session's `synchronous_commit`.
async fn synchronous_commit(
    client: &tokio_postgres::Client,
) -> Result<String, tokio_postgres::Error> {
    Ok(client
        .query_one("SHOW synchronous_commit", &[])
        .await?
        .get(0))
}

/// Builds the connection pool, each connection made as `connecting` says.
fn pool(connecting: &Connecting, options: &PostgresOptions) -> Result<Pool, StorageError> {
    let manager = Manager::from_config(
        connecting.config.clone(),
        connecting.connector.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(options.max_connections)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECTION_TIMEOUT))
        .create_timeout(Some(CONNECTION_TIMEOUT))
        .recycle_timeout(Some(CONNECTION_TIMEOUT))
        .post_create(Hook::async_fn(|client, _| {
            Box::pin(async move { on_new_session(client).await })
        }))
        .build()
        .map_err(StorageError::Pool)
}

/// A failure to open the database at `options`, named without its password.
fn open_error(options: &PostgresOptions, source: StorageError) -> SpoolError {
    SpoolError::Open {
        location: options.url.redacted().to_owned(),
        source,
    }
}

/// Refuses a pooler in transaction (or statement) mode: there, a client's
/// server session changes between transactions, so LISTEN hears nothing
/// and session settings (`synchronous_commit`) stay behind. Detected by
/// holding a transaction open on a second client: in session mode (or
/// without a pooler) it cannot have the first client's server session,
/// and the first keeps its own; in transaction mode PgBouncer hands the
/// idle server session (the last released, first) to the second client.
async fn refuse_transaction_pooling(
    pool: &Pool,
    first: &tokio_postgres::Client,
) -> Result<(), StorageError> {
    let pid = |row: tokio_postgres::Row| row.get::<_, i32>(0);
    let before = pid(first.query_one("SELECT pg_backend_pid()", &[]).await?);
    let mut second = pool.get().await?;
    let holding = second.transaction().await?;
    let taken = pid(holding.query_one("SELECT pg_backend_pid()", &[]).await?);
    let after = pid(first.query_one("SELECT pg_backend_pid()", &[]).await?);
    holding.rollback().await?;
    if taken == before || after != before {
        return Err(StorageError::TransactionPooling);
    }
    Ok(())
}

/// The pool for `options` and a first connection from it.
async fn connect(
    options: &PostgresOptions,
) -> Result<(Connecting, Pool, deadpool_postgres::Object), SpoolError> {
    let connecting = connection_config(options).map_err(|err| open_error(options, err))?;
    let pool = pool(&connecting, options).map_err(|err| open_error(options, err))?;
    let client = pool.get().await.map_err(|err| {
        open_error(
            options,
            StorageError::Connecting {
                sslmode: connecting.mode.as_str(),
                cause: Arc::new(err),
            },
        )
    })?;
    refuse_transaction_pooling(&pool, &client)
        .await
        .map_err(|err| open_error(options, err))?;
    Ok((connecting, pool, client))
}

/// How a session is encrypted, as the server sees it (`pg_stat_ssl`):
/// "TLS (verify-full, TLSv1.3)" or "not encrypted (sslmode=prefer, …)".
async fn tls_state(client: &tokio_postgres::Client, mode: SslMode) -> Result<String, StorageError> {
    let row = client
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    let (encrypted, version): (bool, Option<String>) = (row.get(0), row.get(1));
    Ok(match (encrypted, mode) {
        (true, mode) => format!(
            "TLS ({}, {})",
            mode.as_str(),
            version.as_deref().unwrap_or("unknown version")
        ),
        (false, SslMode::Disable) => "not encrypted (sslmode=disable)".to_owned(),
        (false, mode) => format!(
            "not encrypted (sslmode={}, server refused TLS)",
            mode.as_str()
        ),
    })
}

/// A name for this process that is unique among replicas.
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "recordhook".to_owned());
    format!("{host}:{}:{:08x}", std::process::id(), fastrand::u32(..))
}

/// For `check-config`: whether the database is reachable and its schema
/// current, in a sentence, then how recordhook's sessions are encrypted and
/// that their commits are synchronous; an error when it cannot be reached.
pub async fn check(options: &PostgresOptions) -> Result<String, SpoolError> {
    let shown = options.url.redacted().to_owned();
    let (connecting, _pool, client) = connect(options).await?;
    let tls = tls_state(&client, connecting.mode)
        .await
        .map_err(SpoolError::Read)?;
    let synchronous = synchronous_commit(&client)
        .await
        .map_err(SpoolError::read)?;
    let session = format!("its sessions: {tls}, synchronous_commit = {synchronous}");
    let found = schema::found(&client).await.map_err(SpoolError::read)?;
    let current = schema::CURRENT_VERSION;
    let schema = match found.version {
        0 => format!(
            "PostgreSQL at {shown} is reachable; its recordhook schema is not created yet \
             (the server creates it, version {current}, when it starts)"
        ),
        version if version == current => {
            format!("PostgreSQL at {shown} is reachable; its schema is current (version {current})")
        }
        version if version < current => format!(
            "PostgreSQL at {shown} is reachable; its schema (version {version}) is older than \
             this recordhook's ({current}) and is migrated when the server starts"
        ),
        version if found.runs_here() => format!(
            "PostgreSQL at {shown} is reachable; its schema (version {version}) is newer than \
             this recordhook's ({current}) and compatible with it"
        ),
        version => {
            return Err(SpoolError::SchemaMismatch {
                location: shown,
                found: i64::from(version),
                expected: i64::from(current),
            });
        }
    };
    Ok(format!("{schema}\n{session}"))
}

impl PgSpool {
    /// Connects, migrates (under the advisory lock) and starts the committers.
    pub async fn open(
        options: &PostgresOptions,
        dedup_window: Duration,
    ) -> Result<Self, SpoolError> {
        let (connecting, pool, mut client) = connect(options).await?;
        schema::migrate(&mut client)
            .await
            .map_err(|err| open_error(options, err))?;
        let window_ms = i64::try_from(dedup_window.as_millis()).unwrap_or(i64::MAX);
        let spool = Self::start(options, connecting, pool, false, window_ms);
        spool
            .inner
            .clock
            .measure(&client)
            .await
            .map_err(|err| open_error(options, err.into()))?;
        drop(client);
        let (sender, receiver) = mpsc::channel(WRITE_QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let announcer = Arc::new(listener::Announcer::default());
        let announcing = {
            let (announcer, pool) = (Arc::clone(&announcer), spool.inner.pool.clone());
            tokio::spawn(async move { announcer.run(pool).await })
        };
        if let Ok(mut slot) = spool.inner.announcing.lock() {
            *slot = Some(announcing);
        }
        let handles = (0..COMMITTERS)
            .map(|_| {
                tokio::spawn(committer::run(
                    spool.inner.pool.clone(),
                    Arc::clone(&receiver),
                    window_ms,
                    Arc::clone(&announcer),
                ))
            })
            .collect();
        spool.inner.jobs.open(sender)?;
        *spool
            .inner
            .committers
            .lock()
            .map_err(|_| SpoolError::Closed)? = handles;
        Ok(spool)
    }

    /// Connects for an admin command: no migration (a schema this build
    /// cannot run on is refused), no committers; it never accepts.
    pub async fn open_for_admin(options: &PostgresOptions) -> Result<Self, SpoolError> {
        let (connecting, pool, client) = connect(options).await?;
        let found = schema::found(&client)
            .await
            .map_err(|err| open_error(options, err.into()))?;
        if found.version == 0 {
            return Err(open_error(options, StorageError::NoSchema));
        }
        if !found.runs_here() {
            return Err(SpoolError::SchemaMismatch {
                location: options.url.redacted().to_owned(),
                found: i64::from(found.version),
                expected: i64::from(schema::CURRENT_VERSION),
            });
        }
        let spool = Self::start(options, connecting, pool, true, 0);
        spool
            .inner
            .clock
            .measure(&client)
            .await
            .map_err(SpoolError::read)?;
        drop(client);
        Ok(spool)
    }

    fn start(
        options: &PostgresOptions,
        connecting: Connecting,
        pool: Pool,
        admin: bool,
        dedup_window_ms: i64,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config: connecting.config,
                connector: connecting.connector,
                pool,
                clock: Clock::default(),
                replica: replica_name(),
                lease: options.lease,
                dedup_window_ms,
                single_writers: std::sync::Mutex::default(),
                fences: std::sync::Mutex::default(),
                held_elsewhere: std::sync::Mutex::default(),
                admin,
                jobs: JobQueue::closed(),
                committers: std::sync::Mutex::default(),
                announcing: std::sync::Mutex::default(),
                dedup_entries: AtomicU64::new(0),
                database_bytes: AtomicU64::new(0),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// A pooled connection; an error when none can be had in time.
    async fn client(&self) -> Result<deadpool_postgres::Object, SpoolError> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(SpoolError::Closed);
        }
        self.inner.pool.get().await.map_err(SpoolError::write)
    }

    /// Stores `record`, unless its event id was accepted within the dedup
    /// window (by any replica). Returns once the commit is durable.
    pub async fn accept(
        &self,
        record: NewRecord,
        now: SystemTime,
    ) -> Result<Acceptance, SpoolError> {
        if self.inner.admin {
            return Err(SpoolError::Write(StorageError::AdminAccept));
        }
        let at_ms = self.inner.clock.db_ms(now);
        self.inner
            .jobs
            .submit(|reply| committer::Job {
                record,
                at_ms,
                reply,
            })
            .await
    }

    /// Which of `ids` were accepted (by any replica) within the dedup window
    /// before `now`: those [`PgSpool::accept`] would call duplicates.
    pub async fn known_event_ids(
        &self,
        ids: Vec<String>,
        now: SystemTime,
    ) -> Result<HashSet<String>, SpoolError> {
        if self.inner.admin {
            return Err(SpoolError::Read(StorageError::AdminDedup));
        }
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let since_ms = self
            .inner
            .clock
            .db_ms(now)
            .saturating_sub(self.inner.dedup_window_ms);
        let rows = self
            .client()
            .await?
            .query(
                "SELECT event_id FROM accepted_ids
                 WHERE event_id = ANY ($1) AND accepted_at_ms >= $2",
                &[&ids, &since_ms],
            )
            .await
            .map_err(SpoolError::read)?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Proves the database takes a write right now (for `/readyz`), and
    /// measures the clock offset again while at it.
    pub async fn check_writable(&self) -> Result<(), SpoolError> {
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "INSERT INTO replicas (replica, seen_ms) VALUES ($1, {NOW_MS})
                     ON CONFLICT (replica) DO UPDATE SET seen_ms = excluded.seen_ms"
                ),
                &[&self.inner.replica],
            )
            .await
            .map_err(SpoolError::write)?;
        self.inner
            .clock
            .measure(&client)
            .await
            .map_err(SpoolError::read)
    }

    /// Every stored record, oldest first.
    pub async fn records(&self) -> Result<Vec<Record>, SpoolError> {
        let rows = self
            .client()
            .await?
            .query("SELECT body FROM records ORDER BY seq", &[])
            .await
            .map_err(SpoolError::read)?;
        rows.iter()
            .map(|row| serde_json::from_str(row.get::<_, &str>(0)).map_err(SpoolError::unreadable))
            .collect()
    }

    /// Runs `delete` (a statement with `$1` = a time bound and `$2` = a row
    /// limit) under the maintenance lock, so one replica at a time does it;
    /// 0 when another replica holds the lock.
    async fn maintain(
        &self,
        delete: &str,
        before_ms: i64,
        limit: usize,
    ) -> Result<usize, SpoolError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(SpoolError::write)?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&MAINTENANCE_LOCK])
            .await
            .map_err(SpoolError::write)?
            .get(0);
        if !locked {
            return Ok(0);
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let count = tx
            .execute(delete, &[&before_ms, &limit])
            .await
            .map_err(SpoolError::write)?;
        tx.commit().await.map_err(SpoolError::write)?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Removes up to `limit` records received before `before_ms` that every
    /// sink has handled (no delivery of them pending or dead). Their
    /// deliveries go with them, by the `records_purge_deliveries` trigger
    /// (schema.rs, version 6).
    pub async fn purge_delivered(&self, before_ms: i64, limit: usize) -> Result<usize, SpoolError> {
        let before_ms = self.inner.clock.to_db(before_ms);
        self.maintain(
            "DELETE FROM records WHERE seq IN (
                 SELECT r.seq FROM records r WHERE r.received_at_ms < $1
                 AND NOT EXISTS (SELECT 1 FROM deliveries d
                                 WHERE d.seq = r.seq AND d.state IN ('pending', 'dead'))
                 ORDER BY r.seq LIMIT $2)",
            before_ms,
            limit,
        )
        .await
    }

    /// Forgets up to `limit` event ids accepted before `before_ms`, and
    /// refreshes the size figures metrics show.
    pub async fn prune_seen(&self, before_ms: i64, limit: usize) -> Result<usize, SpoolError> {
        let before_ms = self.inner.clock.to_db(before_ms);
        let pruned = self
            .maintain(
                "DELETE FROM accepted_ids WHERE event_id IN (
                     SELECT event_id FROM accepted_ids WHERE accepted_at_ms < $1
                     ORDER BY accepted_at_ms LIMIT $2)",
                before_ms,
                limit,
            )
            .await?;
        if let Ok(row) = self
            .client()
            .await?
            .query_one(
                "SELECT GREATEST(reltuples, 0)::bigint, pg_database_size(current_database())
                 FROM pg_class WHERE oid = 'accepted_ids'::regclass",
                &[],
            )
            .await
        {
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            self.inner
                .dedup_entries
                .store(count(row.get(0)), Ordering::Relaxed);
            self.inner
                .database_bytes
                .store(count(row.get(1)), Ordering::Relaxed);
        }
        Ok(pruned)
    }

    /// Event ids remembered for deduplication (PostgreSQL's estimate, as of
    /// the last maintenance round).
    pub fn dedup_entries(&self) -> usize {
        usize::try_from(self.inner.dedup_entries.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// Free space is not known: the database's filesystem is not local (it
    /// is its operator's to watch).
    pub fn free_bytes(&self) -> Option<u64> {
        None
    }

    /// Size of the whole database (as of the last maintenance round).
    pub fn disk_bytes(&self) -> u64 {
        self.inner.database_bytes.load(Ordering::Relaxed)
    }

    /// Calls `on_stored` whenever any replica (this one included) stores
    /// records, until `shutdown`; see [`listener`].
    pub async fn watch_stored(&self, on_stored: OnStored, shutdown: CancellationToken) {
        listener::listen(
            self.inner.config.clone(),
            self.inner.connector.clone(),
            on_stored,
            shutdown,
        )
        .await;
    }

    /// Stops accepting, lets the committers store what is queued, and
    /// closes the pool.
    pub async fn close(&self) {
        self.inner.jobs.close();
        let committers = self
            .inner
            .committers
            .lock()
            .map(|mut handles| std::mem::take(&mut *handles))
            .unwrap_or_default();
        for committer in committers {
            if committer.await.is_err() {
                tracing::error!("spool committer ended abnormally");
            }
        }
        if let Some(announcing) = self
            .inner
            .announcing
            .lock()
            .ok()
            .and_then(|mut slot| slot.take())
        {
            announcing.abort();
        }
        if !self.inner.admin {
            // Hand single-writer sinks over at once rather than when the
            // lease runs out: draining a replica then pauses nothing.
            if let Ok(client) = self.client().await {
                let released = client
                    .execute(
                        "UPDATE sinks SET holder = NULL, lease_until_ms = NULL WHERE holder = $1",
                        &[&self.inner.replica],
                    )
                    .await;
                if let Err(err) = released {
                    tracing::warn!(
                        error = %StorageError::from(err),
                        "could not release sink leases"
                    );
                }
                let _ = client
                    .execute(
                        "DELETE FROM replicas WHERE replica = $1",
                        &[&self.inner.replica],
                    )
                    .await;
            }
        }
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.pool.close();
    }
}
