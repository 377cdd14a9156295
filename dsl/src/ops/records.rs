//! Records as operators pass them and stores keep them: typed values between fused
//! operators, (new, old) changes of tables, timestamped values and windowed keys in stores,
//! join record ids, expiry of what a store no longer needs, and the saturating time
//! arithmetic every window bound uses.

use std::any::Any;

use std::sync::Arc;

use bytes::Bytes;
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record, Typed};
use rill_core::state::{ts_bytes, InlineKey, KeyValueStore};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::serdes::{hop, Data, Serde, SerdeError};

/// `t` minus each of `spans` in turn, saturating. A sum of spans too large for an i64
/// (size + grace near `i64::MAX`) saturates at `i64::MAX` and would move a bound past where
/// it belongs; taking the spans off one by one does not.
pub(crate) fn earlier(t: i64, spans: &[i64]) -> i64 {
    spans.iter().fold(t, |t, d| t.saturating_sub(*d))
}

/// The earliest time still kept by a store of `retention` (at least `needed`, the spans its
/// windows need): times at or before `observed - retention` have expired.
pub(crate) fn kept_from(observed: i64, retention: i64, needed: &[i64]) -> i64 {
    earlier(observed, &[retention])
        .min(earlier(observed, needed))
        .saturating_add(1)
}

/// A table update between operators: the new value and the one it replaces (`None`: absent
/// or deleted), as Kafka Streams' `Change`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Change<V> {
    pub new: Option<V>,
    pub old: Option<V>,
}

/// Whether a [`Change`]'s bytes carry no new value (a deletion): bincode writes the first
/// field's `Option` tag, 0 for `None`, first.
pub(crate) fn is_deletion(change: &[u8]) -> bool {
    change.first() == Some(&0)
}

/// A record's headers, as the core's `Record` holds them.
pub(crate) type Headers = Vec<(String, Option<Bytes>)>;

pub(crate) type StatelessFn =
    Arc<dyn Fn(&mut ProcessorContext<'_>, Record) -> Result<(), ProcessError> + Send + Sync>;

/// A processor running a shared closure.
pub(crate) struct FnProcessor {
    pub(crate) f: StatelessFn,
}

impl Processor for FnProcessor {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        record: Record,
    ) -> Result<(), ProcessError> {
        (self.f)(ctx, record)
    }
}

pub(crate) fn internal(e: SerdeError) -> ProcessError {
    ProcessError::Failed(format!("internal value: {e}"))
}

pub(crate) fn deser(e: SerdeError) -> ProcessError {
    ProcessError::Deserialization(e.to_string())
}

pub(crate) fn ser(e: SerdeError) -> ProcessError {
    ProcessError::Failed(format!("serialization: {e}"))
}

/// The typed key of a record; `None` for a null key its type cannot hold (skip the record).
pub(crate) fn key_of<K: 'static>(
    keys: &dyn Serde<K>,
    r: &Record,
) -> Result<Option<K>, ProcessError> {
    keys.deserialize(r.key.as_deref()).map_err(deser)
}

/// The typed value of a record between operators: in memory when the operator before
/// forwarded it so, else decoded from its bytes (it came through a topic).
pub(crate) fn value_of<V: Data>(r: &Record) -> Result<V, ProcessError> {
    if let Some(t) = &r.typed {
        return t
            .downcast_ref::<V>()
            .cloned()
            .ok_or_else(|| ProcessError::Failed("internal value of another type".into()));
    }
    let b = r
        .value
        .as_deref()
        .ok_or_else(|| ProcessError::Failed("internal record without a value".into()))?;
    hop::decode(b).map_err(internal)
}

/// [`value_of`] borrowed when the value is in memory.
pub(crate) fn value_ref<V: Data>(r: &Record) -> Result<std::borrow::Cow<'_, V>, ProcessError> {
    match r.typed.as_ref().and_then(|t| t.downcast_ref::<V>()) {
        Some(v) => Ok(std::borrow::Cow::Borrowed(v)),
        None => value_of(r).map(std::borrow::Cow::Owned),
    }
}

/// [`value_of`] taking the record: a value no other child shares moves out, uncopied.
pub(crate) fn take_value<V: Data>(r: &mut Record) -> Result<V, ProcessError> {
    match r.typed.take() {
        Some(t) => t
            .take::<V>()
            .map_err(|_| ProcessError::Failed("internal value of another type".into())),
        None => value_of(r),
    }
}

pub(crate) fn encode<V: Serialize>(v: &V) -> Result<Bytes, ProcessError> {
    hop::encode(v).map_err(internal)
}

/// Serializes a typed value between operators as [`hop`] does (where it leaves the task).
fn encode_any<V: Data>(v: &(dyn Any + Send + Sync)) -> Result<Bytes, String> {
    let v = v
        .downcast_ref::<V>()
        .ok_or_else(|| "a typed value of another type".to_string())?;
    hop::encode(v).map_err(|e| e.to_string())
}

/// A value between operators, kept in memory.
pub(crate) fn typed<V: Data>(v: V) -> Typed {
    Typed::new(Arc::new(v), encode_any::<V>)
}

/// A record between operators with `key`, typed value `value`, `timestamp` and `headers`.
pub(crate) fn typed_record<V: Data>(
    key: Option<Bytes>,
    value: V,
    timestamp: i64,
    headers: Vec<(String, Option<Bytes>)>,
) -> Record {
    Record {
        key,
        value: None,
        timestamp,
        headers,
        typed: Some(typed(value)),
    }
}

/// `record` with another key and value (timestamp and headers kept).
/// `record` carrying `value` instead: its key and headers move over, nothing is copied.
pub(crate) fn rewrap<V: Data>(record: Record, value: V) -> Record {
    typed_record(record.key, value, record.timestamp, record.headers)
}

pub(crate) fn with<V: Data>(record: &Record, key: Option<Bytes>, value: V) -> Record {
    typed_record(key, value, record.timestamp, record.headers.clone())
}

/// A timestamped value in a store: `timestamp (8 bytes, big-endian) | bincode value`.
pub(crate) fn put_timestamped<V: Serialize>(
    store: &mut dyn KeyValueStore,
    key: &[u8],
    value: &V,
    ts: i64,
) -> Result<Vec<u8>, ProcessError> {
    let b = timestamped_bytes(value, ts)?;
    store.put(key, &b)?;
    Ok(b)
}

pub(crate) fn timestamped_bytes<V: Serialize>(value: &V, ts: i64) -> Result<Vec<u8>, ProcessError> {
    let mut b = Vec::with_capacity(24);
    timestamped_into(value, ts, &mut b)?;
    Ok(b)
}

/// [`timestamped_bytes`] into `b` (cleared first), a buffer the caller reuses.
pub(crate) fn timestamped_into<V: Serialize>(
    value: &V,
    ts: i64,
    b: &mut Vec<u8>,
) -> Result<(), ProcessError> {
    b.clear();
    b.extend_from_slice(&ts.to_be_bytes());
    hop::encode_into(value, b).map_err(internal)
}

pub(crate) fn decode_timestamped<V: DeserializeOwned>(b: &[u8]) -> Result<(V, i64), ProcessError> {
    let ts = b
        .get(..8)
        .and_then(|t| t.try_into().ok())
        .map(i64::from_be_bytes)
        .ok_or_else(|| ProcessError::Failed("stored value shorter than its timestamp".into()))?;
    Ok((hop::decode(&b[8..]).map_err(internal)?, ts))
}

pub(crate) fn get_timestamped<V: DeserializeOwned>(
    store: &dyn KeyValueStore,
    key: &[u8],
) -> Result<Option<(V, i64)>, ProcessError> {
    store.get(key)?.map(|b| decode_timestamped(&b)).transpose()
}

/// The bytes of a windowed key from the record key's bytes (see `WindowedSerde`).
pub(crate) fn windowed_key(key: &[u8], start: i64, end: i64) -> Bytes {
    let mut b = Vec::with_capacity(key.len() + 16);
    b.extend_from_slice(key);
    b.extend_from_slice(&start.to_be_bytes());
    b.extend_from_slice(&end.to_be_bytes());
    Bytes::from(b)
}

/// The window end of a windowed key's bytes.
pub(crate) fn window_end_of(key: &[u8]) -> Option<i64> {
    let cut = key.len().checked_sub(8)?;
    Some(i64::from_be_bytes(key[cut..].try_into().ok()?))
}

/// Identities of the records an operator keeps (a join's or a sliding window's buffered
/// records): 24 bytes, the record's timestamp, then a hash of the topic, the partition and
/// the offset of the input record it came from — unique, and stable across restarts, as
/// processing replays the same input the same way.
///
/// One input record can reach an operator as several (a `flat_map`, a `merge` of two streams
/// from one source): the n-th record of the same input offset carries n in the top 16 bits
/// of the offset (the first keeps the offset as it is), so that none overwrites another.
/// Records with no input behind them (forwarded by a punctuation) count up from 0 in the
/// offset's place.
#[derive(Debug, Default)]
pub(crate) struct RecordIds {
    /// The input record of the last id: (topic hash, partition, offset).
    last: Option<(u32, i32, i64)>,
    /// Ids made for it before this one.
    seq: i64,
}

impl RecordIds {
    pub(crate) fn next(&mut self, ctx: &ProcessorContext<'_>, ts: i64) -> Vec<u8> {
        let origin = ctx.record_metadata().map(|m| {
            let h = m.topic.bytes().fold(0x811c_9dc5u32, |h, c| {
                (h ^ c as u32).wrapping_mul(0x0100_0193)
            });
            (h, m.partition, m.offset)
        });
        if origin == self.last {
            self.seq = self.seq.wrapping_add(1);
        } else {
            self.last = origin;
            self.seq = 0;
        }
        let (hash, partition, offset) = match origin {
            Some((h, p, o)) => (h, p, o ^ ((self.seq & 0xffff) << 48)),
            None => (0, 0, self.seq),
        };
        let mut b = ts_bytes(ts).to_vec();
        b.extend_from_slice(&hash.to_be_bytes());
        b.extend_from_slice(&partition.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b
    }
}

/// What an operator wrote to its store, by time, so that expired entries are removed
/// without scanning the store — locally only ([`KeyValueStore::expire`]): the changelog
/// topic's retention drops them there. Entries written before this processor instance started (a
/// restart) are not in it: the first purge scans the store once for them.
#[derive(Debug, Default)]
pub(crate) struct ExpiryIndex {
    by_time: std::collections::BTreeMap<i64, Vec<InlineKey>>,
    scanned: bool,
}

impl ExpiryIndex {
    pub fn insert(&mut self, time: i64, store_key: InlineKey) {
        self.by_time.entry(time).or_default().push(store_key);
    }

    /// Indexes what the store holds from before this processor started — the scan the first
    /// purge would make — and returns the latest time found (where a restarted join side's
    /// store clock starts from). Does nothing once the store was scanned.
    pub fn load(
        &mut self,
        store: &dyn KeyValueStore,
        scan_time: impl Fn(&[u8]) -> Option<i64>,
    ) -> Result<Option<i64>, ProcessError> {
        if self.scanned {
            return Ok(None);
        }
        self.scanned = true;
        let mut latest = None;
        for (k, _) in store.all()? {
            if let Some(t) = scan_time(&k) {
                latest = latest.max(Some(t));
                self.insert(t, InlineKey::new(&k));
            }
        }
        Ok(latest)
    }

    /// Whether [`ExpiryIndex::purge`] at `cutoff` has anything to do (always, before the
    /// first purge's scan).
    pub fn due(&self, cutoff: i64) -> bool {
        !self.scanned
            || self
                .by_time
                .first_key_value()
                .is_some_and(|(t, _)| *t < cutoff)
    }

    /// Expires the entries with a time below `cutoff`; the first call also expires those
    /// `scan_time` (the time of a store key, if it can tell) finds below it.
    pub fn purge(
        &mut self,
        store: &mut dyn KeyValueStore,
        cutoff: i64,
        scan_time: impl Fn(&[u8]) -> Option<i64>,
    ) -> Result<(), ProcessError> {
        if !self.scanned {
            self.scanned = true;
            for (k, _) in store.all()? {
                if scan_time(&k).is_some_and(|t| t < cutoff) {
                    store.expire(&k)?;
                }
            }
        }
        let keep = self.by_time.split_off(&cutoff);
        for (_, keys) in std::mem::replace(&mut self.by_time, keep) {
            for k in keys {
                // Expiring a key already gone (merged away, rewritten) is harmless.
                store.expire(k.as_slice())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_core::state::memory::InMemoryStore;

    #[test]
    fn a_deletion_is_told_from_its_first_byte() {
        for (change, deletion) in [
            (
                Change {
                    new: None,
                    old: Some("a".to_string()),
                },
                true,
            ),
            (
                Change {
                    new: None,
                    old: None,
                },
                true,
            ),
            (
                Change {
                    new: Some(String::new()),
                    old: None,
                },
                false,
            ),
            (
                Change {
                    new: Some("b".into()),
                    old: Some("a".into()),
                },
                false,
            ),
        ] {
            let bytes = crate::serdes::hop::encode(&change).unwrap();
            assert_eq!(is_deletion(&bytes), deletion, "{change:?}");
        }
    }

    #[test]
    fn the_expiry_index_deletes_what_expired_and_scans_once_for_older_entries() {
        let mut store = InMemoryStore::new("s");
        // Written before a restart: unknown to the index, found by the first purge's scan.
        store.put(&[1, 5], b"old").unwrap();
        let mut index = ExpiryIndex::default();
        for (t, k) in [(10, vec![2, 10]), (20, vec![2, 20]), (30, vec![2, 30])] {
            store.put(&k, b"v").unwrap();
            index.insert(t, InlineKey::new(&k));
        }
        let time = |k: &[u8]| k.get(1).map(|t| *t as i64);
        index.purge(&mut store, 20, time).unwrap();
        assert_eq!(store.get(&[1, 5]).unwrap(), None);
        assert_eq!(store.get(&[2, 10]).unwrap(), None);
        assert!(store.get(&[2, 20]).unwrap().is_some());
        // Later purges use the index only.
        store.put(&[1, 6], b"untracked").unwrap();
        index.purge(&mut store, 31, time).unwrap();
        assert!(store.get(&[1, 6]).unwrap().is_some());
        assert_eq!(store.all().unwrap().len(), 1);
    }
}
