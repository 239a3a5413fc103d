//! Reconciliation against a fake of Tencent's live API
//! (`tests/tencent_fake`): the fake's own rules (`fake`), and the fake
//! proved against Tencent's official Python SDK (`sdk`), then recordhook
//! itself against the fake: the real binary on SQLite (`scenarios`) and two
//! replicas on PostgreSQL (`replicas`).
//!
//! A custom harness (libtest-mimic), so that whether Python can make a
//! virtualenv is decided when the tests run: without it the SDK test is
//! reported as *ignored*, with the reason on stderr. Under `CI` nothing is
//! ignored: a missing Python fails it. Add a module of tests as one more
//! `harness::group` in `main`.

// Tests fail loudly by unwrapping; production code may not (see Cargo.toml lints).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../api/binary.rs"]
mod binary;
mod fake;
mod harness;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod replicas;
mod scenarios;
mod sdk;
mod signer;
#[allow(dead_code)]
#[path = "../api/target.rs"]
mod target;
#[allow(dead_code)]
#[path = "../tencent_fake/mod.rs"]
mod tencent_fake;
#[path = "../common/trial.rs"]
mod trial;

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = harness::group("fake", fake::tests(), None);
    trials.extend(harness::group("sdk", sdk::tests(), sdk::missing()));
    trials.extend(harness::group("scenarios", scenarios::tests(), None));
    trials.extend(harness::group(
        "replicas",
        replicas::tests(),
        replicas::missing(),
    ));
    libtest_mimic::run(&args, trials).exit_code()
}
