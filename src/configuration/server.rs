//! `[server]`: the public HTTP listener and the callback endpoint, with the
//! bounds that keep its timers and buffers within what the process can hold.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, check_range};
use crate::http::{HEALTH_PATH, METRICS_PATH, READY_PATH};
use crate::tls::TlsSettings;

/// Largest `server.max_body_bytes`: 64 MiB. Each request's body is held in
/// memory, up to `max_connections` of them; a CSS callback is a few KiB.
pub const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Most `server.max_connections`; far beyond what one process's file
/// descriptors allow, and well inside what a semaphore can count.
pub const MAX_CONNECTIONS: u64 = 100_000;
/// Longest `server.shutdown_grace_secs`, `server.header_read_timeout_secs`
/// and `server.request_timeout_secs`: one hour. Timers are set by adding these
/// to the current instant, which must not overflow.
pub const MAX_SERVER_TIMEOUT_SECS: u64 = 3_600;

/// The HTTP listener and the callback endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address and port to bind, e.g. `0.0.0.0:8080`. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Path that CSS POSTs callbacks to; must start with `/`.
    pub callback_path: String,
    /// Largest callback body accepted, in bytes; larger ones get 413. 1 to [`MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
    /// How long, on SIGTERM or SIGINT, in-flight requests and deliveries may
    /// take to finish, in seconds; at most [`MAX_SERVER_TIMEOUT_SECS`].
    pub shutdown_grace_secs: u64,
    /// How long, on SIGTERM or SIGINT, the server goes on serving callbacks
    /// with `/readyz` answering 503 before its listener closes, in seconds:
    /// time for a load balancer's health check to take the replica out, so
    /// no callback is sent to a closed port. 0 (the default) closes at once.
    /// Comes before `shutdown_grace_secs`; a second signal ends it at once.
    /// At most [`MAX_SERVER_TIMEOUT_SECS`].
    pub shutdown_delay_secs: u64,
    /// Connections served at once; further ones wait in the kernel's accept
    /// queue. 1 to [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (or finish a TLS
    /// handshake); idle keep-alive connections are closed after it too.
    /// 1 to [`MAX_SERVER_TIMEOUT_SECS`].
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a request's body; slower ones get 408.
    /// 1 to [`MAX_SERVER_TIMEOUT_SECS`].
    pub request_timeout_secs: u64,
    /// Serve HTTPS with these PEM files; absent serves plain HTTP (behind a TLS proxy).
    pub tls: Option<TlsSettings>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            callback_path: "/callback".to_owned(),
            max_body_bytes: 65_536,
            shutdown_grace_secs: 10,
            shutdown_delay_secs: 0,
            max_connections: 1_024,
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            tls: None,
        }
    }
}

impl ServerSettings {
    /// Checks the callback path (absolute, not a built-in endpoint's) and
    /// every bound; the TLS files are read, and checked, when the server starts.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let path = &self.callback_path;
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            return Err(ConfigError::invalid(
                "server.callback_path",
                "must be an absolute path such as /callback",
            ));
        }
        if [HEALTH_PATH, READY_PATH, METRICS_PATH].contains(&path.as_str()) {
            return Err(ConfigError::invalid(
                "server.callback_path",
                "is taken by a built-in endpoint",
            ));
        }
        // usize is at most 64 bits on every target we build for, so widening is exact.
        check_range(
            "server.max_body_bytes",
            self.max_body_bytes as u64,
            1,
            MAX_BODY_BYTES,
        )?;
        check_range(
            "server.max_connections",
            self.max_connections as u64,
            1,
            MAX_CONNECTIONS,
        )?;
        check_range(
            "server.shutdown_grace_secs",
            self.shutdown_grace_secs,
            0,
            MAX_SERVER_TIMEOUT_SECS,
        )?;
        check_range(
            "server.shutdown_delay_secs",
            self.shutdown_delay_secs,
            0,
            MAX_SERVER_TIMEOUT_SECS,
        )?;
        check_range(
            "server.header_read_timeout_secs",
            self.header_read_timeout_secs,
            1,
            MAX_SERVER_TIMEOUT_SECS,
        )?;
        check_range(
            "server.request_timeout_secs",
            self.request_timeout_secs,
            1,
            MAX_SERVER_TIMEOUT_SECS,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::testing::{assert_each_rejected, with_key};

    #[test]
    fn bad_server_values_are_rejected_with_the_setting_named() {
        let server = |lines: &str| with_key(&format!("[server]\n{lines}"));
        assert_each_rejected(&[
            (
                server("callback_path = \"callback\""),
                "server.callback_path",
            ),
            (
                server("callback_path = \"/healthz\""),
                "server.callback_path",
            ),
            (server("max_body_bytes = 0"), "server.max_body_bytes"),
            (server("listen = \"not an address\""), "listen"),
            (
                server(&format!("max_body_bytes = {}", MAX_BODY_BYTES + 1)),
                "server.max_body_bytes",
            ),
            (
                server(&format!("max_connections = {}", MAX_CONNECTIONS + 1)),
                "server.max_connections",
            ),
            (
                server("shutdown_grace_secs = 3601"),
                "server.shutdown_grace_secs",
            ),
            (
                server("shutdown_delay_secs = 3601"),
                "server.shutdown_delay_secs",
            ),
            (
                server("header_read_timeout_secs = 3601"),
                "server.header_read_timeout_secs",
            ),
            (
                server("request_timeout_secs = 9223372036854775807"),
                "server.request_timeout_secs",
            ),
            (
                server("request_timeout_secs = 3601"),
                "must be between 1 and 3600, not 3601",
            ),
        ]);
    }
}
