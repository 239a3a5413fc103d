//! The admin listener: the admin API (`/api/v1/…`), the web console (`/`)
//! and `/metrics`, on an address of their own so none of it is reachable on
//! the public callback port. `/healthz` and `/readyz` are served here too.
//!
//! Every `/api/` request needs `Authorization: Bearer <token>`, compared in
//! constant time with each configured token. The page itself and its assets
//! hold no data and are served without one; the page asks the operator for
//! a token and keeps it in the tab's session storage. The API's OpenAPI
//! document (`/api/v1/openapi.json`) needs no token either.

mod api;
mod backlog;
mod openapi;
mod page;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::{AppState, HEALTH_PATH, METRICS_PATH, READY_PATH};
use crate::protocol::EventTypes;

pub use backlog::{Backlog, sample_backlog};
pub use openapi::OPENAPI_PATH;

/// A configured sink as the console shows it.
#[derive(Debug, Clone)]
pub struct SinkInfo {
    /// Its name.
    pub name: String,
    /// Its type (`file`, `forward`, …).
    pub kind: &'static str,
    /// The event types it takes.
    pub event_types: EventTypes,
}

/// Reconciliation as the console shows it: whether it runs and how, never
/// its credentials.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct ReconcileInfo {
    /// Whether the server runs it (`reconcile.enabled`).
    pub enabled: bool,
    /// The API endpoint.
    pub endpoint: String,
    /// Seconds between runs.
    pub interval_secs: u64,
    /// Seconds after an event before its callback is expected.
    pub lag_secs: u64,
    /// How far back a run looks, in seconds.
    pub lookback_secs: u64,
    /// The event types it checks.
    pub event_types: Vec<i64>,
}

/// What the admin handlers can reach.
#[derive(Clone)]
pub struct AdminState {
    /// The service's state: spool, metrics, readiness.
    pub app: AppState,
    /// Tokens that open the API; empty: no token needed (loopback only,
    /// checked by the configuration).
    tokens: Arc<Vec<SecretString>>,
    /// The configured sinks.
    sinks: Arc<Vec<SinkInfo>>,
    /// Each sink's backlog over the last hour.
    backlog: Arc<Backlog>,
    /// How reconciliation is set up.
    reconcile: Arc<ReconcileInfo>,
}

impl AdminState {
    /// State for the admin listener.
    pub fn new(
        app: AppState,
        tokens: Vec<SecretString>,
        sinks: Vec<SinkInfo>,
        backlog: Arc<Backlog>,
    ) -> Self {
        Self {
            app,
            tokens: Arc::new(tokens),
            sinks: Arc::new(sinks),
            backlog,
            reconcile: Arc::default(),
        }
    }

    /// Shows `reconcile` as reconciliation's set-up.
    pub fn with_reconcile(mut self, reconcile: ReconcileInfo) -> Self {
        self.reconcile = Arc::new(reconcile);
        self
    }

    /// Whether `presented` is one of the tokens, compared in constant time
    /// (every token is compared, so the timing says nothing about which).
    fn admits(&self, presented: Option<&str>) -> bool {
        if self.tokens.is_empty() {
            return true;
        }
        let Some(presented) = presented else {
            return false;
        };
        self.tokens.iter().fold(false, |found, token| {
            found | bool::from(token.expose_secret().as_bytes().ct_eq(presented.as_bytes()))
        })
    }
}

/// 401 unless the request carries a valid bearer token.
async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    if state.admits(presented) {
        return next.run(request).await;
    }
    tracing::warn!(path = %request.uri().path(), "admin API request without a valid token");
    (
        axum::http::StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(openapi::ErrorBody {
            code: 4018,
            message:
                "the admin API needs `Authorization: Bearer <token>` with a configured admin token"
                    .to_owned(),
        }),
    )
        .into_response()
}

/// The admin API's routes and, built from the same registrations, the
/// OpenAPI document that describes them.
fn api_routes() -> (Router<AdminState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(api::events))
        .routes(routes!(api::event))
        .routes(routes!(api::sinks))
        .routes(routes!(api::reconciliation))
        .routes(routes!(api::retry))
        .routes(routes!(api::purge))
        .split_for_parts()
}

/// The admin API's OpenAPI document, as `/api/v1/openapi.json` serves it.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_routes().1
}

/// The admin listener's routes.
pub fn router(state: AdminState) -> Router {
    let (api, document) = api_routes();
    let api = api
        .fallback(api::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    let app = state.app.clone();
    Router::new()
        .route(OPENAPI_PATH, get(openapi::serve(document)))
        .merge(api)
        .route("/", get(page::index))
        .route("/assets/{file}", get(page::asset))
        .with_state(state)
        .merge(crate::http::probes(app))
        .route_layer(middleware::from_fn(page::no_store))
        .fallback(api::not_found)
}

/// Paths the admin listener serves besides the API, for the README.
pub const PROBES: [&str; 3] = [HEALTH_PATH, READY_PATH, METRICS_PATH];
