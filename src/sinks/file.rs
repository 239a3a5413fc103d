//! The file sink: appends records as JSON Lines. A batch is written with one
//! `write` and made durable with one `fsync` before any of its deliveries
//! counts as done; a write that fails part-way is cut back, so a line is never
//! split. The file rotates by size and/or by UTC day, and is reopened on
//! SIGHUP so external tools such as logrotate can move it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::settings::InvalidSetting;
use super::{BoxFuture, DeliveryError, Sink};
use crate::record::StoredRecord;

/// Default size at which a file sink rotates: 100 MiB.
pub const DEFAULT_ROTATE_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// Default number of rotated files a file sink keeps.
pub const DEFAULT_KEEP_ROTATED: usize = 30;

/// The settings of a `type = "file"` sink.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkSettings {
    /// The JSON Lines file to append to; its directory is created. Required.
    #[serde(default)]
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes; 0 never rotates by size.
    #[serde(default = "default_rotate_max_bytes")]
    pub rotate_max_bytes: u64,
    /// Rotate when the UTC date changes.
    #[serde(default = "default_rotate_daily")]
    pub rotate_daily: bool,
    /// Rotated files to keep (oldest removed first); 0 keeps all.
    #[serde(default = "default_keep_rotated")]
    pub keep_rotated: usize,
}

fn default_rotate_max_bytes() -> u64 {
    DEFAULT_ROTATE_MAX_BYTES
}

fn default_rotate_daily() -> bool {
    true
}

fn default_keep_rotated() -> usize {
    DEFAULT_KEEP_ROTATED
}

impl FileSinkSettings {
    /// A file sink writing `path` with the default rotation.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            rotate_max_bytes: DEFAULT_ROTATE_MAX_BYTES,
            rotate_daily: default_rotate_daily(),
            keep_rotated: DEFAULT_KEEP_ROTATED,
        }
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.path.as_os_str().is_empty() {
            return Err(InvalidSetting::new("path", "a file sink needs a path"));
        }
        if self.path.file_name().is_none() {
            return Err(InvalidSetting::new("path", "must name a file"));
        }
        // `rotate_max_bytes` and `keep_rotated` need no upper bound: they are
        // only compared with, so no value can hurt at run time.
        Ok(())
    }

    /// When the file rotates.
    pub fn rotation(&self) -> Rotation {
        Rotation {
            max_bytes: self.rotate_max_bytes,
            daily: self.rotate_daily,
            keep: self.keep_rotated,
        }
    }
}

/// When to start a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before the file would pass this size; 0 never rotates by size.
    pub max_bytes: u64,
    /// Rotate when the UTC date changes.
    pub daily: bool,
    /// Rotated files to keep; 0 keeps all.
    pub keep: usize,
}

/// Appends records to a JSON Lines file.
pub struct FileSink {
    inner: Inner,
}

struct Inner {
    path: PathBuf,
    rotation: Rotation,
    /// Set by SIGHUP: close the file and open the path afresh before the next write.
    reopen: AtomicBool,
    open: Mutex<Option<OpenFile>>,
}

struct OpenFile {
    file: File,
    size: u64,
    /// UTC day number (days since the epoch) the file was opened on.
    day: u64,
    /// Only regular files are rotated (not `/dev/stdout` or `/dev/full`).
    regular: bool,
}

fn utc_day(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

impl FileSink {
    /// A file sink writing to `path`.
    pub fn new(path: PathBuf, rotation: Rotation) -> Self {
        Self {
            inner: Inner {
                path,
                rotation,
                reopen: AtomicBool::new(false),
                open: Mutex::new(None),
            },
        }
    }
}

impl Inner {
    fn open_file(&self, now: SystemTime) -> std::io::Result<OpenFile> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)?;
        let metadata = file.metadata()?;
        let size = if metadata.is_file() {
            drop_partial_line(&file, metadata.len())?
        } else {
            0
        };
        Ok(OpenFile {
            size,
            regular: metadata.is_file(),
            day: utc_day(now),
            file,
        })
    }

    fn rotated_name(&self, now: SystemTime) -> PathBuf {
        let stamp = humantime::format_rfc3339_millis(now)
            .to_string()
            .replace(':', "-");
        let base = format!("{}.{stamp}", self.path.display());
        let mut candidate = PathBuf::from(&base);
        let mut counter = 1;
        while candidate.exists() {
            candidate = PathBuf::from(format!("{base}.{counter}"));
            counter += 1;
        }
        candidate
    }

    /// Moves the current file aside and removes the oldest rotated ones beyond `keep`.
    fn rotate(&self, now: SystemTime) -> std::io::Result<()> {
        std::fs::rename(&self.path, self.rotated_name(now))?;
        if self.rotation.keep > 0 {
            let mut rotated = rotated_files(&self.path)?;
            rotated.sort();
            let excess = rotated.len().saturating_sub(self.rotation.keep);
            for old in rotated.into_iter().take(excess) {
                std::fs::remove_file(old)?;
            }
        }
        Ok(())
    }

    /// Writes `lines` durably, rotating first if needed.
    fn append(&self, lines: &[u8], now: SystemTime) -> std::io::Result<()> {
        let mut slot = self
            .open
            .lock()
            .map_err(|_| std::io::Error::other("file sink lock poisoned"))?;
        if self.reopen.swap(false, Ordering::SeqCst) {
            *slot = None;
        }
        if let Some(open) = slot.as_ref() {
            let rotation = self.rotation;
            let too_big = rotation.max_bytes > 0
                && open.size > 0
                && open.size + lines.len() as u64 > rotation.max_bytes;
            let new_day = rotation.daily && open.size > 0 && utc_day(now) != open.day;
            if open.regular && (too_big || new_day) {
                *slot = None;
                self.rotate(now)?;
            }
        }
        if slot.is_none() {
            *slot = Some(self.open_file(now)?);
        }
        let Some(open) = slot.as_mut() else {
            return Err(std::io::Error::other("file sink could not open its file"));
        };
        let before = open.size;
        let written = open
            .file
            .write_all(lines)
            .and_then(|()| open.file.sync_data());
        match written {
            Ok(()) => {
                open.size += lines.len() as u64;
                Ok(())
            }
            Err(err) => {
                // Cut back whatever part of the batch reached the file, so no
                // line is left split; the batch is retried whole.
                if open.regular {
                    let _ = open.file.set_len(before);
                }
                *slot = None;
                Err(err)
            }
        }
    }
}

/// Cuts a line left unfinished by a crash mid-write (its batch was never
/// marked delivered, so it will be written again whole). Returns the new size.
fn drop_partial_line(file: &File, size: u64) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 64 * 1024;
    let mut end = size;
    let mut buffer = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buffer[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(newline) = chunk.iter().rposition(|&b| b == b'\n') {
            let complete = start + newline as u64 + 1;
            if complete != size {
                tracing::warn!(
                    cut_bytes = size - complete,
                    "file sink: removing a line left unfinished by a crash"
                );
                file.set_len(complete)?;
            }
            return Ok(complete);
        }
        end = start;
    }
    if size > 0 {
        tracing::warn!(
            cut_bytes = size,
            "file sink: removing a line left unfinished by a crash"
        );
        file.set_len(0)?;
    }
    Ok(0)
}

fn rotated_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{name}.");
    let directory = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok(std::fs::read_dir(directory)?
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|entry| entry.path())
        .collect())
}

impl Sink for FileSink {
    fn deliver<'a>(&'a self, record: &'a StoredRecord) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            self.deliver_batch(std::slice::from_ref(record))
                .await
                .pop()
                .unwrap_or(Ok(()))
        })
    }

    fn deliver_batch<'a>(
        &'a self,
        records: &'a [StoredRecord],
    ) -> BoxFuture<'a, Vec<Result<(), DeliveryError>>> {
        Box::pin(async move {
            // Writing a batch (with its fsync) is synchronous work.
            super::run_blocking(|| {
                let size: usize = records.iter().map(|r| r.json.len() + 1).sum();
                let mut lines = Vec::with_capacity(size);
                for record in records {
                    lines.extend_from_slice(record.json.as_bytes());
                    lines.push(b'\n');
                }
                let outcome = self.inner.append(&lines, SystemTime::now()).map_err(|err| {
                    DeliveryError::Retriable {
                        reason: format!("writing {} failed: {err}", self.inner.path.display()),
                        retry_after: None,
                    }
                });
                vec![outcome; records.len()]
            })
        })
    }

    fn reopen(&self) {
        self.inner.reopen.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Authenticator, TimeWindow, UnverifiedCallback};
    use crate::record::Record;
    use std::time::Duration;

    fn record(n: usize) -> StoredRecord {
        let window = TimeWindow {
            clock_skew_secs: 0,
            max_validity_secs: 1,
            expiry_grace_secs: 0,
        };
        let body = format!(r#"{{"event_type":100,"file_id":"f{n}"}}"#);
        let verified = Authenticator::unsigned(window)
            .verify(UnverifiedCallback::parse(body.as_bytes()).unwrap(), 0)
            .unwrap();
        let record = Record::from_verified(verified, UNIX_EPOCH).unwrap();
        StoredRecord::try_from(&record).unwrap()
    }

    /// The lines of `path`, each checked to be a whole record.
    fn lines(path: &Path) -> Vec<StoredRecord> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| {
                let record: Record = serde_json::from_str(line).unwrap();
                StoredRecord::try_from(&record).unwrap()
            })
            .collect()
    }

    const NO_ROTATION: Rotation = Rotation {
        max_bytes: 0,
        daily: false,
        keep: 0,
    };

    #[tokio::test]
    async fn a_batch_is_appended_as_one_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/records.jsonl");
        let sink = FileSink::new(path.clone(), NO_ROTATION);
        let batch: Vec<StoredRecord> = (0..3).map(record).collect();
        assert!(sink.deliver_batch(&batch).await.iter().all(Result::is_ok));
        assert!(sink.deliver(&record(3)).await.is_ok());
        let written = lines(&path);
        assert_eq!(written.len(), 4);
        assert_eq!(written[..3], batch[..]);
    }

    #[tokio::test]
    async fn a_line_left_unfinished_by_a_crash_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let complete = format!("{}\n", record(0).json);
        std::fs::write(&path, format!("{complete}{{\"id\":\"half")).unwrap();
        let sink = FileSink::new(path.clone(), NO_ROTATION);
        sink.deliver(&record(1)).await.unwrap();
        assert_eq!(lines(&path), [record(0), record(1)]);
        // A file holding only a fragment is emptied.
        std::fs::write(&path, "{\"id\"").unwrap();
        let sink = FileSink::new(path.clone(), NO_ROTATION);
        sink.deliver(&record(2)).await.unwrap();
        assert_eq!(lines(&path), [record(2)]);
    }

    #[tokio::test]
    async fn an_unwritable_file_is_a_retriable_failure() {
        let sink = FileSink::new(PathBuf::from("/dev/full"), NO_ROTATION);
        let result = sink.deliver(&record(0)).await;
        assert!(
            matches!(result, Err(DeliveryError::Retriable { .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn rotation_by_size_moves_the_file_aside_and_keeps_only_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let line_length = record(0).json.len() as u64 + 1;
        let rotation = Rotation {
            max_bytes: line_length * 2,
            daily: false,
            keep: 2,
        };
        let sink = FileSink::new(path.clone(), rotation);
        for n in 0..9 {
            sink.deliver(&record(n)).await.unwrap();
        }
        // 9 lines at 2 per file: 4 full files rotated away (2 kept) and 1 line current.
        assert_eq!(lines(&path), [record(8)]);
        let mut rotated = rotated_files(&path).unwrap();
        rotated.sort();
        assert_eq!(rotated.len(), 2);
        assert_eq!(lines(&rotated[1]), [record(6), record(7)]);
    }

    #[tokio::test]
    async fn a_new_utc_day_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let sink = FileSink::new(
            path.clone(),
            Rotation {
                max_bytes: 0,
                daily: true,
                keep: 0,
            },
        );
        let line = b"{}\n";
        let day_one = UNIX_EPOCH + Duration::from_secs(86_400 * 20_000 + 100);
        sink.inner.append(line, day_one).unwrap();
        sink.inner
            .append(line, day_one + Duration::from_secs(60))
            .unwrap();
        sink.inner
            .append(line, day_one + Duration::from_secs(86_400))
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), line);
        let rotated = rotated_files(&path).unwrap();
        assert_eq!(rotated.len(), 1);
        assert_eq!(std::fs::read(&rotated[0]).unwrap(), b"{}\n{}\n");
    }

    #[tokio::test]
    async fn reopen_follows_a_file_moved_away_by_logrotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let moved = dir.path().join("records.jsonl.1");
        let sink = FileSink::new(path.clone(), NO_ROTATION);
        sink.deliver(&record(0)).await.unwrap();
        std::fs::rename(&path, &moved).unwrap();
        sink.deliver(&record(1)).await.unwrap();
        sink.reopen();
        sink.deliver(&record(2)).await.unwrap();
        assert_eq!(lines(&moved), [record(0), record(1)]);
        assert_eq!(lines(&path), [record(2)]);
    }
}
