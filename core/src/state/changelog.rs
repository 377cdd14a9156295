//! Changelogged stores: every change to a store is also written, at commit, to its changelog
//! partition (a compacted topic), and a store is restored by replaying that changelog.
//!
//! Changes wait in an overlay, one entry per key, and reads see it over the store. Each
//! key changed since the last commit has one changelog record (the
//! write cache: ten updates of a key between two commits log one record). A commit sends
//! those records to the changelog and waits for their acknowledgement (under exactly-once:
//! for the transaction to commit); only then do the changes count as committed, and an abort
//! puts back what they replaced. A persistent store writes behind: committed changes stay in
//! the overlay, and reach the store when they outgrow their bound or before a checkpoint (a
//! window updated in ten commits is written once). Now and
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

use bytes::{Bytes, BytesMut};
use rill_log::client::{
    Admin, ClientError, Consumer, ConsumerConfig, IsolationLevel, OffsetReset, OffsetSpec,
    Producer, Transport,
};
use rill_log::record::NewRecord;
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
///
/// One map holds every key whose state differs from the store below: committed changes not
/// yet written (the write-behind) and changes since the last commit alike, so a change costs
/// one lookup, not one in a map of uncommitted changes and another when the commit moves it
/// among the committed ones. What a commit needs apart is kept with each change: its
/// changelog record and, to undo it on an abort, the key's entry before its first change
/// since the commit. A commit then only drops those.
#[derive(Debug)]
pub struct LoggedStore<S: KeyValueStore> {
    inner: S,
    changelog: TopicPartition,
    /// Keys whose state differs from `inner`, with that state.
    changes: Overlay<Slot>,
    /// Estimated bytes of `changes` (keys, values, the map's entries).
    changes_bytes: usize,
    /// Commits and aborts so far: an entry changed since the last one has this `epoch`.
    epoch: u64,
    /// Each key's entry before its first change since the last commit (`None`: it had
    /// none), in the order of those changes: an abort puts them back, last first.
    undo: Vec<(InlineKey, Option<Slot>)>,
    /// The changelog records since the last commit; `None` for one an expiry took back.
    log: Vec<Option<LogRecord>>,
    /// Bytes of keys and values in `log`.
    log_bytes: usize,
    /// Past this, committed changes go into `inner` (0: at every commit).
    write_behind_bytes: usize,
}

/// A value held in memory: inline when short, as a key is (a window's count or a small
/// aggregate needs no heap block of its own, so replacing it frees none and reading it
/// follows no pointer).
type Value = InlineKey;

/// A changelog record: key, and value (`None`: a tombstone).
type LogRecord = (InlineKey, Option<Value>);

/// What an entry costs beyond a long key's heap block and its value (its share of the
/// map's node: the inline key and the slot).
const ENTRY_OVERHEAD: usize = 80;

/// `Slot::log_at` of an entry without a changelog record since the last commit.
const NOT_LOGGED: u32 = u32::MAX;

/// A key's state over the store below.
#[derive(Debug, Clone)]
struct Slot {
    /// The value (`None`: deleted, to be removed from the store below).
    value: Option<Value>,
    /// The layers below have no value for the key (it was new, `put_new`): a deletion then
    /// has nothing to remove there, and drops the entry instead (a window created and
    /// expired between two writes of the write-behind never reaches the store). No entry
    /// holds a deletion with this set.
    absent_below: bool,
    /// `LoggedStore::epoch` when it last changed.
    epoch: u64,
    /// Where its record is in `log`, when it changed since the last commit.
    log_at: u32,
}

/// What an entry of `key` holding `value` counts for in `changes_bytes`.
fn entry_bytes(key: &[u8], value: &Option<Value>) -> usize {
    InlineKey::heap_bytes(key) + value_len(value) + ENTRY_OVERHEAD
}

fn value_len(value: &Option<Value>) -> usize {
    value.as_ref().map_or(0, |v| v.as_slice().len())
}

/// What a changelog record counts for in `log_bytes`.
fn record_bytes(key: &[u8], value: &Option<Value>) -> usize {
    key.len() + value_len(value)
}

/// How a change is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logging {
    /// With a changelog record.
    Logged,
    /// An expiry: never logged, and it takes back the key's record since the commit.
    Expiry,
}

/// Logs `key`'s change to `value` in `log` (adding to `bytes`): its record at `at` (if it
/// is still there) replaced, or a new one; an expiry takes the record back instead. Returns
/// where the key's record is now.
fn log_change(
    log: &mut Vec<Option<LogRecord>>,
    bytes: &mut usize,
    key: &InlineKey,
    at: u32,
    value: &Option<Value>,
    logging: Logging,
) -> u32 {
    let k = key.as_slice();
    // The record at `at` is the key's own unless the records were taken since.
    let own = log
        .get_mut(at as usize)
        .filter(|r| r.as_ref().is_some_and(|(own, _)| own == key));
    match (logging, own) {
        (Logging::Logged, Some(Some(r))) => {
            *bytes = *bytes - record_bytes(k, &r.1) + record_bytes(k, value);
            r.1 = value.clone();
            at
        }
        (Logging::Logged, _) => {
            *bytes += record_bytes(k, value);
            log.push(Some((key.clone(), value.clone())));
            (log.len() - 1) as u32
        }
        (Logging::Expiry, own) => {
            if let Some(Some((_, v))) = own.map(Option::take) {
                *bytes -= record_bytes(k, &v);
            }
            NOT_LOGGED
        }
    }
}

impl<S: KeyValueStore> LoggedStore<S> {
    pub fn new(inner: S, changelog: TopicPartition) -> Self {
        LoggedStore {
            inner,
            changelog,
            changes: Overlay::default(),
            changes_bytes: 0,
            epoch: 0,
            undo: Vec::new(),
            log: Vec::new(),
            log_bytes: 0,
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

    /// Keys held in memory over the store (after a commit: its committed changes not yet
    /// written into the store).
    pub fn unwritten(&self) -> usize {
        self.changes.len()
    }

    /// Changelog records waiting for the next commit.
    pub fn pending(&self) -> usize {
        self.log.iter().flatten().count()
    }

    /// Sets `key` to `value` (`new`: the store below has no value for it), logged as
    /// `logging` says. A key changed before keeps what was known of the layers below.
    fn change(&mut self, key: &[u8], value: Option<Value>, new: bool, logging: Logging) {
        let epoch = self.epoch;
        let (log, log_bytes) = (&mut self.log, &mut self.log_bytes);
        // Built once: the map, the undo list and the changelog record each keep a copy.
        let ik = InlineKey::new(key);
        match self.changes.entry(ik.clone()) {
            MapEntry::Occupied(mut o) => {
                let s = o.get_mut();
                let old_bytes = entry_bytes(key, &s.value);
                if s.epoch != epoch {
                    // Its first change since the commit: the entry as it was moves to `undo`.
                    let before = Slot {
                        value: s.value.take(),
                        ..*s
                    };
                    self.undo.push((ik.clone(), Some(before)));
                    s.epoch = epoch;
                    s.log_at = NOT_LOGGED;
                }
                s.log_at = log_change(log, log_bytes, &ik, s.log_at, &value, logging);
                self.changes_bytes = self.changes_bytes - old_bytes + entry_bytes(key, &value);
                s.value = value;
                if s.value.is_none() && s.absent_below {
                    // Deleted, and the store below never had it: nothing left to write.
                    self.changes_bytes -= entry_bytes(key, &None);
                    o.remove();
                }
            }
            MapEntry::Vacant(v) => {
                let log_at = log_change(log, log_bytes, &ik, NOT_LOGGED, &value, logging);
                self.undo.push((ik, None));
                // A deletion of a key the store below lacks needs no entry.
                if value.is_some() || !new {
                    self.changes_bytes += entry_bytes(key, &value);
                    v.insert(Slot {
                        absent_below: new && value.is_some(),
                        value,
                        epoch,
                        log_at,
                    });
                }
            }
        }
    }

    /// `base` (entries of the store, in key order) with the entries in `[from, to]` held
    /// over it laid over it.
    fn overlaid(
        &self,
        base: Vec<Entry>,
        from: std::ops::Bound<&[u8]>,
        to: std::ops::Bound<&[u8]>,
    ) -> Vec<Entry> {
        let changes = self.changes.range(from, to);
        if changes.is_empty() {
            return base;
        }
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = base.into_iter().collect();
        for (k, s) in changes {
            match &s.value {
                Some(v) => merged.insert(k.as_slice().to_vec(), v.as_slice().to_vec()),
                None => merged.remove(k.as_slice()),
            };
        }
        merged.into_iter().collect()
    }

    /// Puts back the entries `undo` remembers, last first: the map is as the last commit
    /// left it.
    fn restore_committed(&mut self) {
        for (k, before) in std::mem::take(&mut self.undo).into_iter().rev() {
            let heap = InlineKey::heap_bytes(k.as_slice());
            let bytes = |s: &Slot| heap + value_len(&s.value) + ENTRY_OVERHEAD;
            match self.changes.entry(k) {
                MapEntry::Occupied(mut o) => {
                    self.changes_bytes -= bytes(o.get());
                    match before {
                        Some(b) => {
                            self.changes_bytes += bytes(&b);
                            *o.get_mut() = b;
                        }
                        None => {
                            o.remove();
                        }
                    }
                }
                MapEntry::Vacant(v) => {
                    if let Some(b) = before {
                        self.changes_bytes += bytes(&b);
                        v.insert(b);
                    }
                }
            }
        }
    }

    /// Sends the collected changes to the changelog through `producer`, waits until they
    /// are acknowledged, then writes them into the store and flushes it. Returns the
    /// changelog offset after the last change written (what a checkpoint records), or `None`
    /// when there was nothing to send. (The runtime does the same in steps, so that under
    /// exactly-once the store is written only once the transaction has committed.)
    pub async fn commit(&mut self, producer: &Producer) -> Result<Option<i64>, ChangelogError> {
        let records = changelog_records(self.take_uncommitted());
        let client = |source| ChangelogError::Client {
            changelog: self.changelog.clone(),
            source,
        };
        let deliveries = producer
            .send_to_partition(&self.changelog.topic, self.changelog.partition.0, records)
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

/// A changelog record as the store traits hand it over.
fn owned_record((key, value): LogRecord) -> (Vec<u8>, Option<Vec<u8>>) {
    (key.into(), value.map(Into::into))
}

impl<S: KeyValueStore> KeyValueStore for LoggedStore<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.changes.get(key) {
            Some(s) => Ok(s.value.as_ref().map(|v| v.as_slice().to_vec())),
            None => self.inner.get(key),
        }
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.change(key, Some(Value::new(value)), false, Logging::Logged);
        Ok(())
    }
    fn put_owned(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.change(key, Some(value.into()), false, Logging::Logged);
        Ok(())
    }
    fn put_new(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.change(key, Some(value.into()), true, Logging::Logged);
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let old = self.get(key)?;
        self.change(key, None, false, Logging::Logged);
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
        let held = self.changes.iter().filter(|(_, s)| s.value.is_some());
        self.inner.approximate_num_entries() + held.count() as u64
    }
    /// Writes the committed changes into the store and flushes it; uncommitted changes stay
    /// in memory.
    fn flush(&mut self) -> Result<(), StoreError> {
        self.write_unwritten()?;
        self.inner.flush()
    }
    fn changelog(&self) -> Option<&TopicPartition> {
        Some(&self.changelog)
    }
    fn uncommitted(&self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.log
            .iter()
            .flatten()
            .cloned()
            .map(owned_record)
            .collect()
    }
    fn take_uncommitted(&mut self) -> Vec<(Bytes, Option<Bytes>)> {
        // One buffer for every key and value, sliced: no allocation per record.
        let mut buf = BytesMut::with_capacity(self.log_bytes);
        let mut bounds = Vec::with_capacity(self.log.len());
        for (k, v) in self.log.drain(..).flatten() {
            buf.extend_from_slice(k.as_slice());
            let key_end = buf.len();
            let value_end = v.map(|v| {
                buf.extend_from_slice(v.as_slice());
                buf.len()
            });
            bounds.push((key_end, value_end));
        }
        self.log_bytes = 0;
        let buf = buf.freeze();
        let mut at = 0;
        bounds
            .into_iter()
            .map(|(key_end, value_end)| {
                let key = buf.slice(at..key_end);
                at = value_end.unwrap_or(key_end);
                (key, value_end.map(|end| buf.slice(key_end..end)))
            })
            .collect()
    }
    fn uncommitted_bytes(&self) -> usize {
        self.log_bytes
    }
    fn erase(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.change(key, None, false, Logging::Logged);
        Ok(())
    }
    fn expire(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.change(key, None, false, Logging::Expiry);
        Ok(())
    }
    fn apply_uncommitted(&mut self) -> Result<(), StoreError> {
        // The changes stay where they are; what an abort would have needed goes.
        self.undo.clear();
        self.log.clear();
        self.log_bytes = 0;
        self.epoch += 1;
        if self.changes_bytes > self.write_behind_bytes {
            self.write_unwritten()?;
        }
        Ok(())
    }
    fn discard_uncommitted(&mut self) {
        self.restore_committed();
        self.log.clear();
        self.log_bytes = 0;
        self.epoch += 1;
    }
    fn unwritten_bytes(&self) -> usize {
        self.changes_bytes
    }
    fn write_unwritten(&mut self) -> Result<(), StoreError> {
        if self.changes.is_empty() {
            return Ok(());
        }
        // Uncommitted changes must not reach the store: they are set aside (the committed
        // entries put back in their place), and laid over the store again after, with
        // their changelog records.
        let mut pending: Vec<(Vec<u8>, Option<Slot>)> = Vec::new();
        if !self.undo.is_empty() {
            let mut seen = std::collections::HashSet::new();
            for (k, _) in &self.undo {
                let key = k.as_slice();
                if seen.insert(key.to_vec()) {
                    pending.push((key.to_vec(), self.changes.get(key).cloned()));
                }
            }
            self.restore_committed();
        }
        let committed = self.changes.take_in_order();
        self.changes_bytes = 0;
        self.inner.write_all(
            committed
                .into_iter()
                .map(|(k, s)| (k.into(), s.value.map(Into::into)))
                .collect(),
        )?;
        // The store below now holds the committed state: an abort goes back to it by
        // dropping the entries laid over it.
        for (key, slot) in pending {
            let slot = slot.unwrap_or(Slot {
                value: None,
                absent_below: false,
                epoch: self.epoch,
                log_at: NOT_LOGGED,
            });
            self.changes_bytes += entry_bytes(&key, &slot.value);
            self.undo.push((InlineKey::new(&key), None));
            if let MapEntry::Vacant(v) = self.changes.entry(InlineKey::new(&key)) {
                v.insert(Slot {
                    absent_below: false,
                    epoch: self.epoch,
                    ..slot
                });
            }
        }
        Ok(())
    }
}

/// Changes as changelog records (a tombstone for a deletion), stamped with the time now.
pub fn changelog_records(changes: Vec<(Bytes, Option<Bytes>)>) -> impl Iterator<Item = NewRecord> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    changes.into_iter().map(move |(k, v)| NewRecord {
        key: Some(k),
        value: v,
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
    // A replicated changelog may change leaders while it is read (NOT_LEADER_OR_FOLLOWER and
    // the like): retriable failures are retried for up to RESTORE_RETRY, as Kafka Streams
    // retries its restore consumer within `task.timeout.ms`.
    let deadline = std::time::Instant::now() + RESTORE_RETRY;
    let retriable = |e: &ClientError| e.is_retriable() && std::time::Instant::now() < deadline;
    let admin = Admin::new(Arc::clone(&transport));
    let ends = loop {
        match admin
            .list_offsets(&[(tp.clone(), OffsetSpec::Earliest)])
            .await
        {
            Err(e) if retriable(&e) => tokio::time::sleep(RESTORE_BACKOFF).await,
            other => break other.map_err(client)?,
        }
    };
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
    loop {
        match probe.seek_to_end(std::slice::from_ref(tp)).await {
            Err(e) if retriable(&e) => tokio::time::sleep(RESTORE_BACKOFF).await,
            other => break other.map_err(client)?,
        }
    }
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
        let records = match consumer.poll().await {
            Err(e) if retriable(&e) => {
                tokio::time::sleep(RESTORE_BACKOFF).await;
                continue;
            }
            other => other.map_err(client)?,
        };
        for r in records {
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

/// How long a restore retries retriable failures (a changelog's leader moving) before it
/// fails the task, and how long it waits between tries.
const RESTORE_RETRY: std::time::Duration = std::time::Duration::from_secs(60);
const RESTORE_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

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
