//! `POST {callback_path}`: read the body, authenticate, store, answer.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tracing::Instrument;

use super::AppState;
use super::error::ApiError;
use crate::protocol::{Authenticator, UnverifiedCallback, event_type_label};
use crate::record::Record;
use crate::spool::{Acceptance, NewRecord};
use crate::telemetry::traces;

/// A rejected request and what is known about it for the log.
#[derive(Debug)]
pub struct Rejection {
    /// Why it was rejected.
    pub error: ApiError,
    /// The `stream_id` the body claimed, when it had one.
    pub stream_id: Option<String>,
}

impl From<ApiError> for Rejection {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            stream_id: None,
        }
    }
}

/// Handles one callback on `{callback_path}`.
pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let authenticator = state.authenticator();
    respond(&state, &headers, body, Ok(authenticator)).await
}

/// Handles one callback on `{callback_path}/{segment}`: the path secret lets
/// the allowed event types in unsigned; any other segment is refused before
/// the body is read.
pub async fn receive_on_secret_path(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let authenticator = if state.is_path_secret(&segment) {
        Ok(Arc::new(state.authenticator().on_secret_path()))
    } else {
        Err(ApiError::WrongPathSecret)
    };
    respond(&state, &headers, body, authenticator).await
}

/// Answers one callback, authenticated by `authenticator` (or already
/// refused); logs its outcome in exactly this one place.
async fn respond(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    authenticator: Result<Arc<Authenticator>, ApiError>,
) -> Response {
    let received_at = SystemTime::now();
    let started = std::time::Instant::now();
    let outcome = match authenticator {
        Ok(authenticator) => accept(state, headers, body, &authenticator, received_at).await,
        Err(error) => Err(error.into()),
    };
    let label = match &outcome {
        Ok((_, Acceptance::Stored { .. })) => "accepted",
        Ok((_, Acceptance::Duplicate)) => "duplicate",
        Err(rejection) => rejection.error.reason(),
    };
    state.metrics.observe_callback(label, started.elapsed());
    match outcome {
        Ok((record, Acceptance::Stored { seq })) => {
            state.wake_sinks(record.event_type);
            state.metrics.observe_event(record.event_type, "accepted");
            tracing::info!(
                outcome = "accepted",
                event_id = %record.id,
                event_type = record.event_type,
                event = event_type_label(record.event_type),
                stream_id = record.stream_id(),
                file_id = record.file_id(),
                unsigned = record.unsigned,
                seq,
                "callback accepted"
            );
            for warning in &record.warnings {
                tracing::warn!(event_id = %record.id, stream_id = record.stream_id(), warning = %warning, "callback content");
            }
            ok()
        }
        Ok((record, Acceptance::Duplicate)) => {
            state.metrics.observe_event(record.event_type, "duplicate");
            tracing::info!(
                outcome = "duplicate",
                event_id = %record.id,
                event_type = record.event_type,
                event = event_type_label(record.event_type),
                stream_id = record.stream_id(),
                "duplicate callback: already accepted, not stored again"
            );
            ok()
        }
        Err(Rejection { error, stream_id }) => {
            let status = error.status().as_u16();
            if error.status().is_server_error() {
                tracing::error!(outcome = "rejected", status, code = error.code(), reason = error.reason(), stream_id, detail = %error, "callback not stored");
            } else {
                tracing::warn!(outcome = "rejected", status, code = error.code(), reason = error.reason(), stream_id, detail = %error, "callback rejected");
            }
            error.into_response()
        }
    }
}

/// The answer CSS counts as delivered. The same bytes every time, so they
/// are not built and serialised per callback.
const OK_BODY: &[u8] = br#"{"code":0}"#;

fn ok() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Bytes::from_static(OK_BODY),
    )
        .into_response()
}

async fn accept(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    authenticator: &Authenticator,
    received_at: SystemTime,
) -> Result<(Record, Acceptance), Rejection> {
    let bytes = match tokio::time::timeout(
        state.body_timeout,
        read_body(headers, body, state.max_body_bytes),
    )
    .await
    {
        Ok(read) => read?,
        Err(_) => {
            return Err(ApiError::BodyTimeout {
                secs: state.body_timeout.as_secs(),
            }
            .into());
        }
    };
    let (record, stream_id) = admit(&bytes, state.max_body_bytes, authenticator, received_at)
        .map_err(|rejection| *rejection)?;
    let reject = |error: ApiError| Rejection {
        error,
        stream_id: stream_id.clone(),
    };
    // From here the request span belongs to the callback's trace.
    traces::join_callback_trace(&tracing::Span::current(), &record.id, record.event_type);
    let stored = NewRecord::try_from(&record).map_err(|err| reject(err.into()))?;
    let commit = traces::span_if_enabled(|| tracing::info_span!("spool.commit"));
    let acceptance = state
        .spool
        .accept(stored, received_at)
        .instrument(commit)
        .await
        .map_err(|err| reject(err.into()))?;
    Ok((record, acceptance))
}

/// Everything a callback body goes through before it is stored, in the order
/// of the HTTP contract: the size limit, JSON, authentication, `event_type`,
/// then the record (whose content never causes a rejection). Synchronous and
/// free of I/O, so the fuzz target (fuzz/) drives exactly this. On success,
/// also returns the stream id for log context.
pub fn admit(
    body: &[u8],
    limit: usize,
    authenticator: &Authenticator,
    received_at: SystemTime,
) -> Result<(Record, Option<String>), Box<Rejection>> {
    if body.len() > limit {
        return Err(Box::new(ApiError::BodyTooLarge { limit }.into()));
    }
    let unverified =
        UnverifiedCallback::parse(body).map_err(|err| Box::new(ApiError::from(err).into()))?;
    let stream_id = unverified.stream_id_hint();
    let reject = |error: ApiError| {
        Box::new(Rejection {
            error,
            stream_id: stream_id.clone(),
        })
    };
    let now = received_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let verified = authenticator
        .verify(unverified, now)
        .map_err(|err| reject(err.into()))?;
    let record = Record::from_verified(verified, received_at).map_err(|err| reject(err.into()))?;
    Ok((record, stream_id))
}

/// Reads the whole body, whatever its Content-Type, refusing more than `limit` bytes
/// (up front when Content-Length already says so).
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::BodyTooLarge { limit })
        }
        Err(err) => Err(ApiError::BodyUnreadable(err.to_string())),
    }
}
