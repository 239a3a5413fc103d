//! Turning async test functions into trials, ignored when their broker
//! cannot be reached (and never ignored under `CI`).

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use libtest_mimic::Trial;

use crate::trial::{Body, trial};

/// A broker the tests need.
#[derive(Debug, Clone, Copy)]
pub enum Broker {
    Nats,
    RabbitMq,
    Redis,
}

impl Broker {
    /// Where the machine's shared instance listens.
    pub fn address(self) -> SocketAddr {
        let port = match self {
            Self::Nats => 4222,
            Self::RabbitMq => 5672,
            Self::Redis => 6379,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn reachable(self) -> bool {
        TcpStream::connect_timeout(&self.address(), Duration::from_secs(2)).is_ok()
    }
}

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

/// Trials for `tests`, each on its own multi-threaded runtime; ignored when
/// `broker` cannot be reached, except under `CI`.
pub fn for_broker(broker: Broker, tests: Vec<Test>) -> Vec<Trial> {
    let ci = std::env::var_os("CI").is_some_and(|value| !value.is_empty());
    let ignored = !ci && !tests.is_empty() && !broker.reachable();
    if ignored {
        eprintln!(
            "ignored: {} test(s) need {broker:?} on {}, which is not reachable",
            tests.len(),
            broker.address()
        );
    }
    let prefix = format!("{broker:?}").to_lowercase();
    tests
        .into_iter()
        .map(|test| {
            let run = test.run;
            trial(format!("{prefix}::{}", test.name), ignored, run)
        })
        .collect()
}
