//! The benchmark's second reference: the least a receiver must do to keep
//! recordhook's promise — make the body durable before the 200. It reads the
//! POST body, appends it to a file and answers only after `fdatasync`, with
//! concurrent requests sharing one write and one sync (group commit). No
//! parsing, verification, index, database or log.
//!
//! Where the plain reference measures the HTTP ceiling, this one measures the
//! ceiling once a disk sync is in every answer's path on this machine.
//!
//! `cargo run --release --example durable_reference_server -- 127.0.0.1:9091 /tmp/bodies`

use std::fs::{File, OpenOptions};
use std::io::Write;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use tokio::sync::{mpsc, oneshot};

/// One body to make durable, and who to tell once it is.
type Job = (Bytes, oneshot::Sender<bool>);

async fn accept(
    State(jobs): State<mpsc::Sender<Job>>,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], &'static str) {
    let (reply, synced) = oneshot::channel();
    let durable = jobs.send((body, reply)).await.is_ok() && synced.await.unwrap_or(false);
    if durable {
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            "{\"code\":0}",
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "application/json")],
            "{\"code\":1}",
        )
    }
}

/// Writes every waiting body in one `write`, syncs once, answers them all.
fn group_commit(mut file: File, mut jobs: mpsc::Receiver<Job>) {
    let mut buffer = Vec::new();
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(job) = jobs.try_recv() {
            batch.push(job);
        }
        buffer.clear();
        for (body, _) in &batch {
            buffer.extend_from_slice(body);
            buffer.push(b'\n');
        }
        let durable = file
            .write_all(&buffer)
            .and_then(|()| file.sync_data())
            .is_ok();
        for (_, reply) in batch {
            let _ = reply.send(durable);
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:9091".to_owned());
    let path = args
        .next()
        .unwrap_or_else(|| "durable-reference.log".to_owned());
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let (sender, receiver) = mpsc::channel(1024);
    std::thread::spawn(move || group_commit(file, receiver));
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let app = Router::new()
        .route("/callback", post(accept))
        .with_state(sender);
    axum::serve(listener, app).await
}
