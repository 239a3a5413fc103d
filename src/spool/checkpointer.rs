//! WAL checkpoints on their own thread. SQLite would otherwise run them inside
//! whichever commit crosses the WAL size threshold, adding the copy to the
//! database file and its fsync to that commit's latency. A PASSIVE checkpoint
//! here never blocks the writer; the writer's connection has automatic
//! checkpoints switched off.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is copied back into the database.
const INTERVAL: Duration = Duration::from_millis(250);

/// The running checkpoint thread.
pub(super) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database `conn` is open on.
    pub(super) fn start(conn: Connection) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("spool-checkpoint".to_owned())
            .spawn(move || run(&conn, &signal))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub(super) fn stop(&mut self) {
        let (flag, wake) = &*self.stop;
        if let Ok(mut stopped) = flag.lock() {
            *stopped = true;
        }
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(conn: &Connection, stop: &(Mutex<bool>, Condvar)) {
    let (flag, wake) = stop;
    loop {
        let Ok(stopped) = flag.lock() else { return };
        let Ok((stopped, _)) = wake.wait_timeout_while(stopped, INTERVAL, |stopped| !*stopped)
        else {
            return;
        };
        if *stopped {
            return;
        }
        drop(stopped);
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %err, "spool checkpoint failed; will retry");
        }
    }
}
