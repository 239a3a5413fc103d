//! Background workers as an operator sees them: `/readyz` while one is down,
//! and one shutdown grace period for all of them.

use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::target::Target;

#[tokio::test]
async fn readyz_answers_503_while_a_worker_is_down_and_recovers_with_it() {
    let app = spawn_app().await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.state.workers.mark_down("delivery:console");
    assert_error(
        app.get("/readyz").await,
        503,
        5034,
        "delivery:console",
        "worker down",
    )
    .await;
    app.state.workers.mark_up("delivery:console");
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn shutdown_waits_one_grace_period_for_all_workers_not_one_each() {
    const SINKS: usize = 4;
    const GRACE_SECS: u64 = 2;
    let target = Target::start().await;
    target.hang(true);
    let sinks: String = (0..SINKS)
        .map(|n| {
            format!(
                "[[sinks]]\nname = \"hanging{n}\"\ntype = \"forward\"\nurl = \"{}\"\ntimeout_secs = 600\n",
                target.url
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_from_toml(&dir, &sinks);
    settings.server.shutdown_grace_secs = GRACE_SECS;
    let app = spawn_app_in(dir, settings).await;
    let response = app.post_json(&recording("grace")).await;
    assert_eq!(response.status(), 200);
    // Every worker is now inside an attempt that will not end by itself.
    assert!(
        eventually(Duration::from_secs(20), || async {
            target.received().len() == SINKS
        })
        .await,
        "not every sink started its attempt"
    );
    let started = Instant::now();
    let (dir, settings) = app.stop().await;
    let took = started.elapsed();
    // One grace per worker would take SINKS x GRACE_SECS = 8 s or more.
    assert!(
        took < Duration::from_secs(GRACE_SECS * 2 + 1),
        "shutdown took {took:?}"
    );
    // The abandoned attempts were not counted: each waits for the next start.
    let app = spawn_app_in(dir, settings).await;
    let id = app.stored().await[0].id.clone();
    for n in 0..SINKS {
        let state = app.delivery(&id, &format!("hanging{n}")).await.unwrap();
        assert_eq!(state.state, "pending", "hanging{n}");
    }
}
