//! [`TencentClient`]: calls Tencent Cloud API 3.0 actions of CSS (`live`).
//! Each attempt is signed afresh (TC3-HMAC-SHA256, [`super::sign`]) with its
//! own timestamp; transient failures are retried with jittered exponential
//! backoff; a client-side limiter paces every attempt of every caller; an
//! optional observer hears the outcome of each attempt (for metrics).
//!
//! Retrying assumes the action is idempotent, as the `Describe*` actions this
//! client exists for are.
//!
//! Secrets: the secret key and the token never appear in an error, a log
//! line or a `Debug` output; a message Tencent sends back has them replaced
//! by [`REDACTED`] should it ever echo them. Request and response bodies are
//! not logged (a callback record holds the callback's `sign`).

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::limiter::RateLimiter;
use super::live::{
    ACTION_CALLBACK_RECORDS, ACTION_STREAM_EVENTS, DescribeCallbackRecordsListRequest,
    DescribeCallbackRecordsListResponse, DescribeLiveStreamEventListRequest,
    DescribeLiveStreamEventListResponse, SERVICE, VERSION,
};
use super::sign::{SignedRequest, authorization};
use super::time::TimeError;
use crate::redact::REDACTED;

/// The mainland endpoint of CSS's API.
pub const DEFAULT_ENDPOINT: &str = "live.tencentcloudapi.com";
/// The body's media type, sent and signed exactly so (the document warns that
/// a client adding its own charset breaks the signature).
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";
/// The wait before the first retry; each later retry doubles it.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(8);

const X_TC_ACTION: HeaderName = HeaderName::from_static("x-tc-action");
const X_TC_VERSION: HeaderName = HeaderName::from_static("x-tc-version");
const X_TC_TIMESTAMP: HeaderName = HeaderName::from_static("x-tc-timestamp");
const X_TC_REGION: HeaderName = HeaderName::from_static("x-tc-region");
const X_TC_TOKEN: HeaderName = HeaderName::from_static("x-tc-token");

/// Hears each HTTP attempt: the action and the outcome, `"ok"` or
/// [`ApiError::code`]. Called on the caller's task: keep it quick.
pub type Observer = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// A Tencent Cloud API key (CAM), or temporary credentials with a token.
/// `Debug` shows the secret id (an identifier, not a secret) and hides the
/// key and token.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The SecretId (`AKID...`), sent in every `Authorization` header.
    pub secret_id: String,
    /// The SecretKey: signs, is never sent.
    pub secret_key: SecretString,
    /// The session token of temporary (STS) credentials, sent as
    /// `X-TC-Token`; `None` for a permanent key.
    pub token: Option<SecretString>,
}

/// How a [`TencentClient`] reaches Tencent and paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// A host (`live.tencentcloudapi.com`, `live.intl.tencentcloudapi.com`),
    /// meaning `https://{host}/`, or a URL with a scheme and no path
    /// (`http://127.0.0.1:41234` for a local fake).
    pub endpoint: String,
    /// The `X-TC-Region` header; `None` sends none (the two live actions
    /// need no region).
    pub region: Option<String>,
    /// Most attempts started per second, across all callers and retries; at
    /// least 1.
    pub requests_per_sec: u32,
    /// Longest time one attempt may take, connecting and reading included.
    pub timeout: Duration,
    /// Attempts per call, the first included; at least 1.
    pub max_attempts: u32,
}

impl Default for ClientOptions {
    /// The mainland endpoint, no region, 10 requests per second (a cautious
    /// pace, not taken from Tencent: check each action's documented limit),
    /// a 10 s timeout and 4 attempts (at most 1.75 s of backoff in all).
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            region: None,
            requests_per_sec: 10,
            timeout: Duration::from_secs(10),
            max_attempts: 4,
        }
    }
}

/// Why a [`TencentClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a host or an `http(s)://` URL with a host and no
    /// path, query or credentials.
    #[error("invalid Tencent Cloud API endpoint `{endpoint}`: {reason}")]
    InvalidEndpoint {
        /// The endpoint as configured (a password in it replaced).
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An option is out of range.
    #[error("invalid Tencent Cloud client option `{name}`: {reason}")]
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// What is wrong with it (never the value of a secret).
        reason: &'static str,
    },
    /// The HTTP client could not be set up (TLS initialisation).
    #[error("could not set up the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// Why a call failed. `Display` includes the cause, so `%err` in a log line
/// is complete; it never includes the secret key or the token.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Tencent rejected the credentials or the signature (`AuthFailure*`).
    /// Never retried: nothing will change until someone fixes the key, so a
    /// run should stop.
    #[error("Tencent Cloud rejected the credentials: {code}: {message} (RequestId {request_id})")]
    Auth {
        /// Tencent's error code, e.g. `AuthFailure.SignatureFailure`.
        code: String,
        /// Tencent's message.
        message: String,
        /// Tencent's id for the request.
        request_id: String,
    },
    /// Tencent throttled the call (`RequestLimitExceeded*`) on every attempt.
    #[error(
        "Tencent Cloud throttled the request on every attempt: {code}: {message} (RequestId {request_id})"
    )]
    Throttled {
        /// Tencent's error code, e.g. `RequestLimitExceeded`.
        code: String,
        /// Tencent's message.
        message: String,
        /// Tencent's id for the (last) request.
        request_id: String,
    },
    /// Any other error Tencent answered, e.g. `InvalidParameterValue`, or
    /// `InternalError` on every attempt.
    #[error("Tencent Cloud answered {code}: {message} (RequestId {request_id})")]
    Service {
        /// Tencent's error code.
        code: String,
        /// Tencent's message.
        message: String,
        /// Tencent's id for the request.
        request_id: String,
    },
    /// The answer's HTTP status was not 2xx (Tencent itself answers 200 even
    /// for errors, so this is a gateway or proxy speaking).
    #[error("Tencent Cloud answered HTTP {status}")]
    Status {
        /// The HTTP status code.
        status: u16,
    },
    /// No answer: connecting, TLS, a timeout, or the connection broke.
    #[error("could not reach Tencent Cloud: {}", chain(.0))]
    Transport(#[source] reqwest::Error),
    /// The answer was not the JSON the action returns.
    #[error("could not decode the {action} answer: {source}")]
    Decode {
        /// The action called.
        action: String,
        /// What did not fit.
        #[source]
        source: serde_json::Error,
    },
    /// The request body could not be serialized (a bug in the request type).
    #[error("could not encode the {action} request: {source}")]
    Encode {
        /// The action called.
        action: String,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },
    /// The action name is not one Tencent could have (letters and digits).
    #[error("`{action}` is not an API action name")]
    InvalidAction {
        /// The name given.
        action: String,
    },
    /// The system clock is outside what a signature can express (a date
    /// beyond year 9999): the host is broken.
    #[error("cannot sign: {0}")]
    Clock(#[source] TimeError),
}

impl ApiError {
    /// A short, stable label for metrics: Tencent's error code as given,
    /// `http_{status}`, or `transport`, `decode`, `encode`,
    /// `invalid_action`, `clock`.
    pub fn code(&self) -> String {
        match self {
            Self::Auth { code, .. } | Self::Throttled { code, .. } | Self::Service { code, .. } => {
                code.clone()
            }
            Self::Status { status } => format!("http_{status}"),
            Self::Transport(_) => "transport".to_owned(),
            Self::Decode { .. } => "decode".to_owned(),
            Self::Encode { .. } => "encode".to_owned(),
            Self::InvalidAction { .. } => "invalid_action".to_owned(),
            Self::Clock(_) => "clock".to_owned(),
        }
    }

    /// Whether Tencent rejected the credentials: a run should stop, not
    /// move on to the next stream.
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::Auth { .. })
    }

    /// Whether the failure is transient, so the client retries it:
    /// `RequestLimitExceeded*`, `InternalError*`, HTTP 5xx, transport errors.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Throttled { .. } => true,
            Self::Service { code, .. } => code.starts_with("InternalError"),
            Self::Status { status } => (500..600).contains(status),
            // A builder error is a request that can never be sent.
            Self::Transport(err) => !err.is_builder(),
            Self::Auth { .. }
            | Self::Decode { .. }
            | Self::Encode { .. }
            | Self::InvalidAction { .. }
            | Self::Clock(_) => false,
        }
    }
}

/// An error and its causes, `: `-separated: reqwest's own message names only
/// the URL, the reason ("connection refused", "timed out") is in its causes.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    crate::error_chain::error_chain(err)
}

/// A successful call's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Called<R> {
    /// The action's output (the `Response` object).
    pub response: R,
    /// Tencent's id for the request (`Response.RequestId`; empty if absent),
    /// for support tickets and logs.
    pub request_id: String,
}

/// A client for CSS's API 3.0. Cheap to clone; clones share the rate limit.
#[derive(Clone)]
pub struct TencentClient {
    /// Connections and timeouts.
    http: reqwest::Client,
    /// Where requests go: the endpoint with path `/`.
    url: reqwest::Url,
    /// The `Host` header, exactly as sent and signed: the host, plus
    /// `:port` when the port is not the scheme's default.
    host: String,
    /// The same, ready to send.
    host_header: HeaderValue,
    /// `X-TC-Region`, when set.
    region: Option<HeaderValue>,
    /// The key and token.
    credentials: Credentials,
    /// `X-TC-Token`, marked sensitive, when the credentials have a token.
    token: Option<HeaderValue>,
    /// Attempts per call, at least 1.
    max_attempts: u32,
    /// Paces attempts across all clones.
    limiter: Arc<RateLimiter>,
    /// Hears each attempt's outcome.
    observer: Option<Observer>,
}

impl fmt::Debug for TencentClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TencentClient")
            .field("url", &self.url.as_str())
            .field("region", &self.region)
            .field("credentials", &self.credentials)
            .field("max_attempts", &self.max_attempts)
            .field("limiter", &self.limiter)
            .field("observer", &self.observer.as_ref().map(|_| "<fn>"))
            .finish_non_exhaustive()
    }
}

impl TencentClient {
    /// A client for `credentials` with `options`; fails on an invalid
    /// endpoint (naming it), region, secret id or token, or an option out
    /// of range.
    pub fn new(credentials: Credentials, options: ClientOptions) -> Result<Self, ClientError> {
        let (url, host) = parse_endpoint(&options.endpoint)?;
        let host_header =
            HeaderValue::from_str(&host).map_err(|_| ClientError::InvalidEndpoint {
                endpoint: options.endpoint.clone(),
                reason: "the host is not a valid HTTP header value".to_owned(),
            })?;
        let requests_per_sec =
            NonZeroU32::new(options.requests_per_sec).ok_or(ClientError::InvalidOption {
                name: "requests_per_sec",
                reason: "must be at least 1",
            })?;
        if options.max_attempts == 0 {
            return Err(ClientError::InvalidOption {
                name: "max_attempts",
                reason: "must be at least 1",
            });
        }
        if options.timeout.is_zero() {
            return Err(ClientError::InvalidOption {
                name: "timeout",
                reason: "must be more than zero",
            });
        }
        // The id goes into `Authorization`: printable ASCII without the
        // separators of that header.
        if credentials.secret_id.is_empty()
            || !credentials
                .secret_id
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b',' && b != b'/')
        {
            return Err(ClientError::InvalidOption {
                name: "secret_id",
                reason: "must be non-empty printable ASCII without `,` or `/`",
            });
        }
        let region = options
            .region
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| ClientError::InvalidOption {
                name: "region",
                reason: "must be a valid HTTP header value",
            })?;
        let token = credentials
            .token
            .as_ref()
            .map(|token| {
                HeaderValue::from_str(token.expose_secret()).map(|mut value| {
                    value.set_sensitive(true);
                    value
                })
            })
            .transpose()
            .map_err(|_| ClientError::InvalidOption {
                name: "token",
                reason: "must be a valid HTTP header value",
            })?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("recordhook/", env!("CARGO_PKG_VERSION")))
            .timeout(options.timeout)
            // Tencent does not redirect; following one would send the
            // signed request somewhere it was not signed for.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ClientError::Http)?;
        Ok(Self {
            http,
            url,
            host,
            host_header,
            region,
            credentials,
            token,
            max_attempts: options.max_attempts,
            limiter: Arc::new(RateLimiter::new(requests_per_sec)),
            observer: None,
        })
    }

    /// The same client with `observer` hearing each attempt's outcome.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The `Host` this client sends and signs.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `DescribeCallbackRecordsList`: one page of the callbacks CSS sent.
    pub async fn describe_callback_records(
        &self,
        request: &DescribeCallbackRecordsListRequest,
    ) -> Result<Called<DescribeCallbackRecordsListResponse>, ApiError> {
        self.call(ACTION_CALLBACK_RECORDS, request).await
    }

    /// `DescribeLiveStreamEventList`: one page of push start/stop events.
    pub async fn describe_live_stream_events(
        &self,
        request: &DescribeLiveStreamEventListRequest,
    ) -> Result<Called<DescribeLiveStreamEventListResponse>, ApiError> {
        self.call(ACTION_STREAM_EVENTS, request).await
    }

    /// Calls `action` (version [`VERSION`]) with `request` as its JSON body
    /// and decodes the `Response` object as `R`. Transient failures
    /// ([`ApiError::is_retriable`]) are retried with backoff until
    /// `max_attempts` attempts have been made; every attempt waits for the
    /// rate limiter first.
    pub async fn call<Q: Serialize, R: DeserializeOwned>(
        &self,
        action: &str,
        request: &Q,
    ) -> Result<Called<R>, ApiError> {
        if action.is_empty() || !action.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ApiError::InvalidAction {
                action: action.to_owned(),
            });
        }
        let body = Bytes::from(
            serde_json::to_vec(request).map_err(|source| ApiError::Encode {
                action: action.to_owned(),
                source,
            })?,
        );
        let mut attempt = 1;
        loop {
            self.limiter.acquire().await;
            let result = self.attempt(action, body.clone()).await;
            let outcome = match &result {
                Ok(_) => "ok".to_owned(),
                Err(err) => err.code(),
            };
            if let Some(observer) = &self.observer {
                observer(action, &outcome);
            }
            match result {
                Ok(called) => {
                    tracing::debug!(
                        action, attempt, outcome, request_id = %called.request_id,
                        "Tencent Cloud call succeeded"
                    );
                    return Ok(called);
                }
                Err(err) if err.is_retriable() && attempt < self.max_attempts => {
                    let delay = backoff_delay(attempt, fastrand::f64());
                    tracing::debug!(
                        action, attempt, outcome, error = %err,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "Tencent Cloud call failed; will retry"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(err) => {
                    tracing::debug!(action, attempt, outcome, error = %err, "Tencent Cloud call failed");
                    return Err(err);
                }
            }
        }
    }

    /// One signed request and its decoded answer.
    async fn attempt<R: DeserializeOwned>(
        &self,
        action: &str,
        body: Bytes,
    ) -> Result<Called<R>, ApiError> {
        let headers = self.headers(action, unix_now(), &body)?;
        let response = self
            .http
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(ApiError::Transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(ApiError::Status {
                status: status.as_u16(),
            });
        }
        let bytes = response.bytes().await.map_err(ApiError::Transport)?;
        self.decode(action, &bytes)
    }

    /// Every header of one attempt, `Authorization` signed over exactly the
    /// `Content-Type`, `Host` and `X-TC-Action` values sent.
    fn headers(&self, action: &str, timestamp: i64, body: &[u8]) -> Result<HeaderMap, ApiError> {
        let signed = [
            ("content-type", JSON_CONTENT_TYPE),
            ("host", self.host.as_str()),
            ("x-tc-action", action),
        ];
        let authorization = authorization(
            &self.credentials.secret_id,
            self.credentials.secret_key.expose_secret(),
            &SignedRequest {
                service: SERVICE,
                timestamp,
                headers: &signed,
                payload: body,
            },
        )
        .map_err(ApiError::Clock)?;
        // `new` checked the id and `call` the action, so these parse; an
        // error still becomes an error rather than a panic.
        let invalid = || ApiError::InvalidAction {
            action: action.to_owned(),
        };
        let mut authorization = HeaderValue::from_str(&authorization).map_err(|_| invalid())?;
        authorization.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
        headers.insert(HOST, self.host_header.clone());
        headers.insert(
            X_TC_ACTION,
            HeaderValue::from_str(action).map_err(|_| invalid())?,
        );
        headers.insert(X_TC_VERSION, HeaderValue::from_static(VERSION));
        headers.insert(X_TC_TIMESTAMP, HeaderValue::from(timestamp));
        if let Some(region) = &self.region {
            headers.insert(X_TC_REGION, region.clone());
        }
        if let Some(token) = &self.token {
            headers.insert(X_TC_TOKEN, token.clone());
        }
        headers.insert(AUTHORIZATION, authorization);
        Ok(headers)
    }

    /// Reads `{"Response": {...}}`: Tencent's error if it has one, else `R`.
    fn decode<R: DeserializeOwned>(
        &self,
        action: &str,
        bytes: &[u8],
    ) -> Result<Called<R>, ApiError> {
        let decode_error = |source| ApiError::Decode {
            action: action.to_owned(),
            source,
        };
        let Envelope { response } = serde_json::from_slice(bytes).map_err(decode_error)?;
        let request_id = self.scrub(
            response
                .get("RequestId")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        match response.get("Error") {
            Some(error) if !error.is_null() => {
                let ErrorBody { code, message } =
                    ErrorBody::deserialize(error).map_err(decode_error)?;
                Err(classify(
                    self.scrub(&code),
                    self.scrub(&message),
                    request_id,
                ))
            }
            _ => {
                let response = serde_json::from_value(response).map_err(decode_error)?;
                Ok(Called {
                    response,
                    request_id,
                })
            }
        }
    }

    /// `text` with the secret key and the token replaced by [`REDACTED`]:
    /// what Tencent sends back goes into errors and logs, and a server that
    /// echoed a credential must not make it leak there.
    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        let secrets = std::iter::once(&self.credentials.secret_key)
            .chain(self.credentials.token.as_ref())
            .map(ExposeSecret::expose_secret);
        for secret in secrets {
            if !secret.is_empty() && text.contains(secret) {
                text = text.replace(secret, REDACTED);
            }
        }
        text
    }
}

/// Every answer: `{"Response": {...}}`.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Response")]
    response: Value,
}

/// `Response.Error`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

/// The error for Tencent's `code`: its prefix decides how it is handled.
fn classify(code: String, message: String, request_id: String) -> ApiError {
    if code.starts_with("AuthFailure") {
        ApiError::Auth {
            code,
            message,
            request_id,
        }
    } else if code.starts_with("RequestLimitExceeded") {
        ApiError::Throttled {
            code,
            message,
            request_id,
        }
    } else {
        ApiError::Service {
            code,
            message,
            request_id,
        }
    }
}

/// The URL to post to and the `Host` header for `endpoint`.
fn parse_endpoint(endpoint: &str) -> Result<(reqwest::Url, String), ClientError> {
    let text = endpoint.trim();
    let full = if text.contains("://") {
        text.to_owned()
    } else {
        format!("https://{}/", text.trim_end_matches('/'))
    };
    let invalid = |reason: &str| {
        // Never repeat a password, should someone have put one in the URL.
        let shown = match reqwest::Url::parse(&full) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some(REDACTED));
                url.to_string()
            }
            _ => endpoint.to_owned(),
        };
        ClientError::InvalidEndpoint {
            endpoint: shown,
            reason: reason.to_owned(),
        }
    };
    let url = reqwest::Url::parse(&full).map_err(|err| invalid(&err.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    let Some(host) = url.host_str() else {
        return Err(invalid("there is no host"));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials do not belong in the endpoint"));
    }
    // API 3.0 signs the path `/`; a different one would fail every call.
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("API 3.0 endpoints have no path, query or fragment"));
    }
    // What reqwest puts in `Host` too: the URL type drops a default port.
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    Ok((url, host))
}

/// The wait before retry number `retry` (1 for the first): [`BACKOFF_INITIAL`]
/// doubled per retry, capped at [`BACKOFF_MAX`], of which the upper half is
/// scaled by `jitter` (0..1) so that callers throttled together spread out.
fn backoff_delay(retry: u32, jitter: f64) -> Duration {
    let exponent = retry.saturating_sub(1).min(16);
    let base = BACKOFF_INITIAL
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX);
    base / 2 + (base / 2).mul_f64(jitter.clamp(0.0, 1.0))
}

/// Now, in Unix seconds (negative before 1970, for a clock that is that far
/// off; signing then fails as it should).
fn unix_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |secs| -secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use axum::extract::State;
    use axum::http::StatusCode;
    use serde_json::json;

    use crate::tencent::live::CallbackEventInfo;
    use crate::tencent::sign;

    const SECRET_KEY: &str = "test-secret-key-0123456789abcdef";
    const TOKEN: &str = "test-session-token-fedcba9876543210";
    const OK_BODY: &str = r#"{"Response": {"TotalNum": 0, "RequestId": "req-ok"}}"#;

    /// What the fake saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        headers: axum::http::HeaderMap,
        body: Bytes,
        /// On tokio's clock, for paused-time tests.
        at: tokio::time::Instant,
    }

    /// The fake's shared state: what it saw, and what it answers next.
    #[derive(Clone, Default)]
    struct FakeState {
        seen: Arc<Mutex<Vec<Seen>>>,
        script: Arc<Mutex<VecDeque<(u16, String)>>>,
    }

    /// A local stand-in for Tencent: records each request and answers the
    /// scripted (status, body) pairs in order, then `OK_BODY`.
    struct Fake {
        address: SocketAddr,
        state: FakeState,
    }

    impl Fake {
        async fn start(script: &[(u16, &str)]) -> Self {
            let state = FakeState::default();
            state
                .script
                .lock()
                .unwrap()
                .extend(script.iter().map(|(s, b)| (*s, (*b).to_owned())));
            let app = axum::Router::new()
                .route("/", axum::routing::post(answer))
                .with_state(state.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            Self { address, state }
        }

        fn endpoint(&self) -> String {
            format!("http://{}", self.address)
        }

        fn seen(&self) -> Vec<Seen> {
            self.state.seen.lock().unwrap().clone()
        }
    }

    async fn answer(
        State(state): State<FakeState>,
        headers: axum::http::HeaderMap,
        body: Bytes,
    ) -> (StatusCode, String) {
        state.seen.lock().unwrap().push(Seen {
            headers,
            body,
            at: tokio::time::Instant::now(),
        });
        let (status, body) = state
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((200, OK_BODY.to_owned()));
        (StatusCode::from_u16(status).unwrap(), body)
    }

    fn credentials(token: Option<&str>) -> Credentials {
        Credentials {
            secret_id: "AKIDtest0123456789".to_owned(),
            secret_key: SecretString::from(SECRET_KEY),
            token: token.map(SecretString::from),
        }
    }

    fn options(endpoint: String) -> ClientOptions {
        ClientOptions {
            endpoint,
            region: None,
            requests_per_sec: 1_000,
            timeout: Duration::from_secs(30),
            max_attempts: 4,
        }
    }

    /// A client whose observer appends each outcome to the returned list.
    fn observed(
        credentials: Credentials,
        options: ClientOptions,
    ) -> (TencentClient, Arc<Mutex<Vec<String>>>) {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&outcomes);
        let client = TencentClient::new(credentials, options)
            .unwrap()
            .with_observer(Arc::new(move |action: &str, outcome: &str| {
                sink.lock().unwrap().push(format!("{action}:{outcome}"));
            }));
        (client, outcomes)
    }

    fn records_request() -> DescribeCallbackRecordsListRequest {
        DescribeCallbackRecordsListRequest {
            start_time: "2024-05-01T00:00:00Z".to_owned(),
            end_time: "2024-05-01T01:00:00Z".to_owned(),
            stream_name: "room_1".to_owned(),
            page_num: 1,
            page_size: 100,
            event_type: None,
            result_code: None,
        }
    }

    fn error_body(code: &str, message: &str) -> String {
        json!({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": "req-err"}})
            .to_string()
    }

    fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
        seen.headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn a_call_sends_the_api_headers_and_decodes_the_answer() {
        let answer = json!({"Response": {
            "DataInfoList": [{"EventType": 100, "StreamId": "room_1", "ResultCode": 0}],
            "PageNum": 1, "PageSize": 100, "TotalNum": 1, "TotalPage": 1, "RequestId": "req-1",
        }})
        .to_string();
        let fake = Fake::start(&[(200, &answer)]).await;
        let client = TencentClient::new(credentials(None), options(fake.endpoint())).unwrap();

        let called = client
            .describe_callback_records(&records_request())
            .await
            .unwrap();

        assert_eq!(called.request_id, "req-1");
        assert_eq!(called.response.total_num, Some(1));
        assert_eq!(
            called.response.data_info_list.unwrap(),
            vec![CallbackEventInfo {
                event_type: Some(100),
                stream_id: Some("room_1".to_owned()),
                result_code: Some(0),
                ..Default::default()
            }]
        );
        let seen = fake.seen();
        assert_eq!(seen.len(), 1);
        let seen = &seen[0];
        assert_eq!(header(seen, "content-type"), Some(JSON_CONTENT_TYPE));
        assert_eq!(
            header(seen, "host"),
            Some(fake.address.to_string().as_str())
        );
        assert_eq!(
            header(seen, "x-tc-action"),
            Some("DescribeCallbackRecordsList")
        );
        assert_eq!(header(seen, "x-tc-version"), Some("2018-08-01"));
        let timestamp: i64 = header(seen, "x-tc-timestamp").unwrap().parse().unwrap();
        assert!(timestamp > 1_700_000_000, "{timestamp}");
        assert_eq!(header(seen, "x-tc-region"), None);
        assert_eq!(header(seen, "x-tc-token"), None);
        assert_eq!(
            serde_json::from_slice::<Value>(&seen.body).unwrap(),
            serde_json::to_value(records_request()).unwrap()
        );
    }

    #[tokio::test]
    async fn the_authorization_verifies_against_the_bytes_received() {
        let fake = Fake::start(&[]).await;
        let client = TencentClient::new(credentials(None), options(fake.endpoint())).unwrap();
        client
            .describe_callback_records(&records_request())
            .await
            .unwrap();

        let seen = &fake.seen()[0];
        // Recomputed from what arrived, as Tencent would: the received
        // header values, timestamp and body bytes.
        let timestamp: i64 = header(seen, "x-tc-timestamp").unwrap().parse().unwrap();
        let received = [
            ("content-type", header(seen, "content-type").unwrap()),
            ("host", header(seen, "host").unwrap()),
            ("x-tc-action", header(seen, "x-tc-action").unwrap()),
        ];
        let expected = sign::authorization(
            "AKIDtest0123456789",
            SECRET_KEY,
            &SignedRequest {
                service: "live",
                timestamp,
                headers: &received,
                payload: &seen.body,
            },
        )
        .unwrap();
        assert_eq!(header(seen, "authorization"), Some(expected.as_str()));
        assert!(expected.contains("SignedHeaders=content-type;host;x-tc-action,"));
        assert!(expected.contains("/live/tc3_request,"));
    }

    #[tokio::test]
    async fn region_and_token_are_sent_only_when_set() {
        let fake = Fake::start(&[]).await;
        let mut with_region = options(fake.endpoint());
        with_region.region = Some("ap-guangzhou".to_owned());
        let client = TencentClient::new(credentials(Some(TOKEN)), with_region).unwrap();
        client
            .describe_callback_records(&records_request())
            .await
            .unwrap();

        let seen = &fake.seen()[0];
        assert_eq!(header(seen, "x-tc-region"), Some("ap-guangzhou"));
        assert_eq!(header(seen, "x-tc-token"), Some(TOKEN));
        assert!(!header(seen, "authorization").unwrap().contains(TOKEN));
    }

    #[tokio::test]
    async fn an_auth_failure_is_returned_after_exactly_one_request() {
        let body = error_body(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated.",
        );
        let fake = Fake::start(&[(200, &body)]).await;
        let (client, outcomes) = observed(credentials(None), options(fake.endpoint()));

        let err = client
            .describe_callback_records(&records_request())
            .await
            .unwrap_err();

        assert!(err.is_auth(), "{err:?}");
        assert!(!err.is_retriable());
        assert_eq!(err.code(), "AuthFailure.SignatureFailure");
        let ApiError::Auth { request_id, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(request_id, "req-err");
        assert_eq!(fake.seen().len(), 1);
        assert_eq!(
            *outcomes.lock().unwrap(),
            ["DescribeCallbackRecordsList:AuthFailure.SignatureFailure"]
        );
    }

    #[tokio::test]
    async fn request_limit_exceeded_twice_then_success_succeeds_on_the_third_request() {
        let throttled = error_body("RequestLimitExceeded", "slow down");
        let fake = Fake::start(&[(200, &throttled), (200, &throttled)]).await;
        let (client, outcomes) = observed(credentials(None), options(fake.endpoint()));

        let called = client
            .describe_live_stream_events(&DescribeLiveStreamEventListRequest::new("a", "b"))
            .await
            .unwrap();

        assert_eq!(called.request_id, "req-ok");
        assert_eq!(fake.seen().len(), 3);
        assert_eq!(
            *outcomes.lock().unwrap(),
            [
                "DescribeLiveStreamEventList:RequestLimitExceeded",
                "DescribeLiveStreamEventList:RequestLimitExceeded",
                "DescribeLiveStreamEventList:ok",
            ]
        );
        // Each attempt is signed afresh: the timestamps may differ, and each
        // carries its own Authorization.
        assert!(
            fake.seen()
                .iter()
                .all(|s| header(s, "authorization").is_some())
        );
    }

    #[tokio::test]
    async fn a_502_then_success_is_a_success() {
        let fake = Fake::start(&[(502, "bad gateway")]).await;
        let (client, outcomes) = observed(credentials(None), options(fake.endpoint()));

        client
            .describe_callback_records(&records_request())
            .await
            .unwrap();

        assert_eq!(fake.seen().len(), 2);
        assert_eq!(
            *outcomes.lock().unwrap(),
            [
                "DescribeCallbackRecordsList:http_502",
                "DescribeCallbackRecordsList:ok"
            ]
        );
    }

    #[tokio::test]
    async fn throttling_on_every_attempt_is_throttled_after_max_attempts() {
        let throttled = error_body("RequestLimitExceeded.UinLimitExceeded", "slow down");
        let fake = Fake::start(&[(200, &throttled), (200, &throttled), (200, &throttled)]).await;
        let mut two = options(fake.endpoint());
        two.max_attempts = 2;
        let client = TencentClient::new(credentials(None), two).unwrap();

        let err = client
            .describe_callback_records(&records_request())
            .await
            .unwrap_err();

        assert!(matches!(err, ApiError::Throttled { .. }), "{err:?}");
        assert_eq!(err.code(), "RequestLimitExceeded.UinLimitExceeded");
        assert_eq!(fake.seen().len(), 2);
    }

    #[tokio::test]
    async fn internal_errors_are_retried_and_other_errors_are_not() {
        let internal = error_body("InternalError.SystemError", "oops");
        let fake = Fake::start(&[(200, &internal)]).await;
        let client = TencentClient::new(credentials(None), options(fake.endpoint())).unwrap();
        client
            .describe_callback_records(&records_request())
            .await
            .unwrap();
        assert_eq!(fake.seen().len(), 2);

        let rows: [(u16, String, &str); 4] = [
            (
                200,
                error_body("InvalidParameterValue", "bad StartTime"),
                "InvalidParameterValue",
            ),
            (
                200,
                error_body("ResourceNotFound", "no such stream"),
                "ResourceNotFound",
            ),
            (404, "not found".to_owned(), "http_404"),
            (200, "<html>not json</html>".to_owned(), "decode"),
        ];
        for (status, body, code) in rows {
            let fake = Fake::start(&[(status, &body)]).await;
            let client = TencentClient::new(credentials(None), options(fake.endpoint())).unwrap();
            let err = client
                .describe_callback_records(&records_request())
                .await
                .unwrap_err();
            assert_eq!(err.code(), code, "{err}");
            assert!(!err.is_retriable(), "{code}");
            assert_eq!(fake.seen().len(), 1, "{code} was retried");
        }
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_a_transport_error_after_every_attempt() {
        // A port that was just free: nothing listens there.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut two = options(format!("http://{address}"));
        two.max_attempts = 2;
        let (client, outcomes) = observed(credentials(None), two);

        let err = client
            .describe_callback_records(&records_request())
            .await
            .unwrap_err();

        assert!(matches!(err, ApiError::Transport(_)), "{err:?}");
        assert_eq!(err.code(), "transport");
        assert_eq!(outcomes.lock().unwrap().len(), 2);
        // The cause is in the message, not only in the source chain.
        assert!(
            err.to_string()
                .starts_with("could not reach Tencent Cloud: "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_answer_slower_than_the_timeout_is_a_transport_error_and_is_retried() {
        // Accepts and reads, never answers; counts the connections.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                kept.lock().unwrap().push(socket);
            }
        });
        let mut short = options(format!("http://{address}"));
        short.timeout = Duration::from_millis(200);
        short.max_attempts = 2;
        let client = TencentClient::new(credentials(None), short).unwrap();

        let err = client
            .describe_callback_records(&records_request())
            .await
            .unwrap_err();

        let ApiError::Transport(inner) = &err else {
            panic!("{err:?}")
        };
        assert!(inner.is_timeout(), "{err}");
        assert!(err.is_retriable());
        // Each attempt after a timeout needs a new connection.
        assert_eq!(accepted.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn no_error_shows_the_secret_key_or_the_token_even_when_tencent_echoes_them() {
        let echo = error_body(
            "AuthFailure.TokenFailure",
            &format!("token {TOKEN} does not match key {SECRET_KEY}"),
        );
        let fake = Fake::start(&[(200, &echo)]).await;
        let client =
            TencentClient::new(credentials(Some(TOKEN)), options(fake.endpoint())).unwrap();

        let err = client
            .describe_callback_records(&records_request())
            .await
            .unwrap_err();

        for shown in [err.to_string(), format!("{err:?}"), format!("{client:?}")] {
            assert!(!shown.contains(SECRET_KEY), "{shown}");
            assert!(!shown.contains(TOKEN), "{shown}");
        }
        assert!(err.to_string().contains(REDACTED), "{err}");
        let shown = format!("{:?}", credentials(Some(TOKEN)));
        assert!(shown.contains("AKIDtest0123456789"), "{shown}");
        assert!(
            !shown.contains(SECRET_KEY) && !shown.contains(TOKEN),
            "{shown}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_paces_concurrent_callers() {
        // Paused time: the limiter's waits pass instantly, on tokio's clock,
        // which the fake also reads. A generous timeout, since paused time
        // also fast-forwards through a timeout whenever every task waits.
        let fake = Fake::start(&[]).await;
        let mut slow = options(fake.endpoint());
        slow.requests_per_sec = 2;
        slow.timeout = Duration::from_secs(86_400);
        let client = TencentClient::new(credentials(None), slow).unwrap();
        let origin = tokio::time::Instant::now();

        let calls: Vec<_> = (0..5)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(
                    async move { client.describe_callback_records(&records_request()).await },
                )
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }

        // Five starts at two per second: the last no earlier than 2 s in.
        let seen = fake.seen();
        assert_eq!(seen.len(), 5);
        let last = seen.iter().map(|s| s.at).max().unwrap();
        assert!(
            last - origin >= Duration::from_secs(2),
            "{:?}",
            last - origin
        );
    }

    #[test]
    fn the_backoff_doubles_from_250_ms_to_a_cap_of_8_s_with_jitter_in_its_upper_half() {
        assert_eq!(backoff_delay(1, 0.0), Duration::from_millis(125));
        assert_eq!(backoff_delay(1, 1.0), Duration::from_millis(250));
        assert_eq!(backoff_delay(2, 1.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(3, 0.5), Duration::from_millis(750));
        assert_eq!(backoff_delay(6, 1.0), Duration::from_secs(8));
        assert_eq!(backoff_delay(40, 1.0), Duration::from_secs(8));
        assert_eq!(backoff_delay(40, 0.0), Duration::from_secs(4));
        assert_eq!(
            backoff_delay(1, 7.0),
            Duration::from_millis(250),
            "jitter is clamped"
        );
    }

    #[test]
    fn endpoints_are_hosts_or_http_urls_and_the_host_header_carries_an_explicit_port() {
        let rows = [
            (
                "live.tencentcloudapi.com",
                "https://live.tencentcloudapi.com/",
                "live.tencentcloudapi.com",
            ),
            (
                "live.intl.tencentcloudapi.com/",
                "https://live.intl.tencentcloudapi.com/",
                "live.intl.tencentcloudapi.com",
            ),
            (
                "http://127.0.0.1:41234",
                "http://127.0.0.1:41234/",
                "127.0.0.1:41234",
            ),
            (
                "https://LIVE.tencentcloudapi.com:443/",
                "https://live.tencentcloudapi.com/",
                "live.tencentcloudapi.com",
            ),
            (
                "https://localhost:8443",
                "https://localhost:8443/",
                "localhost:8443",
            ),
        ];
        for (endpoint, url, host) in rows {
            let (parsed, parsed_host) = parse_endpoint(endpoint).unwrap();
            assert_eq!(
                (parsed.as_str(), parsed_host.as_str()),
                (url, host),
                "{endpoint}"
            );
        }
    }

    #[test]
    fn invalid_endpoints_are_rejected_by_name() {
        let rows = [
            ("", "empty"),
            ("ftp://live.tencentcloudapi.com", "another scheme"),
            ("https://live.tencentcloudapi.com/v3", "a path"),
            ("https://live.tencentcloudapi.com/?x=1", "a query"),
            ("https://user@live.tencentcloudapi.com", "a user"),
            ("http://", "no host"),
        ];
        for (endpoint, why) in rows {
            let err = parse_endpoint(endpoint).expect_err(why);
            assert!(matches!(err, ClientError::InvalidEndpoint { .. }), "{why}");
            assert!(
                err.to_string().contains(&format!("`{endpoint}`")),
                "{why}: {err}"
            );
        }
        let err = parse_endpoint("https://user:hunter2@live.tencentcloudapi.com").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn out_of_range_options_are_rejected() {
        let base = ClientOptions::default();
        let rows = [
            ClientOptions {
                requests_per_sec: 0,
                ..base.clone()
            },
            ClientOptions {
                max_attempts: 0,
                ..base.clone()
            },
            ClientOptions {
                timeout: Duration::ZERO,
                ..base.clone()
            },
            ClientOptions {
                region: Some("ap\nguangzhou".to_owned()),
                ..base.clone()
            },
        ];
        for options in rows {
            let err = TencentClient::new(credentials(None), options.clone()).unwrap_err();
            assert!(
                matches!(err, ClientError::InvalidOption { .. }),
                "{options:?}: {err}"
            );
        }
        let mut bad_id = credentials(None);
        bad_id.secret_id = "AKID, Signature=x".to_owned();
        assert!(TencentClient::new(bad_id, base.clone()).is_err());
        let err = TencentClient::new(credentials(Some("bad\ntoken")), base).unwrap_err();
        assert!(!err.to_string().contains("bad\ntoken"), "{err}");
    }

    #[tokio::test]
    async fn an_action_that_is_not_a_name_is_refused_before_any_request() {
        let fake = Fake::start(&[]).await;
        let client = TencentClient::new(credentials(None), options(fake.endpoint())).unwrap();
        let err = client
            .call::<_, Value>("Describe\r\nX-Evil: 1", &json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_action");
        assert!(fake.seen().is_empty());
    }

    #[test]
    fn error_codes_are_metric_labels() {
        let rows = [
            (ApiError::Status { status: 503 }, "http_503"),
            (
                classify(
                    "AuthFailure.SecretIdNotFound".into(),
                    String::new(),
                    String::new(),
                ),
                "AuthFailure.SecretIdNotFound",
            ),
            (
                classify("RequestLimitExceeded".into(), String::new(), String::new()),
                "RequestLimitExceeded",
            ),
            (
                classify("InvalidParameterValue".into(), String::new(), String::new()),
                "InvalidParameterValue",
            ),
        ];
        for (err, code) in rows {
            assert_eq!(err.code(), code);
        }
    }
}
