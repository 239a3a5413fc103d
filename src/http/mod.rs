//! The HTTP surface: the callback endpoint, health and readiness, and the
//! shared state handlers see.

mod callback;
mod error;
mod health;

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::Notify;

use crate::configuration::{HEALTH_PATH, READY_PATH};
use crate::protocol::Authenticator;
use crate::spool::Spool;

pub use error::ApiError;

/// Which sink receives which event types, and how to wake its worker.
#[derive(Debug)]
pub struct SinkRoute {
    /// The sink's name.
    pub name: String,
    /// Event types it receives.
    pub event_types: Vec<i64>,
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
}

impl AppState {
    /// State for a server with these parts.
    pub fn new(
        authenticator: Authenticator,
        spool: Spool,
        routes: Vec<SinkRoute>,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            authenticator: Arc::new(RwLock::new(Arc::new(authenticator))),
            spool,
            routes: Arc::new(routes),
            max_body_bytes,
        }
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

    /// Names of the sinks that receive `event_type`.
    pub fn subscribers(&self, event_type: i64) -> Vec<String> {
        self.routes
            .iter()
            .filter(|route| route.event_types.contains(&event_type))
            .map(|route| route.name.clone())
            .collect()
    }

    /// Wakes the workers of the sinks that receive `event_type`.
    pub fn wake_sinks(&self, event_type: i64) {
        self.routes
            .iter()
            .filter(|route| route.event_types.contains(&event_type))
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
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}
