//! Traces over OTLP/HTTP, against a collector the test runs itself on
//! 127.0.0.1:0 that decodes what it gets with the OpenTelemetry project's
//! protobuf types: the binary (a process of its own, since traces are
//! process-wide) with `[telemetry.otlp]` pointing at it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;

use crate::binary::{Server, start_server_with_env};
use crate::collector::{Collector, FAST_EXPORT, Received};
use crate::helpers::*;
use crate::target::Target;

const COLLECTOR_TOKEN: &str = "collector-token-not-for-logs";

fn config(endpoint: &str, target: &Target, dir: &tempfile::TempDir) -> String {
    format!(
        "[telemetry.otlp]\nendpoint = \"{endpoint}\"\nservice_name = \"recordhook-under-test\"\n\
         headers = {{ x-collector-token = \"{COLLECTOR_TOKEN}\" }}\ntimeout_secs = 2\n\
         [[sinks]]\nname = \"web\"\ntype = \"forward\"\nurl = \"{}\"\n\
         [[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = {:?}\n",
        target.url,
        path_in(dir, "archive.jsonl")
    )
}

/// A forward target, and the binary with [`config`] exporting to `endpoint`,
/// with `otlp_extra` lines in `[telemetry.otlp]`.
async fn start_traced(endpoint: &str, otlp_extra: &str) -> (Target, tempfile::TempDir, Server) {
    let target = Target::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        config(endpoint, &target, &dir).replacen("[[sinks]]", &format!("{otlp_extra}[[sinks]]"), 1);
    let server = start_server_with_env(&dir, &config, FAST_EXPORT);
    (target, dir, server)
}

/// Posts a signed recording callback with `file_id`; it must be accepted.
async fn post_callback(server: &Server, file_id: &str) {
    assert_eq!(server.post_callback(&recording(file_id)).await, 200);
}

#[tokio::test]
async fn a_callback_is_one_trace_from_request_through_commit_to_each_delivery() {
    let collector = Collector::start().await;
    let (target, _dir, server) = start_traced(&collector.endpoint, "").await;
    post_callback(&server, "traced-1").await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            !target.received().is_empty()
        })
        .await,
        "the forward target got nothing"
    );
    let delivered = target.received()[0].clone();
    let event_id = delivered.header("x-recordhook-event-id").to_owned();
    let event_type = delivered.json()["event_type"].as_i64().unwrap();
    let trace_id = hex::decode(&event_id).unwrap();
    let root_span_id = trace_id[..8].to_vec();
    // The traceparent the target got names the attempt that posted it.
    collector
        .assert_names_its_attempt(delivered.header("traceparent"), &event_id, "web")
        .await;

    // The request, its commit, and one attempt per sink.
    let in_trace = || {
        collector
            .spans()
            .into_iter()
            .filter(|s| s.span.trace_id == trace_id)
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(30), || async { in_trace().len() >= 4 }).await,
        "spans of the trace that arrived: {:#?}",
        in_trace()
    );
    let spans = in_trace();
    let named = |name: &str| -> Vec<Received> {
        spans
            .iter()
            .filter(|s| s.span.name == name)
            .cloned()
            .collect()
    };
    let request = named("request");
    let commit = named("spool.commit");
    let attempts = named("delivery.attempt");
    assert_eq!(
        (request.len(), commit.len(), attempts.len()),
        (1, 1, 2),
        "{spans:#?}"
    );
    let request = &request[0];
    let commit = &commit[0];

    // Every replica can rebuild the root from the event id: the request and
    // each delivery attempt are its children.
    assert_eq!(request.span.parent_span_id, root_span_id);
    assert_eq!(commit.span.parent_span_id, request.span.span_id);
    let mut sinks = Vec::new();
    for attempt in &attempts {
        assert_eq!(attempt.span.parent_span_id, root_span_id);
        let Some(AnyValue::StringValue(sink)) = attempt.attribute("sink") else {
            panic!("an attempt without its sink: {attempt:#?}");
        };
        sinks.push(sink);
        assert_eq!(
            attempt.attribute("outcome"),
            Some(AnyValue::StringValue("delivered".to_owned()))
        );
        assert_eq!(attempt.attribute("attempt"), Some(AnyValue::IntValue(1)));
    }
    sinks.sort();
    assert_eq!(sinks, ["archive", "web"]);
    for span in [request, &attempts[0], &attempts[1]] {
        assert_eq!(
            span.attribute("event_id"),
            Some(AnyValue::StringValue(event_id.clone()))
        );
        assert_eq!(
            span.attribute("event_type"),
            Some(AnyValue::IntValue(event_type))
        );
    }
    for span in &spans {
        assert_eq!(span.service_name.as_deref(), Some("recordhook-under-test"));
    }
    assert!(collector.tokens().iter().all(|t| t == COLLECTOR_TOKEN));
    assert!(!collector.tokens().is_empty());
    drop(server);
}

#[tokio::test]
async fn other_requests_make_no_trace() {
    let collector = Collector::start().await;
    let (_target, _dir, server) = start_traced(&collector.endpoint, "").await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let probe = client
            .get(format!("{}/healthz", server.address))
            .send()
            .await
            .unwrap();
        assert_eq!(probe.status(), 200);
    }
    // The positive signal: a callback's spans arrive, and nothing else did.
    post_callback(&server, "traced-after-probes").await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            collector
                .spans()
                .iter()
                .filter(|s| s.span.name == "delivery.attempt")
                .count()
                >= 2
        })
        .await
    );
    let traces: std::collections::BTreeSet<Vec<u8>> = collector
        .spans()
        .into_iter()
        .map(|s| s.span.trace_id)
        .collect();
    assert_eq!(traces.len(), 1, "{:#?}", collector.spans());
}

/// Sends `count` callbacks to `server` and asserts each is answered 200 and
/// reaches the forward target, with a `traceparent` naming its event id.
async fn callbacks_flow(server: &Server, target: &Target, count: usize) {
    for n in 0..count {
        post_callback(server, &format!("dead-collector-{n}")).await;
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            target.received().len() >= count
        })
        .await,
        "{} of {count} delivered",
        target.received().len()
    );
    let traceparents: BTreeMap<String, String> = target
        .received()
        .iter()
        .map(|r| {
            (
                r.header("x-recordhook-event-id").to_owned(),
                r.header("traceparent").to_owned(),
            )
        })
        .collect();
    assert_eq!(traceparents.len(), count);
    for (event_id, traceparent) in traceparents {
        assert!(
            traceparent.starts_with(&format!("00-{event_id}-")),
            "{traceparent}"
        );
    }
}

#[tokio::test]
async fn a_collector_on_a_closed_port_neither_fails_nor_holds_up_callbacks() {
    let (_held, closed) = refusing_port();
    let (target, _dir, server) = start_traced(&format!("http://{closed}"), "").await;
    callbacks_flow(&server, &target, 50).await;
}

#[tokio::test]
async fn a_collector_that_never_answers_neither_fails_nor_holds_up_callbacks() {
    // Accepts connections and reads nothing, answers nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            keep.lock().unwrap().push(socket);
        }
    });
    // A queue of 8 spans: most of the 200 this makes are dropped, none waited for.
    let (target, _dir, server) = start_traced(&endpoint, "max_queued_spans = 8\n").await;
    callbacks_flow(&server, &target, 50).await;
    // The exporter did try (and is stuck): the collector was reached.
    assert!(
        eventually(Duration::from_secs(20), || async {
            !held.lock().unwrap().is_empty()
        })
        .await
    );
    // The stuck export does not keep the process from exiting cleanly, and
    // the collector's credentials were never logged.
    let (status, lines) = server.terminate();
    assert!(status.success(), "{status}");
    assert!(lines.iter().all(|line| !line.contains(COLLECTOR_TOKEN)));
}
