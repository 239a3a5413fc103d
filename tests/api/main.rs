//! Integration tests: each spawns the real server on 127.0.0.1:0 with a
//! temporary spool and talks HTTP to it. Process-level load and crash tests
//! live in `tests/serial`, which runs them one at a time.

// Tests fail loudly by unwrapping; production code may not (see Cargo.toml lints).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Shared with tests/serial, which uses other parts of it.
#[allow(dead_code)]
mod admin;
mod binary;
mod callback;
mod collector;
mod commands;
mod delivery;
mod edge;
mod events;
mod full_spool;
mod health;
mod helpers;
mod hostile;
mod logs;
mod observability;
mod process;
mod restart;
mod target;
mod traces;
mod workers;
