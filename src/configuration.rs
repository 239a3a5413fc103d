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

use crate::protocol::{Authenticator, TimeWindow};
// The log settings live with the logs; re-exported so
// `configuration::LogSettings` keeps naming them for existing callers.
pub use crate::telemetry::{LogFormat, LogSettings};

/// The config file shipped in the repository; read when present in the
/// working directory, so `cargo run` from a checkout uses it.
pub const REPO_DEFAULT_CONFIG: &str = "config/default.toml";

/// Prefix of environment variables that override settings.
const ENV_PREFIX: &str = "RECORDHOOK";

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
    /// Largest callback body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// How long, on SIGTERM or SIGINT, in-flight requests and deliveries may take to finish.
    pub shutdown_grace_secs: u64,
    /// Connections served at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (or finish a TLS
    /// handshake); idle keep-alive connections are closed after it too.
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a request's body; slower ones get 408.
    pub request_timeout_secs: u64,
    /// Serve HTTPS with these PEM files; absent serves plain HTTP (behind a TLS proxy).
    pub tls: Option<TlsSettings>,
}

/// Native TLS.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
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

/// How callbacks are authenticated.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Callback keys as set in the CSS console. Several may be given during a
    /// rotation: a callback is authentic when any one of them matches. From the
    /// environment: `RECORDHOOK__AUTH__KEYS=key1,key2`.
    #[serde(
        deserialize_with = "list_or_comma_separated",
        serialize_with = "redacted_list"
    )]
    pub keys: Vec<SecretString>,
    /// Optional file with one key per line (blank lines and `#` comments ignored),
    /// for Docker or Kubernetes secrets. Empty means none.
    pub key_file: String,
    /// Accept callbacks without checking `sign` and `t`. Must be set explicitly;
    /// a warning is logged at start-up.
    pub allow_unsigned: bool,
    /// Seconds of tolerance for clocks that disagree, applied to both ends of the window.
    pub clock_skew_secs: u64,
    /// How far ahead of now `t` may lie, in seconds (CSS signs for 10 minutes).
    pub max_validity_secs: u64,
    /// Extra seconds a callback is accepted after `t` has passed, for late CSS retries.
    pub expiry_grace_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            key_file: String::new(),
            allow_unsigned: false,
            clock_skew_secs: 60,
            max_validity_secs: 600,
            expiry_grace_secs: 0,
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
        Ok(Authenticator::with_keys(keys, self.time_window()))
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

/// What a secret is printed as.
const REDACTED: &str = "[redacted]";

fn redacted_list<S: serde::Serializer>(
    secrets: &[SecretString],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(secrets.iter().map(|_| REDACTED))
}

fn redacted_option<S: serde::Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => serializer.serialize_some(REDACTED),
        None => serializer.serialize_none(),
    }
}

fn redacted_map<S: serde::Serializer>(
    map: &Option<BTreeMap<String, SecretString>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match map {
        Some(map) => serializer.collect_map(map.keys().map(|name| (name, REDACTED))),
        None => serializer.serialize_none(),
    }
}

/// The durable store of accepted callbacks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSettings {
    /// SQLite database file; its directory is created when missing.
    pub path: PathBuf,
    /// For how long, in seconds, a callback with the same event id is
    /// recognised as a duplicate (answered 200, not stored again).
    pub dedup_window_secs: u64,
    /// How long, in seconds, a record that every sink has delivered stays in
    /// the spool before it is removed. Undelivered records and dead letters stay.
    pub retention_secs: u64,
    /// Largest size of the spool database in bytes; 0 means no limit. At the
    /// limit callbacks get 503 (CSS retries them), as on a full disk; set it
    /// below the free space of the volume so the spool fills before the disk.
    pub max_bytes: u64,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./data/spool.db"),
            dedup_window_secs: 604_800,
            retention_secs: 86_400,
            max_bytes: 0,
        }
    }
}

/// The kinds of sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum SinkType {
    /// One structured log event per record.
    Log,
    /// Appends JSON Lines to a file.
    File,
    /// POSTs each record to an HTTP URL.
    Forward,
}

impl SinkType {
    /// Every type, as written in the configuration.
    pub const ALL: [(&'static str, SinkType); 3] = [
        ("log", SinkType::Log),
        ("file", SinkType::File),
        ("forward", SinkType::Forward),
    ];
}

impl From<SinkType> for String {
    fn from(kind: SinkType) -> Self {
        SinkType::ALL
            .iter()
            .find(|(_, known)| *known == kind)
            .map_or("?", |(name, _)| *name)
            .to_owned()
    }
}

impl TryFrom<String> for SinkType {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, kind)| *kind)
            .ok_or_else(|| {
                let valid: Vec<&str> = Self::ALL.iter().map(|(known, _)| *known).collect();
                format!(
                    "unknown sink type `{name}`; valid types are: {}",
                    valid.join(", ")
                )
            })
    }
}

/// One delivery target. Settings shared by every type come first; the rest
/// apply to one type only and are rejected on the others.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSettings {
    /// Unique name, used in logs, metrics and the dead-letter commands.
    pub name: String,
    /// Which kind of sink this is.
    #[serde(rename = "type")]
    pub kind: SinkType,
    /// Event types this sink receives (100 is a recording file).
    #[serde(default = "default_event_types")]
    pub event_types: Vec<i64>,
    /// Attempts before a delivery becomes a dead letter.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds; doubles on every further retry.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest delay between two attempts, in milliseconds.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,

    /// `file` only: the JSON Lines file to append to; its directory is created.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `file` only: rotate when the file would grow past this many bytes; 0 never rotates by size.
    #[serde(default)]
    pub rotate_max_bytes: Option<u64>,
    /// `file` only: rotate when the UTC date changes.
    #[serde(default)]
    pub rotate_daily: Option<bool>,
    /// `file` only: rotated files to keep (oldest removed first); 0 keeps all.
    #[serde(default)]
    pub keep_rotated: Option<usize>,

    /// `forward` only: the `http` or `https` URL to POST records to.
    #[serde(default)]
    pub url: Option<String>,
    /// `forward` only: seconds before an attempt is abandoned (and retried).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// `forward` only: extra request headers, e.g. `{ Authorization = "Bearer ..." }`.
    #[serde(default, serialize_with = "redacted_map")]
    pub headers: Option<BTreeMap<String, SecretString>>,
    /// `forward` only: `whsec_<base64>` to sign requests with Standard Webhooks headers; empty: unsigned.
    #[serde(default, serialize_with = "redacted_option")]
    pub signing_secret: Option<SecretString>,
    /// `forward` only: requests in flight at once.
    #[serde(default)]
    pub concurrency: Option<usize>,
}

/// Default size at which a file sink rotates: 100 MiB.
pub const DEFAULT_ROTATE_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// Default number of rotated files a file sink keeps.
pub const DEFAULT_KEEP_ROTATED: usize = 30;
/// Default forward timeout.
pub const DEFAULT_FORWARD_TIMEOUT_SECS: u64 = 10;
/// Default forward concurrency.
pub const DEFAULT_FORWARD_CONCURRENCY: usize = 8;

impl SinkSettings {
    /// Checks that the type-specific settings fit the type.
    fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            key: format!("sinks[{index}].{field}"),
            reason,
        };
        let kind = SinkType::ALL
            .iter()
            .find(|(_, kind)| *kind == self.kind)
            .map_or("?", |(name, _)| *name);
        let only_for = |field: &str, set: bool, owner: SinkType| {
            if set && self.kind != owner {
                Err(invalid(field, format!("does not apply to a `{kind}` sink")))
            } else {
                Ok(())
            }
        };
        only_for("path", self.path.is_some(), SinkType::File)?;
        only_for(
            "rotate_max_bytes",
            self.rotate_max_bytes.is_some(),
            SinkType::File,
        )?;
        only_for("rotate_daily", self.rotate_daily.is_some(), SinkType::File)?;
        only_for("keep_rotated", self.keep_rotated.is_some(), SinkType::File)?;
        only_for("url", self.url.is_some(), SinkType::Forward)?;
        only_for(
            "timeout_secs",
            self.timeout_secs.is_some(),
            SinkType::Forward,
        )?;
        only_for("headers", self.headers.is_some(), SinkType::Forward)?;
        only_for(
            "signing_secret",
            self.signing_secret.is_some(),
            SinkType::Forward,
        )?;
        only_for("concurrency", self.concurrency.is_some(), SinkType::Forward)?;
        match self.kind {
            SinkType::Log => {}
            SinkType::File => {
                if self.path.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
                    return Err(invalid("path", "a file sink needs a path".to_owned()));
                }
            }
            SinkType::Forward => {
                let url = self
                    .url
                    .as_deref()
                    .ok_or_else(|| invalid("url", "a forward sink needs a url".to_owned()))?;
                let parsed = url::Url::parse(url)
                    .map_err(|err| invalid("url", format!("`{url}` is not a valid URL: {err}")))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                    return Err(invalid(
                        "url",
                        "must be an http:// or https:// URL with a host".to_owned(),
                    ));
                }
                if self.timeout_secs == Some(0) {
                    return Err(invalid("timeout_secs", "must be at least 1".to_owned()));
                }
                if self.concurrency == Some(0) {
                    return Err(invalid("concurrency", "must be at least 1".to_owned()));
                }
                if let Some(secret) = &self.signing_secret {
                    let secret = secret.expose_secret();
                    if !secret.is_empty() && crate::sinks::webhook_key(secret).is_none() {
                        return Err(invalid(
                            "signing_secret",
                            "must be `whsec_` followed by base64".to_owned(),
                        ));
                    }
                }
                for name in self.headers.iter().flat_map(BTreeMap::keys) {
                    if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(invalid(
                            "headers",
                            format!("`{name}` is not a valid header name"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn default_sinks() -> Vec<SinkSettings> {
    vec![SinkSettings {
        name: "console".to_owned(),
        kind: SinkType::Log,
        event_types: default_event_types(),
        max_attempts: default_max_attempts(),
        retry_initial_ms: default_retry_initial_ms(),
        retry_max_ms: default_retry_max_ms(),
        path: None,
        rotate_max_bytes: None,
        rotate_daily: None,
        keep_rotated: None,
        url: None,
        timeout_secs: None,
        headers: None,
        signing_secret: None,
        concurrency: None,
    }]
}

fn default_event_types() -> Vec<i64> {
    vec![100]
}

fn default_max_attempts() -> u32 {
    15
}

fn default_retry_initial_ms() -> u64 {
    1_000
}

fn default_retry_max_ms() -> u64 {
    600_000
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
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be at least 1"));
        }
        for (key, value) in [
            ("server.max_connections", self.server.max_connections as u64),
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs,
            ),
            (
                "server.request_timeout_secs",
                self.server.request_timeout_secs,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.auth.max_validity_secs == 0 {
            return Err(invalid("auth.max_validity_secs", "must be at least 1"));
        }
        if self.auth.allow_unsigned && !self.auth.keys.is_empty() {
            return Err(invalid(
                "auth.allow_unsigned",
                "cannot be true while auth.keys are set: remove one of them",
            ));
        }
        // Key presence is checked by `AuthSettings::authenticator` when the
        // server starts, so admin commands work without the key.
        if self.spool.path.as_os_str().is_empty() {
            return Err(invalid("spool.path", "must name a file"));
        }
        if self.sinks.is_empty() {
            return Err(invalid("sinks", "at least one sink is needed"));
        }
        let mut names = HashSet::new();
        let mut file_paths = HashSet::new();
        for (index, sink) in self.sinks.iter().enumerate() {
            let key = |field: &str| format!("sinks[{index}].{field}");
            if sink.name.trim().is_empty() {
                return Err(invalid(&key("name"), "must not be empty"));
            }
            if !names.insert(sink.name.as_str()) {
                return Err(ConfigError::Invalid {
                    key: key("name"),
                    reason: format!(
                        "sink name `{}` is used twice; names must be unique",
                        sink.name
                    ),
                });
            }
            if sink.event_types.is_empty() {
                return Err(invalid(
                    &key("event_types"),
                    "must list at least one event type",
                ));
            }
            if sink.max_attempts == 0 {
                return Err(invalid(&key("max_attempts"), "must be at least 1"));
            }
            if sink.retry_initial_ms == 0 || sink.retry_initial_ms > sink.retry_max_ms {
                return Err(invalid(
                    &key("retry_initial_ms"),
                    "must be at least 1 and no larger than retry_max_ms",
                ));
            }
            sink.validate(index)?;
            if let Some(path) = &sink.path
                && !file_paths.insert(path.clone())
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

/// Liveness endpoint.
pub const HEALTH_PATH: &str = "/healthz";
/// Readiness endpoint.
pub const READY_PATH: &str = "/readyz";
/// Prometheus metrics endpoint.
pub const METRICS_PATH: &str = "/metrics";

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
            (with_key(&format!("{sink}{sink}")), "sinks[1].name"),
            (
                with_key(&format!("{sink}event_types = []")),
                "sinks[0].event_types",
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
        assert_eq!(settings.sinks[1].event_types, [100, 0, 1]);
        assert_eq!(settings.sinks[1].timeout_secs, Some(3));
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("Bearer abc") && !debug.contains("MfKQ9r8"),
            "{debug}"
        );
        assert_eq!(crate::sinks::build(&settings.sinks).unwrap().len(), 2);
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
}
