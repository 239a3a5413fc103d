//! Reconciliation against a fake of Tencent's live API
//! (`tests/tencent_fake`): the fake's own rules (`fake`).
//!
//! A custom harness (libtest-mimic), so that a group of tests whose
//! prerequisite is missing can be reported as *ignored* when the tests run,
//! with the reason on stderr (under `CI` it fails instead). Add a module of
//! tests as one more `harness::group` in `main`.

// Tests fail loudly by unwrapping; production code may not (see Cargo.toml lints).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake;
mod harness;
mod signer;
#[allow(dead_code)]
#[path = "../tencent_fake/mod.rs"]
mod tencent_fake;
#[path = "../common/trial.rs"]
mod trial;

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let trials = harness::group("fake", fake::tests(), None);
    libtest_mimic::run(&args, trials).exit_code()
}
