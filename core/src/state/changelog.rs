//! Changelogged stores: every change to a store is also written, at commit, to its changelog
//! partition (a compacted topic), and a store is restored by replaying that changelog.
//!
//! Between commits, changes wait in an overlay, one entry per key (the write cache: ten
//! updates of a key between two commits log one record), and reads see the overlay over the
//! store. A commit sends the overlay to the changelog and waits for its acknowledgement
//! (under exactly-once: for the transaction to commit); only then does the overlay move
//! towards the store. A persistent store writes behind: committed changes collect in a
//! second overlay, one entry per key again, and reach the store when they outgrow their
//! bound or before a checkpoint (a window updated in ten commits is written once). Now and
//! then (see the runtime) the store is synced and a checkpoint file records the changelog
//! offset the local state reflects. So local state is never ahead of the committed
//! changelog, and the checkpoint never ahead of durable local state: after any crash, even
//! under exactly-once, local state lies between its checkpoint and the committed changelog
//! end, and replaying the changelog from the checkpoint (which rewrites every key changed
//! since with its committed value) brings it back exactly — no wipe, no full restore. A store
//! with no checkpoint is wiped and restored in full, because a full replay cannot remove
//! keys whose tombstones compaction has already dropped.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rill_log::client::{
    Admin, ClientError, Consumer, ConsumerConfig, IsolationLevel, OffsetReset, OffsetSpec,
    Producer, Transport,
};
use rill_log::storage::NewRecord;
use rill_log::types::TopicPartition;

use super::overlay::{Entry as MapEntry, Overlay};
use super::{prefix_end, Entry, InlineKey, KeyValueStore, StoreError};

/// Why a changelog operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("changelog {changelog}: {source}")]
    Client {
        changelog: TopicPartition,
        source: ClientError,
    },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreReport {
    /// Changelog offset restoring started at.
    pub from_offset: i64,
    /// The changelog end it caught up to.
    pub end_offset: i64,
    /// Changelog records applied.
    pub records: u64,
}

/// A store whose changes are logged to `changelog`.
#[derive(Debug)]
pub struct LoggedStore<S: KeyValueStore> {
    inner: S,
    changelog: TopicPartition,
    /// Changes since the last commit, by key; not yet in `inner`.
    dirty: Overlay<Change>,
    /// Bytes of keys and values in `dirty`.
    dirty_bytes: usize,
    /// Keys expired since the last commit: removed from `inner` at the commit, never logged.
    expired: Vec<InlineKey>,
    /// A key was written after a key expired since the last commit (it may be an expired
    /// one, whose write then stands): only then does the commit look the expired keys up.
    written_after_expiry: bool,
    /// Committed changes not yet written into `inner` (write-behind), by key.
    unwritten: Overlay<Change>,
    /// Estimated bytes of `unwritten` (keys, values, the map's nodes).
    unwritten_bytes: usize,
    /// Past this, `unwritten` goes into `inner` (0: at every commit).
    write_behind_bytes: usize,
}

/// What an overlay entry costs beyond a long key's heap block and its value (its share of
/// the map's node: the inline key and the value's `Vec`).
const ENTRY_OVERHEAD: usize = 64;

/// A change in an overlay.
#[derive(Debug, Clone)]
struct Change {
    /// The new value (`None`: deleted).
    value: Option<Vec<u8>>,
    /// The layers below have no value for the key (it was new, `put_new`): a deletion then
    /// has nothing to remove there, and drops the change instead (a window created and
    /// expired between two writes of the write-behind never reaches the store).
    absent_below: bool,
}

impl<S: KeyValueStore> LoggedStore<S> {
    pub fn new(inner: S, changelog: TopicPartition) -> Self {
        LoggedStore {
            inner,
            changelog,
            dirty: Overlay::default(),
            dirty_bytes: 0,
            expired: Vec::new(),
            written_after_expiry: false,
            unwritten: Overlay::default(),
            unwritten_bytes: 0,
            write_behind_bytes: 0,
        }
    }

    /// Committed changes wait in memory, up to about `bytes`, before they are written into
    /// the store (all of them at once; sooner when the store is flushed or told to
    /// `write_unwritten`, as the runtime does to keep all its stores within one budget).
    /// Worth it for a persistent store, where a write costs more than a map insert.
    pub fn with_write_behind(mut self, bytes: usize) -> Self {
        self.write_behind_bytes = bytes;
        self
    }

    /// Committed changes waiting to be written into the store.
    pub fn unwritten(&self) -> usize {
        self.unwritten.len()
    }

    /// Changes waiting for the next commit (after the write cache's deduplication).
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    /// Records `value` for `key` (`new`: the store has no value for it). A key changed
    /// before keeps what was known of the layers below.
    fn record(&mut self, key: &[u8], value: Option<Vec<u8>>, new: bool) {
        self.written_after_expiry |= !self.expired.is_empty();
        let added = key.len() + value.as_ref().map_or(0, Vec::len);
        match self.dirty.entry(InlineKey::new(key)) {
            MapEntry::Occupied(mut o) => {
                let c = o.get_mut();
                self.dirty_bytes -= key.len() + c.value.as_ref().map_or(0, Vec::len);
                c.value = value;
            }
            MapEntry::Vacant(v) => {
                v.insert(Change {
                    value,
                    absent_below: new,
                });
            }
        }
        self.dirty_bytes += added;
    }

    /// `base` (entries of the store, in key order) with both overlays' entries in
    /// `[from, to]` laid over it: the committed ones, then the uncommitted.
    fn overlaid(
        &self,
        base: Vec<Entry>,
        from: std::ops::Bound<&[u8]>,
        to: std::ops::Bound<&[u8]>,
    ) -> Vec<Entry> {
        let mut changes = self
            .unwritten
            .range(from, to)
            .into_iter()
            .chain(self.dirty.range(from, to))
            .map(|(k, c)| (k, &c.value))
            .peekable();
        if changes.peek().is_none() {
            return base;
        }
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = base.into_iter().collect();
        for (k, v) in changes {
            match v {
                Some(v) => merged.insert(k.as_slice().to_vec(), v.clone()),
                None => merged.remove(k.as_slice()),
            };
        }
        merged.into_iter().collect()
    }

    /// Sends the collected changes to the changelog through `producer`, waits until they
    /// are acknowledged, then writes them into the store and flushes it. Returns the
    /// changelog offset after the last change written (what a checkpoint records), or `None`
    /// when there was nothing to send. (The runtime does the same in steps, so that under
    /// exactly-once the store is written only once the transaction has committed.)
    pub async fn commit(&mut self, producer: &Producer) -> Result<Option<i64>, ChangelogError> {
        let client = |source| ChangelogError::Client {
            changelog: self.changelog.clone(),
            source,
        };
        let deliveries = producer
            .send_to_partition(
                &self.changelog.topic,
                self.changelog.partition.0,
                changelog_records(self.uncommitted()),
            )
            .await
            .map_err(client)?;
        producer.flush().await;
        let mut last = None;
        for d in deliveries {
            let md = d.await.map_err(client)?;
            last = Some(last.unwrap_or(md.offset).max(md.offset));
        }
        self.apply_uncommitted()?;
        KeyValueStore::flush(self)?;
        Ok(last.map(|o| o + 1))
    }

    /// Replays the changelog from `from` (the checkpoint, or the log start) to its end into
    /// the store; `progress` hears the offset reached after each batch of records.
    pub async fn restore(
        &mut self,
        transport: Arc<dyn Transport>,
        from: Option<i64>,
        progress: impl FnMut(i64, i64),
    ) -> Result<RestoreReport, ChangelogError> {
        let tp = self.changelog.clone();
        restore_into(self, &tp, transport, from, false, progress).await
    }
}

impl<S: KeyValueStore> KeyValueStore for LoggedStore<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.dirty.get(key).or_else(|| self.unwritten.get(key)) {
            Some(c) => Ok(c.value.clone()),
            None => self.inner.get(key),
        }
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.record(key, Some(value.to_vec()), false);
        Ok(())
    }
    fn put_owned(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.record(key, Some(value), false);
        Ok(())
    }
    fn put_new(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.record(key, Some(value), true);
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let old = self.get(key)?;
        self.record(key, None, false);
        Ok(old)
    }
    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<Entry>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        let base = self.inner.range(from, to)?;
        Ok(self.overlaid(base, Bound::Included(from), Bound::Included(to)))
    }
    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let base = self.inner.prefix_scan(prefix)?;
        let end = prefix_end(prefix);
        let to = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        Ok(self.overlaid(base, Bound::Included(prefix), to))
    }
    fn all(&self) -> Result<Vec<Entry>, StoreError> {
        let base = self.inner.all()?;
        Ok(self.overlaid(base, Bound::Unbounded, Bound::Unbounded))
    }
    fn approximate_num_entries(&self) -> u64 {
        let added = self.dirty.iter().chain(self.unwritten.iter());
        self.inner.approximate_num_entries()
            + added.filter(|(_, c)| c.value.is_some()).count() as u64
    }
    /// Writes the committed changes into the store and flushes it; uncommitted changes stay
    /// in the overlay.
    fn flush(&mut self) -> Result<(), StoreError> {
        self.write_unwritten()?;
        self.inner.flush()
    }
    fn changelog(&self) -> Option<&TopicPartition> {
        Some(&self.changelog)
    }
    fn uncommitted(&self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.dirty
            .iter()
            .map(|(k, c)| (k.as_slice().to_vec(), c.value.clone()))
            .collect()
    }
    fn uncommitted_bytes(&self) -> usize {
        self.dirty_bytes
    }
    fn erase(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.record(key, None, false);
        Ok(())
    }
    fn expire(&mut self, key: &[u8]) -> Result<(), StoreError> {
        if let Some(old) = self.dirty.remove(key) {
            self.dirty_bytes -= key.len() + old.value.map_or(0, |v| v.len());
        }
        self.expired.push(InlineKey::new(key));
        Ok(())
    }
    fn apply_uncommitted(&mut self) -> Result<(), StoreError> {
        // A key written again after it expired keeps the write (one change per key: a batch
        // holding both would leave the order to the backend); the store may still hold
        // the expired value below it.
        let mut expired = Vec::new();
        let rewritten = std::mem::take(&mut self.written_after_expiry);
        for k in std::mem::take(&mut self.expired) {
            // Without a write since the first expiry, no expired key is in `dirty`
            // (expiring one removes it): no lookup.
            let written = if rewritten {
                self.dirty.get_mut(k.as_slice())
            } else {
                None
            };
            match written {
                Some(c) => c.absent_below = false,
                None => expired.push((
                    k,
                    Change {
                        value: None,
                        absent_below: false,
                    },
                )),
            }
        }
        self.dirty_bytes = 0;
        for (k, c) in expired.into_iter().chain(self.dirty.drain()) {
            let k_heap = InlineKey::heap_bytes(k.as_slice());
            let v_len = c.value.as_ref().map_or(0, Vec::len);
            match self.unwritten.entry(k) {
                // Never written, now deleted: nothing to write at all.
                MapEntry::Occupied(o) if o.get().absent_below && c.value.is_none() => {
                    let old_len = o.remove().value.map_or(0, |v| v.len());
                    self.unwritten_bytes -= k_heap + old_len + ENTRY_OVERHEAD;
                }
                // The key is counted already; its value changes, and what is known of the
                // store below stays.
                MapEntry::Occupied(mut o) => {
                    let u = o.get_mut();
                    let old_len = u.value.as_ref().map_or(0, Vec::len);
                    self.unwritten_bytes = self.unwritten_bytes + v_len - old_len;
                    u.value = c.value;
                }
                MapEntry::Vacant(_) if c.absent_below && c.value.is_none() => {}
                MapEntry::Vacant(v) => {
                    self.unwritten_bytes += k_heap + v_len + ENTRY_OVERHEAD;
                    v.insert(c);
                }
            }
        }
        if self.unwritten_bytes > self.write_behind_bytes {
            self.write_unwritten()?;
        }
        Ok(())
    }
    fn discard_uncommitted(&mut self) {
        self.dirty.clear();
        self.dirty_bytes = 0;
        self.expired.clear();
        self.written_after_expiry = false;
    }
    fn unwritten_bytes(&self) -> usize {
        self.unwritten_bytes
    }
    fn write_unwritten(&mut self) -> Result<(), StoreError> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        self.inner.write_all(
            self.unwritten
                .take_in_order()
                .into_iter()
                .map(|(k, c)| (k.into(), c.value))
                .collect(),
        )?;
        self.unwritten_bytes = 0;
        Ok(())
    }
}

/// Changes as changelog records (a tombstone for a deletion), stamped with the time now.
pub fn changelog_records(
    changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> impl Iterator<Item = NewRecord> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    changes.into_iter().map(move |(k, v)| NewRecord {
        key: Some(k.into()),
        value: v.map(Into::into),
        timestamp_ms: now,
        headers: Vec::new(),
    })
}

/// Replays changelog `tp` from `from` (or its start) to its current end into `store`.
///
/// With `committed_only` (exactly-once), only committed changes are applied: the end is the
/// last stable offset and aborted transactions are skipped.
pub async fn restore_into(
    store: &mut dyn KeyValueStore,
    tp: &TopicPartition,
    transport: Arc<dyn Transport>,
    from: Option<i64>,
    committed_only: bool,
    mut progress: impl FnMut(i64, i64),
) -> Result<RestoreReport, ChangelogError> {
    let isolation = if committed_only {
        IsolationLevel::ReadCommitted
    } else {
        IsolationLevel::ReadUncommitted
    };
    let client = |source| ChangelogError::Client {
        changelog: tp.clone(),
        source,
    };
    let ends = Admin::new(Arc::clone(&transport))
        .list_offsets(&[(tp.clone(), OffsetSpec::Earliest)])
        .await
        .map_err(client)?;
    let start = ends.get(tp).map_or(0, |o| o.offset);
    // The end: the log end, or for committed changes only the last stable offset.
    let mut probe = Consumer::new(
        Arc::clone(&transport),
        ConsumerConfig {
            isolation_level: isolation,
            enable_auto_commit: false,
            ..Default::default()
        },
    );
    probe.assign([tp.clone()]);
    probe
        .seek_to_end(std::slice::from_ref(tp))
        .await
        .map_err(client)?;
    let end = probe.position(tp).unwrap_or(0);
    // A checkpoint below the log start (retention removed what it points at): the local
    // state may hold keys whose deletion is gone from the log, so it is wiped and restored
    // from the start.
    if from.is_some_and(|f| f < start) {
        for (k, _) in store.all()? {
            store.delete(&k)?;
        }
        store.apply_uncommitted()?;
    }
    let from = from.unwrap_or(start).max(start);
    let mut report = RestoreReport {
        from_offset: from,
        end_offset: end,
        records: 0,
    };
    if from >= end {
        return Ok(report);
    }
    let mut consumer = Consumer::new(
        transport,
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: false,
            fetch_max_wait_ms: 10,
            max_poll_records: 10_000,
            isolation_level: isolation,
            ..Default::default()
        },
    );
    consumer.assign([tp.clone()]);
    consumer.seek(tp, from).map_err(client)?;
    while consumer.position(tp).unwrap_or(from) < end {
        for r in consumer.poll().await.map_err(client)? {
            if r.offset >= end {
                break;
            }
            let key = r.key.map(|k| k.to_vec()).unwrap_or_default();
            match r.value {
                Some(v) => store.put(&key, &v)?,
                None => {
                    store.delete(&key)?;
                }
            }
            report.records += 1;
        }
        // A logged store takes each batch straight into local state: restoring is not news
        // for the changelog, and the overlays stay small.
        store.apply_uncommitted()?;
        store.write_unwritten()?;
        progress(consumer.position(tp).unwrap_or(from).min(end), end);
    }
    store.apply_uncommitted()?;
    store.flush()?;
    Ok(report)
}

/// The checkpoint file of `store` in `dir`.
fn checkpoint_path(dir: &Path, store: &str) -> PathBuf {
    dir.join(format!("{store}.checkpoint"))
}

/// Records that the local state of `store` reflects its changelog up to `offset` (written
/// atomically: temp file, fsync, rename).
pub fn write_checkpoint(dir: &Path, store: &str, offset: i64) -> Result<(), ChangelogError> {
    let path = checkpoint_path(dir, store);
    let tmp = path.with_extension("checkpoint.tmp");
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, format!("{offset}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| ChangelogError::Checkpoint {
        path: path.clone(),
        reason: e.to_string(),
    })
}

/// The changelog offset `store`'s local state reflects, if a checkpoint says so. An
/// unreadable checkpoint counts as none (restore then replays everything).
pub fn read_checkpoint(dir: &Path, store: &str) -> Option<i64> {
    std::fs::read_to_string(checkpoint_path(dir, store))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|o: &i64| *o >= 0)
}

/// Removes `store`'s checkpoint: done before processing starts, so a crash while the local
/// state runs ahead of the changelog forces a full restore (Kafka Streams does the same
/// under exactly-once).
pub fn remove_checkpoint(dir: &Path, store: &str) -> Result<(), ChangelogError> {
    match std::fs::remove_file(checkpoint_path(dir, store)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ChangelogError::Checkpoint {
            path: checkpoint_path(dir, store),
            reason: e.to_string(),
        }),
    }
}
