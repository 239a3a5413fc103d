//! The `[log]` and `[telemetry]` sections of the configuration: owned here, beside the code it
//! governs, so `configuration` depends on `telemetry` and never the reverse.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers and `jq`.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `json` or `pretty`.
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter, e.g. `info` or `info,recordhook=debug`.
    /// It governs operational log lines only: the log sink's record lines
    /// are deliveries, printed whatever this says.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".to_owned(),
        }
    }
}

/// The `[telemetry]` section: what recordhook reports besides its logs and
/// `/metrics`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// `[telemetry.otlp]`: traces to an OpenTelemetry collector over
    /// OTLP/HTTP. Absent (the default): no traces are made.
    pub otlp: Option<OtlpSettings>,
}

/// Default [`OtlpSettings::service_name`].
pub const DEFAULT_SERVICE_NAME: &str = "recordhook";
/// Default [`OtlpSettings::timeout_secs`].
pub const DEFAULT_EXPORT_TIMEOUT_SECS: u64 = 10;
/// Default [`OtlpSettings::max_queued_spans`]: the SDK's own default.
pub const DEFAULT_MAX_QUEUED_SPANS: usize = 2048;

/// `[telemetry.otlp]`: where and how traces are exported.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSettings {
    /// The collector's OTLP/HTTP base URL, e.g. `http://collector:4318`;
    /// spans are POSTed (protobuf) to `{endpoint}/v1/traces`. Required.
    pub endpoint: String,
    /// `service.name` of every span. Default `recordhook`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Extra request headers for the collector, e.g.
    /// `{ Authorization = "Bearer ..." }`. Values are secrets: redacted in
    /// debug output and the effective configuration.
    #[serde(default, serialize_with = "crate::redact::map")]
    pub headers: BTreeMap<String, SecretString>,
    /// The share of callbacks traced, 0 to 1. Default 1 (all). Decided from
    /// the trace id, i.e. the event id, so every replica decides alike.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Seconds before one export request is abandoned (its spans dropped).
    /// Default 10.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Finished spans held for export; when the collector is slow or down
    /// and this many wait, new spans are dropped rather than waited for.
    /// Default 2048.
    #[serde(default = "default_max_queued_spans")]
    pub max_queued_spans: usize,
}

fn default_service_name() -> String {
    DEFAULT_SERVICE_NAME.to_owned()
}

fn default_sample_ratio() -> f64 {
    1.0
}

fn default_timeout_secs() -> u64 {
    DEFAULT_EXPORT_TIMEOUT_SECS
}

fn default_max_queued_spans() -> usize {
    DEFAULT_MAX_QUEUED_SPANS
}

/// A `[telemetry.otlp]` setting is out of range: the key and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `telemetry.otlp.{key}`: {reason}")]
pub struct InvalidOtlpSetting {
    /// The key within `[telemetry.otlp]`.
    pub key: &'static str,
    /// Why it was refused (never a header value).
    pub reason: String,
}

impl OtlpSettings {
    /// An exporter to `endpoint` with the defaults.
    pub fn new(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            service_name: default_service_name(),
            headers: BTreeMap::new(),
            sample_ratio: default_sample_ratio(),
            timeout_secs: default_timeout_secs(),
            max_queued_spans: default_max_queued_spans(),
        }
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), InvalidOtlpSetting> {
        let invalid = |key, reason: &str| {
            Err(InvalidOtlpSetting {
                key,
                reason: reason.to_owned(),
            })
        };
        match url::Url::parse(&self.endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => return invalid("endpoint", "must be an http:// or https:// URL"),
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return invalid("sample_ratio", "must be from 0 to 1");
        }
        if !(1..=300).contains(&self.timeout_secs) {
            return invalid("timeout_secs", "must be from 1 to 300");
        }
        if !(1..=1_000_000).contains(&self.max_queued_spans) {
            return invalid("max_queued_spans", "must be from 1 to 1000000");
        }
        for (name, value) in &self.headers {
            if http_header_invalid(name, value.expose_secret()) {
                return Err(InvalidOtlpSetting {
                    key: "headers",
                    reason: format!("header `{name}` has an invalid name or value"),
                });
            }
        }
        Ok(())
    }
}

/// Whether `name: value` cannot be sent as an HTTP header.
fn http_header_invalid(name: &str, value: &str) -> bool {
    reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
        || reqwest::header::HeaderValue::from_str(value).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TelemetrySettings, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_is_given() {
        assert!(parse("").unwrap().otlp.is_none());
        let on = parse("[otlp]\nendpoint = \"http://collector:4318\"\n").unwrap();
        let otlp = on.otlp.unwrap();
        assert_eq!(otlp.service_name, DEFAULT_SERVICE_NAME);
        assert_eq!(otlp.sample_ratio, 1.0);
        assert_eq!(otlp.timeout_secs, DEFAULT_EXPORT_TIMEOUT_SECS);
        assert_eq!(otlp.max_queued_spans, DEFAULT_MAX_QUEUED_SPANS);
        assert!(otlp.validate().is_ok());
        assert!(parse("[otlp]\n").is_err(), "the endpoint is required");
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let err = parse("[otlp]\nendpoint = \"http://c:4318\"\nendpont = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("endpont"), "{err}");
    }

    #[test]
    fn header_values_are_redacted_in_the_effective_configuration() {
        let on = parse(
            "[otlp]\nendpoint = \"http://c:4318\"\nheaders = { Authorization = \"Bearer hush\" }\n",
        )
        .unwrap();
        let shown = toml::to_string(&on).unwrap();
        assert!(shown.contains("Authorization") && shown.contains(crate::redact::REDACTED));
        assert!(!shown.contains("hush"), "{shown}");
        assert!(!format!("{on:?}").contains("hush"));
    }

    #[test]
    fn out_of_range_values_are_refused_by_key() {
        let cases = [
            ("endpoint = \"collector:4318\"", "endpoint"),
            (
                "endpoint = \"http://c\"\nsample_ratio = 1.5",
                "sample_ratio",
            ),
            ("endpoint = \"http://c\"\ntimeout_secs = 0", "timeout_secs"),
            (
                "endpoint = \"http://c\"\nmax_queued_spans = 0",
                "max_queued_spans",
            ),
            (
                "endpoint = \"http://c\"\nheaders = { \"bad name\" = \"x\" }",
                "headers",
            ),
        ];
        for (body, key) in cases {
            let otlp = parse(&format!("[otlp]\n{body}\n")).unwrap().otlp.unwrap();
            assert_eq!(otlp.validate().unwrap_err().key, key, "{body}");
        }
    }

    #[test]
    fn the_readme_example_is_valid() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("```toml\n[telemetry.otlp]\n")
            .expect("the README shows [telemetry.otlp]");
        let block = &readme[start + "```toml\n".len()..];
        let block = &block[..block.find("```").unwrap()];
        let example = parse(&block.replacen("[telemetry.otlp]", "[otlp]", 1)).unwrap();
        let otlp = example.otlp.unwrap();
        assert!(otlp.validate().is_ok());
        assert_eq!(otlp.endpoint, "http://collector:4318");
    }
}
