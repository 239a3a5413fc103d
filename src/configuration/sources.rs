//! Where settings come from and how they are layered: built-in defaults, then
//! `config/default.toml`, then a file named on the command line or by
//! `RECORDHOOK_CONFIG`, then `RECORDHOOK__SECTION__KEY` environment
//! variables, each overriding the one before.

use std::collections::BTreeMap;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

/// The config file shipped in the repository; read when present in the
/// working directory, so `cargo run` from a checkout uses it.
pub const REPO_DEFAULT_CONFIG: &str = "config/default.toml";

/// Prefix of environment variables that override settings.
const ENV_PREFIX: &str = "RECORDHOOK";

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

    /// Reads every source and layers them, later ones overriding earlier ones;
    /// the result is still untyped, to be deserialized into the settings.
    pub(super) fn read(self) -> Result<config::Config, config::ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = &self.repo_default {
            builder = builder.add_source(config::File::from(path.as_path()).required(false));
        }
        if let Some(path) = &self.file {
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
                self.environment
                    .map(|vars| vars.into_iter().collect::<config::Map<_, _>>()),
            );
        builder.add_source(environment).build()
    }
}

/// Reads a list of secrets from a list, or from one comma-separated string
/// (the form environment variables give).
pub(super) fn list_or_comma_separated<'de, D>(
    deserializer: D,
) -> Result<Vec<SecretString>, D::Error>
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

#[cfg(test)]
mod tests {
    use crate::configuration::testing::{keys, load_toml};

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
        assert_eq!(keys(&settings), ["key1", "key2"]);
        assert_eq!(settings.auth.clock_skew_secs, 5);
    }

    #[test]
    fn a_numeric_key_from_the_environment_stays_a_string() {
        let settings = load_toml("", &[("RECORDHOOK__AUTH__KEYS", "12345")]).unwrap();
        assert_eq!(keys(&settings), ["12345"]);
    }
}
