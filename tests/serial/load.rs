//! The real binary under sustained pressure: a flood of forged callbacks, and
//! a forward target that stays down while callbacks keep coming. Counts and
//! durations are bounded; nothing here asserts a speed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::binary::{Server, start_server};
use crate::helpers::*;
use crate::one_at_a_time;
use crate::target::Target;

const MIB: u64 = 1024;

/// Sends `count` callbacks built by `body`, `concurrency` at a time; returns the statuses.
async fn send_many(
    url: &str,
    count: usize,
    concurrency: usize,
    body: impl Fn(usize) -> Value,
) -> Vec<u16> {
    let client = reqwest::Client::new();
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(count);
    for n in 0..count {
        let permit = Arc::clone(&slots).acquire_owned().await.unwrap();
        let (client, url, body) = (client.clone(), url.to_owned(), body(n).to_string());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            client
                .post(&url)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::with_capacity(count);
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

/// Failed delivery attempts that will be retried, on the forward sink.
const RETRIED: &str = r#"recordhook_deliveries_total{sink="backend",outcome="retried"}"#;

/// `series` on the server's `/metrics`.
async fn metric(server: &Server, series: &str) -> f64 {
    metric_at(&server.address, series).await
}

fn forged(n: usize) -> Value {
    let mut body = recording(&format!("forged-{n}"));
    body["sign"] = format!("{n:032x}").into();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_callbacks_neither_grows_memory_nor_keeps_real_ones_out() {
    let _serial = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let server: Server = start_server(&dir, "");
    let url = format!("{}/callback", server.address);
    // Warm up: allocator pools, connection buffers, log formatting.
    assert!(
        send_many(&url, 2_000, 16, forged)
            .await
            .iter()
            .all(|s| *s == 401)
    );
    let before = server.rss_kib();
    let flood = {
        let url = url.clone();
        tokio::spawn(async move { send_many(&url, 20_000, 16, forged).await })
    };
    // A real callback in the middle of the flood.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let real = client
        .post(&url)
        .body(recording("real-during-flood").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(real.status(), 200);
    let statuses = flood.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 401),
        "a forged callback was not rejected"
    );
    let after = server.rss_kib();
    eprintln!("forged flood: RSS {before} KiB after warm-up, {after} KiB after 20000 more");
    assert!(
        after < before + 8 * MIB,
        "memory grew from {before} KiB to {after} KiB over 20000 forged callbacks"
    );
    let real = client
        .post(&url)
        .body(recording("real-after-flood").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(real.status(), 200);
    let (status, lines) = server.terminate();
    assert!(status.success());
    let rejected = lines
        .iter()
        .filter(|l| l.contains("\"reason\":\"sign_mismatch\""))
        .count();
    assert_eq!(
        rejected, 22_000,
        "every forged callback is logged with its reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_target_down_for_long_keeps_memory_bounded_and_gets_everything_later() {
    let _serial = one_at_a_time().await;
    // The sink points at a port that refuses connections until the target
    // takes it over; it stays held meanwhile, so nothing else can answer there.
    let (port, address) = refusing_port();
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "[[sinks]]\nname = \"backend\"\ntype = \"forward\"\nurl = \"http://{address}/hook\"\n\
         retry_initial_ms = 20\nretry_max_ms = 200\nmax_attempts = 1000000\n"
    );
    let server = start_server(&dir, &sinks);
    let url = format!("{}/callback", server.address);
    let batch = |offset: usize| move |n: usize| recording(&format!("down-{}", offset + n));
    assert!(
        send_many(&url, 1_000, 16, batch(0))
            .await
            .iter()
            .all(|s| *s == 200)
    );
    let early = server.rss_kib();
    assert!(
        send_many(&url, 3_000, 16, batch(1_000))
            .await
            .iter()
            .all(|s| *s == 200)
    );
    // Let the retries churn over the whole backlog: wait until the server
    // has failed as many attempts again as twice the backlog.
    let retried_before = metric(&server, RETRIED).await;
    let churned = eventually(Duration::from_secs(60), || async {
        metric(&server, RETRIED).await >= retried_before + 8_000.0
    })
    .await;
    assert!(
        churned,
        "retries did not churn: {retried_before} failed attempts, then {} a minute later",
        metric(&server, RETRIED).await
    );
    let late = server.rss_kib();
    eprintln!("target down: RSS {early} KiB at 1000 waiting, {late} KiB at 4000 waiting");
    assert!(
        late < early + 16 * MIB,
        "memory grew from {early} KiB to {late} KiB while 4000 deliveries waited"
    );
    assert_eq!(
        metric(&server, r#"recordhook_pending_deliveries{sink="backend"}"#).await,
        4_000.0,
        "the backlog should be in the spool"
    );

    let target = Target::serve(port.listen(1024).unwrap());
    let expected: HashSet<String> = (0..4_000).map(|n| format!("down-{n}")).collect();
    let complete = eventually(Duration::from_secs(120), || async {
        let received: HashSet<String> = target
            .received()
            .iter()
            .map(|r| r.json()["event"]["file_id"].as_str().unwrap().to_owned())
            .collect();
        expected.is_subset(&received)
    })
    .await;
    assert!(
        complete,
        "not every record reached the target after it came back"
    );
    let (status, _) = server.terminate();
    assert!(status.success());
}
