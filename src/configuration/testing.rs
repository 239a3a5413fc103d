//! Helpers the sections' tests share: settings loaded from a TOML text and a
//! given environment, and the table of bad values each section rejects.

use std::collections::BTreeMap;
use std::io::Write;

use secrecy::ExposeSecret;

use super::{ConfigError, Settings, Sources};

/// An environment holding only `pairs`, so the process's own variables never
/// leak into a test.
pub(super) fn env(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// The settings `toml` (as the file named on the command line) and `vars` give.
pub(super) fn load_toml(toml: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(toml.as_bytes()).unwrap();
    Settings::load(Sources {
        repo_default: None,
        file: Some(file.path().to_path_buf()),
        environment: env(vars),
    })
}

/// `toml` with a callback key, so that only the setting under test is wrong.
pub(super) fn with_key(toml: &str) -> String {
    format!("{toml}\n[auth]\nkeys = [\"k\"]\n")
}

/// Asserts that each configuration is rejected with an error containing its
/// expected text (usually the setting's dotted name).
pub(super) fn assert_each_rejected(cases: &[(String, &str)]) {
    for (toml, expected) in cases {
        let err = load_toml(toml, &[]).unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "config {toml:?}: expected `{expected}` in {err}"
        );
    }
}

/// Every key the settings give, `keys` and `key_file` together, as text.
pub(super) fn keys(settings: &Settings) -> Vec<String> {
    settings
        .auth
        .load_keys()
        .unwrap()
        .iter()
        .map(|key| key.expose_secret().to_owned())
        .collect()
}
