//! The `rabbitmq` sink against the real broker (127.0.0.1:5672, guest/guest).
//!
//! Each test declares its own uniquely named exchange and queue and deletes
//! them at the end (should a test die first, the queue expires and the
//! exchange goes with its binding). The test itself talks to the broker with `lapin`, as a
//! consumer would.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use recordhook::record::StoredRecord;
use recordhook::sinks::{RabbitMqSink, RabbitMqSinkSettings, SecretUrl, Sink};
use serde_json::Value;

use crate::dead_letter::dead_letter_of;
use crate::harness::{Broker, Test};
use crate::helpers::*;
use crate::proxy::Proxy;
use crate::traced::Traced;

/// Every test of this file, for the harness.
pub fn tests() -> Vec<Test> {
    vec![
        crate::test!(records_arrive_with_the_record_as_payload_and_the_documented_properties),
        crate::test!(the_same_record_published_twice_carries_the_same_message_id_both_times),
        crate::test!(
            a_batch_of_several_groups_gets_one_result_per_record_with_only_the_unroutable_failing
        ),
        crate::test!(a_missing_exchange_is_retried_then_a_dead_letter_naming_it),
        crate::test!(an_unroutable_routing_key_is_retried_then_a_dead_letter),
        crate::test!(wrong_credentials_are_a_clear_error_without_the_password_in_logs),
        crate::test!(a_broker_down_at_start_up_neither_stops_the_service_nor_loses_records),
        crate::test!(a_broker_cut_under_traffic_grows_the_backlog_and_everything_arrives_later),
        crate::test!(check_config_redacts_the_password_in_the_url),
        crate::test!(traceparent_names_the_event_trace_and_its_delivery_attempt),
    ]
}

/// The shared broker, as the tests' own client and as recordhook's URL.
const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The sink's name in every test.
const SINK: &str = "queue";

fn unique(what: &str) -> String {
    format!("recordhook-test-{what}-{:016x}", fastrand::u64(..))
}

/// A test's own exchange, and maybe a queue bound to it.
struct Topology {
    connection: Connection,
    channel: Channel,
    exchange: String,
    queue: Option<String>,
}

impl Topology {
    /// An exchange with a queue bound to it for `binding`, or none.
    async fn new(binding: Option<&str>) -> Self {
        let connection = Connection::connect(URL, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let exchange = unique("exchange");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Direct,
                // Goes with its last binding, should cleanup not run.
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut queue = None;
        if let Some(binding) = binding {
            let name = unique("queue");
            let mut arguments = FieldTable::default();
            // Gone ten minutes after its last use, should cleanup not run.
            arguments.insert("x-expires".into(), AMQPValue::LongInt(600_000));
            channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions::default(),
                    arguments,
                )
                .await
                .unwrap();
            channel
                .queue_bind(
                    name.as_str().into(),
                    exchange.as_str().into(),
                    binding.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            queue = Some(name);
        }
        Self {
            connection,
            channel,
            exchange,
            queue,
        }
    }

    /// Takes messages off the queue until `count` have come or 20 s passed.
    async fn take(&self, count: usize) -> Vec<Delivery> {
        let queue = self.queue.as_deref().unwrap();
        let mut taken = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while taken.len() < count && tokio::time::Instant::now() < deadline {
            match self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                Some(message) => taken.push(message.delivery),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        taken
    }

    /// Messages in the queue right now.
    async fn queued(&self) -> u32 {
        let queue = self.queue.as_deref().unwrap();
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    }

    async fn delete(self) {
        // The exchange first: deleting its queue would auto-delete it.
        self.channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
            .unwrap();
        if let Some(queue) = &self.queue {
            self.channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .unwrap();
        }
        let _ = self.connection.close(200, "OK".into()).await;
    }
}

/// A `rabbitmq` sink named [`SINK`] with fast retries and `extra` keys.
fn sink_toml(url: &str, exchange: &str, extra: &str) -> String {
    format!(
        "[[sinks]]\nname = \"{SINK}\"\ntype = \"rabbitmq\"\nurl = \"{url}\"\nexchange = \"{exchange}\"\n\
         retry_initial_ms = 50\nretry_max_ms = 200\ntimeout_secs = 5\n{extra}\n"
    )
}

/// Posts a recording callback for `file_id`, asserting the 200, and returns its event id.
async fn post(app: &TestApp, file_id: &str) -> String {
    let response = app.post_json(&recording(file_id)).await;
    assert_eq!(response.status(), 200, "callback for {file_id}");
    app.stored()
        .await
        .into_iter()
        .find(|r| r.event["file_id"] == file_id)
        .unwrap()
        .id
}

async fn records_arrive_with_the_record_as_payload_and_the_documented_properties() {
    let topology = Topology::new(Some("css.100")).await;
    let app = spawn_app_with_config(&sink_toml(URL, &topology.exchange, "")).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(post(&app, &format!("amqp-{n}")).await);
    }
    for id in &ids {
        assert!(app.wait_for_state(id, SINK, "delivered").await, "{id}");
    }

    let messages = topology.take(3).await;
    assert_eq!(messages.len(), 3);
    let stored: BTreeMap<String, String> = app
        .stored()
        .await
        .iter()
        .map(|r| (r.id.clone(), serde_json::to_string(r).unwrap()))
        .collect();
    for message in &messages {
        let properties = &message.properties;
        let id = properties.message_id().as_ref().unwrap().to_string();
        // The payload is the stored record, byte for byte.
        assert_eq!(
            std::str::from_utf8(&message.data).unwrap(),
            stored[&id],
            "{id}"
        );
        let payload: Value = serde_json::from_slice(&message.data).unwrap();
        assert_eq!(payload["id"], id.as_str());
        assert_eq!(
            properties.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(*properties.delivery_mode(), Some(2));
        let headers = properties.headers().as_ref().unwrap();
        assert_eq!(
            headers.inner().get("recordhook-event-type"),
            Some(&AMQPValue::LongLongInt(100))
        );
        assert_eq!(message.routing_key.as_str(), "css.100");
        assert_eq!(message.exchange.as_str(), topology.exchange);
    }
    let received: HashSet<String> = messages
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(received, ids.into_iter().collect());
    app.stop().await;
    topology.delete().await;
}

/// RabbitMQ keeps both copies of a record published twice (as after a
/// confirm lost with the connection): the consumer drops the repeat by
/// `message_id`.
async fn the_same_record_published_twice_carries_the_same_message_id_both_times() {
    let topology = Topology::new(Some("css.100")).await;
    let settings = RabbitMqSinkSettings::new(SecretUrl::parse(URL).unwrap(), &topology.exchange);
    let sink = RabbitMqSink::from_settings(SINK, &settings).unwrap();
    let record = StoredRecord {
        id: unique("event"),
        event_type: 100,
        json: r#"{"id":"x","event_type":100}"#.to_owned(),
    };
    for _ in 0..2 {
        assert_eq!(
            sink.deliver_batch(std::slice::from_ref(&record)).await,
            [Ok(())]
        );
    }

    let messages = topology.take(2).await;
    assert_eq!(messages.len(), 2, "the broker does not deduplicate");
    let mut seen = HashSet::new();
    let mut handled = 0;
    for message in &messages {
        let id = message
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .to_string();
        assert_eq!(id, record.id);
        // The consumer's deduplication, as in the README.
        if seen.insert(id) {
            handled += 1;
        }
    }
    assert_eq!(handled, 1);
    topology.delete().await;
}

/// Publishes are pipelined and each confirm (or return) lands on its own
/// record: in one batch, only the record no queue is bound for fails.
async fn a_batch_of_several_groups_gets_one_result_per_record_with_only_the_unroutable_failing() {
    let topology = Topology::new(Some("css.100")).await;
    let settings = RabbitMqSinkSettings::new(SecretUrl::parse(URL).unwrap(), &topology.exchange);
    let sink = RabbitMqSink::from_settings(SINK, &settings).unwrap();
    let record = |n: usize, event_type: i64| StoredRecord {
        id: unique(&format!("event-{n}")),
        event_type,
        json: format!(r#"{{"n":{n}}}"#),
    };
    // Three groups of publishes (of 256), the later ones published while
    // the confirms of the ones before are awaited: each result must still
    // land on its own record.
    let records: Vec<StoredRecord> = (0..2 * 256 + 9)
        .map(|n| record(n, if n % 4 == 1 { 7 } else { 100 }))
        .collect();
    let results = sink.deliver_batch(&records).await;
    assert_eq!(results.len(), records.len());
    for (record, result) in records.iter().zip(&results) {
        if record.event_type == 100 {
            assert_eq!(result, &Ok(()), "{}", record.id);
        } else {
            let error = result.as_ref().unwrap_err().to_string();
            assert!(
                error.contains("unroutable: no queue bound for routing key `css.7`"),
                "{error}"
            );
        }
    }
    let routed: HashSet<String> = records
        .iter()
        .filter(|r| r.event_type == 100)
        .map(|r| r.id.clone())
        .collect();
    let messages = topology.take(routed.len()).await;
    let received: HashSet<String> = messages
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(received, routed);
    topology.delete().await;
}

async fn a_missing_exchange_is_retried_then_a_dead_letter_naming_it() {
    let missing = unique("missing-exchange");
    let app = spawn_app_with_config(&sink_toml(URL, &missing, "max_attempts = 3")).await;
    let id = post(&app, "amqp-missing-exchange").await;
    assert!(app.wait_for_state(&id, SINK, "dead").await);
    let state = app.delivery(&id, SINK).await.unwrap();
    assert_eq!(state.attempts, 3);
    let error = state.last_error.unwrap();
    // The third attempt met the 404 again: the closed channel was reopened.
    assert!(
        error.contains(&format!("exchange `{missing}` does not exist")) && error.contains("404"),
        "{error}"
    );
    app.stop().await;
}

async fn an_unroutable_routing_key_is_retried_then_a_dead_letter() {
    // An exchange with no queue bound at all.
    let topology = Topology::new(None).await;
    let app = spawn_app_with_config(&sink_toml(URL, &topology.exchange, "max_attempts = 3")).await;
    let id = post(&app, "amqp-unroutable").await;
    assert!(app.wait_for_state(&id, SINK, "dead").await);
    let state = app.delivery(&id, SINK).await.unwrap();
    assert_eq!(state.attempts, 3);
    let error = state.last_error.unwrap();
    assert!(
        error.contains("unroutable: no queue bound for routing key `css.100`"),
        "{error}"
    );
    assert!(error.contains(&topology.exchange), "{error}");
    app.stop().await;
    topology.delete().await;
}

/// Run as the real binary, so every log line it writes can be searched.
async fn wrong_credentials_are_a_clear_error_without_the_password_in_logs() {
    let password = "n0t-the-Passw0rd";
    let topology = Topology::new(Some("css.100")).await;
    let url = format!("amqp://guest:{password}@127.0.0.1:5672/%2f");
    let config = sink_toml(&url, &topology.exchange, "max_attempts = 2");
    let dir = tempfile::tempdir().unwrap();
    let (dead, lines) = dead_letter_of(dir, config, recording("amqp-wrong-credentials")).await;
    let error = dead["error"].as_str().unwrap();
    assert!(error.contains("login refused"), "{error}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("guest:[redacted]@127.0.0.1")),
        "{lines:#?}"
    );
    for line in &lines {
        assert!(!line.contains(password), "password in a log line: {line}");
    }
    assert_eq!(topology.queued().await, 0);
    topology.delete().await;
}

async fn a_broker_down_at_start_up_neither_stops_the_service_nor_loses_records() {
    let topology = Topology::new(Some("css.100")).await;
    let proxy = Proxy::start(Broker::RabbitMq.address()).await;
    proxy.cut().await;
    let url = format!("amqp://guest:guest@{}/%2f", proxy.address());
    let app = spawn_app_with_config(&sink_toml(&url, &topology.exchange, "")).await;
    let id = post(&app, "amqp-down-at-start").await;
    // Proof that delivery was tried and failed, before asserting it is not delivered.
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.delivery(&id, SINK)
                .await
                .is_some_and(|state| state.attempts >= 1)
        })
        .await
    );
    let state = app.delivery(&id, SINK).await.unwrap();
    assert_eq!(state.state, "pending");
    assert!(
        state
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains(&proxy.address().to_string()),
        "{state:?}"
    );
    proxy.restore();
    assert!(app.wait_for_state(&id, SINK, "delivered").await);
    assert_eq!(topology.take(1).await.len(), 1);
    app.stop().await;
    topology.delete().await;
}

async fn a_broker_cut_under_traffic_grows_the_backlog_and_everything_arrives_later() {
    let topology = Topology::new(Some("css.100")).await;
    let proxy = Proxy::start(Broker::RabbitMq.address()).await;
    let url = format!("amqp://guest:guest@{}/%2f", proxy.address());
    let app = spawn_app_with_config(&sink_toml(&url, &topology.exchange, "")).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(post(&app, &format!("amqp-before-{n}")).await);
    }
    for id in &ids {
        assert!(app.wait_for_state(id, SINK, "delivered").await);
    }

    proxy.cut().await;
    let pending = format!(r#"recordhook_pending_deliveries{{sink="{SINK}"}}"#);
    let mut backlog = Vec::new();
    for n in 0..20 {
        // Callbacks keep being answered 200 (asserted in `post`).
        backlog.push(post(&app, &format!("amqp-during-{n}")).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Proof that every one was tried and failed, before asserting none arrived.
    for id in &backlog {
        assert!(
            eventually(Duration::from_secs(20), || async {
                app.delivery(id, SINK)
                    .await
                    .is_some_and(|state| state.attempts >= 1)
            })
            .await,
            "{id} was not tried while the broker was cut"
        );
    }
    let counts = app
        .state
        .spool
        .counts(SINK, &vec![100].into())
        .await
        .unwrap();
    assert_eq!(counts.pending, 20, "{counts:?}");
    assert_eq!(counts.dead, 0);
    assert!(app.metric(&pending).await >= 20.0);

    proxy.restore();
    for id in &backlog {
        assert!(app.wait_for_state(id, SINK, "delivered").await, "{id}");
    }
    ids.extend(backlog);
    // At least once: every record arrived (a repeat is allowed, and dropped by id).
    let messages = topology.take(ids.len()).await;
    let received: HashSet<String> = messages
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(received, ids.into_iter().collect::<HashSet<_>>());
    app.stop().await;
    topology.delete().await;
}

async fn check_config_redacts_the_password_in_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    for (sink, valid) in [
        (
            "url = \"amqp://guest:s3cret-pw@127.0.0.1:5672/%2f\"\nexchange = \"x\"",
            true,
        ),
        (
            "url = \"http://guest:s3cret-pw@127.0.0.1:5672/%2f\"\nexchange = \"x\"",
            false,
        ),
        (
            "url = \"amqp://guest:s3cret-pw@127.0.0.1:5672/%2f?heartbeat=soon\"",
            false,
        ),
        (
            "url = \"amqp://guest:s3cret-pw@127.0.0.1/%2f\"\nrouting_key = \"css.{stream_id}\"",
            false,
        ),
    ] {
        std::fs::write(
            &config,
            format!(
                "[auth]\nkeys = [\"k\"]\n[[sinks]]\nname = \"q\"\ntype = \"rabbitmq\"\n{sink}\n"
            ),
        )
        .unwrap();
        let output = crate::binary::command(&dir)
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.success(), valid, "{sink}\n{stdout}\n{stderr}");
        assert!(
            !stdout.contains("s3cret-pw") && !stderr.contains("s3cret-pw"),
            "{stdout}\n{stderr}"
        );
        if valid {
            assert!(
                stdout.contains("url = \"amqp://guest:[redacted]@127.0.0.1:5672/%2f\""),
                "{stdout}"
            );
            assert!(
                stdout.contains("routing_key = \"css.{event_type}\""),
                "{stdout}"
            );
        } else {
            assert!(stderr.contains("sinks[0]"), "{stderr}");
        }
    }
}

/// With traces on, a message's `traceparent` header is in its event's
/// trace, with the delivery attempt that published it as its parent.
async fn traceparent_names_the_event_trace_and_its_delivery_attempt() {
    let topology = Topology::new(Some("css.100")).await;
    let traced = Traced::start(&sink_toml(URL, &topology.exchange, "")).await;
    traced.post(&unique("f")).await;
    let messages = topology.take(1).await;
    assert_eq!(messages.len(), 1);
    let properties = &messages[0].properties;
    let event_id = properties.message_id().as_ref().unwrap().to_string();
    let headers = properties.headers().as_ref().unwrap();
    let Some(AMQPValue::LongString(traceparent)) = headers.inner().get("traceparent") else {
        panic!("no traceparent header: {headers:?}");
    };
    traced
        .collector
        .assert_names_its_attempt(&traceparent.to_string(), &event_id, SINK)
        .await;
    topology.delete().await;
}
