//! The forward sink: POSTs each record as JSON to an HTTP URL. Any 2xx is
//! delivered; connection errors, timeouts, 408, 429 and 5xx are retried
//! (honouring `Retry-After`); every other status is a permanent failure.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::checks::{self, InvalidSetting, check_range};
use super::contract::{BoxFuture, DeliveryError, Outcomes, Sink};
use super::webhook::WebhookSigner;
use crate::error_chain::error_chain;
use crate::record::StoredRecord;
use crate::telemetry::traces;

/// Default requests in flight per forward sink.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Most requests in flight per forward sink. A delivery round holds at most
/// a few hundred records, so more would never be used; the bound keeps a typo
/// from meaning millions of connections.
pub const MAX_CONCURRENCY: usize = 1_024;

/// The settings of a `type = "forward"` sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSinkSettings {
    /// The `http` or `https` URL to POST records to. Required.
    #[serde(default)]
    pub url: String,
    /// Seconds before an attempt is abandoned (and retried); 1 to [`checks::MAX_TIMEOUT_SECS`].
    #[serde(default = "checks::default_timeout_secs")]
    pub timeout_secs: u64,
    /// Extra request headers, e.g. `{ Authorization = "Bearer ..." }`. Values
    /// are secrets: redacted in debug output and the effective configuration.
    #[serde(default, serialize_with = "crate::redact::map")]
    pub headers: BTreeMap<String, SecretString>,
    /// `whsec_<base64>` to sign requests with Standard Webhooks headers;
    /// absent or empty sends them unsigned. Redacted like the headers.
    #[serde(default, serialize_with = "crate::redact::option")]
    pub signing_secret: Option<SecretString>,
    /// Requests in flight at once; 1 to [`MAX_CONCURRENCY`].
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}

impl ForwardSinkSettings {
    /// A forward sink to `url` with the default settings.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            timeout_secs: checks::DEFAULT_TIMEOUT_SECS,
            headers: BTreeMap::new(),
            signing_secret: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.parsed_url()?;
        checks::check_timeout(self.timeout_secs)?;
        check_range("concurrency", self.concurrency, 1, MAX_CONCURRENCY, "")?;
        self.signer()?;
        self.header_map()?;
        Ok(())
    }

    /// The extra headers as a header map, their values marked sensitive.
    fn header_map(&self) -> Result<HeaderMap, InvalidSetting> {
        header_map(
            self.headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.expose_secret())),
        )
    }

    /// The URL, which must be `http` or `https` with a host.
    fn parsed_url(&self) -> Result<reqwest::Url, InvalidSetting> {
        let url = &self.url;
        if url.is_empty() {
            return Err(InvalidSetting::new("url", "a forward sink needs a url"));
        }
        let parsed = reqwest::Url::parse(url).map_err(|err| {
            InvalidSetting::new("url", format!("`{url}` is not a valid URL: {err}"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(InvalidSetting::new(
                "url",
                "must be an http:// or https:// URL with a host",
            ));
        }
        Ok(parsed)
    }

    /// The request signer, if a secret is set.
    fn signer(&self) -> Result<Option<WebhookSigner>, InvalidSetting> {
        match self
            .signing_secret
            .as_ref()
            .map(ExposeSecret::expose_secret)
        {
            None | Some("") => Ok(None),
            Some(secret) => WebhookSigner::new(secret).map(Some).ok_or_else(|| {
                InvalidSetting::new("signing_secret", "must be `whsec_` followed by base64")
            }),
        }
    }
}

/// Header carrying the event id on every forwarded request.
pub const EVENT_ID_HEADER: &str = "x-recordhook-event-id";

/// Longest part of an error response kept in the dead letter, in characters.
const ERROR_BODY_LIMIT: usize = 200;

/// Most bytes read of an error response's body. Enough for the excerpt even
/// in multi-byte text; the rest is never read, so a hostile or broken target
/// sending gigabytes (or a never-ending stream) costs at most this.
const ERROR_BODY_READ_LIMIT: usize = 4 * 1024;

/// POSTs records to one URL.
pub struct ForwardSink {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    signer: Option<WebhookSigner>,
    timeout: Duration,
    concurrency: usize,
}

impl ForwardSink {
    /// The forward sink `settings` describe, sending with `client`.
    pub fn from_settings(
        client: reqwest::Client,
        settings: &ForwardSinkSettings,
    ) -> Result<Self, InvalidSetting> {
        Ok(Self {
            client,
            url: settings.parsed_url()?,
            headers: settings.header_map()?,
            signer: settings.signer()?,
            timeout: Duration::from_secs(settings.timeout_secs),
            // Validation keeps it at least 1; `buffered` needs that to progress.
            concurrency: settings.concurrency.max(1),
        })
    }

    async fn post(&self, record: &StoredRecord) -> Result<(), DeliveryError> {
        // The stored record is already the JSON to send.
        let body = record.json.clone().into_bytes();
        let mut request = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(EVENT_ID_HEADER, record.id.as_str());
        if let Some(traceparent) = traces::traceparent(&record.id) {
            request = request.header(traces::TRACEPARENT_HEADER, traceparent);
        }
        if let Some(signer) = &self.signer {
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
            request = request
                .header("webhook-id", record.id.as_str())
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    signer.sign(&record.id, timestamp, &body),
                );
        }
        let response = request.body(body).send().await.map_err(|err| {
            // The URL may carry credentials in its query; keep it out of errors.
            DeliveryError::retriable(describe(&err.without_url()))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let head = read_at_most(response, ERROR_BODY_READ_LIMIT).await;
        let excerpt: String = String::from_utf8_lossy(&head)
            .chars()
            .take(ERROR_BODY_LIMIT)
            .collect();
        let reason = format!("HTTP {status}: {excerpt}")
            .trim_end()
            .trim_end_matches(':')
            .to_owned();
        if is_retriable(status) {
            Err(DeliveryError::Retriable {
                reason,
                retry_after,
            })
        } else {
            Err(DeliveryError::permanent(reason))
        }
    }
}

/// The first `limit` bytes of `response`'s body (fewer if it ends sooner or
/// fails: the excerpt is only for the dead letter). The response is dropped
/// afterwards, closing the connection instead of reading the rest.
async fn read_at_most(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut head = Vec::new();
    while head.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - head.len();
                head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    head
}

/// The statuses worth retrying: the target is busy, overloaded or broken, not refusing this record.
pub fn is_retriable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// `Retry-After` as seconds or an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    // reqwest's Display hides the cause; the source chain names it.
    format!("{kind}: {}", error_chain(err))
}

/// Builds the header map for a forward sink, rejecting invalid names or
/// values as the setting `headers`. The errors never show a value (it may be
/// a credential).
pub fn header_map<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<HeaderMap, InvalidSetting> {
    let invalid = |reason: String| InvalidSetting::new("headers", reason);
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("`{name}` is not a valid header name")))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| invalid(format!("the value of header `{name}` is not valid")))?;
        // Header values may be credentials; keep them out of any debug output.
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

impl Sink for ForwardSink {
    fn deliver_batch<'a>(&'a self, records: &'a [StoredRecord]) -> BoxFuture<'a, Outcomes> {
        Box::pin(Outcomes::buffered(records, self.concurrency, |record| {
            self.post(record)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::contract::deliver_alone;

    #[test]
    fn retriable_statuses_are_408_429_and_5xx() {
        for code in [408, 429, 500, 502, 503, 504, 599] {
            assert!(is_retriable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 410, 413, 422, 301, 304] {
            assert!(!is_retriable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let seconds = HeaderValue::from_static("120");
        assert_eq!(
            parse_retry_after(&seconds, now),
            Some(Duration::from_secs(120))
        );
        let date = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:30 GMT");
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        let past = HeaderValue::from_static("Wed, 21 Oct 2015 07:00:00 GMT");
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("soon"), now),
            None
        );
    }

    /// A target answering every request with a 500 whose chunked body never ends.
    async fn endless_error_target() -> reqwest::Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = vec![0u8; 64 * 1024];
                    let _ = socket.read(&mut request).await;
                    let head = "HTTP/1.1 500 Internal Server Error\r\n\
                                Transfer-Encoding: chunked\r\n\r\n";
                    if socket.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                    // Until the client hangs up: far more than any limit.
                    while socket.write_all(chunk.as_bytes()).await.is_ok() {}
                });
            }
        });
        reqwest::Url::parse(&format!("http://{address}/hook")).unwrap()
    }

    #[tokio::test]
    async fn an_endless_error_body_is_cut_short_and_the_failure_is_retriable() {
        let url = endless_error_target().await;
        let mut settings = ForwardSinkSettings::new(url.as_str());
        // Reading the whole body would run into this timeout.
        settings.timeout_secs = 60;
        settings.concurrency = 1;
        let sink = ForwardSink::from_settings(reqwest::Client::new(), &settings).unwrap();
        let record = crate::record::StoredRecord {
            id: "evt".to_owned(),
            event_type: 100,
            json: "{}".to_owned(),
        };
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(10), deliver_alone(&sink, &record))
            .await
            .expect("the error body must not be read to its (missing) end");
        let Err(DeliveryError::Retriable { reason, .. }) = result else {
            panic!("not a retriable failure: {result:?}");
        };
        assert!(reason.starts_with("HTTP 500"), "{reason}");
        assert!(reason.len() <= ERROR_BODY_LIMIT + 40, "{}", reason.len());
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn header_values_are_marked_sensitive() {
        let map = header_map([("Authorization", "Bearer secret")].into_iter()).unwrap();
        assert!(map["authorization"].is_sensitive());
        assert!(!format!("{map:?}").contains("secret"));
        assert!(header_map([("bad name", "x")].into_iter()).is_err());
    }
}
