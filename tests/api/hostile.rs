//! Hostile and malformed input, and a spool that runs out of space: each gets
//! its documented answer and the server keeps serving.

use serde_json::{Value, json};

use crate::helpers::*;

/// Sends callbacks (file ids `{prefix}-N`, at most `limit`) until the spool
/// has refused `refusals` for lack of space. Asserts every refusal is 503
/// code 5031 saying "full", that no 200 follows a refusal (nothing may be
/// acknowledged that was not stored), and that some were accepted first.
/// Returns the file ids that got a 200.
async fn fill_until_refused(
    app: &TestApp,
    prefix: &str,
    limit: usize,
    refusals: usize,
) -> Vec<String> {
    let mut accepted = Vec::new();
    let mut refused = 0;
    for n in 0..limit {
        let body = recording(&format!("{prefix}-{n}"));
        let response = app.post_json(&body).await;
        match response.status().as_u16() {
            200 => {
                assert_eq!(
                    refused, 0,
                    "a 200 after a refusal: nothing may be acknowledged unstored"
                );
                accepted.push(body["file_id"].as_str().unwrap().to_owned());
            }
            503 => {
                let answer: Value = response.json().await.unwrap();
                assert_eq!(answer["code"], 5031, "{answer}");
                assert!(
                    answer["message"].as_str().unwrap().contains("full"),
                    "{answer}"
                );
                refused += 1;
                if refused == refusals {
                    assert!(
                        !accepted.is_empty(),
                        "the spool was full before the first callback"
                    );
                    return accepted;
                }
            }
            other => panic!("unexpected status {other}"),
        }
    }
    panic!(
        "never refused: {} of {limit} callbacks accepted",
        accepted.len()
    );
}

/// After whatever came before, a normal callback still gets its 200.
async fn still_serving(app: &TestApp, file_id: &str) {
    assert_eq!(
        app.post_json(&recording(file_id)).await.status(),
        200,
        "server stopped serving"
    );
}

#[tokio::test]
async fn deeply_nested_json_is_rejected_without_harm() {
    let app = spawn_app().await;
    let depth = 20_000;
    let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    assert_error(
        app.post_raw(body).await,
        400,
        4001,
        "not valid JSON",
        "nested arrays",
    )
    .await;
    let body = format!(
        r#"{{"event_type":100,"x":{}1{}}}"#,
        "{\"a\":".repeat(5_000),
        "}".repeat(5_000)
    );
    assert_error(
        app.post_raw(body).await,
        400,
        4001,
        "recursion limit",
        "nested objects",
    )
    .await;
    still_serving(&app, "after-nesting").await;
}

#[tokio::test]
async fn numbers_beyond_64_bits_are_kept_exactly_and_reported() {
    let app = spawn_app().await;
    let t = now() + 300;
    let body = format!(
        r#"{{"event_type":100,"stream_id":"s","file_id":"big","video_url":"u","start_time":1,"end_time":2,"duration":1,
           "file_size":123456789012345678901234567890,"ratio":1e400,"t":{t},"sign":"{}"}}"#,
        sign_for(KEY, t)
    );
    assert_eq!(app.post_raw(body).await.status(), 200);
    let record = app.stored().await.pop().unwrap();
    assert_eq!(
        serde_json::to_string(&record.event["file_size"]).unwrap(),
        "123456789012345678901234567890"
    );
    // Same value; serde_json writes the exponent with its sign.
    assert_eq!(
        serde_json::to_string(&record.event["ratio"]).unwrap(),
        "1e+400"
    );
    assert!(
        record.warnings.iter().any(|w| w.contains("file_size")),
        "{:?}",
        record.warnings
    );
    // A `t` beyond 64 bits cannot be checked: rejected as not an integer.
    let body = json!({"event_type": 100})
        .to_string()
        .replace('}', r#","t":99999999999999999999999,"sign":"x"}"#);
    assert_error(
        app.post_raw(body).await,
        401,
        4012,
        "t is not an integer",
        "huge t",
    )
    .await;
}

#[tokio::test]
async fn invalid_utf8_and_raw_control_characters_get_400() {
    let app = spawn_app().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "invalid UTF-8",
            b"{\"event_type\":100,\"app\":\"\xff\xfe\"}".to_vec(),
        ),
        (
            "a raw NUL inside a string",
            b"{\"event_type\":100,\"app\":\"a\x00b\"}".to_vec(),
        ),
        ("a lone NUL", vec![0]),
    ];
    for (case, body) in cases {
        assert_error(app.post_raw(body).await, 400, 4001, "not valid JSON", case).await;
    }
    still_serving(&app, "after-bytes").await;
}

#[tokio::test]
async fn escaped_nul_characters_are_data_and_kept() {
    let app = spawn_app().await;
    let mut body = recording("nul-1");
    body["stream_id"] = "live\u{0}stream".into();
    assert_eq!(app.post_json(&body).await.status(), 200);
    assert_eq!(app.stored().await[0].event["stream_id"], "live\u{0}stream");
}

#[tokio::test]
async fn with_duplicate_keys_the_last_value_wins() {
    let app = spawn_app().await;
    let t = now() + 300;
    let body = format!(
        r#"{{"event_type":100,"file_id":"first","file_id":"last","t":{t},"sign":"wrong","sign":"{}"}}"#,
        sign_for(KEY, t)
    );
    assert_eq!(app.post_raw(body).await.status(), 200);
    assert_eq!(app.stored().await[0].event["file_id"], "last");
}

#[tokio::test]
async fn tens_of_thousands_of_fields_within_the_size_limit_are_accepted() {
    let app = spawn_app_with(|s| s.server.max_body_bytes = 1 << 20).await;
    let mut body = recording("wide-1");
    let fields = body.as_object_mut().unwrap();
    for n in 0..40_000 {
        fields.insert(format!("f{n}"), Value::from(n));
    }
    let received = fields.len() - 1; // all but `sign`
    let text = body.to_string();
    assert!(text.len() < 1 << 20);
    assert_eq!(app.post_raw(text).await.status(), 200);
    let record = app.stored().await.pop().unwrap();
    assert_eq!(record.event.len(), received);
    assert_eq!(record.recording().unwrap().unknown_fields.len(), 40_000);
    still_serving(&app, "after-wide").await;
}

#[tokio::test]
async fn a_full_spool_answers_503_never_200_and_accepts_again_once_space_returns() {
    let app = spawn_app_with(|s| {
        s.spool.max_bytes = 256 * 1024;
        s.spool.retention_secs = 0;
    })
    .await;
    let accepted = fill_until_refused(&app, "full", 2_000, 5).await;
    // Everything acknowledged is stored.
    let stored: Vec<String> = app.stored_file_ids().await;
    assert_eq!(stored, accepted);
    // Space returns: the log sink has delivered them, and retention (0 s here)
    // lets maintenance remove them; run its purge now rather than wait a minute.
    let last = app.stored().await.pop().unwrap().id;
    assert!(app.wait_for_state(&last, "console", "delivered").await);
    let purged = app
        .state
        .spool
        .purge_delivered(i64::MAX, 100_000)
        .await
        .unwrap();
    assert_eq!(purged, accepted.len());
    still_serving(&app, "after-space-returns").await;
}

/// A tmpfs of `size`, mounted for the life of the guard (needs root).
struct SmallFilesystem {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFilesystem {
    /// Mounts it, or fails the test saying why: the test that calls this
    /// runs only where the build found it could mount (see build.rs), or
    /// under CI, where it must.
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("could not run `mount`");
        assert!(
            output.status.success(),
            "could not mount a {size} tmpfs at {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Self { path, _dir: dir }
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

// Ignored where the build could not mount (not root, or no CAP_SYS_ADMIN):
// `cargo test` then reports it as ignored rather than passing it unrun.
#[tokio::test]
#[cfg_attr(
    not(recordhook_root_tests),
    ignore = "needs root with CAP_SYS_ADMIN to mount a tmpfs"
)]
async fn a_full_disk_answers_503_never_200_and_accepts_again_once_space_returns() {
    let fs = SmallFilesystem::mount("4m");
    let ballast = fs.path.join("ballast");
    std::fs::write(&ballast, vec![0u8; 2 * 1024 * 1024]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&dir);
    settings.spool.path = fs.path.join("spool.db");
    let app = spawn_app_in(dir, settings).await;

    let accepted = fill_until_refused(&app, "disk", 10_000, 3).await;
    eprintln!("disk full after {} callbacks", accepted.len());
    let ready = app.get("/readyz").await;
    assert_eq!(
        ready.status(),
        503,
        "readiness should fail while the disk is full"
    );

    // Space returns.
    std::fs::remove_file(&ballast).unwrap();
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    still_serving(&app, "after-disk-space-returns").await;
    let stored: Vec<String> = app.stored_file_ids().await;
    assert_eq!(
        &stored[..accepted.len()],
        &accepted[..],
        "everything acknowledged is stored"
    );
    let (_dir, _settings) = app.stop().await;
    drop(fs);
}
