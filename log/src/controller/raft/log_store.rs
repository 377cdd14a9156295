//! The metadata log on a controller's disk (openraft's `RaftLogStorage`), in
//! `<data dir>/__cluster_metadata/`:
//!
//! - `log`: entries back to back, each framed `[length u32][crc32c u32][entry as JSON]`
//!   (big-endian); appended and fdatasynced before openraft is told they are durable. A torn
//!   or corrupt tail (a crash mid-append) is cut at open: those entries were never
//!   acknowledged.
//! - `meta.json`: the vote, the last purged log id and the committed log id, replaced
//!   atomically.
//!
//! The metadata log is small (snapshots compact it), so entries are also kept in memory;
//! truncation and purging rewrite the file whole (temporary file, fsync, rename).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{LogEntry, LogId, MetadataRaft, StorageError, Vote};
use crate::storage::write_atomically;

const LOG_FILE: &str = "log";
const META_FILE: &str = "meta.json";
/// No entry is this large (snapshots travel separately); a larger length is damage.
const MAX_ENTRY_BYTES: usize = 64 << 20;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote>,
    last_purged: Option<LogId>,
    committed: Option<LogId>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    entries: BTreeMap<u64, LogEntry>,
    meta: Meta,
    file: Arc<File>,
}

/// The metadata log store; clones share it (openraft reads through a clone).
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn io_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// One entry framed for the log file.
fn frame(entry: &LogEntry) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(entry).map_err(io_error)?;
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&json).to_be_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// The entries of a log file's bytes, and the length of its sound prefix.
fn parse(bytes: &[u8]) -> (Vec<LogEntry>, usize) {
    let mut entries = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= 8 {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if len > MAX_ENTRY_BYTES || bytes.len() - pos - 8 < len {
            break;
        }
        let body = &bytes[pos + 8..pos + 8 + len];
        if crc32c::crc32c(body) != crc {
            break;
        }
        match serde_json::from_slice::<LogEntry>(body) {
            Ok(e) => entries.push(e),
            Err(_) => break,
        }
        pos += 8 + len;
    }
    (entries, pos)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogStore {
    /// Opens the store in `dir`, cutting a torn tail.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        fs::create_dir_all(dir)?;
        let meta: Meta = match fs::read(dir.join(META_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(io_error)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Meta::default(),
            Err(e) => return Err(e),
        };
        let path = dir.join(LOG_FILE);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (parsed, sound) = parse(&bytes);
        if sound < bytes.len() {
            tracing::warn!(path = %path.display(), cut = bytes.len() - sound, "metadata log: cutting a torn or corrupt tail");
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(sound as u64)?;
            f.sync_all()?;
        }
        let purged = meta.last_purged.map_or(0, |l| l.index + 1);
        let entries = parsed
            .into_iter()
            .filter(|e| e.log_id.index >= purged)
            .map(|e| (e.log_id.index, e))
            .collect();
        let file = Arc::new(open_append(&path)?);
        Ok(LogStore {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                entries,
                meta,
                file,
            })),
        })
    }
}

impl Inner {
    async fn write_meta(&self) -> Result<(), io::Error> {
        let bytes = serde_json::to_vec(&self.meta).map_err(io_error)?;
        let dir = self.dir.clone();
        crate::sync::off_the_workers(move || write_atomically(&dir, META_FILE, &bytes))
            .await
            .map_err(io_error)?
    }

    /// Replaces the log file with the entries in memory.
    async fn rewrite(&mut self) -> Result<(), io::Error> {
        let mut bytes = Vec::new();
        for e in self.entries.values() {
            bytes.extend(frame(e)?);
        }
        let dir = self.dir.clone();
        let file = crate::sync::off_the_workers(move || -> io::Result<File> {
            write_atomically(&dir, LOG_FILE, &bytes)?;
            open_append(&dir.join(LOG_FILE))
        })
        .await
        .map_err(io_error)??;
        self.file = Arc::new(file);
        Ok(())
    }
}

impl RaftLogReader<MetadataRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError> {
        let inner = self.inner.lock().await;
        Ok(inner.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<MetadataRaft> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<MetadataRaft>, StorageError> {
        let inner = self.inner.lock().await;
        let last = inner.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.meta.last_purged,
            last_log_id: last.or(inner.meta.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        inner.meta.vote = Some(*vote);
        inner
            .write_meta()
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.inner.lock().await.meta.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        inner.meta.committed = committed;
        inner
            .write_meta()
            .await
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.inner.lock().await.meta.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<MetadataRaft>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = LogEntry> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.lock().await;
        let mut bytes = Vec::new();
        for e in entries {
            bytes.extend(frame(&e).map_err(|e| StorageIOError::write_logs(&e))?);
            inner.entries.insert(e.log_id.index, e);
        }
        let file = Arc::clone(&inner.file);
        let written = crate::sync::off_the_workers(move || -> io::Result<()> {
            (&*file).write_all(&bytes)?;
            file.sync_data()
        })
        .await
        .map_err(io_error)
        .and_then(|r| r);
        let failed = written.as_ref().err().map(StorageIOError::write_logs);
        callback.log_io_completed(written);
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        inner.entries.split_off(&log_id.index);
        inner
            .rewrite()
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.inner.lock().await;
        let keep = inner.entries.split_off(&(log_id.index + 1));
        inner.entries = keep;
        inner.meta.last_purged = Some(log_id);
        // The purge point first: a crash between the two leaves extra entries in the file,
        // which the next open drops.
        inner
            .write_meta()
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        inner
            .rewrite()
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::raft::MetadataBatch;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> LogEntry {
        LogEntry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(MetadataBatch::default()),
        }
    }

    #[test]
    fn a_torn_tail_is_cut_and_sound_entries_survive() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        for i in 1..=3 {
            bytes.extend(frame(&entry(i)).unwrap());
        }
        let sound = bytes.len();
        let mut torn = frame(&entry(4)).unwrap();
        torn.truncate(torn.len() - 3);
        bytes.extend(torn);
        fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        let inner = store.inner.try_lock().unwrap();
        assert_eq!(inner.entries.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        drop(inner);
        assert_eq!(
            fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(),
            sound as u64
        );
        // A flipped bit ends the sound prefix too.
        let mut bad = fs::read(dir.path().join(LOG_FILE)).unwrap();
        let at = bad.len() - 2;
        bad[at] ^= 1;
        fs::write(dir.path().join(LOG_FILE), &bad).unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.inner.try_lock().unwrap().entries.len(), 2);
    }
}
