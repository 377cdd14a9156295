//! Committed offsets: an in-memory cache backed by the compacted internal topic
//! `__consumer_offsets`, in Kafka's record format (key v1: group, topic, partition; value v3:
//! offset, leader epoch, metadata, commit timestamp; a null value deletes), so the topic reads
//! the same as Kafka's. The cache is rebuilt from the topic on start.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

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

/// The committed offsets of every group.
#[derive(Debug, Default)]
pub struct OffsetStore {
    cache: BTreeMap<OffsetKey, Committed>,
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
            cache: BTreeMap::new(),
            partitions,
        };
        for p in 0..partitions {
            let Some(log) = logs.get(&TopicPartition::new(OFFSETS_TOPIC, p)) else {
                continue;
            };
            log.scan_records(|rec| {
                let Some(key) = rec.key.and_then(decode_key) else {
                    return;
                };
                match rec.value.and_then(decode_value) {
                    Some(v) => store.cache.insert(key, v),
                    None => store.cache.remove(&key),
                };
            })?;
        }
        Ok(store)
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

    /// Writes commits (`Some`) and deletions (`None`) of one group to its `__consumer_offsets`
    /// partition, then applies them to the cache. Nothing changes if the append fails.
    pub fn write(
        &mut self,
        logs: &LogManager,
        group: &str,
        entries: Vec<(String, i32, Option<Committed>)>,
    ) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let tp = TopicPartition::new(OFFSETS_TOPIC, partition_for(group, self.partitions));
        let log = logs.get_or_create(&tp)?;
        let now = entries
            .iter()
            .filter_map(|(_, _, c)| c.as_ref().map(|c| c.commit_timestamp_ms))
            .max()
            .unwrap_or(0);
        let records: Vec<NewRecord> = entries
            .iter()
            .map(|(topic, partition, c)| NewRecord {
                key: Some(encode_key(group, topic, *partition)),
                value: c.as_ref().map(encode_value),
                timestamp_ms: c.as_ref().map_or(now, |c| c.commit_timestamp_ms),
                headers: Vec::new(),
            })
            .collect();
        let mut batch = encode_batch(&records, Compression::None)?;
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
