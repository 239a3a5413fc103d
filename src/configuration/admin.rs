//! `[admin]`: the second listener, off the public callback port, and the
//! tokens that open its API.

use std::net::SocketAddr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::sources::list_or_comma_separated;

/// Shortest admin token, in characters: short enough to paste, long enough
/// that guessing one over the network is hopeless.
const MIN_TOKEN_LEN: usize = 16;

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

impl AdminSettings {
    /// The admin listener's address; `None` when there is none.
    pub fn address(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.trim().is_empty() {
            return Ok(None);
        }
        self.listen.trim().parse().map(Some).map_err(|_| {
            ConfigError::invalid(
                "admin.listen",
                "must be an address and port such as 127.0.0.1:9090, or empty",
            )
        })
    }

    /// Checks the address, and that a listener has tokens long enough to
    /// resist guessing, or is explicitly opened on a loopback address only.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let Some(address) = self.address()? else {
            return Ok(());
        };
        if self
            .tokens
            .iter()
            .any(|token| token.expose_secret().trim().len() < MIN_TOKEN_LEN)
        {
            return Err(ConfigError::invalid(
                "admin.tokens",
                format!(
                    "each token must be at least {MIN_TOKEN_LEN} characters \
                     (generate one: openssl rand -hex 32)"
                ),
            ));
        }
        if self.tokens.is_empty()
            && !(self.allow_loopback_without_token && address.ip().is_loopback())
        {
            return Err(ConfigError::invalid(
                "admin.tokens",
                "an admin listener needs at least one token (or, on a loopback address only, \
                 admin.allow_loopback_without_token = true)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::configuration::ConfigError;
    use crate::configuration::testing::load_toml;

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
