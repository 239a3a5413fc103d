//! The `kafka` sink: produces each record to a Kafka topic with an
//! idempotent producer and counts it as delivered only when the partition's
//! leader acknowledged it with `acks = all` (every in-sync replica has it).
//!
//! A message is the record's JSON, byte for byte as the forward sink posts
//! it, keyed by the event id (or the stream id, or nothing: `key`), with
//! headers naming the event id and type (and `traceparent` when traces are
//! on). The partition is Kafka's default partitioner's choice for the key
//! ([`partition`]).
//!
//! The client is librdkafka ([`client`]), whose idempotent producer makes a
//! produce it retries after a lost answer land once. It retries only within
//! `timeout_secs`; a record it then reports failed is never sent by it
//! again, and our retry schedule produces it anew, which the broker cannot
//! tell from a new record: consumers still deduplicate on the
//! `recordhook-event-id` header, as with every at-least-once sink.
//!
//! The producer is made on the first delivery, never at start-up. When the
//! cluster cannot be reached, the next attempt waits a growing delay
//! ([`ReconnectGate`]) and deliveries meanwhile fail at once; it then makes
//! a new producer (librdkafka's old one did not always find a restarted
//! broker again). Topics are
//! never created: a record whose topic the cluster does not have is a
//! permanent failure (a dead letter, replayable once the topic exists);
//! every other failure is retriable.

mod client;
mod partition;
mod settings;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer as _};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::Mutex;
use tokio::time::Instant;

use self::client::Client;
pub use self::settings::{KafkaSinkSettings, MessageKey};
use super::broker::{Backoff, ReconnectGate, Template};
use super::checks::InvalidSetting;
use super::contract::{BoxFuture, DeliveryError, Outcomes, Sink};
use crate::record::StoredRecord;
use crate::telemetry::traces;

/// Header carrying the record's event id, for consumers to deduplicate on.
pub const EVENT_ID_HEADER: &str = "recordhook-event-id";
/// Header carrying the record's event type number.
pub const EVENT_TYPE_HEADER: &str = "recordhook-event-type";
/// Header saying what the value is.
pub const CONTENT_TYPE_HEADER: &str = "content-type";

/// Waits between attempts to reach the cluster after a failed one: from
/// 200 ms up to 5 s, as the other broker sinks.
const RECONNECT: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(5),
};

/// How long past `timeout_secs` to wait for librdkafka's report on a
/// record before giving up on hearing it (it reports every record within
/// `message.timeout.ms`; this only guards against a report never coming).
const REPORT_GRACE: Duration = Duration::from_secs(5);

/// Produces records to Kafka.
pub struct KafkaSink {
    /// The sink's name, for log fields and the client id.
    name: String,
    /// The settings, kept to make the producer on the first delivery.
    settings: KafkaSinkSettings,
    topic: Template,
    key: MessageKey,
    timeout: Duration,
    /// The producer and what it learnt of the cluster, behind one lock held
    /// only to look things up, never across a produce.
    state: Mutex<State>,
}

/// The producer, once made, and the per-topic facts learnt with it.
struct State {
    producer: Option<Arc<Client>>,
    gate: ReconnectGate,
    /// Partition count per topic, from the cluster's metadata.
    partitions: HashMap<String, i32>,
}

/// A record's message, built before it is handed to librdkafka.
struct Message {
    topic: String,
    partition: i32,
    key: Option<Vec<u8>>,
    headers: Vec<(&'static str, Vec<u8>)>,
}

impl KafkaSink {
    /// The kafka sink `settings` describe, named `name`. Reads `ca_file`
    /// but does not connect: the first delivery does.
    pub fn from_settings(name: &str, settings: &KafkaSinkSettings) -> Result<Self, InvalidSetting> {
        settings.validate()?;
        if let Some(path) = &settings.ca_file {
            check_ca_file(path)?;
        }
        Ok(Self {
            name: name.to_owned(),
            settings: settings.clone(),
            topic: settings::topic_template(&settings.topic)?,
            key: settings.key,
            timeout: Duration::from_secs(settings.timeout_secs),
            state: Mutex::new(State {
                producer: None,
                gate: ReconnectGate::new(RECONNECT),
                partitions: HashMap::new(),
            }),
        })
    }

    /// The brokers as shown in errors (they carry no secret).
    fn at(&self) -> String {
        self.settings.brokers.join(",")
    }

    /// The producer, made now if there is none, unless the gate is closed.
    async fn producer(&self) -> Result<Arc<Client>, DeliveryError> {
        let mut state = self.state.lock().await;
        state.gate.check(Instant::now()).map_err(|closed| {
            DeliveryError::retriable(format!("kafka at {}: {closed}", self.at()))
        })?;
        if let Some(producer) = &state.producer {
            return Ok(Arc::clone(producer));
        }
        match Client::make(&self.name, &self.settings) {
            Ok(client) => {
                let client = Arc::new(client);
                state.producer = Some(Arc::clone(&client));
                Ok(client)
            }
            Err(err) => {
                // Only a configuration librdkafka refuses (a CA file it
                // cannot load): nothing has been sent.
                let reason = format!(
                    "cannot make a kafka producer for {}: {}",
                    self.at(),
                    crate::error_chain::error_chain(&err)
                );
                state.gate.failed(Instant::now(), &reason);
                Err(DeliveryError::retriable(reason))
            }
        }
    }

    /// Forgets the partition counts (and the producer itself after a fatal
    /// error), so the next delivery learns the cluster afresh.
    async fn forget(&self, client: &Client) {
        let mut state = self.state.lock().await;
        state.partitions.clear();
        if let Some((code, reason)) = client.producer.client().fatal_error() {
            tracing::warn!(
                sink = %self.name,
                error = %code,
                reason = %client.report.scrub(&reason),
                "kafka producer failed for good; a new one is made for the next delivery"
            );
            state.producer = None;
        }
    }

    /// How many partitions `topic` has: from the cache, or the cluster's
    /// metadata, waited for until `deadline`. A topic the cluster lacks is
    /// a permanent failure; a cluster that does not answer closes the gate.
    async fn partition_count(
        &self,
        client: &Arc<Client>,
        topic: &str,
        deadline: Instant,
    ) -> Result<i32, DeliveryError> {
        if let Some(count) = self.state.lock().await.partitions.get(topic) {
            return Ok(*count);
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        let asking = Arc::clone(client);
        let named = topic.to_owned();
        // librdkafka's metadata call blocks its thread until answered.
        let answer =
            tokio::task::spawn_blocking(move || {
                let metadata = asking
                    .producer
                    .client()
                    .fetch_metadata(Some(&named), wait)?;
                Ok::<_, KafkaError>(metadata.topics().iter().find(|t| t.name() == named).map(
                    |found| {
                        (
                            found.error().map(RDKafkaErrorCode::from),
                            found.partitions().len(),
                        )
                    },
                ))
            })
            .await;
        let found = match answer {
            Ok(Ok(found)) => found,
            Ok(Err(err)) => return Err(self.unreachable(client, &err).await),
            Err(err) => {
                return Err(DeliveryError::retriable(format!(
                    "kafka at {}: the metadata lookup failed: {err}",
                    self.at()
                )));
            }
        };
        self.reachable(client).await;
        match found {
            None | Some((Some(RDKafkaErrorCode::UnknownTopicOrPartition), _)) => {
                Err(missing_topic(topic, &self.at()))
            }
            Some((Some(code), _)) => Err(DeliveryError::retriable(format!(
                "kafka at {} cannot tell the partitions of topic `{topic}`: {code}",
                self.at()
            ))),
            Some((None, 0)) => Err(missing_topic(topic, &self.at())),
            Some((None, count)) => {
                let count = i32::try_from(count).unwrap_or(i32::MAX);
                self.state
                    .lock()
                    .await
                    .partitions
                    .insert(topic.to_owned(), count);
                Ok(count)
            }
        }
    }

    /// The cluster answered: the gate opens, and librdkafka's last error
    /// is history.
    async fn reachable(&self, client: &Client) {
        client.report.clear();
        if self.state.lock().await.gate.succeeded() {
            tracing::info!(sink = %self.name, brokers = %self.at(), "kafka reachable again");
        }
    }

    /// The cluster did not answer (`err`): the gate closes, the producer is
    /// dropped for a new one, and the error says why, with librdkafka's own
    /// reason when it gave one.
    async fn unreachable(&self, client: &Client, err: &KafkaError) -> DeliveryError {
        let failed = client.report.scrub(&crate::error_chain::error_chain(err));
        // librdkafka's own reason (a refused login) says more than the
        // call's error (often a bare timeout), so both are given.
        let why = match client.report.last_error() {
            Some(reported) => format!("{failed} ({reported})"),
            None => failed,
        };
        let reason = format!("cannot connect to kafka at {}: {why}", self.at());
        let mut state = self.state.lock().await;
        state.gate.failed(Instant::now(), &reason);
        state.producer = None;
        DeliveryError::retriable(reason)
    }

    /// The partition `record` goes to in a topic of `count` partitions.
    fn partition_for(&self, record: &StoredRecord, count: i32) -> i32 {
        match self.key_of(record) {
            Some(key) => partition::for_key(&key, count),
            None => partition::for_no_key(count),
        }
    }

    /// The message key for `record`.
    fn key_of(&self, record: &StoredRecord) -> Option<Vec<u8>> {
        match self.key {
            MessageKey::EventId => Some(record.id.clone().into_bytes()),
            MessageKey::StreamId => Some(
                record
                    .stream_id()
                    .unwrap_or_else(|| record.id.clone())
                    .into_bytes(),
            ),
            MessageKey::None => None,
        }
    }

    /// The message for `record`, bound for `partition` of `topic`.
    fn message(&self, record: &StoredRecord, topic: String, partition: i32) -> Message {
        let mut headers = vec![
            (EVENT_ID_HEADER, record.id.clone().into_bytes()),
            (
                EVENT_TYPE_HEADER,
                record.event_type.to_string().into_bytes(),
            ),
            (CONTENT_TYPE_HEADER, b"application/json".to_vec()),
        ];
        if let Some(traceparent) = traces::traceparent(&record.id) {
            headers.push((traces::TRACEPARENT_HEADER, traceparent.into_bytes()));
        }
        Message {
            topic,
            partition,
            key: self.key_of(record),
            headers,
        }
    }

    /// Hands `message` (with `record`'s JSON as its value) to librdkafka;
    /// the future resolves with the broker's acknowledgement or the
    /// client's final failure.
    fn enqueue(
        &self,
        client: &Client,
        message: &Message,
        record: &StoredRecord,
    ) -> Result<DeliveryFuture, DeliveryError> {
        let headers = message
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value),
                })
            });
        let mut future = FutureRecord::to(&message.topic)
            .partition(message.partition)
            .payload(record.json.as_bytes())
            .headers(headers);
        if let Some(key) = &message.key {
            future = future.key(key);
        }
        client
            .producer
            .send_result(future)
            .map_err(|(err, _)| self.delivery_error(client, &message.topic, &err))
    }

    /// What librdkafka's final failure of a record means, without any secret.
    fn delivery_error(&self, client: &Client, topic: &str, err: &KafkaError) -> DeliveryError {
        match err.rdkafka_error_code() {
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                missing_topic(topic, &self.at())
            }
            Some(RDKafkaErrorCode::MessageTimedOut) => {
                let why = client
                    .report
                    .last_error()
                    .map(|why| format!(" ({why})"))
                    .unwrap_or_default();
                DeliveryError::retriable(format!(
                    "timed out after {} s waiting for kafka at {} to acknowledge{why}",
                    self.timeout.as_secs(),
                    self.at()
                ))
            }
            _ => DeliveryError::retriable(format!(
                "kafka at {} did not take the record for topic `{topic}`: {}",
                self.at(),
                client.report.scrub(&crate::error_chain::error_chain(err))
            )),
        }
    }

    /// Delivers a batch: each topic's partition count looked up once (the
    /// lookups within one timeout), every record handed to librdkafka at
    /// once, which batches them per partition, then each record's own
    /// acknowledgement or failure awaited.
    async fn deliver_all(&self, records: &[StoredRecord]) -> Outcomes {
        let deadline = Instant::now() + self.timeout;
        let producer = match self.producer().await {
            Ok(producer) => producer,
            Err(err) => return Outcomes::all(records, Err(err)),
        };
        let mut outcomes = Outcomes::unsettled(records, "not produced to kafka");
        let mut counts: HashMap<String, Result<i32, DeliveryError>> = HashMap::new();
        let mut pending = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let topic = self.topic.render(record.event_type);
            if !counts.contains_key(&topic) {
                let count = self.partition_count(&producer, &topic, deadline).await;
                counts.insert(topic.clone(), count);
            }
            let partition = match &counts[&topic] {
                Ok(count) => self.partition_for(record, *count),
                Err(err) => {
                    outcomes.set(index, Err(err.clone()));
                    continue;
                }
            };
            let message = self.message(record, topic, partition);
            match self.enqueue(&producer, &message, record) {
                Ok(delivery) => pending.push((index, message.topic, delivery)),
                Err(err) => outcomes.set(index, Err(err)),
            }
        }
        let patience = self.timeout + REPORT_GRACE;
        let reports = futures_util::future::join_all(pending.into_iter().map(
            |(index, topic, delivery)| async move {
                (index, topic, tokio::time::timeout(patience, delivery).await)
            },
        ))
        .await;
        let mut failed = false;
        for (index, topic, report) in reports {
            let outcome = match report {
                Ok(Ok(Ok(_))) => Ok(()),
                Ok(Ok(Err((err, _)))) => Err(self.delivery_error(&producer, &topic, &err)),
                Ok(Err(_canceled)) => Err(DeliveryError::retriable(format!(
                    "the kafka producer for {} stopped before reporting",
                    self.at()
                ))),
                Err(_) => Err(DeliveryError::retriable(format!(
                    "no report from the kafka producer for {} within {} s",
                    self.at(),
                    patience.as_secs()
                ))),
            };
            failed |= outcome.is_err();
            outcomes.set(index, outcome);
        }
        if failed {
            // A topic may have changed or the producer may be broken:
            // learn the cluster again next time rather than trust what failed.
            self.forget(&producer).await;
        }
        outcomes
    }
}

impl Sink for KafkaSink {
    fn deliver_batch<'a>(&'a self, records: &'a [StoredRecord]) -> BoxFuture<'a, Outcomes> {
        Box::pin(self.deliver_all(records))
    }
}

/// A record whose topic the cluster does not have: permanent, since
/// recordhook never creates topics; replayable once the topic exists.
fn missing_topic(topic: &str, at: &str) -> DeliveryError {
    DeliveryError::permanent(format!(
        "topic `{topic}` does not exist in kafka at {at} (recordhook does not create topics)"
    ))
}

/// Checks that `path` holds PEM CA certificates, so that a wrong file is
/// refused at start-up naming it, not by librdkafka at the first delivery.
fn check_ca_file(path: &std::path::Path) -> Result<(), InvalidSetting> {
    let unreadable = |err: &dyn std::fmt::Display| {
        InvalidSetting::new(
            "ca_file",
            format!(
                "cannot read CA certificates from `{}`: {err}",
                path.display()
            ),
        )
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|err| unreadable(&err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| unreadable(&err))?;
    if certificates.is_empty() {
        return Err(unreadable(&"no certificate in it"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: &str, json: &str) -> StoredRecord {
        StoredRecord {
            id: id.to_owned(),
            event_type: 100,
            json: json.to_owned(),
        }
    }

    fn sink(extra: &str) -> KafkaSink {
        let settings: KafkaSinkSettings =
            toml::from_str(&format!("brokers = [\"127.0.0.1:9\"]\n{extra}")).unwrap();
        KafkaSink::from_settings("bus", &settings).unwrap()
    }

    #[test]
    fn a_message_is_keyed_by_the_event_id_with_its_id_and_type_in_headers() {
        let json = r#"{"id":"e1","event_type":100,"event":{"stream_id":"room"}}"#;
        let record = stored("e1", json);
        let message = sink("").message(&record, "t".to_owned(), 2);
        assert_eq!((message.topic.as_str(), message.partition), ("t", 2));
        assert_eq!(message.key.as_deref(), Some(b"e1".as_slice()));
        assert_eq!(
            message.headers,
            [
                (EVENT_ID_HEADER, b"e1".to_vec()),
                (EVENT_TYPE_HEADER, b"100".to_vec()),
                (CONTENT_TYPE_HEADER, b"application/json".to_vec()),
            ]
        );
        let unkeyed = sink("key = \"none\"").message(&record, "t".to_owned(), 0);
        assert_eq!(unkeyed.key, None);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let settings: KafkaSinkSettings = toml::from_str(&format!(
            "brokers = [\"k:9093\"]\ntls = true\nca_file = {:?}",
            path.display().to_string()
        ))
        .unwrap();
        let Err(err) = KafkaSink::from_settings("bus", &settings) else {
            panic!("a CA file without certificates was accepted");
        };
        assert_eq!(err.field, "ca_file");
        assert!(
            err.reason.contains("no certificate in it"),
            "{}",
            err.reason
        );
    }

    #[tokio::test]
    async fn an_unreachable_cluster_fails_every_record_as_retriable_then_waits_out_the_gate() {
        let sink = sink("timeout_secs = 2");
        let records = [stored("a", "{}"), stored("b", "{}")];
        let first = sink.deliver_all(&records).await;
        assert_eq!(first.len(), 2);
        for outcome in first.iter() {
            let Err(DeliveryError::Retriable { reason, .. }) = outcome else {
                panic!("{outcome:?}");
            };
            assert!(reason.contains("kafka at 127.0.0.1:9"), "{reason}");
        }
        // The next round does not dial again at once: the gate is closed.
        let second = sink.deliver_all(&records).await;
        let Err(DeliveryError::Retriable { reason, .. }) = &second[0] else {
            panic!("{second:?}");
        };
        assert!(reason.contains("next connection attempt in"), "{reason}");
    }
}
