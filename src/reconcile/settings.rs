//! `[reconcile]`: whether and how recordhook asks Tencent's API which
//! callbacks CSS sent, and what it needs to do so (credentials, endpoint,
//! schedule, the window it checks and what it checks in it).

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::tencent::{ClientOptions, Credentials};

/// The event types Tencent's `DescribeCallbackRecordsList` keeps records of:
/// push ended (0), push started (1), recording file (100), screenshot (200).
pub const RECONCILABLE_EVENT_TYPES: [i64; 4] = [0, 1, 100, 200];

/// Furthest back Tencent keeps callback records: 14 days.
pub const MAX_LOOKBACK_SECS: u64 = 14 * 86_400;

/// How much shorter than the dedup window the lookback must be: a long run
/// must not reach callbacks whose dedup entries are pruned meanwhile.
const DEDUP_MARGIN_SECS: u64 = 3_600;

/// Below this `lag_secs`, a run may recover a callback CSS is still
/// retrying (its retries last about 12 minutes): allowed, and warned about.
pub const CSS_RETRY_HORIZON_SECS: u64 = 720;

/// Most requests a second the client may start: Tencent's documented limit
/// for `DescribeCallbackRecordsList` (20/s, per account).
pub const MAX_REQUESTS_PER_SEC: u32 = 20;

/// Reconciliation with Tencent Cloud's records of the callbacks CSS sent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileSettings {
    /// Run reconciliation in the server every `interval_secs`. Default false.
    /// (`recordhook reconcile` runs once whatever this says.)
    pub enabled: bool,
    /// The API key's SecretId (a sub-account's, with only the actions the
    /// README lists). Not a secret by itself, but shown only in `check-config`.
    pub secret_id: String,
    /// The API key's SecretKey; or `RECORDHOOK__RECONCILE__SECRET_KEY`, or
    /// `secret_key_file`. Never logged or shown.
    #[serde(serialize_with = "crate::redact::option")]
    pub secret_key: Option<SecretString>,
    /// A file holding the SecretKey (first line), for Docker/Kubernetes
    /// secrets; used when `secret_key` is not set.
    pub secret_key_file: String,
    /// A temporary credential's session token (`X-TC-Token`), when the key
    /// is a temporary one. Never logged or shown.
    #[serde(serialize_with = "crate::redact::option")]
    pub token: Option<SecretString>,
    /// The API endpoint: a host (default `live.tencentcloudapi.com`; the
    /// international site is `live.intl.tencentcloudapi.com`) or a full URL.
    pub endpoint: String,
    /// `X-TC-Region`, when set; the live API does not need one.
    pub region: String,
    /// Seconds between two runs in the server; 60 to 86400. Default 600.
    pub interval_secs: u64,
    /// Seconds after an event before its callback is expected: a run checks
    /// up to now minus this. Longer than CSS's retry horizon (about 12
    /// minutes), so a callback CSS is still retrying is not recovered in its
    /// stead. Default 1800.
    pub lag_secs: u64,
    /// How far back a run looks, in seconds; at most 14 days (Tencent keeps
    /// no more) and no longer than `spool.dedup_window_secs`. Default 2 days.
    pub lookback_secs: u64,
    /// Event types to reconcile: a subset of 0, 1, 100 and 200 (the only
    /// ones Tencent keeps records of). Default all four.
    #[serde(deserialize_with = "numbers_or_comma_separated")]
    pub event_types: Vec<i64>,
    /// Only streams of these push domains (default: every domain).
    #[serde(deserialize_with = "strings_or_comma_separated")]
    pub domains: Vec<String>,
    /// Only streams of these app names (push paths; default: every app).
    #[serde(deserialize_with = "strings_or_comma_separated")]
    pub app_names: Vec<String>,
    /// Requests per second the client starts at most; 1 to 20 (Tencent's
    /// limit is 20/s per account, shared with anything else using the key).
    /// Default 10.
    pub requests_per_sec: u32,
    /// Seconds one API request may take; 1 to 300. Default 10.
    pub timeout_secs: u64,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            secret_id: String::new(),
            secret_key: None,
            secret_key_file: String::new(),
            token: None,
            endpoint: "live.tencentcloudapi.com".to_owned(),
            region: String::new(),
            interval_secs: 600,
            lag_secs: 1_800,
            lookback_secs: 2 * 86_400,
            event_types: RECONCILABLE_EVENT_TYPES.to_vec(),
            domains: Vec::new(),
            app_names: Vec::new(),
            requests_per_sec: 10,
            timeout_secs: 10,
        }
    }
}

/// A `[reconcile]` setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `reconcile.{key}`: {reason}")]
pub struct InvalidSetting {
    /// The key within `[reconcile]`.
    pub key: &'static str,
    /// What is wrong and what is expected.
    pub reason: String,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> InvalidSetting {
    InvalidSetting {
        key,
        reason: reason.into(),
    }
}

impl ReconcileSettings {
    /// Checks what the types cannot; `dedup_window_secs` is the spool's, which
    /// must cover the lookback (or a recovered callback older than the dedup
    /// memory would be stored a second time).
    pub fn validate(&self, dedup_window_secs: u64) -> Result<(), InvalidSetting> {
        for (key, value, min, max) in [
            ("interval_secs", self.interval_secs, 60, 86_400),
            ("lag_secs", self.lag_secs, 0, MAX_LOOKBACK_SECS),
            ("lookback_secs", self.lookback_secs, 60, MAX_LOOKBACK_SECS),
            (
                "requests_per_sec",
                u64::from(self.requests_per_sec),
                1,
                u64::from(MAX_REQUESTS_PER_SEC),
            ),
            ("timeout_secs", self.timeout_secs, 1, 300),
        ] {
            crate::bounds::check(value, min, max, "")
                .map_err(|out_of_range| invalid(key, out_of_range.to_string()))?;
        }
        if self.lag_secs >= self.lookback_secs {
            return Err(invalid(
                "lag_secs",
                "must be shorter than reconcile.lookback_secs, or no run would check anything",
            ));
        }
        if self.event_types.is_empty() {
            return Err(invalid("event_types", "needs at least one event type"));
        }
        if let Some(other) = self
            .event_types
            .iter()
            .find(|t| !RECONCILABLE_EVENT_TYPES.contains(t))
        {
            return Err(invalid(
                "event_types",
                format!(
                    "{other} cannot be reconciled: Tencent keeps records only of 0, 1, 100 and 200"
                ),
            ));
        }
        if self.endpoint.trim().is_empty() {
            return Err(invalid("endpoint", "must name the API host"));
        }
        // Only a server that reconciles needs the dedup memory to cover the
        // lookback; without reconciliation a short window bounds the memory
        // deduplication takes. `recordhook reconcile` checks it itself
        // (`reconcile::build`).
        if self.enabled {
            self.fits_dedup_window(dedup_window_secs)?;
            self.credentials()?;
        }
        Ok(())
    }

    /// Checks that the dedup memory (`spool.dedup_window_secs`) covers the
    /// lookback with an hour to spare: a callback older than the memory
    /// would be recovered and delivered a second time.
    pub fn fits_dedup_window(&self, dedup_window_secs: u64) -> Result<(), InvalidSetting> {
        if self.lookback_secs.saturating_add(DEDUP_MARGIN_SECS) > dedup_window_secs {
            return Err(invalid(
                "lookback_secs",
                format!(
                    "must be at least an hour shorter than spool.dedup_window_secs \
                     ({dedup_window_secs}): a callback older than the dedup memory would be \
                     recovered and delivered a second time"
                ),
            ));
        }
        Ok(())
    }

    /// The API credentials: `secret_id` with `secret_key`, or the key read
    /// from `secret_key_file`.
    pub fn credentials(&self) -> Result<Credentials, InvalidSetting> {
        if self.secret_id.trim().is_empty() {
            return Err(invalid(
                "secret_id",
                "is needed to call Tencent's API (a sub-account's SecretId)",
            ));
        }
        let secret_key = match (&self.secret_key, self.secret_key_file.trim()) {
            (Some(key), _) if !key.expose_secret().trim().is_empty() => key.clone(),
            (_, "") => {
                return Err(invalid(
                    "secret_key",
                    "is needed: set RECORDHOOK__RECONCILE__SECRET_KEY or reconcile.secret_key_file",
                ));
            }
            (_, path) => read_key_file(path)?,
        };
        Ok(Credentials {
            secret_id: self.secret_id.trim().to_owned(),
            secret_key,
            token: self
                .token
                .clone()
                .filter(|token| !token.expose_secret().trim().is_empty()),
        })
    }

    /// How the API client connects.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            endpoint: self.endpoint.trim().to_owned(),
            region: Some(self.region.trim().to_owned()).filter(|region| !region.is_empty()),
            requests_per_sec: self.requests_per_sec,
            timeout: Duration::from_secs(self.timeout_secs),
            max_attempts: 5,
        }
    }
}

/// The first line of the key file (the key never appears in the error).
fn read_key_file(path: &str) -> Result<SecretString, InvalidSetting> {
    let text = std::fs::read_to_string(PathBuf::from(path)).map_err(|err| {
        invalid(
            "secret_key_file",
            format!("`{path}` could not be read: {err}"),
        )
    })?;
    let key = text.lines().next().unwrap_or_default().trim();
    if key.is_empty() {
        return Err(invalid("secret_key_file", format!("`{path}` is empty")));
    }
    Ok(SecretString::from(key.to_owned()))
}

/// A list in a file, or comma-separated text from an environment variable.
#[derive(Deserialize)]
#[serde(untagged)]
enum ListOrText<T> {
    List(Vec<T>),
    Text(String),
}

fn strings_or_comma_separated<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    Ok(match ListOrText::<String>::deserialize(deserializer)? {
        ListOrText::List(items) => items,
        ListOrText::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

fn numbers_or_comma_separated<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<i64>, D::Error> {
    match ListOrText::<i64>::deserialize(deserializer)? {
        ListOrText::List(items) => Ok(items),
        ListOrText::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse().map_err(|_| {
                    serde::de::Error::custom(format!("`{item}` is not an event type number"))
                })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> ReconcileSettings {
        ReconcileSettings {
            enabled: true,
            secret_id: "AKIDexample".into(),
            secret_key: Some(SecretString::from("key-value-never-shown")),
            ..ReconcileSettings::default()
        }
    }

    #[test]
    fn the_defaults_are_valid_and_off() {
        let defaults = ReconcileSettings::default();
        assert!(!defaults.enabled);
        defaults.validate(604_800).unwrap();
        enabled().validate(604_800).unwrap();
    }

    #[test]
    fn each_impossible_setting_is_named() {
        let cases: Vec<(ReconcileSettings, &str)> = vec![
            (
                ReconcileSettings {
                    event_types: vec![100, 332],
                    ..enabled()
                },
                "event_types",
            ),
            (
                ReconcileSettings {
                    event_types: vec![],
                    ..enabled()
                },
                "event_types",
            ),
            (
                ReconcileSettings {
                    lookback_secs: MAX_LOOKBACK_SECS + 1,
                    ..enabled()
                },
                "lookback_secs",
            ),
            (
                ReconcileSettings {
                    lag_secs: 172_800,
                    ..enabled()
                },
                "lag_secs",
            ),
            (
                ReconcileSettings {
                    requests_per_sec: 21,
                    ..enabled()
                },
                "requests_per_sec",
            ),
            (
                ReconcileSettings {
                    secret_id: String::new(),
                    ..enabled()
                },
                "secret_id",
            ),
            (
                ReconcileSettings {
                    secret_key: None,
                    ..enabled()
                },
                "secret_key",
            ),
            (
                ReconcileSettings {
                    interval_secs: 5,
                    ..enabled()
                },
                "interval_secs",
            ),
        ];
        for (settings, key) in cases {
            let err = settings.validate(604_800).unwrap_err();
            assert_eq!(err.key, key, "{err}");
            assert!(!err.to_string().contains("key-value-never-shown"));
        }
    }

    #[test]
    fn a_lookback_longer_than_the_dedup_memory_is_refused() {
        let err = enabled().validate(86_400).unwrap_err();
        assert_eq!(err.key, "lookback_secs");
        assert!(err.reason.contains("dedup_window_secs"), "{err}");
    }

    #[test]
    fn without_reconciliation_the_dedup_memory_may_be_short_but_a_manual_run_still_refuses_it() {
        let disabled = ReconcileSettings::default();
        disabled.validate(600).unwrap();
        let err = disabled.fits_dedup_window(600).unwrap_err();
        assert_eq!(err.key, "lookback_secs");
        disabled
            .fits_dedup_window(disabled.lookback_secs + DEDUP_MARGIN_SECS)
            .unwrap();
    }

    #[test]
    fn the_key_may_come_from_a_file_and_never_shows_in_errors_or_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "file-key-value\n").unwrap();
        let settings = ReconcileSettings {
            secret_key: None,
            secret_key_file: path.display().to_string(),
            token: Some(SecretString::from("token-value")),
            ..enabled()
        };
        let credentials = settings.credentials().unwrap();
        assert_eq!(credentials.secret_key.expose_secret(), "file-key-value");
        let shown = toml::to_string(&enabled()).unwrap();
        assert!(!shown.contains("key-value-never-shown"), "{shown}");
        assert!(shown.contains(crate::redact::REDACTED));
        let missing = ReconcileSettings {
            secret_key: None,
            secret_key_file: dir.path().join("absent").display().to_string(),
            ..enabled()
        };
        assert_eq!(missing.credentials().unwrap_err().key, "secret_key_file");
    }
}
