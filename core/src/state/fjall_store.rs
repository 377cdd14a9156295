//! The persistent key-value store on fjall (a pure-Rust LSM tree): one fjall database per
//! store directory, one keyspace per store. `flush` syncs fjall's journal, so what was
//! flushed survives a crash; a checkpoint (see `changelog`) records which changelog
//! offset that state reflects.
//!
//! fjall refuses (panics on) empty keys and keys over 64 KiB, so every key is stored behind a
//! one-byte tag (order is unchanged) and oversized keys are an error.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Entry, KeyValueStore, StoreError};

pub struct FjallStore {
    name: String,
    db: Database,
    keyspace: Keyspace,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("name", &self.name)
            .finish()
    }
}

/// Stored before every key: fjall has no empty keys, stores do.
const TAG: u8 = 0;
/// fjall's key limit, less the tag.
const MAX_KEY_BYTES: usize = 65_535;

fn stored(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(TAG);
    k.extend_from_slice(key);
    k
}

impl FjallStore {
    /// Opens (or creates) the store `name` in directory `dir`.
    pub fn open(dir: &Path, name: &str) -> Result<FjallStore, StoreError> {
        let err = |e: fjall::Error| StoreError::Backend {
            store: name.to_string(),
            reason: e.to_string(),
        };
        let db = Database::builder(dir).open().map_err(err)?;
        let keyspace = db
            .keyspace(name, KeyspaceCreateOptions::default)
            .map_err(err)?;
        Ok(FjallStore {
            name: name.to_string(),
            db,
            keyspace,
        })
    }

    fn err(&self, e: fjall::Error) -> StoreError {
        StoreError::Backend {
            store: self.name.clone(),
            reason: e.to_string(),
        }
    }

    fn collect(&self, iter: impl Iterator<Item = fjall::Guard>) -> Result<Vec<Entry>, StoreError> {
        iter.map(|g| {
            g.into_inner()
                .map(|(k, v)| (k.get(1..).unwrap_or_default().to_vec(), v.to_vec()))
                .map_err(|e| self.err(e))
        })
        .collect()
    }

    fn checked(&self, key: &[u8]) -> Result<Vec<u8>, StoreError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(StoreError::Backend {
                store: self.name.clone(),
                reason: format!("a {}-byte key is over the 65535-byte limit", key.len()),
            });
        }
        Ok(stored(key))
    }
}

impl KeyValueStore for FjallStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if key.len() > MAX_KEY_BYTES {
            return Ok(None);
        }
        self.keyspace
            .get(stored(key))
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.err(e))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let k = self.checked(key)?;
        self.keyspace
            .insert(k, value.to_vec())
            .map_err(|e| self.err(e))
    }

    fn delete(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let old = self.get(key)?;
        if old.is_some() {
            self.keyspace.remove(stored(key)).map_err(|e| self.err(e))?;
        }
        Ok(old)
    }

    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<Entry>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        self.collect(self.keyspace.range(stored(from)..=stored(to)))
    }

    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.collect(self.keyspace.prefix(stored(prefix)))
    }

    fn all(&self) -> Result<Vec<Entry>, StoreError> {
        self.collect(self.keyspace.iter())
    }

    fn approximate_num_entries(&self) -> u64 {
        self.keyspace.approximate_len() as u64
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(|e| self.err(e))
    }

    /// One fjall write batch: one journal write for a whole commit's changes.
    fn write_all(&mut self, changes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        for (k, v) in changes {
            let k = self.checked(&k)?;
            match v {
                Some(v) => batch.insert(&self.keyspace, k, v),
                None => batch.remove(&self.keyspace, k),
            }
        }
        batch.commit().map_err(|e| self.err(e))
    }
}
