//! Store keys held inline when short: ordered maps and hash tables of them compare keys
//! where they sit, without a second heap read per comparison (the cost that dominated the
//! overlays of changelogged stores and the DSL's record caches). Changelogged stores hold
//! short values the same way.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// Keys up to this long are kept inline.
pub const INLINE_KEY_BYTES: usize = 30;

/// A key's bytes: inline up to [`INLINE_KEY_BYTES`], on the heap beyond. Compares, orders
/// and hashes exactly as its bytes do, so maps of them are searched by `&[u8]`.
#[derive(Clone)]
pub enum InlineKey {
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY_BYTES],
    },
    Heap(Box<[u8]>),
}

impl InlineKey {
    pub fn new(key: &[u8]) -> Self {
        Self::from_parts(&[key])
    }

    /// The key made of `parts` one after the other (built in place when it fits inline).
    pub fn from_parts(parts: &[&[u8]]) -> Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > INLINE_KEY_BYTES {
            return InlineKey::Heap(parts.concat().into());
        }
        let mut bytes = [0; INLINE_KEY_BYTES];
        let mut at = 0;
        for p in parts {
            bytes[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        InlineKey::Inline {
            len: len as u8,
            bytes,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            InlineKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            InlineKey::Heap(b) => b,
        }
    }

    /// The heap bytes the key needs beyond its own size (none when inline).
    pub fn heap_bytes(key: &[u8]) -> usize {
        if key.len() <= INLINE_KEY_BYTES {
            0
        } else {
            key.len().next_multiple_of(16)
        }
    }
}

impl From<&[u8]> for InlineKey {
    fn from(key: &[u8]) -> Self {
        InlineKey::new(key)
    }
}

impl From<Vec<u8>> for InlineKey {
    /// Short bytes move inline (the vector is freed); long ones keep their heap block.
    fn from(bytes: Vec<u8>) -> Self {
        if bytes.len() <= INLINE_KEY_BYTES {
            InlineKey::new(&bytes)
        } else {
            InlineKey::Heap(bytes.into_boxed_slice())
        }
    }
}

impl From<InlineKey> for Vec<u8> {
    fn from(key: InlineKey) -> Self {
        match key {
            InlineKey::Inline { .. } => key.as_slice().to_vec(),
            InlineKey::Heap(b) => b.into_vec(),
        }
    }
}

impl Borrow<[u8]> for InlineKey {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Hash for InlineKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

/// Eight bytes of an inline key, big-endian (so words order as the bytes do); the last
/// word has the two bytes past the array as zeros.
fn word(bytes: &[u8; INLINE_KEY_BYTES], i: usize) -> u64 {
    let mut w = [0u8; 8];
    let end = (i * 8 + 8).min(INLINE_KEY_BYTES);
    w[..end - i * 8].copy_from_slice(&bytes[i * 8..end]);
    u64::from_be_bytes(w)
}

impl PartialEq for InlineKey {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (InlineKey::Inline { len: a, bytes: x }, InlineKey::Inline { len: b, bytes: y }) => {
                a == b && x == y
            }
            _ => self.as_slice() == other.as_slice(),
        }
    }
}

impl Eq for InlineKey {}

impl PartialOrd for InlineKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InlineKey {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            // Zero-padded, two inline keys compare as their bytes do word by word, and a
            // tie goes to the shorter (a key that is a prefix of the other comes first).
            (InlineKey::Inline { len: a, bytes: x }, InlineKey::Inline { len: b, bytes: y }) => (0
                ..INLINE_KEY_BYTES.div_ceil(8))
                .map(|i| word(x, i).cmp(&word(y, i)))
                .find(|o| o.is_ne())
                .unwrap_or_else(|| a.cmp(b)),
            _ => self.as_slice().cmp(other.as_slice()),
        }
    }
}

impl std::fmt::Debug for InlineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Inline and heap keys order, compare and convert as their bytes, and a map of them is
    /// searched by byte slices.
    #[test]
    fn keys_behave_as_their_bytes() {
        let long = vec![9u8; INLINE_KEY_BYTES + 1];
        let keys: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![9; INLINE_KEY_BYTES],
            long.clone(),
            vec![9; INLINE_KEY_BYTES + 5],
            vec![10],
        ];
        let mut map = BTreeMap::new();
        for (i, k) in keys.iter().enumerate().rev() {
            map.insert(InlineKey::new(k), i);
        }
        let order: Vec<usize> = map.values().copied().collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(map.get(long.as_slice()), Some(&3));
        let from: &[u8] = &[9];
        let in_range: Vec<usize> = map
            .range::<[u8], _>((std::ops::Bound::Included(from), std::ops::Bound::Unbounded))
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(in_range, vec![2, 3, 4, 5]);
        for k in &keys {
            assert_eq!(Vec::from(InlineKey::new(k)), *k);
        }
        assert!(matches!(InlineKey::new(&long), InlineKey::Heap(_)));
    }

    /// Inline keys compare word by word exactly as their bytes compare (zero bytes and
    /// prefixes included).
    #[test]
    fn keys_from_parts_are_their_concatenation() {
        for parts in [
            vec![],
            vec![&b""[..], b""],
            vec![&b"ab"[..], b"", b"cd"],
            vec![&[1u8; 20][..], &[2u8; 10]],
            vec![&[1u8; 20][..], &[2u8; 11]],
        ] {
            let k = InlineKey::from_parts(&parts);
            assert_eq!(k.as_slice(), parts.concat().as_slice());
            assert_eq!(k, InlineKey::new(&parts.concat()));
        }
    }

    #[test]
    fn word_comparison_agrees_with_the_bytes() {
        let mut keys: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0, 0], vec![1], vec![0xff]];
        for len in [7, 8, 9, 23, 24, 25, 29, 30] {
            for fill in [0u8, 1, 0xff] {
                let k = vec![fill; len];
                let mut bumped = k.clone();
                bumped[len - 1] = bumped[len - 1].wrapping_add(1);
                keys.extend([k, bumped]);
            }
        }
        for a in &keys {
            for b in &keys {
                let (x, y) = (InlineKey::new(a), InlineKey::new(b));
                assert_eq!(x.cmp(&y), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(x == y, a == b, "{a:?} vs {b:?}");
            }
        }
    }
}
