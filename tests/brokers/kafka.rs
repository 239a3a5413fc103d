//! The `kafka` sink against a real Kafka-protocol broker: tansu
//! (`cargo install tansu --locked --features libsql`, which `.ci/run` does),
//! one of the test's own per test on a free port, storing in an SQLite file
//! in a temporary directory so that it can be killed and started again with
//! its messages kept. The tests read what arrived with a Kafka client
//! (rskafka's fetch), never through recordhook.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use recordhook::record::StoredRecord;
use recordhook::sinks::{KafkaSink, KafkaSinkSettings, Sink};
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use serde_json::Value;

use crate::dead_letter::dead_letter_of;
use crate::harness::Test;
use crate::helpers::*;
use crate::produce_cut::ProduceCut;
use crate::traced::Traced;

/// Every test of this file, for the harness.
pub fn tests() -> Vec<Test> {
    vec![
        crate::test!(records_arrive_keyed_with_the_exact_record_and_the_documented_headers),
        crate::test!(a_batch_spread_over_partitions_gets_one_result_per_record),
        crate::test!(a_missing_topic_becomes_a_dead_letter_never_delivered),
        crate::test!(a_stopped_broker_means_retries_and_a_backlog_then_everything_arrives_once),
        crate::test!(scram_credentials_work_and_wrong_ones_are_a_clear_error_without_the_password),
        crate::test!(check_config_shows_the_sasl_password_redacted),
        crate::test!(a_produce_whose_answer_is_lost_is_stored_once_by_the_idempotent_producer),
        crate::test!(traceparent_names_the_event_trace_and_its_delivery_attempt),
    ]
}

/// Why the tansu broker cannot be run here, if it cannot.
pub fn unavailable() -> Option<String> {
    match Command::new("tansu").arg("--version").output() {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!("`tansu --version` failed: {output:?}")),
        Err(err) => Some(format!(
            "the tansu broker is not installed ({err}); \
             `cargo install tansu --locked --features libsql`"
        )),
    }
}

/// A name no other test (or run) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{:x}", std::process::id(), fastrand::u64(..))
}

/// A tansu broker of the test's own, killed when dropped.
struct Tansu {
    port: u16,
    /// The port it tells clients to reach it on: its own, or a proxy's.
    advertised: u16,
    child: Option<Child>,
    extra: Vec<String>,
    store: tempfile::TempDir,
}

impl Tansu {
    /// Starts one on a free port with `extra` arguments.
    fn start(extra: &[&str]) -> Self {
        Self::start_advertising(extra, None)
    }

    /// [`Tansu::start`], telling clients to reach it on `advertised` (a
    /// proxy's port) instead of its own.
    fn start_advertising(extra: &[&str], advertised: Option<u16>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut tansu = Self {
            port,
            advertised: advertised.unwrap_or(port),
            child: None,
            extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
            store: tempfile::tempdir().unwrap(),
        };
        tansu.restart();
        tansu
    }

    /// Starts it (again) on its port, on its storage, and waits until it
    /// accepts connections.
    fn restart(&mut self) {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
        let child = Command::new("tansu")
            .arg("broker")
            .args(["--listener-url", &listener])
            .args(["--advertised-listener-url", &advertised])
            // tansu reads the SQLite URL's path relative to its working
            // directory, so it runs in the store with a relative one.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.store.path())
            .args(&self.extra)
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu is installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it at once, as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A client to it (`sasl` for one that demands credentials).
    async fn client(&self, sasl: Option<rskafka::client::SaslConfig>) -> Client {
        let mut builder = ClientBuilder::new(vec![self.address()]);
        if let Some(sasl) = sasl {
            builder = builder.sasl_config(sasl);
        }
        builder.build().await.unwrap()
    }

    /// Creates `topic` with `partitions` partitions.
    async fn create_topic(&self, client: &Client, topic: &str, partitions: i32) {
        client
            .controller_client()
            .unwrap()
            .create_topic(topic, partitions, 1, 5_000)
            .await
            .unwrap();
    }

    /// Every message of every partition of `topic`, with its partition.
    async fn messages(&self, client: &Client, topic: &str, partitions: i32) -> Vec<(i32, Record)> {
        let mut all = Vec::new();
        for partition in 0..partitions {
            let reader = client
                .partition_client(topic, partition, UnknownTopicHandling::Retry)
                .await
                .unwrap();
            let mut offset = 0;
            loop {
                let (batch, high_watermark) = reader
                    .fetch_records(offset, 1..1_000_000, 100)
                    .await
                    .unwrap();
                for record in batch {
                    offset = record.offset + 1;
                    all.push((partition, record.record));
                }
                if offset >= high_watermark {
                    break;
                }
            }
        }
        all
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The config of an app with a `bus` kafka sink (and whatever `extra` adds).
fn kafka_sink(broker: &str, topic: &str, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = \"bus\"\ntype = \"kafka\"\nbrokers = [\"{broker}\"]\ntopic = \"{topic}\"\n\
         timeout_secs = 5\nretry_initial_ms = 50\nretry_max_ms = 500\n{extra}"
    )
}

/// Posts a recording callback for `file_id` and returns its event id.
async fn post(app: &TestApp, file_id: &str) -> String {
    let response = app.post_json(&recording(file_id)).await;
    assert_eq!(response.status().as_u16(), 200, "{file_id}");
    app.stored()
        .await
        .into_iter()
        .find(|record| record.event["file_id"] == file_id)
        .unwrap()
        .id
}

fn header(record: &Record, name: &str) -> String {
    String::from_utf8(record.headers[name].clone()).unwrap()
}

async fn records_arrive_keyed_with_the_exact_record_and_the_documented_headers() {
    let tansu = Tansu::start(&[]);
    let client = tansu.client(None).await;
    let prefix = unique("rh");
    tansu
        .create_topic(&client, &format!("{prefix}.100"), 3)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = path_in(&dir, "records.jsonl");
    let app = spawn_app_with_config(&format!(
        "{}[[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = {file:?}\n",
        kafka_sink(&tansu.address(), &format!("{prefix}.{{event_type}}"), "")
    ))
    .await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let id = post(&app, &format!("payload-{n}")).await;
        assert!(app.wait_for_state(&id, "bus", "delivered").await, "{id}");
        assert!(app.wait_for_state(&id, "archive", "delivered").await);
        ids.push(id);
    }
    // The file sink writes the stored JSON as it is, which is what the
    // forward sink posts: each message's value must equal it byte for byte.
    let lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let messages = tansu.messages(&client, &format!("{prefix}.100"), 3).await;
    assert_eq!(messages.len(), ids.len(), "{messages:?}");
    for (id, line) in ids.iter().zip(&lines) {
        let (partition, message) = messages
            .iter()
            .find(|(_, message)| message.key.as_deref() == Some(id.as_bytes()))
            .unwrap_or_else(|| panic!("no message keyed {id}"));
        assert_eq!(message.value.as_deref(), Some(line.as_bytes()));
        assert_eq!(header(message, "recordhook-event-id"), *id);
        assert_eq!(header(message, "recordhook-event-type"), "100");
        assert_eq!(header(message, "content-type"), "application/json");
        let record: Value = serde_json::from_slice(message.value.as_deref().unwrap()).unwrap();
        assert_eq!(record["id"], id.as_str());
        // Kafka's default partitioner's choice for the key, as any
        // producer would make it.
        let hash = murmur2::murmur2(id.as_bytes(), murmur2::KAFKA_SEED) & 0x7fff_ffff;
        assert_eq!(i64::from(*partition), i64::from(hash % 3), "{id}");
    }
    app.stop().await;
}

fn stored(id: &str, event_type: i64) -> StoredRecord {
    StoredRecord {
        id: id.to_owned(),
        event_type,
        json: format!(r#"{{"id":"{id}","event_type":{event_type}}}"#),
    }
}

async fn a_batch_spread_over_partitions_gets_one_result_per_record() {
    let tansu = Tansu::start(&[]);
    let client = tansu.client(None).await;
    let prefix = unique("rh");
    tansu
        .create_topic(&client, &format!("{prefix}.100"), 4)
        .await;
    tansu.create_topic(&client, &format!("{prefix}.1"), 1).await;
    let mut settings = KafkaSinkSettings::new(vec![tansu.address()]);
    settings.topic = format!("{prefix}.{{event_type}}");
    let sink = KafkaSink::from_settings("bus", &settings).unwrap();
    // 300 records over two topics and five partitions, every tenth one of
    // a type whose topic does not exist.
    let records: Vec<StoredRecord> = (0..300)
        .map(|n| {
            let event_type = match n % 10 {
                0 => 0,
                1 | 2 => 1,
                _ => 100,
            };
            stored(&format!("e{n}"), event_type)
        })
        .collect();
    let outcomes = sink.deliver_batch(&records).await;
    assert_eq!(outcomes.len(), records.len());
    for (record, outcome) in records.iter().zip(outcomes.iter()) {
        if record.event_type == 0 {
            let err = outcome.as_ref().unwrap_err();
            assert!(
                matches!(err, recordhook::sinks::DeliveryError::Permanent { .. }),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("topic `{prefix}.0` does not exist"))
            );
        } else {
            assert_eq!(outcome, &Ok(()), "{}", record.id);
        }
    }
    let mut arrived: Vec<String> = tansu
        .messages(&client, &format!("{prefix}.100"), 4)
        .await
        .into_iter()
        .chain(tansu.messages(&client, &format!("{prefix}.1"), 1).await)
        .map(|(_, message)| header(&message, "recordhook-event-id"))
        .collect();
    arrived.sort();
    let mut expected: Vec<String> = records
        .iter()
        .filter(|record| record.event_type != 0)
        .map(|record| record.id.clone())
        .collect();
    expected.sort();
    assert_eq!(arrived, expected);
}

async fn a_missing_topic_becomes_a_dead_letter_never_delivered() {
    let tansu = Tansu::start(&[]);
    let topic = format!("{}.{{event_type}}", unique("rh_missing"));
    let app =
        spawn_app_with_config(&kafka_sink(&tansu.address(), &topic, "max_attempts = 3\n")).await;
    let id = post(&app, &unique("f")).await;
    assert!(app.wait_for_state(&id, "bus", "dead").await);
    let state = app.delivery(&id, "bus").await.unwrap();
    // Permanent: a dead letter at once, not after every attempt.
    assert_eq!(state.attempts, 1);
    let error = state.last_error.unwrap();
    assert!(
        error.contains(&format!(
            "topic `{}` does not exist in kafka at {}",
            topic.replace("{event_type}", "100"),
            tansu.address()
        )),
        "{error}"
    );
    assert_eq!(
        app.metric(r#"recordhook_deliveries_total{sink="bus",outcome="delivered"}"#)
            .await,
        0.0
    );
    app.stop().await;
}

async fn a_stopped_broker_means_retries_and_a_backlog_then_everything_arrives_once() {
    let mut tansu = Tansu::start(&[]);
    let client = tansu.client(None).await;
    let prefix = unique("rh");
    let topic = format!("{prefix}.100");
    tansu.create_topic(&client, &topic, 2).await;
    drop(client);
    let app = spawn_app_with_config(&kafka_sink(
        &tansu.address(),
        &format!("{prefix}.{{event_type}}"),
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

    tansu.kill();
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
        eventually(Duration::from_secs(30), || async {
            app.metric(retried).await >= before + 30.0
        })
        .await
    );
    assert_eq!(
        app.metric(r#"recordhook_pending_deliveries{sink="bus"}"#)
            .await,
        30.0
    );
    for id in &backlog {
        let state = app.delivery(id, "bus").await.unwrap();
        assert_eq!(state.state, "pending", "{id}");
        let error = state.last_error.unwrap_or_default();
        assert!(error.contains(&tansu.address()), "{error}");
    }

    tansu.restart();
    for id in &backlog {
        let delivered = app.wait_for_state(id, "bus", "delivered").await;
        assert!(delivered, "{id}: {:?}", app.delivery(id, "bus").await);
    }
    ids.extend(backlog);
    let client = tansu.client(None).await;
    let arrived: Vec<String> = tansu
        .messages(&client, &topic, 2)
        .await
        .iter()
        .map(|(_, message)| header(message, "recordhook-event-id"))
        .collect();
    // Exactly once: every record, none twice.
    assert_eq!(arrived.len(), ids.len(), "{arrived:?}");
    assert_eq!(
        arrived.iter().collect::<BTreeSet<_>>(),
        ids.iter().collect::<BTreeSet<_>>()
    );
    app.stop().await;
}

/// A tansu demanding SASL, with the user `recordhook` (SCRAM-SHA-512)
/// made while it did not, and `topic` created.
async fn tansu_with_a_user(password: &str, topic: &str) -> Tansu {
    let mut tansu = Tansu::start(&[]);
    let created = Command::new("tansu")
        .args(["user", "create", "--broker"])
        .arg(format!("tcp://{}", tansu.address()))
        .args(["recordhook", password])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let client = tansu.client(None).await;
    tansu.create_topic(&client, topic, 1).await;
    drop(client);
    tansu.kill();
    tansu.extra.push("--authentication".to_owned());
    tansu.restart();
    tansu
}

async fn scram_credentials_work_and_wrong_ones_are_a_clear_error_without_the_password() {
    const RIGHT: &str = "R1ght-pa55word";
    const WRONG: &str = "Wr0ng-pa55word";
    let prefix = unique("rh");
    let tansu = tansu_with_a_user(RIGHT, &format!("{prefix}.100")).await;
    let sasl = |password: &str| {
        format!(
            "max_attempts = 2\n\
             sasl = {{ mechanism = \"SCRAM-SHA-512\", username = \"recordhook\", password = \"{password}\" }}\n"
        )
    };
    let topic = format!("{prefix}.{{event_type}}");

    let app = spawn_app_with_config(&kafka_sink(&tansu.address(), &topic, &sasl(RIGHT))).await;
    let id = post(&app, &unique("f")).await;
    assert!(app.wait_for_state(&id, "bus", "delivered").await);
    app.stop().await;

    // The real binary, so its log lines are seen whole.
    let sink = kafka_sink(&tansu.address(), &topic, &sasl(WRONG));
    let config = format!("[log]\nlevel = \"debug\"\n{sink}");
    let dir = tempfile::tempdir().unwrap();
    let (dead, lines) = dead_letter_of(dir, config, recording(&unique("f"))).await;
    let error = dead["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("cannot connect to kafka at {}", tansu.address())),
        "{error}"
    );
    assert!(error.to_lowercase().contains("sasl"), "{error}");
    let log = lines.join("\n");
    assert!(!log.contains(WRONG), "the password is in the log:\n{log}");
}

async fn check_config_shows_the_sasl_password_redacted() {
    const SECRET: &str = "s3cret-pa55";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("check.toml");
    let sink = kafka_sink(
        "kafka.example:9093",
        "css.{event_type}",
        &format!(
            "tls = true\nsasl = {{ mechanism = \"PLAIN\", username = \"rh\", password = \"{SECRET}\" }}\n"
        ),
    );
    std::fs::write(&config, format!("[auth]\nkeys = [\"k\"]\n{sink}")).unwrap();
    let check = crate::binary::command(&dir)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let shown = String::from_utf8_lossy(&check.stdout);
    assert!(shown.contains("type = \"kafka\""), "{shown}");
    assert!(shown.contains("password = \"[redacted]\""), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
    // Invalid settings are refused without connecting, and name the key.
    let bad = kafka_sink("kafka.example", "css.{event_type}", "");
    std::fs::write(&config, format!("[auth]\nkeys = [\"k\"]\n{bad}")).unwrap();
    let check = crate::binary::command(&dir)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!check.status.success(), "{check:?}");
    let reason = String::from_utf8_lossy(&check.stderr);
    assert!(reason.contains("sinks[0].brokers"), "{reason}");
}

/// With traces on, a message's `traceparent` header is in its event's
/// trace, with the delivery attempt that produced it as its parent.
async fn traceparent_names_the_event_trace_and_its_delivery_attempt() {
    let tansu = Tansu::start(&[]);
    let client = tansu.client(None).await;
    let prefix = unique("rh");
    let topic = format!("{prefix}.100");
    tansu.create_topic(&client, &topic, 1).await;
    let traced = Traced::start(&kafka_sink(
        &tansu.address(),
        &format!("{prefix}.{{event_type}}"),
        "",
    ))
    .await;
    traced.post(&unique("f")).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            !tansu.messages(&client, &topic, 1).await.is_empty()
        })
        .await
    );
    let (_, message) = &tansu.messages(&client, &topic, 1).await[0];
    traced
        .collector
        .assert_names_its_attempt(
            &header(message, "traceparent"),
            &header(message, "recordhook-event-id"),
            "bus",
        )
        .await;
}

/// A produce whose answer is lost (the connection cut after the broker got
/// the request) is sent again by the sink's idempotent producer as the same
/// batch: a producer id from the cluster (not -1, which means "not
/// idempotent"), the same epoch and base sequence, so the broker stores it
/// once. The record counts as delivered once the retry is acknowledged.
async fn a_produce_whose_answer_is_lost_is_stored_once_by_the_idempotent_producer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let tansu = Tansu::start_advertising(&[], Some(proxy_port));
    let proxy = ProduceCut::start(listener, ([127, 0, 0, 1], tansu.port).into());
    let client = tansu.client(None).await;
    let prefix = unique("rh");
    let topic = format!("{prefix}.100");
    tansu.create_topic(&client, &topic, 1).await;
    let mut settings = KafkaSinkSettings::new(vec![format!("127.0.0.1:{proxy_port}")]);
    settings.topic = format!("{prefix}.{{event_type}}");
    let sink = KafkaSink::from_settings("bus", &settings).unwrap();

    let record = stored("lost-answer", 100);
    let outcomes = sink.deliver_batch(std::slice::from_ref(&record)).await;
    assert_eq!(outcomes[0], Ok(()));
    assert!(
        proxy.cut(),
        "no produce answer was cut: {:?}",
        proxy.batches()
    );
    let batches = proxy.batches();
    assert!(
        batches.len() >= 2,
        "the produce was not sent again: {batches:?}"
    );
    assert!(batches[0].producer_id >= 0, "not idempotent: {batches:?}");
    assert_eq!(
        batches[1], batches[0],
        "the retry is another batch: {batches:?}"
    );
    assert_eq!(batches[0].records, 1);
    // tansu deduplicates by producer id and sequence: the topic holds the
    // record once, though the broker got it twice.
    let stored = tansu.messages(&client, &topic, 1).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(header(&stored[0].1, "recordhook-event-id"), record.id);
}
