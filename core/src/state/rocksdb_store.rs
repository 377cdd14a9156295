//! The RocksDB key-value store (cargo feature `rocksdb`): one RocksDB database per store
//! directory, as Kafka Streams keeps its stores. Writes go to RocksDB's write-ahead log
//! unsynced; `flush` syncs the WAL, so what was flushed survives a crash, as with fjall.
//! RocksDB orders keys by unsigned bytes, the order every store here keeps.

use std::path::Path;

use rocksdb::{Direction, IteratorMode, Options, ReadOptions, DB};

use super::{prefix_end, Entry, KeyValueStore, StoreError};

pub struct RocksDbStore {
    name: String,
    db: DB,
}

impl std::fmt::Debug for RocksDbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbStore")
            .field("name", &self.name)
            .finish()
    }
}

impl RocksDbStore {
    /// Opens (or creates) the store `name` in directory `dir`.
    pub fn open(dir: &Path, name: &str) -> Result<RocksDbStore, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir).map_err(|e| StoreError::Backend {
            store: name.to_string(),
            reason: e.to_string(),
        })?;
        Ok(RocksDbStore {
            name: name.to_string(),
            db,
        })
    }

    fn err(&self, e: rocksdb::Error) -> StoreError {
        StoreError::Backend {
            store: self.name.clone(),
            reason: e.to_string(),
        }
    }

    /// Entries from `from` on, while `keep` holds, below `upper` when given.
    fn scan(
        &self,
        from: &[u8],
        upper: Option<Vec<u8>>,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut read = ReadOptions::default();
        if let Some(upper) = upper {
            read.set_iterate_upper_bound(upper);
        }
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_opt(IteratorMode::From(from, Direction::Forward), read)
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if !keep(&k) {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }
}

impl KeyValueStore for RocksDbStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get(key).map_err(|e| self.err(e))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.db.put(key, value).map_err(|e| self.err(e))
    }

    fn delete(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let old = self.get(key)?;
        if old.is_some() {
            self.db.delete(key).map_err(|e| self.err(e))?;
        }
        Ok(old)
    }

    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<Entry>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        self.scan(from, None, |k| k <= to)
    }

    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.scan(prefix, prefix_end(prefix), |k| k.starts_with(prefix))
    }

    fn all(&self) -> Result<Vec<Entry>, StoreError> {
        self.scan(&[], None, |_| true)
    }

    fn approximate_num_entries(&self) -> u64 {
        self.db
            .property_int_value("rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(|e| self.err(e))
    }
}
