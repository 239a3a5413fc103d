//! The spool: the durable store of accepted callbacks and of their delivery
//! state per sink. Everything the HTTP layer, the delivery workers,
//! maintenance and the CLI need from storage goes through [`Spool`]; which
//! backend runs behind it (the embedded SQLite one, [`sqlite`], or the
//! PostgreSQL one shared by replicas, [`postgres`]) is known only here.
//!
//! # The contract every backend keeps
//!
//! **Accepted.** [`Spool::accept`] returns [`Acceptance::Stored`] only after
//! the transaction holding the record has committed durably (it survives a
//! crash and a power cut of the host), and [`Acceptance::Duplicate`] only
//! when a record with the same event id committed within the dedup window.
//! Any error means nothing of the record is stored (the caller answers 503 and
//! CSS retries). The dedup memory changes only with commits: a rolled-back
//! acceptance leaves no trace that could turn a later retry into a
//! "duplicate". What is stored is the [`NewRecord`] given: the record is
//! serialised once, above the backends, so whichever runs stores (and every
//! sink later receives) the same JSON.
//!
//! **Claimed and settled.** A delivery worker asks [`Spool::claim`] for a
//! batch of one sink's deliveries: records the sink has not been offered
//! yet, and failed deliveries whose retry is due (including dead letters
//! queued again). Retries get up to half of every batch, so they are not
//! starved by a steady stream of fresh records. The worker attempts them and
//! hands every outcome back with [`Spool::settle`], together with the
//! [`Claim`]'s receipt, in one transaction. Until a claim is settled its
//! deliveries stay pending: a crash between the attempt and the settlement
//! makes the attempt again (at-least-once, never lost). Only one worker per
//! sink claims at a time.
//!
//! **Ordering.** Fresh records are offered to a sink in acceptance order.
//! Retries are offered in the order they fall due. The SQLite backend
//! remembers a sink's progress as a cursor, "every record up to seq N is
//! handled"; that is gap-free only because its single writer thread commits
//! records in sequence order, so no record with a lower seq can commit after
//! one with a higher seq has become visible. A backend with concurrent
//! writers (PostgreSQL) must not rely on that (a sequence is handed out at
//! insert, not at commit) and claims per delivery instead.
//!
//! **Several replicas** (PostgreSQL). Each delivery is claimed by one
//! replica at a time under a lease, which [`Spool::hold_while`] renews while
//! the sink works; a claim whose lease ran out may be taken by another
//! replica, and then the first one's [`Spool::settle`] is refused for it (and
//! counted). A single-writer sink ([`SinkRegistration::single_writer`]) is
//! driven by one replica at a time.
//!
//! **Retention.** A record leaves the spool only once every sink has handled
//! it (delivered, or dead-lettered and that dead letter purged) and it is
//! older than the retention period. Dead letters stay until purged.
//!
//! **Reconciliation** ([`reconciliation`]). Records recovered from Tencent's
//! API are accepted like any other, with [`crate::record::Source::Reconciled`];
//! [`Spool::known_event_ids`] tells which callbacks need no recovery (it
//! answers exactly as [`Spool::accept`]'s dedup would). Its bookkeeping
//! (checkpoints, gaps, runs) and the lease that lets one replica at a time
//! reconcile are kept beside the records; each write of it commits durably
//! before the call returns.
//!
//! **One process per SQLite spool.** Its dedup memory is in the process, so
//! a second server on the same file would miss the first one's event ids:
//! [`Spool::open`] takes an exclusive lock on `{path}.lock`, held until
//! [`Spool::close`] has returned (or, without it, until the last handle is
//! dropped and the writer has finished). [`Spool::open_for_admin`] does not
//! take it, so the admin commands run beside a server.

pub mod browse;
mod error;
mod postgres;
mod queue;
pub mod reconciliation;
mod sqlite;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::protocol::EventTypes;
use crate::record::{Record, Source, StoredRecord};
use reconciliation::{Gap, ReconcileRun};

pub use error::{PostgresTlsError, SpoolError, StorageError};
pub use postgres::{
    PostgresOptions, PostgresTls, SslMode, check as check_postgres, check_tls as check_postgres_tls,
};

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

/// A record ready to be stored: serialised once, here above the backends,
/// with the columns the spool indexes read from it. Both backends store
/// exactly this, so the JSON a sink later receives is the one built here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// The event id: what deduplication compares.
    pub id: String,
    /// The callback's event type: which sinks take the record.
    pub event_type: i64,
    /// How it reached recordhook (an admin API filter).
    pub source: Source,
    /// Its stream, when known (an admin API filter).
    pub stream_id: Option<String>,
    /// Its VOD file id, when known (an admin API filter).
    pub file_id: Option<String>,
    /// The record as one line of JSON, as sinks receive it.
    pub json: String,
}

impl TryFrom<&Record> for NewRecord {
    type Error = SpoolError;

    /// Serialises `record` into the form sinks receive ([`StoredRecord`]'s)
    /// and reads its indexed columns. Fails only if serialising fails, which
    /// then counts as a write that did not happen (the callback gets 503).
    fn try_from(record: &Record) -> Result<Self, SpoolError> {
        let StoredRecord {
            id,
            event_type,
            json,
        } = StoredRecord::try_from(record)
            .map_err(|err| SpoolError::Write(StorageError::encode(err)))?;
        Ok(Self {
            id,
            event_type,
            source: record.source,
            stream_id: record.stream_id().map(str::to_owned),
            file_id: record.file_id().map(str::to_owned),
            json,
        })
    }
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

/// A record waiting to be delivered to one sink.
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    /// Position of the record in the spool.
    pub seq: i64,
    /// Attempts made so far (0 for a record the sink has not tried yet).
    pub attempts: u32,
    /// When the record was accepted, Unix ms.
    pub received_at_ms: i64,
    /// The record, as stored.
    pub record: StoredRecord,
}

/// How one delivery attempt ended, to be written back.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// The sink has the record.
    Delivered,
    /// Try again at `at_ms` (Unix milliseconds).
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

/// The outcome of one attempt on one record.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The record's position.
    pub seq: i64,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// What became of it.
    pub settlement: Settlement,
}

/// A batch of one sink's deliveries, handed out by [`Spool::claim`].
#[derive(Debug, Clone, Default)]
pub struct Claim {
    /// Retries that are due first (at most half the batch), then records the
    /// sink has not been offered yet, in acceptance order.
    pub deliveries: Vec<PendingDelivery>,
    /// What settling needs to know about the claim besides its outcomes.
    pub receipt: ClaimReceipt,
}

/// The backend's bookkeeping for one claim; opaque outside the spool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimReceipt(Receipt);

/// What the backend that made a claim needs to hold and settle it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Receipt {
    /// Nothing was claimed or looked at: settling has nothing to write.
    #[default]
    Empty,
    /// A SQLite claim.
    Sqlite {
        /// The last seq looked at (of any event type), where the sink's
        /// cursor moves once the claim is settled.
        scanned_to: i64,
    },
    /// A PostgreSQL claim.
    Postgres {
        /// The token the claimed rows carry while leased to it.
        token: i64,
        /// Single-writer sinks: the sink lease's fence number.
        fence: Option<i64>,
        /// The claimed records' seqs, to renew their lease by key.
        claimed: Vec<i64>,
        /// Single-writer sinks: this process has (re)gained the sink's lease
        /// since its last claim, so another replica may have written
        /// meanwhile.
        took_over: bool,
    },
}

/// A sink as the spool knows it.
#[derive(Debug, Clone)]
pub struct SinkRegistration {
    /// Its configured name.
    pub name: String,
    /// The event types it takes.
    pub event_types: EventTypes,
    /// Whether only one process at a time may drive it (the file sink: its
    /// file is local to one host). With several replicas, one holds it.
    pub single_writer: bool,
}

impl Claim {
    /// Whether settling this claim changes anything even without outcomes
    /// (it moved past records of other event types).
    pub fn makes_progress(&self) -> bool {
        !self.deliveries.is_empty() || matches!(self.receipt.0, Receipt::Sqlite { .. })
    }

    /// Whether this process has just (re)gained a single-writer sink's
    /// lease: what it knew of the sink's output (an open file and its size)
    /// may be stale, so the sink should reopen before writing.
    pub fn sink_taken_over(&self) -> bool {
        matches!(
            self.receipt.0,
            Receipt::Postgres {
                took_over: true,
                ..
            }
        )
    }
}

/// Where one record stands with one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryState {
    /// `pending` (not tried yet, or waiting for a retry), `dead`, or
    /// `delivered` (handled: delivered, or its dead letter was purged).
    pub state: String,
    /// Failed attempts so far (0 once delivered: only failures are kept).
    pub attempts: u32,
    /// The last error, if an attempt failed.
    pub last_error: Option<String>,
}

/// Delivery counts of one sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkCounts {
    /// Waiting for a first attempt or a retry.
    pub pending: u64,
    /// Given up on.
    pub dead: u64,
    /// When the record of the oldest pending delivery was received (Unix
    /// ms), if any is pending: how far behind the sink is, which a count
    /// alone does not say (ten records an hour old are worse than a
    /// thousand a second old).
    pub oldest_pending_received_ms: Option<i64>,
}

/// How to open the spool for the server.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// The embedded database file; its directory is created when missing.
    /// Unused when `postgres` is set.
    pub path: PathBuf,
    /// The shared PostgreSQL database to use instead of the file.
    pub postgres: Option<PostgresOptions>,
    /// How long an event id is remembered for deduplication.
    pub dedup_window: Duration,
    /// Largest size of the store in bytes; 0: no limit.
    pub max_bytes: u64,
}

/// Handle to the spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::SqliteSpool),
    Postgres(postgres::PgSpool),
}

/// Runs `$body` with `$spool` bound to the backend in use. Every backend
/// has each operation with the same signature (taking what either needs,
/// ignoring what it does not), so this one match is the whole dispatch.
macro_rules! with_backend {
    ($self:ident, $spool:ident => $body:expr) => {
        match &$self.backend {
            Backend::Sqlite($spool) => $body,
            Backend::Postgres($spool) => $body,
        }
    };
}

impl Spool {
    /// Opens (creating when missing, migrating when older) the spool the
    /// server runs on, with its dedup memory loaded. A SQLite spool that
    /// another process (or another handle of this one) has open this way
    /// is refused.
    pub async fn open(options: &SpoolOptions) -> Result<Self, SpoolError> {
        let backend = match &options.postgres {
            Some(postgres) => {
                Backend::Postgres(postgres::PgSpool::open(postgres, options.dedup_window).await?)
            }
            None => Backend::Sqlite(sqlite::SqliteSpool::open_limited(
                &options.path,
                options.dedup_window,
                options.max_bytes,
            )?),
        };
        Ok(Self { backend })
    }

    /// Opens an existing spool for the admin commands, beside a running
    /// server without disturbing it: no dedup memory is loaded, nothing is
    /// migrated (a spool of another schema version is refused), and closing
    /// does not checkpoint. Such a handle refuses [`Spool::accept`].
    pub async fn open_for_admin(options: &SpoolOptions) -> Result<Self, SpoolError> {
        let backend = match &options.postgres {
            Some(postgres) => Backend::Postgres(postgres::PgSpool::open_for_admin(postgres).await?),
            None => Backend::Sqlite(sqlite::SqliteSpool::open_for_admin(&options.path)?),
        };
        Ok(Self { backend })
    }

    /// Stores `record` as given (see [`NewRecord`]), received at `now`,
    /// unless its event id was accepted within the dedup window. Returns
    /// only after the commit is durable.
    pub async fn accept(
        &self,
        record: NewRecord,
        now: SystemTime,
    ) -> Result<Acceptance, SpoolError> {
        with_backend!(self, spool => spool.accept(record, now).await)
    }

    /// Which of `ids` (event ids) the spool accepted within the dedup window
    /// before `now`: exactly those [`Spool::accept`] would call duplicates
    /// at `now`. An id accepted longer ago is not known, even when its
    /// record is still stored. Only a spool opened with [`Spool::open`]
    /// answers; one opened for administration has no dedup memory (SQLite)
    /// or window (PostgreSQL) and refuses.
    pub async fn known_event_ids(
        &self,
        ids: Vec<String>,
        now: SystemTime,
    ) -> Result<HashSet<String>, SpoolError> {
        with_backend!(self, spool => spool.known_event_ids(ids, now).await)
    }

    /// Proves the spool can commit a write right now (for `/readyz`).
    pub async fn check_writable(&self) -> Result<(), SpoolError> {
        with_backend!(self, spool => spool.check_writable().await)
    }

    /// Makes the configured sinks known, each with its event types: a new
    /// sink receives what arrives from now on; a sink no longer configured
    /// gets its undelivered records as dead letters. Returns each retired
    /// sink with its number of dead letters.
    pub async fn register_sinks(
        &self,
        sinks: Vec<SinkRegistration>,
        now: SystemTime,
    ) -> Result<Vec<(String, usize)>, SpoolError> {
        with_backend!(self, spool => spool.register_sinks(sinks, now).await)
    }

    /// Up to `limit` deliveries for `sink` (which takes `event_types`): due
    /// retries first, up to half of `limit`, then fresh records.
    pub async fn claim(
        &self,
        sink: &str,
        event_types: &EventTypes,
        now: SystemTime,
        limit: usize,
    ) -> Result<Claim, SpoolError> {
        with_backend!(self, spool => spool.claim(sink, event_types, now, limit).await)
    }

    /// Runs `work`, the attempt at a claim's deliveries, keeping the claim
    /// (renewing its lease) until it ends.
    pub async fn hold_while<F: Future>(
        &self,
        sink: &str,
        receipt: &ClaimReceipt,
        work: F,
    ) -> F::Output {
        with_backend!(self, spool => spool.hold_while(sink, receipt, work).await)
    }

    /// Writes back the outcomes of a claim's attempts, in one transaction.
    /// Returns how many outcomes were refused because the claim had passed
    /// to another replica meanwhile (that replica makes the attempt again).
    pub async fn settle(
        &self,
        sink: &str,
        receipt: ClaimReceipt,
        outcomes: Vec<Outcome>,
        now: SystemTime,
    ) -> Result<usize, SpoolError> {
        with_backend!(self, spool => spool.settle(sink, receipt, outcomes, now).await)
    }

    /// When the next retry to `sink` falls due (Unix ms), if any is waiting.
    pub async fn next_retry_ms(&self, sink: &str) -> Result<Option<i64>, SpoolError> {
        with_backend!(self, spool => spool.next_retry_ms(sink).await)
    }

    /// Dead letters, of one sink or all, oldest first.
    pub async fn dead_letters(&self, sink: Option<String>) -> Result<Vec<DeadLetter>, SpoolError> {
        with_backend!(self, spool => spool.dead_letters(sink).await)
    }

    /// Queues dead letters again (attempts reset), of one sink or all, one
    /// event id or all. Returns how many were queued.
    pub async fn requeue_dead(
        &self,
        sink: Option<String>,
        event_id: Option<String>,
        now: SystemTime,
    ) -> Result<usize, SpoolError> {
        with_backend!(self, spool => spool.requeue_dead(sink, event_id, now).await)
    }

    /// Deletes dead letters, of one sink or all, one event id or all.
    /// Returns how many were deleted.
    pub async fn purge_dead(
        &self,
        sink: Option<String>,
        event_id: Option<String>,
    ) -> Result<usize, SpoolError> {
        with_backend!(self, spool => spool.purge_dead(sink, event_id).await)
    }

    /// Where the record `event_id` stands with `sink`, which takes
    /// `event_types`; `None` when the record is unknown or not for this sink.
    pub async fn delivery_state(
        &self,
        event_id: &str,
        sink: &str,
        event_types: &EventTypes,
    ) -> Result<Option<DeliveryState>, SpoolError> {
        with_backend!(self, spool => spool.delivery_state(event_id, sink, event_types).await)
    }

    /// Delivery counts of `sink`, which takes `event_types`.
    pub async fn counts(
        &self,
        sink: &str,
        event_types: &EventTypes,
    ) -> Result<SinkCounts, SpoolError> {
        with_backend!(self, spool => spool.counts(sink, event_types).await)
    }

    /// A page of records matching `query`, newest first, each with where it
    /// stands with every sink (for the admin API).
    pub async fn events(
        &self,
        query: browse::EventQuery,
    ) -> Result<Vec<browse::EventSummary>, SpoolError> {
        with_backend!(self, spool => spool.events(query).await)
    }

    /// The latest record with event id `id`, whole, with its deliveries.
    pub async fn event(&self, id: &str) -> Result<Option<browse::EventDetail>, SpoolError> {
        with_backend!(self, spool => spool.event(id).await)
    }

    /// Every stored record, oldest first (for tests and small spools).
    pub async fn records(&self) -> Result<Vec<Record>, SpoolError> {
        with_backend!(self, spool => spool.records().await)
    }

    /// Removes up to `limit` records received before `before_ms` that every
    /// sink has handled. Returns how many went.
    pub async fn purge_delivered(&self, before_ms: i64, limit: usize) -> Result<usize, SpoolError> {
        with_backend!(self, spool => spool.purge_delivered(before_ms, limit).await)
    }

    /// Forgets up to `limit` event ids accepted before `before_ms`. Returns
    /// how many went.
    pub async fn prune_seen(&self, before_ms: i64, limit: usize) -> Result<usize, SpoolError> {
        with_backend!(self, spool => spool.prune_seen(before_ms, limit).await)
    }

    /// How far reconciliation has checked each of `streams`: per (stream,
    /// event type), the time (Unix ms, Tencent's) up to which Tencent's
    /// records were fully checked. A pair missing was never checked. One
    /// statement however many streams are asked for.
    pub async fn reconcile_checkpoints(
        &self,
        streams: Vec<String>,
    ) -> Result<HashMap<(String, i64), i64>, SpoolError> {
        if streams.is_empty() {
            return Ok(HashMap::new());
        }
        with_backend!(self, spool => spool.reconcile_checkpoints(streams).await)
    }

    /// Records that `stream`'s callbacks of `event_types` were checked up to
    /// `checked_until_ms`. A checkpoint only moves forward: one further on
    /// already stays.
    pub async fn save_reconcile_checkpoint(
        &self,
        stream: &str,
        event_types: &[i64],
        checked_until_ms: i64,
    ) -> Result<(), SpoolError> {
        let mut event_types = event_types.to_vec();
        // One row per type: an upsert may not touch a row twice.
        event_types.sort_unstable();
        event_types.dedup();
        if event_types.is_empty() {
            return Ok(());
        }
        let stream = stream.to_owned();
        with_backend!(self, spool => {
            spool
                .save_reconcile_checkpoint(stream, event_types, checked_until_ms)
                .await
        })
    }

    /// Stores the gaps not stored yet (see [`Gap`] for when two are the
    /// same). Returns how many were new.
    pub async fn record_gaps(&self, gaps: Vec<Gap>) -> Result<usize, SpoolError> {
        if gaps.is_empty() {
            return Ok(0);
        }
        with_backend!(self, spool => spool.record_gaps(gaps).await)
    }

    /// Up to `limit` gaps, the most recently found first.
    pub async fn gaps(&self, limit: usize) -> Result<Vec<Gap>, SpoolError> {
        with_backend!(self, spool => spool.gaps(limit).await)
    }

    /// How many gaps are stored.
    pub async fn gap_count(&self) -> Result<u64, SpoolError> {
        with_backend!(self, spool => spool.gap_count().await)
    }

    /// Records that `holder` started a run over `window_start_ms` to
    /// `window_end_ms`, status `running`; returns its id. Only the newest
    /// [`reconciliation::KEPT_RUNS`] runs are kept: older ones go now.
    pub async fn start_reconcile_run(
        &self,
        holder: &str,
        started_at_ms: i64,
        window_start_ms: i64,
        window_end_ms: i64,
    ) -> Result<i64, SpoolError> {
        let run = ReconcileRun {
            id: 0,
            holder: holder.to_owned(),
            started_at_ms,
            finished_at_ms: None,
            window_start_ms,
            window_end_ms,
            status: reconciliation::RUNNING.to_owned(),
            error: None,
            report: "{}".to_owned(),
        };
        with_backend!(self, spool => spool.start_reconcile_run(run).await)
    }

    /// Records how run `id` ended: `status` is `ok`, `failed` or
    /// `interrupted` (anything else is refused), `report` the reconciler's
    /// JSON. An error when no run `id` is recorded.
    pub async fn finish_reconcile_run(
        &self,
        id: i64,
        finished_at_ms: i64,
        status: &str,
        error: Option<String>,
        report: String,
    ) -> Result<(), SpoolError> {
        reconciliation::check_finished(status)?;
        let status = status.to_owned();
        let updated = with_backend!(self, spool => {
            spool
                .finish_reconcile_run(id, finished_at_ms, status, error, report)
                .await
        })?;
        if updated {
            Ok(())
        } else {
            Err(SpoolError::Write(StorageError::NoRun { id }))
        }
    }

    /// Up to `limit` runs, the latest started first.
    pub async fn reconcile_runs(&self, limit: usize) -> Result<Vec<ReconcileRun>, SpoolError> {
        with_backend!(self, spool => spool.reconcile_runs(limit).await)
    }

    /// Takes the lease `name` for `holder` for `lease` from now, if it is
    /// free, has expired, or is `holder`'s already (then it is renewed).
    /// Returns whether `holder` holds it now. Atomic: of holders asking at
    /// once, one gets it. Now is the database's clock (PostgreSQL's; for
    /// SQLite, this host's) when the statement runs.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, SpoolError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let lease_ms = reconciliation::lease_ms(lease);
        with_backend!(self, spool => spool.acquire_lease(name, holder, lease_ms).await)
    }

    /// Gives up the lease `name` if `holder` holds it (else changes
    /// nothing), so another holder may take it at once.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), SpoolError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        with_backend!(self, spool => spool.release_lease(name, holder).await)
    }

    /// Event ids the dedup memory holds.
    pub fn dedup_entries(&self) -> usize {
        with_backend!(self, spool => spool.dedup_entries())
    }

    /// Bytes available on the spool's filesystem, if known and local.
    pub fn free_bytes(&self) -> Option<u64> {
        with_backend!(self, spool => spool.free_bytes())
    }

    /// Size of the spool on disk, in bytes.
    pub fn disk_bytes(&self) -> u64 {
        with_backend!(self, spool => spool.disk_bytes())
    }

    /// Calls `on_stored` as soon as another process stores records, until
    /// `shutdown`, so this one's workers need not wait for their next poll.
    /// With SQLite there is no other process that accepts: nothing to hear.
    pub async fn watch_stored(&self, on_stored: OnStored, shutdown: CancellationToken) {
        match &self.backend {
            Backend::Sqlite(_) => shutdown.cancelled().await,
            Backend::Postgres(spool) => spool.watch_stored(on_stored, shutdown).await,
        }
    }

    /// Stops accepting writes, lets what is queued commit, and closes.
    pub async fn close(&self) {
        with_backend!(self, spool => spool.close().await)
    }
}

/// Called when records were stored elsewhere: `Some(event type)` for
/// records of that type, `None` when anything may have been stored.
pub type OnStored = std::sync::Arc<dyn Fn(Option<i64>) + Send + Sync>;

/// Milliseconds since the Unix epoch.
pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Formats Unix milliseconds as RFC 3339 UTC.
pub fn format_ms(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_record_holds_the_json_sinks_receive_and_the_columns_read_from_it() {
        let record = sqlite::tests::record_of(100, "f1");
        let new = NewRecord::try_from(&record).unwrap();
        assert_eq!(new.json, StoredRecord::try_from(&record).unwrap().json);
        assert_eq!(serde_json::from_str::<Record>(&new.json).unwrap(), record);
        assert_eq!((new.id.as_str(), new.event_type), (record.id.as_str(), 100));
        assert_eq!(new.stream_id.as_deref(), Some("s"));
        assert_eq!(new.file_id.as_deref(), Some("f1"));
        assert_eq!(new.source, Source::Live);
    }

    #[test]
    fn a_claim_without_deliveries_makes_progress_only_when_it_moved_a_cursor() {
        let claim = |receipt| Claim {
            deliveries: Vec::new(),
            receipt: ClaimReceipt(receipt),
        };
        let leased = |took_over| Receipt::Postgres {
            token: 1,
            fence: Some(2),
            claimed: Vec::new(),
            took_over,
        };
        assert!(!claim(Receipt::Empty).makes_progress());
        assert!(claim(Receipt::Sqlite { scanned_to: 3 }).makes_progress());
        assert!(!claim(leased(false)).makes_progress());
        assert!(claim(leased(true)).sink_taken_over());
        assert!(!claim(leased(false)).sink_taken_over());
        assert!(!claim(Receipt::Sqlite { scanned_to: 3 }).sink_taken_over());
    }
}
