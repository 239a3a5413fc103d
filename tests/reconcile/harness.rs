//! Turning async test functions into trials, one group per module: a group
//! whose prerequisite is missing is reported as ignored, with the reason,
//! except under `CI`, where it runs (and fails for want of it).

use libtest_mimic::Trial;

use crate::trial::{Body, trial};

/// One async test: its name and its body. The body panics (unwrap, assert)
/// to fail, like a `#[tokio::test]`.
pub struct Test {
    pub name: &'static str,
    pub run: fn() -> Body,
}

/// `Test { name, run: || Box::pin(body()) }` for an `async fn body()`.
#[macro_export]
macro_rules! test {
    ($name:ident) => {
        $crate::harness::Test {
            name: stringify!($name),
            run: || Box::pin($name()),
        }
    };
}

/// Whether `CI` is set (to anything but the empty string).
pub fn ci() -> bool {
    std::env::var_os("CI").is_some_and(|value| !value.is_empty())
}

/// Trials named `{module}::{test}`. `missing` is why the group cannot run
/// here, if it cannot: its tests are then ignored, unless under `CI`.
pub fn group(module: &str, tests: Vec<Test>, missing: Option<String>) -> Vec<Trial> {
    let ignored = match missing {
        Some(reason) if !ci() && !tests.is_empty() => {
            eprintln!("ignored: {} {module} test(s): {reason}", tests.len());
            true
        }
        _ => false,
    };
    tests
        .into_iter()
        .map(|test| trial(format!("{module}::{}", test.name), ignored, test.run))
        .collect()
}
