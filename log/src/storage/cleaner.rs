//! Log compaction (`cleanup.policy=compact`): keeps the newest record of every key, at its
//! original offset, and drops tombstones once `delete.retention.ms` has passed since their
//! timestamp.
//!
//! Like Kafka's cleaner it works in two passes over the closed segments only (the active
//! segment is never touched): first it maps each key of the uncleaned ("dirty") part to its
//! newest offset, then it rewrites every closed segment up to the end of that part, grouping
//! small segments into one. New segments are written beside the old ones without holding the
//! log's lock, so appends and reads go on; only the final swap takes the lock. The swap is
//! crash-safe: `.cleaned` files are discarded on open, `.swap` files are completed.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::error::{io_at, StorageError};
use super::log::{sync_dir, PartitionLog, CLEANED_SUFFIX, SWAP_SUFFIX};
use super::producer_state::AbortedTxn;
use super::segment::{segment_path, BatchScanner, Segment, LOG_SUFFIX};
use crate::record::batch::BatchHeader;
use crate::record::records::{decode_batch, reencode_retained};

/// Cleaner settings shared by all logs (Kafka's `log.cleaner.*` broker configs).
#[derive(Debug, Clone)]
pub struct CleanerConfig {
    /// `log.cleaner.dedupe.buffer.size`: memory for the key -> newest-offset map of one pass.
    /// A pass stops mapping at the first segment boundary after the map outgrows it.
    pub dedupe_buffer_bytes: usize,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            dedupe_buffer_bytes: 128 << 20,
        }
    }
}

/// What one cleaning pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub segments_read: usize,
    pub segments_written: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
}

/// A closed segment as the cleaner saw it.
struct SegmentSnapshot {
    base: i64,
    next_offset: i64,
    size: u64,
    file: Arc<File>,
}

/// Estimated bytes per map entry beyond the key itself (offset, hash table slot, Vec header).
const MAP_ENTRY_OVERHEAD_BYTES: usize = 64;

/// Whether `max.compaction.lag.ms` forces a cleaning of `log` at `now_ms`, whatever its dirty
/// ratio: some uncleaned closed segment's first batch is older than the lag. Like Kafka, the
/// first batch's max timestamp stands for the segment's oldest record, and non-positive
/// timestamps (none, or before the epoch) are not counted.
pub fn compaction_overdue(log: &PartitionLog, now_ms: i64) -> bool {
    let st = log.read_state();
    let lag = st.config.max_compaction_lag_ms;
    if lag == i64::MAX {
        return false;
    }
    let closed = st.segments.len().saturating_sub(1);
    st.segments
        .values()
        .take(closed)
        .filter(|seg| seg.next_offset() > st.cleaner_offset && !seg.is_empty())
        .filter_map(|seg| seg.find_batch(seg.base_offset).ok().flatten())
        .map(|(_, h)| h.max_timestamp)
        .filter(|ts| *ts > 0)
        .min()
        .is_some_and(|oldest| now_ms.saturating_sub(oldest) > lag)
}

/// The share of the closed segments' bytes not yet cleaned.
pub fn dirty_ratio(log: &PartitionLog) -> f64 {
    let st = log.read_state();
    let closed = st.segments.len().saturating_sub(1);
    let (mut dirty, mut total) = (0u64, 0u64);
    for seg in st.segments.values().take(closed) {
        total += seg.size();
        if seg.next_offset() > st.cleaner_offset {
            dirty += seg.size();
        }
    }
    if total == 0 {
        0.0
    } else {
        dirty as f64 / total as f64
    }
}

/// Runs one cleaning pass on `log` if it is compacted and has dirty closed segments. Returns
/// `None` when there was nothing to do, another pass was running, or the log changed under the
/// pass (truncation, retention) so its work was discarded.
pub fn clean(
    log: &PartitionLog,
    config: &CleanerConfig,
    now_ms: i64,
) -> Result<Option<CleanStats>, StorageError> {
    let _guard = match log.cleaning.try_lock() {
        Ok(guard) => guard,
        // A pass that panicked left nothing half-installed (see the swap below): go on.
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
    };
    let dir = log.dir().to_path_buf();

    // 1. Snapshot the closed segments old enough to compact.
    let (log_config, version, cleaner_offset, snaps, aborted, producer_tails) = {
        let st = log.read_state();
        if !st.config.cleanup_policy.compact || st.closed {
            return Ok(None);
        }
        let lag = st.config.min_compaction_lag_ms;
        let closed = st.segments.len() - 1;
        // Open transactions are not cleaned: their outcome decides what survives. Nor is
        // anything at or above the high watermark, which a follower may still need and a new
        // leader may still truncate (Kafka's `firstUncleanableDirtyOffset`).
        let stable = st
            .producers
            .first_unstable_offset()
            .unwrap_or(i64::MAX)
            .min(st.high_watermark());
        let snaps: Vec<SegmentSnapshot> = st
            .segments
            .values()
            .take(closed)
            // As in Kafka, the lag applies only when set: a zero lag ignores (even future) timestamps.
            .take_while(|s| lag == 0 || now_ms.saturating_sub(s.max_timestamp_ms()) >= lag)
            .take_while(|s| s.next_offset() <= stable)
            .map(|s| SegmentSnapshot {
                base: s.base_offset,
                next_offset: s.next_offset(),
                size: s.size(),
                file: Arc::clone(s.file()),
            })
            .collect();
        (
            st.config.clone(),
            st.structure_version,
            st.cleaner_offset,
            snaps,
            st.producers.aborted_in(i64::MIN, i64::MAX),
            st.producers.last_batch_offsets(),
        )
    };
    let aborted_batch = |h: &BatchHeader| in_aborted_txn(&aborted, h);

    // 2. Map every key of the dirty segments to its newest offset.
    let mut map: HashMap<Vec<u8>, i64> = HashMap::new();
    let mut map_bytes = 0usize;
    let mut clean_upto = None;
    let mut stats = CleanStats::default();
    for s in snaps.iter().filter(|s| s.next_offset > cleaner_offset) {
        let mut scanner = BatchScanner::new(&s.file, 0, s.size);
        while let Some((h, at, bytes)) = scanner.next_batch().map_err(|e| corrupt(log, s, e))? {
            if h.is_control() || aborted_batch(&h) {
                continue;
            }
            let (_, records) = decode_batch(bytes).map_err(|e| corrupt_at(log, s, at, e))?;
            for r in records {
                if let Some(k) = r.key {
                    if map.insert(k.to_vec(), r.offset).is_none() {
                        map_bytes += k.len() + MAP_ENTRY_OVERHEAD_BYTES;
                    }
                }
            }
        }
        clean_upto = Some(s.next_offset);
        if map_bytes >= config.dedupe_buffer_bytes {
            break;
        }
    }
    let Some(clean_upto) = clean_upto else {
        return Ok(None);
    };

    // 3. Rewrite the segments up to the end of the mapped part, in groups.
    let to_clean: Vec<&SegmentSnapshot> = snaps.iter().filter(|s| s.base < clean_upto).collect();
    let groups = group_segments(&to_clean, log_config.segment_bytes);
    let mut outputs: Vec<(Vec<i64>, Option<Segment>)> = Vec::new();
    let result = (|| -> Result<(), StorageError> {
        for group in &groups {
            let base = group[0].base;
            let path = dir.join(format!("{base:020}.{LOG_SUFFIX}.{CLEANED_SUFFIX}"));
            let pass = Pass {
                map: &map,
                config: &log_config,
                now_ms,
                aborted: &aborted,
                producer_tails: &producer_tails,
            };
            let written = write_cleaned(log, group, &path, &pass, &mut stats)?;
            stats.segments_read += group.len();
            let seg = if written == 0 {
                fs::remove_file(&path).map_err(io_at(&path))?;
                None
            } else {
                let mut seg = Segment::from_new_file(
                    &dir,
                    base,
                    &path,
                    log_config.index_interval_bytes,
                    now_ms,
                )
                .map_err(io_at(&path))?;
                seg.persist_indexes(true).map_err(io_at(&path))?;
                stats.segments_written += 1;
                stats.bytes_written += written;
                Some(seg)
            };
            outputs.push((group.iter().map(|s| s.base).collect(), seg));
        }
        Ok(())
    })();
    if let Err(e) = result {
        discard(&dir, &outputs);
        return Err(e);
    }

    // 4. Swap the new segments in, unless the log changed meanwhile.
    let mut st = log.write_state();
    let unchanged = st.structure_version == version
        && !st.closed
        && outputs
            .iter()
            .all(|(bases, _)| bases.iter().all(|b| st.segments.contains_key(b)));
    if !unchanged {
        drop(st);
        discard(&dir, &outputs);
        tracing::info!(tp = %log.topic_partition(), "log changed during cleaning; discarding the pass");
        return Ok(None);
    }
    let mut outputs = outputs.into_iter();
    while let Some((bases, mut new_seg)) = outputs.next() {
        // Every fallible file operation of a group happens before the segment map changes, so
        // an I/O error leaves the running log serving the old segments (their open handles
        // stay readable even once unlinked) and the directory in a state `prepare_dir` repairs.
        let installed = (|| -> io::Result<()> {
            if let Some(seg) = &new_seg {
                let base = seg.base_offset;
                fs::rename(
                    seg_suffixed(&dir, base, CLEANED_SUFFIX),
                    seg_suffixed(&dir, base, SWAP_SUFFIX),
                )?;
                sync_dir(&dir)?;
            }
            for b in &bases {
                if let Some(old) = st.segments.get(b) {
                    old.delete()?;
                }
            }
            if let Some(seg) = &mut new_seg {
                let base = seg.base_offset;
                fs::rename(
                    seg_suffixed(&dir, base, SWAP_SUFFIX),
                    segment_path(&dir, base, LOG_SUFFIX),
                )?;
                seg.adopt_canonical_names()?;
                for suffix in ["cleaned-index", "cleaned-timeindex"] {
                    let _ = fs::remove_file(seg_suffixed(&dir, base, suffix));
                }
            }
            Ok(())
        })();
        if let Err(e) = installed {
            // If the old segments are still on disk, a leftover swap file must not replace
            // them at the next open (the log may change before then).
            let base = bases[0];
            if segment_path(&dir, base, LOG_SUFFIX).exists() {
                let _ = fs::remove_file(seg_suffixed(&dir, base, SWAP_SUFFIX));
            }
            let rest: Vec<_> = outputs.collect();
            discard(&dir, &rest);
            st.structure_version += 1;
            return Err(io_at(&dir)(e));
        }
        for b in &bases {
            st.segments.remove(b);
        }
        if let Some(seg) = new_seg {
            st.segments.insert(seg.base_offset, seg);
        }
    }
    sync_dir(&dir).map_err(io_at(&dir))?;
    st.cleaner_offset = st.cleaner_offset.max(clean_upto);
    // Offsets below the first remaining segment may now hold nothing; the start stays put.
    st.structure_version += 1;
    log.write_checkpoint(&st, false)?;
    tracing::info!(
        tp = %log.topic_partition(),
        segments_read = stats.segments_read,
        bytes_read = stats.bytes_read,
        bytes_written = stats.bytes_written,
        records_removed = stats.records_removed,
        "cleaned log"
    );
    Ok(Some(stats))
}

fn seg_suffixed(dir: &std::path::Path, base: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base:020}.{LOG_SUFFIX}.{suffix}"))
}

/// Removes the files of a pass that will not be installed.
fn discard(dir: &std::path::Path, outputs: &[(Vec<i64>, Option<Segment>)]) {
    for (bases, _) in outputs {
        let base = bases[0];
        for suffix in [CLEANED_SUFFIX, "cleaned-index", "cleaned-timeindex"] {
            let _ = fs::remove_file(seg_suffixed(dir, base, suffix));
        }
    }
}

/// Consecutive segments whose combined size fits one segment and whose offsets fit the
/// indexes' 32-bit relative offsets.
fn group_segments<'a>(
    segs: &[&'a SegmentSnapshot],
    segment_bytes: u64,
) -> Vec<Vec<&'a SegmentSnapshot>> {
    let mut groups: Vec<Vec<&SegmentSnapshot>> = Vec::new();
    for s in segs {
        if let Some(g) = groups.last_mut() {
            let size: u64 = g.iter().map(|x| x.size).sum::<u64>() + s.size;
            if size <= segment_bytes && s.next_offset - g[0].base <= i64::from(u32::MAX) {
                g.push(s);
                continue;
            }
        }
        groups.push(vec![s]);
    }
    groups
}

/// Writes the retained batches of `group` to `path`; returns the bytes written.
/// Whether `h` holds records of an aborted transaction: those never count as a key's newest
/// value and are removed by cleaning, as in Kafka (their markers stay).
fn in_aborted_txn(aborted: &[AbortedTxn], h: &BatchHeader) -> bool {
    h.is_transactional()
        && !h.is_control()
        && aborted.iter().any(|a| {
            a.producer_id == h.producer_id
                && a.first_offset <= h.base_offset
                && h.base_offset <= a.last_offset
        })
}

/// What one cleaning pass decides by: each key's newest offset, the topic config, the time,
/// and the aborted transactions.
struct Pass<'a> {
    map: &'a HashMap<Vec<u8>, i64>,
    config: &'a super::LogConfig,
    now_ms: i64,
    aborted: &'a [AbortedTxn],
    /// Base offsets of each idempotent producer's newest batch: kept whole.
    producer_tails: &'a std::collections::HashSet<i64>,
}

fn write_cleaned(
    log: &PartitionLog,
    group: &[&SegmentSnapshot],
    path: &std::path::Path,
    pass: &Pass<'_>,
    stats: &mut CleanStats,
) -> Result<u64, StorageError> {
    let Pass {
        map,
        config,
        now_ms,
        aborted,
        producer_tails,
    } = *pass;
    let file = File::create(path).map_err(io_at(path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut written = 0u64;
    for s in group {
        stats.bytes_read += s.size;
        let mut scanner = BatchScanner::new(&s.file, 0, s.size);
        while let Some((h, at, bytes)) = scanner.next_batch().map_err(|e| corrupt(log, s, e))? {
            let kept_bytes: Option<Vec<u8>> = if h.is_control()
                || (h.producer_id >= 0 && producer_tails.contains(&h.base_offset))
            {
                Some(bytes.to_vec())
            } else if in_aborted_txn(aborted, &h) {
                None
            } else {
                let (_, records) = decode_batch(bytes).map_err(|e| corrupt_at(log, s, at, e))?;
                let total = records.len();
                let kept: Vec<_> = records
                    .into_iter()
                    .filter(|r| {
                        let Some(k) = &r.key else { return false };
                        let newest = map.get(k.as_ref()).is_none_or(|&o| r.offset >= o);
                        if !newest {
                            return false;
                        }
                        let expired_tombstone = r.value.is_none()
                            && now_ms.saturating_sub(r.timestamp_ms) > config.delete_retention_ms;
                        if expired_tombstone {
                            stats.tombstones_removed += 1;
                        }
                        !expired_tombstone
                    })
                    .collect();
                stats.records_removed += (total - kept.len()) as u64;
                if kept.len() == total {
                    Some(bytes.to_vec())
                } else if kept.is_empty() {
                    None
                } else {
                    match reencode_retained(&h, &kept) {
                        Ok(b) => Some(b),
                        Err(e) => {
                            // Keeping the batch whole loses nothing; it is only less compact.
                            tracing::warn!(tp = %log.topic_partition(), segment = s.base, position = at, error = %e, "cannot re-encode a batch; keeping it whole");
                            stats.records_removed -= (total - kept.len()) as u64;
                            Some(bytes.to_vec())
                        }
                    }
                }
            };
            if let Some(b) = kept_bytes {
                out.write_all(&b).map_err(io_at(path))?;
                written += b.len() as u64;
            }
        }
    }
    let file = out.into_inner().map_err(|e| io_at(path)(e.into_error()))?;
    file.sync_all().map_err(io_at(path))?;
    Ok(written)
}

fn corrupt(log: &PartitionLog, s: &SegmentSnapshot, e: impl ToString) -> StorageError {
    corrupt_at(log, s, 0, e)
}

fn corrupt_at(
    log: &PartitionLog,
    s: &SegmentSnapshot,
    position: u64,
    e: impl ToString,
) -> StorageError {
    StorageError::Corrupt {
        tp: log.topic_partition().clone(),
        segment_base: s.base,
        position,
        reason: e.to_string(),
    }
}
