//! The benchmark's reference: the least any receiver on this machine must do
//! — read the POST body and answer 200 `{"code":0}` — with no parsing,
//! verification or storage. recordhook's throughput is reported as a ratio
//! of this server's, measured in the same run.
//!
//! `cargo run --release --example reference_server -- 127.0.0.1:9090`

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;

async fn accept(_body: Bytes) -> ([(&'static str, &'static str); 1], &'static str) {
    ([("content-type", "application/json")], "{\"code\":0}")
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9090".to_owned());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let app = Router::new().route("/callback", post(accept));
    axum::serve(listener, app).await
}
