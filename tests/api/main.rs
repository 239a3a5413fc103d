//! Integration tests: each spawns the real server on 127.0.0.1:0 with a
//! temporary spool and talks HTTP to it.

// Tests fail loudly by unwrapping; production code may not (see Cargo.toml lints).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod callback;
mod commands;
mod crash;
mod delivery;
mod edge;
mod health;
mod helpers;
mod hostile;
mod load;
mod logs;
mod process;
mod restart;
mod target;
