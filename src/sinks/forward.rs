//! The forward sink: POSTs each record as JSON to an HTTP URL. Any 2xx is
//! delivered; connection errors, timeouts, 408, 429 and 5xx are retried
//! (honouring `Retry-After`); every other status is a permanent failure.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::webhook::WebhookSigner;
use super::{BoxFuture, DeliveryError, Sink};
use crate::record::StoredRecord;

/// Header carrying the event id on every forwarded request.
pub const EVENT_ID_HEADER: &str = "x-recordhook-event-id";

/// Longest part of an error response kept in the dead letter.
const ERROR_BODY_LIMIT: usize = 200;

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
    /// A forward sink sharing `client`; `headers` are sent on every request,
    /// and an attempt is abandoned (and retried) after `timeout`.
    pub fn new(
        client: reqwest::Client,
        url: reqwest::Url,
        headers: HeaderMap,
        signer: Option<WebhookSigner>,
        timeout: Duration,
        concurrency: usize,
    ) -> Self {
        Self {
            client,
            url,
            headers,
            signer,
            timeout,
            concurrency: concurrency.max(1),
        }
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
            DeliveryError::Retriable {
                reason: describe(&err.without_url()),
                retry_after: None,
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.chars().take(ERROR_BODY_LIMIT).collect();
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
            Err(DeliveryError::Permanent { reason })
        }
    }
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
    let mut reason = format!("{kind}: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        reason.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    reason
}

/// Builds the header map for a forward sink, rejecting invalid names or values.
pub fn header_map<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid header name"))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header `{name}` is not valid"))?;
        // Header values may be credentials; keep them out of any debug output.
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

impl Sink for ForwardSink {
    fn deliver<'a>(&'a self, record: &'a StoredRecord) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.post(record))
    }

    fn deliver_batch<'a>(
        &'a self,
        records: &'a [StoredRecord],
    ) -> BoxFuture<'a, Vec<Result<(), DeliveryError>>> {
        Box::pin(
            futures_util::stream::iter(records.iter().map(|record| self.post(record)))
                .buffered(self.concurrency)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn header_values_are_marked_sensitive() {
        let map = header_map([("Authorization", "Bearer secret")].into_iter()).unwrap();
        assert!(map["authorization"].is_sensitive());
        assert!(!format!("{map:?}").contains("secret"));
        assert!(header_map([("bad name", "x")].into_iter()).is_err());
    }
}
