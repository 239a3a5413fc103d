//! The queue through which a backend's writers (SQLite's writer thread,
//! PostgreSQL's committers) receive their work, each job with the channel
//! its outcome comes back on. Bounded, so callers are slowed down rather
//! than memory growing when the writers fall behind. Closing it refuses new
//! work; what is queued already still runs.

use std::sync::RwLock;

use tokio::sync::{mpsc, oneshot};

use super::SpoolError;

/// Where a job's outcome goes.
pub(super) type Reply<T> = oneshot::Sender<Result<T, SpoolError>>;

/// The sending side of a backend's job queue.
pub(super) struct JobQueue<J> {
    /// `None` before the writers start and once closing has begun.
    sender: RwLock<Option<mpsc::Sender<J>>>,
}

impl<J> JobQueue<J> {
    /// A queue to the writers reading `sender`'s receiver.
    pub fn new(sender: mpsc::Sender<J>) -> Self {
        Self {
            sender: RwLock::new(Some(sender)),
        }
    }

    /// A queue that refuses work until [`JobQueue::open`].
    pub fn closed() -> Self {
        Self {
            sender: RwLock::new(None),
        }
    }

    /// Lets work through to the writers reading `sender`'s receiver.
    pub fn open(&self, sender: mpsc::Sender<J>) -> Result<(), SpoolError> {
        *self.sender.write().map_err(|_| SpoolError::Closed)? = Some(sender);
        Ok(())
    }

    /// Queues the job `make` builds around its reply channel and waits for
    /// its outcome. [`SpoolError::Closed`] when the queue is closed, or the
    /// writers stopped before answering.
    pub async fn submit<T>(&self, make: impl FnOnce(Reply<T>) -> J) -> Result<T, SpoolError> {
        let sender = self
            .sender
            .read()
            .map_err(|_| SpoolError::Closed)?
            .clone()
            .ok_or(SpoolError::Closed)?;
        let (reply, outcome) = oneshot::channel();
        sender
            .send(make(reply))
            .await
            .map_err(|_| SpoolError::Closed)?;
        outcome.await.map_err(|_| SpoolError::Closed)?
    }

    /// Refuses new work. The writers stop once they have done what is
    /// queued and every clone of the sender taken by [`JobQueue::submit`]
    /// is gone.
    pub fn close(&self) {
        if let Ok(mut sender) = self.sender.write() {
            sender.take();
        }
    }
}
