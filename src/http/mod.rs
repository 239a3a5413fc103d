//! The HTTP surface: the callback endpoint, health and readiness, and the
//! shared state handlers see.

mod callback;
mod error;
mod health;
mod serve;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::Notify;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::metrics::Metrics;
use crate::protocol::{Authenticator, EventTypes};
use crate::spool::Spool;
use crate::supervisor::WorkerHealth;

pub use callback::{Rejection, admit};
pub use error::ApiError;
pub use serve::{ServeOptions, serve};

/// Liveness endpoint.
pub const HEALTH_PATH: &str = "/healthz";
/// Readiness endpoint.
pub const READY_PATH: &str = "/readyz";
/// Prometheus metrics endpoint.
pub const METRICS_PATH: &str = "/metrics";

/// Which sink receives which event types, and how to wake its worker.
#[derive(Debug)]
pub struct SinkRoute {
    /// The sink's name.
    pub name: String,
    /// Event types it receives.
    pub event_types: EventTypes,
    /// Notified when a record for it has been stored.
    pub wake: Arc<Notify>,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Swappable so keys can be reloaded without a restart.
    authenticator: Arc<RwLock<Arc<Authenticator>>>,
    /// Durable store of accepted callbacks.
    pub spool: Spool,
    /// Sinks and the event types they take.
    routes: Arc<Vec<SinkRoute>>,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// How long a client may take to send its body.
    pub body_timeout: Duration,
    /// The service's metrics.
    pub metrics: Arc<Metrics>,
    /// Background workers that are down (restarting after a panic).
    pub workers: Arc<WorkerHealth>,
}

impl AppState {
    /// State for a server with these parts.
    pub fn new(
        authenticator: Authenticator,
        spool: Spool,
        routes: Vec<SinkRoute>,
        max_body_bytes: usize,
        body_timeout: Duration,
        metrics: Arc<Metrics>,
        workers: Arc<WorkerHealth>,
    ) -> Self {
        Self {
            workers,
            authenticator: Arc::new(RwLock::new(Arc::new(authenticator))),
            spool,
            routes: Arc::new(routes),
            max_body_bytes,
            body_timeout,
            metrics,
        }
    }

    /// Every configured sink with the event types it takes.
    pub fn sinks(&self) -> Vec<(String, EventTypes)> {
        self.routes
            .iter()
            .map(|route| (route.name.clone(), route.event_types.clone()))
            .collect()
    }

    /// The authenticator in force now.
    pub fn authenticator(&self) -> Arc<Authenticator> {
        match self.authenticator.read() {
            Ok(current) => Arc::clone(&current),
            // A writer panicked mid-swap; the Arc inside is still whole.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts a new authenticator in force (key reload).
    pub fn replace_authenticator(&self, authenticator: Authenticator) {
        let mut current = match self.authenticator.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *current = Arc::new(authenticator);
    }

    /// Wakes the workers of the sinks that receive `event_type`.
    pub fn wake_sinks(&self, event_type: i64) {
        self.routes
            .iter()
            .filter(|route| route.event_types.contains(event_type))
            .for_each(|route| route.wake.notify_one());
    }
}

/// The service's routes, callable from tests without a listener.
pub fn router(state: AppState, callback_path: &str) -> Router {
    Router::new()
        .route(
            callback_path,
            post(callback::receive)
                .fallback(|| async { ApiError::MethodNotAllowed { allow: "POST" } }),
        )
        .route(
            HEALTH_PATH,
            get(health::healthz).fallback(|| async { ApiError::MethodNotAllowed { allow: "GET" } }),
        )
        .route(
            READY_PATH,
            get(health::readyz).fallback(|| async { ApiError::MethodNotAllowed { allow: "GET" } }),
        )
        .route(
            METRICS_PATH,
            get(health::metrics).fallback(|| async { ApiError::MethodNotAllowed { allow: "GET" } }),
        )
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        // Outcomes are logged by the handlers, once.
                        .on_request(())
                        .on_response(())
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
}

/// Longest client-supplied request id kept in logs.
const REQUEST_ID_LIMIT: usize = 128;

/// One span per request, carrying the request id (the client's `X-Request-Id`
/// when it sent one, generated otherwise; echoed in the response).
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let request_id: String = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(REQUEST_ID_LIMIT)
        .collect();
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
    )
}
