//! The helper subcommands, run as the real binary: exit codes and output.

use std::process::{Command, Output};

use md5::{Digest, Md5};
use serde_json::Value;

use crate::helpers::*;

fn recordhook(dir: &tempfile::TempDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recordhook"))
        .args(args)
        .current_dir(dir.path())
        .env_remove("RECORDHOOK__AUTH__KEYS")
        .env_remove("RECORDHOOK_CONFIG")
        .output()
        .unwrap()
}

/// Runs the binary off the test's runtime, which must keep serving the in-process server meanwhile.
async fn recordhook_async(dir: &tempfile::TempDir, args: &[&str]) -> Output {
    let path = dir.path().to_path_buf();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_recordhook"))
            .args(&args)
            .current_dir(path)
            .env_remove("RECORDHOOK__AUTH__KEYS")
            .env_remove("RECORDHOOK_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_config(dir: &tempfile::TempDir, toml: &str) -> String {
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn check_config_prints_the_effective_configuration_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        "[auth]\nkeys = [\"very-secret-key\"]\n[[sinks]]\nname = \"b\"\ntype = \"forward\"\nurl = \"https://h.example/x\"\nheaders = { Authorization = \"Bearer tok3n\" }\n",
    );
    let output = recordhook(&dir, &["check-config", "--config", &config]);
    assert!(output.status.success(), "{output:?}");
    let stdout = text(&output.stdout);
    assert!(stdout.contains("keys = [\"[redacted]\"]"), "{stdout}");
    assert!(stdout.contains("url = \"https://h.example/x\""), "{stdout}");
    assert!(
        !stdout.contains("very-secret-key") && !stdout.contains("tok3n"),
        "{stdout}"
    );
    assert!(text(&output.stderr).contains("configuration is valid (1 callback key(s))"));
}

#[test]
fn check_config_rejects_invalid_configurations_with_the_reason() {
    let key = "[auth]\nkeys = [\"k\"]\n";
    let cases = [
        (
            format!("{key}[[sinks]]\nname = \"x\"\ntype = \"pulsar\"\n"),
            "unknown sink type `pulsar`",
        ),
        (
            format!(
                "{key}[[sinks]]\nname = \"x\"\ntype = \"log\"\n[[sinks]]\nname = \"x\"\ntype = \"log\"\n"
            ),
            "used twice",
        ),
        (
            format!("{key}[[sinks]]\nname = \"x\"\ntype = \"forward\"\nurl = \"htp:/nowhere\"\n"),
            "sinks[0].url",
        ),
        (
            format!("[server]\nlisten = \"localhost:eighty\"\n{key}"),
            "listen",
        ),
        (
            "[auth]\nkeys = []\n".to_owned(),
            "no callback key configured",
        ),
        (
            format!(
                "{key}[server.tls]\ncert_path = \"/nonexistent/cert.pem\"\nkey_path = \"/nonexistent/key.pem\"\n"
            ),
            "cert_path",
        ),
    ];
    for (toml, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(&dir, &toml);
        let output = recordhook(&dir, &["check-config", "--config", &config]);
        assert!(!output.status.success(), "accepted: {toml}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(reason),
            "{toml}\nexpected {reason:?} in {stderr}"
        );
    }
}

#[test]
fn sign_prints_t_and_the_md5_of_key_and_t() {
    let dir = tempfile::tempdir().unwrap();
    let output = recordhook(&dir, &["sign", "--key", "abc", "--t", "1700000600"]);
    assert!(output.status.success());
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["t"], 1_700_000_600);
    assert_eq!(printed["sign"], hex::encode(Md5::digest(b"abc1700000600")));
    // Without --t: ten minutes ahead.
    let output = recordhook(&dir, &["sign", "--key", "abc"]);
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let t = printed["t"].as_i64().unwrap();
    assert!((t - now() - 600).abs() <= 5, "t = {t}");
}

#[tokio::test]
async fn send_test_delivers_a_signed_callback_and_fails_on_a_rejection() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let url = app.callback_url();
    let output = recordhook_async(
        &dir,
        &[
            "send-test",
            "--url",
            &url,
            "--key",
            KEY,
            "--stream-id",
            "cli_stream",
        ],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    assert!(
        text(&output.stdout).starts_with("HTTP 200 OK\n{\"code\":0}"),
        "{}",
        text(&output.stdout)
    );
    let stored = app.stored().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].stream_id(), Some("cli_stream"));
    assert!(stored[0].warnings.is_empty(), "{:?}", stored[0].warnings);

    let output = recordhook_async(&dir, &["send-test", "--url", &url, "--key", "wrong-key"]).await;
    assert!(!output.status.success());
    assert!(
        text(&output.stdout).contains("HTTP 401"),
        "{}",
        text(&output.stdout)
    );

    let sample = format!(
        "{}/tests/fixtures/record-v2018.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let output = recordhook_async(
        &dir,
        &["send-test", "--url", &url, "--key", KEY, "--file", &sample],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(app.stored().await[1].event["file_id"], "1234567890");
}

#[tokio::test]
async fn healthcheck_exits_0_only_when_the_server_is_healthy() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/healthz", app.address);
    assert!(
        recordhook_async(&dir, &["healthcheck", "--url", &url])
            .await
            .status
            .success()
    );
    // The URL is derived from the configured listen address when not given.
    let port = app.address.rsplit(':').next().unwrap();
    let config = write_config(&dir, &format!("[server]\nlisten = \"0.0.0.0:{port}\"\n"));
    let output = recordhook_async(&dir, &["healthcheck", "--config", &config]).await;
    assert!(output.status.success(), "{output:?}");
    assert!(text(&output.stdout).contains(&format!("http://127.0.0.1:{port}/healthz")));
    // Nothing listening: failure. The port stays held, so no other test's
    // server can take it meanwhile and answer.
    let (_held, closed) = refusing_port();
    let output = recordhook_async(
        &dir,
        &["healthcheck", "--url", &format!("http://{closed}/healthz")],
    )
    .await;
    assert!(!output.status.success());
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    let dir = tempfile::tempdir().unwrap();
    let version = recordhook(&dir, &["--version"]);
    assert_eq!(
        text(&version.stdout).trim(),
        format!("recordhook {}", env!("CARGO_PKG_VERSION"))
    );
    for subcommand in [
        vec!["serve"],
        vec!["check-config"],
        vec!["sign"],
        vec!["send-test"],
        vec!["healthcheck"],
        vec!["dead-letters", "list"],
        vec!["dead-letters", "retry"],
        vec!["dead-letters", "purge"],
    ] {
        let mut args = subcommand.clone();
        args.push("--help");
        let output = recordhook(&dir, &args);
        assert!(output.status.success(), "{subcommand:?}");
        let help = text(&output.stdout);
        let example = help
            .lines()
            .find(|line| line.starts_with("Example: "))
            .unwrap_or_default();
        assert!(example.contains("recordhook "), "{subcommand:?}: {help}");
    }
}

#[tokio::test]
async fn dead_letter_commands_beside_a_server_under_load_turn_no_callback_into_a_503() {
    let target = crate::target::Target::start().await;
    target.set_default(500);
    let app = spawn_app_with_config(&format!(
        "[[sinks]]\nname = \"backend\"\ntype = \"forward\"\nurl = \"{}\"\nmax_attempts = 1\n",
        target.url
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &format!("[spool]\npath = {:?}\n", app.settings.spool.path),
    );
    // A dead letter to work on before the load starts.
    let first = recording("dead-0");
    assert_eq!(app.post_json(&first).await.status(), 200);
    let id = app.stored().await[0].id.clone();
    assert!(app.wait_for_state(&id, "backend", "dead").await);

    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (client, url, stop) = (app.client.clone(), app.callback_url(), stop.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut n = 0;
            while !stop.is_cancelled() {
                let tasks: Vec<_> = (0..8)
                    .map(|k| {
                        let body = recording(&format!("load-{n}-{k}"));
                        client.post(&url).json(&body).send()
                    })
                    .collect();
                for response in futures_util::future::join_all(tasks).await {
                    statuses.push(response.unwrap().status().as_u16());
                }
                n += 1;
            }
            statuses
        })
    };
    for round in 0..3 {
        for args in [
            &["dead-letters", "list"][..],
            &["dead-letters", "retry", "--all"],
            &["dead-letters", "purge", "--all"],
        ] {
            let mut with_config = vec!["--config", config.as_str()];
            with_config.extend_from_slice(args);
            let output = recordhook_async(&dir, &with_config).await;
            assert!(
                output.status.success(),
                "round {round} {args:?}: {output:?}"
            );
        }
    }
    stop.cancel();
    let statuses = load.await.unwrap();
    assert!(statuses.len() >= 8, "the load never ran");
    let refused: Vec<&u16> = statuses.iter().filter(|&&s| s != 200).collect();
    assert!(
        refused.is_empty(),
        "{} callbacks refused: {refused:?}",
        refused.len()
    );
}

#[test]
fn dead_letter_commands_refuse_a_spool_of_another_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.db");
    rusqlite::Connection::open(&spool)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let config = write_config(&dir, &format!("[spool]\npath = {spool:?}\n"));
    let output = recordhook(&dir, &["--config", &config, "dead-letters", "list"]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("schema version 99"), "{stderr}");
}
