//! Broker sinks against the real brokers this machine runs (NATS with
//! JetStream on 127.0.0.1:4222, RabbitMQ on 127.0.0.1:5672, Redis on
//! 127.0.0.1:6379), and tansu brokers the Kafka tests start themselves.
//!
//! A custom harness (libtest-mimic), so that a broker that cannot be reached
//! is decided when the tests run, not when they are built: its tests are
//! reported as *ignored*, with the reason on stderr. Under `CI` nothing is
//! ignored: a broker that cannot be reached fails its tests.

// Tests fail loudly by unwrapping; production code may not (see Cargo.toml lints).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../api/binary.rs"]
mod binary;
#[allow(dead_code)]
#[path = "../api/collector.rs"]
mod collector;
mod dead_letter;
mod harness;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod kafka;
mod nats;
mod produce_cut;
mod proxy;
mod rabbitmq;
mod redis;
mod traced;
#[path = "../common/trial.rs"]
mod trial;

use harness::Broker;

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = Vec::new();
    trials.extend(harness::for_broker(Broker::Nats, nats::tests()));
    trials.extend(harness::for_broker(Broker::RabbitMq, rabbitmq::tests()));
    trials.extend(harness::for_broker(Broker::Redis, redis::tests()));
    trials.extend(harness::for_broker(Broker::Kafka, kafka::tests()));
    libtest_mimic::run(&args, trials).exit_code()
}
