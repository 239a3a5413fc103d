//! `[auth]`: how callbacks are authenticated — the keys, the accepted time
//! window around `t`, and the secret path where CSS's unsigned event types
//! may arrive — and the [`Authenticator`] these settings build.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::sources::list_or_comma_separated;
use super::{ConfigError, check_range};
use crate::protocol::{Authenticator, EventTypes, RECORDING_EVENT_TYPE, TimeWindow};

/// Longest `auth.clock_skew_secs`: one day. Clocks further apart are broken.
pub const MAX_CLOCK_SKEW_SECS: u64 = 86_400;
/// Longest `auth.max_validity_secs` and `auth.expiry_grace_secs`: 7 days (CSS
/// signs for 10 minutes); longer would let a captured callback be replayed
/// long after the dedup window has forgotten it.
pub const MAX_SIGNATURE_WINDOW_SECS: u64 = 7 * 86_400;
/// Shortest `auth.path_secret`: 32 characters, about 190 bits from the URL-safe alphabet.
pub const MIN_PATH_SECRET_LEN: usize = 32;

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
    /// Checks the window's bounds, that `allow_unsigned` does not sit beside
    /// a key, and the secret path. Not whether a key is configured: that is
    /// [`AuthSettings::authenticator`]'s, when the server starts, so admin
    /// commands work without the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "auth.clock_skew_secs",
            self.clock_skew_secs,
            0,
            MAX_CLOCK_SKEW_SECS,
        )?;
        check_range(
            "auth.max_validity_secs",
            self.max_validity_secs,
            1,
            MAX_SIGNATURE_WINDOW_SECS,
        )?;
        check_range(
            "auth.expiry_grace_secs",
            self.expiry_grace_secs,
            0,
            MAX_SIGNATURE_WINDOW_SECS,
        )?;
        if self.allow_unsigned && (!self.keys.is_empty() || !self.key_file.is_empty()) {
            return Err(ConfigError::invalid(
                "auth.allow_unsigned",
                "cannot be true while auth.keys or auth.key_file are set: remove one of them",
            ));
        }
        self.validate_unsigned()
    }

    /// Checks `path_secret` and `unsigned_event_types`; no message repeats the secret.
    fn validate_unsigned(&self) -> Result<(), ConfigError> {
        if let Some(secret) = &self.path_secret {
            let secret = secret.expose_secret();
            if secret.chars().count() < MIN_PATH_SECRET_LEN {
                return Err(ConfigError::invalid(
                    "auth.path_secret",
                    format!("must be at least {MIN_PATH_SECRET_LEN} characters long"),
                ));
            }
            let url_safe = |c: char| c.is_ascii_alphanumeric() || "-_.~".contains(c);
            if !secret.chars().all(url_safe) {
                return Err(ConfigError::invalid(
                    "auth.path_secret",
                    "may hold only A-Z, a-z, 0-9, `-`, `_`, `.` and `~` (it is a URL path segment)",
                ));
            }
        }
        let unsigned = &self.unsigned_event_types;
        if unsigned.contains(RECORDING_EVENT_TYPE) {
            return Err(ConfigError::invalid(
                "auth.unsigned_event_types",
                "must not include 100 (record), nor \"*\": recording callbacks are always signed",
            ));
        }
        if !unsigned.is_empty() && self.path_secret.is_none() {
            return Err(ConfigError::invalid(
                "auth.unsigned_event_types",
                "needs auth.path_secret: unsigned callbacks are accepted only on the secret path",
            ));
        }
        if !unsigned.is_empty() && self.allow_unsigned {
            return Err(ConfigError::invalid(
                "auth.unsigned_event_types",
                "has no effect while auth.allow_unsigned = true: remove one of them",
            ));
        }
        Ok(())
    }

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
        let unsigned = self
            .unsigned_event_types
            .listed()
            .map(<[i64]>::to_vec)
            .unwrap_or_default();
        Ok(Authenticator::with_keys(keys, self.time_window())
            .allowing_unsigned_on_secret_path(unsigned))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::configuration::testing::{assert_each_rejected, keys, load_toml};

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
    fn bad_auth_values_are_rejected_with_the_setting_named() {
        let auth = |lines: &str| format!("[auth]\nkeys = [\"k\"]\n{lines}");
        let secret = "s".repeat(MIN_PATH_SECRET_LEN);
        let short = "s".repeat(MIN_PATH_SECRET_LEN - 1);
        let with_secret = |types: &str| {
            auth(&format!(
                "path_secret = \"{secret}\"\nunsigned_event_types = {types}"
            ))
        };
        assert_each_rejected(&[
            (auth("max_validity_secs = 0"), "auth.max_validity_secs"),
            (auth("allow_unsigned = true"), "auth.allow_unsigned"),
            (
                auth("unsigned_event_types = [314]"),
                "needs auth.path_secret",
            ),
            (
                auth(&format!("path_secret = \"{short}\"")),
                "at least 32 characters",
            ),
            (
                auth(&format!("path_secret = \"{secret}/x\"")),
                "URL path segment",
            ),
            (
                with_secret("[\"relay\", \"record\"]"),
                "must not include 100",
            ),
            (with_secret("\"*\""), "must not include 100"),
            (
                auth("unsigned_event_types = [\"relays\"]"),
                "valid names are",
            ),
            (auth("clock_skew_secs = 86401"), "auth.clock_skew_secs"),
            (auth("max_validity_secs = 604801"), "auth.max_validity_secs"),
            (auth("expiry_grace_secs = 604801"), "auth.expiry_grace_secs"),
            (
                "[auth]\nkey_file = \"/run/keys\"\nallow_unsigned = true".to_owned(),
                "auth.allow_unsigned",
            ),
        ]);
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
    fn allow_unsigned_starts_without_keys() {
        let settings = load_toml("[auth]\nallow_unsigned = true\n", &[]).unwrap();
        assert!(settings.auth.allow_unsigned);
    }

    #[test]
    fn the_key_file_adds_one_key_per_line_skipping_comments() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"# rotated 2026-11\nfirst\n\n  second  \n")
            .unwrap();
        let toml = format!("[auth]\nkey_file = {:?}\n", file.path());
        let settings = load_toml(&toml, &[]).unwrap();
        assert_eq!(keys(&settings), ["first", "second"]);
    }

    #[test]
    fn a_missing_key_file_is_an_error_naming_it() {
        let settings = load_toml("[auth]\nkey_file = \"/nonexistent/keys\"\n", &[]).unwrap();
        let err = settings.auth.authenticator().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/keys"), "{err}");
    }
}
