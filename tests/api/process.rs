//! The `recordhook` binary as a user runs it: start-up refusals, logs, and
//! a clean exit on SIGTERM.

use serde_json::Value;

use crate::binary::{command, start_server, start_server_with_env};
use crate::helpers::*;

#[test]
fn the_binary_refuses_to_start_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(&dir).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no callback key configured"), "{stderr}");
    assert!(stderr.contains("RECORDHOOK__AUTH__KEYS"), "{stderr}");
}

#[test]
fn the_binary_refuses_a_config_file_with_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = path_in(&dir, "config.toml");
    std::fs::write(&config, "[server]\nlisen = \"0.0.0.0:1\"\n").unwrap();
    let output = command(&dir)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RECORDHOOK__AUTH__KEYS", KEY)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("lisen"), "{stderr}");
}

#[test]
fn the_binary_refuses_a_spool_it_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = path_in(&dir, "file");
    std::fs::write(&blocker, "").unwrap();
    let output = command(&dir)
        .env("RECORDHOOK__AUTH__KEYS", KEY)
        .env("RECORDHOOK__SPOOL__PATH", blocker.join("spool.db"))
        .env("RECORDHOOK__SERVER__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("could not be opened"), "{stderr}");
}

#[tokio::test]
async fn the_binary_logs_each_outcome_without_secrets_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir, "");
    let client = reqwest::Client::new();
    let url = format!("{}/callback", server.address);
    let accepted = recording("logged-1");
    let bad_sign = {
        let mut body = recording("logged-2");
        body["sign"] = "f".repeat(32).into();
        body
    };
    for body in [&accepted, &accepted, &bad_sign] {
        client
            .post(&url)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
    }
    let (status, lines) = server.terminate();
    assert!(status.success(), "exit status {status:?}");

    let events: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let with = |key: &str, value: &str| events.iter().filter(|e| e[key] == value).count();
    assert_eq!(with("outcome", "accepted"), 1, "{lines:#?}");
    assert_eq!(with("outcome", "duplicate"), 1, "{lines:#?}");
    let rejected = events.iter().find(|e| e["outcome"] == "rejected").unwrap();
    assert_eq!(rejected["reason"], "sign_mismatch");
    assert_eq!(rejected["status"], 401);
    assert_eq!(rejected["stream_id"], "stream_test");
    let record = events.iter().find(|e| e["message"] == "record").unwrap();
    assert_eq!(record["file_id"], "logged-1");
    assert_eq!(record["stream_id"], "stream_test");
    assert!(
        lines.iter().any(|l| l.contains("spool closed")),
        "no clean close logged"
    );

    let secrets = [
        KEY.to_owned(),
        accepted["sign"].as_str().unwrap().to_owned(),
        bad_sign["sign"].as_str().unwrap().to_owned(),
    ];
    for line in &lines {
        for secret in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "a secret leaked into the log: {line}"
            );
        }
        assert!(
            !line.contains("\"sign\""),
            "a body with sign leaked into the log: {line}"
        );
    }
}

#[tokio::test]
async fn sighup_reloads_the_key_file_and_a_failed_reload_keeps_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = path_in(&dir, "keys");
    std::fs::write(&key_file, "initial-key\n").unwrap();
    let mut server = start_server(&dir, &format!("[auth]\nkey_file = {key_file:?}\n"));
    let client = reqwest::Client::new();
    let url = format!("{}/callback", server.address);
    let post_signed_with = |key: &'static str, file_id: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut body = recording(file_id);
            let t = now() + 300;
            body["t"] = t.into();
            body["sign"] = sign_for(key, t).into();
            client
                .post(&url)
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post_signed_with("initial-key", "hup-1").await, 200);
    assert_eq!(post_signed_with("rotated-key", "hup-2").await, 401);

    std::fs::write(&key_file, "rotated-key\n").unwrap();
    server.signal("-HUP");
    // Logged once the new keys are in force.
    let reloaded = server.wait_for_log("callback keys reloaded; sink files reopened");
    // The file's one key and the test key from the environment.
    assert_eq!(reloaded["keys"], 2, "{reloaded}");
    assert_eq!(post_signed_with("rotated-key", "hup-3").await, 200);
    assert_eq!(post_signed_with("initial-key", "hup-4").await, 401);

    // A reload that fails (the key file is gone) keeps the keys in force:
    // asserted once the server says it has handled the failed reload.
    std::fs::remove_file(&key_file).unwrap();
    server.signal("-HUP");
    let failed = server.wait_for_log(
        "callback keys NOT reloaded, the previous keys stay in force; sink files reopened",
    );
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("could not be read")),
        "{failed}"
    );
    assert_eq!(post_signed_with("rotated-key", "hup-5").await, 200);
    assert_eq!(post_signed_with("initial-key", "hup-6").await, 401);

    let (status, lines) = server.terminate();
    assert!(status.success());
    for line in &lines {
        assert!(
            !line.contains("initial-key") && !line.contains("rotated-key"),
            "a key leaked: {line}"
        );
    }
}

#[tokio::test]
async fn a_second_signal_during_the_shutdown_delay_makes_the_binary_exit_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // An hour's delay: `terminate` waits 20 s at most, so only the second
    // signal can make the process exit in time.
    let mut server = start_server_with_env(
        &dir,
        "",
        &[("RECORDHOOK__SERVER__SHUTDOWN_DELAY_SECS", "3600")],
    );
    server.signal("-INT");
    server.wait_for_log(
        "shutting down: /readyz answers 503 while callbacks are still served, until the \
         listener closes (a second signal closes it now)",
    );
    assert_eq!(
        server.post_callback(&recording("during-the-delay")).await,
        200,
        "a callback during the delay"
    );
    // SIGTERM after SIGINT: either signal counts, in either order.
    let (status, lines) = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        lines
            .iter()
            .any(|line| line.contains("second signal, the rest of the delay is skipped")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|line| line.contains("spool closed")),
        "no clean close logged: {lines:#?}"
    );
}
