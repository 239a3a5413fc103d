//! A sink's settings as the configuration gives them: the keys every sink has,
//! then a [`SinkKind`] carrying the keys of its `type`, whose struct and
//! defaults live in that sink's own module.
//!
//! Parsing is two steps because serde's `flatten` cannot be combined with
//! `deny_unknown_fields`: the shared keys are read first and everything else
//! is kept aside; once `type` is known, the rest is checked against the keys
//! of that type (a key of another type is named as such) and parsed into the
//! type's own struct, which denies unknown fields itself.
//!
//! Adding a sink type: a settings struct in its module, a [`SinkKind`]
//! variant, and a row in [`SinkKind::parse`] and [`type_keys`].

use std::collections::BTreeMap;

use serde::de::{Deserializer, Error as _, Visitor};
use serde::{Deserialize, Serialize};

use super::checks::{InvalidSetting, check_range};
use super::file::FileSinkSettings;
use super::forward::ForwardSinkSettings;
use super::kafka::KafkaSinkSettings;
use super::nats::NatsSinkSettings;
use super::rabbitmq::RabbitMqSinkSettings;
use super::redis::RedisSinkSettings;
use crate::error_chain::error_chain;
use crate::protocol::EventTypes;

/// Most attempts a sink may make for one record: with `retry_max_ms` at its
/// bound this is retrying for millennia, so anything beyond is a typo.
pub const MAX_ATTEMPTS: u32 = 1_000_000;
/// Longest retry delay, in milliseconds: 7 days. Bounded so that the time of
/// the next attempt (now plus the delay) stays far inside what `SystemTime`
/// and the spool's millisecond timestamps can hold.
pub const MAX_RETRY_MS: u64 = 7 * 24 * 60 * 60 * 1_000;

/// One delivery target: the settings every sink has, and those of its type.
#[derive(Debug, Clone, Serialize)]
pub struct SinkSettings {
    /// Unique name, used in logs, metrics and the dead-letter commands.
    pub name: String,
    /// Event types this sink receives, by number or name (`record` is 100),
    /// or `"*"` for every type, undocumented ones included. Default `[100]`.
    pub event_types: EventTypes,
    /// Attempts before a delivery becomes a dead letter; 1 to [`MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds; doubles on every further
    /// retry. At least 1 and no larger than `retry_max_ms`.
    pub retry_initial_ms: u64,
    /// Longest delay between two attempts, in milliseconds; at most [`MAX_RETRY_MS`].
    pub retry_max_ms: u64,
    /// The sink's type, with the settings only that type has.
    #[serde(flatten)]
    pub kind: SinkKind,
}

/// The kinds of sink, each with its own settings.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkKind {
    /// One structured log event per record; no settings of its own.
    Log,
    /// Appends JSON Lines to a file.
    File(FileSinkSettings),
    /// POSTs each record to an HTTP URL.
    Forward(ForwardSinkSettings),
    /// Publishes each record to NATS JetStream, delivered on its ack.
    Nats(NatsSinkSettings),
    /// Adds each record to a Redis stream (`XADD`).
    Redis(RedisSinkSettings),
    /// Publishes each record to a RabbitMQ exchange, confirmed.
    #[serde(rename = "rabbitmq")]
    RabbitMq(RabbitMqSinkSettings),
    /// Produces each record to a Kafka topic, delivered on `acks = all`.
    Kafka(KafkaSinkSettings),
}

impl SinkSettings {
    /// A `log` sink named `name` with the default delivery settings.
    pub fn log(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            event_types: default_event_types(),
            max_attempts: default_max_attempts(),
            retry_initial_ms: default_retry_initial_ms(),
            retry_max_ms: default_retry_max_ms(),
            kind: SinkKind::Log,
        }
    }

    /// Checks what the types alone cannot, for this sink on its own (unique
    /// names and paths across sinks are the caller's to check).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.name.trim().is_empty() {
            return Err(InvalidSetting::new("name", "must not be empty"));
        }
        if self.event_types.is_empty() {
            return Err(InvalidSetting::new(
                "event_types",
                "must list at least one event type",
            ));
        }
        check_range("max_attempts", self.max_attempts, 1, MAX_ATTEMPTS, "")?;
        check_range("retry_max_ms", self.retry_max_ms, 1, MAX_RETRY_MS, " ms")?;
        if self.retry_initial_ms == 0 || self.retry_initial_ms > self.retry_max_ms {
            return Err(InvalidSetting::new(
                "retry_initial_ms",
                "must be at least 1 and no larger than retry_max_ms",
            ));
        }
        match &self.kind {
            SinkKind::Log => Ok(()),
            SinkKind::File(file) => file.validate(),
            SinkKind::Forward(forward) => forward.validate(),
            SinkKind::Nats(nats) => nats.validate(),
            SinkKind::Redis(redis) => redis.validate(),
            SinkKind::RabbitMq(rabbitmq) => rabbitmq.validate(),
            SinkKind::Kafka(kafka) => kafka.validate(),
        }
    }
}

impl SinkKind {
    /// The type as written in the configuration.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::File(_) => "file",
            Self::Forward(_) => "forward",
            Self::Nats(_) => "nats",
            Self::Redis(_) => "redis",
            Self::RabbitMq(_) => "rabbitmq",
            Self::Kafka(_) => "kafka",
        }
    }

    /// The kind named `type_name`, from the keys a sink's table has beyond the shared ones.
    fn parse(type_name: &str, keys: BTreeMap<String, toml::Value>) -> Result<Self, SinkTypeError> {
        let all = type_keys();
        let Some((_, own)) = all.iter().find(|(name, _)| *name == type_name) else {
            return Err(SinkTypeError::UnknownType {
                type_name: type_name.to_owned(),
                valid: all.iter().map(|(name, _)| *name).collect(),
            });
        };
        if let Some(key) = keys.keys().find(|key| !own.contains(&key.as_str())) {
            let (key, type_name) = (key.clone(), type_name.to_owned());
            return Err(
                if all.iter().any(|(_, keys)| keys.contains(&key.as_str())) {
                    SinkTypeError::OtherTypesKey { key, type_name }
                } else {
                    SinkTypeError::UnknownKey { key, type_name }
                },
            );
        }
        let rest = toml::Value::Table(keys.into_iter().collect());
        let typed = |source: toml::de::Error| SinkTypeError::Keys {
            type_name: type_name.to_owned(),
            source,
        };
        match type_name {
            "log" => Ok(Self::Log),
            "file" => Ok(Self::File(
                FileSinkSettings::deserialize(rest).map_err(typed)?,
            )),
            "forward" => Ok(Self::Forward(
                ForwardSinkSettings::deserialize(rest).map_err(typed)?,
            )),
            "nats" => Ok(Self::Nats(
                NatsSinkSettings::deserialize(rest).map_err(typed)?,
            )),
            "redis" => Ok(Self::Redis(
                RedisSinkSettings::deserialize(rest).map_err(typed)?,
            )),
            "rabbitmq" => Ok(Self::RabbitMq(
                RabbitMqSinkSettings::deserialize(rest).map_err(typed)?,
            )),
            "kafka" => Ok(Self::Kafka(
                KafkaSinkSettings::deserialize(rest).map_err(typed)?,
            )),
            // Only reached if a row in `type_keys` lacks its arm here.
            other => Err(SinkTypeError::NotParsed {
                type_name: other.to_owned(),
            }),
        }
    }
}

/// Why a sink's table cannot be read as the type its `type` names; each
/// message says which key to fix.
#[derive(Debug, thiserror::Error)]
pub enum SinkTypeError {
    /// `type` names no sink type.
    #[error("unknown sink type `{type_name}`; valid types are: {}", valid.join(", "))]
    UnknownType {
        /// The `type` as written.
        type_name: String,
        /// Every type there is.
        valid: Vec<&'static str>,
    },
    /// A key only another type of sink takes.
    #[error("`{key}` does not apply to a `{type_name}` sink")]
    OtherTypesKey {
        /// The key.
        key: String,
        /// The sink's type.
        type_name: String,
    },
    /// A key no sink takes (a typo).
    #[error("unknown field `{key}` in a `{type_name}` sink")]
    UnknownKey {
        /// The key.
        key: String,
        /// The sink's type.
        type_name: String,
    },
    /// The type's own keys do not parse (a wrong type of value, a missing key).
    #[error("in a `{type_name}` sink")]
    Keys {
        /// The sink's type.
        type_name: String,
        /// What the parser found wrong.
        #[source]
        source: toml::de::Error,
    },
    /// A type listed in `type_keys` without its arm in [`SinkKind::parse`]:
    /// a bug, reported rather than a panic.
    #[error("sink type `{type_name}` cannot be parsed yet")]
    NotParsed {
        /// The sink's type.
        type_name: String,
    },
}

/// Every sink type as written in `type`, with the keys only it takes.
fn type_keys() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("log", &[]),
        ("file", field_names::<FileSinkSettings>()),
        ("forward", field_names::<ForwardSinkSettings>()),
        ("nats", field_names::<NatsSinkSettings>()),
        ("redis", field_names::<RedisSinkSettings>()),
        ("rabbitmq", field_names::<RabbitMqSinkSettings>()),
        ("kafka", field_names::<KafkaSinkSettings>()),
    ]
}

/// The keys a struct deriving `Deserialize` accepts: serde hands them to
/// `deserialize_struct`, so a deserializer that only records them learns them
/// without a second, hand-kept list that could drift from the struct.
fn field_names<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("only structs are probed"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("probed"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // The probe always fails; what it recorded on the way is the answer.
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// The keys every sink has, with the rest kept aside for its type.
#[derive(Deserialize)]
struct SharedKeys {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    #[serde(default = "default_event_types")]
    event_types: EventTypes,
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
    #[serde(default = "default_retry_initial_ms")]
    retry_initial_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    retry_max_ms: u64,
    /// Everything else: the type's own keys, or mistakes to report.
    #[serde(flatten)]
    rest: BTreeMap<String, toml::Value>,
}

impl<'de> Deserialize<'de> for SinkSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let shared = SharedKeys::deserialize(deserializer)?;
        // serde takes only text: the cause goes with it.
        let kind = SinkKind::parse(&shared.type_name, shared.rest)
            .map_err(|err| D::Error::custom(error_chain(&err)))?;
        Ok(Self {
            name: shared.name,
            event_types: shared.event_types,
            max_attempts: shared.max_attempts,
            retry_initial_ms: shared.retry_initial_ms,
            retry_max_ms: shared.retry_max_ms,
            kind,
        })
    }
}

fn default_event_types() -> EventTypes {
    EventTypes::Only(vec![100])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_of_each_type_are_read_from_its_struct() {
        let keys = type_keys();
        assert!(keys[1].1.contains(&"path") && keys[1].1.contains(&"keep_rotated"));
        assert!(keys[2].1.contains(&"url") && keys[2].1.contains(&"signing_secret"));
    }

    #[test]
    fn a_table_that_is_not_its_type_is_refused_naming_the_key_with_the_cause() {
        for (toml, expected) in [
            (
                "name = \"a\"\ntype = \"pulsar\"",
                "unknown sink type `pulsar`; valid types are: log, file, forward, nats, redis, rabbitmq, kafka",
            ),
            (
                "name = \"a\"\ntype = \"log\"\npath = \"x\"",
                "`path` does not apply to a `log` sink",
            ),
            (
                "name = \"a\"\ntype = \"file\"\npaht = \"x\"",
                "unknown field `paht` in a `file` sink",
            ),
            (
                "name = \"a\"\ntype = \"file\"\npath = 3",
                "in a `file` sink: invalid type: integer `3`, expected path string",
            ),
        ] {
            let err = toml::from_str::<SinkSettings>(toml)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{toml}: {err}");
        }
        let keys = [("path".to_owned(), toml::Value::Integer(3))].into();
        let err = SinkKind::parse("file", keys).unwrap_err();
        assert_eq!(err.to_string(), "in a `file` sink");
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            cause
                .as_deref()
                .is_some_and(|cause| cause.starts_with("invalid type: integer `3`")),
            "{cause:?}"
        );
    }

    #[test]
    fn a_type_keeps_its_defaults_when_only_required_keys_are_given() {
        let toml = "name = \"a\"\ntype = \"file\"\npath = \"x.jsonl\"\n";
        let sink: SinkSettings = toml::from_str(toml).unwrap();
        let SinkKind::File(file) = &sink.kind else {
            panic!("{sink:?}")
        };
        assert_eq!(file.keep_rotated, crate::sinks::file::DEFAULT_KEEP_ROTATED);
        assert_eq!(sink.max_attempts, 15);
        assert!(sink.validate().is_ok());
    }
}
