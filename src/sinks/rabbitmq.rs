//! The rabbitmq sink: publishes each record to an AMQP 0.9.1 exchange
//! (RabbitMQ) with publisher confirms and `mandatory` set.
//!
//! A record is delivered only when the broker acked it *and* routed it: an
//! unroutable message comes back (`basic.return`) before its ack, and counts
//! as a failure, as does a nack. Every failure is retriable (a missing
//! exchange or binding, a refused login and a broker that is down may all be
//! fixed while the record waits), so a misconfiguration becomes a dead letter
//! after `max_attempts`, never a delivery.
//!
//! The connection is opened on the first delivery, not at start-up, so a
//! broker that is down never holds up start-up or callbacks; after a failed
//! attempt the next one waits (doubling up to 30 s, see [`RECONNECT`]) and
//! deliveries meanwhile fail at once, so a dead broker is not hammered. A
//! channel the broker closed (404 for a missing exchange) is reopened on the
//! next delivery; a lost connection is re-established.
//!
//! The URL carries the password: it is only handed to the client to connect;
//! logs and errors show the redacted form, and any client error text is
//! scrubbed of the password before it is kept.

use std::time::Duration;

use lapin::message::BasicReturnMessage;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::broker::{Backoff, ReconnectGate, Template, check_scheme};
use super::checks::{self, InvalidSetting};
use super::contract::{BoxFuture, DeliveryError, DeliveryResult, Outcomes, Sink};
use crate::record::StoredRecord;
use crate::secret_url::SecretUrl;
use crate::telemetry::traces;

/// Default routing key; `{event_type}` becomes the record's type number.
pub const DEFAULT_ROUTING_KEY: &str = "css.{event_type}";
/// Header carrying the record's event type, as an AMQP signed 64-bit integer.
pub const EVENT_TYPE_HEADER: &str = "recordhook-event-type";
/// The payload's content type.
pub const CONTENT_TYPE: &str = "application/json";
/// AMQP `delivery_mode` for a message the broker writes to disk.
const PERSISTENT: u8 = 2;
/// Longest exchange name or routing key AMQP can carry (a short string).
const MAX_NAME_BYTES: usize = 255;
/// Most publishes awaiting their confirm at once: a delivery round's records
/// are published back to back in groups of this size, then confirmed.
/// (Two groups in flight, and batches of 1,024, drained a backlog no faster:
/// bench/BENCHMARKS.md, "RabbitMQ sink".)
pub const MAX_IN_FLIGHT: usize = 256;
/// Waits between connection attempts after a failed one: from 500 ms up to 30 s.
pub const RECONNECT: Backoff = Backoff {
    initial: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

/// The settings of a `type = "rabbitmq"` sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqSinkSettings {
    /// `amqp://user:password@host:port/vhost` (or `amqps://`), the vhost
    /// URL-encoded (`%2f` is `/`). Required. The password is a secret:
    /// redacted in logs, errors and the effective configuration.
    pub url: SecretUrl,
    /// Exchange to publish to; it must exist (recordhook never declares it).
    /// `""`, the default, is the broker's default exchange, which routes to
    /// the queue named by the routing key.
    #[serde(default)]
    pub exchange: String,
    /// Routing key; `{event_type}` is replaced by the type number (`css.100`).
    #[serde(default = "default_routing_key")]
    pub routing_key: String,
    /// Seconds a publish may wait for the broker's confirm (and a connection
    /// attempt for the broker) before it is retried; 1 to [`checks::MAX_TIMEOUT_SECS`].
    #[serde(default = "checks::default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_routing_key() -> String {
    DEFAULT_ROUTING_KEY.to_owned()
}

impl RabbitMqSinkSettings {
    /// A sink publishing to `exchange` on the broker at `url`, with the defaults.
    pub fn new(url: SecretUrl, exchange: &str) -> Self {
        Self {
            url,
            exchange: exchange.to_owned(),
            routing_key: default_routing_key(),
            timeout_secs: checks::DEFAULT_TIMEOUT_SECS,
        }
    }

    /// Checks what can be checked without connecting.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        amqp_uri(&self.url)?;
        check_exchange(&self.exchange)?;
        routing_key_template(&self.routing_key)?;
        checks::check_timeout(self.timeout_secs)?;
        Ok(())
    }
}

/// The URL as the client takes it. Errors never repeat the URL (the
/// client's parser quotes it whole, password included).
fn amqp_uri(url: &SecretUrl) -> Result<AMQPUri, InvalidSetting> {
    check_scheme(url, ["amqp", "amqps"])?;
    let parsed = url::Url::parse(url.expose())
        .map_err(|err| InvalidSetting::new("url", format!("not a valid URL: {err}")))?;
    let host = match parsed.host() {
        Some(url::Host::Domain(domain)) if !domain.is_empty() => domain.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(InvalidSetting::new("url", format!("`{url}` has no host"))),
    };
    let mut uri: AMQPUri = url.expose().parse().map_err(|err: String| {
        InvalidSetting::new(
            "url",
            format!("`{url}` is not a valid AMQP URI: {}", url.scrub(&err)),
        )
    })?;
    // The client takes the host from `Url::domain`, which is empty for an
    // IP address, and then falls back to `localhost`: set it ourselves.
    uri.authority.host = host;
    Ok(uri)
}

/// Exchange names RabbitMQ accepts: up to 255 bytes of letters, digits,
/// `-`, `_`, `.` and `:`.
fn check_exchange(exchange: &str) -> Result<(), InvalidSetting> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if exchange.len() > MAX_NAME_BYTES || !exchange.chars().all(allowed) {
        return Err(InvalidSetting::new(
            "exchange",
            format!(
                "must be at most {MAX_NAME_BYTES} letters, digits, `-`, `_`, `.` or `:` (\"\" is the default exchange)"
            ),
        ));
    }
    Ok(())
}

/// The routing key template: any text, `{event_type}` the only placeholder,
/// short enough for AMQP with the longest type number in it.
fn routing_key_template(routing_key: &str) -> Result<Template, InvalidSetting> {
    let template = Template::parse("routing_key", routing_key)?;
    if template.longest().len() > MAX_NAME_BYTES {
        return Err(InvalidSetting::new(
            "routing_key",
            format!("must be at most {MAX_NAME_BYTES} bytes with the event type in it"),
        ));
    }
    Ok(template)
}

/// The connection and confirm-mode channel in use, and the reconnection
/// backoff.
struct Link {
    /// The open connection, if any.
    connection: Option<Connection>,
    /// The channel publishes go to, in confirm mode.
    channel: Option<Channel>,
    /// Whether a new connection may be attempted yet.
    gate: ReconnectGate,
}

impl Link {
    /// Forgets the connection (after a timeout or a loss) so the next
    /// delivery opens a fresh one; the old one closes when dropped.
    fn reset(&mut self) {
        self.channel = None;
        self.connection = None;
    }
}

/// Publishes records to one exchange.
pub struct RabbitMqSink {
    /// Where to connect, password included: never logged or debug-printed.
    uri: AMQPUri,
    /// The URL as configured: shown redacted in errors, and scrubbed from
    /// client errors.
    url: SecretUrl,
    /// Shown in the broker's connection list.
    connection_name: String,
    /// Exchange to publish to.
    exchange: ShortString,
    /// Routing key template.
    routing_key: Template,
    /// How long a publish (or a connection attempt) may take.
    timeout: Duration,
    /// The connection, opened lazily and replaced when lost. Only this
    /// sink's own deliveries ever wait on this lock.
    link: tokio::sync::Mutex<Link>,
}

impl RabbitMqSink {
    /// The sink `settings` describe, named `name` in the broker's connection
    /// list. Does not connect.
    pub fn from_settings(
        name: &str,
        settings: &RabbitMqSinkSettings,
    ) -> Result<Self, InvalidSetting> {
        settings.validate()?;
        Ok(Self {
            uri: amqp_uri(&settings.url)?,
            url: settings.url.clone(),
            connection_name: format!("recordhook sink {name}"),
            exchange: ShortString::try_new(settings.exchange.clone())
                .map_err(|err| InvalidSetting::new("exchange", err.to_string()))?,
            routing_key: routing_key_template(&settings.routing_key)?,
            timeout: Duration::from_secs(settings.timeout_secs),
            link: tokio::sync::Mutex::new(Link {
                connection: None,
                channel: None,
                gate: ReconnectGate::new(RECONNECT),
            }),
        })
    }

    /// A client error's (or the broker's) text with the password scrubbed.
    fn client_text(&self, text: impl std::fmt::Display) -> String {
        self.url.scrub(&text.to_string())
    }

    /// The exchange as written in messages (`""` named as the default one).
    fn exchange_name(&self) -> String {
        if self.exchange.as_str().is_empty() {
            "(the default exchange)".to_owned()
        } else {
            format!("`{}`", self.exchange)
        }
    }

    /// What a client error means for a delivery, in words.
    fn explain(&self, err: &lapin::Error) -> String {
        if let ErrorKind::ProtocolError(amqp) = err.kind() {
            match amqp.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => {
                    return format!(
                        "exchange {} does not exist on {} (404 NOT_FOUND: {}); declare it or fix `exchange`",
                        self.exchange_name(),
                        self.url,
                        self.client_text(amqp.get_message())
                    );
                }
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => {
                    return format!(
                        "access refused on {} ({}); check the user's permissions and vhost",
                        self.url,
                        self.client_text(amqp.get_message())
                    );
                }
                _ => {}
            }
        }
        format!("broker {}: {}", self.url, self.client_text(err))
    }

    /// The confirm-mode channel to publish on: the current one, a new one on
    /// the current connection if the broker closed it, or a new connection
    /// (unless the last attempt failed too recently).
    async fn channel(&self) -> Result<Channel, DeliveryError> {
        let mut link = self.link.lock().await;
        if let Some(channel) = link.channel.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        link.channel = None;
        if let Some(connection) = link.connection.as_ref().filter(|c| c.status().connected()) {
            match self.open_channel(connection).await {
                Ok(channel) => {
                    link.channel = Some(channel.clone());
                    return Ok(channel);
                }
                Err(reason) => {
                    // A connection that cannot open a channel is no use.
                    link.reset();
                    return Err(DeliveryError::retriable(reason));
                }
            }
        }
        if link.connection.take().is_some() {
            tracing::warn!(broker = %self.url, "lost the connection to the broker; reconnecting");
        }
        if let Err(closed) = link.gate.check(Instant::now()) {
            // The broker's own wait becomes the record's least retry delay.
            return Err(DeliveryError::Retriable {
                retry_after: Some(closed.wait),
                reason: format!("not connected to {}: {closed}", self.url),
            });
        }
        match self.connect().await {
            Ok((connection, channel)) => {
                if link.gate.succeeded() {
                    tracing::info!(broker = %self.url, "connected to the broker again");
                }
                link.connection = Some(connection);
                link.channel = Some(channel.clone());
                Ok(channel)
            }
            Err(reason) => {
                let wait = link.gate.failed(Instant::now(), &reason);
                tracing::warn!(
                    broker = %self.url,
                    error = %reason,
                    retry_in_ms = wait.as_millis(),
                    "could not connect to the broker"
                );
                Err(DeliveryError::Retriable {
                    reason,
                    retry_after: Some(wait),
                })
            }
        }
    }

    /// A new connection with a confirm-mode channel, within the timeout.
    async fn connect(&self) -> Result<(Connection, Channel), String> {
        let properties = ConnectionProperties::default()
            .with_connection_name(self.connection_name.clone().into());
        let connection = tokio::time::timeout(
            self.timeout,
            Connection::connect_uri(self.uri.clone(), properties),
        )
        .await
        .map_err(|_| {
            format!(
                "could not connect to {} within {} s",
                self.url,
                self.timeout.as_secs()
            )
        })?
        .map_err(|err| {
            let refused = match err.kind() {
                ErrorKind::ProtocolError(amqp) => match amqp.kind() {
                    AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => Some((
                        "login refused",
                        "check the user and password in `url`",
                        amqp,
                    )),
                    AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => Some((
                        "access to the vhost refused",
                        "check the vhost in `url` and the user's permissions",
                        amqp,
                    )),
                    _ => None,
                },
                _ => None,
            };
            match refused {
                Some((what, fix, amqp)) => format!(
                    "{what} by {} ({}); {fix}",
                    self.url,
                    self.client_text(amqp.get_message())
                ),
                None => format!(
                    "could not connect to {}: {}",
                    self.url,
                    self.client_text(&err)
                ),
            }
        })?;
        let channel = self.open_channel(&connection).await?;
        Ok((connection, channel))
    }

    /// A new channel on `connection`, in confirm mode.
    async fn open_channel(&self, connection: &Connection) -> Result<Channel, String> {
        let open = async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(channel)
        };
        tokio::time::timeout(self.timeout, open)
            .await
            .map_err(|_| format!("could not open a channel on {} in time", self.url))?
            .map_err(|err| format!("could not open a channel: {}", self.explain(&err)))
    }

    /// The message properties for `record`.
    fn properties(&self, record: &StoredRecord) -> Result<BasicProperties, DeliveryError> {
        let message_id = ShortString::try_new(record.id.clone()).map_err(|err| {
            DeliveryError::permanent(format!("event id cannot be an AMQP message_id: {err}"))
        })?;
        let mut headers = FieldTable::default();
        headers.insert(
            EVENT_TYPE_HEADER.into(),
            AMQPValue::LongLongInt(record.event_type),
        );
        if let Some(traceparent) = traces::traceparent(&record.id) {
            headers.insert(
                traces::TRACEPARENT_HEADER.into(),
                AMQPValue::LongString(traceparent.into()),
            );
        }
        Ok(BasicProperties::default()
            .with_message_id(message_id)
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(PERSISTENT)
            .with_headers(headers))
    }

    /// Publishes `records` (the batch's records from `first` on) back to
    /// back, then awaits each confirm, giving each its result in
    /// `outcomes`. Every wait ends at one deadline, `timeout` from the
    /// start. Returns whether the connection should be dropped (a confirm
    /// that never came may mean a dead connection).
    async fn publish_group(
        &self,
        channel: &Channel,
        first: usize,
        records: &[StoredRecord],
        outcomes: &mut Outcomes,
        returned: &mut Returned,
    ) -> bool {
        let deadline = Instant::now() + self.timeout;
        let mut stale = false;
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            let key = self.routing_key.render(record.event_type);
            let published = match (self.properties(record), ShortString::try_new(key)) {
                (Err(err), _) => Err(err),
                (_, Err(err)) => Err(DeliveryError::permanent(format!(
                    "routing key is too long: {err}"
                ))),
                (Ok(properties), Ok(key)) => {
                    let publish = channel.basic_publish(
                        self.exchange.clone(),
                        key,
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        record.json.as_bytes(),
                        properties,
                    );
                    match tokio::time::timeout_at(deadline, publish).await {
                        Ok(Ok(confirm)) => Ok(confirm),
                        Ok(Err(err)) => Err(DeliveryError::retriable(self.explain(&err))),
                        Err(_) => {
                            stale = true;
                            Err(self.timed_out())
                        }
                    }
                }
            };
            pending.push(published);
        }
        for (index, (published, record)) in pending.into_iter().zip(records).enumerate() {
            let confirm = match published {
                Ok(confirm) => confirm,
                Err(err) => {
                    outcomes.set(first + index, Err(err));
                    continue;
                }
            };
            let result = match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(Confirmation::Ack(None))) => Ok(()),
                Ok(Ok(Confirmation::Ack(Some(message)))) => {
                    // lapin hands a returned message to whichever confirm it
                    // completes next, which with several confirms in one
                    // frame may be another record's: it is matched to its
                    // record by message id once the whole batch is in.
                    returned.note(message_id(&message), self.unroutable(&message))
                }
                Ok(Ok(Confirmation::Nack(message))) => {
                    if let Some(message) = message {
                        let _ = returned.note(message_id(&message), self.unroutable(&message));
                    }
                    Err(DeliveryError::retriable(format!(
                        "nacked by the broker {}: it could not take the message",
                        self.url
                    )))
                }
                Ok(Ok(Confirmation::NotRequested)) => {
                    // Cannot happen on a channel in confirm mode; without a
                    // confirm nothing is known, so reopen and try again.
                    stale = true;
                    Err(DeliveryError::retriable(
                        "the channel is not in confirm mode".to_owned(),
                    ))
                }
                Ok(Err(err)) => Err(DeliveryError::retriable(self.explain(&err))),
                Err(_) => {
                    stale = true;
                    Err(self.timed_out())
                }
            };
            if let Err(err) = &result {
                tracing::debug!(event_id = %record.id, error = %err, "publish not confirmed");
            }
            outcomes.set(first + index, result);
        }
        stale
    }

    /// Why a returned (unroutable) message was not delivered.
    fn unroutable(&self, message: &BasicReturnMessage) -> DeliveryError {
        DeliveryError::retriable(format!(
            "unroutable: no queue bound for routing key `{}` on exchange {} (returned {} {})",
            message.delivery.routing_key,
            self.exchange_name(),
            message.reply_code,
            message.reply_text
        ))
    }

    fn timed_out(&self) -> DeliveryError {
        DeliveryError::retriable(format!(
            "no confirm from {} within {} s",
            self.url,
            self.timeout.as_secs()
        ))
    }

    /// Publishes the batch in groups of [`MAX_IN_FLIGHT`], each confirmed
    /// before the next is published; a returned message fails the record it
    /// names once the whole batch is confirmed ([`Returned`]).
    async fn publish(&self, records: &[StoredRecord]) -> Outcomes {
        let channel = match self.channel().await {
            Ok(channel) => channel,
            Err(err) => return Outcomes::all(records, Err(err)),
        };
        // A record keeps this failure unless its group is published: after a
        // reset, the rest of the batch waits for the next round.
        let mut outcomes = Outcomes::unsettled(
            records,
            format!("not attempted: the connection to {} was reset", self.url),
        );
        let mut stale = false;
        let mut returned = Returned::default();
        for (number, group) in records.chunks(MAX_IN_FLIGHT).enumerate() {
            let first = number * MAX_IN_FLIGHT;
            stale = self
                .publish_group(&channel, first, group, &mut outcomes, &mut returned)
                .await;
            if stale {
                break;
            }
        }
        returned.fail_their_records(records, &mut outcomes);
        if stale {
            self.link.lock().await.reset();
        }
        outcomes
    }
}

/// The messages the broker returned during a batch, by message id (the
/// event id), with why each failed.
#[derive(Default)]
struct Returned(std::collections::HashMap<String, DeliveryError>);

impl Returned {
    /// Keeps the failure of the returned message with `message_id` for its
    /// record; gives the result for the confirm it came with: `Ok` (the
    /// record it names fails at the end) unless it names none, when that
    /// confirm's record fails, as lapin attached it.
    fn note(&mut self, message_id: Option<&str>, failure: DeliveryError) -> DeliveryResult {
        match message_id {
            Some(id) => {
                self.0.insert(id.to_owned(), failure);
                Ok(())
            }
            None => Err(failure),
        }
    }

    /// Gives each record of `batch` whose message came back its failure.
    fn fail_their_records(self, batch: &[StoredRecord], outcomes: &mut Outcomes) {
        if self.0.is_empty() {
            return;
        }
        for (index, record) in batch.iter().enumerate() {
            if let Some(failure) = self.0.get(record.id.as_str()) {
                outcomes.set(index, Err(failure.clone()));
            }
        }
    }
}

/// The message id (the event id) a returned message was published with.
fn message_id(message: &BasicReturnMessage) -> Option<&str> {
    message
        .properties
        .message_id()
        .as_ref()
        .map(ShortString::as_str)
}

impl Sink for RabbitMqSink {
    fn deliver_batch<'a>(&'a self, records: &'a [StoredRecord]) -> BoxFuture<'a, Outcomes> {
        Box::pin(self.publish(records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_message_fails_the_record_it_names_whichever_confirm_carried_it() {
        let batch: Vec<StoredRecord> = ["e0", "e1", "e2"]
            .into_iter()
            .map(|id| StoredRecord {
                id: id.into(),
                event_type: 100,
                json: "{}".into(),
            })
            .collect();
        let mut outcomes = Outcomes::unsettled(&batch, "not attempted".to_owned());
        let mut returned = Returned::default();
        let failure = DeliveryError::retriable("unroutable: css.7");
        // lapin handed e2's return to e0's confirm: e0 was still acked.
        outcomes.set(0, returned.note(Some("e2"), failure.clone()));
        outcomes.set(1, Ok(()));
        outcomes.set(2, Ok(()));
        // A return naming no record fails the confirm it came with.
        assert_eq!(returned.note(None, failure.clone()), Err(failure.clone()));
        returned.fail_their_records(&batch, &mut outcomes);
        let results: Vec<DeliveryResult> = outcomes.into_iter().collect();
        assert_eq!(results, vec![Ok(()), Ok(()), Err(failure)]);
    }

    const URL: &str = "amqp://guest:s3cret-pw@127.0.0.1:5672/%2f";

    fn settings(toml: &str) -> Result<RabbitMqSinkSettings, String> {
        toml::from_str(toml).map_err(|err| err.to_string())
    }

    #[test]
    fn the_defaults_are_the_default_exchange_css_routing_keys_and_10_s() {
        let parsed = settings(&format!("url = \"{URL}\"")).unwrap();
        assert_eq!(parsed.exchange, "");
        assert_eq!(parsed.routing_key, "css.{event_type}");
        assert_eq!(parsed.timeout_secs, 10);
        assert!(parsed.validate().is_ok());
    }

    #[test]
    fn invalid_settings_are_refused_naming_the_key_without_the_password() {
        let long_key = "k".repeat(250);
        for (toml, field, reason) in [
            (
                "url = \"http://guest:s3cret-pw@h/\"",
                "url",
                "amqp:// or amqps://",
            ),
            (
                "url = \"amqp://guest:s3cret-pw@h/?heartbeat=x\"",
                "url",
                "not a valid AMQP URI",
            ),
            ("url = \"amqp:guest\"", "url", "no host"),
            (
                &format!("url = \"{URL}\"\nexchange = \"a b\""),
                "exchange",
                "letters, digits",
            ),
            (
                &format!("url = \"{URL}\"\nrouting_key = \"css.{{stream_id}}\""),
                "routing_key",
                "only placeholder",
            ),
            (
                &format!("url = \"{URL}\"\nrouting_key = \"css.{{event_type\""),
                "routing_key",
                "only placeholder",
            ),
            (
                &format!("url = \"{URL}\"\nrouting_key = \"{long_key}.{{event_type}}\""),
                "routing_key",
                "at most 255",
            ),
            (
                &format!("url = \"{URL}\"\ntimeout_secs = 0"),
                "timeout_secs",
                "between 1 and 3600",
            ),
        ] {
            let err = settings(toml).unwrap().validate().unwrap_err();
            assert_eq!(err.field, field, "{toml}: {err}");
            assert!(err.reason.contains(reason), "{toml}: {err}");
            assert!(!err.to_string().contains("s3cret-pw"), "{toml}: {err}");
        }
    }

    #[test]
    fn unknown_keys_and_a_missing_url_are_errors() {
        assert!(
            settings("url = \"amqp://h\"\nsubject = \"x\"")
                .unwrap_err()
                .contains("subject")
        );
        assert!(settings("exchange = \"x\"").unwrap_err().contains("url"));
    }

    #[test]
    fn the_password_is_redacted_in_the_effective_configuration() {
        let text = toml::to_string(&settings(&format!("url = \"{URL}\"")).unwrap()).unwrap();
        assert!(
            text.contains("amqp://guest:[redacted]@127.0.0.1:5672/%2f"),
            "{text}"
        );
        assert!(!text.contains("s3cret-pw"), "{text}");
        let debug = format!("{:?}", settings(&format!("url = \"{URL}\"")).unwrap());
        assert!(!debug.contains("s3cret-pw"), "{debug}");
    }

    #[test]
    fn the_client_connects_to_the_host_as_written_even_an_ip_address() {
        for (url, host, port, vhost) in [
            ("amqp://u:p@127.0.0.1:5673/%2f", "127.0.0.1", 5673, "/"),
            ("amqp://u:p@[::1]/v", "::1", 5672, "v"),
            ("amqps://rabbit.example/%2f", "rabbit.example", 5671, "/"),
        ] {
            let uri = amqp_uri(&SecretUrl::parse(url).unwrap()).unwrap();
            assert_eq!(uri.authority.host, host, "{url}");
            assert_eq!(uri.authority.port, port, "{url}");
            assert_eq!(uri.vhost, vhost, "{url}");
        }
    }

    #[test]
    fn the_routing_key_carries_the_event_type_number() {
        let routing_key =
            |template: &str, event_type| routing_key_template(template).unwrap().render(event_type);
        assert_eq!(routing_key("css.{event_type}", 100), "css.100");
        assert_eq!(routing_key("all", 100), "all");
        assert_eq!(routing_key("{event_type}.{event_type}", -1), "-1.-1");
    }

    #[test]
    fn reconnection_waits_double_up_to_the_cap() {
        assert_eq!(RECONNECT.delay(1), RECONNECT.initial);
        assert_eq!(RECONNECT.delay(2), RECONNECT.initial * 2);
        assert_eq!(RECONNECT.delay(3), RECONNECT.initial * 4);
        assert_eq!(RECONNECT.delay(100), RECONNECT.max);
        assert_eq!(RECONNECT.delay(u32::MAX), RECONNECT.max);
    }

    #[tokio::test]
    async fn a_refused_connection_fails_every_record_then_waits_before_trying_again() {
        // A bound socket that does not listen: connections are refused.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        let url =
            SecretUrl::parse(&format!("amqp://guest:s3cret-pw@127.0.0.1:{port}/%2f")).unwrap();
        let sink = RabbitMqSink::from_settings("q", &RabbitMqSinkSettings::new(url, "x")).unwrap();
        let record = StoredRecord {
            id: "e1".to_owned(),
            event_type: 100,
            json: "{}".to_owned(),
        };
        let records = vec![record.clone(), record];
        let first = sink.deliver_batch(&records).await;
        assert_eq!(first.len(), 2);
        let Err(DeliveryError::Retriable {
            reason,
            retry_after,
        }) = &first[0]
        else {
            panic!("{first:?}")
        };
        assert!(
            reason.contains("could not connect to amqp://guest:[redacted]@127.0.0.1"),
            "{reason}"
        );
        assert_eq!(*retry_after, Some(RECONNECT.initial));
        // Within the backoff: no new attempt, the last error repeated.
        let second = sink.deliver_batch(&records).await;
        let Err(DeliveryError::Retriable {
            reason,
            retry_after,
        }) = &second[1]
        else {
            panic!("{second:?}")
        };
        assert!(reason.contains("next connection attempt in"), "{reason}");
        assert!(retry_after.is_some_and(|wait| wait <= RECONNECT.initial));
        for result in first.iter().chain(&second) {
            assert!(!format!("{result:?}").contains("s3cret-pw"));
        }
    }
}
