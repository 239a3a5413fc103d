//! recordhook against the fake: the real binary, a real SQLite spool, a
//! real forward target. Callbacks CSS "sent" while recordhook could not
//! take them are seeded into the fake as sent-and-failed; reconciliation
//! must recover each exactly once, through the same accept path as a live
//! callback, and never leak the API key.

use std::collections::HashMap;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::binary::{Server, command, start_server_with_env};
use crate::harness::Test;
use crate::helpers::{KEY, eventually, metric_at, now, path_in, recording, signed_at};
use crate::target::Target;
use crate::tencent_fake::{
    DESCRIBE_CALLBACK_RECORDS_LIST, FakeOptions, FakeTencent, SentCallback, StreamSession,
};
use crate::test;

pub fn tests() -> Vec<Test> {
    vec![
        test!(a_receiver_down_while_css_sent_50_recordings_recovers_each_once_and_a_late_live_retry_is_a_duplicate),
        test!(callbacks_that_arrived_live_are_reported_present_and_a_dry_run_stores_nothing),
        test!(unrecoverable_records_become_gaps_shown_by_the_admin_api_and_counted_once),
        test!(throttling_is_retried_and_refused_credentials_stop_the_run_with_a_clear_message),
        test!(a_run_killed_midway_resumes_from_its_checkpoints),
        test!(a_one_off_run_over_a_short_window_never_marks_earlier_time_checked),
    ]
}

pub const SECRET_ID: &str = "AKIDrecordhookReconcileTest000000001";
pub const SECRET_KEY: &str = "reconcile-test-secret-key-never-logged";

/// A fake that knows [`SECRET_ID`] and [`SECRET_KEY`].
pub async fn fake() -> FakeTencent {
    FakeTencent::start(FakeOptions::new(SECRET_ID, SECRET_KEY)).await
}

/// `[reconcile]` against `fake` (the key comes from the environment),
/// checking the last hour up to now, and a forward sink to `target`.
pub fn config(fake: &FakeTencent, target: &Target, extra_reconcile: &str) -> String {
    format!(
        "[reconcile]\nsecret_id = \"{SECRET_ID}\"\nendpoint = \"{}\"\nlag_secs = 0\n\
         lookback_secs = 3600\nrequests_per_sec = 20\n{extra_reconcile}\n\
         [[sinks]]\nname = \"backend\"\ntype = \"forward\"\nurl = \"{}\"\n\
         retry_initial_ms = 50\nretry_max_ms = 500\n",
        fake.endpoint(),
        target.url
    )
}

/// The environment that gives the binary the API key.
pub const KEY_ENV: (&str, &str) = ("RECORDHOOK__RECONCILE__SECRET_KEY", SECRET_KEY);

/// A recording callback of `stream` as CSS sent it at `sent_at` (signed
/// then, so long expired now).
pub fn sent_recording(stream: &str, file_id: &str, sent_at: i64) -> Value {
    let mut body = recording(file_id);
    body["stream_id"] = stream.into();
    body["channel_id"] = stream.into();
    signed_at(&mut body, sent_at + 600);
    body
}

/// What the fake holds for a recording CSS sent and saw fail.
pub fn failed_delivery(stream: &str, body: &Value, sent_at: i64) -> SentCallback {
    SentCallback {
        request: body.to_string(),
        response: "connect timeout".into(),
        result_code: -1,
        ..SentCallback::new(stream, 100, sent_at)
    }
}

/// Runs `recordhook reconcile ARGS` with the config in `dir`; the key from
/// the environment unless `key` says otherwise.
/// (Async: the fake answers on this test's runtime, which must not be
/// blocked while the command runs.)
pub async fn reconcile_cli(dir: &tempfile::TempDir, key: &str, args: &[&str]) -> Output {
    let mut command = command(dir);
    command
        .env("RECORDHOOK_CONFIG", path_in(dir, "recordhook.toml"))
        .env("RECORDHOOK__RECONCILE__SECRET_KEY", key)
        .arg("reconcile")
        .args(args);
    tokio::process::Command::from(command)
        .output()
        .await
        .unwrap()
}

/// Writes the config file `start_server` would write, for the CLI alone.
pub fn write_config(dir: &tempfile::TempDir, extra: &str) {
    std::fs::write(
        path_in(dir, "recordhook.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[spool]\npath = {:?}\n{extra}",
            path_in(dir, "spool.db")
        ),
    )
    .unwrap();
}

/// The JSON report a `--json` run printed.
pub fn report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "no JSON report ({err}); stdout: {}; stderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Asserts that no line of `text` carries the API key.
pub fn assert_no_secret(text: &str, what: &str) {
    assert!(
        !text.contains(SECRET_KEY),
        "the API key appears in {what}:\n{text}"
    );
}

/// The admin listener's `http://address`, from its start-up log line.
fn admin_address(server: &mut Server) -> String {
    let line = server
        .lines_so_far()
        .into_iter()
        .find(|line| line.contains("admin listener (API, console, /metrics)"))
        .expect("no admin listener log line");
    let event: Value = serde_json::from_str(&line).unwrap();
    format!("http://{}", event["address"].as_str().unwrap())
}

/// How many times the target received each file id, and the records.
fn received_by_file(target: &Target) -> HashMap<String, Vec<Value>> {
    let mut by_file: HashMap<String, Vec<Value>> = HashMap::new();
    for received in target.received() {
        let record = received.json();
        let file_id = record["event"]["file_id"].as_str().unwrap().to_owned();
        by_file.entry(file_id).or_default().push(record);
    }
    by_file
}

async fn a_receiver_down_while_css_sent_50_recordings_recovers_each_once_and_a_late_live_retry_is_a_duplicate()
 {
    let fake = fake().await;
    let target = Target::start().await;
    let start = now() - 1_500;
    fake.add_stream(StreamSession::new(
        "push.example.com",
        "live",
        "room-a",
        start,
        Some(now() - 300),
    ));
    let mut bodies = Vec::new();
    for n in 0..50 {
        let sent_at = start + 100 + n * 20;
        let body = sent_recording("room-a", &format!("down-{n}"), sent_at);
        fake.add_callback(failed_delivery("room-a", &body, sent_at));
        if n < 5 {
            // Tencent lists each attempt; CSS's retries of one callback,
            // re-signed a minute apart, are one callback.
            let mut retry = body.clone();
            signed_at(&mut retry, sent_at + 660);
            fake.add_callback(failed_delivery("room-a", &retry, sent_at + 60));
        }
        bodies.push(body);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        start_server_with_env(&dir, &config(&fake, &target, "enabled = true"), &[KEY_ENV]);
    let finished = server.wait_for_log("reconciliation run finished");
    assert_eq!(finished["sent"], 50, "{finished}");
    assert_eq!(finished["recovered"], 50, "{finished}");
    assert_eq!(finished["present"], 0, "{finished}");
    assert!(
        eventually(Duration::from_secs(20), || async {
            target.received().len() >= 50
        })
        .await,
        "the recovered recordings never all reached the target"
    );
    // CSS's late retry of one of them, re-signed, arrives after the recovery.
    let mut retry = bodies[7].clone();
    signed_at(&mut retry, now() + 600);
    assert_eq!(server.post_callback(&retry).await, 200);
    server.wait_for_log("duplicate callback: already accepted, not stored again");
    // A fresh callback after it: once it is delivered, anything the retry
    // could have caused would have been delivered before it.
    let fresh = recording("after-the-retry");
    assert_eq!(server.post_callback(&fresh).await, 200);
    assert!(
        eventually(Duration::from_secs(20), || async {
            received_by_file(&target).contains_key("after-the-retry")
        })
        .await
    );
    let by_file = received_by_file(&target);
    assert_eq!(by_file.len(), 51);
    for n in 0..50 {
        let records = &by_file[&format!("down-{n}")];
        assert_eq!(
            records.len(),
            1,
            "down-{n} delivered {} times",
            records.len()
        );
        assert_eq!(records[0]["source"], "reconciled");
        assert_eq!(records[0]["reconciled"]["result_code"], -1);
        assert!(records[0]["reconciled"]["request_id"].as_str().is_some());
        assert!(records[0]["event"].get("sign").is_none());
    }
    assert!(by_file["after-the-retry"][0].get("source").is_none());
    assert_eq!(
        metric_at(
            &server.address,
            r#"recordhook_reconcile_callbacks_total{event_type="record",outcome="recovered"}"#
        )
        .await,
        50.0
    );
    assert_eq!(fake.stats().total_auth_failures(), 0);
    let (status, lines) = server.terminate();
    assert!(status.success());
    assert_no_secret(&lines.join("\n"), "the server's log");
}

async fn callbacks_that_arrived_live_are_reported_present_and_a_dry_run_stores_nothing() {
    let fake = fake().await;
    let target = Target::start().await;
    let start = now() - 1_200;
    fake.add_stream(StreamSession::new(
        "push.example.com",
        "live",
        "room-b",
        start,
        Some(now() - 600),
    ));
    let dir = tempfile::tempdir().unwrap();
    let config = config(&fake, &target, "");
    // Two callbacks arrive live. CSS counted the second failed (our answer
    // was late); the third never arrived.
    let server = start_server_with_env(&dir, &config, &[KEY_ENV]);
    let live: Vec<Value> = (0..2)
        .map(|n| sent_recording("room-b", &format!("live-{n}"), start + 60 + n))
        .collect();
    for body in &live {
        let mut fresh = body.clone();
        signed_at(&mut fresh, now() + 600);
        assert_eq!(server.post_callback(&fresh).await, 200);
    }
    assert!(
        eventually(Duration::from_secs(20), || async {
            target.received().len() == 2
        })
        .await
    );
    let (status, _) = server.terminate();
    assert!(status.success());
    fake.add_callback(SentCallback {
        request: live[0].to_string(),
        result_code: 0,
        ..SentCallback::new("room-b", 100, start + 60)
    });
    fake.add_callback(SentCallback {
        request: live[1].to_string(),
        result_code: 502,
        ..SentCallback::new("room-b", 100, start + 61)
    });
    let missing = sent_recording("room-b", "never-arrived", start + 120);
    fake.add_callback(failed_delivery("room-b", &missing, start + 120));
    write_config(&dir, &config);

    let dry = reconcile_cli(&dir, SECRET_KEY, &["--since", "1h", "--dry-run", "--json"]).await;
    assert_eq!(
        dry.status.code(),
        Some(2),
        "a dry run leaves one missing; stdout: {}; stderr: {}",
        String::from_utf8_lossy(&dry.stdout),
        String::from_utf8_lossy(&dry.stderr)
    );
    let counts = &report(&dry)["by_type"]["100"];
    assert_eq!(counts["sent"], 3, "{counts}");
    assert_eq!(counts["present"], 2, "{counts}");
    assert_eq!(counts["missing"], 1, "{counts}");
    assert_eq!(counts["recovered"], 0, "{counts}");
    assert_eq!(counts["failed_at_css_but_present"], 1, "{counts}");

    let real = reconcile_cli(&dir, SECRET_KEY, &["--since", "1h", "--json"]).await;
    assert_eq!(
        real.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&real.stderr)
    );
    let counts = &report(&real)["by_type"]["100"];
    assert_eq!(
        counts["recovered"], 1,
        "the dry run stored nothing: {counts}"
    );
    assert_eq!(counts["present"], 2, "{counts}");
    let table = reconcile_cli(&dir, SECRET_KEY, &["--since", "1h"]).await;
    assert_eq!(table.status.code(), Some(0));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines()
            .any(|line| line.starts_with("100 record")
                && line.split_whitespace().nth(3) == Some("3")),
        "the third run has all three: {text}"
    );
    for output in [&dry, &real, &table] {
        assert_no_secret(&String::from_utf8_lossy(&output.stdout), "the report");
        assert_no_secret(&String::from_utf8_lossy(&output.stderr), "the CLI's log");
    }
    // The server delivers what the command stored, and nothing twice.
    let server = start_server_with_env(&dir, &config, &[KEY_ENV]);
    assert!(
        eventually(Duration::from_secs(20), || async {
            received_by_file(&target).contains_key("never-arrived")
        })
        .await
    );
    let by_file = received_by_file(&target);
    assert!(
        by_file.values().all(|records| records.len() == 1),
        "{by_file:?}"
    );
    assert_eq!(by_file.len(), 3);
    drop(server);
}

async fn unrecoverable_records_become_gaps_shown_by_the_admin_api_and_counted_once() {
    let fake = fake().await;
    let target = Target::start().await;
    let start = now() - 1_000;
    fake.add_stream(StreamSession::new(
        "push.example.com",
        "live",
        "room-c",
        start,
        None,
    ));
    fake.add_callback(SentCallback {
        result_code: -1,
        ..SentCallback::new("room-c", 100, start + 10)
    });
    fake.add_callback(SentCallback {
        request: "%7B%22event_type%22%3A100%2C%22cut".into(),
        result_code: -1,
        ..SentCallback::new("room-c", 0, start + 20)
    });
    let good = sent_recording("room-c", "recoverable", start + 30);
    fake.add_callback(failed_delivery("room-c", &good, start + 30));
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}[admin]\nlisten = \"127.0.0.1:0\"\nallow_loopback_without_token = true\n",
        config(&fake, &target, "enabled = true")
    );
    let mut server = start_server_with_env(&dir, &config, &[KEY_ENV]);
    let admin = admin_address(&mut server);
    let finished = server.wait_for_log("reconciliation run finished");
    assert_eq!(finished["unrecoverable"], 2, "{finished}");
    assert_eq!(finished["recovered"], 1, "{finished}");
    server.wait_for_log("reconciliation found callbacks it could not recover (see the gaps in the console or GET /api/v1/reconciliation)");
    let view: Value = reqwest::get(format!("{admin}/api/v1/reconciliation"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["gap_count"], 2, "{view}");
    let reasons: Vec<&str> = view["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|gap| gap["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("no request body")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not a callback")),
        "{reasons:?}"
    );
    assert_eq!(view["runs"][0]["status"], "ok", "{view}");
    assert_eq!(view["settings"]["enabled"], true);
    assert!(!view.to_string().contains(SECRET_KEY));
    assert_eq!(metric_at(&admin, "recordhook_reconcile_gaps").await, 2.0);
    // The recovered one carries its source on the events page.
    let page: Value = reqwest::get(format!("{admin}/api/v1/events?source=reconciled"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["items"][0]["source"], "reconciled");
    let (status, lines) = server.terminate();
    assert!(status.success());
    assert_no_secret(&lines.join("\n"), "the server's log");
    // A one-off run over the same window finds the same gaps: not twice.
    write_config(&dir, &config);
    let again = reconcile_cli(&dir, SECRET_KEY, &["--since", "1h", "--json"]).await;
    assert_eq!(again.status.code(), Some(2), "gaps remain missing");
    assert_eq!(report(&again)["by_type"]["100"]["present"], 1);
    let mut server = start_server_with_env(&dir, &config, &[KEY_ENV]);
    let admin = admin_address(&mut server);
    let view: Value = reqwest::get(format!("{admin}/api/v1/reconciliation"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["gap_count"], 2, "{view}");
}

async fn throttling_is_retried_and_refused_credentials_stop_the_run_with_a_clear_message() {
    let fake = fake().await;
    let target = Target::start().await;
    let start = now() - 900;
    fake.add_stream(StreamSession::new(
        "push.example.com",
        "live",
        "room-d",
        start,
        Some(now() - 600),
    ));
    let body = sent_recording("room-d", "throttled", start + 5);
    fake.add_callback(failed_delivery("room-d", &body, start + 5));
    let dir = tempfile::tempdir().unwrap();
    write_config(&dir, &config(&fake, &target, ""));
    fake.throttle_next(2);
    let run = reconcile_cli(&dir, SECRET_KEY, &["--since", "1h", "--json"]).await;
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(report(&run)["by_type"]["100"]["recovered"], 1);
    assert_eq!(fake.stats().throttled, 2);

    let refused = reconcile_cli(&dir, "a-wrong-secret-key", &["--since", "1h"]).await;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("refused the credentials"), "{stderr}");
    assert!(stderr.contains("AuthFailure.SignatureFailure"), "{stderr}");
    assert!(!stderr.contains("a-wrong-secret-key"), "{stderr}");
    assert_eq!(
        fake.stats().total_auth_failures(),
        1,
        "an auth failure is not retried"
    );
    assert_no_secret(&String::from_utf8_lossy(&run.stderr), "the CLI's log");
}

async fn a_run_killed_midway_resumes_from_its_checkpoints() {
    let fake = fake().await;
    let target = Target::start().await;
    let start = now() - 1_800;
    const STREAMS: usize = 24;
    for n in 0..STREAMS {
        let stream = format!("room-k{n}");
        fake.add_stream(StreamSession::new(
            "push.example.com",
            "live",
            &stream,
            start,
            Some(now() - 600),
        ));
        let body = sent_recording(&stream, &format!("killed-{n}"), start + 10);
        fake.add_callback(failed_delivery(&stream, &body, start + 10));
    }
    let dir = tempfile::tempdir().unwrap();
    // Two requests a second: the run takes about 12 s, long enough to kill.
    // (The lease the killed process held is dropped when the next one opens
    // the SQLite spool, which only one process may have open.)
    let config = config(&fake, &target, "enabled = true")
        .replace("requests_per_sec = 20", "requests_per_sec = 2");
    let server = start_server_with_env(&dir, &config, &[KEY_ENV]);
    assert!(
        eventually(Duration::from_secs(30), || async {
            fake.stats().calls_to(DESCRIBE_CALLBACK_RECORDS_LIST) >= 12
        })
        .await
    );
    server.kill();
    assert!(
        fake.stats().calls_to(DESCRIBE_CALLBACK_RECORDS_LIST) < STREAMS as u64,
        "the run finished before it was killed"
    );
    // What the killed run recovered is what its spool holds: its last log
    // lines may have died with it, still queued for the log thread.
    let recovered_before = reconciled_in_spool(&dir).await;
    let mut server = start_server_with_env(&dir, &config, &[KEY_ENV]);
    let address = server.address.clone();
    assert!(
        eventually(Duration::from_secs(60), || {
            let address = address.clone();
            async move {
                metric_at(&address, r#"recordhook_reconcile_runs_total{outcome="ok"}"#).await >= 1.0
            }
        })
        .await,
        "the restarted server's run never finished"
    );
    let finished = server.wait_for_log("reconciliation run finished");
    // The second run asks about every stream again, but only for the time
    // after each finished stream's checkpoint: a record the first run
    // recovered is not downloaded again (it would count as present). Only
    // a stream caught between storing and checkpointing (8 are worked on
    // at once) may be.
    let present = finished["present"].as_u64().unwrap() as usize;
    let recovered_after = finished["recovered"].as_u64().unwrap() as usize;
    assert!(
        recovered_before >= 10,
        "{recovered_before} recovered before the kill"
    );
    assert!(present <= 8, "{finished}");
    assert_eq!(recovered_before + recovered_after, STREAMS, "{finished}");
    assert!(
        eventually(Duration::from_secs(20), || async {
            received_by_file(&target).len() == STREAMS
        })
        .await,
        "{finished}"
    );
    // The killed run is closed in the history, not shown running for ever.
    let (status, _) = server.terminate();
    assert!(status.success());
    write_config(&dir, &config);
    let history = crate::helpers::path_in(&dir, "spool.db");
    let spool = recordhook::spool::Spool::open_for_admin(&recordhook::spool::SpoolOptions {
        path: history,
        postgres: None,
        dedup_window: Duration::from_secs(86_400),
        max_bytes: 0,
    })
    .await
    .unwrap();
    let runs = spool.reconcile_runs(10).await.unwrap();
    let statuses: Vec<&str> = runs.iter().map(|run| run.status.as_str()).collect();
    assert_eq!(statuses, ["ok", "interrupted"], "{runs:?}");
    spool.close().await;
    // (A delivery the kill cut short between the target's answer and the
    // spool's settlement is made again: at least once, as everywhere.)
    let _ = KEY;
}

/// Records the spool in `dir` holds that reconciliation recovered (no
/// server may have it open).
async fn reconciled_in_spool(dir: &tempfile::TempDir) -> usize {
    let spool = recordhook::spool::Spool::open_for_admin(&recordhook::spool::SpoolOptions {
        path: crate::helpers::path_in(dir, "spool.db"),
        postgres: None,
        dedup_window: Duration::from_secs(86_400),
        max_bytes: 0,
    })
    .await
    .unwrap();
    let records = spool.records().await.unwrap();
    spool.close().await;
    records
        .iter()
        .filter(|record| !record.source.is_live())
        .count()
}

async fn a_one_off_run_over_a_short_window_never_marks_earlier_time_checked() {
    let fake = fake().await;
    let target = Target::start().await;
    let start = now() - 3_000;
    fake.add_stream(StreamSession::new(
        "push.example.com",
        "live",
        "room-e",
        start,
        Some(now() - 200),
    ));
    let old = sent_recording("room-e", "older-than-ten-minutes", start + 200);
    fake.add_callback(failed_delivery("room-e", &old, start + 200));
    // An attempt CSS counted delivered, whose body Tencent did not keep.
    fake.add_callback(SentCallback {
        result_code: 0,
        ..SentCallback::new("room-e", 200, start + 300)
    });
    let dir = tempfile::tempdir().unwrap();
    // A dedup window of two hours: no run may look further back than one.
    write_config(
        &dir,
        &format!("dedup_window_secs = 7200\n{}", config(&fake, &target, "")),
    );
    let short = reconcile_cli(&dir, SECRET_KEY, &["--since", "10m", "--json"]).await;
    assert_eq!(
        short.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );
    assert_eq!(
        report(&short)["by_type"],
        serde_json::json!({}),
        "nothing in ten minutes"
    );
    // A run resuming from the checkpoints still covers the hour before.
    let resumed = reconcile_cli(&dir, SECRET_KEY, &["--resume", "--json"]).await;
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let by_type = &report(&resumed)["by_type"];
    assert_eq!(by_type["100"]["recovered"], 1, "{by_type}");
    assert_eq!(by_type["200"]["present"], 1, "{by_type}");
    assert_eq!(by_type["200"]["unrecoverable"], 0, "{by_type}");
    // --since beyond the dedup window is cut to an hour inside it.
    let far = reconcile_cli(&dir, SECRET_KEY, &["--since", "5h", "--dry-run", "--json"]).await;
    let window_start = report(&far)["window_start"].as_str().unwrap().to_owned();
    let start_secs = humantime::parse_rfc3339(&window_start)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        start_secs >= now() - 3_600 - 5,
        "the window starts at {window_start}, beyond the dedup window"
    );
}
