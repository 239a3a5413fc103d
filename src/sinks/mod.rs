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
//! for settings errors and bounds), never `settings`.

mod checks;
mod file;
mod forward;
mod log;
mod nats;
mod rabbitmq;
mod redis;
mod settings;
mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::record::StoredRecord;

pub use self::checks::{
    InvalidSetting, MAX_TIMEOUT_SECS, MAX_TIMEOUT_SECS as MAX_FORWARD_TIMEOUT_SECS,
};
pub use self::file::{FileSink, FileSinkSettings, Rotation};
pub use self::forward::{
    EVENT_ID_HEADER, ForwardSink, ForwardSinkSettings, MAX_CONCURRENCY as MAX_FORWARD_CONCURRENCY,
};
pub use self::log::LogSink;
pub use self::nats::{NatsSink, NatsSinkSettings};
pub use self::rabbitmq::{RabbitMqSink, RabbitMqSinkSettings};
pub use self::redis::{RedisSink, RedisSinkSettings};
pub use self::settings::{MAX_ATTEMPTS, MAX_RETRY_MS, SinkKind, SinkSettings};
pub use self::webhook::{WebhookSigner, webhook_key};
pub use crate::secret_url::SecretUrl;

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
    fn deliver<'a>(&'a self, record: &'a StoredRecord) -> BoxFuture<'a, Result<(), DeliveryError>>;

    /// Delivers several records, returning one result per record in order.
    /// Sinks that can make one durable write for many override this.
    fn deliver_batch<'a>(
        &'a self,
        records: &'a [StoredRecord],
    ) -> BoxFuture<'a, Vec<Result<(), DeliveryError>>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(records.len());
            for record in records {
                results.push(self.deliver(record).await);
            }
            results
        })
    }

    /// Reopens any file the sink holds (SIGHUP); most sinks hold none.
    fn reopen(&self) {}

    /// Whether only one process at a time may deliver to it: true for a sink
    /// that writes a file on its host. With several replicas on one
    /// PostgreSQL spool, one replica at a time holds such a sink.
    fn single_writer(&self) -> bool {
        false
    }
}

/// Runs CPU-heavy synchronous work (serialising or logging a whole batch)
/// without stalling the requests that share this worker thread: on the
/// multi-threaded runtime the thread's other tasks move elsewhere meanwhile.
/// A current-thread runtime (as in tests) cannot do that; there it runs inline.
pub(crate) fn run_blocking<R>(work: impl FnOnce() -> R) -> R {
    let multi_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_threaded {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

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

/// Why a sink could not be built.
#[derive(Debug, thiserror::Error)]
#[error("sink `{name}` could not be set up: {reason}")]
pub struct SinkBuildError {
    /// The sink's name.
    pub name: String,
    /// What went wrong.
    pub reason: String,
}

/// Turns the configured sinks into runtime sinks, failing on the first that
/// cannot work. Forward sinks share one HTTP client (one connection pool).
pub fn build(settings: &[SinkSettings]) -> Result<Vec<ConfiguredSink>, SinkBuildError> {
    let mut client = None;
    settings
        .iter()
        .map(|s| {
            let fail = |reason: String| SinkBuildError {
                name: s.name.clone(),
                reason,
            };
            let sink: Box<dyn Sink> = match &s.kind {
                SinkKind::Log => Box::new(LogSink::new(&s.name)),
                SinkKind::Nats(nats) => Box::new(
                    NatsSink::from_settings(&s.name, nats).map_err(|err| fail(err.to_string()))?,
                ),
                SinkKind::RabbitMq(rabbitmq) => Box::new(
                    RabbitMqSink::from_settings(&s.name, rabbitmq)
                        .map_err(|err| fail(err.to_string()))?,
                ),
                SinkKind::File(file) => Box::new(FileSink::new(file.path.clone(), file.rotation())),
                SinkKind::Redis(redis) => {
                    Box::new(RedisSink::from_settings(redis).map_err(|err| fail(err.to_string()))?)
                }
                SinkKind::Forward(forward) => {
                    let client = match &client {
                        Some(client) => reqwest::Client::clone(client),
                        None => {
                            let built = http_client().map_err(|err| fail(err.to_string()))?;
                            client.insert(built).clone()
                        }
                    };
                    Box::new(
                        ForwardSink::from_settings(client, forward)
                            .map_err(|err| fail(err.to_string()))?,
                    )
                }
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
