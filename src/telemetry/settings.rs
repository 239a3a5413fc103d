//! The `[log]` section of the configuration: owned here, beside the code it
//! governs, so `configuration` depends on `telemetry` and never the reverse.

use serde::{Deserialize, Serialize};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers and `jq`.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `json` or `pretty`.
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter, e.g. `info` or `info,recordhook=debug`.
    /// It governs operational log lines only: the log sink's record lines
    /// are deliveries, printed whatever this says.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".to_owned(),
        }
    }
}
