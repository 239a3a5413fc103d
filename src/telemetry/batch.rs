//! Batched log output: inside [`batched`], a thread's log events are
//! collected and written together when the batch ends, so the log sink's
//! hundreds of lines per delivery batch cost one system call instead of one
//! each. Everywhere else each event is written at once.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;

/// Where a closed batch's lines go: the wrapped writer, called once.
type Flush = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Lines collected on this thread by an open [`batched`] call.
struct Batch {
    lines: Vec<u8>,
    flush: Option<Flush>,
}

thread_local! {
    static BATCH: RefCell<Option<Batch>> = const { RefCell::new(None) };
}

/// Runs `work`; log events it emits on this thread are written together, in
/// order, with one write when it returns (or unwinds). Outside a batch, and
/// for other threads, events are written at once as usual. Nested calls join
/// the outer batch.
pub fn batched<R>(work: impl FnOnce() -> R) -> R {
    /// Closes the batch even when `work` panics, so no line is left behind.
    struct Close;
    impl Drop for Close {
        fn drop(&mut self) {
            if let Some(Batch {
                lines,
                flush: Some(flush),
            }) = BATCH.with_borrow_mut(Option::take)
            {
                flush(&lines);
            }
        }
    }

    let opened = BATCH.with_borrow_mut(|batch| {
        batch.is_none().then(|| {
            *batch = Some(Batch {
                lines: Vec::new(),
                flush: None,
            });
        })
    });
    let _close = opened.map(|()| Close);
    work()
}

/// Wraps the log's writer so [`batched`] can collect a thread's lines.
pub(super) struct Batching<W> {
    inner: Arc<W>,
}

impl<W> Batching<W> {
    pub(super) fn new(inner: W) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }
}

impl<'a, W> MakeWriter<'a> for Batching<W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    type Writer = EventWriter<<W as MakeWriter<'a>>::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        let in_batch = BATCH.with_borrow_mut(|batch| {
            let Some(batch) = batch else { return false };
            if batch.flush.is_none() {
                let inner = Arc::clone(&self.inner);
                batch.flush = Some(Arc::new(move |lines: &[u8]| {
                    let mut writer = inner.make_writer();
                    // Like a direct event, a failed log write has nowhere to be reported.
                    let _ = writer.write_all(lines).and_then(|()| writer.flush());
                }));
            }
            true
        });
        if in_batch {
            EventWriter::Batched
        } else {
            EventWriter::Direct(self.inner.make_writer())
        }
    }
}

/// The writer of one event: straight through, or into the open batch.
pub(super) enum EventWriter<W> {
    Direct(W),
    Batched,
}

impl<W: Write> Write for EventWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Self::Direct(writer) => writer.write(bytes),
            Self::Batched => {
                BATCH.with_borrow_mut(|batch| match batch {
                    Some(batch) => {
                        batch.lines.extend_from_slice(bytes);
                        Ok(bytes.len())
                    }
                    // The batch closed between make_writer and write: cannot
                    // happen, as an event is formatted first and written at once.
                    None => Err(io::Error::other("log batch already closed")),
                })
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Direct(writer) => writer.flush(),
            Self::Batched => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::subscriber;
    use crate::telemetry::{LogFormat, LogSettings};
    use std::sync::Mutex;

    /// A writer that records each `write_all` of a whole flush as one chunk.
    #[derive(Clone, Default)]
    struct Chunks(Arc<Mutex<Vec<Vec<u8>>>>);

    struct ChunkWriter(Arc<Mutex<Vec<Vec<u8>>>>, Vec<u8>);

    impl Write for ChunkWriter {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.1.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Drop for ChunkWriter {
        fn drop(&mut self) {
            self.0.lock().unwrap().push(std::mem::take(&mut self.1));
        }
    }

    impl<'a> MakeWriter<'a> for Chunks {
        type Writer = ChunkWriter;
        fn make_writer(&'a self) -> ChunkWriter {
            ChunkWriter(Arc::clone(&self.0), Vec::new())
        }
    }

    fn settings() -> LogSettings {
        LogSettings {
            format: LogFormat::Json,
            level: "info".to_owned(),
        }
    }

    fn lines(chunk: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(chunk)
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                value["message"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn a_batch_writes_its_events_once_in_order_and_others_at_once() {
        let chunks = Chunks::default();
        let subscriber = subscriber(&settings(), chunks.clone()).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before");
            batched(|| {
                tracing::info!("one");
                // A nested batch joins the outer one.
                batched(|| tracing::info!("two"));
                tracing::info!("three");
            });
            tracing::info!("after");
        });
        let chunks = chunks.0.lock().unwrap();
        let written: Vec<Vec<String>> = chunks.iter().map(|chunk| lines(chunk)).collect();
        assert_eq!(
            written,
            vec![
                vec!["before".to_owned()],
                vec!["one".to_owned(), "two".to_owned(), "three".to_owned()],
                vec!["after".to_owned()],
            ]
        );
    }

    #[test]
    fn a_batch_that_panics_still_writes_what_it_logged() {
        let chunks = Chunks::default();
        let subscriber = subscriber(&settings(), chunks.clone()).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let outcome = std::panic::catch_unwind(|| {
                batched(|| {
                    tracing::info!("logged");
                    panic!("mid-batch");
                })
            });
            assert!(outcome.is_err());
            tracing::info!("next");
        });
        let chunks = chunks.0.lock().unwrap();
        let written: Vec<Vec<String>> = chunks.iter().map(|chunk| lines(chunk)).collect();
        assert_eq!(
            written,
            vec![vec!["logged".to_owned()], vec!["next".to_owned()]]
        );
    }

    #[test]
    fn a_batch_with_no_events_writes_nothing() {
        let chunks = Chunks::default();
        let subscriber = subscriber(&settings(), chunks.clone()).unwrap();
        tracing::subscriber::with_default(subscriber, || batched(|| ()));
        assert!(chunks.0.lock().unwrap().is_empty());
    }
}
