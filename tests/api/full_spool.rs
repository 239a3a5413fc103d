//! A spool that stays full while callbacks keep coming, seen from outside
//! the real binary: every callback gets 503, and neither the dedup memory nor
//! the process's resident memory grows with them.

use crate::binary::start_server;
use crate::helpers::*;

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
    let server = start_server(
        &dir,
        "max_bytes = 262144\n\
         [[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = \"records.jsonl\"\n",
    );
    let address = server.address.clone();
    let client = reqwest::Client::new();
    let mut accepted = 0u32;
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
    let entries = metric_at(&address, "recordhook_dedup_index_entries").await;
    assert_eq!(entries, f64::from(accepted));
    let rss_before = server.rss_kib();
    for n in 0..3_000 {
        assert_eq!(post(&client, &address, &format!("refused-{n}")).await, 503);
    }
    assert_eq!(
        metric_at(&address, "recordhook_dedup_index_entries").await,
        entries,
        "refused callbacks left entries in the dedup index"
    );
    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(grown < 8 * 1024, "resident memory grew by {grown} KiB");
}
