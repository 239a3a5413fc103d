//! `/healthz` and `/readyz`.

use std::time::{Duration, Instant};

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

#[tokio::test]
async fn told_to_stop_readyz_answers_503_while_callbacks_are_still_answered_200() {
    // A delay far longer than the test: the window cannot close under it.
    let mut app = spawn_app_with(|settings| settings.server.shutdown_delay_secs = 3_600).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.signal_stop();
    // The signal is handled on the server's own task.
    let turned = eventually(Duration::from_secs(10), || async {
        app.get("/readyz").await.status() == 503
    })
    .await;
    assert!(turned, "/readyz still answers 200 after the stop signal");
    assert_error(
        app.get("/readyz").await,
        503,
        5032,
        "shutting down",
        "readyz while draining",
    )
    .await;
    let response = app.post_json(&recording("while-draining")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), r#"{"code":0}"#);
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn after_the_shutdown_delay_the_server_stops_and_its_port_is_closed() {
    let app = spawn_app_with(|settings| settings.server.shutdown_delay_secs = 1).await;
    let (address, client) = (app.address.clone(), app.client.clone());
    let signalled = Instant::now();
    app.stop().await;
    // tokio's sleep never ends early: the delay was served in full.
    assert!(signalled.elapsed() >= Duration::from_secs(1));
    assert_listener_closed(&client, &address).await;
}

#[tokio::test]
async fn a_second_stop_signal_ends_the_shutdown_delay_and_the_server_stops() {
    // A delay far longer than the test: only the second signal can end it.
    let mut app = spawn_app_with(|settings| settings.server.shutdown_delay_secs = 3_600).await;
    let (address, client) = (app.address.clone(), app.client.clone());
    app.signal_stop();
    let turned = eventually(Duration::from_secs(10), || async {
        app.get("/readyz").await.status() == 503
    })
    .await;
    assert!(turned, "/readyz still answers 200 after the stop signal");
    // `stop` sends the second signal, then waits for the server to end.
    tokio::time::timeout(Duration::from_secs(60), app.stop())
        .await
        .expect("the server still waits out its delay after a second signal");
    assert_listener_closed(&client, &address).await;
}

/// Asserts that nothing answers at `address` any more.
async fn assert_listener_closed(client: &reqwest::Client, address: &str) {
    assert!(
        client
            .get(format!("{address}/healthz"))
            .send()
            .await
            .is_err(),
        "the listener is still open after the server stopped"
    );
}
