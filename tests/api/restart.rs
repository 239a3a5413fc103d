//! What survives a restart on the same spool.

use crate::helpers::*;

#[tokio::test]
async fn records_and_duplicate_detection_survive_a_restart() {
    let app = spawn_app().await;
    let first = recording("kept-1");
    let second = recording("kept-2");
    assert_eq!(app.post_json(&first).await.status(), 200);
    assert_eq!(app.post_json(&second).await.status(), 200);
    let before = app.stored().await;
    let (dir, settings) = app.stop().await;

    let app = spawn_app_in(dir, settings).await;
    assert_eq!(app.stored().await, before);
    // The same callback, re-signed later, is still a duplicate.
    let mut again = first.clone();
    signed_at(&mut again, now() + 400);
    assert_eq!(app.post_json(&again).await.status(), 200);
    assert_eq!(app.stored().await.len(), 2);
}
