//! A real HTTP server on 127.0.0.1:0 playing the forward sink's target: it
//! answers with scripted statuses (or hangs) and keeps every request it got.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

/// One request the target received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers[name].to_str().unwrap()
    }
}

#[derive(Default)]
struct Script {
    /// Statuses for the next requests, in order.
    queued: VecDeque<u16>,
    /// Status once the queue is empty.
    default: u16,
    /// Answer nothing, ever.
    hang: bool,
    /// Wait this long before answering (a slow target keeps deliveries in flight).
    delay: std::time::Duration,
    received: Vec<Received>,
}

#[derive(Clone)]
pub struct Target {
    pub url: String,
    script: Arc<Mutex<Script>>,
}

impl Target {
    /// A target answering 200 to everything, on a port of its own.
    pub async fn start() -> Self {
        Self::serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// A target answering on `listener` (e.g. on a port a sink already
    /// points at, held since: see `helpers::refusing_port`).
    pub fn serve(listener: tokio::net::TcpListener) -> Self {
        let script = Arc::new(Mutex::new(Script {
            default: 200,
            ..Script::default()
        }));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&script));
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, script }
    }

    /// Answers the next requests with `statuses`, then with the default.
    pub fn respond_with(&self, statuses: &[u16]) {
        self.script.lock().unwrap().queued.extend(statuses);
    }

    pub fn set_default(&self, status: u16) {
        self.script.lock().unwrap().default = status;
    }

    #[allow(dead_code)] // used by tests/spool
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.script.lock().unwrap().delay = delay;
    }

    pub fn hang(&self, hang: bool) {
        self.script.lock().unwrap().hang = hang;
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    /// Event ids of every request received, in arrival order.
    pub fn received_ids(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| r.header("x-recordhook-event-id").to_owned())
            .collect()
    }
}

async fn receive(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let (status, hang, delay) = {
        let mut script = script.lock().unwrap();
        script.received.push(Received {
            headers,
            body,
            at: std::time::Instant::now(),
        });
        let status = script.queued.pop_front().unwrap_or(script.default);
        (status, script.hang, script.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if hang {
        std::future::pending::<()>().await;
    }
    StatusCode::from_u16(status).unwrap()
}
