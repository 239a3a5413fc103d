//! A spool that stays full while callbacks keep coming, seen from outside
//! the real binary: every callback gets 503, and neither the dedup memory nor
//! the process's resident memory grows with them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::*;

/// The binary, killed when the test ends however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `toml` as its config file and returns it with
/// its address, read from its `recordhook listening` log line. Its output
/// keeps being read (and dropped) so the process never blocks on it.
fn start(dir: &tempfile::TempDir, toml: &str) -> (Running, String) {
    let config = path_in(dir, "recordhook.toml");
    std::fs::write(&config, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_recordhook"))
        .current_dir(dir.path())
        .env_clear()
        .env("RECORDHOOK_CONFIG", &config)
        .env("RECORDHOOK__AUTH__KEYS", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("recordhook listening")
                && let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(address) = entry["address"].as_str()
            {
                let _ = found.send(address.to_owned());
            }
        }
    });
    let address = address
        .recv_timeout(Duration::from_secs(60))
        .expect("the server did not log its address");
    (Running(child), format!("http://{address}"))
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The value of the unlabelled metric `name`.
async fn metric(client: &reqwest::Client, address: &str, name: &str) -> u64 {
    let text = client
        .get(format!("{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// POSTs a fresh recording callback and returns the status.
async fn post(client: &reqwest::Client, address: &str, file_id: &str) -> u16 {
    client
        .post(format!("{address}/callback"))
        .json(&recording(file_id))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_full_spool_refuses_callbacks_without_growing_the_dedup_index_or_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address) = start(
        &dir,
        "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"info\"\n\
         [spool]\nmax_bytes = 262144\n\
         [[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = \"records.jsonl\"\n",
    );
    let client = reqwest::Client::new();
    let mut accepted = 0;
    loop {
        match post(&client, &address, &format!("fill-{accepted}")).await {
            200 => accepted += 1,
            503 => break,
            other => panic!("unexpected status {other}"),
        }
        assert!(accepted < 10_000, "the spool never filled");
    }
    assert!(accepted > 0, "the spool was full before the first callback");
    // Warm up the allocator and connection pools on refusals, then measure.
    for n in 0..300 {
        assert_eq!(post(&client, &address, &format!("warm-{n}")).await, 503);
    }
    let entries = metric(&client, &address, "recordhook_dedup_index_entries").await;
    assert_eq!(entries, accepted);
    let rss_before = rss_kib(server.0.id());
    for n in 0..3_000 {
        assert_eq!(post(&client, &address, &format!("refused-{n}")).await, 503);
    }
    assert_eq!(
        metric(&client, &address, "recordhook_dedup_index_entries").await,
        entries,
        "refused callbacks left entries in the dedup index"
    );
    let grown = rss_kib(server.0.id()).saturating_sub(rss_before);
    assert!(grown < 8 * 1024, "resident memory grew by {grown} KiB");
}
