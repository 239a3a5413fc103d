//! The log sink: one JSON line per record on stdout, for users who tail
//! recordhook's output (e.g. with `jq`) instead of running a downstream
//! service.
//!
//! The sink writes its lines itself rather than through `tracing`: a record
//! line is a delivery, not a diagnostic, so `log.level` must not be able to
//! drop it (with `warn`, an INFO event was filtered out and the record still
//! counted as delivered), and a failed write must be a retriable failure
//! rather than a line silently lost. The line keeps the shape the tracing
//! event had (`timestamp`, `level`, `message: "record"`, the record's fields,
//! `target`, `span`), so `jq` filters written for it keep working.
//!
//! A batch is written under one lock of its writer (stdout's, in production)
//! and flushed before any record of it counts as delivered. Operational log
//! lines take the same lock for each line they write, so the two never
//! interleave inside a line.

use std::borrow::Cow;
use std::io::{self, BufWriter, Write};
use std::time::SystemTime;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::contract::{BoxFuture, DeliveryError, Outcomes, Sink, run_blocking};
use crate::record::StoredRecord;

/// Opens the writer for one batch; whatever it returns is held (and, for
/// stdout, its lock with it) until the batch is written and flushed.
pub type OpenWriter = Box<dyn Fn() -> Box<dyn Write> + Send + Sync>;

/// How much of a batch is gathered before it is handed to the writer: a
/// 256-record batch of ~600-byte lines leaves in a few writes.
const BUFFER_BYTES: usize = 64 * 1024;

/// Writes each record as one JSON line on stdout (or an injected writer).
pub struct LogSink {
    /// The sink's configured name, written in each line's `sink` field.
    name: String,
    /// Opens the writer for one batch.
    open: OpenWriter,
}

impl LogSink {
    /// A log sink called `name`, writing to stdout.
    pub fn new(name: &str) -> Self {
        Self::with_writer(name, Box::new(|| Box::new(io::stdout().lock())))
    }

    /// A log sink called `name` writing to what `open` returns, once per
    /// batch (tests inject failing or capturing writers).
    pub fn with_writer(name: &str, open: OpenWriter) -> Self {
        Self {
            name: name.to_owned(),
            open,
        }
    }
}

/// The fields the log line shows, read from the stored JSON without building
/// the whole record (`event` is skipped except for `stream_id`, read only
/// for records stored before `stream` existed).
#[derive(Deserialize)]
struct LogView<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    event_type: i64,
    #[serde(borrow)]
    received_at: Cow<'a, str>,
    #[serde(default, borrow)]
    stream: StreamView<'a>,
    event: EventView,
    #[serde(default)]
    recording: Option<RecordingView<'a>>,
    #[serde(default)]
    warnings: Vec<IgnoredAny>,
}

/// The record's `stream` object.
#[derive(Default, Deserialize)]
struct StreamView<'a> {
    #[serde(default, borrow)]
    app: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    appname: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stream_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    appid: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct EventView {
    /// Any JSON value: a number here must not make the record unreadable.
    #[serde(default)]
    stream_id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RecordingView<'a> {
    #[serde(default, borrow)]
    app: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    appname: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    file_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    file_format: Option<Cow<'a, str>>,
    #[serde(default)]
    duration: Option<i64>,
    #[serde(default)]
    file_size: Option<u64>,
    #[serde(default, borrow)]
    video_url: Option<Cow<'a, str>>,
}

/// One record line, fields in the order the tracing event wrote them; absent
/// values are left out, as tracing left out an empty `Option`.
#[derive(Serialize)]
struct RecordLine<'a> {
    timestamp: &'a str,
    level: &'static str,
    message: &'static str,
    sink: &'a str,
    event_id: &'a str,
    event_type: i64,
    /// The type's name (`record`, `push_start`, …; `other` when undocumented).
    event: &'static str,
    received_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    appname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    appid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_format: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    video_url: Option<&'a str>,
    warnings: usize,
    target: &'static str,
    span: &'a DeliverySpan<'a>,
}

/// The `span` object the line had when the delivery span wrapped the event.
#[derive(Serialize)]
struct DeliverySpan<'a> {
    sink: &'a str,
    records: usize,
    name: &'static str,
}

impl LogSink {
    /// Writes one line per readable record, then flushes; every record whose
    /// line was to be written fails as retriable if any write or the flush
    /// fails, since which lines got out is then unknown.
    fn write_batch(&self, records: &[StoredRecord]) -> Outcomes {
        let timestamp = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        let span = DeliverySpan {
            sink: &self.name,
            records: records.len(),
            name: "delivery",
        };
        let mut out = BufWriter::with_capacity(BUFFER_BYTES, (self.open)());
        let mut failure = None;
        let mut outcomes = Outcomes::from_fn(records, |record| {
            let view = read(record)?;
            if failure.is_none()
                && let Err(err) = write_line(&mut out, &view, &timestamp, &span)
            {
                failure = Some(err);
            }
            Ok(())
        });
        let written = match failure {
            Some(err) => Err(err),
            None => out.flush(),
        };
        if let Err(err) = written {
            // Drop what is still buffered instead of letting BufWriter's drop
            // try again behind our back.
            drop(out.into_parts());
            outcomes.fail_successes(&DeliveryError::retriable(format!(
                "log sink could not write to its output: {err}"
            )));
        }
        outcomes
    }
}

/// The fields of `record` the line shows; an unreadable stored record can
/// never be shown, so it fails permanently.
fn read(record: &StoredRecord) -> Result<LogView<'_>, DeliveryError> {
    serde_json::from_str(&record.json)
        .map_err(|err| DeliveryError::permanent(format!("stored record is unreadable: {err}")))
}

fn write_line(
    out: &mut impl Write,
    view: &LogView<'_>,
    timestamp: &str,
    span: &DeliverySpan<'_>,
) -> io::Result<()> {
    let recording = view.recording.as_ref();
    let stream = &view.stream;
    // Records stored before the `stream` object existed name their stream
    // in `recording` and `event` only.
    let line = RecordLine {
        timestamp,
        level: "INFO",
        message: "record",
        sink: span.sink,
        event_id: &view.id,
        event_type: view.event_type,
        event: crate::protocol::event_type_label(view.event_type),
        received_at: &view.received_at,
        app: stream
            .app
            .as_deref()
            .or(recording.and_then(|r| r.app.as_deref())),
        appname: stream
            .appname
            .as_deref()
            .or(recording.and_then(|r| r.appname.as_deref())),
        stream_id: stream.stream_id.as_deref().or(view
            .event
            .stream_id
            .as_ref()
            .and_then(|id| id.as_str())),
        appid: stream.appid.as_deref(),
        file_id: recording.and_then(|r| r.file_id.as_deref()),
        file_format: recording.and_then(|r| r.file_format.as_deref()),
        duration: recording.and_then(|r| r.duration),
        file_size: recording.and_then(|r| r.file_size),
        video_url: recording.and_then(|r| r.video_url.as_deref()),
        warnings: view.warnings.len(),
        target: "recordhook::record",
        span,
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

impl Sink for LogSink {
    fn deliver_batch<'a>(&'a self, records: &'a [StoredRecord]) -> BoxFuture<'a, Outcomes> {
        // Formatting and writing (possibly waiting on a slow stdout) is
        // synchronous work: keep it off the thread serving requests.
        Box::pin(async move { run_blocking(|| self.write_batch(records)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Authenticator, TimeWindow, UnverifiedCallback};
    use crate::record::Record;
    use crate::sinks::contract::deliver_alone;
    use std::sync::{Arc, Mutex};
    use std::time::UNIX_EPOCH;

    fn record(body: &str) -> StoredRecord {
        let window = TimeWindow {
            clock_skew_secs: 0,
            max_validity_secs: 1,
            expiry_grace_secs: 0,
        };
        let verified = Authenticator::unsigned(window)
            .verify(UnverifiedCallback::parse(body.as_bytes()).unwrap(), 0)
            .unwrap();
        let record = Record::from_verified(verified, UNIX_EPOCH).unwrap();
        StoredRecord::try_from(&record).unwrap()
    }

    fn recording(file_id: &str) -> StoredRecord {
        record(&format!(
            r#"{{"event_type":100,"app":"push.example.com","appname":"live","stream_id":"s1","file_id":"{file_id}","file_format":"mp4","duration":154,"file_size":277941079,"video_url":"http://v.example.com/a \"b\".mp4"}}"#
        ))
    }

    /// Collects everything written, and how many writers were opened.
    #[derive(Clone, Default)]
    struct Captured {
        bytes: Arc<Mutex<Vec<u8>>>,
        opened: Arc<Mutex<usize>>,
    }

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.bytes.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn capturing(name: &str) -> (LogSink, Captured) {
        let captured = Captured::default();
        let writer = captured.clone();
        let sink = LogSink::with_writer(
            name,
            Box::new(move || {
                *writer.opened.lock().unwrap() += 1;
                Box::new(writer.clone())
            }),
        );
        (sink, captured)
    }

    fn lines(captured: &Captured) -> Vec<serde_json::Value> {
        String::from_utf8(captured.bytes.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Fails every write, or only the flush.
    struct Failing {
        on_write: bool,
    }

    impl Write for Failing {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.on_write {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            } else {
                Ok(bytes.len())
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    #[tokio::test]
    async fn a_record_line_has_the_shape_the_tracing_event_had() {
        let (sink, captured) = capturing("console");
        let results = sink.deliver_batch(&[recording("f1")]).await;
        assert_eq!(results, [Ok(())]);
        let lines = lines(&captured);
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
                "sink",
                "event_id",
                "event_type",
                "event",
                "received_at",
                "app",
                "appname",
                "stream_id",
                "file_id",
                "file_format",
                "duration",
                "file_size",
                "video_url",
                "warnings",
                "target",
                "span"
            ]
        );
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "record");
        assert_eq!(line["target"], "recordhook::record");
        assert_eq!(line["sink"], "console");
        assert_eq!(line["event_type"], 100);
        assert_eq!(line["stream_id"], "s1");
        assert_eq!(line["file_id"], "f1");
        assert_eq!(line["duration"], 154);
        assert_eq!(line["file_size"], 277_941_079);
        assert_eq!(line["video_url"], "http://v.example.com/a \"b\".mp4");
        // The test body lacks fields CSS always sends: those are warnings.
        assert!(line["warnings"].is_u64(), "{line}");
        assert_eq!(
            line["span"],
            serde_json::json!({"sink": "console", "records": 1, "name": "delivery"})
        );
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(timestamp).is_ok(), "{timestamp}");
    }

    #[tokio::test]
    async fn absent_fields_are_left_out_of_the_line() {
        let (sink, captured) = capturing("console");
        deliver_alone(&sink, &record(r#"{"event_type":1}"#))
            .await
            .unwrap();
        let line = &lines(&captured)[0];
        for absent in ["app", "stream_id", "file_id", "duration", "video_url"] {
            assert!(line.get(absent).is_none(), "{absent} in {line}");
        }
        assert_eq!(line["event_type"], 1);
    }

    #[tokio::test]
    async fn a_batch_is_written_through_one_writer_in_order() {
        let (sink, captured) = capturing("console");
        let batch: Vec<StoredRecord> = (0..300).map(|n| recording(&format!("f{n}"))).collect();
        let results = sink.deliver_batch(&batch).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(*captured.opened.lock().unwrap(), 1);
        let file_ids: Vec<String> = lines(&captured)
            .iter()
            .map(|line| line["file_id"].as_str().unwrap().to_owned())
            .collect();
        let expected: Vec<String> = (0..300).map(|n| format!("f{n}")).collect();
        assert_eq!(file_ids, expected);
    }

    #[tokio::test]
    async fn a_failing_writer_makes_every_record_of_the_batch_retriable() {
        for on_write in [true, false] {
            let sink =
                LogSink::with_writer("console", Box::new(move || Box::new(Failing { on_write })));
            let batch: Vec<StoredRecord> = (0..3).map(|n| recording(&format!("f{n}"))).collect();
            let results = sink.deliver_batch(&batch).await;
            assert_eq!(results.len(), 3);
            for result in results {
                assert!(
                    matches!(result, Err(DeliveryError::Retriable { .. })),
                    "failing on write: {on_write}: {result:?}"
                );
            }
            let single = deliver_alone(&sink, &batch[0]).await;
            assert!(
                matches!(single, Err(DeliveryError::Retriable { .. })),
                "{single:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_unreadable_record_is_permanent_and_the_rest_are_delivered() {
        let (sink, captured) = capturing("console");
        let broken = StoredRecord {
            id: "broken".to_owned(),
            event_type: 100,
            json: "{not json".to_owned(),
        };
        let results = sink
            .deliver_batch(&[recording("f1"), broken, recording("f2")])
            .await;
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(
            matches!(results[1], Err(DeliveryError::Permanent { .. })),
            "{results:?}"
        );
        assert_eq!(lines(&captured).len(), 2);
    }
}
