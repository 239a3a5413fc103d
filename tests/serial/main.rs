//! Process-level load and crash tests: the real binary under sustained
//! pressure, or SIGKILLed with callbacks in flight. Each spawns a server
//! process that wants both cores, so they live in their own test binary
//! (cargo runs test binaries one after another, never beside `tests/api`)
//! and, within it, run one at a time: each holds [`one_at_a_time`].

// Tests fail loudly by unwrapping; production code may not (see Cargo.toml lints).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Helpers shared with tests/api; each binary uses part of them.
#[allow(dead_code)]
#[path = "../api/binary.rs"]
mod binary;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../api/target.rs"]
mod target;

mod crash;
mod load;
mod outage;

use tokio::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Held for a whole test, so the tests in this binary never overlap (cargo
/// runs the tests within one binary in parallel). A tokio mutex: it is held
/// across `.await`, and a failing test does not poison it for the next.
pub async fn one_at_a_time() -> MutexGuard<'static, ()> {
    SERIAL.lock().await
}
