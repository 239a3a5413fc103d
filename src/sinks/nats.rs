//! The NATS sink: publishes each record to a NATS JetStream subject and
//! counts it as delivered only when JetStream acknowledged it (a `PublishAck`,
//! which the server sends once the stream has stored the message). A repeat
//! of an event id inside the stream's duplicate window is acknowledged as a
//! duplicate and counts as delivered too: the stream already holds it.
//!
//! The connection is made lazily, on the first delivery, and kept by the
//! client library, which reconnects by itself with backoff. While it is down
//! every delivery fails at once as retriable (the record waits in the spool),
//! instead of queueing publishes or waiting out the timeout per record.
//!
//! Credentials in the URL (`user:pass@` or a `token@`) are taken out of it
//! before the client sees it and handed over separately: the client logs the
//! server address at debug level, and that address must carry no secret.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, watch};

use super::broker::{Template, check_scheme};
use super::checks::{self, InvalidSetting};
use super::contract::{BoxFuture, DeliveryError, Outcomes, Sink};
use crate::record::StoredRecord;
use crate::secret_url::SecretUrl;
use crate::telemetry::traces;

/// Where a NATS sink connects when no `url` is given: a local server on the
/// NATS default port, as every NATS client assumes.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// The default subject; `{event_type}` becomes the record's type number.
pub const DEFAULT_SUBJECT: &str = "recordhook.{event_type}";
/// Publishes awaiting their ack at once, per sink. A delivery round holds at
/// most 256 records, so a whole round is pipelined: published back to back,
/// then its acks collected, not one round trip per record.
pub const IN_FLIGHT: usize = 256;
/// Longest wait for the very first connection, so that the first round
/// after start-up does not fail merely because the handshake was still under
/// way. Later rounds never wait for a connection that is down.
const FIRST_CONNECT_GRACE: Duration = Duration::from_secs(5);

/// Header carrying the event id, which JetStream deduplicates on.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// Header carrying the event id for Standard Webhooks-minded consumers.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
/// Header carrying the record's event type number.
pub const EVENT_TYPE_HEADER: &str = "recordhook-event-type";

/// The settings of a `type = "nats"` sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkSettings {
    /// The server: `nats://host:port` (or `tls://` for TLS), default
    /// [`DEFAULT_URL`]. `nats://user:pass@host` or `nats://token@host`
    /// authenticate; they are secrets, shown redacted everywhere.
    #[serde(default = "default_url")]
    pub url: SecretUrl,
    /// The subject each record is published to; `{event_type}` is replaced by
    /// the type number. A JetStream stream must capture it.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// Seconds to wait for a publish's ack before the attempt is abandoned
    /// (and retried); 1 to [`checks::MAX_TIMEOUT_SECS`].
    #[serde(default = "checks::default_timeout_secs")]
    pub timeout_secs: u64,
    /// A NATS credentials file (user JWT and nkey seed) to authenticate with,
    /// instead of credentials in the URL. Its path is shown; its contents
    /// are never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
}

#[allow(clippy::expect_used)]
fn default_url() -> SecretUrl {
    // A constant, parsed in a unit test: cannot fail.
    SecretUrl::parse(DEFAULT_URL).expect("the default NATS URL parses")
}

fn default_subject() -> String {
    DEFAULT_SUBJECT.to_owned()
}

impl NatsSinkSettings {
    /// A NATS sink to `url` with the default subject and timeout.
    pub fn new(url: SecretUrl) -> Self {
        Self {
            url,
            subject: default_subject(),
            timeout_secs: checks::DEFAULT_TIMEOUT_SECS,
            creds_file: None,
        }
    }

    /// Checks what can be checked without connecting.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let server = Server::from_url(&self.url)?;
        if self.creds_file.is_some() && server.credentials != Credentials::None {
            return Err(InvalidSetting::new(
                "creds_file",
                "give credentials either in the url or in creds_file, not both",
            ));
        }
        if self
            .creds_file
            .as_ref()
            .is_some_and(|path| path.as_os_str().is_empty())
        {
            return Err(InvalidSetting::new(
                "creds_file",
                "must be a path (or left out)",
            ));
        }
        subject_template(&self.subject)?;
        checks::check_timeout(self.timeout_secs)
    }
}

/// The subject template, checked: NATS tokens separated by dots, none
/// empty, no whitespace, no wildcard (a publish subject names one subject),
/// and no placeholder but `{event_type}`.
fn subject_template(subject: &str) -> Result<Template, InvalidSetting> {
    let invalid = |reason: &str| Err(InvalidSetting::new("subject", reason));
    if subject.is_empty() {
        return invalid("must not be empty");
    }
    let template = Template::parse("subject", subject)?;
    let sample = template.longest();
    if sample.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid("must not contain whitespace");
    }
    if sample.contains(['*', '>']) {
        return invalid("must not contain the wildcards `*` or `>`: records go to one subject");
    }
    if sample.split('.').any(str::is_empty) {
        return invalid(
            "must be dot-separated tokens, none empty (no leading, trailing or double dot)",
        );
    }
    Ok(template)
}

/// How the client authenticates, taken out of the URL.
#[derive(Clone, PartialEq, Eq)]
enum Credentials {
    None,
    UserPassword(String, String),
    Token(String),
}

/// The server address without credentials, and the credentials beside it.
struct Server {
    /// `scheme://host:port`, safe to hand to a client that logs it.
    address: String,
    credentials: Credentials,
}

impl Server {
    /// Splits the configured URL; the errors never repeat it.
    fn from_url(url: &SecretUrl) -> Result<Self, InvalidSetting> {
        let invalid = |reason: &str| InvalidSetting::new("url", reason);
        check_scheme(url, ["nats", "tls"])?;
        let parsed = url::Url::parse(url.expose())
            .map_err(|_| invalid("must be a nats:// or tls:// URL"))?;
        let host = parsed
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| invalid("must name a host"))?;
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
            return Err(invalid(
                "takes no path or query: `nats://[user:pass@]host[:port]`",
            ));
        }
        if parsed.fragment().is_some() {
            return Err(invalid("takes no fragment"));
        }
        let decode = |text: &str| {
            percent_decode(text)
                .map_err(|()| invalid("credentials must be valid percent-encoded UTF-8"))
        };
        let user = decode(parsed.username())?;
        let credentials = match parsed.password() {
            Some(password) => Credentials::UserPassword(user, decode(password)?),
            None if !user.is_empty() => Credentials::Token(user),
            None => Credentials::None,
        };
        let port = parsed.port().unwrap_or(4222);
        Ok(Self {
            address: format!("{}://{host}:{port}", url.scheme()),
            credentials,
        })
    }
}

/// Percent-decodes a URL's user or password part.
fn percent_decode(text: &str) -> Result<String, ()> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(())?;
            let hex = std::str::from_utf8(hex).map_err(|_| ())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// What the sink knows of its connection, fed by the client's events.
#[derive(Debug, Clone, Default)]
struct LinkStatus {
    /// Whether the client has connected since it was created.
    ever_connected: bool,
    /// The last problem the client reported; cleared on (re)connection.
    last_error: Option<String>,
}

/// A live client: its JetStream context and what its events said.
struct Link {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    status: watch::Receiver<LinkStatus>,
}

/// Publishes records to NATS JetStream.
pub struct NatsSink {
    /// The sink's name, for log fields.
    name: String,
    /// The URL as configured; only its redacted form is ever shown.
    url: SecretUrl,
    creds_file: Option<PathBuf>,
    subject: Template,
    timeout: Duration,
    /// Made on first use, so start-up never waits for (or fails on) the network.
    link: OnceCell<Link>,
}

impl NatsSink {
    /// The NATS sink `settings` describe, named `name`; connects on first use.
    pub fn from_settings(name: &str, settings: &NatsSinkSettings) -> Result<Self, InvalidSetting> {
        settings.validate()?;
        Ok(Self {
            name: name.to_owned(),
            url: settings.url.clone(),
            creds_file: settings.creds_file.clone(),
            subject: subject_template(&settings.subject)?,
            timeout: Duration::from_secs(settings.timeout_secs),
            link: OnceCell::new(),
        })
    }

    /// The subject for a record of `event_type`.
    fn subject_for(&self, event_type: i64) -> String {
        self.subject.render(event_type)
    }

    /// The client, created on first use. Creating it starts the connection
    /// in the background (the client retries with backoff from then on);
    /// only reading a creds file can fail here, and is tried again next round.
    async fn link(&self) -> Result<&Link, DeliveryError> {
        self.link.get_or_try_init(|| self.connect()).await
    }

    async fn connect(&self) -> Result<Link, DeliveryError> {
        let server =
            Server::from_url(&self.url).map_err(|err| DeliveryError::permanent(err.to_string()))?;
        let mut options = match &self.creds_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|err| {
                    // The error names the file and what is wrong, never its contents.
                    DeliveryError::retriable(format!(
                        "cannot use creds_file `{}`: {err}",
                        path.display()
                    ))
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        options = match server.credentials {
            Credentials::None => options,
            Credentials::UserPassword(user, password) => options.user_and_password(user, password),
            Credentials::Token(token) => options.token(token),
        };
        let (status_tx, status) = watch::channel(LinkStatus::default());
        let status_tx = Arc::new(status_tx);
        let sink = self.name.clone();
        let url = self.url.clone();
        let options = options
            .name(format!("recordhook/{}", self.name))
            .retry_on_initial_connect()
            .connection_timeout(self.timeout.min(Duration::from_secs(10)))
            .request_timeout(Some(self.timeout))
            .event_callback(move |event| {
                let status_tx = Arc::clone(&status_tx);
                let sink = sink.clone();
                let url = url.clone();
                async move { on_event(&status_tx, &sink, &url, event) }
            });
        let client = options
            .connect(server.address.as_str())
            .await
            .map_err(|err| {
                DeliveryError::retriable(format!(
                    "NATS client for {} could not start: {}",
                    self.url,
                    self.url.scrub(&err.to_string())
                ))
            })?;
        let jetstream = async_nats::jetstream::ContextBuilder::new()
            .timeout(self.timeout)
            .ack_timeout(self.timeout)
            .max_ack_inflight(IN_FLIGHT * 4)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let mut link = Link {
            client,
            jetstream,
            status,
        };
        // The handshake is under way; give it a moment so the first round
        // after start-up is not failed for nothing. A server that is down
        // costs this once, not per round.
        let grace = self.timeout.min(FIRST_CONNECT_GRACE);
        let _ = tokio::time::timeout(grace, link.status.wait_for(|s| s.ever_connected)).await;
        Ok(link)
    }

    /// Fails fast when the client is not connected: a publish would only
    /// queue in the client until the timeout.
    fn check_connected(&self, link: &Link) -> Result<(), DeliveryError> {
        if link.client.connection_state() == async_nats::connection::State::Connected {
            return Ok(());
        }
        let status = link.status.borrow().clone();
        let cause = status.last_error.unwrap_or_else(|| {
            if status.ever_connected {
                "disconnected".to_owned()
            } else {
                "still connecting".to_owned()
            }
        });
        Err(DeliveryError::retriable(format!(
            "NATS not connected to {}: {cause}",
            self.url
        )))
    }

    /// Publishes one record and waits for its ack.
    async fn publish(&self, link: &Link, record: &StoredRecord) -> Result<(), DeliveryError> {
        let subject = self.subject_for(record.event_type);
        let publish = PublishMessage::build()
            .payload(bytes::Bytes::from(record.json.clone()))
            .headers(headers(record));
        let pending = tokio::time::timeout(
            self.timeout,
            link.jetstream.send_publish(subject.clone(), publish),
        )
        .await
        .map_err(|_| self.timed_out(link, &subject))?
        .map_err(|err| self.publish_failed(link, &subject, &err))?;
        let ack = tokio::time::timeout(self.timeout, pending)
            .await
            .map_err(|_| self.timed_out(link, &subject))?
            .map_err(|err| self.publish_failed(link, &subject, &err))?;
        if ack.duplicate {
            tracing::debug!(
                sink = %self.name, event_id = %record.id, stream = %ack.stream,
                "JetStream already held this event id; counted as delivered"
            );
        }
        Ok(())
    }

    /// No ack in time. A server error reported meanwhile (a permissions
    /// violation on the subject, say) is the likely cause: it is named.
    fn timed_out(&self, link: &Link, subject: &str) -> DeliveryError {
        let mut reason = format!(
            "no JetStream ack for subject `{subject}` within {} s",
            self.timeout.as_secs()
        );
        if let Some(error) = &link.status.borrow().last_error {
            reason.push_str(&format!(" (last NATS error: {error})"));
        }
        DeliveryError::retriable(reason)
    }

    fn publish_failed(&self, link: &Link, subject: &str, err: &PublishError) -> DeliveryError {
        match err.kind() {
            PublishErrorKind::StreamNotFound => DeliveryError::retriable(format!(
                "no JetStream stream captures subject `{subject}` (NATS answered: no responders); \
                 create a stream for it, change `subject`, or enable JetStream"
            )),
            PublishErrorKind::TimedOut => self.timed_out(link, subject),
            // The record itself is larger than the server accepts: retrying
            // the same bytes cannot succeed.
            PublishErrorKind::MaxPayloadExceeded => {
                DeliveryError::permanent(format!("publish to `{subject}` refused: {err}"))
            }
            _ => DeliveryError::retriable(format!("publish to `{subject}` failed: {err}")),
        }
    }

    async fn deliver_all(&self, records: &[StoredRecord]) -> Outcomes {
        let ready = match self.link().await {
            Ok(link) => self.check_connected(link).map(|()| link),
            Err(err) => Err(err),
        };
        match ready {
            Ok(link) => {
                Outcomes::buffered(records, IN_FLIGHT, |record| self.publish(link, record)).await
            }
            Err(err) => Outcomes::all(records, Err(err)),
        }
    }
}

/// The headers every message carries: the event id twice (JetStream's
/// dedup key and the Standard Webhooks id), the type and the content type.
fn headers(record: &StoredRecord) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(MSG_ID_HEADER, record.id.as_str());
    headers.insert(WEBHOOK_ID_HEADER, record.id.as_str());
    headers.insert(EVENT_TYPE_HEADER, record.event_type.to_string());
    headers.insert("content-type", "application/json");
    if let Some(traceparent) = traces::traceparent(&record.id) {
        headers.insert(traces::TRACEPARENT_HEADER, traceparent);
    }
    headers
}

/// Keeps the status current and logs changes (not every reconnect attempt
/// of a server that stays down: only a new kind of problem).
/// The problems reported are scrubbed of the URL's credentials (the client
/// was given them, and its errors may echo them).
fn on_event(
    status: &watch::Sender<LinkStatus>,
    sink: &str,
    url: &SecretUrl,
    event: async_nats::Event,
) {
    use async_nats::Event;
    match event {
        Event::Connected => {
            status.send_modify(|s| {
                s.ever_connected = true;
                s.last_error = None;
            });
            tracing::info!(sink, url = %url, "NATS connected");
        }
        Event::Disconnected => {
            status.send_modify(|s| s.last_error = Some("disconnected".to_owned()));
            tracing::warn!(sink, url = %url, "NATS disconnected; reconnecting with backoff");
        }
        Event::Closed => {
            status.send_modify(|s| s.last_error = Some("connection closed".to_owned()));
            tracing::warn!(sink, url = %url, "NATS connection closed");
        }
        Event::ServerError(err) => report(status, sink, url, url.scrub(&err.to_string())),
        Event::ClientError(err) => report(status, sink, url, url.scrub(&err.to_string())),
        other => tracing::debug!(sink, url = %url, event = %other, "NATS event"),
    }
}

fn report(status: &watch::Sender<LinkStatus>, sink: &str, url: &SecretUrl, error: String) {
    let changed = status.send_if_modified(|s| {
        if s.last_error.as_deref() == Some(error.as_str()) {
            return false;
        }
        s.last_error = Some(error.clone());
        true
    });
    if changed {
        tracing::warn!(sink, url = %url, error = %error, "NATS connection problem");
    }
}

impl Sink for NatsSink {
    fn deliver_batch<'a>(&'a self, records: &'a [StoredRecord]) -> BoxFuture<'a, Outcomes> {
        Box::pin(self.deliver_all(records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::contract::deliver_alone;

    fn settings(toml: &str) -> Result<NatsSinkSettings, String> {
        toml::from_str::<NatsSinkSettings>(toml).map_err(|err| err.to_string())
    }

    #[test]
    fn the_defaults_are_a_local_server_and_one_subject_per_event_type() {
        let settings = settings("").unwrap();
        assert_eq!(settings.url.redacted(), DEFAULT_URL);
        assert_eq!(settings.subject, "recordhook.{event_type}");
        assert_eq!(settings.timeout_secs, 10);
        assert!(settings.validate().is_ok());
        let sink = NatsSink::from_settings("bus", &settings).unwrap();
        assert_eq!(sink.subject_for(100), "recordhook.100");
        assert_eq!(sink.subject_for(-1), "recordhook.-1");
    }

    #[test]
    fn invalid_settings_are_refused_naming_the_key() {
        for (toml, field, reason) in [
            ("url = \"http://h:4222\"", "url", "nats:// or tls://"),
            ("url = \"nats://h:4222/x\"", "url", "no path"),
            ("url = \"nats://h:4222?token=x\"", "url", "no path or query"),
            ("subject = \"\"", "subject", "empty"),
            ("subject = \"a.{event}\"", "subject", "only placeholder"),
            ("subject = \"a.*\"", "subject", "wildcards"),
            ("subject = \"a.>\"", "subject", "wildcards"),
            ("subject = \"a..b\"", "subject", "none empty"),
            ("subject = \".a\"", "subject", "none empty"),
            ("subject = \"a b\"", "subject", "whitespace"),
            ("timeout_secs = 0", "timeout_secs", "between 1 and 3600"),
            ("timeout_secs = 3601", "timeout_secs", "between 1 and 3600"),
            (
                "url = \"nats://u:p@h\"\ncreds_file = \"x.creds\"",
                "creds_file",
                "not both",
            ),
            ("creds_file = \"\"", "creds_file", "must be a path"),
        ] {
            let err = settings(toml).unwrap().validate().unwrap_err();
            assert_eq!(err.field, field, "{toml}: {err}");
            assert!(err.reason.contains(reason), "{toml}: {err}");
        }
        assert!(
            settings("subjects = \"x\"")
                .unwrap_err()
                .contains("unknown field")
        );
    }

    #[test]
    fn credentials_are_taken_out_of_the_address_the_client_sees() {
        for (url, address, credentials) in [
            (
                "nats://127.0.0.1",
                "nats://127.0.0.1:4222",
                Credentials::None,
            ),
            (
                "nats://u%40x:p%3As3cret@h:4333",
                "nats://h:4333",
                Credentials::UserPassword("u@x".to_owned(), "p:s3cret".to_owned()),
            ),
            (
                "tls://s3cret@h",
                "tls://h:4222",
                Credentials::Token("s3cret".to_owned()),
            ),
            ("nats://[::1]:4222", "nats://[::1]:4222", Credentials::None),
        ] {
            let server = Server::from_url(&SecretUrl::parse(url).unwrap()).unwrap();
            assert_eq!(server.address, address, "{url}");
            assert!(server.credentials == credentials, "{url}");
        }
    }

    #[test]
    fn the_url_is_redacted_when_the_settings_are_shown() {
        let settings = settings("url = \"nats://me:s3cret@h:4222\"").unwrap();
        let shown = [
            format!("{settings:?}"),
            toml::to_string(&settings).unwrap(),
            serde_json::to_string(&settings).unwrap(),
        ];
        for text in shown {
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("nats://me:[redacted]@h:4222"), "{text}");
        }
    }

    #[test]
    fn every_message_carries_the_event_id_type_and_content_type() {
        let record = StoredRecord {
            id: "evt-1".to_owned(),
            event_type: 100,
            json: "{}".to_owned(),
        };
        let headers = headers(&record);
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(get("Nats-Msg-Id").as_deref(), Some("evt-1"));
        assert_eq!(get("webhook-id").as_deref(), Some("evt-1"));
        assert_eq!(get("recordhook-event-type").as_deref(), Some("100"));
        assert_eq!(get("content-type").as_deref(), Some("application/json"));
    }

    #[tokio::test]
    async fn a_server_that_is_down_fails_a_delivery_fast_and_retriably() {
        // A port nothing listens on: bound, never listening.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        let mut settings =
            settings(&format!("url = \"nats://u:s3cret@127.0.0.1:{port}\"")).unwrap();
        settings.timeout_secs = 1;
        let sink = NatsSink::from_settings("bus", &settings).unwrap();
        let record = StoredRecord {
            id: "evt".to_owned(),
            event_type: 100,
            json: "{}".to_owned(),
        };
        // The first round may wait out the first-connection grace (1 s here);
        // later rounds fail at once.
        let _ = deliver_alone(&sink, &record).await;
        let started = std::time::Instant::now();
        let result = deliver_alone(&sink, &record).await;
        assert!(started.elapsed() < Duration::from_millis(500));
        let Err(DeliveryError::Retriable { reason, .. }) = result else {
            panic!("not retriable: {result:?}");
        };
        assert!(
            reason.starts_with("NATS not connected to nats://u:[redacted]@127.0.0.1"),
            "{reason}"
        );
        assert!(!reason.contains("s3cret"), "{reason}");
    }
}
