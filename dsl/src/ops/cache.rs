//! The record cache in front of an aggregation's store (Kafka Streams' caching, on by
//! default): updates collect in memory per store key, typed, and reach the store and the
//! operators downstream once per key and flush — before each commit, or earlier when the
//! cache outgrows its share of `cache_max_bytes`. A key updated many times between two
//! commits thus costs one store write, one changelog record and one downstream record: the
//! latest value, with the value forwarded before it as the old one.

use std::hash::{BuildHasher, BuildHasherDefault};

use bytes::Bytes;
use hashbrown::HashTable;
use rill_core::processor::{ProcessError, ProcessorContext};
use rill_core::state::{ts_bytes, FastHash, InlineKey, KeyValueStore};
use smallvec::SmallVec;

use crate::ops::records::{
    decode_timestamped, timestamped_bytes, timestamped_into, typed_record, Change, Headers,
};
use crate::Data;

/// The key the updates of a group's window (`None` in a key-value store) are forwarded
/// under.
pub(crate) type OutKey = Box<dyn Fn(&[u8], Option<i64>) -> Result<Bytes, ProcessError> + Send>;

/// Forwards under the store key itself (key-value stores).
pub(crate) fn same_key() -> OutKey {
    Box::new(|k, _| Ok(Bytes::copy_from_slice(k)))
}

/// One cached store key: a window of its group key. Kept small (48 bytes for a count):
/// each record's lookup brings its key's entries into the CPU cache. (What the store had
/// before a dirty entry's first update waits on the dirty list, not here.)
struct Entry<V> {
    /// The window start ([`NO_WINDOW`] in a key-value store).
    window: i64,
    /// The current value (`None`: absent).
    value: Option<V>,
    ts: i64,
    /// The headers of the latest update, forwarded with it (none: no headers, the usual).
    headers: Option<Box<Headers>>,
    /// When it was last updated (the cache's update count: eviction takes the least
    /// recently updated first), and [`DIRTY`]: updated since the last flush.
    used: u64,
}

/// An entry's window in a key-value store's cache.
const NO_WINDOW: i64 = i64::MIN;
/// The bit of `Entry::used` saying the entry is dirty.
const DIRTY: u64 = 1 << 63;

fn slot_window(window: Option<i64>) -> i64 {
    window.unwrap_or(NO_WINDOW)
}

impl<V> Entry<V> {
    fn dirty(&self) -> bool {
        self.used & DIRTY != 0
    }

    /// When it was last updated.
    fn last_used(&self) -> u64 {
        self.used & !DIRTY
    }

    fn window(&self) -> Option<i64> {
        (self.window != NO_WINDOW).then_some(self.window)
    }

    fn set_headers(&mut self, headers: &Headers) {
        let same = match &self.headers {
            None => headers.is_empty(),
            Some(h) => **h == *headers,
        };
        if !same {
            self.headers = (!headers.is_empty()).then(|| Box::new(headers.clone()));
        }
    }

    fn headers(&self) -> Headers {
        self.headers.as_deref().cloned().unwrap_or_default()
    }
}

/// An update on its way out of a flush: `at` is its place on the dirty list.
struct Flushed<V> {
    at: usize,
    change: Change<V>,
    ts: i64,
    headers: Headers,
}

/// A group key's entries: one for a key-value store's key; for a windowed key, one per
/// window the cache holds, side by side (a hopping count's five window updates cost one
/// table lookup, `update_windows`; an aggregate's cost two, the last window taking the
/// record's value with `update`).
type Slots<V> = SmallVec<[Entry<V>; 2]>;

/// The cache's groups in a list, in the order they were added, found through a hash table
/// of their places in it. A stream usually comes back to its keys in about the order they
/// first came in (a source cycling through its devices, users or pages): the groups its
/// records update then lie one after the other in memory, which the CPU reads ahead of
/// use, where a hash table's own slots would lie wherever their hashes put them — the miss
/// that was the largest single cost of a count. The table holds 4-byte places only (64 KiB
/// for 10,000 keys), small enough to stay in the CPU's cache.
struct Groups<V> {
    places: HashTable<u32>,
    list: Vec<(InlineKey, Slots<V>)>,
}

impl<V> Groups<V> {
    fn new() -> Self {
        Groups {
            places: HashTable::new(),
            list: Vec::new(),
        }
    }

    /// A group key's hash (an [`InlineKey`] hashes as its bytes).
    fn hash(key: &[u8]) -> u64 {
        BuildHasherDefault::<FastHash>::default().hash_one(key)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.list.len()
    }

    /// Where `key`'s group is in the list.
    fn place(&self, key: &InlineKey) -> Option<usize> {
        let list = &self.list;
        let at = self
            .places
            .find(Self::hash(key.as_slice()), |&i| list[i as usize].0 == *key)?;
        Some(*at as usize)
    }

    fn get_mut(&mut self, key: &InlineKey) -> Option<&mut Slots<V>> {
        let at = self.place(key)?;
        Some(&mut self.list[at].1)
    }

    #[cfg(test)]
    fn get(&self, key: &[u8]) -> Option<&Slots<V>> {
        let at = self.place(&InlineKey::new(key))?;
        Some(&self.list[at].1)
    }

    /// Adds `key`'s group, which the caller knows is not here.
    fn insert(&mut self, key: InlineKey, slots: Slots<V>) -> Result<(), ProcessError> {
        let at = u32::try_from(self.list.len())
            .map_err(|_| ProcessError::Failed("a record cache holds 2^32 keys".into()))?;
        self.list.push((key, slots));
        self.enter(at);
        Ok(())
    }

    /// Enters the group at `at` in the list into the table.
    fn enter(&mut self, at: u32) {
        let list = &self.list;
        let hash = |i: &u32| Self::hash(list[*i as usize].0.as_slice());
        self.places.insert_unique(hash(&at), at, hash);
    }

    fn values(&self) -> impl Iterator<Item = &Slots<V>> {
        self.list.iter().map(|(_, s)| s)
    }

    /// Keeps the groups `keep` accepts (it may change their entries), in their order.
    fn retain(&mut self, mut keep: impl FnMut(&InlineKey, &mut Slots<V>) -> bool) {
        let before = self.list.len();
        self.list.retain_mut(|(k, s)| keep(k, s));
        if self.list.len() == before {
            return;
        }
        // Places moved: the table is built again (its cost is that of the walk over every
        // group just done).
        self.places.clear();
        for at in 0..self.list.len() {
            self.enter(at as u32);
        }
    }
}

/// The store key of `group`'s `window` (as `WindowStore` lays it out: the framed key, then
/// the window start), or `group` itself.
pub(crate) fn store_key(group: &[u8], window: Option<i64>) -> Vec<u8> {
    let mut k = Vec::with_capacity(group.len() + 8);
    store_key_into(&mut k, group, window);
    k
}

/// [`store_key`] into `k` (cleared first).
fn store_key_into(k: &mut Vec<u8>, group: &[u8], window: Option<i64>) {
    k.clear();
    k.extend_from_slice(group);
    if let Some(start) = window {
        k.extend_from_slice(&ts_bytes(start));
    }
}

/// A store key updated since the last flush (group and window), with what the store (and
/// downstream) had before: the old value a flush forwards. Kept on the list rather than in
/// the entry, which stays small for the many that are clean.
struct Dirty<V> {
    group: InlineKey,
    window: Option<i64>,
    old: Option<V>,
}

/// What an update changes besides its group's entries: the dirty list, the bytes held, the
/// update clock.
struct Book<'a, V> {
    dirty: &'a mut Vec<Dirty<V>>,
    bytes: &'a mut usize,
    clock: &'a mut u64,
}

impl<V: Data> Book<'_, V> {
    /// [`RecordCache::update`] of `window` in its group's `slots`.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        slots: &mut Slots<V>,
        store: &dyn KeyValueStore,
        gk: &InlineKey,
        window: Option<i64>,
        new: bool,
        headers: &Headers,
        step: impl FnOnce(Option<V>, Option<i64>) -> (V, i64),
    ) -> Result<bool, ProcessError> {
        *self.clock += 1;
        let group = gk.as_slice();
        let dirty_size = RecordCache::<V>::dirty_size(group);
        let w = slot_window(window);
        // Newest last (windows are added as they open): a record in order updates the
        // newest windows, found first from the back.
        if let Some(e) = slots.iter_mut().rev().find(|e| e.window == w) {
            if !e.dirty() {
                self.dirty.push(Dirty {
                    group: gk.clone(),
                    window,
                    old: e.value.clone(),
                });
                *self.bytes += dirty_size;
            }
            let absent = e.value.is_none();
            let (new, ts) = step(e.value.take(), (!absent).then_some(e.ts));
            e.value = Some(new);
            e.ts = ts;
            e.used = *self.clock | DIRTY;
            e.set_headers(headers);
            return Ok(absent);
        }
        // A miss: the store's value is the old one, and the entry starts dirty.
        let stored = if new {
            None
        } else {
            store.get(&store_key(group, window))?
        };
        let (old, prev_ts) = match stored {
            Some(b) => {
                let (v, t) = decode_timestamped::<V>(&b)?;
                (Some(v), Some(t))
            }
            None => (None, None),
        };
        let absent = old.is_none();
        let (value, ts) = step(old.clone(), prev_ts);
        *self.bytes += RecordCache::<V>::entry_size() + dirty_size;
        self.dirty.push(Dirty {
            group: gk.clone(),
            window,
            old,
        });
        let mut entry = Entry {
            window: w,
            value: Some(value),
            ts,
            headers: None,
            used: *self.clock | DIRTY,
        };
        entry.set_headers(headers);
        slots.push(entry);
        Ok(absent)
    }
}

/// A write-back cache of a key-value store's timestamped values (see the module docs).
pub(crate) struct RecordCache<V> {
    entries: Groups<V>,
    /// Store keys (group, window) updated since the last flush, in the order they first
    /// were (a flush forwards them in the order they last were).
    dirty: Vec<Dirty<V>>,
    /// A flush's updates, and (when last updated, index) of each to sort them by (kept for
    /// their capacity).
    flushed: Vec<Option<Flushed<V>>>,
    order: Vec<(u64, usize)>,
    place: Vec<u32>,
    /// Approximate bytes held: groups, entries, the dirty list, the table's overhead.
    bytes: usize,
    /// Updates so far: the clock of `Entry::used`.
    clock: u64,
    /// The key forwarded downstream for a store key (a windowed key for window stores).
    out_key: OutKey,
    /// Off (`Materialized::with_caching_disabled`): every update is written and forwarded
    /// at once, and nothing stays cached.
    enabled: bool,
    /// The latest window start of an entry evicted to save memory: what the store may hold
    /// that the cache no longer does.
    evicted_max: i64,
}

impl<V: Data> RecordCache<V> {
    /// A cache forwarding updates under `out_key(group, window)`.
    pub fn new(enabled: bool, out_key: OutKey) -> Self {
        RecordCache {
            entries: Groups::new(),
            dirty: Vec::new(),
            flushed: Vec::new(),
            order: Vec::new(),
            place: Vec::new(),
            bytes: 0,
            clock: 0,
            out_key,
            enabled,
            evicted_max: i64::MIN,
        }
    }

    /// Whether the cache is on (off, it keeps nothing between flushes).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The latest window start of an entry evicted to save memory: a later window that the
    /// cache lacks was never evicted from it.
    pub fn evicted_max(&self) -> i64 {
        self.evicted_max
    }

    /// A group's share of `bytes`: its slot in the list, its place in the table (4 bytes,
    /// a control byte and room to grow), a long key's heap.
    fn group_size(group: &[u8]) -> usize {
        std::mem::size_of::<(InlineKey, Slots<V>)>() + 8 + InlineKey::heap_bytes(group)
    }

    /// An entry's share of `bytes`.
    fn entry_size() -> usize {
        std::mem::size_of::<Entry<V>>()
    }

    /// What an entry costs on the dirty list.
    fn dirty_size(group: &[u8]) -> usize {
        std::mem::size_of::<Dirty<V>>() + InlineKey::heap_bytes(group)
    }

    /// Replaces the value of group `gk`'s `window` (the store key `store_key(group, window)`)
    /// by `step(current value, its timestamp)`, reading the store on a miss unless the
    /// caller knows the key is `new` there; the update is forwarded with `headers` at the
    /// next flush. Returns whether the key was absent (new to the store).
    pub fn update(
        &mut self,
        store: &dyn KeyValueStore,
        gk: &InlineKey,
        window: Option<i64>,
        new: bool,
        headers: &Headers,
        step: impl FnOnce(Option<V>, Option<i64>) -> (V, i64),
    ) -> Result<bool, ProcessError> {
        self.in_group(gk, |slots, book| {
            book.update(slots, store, gk, window, new, headers, step)
        })
    }

    /// [`RecordCache::update`] of group `gk`'s `windows` ((window start, whether new to the
    /// store)) with `step(i, value, timestamp)` for the i-th, finding the group once.
    /// Returns which windows were absent.
    pub fn update_windows(
        &mut self,
        store: &dyn KeyValueStore,
        gk: &InlineKey,
        windows: &[(i64, bool)],
        headers: &Headers,
        mut step: impl FnMut(usize, Option<V>, Option<i64>) -> (V, i64),
    ) -> Result<SmallVec<[bool; 8]>, ProcessError> {
        self.in_group(gk, |slots, book| {
            let mut absent = SmallVec::with_capacity(windows.len());
            for (i, &(start, new)) in windows.iter().enumerate() {
                let step = |value, ts| step(i, value, ts);
                absent.push(book.update(slots, store, gk, Some(start), new, headers, step)?);
            }
            Ok(absent)
        })
    }

    /// `f` over group `gk`'s entries (found with one lookup; a new group is added after).
    fn in_group<R>(
        &mut self,
        gk: &InlineKey,
        f: impl FnOnce(&mut Slots<V>, &mut Book<'_, V>) -> Result<R, ProcessError>,
    ) -> Result<R, ProcessError> {
        let RecordCache {
            entries,
            dirty,
            bytes,
            clock,
            ..
        } = self;
        let mut book = Book {
            dirty,
            bytes,
            clock,
        };
        if let Some(slots) = entries.get_mut(gk) {
            return f(slots, &mut book);
        }
        let mut slots = SmallVec::new();
        let r = f(&mut slots, &mut book)?;
        *book.bytes += Self::group_size(gk.as_slice());
        entries.insert(gk.clone(), slots)?;
        Ok(r)
    }

    /// Whether the cache should flush now: it is off, or past its share of memory.
    pub fn must_flush(&self, ctx: &ProcessorContext<'_>) -> bool {
        !self.enabled || self.bytes > ctx.cache_max_bytes()
    }

    /// Writes every updated key to store `store` and forwards it, in the order of the keys'
    /// last updates (Kafka's: a key's update goes downstream after the updates of every key
    /// updated before its own last update, so operators downstream that track time — a
    /// suppression buffer — never see a later update before an earlier one); then, past the
    /// cache's share of memory, evicts the least recently updated entries down to three
    /// quarters of it.
    pub fn flush(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        store: &str,
    ) -> Result<(), ProcessError> {
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut flushed = std::mem::take(&mut self.flushed);
        let mut order = std::mem::take(&mut self.order);
        // A key's windows updated by one record sit side by side on the list: one lookup
        // for each run of the same key.
        let mut at = 0;
        for run in dirty.chunk_by_mut(|a, b| a.group == b.group) {
            let first = at;
            at += run.len();
            let group = run[0].group.as_slice();
            self.bytes = self
                .bytes
                .saturating_sub(run.len() * Self::dirty_size(group));
            let Some(slots) = self.entries.get_mut(&run[0].group) else {
                continue;
            };
            for (i, d) in run.iter_mut().enumerate() {
                let w = slot_window(d.window);
                let Some(e) = slots.iter_mut().find(|e| e.window == w) else {
                    continue;
                };
                if !e.dirty() {
                    continue;
                }
                e.used &= !DIRTY;
                order.push((e.used, flushed.len()));
                flushed.push(Some(Flushed {
                    at: first + i,
                    change: Change {
                        new: e.value.clone(),
                        old: d.old.take(),
                    },
                    ts: e.ts,
                    headers: e.headers(),
                }));
            }
        }
        // The list is in the order of first updates; a key updated again since moves
        // behind the keys updated before that. Ordering small pairs, not the updates.
        order_by_clock(&mut order, &mut self.place);
        let (mut key, mut value) = (Vec::new(), Vec::new());
        for &(_, i) in &order {
            let Some(f) = flushed.get_mut(i).and_then(Option::take) else {
                continue;
            };
            let Dirty { group, window, .. } = &dirty[f.at];
            let group = group.as_slice();
            store_key_into(&mut key, group, *window);
            let s = ctx.store(store)?;
            match &f.change.new {
                // Nothing was forwarded before: the store has no value either (the
                // cache is its only writer).
                Some(v) if f.change.old.is_none() => {
                    s.put_new(&key, timestamped_bytes(v, f.ts)?)?
                }
                // Built in a buffer kept across updates: a store holding short values
                // inline (a changelogged one) then allocates nothing for it.
                Some(v) => {
                    timestamped_into(v, f.ts, &mut value)?;
                    s.put(&key, &value)?
                }
                None => s.erase(&key)?,
            }
            ctx.forward(typed_record(
                Some((self.out_key)(group, *window)?),
                f.change,
                f.ts,
                f.headers,
            ))?;
        }
        flushed.clear();
        order.clear();
        self.flushed = flushed;
        self.order = order;
        // The list keeps its capacity for the next flush's updates.
        let mut dirty = dirty;
        dirty.clear();
        self.dirty = dirty;
        if !self.enabled {
            self.retain(|_, _, _| false);
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
        let held: usize = self.entries.values().map(|s| s.len()).sum();
        let per_entry = (self.bytes / held.max(1)).max(1);
        let keep = (limit / 4 * 3 / per_entry).min(held);
        let cut = held - keep;
        if cut == 0 {
            return;
        }
        let mut used: Vec<u64> = self
            .entries
            .values()
            .flatten()
            .map(Entry::last_used)
            .collect();
        let threshold = *used.select_nth_unstable(cut - 1).1;
        let mut evicted_max = self.evicted_max;
        self.retain(|_, window, u| {
            let keep = u > threshold;
            if let (false, Some(start)) = (keep, window) {
                evicted_max = evicted_max.max(start);
            }
            keep
        });
        self.evicted_max = evicted_max;
    }

    /// Drops the clean entries `keep(group, window, when last updated)` rejects.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], Option<i64>, u64) -> bool) {
        let mut freed = 0;
        self.entries.retain(|k, slots| {
            let group = k.as_slice();
            slots.retain(|e| {
                let kept = e.dirty() || keep(group, e.window(), e.last_used());
                if !kept {
                    freed += Self::entry_size();
                }
                kept
            });
            if slots.is_empty() {
                freed += Self::group_size(group);
            } else if slots.spilled() && slots.len() <= slots.inline_size() {
                // Back inline: a group whose windows once overflowed (a tumbling window
                // opened before the last one expired) is then found in one memory access,
                // not two.
                slots.shrink_to_fit();
            }
            !slots.is_empty()
        });
        self.bytes = self.bytes.saturating_sub(freed);
    }
}

/// Sorts `(clock, index)` pairs with distinct clocks by clock: placed by clock in `place`
/// (kept for its capacity) when the clocks span at most about 16 times as many values as
/// there are pairs (the usual case: a key is updated a few times between two flushes, by
/// a tumbling count's few records a commit or a hopping record's five windows), else sorted.
/// Placing touches a `u32` per clock value in order; sorting costs about `log2(n)`
/// comparisons per pair.
fn order_by_clock(order: &mut Vec<(u64, usize)>, place: &mut Vec<u32>) {
    let Some(lo) = order.iter().map(|p| p.0).min() else {
        return;
    };
    let hi = order.iter().map(|p| p.0).max().unwrap_or(lo);
    let span = usize::try_from(hi - lo)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    if span > 16 * order.len() + 64 || order.len() >= u32::MAX as usize {
        order.sort_unstable();
        return;
    }
    place.clear();
    place.resize(span, u32::MAX);
    for &(clock, i) in order.iter() {
        place[(clock - lo) as usize] = i as u32;
    }
    order.clear();
    for (at, &i) in place.iter().enumerate() {
        if i != u32::MAX {
            order.push((lo + at as u64, i as usize));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Placed or sorted, pairs come out ordered by clock, with their indexes.
    #[test]
    fn order_by_clock_sorts_by_clock_whatever_the_spread() {
        let mut place = Vec::new();
        let mut seed = 7u64;
        for spread in [1u64, 2, 5, 1000] {
            for n in [0usize, 1, 2, 50, 300] {
                // Distinct clocks: a shuffled arithmetic sequence with gaps of `spread`.
                let mut order: Vec<(u64, usize)> =
                    (0..n).map(|i| (100 + i as u64 * spread, i)).collect();
                for i in (1..n).rev() {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    order.swap(i, (seed >> 33) as usize % (i + 1));
                }
                let mut want = order.clone();
                want.sort_unstable();
                order_by_clock(&mut order, &mut place);
                assert_eq!(order, want, "spread {spread}, {n} pairs");
            }
        }
    }
    use rill_core::state::memory::InMemoryStore;
    use rill_core::state::INLINE_KEY_BYTES;

    fn add_to(
        cache: &mut RecordCache<i64>,
        store: &InMemoryStore,
        key: &[u8],
        window: Option<i64>,
        ts: i64,
    ) -> bool {
        cache
            .update(
                store,
                &InlineKey::new(key),
                window,
                false,
                &Vec::new(),
                |v, t| (v.unwrap_or(0) + 1, t.unwrap_or(ts).max(ts)),
            )
            .unwrap()
    }

    fn add(cache: &mut RecordCache<i64>, store: &InMemoryStore, key: &[u8], ts: i64) -> bool {
        add_to(cache, store, key, None, ts)
    }

    fn entry<'a>(cache: &'a RecordCache<i64>, key: &[u8], window: Option<i64>) -> &'a Entry<i64> {
        cache
            .entries
            .get(key)
            .unwrap()
            .iter()
            .find(|e| e.window() == window)
            .unwrap()
    }

    fn dirty(cache: &RecordCache<i64>) -> Vec<(&[u8], Option<i64>)> {
        cache
            .dirty
            .iter()
            .map(|d| (d.group.as_slice(), d.window))
            .collect()
    }

    /// Groups are found by their keys through adds and retains (which move them in the
    /// list), against a map as the model, and stay in the order they were added.
    #[test]
    fn groups_are_found_in_their_places_after_retains_move_them() {
        let mut groups: Groups<i64> = Groups::new();
        let mut model: std::collections::BTreeMap<Vec<u8>, usize> = Default::default();
        let mut order: Vec<Vec<u8>> = Vec::new();
        let mut seed = 11u64;
        for round in 0..40usize {
            for _ in 0..25 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                // Short keys and keys past the inline size.
                let len = if seed >> 60 == 0 {
                    INLINE_KEY_BYTES + 3
                } else {
                    4
                };
                let key: Vec<u8> = std::iter::repeat_n((seed >> 40) as u8 % 61, len).collect();
                let ik = InlineKey::new(&key);
                match groups.get_mut(&ik) {
                    Some(slots) => slots[0].ts += 1,
                    None => {
                        let mut slots = Slots::new();
                        slots.push(Entry {
                            window: NO_WINDOW,
                            value: Some(round as i64),
                            ts: 1,
                            headers: None,
                            used: 0,
                        });
                        groups.insert(ik, slots).unwrap();
                        order.push(key.clone());
                    }
                }
                *model.entry(key).or_default() += 1;
            }
            // Every third round drops the keys whose first byte is a multiple of 3.
            if round % 3 == 2 {
                groups.retain(|k, _| k.as_slice()[0] % 3 != 0);
                model.retain(|k, _| k[0] % 3 != 0);
                order.retain(|k| k[0] % 3 != 0);
            }
            assert_eq!(groups.len(), model.len());
            for (key, updates) in &model {
                let slots = groups.get(key).expect("a held key is found");
                assert_eq!(slots[0].ts, *updates as i64, "{key:?}");
            }
            let listed: Vec<&[u8]> = groups.list.iter().map(|(k, _)| k.as_slice()).collect();
            let want: Vec<&[u8]> = order.iter().map(Vec::as_slice).collect();
            assert_eq!(listed, want, "round {round}");
            for b in 0..61u8 {
                let key = [b; 4];
                let held = model.contains_key(&key[..]);
                assert_eq!(groups.get(&key).is_some(), held, "{key:?}, round {round}");
            }
        }
    }

    /// A count's entry is three quarters of a cache line: the windows of a hopping key span
    /// few of them, and a tumbling key's two sit beside its key.
    #[test]
    fn a_counts_entry_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Entry<i64>>(), 48);
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
        let e = entry(&cache, b"a", None);
        assert_eq!((e.value, e.ts), (Some(11), 7));
        let e = entry(&cache, b"b", None);
        assert_eq!((e.value, e.ts), (Some(2), 4));
        // What the store had before: `a`'s stored 10, nothing for `b`.
        let old: Vec<Option<i64>> = cache.dirty.iter().map(|d| d.old).collect();
        assert_eq!(old, vec![Some(10), None]);
        assert_eq!(dirty(&cache), vec![(b"a".as_slice(), None), (b"b", None)]);
    }

    /// A key's windows sit together under the key; each reads its own store key on a miss,
    /// and they stay in the order they were first updated.
    #[test]
    fn a_keys_windows_are_held_together_and_read_their_own_store_keys() {
        let mut store = InMemoryStore::new("s");
        let stored = store_key(b"k", Some(10));
        assert_eq!(stored, [&b"k"[..], &ts_bytes(10)].concat());
        store
            .put(&stored, &timestamped_bytes(&5i64, 12).unwrap())
            .unwrap();
        let mut cache = RecordCache::new(true, same_key());
        assert!(add_to(&mut cache, &store, b"k", Some(0), 13));
        assert!(!add_to(&mut cache, &store, b"k", Some(10), 13));
        assert!(add_to(&mut cache, &store, b"j", Some(10), 14));
        assert!(!add_to(&mut cache, &store, b"k", Some(0), 15));
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(cache.entries.get(b"k").unwrap().len(), 2);
        assert_eq!(entry(&cache, b"k", Some(0)).value, Some(2));
        assert_eq!(entry(&cache, b"k", Some(10)).value, Some(6));
        assert_eq!(
            dirty(&cache),
            vec![
                (b"k".as_slice(), Some(0)),
                (b"k", Some(10)),
                (b"j", Some(10))
            ]
        );
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
        assert_eq!(entry(&cache, &long, None).value, Some(2));
        assert_eq!(entry(&cache, &short, None).value, Some(1));
        assert!(matches!(
            cache.dirty[0].group,
            InlineKey::Heap(ref k) if **k == long[..]
        ));
    }

    fn clean(cache: &mut RecordCache<i64>) {
        for e in cache.entries.list.iter_mut().flat_map(|(_, s)| s) {
            e.used &= !DIRTY;
        }
        let listed: usize = cache
            .dirty
            .iter()
            .map(|d| RecordCache::<i64>::dirty_size(d.group.as_slice()))
            .sum();
        cache.bytes -= listed;
        cache.dirty.clear();
    }

    #[test]
    fn eviction_keeps_dirty_entries_and_accounts_for_what_it_frees() {
        let store = InMemoryStore::new("s");
        let mut cache = RecordCache::new(true, same_key());
        add(&mut cache, &store, b"a", 1);
        let full = cache.bytes;
        cache.retain(|_, _, _| false);
        assert_eq!(cache.bytes, full, "a dirty entry is never evicted");
        clean(&mut cache);
        cache.retain(|_, _, _| false);
        assert_eq!((cache.bytes, cache.entries.len()), (0, 0));
    }

    #[test]
    fn eviction_drops_the_least_recently_updated_down_to_three_quarters() {
        let store = InMemoryStore::new("s");
        let mut cache = RecordCache::new(true, same_key());
        for k in 0..8u8 {
            add_to(&mut cache, &store, &[k], Some(i64::from(k)), 1);
        }
        add_to(&mut cache, &store, &[0], Some(0), 2);
        clean(&mut cache);
        let per_entry = RecordCache::<i64>::group_size(&[0]) + RecordCache::<i64>::entry_size();
        assert_eq!(cache.bytes, 8 * per_entry);
        cache.evict(8 * per_entry);
        assert_eq!(cache.entries.len(), 8, "within the limit: nothing goes");
        assert_eq!(cache.evicted_max(), i64::MIN);
        cache.evict(4 * per_entry);
        // Three of four entries' worth stay: the three updated last.
        let mut kept: Vec<u8> = cache
            .entries
            .list
            .iter()
            .map(|(k, _)| k.as_slice()[0])
            .collect();
        kept.sort();
        assert_eq!(kept, vec![0, 6, 7]);
        assert_eq!(cache.bytes, 3 * per_entry);
        // Windows 1 to 5 went: a miss for any of them must read the store.
        assert_eq!(cache.evicted_max(), 5);
    }
}
