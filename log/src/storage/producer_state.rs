//! Per-partition state of idempotent producers (Kafka's `ProducerStateManager`): for each
//! producer id, its epoch and the sequence ranges and offsets of its last five batches. An
//! append checks each batch against it: a retried batch already in the log is recognised and
//! answered with its original offsets, a sequence gap or a stale epoch is refused.
//!
//! Transactions leave their trace here too: the first offset of each producer's open
//! transaction (the earliest one is the last stable offset, where `read_committed` reads
//! stop) and the offset ranges of aborted transactions (which `read_committed` consumers skip).
//!
//! The state is rebuilt on open from a snapshot (`producer.snapshot`, written at clean close
//! and checkpoints) plus a replay of the batches after it, and entries expire when their
//! producer has not written for `producer.id.expiration.ms`.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::record::batch::BatchHeader;
use crate::record::control::Marker;

/// Batches remembered per producer, as in Kafka (and the most a client keeps in flight).
pub const BATCHES_KEPT: usize = 5;

/// One appended batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// What the partition knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first.
    pub batches: VecDeque<BatchMeta>,
    /// Broker time of the producer's last append (for expiration).
    pub last_append_ms: i64,
}

/// Why a batch of an idempotent producer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerStateError {
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    InvalidEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id}: sequence {got} does not follow {last}")]
    OutOfOrder {
        producer_id: i64,
        last: i32,
        got: i32,
    },
    #[error("a request with an idempotent batch must hold exactly one batch")]
    OneBatchOnly,
    /// The transaction coordinator did not confirm the batch's transaction (KIP-890): Kafka's
    /// error for it is `error`.
    #[error("producer {producer_id}: {reason}")]
    Unverified {
        producer_id: i64,
        error: kafka_protocol::ResponseError,
        reason: String,
    },
}

/// The sequence of the last record of a batch (sequences wrap at `i32::MAX` to 0).
pub fn last_sequence(h: &BatchHeader) -> i32 {
    let delta = h.last_offset_delta.max(0);
    if h.base_sequence > i32::MAX - delta {
        delta - (i32::MAX - h.base_sequence) - 1
    } else {
        h.base_sequence + delta
    }
}

fn follows(last: i32, next: i32) -> bool {
    next == last.wrapping_add(1) || (last == i32::MAX && next == 0)
}

/// The offsets of an aborted transaction in this partition: from its first batch to its
/// abort marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// The producers of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
    /// Producer id -> first offset of its open transaction.
    ongoing: BTreeMap<i64, i64>,
    /// Aborted transactions, in marker order.
    aborted: Vec<AbortedTxn>,
}

impl ProducerState {
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Checks a batch before it is appended: `Ok(Some(meta))` when it is a retry of a batch
    /// already in the log, `Ok(None)` when it may be appended.
    pub fn check(&self, h: &BatchHeader) -> Result<Option<BatchMeta>, ProducerStateError> {
        if h.producer_id < 0 {
            return Ok(None);
        }
        let Some(e) = self.producers.get(&h.producer_id) else {
            // Nothing known (a new producer, or its state expired or was deleted with the
            // log): any sequence is accepted, as in Kafka since KIP-360.
            return Ok(None);
        };
        if h.producer_epoch < e.epoch {
            return Err(ProducerStateError::InvalidEpoch {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current: e.epoch,
            });
        }
        if h.producer_epoch > e.epoch {
            // A bumped epoch starts its sequences again.
            if h.base_sequence != 0 {
                return Err(ProducerStateError::OutOfOrder {
                    producer_id: h.producer_id,
                    last: -1,
                    got: h.base_sequence,
                });
            }
            return Ok(None);
        }
        let last = last_sequence(h);
        if let Some(dup) = e
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return Ok(Some(*dup));
        }
        let prev = e.batches.back().map_or(-1, |b| b.last_seq);
        if e.batches.is_empty() || follows(prev, h.base_sequence) {
            return Ok(None);
        }
        Err(ProducerStateError::OutOfOrder {
            producer_id: h.producer_id,
            last: prev,
            got: h.base_sequence,
        })
    }

    /// The base offset of each producer's newest batch. Cleaning keeps these batches whole, so
    /// a replay after a crash still knows where each producer's sequence stands (Kafka's
    /// cleaner keeps each producer's last batch for the same reason).
    pub fn last_batch_offsets(&self) -> std::collections::HashSet<i64> {
        self.producers
            .values()
            .filter_map(|e| e.batches.back().map(|b| b.first_offset))
            .collect()
    }

    /// Whether `producer_id` has an open transaction in this partition.
    pub fn in_transaction(&self, producer_id: i64) -> bool {
        self.ongoing.contains_key(&producer_id)
    }

    /// Every producer with its state and the first offset of its open transaction, if any
    /// (DescribeProducers).
    pub fn producers(&self) -> impl Iterator<Item = (i64, &ProducerEntry, Option<i64>)> {
        self.producers
            .iter()
            .map(|(id, e)| (*id, e, self.ongoing.get(id).copied()))
    }

    /// The first offset of the earliest open transaction: where the stable part ends.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.values().min().copied()
    }

    /// Aborted transactions overlapping `[from, to)`.
    pub fn aborted_in(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions wholly below the log start.
    pub fn trim_aborted(&mut self, log_start: i64) {
        self.aborted.retain(|a| a.last_offset >= log_start);
    }

    /// Records a transaction marker appended at `offset` (at `now_ms`) for `producer_id`. A
    /// marker written with a newer epoch (the coordinator fencing a zombie) makes that epoch
    /// the current one, so the old producer's later batches are refused here too — also in a
    /// partition the old producer had added to its transaction but not written to yet, where
    /// its batch may still be on the way (else that late batch would be taken, and committed
    /// by the next transaction of the same producer id).
    pub fn end_transaction(
        &mut self,
        producer_id: i64,
        epoch: i16,
        marker: Marker,
        offset: i64,
        now_ms: i64,
    ) {
        let e = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch,
                batches: VecDeque::new(),
                last_append_ms: now_ms,
            });
        if epoch > e.epoch {
            e.epoch = epoch;
            e.batches.clear();
        }
        e.last_append_ms = e.last_append_ms.max(now_ms);
        if let Some(first) = self.ongoing.remove(&producer_id) {
            if marker == Marker::Abort {
                self.aborted.push(AbortedTxn {
                    producer_id,
                    first_offset: first,
                    last_offset: offset,
                });
            }
        }
    }

    /// Records an appended batch (its header carries the assigned offsets).
    pub fn update(&mut self, h: &BatchHeader, now_ms: i64) {
        if h.producer_id < 0 || h.is_control() {
            return;
        }
        if h.is_transactional() {
            self.ongoing.entry(h.producer_id).or_insert(h.base_offset);
        }
        let e = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
                last_append_ms: now_ms,
            });
        if h.producer_epoch != e.epoch {
            e.epoch = h.producer_epoch;
            e.batches.clear();
        }
        e.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_sequence(h),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp,
        });
        while e.batches.len() > BATCHES_KEPT {
            e.batches.pop_front();
        }
        e.last_append_ms = e.last_append_ms.max(now_ms);
    }

    /// Forgets producers idle for longer than `expiration_ms`; returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        let ongoing = &self.ongoing;
        // A producer with an open transaction stays (its coordinator will end it).
        self.producers.retain(|id, e| {
            ongoing.contains_key(id) || now_ms.saturating_sub(e.last_append_ms) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Drops what was learned from batches at or above `offset` (after a truncation).
    pub fn truncate(&mut self, offset: i64) {
        for e in self.producers.values_mut() {
            e.batches.retain(|b| b.last_offset < offset);
        }
        self.producers.retain(|_, e| !e.batches.is_empty());
        self.ongoing.retain(|_, first| *first < offset);
        self.aborted.retain(|a| a.last_offset < offset);
    }

    /// The snapshot file's bytes: `offset` (where replay resumes), then every producer, then a
    /// CRC32C of all before it.
    pub fn encode(&self, offset: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.producers.len() * 64);
        out.extend_from_slice(&SNAPSHOT_MAGIC.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort();
        for id in ids {
            let e = &self.producers[id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_append_ms.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        out.extend_from_slice(&(self.ongoing.len() as u32).to_be_bytes());
        for (id, first) in &self.ongoing {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&first.to_be_bytes());
        }
        out.extend_from_slice(&(self.aborted.len() as u32).to_be_bytes());
        for a in &self.aborted {
            out.extend_from_slice(&a.producer_id.to_be_bytes());
            out.extend_from_slice(&a.first_offset.to_be_bytes());
            out.extend_from_slice(&a.last_offset.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads a snapshot; `None` if it is damaged in any way (the caller then replays the log).
    pub fn decode(bytes: &[u8]) -> Option<(ProducerState, i64)> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut r = Reader { b: body, pos: 0 };
        if r.u32()? != SNAPSHOT_MAGIC {
            return None;
        }
        let offset = r.i64()?;
        let count = r.u32()? as usize;
        // Each producer takes at least 19 bytes: a count past that is damage.
        if count > body.len() / 19 {
            return None;
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = i16::from_be_bytes(r.take::<2>()?);
            let last_append_ms = r.i64()?;
            let n = r.take::<1>()?[0] as usize;
            if n > BATCHES_KEPT {
                return None;
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_seq: i32::from_be_bytes(r.take::<4>()?),
                    last_seq: i32::from_be_bytes(r.take::<4>()?),
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                    max_timestamp: r.i64()?,
                });
            }
            producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    batches,
                    last_append_ms,
                },
            );
        }
        let n = r.u32()? as usize;
        if n > body.len() / 16 {
            return None;
        }
        let mut ongoing = BTreeMap::new();
        for _ in 0..n {
            let id = r.i64()?;
            ongoing.insert(id, r.i64()?);
        }
        let n = r.u32()? as usize;
        if n > body.len() / 24 {
            return None;
        }
        let mut aborted = Vec::with_capacity(n);
        for _ in 0..n {
            aborted.push(AbortedTxn {
                producer_id: r.i64()?,
                first_offset: r.i64()?,
                last_offset: r.i64()?,
            });
        }
        (r.pos == body.len()).then_some((
            ProducerState {
                producers,
                ongoing,
                aborted,
            },
            offset,
        ))
    }
}

const SNAPSHOT_MAGIC: u32 = 0x5052_4f32; // "PRO2"

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let s = self.b.get(self.pos..self.pos + N)?;
        self.pos += N;
        s.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take::<8>().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 1,
            max_timestamp: 1,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    #[test]
    fn a_fencing_marker_refuses_the_old_epoch_where_it_had_not_written_yet() {
        // The coordinator aborted producer 7's transaction with epoch 1 (a new instance took
        // over its transactional id) before its epoch-0 batch reached this partition.
        let mut s = ProducerState::default();
        s.end_transaction(7, 1, Marker::Abort, 0, 5);
        assert!(matches!(
            s.check(&header(7, 0, 0, 3, 1)),
            Err(ProducerStateError::InvalidEpoch {
                epoch: 0,
                current: 1,
                ..
            })
        ));
        // The new epoch writes from sequence 0.
        assert_eq!(s.check(&header(7, 2, 0, 1, 1)), Ok(None));
        // And the fencing survives an expiry pass that is not yet due.
        assert_eq!(s.expire(6, 1_000), 0);
        assert!(s.check(&header(7, 0, 0, 3, 1)).is_err());
    }

    #[test]
    fn duplicates_gaps_and_epochs() {
        let mut s = ProducerState::default();
        // A new producer may start anywhere.
        let b0 = header(7, 0, 0, 3, 10);
        assert_eq!(s.check(&b0), Ok(None));
        s.update(&b0, 1);
        let b1 = header(7, 0, 3, 2, 13);
        assert_eq!(s.check(&b1), Ok(None));
        s.update(&b1, 2);
        // A retry of either is a duplicate with its original offsets.
        let again = s.check(&header(7, 0, 0, 3, 99)).unwrap().unwrap();
        assert_eq!((again.first_offset, again.last_offset), (10, 12));
        // A gap, an overlap that is not a retry, an old epoch are refused.
        assert!(matches!(
            s.check(&header(7, 0, 6, 1, 0)),
            Err(ProducerStateError::OutOfOrder {
                last: 4,
                got: 6,
                ..
            })
        ));
        assert!(s.check(&header(7, 0, 1, 2, 0)).is_err());
        assert!(matches!(
            s.check(&header(7, -1, 5, 1, 0)),
            Err(ProducerStateError::InvalidEpoch { .. })
        ));
        // A new epoch starts at 0, and only there.
        assert!(s.check(&header(7, 1, 5, 1, 0)).is_err());
        assert_eq!(s.check(&header(7, 1, 0, 1, 0)), Ok(None));
        // Only the last five batches are remembered.
        for i in 0..6 {
            s.update(&header(7, 0, 5 + i, 1, 15 + i64::from(i)), 3);
        }
        assert_eq!(s.get(7).unwrap().batches.len(), BATCHES_KEPT);
        // A retry of a batch no longer remembered cannot be told from a gap: refused.
        assert!(s.check(&header(7, 0, 0, 3, 0)).is_err());
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut s = ProducerState::default();
        let h = header(1, 0, i32::MAX - 1, 2, 0);
        assert_eq!(last_sequence(&h), i32::MAX);
        s.update(&h, 0);
        assert_eq!(s.check(&header(1, 0, 0, 1, 2)), Ok(None));
        let wrapped = header(1, 0, i32::MAX, 3, 0);
        assert_eq!(last_sequence(&wrapped), 1);
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_refused() {
        let mut s = ProducerState::default();
        s.update(&header(1, 0, 0, 3, 0), 5);
        s.update(&header(2, 4, 9, 1, 3), 6);
        let bytes = s.encode(4);
        assert_eq!(ProducerState::decode(&bytes), Some((s.clone(), 4)));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert_eq!(ProducerState::decode(&bad), None, "flip at {i}");
        }
        assert_eq!(ProducerState::decode(&bytes[..bytes.len() - 1]), None);
        // Expiry forgets idle producers.
        assert_eq!(s.expire(100, 95), 1);
        assert!(s.get(1).is_none() && s.get(2).is_some());
    }
}
