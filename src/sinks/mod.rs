//! Sinks: where accepted records go. Each sink is built once at start-up from
//! its settings and then driven by its own delivery worker
//! ([`crate::delivery`]), so a slow or failing sink never holds up another.
//!
//! Each sink's module owns its settings and their defaults; [`SinkSettings`]
//! puts them together with the settings every sink has. The configuration
//! reads them from here, never the other way round.
//!
//! Dependencies inside run one way: `settings` imports each sink's settings
//! struct; the sink modules import only the lower, shared modules (`checks`
//! for settings errors and bounds, `contract` for the [`Sink`] trait and its
//! [`Outcomes`], `broker` for what the broker sinks share), never
//! `settings` nor this module.

mod broker;
mod checks;
mod contract;
mod file;
mod forward;
mod kafka;
mod log;
mod nats;
mod rabbitmq;
mod redis;
mod settings;
mod webhook;

use std::time::Duration;

pub use self::checks::{
    InvalidSetting, MAX_TIMEOUT_SECS, MAX_TIMEOUT_SECS as MAX_FORWARD_TIMEOUT_SECS,
};
pub use self::contract::{BoxFuture, DeliveryError, DeliveryResult, Outcomes, Sink};
pub use self::file::{FileSink, FileSinkSettings, Rotation};
pub use self::forward::{
    EVENT_ID_HEADER, ForwardSink, ForwardSinkSettings, MAX_CONCURRENCY as MAX_FORWARD_CONCURRENCY,
};
pub use self::kafka::{KafkaSink, KafkaSinkSettings};
pub use self::log::LogSink;
pub use self::nats::{NatsSink, NatsSinkSettings};
pub use self::rabbitmq::{RabbitMqSink, RabbitMqSinkSettings};
pub use self::redis::{RedisSink, RedisSinkSettings};
pub use self::settings::{MAX_ATTEMPTS, MAX_RETRY_MS, SinkKind, SinkSettings};
pub use self::webhook::{WebhookSigner, webhook_key};
pub use crate::secret_url::SecretUrl;

/// A sink together with the settings that govern its deliveries.
pub struct ConfiguredSink {
    /// Name from the configuration.
    pub name: String,
    /// Event types it receives.
    pub event_types: crate::protocol::EventTypes,
    /// Attempts before a dead letter.
    pub max_attempts: u32,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// The sink itself.
    pub sink: Box<dyn Sink>,
}

/// Why a sink could not be built: its name here, what went wrong as the
/// source, so a log or `check-config` shows the whole chain
/// (`sink \`bus\` could not be set up: \`url\`: must be ...`).
#[derive(Debug, thiserror::Error)]
#[error("sink `{name}` could not be set up")]
pub struct SinkBuildError {
    /// The sink's name.
    pub name: String,
    /// What went wrong.
    #[source]
    pub cause: SinkBuildCause,
}

/// What kept a sink from being built.
#[derive(Debug, thiserror::Error)]
pub enum SinkBuildCause {
    /// One of its settings cannot work; the message names the key.
    #[error(transparent)]
    Setting(#[from] InvalidSetting),
    /// The HTTP client the forward sinks share could not be built (its TLS
    /// set-up failed).
    #[error("the HTTP client for forward sinks could not be built")]
    HttpClient(#[source] reqwest::Error),
}

/// Turns the configured sinks into runtime sinks, failing on the first that
/// cannot work. Forward sinks share one HTTP client (one connection pool).
pub fn build(settings: &[SinkSettings]) -> Result<Vec<ConfiguredSink>, SinkBuildError> {
    let mut client = None;
    settings
        .iter()
        .map(|s| {
            let sink = build_one(s, &mut client).map_err(|cause| SinkBuildError {
                name: s.name.clone(),
                cause,
            })?;
            Ok(ConfiguredSink {
                name: s.name.clone(),
                event_types: s.event_types.clone(),
                max_attempts: s.max_attempts,
                retry_initial: Duration::from_millis(s.retry_initial_ms),
                retry_max: Duration::from_millis(s.retry_max_ms),
                sink,
            })
        })
        .collect()
}

/// The sink `settings` describe; `client` is the forward sinks' shared HTTP
/// client, made by the first that needs it.
fn build_one(
    settings: &SinkSettings,
    client: &mut Option<reqwest::Client>,
) -> Result<Box<dyn Sink>, SinkBuildCause> {
    let name = settings.name.as_str();
    Ok(match &settings.kind {
        SinkKind::Log => Box::new(LogSink::new(name)),
        SinkKind::Nats(nats) => Box::new(NatsSink::from_settings(name, nats)?),
        SinkKind::RabbitMq(rabbitmq) => Box::new(RabbitMqSink::from_settings(name, rabbitmq)?),
        SinkKind::File(file) => Box::new(FileSink::new(file.path.clone(), file.rotation())),
        SinkKind::Redis(redis) => Box::new(RedisSink::from_settings(redis)?),
        SinkKind::Kafka(kafka) => Box::new(KafkaSink::from_settings(name, kafka)?),
        SinkKind::Forward(forward) => {
            let client = match client {
                Some(client) => reqwest::Client::clone(client),
                None => client
                    .insert(http_client().map_err(SinkBuildCause::HttpClient)?)
                    .clone(),
            };
            Box::new(ForwardSink::from_settings(client, forward)?)
        }
    })
}

/// The HTTP client for forward sinks: rustls with the Mozilla roots built in
/// (so a minimal container image needs no CA bundle), no redirects (a 3xx is
/// a permanent failure rather than a silent re-POST elsewhere).
fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("recordhook/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_chain::error_chain;

    #[test]
    fn a_sink_that_cannot_be_built_is_named_with_the_setting_at_fault_as_the_cause() {
        let mut settings = SinkSettings::log("bus");
        let url = SecretUrl::parse("http://:s3cret@h").unwrap();
        settings.kind = SinkKind::Redis(RedisSinkSettings::new(url));
        let Err(err) = build(&[SinkSettings::log("console"), settings]) else {
            panic!("a redis sink with an http:// URL was built");
        };
        assert_eq!(err.to_string(), "sink `bus` could not be set up");
        assert!(
            matches!(err.cause, SinkBuildCause::Setting(ref invalid) if invalid.field == "url")
        );
        assert_eq!(
            error_chain(&err),
            "sink `bus` could not be set up: `url`: \
             must be a redis:// or rediss:// URL, not `http://:[redacted]@h/`"
        );
    }
}
