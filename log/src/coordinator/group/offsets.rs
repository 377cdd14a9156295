//! Committed offsets: an in-memory cache backed by the compacted internal topic
//! `__consumer_offsets`, in Kafka's record format (key v1: group, topic, partition; value v3:
//! offset, leader epoch, metadata, commit timestamp; a null value deletes), so the topic reads
//! the same as Kafka's. The cache is rebuilt from the topic on start.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::record::control::{marker_of_key, Marker};
use crate::record::{encode_batch, Compression, NewRecord};
use crate::storage::{LogManager, StorageError};
use crate::types::TopicPartition;

/// The internal topic's name.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
const KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 3;

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// (group, topic, partition).
pub type OffsetKey = (String, String, i32);

/// Which `__consumer_offsets` partition holds a group: Kafka's `abs(groupId.hashCode) % n`, with
/// Java's String.hashCode over UTF-16 code units, so a group lands where Kafka would put it.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group_id.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// The longest group id: `__consumer_offsets` keys hold it behind a 16-bit length, as in
/// Kafka. Longer ids are refused in the request (INVALID_GROUP_ID), never cut.
pub const MAX_GROUP_ID_BYTES: usize = i16::MAX as usize;

/// Whether a group may use `group_id`: not empty, and short enough for its offset keys.
pub fn valid_group_id(group_id: &str) -> bool {
    !group_id.is_empty() && group_id.len() <= MAX_GROUP_ID_BYTES
}

/// Strings here are bounded before they get here (group ids by [`valid_group_id`], topic
/// names by their rules, metadata by `offset.metadata.max.bytes` <= 32767).
fn put_string(buf: &mut BytesMut, s: &str) {
    let bytes = s.as_bytes();
    let len = bytes.len().min(i16::MAX as usize);
    buf.put_i16(len as i16);
    buf.put_slice(&bytes[..len]);
}

fn get_string(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    if len < 0 || buf.remaining() < len as usize {
        return None;
    }
    String::from_utf8(buf.split_to(len as usize).to_vec()).ok()
}

pub fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(KEY_VERSION);
    put_string(&mut b, group);
    put_string(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn encode_value(c: &Committed) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(VALUE_VERSION);
    b.put_i64(c.offset);
    b.put_i32(c.leader_epoch);
    put_string(&mut b, &c.metadata);
    b.put_i64(c.commit_timestamp_ms);
    b.freeze()
}

/// Parses an offset-commit key; `None` for other record kinds (group metadata) or damage.
pub fn decode_key(mut b: Bytes) -> Option<OffsetKey> {
    if b.remaining() < 2 {
        return None;
    }
    let version = b.get_i16();
    if version != 0 && version != 1 {
        return None;
    }
    let group = get_string(&mut b)?;
    let topic = get_string(&mut b)?;
    (b.remaining() >= 4).then(|| (group, topic, b.get_i32()))
}

/// Parses value versions 0-3 (Kafka's older layouts have no leader epoch or an expire time).
pub fn decode_value(mut b: Bytes) -> Option<Committed> {
    if b.remaining() < 10 {
        return None;
    }
    let version = b.get_i16();
    let offset = b.get_i64();
    let leader_epoch = if version >= 3 {
        (b.remaining() >= 4).then(|| b.get_i32())?
    } else {
        -1
    };
    let metadata = get_string(&mut b)?;
    let commit_timestamp_ms = (b.remaining() >= 8).then(|| b.get_i64())?;
    Some(Committed {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

/// One group's commits and deletions (`None`), per topic and partition.
pub type OffsetWrites = Vec<(String, i32, Option<Committed>)>;

/// The committed offsets of the groups this broker coordinates, and the offsets committed
/// inside transactions that have not ended yet (Kafka's pending transactional offsets).
#[derive(Debug, Default)]
pub struct OffsetStore {
    cache: BTreeMap<OffsetKey, Committed>,
    /// Producer id -> offsets its open transaction committed (KIP-98's TxnOffsetCommit):
    /// applied when the transaction's commit marker reaches the group's partition, dropped
    /// on abort. They are in the log as a transactional batch, so a reload finds them again.
    pending: BTreeMap<i64, BTreeMap<OffsetKey, Committed>>,
    partitions: i32,
}

impl OffsetStore {
    /// Rebuilds the cache in place from `__consumer_offsets` (after a poisoned lock); on a
    /// read error the store stays as it was, and the error is logged.
    pub fn reload(&mut self, logs: &LogManager) {
        match OffsetStore::load(logs, self.partitions) {
            Ok(fresh) => *self = fresh,
            Err(e) => tracing::error!(error = %e, "reloading committed offsets failed"),
        }
    }

    /// Rebuilds the cache by reading every partition of `__consumer_offsets` from its start.
    pub fn load(logs: &LogManager, partitions: i32) -> Result<OffsetStore, StorageError> {
        let mut store = OffsetStore {
            partitions,
            ..OffsetStore::default()
        };
        for p in 0..partitions {
            store.load_partition(logs, p)?;
        }
        Ok(store)
    }

    /// The partition count of `__consumer_offsets` (groups are placed by it).
    pub fn set_partitions(&mut self, partitions: i32) {
        self.partitions = partitions;
    }

    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    pub fn partition_of(&self, group: &str) -> i32 {
        partition_for(group, self.partitions)
    }

    /// Forgets the groups of `__consumer_offsets` partition `p` (another broker coordinates
    /// them now).
    pub fn unload_partition(&mut self, p: i32) {
        let n = self.partitions;
        let ours = |k: &OffsetKey| partition_for(&k.0, n) != p;
        self.cache.retain(|k, _| ours(k));
        for offsets in self.pending.values_mut() {
            offsets.retain(|k, _| ours(k));
        }
        self.pending.retain(|_, o| !o.is_empty());
    }

    /// (Re)reads partition `p` from its log start: its groups' offsets replace what was here,
    /// transactional commits stay pending until their marker, as Kafka's loader does.
    pub fn load_partition(&mut self, logs: &LogManager, p: i32) -> Result<(), StorageError> {
        self.unload_partition(p);
        let Some(log) = logs.get(&TopicPartition::new(OFFSETS_TOPIC, p)) else {
            return Ok(());
        };
        log.scan_batches(|h, records| {
            if h.is_control() {
                let commit = records
                    .first()
                    .and_then(|r| r.key.as_deref().and_then(marker_of_key))
                    == Some(Marker::Commit);
                self.end_transaction(p, h.producer_id, commit);
                return;
            }
            for rec in records {
                let Some(key) = rec.key.and_then(decode_key) else {
                    continue;
                };
                let value = rec.value.and_then(decode_value);
                if h.is_transactional() {
                    if let Some(v) = value {
                        self.pending
                            .entry(h.producer_id)
                            .or_default()
                            .insert(key, v);
                    }
                    continue;
                }
                match value {
                    Some(v) => self.cache.insert(key, v),
                    None => self.cache.remove(&key),
                };
            }
        })
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&Committed> {
        self.cache
            .get(&(group.to_string(), topic.to_string(), partition))
    }

    /// Every committed offset of a group.
    pub fn of_group(&self, group: &str) -> Vec<(OffsetKey, Committed)> {
        self.cache
            .range((group.to_string(), String::new(), i32::MIN)..)
            .take_while(|(k, _)| k.0 == group)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        let mut g: Vec<String> = self.cache.keys().map(|k| k.0.clone()).collect();
        g.dedup();
        g
    }

    /// Partitions of `group` with an offset committed in a transaction still open (KIP-447's
    /// unstable offsets).
    pub fn unstable(&self, group: &str) -> std::collections::BTreeSet<(String, i32)> {
        self.pending
            .values()
            .flat_map(|o| o.keys())
            .filter(|k| k.0 == group)
            .map(|k| (k.1.clone(), k.2))
            .collect()
    }

    /// Writes commits (`Some`) and deletions (`None`) of one group to its `__consumer_offsets`
    /// partition, then applies them to the cache. Nothing changes if the append fails.
    pub fn write(
        &mut self,
        logs: &LogManager,
        group: &str,
        entries: OffsetWrites,
    ) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let log = self.log_of(logs, group)?;
        let mut batch = encode_batch(&records_of(group, &entries), Compression::None)?;
        log.append(&mut batch)?;
        for (topic, partition, c) in entries {
            let key = (group.to_string(), topic, partition);
            match c {
                Some(c) => self.cache.insert(key, c),
                None => self.cache.remove(&key),
            };
        }
        Ok(())
    }

    /// Writes offsets committed inside `producer`'s transaction (TxnOffsetCommit) as a
    /// transactional batch of that producer: they stay pending until the transaction's
    /// marker reaches this partition ([`end_transaction`](Self::end_transaction)).
    pub fn write_transactional(
        &mut self,
        logs: &LogManager,
        group: &str,
        producer: (i64, i16),
        entries: Vec<(String, i32, Committed)>,
    ) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let log = self.log_of(logs, group)?;
        let writes: OffsetWrites = entries
            .iter()
            .map(|(t, p, c)| (t.clone(), *p, Some(c.clone())))
            .collect();
        let (id, epoch) = producer;
        let mut batch = crate::record::encode_idempotent_batch(
            &records_of(group, &writes),
            Compression::None,
            id,
            epoch,
            log.next_sequence(id, epoch),
            true,
        )?;
        log.append(&mut batch)?;
        let pending = self.pending.entry(id).or_default();
        for (topic, partition, c) in entries {
            pending.insert((group.to_string(), topic, partition), c);
        }
        Ok(())
    }

    /// A transaction marker of `producer_id` was written to partition `p`: its pending
    /// offsets of that partition's groups become committed (`commit`) or are dropped.
    pub fn end_transaction(&mut self, p: i32, producer_id: i64, commit: bool) {
        let n = self.partitions;
        let Some(pending) = self.pending.get_mut(&producer_id) else {
            return;
        };
        let (ended, kept): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(pending)
            .into_iter()
            .partition(|(k, _)| partition_for(&k.0, n) == p);
        *pending = kept;
        if pending.is_empty() {
            self.pending.remove(&producer_id);
        }
        if commit {
            self.cache.extend(ended);
        }
    }

    fn log_of(
        &self,
        logs: &LogManager,
        group: &str,
    ) -> Result<std::sync::Arc<crate::storage::PartitionLog>, StorageError> {
        logs.get_or_create(&TopicPartition::new(
            OFFSETS_TOPIC,
            self.partition_of(group),
        ))
    }
}

/// The `__consumer_offsets` records of one group's writes.
fn records_of(group: &str, entries: &OffsetWrites) -> Vec<NewRecord> {
    let now = entries
        .iter()
        .filter_map(|(_, _, c)| c.as_ref().map(|c| c.commit_timestamp_ms))
        .max()
        .unwrap_or(0);
    entries
        .iter()
        .map(|(topic, partition, c)| NewRecord {
            key: Some(encode_key(group, topic, *partition)),
            value: c.as_ref().map(encode_value),
            timestamp_ms: c.as_ref().map_or(now, |c| c.commit_timestamp_ms),
            headers: Vec::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_kafkas_java_hash() {
        // Java: "my-group".hashCode() = 1011262208... computed by the same rule; check a few
        // hand-computed values of the rule and its edge cases.
        assert_eq!(partition_for("", 50), 0);
        // "a".hashCode() = 97.
        assert_eq!(partition_for("a", 50), 97 % 50);
        // "ab".hashCode() = 97*31 + 98 = 3105.
        assert_eq!(partition_for("ab", 50), 3105 % 50);
        // Overflowing hashes wrap as Java ints do and take the absolute value.
        let h = "polygenelubricants"
            .encode_utf16()
            .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(u as i32));
        assert_eq!(
            h,
            i32::MIN,
            "Java's famous String with hashCode Integer.MIN_VALUE"
        );
        assert_eq!(partition_for("polygenelubricants", 50), 0);
    }

    #[test]
    fn records_round_trip() {
        let c = Committed {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp_ms: 9,
        };
        assert_eq!(
            decode_key(encode_key("g", "t", 7)),
            Some(("g".into(), "t".into(), 7))
        );
        assert_eq!(decode_value(encode_value(&c)), Some(c));
        assert_eq!(decode_key(Bytes::from_static(&[0, 1, 0])), None);
        assert_eq!(decode_value(Bytes::from_static(&[0, 3])), None);
    }
}
