//! One partition's log: an ordered set of segments with a log start offset, a recovery point
//! (everything below it is fsynced) and the operations Kafka's `UnifiedLog` offers: append with
//! offset assignment, read of whole batches, lookup by timestamp, truncation, retention,
//! `delete_records`, flush. Opening a log recovers whatever a crash left behind.
//!
//! Concurrency: one `RwLock` guards the segment map. Reads share it; appends, rolls and
//! deletions take it exclusively. Batch validation runs before the lock is taken, fsyncs run
//! after it is released, and the cleaner holds it only to swap finished segments in.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use super::config::{LogConfig, MessageTimestampType};
use super::epochs::{LeaderEpochCache, UNDEFINED_EPOCH};
use super::error::{io_at, StorageError};
use super::producer_state::{AbortedTxn, ProducerEntry, ProducerState, ProducerStateError};
use super::segment::{
    parse_segment_name, segment_path, BatchScanner, ScanError, Segment, INDEX_SUFFIX, LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
};
use crate::record::batch::{self, BatchError, BatchHeader, BatchIter, Compression, TimestampType};
use crate::record::control::{control_marker, encode_marker, Marker};
use crate::record::records::{decode_batch, Record};
use crate::record::validate::{validate_batches, AppendOrigin};
use crate::time::SharedClock;
use crate::types::{LeaderEpoch, Offset, TopicPartition};

/// The per-partition checkpoint file: recovery point, log start offset, cleaner position and
/// whether the log was closed cleanly.
const CHECKPOINT_FILE: &str = "partition.checkpoint";
const CHECKPOINT_HEADER: &str = "rill-partition-checkpoint v1";
/// Idempotent producers' state as of a fully flushed log end (see `producer_state.rs`).
const PRODUCER_SNAPSHOT: &str = "producer.snapshot";
/// The leader-epoch cache (Kafka's file name and text format; see `epochs.rs`).
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

/// Suffixes of the cleaner's in-flight files (see `cleaner`).
pub(crate) const CLEANED_SUFFIX: &str = "cleaned";
pub(crate) const SWAP_SUFFIX: &str = "swap";

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset given to the first record.
    pub base_offset: Offset,
    /// Offset given to the last record.
    pub last_offset: Offset,
    /// The broker time stamped into the batches under `LogAppendTime`; -1 under `CreateTime`
    /// (Kafka's convention for produce responses).
    pub log_append_time_ms: i64,
    /// The largest timestamp among the appended batches.
    pub max_timestamp_ms: i64,
    pub record_count: u64,
    pub bytes: u64,
    /// The batch was a retry of an idempotent producer's batch already in the log: nothing was
    /// written and the offsets are the original ones.
    pub duplicate: bool,
    /// Under [`PartitionLog::append_verified_deferring_sync`]: an fsync is due before this
    /// append may be acknowledged (`flush.messages` / `flush.ms` reached, or a duplicate on a
    /// log that fsyncs), left to the caller's [`PartitionLog::flush_to`]. Otherwise the append
    /// has fsynced what was due before returning, and this is false.
    pub sync_due: bool,
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole batches in Kafka's format, starting with the batch that holds the requested offset
    /// (which may start before it). Empty at the log end.
    pub records: Bytes,
    pub log_start_offset: Offset,
    pub log_end_offset: Offset,
}

/// A read buffer reused across reads: its memory is kept, and not zeroed again, between them.
#[derive(Debug, Default)]
pub struct ReadBuf {
    data: Vec<u8>,
    len: usize,
}

impl ReadBuf {
    /// The batches of the last read.
    pub fn as_slice(&self) -> &[u8] {
        &self.data[..self.len]
    }

    /// The first `n` bytes, growing (and zeroing) the memory only the first time it is needed.
    fn prepare(&mut self, n: usize) -> &mut [u8] {
        if self.data.len() < n {
            self.data.resize(n, 0);
        }
        &mut self.data[..n]
    }
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub recovery_point: i64,
    pub log_start_offset: i64,
    pub cleaner_offset: i64,
    pub clean_shutdown: bool,
    /// The high watermark when the checkpoint was written (absent in files written before
    /// replication): a lower bound of the true one, as Kafka's `replication-offset-checkpoint`.
    pub high_watermark: Option<i64>,
}

impl Checkpoint {
    fn read(dir: &Path) -> Option<Checkpoint> {
        let text = fs::read_to_string(dir.join(CHECKPOINT_FILE)).ok()?;
        let mut lines = text.lines();
        if lines.next()? != CHECKPOINT_HEADER {
            return None;
        }
        let mut field = |name: &str| -> Option<i64> {
            let (k, v) = lines.next()?.split_once('=')?;
            (k == name).then(|| v.parse().ok()).flatten()
        };
        Some(Checkpoint {
            recovery_point: field("recovery_point")?,
            log_start_offset: field("log_start_offset")?,
            cleaner_offset: field("cleaner_offset")?,
            clean_shutdown: field("clean_shutdown")? == 1,
            high_watermark: field("high_watermark"),
        })
    }

    /// Writes atomically: a temporary file, fsync, rename, fsync of the directory.
    fn write(&self, dir: &Path) -> io::Result<()> {
        let mut text = format!(
            "{CHECKPOINT_HEADER}\nrecovery_point={}\nlog_start_offset={}\ncleaner_offset={}\nclean_shutdown={}\n",
            self.recovery_point,
            self.log_start_offset,
            self.cleaner_offset,
            u8::from(self.clean_shutdown)
        );
        if let Some(hw) = self.high_watermark {
            text.push_str(&format!("high_watermark={hw}\n"));
        }
        write_atomically(dir, CHECKPOINT_FILE, text.as_bytes())
    }
}

/// Replaces `dir/name` with `bytes` so a crash leaves either the old or the new file.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) struct LogState {
    pub config: LogConfig,
    pub segments: BTreeMap<i64, Segment>,
    pub log_start_offset: i64,
    /// Everything below this offset is fsynced.
    pub recovery_point: i64,
    /// The cleaner has compacted everything below this offset.
    pub cleaner_offset: i64,
    pub leader_epoch: LeaderEpoch,
    /// The offset at which each leader epoch began (persisted in `leader-epoch-checkpoint`
    /// before any batch of a new epoch is written, so it is never behind the log).
    pub epochs: LeaderEpochCache,
    /// Offsets below this are replicated to the in-sync replicas: what consumers may read.
    /// While the log is not [`replicated`](Self::replicated) it follows the log end.
    pub high_watermark: i64,
    /// Whether a replication layer sets the high watermark (a partition with followers);
    /// otherwise every append moves it to the log end (one replica, or no cluster).
    pub replicated: bool,
    /// When the oldest append not yet fsynced happened (for `flush.ms`).
    pub first_unflushed_ms: Option<i64>,
    /// Bumped whenever segments are removed or replaced, so the cleaner can tell whether the
    /// segments it read are still the ones in the log.
    pub structure_version: u64,
    /// Bumped by every truncation, so a flush that started before one cannot claim durability
    /// for offsets the truncation replaced.
    pub truncations: u64,
    /// Idempotent producers' sequence state, updated with every append.
    pub producers: ProducerState,
    pub closed: bool,
}

impl LogState {
    pub fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// The high watermark: the log end while the log is not replicated.
    pub fn high_watermark(&self) -> i64 {
        if self.replicated {
            self.high_watermark
        } else {
            self.log_end_offset()
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }
}

/// One partition's log on disk. Shareable across threads (`Arc<PartitionLog>`).
pub struct PartitionLog {
    dir: PathBuf,
    tp: TopicPartition,
    clock: SharedClock,
    pub(crate) state: RwLock<LogState>,
    /// Held by the cleaner while it works on this log, so two cleaners never race.
    pub(crate) cleaning: Mutex<()>,
    /// Held by [`flush_to`](Self::flush_to) while it fsyncs, so appends waiting for the same
    /// fsync share it (group commit) instead of each running its own.
    syncing: Mutex<()>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("tp", &self.tp)
            .field("dir", &self.dir)
            .finish()
    }
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering from an unclean shutdown: segments from
    /// the one holding the recovery point onwards are re-verified batch by batch, a torn or
    /// corrupt tail is truncated, and missing or inconsistent indexes are rebuilt.
    pub fn open(
        dir: impl Into<PathBuf>,
        tp: TopicPartition,
        config: LogConfig,
        clock: SharedClock,
    ) -> Result<PartitionLog, StorageError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let now = clock.now_ms();
        let checkpoint = Checkpoint::read(&dir);
        let bases = prepare_dir(&dir).map_err(io_at(&dir))?;
        let clean = checkpoint.is_some_and(|c| c.clean_shutdown);
        let recovery_point = checkpoint.map_or(0, |c| c.recovery_point);
        // Everything from the segment holding the recovery point onward is re-verified.
        let recover_from = bases
            .iter()
            .rev()
            .find(|b| **b <= recovery_point)
            .copied()
            .unwrap_or(0);

        let mut segments = BTreeMap::new();
        let mut cut_at: Option<i64> = None;
        for base in bases {
            if cut_at.is_some() {
                // A segment before this one lost its tail: what follows is after a hole.
                tracing::warn!(%tp, segment = base, "deleting segment after a truncated one");
                for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                    remove_if_exists(&segment_path(&dir, base, suffix)).map_err(io_at(&dir))?;
                }
                continue;
            }
            let trust = clean || base < recover_from;
            let (seg, report) = Segment::open(&dir, base, trust, config.index_interval_bytes)
                .map_err(io_at(segment_path(&dir, base, LOG_SUFFIX)))?;
            if report.truncated_bytes > 0 {
                tracing::warn!(%tp, segment = base, bytes = report.truncated_bytes, "recovered a torn or corrupt segment tail");
                seg.flush().map_err(io_at(&dir))?;
                // Past the recovery point nothing after a torn write can be trusted (Kafka does
                // the same); a damaged segment below it leaves fsynced later segments alone.
                if !trust {
                    cut_at = Some(base);
                }
            } else if !trust {
                seg.flush().map_err(io_at(&dir))?;
            }
            segments.insert(base, seg);
        }
        // A segment reaching into the next one's offsets (damage, or a bug) would serve offsets
        // twice; the later segment wins, as it holds the later writes.
        let bases: Vec<i64> = segments.keys().copied().collect();
        for pair in bases.windows(2) {
            let (this, next_base) = (pair[0], pair[1]);
            let seg = segments.get_mut(&this).expect("listed");
            if seg.next_offset() > next_base {
                tracing::warn!(%tp, segment = this, next_base, "segment overlaps the next one; truncating it");
                seg.truncate_to(next_base, config.index_interval_bytes)
                    .map_err(|e| StorageError::Corrupt {
                        tp: tp.clone(),
                        segment_base: this,
                        position: 0,
                        reason: e.to_string(),
                    })?;
            }
        }
        // Empty segments other than the last hold nothing and would only confuse lookups.
        let last = segments.keys().next_back().copied();
        let empty: Vec<i64> = segments
            .iter()
            .filter(|(b, s)| s.is_empty() && Some(**b) != last)
            .map(|(b, _)| *b)
            .collect();
        for b in empty {
            if let Some(s) = segments.remove(&b) {
                s.delete().map_err(io_at(&dir))?;
            }
        }
        let checkpoint_start = checkpoint.map_or(0, |c| c.log_start_offset);
        if segments.is_empty() {
            let base = checkpoint_start.max(0);
            segments.insert(base, Segment::create(&dir, base, now).map_err(io_at(&dir))?);
        }
        let first_base = *segments.keys().next().expect("non-empty");
        let leo = segments
            .values()
            .next_back()
            .expect("non-empty")
            .next_offset();
        let log_start_offset = checkpoint_start.max(first_base).min(leo);
        let high_watermark = checkpoint
            .and_then(|c| c.high_watermark)
            .unwrap_or(leo)
            .clamp(log_start_offset, leo);
        let state = LogState {
            config,
            segments,
            log_start_offset,
            recovery_point: leo,
            cleaner_offset: checkpoint
                .map_or(0, |c| c.cleaner_offset)
                .clamp(log_start_offset, leo),
            leader_epoch: LeaderEpoch(0),
            epochs: LeaderEpochCache::new(),
            high_watermark,
            replicated: false,
            first_unflushed_ms: None,
            structure_version: 0,
            truncations: 0,
            producers: ProducerState::default(),
            closed: false,
        };
        let log = PartitionLog {
            dir,
            tp,
            clock,
            state: RwLock::new(state),
            cleaning: Mutex::new(()),
            syncing: Mutex::new(()),
        };
        log.load_producer_state()?;
        log.load_epochs()?;
        // From here until a clean close, a crash must be treated as unclean.
        log.write_checkpoint(&log.read_state(), false)?;
        Ok(log)
    }

    /// Rebuilds the producer state: the snapshot if it is sound and not ahead of the log, then
    /// every batch after it (from the log start without one).
    fn load_producer_state(&self) -> Result<(), StorageError> {
        let path = self.dir.join(PRODUCER_SNAPSHOT);
        let snapshot = fs::read(&path).ok().and_then(|b| ProducerState::decode(&b));
        let mut st = self.write_state();
        let leo = st.log_end_offset();
        let (mut producers, from) = match snapshot {
            Some((p, offset)) if offset <= leo && offset >= 0 => {
                (p, offset.max(st.log_start_offset))
            }
            _ => (ProducerState::default(), st.log_start_offset),
        };
        let mut replayed = 0u64;
        for seg in st.segments.values() {
            if seg.next_offset() <= from {
                continue;
            }
            let Some((pos, _)) = seg.find_batch(from).map_err(|e| self.scan_error(seg, e))? else {
                continue;
            };
            let mut scanner = BatchScanner::new(seg.file(), pos, seg.size());
            while let Some((h, _, bytes)) =
                scanner.next_batch().map_err(|e| self.scan_error(seg, e))?
            {
                if h.last_offset() >= from {
                    apply_to_producers(&mut producers, &h, bytes);
                    replayed += 1;
                }
            }
        }
        if replayed > 0 || !producers.is_empty() {
            tracing::debug!(tp = %self.tp, producers = producers.len(), replayed, "producer state loaded");
        }
        st.producers = producers;
        Ok(())
    }

    /// Loads the leader-epoch cache from its checkpoint, trimmed to the log's offsets (a crash
    /// may have lost the tail the last epochs began in). Without a sound checkpoint (a log
    /// from before replication, or a damaged file) it is rebuilt from the batches' headers.
    fn load_epochs(&self) -> Result<(), StorageError> {
        let path = self.dir.join(LEADER_EPOCH_CHECKPOINT);
        let loaded = match fs::read_to_string(&path) {
            Ok(text) => match LeaderEpochCache::parse_checkpoint(&text) {
                Ok(cache) => Some(cache),
                Err(e) => {
                    tracing::warn!(tp = %self.tp, error = %e, "unreadable leader-epoch checkpoint; rebuilding it from the log");
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_at(&path)(e)),
        };
        let mut st = self.write_state();
        let (start, leo) = (st.log_start_offset, st.log_end_offset());
        let mut cache = match loaded {
            Some(cache) => cache,
            None => {
                let mut cache = LeaderEpochCache::new();
                for seg in st.segments.values() {
                    let mut scanner = BatchScanner::new(seg.file(), 0, seg.size());
                    while let Some((h, _, _)) =
                        scanner.next_batch().map_err(|e| self.scan_error(seg, e))?
                    {
                        if h.partition_leader_epoch >= 0 {
                            // Headers of a sound log are in order; a refusal cannot happen.
                            let _ = cache.assign(h.partition_leader_epoch, h.base_offset);
                        }
                    }
                }
                cache
            }
        };
        let trimmed = cache.truncate_from_end(leo) | cache.truncate_from_start(start);
        if let Some(latest) = cache.latest_epoch() {
            st.leader_epoch = LeaderEpoch(latest);
        }
        st.epochs = cache;
        if trimmed || !path.exists() {
            self.write_epochs(&st)?;
        }
        Ok(())
    }

    /// Writes `leader-epoch-checkpoint` (atomically, fsynced).
    fn write_epochs(&self, st: &LogState) -> Result<(), StorageError> {
        write_atomically(
            &self.dir,
            LEADER_EPOCH_CHECKPOINT,
            st.epochs.encode_checkpoint().as_bytes(),
        )
        .map_err(io_at(self.dir.join(LEADER_EPOCH_CHECKPOINT)))
    }

    /// Records that `epoch` begins at `start_offset` and persists the cache if that changed
    /// it, before the batch is written: the checkpoint is never behind the log.
    fn assign_epoch(
        &self,
        st: &mut LogState,
        epoch: i32,
        start_offset: i64,
    ) -> Result<(), StorageError> {
        if epoch == UNDEFINED_EPOCH {
            return Ok(());
        }
        let changed =
            st.epochs
                .assign(epoch, start_offset)
                .map_err(|source| StorageError::Epoch {
                    tp: self.tp.clone(),
                    source,
                })?;
        if changed {
            self.write_epochs(st)?;
        }
        Ok(())
    }

    /// Writes the producer snapshot for a fully flushed log (so it never covers data a crash
    /// could lose): temp file, fsync, rename.
    fn write_producer_snapshot(&self, st: &LogState) -> Result<(), StorageError> {
        let leo = st.log_end_offset();
        if st.recovery_point < leo {
            return Ok(());
        }
        let path = self.dir.join(PRODUCER_SNAPSHOT);
        let tmp = self.dir.join(format!("{PRODUCER_SNAPSHOT}.tmp"));
        let bytes = st.producers.encode(leo);
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(io_at(&path))
    }

    /// Calls `f` with every record from the log start to the log end, in offset order (past
    /// compaction holes). Control batches' records are included; callers that keep state
    /// from a compacted topic read it this way on start.
    pub fn scan_records(&self, mut f: impl FnMut(Record)) -> Result<(), StorageError> {
        self.scan_batches(|_, records| records.into_iter().for_each(&mut f))
    }

    /// [`scan_records`](Self::scan_records) a batch at a time, with the batch's header: a
    /// coordinator loading transactional state needs each record's producer and whether its
    /// batch is transactional or a marker.
    pub fn scan_batches(
        &self,
        mut f: impl FnMut(&BatchHeader, Vec<Record>),
    ) -> Result<(), StorageError> {
        let mut next = self.log_start_offset().0;
        let end = self.log_end_offset().0;
        while next < end {
            let r = self.read(Offset(next), 1 << 20)?;
            let before = next;
            for item in BatchIter::new(&r.records) {
                let (h, bytes, _) = item?;
                if h.next_offset() <= next {
                    continue;
                }
                let (h, records) = decode_batch(bytes)?;
                let records: Vec<Record> =
                    records.into_iter().filter(|r| r.offset >= next).collect();
                // Past any compaction hole at the end of the batch.
                next = h.next_offset();
                f(&h, records);
            }
            if next == before {
                break;
            }
        }
        Ok(())
    }

    /// The sequence an idempotent producer's next batch here starts at: a coordinator writing
    /// on a producer's behalf (transactional offset commits) keeps its sequences in order.
    pub fn next_sequence(&self, producer_id: i64, producer_epoch: i16) -> i32 {
        match self.read_state().producers.get(producer_id) {
            Some(e) if e.epoch == producer_epoch => e.batches.back().map_or(0, |b| {
                if b.last_seq == i32::MAX {
                    0
                } else {
                    b.last_seq + 1
                }
            }),
            _ => 0,
        }
    }

    /// Appends a transaction marker (commit or abort) for `producer_id`, ending its open
    /// transaction in this partition; returns the marker's offset.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        coordinator_epoch: i32,
    ) -> Result<Offset, StorageError> {
        let mut batch = encode_marker(
            producer_id,
            producer_epoch,
            marker,
            coordinator_epoch,
            self.clock.now_ms(),
        )?;
        Ok(self.append(&mut batch)?.base_offset)
    }

    /// The last stable offset: below it every transaction has ended, and it never passes the
    /// high watermark (it is the high watermark when no transaction is open). `read_committed`
    /// reads stop here.
    pub fn last_stable_offset(&self) -> Offset {
        let st = self.read_state();
        let hw = st.high_watermark();
        Offset(
            st.producers
                .first_unstable_offset()
                .map_or(hw, |u| u.min(hw)),
        )
    }

    /// Aborted transactions overlapping `[from, to)`, for `read_committed` fetches.
    pub fn aborted_transactions(&self, from: Offset, to: Offset) -> Vec<AbortedTxn> {
        self.read_state().producers.aborted_in(from.0, to.0)
    }

    /// Forgets idle producers (`producer.id.expiration.ms`); returns how many.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.write_state().producers.expire(now_ms, expiration_ms)
    }

    /// Whether `producer_id` has an open transaction in this partition.
    pub fn in_transaction(&self, producer_id: i64) -> bool {
        self.read_state().producers.in_transaction(producer_id)
    }

    /// Every producer the partition knows, with the first offset of its open transaction.
    pub fn producers(&self) -> Vec<(i64, ProducerEntry, Option<i64>)> {
        let st = self.read_state();
        let mut all: Vec<_> = st
            .producers
            .producers()
            .map(|(id, e, open)| (id, e.clone(), open))
            .collect();
        all.sort_by_key(|(id, _, _)| *id);
        all
    }

    /// What the partition knows of an idempotent producer.
    pub fn producer(&self, producer_id: i64) -> Option<ProducerEntry> {
        self.read_state().producers.get(producer_id).cloned()
    }

    /// The partition's state. A panic while it was locked may have left it half-updated (a
    /// roll, a truncation, producer state): the partition is then closed to writes (they fail
    /// with KAFKA_STORAGE_ERROR) and no checkpoint or snapshot is written from it, so the next
    /// start recovers it from the files, as after a crash. Reads go on.
    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, LogState> {
        if self.state.is_poisoned() {
            drop(self.write_state());
        }
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write_state(&self) -> RwLockWriteGuard<'_, LogState> {
        match self.state.write() {
            Ok(g) => g,
            Err(poisoned) => {
                tracing::error!(tp = %self.tp, "a panic poisoned this partition's state; closing it to writes until a restart recovers it");
                let mut g = poisoned.into_inner();
                g.closed = true;
                self.state.clear_poison();
                g
            }
        }
    }

    pub(crate) fn write_checkpoint(&self, st: &LogState, clean: bool) -> Result<(), StorageError> {
        Checkpoint {
            recovery_point: st.recovery_point,
            log_start_offset: st.log_start_offset,
            cleaner_offset: st.cleaner_offset,
            clean_shutdown: clean,
            high_watermark: Some(st.high_watermark()),
        }
        .write(&self.dir)
        .map_err(io_at(&self.dir))
    }

    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.read_state().config.clone()
    }

    /// Replaces the configuration; it applies from the next operation on.
    pub fn set_config(&self, config: LogConfig) {
        self.write_state().config = config;
    }

    /// This replica leads from `epoch` on: appended batches carry it, and the epoch begins
    /// at the log end now, before any append (Kafka's `maybeAssignEpochStartOffset` when a
    /// replica becomes leader), so `OffsetForLeaderEpoch` answers for it at once.
    pub fn set_leader_epoch(&self, epoch: LeaderEpoch) -> Result<(), StorageError> {
        let mut st = self.write_state();
        if st.closed {
            return Err(StorageError::Closed(self.tp.clone()));
        }
        st.leader_epoch = epoch;
        let leo = st.log_end_offset();
        self.assign_epoch(&mut st, epoch.0, leo)
    }

    /// The epoch of the latest batch (or of the last [`set_leader_epoch`](Self::set_leader_epoch)).
    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.read_state().leader_epoch
    }

    /// The latest epoch in the leader-epoch cache, if any batch carried one.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.read_state().epochs.latest_epoch()
    }

    /// `OffsetForLeaderEpoch` for this log: the largest epoch at or below `epoch` and the
    /// offset where it ended (the start of the next epoch, or the log end for the latest);
    /// `(-1, -1)` when no such epoch is known (see [`LeaderEpochCache::end_offset_for`]).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let st = self.read_state();
        st.epochs.end_offset_for(epoch, st.log_end_offset())
    }

    /// The leader-epoch cache as it stands (for tests and tools).
    pub fn epoch_entries(&self) -> Vec<super::epochs::EpochEntry> {
        self.read_state().epochs.entries()
    }

    /// The high watermark: offsets below it are on every in-sync replica, and only they are
    /// served to consumers. The log end while the log is not replicated.
    pub fn high_watermark(&self) -> Offset {
        Offset(self.read_state().high_watermark())
    }

    /// Hands the high watermark to a replication layer (`on`: it calls
    /// [`set_high_watermark`](Self::set_high_watermark) from now on, starting from the last
    /// checkpointed value) or takes it back (`off`: it follows the log end again).
    pub fn set_replicated(&self, on: bool) {
        let mut st = self.write_state();
        if !on {
            st.high_watermark = st.log_end_offset();
        }
        st.replicated = on;
    }

    /// Sets the high watermark of a replicated log, kept within `[log start, log end]`; a
    /// follower takes its leader's (which may be below its own after a leader change, as in
    /// Kafka). Returns the value set. Ignored while the log is not replicated.
    pub fn set_high_watermark(&self, hw: Offset) -> Offset {
        let mut st = self.write_state();
        if st.replicated {
            let leo = st.log_end_offset();
            st.high_watermark = hw.0.clamp(st.log_start_offset.min(leo), leo);
        }
        Offset(st.high_watermark())
    }

    pub fn log_start_offset(&self) -> Offset {
        Offset(self.read_state().log_start_offset)
    }

    pub fn log_end_offset(&self) -> Offset {
        Offset(self.read_state().log_end_offset())
    }

    /// Offsets below this are fsynced.
    pub fn recovery_point(&self) -> Offset {
        Offset(self.read_state().recovery_point)
    }

    pub fn size_bytes(&self) -> u64 {
        self.read_state().size_bytes()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<Offset> {
        self.read_state()
            .segments
            .keys()
            .map(|b| Offset(*b))
            .collect()
    }

    fn corrupt(&self, seg: &Segment, position: u64, reason: impl ToString) -> StorageError {
        let reason = reason.to_string();
        tracing::error!(tp = %self.tp, segment = seg.base_offset, position, %reason, "corrupt data found");
        StorageError::Corrupt {
            tp: self.tp.clone(),
            segment_base: seg.base_offset,
            position,
            reason,
        }
    }

    fn scan_error(&self, seg: &Segment, e: ScanError) -> StorageError {
        match e {
            ScanError::Io(io) => io_at(segment_path(&self.dir, seg.base_offset, LOG_SUFFIX))(io),
            other => self.corrupt(seg, 0, other),
        }
    }

    /// Validates `records` (one or more v2 batches back to back, as a producer sends them),
    /// assigns their offsets by rewriting each base offset and leader epoch in place, and appends
    /// them. Nothing is written if any batch is invalid. Under `flush.messages` / `flush.ms` the
    /// data is fsynced before this returns.
    /// Control batches are accepted: this is the coordinators' path (and the tests'); a
    /// producer's request goes through [`append_verified`](Self::append_verified).
    pub fn append(&self, records: &mut [u8]) -> Result<AppendInfo, StorageError> {
        self.append_from(records, AppendOrigin::Coordinator, &|_| Ok(()), false)
    }

    /// [`append`](Self::append), with KIP-890's defence against hanging transactions: a
    /// transactional batch of a producer with no open transaction in this partition (the first
    /// batch of a transaction here) is appended only if `verify` (the transaction coordinator)
    /// confirms that the producer's ongoing transaction holds this partition. The check and the
    /// append happen under the partition's lock, so no marker can slip between them. The
    /// records are a client's: control batches are refused (Kafka's `AppendOrigin.CLIENT`).
    pub fn append_verified(
        &self,
        records: &mut [u8],
        verify: &dyn Fn(&BatchHeader) -> Result<(), ProducerStateError>,
    ) -> Result<AppendInfo, StorageError> {
        self.append_from(records, AppendOrigin::Client, verify, false)
    }

    /// [`append_verified`](Self::append_verified), leaving a due fsync to the caller
    /// ([`AppendInfo::sync_due`], then [`flush_to`](Self::flush_to) before acknowledging):
    /// the broker takes the connection's next request while the disk works, and one fsync
    /// covers the appends made meanwhile.
    pub fn append_verified_deferring_sync(
        &self,
        records: &mut [u8],
        verify: &dyn Fn(&BatchHeader) -> Result<(), ProducerStateError>,
    ) -> Result<AppendInfo, StorageError> {
        self.append_from(records, AppendOrigin::Client, verify, true)
    }

    /// Fsyncs the log up to at least `upto` (exclusive), unless that is durable already: an
    /// fsync by someone else that began after those appends covers them too (group commit).
    pub fn flush_to(&self, upto: Offset) -> Result<(), StorageError> {
        if self.read_state().recovery_point >= upto.0 {
            return Ok(());
        }
        let _one_at_a_time = crate::sync::plain(&self.syncing);
        if self.read_state().recovery_point >= upto.0 {
            return Ok(());
        }
        self.flush()
    }

    fn append_from(
        &self,
        records: &mut [u8],
        origin: AppendOrigin,
        verify: &dyn Fn(&BatchHeader) -> Result<(), ProducerStateError>,
        defer_sync: bool,
    ) -> Result<AppendInfo, StorageError> {
        let now = self.clock.now_ms();
        let (max_message_bytes, keys_required, codec, time_bounds) = {
            let st = self.read_state();
            let c = &st.config;
            let create_time = c.message_timestamp_type == MessageTimestampType::CreateTime;
            let bounds = (c.earliest_timestamp(now), c.latest_timestamp(now));
            (
                c.max_message_bytes,
                c.cleanup_policy.compact,
                c.compression_type
                    .map(|codec| (codec, c.compression_level(codec))),
                // LogAppendTime replaces the producer's timestamps, so they are not checked.
                (create_time && bounds != (None, None)).then_some(bounds),
            )
        };
        let mut batches = validate_batches(records, max_message_bytes, keys_required, origin)?;
        if let Some((earliest, latest)) = time_bounds {
            check_timestamps(
                records,
                &batches,
                earliest.unwrap_or(i64::MIN),
                latest.unwrap_or(i64::MAX),
            )?;
        }
        // Recompressed batches are new bytes; they live here until appended.
        let mut rewritten: Vec<u8>;
        let recompressed = match codec {
            Some((codec, level)) => recompress_batches(records, &batches, codec, level)?,
            None => None,
        };
        let records: &mut [u8] = match recompressed {
            Some(out) => {
                rewritten = out;
                // Sizes changed: check (and locate) the batches as they will be stored.
                batches = validate_batches(&rewritten, max_message_bytes, keys_required, origin)?;
                &mut rewritten
            }
            None => records,
        };
        let offsets: i64 = batches.iter().map(|(h, _)| i64::from(h.record_count)).sum();
        let record_count = offsets as u64;

        let mut st = self.write_state();
        if st.closed {
            return Err(StorageError::Closed(self.tp.clone()));
        }
        // Idempotent producers send one batch per request (Kafka requires it of every v2
        // producer); its sequence is checked against what the partition has seen.
        if batches
            .iter()
            .any(|(h, _)| h.producer_id >= 0 && !h.is_control())
        {
            if batches.len() != 1 {
                return Err(ProducerStateError::OneBatchOnly.into());
            }
            if let Some(dup) = st.producers.check(&batches[0].0)? {
                return Ok(AppendInfo {
                    base_offset: Offset(dup.first_offset),
                    last_offset: Offset(dup.last_offset),
                    log_append_time_ms: -1,
                    max_timestamp_ms: dup.max_timestamp,
                    record_count: 0,
                    bytes: 0,
                    duplicate: true,
                    // The original may still be waiting for its fsync on another connection.
                    sync_due: defer_sync && st.config.syncs_on_append(),
                });
            }
            let h = &batches[0].0;
            if h.is_transactional() && !st.producers.in_transaction(h.producer_id) {
                verify(h)?;
            }
        }
        self.maybe_roll(&mut st, records.len() as u64, offsets, now)?;
        let epoch = st.leader_epoch;
        let log_append = st.config.message_timestamp_type == MessageTimestampType::LogAppendTime;
        let base = st.log_end_offset();
        let mut next = base;
        let mut max_ts = -1i64;
        let mut assigned = Vec::with_capacity(batches.len());
        for (mut h, at) in batches {
            let bytes = &mut records[at..at + h.total_bytes()];
            batch::assign_offset(bytes, Offset(next), epoch);
            if !log_append && BatchHeader::parse(bytes)?.max_timestamp != h.max_timestamp {
                batch::set_max_timestamp(bytes, h.max_timestamp);
            }
            if log_append {
                batch::stamp_log_append_time(bytes, now);
                h.max_timestamp = now;
                h.attributes = BatchHeader::parse(bytes)?.attributes;
            }
            h.base_offset = next;
            h.partition_leader_epoch = epoch.0;
            next = h.next_offset();
            max_ts = max_ts.max(h.max_timestamp);
            assigned.push((h, at));
        }
        self.assign_epoch(&mut st, epoch.0, base)?;
        let flush_due = self.write_batches(&mut st, records, &assigned, now)?;
        drop(st);
        if flush_due && !defer_sync {
            self.flush()?;
        }
        Ok(AppendInfo {
            base_offset: Offset(base),
            last_offset: Offset(next - 1),
            log_append_time_ms: if log_append { now } else { -1 },
            max_timestamp_ms: max_ts,
            record_count,
            bytes: records.len() as u64,
            duplicate: false,
            sync_due: flush_due && defer_sync,
        })
    }

    /// Writes batches whose offsets and epochs are final to the active segment and updates
    /// what follows from them (producer state, the high watermark of an unreplicated log).
    /// Returns whether an fsync is due (`flush.messages` / `flush.ms`).
    fn write_batches(
        &self,
        st: &mut LogState,
        records: &[u8],
        batches: &[(BatchHeader, usize)],
        now: i64,
    ) -> Result<bool, StorageError> {
        let interval = st.config.index_interval_bytes;
        let active = st.active_mut();
        if active.is_empty() {
            // segment.ms counts from the first append, not from the roll.
            active.created_ms = now;
        }
        active
            .append(records, batches, interval)
            .map_err(io_at(segment_path(
                &self.dir,
                active.base_offset,
                LOG_SUFFIX,
            )))?;
        for (h, at) in batches {
            apply_to_producers(&mut st.producers, h, &records[*at..*at + h.total_bytes()]);
        }
        let leo = st.log_end_offset();
        if !st.replicated {
            st.high_watermark = leo;
        }
        let first_unflushed = *st.first_unflushed_ms.get_or_insert(now);
        let unflushed = (leo - st.recovery_point) as u64;
        Ok(unflushed >= st.config.flush_messages
            || now.saturating_sub(first_unflushed) >= st.config.flush_ms)
    }

    /// Appends a leader's batches as they are (a follower's append, Kafka's
    /// `appendAsFollower`): offsets and leader epochs were assigned by the leader and are
    /// kept; CRCs and framing are checked, nothing is rewritten. The batches must start at or
    /// after the log end (after it only where the leader's compaction left a gap) and their
    /// offsets must increase. Their epochs enter the leader-epoch cache. Producer state
    /// follows the batches without sequence checks (the leader made them).
    pub fn append_as_follower(&self, records: &[u8]) -> Result<AppendInfo, StorageError> {
        let now = self.clock.now_ms();
        let batches = validate_batches(records, u64::MAX, false, AppendOrigin::Replication)?;
        let mut st = self.write_state();
        if st.closed {
            return Err(StorageError::Closed(self.tp.clone()));
        }
        let leo = st.log_end_offset();
        let mut next = leo;
        for (h, _) in &batches {
            if h.base_offset < next {
                return Err(StorageError::UnexpectedOffset {
                    tp: self.tp.clone(),
                    first: h.base_offset,
                    log_end: next,
                });
            }
            next = h.next_offset();
        }
        let base = batches[0].0.base_offset;
        self.maybe_roll(&mut st, records.len() as u64, next - leo, now)?;
        for (h, _) in &batches {
            self.assign_epoch(&mut st, h.partition_leader_epoch, h.base_offset)?;
        }
        let max_ts = batches
            .iter()
            .map(|(h, _)| h.max_timestamp)
            .max()
            .unwrap_or(-1);
        let flush_due = self.write_batches(&mut st, records, &batches, now)?;
        if let Some(latest) = st.epochs.latest_epoch() {
            st.leader_epoch = LeaderEpoch(latest);
        }
        drop(st);
        if flush_due {
            self.flush()?;
        }
        Ok(AppendInfo {
            base_offset: Offset(base),
            last_offset: Offset(next - 1),
            log_append_time_ms: -1,
            max_timestamp_ms: max_ts,
            record_count: batches.iter().map(|(h, _)| h.record_count as u64).sum(),
            bytes: records.len() as u64,
            duplicate: false,
            sync_due: false,
        })
    }

    /// Rolls to a new segment if the next append of `bytes` / `offsets` calls for it.
    fn maybe_roll(
        &self,
        st: &mut LogState,
        bytes: u64,
        offsets: i64,
        now: i64,
    ) -> Result<(), StorageError> {
        let config = &st.config;
        let active = st.active();
        if active.is_empty() {
            return Ok(());
        }
        let leo = active.next_offset();
        let full = active.size() + bytes > config.segment_bytes;
        let jitter = roll_jitter_ms(&self.tp, active.base_offset, config);
        let old = now.saturating_sub(active.created_ms) >= config.segment_ms - jitter;
        let index_full = active.index_bytes() + 8 > config.segment_index_bytes;
        let offsets_overflow = !active.can_hold_offset(leo + offsets - 1);
        if full || old || index_full || offsets_overflow {
            self.roll(st, now)?;
        }
        Ok(())
    }

    /// Seals the active segment (indexes written) and starts a new one at the log end. The
    /// sealed segment is not fsynced here, which would stall appends for up to `segment.bytes`
    /// of writeback: like Kafka, rill flushes it soon after, off the append path (the
    /// `LogManager`'s flush thread; see [`flush_if_due`](Self::flush_if_due)).
    fn roll(&self, st: &mut LogState, now: i64) -> Result<(), StorageError> {
        let dir = &self.dir;
        let active = st.active_mut();
        active
            .seal(false)
            .map_err(io_at(segment_path(dir, active.base_offset, LOG_SUFFIX)))?;
        let leo = active.next_offset();
        let seg = Segment::create(dir, leo, now).map_err(io_at(dir))?;
        st.segments.insert(leo, seg);
        tracing::debug!(tp = %self.tp, base = leo, "rolled a new segment");
        Ok(())
    }

    /// Whether an append may fsync (`flush.messages` or `flush.ms` set): it can then take
    /// as long as the disk does, and the broker keeps it off its async workers.
    pub fn appends_may_sync(&self) -> bool {
        let st = self.read_state();
        st.config.syncs_on_append()
    }

    /// Whether a read from `offset` stays in the active segment, the tail consumers read
    /// (almost always in the page cache); older segments may have to come from the disk.
    pub fn reads_tail(&self, offset: Offset) -> bool {
        offset.0 >= self.read_state().active().base_offset
    }

    /// Rolls the active segment now if it holds anything (Kafka's forced roll).
    pub fn force_roll(&self) -> Result<(), StorageError> {
        let now = self.clock.now_ms();
        let mut st = self.write_state();
        if !st.active().is_empty() {
            self.roll(&mut st, now)?;
        }
        Ok(())
    }

    /// Fsyncs everything appended so far and moves the recovery point to the log end. The fsync
    /// runs without the lock, so appends continue meanwhile.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.flush_segments(false)
    }

    /// Fsyncs the log through its end, or (`sealed_only`) only the segments below the active
    /// one: what a roll leaves to flush. Kafka flushes a rolled segment so
    /// (`flushUptoOffsetExclusive(newSegment.baseOffset)`): an fsync of the active segment,
    /// which appends keep growing, would commit the file system's journal under them and
    /// stall them, for nothing `flush.ms` and `flush.messages` did not ask.
    fn flush_segments(&self, sealed_only: bool) -> Result<(), StorageError> {
        let (target, truncations, files, active_base) = {
            let st = self.read_state();
            let active_base = st.active().base_offset;
            let target = if sealed_only {
                active_base
            } else {
                st.log_end_offset()
            };
            if st.recovery_point >= target {
                return Ok(());
            }
            let from = st
                .segments
                .range(..=st.recovery_point)
                .next_back()
                .map_or(0, |(b, _)| *b);
            let files: Vec<(i64, Arc<File>)> = st
                .segments
                .range(from..)
                .filter(|(b, _)| !sealed_only || **b < active_base)
                .map(|(b, s)| (*b, Arc::clone(s.file())))
                .collect();
            (target, st.truncations, files, active_base)
        };
        for (base, file) in &files {
            file.sync_data()
                .map_err(io_at(segment_path(&self.dir, *base, LOG_SUFFIX)))?;
            // A sealed segment's indexes are trusted on the next open once it is below the
            // recovery point; make them durable with it (Kafka's LogSegment.flush does too).
            if *base != active_base {
                for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                    sync_file_if_exists(&segment_path(&self.dir, *base, suffix))?;
                }
            }
        }
        if files.len() > 1 || sealed_only {
            // A roll happened since the last flush: the new segments' directory entries too.
            sync_dir(&self.dir).map_err(io_at(&self.dir))?;
        }
        let mut st = self.write_state();
        // A truncation meanwhile may have replaced offsets below `target` with unsynced ones.
        if st.truncations == truncations && target > st.recovery_point {
            st.recovery_point = target.min(st.log_end_offset());
        }
        if st.recovery_point >= st.log_end_offset() {
            st.first_unflushed_ms = None;
        }
        Ok(())
    }

    /// Flushes the whole log if `flush.ms` has passed since the oldest unflushed append, or
    /// the rolled segments not fsynced yet (not the active one).
    pub fn flush_if_due(&self, now_ms: i64) -> Result<bool, StorageError> {
        let (timed, rolled) = {
            let st = self.read_state();
            let timed = st
                .first_unflushed_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= st.config.flush_ms);
            (timed, st.recovery_point < st.active().base_offset)
        };
        if timed || rolled {
            self.flush_segments(!timed)?;
        }
        Ok(timed || rolled)
    }

    /// Reads whole batches starting with the one that holds `from`, up to `max_bytes`; if that
    /// first batch alone is larger than `max_bytes` it is returned whole, as Kafka does, so a
    /// consumer always makes progress. Reads stay within one segment.
    pub fn read(&self, from: Offset, max_bytes: usize) -> Result<ReadResult, StorageError> {
        self.read_upto(from, max_bytes, None)
    }

    /// Like [`read`](Self::read), but returns no batch that starts at or after `limit` (the
    /// high watermark or last stable offset, for the broker).
    pub fn read_upto(
        &self,
        from: Offset,
        max_bytes: usize,
        limit: Option<Offset>,
    ) -> Result<ReadResult, StorageError> {
        let mut buf = ReadBuf::default();
        let (log_start_offset, log_end_offset) =
            self.read_into(from, max_bytes, limit, &mut buf)?;
        let mut data = buf.data;
        data.truncate(buf.len);
        Ok(ReadResult {
            records: Bytes::from(data),
            log_start_offset,
            log_end_offset,
        })
    }

    /// Like [`read_upto`](Self::read_upto), but into a buffer the caller reuses across reads,
    /// which saves allocating and zeroing memory on every read. Returns the log start and end
    /// offsets; the batches are `buf.as_slice()`.
    pub fn read_into(
        &self,
        from: Offset,
        max_bytes: usize,
        limit: Option<Offset>,
        buf: &mut ReadBuf,
    ) -> Result<(Offset, Offset), StorageError> {
        buf.len = 0;
        let st = self.read_state();
        let leo = st.log_end_offset();
        if from.0 < st.log_start_offset || from.0 > leo {
            return Err(StorageError::OffsetOutOfRange {
                tp: self.tp.clone(),
                requested: from.0,
                log_start: st.log_start_offset,
                log_end: leo,
            });
        }
        let limit = limit.map_or(leo, |l| l.0.min(leo));
        if from.0 < limit {
            let floor = st
                .segments
                .range(..=from.0)
                .next_back()
                .map_or(i64::MIN, |(b, _)| *b);
            for seg in st.segments.range(floor..).map(|(_, s)| s) {
                let found = seg
                    .find_batch(from.0)
                    .map_err(|e| self.scan_error(seg, e))?;
                if let Some((pos, first)) = found {
                    if first.base_offset < limit {
                        self.read_batches(seg, pos, &first, max_bytes, limit, buf)?;
                    }
                    break;
                }
            }
        }
        Ok((Offset(st.log_start_offset), Offset(leo)))
    }

    /// Reads the batches from `pos` that fit in `max_bytes` (at least the first). Batches of a
    /// segment not yet verified in this process get their CRC checked, so corrupt bytes on
    /// disk are never served; verified segments only get their framing checked (their CRCs
    /// were computed when they were appended or recovered, and consumers check them again).
    fn read_batches(
        &self,
        seg: &Segment,
        pos: u64,
        first: &BatchHeader,
        max_bytes: usize,
        limit: i64,
        out: &mut ReadBuf,
    ) -> Result<(), StorageError> {
        let available = (seg.size() - pos) as usize;
        let first_bytes = first.total_bytes();
        if first_bytes > available {
            return Err(self.corrupt(seg, pos, "batch runs past the end of its segment"));
        }
        let len = max_bytes.max(first_bytes).min(available);
        let buf = out.prepare(len);
        seg.read_into(pos, buf).map_err(io_at(segment_path(
            &self.dir,
            seg.base_offset,
            LOG_SUFFIX,
        )))?;
        let mut end = 0usize;
        let batches: Box<dyn Iterator<Item = _>> = if seg.verified {
            Box::new(batch::FramedIter::new(buf))
        } else {
            Box::new(BatchIter::new(buf))
        };
        for item in batches {
            match item {
                Ok((h, _, at)) => {
                    if h.base_offset >= limit {
                        break;
                    }
                    end = at + h.total_bytes();
                }
                // The read length cut this batch; the next read starts with it.
                Err(BatchError::Truncated { .. }) if end > 0 => break,
                Err(e) if end == 0 => return Err(self.corrupt(seg, pos, e)),
                Err(e) => {
                    // Serve what verified; the next read starts at the bad batch and reports it.
                    tracing::error!(tp = %self.tp, segment = seg.base_offset, position = pos + end as u64, error = %e, "corrupt batch; serving the batches before it");
                    break;
                }
            }
        }
        out.len = end;
        Ok(())
    }

    /// The first record (offset and timestamp) whose timestamp is `>= ts_ms`, in offset order,
    /// or `None` if no record is that recent. Kafka's ListOffsets by timestamp.
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<(Offset, i64)>, StorageError> {
        let st = self.read_state();
        for seg in st.segments.values() {
            if seg.max_timestamp_ms() < ts_ms || seg.next_offset() <= st.log_start_offset {
                continue;
            }
            let pos = seg
                .time_lookup_position(ts_ms)
                .map_err(|e| self.scan_error(seg, e))?;
            let mut scanner = BatchScanner::new(seg.file(), pos, seg.size());
            while let Some((h, at, bytes)) =
                scanner.next_batch().map_err(|e| self.scan_error(seg, e))?
            {
                if h.max_timestamp < ts_ms || h.last_offset() < st.log_start_offset {
                    continue;
                }
                let (_, recs) = decode_batch(bytes).map_err(|e| self.corrupt(seg, at, e))?;
                let hit = recs.iter().find(|r| {
                    r.offset >= st.log_start_offset
                        && (r.timestamp_ms >= ts_ms
                            || h.timestamp_type() == TimestampType::LogAppendTime)
                });
                if let Some(r) = hit {
                    return Ok(Some((Offset(r.offset), r.timestamp_ms)));
                }
            }
        }
        Ok(None)
    }

    /// The first record carrying the log's largest timestamp (offset and timestamp), or `None`
    /// for an empty log. Kafka's ListOffsets with -3 (KIP-734).
    pub fn offset_of_max_timestamp(&self) -> Result<Option<(Offset, i64)>, StorageError> {
        let max_ts = {
            let st = self.read_state();
            st.segments
                .values()
                .filter(|seg| seg.next_offset() > st.log_start_offset)
                .map(|seg| seg.max_timestamp_ms())
                .max()
                .unwrap_or(-1)
        };
        if max_ts < 0 {
            return Ok(None);
        }
        // No record is later than `max_ts`, so the first at or after it carries it.
        self.offset_for_timestamp(max_ts)
    }

    /// Removes every batch that holds an offset `>= to` (replication's truncation). When `to`
    /// falls inside a batch, that whole batch goes, so the new log end is its base offset.
    /// When nothing at or above the log start would remain (`to` at or below the log start, or
    /// inside a batch that starts below it), the log empties and restarts at `to`.
    /// Returns the new log end offset.
    pub fn truncate_to(&self, to: Offset) -> Result<Offset, StorageError> {
        let now = self.clock.now_ms();
        let mut st = self.write_state();
        if st.closed {
            return Err(StorageError::Closed(self.tp.clone()));
        }
        let leo = st.log_end_offset();
        if to.0 >= leo {
            // Nothing to cut, but an epoch this replica began as leader without appending
            // anything may sit at the log end: a new leader's history replaces it (Kafka does
            // the same).
            if st.epochs.truncate_from_end(leo) {
                self.write_epochs(&st)?;
            }
            return Ok(Offset(leo));
        }
        let first_base = *st
            .segments
            .keys()
            .next()
            .expect("a log always has a segment");
        // The batch the cut falls in goes whole; if it starts below the log start, nothing
        // visible would remain below `to`.
        let cut_below_start = st
            .segments
            .range(..=to.0)
            .next_back()
            .and_then(|(_, seg)| seg.find_batch(to.0).ok().flatten())
            .is_some_and(|(_, h)| h.base_offset < st.log_start_offset);
        // Compaction can leave the first segment starting above the log start: then nothing
        // below `to` remains either, as in Kafka's `firstSegmentBaseOffset > targetOffset`.
        if to.0 <= st.log_start_offset || to.0 <= first_base || cut_below_start {
            self.truncate_fully(&mut st, to.0.max(0), now)?;
        } else {
            let doomed: Vec<i64> = st.segments.range(to.0..).map(|(b, _)| *b).collect();
            for b in doomed {
                let seg = st.segments.remove(&b).expect("listed");
                seg.delete().map_err(io_at(&self.dir))?;
            }
            let interval = st.config.index_interval_bytes;
            let active = st.active_mut();
            active
                .truncate_to(to.0, interval)
                .map_err(|e| StorageError::Corrupt {
                    tp: self.tp.clone(),
                    segment_base: active.base_offset,
                    position: 0,
                    reason: e.to_string(),
                })?;
        }
        let new_leo = st.log_end_offset();
        st.recovery_point = st.recovery_point.min(new_leo);
        st.cleaner_offset = st.cleaner_offset.min(new_leo);
        st.high_watermark = st.high_watermark.min(new_leo);
        st.structure_version += 1;
        st.truncations += 1;
        st.producers.truncate(new_leo);
        if st.epochs.truncate_from_end(new_leo) {
            self.write_epochs(&st)?;
        }
        self.write_checkpoint(&st, false)?;
        tracing::info!(tp = %self.tp, to = to.0, log_end = new_leo, "truncated log");
        Ok(Offset(new_leo))
    }

    /// Deletes every segment and starts an empty one at `base`, which becomes the log start.
    fn truncate_fully(&self, st: &mut LogState, base: i64, now: i64) -> Result<(), StorageError> {
        for (_, seg) in std::mem::take(&mut st.segments) {
            seg.delete().map_err(io_at(&self.dir))?;
        }
        st.segments.insert(
            base,
            Segment::create(&self.dir, base, now).map_err(io_at(&self.dir))?,
        );
        st.log_start_offset = base;
        st.recovery_point = base;
        st.cleaner_offset = base;
        st.high_watermark = base;
        st.epochs = LeaderEpochCache::new();
        self.write_epochs(st)
    }

    /// Empties the log and restarts it at `offset` (Kafka's `truncateFullyAndStartAt`): a
    /// follower whose log ends below its leader's log start takes up from there.
    pub fn truncate_fully_and_start_at(&self, offset: Offset) -> Result<(), StorageError> {
        let now = self.clock.now_ms();
        let mut st = self.write_state();
        if st.closed {
            return Err(StorageError::Closed(self.tp.clone()));
        }
        self.truncate_fully(&mut st, offset.0.max(0), now)?;
        st.structure_version += 1;
        st.truncations += 1;
        st.producers.truncate(offset.0.max(0));
        st.producers.trim_aborted(offset.0.max(0));
        self.write_checkpoint(&st, false)?;
        tracing::info!(tp = %self.tp, start = offset.0, "log emptied to restart at a new offset");
        Ok(())
    }

    /// Moves the log start offset to `before` (Kafka's DeleteRecords) and deletes segments that
    /// now lie wholly below it. Reads below the new start fail with out-of-range. Returns the
    /// new log start offset (the low watermark).
    pub fn delete_records(&self, before: Offset) -> Result<Offset, StorageError> {
        let now = self.clock.now_ms();
        let mut st = self.write_state();
        if st.closed {
            return Err(StorageError::Closed(self.tp.clone()));
        }
        // Records not yet on every in-sync replica cannot be deleted (Kafka's bound too).
        let hw = st.high_watermark();
        if before.0 > hw || before.0 < 0 {
            return Err(StorageError::OffsetOutOfRange {
                tp: self.tp.clone(),
                requested: before.0,
                log_start: st.log_start_offset,
                log_end: hw,
            });
        }
        if before.0 > st.log_start_offset {
            st.log_start_offset = before.0;
            let (_, gone) = self.delete_segments_below_start(&mut st, now)?;
            st.cleaner_offset = st.cleaner_offset.max(st.log_start_offset);
            let start = st.log_start_offset;
            if st.epochs.truncate_from_start(start) {
                self.write_epochs(&st)?;
            }
            self.write_checkpoint(&st, false)?;
            drop(st);
            self.delete_files(gone)?;
            return Ok(Offset(start));
        }
        Ok(Offset(st.log_start_offset))
    }

    /// Deletes the segments whose every offset is below the log start. If that is all of them,
    /// the active segment is rolled first so the log keeps its end offset.
    /// The segments are taken out of the log here and returned: their files are deleted by
    /// [`delete_files`](Self::delete_files) once the caller has let go of the state lock (an
    /// unlink can take long — the file system may discard the blocks synchronously — and
    /// appends and reads must not wait on it; Kafka deletes asynchronously too).
    fn delete_segments_below_start(
        &self,
        st: &mut LogState,
        now: i64,
    ) -> Result<(RetentionReport, Vec<Segment>), StorageError> {
        if !st.active().is_empty() && st.log_end_offset() <= st.log_start_offset {
            self.roll(st, now)?;
        }
        let mut report = RetentionReport::default();
        let mut gone = Vec::new();
        loop {
            let mut iter = st.segments.iter();
            let (Some((first, _)), Some((second, _))) = (iter.next(), iter.next()) else {
                break;
            };
            if *second > st.log_start_offset {
                break;
            }
            let first = *first;
            let seg = st.segments.remove(&first).expect("present");
            report.segments_deleted += 1;
            report.bytes_deleted += seg.size();
            gone.push(seg);
            st.structure_version += 1;
        }
        Ok((report, gone))
    }

    /// Deletes the files of segments already taken out of the log (a crash first leaves
    /// them below the checkpointed log start, where the next retention pass deletes them).
    fn delete_files(&self, gone: Vec<Segment>) -> Result<(), StorageError> {
        for seg in gone {
            seg.delete().map_err(io_at(&self.dir))?;
        }
        Ok(())
    }

    /// Applies `retention.ms` and `retention.bytes` (when `cleanup.policy` includes `delete`):
    /// whole segments go, oldest first; the log start moves to the first remaining one.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport, StorageError> {
        let mut st = self.write_state();
        if st.closed {
            return Ok(RetentionReport::default());
        }
        let old_start = st.log_start_offset;
        let mut new_start = old_start;
        if st.config.cleanup_policy.delete {
            // Where each segment's offsets end: the next segment's base (compaction can leave a
            // gap after a segment's last batch), or the log end for the active one.
            let bases: Vec<i64> = st.segments.keys().copied().collect();
            let end_of =
                |i: usize, seg: &Segment| bases.get(i + 1).copied().unwrap_or(seg.next_offset());
            // Only what every in-sync replica has may go (Kafka's `deletableSegments`).
            let hw = st.high_watermark();
            let retention_ms = st.config.retention_ms;
            if retention_ms >= 0 {
                // Segments whose newest record is older than retention.ms, oldest first.
                for (i, seg) in st.segments.values().enumerate() {
                    if seg.is_empty() {
                        break;
                    }
                    let newest = if seg.max_timestamp_ms() >= 0 {
                        seg.max_timestamp_ms()
                    } else {
                        seg.created_ms
                    };
                    if now_ms.saturating_sub(newest) <= retention_ms || end_of(i, seg) > hw {
                        break;
                    }
                    new_start = new_start.max(end_of(i, seg));
                }
            }
            let retention_bytes = st.config.retention_bytes;
            if retention_bytes >= 0 {
                let mut excess = st.size_bytes() as i64 - retention_bytes;
                let closed = st.segments.len() - 1;
                for (i, seg) in st.segments.values().enumerate().take(closed) {
                    if excess - (seg.size() as i64) < 0 || end_of(i, seg) > hw {
                        break;
                    }
                    excess -= seg.size() as i64;
                    new_start = new_start.max(end_of(i, seg));
                }
            }
        }
        st.log_start_offset = new_start;
        let (report, gone) = self.delete_segments_below_start(&mut st, now_ms)?;
        let start = st.log_start_offset;
        st.producers.trim_aborted(start);
        if st.epochs.truncate_from_start(start) {
            self.write_epochs(&st)?;
        }
        if report.segments_deleted > 0 || st.log_start_offset != old_start {
            st.cleaner_offset = st.cleaner_offset.max(st.log_start_offset);
            self.write_checkpoint(&st, false)?;
            tracing::info!(tp = %self.tp, segments = report.segments_deleted, bytes = report.bytes_deleted, log_start = st.log_start_offset, "retention deleted segments");
        }
        drop(st);
        self.delete_files(gone)?;
        Ok(report)
    }

    /// Writes the checkpoint (recovery point, log start, cleaner offset) without closing.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        let st = self.read_state();
        if st.closed {
            // Closing wrote the final, clean checkpoint; do not mark it unclean again.
            return Ok(());
        }
        self.write_producer_snapshot(&st)?;
        self.write_checkpoint(&st, false)
    }

    /// Flushes everything, writes the indexes and marks the shutdown clean, so the next open
    /// trusts the files without re-verifying them. Later operations fail with `Closed`.
    pub fn close(&self) -> Result<(), StorageError> {
        let mut st = self.write_state();
        if st.closed {
            return Ok(());
        }
        let dir = self.dir.clone();
        // Rolled segments not yet flushed, then the active one, sealed and synced.
        let from = st
            .segments
            .range(..=st.recovery_point)
            .next_back()
            .map_or(0, |(b, _)| *b);
        for (base, seg) in st.segments.range(from..) {
            seg.flush()
                .map_err(io_at(segment_path(&dir, *base, LOG_SUFFIX)))?;
            for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                sync_file_if_exists(&segment_path(&dir, *base, suffix))?;
            }
        }
        sync_dir(&dir).map_err(io_at(&dir))?;
        let active = st.active_mut();
        active
            .seal(true)
            .map_err(io_at(segment_path(&dir, active.base_offset, LOG_SUFFIX)))?;
        st.recovery_point = st.log_end_offset();
        st.first_unflushed_ms = None;
        self.write_producer_snapshot(&st)?;
        self.write_checkpoint(&st, true)?;
        st.closed = true;
        Ok(())
    }
}

/// How much earlier than `segment.ms` the segment at `base_offset` rolls: a share of
/// `segment.jitter.ms` below `segment.ms`, fixed per segment. Kafka draws it at random; a hash
/// of the segment's identity spreads segments as well and keeps runs reproducible.
fn roll_jitter_ms(tp: &TopicPartition, base_offset: i64, config: &LogConfig) -> i64 {
    use std::hash::{Hash, Hasher};
    let bound = config.segment_jitter_ms.min(config.segment_ms);
    if bound <= 0 {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&tp.topic, tp.partition, base_offset).hash(&mut h);
    (h.finish() % bound as u64) as i64
}

/// The timestamp of a record that has none (Kafka's `RecordBatch.NO_TIMESTAMP`).
const NO_TIMESTAMP: i64 = -1;

/// Refuses a request with a record whose (CreateTime) timestamp lies outside
/// `[earliest, latest]` (`message.timestamp.before.max.ms` / `after.max.ms`), as Kafka 3.6+.
fn check_timestamps(
    records: &[u8],
    batches: &[(BatchHeader, usize)],
    earliest: i64,
    latest: i64,
) -> Result<(), BatchError> {
    for (h, at) in batches {
        if h.is_control() {
            continue;
        }
        let (_, recs) = decode_batch(&records[*at..*at + h.total_bytes()])?;
        // As Kafka, a record without a timestamp (-1) is not checked; every bad record is
        // named (KIP-467), by its index in the batch.
        let bad: Vec<(i32, i64)> = recs
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.timestamp_ms != NO_TIMESTAMP
                    && (r.timestamp_ms < earliest || r.timestamp_ms > latest)
            })
            .map(|(i, r)| (i as i32, r.timestamp_ms))
            .collect();
        if !bad.is_empty() {
            return Err(BatchError::Timestamps {
                records: bad,
                earliest,
                latest,
            });
        }
    }
    Ok(())
}

/// `records` with every data batch not stored under `codec` recompressed to it, or `None` if
/// all already are (the common case costs no copy).
fn recompress_batches(
    records: &[u8],
    batches: &[(BatchHeader, usize)],
    codec: Compression,
    level: Option<i32>,
) -> Result<Option<Vec<u8>>, BatchError> {
    let mut stale = false;
    for (h, _) in batches {
        stale |= !h.is_control() && h.compression()? != codec;
    }
    if !stale {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(records.len());
    for (h, at) in batches {
        let bytes = &records[*at..*at + h.total_bytes()];
        if h.is_control() || h.compression()? == codec {
            out.extend_from_slice(bytes);
        } else {
            out.extend_from_slice(&crate::record::records::recompress(bytes, codec, level)?);
        }
    }
    Ok(Some(out))
}

/// Fsyncs a file; a file deleted meanwhile (retention, cleaning) needs no fsync.
fn sync_file_if_exists(path: &Path) -> Result<(), StorageError> {
    match File::open(path) {
        Ok(f) => f.sync_all().map_err(io_at(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(path)(e)),
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Tidies a partition directory before opening it: finishes or discards the cleaner's
/// in-flight files, removes index files without a log, and returns the segment base offsets.
fn prepare_dir(dir: &Path) -> io::Result<Vec<i64>> {
    let mut logs = Vec::new();
    let mut swaps = Vec::new();
    let mut others = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((base, rest)) = parse_segment_name(name) else {
            continue;
        };
        match rest {
            "log" => logs.push(base),
            r if r == format!("{LOG_SUFFIX}.{SWAP_SUFFIX}") => swaps.push(base),
            _ => others.push((base, entry.path(), rest.to_string())),
        }
    }
    logs.sort_unstable();
    swaps.sort_unstable();
    // A swap file is a finished cleaned segment whose installation was interrupted: it replaces
    // every old segment whose offsets it covers.
    for base in swaps {
        let swap_path = dir.join(format!("{base:020}.{LOG_SUFFIX}.{SWAP_SUFFIX}"));
        let mut scan_end = base;
        {
            let f = File::open(&swap_path)?;
            let len = f.metadata()?.len();
            let mut scanner = BatchScanner::new(&f, 0, len);
            while let Ok(Some((h, _, _))) = scanner.next_batch() {
                scan_end = h.next_offset();
            }
        }
        let replaced: Vec<i64> = logs
            .iter()
            .copied()
            .filter(|b| *b >= base && (*b < scan_end || *b == base))
            .collect();
        for b in &replaced {
            for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                remove_if_exists(&segment_path(dir, *b, suffix))?;
            }
        }
        logs.retain(|b| !replaced.contains(b));
        fs::rename(&swap_path, segment_path(dir, base, LOG_SUFFIX))?;
        logs.push(base);
        logs.sort_unstable();
        tracing::warn!(dir = %dir.display(), base, "completed an interrupted compaction swap");
    }
    for (base, path, rest) in others {
        let keep = (rest == INDEX_SUFFIX || rest == TIME_INDEX_SUFFIX) && logs.contains(&base);
        if !keep {
            remove_if_exists(&path)?;
        }
    }
    sync_dir(dir)?;
    Ok(logs)
}

/// Feeds one appended (or replayed) batch to the producer state: sequences for data batches,
/// the end of a transaction for a marker.
fn apply_to_producers(producers: &mut ProducerState, h: &BatchHeader, bytes: &[u8]) {
    if h.is_control() {
        if let Some(marker) = control_marker(bytes) {
            producers.end_transaction(
                h.producer_id,
                h.producer_epoch,
                marker,
                h.base_offset,
                h.max_timestamp,
            );
        }
    } else {
        producers.update(h, h.max_timestamp);
    }
}
