//! Traces over OTLP/HTTP: our `tracing` spans, bridged by
//! tracing-opentelemetry, exported in batches by the OpenTelemetry SDK from
//! its own thread, with a bounded queue, so a slow or dead collector costs a
//! callback nothing but dropped spans.
//!
//! One trace per callback, whose trace id *is* the event id (both are 128
//! bits). Its root is a span context derived from the event id alone (never
//! exported), so whichever replica delivers the record, whenever, rebuilds
//! the same context without anything stored beside the record: the
//! `request` span (and its `spool.commit` child) and every
//! `delivery.attempt` span are its children; the `traceparent` sent to
//! targets and in broker messages names the attempt that sent it as its
//! parent. Sampling is decided from the trace id the same way, so replicas
//! agree on it too.
//!
//! When `[telemetry.otlp]` is absent none of this runs: [`enabled`] is
//! false, no span is made for traces, and no `traceparent` is sent.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use secrecy::ExposeSecret;
use tracing::Span;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::Registry;

use super::settings::OtlpSettings;

/// The bridge from our spans to the exporter, as installed under the log
/// layers.
pub type TraceLayer = OpenTelemetryLayer<Registry, SdkTracer>;

/// The sample ratio of the running process; set once, when traces are on.
static SAMPLE_RATIO: OnceLock<f64> = OnceLock::new();

/// The longest a dropped [`TraceGuard`] waits for queued spans to be sent.
pub const EXPORT_FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// The exporter could not be set up from `[telemetry.otlp]`.
#[derive(Debug, thiserror::Error)]
#[error("could not set up the OTLP exporter of `telemetry.otlp`: {0}")]
pub struct TraceSetupError(String);

/// Keeps the exporter's provider; dropping it sends the spans still queued
/// (waiting [`EXPORT_FLUSH_LIMIT`] at most).
#[must_use = "dropping the guard stops the span exporter"]
pub struct TraceGuard {
    provider: SdkTracerProvider,
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        // A dead collector must not hold up the exit.
        let _ = self.provider.shutdown_with_timeout(EXPORT_FLUSH_LIMIT);
    }
}

/// Builds the exporter and the layer bridging our spans to it, and turns
/// traces on for the process ([`enabled`]).
pub fn layer(settings: &OtlpSettings) -> Result<(TraceLayer, TraceGuard), TraceSetupError> {
    let headers = settings
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.expose_secret().to_owned()))
        .collect();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(&settings.endpoint))
        .with_timeout(Duration::from_secs(settings.timeout_secs))
        .with_headers(headers)
        .build()
        // The builder's errors name the URL at most, never a header value.
        .map_err(|err| TraceSetupError(err.to_string()))?;
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(settings.max_queued_spans)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batches)
        // Spans without a parent (other requests, the delivery batches) are
        // not part of a callback's trace: dropped. A callback's spans follow
        // the sampled flag of its root ([`root_context`]).
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("recordhook");
    let _ = SAMPLE_RATIO.set(settings.sample_ratio);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Spans start when they first get a child or when they close, not
        // when entered: the request span is entered before its body (and so
        // its trace) is known.
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false);
    Ok((layer, TraceGuard { provider }))
}

/// `{endpoint}/v1/traces`, the OTLP/HTTP path for spans.
fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// Whether `[telemetry.otlp]` is on in this process.
pub fn enabled() -> bool {
    SAMPLE_RATIO.get().is_some()
}

/// The never-exported root of `event_id`'s trace: trace id the event id,
/// span id its first 8 bytes, sampled as the ratio says of the trace id.
/// `None` for an id that is not 32 hex digits.
pub fn root_context(event_id: &str, sample_ratio: f64) -> Option<SpanContext> {
    let trace_id = TraceId::from_hex(event_id).ok()?;
    let bytes = trace_id.to_bytes();
    let mut span_bytes = [0; 8];
    span_bytes.copy_from_slice(&bytes[..8]);
    // An all-zero span id is invalid; an event id starting with 16 zero
    // digits is improbable, but gets a valid one too.
    let span_id = match SpanId::from_bytes(span_bytes) {
        SpanId::INVALID => SpanId::from_bytes([0, 0, 0, 0, 0, 0, 0, 1]),
        span_id => span_id,
    };
    let flags = if sampled(&bytes, sample_ratio) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Some(SpanContext::new(
        trace_id,
        span_id,
        flags,
        true,
        TraceState::NONE,
    ))
}

/// The OpenTelemetry SDK's `TraceIdRatioBased` rule: the low 63 bits of the
/// trace id's last 8 bytes under `ratio` of their range.
fn sampled(trace_id: &[u8; 16], ratio: f64) -> bool {
    let mut low = [0; 8];
    low.copy_from_slice(&trace_id[8..]);
    let bound = (ratio.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64;
    (u64::from_be_bytes(low) >> 1) < bound || ratio >= 1.0
}

/// The W3C Trace Context header (and the Redis stream field) carrying
/// [`traceparent`] with each delivery.
pub const TRACEPARENT_HEADER: &str = "traceparent";

tokio::task_local! {
    /// The `traceparent` of each record's delivery attempt span, by event
    /// id, for the sink delivering the batch (set by [`within_attempts`]).
    static ATTEMPTS: HashMap<String, String>;
}

/// The W3C `traceparent` to send with a delivery of `event_id`: its trace,
/// and as parent the attempt's span when the delivery runs
/// [`within_attempts`] (as every worker's does), else the trace's root;
/// `None` when traces are off. Every sink that can carry headers sends it.
pub fn traceparent(event_id: &str) -> Option<String> {
    let root = root_context(event_id, *SAMPLE_RATIO.get()?)?;
    let attempt = ATTEMPTS
        .try_with(|attempts| attempts.get(event_id).cloned())
        .ok()
        .flatten();
    Some(attempt.unwrap_or_else(|| format_traceparent(&root)))
}

/// `context` as a W3C `traceparent` value.
fn format_traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// Runs `delivery` (a sink delivering a batch) with each record's
/// [`traceparent`] naming its attempt span: `attempts` pairs an event id
/// with that span. Spans that are not in a trace (disabled) are left out.
pub async fn within_attempts<F: Future>(attempts: &[(&str, &Span)], delivery: F) -> F::Output {
    let traceparents = attempts
        .iter()
        .filter_map(|(event_id, span)| {
            let context = span.context();
            let span_context = context.span().span_context().clone();
            span_context
                .is_valid()
                .then(|| ((*event_id).to_owned(), format_traceparent(&span_context)))
        })
        .collect();
    ATTEMPTS.scope(traceparents, delivery).await
}

/// Makes `span` a child of `event_id`'s trace root and gives it the event's
/// id and type. Call before the span has a child; a no-op when traces are
/// off.
pub fn join_callback_trace(span: &Span, event_id: &str, event_type: i64) {
    let Some(ratio) = SAMPLE_RATIO.get() else {
        return;
    };
    let Some(root) = root_context(event_id, *ratio) else {
        return;
    };
    // Fails only when the span already started (it had a child), or is
    // disabled by the log filter: it is then left out of the trace.
    let _ = span.set_parent(Context::new().with_remote_span_context(root));
    span.set_attribute("event_id", event_id.to_owned());
    span.set_attribute("event_type", event_type);
}

/// A span for one attempt to deliver `event_id` to `sink` (the `attempt`th,
/// from 1), in the callback's trace whichever process makes it; a disabled
/// span when traces are off. End it (drop it) when the attempt's outcome is
/// known.
pub fn delivery_attempt_span(sink: &str, event_id: &str, event_type: i64, attempt: u32) -> Span {
    span_if_enabled(|| {
        // No parent in this process: the trace's root is rebuilt instead.
        // i64: the bridge exports unsigned integers as strings.
        let attempt = i64::from(attempt);
        let span = tracing::info_span!(parent: None, "delivery.attempt", sink, attempt);
        join_callback_trace(&span, event_id, event_type);
        span
    })
}

/// `make()` when traces are on, else a disabled span that costs nothing.
pub fn span_if_enabled(make: impl FnOnce() -> Span) -> Span {
    if enabled() { make() } else { Span::none() }
}

/// Sets one attribute on `span` (when traces are on and it is exported).
pub fn set_attribute(span: &Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    if enabled() {
        span.set_attribute(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_derived_from_the_event_id_alone() {
        let id = "0af7651916cd43dd8448eb211c80319c";
        let root = root_context(id, 1.0).unwrap();
        assert_eq!(root.trace_id().to_string(), id);
        assert_eq!(root.span_id().to_string(), "0af7651916cd43dd");
        assert!(root.is_remote() && root.is_sampled());
        assert_eq!(root_context(id, 1.0), Some(root));
        assert!(root_context("not-hex", 1.0).is_none());
    }

    #[test]
    fn sampling_follows_the_ratio_and_the_trace_id() {
        assert!(
            !root_context("0af7651916cd43dd8448eb211c80319c", 0.0)
                .unwrap()
                .is_sampled()
        );
        // Low 63 bits of 0x0000..01 >> 1 = 0: under any positive ratio.
        assert!(
            root_context("ffffffffffffffff0000000000000001", 0.01)
                .unwrap()
                .is_sampled()
        );
        assert!(
            !root_context("ffffffffffffffffffffffffffffffff", 0.5)
                .unwrap()
                .is_sampled()
        );
        let sampled = (0..1000u32)
            .filter(|n| {
                let id = format!(
                    "{:032x}",
                    u128::from(*n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
                );
                root_context(&id, 0.25).unwrap().is_sampled()
            })
            .count();
        assert!((150..350).contains(&sampled), "{sampled}");
    }

    #[test]
    fn the_traces_url_is_the_otlp_path_under_the_endpoint() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
    }
}
