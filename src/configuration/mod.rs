//! Typed settings, layered from built-in defaults, `config/default.toml`, an
//! optional file named on the command line or by `RECORDHOOK_CONFIG`, and
//! `RECORDHOOK__SECTION__KEY` environment variables ([`sources`]).
//!
//! A file a section: [`server`], [`auth`], [`spool`] and [`admin`] each hold
//! their struct, its defaults and bounds, and the `validate` that checks what
//! the types alone cannot. Sections owned beside the code they govern are
//! only gathered here: `[log]` and `[telemetry]` in [`crate::telemetry`], `[reconcile]` in
//! [`crate::reconcile`], each sink's settings in [`crate::sinks`] (the list
//! as a whole is checked in `sinks.rs` here). [`Settings::validate`] calls
//! each section's check in turn.
//!
//! Every struct denies unknown fields, so a typo in a config file is an error
//! that names the key instead of a silently ignored setting. Every invalid
//! value is reported through [`ConfigError::invalid`], every bound through
//! one range check, so all messages read alike.

pub mod admin;
pub mod auth;
pub mod server;
mod sinks;
pub mod sources;
pub mod spool;
#[cfg(test)]
mod testing;

use std::fmt::Display;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use self::admin::AdminSettings;
use self::auth::AuthSettings;
use self::server::ServerSettings;
use self::sources::Sources;
use self::spool::SpoolSettings;
use crate::reconcile::ReconcileSettings;
use crate::sinks::SinkSettings;
use crate::telemetry::{LogSettings, TelemetrySettings};

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
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// The setting at `key` (dotted, e.g. `server.callback_path` or
    /// `sinks[0].url`) cannot work, for `reason`; the one way every section
    /// reports an invalid value. `reason` must not repeat a secret.
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Checks that the setting at `key` lies in `min..=max`: the one range check
/// of every section here, worded by [`crate::bounds`] like the sinks' and
/// `[reconcile]`'s.
fn check_range<T>(key: &str, value: T, min: T, max: T) -> Result<(), ConfigError>
where
    T: PartialOrd + Display,
{
    crate::bounds::check(value, min, max, "")
        .map_err(|out_of_range| ConfigError::invalid(key, out_of_range.to_string()))
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
    /// Traces to an OpenTelemetry collector; none by default.
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// The admin listener: API and web console, and `/metrics`.
    #[serde(default)]
    pub admin: AdminSettings,
    /// Reconciliation with Tencent Cloud's records of the callbacks CSS sent.
    #[serde(default)]
    pub reconcile: ReconcileSettings,
    /// Where accepted records are delivered. Defaults to one `log` sink named `console`.
    #[serde(default = "sinks::default_sinks")]
    pub sinks: Vec<SinkSettings>,
}

impl Settings {
    /// Loads and validates the settings from `sources`.
    pub fn load(sources: Sources) -> Result<Self, ConfigError> {
        let settings: Settings = sources.read()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what the types alone cannot, section by section; all but key
    /// presence, which [`AuthSettings::authenticator`] checks when the server
    /// starts, so admin commands work without the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.auth.validate()?;
        self.spool.validate()?;
        self.admin.validate()?;
        if let Some(otlp) = &self.telemetry.otlp {
            otlp.validate().map_err(|err| {
                ConfigError::invalid(format!("telemetry.otlp.{}", err.key), err.reason)
            })?;
        }
        // `[reconcile]` names its keys within the section; the lookback must
        // fit in the spool's dedup window, so it is given that too.
        self.reconcile
            .validate(self.spool.dedup_window_secs)
            .map_err(|err| ConfigError::invalid(format!("reconcile.{}", err.key), err.reason))?;
        sinks::validate(&self.sinks)
    }

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
    use std::path::PathBuf;

    use super::auth::{MAX_CLOCK_SKEW_SECS, MAX_SIGNATURE_WINDOW_SECS};
    use super::server::{MAX_BODY_BYTES, MAX_CONNECTIONS, MAX_SERVER_TIMEOUT_SECS};
    use super::spool::MAX_SPOOL_WINDOW_SECS;
    use super::testing::{env, load_toml};
    use super::*;

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
    fn an_unknown_key_is_an_error_that_names_it() {
        let err = load_toml("[auth]\nkeys = [\"k\"]\nclock_skew = 5\n", &[]).unwrap_err();
        assert!(err.to_string().contains("clock_skew"), "{err}");
    }

    /// Every bound at its maximum, as one configuration.
    fn settings_at_every_maximum() -> Settings {
        let toml = format!(
            "[server]\nmax_body_bytes = {MAX_BODY_BYTES}\nmax_connections = {MAX_CONNECTIONS}\n\
             shutdown_grace_secs = {t}\nshutdown_delay_secs = {t}\nheader_read_timeout_secs = {t}\n\
             request_timeout_secs = {t}\n\
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
            settings.server.shutdown_delay_secs,
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
