//! What the `recordhook` binary prints on stdout: the log sink's record lines
//! whatever `log.level` says, and callbacks that are answered even when
//! nobody reads stdout. These need the real process's stdout, so they run
//! the binary.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::helpers::*;

const BINARY: &str = env!("CARGO_BIN_EXE_recordhook");

/// The binary, killed when the test ends however it ends.
struct Running {
    child: Child,
    address: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1. With `log.level = "warn"` the `recordhook
/// listening` line (INFO) that names the port is filtered out, so the port is
/// chosen here; the tiny window in which another process could take it is
/// accepted in a test.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary with its config file holding `extra` (log level,
/// sinks), stdout piped to the test, and waits until `/healthz` answers.
async fn start(dir: &tempfile::TempDir, extra: &str) -> (Running, ChildStdout) {
    let port = free_port();
    let config = path_in(dir, "recordhook.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[spool]\npath = {:?}\n{extra}",
            path_in(dir, "spool.db")
        ),
    )
    .unwrap();
    let mut child = Command::new(BINARY)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RECORDHOOK_CONFIG", &config)
        .env("RECORDHOOK__AUTH__KEYS", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running {
        child,
        address: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let healthz = format!("{}/healthz", running.address);
    let up = eventually(Duration::from_secs(20), || async {
        client
            .get(&healthz)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(up, "recordhook did not answer /healthz within 20 s");
    (running, stdout)
}

/// Reads `stdout` line by line on a thread of its own.
fn lines_of(stdout: ChildStdout) -> Receiver<String> {
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Waits up to `timeout` for a line that is a JSON object matching `wanted`.
fn wait_for_line(
    lines: &Receiver<String>,
    timeout: Duration,
    wanted: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).ok()?;
        if let Ok(value) = serde_json::from_str::<Value>(&line)
            && wanted(&value)
        {
            return Some(value);
        }
    }
}

#[tokio::test]
async fn the_log_sink_prints_its_record_line_when_log_level_is_warn() {
    let dir = tempfile::tempdir().unwrap();
    let (server, stdout) = start(&dir, "[log]\nlevel = \"warn\"\n").await;
    let lines = lines_of(stdout);
    let response = reqwest::Client::new()
        .post(format!("{}/callback", server.address))
        .body(recording("printed-at-warn").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let record = tokio::task::spawn_blocking(move || {
        wait_for_line(&lines, Duration::from_secs(20), |line| {
            line["message"] == "record" && line["file_id"] == "printed-at-warn"
        })
    })
    .await
    .unwrap()
    .expect("no record line within 20 s");
    assert_eq!(record["sink"], "console");
    assert_eq!(record["level"], "INFO");
    assert_eq!(record["target"], "recordhook::record");
    assert_eq!(record["stream_id"], "stream_test");
}

#[tokio::test]
async fn a_stalled_stdout_never_stalls_a_callback() {
    let dir = tempfile::tempdir().unwrap();
    // A file sink, not the log sink: the log sink's delivery rightly waits
    // for stdout; the callbacks must not.
    let sinks = format!(
        "[[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = {:?}\n",
        path_in(&dir, "records.jsonl")
    );
    let (server, stdout) = start(&dir, &sinks).await;
    // Kept open and never read: once the pipe's 64 KiB are full, every write
    // to stdout blocks (a closed pipe would fail writes instead).
    let _unread = stdout;

    // Each callback logs at least one line of a few hundred bytes: 2,000 of
    // them are several times what the pipe holds.
    const CALLBACKS: usize = 2_000;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("{}/callback", server.address);
    let statuses: Vec<u16> = tokio::time::timeout(
        Duration::from_secs(120),
        futures_util::stream::iter(0..CALLBACKS)
            .map(|n| {
                let request = client
                    .post(&url)
                    .body(recording(&format!("stalled-{n}")).to_string());
                async move {
                    request
                        .send()
                        .await
                        .map_or(0, |response| response.status().as_u16())
                }
            })
            .buffer_unordered(16)
            .collect(),
    )
    .await
    .expect("callbacks stalled behind a stdout nobody reads");
    let answered = statuses.iter().filter(|&&status| status == 200).count();
    assert_eq!(answered, CALLBACKS, "not every callback was answered 200");
}
