//! The leader-epoch cache of a partition (Kafka's `LeaderEpochFileCache`, KIP-101/279): the
//! offset at which each leader epoch began, so a follower of a new leader can find where its
//! log diverged (`OffsetForLeaderEpoch`) and truncate there before fetching, and so no
//! divergent history survives a leader change. Sans-IO: the cache is a value; its checkpoint
//! (`leader-epoch-checkpoint`, Kafka's text format) is encoded and parsed here and written by
//! the caller.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Kafka's `UNDEFINED_EPOCH` and `UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// The version line of the checkpoint file (Kafka's `LeaderEpochCheckpointFile`).
const CHECKPOINT_VERSION: i32 = 0;

/// One epoch and the offset of its first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

impl EpochEntry {
    pub fn new(epoch: i32, start_offset: i64) -> Self {
        EpochEntry {
            epoch,
            start_offset,
        }
    }
}

/// Why an epoch entry or a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    #[error("invalid leader epoch entry: epoch {epoch}, start offset {start_offset}")]
    InvalidEntry { epoch: i32, start_offset: i64 },
    #[error("leader-epoch-checkpoint line {line}: {reason}")]
    Checkpoint { line: usize, reason: String },
}

/// Epochs and their start offsets, both strictly increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    /// epoch -> start offset.
    epochs: BTreeMap<i32, i64>,
}

impl LeaderEpochCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `epoch` began at `start_offset`. Returns whether the cache changed (then
    /// the checkpoint is to be written). As Kafka: an epoch already last with an earlier or
    /// equal start is kept; otherwise entries that would break monotonicity (an epoch at or
    /// above `epoch`, or a start at or after `start_offset`) are dropped first.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<bool, EpochError> {
        if epoch < 0 || start_offset < 0 {
            return Err(EpochError::InvalidEntry {
                epoch,
                start_offset,
            });
        }
        let needed = self
            .latest_entry()
            .is_none_or(|last| last.epoch != epoch || start_offset < last.start_offset);
        if !needed {
            return Ok(false);
        }
        while let Some((&e, &o)) = self.epochs.last_key_value() {
            if e >= epoch || o >= start_offset {
                self.epochs.remove(&e);
            } else {
                break;
            }
        }
        self.epochs.insert(epoch, start_offset);
        Ok(true)
    }

    pub fn latest_entry(&self) -> Option<EpochEntry> {
        self.epochs
            .last_key_value()
            .map(|(&e, &o)| EpochEntry::new(e, o))
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.latest_entry().map(|e| e.epoch)
    }

    /// The epoch before the latest one.
    pub fn previous_epoch(&self) -> Option<i32> {
        let latest = self.latest_epoch()?;
        self.epochs.range(..latest).next_back().map(|(&e, _)| e)
    }

    pub fn earliest_entry(&self) -> Option<EpochEntry> {
        self.epochs
            .first_key_value()
            .map(|(&e, &o)| EpochEntry::new(e, o))
    }

    pub fn entries(&self) -> Vec<EpochEntry> {
        self.epochs
            .iter()
            .map(|(&e, &o)| EpochEntry::new(e, o))
            .collect()
    }

    /// What `OffsetForLeaderEpoch` answers for `requested` (Kafka's `endOffsetFor`): the
    /// latest epoch ends at the log end; an older one at the start of the next epoch it
    /// knows, reported as the largest epoch at or below the requested one (a follower then
    /// truncates to that offset); an epoch below every known one ends where the first known
    /// one starts; an unknown later epoch, or none recorded, is undefined.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        let undefined = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested == UNDEFINED_EPOCH {
            return undefined;
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let after = (Bound::Excluded(requested), Bound::Unbounded);
        let Some((_, &next_start)) = self.epochs.range(after).next() else {
            return undefined;
        };
        match self.epochs.range(..=requested).next_back() {
            None => (requested, next_start),
            Some((&floor, _)) => (floor, next_start),
        }
    }

    /// Drops the epochs that start at or after `end_offset` (the log was truncated there).
    /// Returns whether anything changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let mut changed = false;
        if end_offset < 0 {
            return false;
        }
        while let Some((&e, &o)) = self.epochs.last_key_value() {
            if o >= end_offset {
                self.epochs.remove(&e);
                changed = true;
            } else {
                break;
            }
        }
        changed
    }

    /// Drops the epochs that end at or before `start_offset` (the log start moved there);
    /// the epoch holding `start_offset` is kept, starting at it. Returns whether anything
    /// changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let mut last_removed = None;
        while let Some((&e, &o)) = self.epochs.first_key_value() {
            if o <= start_offset {
                self.epochs.remove(&e);
                last_removed = Some(e);
            } else {
                break;
            }
        }
        match last_removed {
            Some(e) => {
                self.epochs.insert(e, start_offset);
                true
            }
            None => false,
        }
    }

    /// The epoch the record at `offset` was written in, if the cache knows.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.epochs
            .range(..)
            .take_while(|(_, &o)| o <= offset)
            .last()
            .map(|(&e, _)| e)
    }

    /// The checkpoint file's contents: the version, the count, then `epoch start_offset`
    /// per line (Kafka's `LeaderEpochCheckpointFile`, so a Kafka tool reads it too).
    pub fn encode_checkpoint(&self) -> String {
        let mut out = format!("{CHECKPOINT_VERSION}\n{}\n", self.epochs.len());
        for (e, o) in &self.epochs {
            out.push_str(&format!("{e} {o}\n"));
        }
        out
    }

    /// Reads a checkpoint written by [`encode_checkpoint`](Self::encode_checkpoint) (or by
    /// Kafka). Entries go through [`assign`](Self::assign), so a damaged order cannot make
    /// the cache non-monotonic; anything malformed is an error, not a guess.
    pub fn parse_checkpoint(text: &str) -> Result<Self, EpochError> {
        let bad = |line: usize, reason: &str| EpochError::Checkpoint {
            line,
            reason: reason.to_string(),
        };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        let (n, version) = lines.next().ok_or_else(|| bad(1, "empty file"))?;
        if version.parse::<i32>().ok() != Some(CHECKPOINT_VERSION) {
            return Err(bad(n, "unknown version"));
        }
        let (n, count) = lines.next().ok_or_else(|| bad(2, "no entry count"))?;
        let count: usize = count.parse().map_err(|_| bad(n, "bad entry count"))?;
        let mut cache = LeaderEpochCache::new();
        let mut seen = 0;
        for (n, line) in lines.filter(|(_, l)| !l.is_empty()) {
            let mut parts = line.split_whitespace();
            let (Some(e), Some(o), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad(n, "expected `epoch start_offset`"));
            };
            let epoch: i32 = e.parse().map_err(|_| bad(n, "bad epoch"))?;
            let offset: i64 = o.parse().map_err(|_| bad(n, "bad start offset"))?;
            cache.assign(epoch, offset)?;
            seen += 1;
        }
        if seen != count {
            return Err(bad(2, &format!("{count} entries announced, {seen} found")));
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    //! Kafka's `LeaderEpochFileCacheTest`, same inputs and expected outputs (test names
    //! given per case).
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::new();
        for (e, o) in entries {
            c.assign(*e, *o).unwrap();
        }
        c
    }

    fn entries(c: &LeaderEpochCache) -> Vec<(i32, i64)> {
        c.entries()
            .into_iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);

    #[test]
    fn previous_epoch() {
        // testPreviousEpoch
        let mut c = LeaderEpochCache::new();
        assert_eq!(c.previous_epoch(), None);
        c.assign(2, 10).unwrap();
        assert_eq!(c.previous_epoch(), None);
        c.assign(4, 15).unwrap();
        assert_eq!(c.previous_epoch(), Some(2));
        c.assign(10, 20).unwrap();
        assert_eq!(c.previous_epoch(), Some(4));
        c.truncate_from_end(18);
        assert_eq!(c.previous_epoch(), Some(2));
    }

    #[test]
    fn end_offsets_of_the_latest_and_earlier_epochs() {
        // shouldAddEpochAndMessageOffsetToCache
        let c = cache(&[(2, 10)]);
        assert_eq!(c.latest_epoch(), Some(2));
        assert_eq!(c.end_offset_for(2, 11), (2, 11));
        // shouldReturnLogEndOffsetIfLatestEpochRequested
        assert_eq!(cache(&[(2, 11), (2, 12)]).end_offset_for(2, 14), (2, 14));
        // shouldReturnUndefinedOffsetIfUndefinedEpochRequested
        assert_eq!(
            cache(&[(2, 11), (3, 12)]).end_offset_for(UNDEFINED_EPOCH, 0),
            UNDEFINED
        );
        // shouldReturnUnsupportedIfNoEpochRecorded(AndUndefinedEpochRequested)
        assert_eq!(LeaderEpochCache::new().end_offset_for(0, 0), UNDEFINED);
        assert_eq!(
            LeaderEpochCache::new().end_offset_for(UNDEFINED_EPOCH, 73),
            UNDEFINED
        );
        // shouldReturnFirstEpochIfRequestedEpochLessThanFirstEpoch
        assert_eq!(
            cache(&[(5, 11), (6, 12), (7, 13)]).end_offset_for(4, 0),
            (4, 11)
        );
        // shouldGetFirstOffsetOfSubsequentEpochWhenOffsetRequestedForPreviousEpoch
        let c = cache(&[(1, 11), (1, 12), (2, 13), (2, 14), (3, 15), (3, 16)]);
        assert_eq!(c.end_offset_for(2, 17), (2, 15));
        // shouldReturnNextAvailableEpochIfThereIsNoExactEpochForTheOneRequested
        let c = cache(&[(0, 10), (2, 13), (4, 17)]);
        assert_eq!(c.end_offset_for(1, 0), (0, 13));
        assert_eq!(c.end_offset_for(2, 0), (2, 17));
        assert_eq!(c.end_offset_for(3, 0), (2, 17));
        // shouldReturnInvalidOffsetIfEpochIsRequestedWhichIsNotCurrentlyTracked
        assert_eq!(cache(&[(2, 100)]).end_offset_for(3, 100), UNDEFINED);
        assert_eq!(cache(&[(2, 100)]).end_offset_for(i32::MAX, 100), UNDEFINED);
        // shouldSupportEpochsThatDoNotStartFromZero
        let c = cache(&[(2, 6)]);
        assert_eq!(c.end_offset_for(2, 7), (2, 7));
        assert_eq!(entries(&c), [(2, 6)]);
    }

    #[test]
    fn offsets_and_epochs_stay_monotonic() {
        // shouldNotOverwriteLogEndOffsetForALeaderEpochOnceItHasBeenAssigned
        assert_eq!(entries(&cache(&[(2, 9), (2, 10)])), [(2, 9)]);
        // shouldEnforceMonotonicallyIncreasingStartOffsets
        assert_eq!(entries(&cache(&[(2, 9), (3, 9)])), [(3, 9)]);
        // shouldNotOverwriteOffsetForALeaderEpochOnceItHasBeenAssigned
        assert_eq!(entries(&cache(&[(2, 6), (2, 10)])), [(2, 6)]);
        // shouldNotUpdateEpochAndStartOffsetIfItDidNotChange
        let mut c = cache(&[(2, 6)]);
        assert!(!c.assign(2, 7).unwrap());
        assert_eq!(entries(&c), [(2, 6)]);
        // shouldTruncateIfMatchingEpochButEarlierStartingOffset
        let c = cache(&[(5, 11), (6, 12), (7, 13), (7, 12)]);
        assert_eq!(c.end_offset_for(5, 0), (5, 12));
        assert_eq!(c.end_offset_for(6, 0), (5, 12));
        // shouldEnforceMonotonicallyIncreasingEpochs
        let c = cache(&[(1, 5), (2, 6), (1, 7)]);
        assert_eq!(c.latest_epoch(), Some(1));
        assert_eq!(c.end_offset_for(1, 8), (1, 8));
        assert_eq!(c.end_offset_for(2, 8), UNDEFINED);
        assert_eq!(entries(&c), [(1, 7)]);
        // shouldEnforceOffsetsIncreaseMonotonically
        assert_eq!(entries(&cache(&[(2, 6), (3, 5)])), [(3, 5)]);
        // Negative epochs and offsets are refused (Kafka's IllegalArgumentException).
        assert!(LeaderEpochCache::new().assign(-1, 0).is_err());
        assert!(LeaderEpochCache::new().assign(0, -1).is_err());
    }

    #[test]
    fn epochs_are_tracked_as_leaders_change() {
        // shouldIncreaseAndTrackEpochsAsLeadersChangeManyTimes
        let mut c = cache(&[(0, 0), (1, 0)]);
        assert_eq!(c.latest_epoch(), Some(1));
        assert_eq!(c.end_offset_for(1, 0), (1, 0));
        assert_eq!(c.end_offset_for(0, 0), (0, 0));
        assert_eq!(c.end_offset_for(1, 5), (1, 5));
        assert_eq!(c.end_offset_for(0, 5), (0, 0));
        c.assign(2, 5).unwrap();
        assert_eq!(c.end_offset_for(2, 10), (2, 10));
        assert_eq!(c.end_offset_for(1, 10), (1, 5));
        assert_eq!(c.end_offset_for(0, 10), (0, 0));
        // shouldIncreaseAndTrackEpochsAsFollowerReceivesManyMessages
        let c = cache(&[
            (0, 0),
            (0, 1),
            (0, 2),
            (1, 3),
            (1, 4),
            (1, 5),
            (2, 6),
            (2, 7),
            (2, 8),
        ]);
        assert_eq!(c.latest_epoch(), Some(2));
        assert_eq!(c.end_offset_for(2, 9), (2, 9));
        assert_eq!(c.end_offset_for(0, 9), (0, 3));
        assert_eq!(c.end_offset_for(1, 9), (1, 6));
        assert_eq!(c.epoch_for_offset(4), Some(1));
        assert_eq!(c.epoch_for_offset(6), Some(2));
    }

    #[test]
    fn truncation_from_either_end() {
        let base = || cache(&[(2, 6), (3, 8), (4, 11)]);
        // shouldDropEntriesOnEpochBoundaryWhenRemovingLatestEntries
        let mut c = base();
        assert!(c.truncate_from_end(8));
        assert_eq!(entries(&c), [(2, 6)]);
        // shouldPreserveResetOffsetOnClearEarliestIfOneExists
        let mut c = base();
        c.truncate_from_start(8);
        assert_eq!(entries(&c), [(3, 8), (4, 11)]);
        // shouldUpdateSavedOffsetWhenOffsetToClearToIsBetweenEpochs
        let mut c = base();
        c.truncate_from_start(9);
        assert_eq!(entries(&c), [(3, 9), (4, 11)]);
        // shouldNotClearAnythingIfOffsetToEarly / ...ToFirstOffset
        for at in [1, 6] {
            let mut c = base();
            c.truncate_from_start(at);
            assert_eq!(entries(&c), [(2, 6), (3, 8), (4, 11)], "{at}");
        }
        // shouldRetainLatestEpochOnClearAllEarliest
        let mut c = base();
        c.truncate_from_start(11);
        assert_eq!(entries(&c), [(4, 11)]);
        // A truncation past the last epoch's start changes nothing.
        let mut c = base();
        assert!(!c.truncate_from_end(12));
        assert_eq!(entries(&c), [(2, 6), (3, 8), (4, 11)]);
    }

    proptest::proptest! {
        /// Whatever is assigned and truncated, epochs and start offsets stay strictly
        /// increasing, every epoch but the last ends where the next begins, the last ends at
        /// the log end, and the checkpoint reads back the same cache.
        #[test]
        fn the_cache_stays_monotonic_and_answers_from_its_entries(
            ops in proptest::collection::vec((0u8..4, 0i32..12, 0i64..40), 0..60)
        ) {
            let mut c = LeaderEpochCache::new();
            for (op, epoch, offset) in ops {
                match op {
                    0 | 1 => {
                        c.assign(epoch, offset).unwrap();
                    }
                    2 => {
                        c.truncate_from_end(offset);
                    }
                    _ => {
                        c.truncate_from_start(offset);
                    }
                }
                let e = entries(&c);
                for w in e.windows(2) {
                    proptest::prop_assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1, "{e:?}");
                }
                let log_end = e.last().map_or(0, |l| l.1 + 5);
                for (i, (epoch, _)) in e.iter().enumerate() {
                    let expected = match e.get(i + 1) {
                        Some(next) => (*epoch, next.1),
                        None => (*epoch, log_end),
                    };
                    proptest::prop_assert_eq!(c.end_offset_for(*epoch, log_end), expected);
                }
                let back = LeaderEpochCache::parse_checkpoint(&c.encode_checkpoint()).unwrap();
                proptest::prop_assert_eq!(&back, &c);
            }
        }
    }

    #[test]
    fn checkpoints_round_trip_and_damage_is_refused() {
        // shouldPersistEpochsBetweenInstances, through Kafka's text format.
        let c = cache(&[(2, 6), (3, 8)]);
        let text = c.encode_checkpoint();
        assert_eq!(text, "0\n2\n2 6\n3 8\n");
        assert_eq!(LeaderEpochCache::parse_checkpoint(&text).unwrap(), c);
        assert_eq!(
            LeaderEpochCache::parse_checkpoint("0\n0\n").unwrap(),
            LeaderEpochCache::new()
        );
        for bad in [
            "",
            "1\n0\n",
            "0\nx\n",
            "0\n2\n2 6\n",
            "0\n1\n2\n",
            "0\n1\n2 6 7\n",
            "0\n1\n-2 6\n",
        ] {
            assert!(LeaderEpochCache::parse_checkpoint(bad).is_err(), "{bad:?}");
        }
    }
}
