//! Each sink's backlog (pending deliveries) over the last hour, sampled once
//! a minute, for the console's chart. Kept in memory: it starts empty when
//! the process starts.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::protocol::EventTypes;
use crate::spool::{Spool, unix_ms};

/// Samples kept per sink: an hour of minutes.
const SAMPLES: usize = 60;
/// Time between samples.
const INTERVAL: Duration = Duration::from_secs(60);

/// One sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Sample {
    /// When it was taken (Unix ms).
    pub at_ms: i64,
    /// Deliveries pending then.
    pub pending: u64,
}

/// The samples of every sink.
#[derive(Debug, Default)]
pub struct Backlog {
    samples: Mutex<HashMap<String, VecDeque<Sample>>>,
}

impl Backlog {
    /// Adds a sample for `sink`, forgetting the oldest beyond an hour's worth.
    pub fn record(&self, sink: &str, sample: Sample) {
        if let Ok(mut samples) = self.samples.lock() {
            let series = samples.entry(sink.to_owned()).or_default();
            series.push_back(sample);
            while series.len() > SAMPLES {
                series.pop_front();
            }
        }
    }

    /// `sink`'s samples, oldest first.
    pub fn of(&self, sink: &str) -> Vec<Sample> {
        self.samples
            .lock()
            .ok()
            .and_then(|samples| samples.get(sink).map(|s| s.iter().copied().collect()))
            .unwrap_or_default()
    }
}

/// Samples every sink's backlog now and then every minute, until `stop`.
pub async fn sample_backlog(
    spool: Spool,
    sinks: Vec<(String, EventTypes)>,
    backlog: std::sync::Arc<Backlog>,
    stop: CancellationToken,
) {
    loop {
        for (sink, event_types) in &sinks {
            if let Ok(counts) = spool.counts(sink, event_types).await {
                backlog.record(
                    sink,
                    Sample {
                        at_ms: unix_ms(SystemTime::now()),
                        pending: counts.pending,
                    },
                );
            }
        }
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = stop.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_of_samples_is_kept_and_older_ones_go() {
        let backlog = Backlog::default();
        for minute in 0..70 {
            backlog.record(
                "a",
                Sample {
                    at_ms: minute,
                    pending: 1,
                },
            );
        }
        let kept = backlog.of("a");
        assert_eq!(kept.len(), SAMPLES);
        assert_eq!(kept[0].at_ms, 10);
        assert!(backlog.of("b").is_empty());
    }
}
