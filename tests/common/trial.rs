//! The one way the custom-harness test binaries (`tests/brokers`,
//! `tests/spool`, `tests/browser`) turn an async test body into a
//! libtest-mimic trial.

use std::future::Future;
use std::pin::Pin;

use libtest_mimic::{Failed, Trial};

/// An async test body; it panics (unwrap, assert) to fail.
pub type Body = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A trial named `name` running `body` on its own multi-threaded runtime
/// (as `#[tokio::test(flavor = "multi_thread")]` would); a panic fails it
/// with the panic's message. `ignored` reports it as ignored instead.
pub fn trial(name: String, ignored: bool, body: impl FnOnce() -> Body + Send + 'static) -> Trial {
    Trial::test(name, move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|err| Failed::from(err.to_string()))?;
        let outcome = runtime.block_on(async move { tokio::spawn(body()).await });
        outcome.map_err(|err| match err.try_into_panic() {
            Ok(panic) => Failed::from(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "the test panicked".to_owned()),
            ),
            Err(err) => Failed::from(err.to_string()),
        })
    })
    .with_ignored_flag(ignored)
}
