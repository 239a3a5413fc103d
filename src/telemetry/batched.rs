//! Lines gathered by the log writer thread and written out together: the
//! thread drains every line queued, then flushes (tracing-appender's worker
//! does exactly that), so under load one `write(2)` carries many lines
//! instead of one each.
//!
//! Written with one `write_all` on the output: for stdout that is one hold
//! of its lock, so the log sink's record lines (written under the same lock)
//! never land inside a batch, even on a pipe where a long write is not
//! atomic.

use std::io::{self, Write};

/// Bytes gathered before they are written even though more lines wait: a
/// bound on the memory held, and on the lines lost if the process dies.
const MAX_PENDING: usize = 64 * 1024;

/// A writer that holds what it is given until [`Write::flush`].
pub struct BatchedLines<W: Write> {
    output: W,
    pending: Vec<u8>,
}

impl<W: Write> BatchedLines<W> {
    /// Gathers lines for `output`.
    pub fn new(output: W) -> Self {
        Self {
            output,
            pending: Vec::with_capacity(MAX_PENDING),
        }
    }

    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Cleared whether or not the write succeeded: lines that could not
        // be written are dropped like any line of a stalled log, not retried
        // ahead of newer ones forever.
        let written = self.output.write_all(&self.pending);
        self.pending.clear();
        written
    }
}

impl<W: Write> Write for BatchedLines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending.len() + buf.len() > MAX_PENDING {
            self.write_pending()?;
        }
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.output.flush()
    }
}

impl<W: Write> Drop for BatchedLines<W> {
    fn drop(&mut self) {
        // Nothing to report a failure to while dropping.
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each `write` call it gets.
    #[derive(Default)]
    struct Calls(Vec<Vec<u8>>);

    impl Write for &mut Calls {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_together_at_the_flush() {
        let mut calls = Calls::default();
        let mut batched = BatchedLines::new(&mut calls);
        batched.write_all(b"one\n").unwrap();
        batched.write_all(b"two\n").unwrap();
        batched.flush().unwrap();
        drop(batched);
        assert_eq!(calls.0, [b"one\ntwo\n".to_vec()]);
    }

    #[test]
    fn a_full_batch_is_written_before_more_is_taken_and_the_rest_on_drop() {
        let mut calls = Calls::default();
        let line = vec![b'x'; 40 * 1024];
        let mut batched = BatchedLines::new(&mut calls);
        batched.write_all(&line).unwrap();
        batched.write_all(&line).unwrap();
        drop(batched);
        assert_eq!(calls.0, [line.clone(), line]);
    }
}
