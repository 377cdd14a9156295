//! The sparse indexes beside each segment: `.index` maps a relative offset to a file position,
//! `.timeindex` maps a max timestamp to a relative offset. Both are kept in memory and written
//! to their files when a segment is sealed (roll, close) or recovered; they can always be rebuilt
//! from the `.log`,
//! so a missing or inconsistent file costs a rescan, never data.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A fixed-size big-endian index entry.
pub(crate) trait IndexEntry: Copy + std::fmt::Debug {
    const SIZE: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Self;
}

/// `.index` entry: the batch starting at `position` has base offset `segment base + relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// `.timeindex` entry: every record up to and including `segment base + relative_offset` has a
/// timestamp of at most `timestamp_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        TimeEntry {
            timestamp_ms: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

/// An index held in memory and mirrored to a file.
#[derive(Debug)]
pub(crate) struct IndexFile<E> {
    path: PathBuf,
    entries: Vec<E>,
    /// How many leading entries the file already holds.
    persisted: usize,
    /// The file no longer matches a prefix of `entries` and must be rewritten whole.
    rewrite: bool,
}

impl<E: IndexEntry> IndexFile<E> {
    /// An empty index whose file will be (re)written at the next persist.
    pub fn empty(path: PathBuf) -> Self {
        IndexFile {
            path,
            entries: Vec::new(),
            persisted: 0,
            rewrite: true,
        }
    }

    /// Reads the file; `Ok(None)` when it is missing or not a whole number of entries.
    pub fn load(path: PathBuf) -> io::Result<Option<Self>> {
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if bytes.len() % E::SIZE != 0 {
            return Ok(None);
        }
        let entries: Vec<E> = bytes.chunks_exact(E::SIZE).map(E::decode).collect();
        let persisted = entries.len();
        Ok(Some(IndexFile {
            path,
            entries,
            persisted,
            rewrite: false,
        }))
    }

    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    pub fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    pub fn push(&mut self, e: E) {
        self.entries.push(e);
    }

    /// Keeps the first `len` entries.
    pub fn truncate(&mut self, len: usize) {
        if len < self.entries.len() {
            self.entries.truncate(len);
            if len < self.persisted {
                self.rewrite = true;
            }
        }
    }

    pub fn clear(&mut self) {
        self.truncate(0);
        self.rewrite = true;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn set_path(&mut self, path: PathBuf) {
        self.path = path;
    }

    /// Brings the file up to date with memory; with `sync`, fsyncs it.
    pub fn persist(&mut self, sync: bool) -> io::Result<()> {
        let from = if self.rewrite { 0 } else { self.persisted };
        if from < self.entries.len() || self.rewrite {
            let mut buf = Vec::with_capacity((self.entries.len() - from) * E::SIZE);
            for e in &self.entries[from..] {
                e.encode(&mut buf);
            }
            let mut file = if self.rewrite {
                File::create(&self.path)?
            } else {
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&self.path)?
            };
            file.write_all(&buf)?;
            if sync {
                file.sync_all()?;
            }
            self.persisted = self.entries.len();
            self.rewrite = false;
        } else if sync {
            File::open(&self.path)?.sync_all()?;
        }
        Ok(())
    }

    /// Forgets the file's contents so the next persist rewrites it (after a rename onto a path
    /// that held another segment's index, for instance).
    pub fn mark_dirty(&mut self) {
        self.rewrite = true;
    }
}

/// The largest entry with `key(entry) <= target`, by binary search over sorted entries.
pub(crate) fn floor_entry<E: Copy, K: Ord>(
    entries: &[E],
    target: K,
    key: impl Fn(&E) -> K,
) -> Option<E> {
    let n = entries.partition_point(|e| key(e) <= target);
    n.checked_sub(1).map(|i| entries[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persist_appends_then_rewrites_after_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        let mut idx = IndexFile::<OffsetEntry>::empty(path.clone());
        for i in 0..5 {
            idx.push(OffsetEntry {
                relative_offset: i * 10,
                position: i * 100,
            });
        }
        idx.persist(true).unwrap();
        idx.push(OffsetEntry {
            relative_offset: 50,
            position: 500,
        });
        idx.persist(false).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 48);
        idx.truncate(2);
        idx.persist(false).unwrap();
        let back = IndexFile::<OffsetEntry>::load(path.clone())
            .unwrap()
            .unwrap();
        assert_eq!(back.entries(), idx.entries());
        fs::write(&path, [1u8; 13]).unwrap();
        assert!(IndexFile::<OffsetEntry>::load(path).unwrap().is_none());
    }

    #[test]
    fn floor_entry_finds_largest_not_above() {
        let v = [1, 5, 9];
        assert_eq!(floor_entry(&v, 0, |x| *x), None);
        assert_eq!(floor_entry(&v, 5, |x| *x), Some(5));
        assert_eq!(floor_entry(&v, 8, |x| *x), Some(5));
        assert_eq!(floor_entry(&v, 100, |x| *x), Some(9));
    }
}
