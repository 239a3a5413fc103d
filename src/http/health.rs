//! `/healthz` (the process serves), `/readyz` (the spool takes writes) and
//! `/metrics` (Prometheus text format).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::spool::SpoolError;

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

/// 200 when a write to the spool commits, 503 otherwise.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, state.spool.check_writable()).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ready"}))),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness probe failed");
            Err(ApiError::NotReady(err))
        }
        Err(_) => Err(ApiError::NotReady(SpoolError::Write(
            "the spool did not commit within 5 s".to_owned(),
        ))),
    }
}
