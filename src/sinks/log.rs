//! The log sink: one structured INFO event per record, for users who tail
//! recordhook's logs (e.g. with `jq`) instead of running a downstream service.

use super::{BoxFuture, DeliveryError, Sink};
use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::record::StoredRecord;

/// Writes each record as a structured log event.
pub struct LogSink {
    name: String,
}

impl LogSink {
    /// A log sink called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
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

impl LogSink {
    fn log(&self, record: &StoredRecord) -> Result<(), DeliveryError> {
        let view: LogView<'_> =
            serde_json::from_str(&record.json).map_err(|err| DeliveryError::Permanent {
                reason: format!("stored record is unreadable: {err}"),
            })?;
        let recording = view.recording.as_ref();
        let stream = &view.stream;
        tracing::info!(
            target: "recordhook::record",
            sink = %self.name,
            event_id = %view.id,
            event_type = view.event_type,
            event = crate::protocol::event_type_label(view.event_type),
            received_at = %view.received_at,
            app = stream.app.as_deref().or(recording.and_then(|r| r.app.as_deref())),
            appname = stream
                .appname
                .as_deref()
                .or(recording.and_then(|r| r.appname.as_deref())),
            stream_id = stream
                .stream_id
                .as_deref()
                .or(view.event.stream_id.as_ref().and_then(|id| id.as_str())),
            appid = stream.appid.as_deref(),
            file_id = recording.and_then(|r| r.file_id.as_deref()),
            file_format = recording.and_then(|r| r.file_format.as_deref()),
            duration = recording.and_then(|r| r.duration),
            file_size = recording.and_then(|r| r.file_size),
            video_url = recording.and_then(|r| r.video_url.as_deref()),
            warnings = view.warnings.len(),
            "record"
        );
        Ok(())
    }
}

impl Sink for LogSink {
    fn deliver<'a>(&'a self, record: &'a StoredRecord) -> BoxFuture<'a, Result<(), DeliveryError>> {
        let result = self.log(record);
        Box::pin(async { result })
    }

    fn deliver_batch<'a>(
        &'a self,
        records: &'a [StoredRecord],
    ) -> BoxFuture<'a, Vec<Result<(), DeliveryError>>> {
        Box::pin(async move {
            // Formatting and writing a batch of log lines is synchronous work;
            // the lines leave in one write, before the batch counts as delivered.
            super::run_blocking(|| {
                crate::telemetry::batched(|| {
                    records.iter().map(|record| self.log(record)).collect()
                })
            })
        })
    }
}
