//! Timestamped values: each value stored with the timestamp of the record that wrote it
//! (`timestamp | value`), as Kafka Streams' timestamped stores keep it for KTables.

use super::{KeyValueStore, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueAndTimestamp {
    pub value: Vec<u8>,
    pub timestamp: i64,
}

#[derive(Debug)]
pub struct TimestampedKeyValueStore<S: KeyValueStore> {
    inner: S,
}

impl<S: KeyValueStore> TimestampedKeyValueStore<S> {
    pub fn new(inner: S) -> Self {
        TimestampedKeyValueStore { inner }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<ValueAndTimestamp>, StoreError> {
        self.inner.get(key)?.map(|b| self.decode(&b)).transpose()
    }

    pub fn put(&mut self, key: &[u8], v: &ValueAndTimestamp) -> Result<(), StoreError> {
        let mut b = Vec::with_capacity(8 + v.value.len());
        b.extend_from_slice(&v.timestamp.to_be_bytes());
        b.extend_from_slice(&v.value);
        self.inner.put(key, &b)
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<Option<ValueAndTimestamp>, StoreError> {
        self.inner.delete(key)?.map(|b| self.decode(&b)).transpose()
    }

    pub fn range(
        &self,
        from: &[u8],
        to: &[u8],
    ) -> Result<Vec<(Vec<u8>, ValueAndTimestamp)>, StoreError> {
        self.inner
            .range(from, to)?
            .into_iter()
            .map(|(k, b)| Ok((k, self.decode(&b)?)))
            .collect()
    }

    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn decode(&self, b: &[u8]) -> Result<ValueAndTimestamp, StoreError> {
        let ts = b
            .get(..8)
            .and_then(|t| t.try_into().ok())
            .ok_or_else(|| StoreError::Corrupt {
                store: self.inner.name().to_string(),
                reason: "timestamped value shorter than its timestamp".into(),
            })?;
        Ok(ValueAndTimestamp {
            timestamp: i64::from_be_bytes(ts),
            value: b[8..].to_vec(),
        })
    }
}
