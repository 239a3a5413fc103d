//! Delivery from the spool to file and forward sinks: bodies, headers,
//! retries, dead letters and their commands, isolation between sinks.

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::helpers::*;
use crate::target::Target;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn forward_sink(target: &Target, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = \"backend\"\ntype = \"forward\"\nurl = \"{}\"\nretry_initial_ms = 10\nretry_max_ms = 50\n{extra}\n",
        target.url
    )
}

fn file_sink(path: &std::path::Path) -> String {
    format!(
        "[[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = {path:?}\nretry_initial_ms = 10\nretry_max_ms = 50\n"
    )
}

async fn accept(app: &TestApp, file_id: &str) -> String {
    let response = app.post_json(&recording(file_id)).await;
    assert_eq!(response.status(), 200);
    app.stored()
        .await
        .into_iter()
        .find(|r| r.event.get("file_id").and_then(Value::as_str) == Some(file_id))
        .unwrap()
        .id
}

#[tokio::test]
async fn a_record_is_forwarded_once_with_its_body_and_headers() {
    let target = Target::start().await;
    let app = spawn_app_with_config(&forward_sink(
        &target,
        "headers = { Authorization = \"Bearer t0ken\" }",
    ))
    .await;
    let id = accept(&app, "fwd-1").await;
    assert!(app.wait_for_state(&id, "backend", "delivered").await);
    // A later record delivered after it proves the worker has moved past the
    // first: had it sent the first twice, the copy would come before this one.
    let later = accept(&app, "fwd-2").await;
    assert!(app.wait_for_state(&later, "backend", "delivered").await);
    assert_eq!(target.received_ids(), [id.clone(), later], "sent once each");
    let received = target.received();
    let request = &received[0];
    assert_eq!(request.header("x-recordhook-event-id"), id);
    assert_eq!(request.header("authorization"), "Bearer t0ken");
    assert_eq!(request.header("content-type"), "application/json");
    let stored = serde_json::to_value(&app.stored().await[0]).unwrap();
    assert_eq!(request.json(), stored);
    assert_eq!(request.json()["event"]["file_id"], "fwd-1");
    assert!(request.headers.get("webhook-signature").is_none());
}

#[tokio::test]
async fn a_503_503_200_sequence_is_retried_until_delivered() {
    let target = Target::start().await;
    target.respond_with(&[503, 503]);
    let app = spawn_app_with_config(&forward_sink(&target, "")).await;
    let id = accept(&app, "retry-1").await;
    assert!(app.wait_for_state(&id, "backend", "delivered").await);
    assert_eq!(target.received_ids(), [id.clone(), id.clone(), id.clone()]);
}

// Real time: the delivery worker reads the wall clock itself, so paused
// tokio time cannot drive it. Only lower bounds are asserted, which a slow
// machine cannot break.
#[tokio::test]
async fn each_retry_waits_at_least_its_backoff() {
    let target = Target::start().await;
    target.respond_with(&[503, 503]);
    let sink = format!(
        "[[sinks]]\nname = \"backend\"\ntype = \"forward\"\nurl = \"{}\"\n\
         retry_initial_ms = 100\nretry_max_ms = 1000\n",
        target.url
    );
    let app = spawn_app_with_config(&sink).await;
    let id = accept(&app, "backoff-1").await;
    assert!(app.wait_for_state(&id, "backend", "delivered").await);
    let at: Vec<_> = target.received().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 3);
    // After the n-th failure: 100 ms × 2^(n-1), of which jitter may take half
    // (a millisecond's slack for rounding to the spool's milliseconds).
    for (n, least_ms) in [(1, 49), (2, 99)] {
        let waited = at[n] - at[n - 1];
        assert!(
            waited >= Duration::from_millis(least_ms),
            "retry {n} came after {waited:?}, before its backoff"
        );
    }
}

#[tokio::test]
async fn retries_stop_at_max_attempts_with_a_dead_letter() {
    let target = Target::start().await;
    target.set_default(500);
    let app = spawn_app_with_config(&forward_sink(&target, "max_attempts = 3")).await;
    let id = accept(&app, "exhaust-1").await;
    assert!(app.wait_for_state(&id, "backend", "dead").await);
    assert_eq!(target.received().len(), 3);
    let state = app.delivery(&id, "backend").await.unwrap();
    assert_eq!(state.attempts, 3);
    assert!(
        state
            .last_error
            .unwrap()
            .contains("gave up after 3 attempts: HTTP 500")
    );
}

fn dead_letters_command(app: &TestApp, args: &[&str]) -> std::process::Output {
    let config = app.dir.path().join("admin.toml");
    std::fs::write(
        &config,
        format!("[spool]\npath = {:?}\n", app.settings.spool.path),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_recordhook"))
        .arg("dead-letters")
        .args(args)
        .arg("--config")
        .arg(&config)
        .current_dir(app.dir.path())
        .env_remove("RECORDHOOK__AUTH__KEYS")
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_400_is_a_dead_letter_at_once_and_dead_letters_retry_delivers_it() {
    let target = Target::start().await;
    target.set_default(400);
    let app = spawn_app_with_config(&forward_sink(&target, "")).await;
    let id = accept(&app, "dead-1").await;
    assert!(app.wait_for_state(&id, "backend", "dead").await);
    assert_eq!(target.received().len(), 1, "a 400 must not be retried");

    let listed = dead_letters_command(&app, &["list", "--sink", "backend"]);
    assert!(listed.status.success(), "{listed:?}");
    let lines: Vec<Value> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], id);
    assert_eq!(lines[0]["sink"], "backend");
    assert_eq!(lines[0]["attempts"], 1);
    assert!(
        lines[0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("HTTP 400")
    );
    assert!(lines[0]["last_attempt_at"].as_str().unwrap().ends_with('Z'));

    let unknown = dead_letters_command(&app, &["retry", "--id", "no-such-id"]);
    assert!(!unknown.status.success());

    // The target is fixed; the running server picks the retried letter up.
    target.set_default(200);
    let retried = dead_letters_command(&app, &["retry", "--all"]);
    assert!(retried.status.success(), "{retried:?}");
    assert!(String::from_utf8_lossy(&retried.stdout).contains("1 dead letter(s) queued again"));
    assert!(app.wait_for_state(&id, "backend", "delivered").await);
    assert_eq!(target.received().len(), 2);
    let listed = dead_letters_command(&app, &["list"]);
    assert!(listed.stdout.is_empty());
}

#[tokio::test]
async fn dead_letters_purge_removes_them() {
    let target = Target::start().await;
    target.set_default(410);
    let app = spawn_app_with_config(&forward_sink(&target, "")).await;
    let id = accept(&app, "purge-1").await;
    assert!(app.wait_for_state(&id, "backend", "dead").await);
    let purged = dead_letters_command(&app, &["purge", "--id", &id]);
    assert!(purged.status.success(), "{purged:?}");
    assert!(String::from_utf8_lossy(&purged.stdout).contains("1 dead letter(s) purged"));
    assert!(dead_letters_command(&app, &["list"]).stdout.is_empty());
    assert_ne!(app.delivery(&id, "backend").await.unwrap().state, "dead");
}

#[tokio::test]
async fn a_hanging_target_delays_neither_the_200_nor_the_file_sink() {
    let target = Target::start().await;
    target.hang(true);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.jsonl");
    let toml = format!(
        "{}{}",
        forward_sink(&target, "timeout_secs = 60"),
        file_sink(&file)
    );
    let settings = settings_from_toml(&dir, &toml);
    let app = spawn_app_in(dir, settings).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(accept(&app, &format!("hang-{n}")).await);
    }
    for id in &ids {
        assert!(app.wait_for_state(id, "archive", "delivered").await);
    }
    // All five were answered 200 and written while the target holds (for
    // 60 s) the request it got: none can have been delivered to it.
    assert!(
        eventually(Duration::from_secs(20), || async {
            !target.received().is_empty()
        })
        .await,
        "the forward sink never reached the target"
    );
    for id in &ids {
        assert_eq!(app.delivery(id, "backend").await.unwrap().state, "pending");
    }
    let lines = std::fs::read_to_string(&file).unwrap();
    let written: Vec<String> = lines
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(written, ids);
}

#[tokio::test]
async fn the_standard_webhooks_signature_verifies() {
    let target = Target::start().await;
    let app = spawn_app_with_config(&forward_sink(
        &target,
        &format!("signing_secret = \"{SECRET}\""),
    ))
    .await;
    let id = accept(&app, "signed-1").await;
    assert!(app.wait_for_state(&id, "backend", "delivered").await);
    let request = target.received().pop().unwrap();
    assert_eq!(request.header("webhook-id"), id);
    let timestamp: i64 = request.header("webhook-timestamp").parse().unwrap();
    assert!((timestamp - now()).abs() < 60);
    // Computed here as the Standard Webhooks spec says, independently of recordhook.
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&request.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    assert_eq!(request.header("webhook-signature"), expected);
}

#[tokio::test]
async fn an_unwritable_file_sink_keeps_retrying_while_callbacks_get_200() {
    let app = spawn_app_with_config(&file_sink(std::path::Path::new("/dev/full"))).await;
    let id = accept(&app, "full-1").await;
    let retried = eventually(Duration::from_secs(20), || async {
        app.delivery(&id, "archive")
            .await
            .is_some_and(|s| s.attempts >= 3)
    })
    .await;
    assert!(retried, "the file sink did not retry");
    let state = app.delivery(&id, "archive").await.unwrap();
    assert_eq!(state.state, "pending");
    assert!(state.last_error.unwrap().contains("/dev/full"));
    // Still accepting.
    assert_eq!(app.post_json(&recording("full-2")).await.status(), 200);
}

#[tokio::test]
async fn a_sink_receives_only_its_event_types() {
    let target = Target::start().await;
    let app = spawn_app_with_config(&forward_sink(&target, "event_types = [0, 1]")).await;
    let start = signed(serde_json::json!({"event_type": 1, "stream_id": "live"}));
    assert_eq!(app.post_json(&start).await.status(), 200);
    let _ = accept(&app, "not-for-backend").await;
    let end = signed(serde_json::json!({"event_type": 0, "stream_id": "live"}));
    assert_eq!(app.post_json(&end).await.status(), 200);
    let stored = app.stored().await;
    // The record after the one not for it is delivered: the worker is past it.
    assert!(
        app.wait_for_state(&stored[2].id, "backend", "delivered")
            .await
    );
    assert!(app.delivery(&stored[1].id, "backend").await.is_none());
    // Sent together they may arrive in either order.
    let mut types: Vec<i64> = target
        .received()
        .iter()
        .map(|r| r.json()["event_type"].as_i64().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(types, [0, 1], "only its event types, each once");
}

#[tokio::test]
async fn deliveries_pending_at_shutdown_resume_after_a_restart() {
    let target = Target::start().await;
    target.set_default(503);
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_from_toml(&dir, &forward_sink(&target, ""));
    let app = spawn_app_in(dir, settings).await;
    let id = accept(&app, "resume-1").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            !target.received().is_empty()
        })
        .await
    );
    let (dir, settings) = app.stop().await;
    target.set_default(200);
    let app = spawn_app_in(dir, settings).await;
    assert!(app.wait_for_state(&id, "backend", "delivered").await);
}

#[tokio::test]
async fn a_sink_removed_from_the_config_leaves_dead_letters_not_a_stuck_spool() {
    let target = Target::start().await;
    target.set_default(503);
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_from_toml(&dir, &forward_sink(&target, ""));
    let app = spawn_app_in(dir, settings).await;
    let id = accept(&app, "orphan-1").await;
    let (dir, _) = app.stop().await;
    let settings = settings_from_toml(&dir, "");
    let app = spawn_app_in(dir, settings).await;
    let state = app.delivery(&id, "backend").await.unwrap();
    assert_eq!(state.state, "dead");
    assert_eq!(
        state.last_error.unwrap(),
        "sink `backend` is no longer configured"
    );
}
