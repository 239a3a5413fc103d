//! How a secret is shown wherever it must not appear: one marker, and the
//! serializers that write it in place of secret settings (`check-config`'s
//! output). Shared by the configuration and the sinks, below both.

use std::collections::BTreeMap;

use secrecy::SecretString;

/// What a secret is shown as.
pub const REDACTED: &str = "[redacted]";

/// Serializes a secret as [`REDACTED`].
pub fn secret<S: serde::Serializer>(_: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(REDACTED)
}

/// Serializes an optional secret as [`REDACTED`] (or nothing when absent).
pub fn option<S: serde::Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => serializer.serialize_some(REDACTED),
        None => serializer.serialize_none(),
    }
}

/// Serializes a list of secrets as one [`REDACTED`] per entry.
pub fn list<S: serde::Serializer>(
    secrets: &[SecretString],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(secrets.iter().map(|_| REDACTED))
}

/// Serializes a map of secrets with its keys shown and every value [`REDACTED`].
pub fn map<S: serde::Serializer>(
    map: &BTreeMap<String, SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(map.keys().map(|name| (name, REDACTED)))
}
