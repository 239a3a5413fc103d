//! Every way a request can fail, mapped in one place to its HTTP status, its
//! numeric code and its message. The body is always
//! `{"code": <non-zero>, "message": "<reason>"}`.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::protocol::{AuthError, PayloadError};
use crate::spool::SpoolError;

/// A request that is not answered 200.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is larger than `server.max_body_bytes`.
    #[error("body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body could not be read to its end (the client went away mid-body).
    #[error("body could not be read: {0}")]
    BodyUnreadable(String),
    /// The client took longer than `server.request_timeout_secs` to send its body.
    #[error("body not received within {secs} s")]
    BodyTimeout {
        /// The configured bound.
        secs: u64,
    },
    /// The body is not a usable callback.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The callback is not authentic, or no longer valid.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A POST under the callback path whose last segment is not the
    /// configured path secret. The message never repeats the path.
    #[error("unknown callback path")]
    WrongPathSecret,
    /// The callback could not be stored; CSS will retry.
    #[error("callback could not be stored, retry later: {0}")]
    SpoolUnavailable(SpoolError),
    /// The service is shutting down; CSS will retry.
    #[error("shutting down, retry later")]
    ShuttingDown,
    /// The spool failed its readiness probe.
    #[error("not ready: {0}")]
    NotReady(SpoolError),
    /// A background worker is down, restarting after a panic.
    #[error("not ready: worker(s) restarting after a panic: {0}")]
    WorkerDown(String),
    /// Known path, wrong method.
    #[error("method not allowed; use {allow}")]
    MethodNotAllowed {
        /// The method(s) the path takes.
        allow: &'static str,
    },
    /// No such path.
    #[error("not found")]
    NotFound,
}

impl From<SpoolError> for ApiError {
    fn from(err: SpoolError) -> Self {
        match err {
            SpoolError::Closed => Self::ShuttingDown,
            other => Self::SpoolUnavailable(other),
        }
    }
}

impl ApiError {
    /// HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyUnreadable(_) | Self::Payload(_) => StatusCode::BAD_REQUEST,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Auth(_) | Self::WrongPathSecret => StatusCode::UNAUTHORIZED,
            Self::SpoolUnavailable(_)
            | Self::ShuttingDown
            | Self::NotReady(_)
            | Self::WorkerDown(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotFound => StatusCode::NOT_FOUND,
        }
    }

    /// A stable, machine-readable name of the failed check, for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyUnreadable(_) => "body_unreadable",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::Payload(err) => err.reason(),
            Self::Auth(err) => err.reason(),
            Self::WrongPathSecret => "path_secret_mismatch",
            Self::SpoolUnavailable(_) => "spool_unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::NotReady(_) => "not_ready",
            Self::WorkerDown(_) => "worker_down",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::NotFound => "not_found",
        }
    }

    /// The numeric `code` in the body: the status followed by a digit per check,
    /// so clients can tell apart failures that share a status.
    pub fn code(&self) -> u32 {
        match self {
            Self::Payload(PayloadError::InvalidJson(_)) => 4001,
            Self::Payload(PayloadError::NotAnObject) => 4002,
            Self::Payload(PayloadError::EventTypeMissing) => 4003,
            Self::Payload(PayloadError::EventTypeNotInteger) => 4004,
            Self::BodyUnreadable(_) => 4005,
            Self::Auth(AuthError::TMissing) => 4011,
            Self::Auth(AuthError::TNotInteger) => 4012,
            Self::Auth(AuthError::SignMissing) => 4013,
            Self::Auth(AuthError::SignMismatch) => 4014,
            Self::Auth(AuthError::Expired) => 4015,
            Self::Auth(AuthError::TooFarInFuture) => 4016,
            Self::WrongPathSecret => 4017,
            Self::NotFound => 4040,
            Self::MethodNotAllowed { .. } => 4050,
            Self::BodyTimeout { .. } => 4080,
            Self::BodyTooLarge { .. } => 4130,
            Self::SpoolUnavailable(_) => 5031,
            Self::ShuttingDown => 5032,
            Self::NotReady(_) => 5033,
            Self::WorkerDown(_) => 5034,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"code": self.code(), "message": self.to_string()}));
        match self {
            Self::MethodNotAllowed { allow } => {
                (self.status(), [(header::ALLOW, allow)], body).into_response()
            }
            _ => (self.status(), body).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::StorageError;
    use std::collections::HashSet;

    #[test]
    fn every_error_has_its_own_code_and_reason() {
        let errors = [
            ApiError::BodyTooLarge { limit: 1 },
            ApiError::BodyUnreadable(String::new()),
            ApiError::BodyTimeout { secs: 1 },
            ApiError::Payload(PayloadError::InvalidJson(String::new())),
            ApiError::Payload(PayloadError::NotAnObject),
            ApiError::Payload(PayloadError::EventTypeMissing),
            ApiError::Payload(PayloadError::EventTypeNotInteger),
            ApiError::Auth(AuthError::TMissing),
            ApiError::Auth(AuthError::TNotInteger),
            ApiError::Auth(AuthError::SignMissing),
            ApiError::Auth(AuthError::SignMismatch),
            ApiError::Auth(AuthError::Expired),
            ApiError::Auth(AuthError::TooFarInFuture),
            ApiError::WrongPathSecret,
            ApiError::SpoolUnavailable(SpoolError::Write(StorageError::LowSpace { free_bytes: 0 })),
            ApiError::ShuttingDown,
            ApiError::NotReady(SpoolError::Closed),
            ApiError::WorkerDown(String::new()),
            ApiError::MethodNotAllowed { allow: "POST" },
            ApiError::NotFound,
        ];
        let codes: HashSet<u32> = errors.iter().map(ApiError::code).collect();
        let reasons: HashSet<&str> = errors.iter().map(ApiError::reason).collect();
        assert_eq!(codes.len(), errors.len());
        assert_eq!(reasons.len(), errors.len());
        for error in &errors {
            assert_eq!(
                error.code() / 10,
                u32::from(error.status().as_u16()),
                "{error:?}"
            );
        }
    }

    #[test]
    fn a_closed_spool_means_shutting_down() {
        assert!(matches!(
            ApiError::from(SpoolError::Closed),
            ApiError::ShuttingDown
        ));
        assert!(matches!(
            ApiError::from(SpoolError::Write(StorageError::LowSpace { free_bytes: 0 })),
            ApiError::SpoolUnavailable(_)
        ));
    }
}
