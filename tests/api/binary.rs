//! The `recordhook` binary as a child process: started on a free port with a
//! config file in a temporary directory, its JSON log lines collected, and
//! stopped with SIGTERM or SIGKILL. Shared by `tests/api` and `tests/serial`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

const BINARY: &str = env!("CARGO_BIN_EXE_recordhook");

/// A `recordhook` command run outside the repository, so `config/default.toml`
/// is not picked up unless a test says so.
pub fn command(dir: &tempfile::TempDir) -> Command {
    let mut command = Command::new(BINARY);
    command
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

pub struct Server {
    child: Child,
    pub address: String,
    /// Log lines already read by [`Server::wait_for_log`], in order.
    seen: Vec<String>,
    lines: std::sync::mpsc::Receiver<String>,
}

/// Starts the binary on a free port, with the key from the environment and
/// the config file named by RECORDHOOK_CONFIG (holding `extra`, e.g. sinks),
/// and waits for its `recordhook listening` log line.
pub fn start_server(dir: &tempfile::TempDir, extra: &str) -> Server {
    start_server_with_env(dir, extra, &[])
}

/// [`start_server`], with more environment variables (`env`).
pub fn start_server_with_env(dir: &tempfile::TempDir, extra: &str, env: &[(&str, &str)]) -> Server {
    let config = path_in(dir, "recordhook.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[spool]\npath = {:?}\n{extra}",
            path_in(dir, "spool.db")
        ),
    )
    .unwrap();
    let mut child = command(dir)
        .env("RECORDHOOK_CONFIG", &config)
        .env("RECORDHOOK__AUTH__KEYS", KEY)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut server = Server {
        child,
        address: String::new(),
        seen: Vec::new(),
        lines,
    };
    // Other start-up lines (e.g. the dedup index loading) may come first.
    let listening = server.wait_for_log("recordhook listening");
    server.address = format!("http://{}", listening["address"].as_str().unwrap());
    server
}

impl Drop for Server {
    /// A failing test must not leave its server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Waits up to 20 s for the log line whose `message` is `message` and
    /// returns it; the lines before it are kept for [`Server::terminate`].
    /// How a test learns that the server got past a point (a reload, say)
    /// before asserting what must not have happened.
    pub fn wait_for_log(&mut self, message: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `{message}` log line within 20 s"));
            let event: Value = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("a log line that is not JSON ({err}): {line}"));
            self.seen.push(line);
            if event["message"] == message {
                return event;
            }
        }
    }

    /// Posts `body` as JSON to the server's `/callback` and returns the
    /// status of the answer. The future does not borrow the server (whose
    /// log receiver is not `Sync`), so a test may hold it across threads.
    pub fn post_callback(&self, body: &Value) -> impl Future<Output = u16> + Send + use<> {
        let request = reqwest::Client::new()
            .post(format!("{}/callback", self.address))
            .json(body);
        async move { request.send().await.unwrap().status().as_u16() }
    }

    /// Resident memory of the process, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Kills the process outright (SIGKILL), as a crash would.
    #[allow(dead_code)] // used by tests/serial and tests/spool
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends `signal` (e.g. `-HUP`) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Every log line read so far and any waiting, without stopping it.
    #[allow(dead_code)] // used by tests/reconcile
    pub fn lines_so_far(&mut self) -> Vec<String> {
        self.seen.extend(self.lines.try_iter());
        self.seen.clone()
    }

    /// Sends SIGTERM, waits for the exit, and returns the status and every log line.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "recordhook did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut lines = std::mem::take(&mut self.seen);
        lines.extend(self.lines.iter());
        (status, lines)
    }
}
