//! Operational logs: JSON lines for machines or a pretty format for people,
//! with a `RUST_LOG`-style filter, written by tracing-subscriber's own
//! formatters. The writer is a parameter so tests can capture or silence it.
//!
//! In the service ([`init`]) lines go through tracing-appender's non-blocking
//! writer: a request only queues its line, and one background thread writes
//! them, so a slow or stalled stdout never holds up a callback. The queue is
//! bounded ([`BUFFERED_LINES`]); when it is full, new lines are dropped
//! rather than waited for. The thread writes what it has drained in one go
//! ([`batched`]).
//!
//! The JSON shape: `{"timestamp", "level", <the event's fields, flattened,
//! `message` among them>, "target", "span": {<the current span's fields>,
//! "name"}}`; `span` only inside a span.
//!
//! Traces over OTLP, when `[telemetry.otlp]` asks for them, are a layer
//! under the same subscriber ([`traces`]).
//!
//! The log sink's record lines do not come through here: they are
//! deliveries, written by the sink itself whatever the filter says
//! ([`crate::sinks::LogSink`]).

mod batched;
mod settings;
pub mod traces;

pub use settings::{LogFormat, LogSettings, OtlpSettings, TelemetrySettings};

use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

use tracing::Subscriber;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

use traces::{TraceGuard, TraceLayer};

/// Lines queued for a slow output before new ones are dropped. At a few
/// hundred bytes a line, at most a few MiB held while stdout is stalled, and
/// about a second of lines at full load while it only stutters.
pub const BUFFERED_LINES: usize = 16_384;

/// The log filter in `log.level` is not valid.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `log.level`: {0}")]
pub struct FilterError(String);

/// Logs or traces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `log.level` is not a valid filter.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// `[telemetry.otlp]` could not be turned into an exporter.
    #[error(transparent)]
    Traces(#[from] traces::TraceSetupError),
}

/// Builds a subscriber writing to `writer` as `settings` say; each line is
/// handed to `writer` in one `write_all`.
pub fn subscriber<W>(
    settings: &LogSettings,
    writer: W,
) -> Result<Box<dyn Subscriber + Send + Sync>, FilterError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    subscriber_with_traces(settings, writer, None)
}

/// [`subscriber`], with spans also going to `traces` when given. The log
/// filter applies to both.
pub fn subscriber_with_traces<W>(
    settings: &LogSettings,
    writer: W,
    traces: Option<TraceLayer>,
) -> Result<Box<dyn Subscriber + Send + Sync>, FilterError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&settings.level).map_err(|err| FilterError(err.to_string()))?;
    let base = tracing_subscriber::registry().with(traces).with(filter);
    let logs = tracing_subscriber::fmt::layer().with_writer(writer);
    Ok(match settings.format {
        LogFormat::Json => Box::new(
            base.with(
                logs.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            ),
        ),
        LogFormat::Pretty => Box::new(base.with(logs.pretty())),
    })
}

/// Keeps the log's writer thread going; dropping it writes out the lines
/// still queued (waiting [`FLUSH_LIMIT`] at most), so hold it until the
/// process exits.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    worker: Option<WorkerGuard>,
}

/// The longest a dropped [`LogGuard`] waits for queued lines to be written.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(2);

impl Drop for LogGuard {
    fn drop(&mut self) {
        let Some(worker) = self.worker.take() else {
            return;
        };
        // tracing-appender's guard waits about a second for the writer
        // thread, but when the queue is full it first prints a complaint to
        // stdout, and that print waits forever on a stdout nobody reads (the
        // writer thread holds stdout's lock, stuck in its write). Dropping it
        // on a thread of its own bounds the wait, so the process can exit.
        let (done, dropped) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("recordhook-log-flush".to_owned())
            .spawn(move || {
                drop(worker);
                let _ = done.send(());
            });
        if spawned.is_ok() {
            let _ = dropped.recv_timeout(FLUSH_LIMIT);
        }
    }
}

/// A writer that queues each line for a background thread writing to
/// `output`, dropping lines when [`BUFFERED_LINES`] are already queued.
pub fn non_blocking<W: Write + Send + 'static>(output: W) -> (NonBlocking, LogGuard) {
    let (writer, worker) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("recordhook-log")
        .finish(batched::BatchedLines::new(output));
    (
        writer,
        LogGuard {
            worker: Some(worker),
        },
    )
}

/// Sets up the process's logs as `settings` say, written to `output` by a
/// background thread ([`non_blocking`]), and traces when `otlp` is given.
/// Keep the guards until exit.
pub fn init<W: Write + Send + 'static>(
    settings: &LogSettings,
    otlp: Option<&OtlpSettings>,
    output: W,
) -> Result<(LogGuard, Option<TraceGuard>), TelemetryError> {
    let (layer, trace_guard) = match otlp {
        Some(otlp) => {
            let (layer, guard) = traces::layer(otlp)?;
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    let (writer, guard) = non_blocking(output);
    install(subscriber_with_traces(settings, writer, layer)?);
    Ok((guard, trace_guard))
}

/// Installs `subscriber` for the whole process; a second call is ignored.
pub fn install(subscriber: Box<dyn Subscriber + Send + Sync>) {
    // Already installed (tests that build several servers): keep the first.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    /// Collects everything written, for inspection.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|line| {
                    serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"))
                })
                .collect()
        }
    }

    fn json_settings() -> LogSettings {
        LogSettings {
            format: LogFormat::Json,
            level: "info".to_owned(),
        }
    }

    fn lines_of(work: impl FnOnce()) -> Vec<Value> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = subscriber(&json_settings(), move || writer.clone()).unwrap();
        tracing::subscriber::with_default(subscriber, work);
        captured.lines()
    }

    #[derive(Debug)]
    struct Odd {
        _quote: &'static str,
    }

    #[test]
    fn an_event_in_a_span_has_the_documented_shape() {
        let lines = lines_of(|| {
            let span = tracing::info_span!("request", method = "POST", request_id = %"r-1");
            let _entered = span.enter();
            tracing::warn!(
                count = 3_u64,
                delta = -2_i64,
                ok = true,
                ratio = 0.5,
                big = u128::MAX,
                shown = %"a\"b",
                debugged = ?Odd { _quote: "\"\n" },
                "callback {}", "rejected"
            );
        });
        let line = &lines[0];
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "timestamp",
                "level",
                "message",
                "count",
                "delta",
                "ok",
                "ratio",
                "big",
                "shown",
                "debugged",
                "target",
                "span"
            ]
        );
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "callback rejected");
        assert_eq!(line["count"], 3);
        assert_eq!(line["delta"], -2);
        assert_eq!(line["ok"], true);
        assert_eq!(line["ratio"], 0.5);
        // 128-bit integers are written as strings (our own formatter wrote
        // numbers); no field of recordhook's logs is one.
        assert_eq!(line["big"], u128::MAX.to_string());
        assert_eq!(line["shown"], "a\"b");
        assert_eq!(line["debugged"], r#"Odd { _quote: "\"\n" }"#);
        assert_eq!(line["target"], module_path!());
        assert_eq!(
            line["span"],
            serde_json::json!({"method": "POST", "request_id": "r-1", "name": "request"})
        );
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(timestamp).is_ok(), "{timestamp}");
    }

    #[test]
    fn fields_recorded_later_join_the_span_and_events_outside_spans_have_none() {
        let lines = lines_of(|| {
            tracing::info!("outside");
            let span = tracing::info_span!("delivery", sink = "a", records = tracing::field::Empty);
            span.record("records", 7);
            let empty = tracing::info_span!("bare");
            span.in_scope(|| tracing::info!("inside"));
            empty.in_scope(|| tracing::info!("in a span without fields"));
        });
        assert!(lines[0].get("span").is_none());
        assert_eq!(
            lines[1]["span"],
            serde_json::json!({"sink": "a", "records": 7, "name": "delivery"})
        );
        assert_eq!(lines[2]["span"], serde_json::json!({"name": "bare"}));
    }

    #[test]
    fn numbers_json_cannot_hold_are_written_as_null() {
        let lines = lines_of(|| tracing::info!(nan = f64::NAN, inf = f64::INFINITY, "x"));
        assert_eq!(lines[0]["nan"], Value::Null);
        assert_eq!(lines[0]["inf"], Value::Null);
    }

    #[test]
    fn the_level_filters_events_out() {
        let captured = Captured::default();
        let writer = captured.clone();
        let settings = LogSettings {
            level: "warn".to_owned(),
            ..json_settings()
        };
        let subscriber = subscriber(&settings, move || writer.clone()).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("dropped");
            tracing::warn!("kept");
        });
        let messages: Vec<Value> = captured
            .lines()
            .iter()
            .map(|l| l["message"].clone())
            .collect();
        assert_eq!(messages, ["kept"]);
    }

    #[test]
    fn an_invalid_level_is_refused() {
        let settings = LogSettings {
            level: "info,=[".to_owned(),
            ..json_settings()
        };
        assert!(subscriber(&settings, io::sink).is_err());
    }

    #[test]
    fn queued_lines_are_written_when_the_guard_drops() {
        let captured = Captured::default();
        let (writer, guard) = non_blocking(captured.clone());
        let subscriber = subscriber(&json_settings(), writer).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            for n in 0..100 {
                tracing::info!(n, "queued");
            }
        });
        drop(guard);
        assert_eq!(captured.lines().len(), 100);
    }

    /// An output whose first write never returns until the test lets it,
    /// like a pipe nobody reads.
    struct Stalled(Mutex<mpsc::Receiver<()>>);

    impl Write for Stalled {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            let _ = self.0.lock().unwrap().recv();
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_lines_instead_of_blocking_the_logger() {
        let (release, stalled) = mpsc::channel();
        let (writer, guard) = non_blocking(Stalled(Mutex::new(stalled)));
        let subscriber = subscriber(&json_settings(), writer).unwrap();
        let started = Instant::now();
        tracing::subscriber::with_default(subscriber, || {
            for n in 0..(BUFFERED_LINES * 2) {
                tracing::info!(n, "never written");
            }
        });
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "logging waited for the stalled output"
        );
        drop(release);
        drop(guard);
    }
}
