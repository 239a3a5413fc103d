//! What reconciliation (issue 17) keeps in the spool besides the records it
//! recovers, the same on every backend:
//!
//! - **Checkpoints**: per stream and event type, the time up to which
//!   Tencent's records of the callbacks CSS sent were fully checked, so the
//!   next run starts there. A checkpoint only moves forward.
//! - **Gaps**: callbacks Tencent says were sent that could not be recovered.
//!   A gap is stored once however many runs find it (see [`Gap`]).
//! - **Runs**: a log of the last [`KEPT_RUNS`] reconciliation runs.
//! - **Leases**: a named lease held by one holder at a time, so that one
//!   replica at a time reconciles. Its times are on the database's clock
//!   (PostgreSQL's; for SQLite, its host's), so replicas whose clocks
//!   disagree still agree on who holds it.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{SpoolError, StorageError};

/// Runs kept: starting a run deletes all but the newest this many.
pub const KEPT_RUNS: usize = 1_000;

/// The status of a run that has not finished (or whose process died: the
/// next holder of the lease may finish it as `interrupted`).
pub const RUNNING: &str = "running";

/// The statuses [`crate::spool::Spool::finish_reconcile_run`] takes.
pub const FINISHED: [&str; 3] = ["ok", "failed", "interrupted"];

/// A callback Tencent says CSS sent, which reconciliation could not recover.
///
/// Two gaps are the same callback when their stream, event type, event time
/// and request excerpt are the same (the excerpt is compared by its
/// SHA-256): a run over a window already checked finds the same gaps again,
/// and they are not stored twice. The other fields are those of the first
/// run that found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The stream the callback was about.
    pub stream: String,
    /// Its event type.
    pub event_type: i64,
    /// When Tencent says the callback was sent, Unix ms.
    pub event_time_ms: i64,
    /// The result Tencent recorded for the callback, if any.
    pub result_code: Option<i64>,
    /// The request id Tencent's API reported for it.
    pub request_id: String,
    /// Why it could not be recovered.
    pub reason: String,
    /// The start of the callback's request as Tencent shows it.
    pub request_excerpt: String,
    /// When reconciliation found it, Unix ms.
    pub found_at_ms: i64,
}

impl Gap {
    /// The SHA-256 of its request excerpt, in hex: with the stream, event
    /// type and event time, what tells one gap from another.
    pub(super) fn excerpt_digest(&self) -> String {
        hex::encode(Sha256::digest(self.request_excerpt.as_bytes()))
    }
}

/// One reconciliation run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileRun {
    /// Its number; a later run has a higher one.
    pub id: i64,
    /// Who ran it (the lease holder).
    pub holder: String,
    /// When it started, Unix ms.
    pub started_at_ms: i64,
    /// When it finished, Unix ms; `None` while running.
    pub finished_at_ms: Option<i64>,
    /// The start of the time window it checked, Unix ms.
    pub window_start_ms: i64,
    /// The end of the time window it checked, Unix ms.
    pub window_end_ms: i64,
    /// [`RUNNING`], or one of [`FINISHED`]: `ok`, `failed`, `interrupted`.
    pub status: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// What it found, as JSON written by the reconciler; `{}` while running.
    pub report: String,
}

/// Refuses a status a run cannot finish with, before anything is written.
pub(super) fn check_finished(status: &str) -> Result<(), SpoolError> {
    if FINISHED.contains(&status) {
        Ok(())
    } else {
        Err(SpoolError::Write(StorageError::RunStatus {
            status: status.to_owned(),
            allowed: FINISHED.join(", "),
        }))
    }
}

/// A lease's length in whole milliseconds, at most half of `i64::MAX`, so
/// that now plus it never overflows a database's 64-bit integers.
pub(super) fn lease_ms(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis())
        .unwrap_or(i64::MAX)
        .min(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(excerpt: &str) -> Gap {
        Gap {
            stream: "s".into(),
            event_type: 100,
            event_time_ms: 1,
            result_code: None,
            request_id: "r".into(),
            reason: "gone".into(),
            request_excerpt: excerpt.into(),
            found_at_ms: 2,
        }
    }

    #[test]
    fn gaps_with_different_excerpts_have_different_digests() {
        assert_eq!(gap("a").excerpt_digest(), gap("a").excerpt_digest());
        assert_ne!(gap("a").excerpt_digest(), gap("b").excerpt_digest());
        assert_eq!(gap("").excerpt_digest().len(), 64);
    }

    #[test]
    fn a_run_finishes_only_with_a_final_status() {
        for status in FINISHED {
            assert!(check_finished(status).is_ok(), "{status}");
        }
        for status in [RUNNING, "OK", ""] {
            assert!(check_finished(status).is_err(), "{status}");
        }
    }
}
