//! Creates and removes what the broker sinks publish to, for `bench/run.py`
//! (`SINK=nats`, `rabbitmq` or `kafka`): a JetStream stream capturing
//! `<name>.>` (file storage), a durable RabbitMQ exchange with a durable
//! queue bound to `css.#`, or the Kafka topic `<name>.100` (on the broker
//! `KAFKA_BROKER` names, `host:port`). Not part of the service.
//!
//! Usage: `broker_setup (nats|rabbitmq|kafka) (create|delete) NAME`

use std::process::ExitCode;

use async_nats::jetstream::{self, stream};
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};

const NATS: &str = "nats://127.0.0.1:4222";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [broker, action, name] = args.as_slice() else {
        eprintln!("usage: broker_setup (nats|rabbitmq|kafka) (create|delete) NAME");
        return ExitCode::FAILURE;
    };
    let outcome = match (broker.as_str(), action.as_str()) {
        ("nats", "create") => nats(name, true).await,
        ("nats", "delete") => nats(name, false).await,
        ("rabbitmq", "create") => rabbitmq(name, true).await,
        ("rabbitmq", "delete") => rabbitmq(name, false).await,
        ("kafka", "create") => kafka(name, true).await,
        ("kafka", "delete") => kafka(name, false).await,
        _ => Err("unknown broker or action".to_owned()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("broker_setup: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The stream `NAME` capturing `NAME.>`, on file storage (as production would).
async fn nats(name: &str, create: bool) -> Result<(), String> {
    let client = async_nats::connect(NATS).await.map_err(|e| e.to_string())?;
    let js = jetstream::new(client);
    if create {
        js.create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{name}.>")],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map(drop)
        .map_err(|e| e.to_string())
    } else {
        js.delete_stream(name)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// The durable topic exchange `NAME` with the durable queue `NAME` bound to `css.#`.
async fn rabbitmq(name: &str, create: bool) -> Result<(), String> {
    let connection = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .map_err(|e| e.to_string())?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    let result = if create {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                name.into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(name.into(), queue, FieldTable::default())
            .await
            .map_err(|e| e.to_string())?;
        channel
            .queue_bind(
                name.into(),
                name.into(),
                "css.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| e.to_string())
    } else {
        channel
            .exchange_delete(name.into(), ExchangeDeleteOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        channel
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let _ = connection.close(200, "OK".into()).await;
    result
}

/// The topic `NAME.100` (what recordings go to), with 4 partitions.
async fn kafka(name: &str, create: bool) -> Result<(), String> {
    let broker = std::env::var("KAFKA_BROKER").map_err(|_| "KAFKA_BROKER is not set".to_owned())?;
    let client = rskafka::client::ClientBuilder::new(vec![broker])
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let controller = client.controller_client().map_err(|e| e.to_string())?;
    let topic = format!("{name}.100");
    if create {
        controller.create_topic(&topic, 4, 1, 5_000).await
    } else {
        controller.delete_topic(&topic, 5_000).await
    }
    .map_err(|e| e.to_string())
}
