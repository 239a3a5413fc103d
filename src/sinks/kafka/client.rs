//! The librdkafka producer the kafka sink produces with: its configuration,
//! made from the sink's settings (the idempotent producer, `acks = all`,
//! the timeout, TLS, SASL), and the context through which librdkafka reports
//! its errors and log lines, each with the SASL password taken out.
//!
//! Why librdkafka's idempotent producer: it asks the cluster for a producer
//! id (`InitProducerId`) and numbers each partition's batches, so a produce
//! it sends again after a lost answer (a connection cut after the broker
//! stored the batch) is recognised by the broker and stored once. It retries
//! only within `message.timeout.ms`, which is the sink's `timeout_secs`:
//! after that the record is reported failed, is never sent again by the
//! client, and our own retry schedule takes over.

use std::sync::{Arc, Mutex};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use secrecy::{ExposeSecret, SecretString};

use super::settings::{KafkaSinkSettings, SaslMechanism};

/// A producer, and what it reported beside its calls' results.
pub struct Client {
    /// The producer.
    pub producer: FutureProducer<Reporter>,
    /// What librdkafka reported to it, shared with its context.
    pub report: Arc<Report>,
}

impl Client {
    /// A producer for the sink `name` with `settings`: it connects in the
    /// background, so this fails only for a configuration librdkafka refuses.
    pub fn make(name: &str, settings: &KafkaSinkSettings) -> Result<Self, KafkaError> {
        let report = Arc::new(Report::new(name, settings));
        let producer = config(name, settings).create_with_context(Reporter(Arc::clone(&report)))?;
        Ok(Self { producer, report })
    }
}

/// The producer's context: hands what librdkafka reports to [`Report`].
pub struct Reporter(Arc<Report>);

/// What librdkafka tells us outside of a call's result: its errors (a
/// refused login, a broker that cannot be reached), kept so that a timed-out
/// call can say why, and its log lines, sent to our log at debug level.
pub struct Report {
    /// The sink's name, for log fields.
    sink: String,
    /// The SASL password, to scrub from anything librdkafka says.
    password: Option<SecretString>,
    /// The last error librdkafka reported, scrubbed; cleared when the
    /// cluster answers again.
    last_error: Mutex<Option<String>>,
}

impl Report {
    /// A report for the sink `sink` with `settings`.
    pub fn new(sink: &str, settings: &KafkaSinkSettings) -> Self {
        Self {
            sink: sink.to_owned(),
            password: settings
                .sasl
                .as_ref()
                .map(|sasl| sasl.password.clone())
                .filter(|password| !password.expose_secret().is_empty()),
            last_error: Mutex::new(None),
        }
    }

    /// `text` with the SASL password taken out, should librdkafka ever echo it.
    pub fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(password) => text.replace(password.expose_secret(), crate::redact::REDACTED),
            None => text.to_owned(),
        }
    }

    /// The last error librdkafka reported since the cluster last answered.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .map(|last| last.clone())
            .unwrap_or_default()
    }

    /// Forgets the last error: the cluster answered.
    pub fn clear(&self) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = None;
        }
    }
}

impl ClientContext for Reporter {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.0.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(&error, reason);
    }
}

impl Report {
    /// Sends a librdkafka log line to our log.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // librdkafka logs each failed reconnection; the sink's outcomes
        // already say what failed, so its lines are detail: debug level.
        let message = self.scrub(message);
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::warn!(sink = %self.sink, facility, message, "librdkafka");
            }
            _ => tracing::debug!(sink = %self.sink, facility, message, "librdkafka"),
        }
    }

    /// Keeps an error librdkafka reported, and logs it at debug level.
    fn error(&self, error: &KafkaError, reason: &str) {
        let reason = self.scrub(reason);
        tracing::debug!(sink = %self.sink, error = %self.scrub(&error.to_string()), reason, "librdkafka error");
        // "All brokers are down" follows the reason they are (a refused
        // login, a refused connection): it must not hide it.
        let consequence = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        if let Ok(mut last) = self.last_error.lock()
            && (!consequence || last.is_none())
        {
            *last = Some(reason);
        }
    }
}

/// librdkafka's configuration for the sink `name` with `settings`. Holds
/// the SASL password in clear: never log it (its `Debug` shows it).
pub fn config(name: &str, settings: &KafkaSinkSettings) -> ClientConfig {
    let timeout_ms = settings.timeout_secs.saturating_mul(1000).to_string();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", settings.brokers.join(","))
        .set("client.id", format!("recordhook/{name}"))
        // The idempotent producer, and what it needs: every in-sync replica
        // acknowledges, at most 5 requests in flight per connection (the
        // broker keeps the last 5 batches' sequence numbers), retries on.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        // A record lives in the client for at most `timeout_secs`, its
        // retries included; a request unanswered that long is abandoned.
        .set("message.timeout.ms", &timeout_ms)
        .set("request.timeout.ms", &timeout_ms)
        // Reconnect within a second of a broker's return (librdkafka's
        // default backs off to 10 s); our gate paces the deliveries.
        .set("reconnect.backoff.max.ms", "1000")
        // recordhook never creates topics (a missing one is a dead letter).
        .set("allow.auto.create.topics", "false")
        // The sink picks each partition itself (partition.rs); should
        // librdkafka ever pick, it picks as Kafka's Java client does.
        .set("partitioner", "murmur2_random")
        .set_log_level(RDKafkaLogLevel::Info);
    let protocol = match (settings.tls, settings.sasl.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    config.set("security.protocol", protocol);
    if settings.tls {
        // The CA file, or the system's CA bundle (librdkafka looks in the
        // usual places: /etc/ssl/certs/ca-certificates.crt in the image).
        let ca = settings
            .ca_file
            .as_ref()
            .map_or_else(|| "probe".to_owned(), |path| path.display().to_string());
        config.set("ssl.ca.location", ca);
    }
    if let Some(sasl) = &settings.sasl {
        let mechanism = match sasl.mechanism {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        };
        config
            .set("sasl.mechanisms", mechanism)
            .set("sasl.username", &sasl.username)
            .set("sasl.password", sasl.password.expose_secret());
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> KafkaSinkSettings {
        toml::from_str(&format!("brokers = [\"k1:9092\", \"k2:9092\"]\n{extra}")).unwrap()
    }

    #[test]
    fn the_producer_is_idempotent_with_acks_all_within_the_timeout() {
        let config = config("bus", &settings("timeout_secs = 7"));
        for (key, value) in [
            ("bootstrap.servers", "k1:9092,k2:9092"),
            ("client.id", "recordhook/bus"),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("max.in.flight.requests.per.connection", "5"),
            ("message.timeout.ms", "7000"),
            ("allow.auto.create.topics", "false"),
            ("security.protocol", "plaintext"),
        ] {
            assert_eq!(config.get(key), Some(value), "{key}");
        }
        assert_eq!(config.get("ssl.ca.location"), None);
    }

    #[test]
    fn tls_and_sasl_choose_the_protocol_the_mechanism_and_the_trust() {
        let config = config(
            "bus",
            &settings(
                "tls = true\nsasl = { mechanism = \"SCRAM-SHA-256\", username = \"rh\", password = \"pw\" }",
            ),
        );
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanisms"), Some("SCRAM-SHA-256"));
        assert_eq!(config.get("ssl.ca.location"), Some("probe"));
        let config = super::config(
            "bus",
            &settings("tls = true\nca_file = \"/etc/kafka/ca.pem\""),
        );
        assert_eq!(config.get("security.protocol"), Some("ssl"));
        assert_eq!(config.get("ssl.ca.location"), Some("/etc/kafka/ca.pem"));
    }

    #[test]
    fn what_librdkafka_reports_is_kept_without_the_password() {
        let reporter = Report::new(
            "bus",
            &settings("sasl = { mechanism = \"PLAIN\", username = \"rh\", password = \"s3cret\" }"),
        );
        reporter.error(
            &KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error: bad password s3cret",
        );
        reporter.error(
            &KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert_eq!(
            reporter.last_error().as_deref(),
            Some("SASL authentication error: bad password [redacted]")
        );
        reporter.clear();
        assert_eq!(reporter.last_error(), None);
    }
}
