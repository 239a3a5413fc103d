//! Crash safety: the real binary is SIGKILLed while callbacks are in flight.
//! After a restart on the same spool, every callback answered 200 reaches
//! both the file and the forward target; those that got no answer are sent
//! again, as CSS would, and are stored exactly once whether or not the dead
//! server had stored them. Whichever way the kill races the answers, the
//! test holds: it asserts nothing about where the kill landed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::binary::start_server;
use crate::helpers::*;
use crate::one_at_a_time;
use crate::target::Target;

const SENDERS: usize = 8;
const PER_SENDER: usize = 50;
/// Kill once this many callbacks have been acknowledged, so that (usually)
/// others are still in flight.
const KILL_AFTER: usize = 120;

/// What the senders saw before the kill.
#[derive(Default)]
struct Sent {
    /// Answered 200.
    acknowledged: Vec<String>,
    /// Sent but not answered (the connection died): CSS would retry them.
    unanswered: Vec<String>,
}

/// File ids of the complete lines in the file sink's file. A line without
/// its newline yet is being written (the server runs) and is left out; once
/// the server has stopped the file must end with one.
fn file_ids_in_file(path: &std::path::Path) -> HashSet<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashSet::new();
    };
    text.split_inclusive('\n')
        .filter_map(|line| line.strip_suffix('\n'))
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
    let sent = Arc::new(Mutex::new(Sent::default()));
    let client = reqwest::Client::new();
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (client, url, sent) = (client.clone(), url.clone(), Arc::clone(&sent));
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
                        sent.lock().unwrap().acknowledged.push(file_id)
                    }
                    Ok(response) => panic!("unexpected status {}", response.status()),
                    // The server is gone; this sender stops here.
                    Err(_) => {
                        sent.lock().unwrap().unanswered.push(file_id);
                        break;
                    }
                }
            }
        }));
    }
    let reached = eventually(Duration::from_secs(60), || async {
        sent.lock().unwrap().acknowledged.len() >= KILL_AFTER
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
    let Sent {
        acknowledged,
        unanswered,
    } = std::mem::take(&mut *sent.lock().unwrap());
    eprintln!(
        "killed with {} callbacks acknowledged, {} unanswered",
        acknowledged.len(),
        unanswered.len()
    );

    let server = start_server(&dir, &sinks);
    let url = format!("{}/callback", server.address);
    // CSS retries what got no 200, re-signed with a new `t`: each is stored
    // now, or recognised as stored before the kill; a 200 either way.
    for file_id in &unanswered {
        let mut body = recording(file_id);
        signed_at(&mut body, now() + 500);
        let response = client
            .post(&url)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "CSS's retry of {file_id}");
    }
    let expected: HashSet<String> = acknowledged.into_iter().chain(unanswered).collect();
    let complete = eventually(Duration::from_secs(60), || async {
        expected.is_subset(&file_ids_in_file(&file))
            && expected.is_subset(&file_ids_at_target(&target))
    })
    .await;
    let (status, _) = server.terminate();
    assert!(status.success());

    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.ends_with('\n'),
        "an unfinished line after a clean stop"
    );
    let in_file = file_ids_in_file(&file);
    let at_target = file_ids_at_target(&target);
    let missing_file: Vec<_> = expected.difference(&in_file).collect();
    let missing_target: Vec<_> = expected.difference(&at_target).collect();
    assert!(
        complete,
        "lost after a 200: file {missing_file:?}, target {missing_target:?}"
    );
    // Delivery is at least once: a record may reach a sink twice, but only
    // records that were sent reach it at all.
    let extra_file: Vec<_> = in_file.difference(&expected).collect();
    let extra_target: Vec<_> = at_target.difference(&expected).collect();
    assert!(
        extra_file.is_empty() && extra_target.is_empty(),
        "never sent, yet delivered: file {extra_file:?}, target {extra_target:?}"
    );

    // Each is in the spool exactly once; nothing that was never sent is.
    let spool = recordhook::spool::Spool::open_for_admin(&recordhook::spool::SpoolOptions {
        path: dir.path().join("spool.db"),
        postgres: None,
        dedup_window: std::time::Duration::from_secs(1),
        max_bytes: 0,
    })
    .await
    .unwrap();
    let mut stored: HashMap<String, usize> = HashMap::new();
    for record in spool.records().await.unwrap() {
        *stored
            .entry(record.event["file_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    spool.close().await;
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let stored: HashSet<String> = stored.into_keys().collect();
    assert_eq!(stored, expected, "the spool holds exactly what got a 200");
}
