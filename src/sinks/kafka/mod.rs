//! The `kafka` sink: produces each record to a Kafka topic and counts it as
//! delivered only when the partition's leader acknowledged the produce
//! request with `acks = all` (every in-sync replica has the record).
//!
//! A message is the record's JSON, byte for byte as the forward sink posts
//! it, keyed by the event id (or the stream id, or nothing: `key`), with
//! headers naming the event id and type (and `traceparent` when traces are
//! on). The partition is Kafka's default partitioner's choice for the key
//! ([`partition`]).
//!
//! The client is rskafka (pure Rust, rustls): it speaks the produce
//! protocol with `acks = all` but has no idempotent producer. A produce
//! retried after a lost answer (ours, or rskafka's own retry inside the
//! timeout) may therefore store a record twice; consumers deduplicate on the
//! `recordhook-event-id` header, as with every at-least-once sink.
//!
//! The client is made on the first delivery, never at start-up, and a failed
//! attempt to make it is not repeated before a growing delay has passed
//! ([`ReconnectGate`]). Topics are never created: a record whose topic the
//! cluster does not have is a permanent failure (a dead letter, replayable
//! once the topic exists); every other failure is retriable.

mod partition;
mod settings;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rskafka::BackoffConfig;
use rskafka::chrono::{DateTime, Utc};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use secrecy::ExposeSecret;
use tokio::sync::Mutex;
use tokio::time::Instant;

pub use self::settings::{KafkaSinkSettings, MessageKey, SaslMechanism, SaslSettings};
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

/// Waits between attempts to make the client after a failed one: from
/// 200 ms up to 5 s, as the other broker sinks.
const RECONNECT: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(5),
};

/// Produces records to Kafka.
pub struct KafkaSink {
    /// The sink's name, for log fields and the client id.
    name: String,
    /// The bootstrap brokers, as configured.
    brokers: Vec<String>,
    topic: Template,
    key: MessageKey,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<SaslSettings>,
    /// The client and what it learnt of the cluster, behind one lock held
    /// only to look things up, never across a produce.
    state: Mutex<State>,
}

/// The client, once made, and the per-topic facts it learnt.
struct State {
    client: Option<Arc<Client>>,
    gate: ReconnectGate,
    /// Partition count per topic, from the cluster's metadata.
    partitions: HashMap<String, i32>,
    /// A client per partition produced to, which knows its leader.
    leaders: HashMap<(String, i32), Arc<PartitionClient>>,
}

impl KafkaSink {
    /// The kafka sink `settings` describe, named `name`. Reads `ca_file`
    /// but does not connect: the first delivery does.
    pub fn from_settings(name: &str, settings: &KafkaSinkSettings) -> Result<Self, InvalidSetting> {
        settings.validate()?;
        let tls = if settings.tls {
            Some(Arc::new(tls_config(settings)?))
        } else {
            None
        };
        Ok(Self {
            name: name.to_owned(),
            brokers: settings.brokers.clone(),
            topic: settings::topic_template(&settings.topic)?,
            key: settings.key,
            timeout: Duration::from_secs(settings.timeout_secs),
            tls,
            sasl: settings.sasl.clone(),
            state: Mutex::new(State {
                client: None,
                gate: ReconnectGate::new(RECONNECT),
                partitions: HashMap::new(),
                leaders: HashMap::new(),
            }),
        })
    }

    /// The brokers as shown in errors (they carry no secret).
    fn at(&self) -> String {
        self.brokers.join(",")
    }

    /// The client, made now if there is none and the gate allows it.
    async fn client(&self) -> Result<Arc<Client>, DeliveryError> {
        let mut state = self.state.lock().await;
        if let Some(client) = &state.client {
            return Ok(Arc::clone(client));
        }
        let now = Instant::now();
        state.gate.check(now).map_err(|closed| {
            DeliveryError::retriable(format!("kafka at {}: {closed}", self.at()))
        })?;
        let mut builder = ClientBuilder::new(self.brokers.clone())
            .client_id(format!("recordhook/{}", self.name))
            // No retrying inside rskafka: its deadline counts only the
            // time it sleeps, not the attempts, so a slow failing attempt
            // (a SCRAM login refused) repeated outlived our timeout and its
            // reason was lost to a bare "timed out". With a zero deadline it
            // makes one attempt and says why it failed; the sink's own
            // retry schedule does the retrying.
            .backoff_config(BackoffConfig {
                deadline: Some(Duration::ZERO),
                ..BackoffConfig::default()
            });
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(Arc::clone(tls));
        }
        if let Some(sasl) = &self.sasl {
            builder = builder.sasl_config(sasl_config(sasl));
        }
        match tokio::time::timeout(self.timeout, builder.build()).await {
            Ok(Ok(client)) => {
                if state.gate.succeeded() {
                    tracing::info!(sink = %self.name, brokers = %self.at(), "kafka reachable again");
                }
                let client = Arc::new(client);
                state.client = Some(Arc::clone(&client));
                Ok(client)
            }
            Ok(Err(err)) => {
                let reason = format!(
                    "cannot connect to kafka at {}: {}",
                    self.at(),
                    self.scrub(&err)
                );
                state.gate.failed(Instant::now(), &reason);
                Err(DeliveryError::retriable(reason))
            }
            Err(_) => {
                let reason = format!(
                    "timed out after {} s connecting to kafka at {}",
                    self.timeout.as_secs(),
                    self.at()
                );
                state.gate.failed(Instant::now(), &reason);
                Err(DeliveryError::retriable(reason))
            }
        }
    }

    /// Forgets the client and everything learnt with it, so the next
    /// delivery starts afresh (after a failure that may mean the cluster
    /// changed or the connection is gone).
    async fn forget(&self) {
        let mut state = self.state.lock().await;
        state.client = None;
        state.partitions.clear();
        state.leaders.clear();
    }

    /// How many partitions `topic` has: from the cache, or the cluster's
    /// metadata. A topic the cluster lacks is a permanent failure.
    async fn partition_count(&self, client: &Client, topic: &str) -> Result<i32, DeliveryError> {
        if let Some(count) = self.state.lock().await.partitions.get(topic) {
            return Ok(*count);
        }
        let topics = client.list_topics().await.map_err(|err| {
            DeliveryError::retriable(format!(
                "cannot read the topics of kafka at {}: {}",
                self.at(),
                self.scrub(&err)
            ))
        })?;
        let mut state = self.state.lock().await;
        for found in topics {
            let count = i32::try_from(found.partitions.len()).unwrap_or(i32::MAX);
            state.partitions.insert(found.name, count);
        }
        match state.partitions.get(topic) {
            Some(count) if *count > 0 => Ok(*count),
            _ => Err(missing_topic(topic, &self.at())),
        }
    }

    /// The client for `partition` of `topic`, which knows its leader.
    async fn leader(
        &self,
        client: &Client,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<PartitionClient>, KafkaError> {
        let key = (topic.to_owned(), partition);
        if let Some(leader) = self.state.lock().await.leaders.get(&key) {
            return Ok(Arc::clone(leader));
        }
        let leader = Arc::new(
            client
                .partition_client(topic, partition, UnknownTopicHandling::Error)
                .await?,
        );
        self.state
            .lock()
            .await
            .leaders
            .insert(key, Arc::clone(&leader));
        Ok(leader)
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

    /// The message for `record`.
    fn message(&self, record: &StoredRecord, timestamp: DateTime<Utc>) -> Record {
        let mut headers = BTreeMap::from([
            (EVENT_ID_HEADER.to_owned(), record.id.clone().into_bytes()),
            (
                EVENT_TYPE_HEADER.to_owned(),
                record.event_type.to_string().into_bytes(),
            ),
            (CONTENT_TYPE_HEADER.to_owned(), b"application/json".to_vec()),
        ]);
        if let Some(traceparent) = traces::traceparent(&record.id) {
            headers.insert(
                traces::TRACEPARENT_HEADER.to_owned(),
                traceparent.into_bytes(),
            );
        }
        Record {
            key: self.key_of(record),
            value: Some(record.json.clone().into_bytes()),
            headers,
            timestamp,
        }
    }

    /// Produces the records at `indexes` (all bound for one partition) in
    /// one request; the result holds for each of them.
    async fn produce(
        &self,
        client: &Client,
        topic: &str,
        partition: i32,
        records: &[&StoredRecord],
    ) -> Result<(), DeliveryError> {
        let leader = self
            .leader(client, topic, partition)
            .await
            .map_err(|err| self.delivery_error(topic, &err))?;
        let timestamp = now();
        let messages = records
            .iter()
            .map(|record| self.message(record, timestamp))
            .collect();
        leader
            .produce(messages, Compression::NoCompression)
            .await
            .map(drop)
            .map_err(|err| self.delivery_error(topic, &err))
    }

    /// What a failed call means for its records, without any secret.
    fn delivery_error(&self, topic: &str, err: &KafkaError) -> DeliveryError {
        if let KafkaError::ServerError {
            protocol_error: ProtocolError::UnknownTopicOrPartition,
            ..
        } = err
        {
            return missing_topic(topic, &self.at());
        }
        DeliveryError::retriable(format!(
            "kafka at {} did not take the records for topic `{topic}`: {}",
            self.at(),
            self.scrub(err)
        ))
    }

    /// `err`'s text with the SASL password taken out, should a library ever
    /// echo it.
    fn scrub(&self, err: &(dyn std::error::Error + 'static)) -> String {
        let text = crate::error_chain::error_chain(err);
        match &self.sasl {
            Some(sasl) if !sasl.password.expose_secret().is_empty() => {
                text.replace(sasl.password.expose_secret(), crate::redact::REDACTED)
            }
            _ => text,
        }
    }

    /// Delivers a batch: records grouped by topic and partition, each group
    /// one produce request, the groups in flight together, all within one
    /// timeout.
    async fn deliver_all(&self, records: &[StoredRecord]) -> Outcomes {
        let deadline = Instant::now() + self.timeout;
        let client = match self.client().await {
            Ok(client) => client,
            Err(err) => return Outcomes::all(records, Err(err)),
        };
        let mut outcomes = Outcomes::unsettled(records, "not produced to kafka");
        let mut groups: BTreeMap<(String, i32), Vec<usize>> = BTreeMap::new();
        // Each topic looked up once per batch, a missing one included.
        let mut counts: HashMap<String, Result<i32, DeliveryError>> = HashMap::new();
        for (index, record) in records.iter().enumerate() {
            let topic = self.topic.render(record.event_type);
            if !counts.contains_key(&topic) {
                let count =
                    tokio::time::timeout_at(deadline, self.partition_count(&client, &topic))
                        .await
                        .unwrap_or_else(|_| Err(self.timed_out()));
                counts.insert(topic.clone(), count);
            }
            match &counts[&topic] {
                Ok(count) => {
                    let partition = self.partition_for(record, *count);
                    groups.entry((topic, partition)).or_default().push(index);
                }
                Err(err) => outcomes.set(index, Err(err.clone())),
            }
        }
        let attempts: Vec<_> = groups
            .into_iter()
            .map(|((topic, partition), indexes)| {
                let client = &client;
                async move {
                    let batch: Vec<&StoredRecord> = indexes.iter().map(|&i| &records[i]).collect();
                    let produced = tokio::time::timeout_at(
                        deadline,
                        self.produce(client, &topic, partition, &batch),
                    )
                    .await
                    .unwrap_or_else(|_| Err(self.timed_out()));
                    (indexes, produced)
                }
            })
            .collect();
        let mut failed = false;
        for (indexes, produced) in futures_util::future::join_all(attempts).await {
            failed |= produced.is_err();
            for index in indexes {
                outcomes.set(index, produced.clone());
            }
        }
        if failed {
            // A leader may have moved or a connection died: learn the
            // cluster again next time rather than trust what failed.
            self.forget().await;
        }
        outcomes
    }

    fn timed_out(&self) -> DeliveryError {
        DeliveryError::retriable(format!(
            "timed out after {} s waiting for kafka at {} to acknowledge",
            self.timeout.as_secs(),
            self.at()
        ))
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

/// The time a message is stamped with (its `CreateTime`).
fn now() -> DateTime<Utc> {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

/// rskafka's SASL settings for ours.
fn sasl_config(sasl: &SaslSettings) -> SaslConfig {
    let credentials = Credentials::new(
        sasl.username.clone(),
        sasl.password.expose_secret().to_owned(),
    );
    match sasl.mechanism {
        SaslMechanism::Plain => SaslConfig::Plain(credentials),
        SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
        SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
    }
}

/// The TLS client settings: the Mozilla roots, or the CAs in `ca_file`.
fn tls_config(settings: &KafkaSinkSettings) -> Result<rustls::ClientConfig, InvalidSetting> {
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca_file {
        Some(path) => {
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
            for certificate in certificates {
                roots.add(certificate).map_err(|err| unreadable(&err))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| InvalidSetting::new("tls", format!("TLS cannot be set up: {err}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
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
    fn a_message_is_the_record_byte_for_byte_with_its_id_and_type_in_headers() {
        let json = r#"{"id":"e1","event_type":100,"event":{"stream_id":"room"}}"#;
        let record = stored("e1", json);
        let message = sink("").message(&record, now());
        assert_eq!(message.value.as_deref(), Some(json.as_bytes()));
        assert_eq!(message.key.as_deref(), Some(b"e1".as_slice()));
        assert_eq!(message.headers[EVENT_ID_HEADER], b"e1");
        assert_eq!(message.headers[EVENT_TYPE_HEADER], b"100");
        assert_eq!(message.headers[CONTENT_TYPE_HEADER], b"application/json");
        assert_eq!(sink("key = \"none\"").message(&record, now()).key, None);
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
