//! Wakes this replica's delivery workers as soon as any replica stores
//! records, instead of on their next poll (up to a second later).
//!
//! After a batch commits, the [`Announcer`] sends `NOTIFY` on [`CHANNEL`],
//! one per event type stored, in a transaction of its own: not in the
//! storing one, because PostgreSQL serializes the commits of all notifying
//! transactions (a lock held through the WAL flush), which cut PostgreSQL
//! mode's throughput by 60% (bench/run.py SPOOL=postgres). Stores that commit
//! while one announcement is on its way, or within [`ANNOUNCE_GAP`] after
//! it, share the next. Each replica keeps
//! one connection outside the pool that `LISTEN`s and calls back with the
//! event type. A notification is only a hint: a lost one (the listening
//! connection dropped) costs at most the workers' poll interval, and every
//! (re)connection wakes all sinks once in case something was stored
//! meanwhile.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use crate::spool::OnStored;

/// The channel stored records are announced on; the payload is the event
/// type.
pub(super) const CHANNEL: &str = "recordhook_records";

/// Wait before listening again after the connection failed.
const RECONNECT: Duration = Duration::from_secs(1);

/// Least time between two announcements of one replica. Under load a
/// replica stored a batch every millisecond or so, and announcing each cost
/// a transaction, a signal to every listening session and a wake-up of
/// every other replica's workers, which then claimed a few records each;
/// the first store after a quiet spell is still announced at once.
const ANNOUNCE_GAP: Duration = Duration::from_millis(10);

/// Announces stored records on [`CHANNEL`], one announcement at a time.
#[derive(Debug, Default)]
pub(super) struct Announcer {
    /// Event types stored since the last announcement was sent.
    pending: Mutex<BTreeSet<i64>>,
    ready: Notify,
}

impl Announcer {
    /// Records of `event_types` were committed.
    pub fn stored(&self, event_types: impl IntoIterator<Item = i64>) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        let before = pending.len();
        pending.extend(event_types);
        if pending.len() > before {
            self.ready.notify_one();
        }
    }

    /// Sends what was stored, on connections from `pool`, until aborted. A
    /// failed announcement is dropped: the other replicas' polls find the
    /// records instead.
    pub async fn run(&self, pool: Pool) {
        loop {
            self.ready.notified().await;
            let event_types = match self.pending.lock() {
                Ok(mut pending) => std::mem::take(&mut *pending),
                Err(_) => return,
            };
            if event_types.is_empty() {
                continue;
            }
            // Not waiting for the WAL flush: a lost announcement costs one poll.
            let mut sql = "BEGIN; SET LOCAL synchronous_commit = off;".to_owned();
            for event_type in event_types {
                sql.push_str(&format!(" SELECT pg_notify('{CHANNEL}', '{event_type}');"));
            }
            sql.push_str(" COMMIT;");
            let sent = match pool.get().await {
                Ok(client) => client
                    .batch_execute(&sql)
                    .await
                    .map_err(|err| err.to_string()),
                Err(err) => Err(err.to_string()),
            };
            if let Err(error) = sent {
                tracing::debug!(%error, "could not announce stored records");
            }
            tokio::time::sleep(ANNOUNCE_GAP).await;
        }
    }
}

/// Listens on [`CHANNEL`] until `shutdown`, reconnecting after failures,
/// with the pool's TLS.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    connector: MakeRustlsConnect,
    on_stored: OnStored,
    shutdown: CancellationToken,
) {
    loop {
        let ended = session(&config, connector.clone(), &on_stored, &shutdown).await;
        if shutdown.is_cancelled() {
            return;
        }
        let error = ended.err().map(|err| err.to_string());
        tracing::warn!(
            error = error.as_deref().unwrap_or("closed by the server"),
            "lost the connection that hears of records stored by other replicas; \
             delivery falls back to polling until it is back"
        );
        tokio::select! {
            () = tokio::time::sleep(RECONNECT) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// One listening connection, until `shutdown` or until the connection ends
/// (with its error, if it failed).
async fn session(
    config: &tokio_postgres::Config,
    connector: MakeRustlsConnect,
    on_stored: &OnStored,
    shutdown: &CancellationToken,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(connector).await?;
    // Notifications arrive as the connection's messages: drive it here and
    // pass them on; it ends with the connection's error, if any.
    let (notifications, mut heard) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            if let AsyncMessage::Notification(notification) = message? {
                let _ = notifications.send(notification);
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    });
    let mut driver = AbortOnDrop(driver);
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    tracing::debug!(
        channel = CHANNEL,
        "listening for records stored by other replicas"
    );
    on_stored(None);
    loop {
        tokio::select! {
            notification = heard.recv() => match notification {
                Some(notification) => on_stored(notification.payload().parse().ok()),
                None => break,
            },
            () = shutdown.cancelled() => return Ok(()),
        }
    }
    (&mut driver.0).await.unwrap_or(Ok(()))
}

/// Stops the connection's task when the session ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
