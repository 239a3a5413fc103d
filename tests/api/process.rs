//! The `recordhook` binary as a user runs it: start-up refusals, logs, and
//! a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

const BINARY: &str = env!("CARGO_BIN_EXE_recordhook");

/// A `recordhook` command run outside the repository, so `config/default.toml`
/// is not picked up unless a test says so.
fn command(dir: &tempfile::TempDir) -> Command {
    let mut command = Command::new(BINARY);
    command
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

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

pub struct Server {
    child: Child,
    pub address: String,
    /// Log lines read while waiting for `recordhook listening`, that one included.
    startup_lines: Vec<String>,
    lines: std::sync::mpsc::Receiver<String>,
}

/// Starts the binary on a free port, with the key from the environment and
/// the config file named by RECORDHOOK_CONFIG (holding `extra`, e.g. sinks),
/// and waits for its `recordhook listening` log line.
pub fn start_server(dir: &tempfile::TempDir, extra: &str) -> Server {
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
        startup_lines: Vec::new(),
        lines,
    };
    // Other start-up lines (e.g. the dedup index loading) may come first.
    let deadline = Instant::now() + Duration::from_secs(20);
    let listening = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = server
            .lines
            .recv_timeout(left)
            .expect("no `recordhook listening` line within 20 s");
        let event: Value = serde_json::from_str(&line).unwrap();
        server.startup_lines.push(line);
        if event["message"] == "recordhook listening" {
            break event;
        }
    };
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
        let mut lines = std::mem::take(&mut self.startup_lines);
        lines.extend(self.lines.iter());
        (status, lines)
    }
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
    let server = start_server(&dir, &format!("[auth]\nkey_file = {key_file:?}\n"));
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
    let rotated = eventually(Duration::from_secs(10), || async {
        post_signed_with("rotated-key", "hup-3").await == 200
    })
    .await;
    assert!(rotated, "the rotated key was not accepted after SIGHUP");
    assert_eq!(post_signed_with("initial-key", "hup-4").await, 401);

    // A reload that fails (the key file is gone) keeps the keys in force.
    std::fs::remove_file(&key_file).unwrap();
    server.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post_signed_with("rotated-key", "hup-5").await, 200);

    let (status, lines) = server.terminate();
    assert!(status.success());
    assert!(
        lines.iter().any(|l| l.contains("callback keys reloaded")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("callback keys NOT reloaded") && l.contains("could not be read")),
        "{lines:#?}"
    );
    for line in &lines {
        assert!(
            !line.contains("initial-key") && !line.contains("rotated-key"),
            "a key leaked: {line}"
        );
    }
}
