//! The service at its edge: metrics, request ids, native TLS, and clients
//! that are slow, idle or many.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

async fn metrics_text(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_accepted_and_rejected_callbacks_and_deliveries() {
    let app = spawn_app().await;
    let body = recording("metrics-1");
    assert_eq!(app.post_json(&body).await.status(), 200);
    assert_eq!(app.post_json(&body).await.status(), 200);
    let mut forged = recording("metrics-2");
    forged["sign"] = "0".repeat(32).into();
    assert_eq!(app.post_json(&forged).await.status(), 401);
    let id = app.stored().await[0].id.clone();
    assert!(app.wait_for_state(&id, "console", "delivered").await);

    let text = metrics_text(&app).await;
    for expected in [
        r#"recordhook_callbacks_total{outcome="accepted"} 1"#,
        r#"recordhook_callbacks_total{outcome="duplicate"} 1"#,
        r#"recordhook_callbacks_total{outcome="sign_mismatch"} 1"#,
        "recordhook_callback_request_duration_seconds_count 3",
        r#"recordhook_deliveries_total{sink="console",outcome="delivered"} 1"#,
        r#"recordhook_delivery_lag_seconds_count{sink="console"} 1"#,
        r#"recordhook_pending_deliveries{sink="console"} 0"#,
        r#"recordhook_dead_letters{sink="console"} 0"#,
        // One id accepted; the duplicate added none.
        "recordhook_dedup_index_entries 1",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let spool_bytes: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("recordhook_spool_size_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(spool_bytes > 0);
}

#[tokio::test]
async fn a_request_id_is_echoed_or_generated() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.callback_url())
        .header("x-request-id", "css-retry-42")
        .body(recording("rid-1").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "css-retry-42");
    let response = app.get("/healthz").await;
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 36, "{generated}");
    let again = app.get("/healthz").await;
    assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), generated);
}

#[tokio::test]
async fn native_tls_serves_clients_that_trust_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let mut settings = test_settings(&dir);
    settings.server.tls = Some(recordhook::tls::TlsSettings {
        cert_path,
        key_path,
    });
    let app = spawn_app_in(dir, settings).await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();

    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let response = client
        .post(format!("https://localhost:{port}/callback"))
        .body(recording("tls-1").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.stored().await.len(), 1);
    // A client that does not trust the certificate is refused.
    let untrusting = reqwest::Client::new();
    assert!(
        untrusting
            .get(format!("https://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_err()
    );
    // Plain HTTP on the TLS port gets no HTTP answer.
    assert!(
        app.client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn many_idle_connections_do_not_keep_a_real_callback_out() {
    let app = spawn_app_with(|s| {
        s.server.max_connections = 16;
        s.server.header_read_timeout_secs = 1;
    })
    .await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(&address).await.unwrap());
    }
    // Four times more idle clients than slots: the callback waits at most
    // for the header timeout to clear them, instead of forever.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let response = client
        .post(app.callback_url())
        .body(recording("idle-1").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The server closed the idle connections itself.
    let mut buffer = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(30), idle[0].read(&mut buffer)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "idle connection still open: {closed:?}"
    );
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_and_the_server_keeps_serving() {
    let app = spawn_app_with(|s| s.server.request_timeout_secs = 1).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let head = "POST /callback HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"event_type\":";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":4080"), "{answer}");
    assert_eq!(app.post_json(&recording("after-stall")).await.status(), 200);
}

#[tokio::test]
async fn a_body_cut_off_half_way_gets_400_and_nothing_is_stored() {
    let app = spawn_app().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let body = recording("cut-1").to_string();
    let head = format!(
        "POST /callback HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(&body.as_bytes()[..body.len() / 2])
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    drop(stream);
    // Counted once answered: only then is "nothing stored" a fact, not a race.
    let rejected = r#"recordhook_callbacks_total{outcome="body_unreadable"}"#;
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.metric(rejected).await == 1.0
        })
        .await,
        "the cut-off body was not rejected as unreadable"
    );
    assert_eq!(app.post_json(&recording("after-cut")).await.status(), 200);
    let stored = app.stored().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event["file_id"], "after-cut");
}
