//! Reconciliation benchmark and the outage report (bench/BENCHMARKS.md,
//! "Reconciliation"): recordhook's reconciler against the fake of Tencent's
//! API (`tests/tencent_fake`), in one process, on a SQLite spool in a
//! temporary directory.
//!
//! `cargo run --release --example reconcile_bench` (default: `STREAMS=10000`)
//! seeds STREAMS streams pushed within the last day, each with a push
//! start, a push end and a recording CSS sent but recordhook never got, then
//! measures one full run (every callback recovered), a second run right
//! after (what resuming costs), and — as the reference, in the same run —
//! the bare API client making the same number of requests with the same
//! concurrency and no reconciliation work. The client's rate limiter is set
//! out of the way, so the figures are recordhook's own cost; at Tencent's
//! documented 20 requests/s the run takes API calls / 20 seconds.
//!
//! `cargo run --release --example reconcile_bench -- outage` prints the
//! report of a receiver down for 20 minutes, as `recordhook reconcile`
//! prints it: a dry run first, then the recovering run.

// A benchmark: failures should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[allow(dead_code)]
#[path = "../tests/tencent_fake/mod.rs"]
mod tencent_fake;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use recordhook::reconcile::{self, ReconcileSettings, RunOptions};
use recordhook::spool::{Spool, SpoolOptions};
use recordhook::tencent::live::DescribeCallbackRecordsListRequest;
use recordhook::tencent::{ClientOptions, Credentials, TencentClient};
use secrecy::SecretString;
use serde_json::json;
use tencent_fake::{FakeOptions, FakeTencent, SentCallback, StreamSession};
use tokio_util::sync::CancellationToken;

const SECRET_ID: &str = "AKIDbenchmark000000000000000000000001";
const SECRET_KEY: &str = "benchmark-secret-key";
/// The spool's dedup window (the default).
const DEDUP_WINDOW: Duration = Duration::from_secs(7 * 86_400);
/// No client-side limit: the cost measured is recordhook's, not the wait.
const UNLIMITED: u32 = 1_000_000;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A callback body as CSS sent it (its signature long expired).
fn body(event_type: i64, stream: &str, at: i64, n: usize) -> String {
    let mut body = json!({
        "event_type": event_type, "appid": 1_250_000_000, "app": "push.example.com",
        "appname": "live", "stream_id": stream, "channel_id": stream,
        "t": at + 600, "sign": "0123456789abcdef0123456789abcdef",
    });
    if event_type == 100 {
        body["file_id"] = format!("bench-{n}").into();
        body["file_format"] = "hls".into();
        body["start_time"] = (at - 3_600).into();
        body["end_time"] = at.into();
        body["duration"] = 3_600.into();
        body["file_size"] = 123_456_789.into();
        body["video_url"] = format!("http://example.vod2.myqcloud.com/{stream}/{n}.m3u8").into();
    } else {
        body["event_time"] = at.into();
        body["sequence"] = "6674468118806626493".into();
    }
    body.to_string()
}

/// The fake, seeded with `streams` streams, each pushed for up to an hour
/// between `from` and `to` and sent its three callbacks, every one failed.
async fn seeded_fake(streams: usize, from: i64, to: i64) -> FakeTencent {
    let fake = FakeTencent::start(FakeOptions::new(SECRET_ID, SECRET_KEY)).await;
    let span = (to - from - 3_700).max(1);
    for n in 0..streams {
        let stream = format!("stream-{n}");
        let start = from + (n as i64 * 7_919) % span;
        let end = start + 600 + (n as i64 % 3_000);
        fake.add_stream(StreamSession::new(
            "push.example.com",
            "live",
            &stream,
            start,
            Some(end),
        ));
        for (event_type, at) in [(1, start), (0, end), (100, end + 30)] {
            fake.add_callback(SentCallback {
                request: body(event_type, &stream, at, n),
                response: "connect timeout".into(),
                result_code: -1,
                ..SentCallback::new(&stream, event_type, at)
            });
        }
    }
    fake
}

fn settings(fake: &FakeTencent) -> ReconcileSettings {
    ReconcileSettings {
        enabled: true,
        secret_id: SECRET_ID.into(),
        secret_key: Some(SecretString::from(SECRET_KEY)),
        endpoint: fake.endpoint(),
        lag_secs: 0,
        lookback_secs: 86_400 + 3_600,
        ..ReconcileSettings::default()
    }
}

async fn spool(dir: &tempfile::TempDir) -> Spool {
    Spool::open(&SpoolOptions {
        path: dir.path().join("spool.db"),
        postgres: None,
        dedup_window: DEDUP_WINDOW,
        max_bytes: 0,
    })
    .await
    .unwrap()
}

/// Peak and current resident memory of this process, KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The reference: the bare client making `calls` DescribeCallbackRecordsList
/// requests over the seeded streams, 8 at a time, reading every page.
async fn bare_client(fake: &FakeTencent, streams: usize, from: i64, to: i64) -> Duration {
    let client = TencentClient::new(
        Credentials {
            secret_id: SECRET_ID.into(),
            secret_key: SecretString::from(SECRET_KEY),
            token: None,
        },
        ClientOptions {
            endpoint: fake.endpoint(),
            requests_per_sec: UNLIMITED,
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let format = |secs| recordhook::tencent::time::format_utc(secs).unwrap();
    futures_util::stream::iter(0..streams)
        .map(|n| {
            let client = client.clone();
            let request = DescribeCallbackRecordsListRequest {
                start_time: format(from),
                end_time: format(to.min(from + 86_399)),
                stream_name: format!("stream-{n}"),
                page_num: 1,
                page_size: 100,
                event_type: None,
                result_code: None,
            };
            async move { client.describe_callback_records(&request).await.unwrap() }
        })
        .buffer_unordered(8)
        .for_each(|_| async {})
        .await;
    started.elapsed()
}

async fn benchmark(streams: usize) {
    let to = now() - 5;
    let from = to - 86_400;
    let fake = seeded_fake(streams, from, to).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = spool(&dir).await;
    let mut settings = settings(&fake);
    settings.requests_per_sec = UNLIMITED;
    let reconciler = reconcile::build(
        &settings,
        spool.clone(),
        DEDUP_WINDOW,
        None,
        Arc::new(|_| {}),
    )
    .unwrap();
    let options = RunOptions {
        resume: true,
        ..RunOptions::default()
    };
    let cancel = CancellationToken::new();
    let (_, rss_before) = memory_kib();
    let started = Instant::now();
    let first = reconcile::run_leased(&reconciler, "bench", &options, &cancel)
        .await
        .unwrap();
    let first_time = started.elapsed();
    let (peak, _) = memory_kib();
    let started = Instant::now();
    let second = reconcile::run_leased(&reconciler, "bench", &options, &cancel)
        .await
        .unwrap();
    let second_time = started.elapsed();
    let reference = bare_client(&fake, streams, from, to).await;
    let total = first.total();
    println!("streams: {streams} pushed within one day, 3 callbacks each, all missing");
    println!(
        "first run:  {:>7} API requests, {:>8.2} s, {:>6} recovered, {} unrecoverable, {} left",
        first.api_calls,
        first_time.as_secs_f64(),
        total.recovered,
        total.unrecoverable,
        first.errors.len()
    );
    println!(
        "second run: {:>7} API requests, {:>8.2} s (resumes from the checkpoints), {} recovered",
        second.api_calls,
        second_time.as_secs_f64(),
        second.total().recovered
    );
    println!(
        "reference (bare client, {streams} requests, same concurrency): {:.2} s; \
         first run / reference: {:.2}",
        reference.as_secs_f64(),
        first_time.as_secs_f64() / reference.as_secs_f64()
    );
    println!(
        "memory: resident {rss_before} KiB before the run, peak {peak} KiB (fake and spool in the same process)"
    );
    println!(
        "at Tencent's 20 requests/s: first run {:.0} s ({:.1} min)",
        first.api_calls as f64 / 20.0,
        first.api_calls as f64 / 20.0 / 60.0
    );
    let stats = fake.stats();
    println!("fake: {:?}", stats.calls);
    spool.close().await;
}

/// Down for 20 minutes while 30 streams pushed: CSS gave up on everything
/// it sent in that time.
async fn outage() {
    let to = now() - 60;
    let down_from = to - 1_200;
    let fake = FakeTencent::start(FakeOptions::new(SECRET_ID, SECRET_KEY)).await;
    let mut n = 0;
    for s in 0..30 {
        let stream = format!("room-{s}");
        let start = down_from - 1_800 + s * 40;
        let end = down_from + 60 + s * 35;
        fake.add_stream(StreamSession::new(
            "push.example.com",
            "live",
            &stream,
            start,
            Some(end),
        ));
        // Before the outage: delivered. During it: failed 12 times, given up.
        for (event_type, at) in [(1, start), (0, end), (100, end + 30), (200, end - 90)] {
            n += 1;
            let failed = at >= down_from;
            let request = if event_type == 200 && s == 7 {
                String::new() // Tencent kept no body for this one.
            } else {
                body(event_type, &stream, at, n)
            };
            fake.add_callback(SentCallback {
                request,
                response: if failed {
                    "connect timeout".into()
                } else {
                    "{\"code\":0}".into()
                },
                result_code: if failed { -1 } else { 0 },
                ..SentCallback::new(&stream, event_type, at)
            });
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let spool = spool(&dir).await;
    // What was delivered before the outage is in the spool.
    let settings = settings(&fake);
    let reconciler = reconcile::build(
        &settings,
        spool.clone(),
        DEDUP_WINDOW,
        None,
        Arc::new(|_| {}),
    )
    .unwrap();
    let cancel = CancellationToken::new();
    let before = RunOptions {
        until: Some(down_from - 1),
        ..RunOptions::default()
    };
    reconcile::run_leased(&reconciler, "setup", &before, &cancel)
        .await
        .unwrap();
    let since = Some(down_from - 3_600);
    let dry = RunOptions {
        since,
        dry_run: true,
        ..RunOptions::default()
    };
    println!("$ recordhook reconcile --since 80m --dry-run");
    let report = reconcile::run_leased(&reconciler, "cli", &dry, &cancel)
        .await
        .unwrap();
    print!("{}", report.to_text());
    println!("(exit {})\n", if report.has_missing() { 2 } else { 0 });
    let real = RunOptions {
        since,
        ..RunOptions::default()
    };
    println!("$ recordhook reconcile --since 80m");
    let report = reconcile::run_leased(&reconciler, "cli", &real, &cancel)
        .await
        .unwrap();
    print!("{}", report.to_text());
    println!("(exit {})", if report.has_missing() { 2 } else { 0 });
    spool.close().await;
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("outage") {
        outage().await;
        return;
    }
    let streams = std::env::var("STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    benchmark(streams).await;
}
