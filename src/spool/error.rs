//! How the spool fails. [`SpoolError`] says which operation failed
//! (opening, a write, a read) and [`StorageError`] what failed beneath it,
//! with the storage's own error (SQLite's, PostgreSQL's, serde_json's, the
//! operating system's) kept as its source.
//!
//! Both are `Clone`, and the causes sit behind `Arc`, because one failure
//! is reported to every caller it concerns: a group commit that fails fails
//! every callback in it, and each gets the same error.
//!
//! `Display` includes the cause, so `%err` in a log line and the message of
//! a 503 are complete on their own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Why the spool could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    /// The store could not be opened or migrated.
    #[error("spool `{location}` could not be opened: {source}")]
    Open {
        /// The configured location (a file, or a URL without its password).
        location: String,
        /// What went wrong.
        #[source]
        source: StorageError,
    },
    /// The store's schema is not the one this recordhook uses, and it was
    /// opened for administration, which never migrates.
    #[error(
        "spool `{location}` has schema version {found}, this recordhook uses {expected}: \
         run the recordhook version that matches the server"
    )]
    SchemaMismatch {
        /// The configured location (a file, or a URL without its password).
        location: String,
        /// The version found.
        found: i64,
        /// The version this build uses.
        expected: i64,
    },
    /// A write did not commit (disk full, I/O error, …); nothing of it was stored.
    #[error("spool write failed: {0}")]
    Write(#[source] StorageError),
    /// A read failed.
    #[error("spool read failed: {0}")]
    Read(#[source] StorageError),
    /// The spool is closing or closed (the service is shutting down).
    #[error("spool is closed")]
    Closed,
}

impl SpoolError {
    /// A write that did not commit because of `cause`.
    pub(super) fn write(cause: impl Into<StorageError>) -> Self {
        Self::Write(cause.into())
    }

    /// A read that failed because of `cause`.
    pub(super) fn read(cause: impl Into<StorageError>) -> Self {
        Self::Read(cause.into())
    }

    /// A stored record whose JSON does not parse.
    pub fn unreadable(cause: serde_json::Error) -> Self {
        Self::Read(StorageError::Decode(Arc::new(cause)))
    }
}

/// What failed beneath a spool operation: the storage's own error, kept as
/// the source, or why the spool refused before trying.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// SQLite failed. A full disk, or a database at `spool.max_bytes`, says
    /// "database or disk is full".
    #[error(transparent)]
    Sqlite(Arc<rusqlite::Error>),
    /// PostgreSQL failed, or the connection to it broke.
    #[error("{}", describe(.0))]
    Postgres(#[source] Arc<tokio_postgres::Error>),
    /// No connection to PostgreSQL could be had in time (it is down, cannot
    /// be reached, or refused to let us in).
    #[error("cannot connect to PostgreSQL: {}", describe_pool(.0))]
    Connect(#[source] Arc<deadpool_postgres::PoolError>),
    /// No connection to PostgreSQL could be opened at start-up; says which
    /// `sslmode` was in force, since TLS is a common reason. The cause's
    /// whole chain is in the message and is not a `source`: deadpool's
    /// wrapper ("Error occurred while creating a new object: …") would
    /// repeat it.
    #[error(
        "cannot connect to PostgreSQL (sslmode={sslmode}): {}",
        describe_pool(cause)
    )]
    Connecting {
        /// The mode in force.
        sslmode: &'static str,
        /// What went wrong.
        cause: Arc<deadpool_postgres::PoolError>,
    },
    /// TLS to PostgreSQL could not be set up from the settings.
    #[error(transparent)]
    Tls(PostgresTlsError),
    /// A connection pooler in transaction mode sits in front of PostgreSQL:
    /// LISTEN, session settings and prepared statements need session mode.
    #[error(
        "the connection is passed between sessions between statements (a pooler such as \
         PgBouncer in transaction or statement mode): recordhook needs session pooling \
         (pool_mode = session) or a direct connection"
    )]
    TransactionPooling,
    /// `SET synchronous_commit = on` did not hold on a new connection.
    #[error(
        "synchronous_commit is `{found}` after setting it to `on`: a commit would not be \
         durable when a callback is answered"
    )]
    SynchronousCommit {
        /// What `SHOW synchronous_commit` said.
        found: String,
    },
    /// The configured PostgreSQL URL does not parse.
    #[error("not a valid PostgreSQL URL: {0}")]
    InvalidUrl(#[source] Arc<tokio_postgres::Error>),
    /// The connection pool could not be set up.
    #[error(transparent)]
    Pool(deadpool_postgres::BuildError),
    /// A file or thread the SQLite spool needs could not be had.
    #[error("cannot {action}: {source}")]
    Io {
        /// What was tried, naming the path it was tried on.
        action: String,
        /// The operating system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Another process serves this SQLite spool (it holds the lock file).
    #[error(
        "another recordhook process has this spool open ({}); stop it, or use the admin \
         commands, which may run beside it",
        lock.display()
    )]
    Locked {
        /// The lock file.
        lock: PathBuf,
    },
    /// The SQLite spool opened for administration does not exist.
    #[error("it does not exist: check spool.path (or --config) points at the server's spool")]
    NoFile,
    /// The PostgreSQL database opened for administration holds no spool.
    #[error("it holds no recordhook spool yet: start the server on it once")]
    NoSchema,
    /// The SQLite spool was written by a newer recordhook.
    #[error("spool schema version {found} is newer than this recordhook understands ({known})")]
    NewerSchema {
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// The PostgreSQL spool's schema needs newer code than this build.
    #[error(
        "the database's schema version {found} needs recordhook code of schema version \
         {compatible_from} or later; this recordhook has {current}: upgrade it"
    )]
    IncompatibleSchema {
        /// The version found.
        found: i32,
        /// The oldest code version that runs on it.
        compatible_from: i32,
        /// This build's version.
        current: i32,
    },
    /// A record, or a list sent as JSON, could not be serialised.
    #[error("could not encode as JSON: {0}")]
    Encode(#[source] Arc<serde_json::Error>),
    /// A stored record is not the JSON of a record.
    #[error("stored record is unreadable: {0}")]
    Decode(#[source] Arc<serde_json::Error>),
    /// Accepting through a handle opened for administration, which has no
    /// dedup memory to decide duplicates with.
    #[error("this spool handle was opened for administration and does not accept")]
    AdminAccept,
    /// Asking a handle opened for administration which event ids were
    /// accepted recently: it keeps no dedup memory.
    #[error("this spool handle was opened for administration and has no dedup memory")]
    AdminDedup,
    /// A read on a blocking thread did not finish (it panicked).
    #[error("a read did not finish: {0}")]
    Task(#[source] Arc<tokio::task::JoinError>),
    /// An earlier read panicked while holding the read connection.
    #[error("the read connection's lock is poisoned")]
    ReaderPoisoned,
    /// The SQLite writer committed a job it had not run (a bug).
    #[error("the writer finished a job without its output")]
    JobLost,
    /// A reconciliation run cannot finish with this status.
    #[error("`{status}` is not a status a reconciliation run finishes with (one of {allowed})")]
    RunStatus {
        /// The status given.
        status: String,
        /// The statuses a run may finish with.
        allowed: String,
    },
    /// No reconciliation run has this id.
    #[error("no reconciliation run {id} is recorded")]
    NoRun {
        /// The id given.
        id: i64,
    },
    /// The spool's filesystem is (nearly) full, so writes are about to fail.
    #[error("only {free_bytes} bytes free on the spool's filesystem")]
    LowSpace {
        /// Bytes available.
        free_bytes: u64,
    },
    /// A write did not commit in time.
    #[error("the spool did not commit within {} s", .within.as_secs())]
    CommitTimeout {
        /// How long it was given.
        within: Duration,
    },
}

/// Why TLS to PostgreSQL could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostgresTlsError {
    /// A parameter is in the URL and in `[spool.postgres]` with different values.
    #[error(
        "spool.postgres.{parameter} is `{configured}` but the URL says {parameter}={in_url}: \
         give it in one place"
    )]
    Conflict {
        /// The parameter's name.
        parameter: &'static str,
        /// Its value in the URL.
        in_url: String,
        /// Its value in `[spool.postgres]`.
        configured: String,
    },
    /// The URL names an `sslmode` this client does not have.
    #[error(
        "sslmode={0} in the URL is not one of disable, prefer, require, verify-ca, verify-full"
    )]
    UnknownMode(String),
    /// Only one of `sslcert` and `sslkey` is given.
    #[error("spool.postgres.sslcert and sslkey go together: give both or neither")]
    HalfClientCertificate,
    /// A PEM file could not be used.
    #[error("spool.postgres.{setting} `{path}`: {reason}")]
    File {
        /// The setting naming it.
        setting: &'static str,
        /// The path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Config(String),
}

impl From<rusqlite::Error> for StorageError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Sqlite(Arc::new(err))
    }
}

impl From<tokio_postgres::Error> for StorageError {
    fn from(err: tokio_postgres::Error) -> Self {
        Self::Postgres(Arc::new(err))
    }
}

impl From<deadpool_postgres::PoolError> for StorageError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        Self::Connect(Arc::new(err))
    }
}

impl From<tokio::task::JoinError> for StorageError {
    fn from(err: tokio::task::JoinError) -> Self {
        Self::Task(Arc::new(err))
    }
}

impl StorageError {
    /// An I/O failure while trying to `action` (which names the path).
    pub(super) fn io(action: String, err: std::io::Error) -> Self {
        Self::Io {
            action,
            source: Arc::new(err),
        }
    }

    /// A failure to serialise something as JSON.
    pub(super) fn encode(err: serde_json::Error) -> Self {
        Self::Encode(Arc::new(err))
    }
}

/// A pool error's text, with PostgreSQL's own reason when it gave one (a
/// wrong password, an unknown database).
fn describe_pool(err: &deadpool_postgres::PoolError) -> String {
    match err {
        deadpool_postgres::PoolError::Backend(err) => describe(err),
        other => other.to_string(),
    }
}

/// An error's text with PostgreSQL's own message, code and detail (the
/// client's `Display` says only "db error").
fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        // "error performing TLS handshake" says nothing without its cause.
        None => crate::error_chain::error_chain(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_error_names_its_cause_and_keeps_it_as_its_source() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let err = SpoolError::write(full);
        assert!(
            matches!(&err, SpoolError::Write(StorageError::Sqlite(_))),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("spool write failed: "), "{err}");
        assert!(err.to_string().contains("full"), "{err}");
        let source = err.source().map(ToString::to_string);
        assert!(source.is_some_and(|text| text.contains("full")));

        let unreadable = SpoolError::unreadable(serde_json::from_str::<u8>("x").unwrap_err());
        assert!(
            matches!(&unreadable, SpoolError::Read(StorageError::Decode(_))),
            "{unreadable:?}"
        );
        let cause = unreadable.source().and_then(|storage| storage.source());
        assert!(
            cause.is_some_and(|cause| unreadable.to_string().ends_with(&cause.to_string())),
            "{unreadable}"
        );
    }
}
