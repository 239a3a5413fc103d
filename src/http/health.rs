//! `/healthz` (the process serves), `/readyz` (the spool takes writes and
//! every worker runs) and
//! `/metrics` (Prometheus text format).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::spool::{SpoolError, StorageError};

/// How long the readiness probe may wait for the spool's writer.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// 200 while the process answers at all.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The metrics in the OpenMetrics text format, which Prometheus scrapes.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.metrics.render(&state.spool, &state.sinks()).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// Free space below which the service reports itself not ready: a callback
/// needs a few KiB, the WAL and checkpoints more.
const MIN_FREE_BYTES: u64 = 1024 * 1024;

/// 200 when every background worker runs, a write to the spool commits and
/// its filesystem has room, 503 otherwise. A worker restarting after a panic
/// makes the replica not ready until it is back, so an operator sees it. The probe write alone is not enough: with a full disk it can
/// still fit in space the store has already allocated while callbacks,
/// which need new space, fail. Both checks recover by themselves once space
/// returns. Once the process has been told to stop, 503 (`shutting_down`)
/// whatever else holds, for the load balancer to take the replica out
/// before its listener closes.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    let down = state.workers.down();
    if !down.is_empty() {
        tracing::warn!(workers = ?down, "not ready: background workers are restarting");
        return Err(ApiError::WorkerDown(down.join(", ")));
    }
    if let Some(free) = state.spool.free_bytes()
        && free < MIN_FREE_BYTES
    {
        tracing::warn!(
            free_bytes = free,
            "not ready: the spool's filesystem is full"
        );
        return Err(ApiError::NotReady(SpoolError::Write(
            StorageError::LowSpace { free_bytes: free },
        )));
    }
    match tokio::time::timeout(READY_TIMEOUT, state.spool.check_writable()).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ready"}))),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness probe failed");
            Err(ApiError::NotReady(err))
        }
        Err(_) => Err(ApiError::NotReady(SpoolError::Write(
            StorageError::CommitTimeout {
                within: READY_TIMEOUT,
            },
        ))),
    }
}
