//! State stores: the key-value store every stateful operator keeps its state in, and the
//! window and session stores (and timestamped values) layered on it.
//!
//! A backend implements [`KeyValueStore`] over bytes, ordered by key (unsigned lexicographic,
//! as Kafka Streams orders serialized keys); [`WindowStore`], [`SessionStore`] and
//! [`TimestampedKeyValueStore`] encode their keys and values so that the byte order gives
//! the lookups they need, on any backend. Backends: [`memory::InMemoryStore`] and
//! [`fjall_store::FjallStore`] (persistent, pure Rust, the default), and `RocksDbStore`
//! (`rocksdb_store`, behind the cargo feature `rocksdb`); every backend passes the same
//! [`conformance`] suite.
//!
//! [`changelog`] keeps a store's changes in an overlay until commit (deduplicated per key),
//! logs them to its changelog partition, restores it, and checkpoints the changelog offset
//! local state reflects.

pub mod changelog;
pub mod conformance;
pub mod fjall_store;
mod inline_key;
pub mod memory;
mod overlay;
#[cfg(feature = "rocksdb")]
pub mod rocksdb_store;
mod session;
mod timestamped;
mod window;

pub use inline_key::{InlineKey, INLINE_KEY_BYTES};
pub use overlay::{FastHash, FastHashMap};
pub use session::{Session, SessionStore};
pub use timestamped::{TimestampedKeyValueStore, ValueAndTimestamp};
pub use window::WindowStore;

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {store}: {reason}")]
    Backend { store: String, reason: String },
    #[error("store {store}: corrupt entry: {reason}")]
    Corrupt { store: String, reason: String },
}

/// A key-value store over bytes, ordered by key.
pub trait KeyValueStore: Send + std::fmt::Debug {
    fn name(&self) -> &str;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// `put` of a value the caller no longer needs (an overlay keeps it without a copy).
    fn put_owned(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.put(key, &value)
    }
    /// `put_owned` of a key the caller knows the store has no value for (a window it just
    /// created): a store writing behind can then drop a deletion of it that comes before
    /// the write, instead of writing both. Wrong knowledge would leave a deleted value in
    /// place, so only a store's sole writer may say so.
    fn put_new(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.put_owned(key, value)
    }
    /// Removes `key`; returns the value it had.
    fn delete(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries with `from <= key <= to` (both inclusive, as Kafka Streams' `range`), in key
    /// order; empty when `from > to`.
    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<Entry>, StoreError>;
    /// Entries whose key starts with `prefix`, in key order.
    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError>;
    /// Every entry, in key order.
    fn all(&self) -> Result<Vec<Entry>, StoreError>;
    /// An estimate of the number of entries (exact for the in-memory store).
    fn approximate_num_entries(&self) -> u64;
    /// Makes every write so far durable (a no-op in memory).
    fn flush(&mut self) -> Result<(), StoreError>;

    /// Writes many changes (`None`: delete) at once; backends with write batches make it
    /// one write (what applying a commit's changes uses).
    fn write_all(&mut self, changes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), StoreError> {
        for (k, v) in changes {
            match v {
                Some(v) => self.put(&k, &v)?,
                None => {
                    self.delete(&k)?;
                }
            }
        }
        Ok(())
    }

    /// Deletes `key` without reading the value it had (for a changelogged store, a
    /// tombstone without a lookup).
    fn erase(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.delete(key).map(|_| ())
    }

    /// Removes `key` from local state only, as retention does: a changelogged store sends
    /// nothing (the changelog topic's own retention drops the entry), and removes it at the
    /// next commit (until then it may still be read). Restoring may bring an expired entry
    /// back; its owner expires it again.
    fn expire(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.delete(key).map(|_| ())
    }

    /// For a changelogged store: its changelog partition.
    fn changelog(&self) -> Option<&rill_log::types::TopicPartition> {
        None
    }

    /// For a changelogged store: the changes since the last commit, in order, one per key
    /// (`None`: deleted; a key deleted and then written again may have both), to be written to
    /// the changelog at commit. Reads already see them.
    fn uncommitted(&self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        Vec::new()
    }

    /// [`KeyValueStore::uncommitted`], handed over (a commit sending them to the changelog):
    /// the store keeps the changes, without their records. As `Bytes`, which a store may
    /// slice out of one buffer for all of them rather than allocate two per record.
    fn take_uncommitted(&mut self) -> Vec<(bytes::Bytes, Option<bytes::Bytes>)> {
        self.uncommitted()
            .into_iter()
            .map(|(k, v)| (k.into(), v.map(Into::into)))
            .collect()
    }

    /// Bytes of keys and values waiting in [`KeyValueStore::uncommitted`].
    fn uncommitted_bytes(&self) -> usize {
        0
    }

    /// Writes the uncommitted changes into local state (not synced: see `flush`): called
    /// once the changelog holds them for good (acknowledged, or their transaction committed).
    fn apply_uncommitted(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Forgets the uncommitted changes (their transaction aborted): local state is back at
    /// the last commit.
    fn discard_uncommitted(&mut self) {}

    /// For a store that writes behind: estimated bytes of committed changes held in memory,
    /// not yet in local state.
    fn unwritten_bytes(&self) -> usize {
        0
    }

    /// For a store that writes behind: writes the committed changes it holds into local
    /// state (not synced: see `flush`, which does this too).
    fn write_unwritten(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A borrowed store is a store: window and session views can wrap the store a processor
/// gets from its context.
impl<S: KeyValueStore + ?Sized> KeyValueStore for &mut S {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(key)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        (**self).put(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).delete(key)
    }
    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<Entry>, StoreError> {
        (**self).range(from, to)
    }
    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        (**self).prefix_scan(prefix)
    }
    fn all(&self) -> Result<Vec<Entry>, StoreError> {
        (**self).all()
    }
    fn approximate_num_entries(&self) -> u64 {
        (**self).approximate_num_entries()
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        (**self).flush()
    }
    fn write_all(&mut self, changes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), StoreError> {
        (**self).write_all(changes)
    }
    fn expire(&mut self, key: &[u8]) -> Result<(), StoreError> {
        (**self).expire(key)
    }
    fn erase(&mut self, key: &[u8]) -> Result<(), StoreError> {
        (**self).erase(key)
    }
    fn put_owned(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        (**self).put_owned(key, value)
    }
    fn put_new(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        (**self).put_new(key, value)
    }
    fn changelog(&self) -> Option<&rill_log::types::TopicPartition> {
        (**self).changelog()
    }
    fn uncommitted(&self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        (**self).uncommitted()
    }
    fn take_uncommitted(&mut self) -> Vec<(bytes::Bytes, Option<bytes::Bytes>)> {
        (**self).take_uncommitted()
    }
    fn uncommitted_bytes(&self) -> usize {
        (**self).uncommitted_bytes()
    }
    fn apply_uncommitted(&mut self) -> Result<(), StoreError> {
        (**self).apply_uncommitted()
    }
    fn discard_uncommitted(&mut self) {
        (**self).discard_uncommitted()
    }
    fn unwritten_bytes(&self) -> usize {
        (**self).unwritten_bytes()
    }
    fn write_unwritten(&mut self) -> Result<(), StoreError> {
        (**self).write_unwritten()
    }
}

impl KeyValueStore for Box<dyn KeyValueStore> {
    fn name(&self) -> &str {
        self.as_ref().name()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.as_ref().get(key)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.as_mut().put(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.as_mut().delete(key)
    }
    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.as_ref().range(from, to)
    }
    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.as_ref().prefix_scan(prefix)
    }
    fn all(&self) -> Result<Vec<Entry>, StoreError> {
        self.as_ref().all()
    }
    fn approximate_num_entries(&self) -> u64 {
        self.as_ref().approximate_num_entries()
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        self.as_mut().flush()
    }
    fn write_all(&mut self, changes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), StoreError> {
        self.as_mut().write_all(changes)
    }
    fn expire(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.as_mut().expire(key)
    }
    fn erase(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.as_mut().erase(key)
    }
    fn put_owned(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.as_mut().put_owned(key, value)
    }
    fn put_new(&mut self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.as_mut().put_new(key, value)
    }
    fn changelog(&self) -> Option<&rill_log::types::TopicPartition> {
        self.as_ref().changelog()
    }
    fn uncommitted(&self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.as_ref().uncommitted()
    }
    fn take_uncommitted(&mut self) -> Vec<(bytes::Bytes, Option<bytes::Bytes>)> {
        self.as_mut().take_uncommitted()
    }
    fn uncommitted_bytes(&self) -> usize {
        self.as_ref().uncommitted_bytes()
    }
    fn apply_uncommitted(&mut self) -> Result<(), StoreError> {
        self.as_mut().apply_uncommitted()
    }
    fn discard_uncommitted(&mut self) {
        self.as_mut().discard_uncommitted()
    }
    fn unwritten_bytes(&self) -> usize {
        self.as_ref().unwritten_bytes()
    }
    fn write_unwritten(&mut self) -> Result<(), StoreError> {
        self.as_mut().write_unwritten()
    }
}

/// The smallest key greater than every key starting with `prefix` (`None`: no such key, the
/// prefix is all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A length-prefixed key, so that a store key starting with it belongs to exactly this key
/// (no key is a prefix of another's encoding).
pub fn framed_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + key.len() + 16);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// [`framed_key`] as an [`InlineKey`]: no heap allocation for a short key.
pub fn framed_inline_key(key: &[u8]) -> InlineKey {
    InlineKey::from_parts(&[&(key.len() as u32).to_be_bytes(), key])
}

/// A timestamp whose big-endian bytes sort like the number (sign bit flipped).
/// These key-encoding helpers are public so that stores built on [`KeyValueStore`] elsewhere
/// (the DSL's join and suppression buffers) order their keys the same way.
pub fn ts_bytes(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn ts_from(b: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(b.try_into().ok()?) ^ (1 << 63)) as i64)
}

/// Splits a framed key (see [`framed_key`]) into the key and what follows it.
pub fn split_framed(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let key = b.get(4..4 + len)?;
    Some((key, &b[4 + len..]))
}
