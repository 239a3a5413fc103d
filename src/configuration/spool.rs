//! `[spool]` and `[spool.postgres]`: where accepted callbacks are stored
//! before they are answered, and for how long; turned into the
//! [`SpoolOptions`] the spool opens with.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range};
use crate::secret_url::SecretUrl;
use crate::spool::{PostgresOptions, PostgresTls, SpoolOptions, SslMode};

/// Longest `spool.dedup_window_secs` and `spool.retention_secs`: 10 years.
/// They are subtracted from the current time, which must stay after 1970.
pub const MAX_SPOOL_WINDOW_SECS: u64 = 10 * 365 * 86_400;
/// Longest `spool.postgres.lease_secs`: one hour.
pub const MAX_LEASE_SECS: u64 = 3_600;
/// Most `spool.postgres.max_connections`.
pub const MAX_POSTGRES_CONNECTIONS: u64 = 1_000;

/// The durable store of accepted callbacks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSettings {
    /// SQLite database file; its directory is created when missing.
    pub path: PathBuf,
    /// For how long, in seconds, a callback with the same event id is
    /// recognised as a duplicate (answered 200, not stored again); at most
    /// [`MAX_SPOOL_WINDOW_SECS`].
    pub dedup_window_secs: u64,
    /// How long, in seconds, a record that every sink has delivered stays in
    /// the spool before it is removed; at most [`MAX_SPOOL_WINDOW_SECS`].
    /// Undelivered records and dead letters stay.
    pub retention_secs: u64,
    /// Largest size of the spool database in bytes; 0 means no limit. At the
    /// limit callbacks get 503 (CSS retries them), as on a full disk; set it
    /// below the free space of the volume so the spool fills before the disk.
    /// Unbounded: it is only compared with, so no value can hurt at run time.
    /// SQLite only: PostgreSQL's size is its operator's to manage.
    pub max_bytes: u64,
    /// Where the spool lives: `sqlite` (the embedded default, one process)
    /// or `postgres` (shared by several replicas; see `[spool.postgres]`).
    pub backend: SpoolBackend,
    /// The PostgreSQL database, used when `backend = "postgres"`.
    pub postgres: PostgresSettings,
}

/// Which store holds the spool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoolBackend {
    /// An embedded SQLite file (`spool.path`): one recordhook process.
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by every replica.
    Postgres,
}

/// `[spool.postgres]`: the shared database of a replicated deployment.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/database`; the password is a
    /// secret (redacted in output). Also `RECORDHOOK__SPOOL__POSTGRES__URL`.
    pub url: Option<SecretUrl>,
    /// Connections this replica may open, at most
    /// [`MAX_POSTGRES_CONNECTIONS`]; the database must allow this many per
    /// replica plus some for admin commands.
    pub max_connections: u64,
    /// How long, in seconds, a replica holds the deliveries it claimed (and a
    /// single-writer sink such as `file`) without renewing; renewed every
    /// third of it while work goes on. A replica that dies or stalls longer
    /// loses its claims to another. At most [`MAX_LEASE_SECS`].
    pub lease_secs: u64,
    /// TLS, with libpq's names and meanings: `disable`, `prefer` (the
    /// default: TLS when the server offers it, unverified), `require` (TLS,
    /// unverified unless `sslrootcert` is set), `verify-ca` (the certificate
    /// must come from a trusted CA) or `verify-full` (and name the host; use
    /// it for managed databases). May be given in the URL (`?sslmode=`)
    /// instead; given in both, they must agree.
    pub sslmode: Option<SslMode>,
    /// PEM file of the CAs the server's certificate must come from; without
    /// it, `verify-ca`/`verify-full` trust the public (Mozilla) CAs, and
    /// `~/.postgresql/root.crt` is not read. With it, `prefer` and `require`
    /// check the chain too, as libpq does. Also `?sslrootcert=` in the URL.
    pub sslrootcert: Option<PathBuf>,
    /// PEM client certificate (chain, leaf first), for servers that
    /// authenticate clients by certificate (`hostssl … cert` in
    /// `pg_hba.conf`); with `sslkey`. Also `?sslcert=` in the URL.
    pub sslcert: Option<PathBuf>,
    /// PEM private key of `sslcert` (PKCS#8, PKCS#1 or SEC1). Also
    /// `?sslkey=` in the URL.
    pub sslkey: Option<PathBuf>,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./data/spool.db"),
            dedup_window_secs: 604_800,
            retention_secs: 86_400,
            max_bytes: 0,
            backend: SpoolBackend::Sqlite,
            postgres: PostgresSettings::default(),
        }
    }
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 10,
            lease_secs: 30,
            sslmode: None,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
        }
    }
}

impl SpoolSettings {
    /// Checks the windows' bounds, the `[spool.postgres]` bounds (whichever
    /// backend runs, so switching backends never uncovers a bad value), and
    /// that the chosen backend is named: a file, or a PostgreSQL URL.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "spool.dedup_window_secs",
            self.dedup_window_secs,
            0,
            MAX_SPOOL_WINDOW_SECS,
        )?;
        check_range(
            "spool.retention_secs",
            self.retention_secs,
            0,
            MAX_SPOOL_WINDOW_SECS,
        )?;
        self.postgres.validate()?;
        match (self.backend, &self.postgres.url) {
            (SpoolBackend::Sqlite, _) if self.path.as_os_str().is_empty() => {
                Err(ConfigError::invalid("spool.path", "must name a file"))
            }
            (SpoolBackend::Postgres, None) => Err(ConfigError::invalid(
                "spool.postgres.url",
                "is needed with spool.backend = \"postgres\" \
                 (or set RECORDHOOK__SPOOL__POSTGRES__URL)",
            )),
            (SpoolBackend::Postgres, Some(url))
                if !["postgres", "postgresql"].contains(&url.scheme()) =>
            {
                Err(ConfigError::invalid(
                    "spool.postgres.url",
                    "must be a postgres:// or postgresql:// URL",
                ))
            }
            (SpoolBackend::Postgres, Some(url)) => {
                crate::spool::check_postgres_tls(url, &self.postgres.tls())
                    .map_err(|err| ConfigError::invalid("spool.postgres", err.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// How to open the spool these settings describe.
    pub fn options(&self) -> SpoolOptions {
        SpoolOptions {
            path: self.path.clone(),
            postgres: match (self.backend, &self.postgres.url) {
                (SpoolBackend::Postgres, Some(url)) => Some(PostgresOptions {
                    url: url.clone(),
                    max_connections: usize::try_from(self.postgres.max_connections)
                        .unwrap_or(usize::MAX),
                    lease: Duration::from_secs(self.postgres.lease_secs),
                    tls: self.postgres.tls(),
                }),
                _ => None,
            },
            dedup_window: Duration::from_secs(self.dedup_window_secs),
            max_bytes: self.max_bytes,
        }
    }

    /// Where the spool is, for messages: the file, or the URL without its password.
    pub fn location(&self) -> String {
        match (self.backend, &self.postgres.url) {
            (SpoolBackend::Postgres, Some(url)) => url.redacted().to_owned(),
            _ => self.path.display().to_string(),
        }
    }
}

impl PostgresSettings {
    /// The TLS settings, as configured.
    fn tls(&self) -> PostgresTls {
        PostgresTls {
            sslmode: self.sslmode,
            sslrootcert: self.sslrootcert.clone(),
            sslcert: self.sslcert.clone(),
            sslkey: self.sslkey.clone(),
        }
    }

    /// Checks the pool's size and the lease's length.
    fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "spool.postgres.max_connections",
            self.max_connections,
            2,
            MAX_POSTGRES_CONNECTIONS,
        )?;
        check_range(
            "spool.postgres.lease_secs",
            self.lease_secs,
            1,
            MAX_LEASE_SECS,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::configuration::testing::{assert_each_rejected, env, with_key};
    use crate::configuration::{Settings, Sources};

    #[test]
    fn bad_spool_values_are_rejected_with_the_setting_named() {
        assert_each_rejected(&[
            (
                with_key(&format!(
                    "[spool]\ndedup_window_secs = {}",
                    MAX_SPOOL_WINDOW_SECS + 1
                )),
                "spool.dedup_window_secs",
            ),
            (
                with_key(&format!(
                    "[spool]\nretention_secs = {}",
                    MAX_SPOOL_WINDOW_SECS + 1
                )),
                "spool.retention_secs",
            ),
        ]);
    }

    #[test]
    fn the_replicas_config_loads_with_the_database_url_from_the_environment() {
        let settings = Settings::load(Sources {
            repo_default: None,
            file: Some(PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config/replicas.toml"
            ))),
            environment: env(&[
                ("RECORDHOOK__AUTH__KEYS", "k"),
                (
                    "RECORDHOOK__SPOOL__POSTGRES__URL",
                    "postgres://recordhook:pw@db:5432/recordhook",
                ),
            ]),
        })
        .unwrap();
        assert_eq!(settings.spool.backend, SpoolBackend::Postgres);
        assert_eq!(
            settings.spool.location(),
            "postgres://recordhook:[redacted]@db:5432/recordhook"
        );
    }
}
