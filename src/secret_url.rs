//! A URL that may carry credentials (`nats://user:pass@host`,
//! `amqp://guest:guest@host/%2f`, `redis://:pass@host`): kept whole for
//! connecting, shown everywhere else with its password replaced, so it never
//! reaches a log line, an error or `check-config`'s output.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error_chain::error_chain;
use crate::redact::REDACTED;

/// Why a URL could not be parsed. It never holds the text, which may carry
/// a password: only the parser's own description of what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid URL")]
pub struct InvalidUrl(#[source] url::ParseError);

/// A parsed URL whose password (and any `token` or `password` query
/// parameter) is a secret.
#[derive(Clone)]
pub struct SecretUrl {
    /// The URL as configured.
    full: SecretString,
    /// The same URL with every secret part replaced by [`REDACTED`].
    shown: String,
    /// The scheme, lowercased (`nats`, `amqp`, `redis`, …).
    scheme: String,
}

impl SecretUrl {
    /// Parses `text` as a URL; the error never repeats the text (it may hold
    /// a password).
    pub fn parse(text: &str) -> Result<Self, InvalidUrl> {
        let url = url::Url::parse(text).map_err(InvalidUrl)?;
        let mut shown = url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some(REDACTED));
        } else if user_is_secret(&url) {
            let _ = shown.set_username(REDACTED);
        }
        if let Some(query) = url.query() {
            shown.set_query(Some(&redacted_query(query)));
        }
        Ok(Self {
            full: SecretString::from(text),
            // The URL type percent-encodes the brackets; show them as written.
            shown: shown.to_string().replace("%5Bredacted%5D", REDACTED),
            scheme: url.scheme().to_lowercase(),
        })
    }

    /// The URL with its credentials, to connect with. Never log it.
    pub fn expose(&self) -> &str {
        self.full.expose_secret()
    }

    /// The URL with its secrets replaced, for logs and errors.
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    /// The URL's scheme, lowercased.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// `text` (a client library's error, say, which may echo what it was
    /// given) with this URL's secrets taken out: the whole URL replaced by
    /// its redacted form, then every secret part (the password, a token in
    /// the user part, a secret query value), as written and percent-decoded,
    /// by [`REDACTED`].
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.replace(self.expose(), &self.shown);
        let Ok(url) = url::Url::parse(self.expose()) else {
            return text;
        };
        let mut secrets: Vec<String> = Vec::new();
        if let Some(password) = url.password() {
            secrets.push(password.to_owned());
        } else if user_is_secret(&url) {
            secrets.push(url.username().to_owned());
        }
        // Clients connect with the percent-decoded credentials, and may echo
        // them in that form.
        for secret in secrets.clone() {
            secrets.push(
                percent_encoding::percent_decode_str(&secret)
                    .decode_utf8_lossy()
                    .into_owned(),
            );
        }
        // A secret query value both as written and percent-decoded.
        secrets.extend(
            url.query()
                .into_iter()
                .flat_map(|query| query.split('&'))
                .map(query_pair)
                .filter(|(_, _, secret)| *secret)
                .map(|(_, value, _)| value.to_owned()),
        );
        secrets.extend(
            url.query_pairs()
                .filter(|(key, _)| is_secret_key(key))
                .map(|(_, value)| value.into_owned()),
        );
        // Longest first, so no secret is left half-replaced because a
        // shorter one inside it went first.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
            text = text.replace(secret.as_str(), REDACTED);
        }
        text
    }
}

/// Whether the user part alone is a secret: `redis://token@host` and
/// `nats://token@host` put a token there, while an AMQP or PostgreSQL user
/// name is only a name (its password, if any, is the secret).
fn user_is_secret(url: &url::Url) -> bool {
    url.password().is_none()
        && !url.username().is_empty()
        && !["amqp", "postgres", "postgresql"].contains(&url.scheme())
}

/// `query` with the value of every secret parameter replaced by
/// [`REDACTED`] and every other parameter exactly as written: encoding the
/// pairs again would change how the rest of the URL is shown (`/` as `%2F`,
/// `%20` as `+`), and an operator compares it with what they configured.
fn redacted_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match query_pair(pair) {
            (key, _, true) => format!("{key}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// One `key=value` pair of a query as written: its key, its value (empty
/// without `=`), and whether the value is a secret (the key is compared
/// percent-decoded).
fn query_pair(pair: &str) -> (&str, &str, bool) {
    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
    let secret = url::form_urlencoded::parse(key.as_bytes())
        .next()
        .is_some_and(|(key, _)| is_secret_key(&key));
    (key, value, secret)
}

/// Whether a query parameter named `key` carries a secret.
fn is_secret_key(key: &str) -> bool {
    ["password", "token", "pass"].contains(&key.to_lowercase().as_str())
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.shown)
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // serde takes only text: the cause goes with it.
        Self::parse(&text).map_err(|err| serde::de::Error::custom(error_chain(&err)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_hidden_everywhere_but_expose() {
        for (url, hidden, shown) in [
            (
                "amqp://guest:s3cret@127.0.0.1:5672/%2f",
                "s3cret",
                "amqp://guest:[redacted]@127.0.0.1:5672/%2f",
            ),
            (
                "redis://:s3cret@127.0.0.1:6379",
                "s3cret",
                "redis://:[redacted]@127.0.0.1:6379",
            ),
            (
                "nats://s3cret@127.0.0.1:4222",
                "s3cret",
                "nats://[redacted]@127.0.0.1:4222",
            ),
            (
                "nats://127.0.0.1:4222?token=s3cret",
                "s3cret",
                "nats://127.0.0.1:4222?token=[redacted]",
            ),
        ] {
            let secret = SecretUrl::parse(url).unwrap();
            assert_eq!(secret.expose(), url);
            assert_eq!(secret.redacted(), shown);
            for text in [
                format!("{secret:?}"),
                secret.to_string(),
                serde_json::to_string(&secret).unwrap(),
            ] {
                assert!(!text.contains(hidden), "{text}");
            }
        }
    }

    #[test]
    fn only_secret_query_values_change_and_the_rest_is_shown_as_written() {
        let url = "redis://h:1/0?ssl_ca=/etc/ca%20x.pem&PASSWORD=p%40ss&name=a+b&flag&pass=";
        let secret = SecretUrl::parse(url).unwrap();
        assert_eq!(
            secret.redacted(),
            "redis://h:1/0?ssl_ca=/etc/ca%20x.pem&PASSWORD=[redacted]&name=a+b&flag&pass=[redacted]"
        );
        assert!(!secret.redacted().contains("p%40ss"));
        // A key written percent-encoded is still recognised.
        let encoded = SecretUrl::parse("nats://h?%74oken=s3cret").unwrap();
        assert_eq!(encoded.redacted(), "nats://h?%74oken=[redacted]");
        // Nothing secret in the query: shown exactly as configured.
        let plain = "postgres://u@db/rh?sslmode=verify-full&sslrootcert=/etc/ca.pem";
        assert_eq!(SecretUrl::parse(plain).unwrap().redacted(), plain);
    }

    #[test]
    fn an_invalid_url_is_refused_without_repeating_it() {
        let err = SecretUrl::parse("amqp://guest:s3cret@[bad").unwrap_err();
        assert_eq!(err.to_string(), "not a valid URL");
        let chain = error_chain(&err);
        assert_eq!(chain, "not a valid URL: invalid IPv6 address");
        assert!(!chain.contains("s3cret"), "{chain}");
        // serde, which takes only text, gets the cause too.
        let parsed: Result<SecretUrl, _> =
            toml::from_str::<toml::Value>("u = \"amqp://guest:s3cret@[bad\"").unwrap()["u"]
                .clone()
                .try_into();
        let message = parsed.unwrap_err().to_string();
        assert!(
            message.contains("not a valid URL: invalid IPv6 address"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn scrubbing_takes_every_copy_and_form_of_every_secret_out_of_a_text() {
        let url = SecretUrl::parse("redis://user:p%40ss@h:1?token=t0k%21").unwrap();
        let text =
            url.scrub("redis://user:p%40ss@h:1?token=t0k%21 said p@ss, p%40ss, t0k! and t0k%21");
        assert_eq!(
            text,
            "redis://user:[redacted]@h:1?token=[redacted] said [redacted], [redacted], \
             [redacted] and [redacted]"
        );
        let token = SecretUrl::parse("nats://t0ken@h").unwrap();
        assert_eq!(token.scrub("bad t0ken"), "bad [redacted]");
        // An AMQP user name is not a secret; its password is.
        let amqp = SecretUrl::parse("amqp://guest:pw@h/%2f").unwrap();
        assert_eq!(amqp.scrub("guest pw"), "guest [redacted]");
        assert_eq!(amqp.scrub("a pw b pw"), "a [redacted] b [redacted]");
        let plain = SecretUrl::parse("redis://h").unwrap();
        assert_eq!(plain.scrub("nothing to hide"), "nothing to hide");
    }

    #[test]
    fn the_scheme_is_kept_for_validation() {
        assert_eq!(SecretUrl::parse("REDIS://h").unwrap().scheme(), "redis");
    }

    #[test]
    fn a_postgres_user_name_is_shown_and_its_password_hidden() {
        let plain = SecretUrl::parse("postgres://recordhook@db.internal/recordhook").unwrap();
        assert_eq!(
            plain.redacted(),
            "postgres://recordhook@db.internal/recordhook"
        );
        let secret = SecretUrl::parse("postgresql://recordhook:pw@db.internal/recordhook").unwrap();
        assert_eq!(
            secret.redacted(),
            "postgresql://recordhook:[redacted]@db.internal/recordhook"
        );
    }
}
