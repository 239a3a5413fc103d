//! Reconciliation against a fake of Tencent's live API
//! (`tests/tencent_fake`): the fake's own rules (`fake`), and the fake
//! proved against Tencent's official Python SDK (`sdk`).
//!
//! A custom harness (libtest-mimic), so that whether Python can make a
//! virtualenv is decided when the tests run: without it the SDK test is
//! reported as *ignored*, with the reason on stderr. Under `CI` nothing is
//! ignored: a missing Python fails it. Add a module of tests as one more
//! `harness::group` in `main`.

// Tests fail loudly by unwrapping; production code may not (see Cargo.toml lints).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake;
mod harness;
mod sdk;
mod signer;
#[allow(dead_code)]
#[path = "../tencent_fake/mod.rs"]
mod tencent_fake;
#[path = "../common/trial.rs"]
mod trial;

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = harness::group("fake", fake::tests(), None);
    trials.extend(harness::group("sdk", sdk::tests(), sdk::missing()));
    libtest_mimic::run(&args, trials).exit_code()
}
