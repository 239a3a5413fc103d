//! Every broker down for good while callbacks keep coming, seen from outside
//! the real binary: callbacks are all answered 200, the backlog grows in the
//! spool (not in memory), and the process's resident memory stays flat.

use std::time::Duration;

use futures_util::StreamExt;

use crate::binary::start_server;
use crate::helpers::*;

/// Callbacks sent before memory is measured.
const WARM_UP: usize = 3_000;

/// The sinks of the test, one per broker.
const SINKS: [&str; 3] = ["bus", "queue", "stream"];

/// Failed attempts that will be retried, over every sink.
async fn retried(address: &str) -> f64 {
    let mut total = 0.0;
    for sink in SINKS {
        let series = format!("recordhook_deliveries_total{{sink=\"{sink}\",outcome=\"retried\"}}");
        total += metric_at(address, &series).await;
    }
    total
}

#[tokio::test]
async fn brokers_that_are_down_leave_callbacks_answered_and_memory_flat() {
    let _serial = crate::one_at_a_time().await;
    // Ports bound but never listening: every connection is refused, and no
    // other process can take them meanwhile.
    let (_nats, nats) = refusing_port();
    let (_amqp, amqp) = refusing_port();
    let (_redis, redis) = refusing_port();
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"nats://{nats}\"\n\
         retry_initial_ms = 50\nretry_max_ms = 200\nmax_attempts = 1000000\n\
         [[sinks]]\nname = \"queue\"\ntype = \"rabbitmq\"\nurl = \"amqp://guest:guest@{amqp}/%2f\"\n\
         exchange = \"\"\nrouting_key = \"q\"\n\
         retry_initial_ms = 50\nretry_max_ms = 200\nmax_attempts = 1000000\n\
         [[sinks]]\nname = \"stream\"\ntype = \"redis\"\nurl = \"redis://{redis}\"\n\
         retry_initial_ms = 50\nretry_max_ms = 200\nmax_attempts = 1000000\n"
    );
    let server = start_server(&dir, &sinks);
    let client = reqwest::Client::new();
    let address = server.address.clone();
    let url = format!("{address}/callback");
    let send = |from: usize, count: usize| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let statuses: Vec<u16> = futures_util::stream::iter(from..from + count)
                .map(|n| {
                    let request = client.post(&url).json(&recording(&format!("outage-{n}")));
                    async move { request.send().await.unwrap().status().as_u16() }
                })
                .buffer_unordered(16)
                .collect()
                .await;
            assert!(
                statuses.iter().all(|&status| status == 200),
                "a callback was refused"
            );
        }
    };
    // Warm up (allocator, pools, the sinks' first failed connects, and
    // SQLite's page caches, which are bounded but larger now that records
    // carry the admin API's indexes: with 500 callbacks of warm-up their
    // filling showed as 5.4-8.8 MiB of growth), then measure.
    send(0, WARM_UP).await;
    let retried_before = retried(&address).await;
    assert!(retried_before > 0.0, "no sink has tried and failed yet");
    let rss_before = server.rss_kib();
    // A sink that kept records in memory while its broker is down would
    // hold at least 5,000 x ~1.4 KiB per sink here: over 20 MiB for three.
    send(WARM_UP, 5_000).await;
    // The backlog is in the spool: every sink has all of them pending.
    for sink in SINKS {
        let pending = format!("recordhook_pending_deliveries{{sink=\"{sink}\"}}");
        assert_eq!(
            metric_at(&address, &pending).await,
            (WARM_UP + 5_000) as f64,
            "{sink}"
        );
        let delivered =
            format!("recordhook_deliveries_total{{sink=\"{sink}\",outcome=\"delivered\"}}");
        assert_eq!(
            metric_at(&address, &delivered).await,
            0.0,
            "{sink}: delivered to a broker that is down"
        );
    }
    let grown = server.rss_kib().saturating_sub(rss_before);
    eprintln!("outage: resident memory grew by {grown} KiB over 5,000 callbacks");
    assert!(grown < 8 * 1024, "resident memory grew by {grown} KiB");
    // And the retries keep going (the workers are alive, not stuck).
    let later = eventually(Duration::from_secs(20), || async {
        retried(&address).await > retried_before
    })
    .await;
    assert!(later, "no retries after the load");
}
