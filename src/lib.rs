//! recordhook: receives Tencent Cloud CSS recording callbacks, verifies
//! `sign` and `t`, stores every authentic callback durably before answering
//! 200, and delivers it to sinks with retries and dead letters.
//!
//! Module map: [`configuration`] (settings), [`protocol`] (the CSS callback:
//! parsing, signature, time window, event id, recording fields), [`record`]
//! (what sinks receive), [`spool`] (the durable store), [`sinks`] (delivery
//! targets), [`delivery`] (per-sink workers and retries), [`http`] (the
//! endpoints), [`startup`] (building and running the service), [`supervisor`]
//! (restarting workers that panic), [`reconcile`] (recovering callbacks
//! that never arrived, through [`tencent`], Tencent Cloud's API),
//! [`telemetry`] (logs), [`cli`] (the command line), [`redact`] and
//! [`secret_url`] (keeping secrets out of output), [`bounds`] (the range
//! check every section's numbers pass), [`tencent`] (a client for Tencent
//! Cloud's API 3.0: the live actions reconciliation queries),
//! [`error_chain`] (an error and its causes as one line, where only text
//! goes).

pub mod admin;
pub mod bounds;
pub mod cli;
pub mod configuration;
pub mod delivery;
pub mod error_chain;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod reconcile;
pub mod record;
pub mod redact;
pub mod secret_url;
pub mod sinks;
pub mod spool;
pub mod startup;
pub mod supervisor;
pub mod telemetry;
pub mod tencent;
pub mod tls;
