//! One callback through the recordhook binary to a sink that cannot take
//! it: for the tests that must read every log line whole, to show a
//! secret never appears in any of them.

use serde_json::Value;

/// Starts the binary in `dir` with `config`, posts `body` as a callback
/// (it must be answered 200), waits for the log line that makes it a dead
/// letter and stops the binary. Returns that line and every line logged.
pub async fn dead_letter_of(
    dir: tempfile::TempDir,
    config: String,
    body: Value,
) -> (Value, Vec<String>) {
    // The binary's helpers block: off the runtime's threads.
    let (dir, server) = tokio::task::spawn_blocking(move || {
        let server = crate::binary::start_server(&dir, &config);
        (dir, server)
    })
    .await
    .unwrap();
    assert_eq!(server.post_callback(&body).await, 200);
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        let dead = server.wait_for_log("delivery failed for good; kept as a dead letter");
        let (_, lines) = server.terminate();
        drop(dir);
        (dead, lines)
    })
    .await
    .unwrap()
}
