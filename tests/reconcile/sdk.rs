//! The fake against Tencent's official Python SDK: `sdk_check.py` builds
//! requests with the SDK's models, signs them with the SDK's default TC3
//! signing, and parses the answers with its response models. If the fake
//! accepts what the SDK sends and the SDK reads what the fake answers, the
//! fake speaks Tencent's protocol, and recordhook's client can be tested
//! against it.
//!
//! The SDK lives in a virtualenv made once under `target/tmp` and reused;
//! the versions are pinned, so the signing code exercised is the one read.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::harness::Test;
use crate::tencent_fake::{FakeOptions, FakeTencent, SentCallback, StreamSession};
use crate::test;

/// The pinned SDK: the live models and the common signing code.
const SDK_PACKAGES: [&str; 2] = [
    "tencentcloud-sdk-python-live==3.1.195",
    "tencentcloud-sdk-python-common==3.1.195",
];
const SECRET_ID: &str = "AKIDsdkCheck00000000000000000000000001";
const SECRET_KEY: &str = "sdk-check-secret-key-000000000000001";
const TOKEN: &str = "sdk-check-session-token-0001";

pub fn tests() -> Vec<Test> {
    vec![test!(
        the_official_sdk_is_accepted_by_the_fake_and_its_models_parse_the_answers
    )]
}

/// Why the SDK test cannot run here, if it cannot: no `python3` able to make
/// a virtualenv with pip (unless one was already made).
pub fn missing() -> Option<String> {
    if venv_python().exists() {
        return None;
    }
    let probe = std::process::Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(status) if status.success() => None,
        Ok(_) => Some(
            "python3 has no venv/ensurepip module (Debian: apt-get install python3-venv)"
                .to_owned(),
        ),
        Err(err) => Some(format!("python3 cannot be run: {err}")),
    }
}

fn venv() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("tencent-sdk-venv")
}

fn venv_python() -> PathBuf {
    venv().join("bin").join("python")
}

/// Runs `command` to completion; panics with its output if it fails.
async fn run(what: &str, command: &mut Command) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|err| panic!("{what}: cannot start: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The virtualenv's python, with the pinned SDK installed.
async fn sdk_python() -> PathBuf {
    let python = venv_python();
    if !python.exists() {
        run(
            "python3 -m venv",
            Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg("--clear")
                .arg(venv()),
        )
        .await;
    }
    let installed = Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m; \
             print(m.version('tencentcloud-sdk-python-live'), \
             m.version('tencentcloud-sdk-python-common'))",
        ])
        .output()
        .await
        .unwrap();
    if String::from_utf8_lossy(&installed.stdout).trim() != "3.1.195 3.1.195" {
        run(
            "pip install the Tencent SDK",
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(SDK_PACKAGES),
        )
        .await;
    }
    python
}

fn callback_json(sent: &SentCallback) -> Value {
    json!({
        "stream_name": sent.stream_name,
        "event_type": sent.event_type,
        "event_time": sent.event_time,
        "request": sent.request,
        "response": sent.response,
        "response_time": sent.response_time,
        "result_code": sent.result_code,
    })
}

fn session_json(session: &StreamSession) -> Value {
    json!({
        "domain": session.domain,
        "app": session.app,
        "stream_name": session.stream_name,
        "start": session.start,
        "end": session.end,
        "client_ip": session.client_ip,
        "resolution": session.resolution,
        "stop_reason": session.stop_reason,
    })
}

async fn the_official_sdk_is_accepted_by_the_fake_and_its_models_parse_the_answers() {
    let python = sdk_python().await;
    let now = crate::signer::now();
    let fake = FakeTencent::start(FakeOptions::new(SECRET_ID, SECRET_KEY)).await;
    let token_fake = FakeTencent::start(FakeOptions {
        token: Some(TOKEN.to_owned()),
        ..FakeOptions::new(SECRET_ID, SECRET_KEY)
    })
    .await;
    token_fake.fail_next(1, 502);
    token_fake.throttle_next(1);

    // Callbacks for one stream inside a two-hour window: starts, a
    // recording, an end; a percent-encoded body, a Chinese one, an empty
    // one, a failed delivery. Others outside the window or for another
    // stream must not come back.
    let stream = "rc-sdk-stream";
    let window = (now - 7200, now - 60);
    let mut inside = Vec::new();
    for (index, event_type) in [1, 100, 1, 0, 100].into_iter().enumerate() {
        let index = i64::try_from(index).unwrap();
        let mut sent = SentCallback::new(stream, event_type, window.0 + 600 + index * 900);
        sent.response_time = sent.event_time + 1;
        sent.request = match index {
            0 => "%7B%22event_type%22%3A1%2C%22stream_id%22%3A%22rc-sdk-stream%22%7D".to_owned(),
            1 => r#"{"event_type":100,"stream_id":"rc-sdk-stream","备注":"录制"}"#.to_owned(),
            2 => String::new(),
            _ => format!(r#"{{"event_type":{event_type},"stream_id":"{stream}"}}"#),
        };
        sent.response = if index == 3 {
            "HTTP 502".to_owned()
        } else {
            r#"{"code":0}"#.to_owned()
        };
        sent.result_code = i64::from(index == 3);
        inside.push(sent);
    }
    // Seeded out of order, to see the fake sort by EventTime.
    for sent in inside.iter().rev() {
        fake.add_callback(sent.clone());
    }
    fake.add_callback(SentCallback::new(stream, 1, window.0 - 60));
    fake.add_callback(SentCallback::new(stream, 0, window.1 + 30));
    fake.add_callback(SentCallback::new("rc-sdk-stream-2", 1, window.0 + 700));

    // Sessions overlapping a six-hour window, newest end first: one live,
    // two ended; one ended before the window.
    let session_window = (now - 6 * 3600, now);
    let mut live = StreamSession::new("push.example.com", "live", "rc-sdk-c", now - 3600, None);
    live.client_ip = "198.51.100.3".to_owned();
    let mut second = StreamSession::new(
        "push.example.com",
        "live",
        "rc-sdk-b",
        now - 3 * 3600,
        Some(now - 2 * 3600),
    );
    second.stop_reason = "normal".to_owned();
    second.resolution = "1280*720".to_owned();
    let first = StreamSession::new(
        "push.example.com",
        "live",
        "rc-sdk-a",
        now - 5 * 3600 - 600,
        Some(now - 4 * 3600),
    );
    let sessions = [live, second, first];
    for session in sessions.iter().rev() {
        fake.add_stream(session.clone());
        token_fake.add_stream(session.clone());
    }
    fake.add_stream(StreamSession::new(
        "push.example.com",
        "live",
        "rc-sdk-old",
        now - 10 * 3600,
        Some(now - 9 * 3600),
    ));

    let case = json!({
        "endpoint": fake.host(),
        "secret_id": SECRET_ID,
        "secret_key": SECRET_KEY,
        "token_endpoint": token_fake.host(),
        "token": TOKEN,
        "token_faults": "http_502_then_throttled",
        "stream": stream,
        "callback_window": { "start": window.0, "end": window.1 },
        "callbacks": inside.iter().map(callback_json).collect::<Vec<_>>(),
        "session_window": { "start": session_window.0, "end": session_window.1 },
        "sessions": sessions.iter().map(session_json).collect::<Vec<_>>(),
    });
    let dir = tempfile::tempdir().unwrap();
    let case_path = dir.path().join("case.json");
    std::fs::write(&case_path, case.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tencent_fake/sdk_check.py");
    let mut command = Command::new(&python);
    command.arg(&script).arg(&case_path);
    // The SDK honours HTTP_PROXY for plain-HTTP endpoints: talk to the fake
    // directly.
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env_remove(name);
    }
    command
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1");
    let summary = run("sdk_check.py", &mut command).await;
    print!("{summary}");

    // What the fakes saw: the SDK's TC3 signature over content-type and host,
    // with the port in Host, JSON bodies, and no secret anywhere.
    for (which, fake) in [("fake", &fake), ("token fake", &token_fake)] {
        let requests = fake.requests();
        assert!(!requests.is_empty(), "the {which} saw no request");
        for request in &requests {
            assert_eq!(request.method, "POST", "{request:?}");
            assert_eq!(
                request.header("host"),
                Some(fake.host().as_str()),
                "{request:?}"
            );
            assert_eq!(
                request.header("content-type"),
                Some("application/json"),
                "{request:?}"
            );
            assert_eq!(
                request.header("x-tc-version"),
                Some("2018-08-01"),
                "{request:?}"
            );
            assert_eq!(
                request.header("authorization"),
                Some("present"),
                "{request:?}"
            );
            assert_eq!(
                request.signed_headers,
                ["content-type", "host"],
                "{request:?}"
            );
            let printed = format!("{request:?}");
            assert!(!printed.contains(SECRET_KEY), "{printed}");
            assert!(!printed.contains(TOKEN), "{printed}");
        }
    }
    let stats = fake.stats();
    assert_eq!(
        stats.total_auth_failures(),
        1,
        "only the wrong key fails: {stats:?}"
    );
    assert_eq!(
        stats.auth_failures.get("AuthFailure.SignatureFailure"),
        Some(&1),
        "{stats:?}"
    );
    assert!(
        stats.calls_to("DescribeCallbackRecordsList") >= 6,
        "{stats:?}"
    );
    assert!(
        stats.calls_to("DescribeLiveStreamEventList") >= 5,
        "{stats:?}"
    );
    let token_stats = token_fake.stats();
    assert_eq!(token_stats.injected_http_failures, 1, "{token_stats:?}");
    assert_eq!(token_stats.throttled, 1, "{token_stats:?}");
    assert_eq!(
        token_stats.auth_failures.get("AuthFailure.TokenFailure"),
        Some(&2),
        "{token_stats:?}"
    );
}
