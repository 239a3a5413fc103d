//! The recordhook binary with traces on, exporting to an OTLP receiver the
//! test runs (tests/api's [`Collector`]), for the tests that check the
//! `traceparent` each broker sink puts on its messages: the binary, since
//! traces are process-wide.

use crate::binary::{Server, start_server_with_env};
use crate::collector::{Collector, FAST_EXPORT};
use crate::helpers::recording;

/// The binary with `[telemetry.otlp]` pointing at its own collector.
pub struct Traced {
    /// What the binary exported.
    pub collector: Collector,
    address: String,
    /// Held (behind a lock, for `Sync`) to stop the binary when dropped.
    _server: std::sync::Mutex<Server>,
    _dir: tempfile::TempDir,
}

impl Traced {
    /// Starts the binary with `sinks` (their `[[sinks]]` tables).
    pub async fn start(sinks: &str) -> Self {
        let collector = Collector::start().await;
        let config = format!(
            "[telemetry.otlp]\nendpoint = \"{}\"\n{sinks}",
            collector.endpoint
        );
        let dir = tempfile::tempdir().unwrap();
        // The binary's helpers block: off the runtime's threads.
        let (dir, server) = tokio::task::spawn_blocking(move || {
            let server = start_server_with_env(&dir, &config, FAST_EXPORT);
            (dir, server)
        })
        .await
        .unwrap();
        Self {
            collector,
            address: server.address.clone(),
            _server: std::sync::Mutex::new(server),
            _dir: dir,
        }
    }

    /// Posts a signed recording callback for `file_id`; it must be accepted.
    pub async fn post(&self, file_id: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/callback", self.address))
            .json(&recording(file_id))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}
