//! A database of its own for each test, on the machine's PostgreSQL, dropped
//! when the test ends (passing or failing); and spools opened on either
//! backend.
//!
//! `RECORDHOOK_TEST_PG_SSL` runs the suites' spools over TLS: its value is
//! added to every spool URL's query, e.g. `sslmode=require` (Debian's
//! PostgreSQL has `ssl = on` with a self-signed certificate) or
//! `sslmode=verify-ca&sslrootcert=/path/ca.pem`. The tests' own clients,
//! which only look inside, stay plain.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use recordhook::secret_url::SecretUrl;
use recordhook::spool::{PostgresOptions, PostgresTls, Spool, SpoolOptions};
use tempfile::TempDir;

use crate::harness::Backend;

/// Where the machine's PostgreSQL listens.
pub const ADDRESS: &str = "127.0.0.1:5432";

/// Whether PostgreSQL accepts TCP connections.
pub fn reachable() -> bool {
    let address: SocketAddr = ADDRESS.parse().unwrap();
    TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()
}

/// A fresh database, dropped (with its connections) on drop.
pub struct Database {
    pub name: String,
}

impl Database {
    /// Creates `recordhook_test_<unique>`.
    pub async fn create() -> Self {
        let name = format!(
            "recordhook_test_{}_{:08x}",
            std::process::id(),
            fastrand::u32(..)
        );
        admin(&format!("CREATE DATABASE {name}")).await;
        Self { name }
    }

    /// Its URL for spools, through `address` (e.g. a proxy) instead of
    /// [`ADDRESS`], with `RECORDHOOK_TEST_PG_SSL`'s parameters.
    pub fn url_via(&self, address: &str) -> String {
        let url = format!("postgres://postgres@{address}/{}", self.name);
        match std::env::var("RECORDHOOK_TEST_PG_SSL") {
            Ok(query) if !query.is_empty() => format!("{url}?{query}"),
            _ => url,
        }
    }

    pub fn url(&self) -> String {
        self.url_via(ADDRESS)
    }

    /// A plain client on it, for looking inside.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&format!("postgres://postgres@{ADDRESS}/{}", self.name)).await
    }

    /// Spool options for it, with `lease`.
    pub fn options(&self, dedup_window: Duration, lease: Duration) -> SpoolOptions {
        options_for(&self.url(), dedup_window, lease)
    }
}

/// Spool options for the database at `url`.
pub fn options_for(url: &str, dedup_window: Duration, lease: Duration) -> SpoolOptions {
    SpoolOptions {
        path: "unused".into(),
        postgres: Some(PostgresOptions {
            url: SecretUrl::parse(url).unwrap(),
            max_connections: 8,
            lease,
            tls: PostgresTls::default(),
        }),
        dedup_window,
        max_bytes: 0,
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(admin(&statement));
        })
        .join();
        if dropped.is_err() {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// Connects to `url`, driving the connection in the background.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to {url}: {err}"));
    tokio::spawn(connection);
    client
}

/// Runs `statement` on the `postgres` database.
async fn admin(statement: &str) {
    let client = connect(&format!("postgres://postgres@{ADDRESS}/postgres")).await;
    client.batch_execute(statement).await.unwrap();
}

/// A spool for a test on `backend`, with what keeps it alive.
pub struct TestSpool {
    pub spool: Spool,
    /// What the spool was opened with, to open it again.
    pub options: SpoolOptions,
    /// Dropped (with the database) when the test ends.
    pub _database: Option<Database>,
    _dir: TempDir,
}

/// Dedup window of test spools: 60 s.
pub const WINDOW: Duration = Duration::from_secs(60);

impl TestSpool {
    pub async fn open(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (options, database) = match backend {
            Backend::Sqlite => (
                SpoolOptions {
                    path: dir.path().join("nested/spool.db"),
                    postgres: None,
                    dedup_window: WINDOW,
                    max_bytes: 0,
                },
                None,
            ),
            Backend::Postgres => {
                let database = Database::create().await;
                (
                    database.options(WINDOW, Duration::from_secs(30)),
                    Some(database),
                )
            }
        };
        Self {
            spool: Spool::open(&options).await.unwrap(),
            options,
            _database: database,
            _dir: dir,
        }
    }

    /// Runs `sql` on the spool's database behind the spool's back, to set up
    /// what the interface cannot (rows as an older recordhook left them).
    pub async fn execute(&self, sql: &str) {
        match &self._database {
            Some(database) => database.client().await.batch_execute(sql).await.unwrap(),
            None => rusqlite::Connection::open(self._dir.path().join("nested/spool.db"))
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
        }
    }
}

/// `secs` after the Unix epoch: the injected "now" of behaviour tests.
pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}
