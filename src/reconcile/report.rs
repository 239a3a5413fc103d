//! What one reconciliation run found, per event type: what CSS sent, what
//! recordhook already had, what it recovered, and what it could not; kept
//! with the run in the spool, printed by `recordhook reconcile`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::protocol::event_type_label;

/// The counts of one event type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeCounts {
    /// Callbacks Tencent says CSS sent.
    pub sent: u64,
    /// Of those, the ones the spool already had.
    pub present: u64,
    /// Of those, the ones missing and now stored (and on their way to the sinks).
    pub recovered: u64,
    /// Of those, the ones missing that a dry run did not store.
    pub missing: u64,
    /// Of those, the ones missing whose body Tencent did not keep or that
    /// do not parse: kept as gaps, never invented into records.
    pub unrecoverable: u64,
    /// Of the present ones, those CSS counted as failed (a non-zero
    /// `ResultCode`: recordhook stored them but the answer did not reach CSS
    /// in time, or a retry did).
    pub failed_at_css_but_present: u64,
}

impl TypeCounts {
    fn add(&mut self, other: &Self) {
        self.sent += other.sent;
        self.present += other.present;
        self.recovered += other.recovered;
        self.missing += other.missing;
        self.unrecoverable += other.unrecoverable;
        self.failed_at_css_but_present += other.failed_at_css_but_present;
    }
}

/// One run's findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// First second checked, RFC 3339 UTC.
    pub window_start: String,
    /// Last second checked, RFC 3339 UTC.
    pub window_end: String,
    /// Whether it only looked (stored nothing, moved no checkpoint).
    pub dry_run: bool,
    /// Streams Tencent listed as pushed in the window (after the filters).
    pub streams: u64,
    /// Streams whose callback records were asked for.
    pub streams_checked: u64,
    /// Requests made to Tencent's API (retries included).
    pub api_calls: u64,
    /// Counts per event type.
    pub by_type: BTreeMap<i64, TypeCounts>,
    /// Streams left for the next run, each with why.
    pub errors: Vec<String>,
}

impl Report {
    /// The counts of `event_type`, created empty when first needed.
    pub fn counts(&mut self, event_type: i64) -> &mut TypeCounts {
        self.by_type.entry(event_type).or_default()
    }

    /// Adds another part of the same run (one stream's findings).
    pub fn merge(&mut self, other: Report) {
        self.streams_checked += other.streams_checked;
        self.api_calls += other.api_calls;
        for (event_type, counts) in &other.by_type {
            self.counts(*event_type).add(counts);
        }
        self.errors.extend(other.errors);
    }

    /// All event types together.
    pub fn total(&self) -> TypeCounts {
        let mut total = TypeCounts::default();
        self.by_type.values().for_each(|counts| total.add(counts));
        total
    }

    /// Whether something CSS sent is still missing after the run: not
    /// recovered (a dry run), unrecoverable, or on a stream that failed.
    pub fn has_missing(&self) -> bool {
        let total = self.total();
        total.missing > 0 || total.unrecoverable > 0 || !self.errors.is_empty()
    }

    /// A table for people.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "reconciliation {} .. {}{}: {} streams listed, {} checked, {} API requests",
            self.window_start,
            self.window_end,
            if self.dry_run { " (dry run)" } else { "" },
            self.streams,
            self.streams_checked,
            self.api_calls
        );
        let _ = writeln!(
            text,
            "{:<16} {:>8} {:>8} {:>10} {:>8} {:>14} {:>22}",
            "event type",
            "sent",
            "have",
            "recovered",
            "missing",
            "unrecoverable",
            "failed at CSS, have"
        );
        let mut rows: Vec<(String, TypeCounts)> = self
            .by_type
            .iter()
            .map(|(event_type, counts)| {
                (
                    format!("{event_type} {}", event_type_label(*event_type)),
                    *counts,
                )
            })
            .collect();
        rows.push(("all".to_owned(), self.total()));
        for (name, counts) in rows {
            let _ = writeln!(
                text,
                "{:<16} {:>8} {:>8} {:>10} {:>8} {:>14} {:>22}",
                name,
                counts.sent,
                counts.present,
                counts.recovered,
                counts.missing,
                counts.unrecoverable,
                counts.failed_at_css_but_present
            );
        }
        for error in &self.errors {
            let _ = writeln!(text, "not checked: {error}");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_add_up_and_missing_is_what_was_not_recovered() {
        let mut report = Report::default();
        let mut part = Report {
            streams_checked: 1,
            api_calls: 2,
            ..Report::default()
        };
        *part.counts(100) = TypeCounts {
            sent: 3,
            present: 1,
            recovered: 2,
            ..TypeCounts::default()
        };
        report.merge(part.clone());
        report.merge(part);
        assert_eq!(report.api_calls, 4);
        assert_eq!(report.total().recovered, 4);
        assert!(!report.has_missing());
        report.counts(0).unrecoverable = 1;
        assert!(report.has_missing());
        let text = report.to_text();
        assert!(text.contains("100 record"), "{text}");
        assert!(text.lines().any(|line| line.starts_with("all")), "{text}");
    }
}
