//! Spawning the real server on port 0 with a temporary spool, and typed helpers to talk to it.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use recordhook::configuration::Settings;
use recordhook::configuration::sources::Sources;
use recordhook::http::AppState;
use recordhook::record::Record;
use recordhook::startup::{Application, StartupError};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// The callback key every test server is configured with.
pub const KEY: &str = "test-callback-key";

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// `http://127.0.0.1:PORT` of the admin listener, when configured.
    pub admin_address: Option<String>,
    /// Handler state; its spool is the real one the server writes.
    pub state: AppState,
    /// Settings the server was built with.
    pub settings: Settings,
    /// Holds the spool directory for the test's lifetime.
    pub dir: TempDir,
    pub client: reqwest::Client,
    /// Each `()` sent is one stop signal (as SIGTERM); dropping it stops too.
    stop: mpsc::UnboundedSender<()>,
    task: Option<JoinHandle<Result<(), StartupError>>>,
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// MD5 computed here, independently of the code under test.
pub fn sign_for(key: &str, t: i64) -> String {
    hex::encode(Md5::digest(format!("{key}{t}").as_bytes()))
}

/// A fixture from `tests/fixtures`.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A fixture as a JSON value.
pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// `body` with `t` = now + 600 and a valid `sign` for [`KEY`].
pub fn signed(mut body: Value) -> Value {
    signed_at(&mut body, now() + 600);
    body
}

/// Sets `t` and a matching `sign` in place.
pub fn signed_at(body: &mut Value, t: i64) {
    body["t"] = t.into();
    body["sign"] = sign_for(KEY, t).into();
}

/// A recording callback with a unique file id.
pub fn recording(file_id: &str) -> Value {
    let mut body = fixture_json("record-v2022.json");
    body["file_id"] = file_id.into();
    signed(body)
}

/// Settings for a test server: port 0, [`KEY`], spool in `dir`.
pub fn test_settings(dir: &TempDir) -> Settings {
    load_test_settings(dir, None)
}

/// Settings for a test server whose config file holds `toml` (e.g. `[[sinks]]` tables).
pub fn settings_from_toml(dir: &TempDir, toml: &str) -> Settings {
    let file = dir.path().join("recordhook.toml");
    std::fs::write(&file, toml).unwrap();
    load_test_settings(dir, Some(file))
}

/// Loads settings as the service would (from `file`, the key from the
/// environment), then points them at port 0 and a spool in `dir`.
fn load_test_settings(dir: &TempDir, file: Option<PathBuf>) -> Settings {
    let mut settings = Settings::load(Sources {
        repo_default: None,
        file,
        environment: Some(BTreeMap::from([(
            "RECORDHOOK__AUTH__KEYS".to_owned(),
            KEY.to_owned(),
        )])),
    })
    .unwrap();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.server.shutdown_grace_secs = 5;
    settings.spool.path = dir.path().join("spool.db");
    settings
}

/// A server configured with `toml` (sinks and other settings).
pub async fn spawn_app_with_config(toml: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_from_toml(&dir, toml);
    spawn_app_in(dir, settings).await
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&dir);
    customize(&mut settings);
    spawn_app_in(dir, settings).await
}

/// Starts a server with `settings`, keeping `dir` alive.
pub async fn spawn_app_in(dir: TempDir, settings: Settings) -> TestApp {
    init_test_logging();
    let application = Application::build(settings.clone()).await.unwrap();
    let address = format!("http://{}", application.address());
    let admin_address = application
        .admin_address()
        .map(|admin| format!("http://{admin}"));
    let state = application.state();
    let (stop, stops) = mpsc::unbounded_channel::<()>();
    let task = tokio::spawn(application.run_until_stopped(UnboundedReceiverStream::new(stops)));
    TestApp {
        address,
        admin_address,
        state,
        settings,
        dir,
        client: reqwest::Client::new(),
        stop,
        task: Some(task),
    }
}

/// Logs to stderr only with TEST_LOG set, so test output stays readable.
fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let settings = recordhook::telemetry::LogSettings {
            format: recordhook::telemetry::LogFormat::Pretty,
            level: "debug".to_owned(),
        };
        recordhook::telemetry::install(
            recordhook::telemetry::subscriber(&settings, std::io::stderr).unwrap(),
        );
    }
}

impl TestApp {
    pub fn callback_url(&self) -> String {
        format!("{}{}", self.address, self.settings.server.callback_path)
    }

    /// POSTs raw bytes to the callback path as `application/json`.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.callback_url())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, body: &Value) -> reqwest::Response {
        self.post_raw(body.to_string()).await
    }

    /// The state of `event_id` with `sink` (a sink configured now, or one that was).
    pub async fn delivery(
        &self,
        event_id: &str,
        sink: &str,
    ) -> Option<recordhook::spool::DeliveryState> {
        let event_types = self
            .settings
            .sinks
            .iter()
            .find(|s| s.name == sink)
            .map(|s| s.event_types.clone())
            .unwrap_or_default();
        self.state
            .spool
            .delivery_state(event_id, sink, &event_types)
            .await
            .unwrap()
    }

    /// Waits until `event_id` reaches `state` with `sink`.
    pub async fn wait_for_state(&self, event_id: &str, sink: &str, state: &str) -> bool {
        eventually(Duration::from_secs(20), || async {
            self.delivery(event_id, sink)
                .await
                .is_some_and(|s| s.state == state)
        })
        .await
    }

    /// GETs `path` (e.g. `/readyz`) on the server.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }

    /// The value of `series` on the server's `/metrics` (see [`metric_at`]).
    pub async fn metric(&self, series: &str) -> f64 {
        metric_at(&self.address, series).await
    }

    /// The `file_id` of every record in the spool, oldest first.
    pub async fn stored_file_ids(&self) -> Vec<String> {
        self.stored()
            .await
            .iter()
            .map(|r| r.event["file_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Every record in the spool.
    pub async fn stored(&self) -> Vec<Record> {
        self.state.spool.records().await.unwrap()
    }

    /// Sends a stop signal (as SIGTERM would) without waiting for the
    /// server to stop; [`TestApp::stop`] then waits. A second one during
    /// the shutdown delay ends the delay.
    pub fn signal_stop(&mut self) {
        // The server may have stopped already; nothing to tell it then.
        let _ = self.stop.send(());
    }

    /// Stops the server gracefully and hands back its directory.
    pub async fn stop(mut self) -> (TempDir, Settings) {
        self.signal_stop();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        (self.dir, self.settings)
    }
}

/// The value of `series` (a metric's name with its labels, exactly as
/// exposed, e.g. `recordhook_callbacks_total{outcome="accepted"}`) on the
/// `/metrics` of the server at `address` (`http://…`); 0 while it has none.
/// Counters are how a test learns the server has handled something.
pub async fn metric_at(address: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("{address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.split_whitespace().next())
        .map_or(0.0, |value| value.parse().unwrap())
}

/// Polls `check` until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts a JSON error body with `code` and a message containing `message`.
pub async fn assert_error(
    response: reqwest::Response,
    status: u16,
    code: u64,
    message: &str,
    case: &str,
) {
    assert_eq!(response.status().as_u16(), status, "{case}: status");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{case}: code in {body}");
    let text = body["message"].as_str().unwrap_or_default();
    assert!(
        text.contains(message),
        "{case}: message {text:?} should contain {message:?}"
    );
}

/// A socket holding a port on 127.0.0.1, bound but not listening: a
/// connection to it is refused, and nothing else can take the port while the
/// socket lives (a port found by binding a listener and dropping it can be
/// taken by anyone in between). `.listen(…)` later serves on that same port.
pub fn refusing_port() -> (tokio::net::TcpSocket, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = socket.local_addr().unwrap();
    (socket, address)
}

pub fn path_in(dir: &TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}
