//! Crash safety: the real binary is SIGKILLed while callbacks are in flight;
//! after a restart on the same spool every callback that was answered 200
//! reaches both the file and the forward target.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::binary::start_server;
use crate::helpers::*;
use crate::one_at_a_time;
use crate::target::Target;

const SENDERS: usize = 8;
const PER_SENDER: usize = 50;
/// Kill once this many callbacks have been acknowledged, so many are still in flight.
const KILL_AFTER: usize = 120;

fn file_ids_in_file(path: &std::path::Path) -> HashSet<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashSet::new();
    };
    text.lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("split line {line:?}: {err}"));
            record["event"]["file_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn file_ids_at_target(target: &Target) -> HashSet<String> {
    target
        .received()
        .iter()
        .map(|r| r.json()["event"]["file_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_callback_answered_200_is_delivered_after_a_sigkill_and_restart() {
    let _serial = one_at_a_time().await;
    let target = Target::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.jsonl");
    let sinks = format!(
        "[[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = {file:?}\n\
         [[sinks]]\nname = \"backend\"\ntype = \"forward\"\nurl = \"{}\"\nretry_initial_ms = 50\nretry_max_ms = 500\n",
        target.url
    );
    let server = start_server(&dir, &sinks);
    let url = format!("{}/callback", server.address);
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let client = reqwest::Client::new();
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (client, url, acknowledged) = (client.clone(), url.clone(), Arc::clone(&acknowledged));
        senders.push(tokio::spawn(async move {
            for n in 0..PER_SENDER {
                let file_id = format!("crash-{sender}-{n}");
                match client
                    .post(&url)
                    .body(recording(&file_id).to_string())
                    .send()
                    .await
                {
                    Ok(response) if response.status() == 200 => {
                        acknowledged.lock().unwrap().push(file_id)
                    }
                    Ok(response) => panic!("unexpected status {}", response.status()),
                    // The server is gone: what was in flight got no 200 and CSS would retry it.
                    Err(_) => break,
                }
            }
        }));
    }
    let reached = eventually(Duration::from_secs(60), || async {
        acknowledged.lock().unwrap().len() >= KILL_AFTER
    })
    .await;
    assert!(
        reached,
        "the server did not acknowledge {KILL_AFTER} callbacks"
    );
    server.kill();
    for sender in senders {
        sender.await.unwrap();
    }
    let acknowledged: HashSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    assert!(acknowledged.len() >= KILL_AFTER);
    assert!(
        acknowledged.len() < SENDERS * PER_SENDER,
        "the kill came after every callback"
    );

    let server = start_server(&dir, &sinks);
    let complete = eventually(Duration::from_secs(60), || async {
        acknowledged.is_subset(&file_ids_in_file(&file))
            && acknowledged.is_subset(&file_ids_at_target(&target))
    })
    .await;
    let in_file = file_ids_in_file(&file);
    let at_target = file_ids_at_target(&target);
    let missing_file: Vec<_> = acknowledged.difference(&in_file).collect();
    let missing_target: Vec<_> = acknowledged.difference(&at_target).collect();
    assert!(
        complete,
        "lost after a 200: file {missing_file:?}, target {missing_target:?}"
    );
    let (status, _) = server.terminate();
    assert!(status.success());
}
