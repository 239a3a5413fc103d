//! `/healthz` and `/readyz`.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn healthz_answers_200_while_serving() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
}

#[tokio::test]
async fn readyz_answers_200_when_the_spool_takes_writes() {
    let app = spawn_app().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ready"})
    );
}

#[tokio::test]
async fn readyz_answers_503_once_the_spool_is_closed() {
    let app = spawn_app().await;
    app.state.spool.close().await;
    let response = app.get("/readyz").await;
    assert_error(response, 503, 5033, "not ready", "closed spool").await;
    // And a callback is answered 503, never 200, so CSS retries it.
    let response = app.post_json(&recording("after-close")).await;
    assert_error(
        response,
        503,
        5032,
        "shutting down",
        "callback on closed spool",
    )
    .await;
}
