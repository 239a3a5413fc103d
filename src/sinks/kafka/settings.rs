//! The settings of a `type = "kafka"` sink, and their checks: which brokers,
//! which topic, how records are keyed, TLS and SASL. Turning them into a
//! client is the sink's ([`super`]); nothing here connects.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::redact;
use crate::sinks::broker::Template;
use crate::sinks::checks::{self, InvalidSetting};

/// The default topic; `{event_type}` becomes the record's type number.
pub const DEFAULT_TOPIC: &str = "recordhook.{event_type}";
/// Kafka's longest topic name.
const MAX_TOPIC_LEN: usize = 249;

/// The settings of a `type = "kafka"` sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkSettings {
    /// Bootstrap brokers, each `host:port`; the client learns the rest of
    /// the cluster from them. Required, at least one.
    pub brokers: Vec<String>,
    /// The topic each record is produced to; `{event_type}` is replaced by
    /// the type number. Topics must exist: recordhook never creates one, and
    /// a record whose topic is missing becomes a dead letter (replayable
    /// once the topic is created).
    #[serde(default = "default_topic")]
    pub topic: String,
    /// What the message key is, which decides the partition (Kafka's own
    /// murmur2 partitioner, so other producers with the same key agree):
    /// `event_id` (default), `stream_id` (a stream's records stay in order
    /// on one partition; records without a stream fall back to the event
    /// id), or `none` (no key, a partition picked at random).
    #[serde(default)]
    pub key: MessageKey,
    /// Seconds a record may wait for the brokers' acknowledgement (the
    /// client's own retries included), and a metadata lookup for an answer,
    /// before the attempt fails and is retried on the sink's schedule; 1 to
    /// [`checks::MAX_TIMEOUT_SECS`].
    #[serde(default = "checks::default_timeout_secs")]
    pub timeout_secs: u64,
    /// Connect with TLS (librdkafka's OpenSSL), checking the brokers'
    /// certificates against the system's CA bundle, or against `ca_file`
    /// when it is given.
    #[serde(default)]
    pub tls: bool,
    /// A PEM file of the CA certificates to trust instead of the system's
    /// (a private CA); only with `tls = true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// SASL authentication; leave out for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslSettings>,
}

/// What a message's key is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKey {
    /// The record's event id.
    #[default]
    EventId,
    /// The record's stream id (the event id when it has none).
    StreamId,
    /// No key.
    None,
}

/// `[sinks.sasl]`: how to authenticate to the brokers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SaslSettings {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`. PLAIN sends the password
    /// as it is: use it only with `tls = true`.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password; a secret, shown redacted everywhere (also
    /// `RECORDHOOK__SINKS__<n>__SASL__PASSWORD`).
    #[serde(serialize_with = "redact::secret")]
    pub password: SecretString,
}

/// The SASL mechanisms the sink speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SaslMechanism {
    /// RFC 4616: user name and password as they are.
    #[serde(rename = "PLAIN")]
    Plain,
    /// RFC 7677.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

fn default_topic() -> String {
    DEFAULT_TOPIC.to_owned()
}

impl KafkaSinkSettings {
    /// A kafka sink to `brokers` with the default settings.
    pub fn new(brokers: Vec<String>) -> Self {
        Self {
            brokers,
            topic: default_topic(),
            key: MessageKey::default(),
            timeout_secs: checks::DEFAULT_TIMEOUT_SECS,
            tls: false,
            ca_file: None,
            sasl: None,
        }
    }

    /// Checks what can be checked without connecting.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.brokers.is_empty() {
            return Err(InvalidSetting::new(
                "brokers",
                "must list at least one broker as `host:port`",
            ));
        }
        for broker in &self.brokers {
            check_broker(broker)?;
        }
        topic_template(&self.topic)?;
        checks::check_timeout(self.timeout_secs)?;
        if self.ca_file.is_some() && !self.tls {
            return Err(InvalidSetting::new(
                "ca_file",
                "is only used with `tls = true`",
            ));
        }
        if self
            .ca_file
            .as_ref()
            .is_some_and(|path| path.as_os_str().is_empty())
        {
            return Err(InvalidSetting::new(
                "ca_file",
                "must be a path (or left out)",
            ));
        }
        if let Some(sasl) = &self.sasl {
            if sasl.username.is_empty() {
                return Err(InvalidSetting::new("sasl.username", "must not be empty"));
            }
            if sasl.password.expose_secret().is_empty() {
                return Err(InvalidSetting::new("sasl.password", "must not be empty"));
            }
        }
        Ok(())
    }
}

/// A broker address must be `host:port` with a port: Kafka has no default
/// the client could assume safely (9092 plain, 9093 TLS by habit only).
fn check_broker(broker: &str) -> Result<(), InvalidSetting> {
    let valid = broker
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
        && !broker.contains(['/', ' ']);
    if valid {
        Ok(())
    } else {
        Err(InvalidSetting::new(
            "brokers",
            format!("`{broker}` is not `host:port`"),
        ))
    }
}

/// The topic template, checked against Kafka's rules for a topic name:
/// letters, digits, `.`, `_` and `-`, at most 249 characters, not `.` or `..`.
pub(super) fn topic_template(topic: &str) -> Result<Template, InvalidSetting> {
    let invalid = |reason: &str| Err(InvalidSetting::new("topic", reason));
    if topic.is_empty() {
        return invalid("must not be empty");
    }
    let template = Template::parse("topic", topic)?;
    let longest = template.longest();
    if longest.len() > MAX_TOPIC_LEN {
        return invalid("must be at most 249 characters, with the event type filled in");
    }
    if !longest
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return invalid("may hold only ASCII letters, digits, `.`, `_` and `-`");
    }
    if matches!(topic, "." | "..") {
        return invalid("must not be `.` or `..`");
    }
    Ok(template)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> Result<KafkaSinkSettings, String> {
        let settings = toml::from_str::<KafkaSinkSettings>(toml).map_err(|err| err.to_string())?;
        settings.validate().map_err(|err| err.to_string())?;
        Ok(settings)
    }

    #[test]
    fn brokers_alone_give_the_documented_defaults() {
        let settings = settings(r#"brokers = ["k1:9092", "k2:9092"]"#).unwrap();
        assert_eq!(settings.topic, DEFAULT_TOPIC);
        assert_eq!(settings.key, MessageKey::EventId);
        assert_eq!(settings.timeout_secs, checks::DEFAULT_TIMEOUT_SECS);
        assert!(!settings.tls);
        assert!(settings.sasl.is_none());
    }

    #[test]
    fn each_bad_setting_is_refused_naming_its_key() {
        let cases = [
            ("brokers = []", "`brokers`: must list at least one broker"),
            (r#"brokers = ["k1"]"#, "`brokers`: `k1` is not `host:port`"),
            (
                r#"brokers = ["k1:0"]"#,
                "`brokers`: `k1:0` is not `host:port`",
            ),
            (
                r#"brokers = ["kafka://k1:9092"]"#,
                "`brokers`: `kafka://k1:9092` is not `host:port`",
            ),
            (
                "brokers = [\"k:1\"]\ntopic = \"a b\"",
                "`topic`: may hold only ASCII letters",
            ),
            (
                "brokers = [\"k:1\"]\ntopic = \"a.{type}\"",
                "`topic`: the only placeholder is `{event_type}`",
            ),
            (
                "brokers = [\"k:1\"]\ntopic = \"..\"",
                "`topic`: must not be",
            ),
            (
                "brokers = [\"k:1\"]\nca_file = \"ca.pem\"",
                "`ca_file`: is only used with `tls = true`",
            ),
            ("brokers = [\"k:1\"]\ntimeout_secs = 0", "`timeout_secs`"),
            (
                "brokers = [\"k:1\"]\nsasl = { mechanism = \"PLAIN\", username = \"\", password = \"p\" }",
                "`sasl.username`: must not be empty",
            ),
            (
                "brokers = [\"k:1\"]\nsasl = { mechanism = \"GSSAPI\", username = \"u\", password = \"p\" }",
                "unknown variant `GSSAPI`",
            ),
            ("brokers = [\"k:1\"]\nacks = 1", "unknown field `acks`"),
            (
                "brokers = [\"k:1\"]\nkey = \"file_id\"",
                "unknown variant `file_id`",
            ),
        ];
        for (toml, expected) in cases {
            let err = settings(toml).unwrap_err();
            assert!(err.contains(expected), "{toml}: {err}");
        }
        let long = format!("brokers = [\"k:1\"]\ntopic = \"{}\"", "t".repeat(250));
        assert!(settings(&long).unwrap_err().contains("at most 249"));
    }

    #[test]
    fn the_sasl_password_is_redacted_when_the_settings_are_shown() {
        let settings = settings(
            "brokers = [\"k:1\"]\ntls = true\n\
             sasl = { mechanism = \"SCRAM-SHA-512\", username = \"rh\", password = \"s3cret\" }",
        )
        .unwrap();
        let shown = toml::to_string(&settings).unwrap();
        assert!(shown.contains("password = \"[redacted]\""), "{shown}");
        assert!(shown.contains("mechanism = \"SCRAM-SHA-512\""), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!format!("{settings:?}").contains("s3cret"));
    }
}
