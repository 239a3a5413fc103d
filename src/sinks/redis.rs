//! The `redis` sink: appends each record to a Redis stream with `XADD`.
//!
//! Every entry has three fields: `event_id`, `event_type` (the number, as
//! text) and `record` (the stored JSON, byte for byte), and a fourth,
//! `traceparent`, when traces are on (a stream entry has no headers). A record counts as
//! delivered once `XADD` has returned an entry id, or once the dedup script
//! found that the record was already added inside `dedup_window_secs`.
//!
//! With a dedup window, each record goes through one Lua script that checks
//! a key derived from the stream and the event id, adds the entry and only
//! then sets that key (see [`DEDUP_SCRIPT`] for why in that order). Redis
//! runs a script atomically, so a retry after a lost answer finds the key and
//! adds nothing: at most one entry per event id and window.
//!
//! The connection is made on the first delivery, never at start-up, and
//! replaced when it breaks; a failed connection attempt is not repeated
//! before a growing delay has passed (see [`Connection`]). Every failure is
//! retriable, a misconfiguration included (a wrong password, a stream name
//! that holds another type): the records wait in the spool and become dead
//! letters after `max_attempts`, never "delivered".
//!
//! Only a single Redis server (or a proxy in front of one) is supported, not
//! Redis Cluster: the dedup key and the stream must live on the same node.

use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, Script};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::broker::{Backoff, ReconnectGate, Template, check_scheme};
use super::checks::{self, InvalidSetting, check_range};
use super::contract::{BoxFuture, DeliveryError, Outcomes, Sink};
use crate::record::StoredRecord;
use crate::secret_url::SecretUrl;
use crate::telemetry::traces;

/// Default stream every record is added to.
pub const DEFAULT_STREAM: &str = "recordhook:events";
/// Default seconds during which a record already added is not added again.
pub const DEFAULT_DEDUP_WINDOW_SECS: u64 = 3_600;
/// Longest `dedup_window_secs`: 30 days. Each record holds a small key for
/// the window, so much longer is memory spent on records nobody retries.
pub const MAX_DEDUP_WINDOW_SECS: u64 = 30 * 24 * 60 * 60;
/// Largest `max_len`: far more entries than a Redis server holds in memory,
/// so anything beyond is a typo.
pub const MAX_MAX_LEN: u64 = 1_000_000_000_000;

/// Commands in flight at once on the connection during a batch. They are
/// pipelined on one socket, so a batch costs about one round trip per this
/// many records, while a large batch cannot queue unbounded work in Redis.
const MAX_IN_FLIGHT: usize = 64;
/// Waits between connection attempts after a failed one: from 200 ms up to
/// 5 s. Short next to the delivery retries' own backoff, so it never holds
/// records back for long once Redis is back; long enough that a backlog's
/// batches do not hammer a dead server.
const RECONNECT: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(5),
};

/// The settings of a `type = "redis"` sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkSettings {
    /// `redis://[user][:password@]host[:port][/db]`, or `rediss://` for TLS
    /// (rustls, the Mozilla roots). Required. The password is a secret: it
    /// is shown redacted in logs, errors and `check-config`.
    pub url: SecretUrl,
    /// The stream to add entries to. `{event_type}` is replaced by the
    /// record's event type (`recordhook:{event_type}` → `recordhook:100`);
    /// no other placeholder, and no other `{` or `}`, is accepted.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Trim the stream to about this many entries on every add
    /// (`XADD … MAXLEN ~ n`, which Redis does cheaply in whole nodes, so a
    /// little more may remain); 0 never trims. At most [`MAX_MAX_LEN`].
    #[serde(default)]
    pub max_len: u64,
    /// Seconds during which a record already added is not added again (one
    /// key per record, derived from the stream and the event id); 0 turns
    /// this off, so a retry after a lost answer may add an entry twice. At
    /// most [`MAX_DEDUP_WINDOW_SECS`]; keep it longer than the retry span.
    #[serde(default = "default_dedup_window_secs")]
    pub dedup_window_secs: u64,
    /// Seconds before an attempt (connecting included) is abandoned and
    /// retried; 1 to [`checks::MAX_TIMEOUT_SECS`].
    #[serde(default = "checks::default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_stream() -> String {
    DEFAULT_STREAM.to_owned()
}

fn default_dedup_window_secs() -> u64 {
    DEFAULT_DEDUP_WINDOW_SECS
}

impl RedisSinkSettings {
    /// A redis sink to `url` with the default settings.
    pub fn new(url: SecretUrl) -> Self {
        Self {
            url,
            stream: default_stream(),
            max_len: 0,
            dedup_window_secs: DEFAULT_DEDUP_WINDOW_SECS,
            timeout_secs: checks::DEFAULT_TIMEOUT_SECS,
        }
    }

    /// Checks what the types alone cannot, without connecting.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.client()?;
        stream_template(&self.stream)?;
        check_range("max_len", self.max_len, 0, MAX_MAX_LEN, "")?;
        check_range(
            "dedup_window_secs",
            self.dedup_window_secs,
            0,
            MAX_DEDUP_WINDOW_SECS,
            " s",
        )?;
        checks::check_timeout(self.timeout_secs)?;
        Ok(())
    }

    /// The client for `url` (which parses it, but does not connect).
    fn client(&self) -> Result<Client, InvalidSetting> {
        let url = &self.url;
        check_scheme(url, ["redis", "rediss"])?;
        // `rediss://…#insecure` would turn certificate checks off.
        if url.expose().contains('#') {
            return Err(InvalidSetting::new(
                "url",
                format!("must not have a `#` fragment: `{url}`"),
            ));
        }
        // The crate's errors are fixed descriptions; scrubbed all the same.
        Client::open(url.expose()).map_err(|err| {
            InvalidSetting::new(
                "url",
                format!(
                    "`{url}` is not a usable Redis URL: {}",
                    url.scrub(&err.to_string())
                ),
            )
        })
    }
}

/// The `stream` template, which must be non-empty, its only placeholder
/// `{event_type}`.
fn stream_template(stream: &str) -> Result<Template, InvalidSetting> {
    if stream.is_empty() {
        return Err(InvalidSetting::new("stream", "must not be empty"));
    }
    Template::parse("stream", stream)
}

/// The dedup script. KEYS: the dedup key, the stream. ARGV: the window in
/// seconds, `max_len` (0: no trim), then the entry's fields' values
/// (event id, event type, record, and the traceparent when there is one). Returns `{1, id}` for an added entry and
/// `{0, id}` when the record was already added (the id stored then).
///
/// The order is GET, XADD, SET rather than `SET NX` first: Redis does not
/// undo a script's earlier writes when a later command fails, so a key set
/// before an `XADD` that fails (WRONGTYPE, a stream name held by a string)
/// would stay, and every retry would then find it and report a delivery
/// that never happened. Here nothing is written before `XADD`, and the `SET`
/// after it cannot fail (it overwrites any type, and Redis refuses a script
/// for lack of memory only before its first write). Because the script runs
/// atomically, GET-then-SET is as exclusive as `SET NX`.
pub const DEDUP_SCRIPT: &str = r"
local seen = redis.call('GET', KEYS[1])
if seen then
  return {0, seen}
end
local fields = {'event_id', ARGV[3], 'event_type', ARGV[4], 'record', ARGV[5]}
if ARGV[6] then
  table.insert(fields, 'traceparent')
  table.insert(fields, ARGV[6])
end
local id
if ARGV[2] ~= '0' then
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
else
  id = redis.call('XADD', KEYS[2], '*', unpack(fields))
end
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return {1, id}
";

/// The key that marks `event_id` as added to `stream`, for the dedup window.
pub fn dedup_key(stream: &str, event_id: &str) -> String {
    format!("{stream}:recordhook-dedup:{event_id}")
}

/// Appends records to a Redis stream.
pub struct RedisSink {
    connection: Connection,
    stream: Template,
    max_len: u64,
    dedup_window_secs: u64,
    timeout: Duration,
    script: Script,
}

impl RedisSink {
    /// The redis sink `settings` describe. Does not connect: the first
    /// delivery does, so a Redis that is down never holds up start-up.
    pub fn from_settings(settings: &RedisSinkSettings) -> Result<Self, InvalidSetting> {
        settings.validate()?;
        let timeout = Duration::from_secs(settings.timeout_secs);
        Ok(Self {
            connection: Connection::new(settings.url.clone(), settings.client()?),
            stream: stream_template(&settings.stream)?,
            max_len: settings.max_len,
            dedup_window_secs: settings.dedup_window_secs,
            timeout,
            script: Script::new(DEDUP_SCRIPT),
        })
    }

    /// The stream `record` goes to.
    fn stream_for(&self, record: &StoredRecord) -> String {
        self.stream.render(record.event_type)
    }

    /// Adds every record, at most [`MAX_IN_FLIGHT`] at once, all within one
    /// timeout; one result per record, in order.
    async fn add_all(&self, records: &[StoredRecord]) -> Outcomes {
        let deadline = Instant::now() + self.timeout;
        match self.connection.get(deadline).await {
            Ok((generation, connection)) => {
                Outcomes::buffered(records, MAX_IN_FLIGHT, |record| {
                    self.attempt(connection.clone(), generation, record, deadline)
                })
                .await
            }
            Err(err) => Outcomes::all(records, Err(err)),
        }
    }

    /// Adds one record on `connection` before `deadline`; a connection that
    /// broke or stopped answering is given up, so the next delivery makes a
    /// new one rather than queue behind it.
    async fn attempt(
        &self,
        mut connection: MultiplexedConnection,
        generation: u64,
        record: &StoredRecord,
        deadline: Instant,
    ) -> Result<(), DeliveryError> {
        match tokio::time::timeout_at(deadline, self.add(&mut connection, record)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                if breaks_connection(&err) {
                    self.connection.lost(generation).await;
                }
                Err(self.delivery_error(record, &err))
            }
            Err(_) => {
                self.connection.lost(generation).await;
                Err(DeliveryError::retriable(format!(
                    "timed out after {} s waiting for redis at {} to answer",
                    self.timeout.as_secs(),
                    self.connection.url
                )))
            }
        }
    }

    /// Adds one record: the dedup script, or a plain `XADD` without a window.
    async fn add(
        &self,
        connection: &mut MultiplexedConnection,
        record: &StoredRecord,
    ) -> Result<(), RedisError> {
        let stream = self.stream_for(record);
        let event_type = record.event_type.to_string();
        let traceparent = traces::traceparent(&record.id);
        if self.dedup_window_secs > 0 {
            let mut invocation = self.script.key(dedup_key(&stream, &record.id));
            invocation
                .key(&stream)
                .arg(self.dedup_window_secs)
                .arg(self.max_len)
                .arg(&record.id)
                .arg(&event_type)
                .arg(record.json.as_bytes());
            if let Some(traceparent) = &traceparent {
                invocation.arg(traceparent);
            }
            let (added, id): (i64, String) = invocation.invoke_async(connection).await?;
            if added == 0 {
                tracing::debug!(event_id = %record.id, stream, entry = id, "already in the stream");
            }
            return Ok(());
        }
        let mut xadd = ::redis::cmd("XADD");
        xadd.arg(&stream);
        if self.max_len > 0 {
            xadd.arg("MAXLEN").arg("~").arg(self.max_len);
        }
        xadd.arg("*")
            .arg("event_id")
            .arg(&record.id)
            .arg("event_type")
            .arg(&event_type)
            .arg("record")
            .arg(record.json.as_bytes());
        if let Some(traceparent) = &traceparent {
            xadd.arg(traces::TRACEPARENT_HEADER).arg(traceparent);
        }
        let _id: String = xadd.query_async(connection).await?;
        Ok(())
    }

    /// What a failed command means for the record, without any secret.
    fn delivery_error(&self, record: &StoredRecord, err: &RedisError) -> DeliveryError {
        let url = &self.connection.url;
        let text = url.scrub(&err.to_string());
        let reason = match err.code() {
            Some("WRONGTYPE") => format!(
                "stream `{}` (or its dedup key) holds another type of value in redis at {url}: {text}",
                self.stream_for(record)
            ),
            Some("NOAUTH") => format!("redis at {url} requires a password: {text}"),
            Some("NOPERM") => format!("the redis user lacks a permission at {url}: {text}"),
            _ if breaks_connection(err) => format!("lost the connection to redis at {url}: {text}"),
            _ => format!("redis at {url} refused the entry: {text}"),
        };
        DeliveryError::retriable(reason)
    }
}

impl Sink for RedisSink {
    fn deliver_batch<'a>(&'a self, records: &'a [StoredRecord]) -> BoxFuture<'a, Outcomes> {
        Box::pin(self.add_all(records))
    }
}

/// Whether `err` means the connection cannot be used any more.
fn breaks_connection(err: &RedisError) -> bool {
    err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error()
}

/// The sink's connection: made when first needed, shared by the commands of
/// a batch (they are pipelined on it), and replaced when it breaks. After a
/// failed attempt to connect, the next waits out [`RECONNECT`]'s delay;
/// deliveries meanwhile fail at once with the last error, so a dead server
/// is neither hammered nor waited on.
struct Connection {
    /// For errors and logs: the password redacted.
    url: SecretUrl,
    client: Client,
    config: AsyncConnectionConfig,
    state: Mutex<State>,
}

/// Where the connection stands.
struct State {
    /// The connection in use, if any, with its generation, which tells it
    /// from its successors.
    up: Option<(u64, MultiplexedConnection)>,
    /// The generation the next connection will have.
    next: u64,
    /// Whether a new connection may be attempted yet.
    gate: ReconnectGate,
}

impl Connection {
    fn new(url: SecretUrl, client: Client) -> Self {
        // Connecting and commands are timed out by the sink's deadline for
        // the attempt, which also drops a connection that stopped answering.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        Self {
            url,
            client,
            config,
            state: Mutex::new(State {
                up: None,
                next: 0,
                gate: ReconnectGate::new(RECONNECT),
            }),
        }
    }

    /// The connection, connecting if there is none and the backoff allows;
    /// an attempt still connecting at `deadline` counts as failed.
    async fn get(&self, deadline: Instant) -> Result<(u64, MultiplexedConnection), DeliveryError> {
        let Ok(mut state) = tokio::time::timeout_at(deadline, self.state.lock()).await else {
            return Err(DeliveryError::retriable(format!(
                "timed out waiting for the connection to redis at {}",
                self.url
            )));
        };
        if let Some((generation, connection)) = &state.up {
            return Ok((*generation, connection.clone()));
        }
        state
            .gate
            .check(Instant::now())
            .map_err(|closed| DeliveryError::retriable(closed.to_string()))?;
        let connecting = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config);
        let connected = match tokio::time::timeout_at(deadline, connecting).await {
            Ok(connected) => connected.map_err(|err| self.connect_error(&err)),
            Err(_) => Err(format!(
                "could not connect to redis at {}: timed out",
                self.url
            )),
        };
        match connected {
            Ok(connection) => {
                tracing::info!(url = %self.url, "connected to redis");
                state.gate.succeeded();
                let generation = state.next;
                state.next = generation.wrapping_add(1);
                state.up = Some((generation, connection.clone()));
                Ok((generation, connection))
            }
            Err(reason) => {
                let wait = state.gate.failed(Instant::now(), &reason);
                tracing::warn!(url = %self.url, error = %reason, retry_in_ms = wait.as_millis(), "could not connect to redis");
                Err(DeliveryError::retriable(reason))
            }
        }
    }

    /// Drops connection `generation` after it broke (unless it was already
    /// replaced), so the next delivery connects afresh at once.
    async fn lost(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if matches!(&state.up, Some((current, _)) if *current == generation) {
            tracing::warn!(url = %self.url, "lost the connection to redis; reconnecting on the next delivery");
            // The gate is open: the last attempt succeeded.
            state.up = None;
        }
    }

    /// Why connecting failed, in words, without any secret.
    fn connect_error(&self, err: &RedisError) -> String {
        let url = &self.url;
        let text = url.scrub(&err.to_string());
        match err.kind() {
            ErrorKind::AuthenticationFailed => {
                format!("authentication to redis at {url} failed (wrong user or password): {text}")
            }
            _ if err.code() == Some("NOAUTH") => {
                format!("redis at {url} requires a password: {text}")
            }
            _ => format!("could not connect to redis at {url}: {text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::contract::deliver_alone;

    fn settings(toml: &str) -> Result<RedisSinkSettings, String> {
        let settings: RedisSinkSettings = toml::from_str(toml).map_err(|err| err.to_string())?;
        settings.validate().map_err(|err| err.to_string())?;
        Ok(settings)
    }

    #[test]
    fn only_the_url_is_required_and_the_defaults_are_the_documented_ones() {
        let s = settings("url = \"redis://127.0.0.1:6379\"").unwrap();
        assert_eq!(s.stream, "recordhook:events");
        assert_eq!(s.max_len, 0);
        assert_eq!(s.dedup_window_secs, 3_600);
        assert_eq!(s.timeout_secs, 10);
        assert!(settings("").unwrap_err().contains("url"));
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        for (toml, expected) in [
            ("url = \"http://h:6379\"", "redis:// or rediss://"),
            ("url = \"nats://h\"", "redis:// or rediss://"),
            ("url = \"rediss://h/#insecure\"", "fragment"),
            ("url = \"redis://h/notadb\"", "not a usable Redis URL"),
            ("url = \"redis://h\"\nstream = \"\"", "stream"),
            (
                "url = \"redis://h\"\nstream = \"a:{event-type}\"",
                "only placeholder",
            ),
            (
                "url = \"redis://h\"\nstream = \"{x}:{event_type}\"",
                "only placeholder",
            ),
            ("url = \"redis://h\"\ntimeout_secs = 0", "timeout_secs"),
            ("url = \"redis://h\"\ntimeout_secs = 3601", "timeout_secs"),
            ("url = \"redis://h\"\nmax_len = 1000000000001", "max_len"),
            (
                "url = \"redis://h\"\ndedup_window_secs = 2592001",
                "dedup_window_secs",
            ),
            ("url = \"redis://h\"\nmaxlen = 5", "unknown field"),
        ] {
            let err = settings(toml).unwrap_err();
            assert!(
                err.contains(expected),
                "{toml}: expected {expected:?} in {err}"
            );
        }
    }

    #[test]
    fn a_refused_url_never_shows_its_password() {
        for url in [
            "redis://:s3cret@h/notadb",
            "http://:s3cret@h",
            "rediss://:s3cret@h/#insecure",
        ] {
            let err = settings(&format!("url = \"{url}\"")).unwrap_err();
            assert!(
                !err.contains("s3cret") && err.contains("[redacted]"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_stream_placeholder_is_the_event_type_number() {
        let mut s = RedisSinkSettings::new(SecretUrl::parse("redis://h").unwrap());
        s.stream = "css:{event_type}:events".to_owned();
        let sink = RedisSink::from_settings(&s).unwrap();
        let record = StoredRecord {
            id: "e1".to_owned(),
            event_type: 100,
            json: "{}".to_owned(),
        };
        assert_eq!(sink.stream_for(&record), "css:100:events");
        assert_eq!(
            dedup_key(&sink.stream_for(&record), &record.id),
            "css:100:events:recordhook-dedup:e1"
        );
    }

    #[test]
    fn errors_are_scrubbed_of_the_password_and_the_url() {
        let url = SecretUrl::parse("redis://user:p%40ss@h:1").unwrap();
        let err = RedisError::from((
            ErrorKind::Io,
            "failed",
            "redis://user:p%40ss@h:1 said p@ss and p%40ss".to_owned(),
        ));
        let text = url.scrub(&err.to_string());
        assert!(!text.contains("p@ss") && !text.contains("p%40ss"), "{text}");
        let token = SecretUrl::parse("redis://t0ken@h").unwrap();
        let err = RedisError::from((ErrorKind::Io, "failed", "t0ken".to_owned()));
        assert!(!token.scrub(&err.to_string()).contains("t0ken"));
    }

    #[tokio::test]
    async fn building_never_connects_and_a_dead_server_fails_fast_and_retriably() {
        // A port nothing listens on: bind, learn it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = SecretUrl::parse(&format!("redis://:s3cret@127.0.0.1:{port}")).unwrap();
        let sink = RedisSink::from_settings(&RedisSinkSettings::new(url)).unwrap();
        let record = StoredRecord {
            id: "e1".to_owned(),
            event_type: 100,
            json: "{}".to_owned(),
        };
        // The second attempt comes within the reconnect delay: it fails at
        // once with the last error instead of connecting again.
        for (round, expected) in [(0, "could not connect"), (1, "next connection attempt in")] {
            let results = sink.deliver_batch(&[record.clone(), record.clone()]).await;
            assert_eq!(results.len(), 2);
            for result in results {
                let Err(DeliveryError::Retriable { reason, .. }) = result else {
                    panic!("{result:?}")
                };
                assert!(reason.contains(expected), "round {round}: {reason}");
                assert!(reason.contains("redis://:[redacted]@127.0.0.1"), "{reason}");
                assert!(!reason.contains("s3cret"), "{reason}");
            }
        }
    }

    #[tokio::test]
    async fn a_server_that_never_answers_costs_one_timeout_per_attempt() {
        // Accepts connections and never says a word.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                sockets.push(socket);
            }
        });
        let mut settings =
            RedisSinkSettings::new(SecretUrl::parse(&format!("redis://{address}")).unwrap());
        settings.timeout_secs = 1;
        let sink = RedisSink::from_settings(&settings).unwrap();
        let record = StoredRecord {
            id: "e1".to_owned(),
            event_type: 100,
            json: "{}".to_owned(),
        };
        let started = std::time::Instant::now();
        let result = deliver_alone(&sink, &record).await;
        let Err(DeliveryError::Retriable { reason, .. }) = &result else {
            panic!("{result:?}")
        };
        assert!(reason.contains("timed out"), "{reason}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        held.abort();
    }
}
