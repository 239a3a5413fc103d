//! Sinks: where accepted records go. Each sink is built once at start-up from
//! its settings and then driven by its own delivery worker
//! ([`crate::delivery`]), so a slow or failing sink never holds up another.

mod log;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::configuration::{SinkSettings, SinkType};
use crate::record::Record;

pub use self::log::LogSink;

/// A boxed future, so sinks can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a delivery failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying: the target may recover (network error, timeout, 5xx, disk full).
    #[error("{reason}")]
    Retriable {
        /// What went wrong.
        reason: String,
        /// How long the target asked us to wait (`Retry-After`), if it did.
        retry_after: Option<Duration>,
    },
    /// Retrying the same record cannot succeed (the target rejected it).
    #[error("{reason}")]
    Permanent {
        /// What went wrong.
        reason: String,
    },
}

/// A delivery target.
pub trait Sink: Send + Sync {
    /// Delivers one record; `Ok` only once the target has it.
    fn deliver<'a>(&'a self, record: &'a Record) -> BoxFuture<'a, Result<(), DeliveryError>>;

    /// Delivers several records, returning one result per record in order.
    /// Sinks that can make one durable write for many override this.
    fn deliver_batch<'a>(
        &'a self,
        records: &'a [Record],
    ) -> BoxFuture<'a, Vec<Result<(), DeliveryError>>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(records.len());
            for record in records {
                results.push(self.deliver(record).await);
            }
            results
        })
    }
}

/// A sink together with the settings that govern its deliveries.
pub struct ConfiguredSink {
    /// Name from the configuration.
    pub name: String,
    /// Event types it receives.
    pub event_types: Vec<i64>,
    /// Attempts before a dead letter.
    pub max_attempts: u32,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// The sink itself.
    pub sink: Box<dyn Sink>,
}

/// Why a sink could not be built.
#[derive(Debug, thiserror::Error)]
#[error("sink `{name}` could not be set up: {reason}")]
pub struct SinkBuildError {
    /// The sink's name.
    pub name: String,
    /// What went wrong.
    pub reason: String,
}

/// Turns the configured sinks into runtime sinks, failing on the first that cannot work.
pub fn build(settings: &[SinkSettings]) -> Result<Vec<ConfiguredSink>, SinkBuildError> {
    settings
        .iter()
        .map(|s| {
            let sink: Box<dyn Sink> = match s.kind {
                SinkType::Log => Box::new(LogSink::new(&s.name)),
            };
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
