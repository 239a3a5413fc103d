//! The `nats` sink against the real broker: the machine's shared NATS server
//! for most tests, each with a stream and subject of its own (deleted
//! afterwards); a `nats-server` of the test's own on a free port where the
//! server must be stopped or must demand credentials.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{self, stream};
use recordhook::record::StoredRecord;
use recordhook::sinks::{NatsSink, NatsSinkSettings, Sink};

use crate::dead_letter::dead_letter_of;
use crate::harness::{Broker, Test};
use crate::helpers::*;
use crate::traced::Traced;

// The binary as a child process, with its JSON log lines (tests/api's helper).

/// Every test of this file, for the harness.
pub fn tests() -> Vec<Test> {
    vec![
        crate::test!(records_arrive_with_the_documented_payload_and_headers),
        crate::test!(the_same_record_published_twice_is_one_message_in_the_stream),
        crate::test!(a_subject_no_stream_captures_becomes_a_dead_letter_never_delivered),
        crate::test!(a_stopped_server_means_retries_and_a_backlog_then_everything_arrives_once),
        crate::test!(
            wrong_credentials_are_a_clear_error_and_no_secret_reaches_logs_or_check_config
        ),
        crate::test!(traceparent_names_the_event_trace_and_its_delivery_attempt),
    ]
}

/// A name no other test (or run) uses: `rh_<pid>_<random>`.
fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{:x}", std::process::id(), fastrand::u64(..))
}

/// The shared server's URL.
fn shared_url() -> String {
    format!("nats://{}", Broker::Nats.address())
}

async fn jetstream_at(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.unwrap())
}

/// A stream capturing `<prefix>.>`, deleted when dropped (even by a failing test).
struct TestStream {
    url: String,
    name: String,
    /// The subject prefix it captures.
    prefix: String,
    js: jetstream::Context,
}

impl TestStream {
    async fn create(url: &str, storage: stream::StorageType) -> Self {
        let name = unique("RH");
        let prefix = unique("rh");
        let js = jetstream_at(url).await;
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![format!("{prefix}.>")],
            storage,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        // A server just started may need a moment before JetStream answers.
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(err) = js.create_stream(config.clone()).await {
            assert!(Instant::now() < deadline, "cannot create a stream: {err}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            url: url.to_owned(),
            name,
            prefix,
            js,
        }
    }

    /// The sink's `subject` setting for this stream.
    fn subject(&self) -> String {
        format!("{}.{{event_type}}", self.prefix)
    }

    async fn count(&self) -> u64 {
        let mut stream = self.js.get_stream(&self.name).await.unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// Every message, oldest first.
    async fn messages(&self) -> Vec<StreamMessage> {
        let stream = self.js.get_stream(&self.name).await.unwrap();
        let mut messages = Vec::new();
        for sequence in 1..=self.count().await {
            let message = stream.get_raw_message(sequence).await.unwrap();
            messages.push(message);
        }
        messages
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Off the test's runtime, which may be the one being dropped.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let connect = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(2))
                    .connect(url.as_str());
                if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(5), connect).await
                {
                    let _ = jetstream::new(client).delete_stream(&name).await;
                }
            });
        })
        .join();
    }
}

/// The config of an app with a `bus` NATS sink (and whatever `extra` adds).
fn nats_sink(url: &str, subject: &str, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{url}\"\nsubject = \"{subject}\"\n\
         timeout_secs = 2\nretry_initial_ms = 50\nretry_max_ms = 500\n{extra}"
    )
}

/// The event id of the stored record with `file_id`.
async fn event_id(app: &TestApp, file_id: &str) -> String {
    app.stored()
        .await
        .into_iter()
        .find(|record| record.event["file_id"] == file_id)
        .unwrap()
        .id
}

/// Posts a recording callback for `file_id` and returns its event id.
async fn post(app: &TestApp, file_id: &str) -> String {
    let response = app.post_json(&recording(file_id)).await;
    assert_eq!(response.status().as_u16(), 200, "{file_id}");
    event_id(app, file_id).await
}

fn header(message: &StreamMessage, name: &str) -> Option<String> {
    message
        .headers
        .get(name)
        .map(|value| value.as_str().to_owned())
}

async fn records_arrive_with_the_documented_payload_and_headers() {
    let stream = TestStream::create(&shared_url(), stream::StorageType::Memory).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.jsonl");
    let app = spawn_app_with_config(&format!(
        "{}[[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = {file:?}\n",
        nats_sink(&shared_url(), &stream.subject(), "")
    ))
    .await;
    let id = post(&app, &unique("f")).await;
    assert!(app.wait_for_state(&id, "bus", "delivered").await);
    assert!(app.wait_for_state(&id, "archive", "delivered").await);

    let messages = stream.messages().await;
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.subject.as_str(), format!("{}.100", stream.prefix));
    // The same bytes the file sink wrote (and the forward sink posts).
    let line = std::fs::read_to_string(&file).unwrap();
    let payload = String::from_utf8(message.payload.to_vec()).unwrap();
    assert_eq!(payload, line.trim_end_matches('\n'));
    let record: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(record["id"], id.as_str());
    for (name, value) in [
        ("Nats-Msg-Id", id.as_str()),
        ("webhook-id", id.as_str()),
        ("recordhook-event-type", "100"),
        ("content-type", "application/json"),
    ] {
        assert_eq!(header(message, name).as_deref(), Some(value), "{name}");
    }
    app.stop().await;
}

async fn the_same_record_published_twice_is_one_message_in_the_stream() {
    let stream = TestStream::create(&shared_url(), stream::StorageType::Memory).await;
    let settings: NatsSinkSettings = toml::from_str(&format!(
        "url = \"{}\"\nsubject = \"{}\"",
        shared_url(),
        stream.subject()
    ))
    .unwrap();
    let sink = NatsSink::from_settings("bus", &settings).unwrap();
    let record = |id: &str| StoredRecord {
        id: id.to_owned(),
        event_type: 100,
        json: format!("{{\"id\":\"{id}\"}}"),
    };
    let (a, b) = (record(&unique("evt")), record(&unique("evt")));
    // A batch holding a repeat, then the same record again on its own (a
    // retry after a lost ack): every attempt is delivered, JetStream keeps one.
    let batch = [a.clone(), b.clone(), a.clone()];
    let results = sink.deliver_batch(&batch).await;
    assert_eq!(results, vec![Ok(()), Ok(()), Ok(())]);
    assert_eq!(sink.deliver_batch(std::slice::from_ref(&a)).await, [Ok(())]);

    let ids: Vec<String> = stream
        .messages()
        .await
        .iter()
        .map(|message| header(message, "Nats-Msg-Id").unwrap())
        .collect();
    assert_eq!(ids, [a.id, b.id]);
}

async fn a_subject_no_stream_captures_becomes_a_dead_letter_never_delivered() {
    let subject = format!("{}.{{event_type}}", unique("rh_nostream"));
    let app =
        spawn_app_with_config(&nats_sink(&shared_url(), &subject, "max_attempts = 3\n")).await;
    let id = post(&app, &unique("f")).await;
    assert!(app.wait_for_state(&id, "bus", "dead").await);
    let state = app.delivery(&id, "bus").await.unwrap();
    assert_eq!(state.attempts, 3);
    let error = state.last_error.unwrap();
    assert!(
        error.contains("no JetStream stream captures subject")
            && error.contains(&subject.replace("{event_type}", "100")),
        "{error}"
    );
    assert_eq!(
        app.metric(r#"recordhook_deliveries_total{sink="bus",outcome="delivered"}"#)
            .await,
        0.0
    );
    assert_eq!(
        app.metric(r#"recordhook_deliveries_total{sink="bus",outcome="retried"}"#)
            .await,
        2.0
    );
    app.stop().await;
}

/// A `nats-server` of the test's own, with JetStream storing in `store`.
struct OwnServer {
    child: Child,
    port: u16,
}

impl OwnServer {
    /// Starts one on `port` (0: a free one) and waits until it accepts connections.
    fn start(port: u16, store: &Path, extra: &[&str]) -> Self {
        let port = if port == 0 { free_port() } else { port };
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops it at once, as a crash would.
    fn kill(mut self) -> u16 {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.port
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (nats-server must bind it itself).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn a_stopped_server_means_retries_and_a_backlog_then_everything_arrives_once() {
    let store = tempfile::tempdir().unwrap();
    let server = OwnServer::start(0, store.path(), &[]);
    let stream = TestStream::create(&server.url(), stream::StorageType::File).await;
    let app = spawn_app_with_config(&nats_sink(
        &server.url(),
        &stream.subject(),
        "max_attempts = 100000\n",
    ))
    .await;

    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(post(&app, &unique("f")).await);
    }
    for id in &ids {
        assert!(app.wait_for_state(id, "bus", "delivered").await, "{id}");
    }

    let port = server.kill();
    let retried = r#"recordhook_deliveries_total{sink="bus",outcome="retried"}"#;
    let before = app.metric(retried).await;
    let mut backlog = Vec::new();
    for _ in 0..30 {
        let started = Instant::now();
        backlog.push(post(&app, &unique("f")).await);
        // The broker being down never slows a callback.
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // Deliveries are retried, and the backlog waits in the spool.
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.metric(retried).await >= before + 30.0
        })
        .await
    );
    let pending = app
        .metric(r#"recordhook_pending_deliveries{sink="bus"}"#)
        .await;
    assert_eq!(pending, 30.0);
    for id in &backlog {
        let state = app.delivery(id, "bus").await.unwrap();
        assert_eq!(state.state, "pending", "{id}");
        if let Some(error) = state.last_error {
            assert!(error.starts_with("NATS not connected"), "{error}");
        }
    }

    let _server = OwnServer::start(port, store.path(), &[]);
    for id in &backlog {
        assert!(app.wait_for_state(id, "bus", "delivered").await, "{id}");
    }
    ids.extend(backlog);
    let published: Vec<String> = stream
        .messages()
        .await
        .iter()
        .map(|message| header(message, "Nats-Msg-Id").unwrap())
        .collect();
    // Exactly once: every record, none twice.
    assert_eq!(published.len(), ids.len());
    assert_eq!(
        published.iter().collect::<BTreeSet<_>>(),
        ids.iter().collect::<BTreeSet<_>>()
    );
    app.stop().await;
    drop(stream);
}

async fn wrong_credentials_are_a_clear_error_and_no_secret_reaches_logs_or_check_config() {
    const SECRET: &str = "Wr0ng-pa55word";
    let store = tempfile::tempdir().unwrap();
    let server = OwnServer::start(
        0,
        store.path(),
        &["--user", "recordhook", "--pass", "right-password"],
    );
    let url = format!("nats://recordhook:{SECRET}@127.0.0.1:{}", server.port);
    let sink = nats_sink(&url, "rh.{event_type}", "max_attempts = 2\n");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("check.toml");
    std::fs::write(&config, format!("[auth]\nkeys = [\"k\"]\n{sink}")).unwrap();
    let check = crate::binary::command(&dir)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let shown = String::from_utf8_lossy(&check.stdout);
    assert!(
        shown.contains(&format!(
            "url = \"nats://recordhook:[redacted]@127.0.0.1:{}\"",
            server.port
        )),
        "{shown}"
    );
    assert!(!shown.contains(SECRET), "{shown}");
    // Invalid settings are refused without connecting, and name the key.
    let bad = nats_sink(&url, "rh.*", "");
    std::fs::write(&config, format!("[auth]\nkeys = [\"k\"]\n{bad}")).unwrap();
    let check = crate::binary::command(&dir)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!check.status.success(), "{check:?}");
    let reason = String::from_utf8_lossy(&check.stderr);
    assert!(reason.contains("sinks[0].subject"), "{reason}");
    assert!(!reason.contains(SECRET), "{reason}");

    // The server at debug level, so the client library's own logs are seen too.
    let config = format!("[log]\nlevel = \"debug\"\n{sink}");
    let (dead, lines) = dead_letter_of(dir, config, recording(&unique("f"))).await;
    let error = dead["error"].as_str().unwrap();
    assert!(
        error.contains("NATS not connected to nats://recordhook:[redacted]@127.0.0.1:"),
        "{error}"
    );
    assert!(error.contains("authorization violation"), "{error}");
    let log = lines.join("\n");
    assert!(!log.contains(SECRET), "the password is in the log:\n{log}");
}

/// With traces on, a message's `traceparent` header is in its event's
/// trace, with the delivery attempt that published it as its parent.
async fn traceparent_names_the_event_trace_and_its_delivery_attempt() {
    let stream = TestStream::create(&shared_url(), stream::StorageType::Memory).await;
    let traced = Traced::start(&nats_sink(&shared_url(), &stream.subject(), "")).await;
    traced.post(&unique("f")).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            stream.count().await >= 1
        })
        .await
    );
    let message = &stream.messages().await[0];
    let event_id = header(message, "webhook-id").unwrap();
    let traceparent = header(message, "traceparent").expect("a traceparent header");
    traced
        .collector
        .assert_names_its_attempt(&traceparent, &event_id, "bus")
        .await;
}
