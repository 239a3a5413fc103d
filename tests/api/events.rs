//! Every CSS event type: each documented sample is accepted, typed without
//! warnings and routed by name; mistyped variants are warned about, never refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use recordhook::protocol::{EVENT_TYPES, EventTypeSpec, event_type_name};
use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{TestApp, eventually, signed, spawn_app_with_config};

/// The samples under `tests/fixtures/events`, with the name of the type each
/// one is (its file name's number: the 345 sample says 344 inside).
pub fn samples() -> Vec<(String, &'static str, Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/events");
    let mut samples: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let number: i64 = file.split('-').next().unwrap().parse().unwrap();
            let name = event_type_name(number).unwrap();
            let body = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            (file, name, body)
        })
        .collect();
    samples.sort_by(|a, b| a.0.cmp(&b.0));
    samples
}

/// Whether the documented sample carries `t` and `sign`.
pub fn is_signed(body: &Value) -> bool {
    body.get("sign").is_some()
}

/// One file sink per documented event type, selecting it by name.
pub fn sink_per_type(out: &Path) -> String {
    EVENT_TYPES
        .iter()
        .map(|&EventTypeSpec { name, .. }| {
            let path = out.join(format!("{name}.jsonl"));
            format!(
                "[[sinks]]\nname = \"{name}\"\ntype = \"file\"\npath = {path:?}\nevent_types = [\"{name}\"]\n"
            )
        })
        .collect()
}

/// The records a file sink has written.
pub fn lines(path: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Waits until every type's file holds `expected[name]` records, then checks
/// each record: its type's name, its view under that name, no warnings.
pub async fn assert_delivered_by_name(out: &TempDir, expected: &[(String, &'static str, Value)]) {
    let count = |name: &str| expected.iter().filter(|(_, n, _)| *n == name).count();
    let all_written = eventually(Duration::from_secs(20), || async {
        EVENT_TYPES.iter().all(|&EventTypeSpec { name, .. }| {
            lines(&out.path().join(format!("{name}.jsonl"))).len() >= count(name)
        })
    })
    .await;
    assert!(all_written, "not every record reached its sink");
    for &EventTypeSpec { number, name, .. } in EVENT_TYPES {
        let written = lines(&out.path().join(format!("{name}.jsonl")));
        assert_eq!(written.len(), count(name), "{name}: {written:?}");
        for record in written {
            assert_eq!(record["event_type"], number, "{name}: {record}");
            let view = if number == 100 { "recording" } else { name };
            let view = match number {
                0 | 1 => "push",
                _ => view,
            };
            assert!(record[view].is_object(), "{name}: no `{view}` in {record}");
            assert!(record.get("warnings").is_none(), "{name}: {record}");
            assert!(record["stream"].is_object(), "{name}: {record}");
        }
    }
}

#[tokio::test]
async fn every_signed_sample_is_accepted_typed_and_delivered_to_the_sink_that_names_its_type() {
    let out = tempfile::tempdir().unwrap();
    let app = spawn_app_with_config(&sink_per_type(out.path())).await;
    let samples: Vec<_> = samples()
        .into_iter()
        .filter(|(_, _, body)| is_signed(body))
        .collect();
    assert!(samples.len() >= 7, "{samples:?}");
    for (file, _, body) in &samples {
        let response = app.post_json(&signed(body.clone())).await;
        assert_eq!(response.status(), 200, "{file}");
    }
    assert_delivered_by_name(&out, &samples).await;
}

#[tokio::test]
async fn an_undocumented_type_is_accepted_counted_and_delivered_to_a_sink_of_every_type() {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("all.jsonl");
    let app = spawn_app_with_config(&format!(
        "[[sinks]]\nname = \"all\"\ntype = \"file\"\npath = {path:?}\nevent_types = [\"*\"]\n"
    ))
    .await;
    let body = serde_json::json!({"event_type": 329, "stream_id": "s", "domain": "d"});
    assert_eq!(app.post_json(&signed(body)).await.status(), 200);
    assert!(
        eventually(Duration::from_secs(20), || async {
            lines(&path).len() == 1
        })
        .await
    );
    let record = &lines(&path)[0];
    assert_eq!(record["event_type"], 329);
    assert_eq!(record["stream"]["app"], "d");
    assert!(
        record["warnings"][0]
            .as_str()
            .unwrap()
            .contains("not a documented CSS event type")
    );
    assert_eq!(
        app.metric(r#"recordhook_events_total{event_type="other",outcome="accepted"}"#)
            .await,
        1.0
    );
    assert_eq!(
        app.metric("recordhook_undocumented_events_total").await,
        1.0
    );
}

/// Each sample with one field given a value of the wrong type.
fn mistyped() -> Vec<(&'static str, &'static str, Value, &'static str)> {
    vec![
        (
            "0-push-end.json",
            "push_duration",
            "3600s".into(),
            "push_duration",
        ),
        ("1-push-start.json", "width", Value::Array(vec![]), "width"),
        (
            "100-record-file.json",
            "file_size",
            "big".into(),
            "file_size",
        ),
        (
            "200-screenshot.json",
            "create_time",
            "soon".into(),
            "create_time",
        ),
        ("315-audio-audit.json", "Score", "high".into(), "Score"),
        (
            "317-image-audit.json",
            "labelResults",
            "none".into(),
            "labelResults",
        ),
        (
            "343-quality-control.json",
            "score",
            Value::Bool(true),
            "score",
        ),
        ("345-assessment-average.json", "frames", 5.into(), "frames"),
    ]
}

#[tokio::test]
async fn mistyped_fields_are_warned_about_never_refused() {
    let app = spawn_app_with_config("").await;
    let samples = samples();
    for (file, field, value, named) in mistyped() {
        let (_, _, body) = samples.iter().find(|(f, _, _)| f == file).unwrap();
        let mut body = body.clone();
        body[field] = value;
        let response = app.post_json(&signed(body)).await;
        assert_eq!(response.status(), 200, "{file} with a mistyped {field}");
        let stored = stored_with(&app, field, file).await;
        assert!(
            stored.iter().any(|w| w.contains(&format!("`{named}`"))),
            "{file}: no warning about {named} in {stored:?}"
        );
    }
}

/// The warnings of the last stored record.
async fn stored_with(app: &TestApp, field: &str, file: &str) -> Vec<String> {
    let records = app.stored().await;
    let last = records
        .last()
        .unwrap_or_else(|| panic!("{file}: nothing stored"));
    assert!(last.event.contains_key(field), "{file}");
    last.warnings.clone()
}

/// A path secret long enough for the configuration, unlike any other text in the test.
const PATH_SECRET: &str = "Zq7-path-secret-under-test-9f4e2b81c6d5";

/// Every type whose documented sample carries no signature.
const UNSIGNED: &str = "[\"relay\", \"image_audit\", \"push_exception\", \"stream_monitor\", \
    \"record_status\", \"subtitles\", \"record_exception\", \"erase\", \"live_summary\", \"highlight\"]";

#[tokio::test]
async fn unsigned_samples_are_accepted_only_on_the_secret_path_and_the_secret_is_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let config = format!(
        "[auth]\npath_secret = \"{PATH_SECRET}\"\nunsigned_event_types = {UNSIGNED}\n{}",
        sink_per_type(out.path())
    );
    let server = crate::binary::start_server(&dir, &config);
    let client = reqwest::Client::new();
    let main = format!("{}/callback", server.address);
    let secret_path = format!("{main}/{PATH_SECRET}");
    let wrong = format!("{main}/{}", &PATH_SECRET[..PATH_SECRET.len() - 1]);
    let post = |url: String, body: Value| {
        let client = client.clone();
        async move {
            let response = client
                .post(url)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let samples = samples();
    for (file, _, body) in &samples {
        if is_signed(body) {
            assert_eq!(
                post(main.clone(), signed(body.clone())).await.0,
                200,
                "{file}"
            );
            continue;
        }
        let (status, answer) = post(main.clone(), body.clone()).await;
        assert_eq!(status, 401, "{file} unsigned on the main path: {answer}");
        let (status, answer) = post(wrong.clone(), body.clone()).await;
        assert_eq!(status, 401, "{file} on a wrong secret path: {answer}");
        assert!(
            !answer.contains(PATH_SECRET) && answer.contains("4017"),
            "{answer}"
        );
        for _ in 0..2 {
            assert_eq!(
                post(secret_path.clone(), body.clone()).await.0,
                200,
                "{file}"
            );
        }
    }
    // Recordings are never accepted unsigned; a wrong signature is refused
    // even on the secret path; signed callbacks work there too.
    let (_, _, record) = samples.iter().find(|(_, n, _)| *n == "record").unwrap();
    let mut unsigned_record = record.clone();
    unsigned_record
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k != "t" && k != "sign");
    assert_eq!(post(secret_path.clone(), unsigned_record).await.0, 401);
    let (_, _, relay) = samples.iter().find(|(_, n, _)| *n == "relay").unwrap();
    let mut forged = signed(relay.clone());
    forged["sign"] = "0".repeat(32).into();
    assert_eq!(post(secret_path.clone(), forged).await.0, 401);
    assert_eq!(
        post(secret_path.clone(), signed(record.clone())).await.0,
        200
    );

    assert_delivered_by_name(&out, &samples).await;
    // Each unsigned sample was sent twice: the second is a duplicate by content.
    let metrics = reqwest::get(format!("{}/metrics", server.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"recordhook_events_total{event_type="relay",outcome="duplicate"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"recordhook_callbacks_total{outcome="path_secret_mismatch"} 11"#),
        "{metrics}"
    );
    assert!(!metrics.contains(PATH_SECRET));

    let (status, lines) = server.terminate();
    assert!(status.success());
    assert!(
        lines
            .iter()
            .any(|line| line.contains("/callback/[redacted]")),
        "requests on the secret path are logged with the secret replaced"
    );
    for line in &lines {
        assert!(
            !line.contains(PATH_SECRET),
            "the path secret leaked: {line}"
        );
        assert!(
            !line.contains(&PATH_SECRET[..PATH_SECRET.len() - 1]),
            "a guess at it leaked: {line}"
        );
    }
    let accepted_unsigned = lines
        .iter()
        .filter(|line| {
            line.contains("\"outcome\":\"accepted\"") && line.contains("\"unsigned\":true")
        })
        .count();
    assert_eq!(accepted_unsigned, 11, "{lines:#?}");
}
