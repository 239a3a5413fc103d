//! Looking through the spool for the admin API: pages of records, newest
//! first, filtered on indexed columns, each with where it stands with every
//! sink.

use serde::{Deserialize, Serialize};

use crate::record::Source;

/// Where a record stands, with one sink or overall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not tried yet, or waiting for a retry.
    Pending,
    /// Handled: delivered (or its dead letter purged).
    Delivered,
    /// Given up on; waiting for an operator.
    Dead,
}

impl DeliveryStatus {
    /// The status a record has overall: dead if any sink has it dead, else
    /// pending if any sink waits, else delivered.
    pub fn overall(statuses: impl IntoIterator<Item = Self>) -> Self {
        statuses
            .into_iter()
            .fold(Self::Delivered, |overall, status| match (overall, status) {
                (Self::Dead, _) | (_, Self::Dead) => Self::Dead,
                (Self::Pending, _) | (_, Self::Pending) => Self::Pending,
                _ => Self::Delivered,
            })
    }

    /// From the word a spool row stores.
    pub(super) fn from_stored(state: &str) -> Self {
        match state {
            "dead" => Self::Dead,
            "pending" => Self::Pending,
            _ => Self::Delivered,
        }
    }
}

/// A record's source from its stored column: NULL is a record stored before
/// the column existed (or by a replica that does not write it), all of
/// which were live.
pub(super) fn source_from_stored(stored: Option<&str>) -> Source {
    match stored {
        Some(stored) if stored == Source::Reconciled.as_str() => Source::Reconciled,
        _ => Source::Live,
    }
}

/// Which records a page holds.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only this stream's.
    pub stream_id: Option<String>,
    /// Only this VOD file's.
    pub file_id: Option<String>,
    /// Only this event type.
    pub event_type: Option<i64>,
    /// Received at or after (Unix ms).
    pub since_ms: Option<i64>,
    /// Received before (Unix ms).
    pub until_ms: Option<i64>,
    /// Only records with this overall status.
    pub status: Option<DeliveryStatus>,
    /// Only records that reached recordhook this way (live: posted by CSS,
    /// including records stored before the source was kept).
    pub source: Option<Source>,
    /// Only records older than this position (the previous page's cursor).
    pub before_seq: Option<i64>,
    /// Largest page.
    pub limit: usize,
}

/// Where one record stands with one sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkDelivery {
    /// The sink.
    pub sink: String,
    /// Its status.
    pub status: DeliveryStatus,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last error, if an attempt failed.
    pub last_error: Option<String>,
    /// When it was last attempted (Unix ms), if known.
    pub last_attempt_ms: Option<i64>,
    /// When a waiting retry is due (Unix ms).
    pub next_attempt_ms: Option<i64>,
}

/// One record in a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSummary {
    /// Its position (the cursor for the next page).
    pub seq: i64,
    /// Its event id.
    pub id: String,
    /// When it was accepted (Unix ms).
    pub received_at_ms: i64,
    /// Its event type.
    pub event_type: i64,
    /// Its stream, when known.
    pub stream_id: Option<String>,
    /// Its VOD file id, when known.
    pub file_id: Option<String>,
    /// How it reached recordhook.
    pub source: Source,
    /// Where it stands with each sink that takes its type.
    pub sinks: Vec<SinkDelivery>,
}

impl EventSummary {
    /// Its status overall.
    pub fn status(&self) -> DeliveryStatus {
        DeliveryStatus::overall(self.sinks.iter().map(|sink| sink.status))
    }
}

/// One record whole.
#[derive(Debug, Clone)]
pub struct EventDetail {
    /// What a page shows of it.
    pub summary: EventSummary,
    /// The record as sinks receive it (JSON).
    pub body: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_sink_makes_the_record_dead_and_a_waiting_one_pending() {
        use DeliveryStatus::{Dead, Delivered, Pending};
        assert_eq!(DeliveryStatus::overall([]), Delivered);
        assert_eq!(DeliveryStatus::overall([Delivered, Pending]), Pending);
        assert_eq!(DeliveryStatus::overall([Pending, Dead, Delivered]), Dead);
    }
}
