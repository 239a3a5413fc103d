//! The admin listener: `/metrics` moves there, probes stay on both ports,
//! the API needs a bearer token, and its endpoints list, show, and act on
//! dead letters. (On PostgreSQL the same pages come from the queries tested
//! in tests/spool/contract.rs.)

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::target::Target;

const TOKEN: &str = "admin-token-0123456789abcdef";

/// Config for a server with an admin listener and `sinks`.
fn with_admin(sinks: &str) -> String {
    format!("[admin]\nlisten = \"127.0.0.1:0\"\ntokens = [\"{TOKEN}\"]\n{sinks}")
}

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .get(format!("{}{path}", app.admin_address.as_ref().unwrap()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn api(app: &TestApp, path: &str) -> Value {
    let response = get(app, path, Some(TOKEN)).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

async fn post(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(format!("{}{path}", app.admin_address.as_ref().unwrap()))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Sends a recording callback for `file_id` and returns its event id.
async fn send(app: &TestApp, file_id: &str) -> String {
    assert_eq!(app.post_json(&recording(file_id)).await.status(), 200);
    let page = api(app, &format!("/api/v1/events?file_id={file_id}")).await;
    page["items"][0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn metrics_move_to_the_admin_listener_and_the_probes_answer_on_both() {
    let app = spawn_app_with_config(&with_admin("")).await;
    let public = app.get("/metrics").await;
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let admin = get(&app, "/metrics", None).await;
    assert_eq!(admin.status(), StatusCode::OK);
    assert!(
        admin
            .text()
            .await
            .unwrap()
            .contains("recordhook_spool_size_bytes")
    );
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            app.get(path).await.status(),
            StatusCode::OK,
            "public {path}"
        );
        assert_eq!(
            get(&app, path, None).await.status(),
            StatusCode::OK,
            "admin {path}"
        );
    }
    // Without an admin listener, /metrics stays where it was.
    let plain = spawn_app().await;
    assert!(plain.admin_address.is_none());
    assert_eq!(plain.get("/metrics").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_api_needs_a_valid_bearer_token_and_the_page_holds_none() {
    let app = spawn_app_with_config(&with_admin("")).await;
    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        let response = get(&app, "/api/v1/events", token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], 4018);
    }
    assert_eq!(
        get(&app, "/api/v1/events", Some(TOKEN)).await.status(),
        StatusCode::OK
    );
    let page = get(&app, "/", None).await;
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("/assets/app.js") && !html.contains(TOKEN));
    assert_eq!(
        get(&app, "/assets/app.js", None).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&app, "/assets/nope.js", None).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn events_come_newest_first_filtered_and_by_cursor() {
    let app = spawn_app_with_config(&with_admin("")).await;
    let ids = [
        send(&app, "page-a").await,
        send(&app, "page-b").await,
        send(&app, "page-c").await,
    ];
    let first = api(&app, "/api/v1/events?limit=2").await;
    let listed: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str()]);
    let item = &first["items"][0];
    assert_eq!(item["event_type"], 100);
    assert_eq!(item["event_name"], "record");
    assert_eq!(item["file_id"], "page-c");
    assert_eq!(item["sinks"][0]["sink"], "console");
    let cursor = first["next_cursor"].as_str().unwrap();
    let next = api(&app, &format!("/api/v1/events?limit=2&cursor={cursor}")).await;
    assert_eq!(next["items"][0]["id"], ids[0].as_str());
    assert_eq!(next["items"].as_array().unwrap().len(), 1);
    assert!(next["next_cursor"].is_null());
    for filter in ["event_type=record", "event_type=100"] {
        let page = api(&app, &format!("/api/v1/events?{filter}")).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 3, "{filter}");
    }
    let none = api(&app, "/api/v1/events?event_type=push_start").await;
    assert!(none["items"].as_array().unwrap().is_empty());
    let future = api(&app, "/api/v1/events?since=2999-01-01T00:00:00Z").await;
    assert!(future["items"].as_array().unwrap().is_empty());
    for (query, field) in [
        ("status=lost", "status"),
        ("since=yesterday", "since"),
        ("event_type=nonsense", "event_type"),
        ("limit=0", "limit"),
        ("cursor=abc", "cursor"),
        ("colour=red", "query"),
    ] {
        let response = get(&app, &format!("/api/v1/events?{query}"), Some(TOKEN)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], 4006, "{query}");
        assert!(
            body["message"].as_str().unwrap().contains(field),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn an_event_shows_its_record_and_sinks_and_the_sinks_their_backlog() {
    let app = spawn_app_with_config(&with_admin("")).await;
    let id = send(&app, "detail-1").await;
    assert!(app.wait_for_state(&id, "console", "delivered").await);
    let event = api(&app, &format!("/api/v1/events/{id}")).await;
    assert_eq!(event["record"]["recording"]["file_id"], "detail-1");
    assert_eq!(event["record"]["event"]["file_id"], "detail-1");
    assert_eq!(event["sinks"][0]["status"], "delivered");
    let missing = get(&app, "/api/v1/events/no-such-id", Some(TOKEN)).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.json::<Value>().await.unwrap()["code"], 4041);
    let sinks = api(&app, "/api/v1/sinks").await;
    let console = &sinks["sinks"][0];
    assert_eq!(console["name"], "console");
    assert_eq!(console["type"], "log");
    assert_eq!(console["pending"], 0);
    assert!(console["last_success_at"].is_string());
    assert!(!console["backlog"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn dead_letters_are_retried_and_purged_through_the_api() {
    let target = Target::start().await;
    target.set_default(400);
    let app = spawn_app_with_config(&with_admin(&format!(
        "[[sinks]]\nname = \"backend\"\ntype = \"forward\"\nurl = \"{}\"\n\
         retry_initial_ms = 10\nretry_max_ms = 50\n",
        target.url
    )))
    .await;
    let first = send(&app, "dead-1").await;
    let second = send(&app, "dead-2").await;
    assert!(app.wait_for_state(&first, "backend", "dead").await);
    assert!(app.wait_for_state(&second, "backend", "dead").await);
    let dead = api(&app, "/api/v1/events?status=dead").await;
    assert_eq!(dead["items"].as_array().unwrap().len(), 2);
    for selection in [json!({}), json!({"all": true, "ids": [first]})] {
        let response = post(&app, "/api/v1/dead-letters/retry", &selection).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{selection}");
    }
    target.set_default(200);
    let retried = post(
        &app,
        "/api/v1/dead-letters/retry",
        &json!({"sink": "backend", "ids": [first]}),
    )
    .await;
    assert_eq!(retried.json::<Value>().await.unwrap()["affected"], 1);
    assert!(app.wait_for_state(&first, "backend", "delivered").await);
    let purged = post(&app, "/api/v1/dead-letters/purge", &json!({"all": true})).await;
    assert_eq!(purged.json::<Value>().await.unwrap()["affected"], 1);
    assert!(app.state.spool.dead_letters(None).await.unwrap().is_empty());
    let delivered = api(&app, "/api/v1/events?status=delivered").await;
    assert_eq!(delivered["items"].as_array().unwrap().len(), 2);
}

/// Every `/api/v1/…` path named in the admin module's source (routes and
/// `#[utoipa::path]` attributes alike), with `{id}` kept as written.
fn api_paths_in_source() -> std::collections::BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/admin");
    let mut paths = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().path();
        if file.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(file).unwrap();
        for piece in source.split("\"/api/v1/").skip(1) {
            let rest = piece.split('"').next().unwrap();
            paths.insert(format!("/api/v1/{rest}"));
        }
    }
    paths
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_token_and_lists_every_route() {
    let app = spawn_app_with_config(&with_admin("")).await;
    let response = get(&app, "/api/v1/openapi.json", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(
        document["components"]["securitySchemes"]["token"]["scheme"],
        "bearer"
    );
    let paths = document["paths"].as_object().unwrap();

    // A route added without #[utoipa::path] (a plain `.route("/api/v1/…")`)
    // names its path in the source but not in the document.
    let mut named = api_paths_in_source();
    named.remove("/api/v1/openapi.json");
    let documented: std::collections::BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(
        named, documented,
        "every /api/v1 path in src/admin is documented"
    );

    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            // Each documented operation is routed: the fallback's 4040 never answers.
            let url = format!(
                "{}{}",
                app.admin_address.as_ref().unwrap(),
                path.replace("{id}", "no-such-id")
            );
            let request = match method.as_str() {
                "get" => app.client.get(url),
                "post" => app.client.post(url).json(&json!({"all": true})),
                other => panic!("{other} {path} is not tested"),
            };
            let answer = request.bearer_auth(TOKEN).send().await.unwrap();
            let status = answer.status();
            let body: Value = answer.json().await.unwrap();
            assert_ne!(body["code"], 4040, "{method} {path} is not routed");
            assert!(status != StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            // Every failure it can give is documented with the error body.
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.contains_key("401"), "{method} {path}");
            for (code, response) in responses {
                if !code.starts_with('2') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {code}"
                    );
                }
            }
        }
    }
}
