//! An in-process fake of Tencent Cloud's live API (API 3.0, version
//! `2018-08-01`) answering the two actions reconciliation calls:
//! `DescribeLiveStreamEventList` (push sessions) and
//! `DescribeCallbackRecordsList` (the callbacks CSS sent for a stream). A
//! test seeds it with sessions and sent callbacks, points a client at
//! [`FakeTencent::endpoint`], and then asserts on what the client got and on
//! what the fake saw ([`FakeTencent::requests`], [`FakeTencent::stats`]).
//!
//! It shares no code with recordhook: it is an independent reading of
//! Tencent's documents and official SDK, so a mistake in recordhook's client
//! is not repeated here to cancel itself out. `tests/tencent_fake/sdk_check.py`
//! (run by `tests/reconcile`) proves it against Tencent's official Python
//! SDK: the SDK's signing is accepted, its response models parse the
//! answers.
//!
//! What it does as Tencent documents it:
//! - `POST /` with a JSON body; the action in `X-TC-Action`, `X-TC-Version`
//!   `2018-08-01` (else `NoSuchVersion`), an unknown action `InvalidAction`.
//! - TC3-HMAC-SHA256 verified from the request as received ([`signature`]),
//!   with `AuthFailure.SecretIdNotFound`, `.SignatureExpire` (more than 300 s
//!   from the fake's clock), `.TokenFailure` and `.SignatureFailure`.
//! - Errors are HTTP 200 with `{"Response":{"Error":{"Code","Message"},
//!   "RequestId"}}`, served as `application/json` exactly (the Python SDK
//!   reads the error only under that content type).
//! - The actions' parameters, limits and answers ([`actions`]).
//!
//! What it keeps simple because Tencent's behaviour there is unknown:
//! - Other paths answer HTTP 404 and other methods HTTP 405 (Tencent also
//!   takes GET; the fake does not), and `X-TC-Content-SHA256`
//!   (unsigned payloads) is refused.
//! - The checks run in a fixed order: injected HTTP failures, the path and
//!   method, injected throttling, the action and version, authentication,
//!   the rate limit, the parameters. Tencent's order is not documented.
//! - The rate limit ([`FakeOptions::max_requests_per_sec`]) counts the
//!   requests each action answered over the last second, per action, as
//!   Tencent's limits are per API.
//! - Unknown parameters are `UnknownParameter`, a `null` or wrongly typed one
//!   `InvalidParameter`; `X-TC-Region` is optional and not checked.
//! - The guesses in [`actions`], each marked there.
//!
//! The fake's clock is the system's: seed data relative to now.

// Test support: a fake that cannot bind or serve fails the test that started it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod actions;
pub mod signature;
pub mod times;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use actions::ApiError;
use signature::Expected;

/// The API version the live API's actions are served under.
pub const VERSION: &str = "2018-08-01";
/// The service name in the signature's credential scope.
pub const SERVICE: &str = "live";
/// The push-session listing action.
pub const DESCRIBE_LIVE_STREAM_EVENT_LIST: &str = "DescribeLiveStreamEventList";
/// The sent-callback listing action.
pub const DESCRIBE_CALLBACK_RECORDS_LIST: &str = "DescribeCallbackRecordsList";

/// How the fake authenticates and limits its clients.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The one SecretId the fake knows; any other is `SecretIdNotFound`.
    pub secret_id: String,
    /// The SecretKey signatures are checked with.
    pub secret_key: String,
    /// When set, the fake plays temporary credentials: every request must
    /// carry this in `X-TC-Token`. When unset, a request with a token fails.
    pub token: Option<String>,
    /// At most this many answered requests per action in any one second
    /// (more are `RequestLimitExceeded`); `None` for no limit.
    pub max_requests_per_sec: Option<u32>,
}

impl FakeOptions {
    /// A permanent key pair, no token, no rate limit.
    pub fn new(secret_id: &str, secret_key: &str) -> Self {
        Self {
            secret_id: secret_id.to_owned(),
            secret_key: secret_key.to_owned(),
            token: None,
            max_requests_per_sec: None,
        }
    }
}

/// One push session, as `DescribeLiveStreamEventList` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSession {
    /// The push domain (`DomainName`).
    pub domain: String,
    /// The push path's AppName (`live` by default in CSS).
    pub app: String,
    /// The stream name (`StreamName`).
    pub stream_name: String,
    /// When the push started, Unix seconds.
    pub start: i64,
    /// When it ended, Unix seconds; `None` while it is live (its
    /// `StreamEndTime` is then empty and its `Duration` 0).
    pub end: Option<i64>,
    /// The broadcaster's IP (`ClientIp`).
    pub client_ip: String,
    /// `Resolution`, e.g. `1920*1080`.
    pub resolution: String,
    /// `StopReason`, as Tencent words it; empty by default.
    pub stop_reason: String,
    /// The push failed to start: `IsFilter=1` leaves it out.
    pub push_failed: bool,
}

impl StreamSession {
    /// A successful session from `start` to `end` (`None`: still live),
    /// with a placeholder client IP and resolution.
    pub fn new(domain: &str, app: &str, stream_name: &str, start: i64, end: Option<i64>) -> Self {
        Self {
            domain: domain.to_owned(),
            app: app.to_owned(),
            stream_name: stream_name.to_owned(),
            start,
            end,
            client_ip: "203.0.113.7".to_owned(),
            resolution: "1920*1080".to_owned(),
            stop_reason: String::new(),
            push_failed: false,
        }
    }
}

/// One callback CSS sent, as `DescribeCallbackRecordsList` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCallback {
    /// The stream it is about (`StreamId` in the answer).
    pub stream_name: String,
    /// `EventType`: 0 stream ended, 1 stream started, 100 recording, 200
    /// screenshot.
    pub event_type: i64,
    /// When CSS sent it (`EventTime`), Unix seconds.
    pub event_time: i64,
    /// The body as sent (`Request`): whatever text CSS logged, which may be
    /// percent-encoded, or empty.
    pub request: String,
    /// What the callback target answered (`Response`).
    pub response: String,
    /// When the target answered (`ResponseTime`), Unix seconds.
    pub response_time: i64,
    /// `ResultCode`: 0 success, anything else failure.
    pub result_code: i64,
}

impl SentCallback {
    /// A successful callback of `event_type` for `stream_name` at
    /// `event_time`, answered at once, with empty request and response.
    pub fn new(stream_name: &str, event_type: i64, event_time: i64) -> Self {
        Self {
            stream_name: stream_name.to_owned(),
            event_type,
            event_time,
            request: String::new(),
            response: String::new(),
            response_time: event_time,
            result_code: 0,
        }
    }
}

/// Counts of what the fake answered, for assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeStats {
    /// Every request, per `X-TC-Action` as sent (`""` when absent), whatever
    /// it was answered.
    pub calls: BTreeMap<String, u64>,
    /// Requests answered with data, per action.
    pub answered: BTreeMap<String, u64>,
    /// Requests refused with an `AuthFailure.*` code, per code.
    pub auth_failures: BTreeMap<String, u64>,
    /// Requests answered `RequestLimitExceeded` (injected or by the limit).
    pub throttled: u64,
    /// Requests answered with an injected HTTP status ([`FakeTencent::fail_next`]).
    pub injected_http_failures: u64,
    /// Every other error, per code (`MissingParameter`, `HTTP 404`, …).
    pub other_errors: BTreeMap<String, u64>,
}

impl FakeStats {
    /// Requests received for `action`.
    pub fn calls_to(&self, action: &str) -> u64 {
        self.calls.get(action).copied().unwrap_or(0)
    }

    /// Requests refused for authentication, all codes together.
    pub fn total_auth_failures(&self) -> u64 {
        self.auth_failures.values().sum()
    }
}

/// How the fake answered one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// With data.
    Data,
    /// With an API error (HTTP 200), its code.
    Error(String),
    /// With this HTTP status and no API body (injected, or a wrong path or
    /// method).
    Http(u16),
}

/// One request as the fake received it, without its secrets: safe to print
/// in a failure message, and enough to assert on what a client sent.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// `POST`, unless a client got it wrong.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// `X-TC-Action`, if sent.
    pub action: Option<String>,
    /// Every header, names lowercased, repeated ones joined with `, `; the
    /// values of `authorization` and `x-tc-token` are replaced by `present`.
    pub headers: BTreeMap<String, String>,
    /// `SignedHeaders` from `Authorization`, when it could be parsed.
    pub signed_headers: Vec<String>,
    /// The body (lossy UTF-8).
    pub body: String,
    /// The body as JSON, when it is.
    pub json: Option<Value>,
    /// How the fake answered.
    pub answer: Answer,
}

impl SeenRequest {
    /// A header's recorded value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Everything behind the fake's lock.
struct Inner {
    options: FakeOptions,
    sessions: Vec<StreamSession>,
    callbacks: Vec<SentCallback>,
    /// How many of the next requests answer `RequestLimitExceeded`.
    throttle_next: usize,
    /// HTTP statuses for the next requests, in order.
    fail_next: VecDeque<u16>,
    /// When each action answered its requests of the last second, for the
    /// rate limit.
    recent: HashMap<String, VecDeque<Instant>>,
    stats: FakeStats,
    requests: Vec<SeenRequest>,
    /// Makes request ids unique within a fake.
    next_request: u64,
}

/// The running fake: its state and its server task, which ends when the
/// fake is dropped.
pub struct FakeTencent {
    address: std::net::SocketAddr,
    inner: Arc<Mutex<Inner>>,
    server: JoinHandle<()>,
}

impl FakeTencent {
    /// Starts the fake on 127.0.0.1, on a port of its own.
    pub async fn start(options: FakeOptions) -> FakeTencent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the fake binds 127.0.0.1:0");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let inner = Arc::new(Mutex::new(Inner {
            options,
            sessions: Vec::new(),
            callbacks: Vec::new(),
            throttle_next: 0,
            fail_next: VecDeque::new(),
            recent: HashMap::new(),
            stats: FakeStats::default(),
            requests: Vec::new(),
            next_request: 0,
        }));
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the fake serves");
        });
        FakeTencent {
            address,
            inner,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`, the base URL to POST to.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `127.0.0.1:PORT`, the `Host` a client sends and signs.
    pub fn host(&self) -> String {
        self.address.to_string()
    }

    /// Adds a push session for `DescribeLiveStreamEventList`.
    pub fn add_stream(&self, session: StreamSession) {
        self.lock().sessions.push(session);
    }

    /// Adds a callback CSS sent, for `DescribeCallbackRecordsList`.
    pub fn add_callback(&self, sent: SentCallback) {
        self.lock().callbacks.push(sent);
    }

    /// The next `n` requests answer `RequestLimitExceeded`, whatever they
    /// are (after any injected HTTP failures).
    pub fn throttle_next(&self, n: usize) {
        self.lock().throttle_next += n;
    }

    /// The next `n` requests answer HTTP `status` with a plain-text body, as
    /// a failing gateway would, before any other check. Calls queue up.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.lock().fail_next.extend(std::iter::repeat_n(status, n));
    }

    /// What the fake has answered so far.
    pub fn stats(&self) -> FakeStats {
        self.lock().stats.clone()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not hide the fake's state from the
        // assertions that report it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for FakeTencent {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What the fake sends back, before it is an HTTP response.
enum Reply {
    Data(Value),
    Error(ApiError),
    Http(u16),
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        });
    let mut inner = inner.lock().unwrap_or_else(PoisonError::into_inner);
    let action = header(&headers, "x-tc-action");
    let reply = inner.reply(&method, &uri, &headers, &body, action.as_deref(), now);
    inner.next_request += 1;
    let request_id = request_id(inner.next_request);
    let action_key = action.clone().unwrap_or_default();
    *inner.stats.calls.entry(action_key.clone()).or_default() += 1;
    let answer = match &reply {
        Reply::Data(_) => {
            *inner.stats.answered.entry(action_key).or_default() += 1;
            Answer::Data
        }
        Reply::Error(error) => {
            let stats = &mut inner.stats;
            if error.code == "RequestLimitExceeded" {
                stats.throttled += 1;
            } else if error.code.starts_with("AuthFailure.") {
                *stats
                    .auth_failures
                    .entry(error.code.to_owned())
                    .or_default() += 1;
            } else {
                *stats.other_errors.entry(error.code.to_owned()).or_default() += 1;
            }
            Answer::Error(error.code.to_owned())
        }
        Reply::Http(status) => Answer::Http(*status),
    };
    inner.requests.push(SeenRequest {
        method: method.to_string(),
        path: uri.to_string(),
        action,
        headers: recorded_headers(&headers),
        signed_headers: header(&headers, "authorization")
            .and_then(|value| signature::parse_authorization(&value).ok())
            .map(|authorization| authorization.signed_headers)
            .unwrap_or_default(),
        body: String::from_utf8_lossy(&body).into_owned(),
        json: serde_json::from_slice(&body).ok(),
        answer,
    });
    drop(inner);
    match reply {
        Reply::Data(mut data) => {
            if let Some(fields) = data.as_object_mut() {
                fields.insert("RequestId".to_owned(), Value::String(request_id));
            }
            axum::Json(json!({ "Response": data })).into_response()
        }
        Reply::Error(error) => axum::Json(json!({
            "Response": {
                "Error": { "Code": error.code, "Message": error.message },
                "RequestId": request_id,
            }
        }))
        .into_response(),
        Reply::Http(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "the fake Tencent API: an injected or routing failure\n",
        )
            .into_response(),
    }
}

impl Inner {
    /// Decides the answer; counting and recording are the caller's.
    fn reply(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        action: Option<&str>,
        now: i64,
    ) -> Reply {
        if let Some(status) = self.fail_next.pop_front() {
            self.stats.injected_http_failures += 1;
            return Reply::Http(status);
        }
        if uri.path() != "/" {
            *self
                .stats
                .other_errors
                .entry("HTTP 404".to_owned())
                .or_default() += 1;
            return Reply::Http(404);
        }
        if method != Method::POST {
            *self
                .stats
                .other_errors
                .entry("HTTP 405".to_owned())
                .or_default() += 1;
            return Reply::Http(405);
        }
        if self.throttle_next > 0 {
            self.throttle_next -= 1;
            return Reply::Error(throttled());
        }
        match self.answer(headers, body, action, now) {
            Ok(data) => Reply::Data(data),
            Err(error) => Reply::Error(error),
        }
    }

    fn answer(
        &mut self,
        headers: &HeaderMap,
        body: &[u8],
        action: Option<&str>,
        now: i64,
    ) -> Result<Value, ApiError> {
        let action = action.ok_or_else(|| {
            ApiError::new("MissingParameter", "The parameter X-TC-Action is missing.")
        })?;
        let version = header(headers, "x-tc-version").ok_or_else(|| {
            ApiError::new("MissingParameter", "The parameter X-TC-Version is missing.")
        })?;
        if version != VERSION {
            return Err(ApiError::new(
                "NoSuchVersion",
                format!("The API version {version} does not exist."),
            ));
        }
        if action != DESCRIBE_LIVE_STREAM_EVENT_LIST && action != DESCRIBE_CALLBACK_RECORDS_LIST {
            return Err(ApiError::new(
                "InvalidAction",
                format!("The action {action} does not exist."),
            ));
        }
        let expected = Expected {
            secret_id: &self.options.secret_id,
            secret_key: &self.options.secret_key,
            token: self.options.token.as_deref(),
            service: SERVICE,
        };
        signature::verify(headers, body, &expected, now)
            .map_err(|error| ApiError::new(error.code(), error.message()))?;
        if !self.admit(action) {
            return Err(throttled());
        }
        let json: Value = serde_json::from_slice(body)
            .map_err(|_| ApiError::new("InvalidParameter", "The body is not valid JSON."))?;
        if action == DESCRIBE_LIVE_STREAM_EVENT_LIST {
            actions::describe_live_stream_event_list(&json, &self.sessions, now)
        } else {
            actions::describe_callback_records_list(&json, &self.callbacks, now)
        }
    }

    /// Whether `action` may answer one more request within its rate limit;
    /// counts it if so.
    fn admit(&mut self, action: &str) -> bool {
        let Some(limit) = self.options.max_requests_per_sec else {
            return true;
        };
        let now = Instant::now();
        let recent = self.recent.entry(action.to_owned()).or_default();
        while recent
            .front()
            .is_some_and(|&at| now.duration_since(at) >= Duration::from_secs(1))
        {
            recent.pop_front();
        }
        if recent.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
            return false;
        }
        recent.push_back(now);
        true
    }
}

fn throttled() -> ApiError {
    ApiError::new(
        "RequestLimitExceeded",
        "The number of requests exceeds the frequency limit.",
    )
}

/// A header's value as text, if present and text.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// The headers for [`SeenRequest::headers`], secrets replaced.
fn recorded_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut recorded: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = match name.as_str() {
            "authorization" | "x-tc-token" => "present".to_owned(),
            _ => String::from_utf8_lossy(value.as_bytes()).into_owned(),
        };
        recorded
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    recorded
}

/// A UUID-shaped request id, unique within the fake.
fn request_id(sequence: u64) -> String {
    format!(
        "fa4e0000-0000-4000-8000-{:012x}",
        sequence & 0xffff_ffff_ffff
    )
}
