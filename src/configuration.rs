//! Typed settings, layered from built-in defaults, `config/default.toml`, an
//! optional file named on the command line or by `RECORDHOOK_CONFIG`, and
//! `RECORDHOOK__SECTION__KEY` environment variables.
//!
//! Every struct denies unknown fields, so a typo in a config file is an error
//! that names the key instead of a silently ignored setting.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::http::{HEALTH_PATH, METRICS_PATH, READY_PATH};
use crate::protocol::{Authenticator, EventTypes, RECORDING_EVENT_TYPE, TimeWindow};
use crate::reconcile::ReconcileSettings;
use crate::secret_url::SecretUrl;
use crate::sinks::{SinkKind, SinkSettings};
use crate::telemetry::LogSettings;
use crate::tls::TlsSettings;

/// The config file shipped in the repository; read when present in the
/// working directory, so `cargo run` from a checkout uses it.
pub const REPO_DEFAULT_CONFIG: &str = "config/default.toml";

/// Prefix of environment variables that override settings.
const ENV_PREFIX: &str = "RECORDHOOK";

/// Largest `server.max_body_bytes`: 64 MiB. Each request's body is held in
/// memory, up to `max_connections` of them; a CSS callback is a few KiB.
pub const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Most `server.max_connections`; far beyond what one process's file
/// descriptors allow, and well inside what a semaphore can count.
pub const MAX_CONNECTIONS: u64 = 100_000;
/// Longest `server.shutdown_grace_secs`, `server.header_read_timeout_secs`
/// and `server.request_timeout_secs`: one hour. Timers are set by adding these
/// to the current instant, which must not overflow.
pub const MAX_SERVER_TIMEOUT_SECS: u64 = 3_600;
/// Longest `auth.clock_skew_secs`: one day. Clocks further apart are broken.
pub const MAX_CLOCK_SKEW_SECS: u64 = 86_400;
/// Longest `auth.max_validity_secs` and `auth.expiry_grace_secs`: 7 days (CSS
/// signs for 10 minutes); longer would let a captured callback be replayed
/// long after the dedup window has forgotten it.
pub const MAX_SIGNATURE_WINDOW_SECS: u64 = 7 * 86_400;
/// Longest `spool.dedup_window_secs` and `spool.retention_secs`: 10 years.
/// They are subtracted from the current time, which must stay after 1970.
pub const MAX_SPOOL_WINDOW_SECS: u64 = 10 * 365 * 86_400;

/// Why the configuration could not be used. Each variant says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read or parsed, or a value has the wrong type or an unknown key.
    #[error("configuration could not be loaded: {0}")]
    Load(#[from] config::ConfigError),
    /// A setting has a value that cannot work.
    #[error("invalid setting `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the setting, e.g. `server.callback_path`.
        key: String,
        /// What is wrong with it and what is expected.
        reason: String,
    },
    /// No callback key is configured and unsigned callbacks are not allowed.
    #[error(
        "no callback key configured: set auth.keys (e.g. RECORDHOOK__AUTH__KEYS=your-key) or \
         auth.key_file, or set auth.allow_unsigned = true to accept unauthenticated callbacks"
    )]
    NoKeys,
    /// The key file named by `auth.key_file` could not be read.
    #[error("auth.key_file `{path}` could not be read: {source}")]
    KeyFile {
        /// The path as configured.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// All of recordhook's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The HTTP listener and the callback endpoint.
    #[serde(default)]
    pub server: ServerSettings,
    /// How callbacks are authenticated.
    #[serde(default)]
    pub auth: AuthSettings,
    /// The durable store of accepted callbacks.
    #[serde(default)]
    pub spool: SpoolSettings,
    /// Log output.
    #[serde(default)]
    pub log: LogSettings,
    /// The admin listener: API and web console, and `/metrics`.
    #[serde(default)]
    pub admin: AdminSettings,
    /// Reconciliation with Tencent Cloud's records of the callbacks CSS sent.
    #[serde(default)]
    pub reconcile: ReconcileSettings,
    /// Where accepted records are delivered. Defaults to one `log` sink named `console`.
    #[serde(default = "default_sinks")]
    pub sinks: Vec<SinkSettings>,
}

/// The HTTP listener and the callback endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address and port to bind, e.g. `0.0.0.0:8080`. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Path that CSS POSTs callbacks to; must start with `/`.
    pub callback_path: String,
    /// Largest callback body accepted, in bytes; larger ones get 413. 1 to [`MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
    /// How long, on SIGTERM or SIGINT, in-flight requests and deliveries may
    /// take to finish, in seconds; at most [`MAX_SERVER_TIMEOUT_SECS`].
    pub shutdown_grace_secs: u64,
    /// Connections served at once; further ones wait in the kernel's accept
    /// queue. 1 to [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (or finish a TLS
    /// handshake); idle keep-alive connections are closed after it too.
    /// 1 to [`MAX_SERVER_TIMEOUT_SECS`].
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a request's body; slower ones get 408.
    /// 1 to [`MAX_SERVER_TIMEOUT_SECS`].
    pub request_timeout_secs: u64,
    /// Serve HTTPS with these PEM files; absent serves plain HTTP (behind a TLS proxy).
    pub tls: Option<TlsSettings>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            callback_path: "/callback".to_owned(),
            max_body_bytes: 65_536,
            shutdown_grace_secs: 10,
            max_connections: 1_024,
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            tls: None,
        }
    }
}

/// `[admin]`: a second listener, off the public callback port, serving the
/// admin API, the web console and `/metrics`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Address and port of the admin listener, e.g. `127.0.0.1:9090`; empty
    /// (the default): no admin listener, and `/metrics` stays on the
    /// callback port.
    pub listen: String,
    /// Bearer tokens that open `/api/` (any one of them), each at least 16
    /// characters. From the environment: `RECORDHOOK__ADMIN__TOKENS=t1,t2`.
    #[serde(
        deserialize_with = "list_or_comma_separated",
        serialize_with = "crate::redact::list"
    )]
    pub tokens: Vec<SecretString>,
    /// Serve the API without a token. Allowed only when `listen` is a
    /// loopback address, and only when set explicitly.
    pub allow_loopback_without_token: bool,
}

/// A setting that is not valid, and why.
fn invalid_setting(key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

impl AdminSettings {
    /// The admin listener's address; `None` when there is none.
    pub fn address(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.trim().is_empty() {
            return Ok(None);
        }
        self.listen.trim().parse().map(Some).map_err(|_| {
            invalid_setting(
                "admin.listen",
                "must be an address and port such as 127.0.0.1:9090, or empty",
            )
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let Some(address) = self.address()? else {
            return Ok(());
        };
        if self
            .tokens
            .iter()
            .any(|token| token.expose_secret().trim().len() < 16)
        {
            return Err(invalid_setting(
                "admin.tokens",
                "each token must be at least 16 characters (generate one: openssl rand -hex 32)",
            ));
        }
        if self.tokens.is_empty()
            && !(self.allow_loopback_without_token && address.ip().is_loopback())
        {
            return Err(invalid_setting(
                "admin.tokens",
                "an admin listener needs at least one token (or, on a loopback address only, \
                 admin.allow_loopback_without_token = true)",
            ));
        }
        Ok(())
    }
}

/// How callbacks are authenticated.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Callback keys as set in the CSS console. Several may be given during a
    /// rotation: a callback is authentic when any one of them matches. From the
    /// environment: `RECORDHOOK__AUTH__KEYS=key1,key2`.
    #[serde(
        deserialize_with = "list_or_comma_separated",
        serialize_with = "crate::redact::list"
    )]
    pub keys: Vec<SecretString>,
    /// Optional file with one key per line (blank lines and `#` comments ignored),
    /// for Docker or Kubernetes secrets. Empty means none.
    pub key_file: String,
    /// Accept callbacks without checking `sign` and `t`. Must be set explicitly;
    /// a warning is logged at start-up. Rejected together with `keys` or
    /// `key_file`, so a key is never configured and silently ignored.
    pub allow_unsigned: bool,
    /// Seconds of tolerance for clocks that disagree, applied to both ends of
    /// the window; at most [`MAX_CLOCK_SKEW_SECS`].
    pub clock_skew_secs: u64,
    /// How far ahead of now `t` may lie, in seconds (CSS signs for 10
    /// minutes); 1 to [`MAX_SIGNATURE_WINDOW_SECS`].
    pub max_validity_secs: u64,
    /// Extra seconds a callback is accepted after `t` has passed, for late CSS
    /// retries; at most [`MAX_SIGNATURE_WINDOW_SECS`].
    pub expiry_grace_secs: u64,
    /// Makes recordhook also serve `POST {callback_path}/{path_secret}`, the
    /// only place where `unsigned_event_types` are accepted without `t` and
    /// `sign`: CSS documents several types (relay, push exception, recording
    /// status, …) without a signature, so an unguessable URL is their only
    /// authentication. At least [`MIN_PATH_SECRET_LEN`] characters of
    /// `A-Z a-z 0-9 - _ . ~`; never logged or shown. From the environment:
    /// `RECORDHOOK__AUTH__PATH_SECRET`.
    #[serde(serialize_with = "crate::redact::option")]
    pub path_secret: Option<SecretString>,
    /// Event types accepted without a signature on the secret path, by number
    /// or name (e.g. `[314, "push_exception", "record_status"]`). Never 100
    /// (recordings are signed); needs `path_secret`. Callbacks that carry
    /// `t` or `sign` are verified whatever their type and path. Default none.
    pub unsigned_event_types: EventTypes,
}

/// Shortest `auth.path_secret`: 32 characters, about 190 bits from the URL-safe alphabet.
pub const MIN_PATH_SECRET_LEN: usize = 32;

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            key_file: String::new(),
            allow_unsigned: false,
            clock_skew_secs: 60,
            max_validity_secs: 600,
            expiry_grace_secs: 0,
            path_secret: None,
            unsigned_event_types: EventTypes::default(),
        }
    }
}

impl AuthSettings {
    /// Every configured key: `keys` plus the lines of `key_file`, empty ones dropped.
    pub fn load_keys(&self) -> Result<Vec<SecretString>, ConfigError> {
        let mut keys: Vec<SecretString> = self
            .keys
            .iter()
            .filter(|key| !key.expose_secret().trim().is_empty())
            .map(|key| SecretString::from(key.expose_secret().trim()))
            .collect();
        if !self.key_file.is_empty() {
            let path = PathBuf::from(&self.key_file);
            let text = std::fs::read_to_string(&path)
                .map_err(|source| ConfigError::KeyFile { path, source })?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(SecretString::from),
            );
        }
        Ok(keys)
    }

    /// Checks `path_secret` and `unsigned_event_types`; no message repeats the secret.
    fn validate_unsigned(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.to_owned(),
            reason,
        };
        if let Some(secret) = &self.path_secret {
            let secret = secret.expose_secret();
            if secret.chars().count() < MIN_PATH_SECRET_LEN {
                return Err(invalid(
                    "auth.path_secret",
                    format!("must be at least {MIN_PATH_SECRET_LEN} characters long"),
                ));
            }
            let url_safe = |c: char| c.is_ascii_alphanumeric() || "-_.~".contains(c);
            if !secret.chars().all(url_safe) {
                return Err(invalid(
                    "auth.path_secret",
                    "may hold only A-Z, a-z, 0-9, `-`, `_`, `.` and `~` (it is a URL path segment)"
                        .to_owned(),
                ));
            }
        }
        let unsigned = &self.unsigned_event_types;
        if unsigned.contains(RECORDING_EVENT_TYPE) {
            return Err(invalid(
                "auth.unsigned_event_types",
                "must not include 100 (record), nor \"*\": recording callbacks are always signed"
                    .to_owned(),
            ));
        }
        if !unsigned.is_empty() && self.path_secret.is_none() {
            return Err(invalid(
                "auth.unsigned_event_types",
                "needs auth.path_secret: unsigned callbacks are accepted only on the secret path"
                    .to_owned(),
            ));
        }
        if !unsigned.is_empty() && self.allow_unsigned {
            return Err(invalid(
                "auth.unsigned_event_types",
                "has no effect while auth.allow_unsigned = true: remove one of them".to_owned(),
            ));
        }
        Ok(())
    }

    /// The accepted window around `t`.
    pub fn time_window(&self) -> TimeWindow {
        let secs = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        TimeWindow {
            clock_skew_secs: secs(self.clock_skew_secs),
            max_validity_secs: secs(self.max_validity_secs),
            expiry_grace_secs: secs(self.expiry_grace_secs),
        }
    }

    /// The authenticator these settings describe, with the key file read now.
    pub fn authenticator(&self) -> Result<Authenticator, ConfigError> {
        if self.allow_unsigned {
            return Ok(Authenticator::unsigned(self.time_window()));
        }
        let keys = self.load_keys()?;
        if keys.is_empty() {
            return Err(ConfigError::NoKeys);
        }
        let unsigned = self
            .unsigned_event_types
            .listed()
            .map(<[i64]>::to_vec)
            .unwrap_or_default();
        Ok(Authenticator::with_keys(keys, self.time_window())
            .allowing_unsigned_on_secret_path(unsigned))
    }
}

/// Reads a list of secrets from a list, or from one comma-separated string
/// (the form environment variables give).
fn list_or_comma_separated<'de, D>(deserializer: D) -> Result<Vec<SecretString>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrText {
        List(Vec<String>),
        Text(String),
    }
    let items = match ListOrText::deserialize(deserializer)? {
        ListOrText::List(items) => items,
        ListOrText::Text(text) => text.split(',').map(str::to_owned).collect(),
    };
    Ok(items.into_iter().map(SecretString::from).collect())
}

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

/// Longest `spool.postgres.lease_secs`: one hour.
pub const MAX_LEASE_SECS: u64 = 3_600;
/// Most `spool.postgres.max_connections`.
pub const MAX_POSTGRES_CONNECTIONS: u64 = 1_000;

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
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 10,
            lease_secs: 30,
        }
    }
}

impl SpoolSettings {
    /// How to open the spool these settings describe.
    pub fn options(&self) -> crate::spool::SpoolOptions {
        crate::spool::SpoolOptions {
            path: self.path.clone(),
            postgres: match (self.backend, &self.postgres.url) {
                (SpoolBackend::Postgres, Some(url)) => Some(crate::spool::PostgresOptions {
                    url: url.clone(),
                    max_connections: usize::try_from(self.postgres.max_connections)
                        .unwrap_or(usize::MAX),
                    lease: std::time::Duration::from_secs(self.postgres.lease_secs),
                }),
                _ => None,
            },
            dedup_window: std::time::Duration::from_secs(self.dedup_window_secs),
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

fn default_sinks() -> Vec<SinkSettings> {
    vec![SinkSettings::log("console")]
}

/// Where settings come from, in increasing precedence after the built-in defaults.
#[derive(Debug, Default)]
pub struct Sources {
    /// The repository's `config/default.toml`, read when it exists.
    pub repo_default: Option<PathBuf>,
    /// A file the user named; it must exist.
    pub file: Option<PathBuf>,
    /// Environment variables to read; `None` reads the process environment.
    pub environment: Option<BTreeMap<String, String>>,
}

impl Sources {
    /// The sources a running service uses: the repo default (if present in the
    /// working directory), `file`, and the process environment.
    pub fn standard(file: Option<PathBuf>) -> Self {
        Self {
            repo_default: Some(PathBuf::from(REPO_DEFAULT_CONFIG)),
            file,
            environment: None,
        }
    }
}

impl Settings {
    /// Loads and validates the settings from `sources`.
    pub fn load(sources: Sources) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = &sources.repo_default {
            builder = builder.add_source(config::File::from(path.as_path()).required(false));
        }
        if let Some(path) = &sources.file {
            builder = builder.add_source(config::File::from(path.as_path()).required(true));
        }
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            // Values stay strings (so a numeric key stays a key); serde
            // converts them where a number or boolean is expected, and
            // `auth.keys` splits a comma-separated string itself.
            .try_parsing(false)
            .source(
                sources
                    .environment
                    .map(|vars| vars.into_iter().collect::<config::Map<_, _>>()),
            );
        let settings: Settings = builder.add_source(environment).build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what the types alone cannot (all but key presence, see
    /// [`AuthSettings::authenticator`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        let path = &self.server.callback_path;
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            return Err(invalid(
                "server.callback_path",
                "must be an absolute path such as /callback",
            ));
        }
        if [HEALTH_PATH, READY_PATH, METRICS_PATH].contains(&path.as_str()) {
            return Err(invalid(
                "server.callback_path",
                "is taken by a built-in endpoint",
            ));
        }
        let (server, auth, spool) = (&self.server, &self.auth, &self.spool);
        for (key, value, min, max) in [
            (
                "server.max_body_bytes",
                server.max_body_bytes as u64,
                1,
                MAX_BODY_BYTES,
            ),
            (
                "server.max_connections",
                server.max_connections as u64,
                1,
                MAX_CONNECTIONS,
            ),
            (
                "server.shutdown_grace_secs",
                server.shutdown_grace_secs,
                0,
                MAX_SERVER_TIMEOUT_SECS,
            ),
            (
                "server.header_read_timeout_secs",
                server.header_read_timeout_secs,
                1,
                MAX_SERVER_TIMEOUT_SECS,
            ),
            (
                "server.request_timeout_secs",
                server.request_timeout_secs,
                1,
                MAX_SERVER_TIMEOUT_SECS,
            ),
            (
                "auth.clock_skew_secs",
                auth.clock_skew_secs,
                0,
                MAX_CLOCK_SKEW_SECS,
            ),
            (
                "auth.max_validity_secs",
                auth.max_validity_secs,
                1,
                MAX_SIGNATURE_WINDOW_SECS,
            ),
            (
                "auth.expiry_grace_secs",
                auth.expiry_grace_secs,
                0,
                MAX_SIGNATURE_WINDOW_SECS,
            ),
            (
                "spool.dedup_window_secs",
                spool.dedup_window_secs,
                0,
                MAX_SPOOL_WINDOW_SECS,
            ),
            (
                "spool.retention_secs",
                spool.retention_secs,
                0,
                MAX_SPOOL_WINDOW_SECS,
            ),
            (
                "spool.postgres.max_connections",
                spool.postgres.max_connections,
                2,
                MAX_POSTGRES_CONNECTIONS,
            ),
            (
                "spool.postgres.lease_secs",
                spool.postgres.lease_secs,
                1,
                MAX_LEASE_SECS,
            ),
        ] {
            if value < min || value > max {
                return Err(ConfigError::Invalid {
                    key: key.to_owned(),
                    reason: format!("must be between {min} and {max}, not {value}"),
                });
            }
        }
        if auth.allow_unsigned && (!auth.keys.is_empty() || !auth.key_file.is_empty()) {
            return Err(invalid(
                "auth.allow_unsigned",
                "cannot be true while auth.keys or auth.key_file are set: remove one of them",
            ));
        }
        auth.validate_unsigned()?;
        self.admin.validate()?;
        self.reconcile
            .validate(spool.dedup_window_secs)
            .map_err(|err| ConfigError::Invalid {
                key: format!("reconcile.{}", err.key),
                reason: err.reason,
            })?;
        // Key presence is checked by `AuthSettings::authenticator` when the
        // server starts, so admin commands work without the key.
        match self.spool.backend {
            SpoolBackend::Sqlite if self.spool.path.as_os_str().is_empty() => {
                return Err(invalid("spool.path", "must name a file"));
            }
            SpoolBackend::Postgres => match &self.spool.postgres.url {
                None => {
                    return Err(invalid(
                        "spool.postgres.url",
                        "is needed with spool.backend = \"postgres\" \
                         (or set RECORDHOOK__SPOOL__POSTGRES__URL)",
                    ));
                }
                Some(url) if !["postgres", "postgresql"].contains(&url.scheme()) => {
                    return Err(invalid(
                        "spool.postgres.url",
                        "must be a postgres:// or postgresql:// URL",
                    ));
                }
                Some(_) => {}
            },
            SpoolBackend::Sqlite => {}
        }
        if self.sinks.is_empty() {
            return Err(invalid("sinks", "at least one sink is needed"));
        }
        let mut names = HashSet::new();
        let mut file_paths = HashSet::new();
        for (index, sink) in self.sinks.iter().enumerate() {
            let key = |field: &str| format!("sinks[{index}].{field}");
            sink.validate().map_err(|err| ConfigError::Invalid {
                key: key(err.field),
                reason: err.reason,
            })?;
            if !names.insert(sink.name.as_str()) {
                return Err(ConfigError::Invalid {
                    key: key("name"),
                    reason: format!(
                        "sink name `{}` is used twice; names must be unique",
                        sink.name
                    ),
                });
            }
            if let SinkKind::File(file) = &sink.kind
                && !file_paths.insert(file.path.clone())
            {
                return Err(invalid(
                    &key("path"),
                    "another file sink writes the same file; lines would interleave",
                ));
            }
        }
        Ok(())
    }
}

impl Settings {
    /// The effective settings as TOML, with every key and secret redacted.
    pub fn to_redacted_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

/// Reads the settings a command should use: `file` when given, else nothing
/// beyond the repo default and the environment.
pub fn load_for_file(file: Option<&Path>) -> Result<Settings, ConfigError> {
    Settings::load(Sources::standard(file.map(Path::to_path_buf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn load_toml(toml: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        Settings::load(Sources {
            repo_default: None,
            file: Some(file.path().to_path_buf()),
            environment: env(vars),
        })
    }

    #[test]
    fn defaults_need_a_key_to_serve() {
        let err = load_toml("", &[])
            .unwrap()
            .auth
            .authenticator()
            .unwrap_err();
        assert!(matches!(err, ConfigError::NoKeys), "{err}");
    }

    #[test]
    fn the_shipped_default_config_loads_with_a_key_from_the_environment() {
        let settings = Settings::load(Sources {
            repo_default: Some(PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config/default.toml"
            ))),
            file: None,
            environment: env(&[("RECORDHOOK__AUTH__KEYS", "k1")]),
        })
        .unwrap();
        assert_eq!(settings.server.callback_path, "/callback");
        assert_eq!(settings.sinks.len(), 1);
        assert_eq!(settings.sinks[0].name, "console");
    }

    #[test]
    fn every_shipped_config_file_loads() {
        for name in ["default", "minimal", "production", "docker"] {
            let path = PathBuf::from(format!("{}/config/{name}.toml", env!("CARGO_MANIFEST_DIR")));
            let settings = Settings::load(Sources {
                repo_default: None,
                file: Some(path),
                environment: env(&[("RECORDHOOK__AUTH__KEYS", "k")]),
            });
            assert!(settings.is_ok(), "config/{name}.toml: {:?}", settings.err());
        }
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

    #[test]
    fn environment_variables_override_files_and_split_key_lists() {
        let settings = load_toml(
            "[server]\nlisten = \"127.0.0.1:1\"\n",
            &[
                ("RECORDHOOK__SERVER__LISTEN", "127.0.0.1:9000"),
                ("RECORDHOOK__AUTH__KEYS", "key1,key2"),
                ("RECORDHOOK__AUTH__CLOCK_SKEW_SECS", "5"),
            ],
        )
        .unwrap();
        assert_eq!(settings.server.listen.port(), 9000);
        let keys: Vec<String> = settings
            .auth
            .load_keys()
            .unwrap()
            .iter()
            .map(|k| k.expose_secret().to_owned())
            .collect();
        assert_eq!(keys, ["key1", "key2"]);
        assert_eq!(settings.auth.clock_skew_secs, 5);
    }

    #[test]
    fn a_numeric_key_from_the_environment_stays_a_string() {
        let settings = load_toml("", &[("RECORDHOOK__AUTH__KEYS", "12345")]).unwrap();
        assert_eq!(
            settings.auth.load_keys().unwrap()[0].expose_secret(),
            "12345"
        );
    }

    #[test]
    fn an_unknown_key_is_an_error_that_names_it() {
        let err = load_toml("[auth]\nkeys = [\"k\"]\nclock_skew = 5\n", &[]).unwrap_err();
        assert!(err.to_string().contains("clock_skew"), "{err}");
    }

    #[test]
    fn an_unknown_sink_type_lists_the_valid_ones() {
        let toml = "[auth]\nkeys=[\"k\"]\n[[sinks]]\nname=\"x\"\ntype=\"kafka\"\n";
        let err = load_toml(toml, &[]).unwrap_err().to_string();
        assert!(err.contains("kafka") && err.contains("log"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected_with_the_setting_named() {
        const KEY: &str = "\n[auth]\nkeys = [\"k\"]\n";
        let with_key = |toml: &str| format!("{toml}{KEY}");
        let sink = "[[sinks]]\nname = \"a\"\ntype = \"log\"\n";
        let forward = "[[sinks]]\nname = \"w\"\ntype = \"forward\"\nurl = \"http://h/\"\n";
        let cases = [
            (
                with_key("[server]\ncallback_path = \"callback\""),
                "server.callback_path",
            ),
            (
                with_key("[server]\ncallback_path = \"/healthz\""),
                "server.callback_path",
            ),
            (
                with_key("[server]\nmax_body_bytes = 0"),
                "server.max_body_bytes",
            ),
            (with_key("[server]\nlisten = \"not an address\""), "listen"),
            (
                "[auth]\nkeys = [\"k\"]\nmax_validity_secs = 0".to_owned(),
                "auth.max_validity_secs",
            ),
            (
                "[auth]\nkeys = [\"k\"]\nallow_unsigned = true".to_owned(),
                "auth.allow_unsigned",
            ),
            (
                "[auth]\nkeys = [\"k\"]\nunsigned_event_types = [314]".to_owned(),
                "needs auth.path_secret",
            ),
            (
                format!(
                    "[auth]\nkeys = [\"k\"]\npath_secret = \"{}\"",
                    "s".repeat(31)
                ),
                "at least 32 characters",
            ),
            (
                format!(
                    "[auth]\nkeys = [\"k\"]\npath_secret = \"{}/x\"",
                    "s".repeat(32)
                ),
                "URL path segment",
            ),
            (
                format!(
                    "[auth]\nkeys = [\"k\"]\npath_secret = \"{}\"\nunsigned_event_types = [\"relay\", \"record\"]",
                    "s".repeat(32)
                ),
                "must not include 100",
            ),
            (
                format!(
                    "[auth]\nkeys = [\"k\"]\npath_secret = \"{}\"\nunsigned_event_types = \"*\"",
                    "s".repeat(32)
                ),
                "must not include 100",
            ),
            (
                "[auth]\nkeys = [\"k\"]\nunsigned_event_types = [\"relays\"]".to_owned(),
                "valid names are",
            ),
            (with_key(&format!("{sink}{sink}")), "sinks[1].name"),
            (
                with_key(&format!("{sink}event_types = []")),
                "sinks[0].event_types",
            ),
            (
                with_key(&format!("{sink}event_types = [\"recording\"]")),
                "valid names are: push_end, push_start, record,",
            ),
            (
                with_key(&format!("{sink}max_attempts = 0")),
                "sinks[0].max_attempts",
            ),
            (
                with_key(&format!("{sink}retry_initial_ms = 0")),
                "sinks[0].retry_initial_ms",
            ),
            (with_key("sinks = []"), "sinks"),
            (
                with_key("[[sinks]]\nname = \"f\"\ntype = \"file\""),
                "sinks[0].path",
            ),
            (
                with_key(&format!("{sink}path = \"x.jsonl\"")),
                "does not apply to a `log` sink",
            ),
            (
                with_key("[[sinks]]\nname = \"w\"\ntype = \"forward\""),
                "sinks[0].url",
            ),
            (
                with_key("[[sinks]]\nname = \"w\"\ntype = \"forward\"\nurl = \"not a url\""),
                "not a valid URL",
            ),
            (
                with_key("[[sinks]]\nname = \"w\"\ntype = \"forward\"\nurl = \"ftp://h/x\""),
                "http:// or https://",
            ),
            (
                with_key(
                    "[[sinks]]\nname = \"w\"\ntype = \"forward\"\nurl = \"http://h/\"\nsigning_secret = \"nope\"",
                ),
                "whsec_",
            ),
            (
                with_key(
                    "[[sinks]]\nname = \"w\"\ntype = \"forward\"\nurl = \"http://h/\"\nheaders = { \"a b\" = \"x\" }",
                ),
                "header name",
            ),
            (
                with_key(
                    "[[sinks]]\nname = \"w\"\ntype = \"forward\"\nurl = \"http://h/\"\npath = \"x\"",
                ),
                "does not apply to a `forward` sink",
            ),
            (
                with_key(
                    "[[sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\n[[sinks]]\nname = \"b\"\ntype = \"file\"\npath = \"x\"",
                ),
                "same file",
            ),
            (
                with_key(&format!(
                    "[server]\nmax_body_bytes = {}",
                    MAX_BODY_BYTES + 1
                )),
                "server.max_body_bytes",
            ),
            (
                with_key(&format!(
                    "[server]\nmax_connections = {}",
                    MAX_CONNECTIONS + 1
                )),
                "server.max_connections",
            ),
            (
                with_key("[server]\nshutdown_grace_secs = 3601"),
                "server.shutdown_grace_secs",
            ),
            (
                with_key("[server]\nheader_read_timeout_secs = 3601"),
                "server.header_read_timeout_secs",
            ),
            (
                with_key("[server]\nrequest_timeout_secs = 9223372036854775807"),
                "server.request_timeout_secs",
            ),
            (
                with_key("[server]\nrequest_timeout_secs = 3601"),
                "must be between 1 and 3600, not 3601",
            ),
            (
                "[auth]\nkeys = [\"k\"]\nclock_skew_secs = 86401".to_owned(),
                "auth.clock_skew_secs",
            ),
            (
                "[auth]\nkeys = [\"k\"]\nmax_validity_secs = 604801".to_owned(),
                "auth.max_validity_secs",
            ),
            (
                "[auth]\nkeys = [\"k\"]\nexpiry_grace_secs = 604801".to_owned(),
                "auth.expiry_grace_secs",
            ),
            (
                "[auth]\nkey_file = \"/run/keys\"\nallow_unsigned = true".to_owned(),
                "auth.allow_unsigned",
            ),
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
            (
                with_key(&format!(
                    "{sink}max_attempts = {}",
                    crate::sinks::MAX_ATTEMPTS + 1
                )),
                "sinks[0].max_attempts",
            ),
            (
                with_key(&format!(
                    "{sink}retry_max_ms = {}",
                    crate::sinks::MAX_RETRY_MS + 1
                )),
                "sinks[0].retry_max_ms",
            ),
            (
                with_key(&format!("{sink}retry_initial_ms = 700000")),
                "sinks[0].retry_initial_ms",
            ),
            (
                with_key(&format!("{forward}timeout_secs = 0")),
                "sinks[0].timeout_secs",
            ),
            (
                with_key(&format!("{forward}timeout_secs = 3601")),
                "sinks[0].timeout_secs",
            ),
            (
                with_key(&format!("{forward}concurrency = 0")),
                "sinks[0].concurrency",
            ),
            (
                with_key(&format!(
                    "{forward}concurrency = {}",
                    crate::sinks::MAX_FORWARD_CONCURRENCY + 1
                )),
                "sinks[0].concurrency",
            ),
            (
                with_key(&format!("{sink}colour = \"red\"")),
                "unknown field `colour`",
            ),
        ];
        for (toml, expected) in cases {
            let err = load_toml(&toml, &[]).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "config {toml:?}: expected `{expected}` in {err}"
            );
        }
    }

    #[test]
    fn a_full_sink_configuration_loads() {
        let toml = r#"
            [auth]
            keys = ["k"]
            [[sinks]]
            name = "archive"
            type = "file"
            path = "./data/records.jsonl"
            rotate_max_bytes = 1000
            [[sinks]]
            name = "backend"
            type = "forward"
            url = "https://backend.example.com/hooks/recording"
            timeout_secs = 3
            headers = { Authorization = "Bearer abc" }
            signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            event_types = [100, 0, 1]
            max_attempts = 3
        "#;
        let settings = load_toml(toml, &[]).unwrap();
        assert_eq!(settings.sinks.len(), 2);
        assert_eq!(settings.sinks[1].event_types, vec![100, 0, 1].into());
        let SinkKind::Forward(forward) = &settings.sinks[1].kind else {
            panic!("not a forward sink: {:?}", settings.sinks[1]);
        };
        assert_eq!(forward.timeout_secs, 3);
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("Bearer abc") && !debug.contains("MfKQ9r8"),
            "{debug}"
        );
        assert_eq!(crate::sinks::build(&settings.sinks).unwrap().len(), 2);
    }

    #[test]
    fn the_path_secret_is_read_from_the_environment_and_never_shown() {
        let secret = "PathSecret-0123456789abcdefghijklmnop";
        let settings = load_toml(
            "[auth]\nkeys = [\"k\"]\nunsigned_event_types = [314, \"push_exception\", \"record_status\"]\n",
            &[("RECORDHOOK__AUTH__PATH_SECRET", secret)],
        )
        .unwrap();
        assert_eq!(
            settings
                .auth
                .path_secret
                .as_ref()
                .map(|s| s.expose_secret().to_owned()),
            Some(secret.to_owned())
        );
        assert_eq!(
            settings.auth.unsigned_event_types,
            vec![314, 321, 332].into()
        );
        let shown = format!("{}{settings:?}", settings.to_redacted_toml().unwrap());
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("path_secret = \"[redacted]\""), "{shown}");
        let short = load_toml(
            "[auth]\nkeys = [\"k\"]\n",
            &[("RECORDHOOK__AUTH__PATH_SECRET", "tooShortSecret")],
        )
        .unwrap_err()
        .to_string();
        assert!(!short.contains("tooShortSecret"), "{short}");
    }

    #[test]
    fn sinks_select_event_types_by_name_number_or_star() {
        let toml = "[auth]\nkeys = [\"k\"]\n\
            [[sinks]]\nname = \"a\"\ntype = \"log\"\nevent_types = [\"push_start\", 0, \"record_status\"]\n\
            [[sinks]]\nname = \"b\"\ntype = \"log\"\nevent_types = [\"*\"]\n\
            [[sinks]]\nname = \"c\"\ntype = \"log\"\n";
        let settings = load_toml(toml, &[]).unwrap();
        assert_eq!(settings.sinks[0].event_types, vec![1, 0, 332].into());
        assert_eq!(
            settings.sinks[1].event_types,
            crate::protocol::EventTypes::All
        );
        assert_eq!(settings.sinks[2].event_types, vec![100].into());
        let shown = settings.to_redacted_toml().unwrap();
        assert!(
            shown.contains(r#""record_status","#) && shown.contains(r#"event_types = ["*"]"#),
            "{shown}"
        );
    }

    /// Every bound at its maximum, as one configuration.
    fn settings_at_every_maximum() -> Settings {
        let toml = format!(
            "[server]\nmax_body_bytes = {MAX_BODY_BYTES}\nmax_connections = {MAX_CONNECTIONS}\n\
             shutdown_grace_secs = {t}\nheader_read_timeout_secs = {t}\nrequest_timeout_secs = {t}\n\
             [auth]\nkeys = [\"k\"]\nclock_skew_secs = {MAX_CLOCK_SKEW_SECS}\n\
             max_validity_secs = {w}\nexpiry_grace_secs = {w}\n\
             [spool]\ndedup_window_secs = {MAX_SPOOL_WINDOW_SECS}\n\
             retention_secs = {MAX_SPOOL_WINDOW_SECS}\nmax_bytes = {}\n\
             [[sinks]]\nname = \"w\"\ntype = \"forward\"\nurl = \"http://h/\"\n\
             max_attempts = {}\nretry_initial_ms = {r}\nretry_max_ms = {r}\n\
             timeout_secs = {}\nconcurrency = {}\n",
            i64::MAX,
            crate::sinks::MAX_ATTEMPTS,
            crate::sinks::MAX_FORWARD_TIMEOUT_SECS,
            crate::sinks::MAX_FORWARD_CONCURRENCY,
            t = MAX_SERVER_TIMEOUT_SECS,
            w = MAX_SIGNATURE_WINDOW_SECS,
            r = crate::sinks::MAX_RETRY_MS,
        );
        load_toml(&toml, &[]).unwrap()
    }

    #[tokio::test]
    async fn the_largest_accepted_values_do_not_panic_when_put_to_use() {
        use std::time::{Duration, Instant, SystemTime};
        let settings = settings_at_every_maximum();
        let (now, instant) = (SystemTime::now(), Instant::now());
        // What the server turns them into: timers from now, and times before now.
        for secs in [
            settings.server.shutdown_grace_secs,
            settings.server.header_read_timeout_secs,
            settings.server.request_timeout_secs,
        ] {
            let _ = instant + Duration::from_secs(secs);
            let _ = now + Duration::from_secs(secs);
            tokio::time::timeout(Duration::from_secs(secs), async {})
                .await
                .unwrap();
        }
        for secs in [
            settings.spool.dedup_window_secs,
            settings.spool.retention_secs,
        ] {
            let _ = crate::spool::unix_ms(now - Duration::from_secs(secs));
            let _ = crate::spool::unix_ms(now + Duration::from_secs(secs));
        }
        let _ = tokio::sync::Semaphore::new(settings.server.max_connections);
        let window = settings.auth.time_window();
        assert!(window.max_validity_secs > 0 && window.expiry_grace_secs > 0);
        let dir = tempfile::tempdir().unwrap();
        crate::spool::Spool::open(&crate::spool::SpoolOptions {
            path: dir.path().join("spool.db"),
            ..settings.spool.options()
        })
        .await
        .unwrap();
        // A sink's retries: the longest delay (even when the target asks for
        // more), added to now, as the delivery worker does.
        let sinks = crate::sinks::build(&settings.sinks).unwrap();
        for sink in &sinks {
            for attempts in [1, sink.max_attempts, u32::MAX] {
                let delay = crate::delivery::retry_delay(
                    attempts,
                    sink.retry_initial,
                    sink.retry_max,
                    Some(Duration::MAX),
                    1.0,
                );
                assert_eq!(delay, sink.retry_max);
                let at = crate::spool::unix_ms(now + delay);
                assert!(at > crate::spool::unix_ms(now));
                let _ = instant + delay;
            }
        }
    }

    #[test]
    fn allow_unsigned_starts_without_keys() {
        let settings = load_toml("[auth]\nallow_unsigned = true\n", &[]).unwrap();
        assert!(settings.auth.allow_unsigned);
    }

    #[test]
    fn the_key_file_adds_one_key_per_line_skipping_comments() {
        let mut keys = tempfile::NamedTempFile::new().unwrap();
        keys.write_all(b"# rotated 2026-11\nfirst\n\n  second  \n")
            .unwrap();
        let toml = format!("[auth]\nkey_file = {:?}\n", keys.path());
        let settings = load_toml(&toml, &[]).unwrap();
        let loaded: Vec<String> = settings
            .auth
            .load_keys()
            .unwrap()
            .iter()
            .map(|k| k.expose_secret().to_owned())
            .collect();
        assert_eq!(loaded, ["first", "second"]);
    }

    #[test]
    fn a_missing_key_file_is_an_error_naming_it() {
        let settings = load_toml("[auth]\nkey_file = \"/nonexistent/keys\"\n", &[]).unwrap();
        let err = settings.auth.authenticator().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/keys"), "{err}");
    }

    #[test]
    fn the_redacted_toml_hides_every_secret() {
        let toml = r#"
            [auth]
            keys = ["super-secret-key"]
            [[sinks]]
            name = "backend"
            type = "forward"
            url = "https://backend.example.com/hook"
            headers = { Authorization = "Bearer hidden-token" }
            signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        "#;
        let text = load_toml(toml, &[]).unwrap().to_redacted_toml().unwrap();
        for secret in ["super-secret-key", "hidden-token", "MfKQ9r8"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("Authorization = \"[redacted]\""), "{text}");
        assert!(text.contains("type = \"forward\""), "{text}");
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let settings = load_toml("[auth]\nkeys = [\"super-secret-key\"]\n", &[]).unwrap();
        assert!(!format!("{settings:?}").contains("super-secret-key"));
    }

    #[test]
    fn an_admin_listener_needs_tokens_unless_loopback_is_explicitly_allowed() {
        let load =
            |admin: &str| load_toml(&format!("[auth]\nkeys = [\"k\"]\n[admin]\n{admin}"), &[]);
        let key = |admin: &str| match load(admin) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{admin}: {other:?}"),
        };
        assert!(load("").unwrap().admin.address().unwrap().is_none());
        assert_eq!(key("listen = \"127.0.0.1:9090\""), "admin.tokens");
        assert_eq!(
            key("listen = \"0.0.0.0:9090\"\nallow_loopback_without_token = true"),
            "admin.tokens"
        );
        assert_eq!(
            key("listen = \"127.0.0.1:9090\"\ntokens = [\"short\"]"),
            "admin.tokens"
        );
        assert_eq!(key("listen = \"nowhere\""), "admin.listen");
        let loopback = load("listen = \"127.0.0.1:9090\"\nallow_loopback_without_token = true");
        assert!(loopback.is_ok());
        let tokens = load_toml(
            "[auth]\nkeys = [\"k\"]\n[admin]\nlisten = \"0.0.0.0:9090\"\n",
            &[(
                "RECORDHOOK__ADMIN__TOKENS",
                "0123456789abcdef0,0123456789abcdef1",
            )],
        )
        .unwrap();
        assert_eq!(tokens.admin.tokens.len(), 2);
        let shown = tokens.to_redacted_toml().unwrap();
        assert!(!shown.contains("0123456789abcdef0"), "{shown}");
    }
}
