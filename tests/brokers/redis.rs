//! The `redis` sink against the real server: the machine's shared Redis on
//! 127.0.0.1:6379 (each test under its own key prefix, deleted afterwards),
//! and, for the tests that stop a server or need a password, a
//! `redis-server` of their own on a free port, without persistence.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use recordhook::record::StoredRecord;
use recordhook::sinks::{RedisSink, RedisSinkSettings, Sink};
use serde_json::Value;

use crate::harness::{Broker, Test};
use crate::helpers::*;
use crate::traced::Traced;

// The binary as a child process, for the tests that read its log lines.

/// Every test of this file, for the harness.
pub fn tests() -> Vec<Test> {
    vec![
        crate::test!(entries_carry_the_event_id_the_event_type_and_the_exact_record),
        crate::test!(a_record_delivered_twice_is_one_entry_with_dedup_and_two_without),
        crate::test!(max_len_trims_the_stream_approximately),
        crate::test!(a_redis_stopped_under_traffic_gets_the_backlog_once_it_is_back),
        crate::test!(a_stream_key_of_another_type_is_a_dead_letter_and_leaves_no_dedup_key),
        crate::test!(a_wrong_password_is_a_clear_dead_letter_and_never_logged),
        crate::test!(check_config_validates_without_connecting_and_redacts_the_password),
        crate::test!(traceparent_names_the_event_trace_and_its_delivery_attempt),
    ]
}

/// The shared server's URL.
fn shared_url() -> String {
    format!("redis://{}", Broker::Redis.address())
}

/// A key prefix no other test (or run) uses.
fn unique_prefix(test: &str) -> String {
    format!("recordhook-test:{test}:{:016x}", fastrand::u64(..))
}

/// Deletes every key under its prefix on the shared server when dropped, so
/// a failing test cleans up too.
struct Keys {
    prefix: String,
}

impl Keys {
    fn new(test: &str) -> Self {
        Self {
            prefix: unique_prefix(test),
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let Ok(mut connection) =
            redis::Client::open(shared_url()).and_then(|client| client.get_connection())
        else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut connection)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query(&mut connection);
        }
    }
}

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// One stream entry: its id and its fields, in order.
type Entry = (String, Vec<(String, String)>);

/// Every entry of `stream`, oldest first.
async fn read_stream(url: &str, stream: &str) -> Vec<Entry> {
    let mut connection = connect(url).await;
    let raw: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await
        .unwrap();
    raw.into_iter()
        .map(|(id, flat)| {
            let fields = flat
                .chunks(2)
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect();
            (id, fields)
        })
        .collect()
}

/// The value of `field` in `entry`.
fn field<'a>(entry: &'a Entry, name: &str) -> &'a str {
    entry
        .1
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("no `{name}` in {entry:?}"))
}

/// The `file_id` of the record an entry carries.
fn file_id(entry: &Entry) -> String {
    let record: Value = serde_json::from_str(field(entry, "record")).unwrap();
    record["event"]["file_id"].as_str().unwrap().to_owned()
}

/// A record as the spool would hand it to the sink.
fn stored(id: &str) -> StoredRecord {
    let json = serde_json::json!({
        "id": id,
        "received_at": "2026-01-01T00:00:00Z",
        "event_type": 100,
        "event": { "file_id": id, "note": "caf\u{e9} \u{1f3a5}" },
    })
    .to_string();
    StoredRecord {
        id: id.to_owned(),
        event_type: 100,
        json,
    }
}

fn sink_settings(url: &str, extra: &str) -> RedisSinkSettings {
    let settings: RedisSinkSettings = toml::from_str(&format!("url = \"{url}\"\n{extra}")).unwrap();
    settings.validate().unwrap();
    settings
}

/// Posts a recording callback and returns its event id.
async fn accept(app: &TestApp, file_id: &str) -> String {
    let response = app.post_json(&recording(file_id)).await;
    assert_eq!(response.status(), 200, "callback {file_id}");
    app.stored()
        .await
        .into_iter()
        .find(|r| r.event.get("file_id").and_then(Value::as_str) == Some(file_id))
        .unwrap()
        .id
}

/// A `redis-server` of the test's own on 127.0.0.1, without persistence,
/// killed when dropped.
struct OwnRedis {
    port: u16,
    args: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts one on a free port with `args` added.
    async fn start(args: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            port,
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart().await;
        server
    }

    /// Starts it (again) on its port and waits until it accepts connections.
    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let up = eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(address).await.is_ok()
        })
        .await;
        assert!(up, "redis-server did not start on {address}");
    }

    /// Kills it and waits until it is gone.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn entries_carry_the_event_id_the_event_type_and_the_exact_record() {
    let keys = Keys::new("payload");
    let dir = tempfile::tempdir().unwrap();
    let file = path_in(&dir, "records.jsonl");
    // `{event_type}` in the stream name becomes the number.
    let app = spawn_app_with_config(&format!(
        "[[sinks]]\nname = \"stream\"\ntype = \"redis\"\nurl = \"{}\"\nstream = \"{}:{{event_type}}\"\n\
         retry_initial_ms = 10\nretry_max_ms = 100\n\
         [[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = {file:?}\n",
        shared_url(),
        keys.prefix
    ))
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = accept(&app, &format!("payload-{n}")).await;
        assert!(app.wait_for_state(&id, "stream", "delivered").await);
        assert!(app.wait_for_state(&id, "archive", "delivered").await);
        ids.push(id);
    }
    let entries = read_stream(&shared_url(), &format!("{}:100", keys.prefix)).await;
    assert_eq!(entries.len(), 3, "{entries:?}");
    // The file sink writes the stored JSON as it is: the entry must match it byte for byte.
    let lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    for ((entry, id), line) in entries.iter().zip(&ids).zip(&lines) {
        let names: Vec<&str> = entry.1.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["event_id", "event_type", "record"]);
        assert_eq!(field(entry, "event_id"), id);
        assert_eq!(field(entry, "event_type"), "100");
        assert_eq!(field(entry, "record"), line);
        let record: Value = serde_json::from_str(field(entry, "record")).unwrap();
        assert_eq!(record["id"], id.as_str());
    }
    app.stop().await;
}

async fn a_record_delivered_twice_is_one_entry_with_dedup_and_two_without() {
    let keys = Keys::new("dedup");
    let url = shared_url();
    let with = format!("{}:with", keys.prefix);
    let without = format!("{}:without", keys.prefix);
    let dedup = RedisSink::from_settings(&sink_settings(
        &url,
        &format!("stream = \"{with}\"\ndedup_window_secs = 600"),
    ))
    .unwrap();
    let plain = RedisSink::from_settings(&sink_settings(
        &url,
        &format!("stream = \"{without}\"\ndedup_window_secs = 0"),
    ))
    .unwrap();
    let record = stored("twice-1");
    let other = stored("twice-2");
    // Twice in one batch, then again as a retry after a lost answer would.
    for sink in [&dedup, &plain] {
        let results = sink
            .deliver_batch(&[record.clone(), other.clone(), record.clone()])
            .await;
        assert_eq!(results, vec![Ok(()), Ok(()), Ok(())]);
        assert_eq!(
            sink.deliver_batch(std::slice::from_ref(&record)).await,
            [Ok(())]
        );
    }
    let deduplicated = read_stream(&url, &with).await;
    let ids: Vec<&str> = deduplicated.iter().map(|e| field(e, "event_id")).collect();
    assert_eq!(ids, ["twice-1", "twice-2"]);
    let plain_ids: Vec<String> = read_stream(&url, &without)
        .await
        .iter()
        .map(|e| field(e, "event_id").to_owned())
        .collect();
    assert_eq!(plain_ids, ["twice-1", "twice-2", "twice-1", "twice-1"]);
    // The dedup key holds the entry's id and expires with the window.
    let mut connection = connect(&url).await;
    let key = format!("{with}:recordhook-dedup:twice-1");
    let (stored_id, ttl): (String, i64) = redis::pipe()
        .cmd("GET")
        .arg(&key)
        .cmd("TTL")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(stored_id, deduplicated[0].0);
    assert!(ttl > 0 && ttl <= 600, "ttl {ttl}");
}

async fn max_len_trims_the_stream_approximately() {
    let keys = Keys::new("trim");
    let url = shared_url();
    for (name, window) in [("script", 600), ("xadd", 0)] {
        let stream = format!("{}:{name}", keys.prefix);
        let sink = RedisSink::from_settings(&sink_settings(
            &url,
            &format!("stream = \"{stream}\"\nmax_len = 100\ndedup_window_secs = {window}"),
        ))
        .unwrap();
        for round in 0..4 {
            let records: Vec<StoredRecord> = (0..250)
                .map(|n| stored(&format!("trim-{round}-{n}")))
                .collect();
            let results = sink.deliver_batch(&records).await;
            assert!(results.iter().all(Result::is_ok), "{name}: {results:?}");
        }
        let mut connection = connect(&url).await;
        let length: u64 = redis::cmd("XLEN")
            .arg(&stream)
            .query_async(&mut connection)
            .await
            .unwrap();
        // `MAXLEN ~` removes whole nodes (100 entries each by default): at
        // least max_len remain, and far fewer than the 1000 added.
        assert!((100..=300).contains(&length), "{name}: {length} entries");
        // The newest entry is from the last batch added. (Within a batch the
        // commands are pipelined, and a script Redis had not loaded yet is
        // sent again, so entries of one batch may land in another order.)
        let last = read_stream(&url, &stream).await.pop().unwrap();
        let newest = field(&last, "event_id");
        assert!(newest.starts_with("trim-3-"), "{name}: newest is {newest}");
    }
}

async fn a_redis_stopped_under_traffic_gets_the_backlog_once_it_is_back() {
    let mut server = OwnRedis::start(&[]).await;
    let url = format!("redis://127.0.0.1:{}", server.port);
    let stream = unique_prefix("outage");
    let app = spawn_app_with_config(&format!(
        "[[sinks]]\nname = \"stream\"\ntype = \"redis\"\nurl = \"{url}\"\nstream = \"{stream}\"\n\
         timeout_secs = 2\nmax_attempts = 1000\nretry_initial_ms = 20\nretry_max_ms = 300\n"
    ))
    .await;
    for n in 0..10 {
        let id = accept(&app, &format!("before-{n}")).await;
        assert!(app.wait_for_state(&id, "stream", "delivered").await);
    }
    assert_eq!(read_stream(&url, &stream).await.len(), 10);

    server.stop();
    // Steady traffic while it is down: every callback answered 200, quickly.
    let mut during = Vec::new();
    for n in 0..40 {
        let started = Instant::now();
        let file_id = format!("during-{n}");
        accept(&app, &file_id).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "callback {n} took {:?} with redis down",
            started.elapsed()
        );
        during.push(file_id);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The backlog grows and is retried, not dropped.
    let counts = || async {
        app.state
            .spool
            .counts("stream", &vec![100].into())
            .await
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            counts().await.pending == 40
        })
        .await
    );
    let retried = "recordhook_deliveries_total{sink=\"stream\",outcome=\"retried\"}";
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.metric(retried).await >= 40.0
        })
        .await
    );
    assert_eq!(counts().await.dead, 0);

    // Back on the same port, empty (no persistence): everything that was
    // waiting arrives, each record once.
    server.restart().await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            counts().await.pending == 0
        })
        .await
    );
    let entries = read_stream(&url, &stream).await;
    let mut arrived: Vec<String> = entries.iter().map(file_id).collect();
    arrived.sort();
    let mut expected = during.clone();
    expected.sort();
    assert_eq!(arrived, expected);
    assert_eq!(counts().await.dead, 0);
    app.stop().await;
}

async fn a_stream_key_of_another_type_is_a_dead_letter_and_leaves_no_dedup_key() {
    let keys = Keys::new("wrongtype");
    let url = shared_url();
    let stream = format!("{}:events", keys.prefix);
    let mut connection = connect(&url).await;
    let () = redis::cmd("SET")
        .arg(&stream)
        .arg("not a stream")
        .query_async(&mut connection)
        .await
        .unwrap();
    let app = spawn_app_with_config(&format!(
        "[[sinks]]\nname = \"stream\"\ntype = \"redis\"\nurl = \"{url}\"\nstream = \"{stream}\"\n\
         max_attempts = 3\nretry_initial_ms = 10\nretry_max_ms = 50\n"
    ))
    .await;
    let id = accept(&app, "wrongtype-1").await;
    assert!(app.wait_for_state(&id, "stream", "dead").await);
    let state = app.delivery(&id, "stream").await.unwrap();
    assert_eq!(state.attempts, 3);
    let error = state.last_error.unwrap();
    assert!(
        error.contains("WRONGTYPE") && error.contains(&stream),
        "{error}"
    );
    // The failed XADD left no dedup key behind: once the key is fixed, the
    // requeued record is really added (not taken for a duplicate).
    let dedup_key = format!("{stream}:recordhook-dedup:{id}");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&dedup_key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(exists, 0);
    let _: i64 = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut connection)
        .await
        .unwrap();
    let requeued = app
        .state
        .spool
        .requeue_dead(
            Some("stream".to_owned()),
            Some(id.clone()),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    assert_eq!(requeued, 1);
    assert!(app.wait_for_state(&id, "stream", "delivered").await);
    let entries = read_stream(&url, &stream).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(field(&entries[0], "event_id"), id);
    app.stop().await;
}

async fn a_wrong_password_is_a_clear_dead_letter_and_never_logged() {
    let server = OwnRedis::start(&["--requirepass", "right-pa55word"]).await;
    let wrong = "wr0ng-pa55word";
    let dir = tempfile::tempdir().unwrap();
    let stream = unique_prefix("auth");
    let sink = |name: &str, url: String| {
        format!(
            "[[sinks]]\nname = \"{name}\"\ntype = \"redis\"\nurl = \"{url}\"\nstream = \"{stream}\"\n\
             max_attempts = 3\nretry_initial_ms = 10\nretry_max_ms = 50\n"
        )
    };
    let extra = format!(
        "[log]\nformat = \"json\"\nlevel = \"debug\"\n{}{}",
        sink(
            "wrong",
            format!("redis://:{wrong}@127.0.0.1:{}", server.port)
        ),
        sink("missing", format!("redis://127.0.0.1:{}", server.port)),
    );
    // The binary, so that every log line it writes can be searched.
    let (dead, lines) = tokio::task::spawn_blocking(move || {
        let mut process = crate::binary::start_server(&dir, &extra);
        let address = process.address.clone();
        let status = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                reqwest::Client::new()
                    .post(format!("{address}/callback"))
                    .json(&recording("auth-1"))
                    .send()
                    .await
                    .unwrap()
                    .status()
            });
        assert_eq!(status, 200);
        let mut dead = BTreeMap::new();
        for _ in 0..2 {
            let line = process.wait_for_log("delivery failed for good; kept as a dead letter");
            dead.insert(line["sink"].as_str().unwrap().to_owned(), line);
        }
        let (_, lines) = process.terminate();
        (dead, lines)
    })
    .await
    .unwrap();
    let error = |sink: &str| dead[sink]["error"].as_str().unwrap().to_owned();
    let wrong_error = error("wrong");
    assert!(
        wrong_error.contains("authentication to redis at redis://:[redacted]@127.0.0.1")
            && wrong_error.contains("wrong user or password"),
        "{wrong_error}"
    );
    let missing_error = error("missing");
    assert!(
        missing_error.contains("requires a password") && missing_error.contains("NOAUTH"),
        "{missing_error}"
    );
    for sink in ["wrong", "missing"] {
        assert_eq!(dead[sink]["attempts"], 3, "{}", dead[sink]);
    }
    for line in &lines {
        assert!(!line.contains(wrong), "the password in a log line: {line}");
    }
    assert!(
        lines
            .iter()
            .any(|line| line.contains("could not connect to redis"))
    );
}

async fn check_config_validates_without_connecting_and_redacts_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = path_in(&dir, "config.toml");
    // Nothing listens on this port: check-config must not care.
    let (_held, address) = refusing_port();
    let check = |sink: String| {
        std::fs::write(&config, format!("[auth]\nkeys = [\"k\"]\n{sink}")).unwrap();
        crate::binary::command(&dir)
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let sink = |url: &str, extra: &str| {
        format!("[[sinks]]\nname = \"s\"\ntype = \"redis\"\nurl = \"{url}\"\n{extra}")
    };
    let output = check(sink(
        &format!("redis://app:hunter22@{address}/2"),
        "max_len = 5000",
    ));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("url = \"redis://app:[redacted]@{address}/2\"")),
        "{stdout}"
    );
    assert!(
        stdout.contains("stream = \"recordhook:events\""),
        "{stdout}"
    );
    assert!(stdout.contains("dedup_window_secs = 3600"), "{stdout}");
    assert!(!stdout.contains("hunter22") && !stderr.contains("hunter22"));

    let mut cases = BTreeMap::new();
    cases.insert("amqp://u:hunter22@h/", "redis:// or rediss://");
    cases.insert("redis://:hunter22@h/x", "not a usable Redis URL");
    cases.insert("rediss://:hunter22@h/#insecure", "fragment");
    for (url, reason) in cases {
        let output = check(sink(url, ""));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "accepted {url}");
        assert!(
            stderr.contains(reason),
            "{url}: expected {reason:?} in {stderr}"
        );
        assert!(!stderr.contains("hunter22"), "{stderr}");
    }
    let output = check(sink("redis://h", "stream = \"x:{type}\""));
    assert!(String::from_utf8_lossy(&output.stderr).contains("only placeholder"));
}

/// With traces on, an entry's `traceparent` field is in its event's trace,
/// with the delivery attempt that added it as its parent.
async fn traceparent_names_the_event_trace_and_its_delivery_attempt() {
    let keys = Keys::new("traceparent");
    let stream = format!("{}:100", keys.prefix);
    let traced = Traced::start(&format!(
        "[[sinks]]\nname = \"stream\"\ntype = \"redis\"\nurl = \"{}\"\nstream = \"{}:{{event_type}}\"\n",
        shared_url(),
        keys.prefix
    ))
    .await;
    traced.post("traced-entry").await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            !read_stream(&shared_url(), &stream).await.is_empty()
        })
        .await
    );
    let entries = read_stream(&shared_url(), &stream).await;
    let entry = &entries[0];
    traced
        .collector
        .assert_names_its_attempt(
            field(entry, "traceparent"),
            field(entry, "event_id"),
            "stream",
        )
        .await;
}
