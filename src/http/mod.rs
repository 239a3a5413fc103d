//! The HTTP surface: the callback endpoint, health and readiness, and the
//! shared state handlers see.

mod callback;
mod error;
mod health;
mod serve;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::Notify;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::metrics::Metrics;
use crate::protocol::{Authenticator, EventTypes};
use crate::redact::REDACTED;
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
    /// The last segment of `{callback_path}/{secret}`, where event types
    /// that CSS sends without a signature are accepted; `None`: no such path.
    path_secret: Option<Arc<SecretString>>,
    /// Set when the process has been told to stop and waits out
    /// `server.shutdown_delay_secs`: `/readyz` answers 503 so load balancers
    /// take the replica out while it still serves callbacks.
    draining: Arc<AtomicBool>,
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
            path_secret: None,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From now on `/readyz` answers 503: the process is about to stop.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the process is about to stop (see [`AppState::start_draining`]).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Also serves `{callback_path}/{secret}` (see [`router`]).
    pub fn with_path_secret(mut self, secret: Option<SecretString>) -> Self {
        self.path_secret = secret.map(Arc::new);
        self
    }

    /// Whether `segment` is the path secret, compared in constant time so the
    /// answer's timing does not reveal how much of a guess was right.
    pub fn is_path_secret(&self, segment: &str) -> bool {
        self.path_secret.as_ref().is_some_and(|secret| {
            bool::from(secret.expose_secret().as_bytes().ct_eq(segment.as_bytes()))
        })
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

    /// Wakes every sink's worker (dead letters were queued again).
    pub fn wake_all_sinks(&self) {
        self.routes.iter().for_each(|route| route.wake.notify_one());
    }

    /// Wakes the workers of the sinks that receive `event_type`.
    pub fn wake_sinks(&self, event_type: i64) {
        self.routes
            .iter()
            .filter(|route| route.event_types.contains(event_type))
            .for_each(|route| route.wake.notify_one());
    }
}

/// `/healthz`, `/readyz` and `/metrics`, for a listener of any kind.
pub fn probes<S: Clone + Send + Sync + 'static>(state: AppState) -> Router<S> {
    probe_routes(state, true)
}

fn probe_routes<S: Clone + Send + Sync + 'static>(state: AppState, metrics: bool) -> Router<S> {
    let router = Router::new()
        .route(
            HEALTH_PATH,
            get(health::healthz).fallback(|| async { ApiError::MethodNotAllowed { allow: "GET" } }),
        )
        .route(
            READY_PATH,
            get(health::readyz).fallback(|| async { ApiError::MethodNotAllowed { allow: "GET" } }),
        );
    let router = if metrics {
        router.route(
            METRICS_PATH,
            get(health::metrics).fallback(|| async { ApiError::MethodNotAllowed { allow: "GET" } }),
        )
    } else {
        router
    };
    router.with_state(state)
}

/// The service's routes, callable from tests without a listener. With a path
/// secret, `POST {callback_path}/{anything}` is served too: the secret there
/// accepts unsigned callbacks of the allowed types, anything else is 401.
/// `/metrics` is served here unless `metrics_elsewhere` (the admin listener
/// has it).
pub fn router(state: AppState, callback_path: &str, metrics_elsewhere: bool) -> Router {
    let secret = state.path_secret.clone();
    let secret_route = format!("{}/{{secret}}", callback_path.trim_end_matches('/'));
    let mut router = Router::new().route(
        callback_path,
        post(callback::receive).fallback(|| async { ApiError::MethodNotAllowed { allow: "POST" } }),
    );
    if secret.is_some() {
        router = router.route(
            &secret_route,
            post(callback::receive_on_secret_path)
                .fallback(|| async { ApiError::MethodNotAllowed { allow: "POST" } }),
        );
    }
    let prefix = format!("{}/", callback_path.trim_end_matches('/'));
    router
        .fallback(|| async { ApiError::NotFound })
        .with_state(state.clone())
        .merge(probe_routes(state, !metrics_elsewhere))
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(move |request: &axum::http::Request<_>| {
                            request_span(request, &prefix, secret.as_deref())
                        })
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

/// The request path as logged: whatever follows `{callback_path}/` is
/// replaced (it is the secret, or a guess at it), and so is the secret
/// anywhere else in the path.
fn loggable_path(path: &str, secret_prefix: &str, secret: Option<&SecretString>) -> String {
    match secret {
        Some(_) if path.starts_with(secret_prefix) => format!("{secret_prefix}{REDACTED}"),
        Some(secret) if !secret.expose_secret().is_empty() => {
            path.replace(secret.expose_secret(), REDACTED)
        }
        _ => path.to_owned(),
    }
}

/// One span per request, carrying the request id (the client's `X-Request-Id`
/// when it sent one, generated otherwise; echoed in the response) and the
/// path with any path secret replaced.
fn request_span<B>(
    request: &axum::http::Request<B>,
    secret_prefix: &str,
    secret: Option<&SecretString>,
) -> tracing::Span {
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
        path = %loggable_path(request.uri().path(), secret_prefix, secret),
        request_id = %request_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_path_never_holds_the_secret() {
        let secret = SecretString::from("s".repeat(40));
        let cases = [
            (
                format!("/callback/{}", "s".repeat(40)),
                "/callback/[redacted]",
            ),
            ("/callback/guess".to_owned(), "/callback/[redacted]"),
            ("/callback".to_owned(), "/callback"),
            (format!("/x/{}/y", "s".repeat(40)), "/x/[redacted]/y"),
        ];
        for (path, expected) in cases {
            assert_eq!(loggable_path(&path, "/callback/", Some(&secret)), expected);
        }
        assert_eq!(loggable_path("/healthz", "/callback/", None), "/healthz");
    }
}
