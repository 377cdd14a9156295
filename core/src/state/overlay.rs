//! Key-to-change maps held in memory over a store (the changelogged store's overlay): hashed
//! while nobody asks them for key order, ordered once range reads come.
//!
//! A store behind a record cache is written at each flush and read by single key, if at all:
//! a hash table takes those writes for about a third of what a B-tree insert costs (one
//! cache miss, not one per tree level, on tables of 10^5 keys). Stores read by range (session
//! and join stores, interactive queries) need their overlays in key order: a hashed overlay
//! answers a range read by sorting what matches, and after a few such reads (not counting
//! those that find it empty, as a processor's one scan of its store at startup does) turns
//! ordered at its next write and stays so.

use std::cell::Cell;
use std::collections::{btree_map, hash_map, BTreeMap};
use std::ops::{Bound, RangeBounds};

use super::InlineKey;

pub use rill_log::hash::{FastHash, FastHashMap};

/// The map of an [`Overlay`].
#[derive(Debug, Clone)]
enum Map<V> {
    Hashed(FastHashMap<InlineKey, V>),
    Ordered(BTreeMap<InlineKey, V>),
}

/// A map from store keys to `V`, hashed until a range read wants it ordered.
#[derive(Debug, Clone)]
pub(crate) struct Overlay<V> {
    map: Map<V>,
    /// Range reads that found the map hashed and not empty.
    scans: Cell<u32>,
    /// Enough range reads found the map hashed: order it at the next write.
    wants_order: Cell<bool>,
}

/// The entries of an [`Overlay`], drained.
pub(crate) enum Drain<'a, V> {
    Hashed(hash_map::Drain<'a, InlineKey, V>),
    Ordered(btree_map::IntoIter<InlineKey, V>),
}

impl<V> Iterator for Drain<'_, V> {
    type Item = (InlineKey, V);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Drain::Hashed(d) => d.next(),
            Drain::Ordered(d) => d.next(),
        }
    }
}

/// Range reads a hashed overlay answers by scanning before it turns ordered.
const SCANS_BEFORE_ORDER: u32 = 8;

impl<V> Default for Overlay<V> {
    fn default() -> Self {
        Overlay {
            map: Map::Hashed(FastHashMap::default()),
            scans: Cell::new(0),
            wants_order: Cell::new(false),
        }
    }
}

impl<V> Overlay<V> {
    pub(crate) fn len(&self) -> usize {
        match &self.map {
            Map::Hashed(m) => m.len(),
            Map::Ordered(m) => m.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&V> {
        match &self.map {
            Map::Hashed(m) => m.get(key),
            Map::Ordered(m) => m.get(key),
        }
    }

    /// The map to write to, ordered first if a range read asked for it.
    fn map_mut(&mut self) -> &mut Map<V> {
        if self.wants_order.get() {
            self.wants_order.set(false);
            if let Map::Hashed(m) = &mut self.map {
                self.map = Map::Ordered(std::mem::take(m).into_iter().collect());
            }
        }
        &mut self.map
    }

    #[cfg(test)]
    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        match self.map_mut() {
            Map::Hashed(m) => m.get_mut(key),
            Map::Ordered(m) => m.get_mut(key),
        }
    }

    #[cfg(test)]
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<V> {
        match self.map_mut() {
            Map::Hashed(m) => m.remove(key),
            Map::Ordered(m) => m.remove(key),
        }
    }

    pub(crate) fn entry(&mut self, key: InlineKey) -> Entry<'_, V> {
        match self.map_mut() {
            Map::Hashed(m) => match m.entry(key) {
                hash_map::Entry::Occupied(o) => Entry::Occupied(Occupied::Hashed(o)),
                hash_map::Entry::Vacant(v) => Entry::Vacant(Vacant::Hashed(v)),
            },
            Map::Ordered(m) => match m.entry(key) {
                btree_map::Entry::Occupied(o) => Entry::Occupied(Occupied::Ordered(o)),
                btree_map::Entry::Vacant(v) => Entry::Vacant(Vacant::Ordered(v)),
            },
        }
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = (&InlineKey, &V)> + '_> {
        match &self.map {
            Map::Hashed(m) => Box::new(m.iter()),
            Map::Ordered(m) => Box::new(m.iter()),
        }
    }

    /// The entries with keys in `(from, to)`, in key order. A hashed map answers by a scan
    /// (and counts it, see [`SCANS_BEFORE_ORDER`]).
    pub(crate) fn range(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Vec<(&InlineKey, &V)> {
        match &self.map {
            Map::Ordered(m) => m.range::<[u8], _>((from, to)).collect(),
            Map::Hashed(m) if m.is_empty() => Vec::new(),
            Map::Hashed(m) => {
                self.scans.set(self.scans.get() + 1);
                if self.scans.get() >= SCANS_BEFORE_ORDER {
                    self.wants_order.set(true);
                }
                let mut found: Vec<_> = m
                    .iter()
                    .filter(|(k, _)| RangeBounds::<[u8]>::contains(&(from, to), k.as_slice()))
                    .collect();
                found.sort_unstable_by(|a, b| a.0.cmp(b.0));
                found
            }
        }
    }

    /// Takes every entry out (in no particular order), leaving the map empty and as ordered
    /// as it was.
    pub(crate) fn take(&mut self) -> Vec<(InlineKey, V)> {
        self.drain().collect()
    }

    /// Drains every entry (in no particular order), leaving the map empty, as ordered as it
    /// was, and (hashed) with its capacity.
    pub(crate) fn drain(&mut self) -> Drain<'_, V> {
        match self.map_mut() {
            Map::Hashed(m) => Drain::Hashed(m.drain()),
            Map::Ordered(m) => Drain::Ordered(std::mem::take(m).into_iter()),
        }
    }

    /// Takes every entry out in key order (a store takes a sorted batch several times
    /// faster: fjall's memtable is a skip list), leaving the map empty and as ordered as it was.
    pub(crate) fn take_in_order(&mut self) -> Vec<(InlineKey, V)> {
        let ordered = matches!(self.map, Map::Ordered(_));
        let mut all = self.take();
        if !ordered {
            all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        all
    }

    /// Whether the map keeps key order (a range read asked for it).
    #[cfg(test)]
    fn is_ordered(&self) -> bool {
        matches!(self.map, Map::Ordered(_))
    }
}

/// An entry of an [`Overlay`], occupied or vacant.
pub(crate) enum Entry<'a, V> {
    Occupied(Occupied<'a, V>),
    Vacant(Vacant<'a, V>),
}

pub(crate) enum Occupied<'a, V> {
    Hashed(hash_map::OccupiedEntry<'a, InlineKey, V>),
    Ordered(btree_map::OccupiedEntry<'a, InlineKey, V>),
}

impl<V> Occupied<'_, V> {
    pub(crate) fn get(&self) -> &V {
        match self {
            Occupied::Hashed(o) => o.get(),
            Occupied::Ordered(o) => o.get(),
        }
    }

    pub(crate) fn get_mut(&mut self) -> &mut V {
        match self {
            Occupied::Hashed(o) => o.get_mut(),
            Occupied::Ordered(o) => o.get_mut(),
        }
    }

    pub(crate) fn remove(self) -> V {
        match self {
            Occupied::Hashed(o) => o.remove(),
            Occupied::Ordered(o) => o.remove(),
        }
    }
}

pub(crate) enum Vacant<'a, V> {
    Hashed(hash_map::VacantEntry<'a, InlineKey, V>),
    Ordered(btree_map::VacantEntry<'a, InlineKey, V>),
}

impl<V> Vacant<'_, V> {
    pub(crate) fn insert(self, value: V) {
        match self {
            Vacant::Hashed(v) => {
                v.insert(value);
            }
            Vacant::Ordered(v) => {
                v.insert(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> InlineKey {
        InlineKey::new(s.as_bytes())
    }

    fn insert(o: &mut Overlay<u32>, k: &str, v: u32) {
        match o.entry(key(k)) {
            Entry::Occupied(mut e) => *e.get_mut() = v,
            Entry::Vacant(e) => e.insert(v),
        }
    }

    /// Range reads answer in key order whether the map is hashed or ordered; enough of them
    /// (those finding the map empty do not count) order the map at the next write, for good.
    #[test]
    fn range_reads_are_ordered_and_order_the_map() {
        let mut o = Overlay::default();
        for _ in 0..SCANS_BEFORE_ORDER {
            assert!(o.range(Bound::Unbounded, Bound::Unbounded).is_empty());
        }
        for (i, k) in ["m", "b", "x", "a", "long key beyond the inline bytes!", "c"]
            .iter()
            .enumerate()
        {
            insert(&mut o, k, i as u32);
        }
        assert!(!o.is_ordered());
        let keys = |o: &Overlay<u32>, from: Bound<&[u8]>, to: Bound<&[u8]>| {
            o.range(from, to)
                .into_iter()
                .map(|(k, v)| (String::from_utf8(k.as_slice().to_vec()).unwrap(), *v))
                .collect::<Vec<_>>()
        };
        let expect = vec![
            ("b".to_string(), 1),
            ("c".to_string(), 5),
            ("long key beyond the inline bytes!".to_string(), 4),
            ("m".to_string(), 0),
        ];
        let (from, to) = (Bound::Included(&b"b"[..]), Bound::Excluded(&b"x"[..]));
        for _ in 1..SCANS_BEFORE_ORDER {
            assert_eq!(keys(&o, from, to), expect);
            insert(&mut o, "b", 1);
        }
        assert!(!o.is_ordered());
        assert_eq!(keys(&o, from, to), expect);
        assert!(!o.is_ordered(), "reads never reorder the map themselves");
        insert(&mut o, "d", 6);
        assert!(o.is_ordered());
        let mut expect = expect;
        expect.insert(2, ("d".to_string(), 6));
        assert_eq!(keys(&o, from, to), expect);
        assert_eq!(o.remove(b"d"), Some(6));
        let all: Vec<_> = o.take_in_order().into_iter().map(|(k, _)| k).collect();
        assert!(all.len() == 6 && all.is_sorted());
        assert!(o.is_empty() && o.is_ordered(), "taking keeps the order");
    }

    /// Single-key operations agree between the two kinds of map.
    #[test]
    fn hashed_and_ordered_maps_agree() {
        let mut hashed = Overlay::default();
        let mut ordered = Overlay::default();
        insert(&mut ordered, "seed", 0);
        for _ in 0..SCANS_BEFORE_ORDER {
            let _ = ordered.range(Bound::Unbounded, Bound::Unbounded);
        }
        insert(&mut ordered, "seed", 0);
        assert!(ordered.is_ordered());
        assert_eq!(ordered.remove(b"seed"), Some(0));
        for o in [&mut hashed, &mut ordered] {
            for i in 0..200u32 {
                insert(o, &format!("k{}", i % 70), i);
                if i % 7 == 0 {
                    o.remove(format!("k{}", i % 13).as_bytes());
                }
                if let Some(v) = o.get_mut(format!("k{}", i % 5).as_bytes()) {
                    *v += 1;
                }
            }
        }
        let sorted = |o: &Overlay<u32>| {
            let mut all: Vec<_> = o.iter().map(|(k, v)| (k.clone(), *v)).collect();
            all.sort();
            all
        };
        assert_eq!(sorted(&hashed), sorted(&ordered));
        assert_eq!(hashed.get(b"k3"), ordered.get(b"k3"));
        assert!(!hashed.is_ordered());
        assert_eq!(
            hashed.take_in_order(),
            sorted(&ordered),
            "taken in key order"
        );
    }
}
