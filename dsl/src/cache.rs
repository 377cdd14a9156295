//! The record cache in front of an aggregation's store (Kafka Streams' caching, on by
//! default): updates collect in memory per store key, typed, and reach the store and the
//! operators downstream once per key and flush — before each commit, or earlier when the
//! cache outgrows its share of `cache_max_bytes`. A key updated many times between two
//! commits thus costs one store write, one changelog record and one downstream record: the
//! latest value, with the value forwarded before it as the old one.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;
use rill_core::processor::{ProcessError, ProcessorContext};
use rill_core::state::{InlineKey, KeyValueStore};

use crate::graph::{decode_timestamped, timestamped_bytes, typed_record, Change};
use crate::Data;

/// Record headers, as the core carries them.
type Headers = Vec<(String, Option<Bytes>)>;

/// The key a store key's updates are forwarded under.
pub(crate) type OutKey = Box<dyn Fn(&[u8]) -> Result<Bytes, ProcessError> + Send>;

/// Forwards under the store key itself (key-value stores).
pub(crate) fn same_key() -> OutKey {
    Box::new(|k| Ok(Bytes::copy_from_slice(k)))
}

/// One cached key.
struct Entry<V> {
    /// The current value (`None`: absent).
    value: Option<V>,
    ts: i64,
    /// Updated since the last flush; `old` is then what the store (and downstream) has.
    dirty: bool,
    old: Option<V>,
    /// The headers of the latest update, forwarded with it.
    headers: Headers,
    /// When it was last updated (the cache's update count): eviction takes the least
    /// recently updated first.
    used: u64,
}

/// A multiply-rotate hash taking eight bytes a step (as rustc's FxHash does): store keys
/// are short, and SipHash's DoS resistance buys nothing for keys that a task's own operators
/// wrote.
#[derive(Default)]
pub(crate) struct FastHash(u64);

impl FastHash {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for FastHash {
    fn finish(&self) -> u64 {
        // The high bits mix best; hashbrown takes its control bits from the top.
        self.0.rotate_left(20)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// A write-back cache of a key-value store's timestamped values (see the module docs).
pub(crate) struct RecordCache<V> {
    entries: HashMap<InlineKey, Entry<V>, BuildHasherDefault<FastHash>>,
    /// Store keys updated since the last flush, in the order they first were: the order
    /// they are forwarded in.
    dirty: Vec<InlineKey>,
    /// Approximate bytes held: keys (twice while dirty), entries, the table's overhead.
    bytes: usize,
    /// Updates so far: the clock of `Entry::used`.
    clock: u64,
    /// The key forwarded downstream for a store key (a windowed key for window stores).
    out_key: OutKey,
    /// Off (`Materialized::with_caching_disabled`): every update is written and forwarded
    /// at once, and nothing stays cached.
    enabled: bool,
    /// The time of a store key (a window's start), for `evicted_max`.
    key_time: Option<KeyTime>,
    /// The latest `key_time` of an entry evicted to save memory (`i64::MAX` when a key
    /// had none): what the store may hold that the cache no longer does.
    evicted_max: i64,
}

/// The time a store key carries (a window store key's window start).
pub(crate) type KeyTime = fn(&[u8]) -> Option<i64>;

impl<V: Data> RecordCache<V> {
    /// A cache forwarding updates under `out_key(store key)`.
    pub fn new(enabled: bool, out_key: OutKey) -> Self {
        RecordCache {
            entries: HashMap::default(),
            dirty: Vec::new(),
            bytes: 0,
            clock: 0,
            out_key,
            enabled,
            key_time: None,
            evicted_max: i64::MIN,
        }
    }

    /// Tracks the latest time `key_time` finds in a key evicted to save memory (see
    /// [`RecordCache::evicted_max`]).
    pub fn with_key_time(mut self, key_time: KeyTime) -> Self {
        self.key_time = Some(key_time);
        self
    }

    /// Whether the cache is on (off, it keeps nothing between flushes).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The latest key time of an entry evicted to save memory: a key with a later time
    /// that the cache lacks was never evicted from it.
    pub fn evicted_max(&self) -> i64 {
        self.evicted_max
    }

    /// An entry's share of `bytes` (its key counted once).
    fn size(key: &[u8]) -> usize {
        // The (key, entry) slot, the table's control bytes, and a long key's heap block.
        std::mem::size_of::<(InlineKey, Entry<V>)>() + 16 + Self::key_heap(key)
    }

    /// What a key costs on the dirty list.
    fn dirty_size(key: &[u8]) -> usize {
        std::mem::size_of::<InlineKey>() + Self::key_heap(key)
    }

    /// The heap block a key needs (none when inline).
    fn key_heap(key: &[u8]) -> usize {
        InlineKey::heap_bytes(key)
    }

    /// Replaces `store_key`'s value by `step(current value, its timestamp)`, reading the
    /// store on a miss unless the caller knows the key is `new` there; the update is
    /// forwarded with `headers` at the next flush. Returns whether the key was absent (new
    /// to the store).
    pub fn update(
        &mut self,
        store: &dyn KeyValueStore,
        store_key: &[u8],
        new: bool,
        headers: &Headers,
        step: impl FnOnce(Option<V>, Option<i64>) -> (V, i64),
    ) -> Result<bool, ProcessError> {
        if let Some(e) = self.entries.get_mut(store_key) {
            if !e.dirty {
                e.dirty = true;
                e.old = e.value.clone();
                self.dirty.push(InlineKey::new(store_key));
                self.bytes += Self::dirty_size(store_key);
            }
            let absent = e.value.is_none();
            let (new, ts) = step(e.value.take(), (!absent).then_some(e.ts));
            e.value = Some(new);
            e.ts = ts;
            self.clock += 1;
            e.used = self.clock;
            if e.headers != *headers {
                e.headers = headers.clone();
            }
            return Ok(absent);
        }
        // A miss: the store's value is the old one, and the entry starts dirty.
        let stored = if new { None } else { store.get(store_key)? };
        let (old, prev_ts) = match stored {
            Some(b) => {
                let (v, t) = decode_timestamped::<V>(&b)?;
                (Some(v), Some(t))
            }
            None => (None, None),
        };
        let absent = old.is_none();
        let (new, ts) = step(old.clone(), prev_ts);
        self.clock += 1;
        self.bytes += Self::size(store_key) + Self::dirty_size(store_key);
        let key = InlineKey::new(store_key);
        self.dirty.push(key.clone());
        self.entries.insert(
            key,
            Entry {
                value: Some(new),
                ts,
                dirty: true,
                old,
                headers: headers.clone(),
                used: self.clock,
            },
        );
        Ok(absent)
    }

    /// Whether the cache should flush now: it is off, or past its share of memory.
    pub fn must_flush(&self, ctx: &ProcessorContext<'_>) -> bool {
        !self.enabled || self.bytes > ctx.cache_max_bytes()
    }

    /// Writes every updated key to store `store` and forwards it, in the order the keys
    /// were first updated; then, past the cache's share of memory, evicts the least recently
    /// updated entries down to three quarters of it.
    pub fn flush(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        store: &str,
    ) -> Result<(), ProcessError> {
        for key in std::mem::take(&mut self.dirty) {
            let key = key.as_slice();
            self.bytes = self.bytes.saturating_sub(Self::dirty_size(key));
            let Some(e) = self.entries.get_mut(key) else {
                continue;
            };
            if !std::mem::take(&mut e.dirty) {
                continue;
            }
            let old = e.old.take();
            match &e.value {
                Some(v) => ctx.store(store)?.put(key, &timestamped_bytes(v, e.ts)?)?,
                None => ctx.store(store)?.erase(key)?,
            }
            let change = Change {
                new: e.value.clone(),
                old,
            };
            ctx.forward(typed_record(
                Some((self.out_key)(key)?),
                change,
                e.ts,
                e.headers.clone(),
            ))?;
        }
        if !self.enabled {
            self.retain(|_, _| false);
        } else {
            self.evict(ctx.cache_max_bytes());
        }
        Ok(())
    }

    /// Past `limit` bytes, evicts the least recently updated clean entries down to three
    /// quarters of it, so that eviction is not paid again on the next record.
    fn evict(&mut self, limit: usize) {
        if self.bytes <= limit {
            return;
        }
        let per_entry = (self.bytes / self.entries.len().max(1)).max(1);
        let keep = (limit / 4 * 3 / per_entry).min(self.entries.len());
        let cut = self.entries.len() - keep;
        if cut == 0 {
            return;
        }
        let mut used: Vec<u64> = self.entries.values().map(|e| e.used).collect();
        let threshold = *used.select_nth_unstable(cut - 1).1;
        let (key_time, mut evicted_max) = (self.key_time, self.evicted_max);
        self.retain(|k, u| {
            let keep = u > threshold;
            if let (false, Some(time)) = (keep, key_time) {
                evicted_max = evicted_max.max(time(k).unwrap_or(i64::MAX));
            }
            keep
        });
        self.evicted_max = evicted_max;
    }

    /// Drops the clean entries `keep(store key, when last updated)` rejects.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], u64) -> bool) {
        let mut freed = 0;
        self.entries.retain(|k, e| {
            let k = k.as_slice();
            let kept = e.dirty || keep(k, e.used);
            if !kept {
                freed += Self::size(k);
            }
            kept
        });
        self.bytes = self.bytes.saturating_sub(freed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_core::state::memory::InMemoryStore;
    use rill_core::state::INLINE_KEY_BYTES;

    fn add(cache: &mut RecordCache<i64>, store: &InMemoryStore, key: &[u8], ts: i64) -> bool {
        cache
            .update(store, key, false, &Vec::new(), |v, t| {
                (v.unwrap_or(0) + 1, t.unwrap_or(ts).max(ts))
            })
            .unwrap()
    }

    #[test]
    fn updates_read_through_to_the_store_once_and_stay_in_memory() {
        let mut store = InMemoryStore::new("s");
        store
            .put(b"a", &timestamped_bytes(&10i64, 5).unwrap())
            .unwrap();
        let mut cache = RecordCache::new(true, same_key());
        assert!(!add(&mut cache, &store, b"a", 7));
        assert!(add(&mut cache, &store, b"b", 3));
        assert!(!add(&mut cache, &store, b"b", 4));
        // Nothing written yet: the store still has what it had.
        assert_eq!(store.get(b"b").unwrap(), None);
        let e = &cache.entries[b"a".as_slice()];
        assert_eq!((e.value, e.ts, e.old), (Some(11), 7, Some(10)));
        let e = &cache.entries[b"b".as_slice()];
        assert_eq!((e.value, e.ts, e.old), (Some(2), 4, None));
        let dirty: Vec<&[u8]> = cache.dirty.iter().map(InlineKey::as_slice).collect();
        assert_eq!(dirty, vec![b"a".as_slice(), b"b"]);
    }

    /// Short keys live in the table, long ones on the heap; both are found by their bytes.
    #[test]
    fn short_and_long_keys_are_found_again() {
        let store = InMemoryStore::new("s");
        let mut cache = RecordCache::new(true, same_key());
        let long = [7u8; INLINE_KEY_BYTES + 10];
        let short = [7u8; INLINE_KEY_BYTES];
        for key in [&long[..], &short, &long, &short[..3]] {
            add(&mut cache, &store, key, 1);
        }
        assert_eq!(cache.entries.len(), 3);
        assert_eq!(cache.entries[&long[..]].value, Some(2));
        assert_eq!(cache.entries[&short[..]].value, Some(1));
        assert!(matches!(
            cache.dirty[0],
            InlineKey::Heap(ref k) if **k == long[..]
        ));
    }

    #[test]
    fn eviction_keeps_dirty_entries_and_accounts_for_what_it_frees() {
        let store = InMemoryStore::new("s");
        let mut cache = RecordCache::new(true, same_key());
        add(&mut cache, &store, b"a", 1);
        let full = cache.bytes;
        cache.retain(|_, _| false);
        assert_eq!(cache.bytes, full, "a dirty entry is never evicted");
        cache.entries.get_mut(b"a".as_slice()).unwrap().dirty = false;
        cache.dirty.clear();
        cache.bytes -= RecordCache::<i64>::dirty_size(b"a");
        cache.retain(|_, _| false);
        assert_eq!((cache.bytes, cache.entries.len()), (0, 0));
    }

    #[test]
    fn eviction_drops_the_least_recently_updated_down_to_three_quarters() {
        let store = InMemoryStore::new("s");
        let mut cache = RecordCache::new(true, same_key());
        for k in 0..8u8 {
            add(&mut cache, &store, &[k], 1);
        }
        add(&mut cache, &store, &[0], 2);
        for e in cache.entries.values_mut() {
            e.dirty = false;
        }
        cache.dirty.clear();
        cache.bytes = 8 * RecordCache::<i64>::size(&[0]);
        let per_entry = RecordCache::<i64>::size(&[0]);
        cache.evict(8 * per_entry);
        assert_eq!(cache.entries.len(), 8, "within the limit: nothing goes");
        cache.evict(4 * per_entry);
        // Three of four entries' worth stay: the three updated last.
        let mut kept: Vec<u8> = cache.entries.keys().map(|k| k.as_slice()[0]).collect();
        kept.sort();
        assert_eq!(kept, vec![0, 6, 7]);
        assert_eq!(cache.bytes, 3 * per_entry);
    }
}
