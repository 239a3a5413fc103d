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
    /// A Kafka-protocol broker: the tests start tansu brokers of their own.
    Kafka,
}

impl Broker {
    /// Where the machine's shared instance listens.
    pub fn address(self) -> SocketAddr {
        let port = match self {
            Self::Nats => 4222,
            Self::RabbitMq => 5672,
            Self::Redis => 6379,
            // Unused: the Kafka tests start brokers of their own.
            Self::Kafka => 9092,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Why its tests cannot run here, if they cannot.
    fn unavailable(self) -> Option<String> {
        if let Self::Kafka = self {
            return crate::kafka::unavailable();
        }
        let reachable = TcpStream::connect_timeout(&self.address(), Duration::from_secs(2)).is_ok();
        (!reachable).then(|| format!("{self:?} on {} is not reachable", self.address()))
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
    let unavailable = if tests.is_empty() {
        None
    } else {
        broker.unavailable()
    };
    let ignored = !ci && unavailable.is_some();
    if let Some(reason) = &unavailable {
        let verdict = if ignored {
            "ignored"
        } else {
            "failing under CI"
        };
        eprintln!(
            "{verdict}: {} test(s) need {broker:?}: {reason}",
            tests.len()
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
