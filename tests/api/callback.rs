//! `POST /callback`: what is accepted, what is rejected and why, and what is stored.

use serde_json::{Value, json};

use crate::helpers::*;

fn without_sign(body: &Value) -> Value {
    let mut body = body.clone();
    body.as_object_mut().unwrap().shift_remove("sign");
    body
}

#[tokio::test]
async fn both_published_samples_are_accepted_and_stored_whole() {
    let app = spawn_app().await;
    for name in ["record-v2018.json", "record-v2022.json"] {
        let body = signed(fixture_json(name));
        let response = app.post_json(&body).await;
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{name}"
        );
        // The exact bytes CSS's documentation shows for a success.
        assert_eq!(response.text().await.unwrap(), r#"{"code":0}"#, "{name}");
    }
    let stored = app.stored().await;
    assert_eq!(stored.len(), 2);
    for (record, name) in stored
        .iter()
        .zip(["record-v2018.json", "record-v2022.json"])
    {
        let expected = without_sign(&signed(fixture_json(name)));
        // `t` differs between the two signings; everything else is exactly as sent.
        let mut event = Value::Object(record.event.clone());
        event["t"] = expected["t"].clone();
        assert_eq!(event, expected, "{name}");
        assert!(!record.event.contains_key("sign"));
        assert_eq!(record.event_type, 100);
        assert!(record.warnings.is_empty(), "{name}: {:?}", record.warnings);
        let recording = record.recording().unwrap();
        assert_eq!(recording.stream_id.as_deref(), Some("stream_test"));
        assert_eq!(recording.file_size, Some(277_941_079));
    }
    assert_eq!(
        stored[1].recording().unwrap().callback_ext,
        Some(json!({"video_codec": "h264", "resolution": "640x480"}))
    );
}

#[tokio::test]
async fn the_invalid_published_sample_gets_a_400() {
    let app = spawn_app().await;
    let response = app.post_raw(fixture("record-v2018-as-published.txt")).await;
    assert_error(response, 400, 4001, "not valid JSON", "published sample").await;
    assert!(app.stored().await.is_empty());
}

#[tokio::test]
async fn every_rejection_has_its_own_status_code_and_reason() {
    let app = spawn_app().await;
    let t = now() + 600;
    let good = sign_for(KEY, t);
    let expired_t = now() - 120;
    let future_t = now() + 3_600;
    let cases: Vec<(&str, String, u16, u64, &str)> = vec![
        (
            "not JSON",
            "{\"event_type\":".into(),
            400,
            4001,
            "not valid JSON",
        ),
        (
            "invalid UTF-8",
            "\u{0}".to_owned() + "\"\u{ff}",
            400,
            4001,
            "not valid JSON",
        ),
        (
            "a JSON array",
            "[1,2]".into(),
            400,
            4002,
            "not a JSON object",
        ),
        ("empty body", "".into(), 400, 4001, "not valid JSON"),
        (
            "t missing",
            json!({"event_type": 100, "sign": good}).to_string(),
            401,
            4011,
            "t is missing",
        ),
        (
            "t not a number",
            json!({"event_type": 100, "t": "soon", "sign": good}).to_string(),
            401,
            4012,
            "t is not an integer",
        ),
        (
            "t a float",
            json!({"event_type": 100, "t": 1.5, "sign": good}).to_string(),
            401,
            4012,
            "t is not an integer",
        ),
        (
            "sign missing",
            json!({"event_type": 100, "t": t}).to_string(),
            401,
            4013,
            "sign is missing",
        ),
        (
            "sign wrong",
            json!({"event_type": 100, "t": t, "sign": "0".repeat(32)}).to_string(),
            401,
            4014,
            "sign does not match",
        ),
        (
            "signed with another key",
            json!({"event_type": 100, "t": t, "sign": sign_for("other", t)}).to_string(),
            401,
            4014,
            "sign does not match",
        ),
        (
            "sign for another t",
            json!({"event_type": 100, "t": t, "sign": sign_for(KEY, t + 1)}).to_string(),
            401,
            4014,
            "sign does not match",
        ),
        (
            "expired",
            json!({"event_type": 100, "t": expired_t, "sign": sign_for(KEY, expired_t)})
                .to_string(),
            401,
            4015,
            "expired",
        ),
        (
            "too far ahead",
            json!({"event_type": 100, "t": future_t, "sign": sign_for(KEY, future_t)}).to_string(),
            401,
            4016,
            "t too far in the future",
        ),
        (
            "event_type missing",
            json!({"t": t, "sign": good}).to_string(),
            400,
            4003,
            "event_type is missing",
        ),
        (
            "event_type not an integer",
            json!({"event_type": "abc", "t": t, "sign": good}).to_string(),
            400,
            4004,
            "event_type is not an integer",
        ),
    ];
    for (case, body, status, code, message) in cases {
        let response = app.post_raw(body).await;
        assert_error(response, status, code, message, case).await;
    }
    assert!(
        app.stored().await.is_empty(),
        "a rejected callback was stored"
    );
}

#[tokio::test]
async fn a_duplicate_re_signed_with_a_later_t_is_acknowledged_but_not_stored_twice() {
    let app = spawn_app().await;
    let mut body = fixture_json("record-v2018.json");
    signed_at(&mut body, now() + 100);
    assert_eq!(app.post_json(&body).await.status(), 200);
    signed_at(&mut body, now() + 500);
    let response = app.post_json(&body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"code": 0}));
    assert_eq!(app.stored().await.len(), 1);
    // A different recording is not a duplicate.
    body["file_id"] = "another".into();
    assert_eq!(app.post_json(&body).await.status(), 200);
    assert_eq!(app.stored().await.len(), 2);
}

#[tokio::test]
async fn other_event_types_are_stored_but_only_reach_sinks_that_take_them() {
    let app = spawn_app().await;
    let body = signed(json!({"event_type": 1, "stream_id": "live1", "app": "push.example.com"}));
    assert_eq!(app.post_json(&body).await.status(), 200);
    let recording = recording("file-1");
    assert_eq!(app.post_json(&recording).await.status(), 200);
    let stored = app.stored().await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].event_type, 1);
    assert!(stored[0].recording().is_none());
    // The default log sink takes [100] only.
    assert!(app.delivery(&stored[0].id, "console").await.is_none());
    let delivered = app
        .wait_for_state(&stored[1].id, "console", "delivered")
        .await;
    assert!(delivered, "the recording was not delivered to the log sink");
}

#[tokio::test]
async fn a_mistyped_or_missing_field_is_accepted_with_a_stored_warning() {
    let app = spawn_app().await;
    let mut body = fixture_json("record-v2018.json");
    body["file_size"] = "abc".into();
    body.as_object_mut().unwrap().shift_remove("video_url");
    body["field_from_2030"] = json!({"nested": [1, 2]});
    let response = app.post_json(&signed(body)).await;
    assert_eq!(response.status(), 200);
    let record = app.stored().await.pop().unwrap();
    assert_eq!(record.event["file_size"], "abc");
    assert_eq!(record.event["field_from_2030"], json!({"nested": [1, 2]}));
    let recording = record.recording().unwrap();
    assert_eq!(recording.file_size, None);
    assert_eq!(recording.unknown_fields, ["field_from_2030"]);
    assert!(
        record.warnings.iter().any(|w| w.contains("file_size")),
        "{:?}",
        record.warnings
    );
    assert!(
        record.warnings.iter().any(|w| w.contains("video_url")),
        "{:?}",
        record.warnings
    );
}

#[tokio::test]
async fn integers_as_strings_and_upper_case_signatures_are_accepted() {
    let app = spawn_app().await;
    let t = now() + 300;
    let mut body = fixture_json("record-v2018.json");
    body["t"] = t.to_string().into();
    body["sign"] = sign_for(KEY, t).to_uppercase().into();
    body["event_type"] = "100".into();
    body["duration"] = "2962".into();
    assert_eq!(app.post_json(&body).await.status(), 200);
    let record = app.stored().await.pop().unwrap();
    assert_eq!(record.event_type, 100);
    assert_eq!(record.recording().unwrap().duration, Some(2962));
}

#[tokio::test]
async fn bodies_at_the_limit_are_accepted_and_one_byte_over_get_413() {
    let limit = 2_048;
    let app = spawn_app_with(|s| s.server.max_body_bytes = limit).await;
    let padded = |length: usize| {
        let mut body = recording(&format!("pad-{length}"));
        body["pad"] = "".into();
        let base = body.to_string().len();
        body["pad"] = "x".repeat(length - base).into();
        let text = body.to_string();
        assert_eq!(text.len(), length);
        text
    };
    assert_eq!(app.post_raw(padded(limit)).await.status(), 200);
    assert_error(
        app.post_raw(padded(limit + 1)).await,
        413,
        4130,
        "larger than 2048 bytes",
        "one over",
    )
    .await;
    // Without a Content-Length (chunked), the limit still holds while reading.
    let chunks: Vec<Result<String, std::io::Error>> = vec![Ok(padded(limit + 1))];
    let streamed = reqwest::Body::wrap_stream(tokio_stream::iter(chunks));
    assert_error(
        app.post_raw(streamed).await,
        413,
        4130,
        "larger than",
        "chunked",
    )
    .await;
    assert_eq!(app.stored().await.len(), 1);
}

#[tokio::test]
async fn the_content_type_header_is_ignored() {
    let app = spawn_app().await;
    for (index, content_type) in [
        Some("text/plain"),
        None,
        Some("application/x-www-form-urlencoded"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut request = app
            .client
            .post(app.callback_url())
            .body(recording(&format!("ct-{index}")).to_string());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        assert_eq!(
            request.send().await.unwrap().status(),
            200,
            "{content_type:?}"
        );
    }
    assert_eq!(app.stored().await.len(), 3);
}

#[tokio::test]
async fn wrong_methods_get_405_and_unknown_paths_404() {
    let app = spawn_app().await;
    let response = app.client.get(app.callback_url()).send().await.unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    assert_error(response, 405, 4050, "use POST", "GET /callback").await;
    let response = app
        .client
        .post(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_error(response, 405, 4050, "use GET", "POST /healthz").await;
    let response = app
        .client
        .post(format!("{}/nope", app.address))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, 4040, "not found", "unknown path").await;
}

#[tokio::test]
async fn with_allow_unsigned_callbacks_without_sign_are_accepted() {
    let app = spawn_app_with(|s| {
        s.auth.keys.clear();
        s.auth.allow_unsigned = true;
    })
    .await;
    let body = json!({"event_type": 100, "stream_id": "s", "file_id": "f"});
    assert_eq!(app.post_json(&body).await.status(), 200);
    assert_eq!(app.stored().await.len(), 1);
}

#[tokio::test]
async fn a_custom_callback_path_is_served_and_the_default_is_not() {
    let app = spawn_app_with(|s| s.server.callback_path = "/css/record".to_owned()).await;
    assert_eq!(app.post_json(&recording("p")).await.status(), 200);
    let response = app
        .client
        .post(format!("{}/callback", app.address))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}
