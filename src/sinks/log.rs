//! The log sink: one structured INFO event per record, for users who tail
//! recordhook's logs (e.g. with `jq`) instead of running a downstream service.

use super::{BoxFuture, DeliveryError, Sink};
use crate::record::Record;

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

impl LogSink {
    fn log(&self, record: &Record) {
        let recording = record.recording.clone().unwrap_or_default();
        tracing::info!(
            target: "recordhook::record",
            sink = %self.name,
            event_id = %record.id,
            event_type = record.event_type,
            received_at = %record.received_at,
            app = recording.app.as_deref(),
            appname = recording.appname.as_deref(),
            stream_id = record.stream_id(),
            file_id = recording.file_id.as_deref(),
            file_format = recording.file_format.as_deref(),
            duration = recording.duration,
            file_size = recording.file_size,
            video_url = recording.video_url.as_deref(),
            warnings = record.warnings.len(),
            "record"
        );
    }
}

impl Sink for LogSink {
    fn deliver<'a>(&'a self, record: &'a Record) -> BoxFuture<'a, Result<(), DeliveryError>> {
        self.log(record);
        Box::pin(async { Ok(()) })
    }

    fn deliver_batch<'a>(
        &'a self,
        records: &'a [Record],
    ) -> BoxFuture<'a, Vec<Result<(), DeliveryError>>> {
        Box::pin(async move {
            // Formatting and writing a batch of log lines is synchronous work.
            super::run_blocking(|| {
                records
                    .iter()
                    .map(|record| {
                        self.log(record);
                        Ok(())
                    })
                    .collect()
            })
        })
    }
}
