//! What the `recordhook` binary prints on stdout: the log sink's record lines
//! whatever `log.level` says, and callbacks that are answered even when
//! nobody reads stdout. These need the real process's stdout, so they run
//! the binary.

use std::io::{BufRead, BufReader};
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

/// Starts the binary on a port of its choosing with its config file holding
/// `extra` (log level, sinks), reads its stdout up to the `recordhook
/// listening` line (which names the port: nothing picks a port for it, so no
/// other process can take it in between), and hands back the rest of stdout
/// unread. `extra` must keep that INFO line: a `log.level` of `warn` is
/// written `warn,recordhook::startup=info`.
async fn start(dir: &tempfile::TempDir, extra: &str) -> (Running, BufReader<ChildStdout>) {
    let config = path_in(dir, "recordhook.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[spool]\npath = {:?}\n{extra}",
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
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut running = Running {
        child,
        address: String::new(),
    };
    let (address, stdout) = tokio::task::spawn_blocking(move || {
        let mut stdout = stdout;
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "recordhook exited before listening"
            );
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && event["message"] == "recordhook listening"
            {
                return (event["address"].as_str().unwrap().to_owned(), stdout);
            }
        }
    })
    .await
    .unwrap();
    running.address = format!("http://{address}");
    (running, stdout)
}

/// Reads `stdout` line by line on a thread of its own.
fn lines_of(stdout: BufReader<ChildStdout>) -> Receiver<String> {
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
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
    let (server, stdout) = start(&dir, "[log]\nlevel = \"warn,recordhook::startup=info\"\n").await;
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

#[tokio::test]
async fn sigterm_ends_the_process_even_while_the_log_sink_waits_on_a_stalled_stdout() {
    let dir = tempfile::tempdir().unwrap();
    // The default `console` log sink and shutdown grace (10 s).
    let (server, stdout) = start(&dir, "").await;
    // Never read again: once the pipe is full the log sink's write blocks,
    // inside a delivery that no shutdown can cancel.
    let _unread = stdout;
    let client = reqwest::Client::new();
    let url = format!("{}/callback", server.address);
    // Record lines are a few hundred bytes: this is several pipes' worth.
    for n in 0..1_000 {
        let response = client
            .post(&url)
            .body(recording(&format!("stuck-{n}")).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // Proof that the log sink is stuck: deliveries are still pending.
    assert!(
        metric_at(
            &server.address,
            r#"recordhook_pending_deliveries{sink="console"}"#
        )
        .await
            > 0.0,
        "the log sink kept up: the pipe never filled"
    );
    let pid = server.child.id().to_string();
    let signalled = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(signalled.success());
    let mut server = server;
    let exited = tokio::task::spawn_blocking(move || {
        // The grace, plus the bounded waits for the log writer and the runtime.
        let deadline = Instant::now() + Duration::from_secs(45);
        while Instant::now() < deadline {
            if let Some(status) = server.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    })
    .await
    .unwrap();
    let status = exited.expect("still running 45 s after SIGTERM");
    assert!(status.success(), "{status:?}");
}
