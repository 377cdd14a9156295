//! The in-memory key-value store: a `BTreeMap` of bytes. Nothing survives the process; the
//! changelog is what restores it.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{prefix_end, Entry, KeyValueStore, StoreError};

#[derive(Debug, Default)]
pub struct InMemoryStore {
    name: String,
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl InMemoryStore {
    pub fn new(name: impl Into<String>) -> Self {
        InMemoryStore {
            name: name.into(),
            map: BTreeMap::new(),
        }
    }
}

impl KeyValueStore for InMemoryStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.get(key).cloned())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.map.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.remove(key))
    }

    fn range(&self, from: &[u8], to: &[u8]) -> Result<Vec<Entry>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        Ok(self
            .map
            .range::<[u8], _>((Bound::Included(from), Bound::Included(to)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let end = prefix_end(prefix);
        let upper = match &end {
            Some(e) => Bound::Excluded(e.as_slice()),
            None => Bound::Unbounded,
        };
        Ok(self
            .map
            .range::<[u8], _>((Bound::Included(prefix), upper))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn all(&self) -> Result<Vec<Entry>, StoreError> {
        Ok(self
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn approximate_num_entries(&self) -> u64 {
        self.map.len() as u64
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}
