//! An OTLP/HTTP trace receiver a test runs on 127.0.0.1:0, decoding what it
//! gets with the OpenTelemetry project's protobuf types; and the check that
//! a `traceparent` a sink sent names its event's trace and the delivery
//! attempt span that sent it. Shared by `tests/api` and `tests/brokers`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::helpers::eventually;

/// Export every 100 ms instead of the SDK's 5 s, so spans arrive promptly.
pub const FAST_EXPORT: &[(&str, &str)] = &[("OTEL_BSP_SCHEDULE_DELAY", "100")];

/// A span as the collector received it, with the resource it came under.
#[derive(Debug, Clone)]
pub struct Received {
    pub span: Span,
    pub service_name: Option<String>,
}

impl Received {
    pub fn attribute(&self, key: &str) -> Option<AnyValue> {
        attribute(&self.span.attributes, key)
    }
}

pub fn attribute(attributes: &[KeyValue], key: &str) -> Option<AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|value| value.value)
}

#[derive(Default)]
struct Collected {
    spans: Vec<Received>,
    /// The `x-collector-token` header of each export request.
    tokens: Vec<String>,
}

/// An OTLP/HTTP receiver on 127.0.0.1:0.
#[derive(Clone)]
pub struct Collector {
    pub endpoint: String,
    collected: Arc<Mutex<Collected>>,
}

impl Collector {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let collected = Arc::new(Mutex::new(Collected::default()));
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state(collected.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            endpoint,
            collected,
        }
    }

    pub fn spans(&self) -> Vec<Received> {
        self.collected.lock().unwrap().spans.clone()
    }

    pub fn tokens(&self) -> Vec<String> {
        self.collected.lock().unwrap().tokens.clone()
    }
}

async fn export(
    State(collected): State<Arc<Mutex<Collected>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let mut collected = collected.lock().unwrap();
    if let Some(token) = headers.get("x-collector-token") {
        collected.tokens.push(token.to_str().unwrap().to_owned());
    }
    for resource_spans in request.resource_spans {
        let service_name = resource_spans
            .resource
            .as_ref()
            .and_then(|resource| attribute(&resource.attributes, "service.name"))
            .and_then(|value| match value {
                AnyValue::StringValue(name) => Some(name),
                _ => None,
            });
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                collected.spans.push(Received {
                    span,
                    service_name: service_name.clone(),
                });
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

impl Collector {
    /// The `delivery.attempt` span of `sink` in `event_id`'s trace, once it
    /// has arrived (within 30 s).
    pub async fn attempt_span(&self, event_id: &str, sink: &str) -> Received {
        let trace_id = hex::decode(event_id).unwrap();
        let find = || {
            self.spans().into_iter().find(|s| {
                s.span.trace_id == trace_id
                    && s.span.name == "delivery.attempt"
                    && s.attribute("sink") == Some(AnyValue::StringValue(sink.to_owned()))
            })
        };
        assert!(
            eventually(Duration::from_secs(30), || async { find().is_some() }).await,
            "no delivery.attempt span of `{sink}` in trace {event_id}: {:#?}",
            self.spans()
        );
        find().unwrap()
    }

    /// Asserts that `traceparent`, sent by `sink` with `event_id`'s record,
    /// is in the event's trace (its id is the event id) with the attempt
    /// span this collector received as its parent, sampled.
    pub async fn assert_names_its_attempt(&self, traceparent: &str, event_id: &str, sink: &str) {
        let attempt = self.attempt_span(event_id, sink).await;
        assert_eq!(
            traceparent,
            format!("00-{event_id}-{}-01", hex::encode(&attempt.span.span_id)),
            "the traceparent sink `{sink}` sent"
        );
    }
}
