//! Log output: JSON lines for machines or a pretty format for people, with a
//! `RUST_LOG`-style filter. The writer is a parameter so tests can capture or
//! silence it.

mod batch;
mod json;
mod settings;

pub use batch::batched;
pub use settings::{LogFormat, LogSettings};

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use batch::Batching;
use json::{JsonFields, JsonLines};

/// The log filter in `log.level` is not valid.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `log.level`: {0}")]
pub struct FilterError(String);

/// Builds a subscriber writing to `writer` as `settings` say.
pub fn subscriber<W>(
    settings: &LogSettings,
    writer: W,
) -> Result<Box<dyn Subscriber + Send + Sync>, FilterError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&settings.level).map_err(|err| FilterError(err.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Batching::new(writer));
    Ok(match settings.format {
        LogFormat::Json => Box::new(
            builder
                .fmt_fields(JsonFields)
                .event_format(JsonLines)
                .finish(),
        ),
        LogFormat::Pretty => Box::new(builder.pretty().finish()),
    })
}

/// Installs `subscriber` for the whole process; a second call is ignored.
pub fn install(subscriber: Box<dyn Subscriber + Send + Sync>) {
    // Already installed (tests that build several servers): keep the first.
    let _ = tracing::subscriber::set_global_default(subscriber);
}
