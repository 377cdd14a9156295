//! The window store: values by (key, window start), with a retention period. Store keys are
//! `framed key | window start`, so one key's windows are contiguous and in time order.

use super::{framed_key, split_framed, ts_bytes, ts_from, KeyValueStore, StoreError};

/// Windows of a key-value backend, dropping what falls out of `retention_ms` behind the
/// newest window start seen (Kafka Streams' observed stream time).
#[derive(Debug)]
pub struct WindowStore<S: KeyValueStore> {
    inner: S,
    retention_ms: i64,
    observed_ms: i64,
}

impl<S: KeyValueStore> WindowStore<S> {
    pub fn new(inner: S, retention_ms: i64) -> Self {
        WindowStore {
            inner,
            retention_ms,
            observed_ms: i64::MIN,
        }
    }

    fn store_key(key: &[u8], start: i64) -> Vec<u8> {
        let mut k = framed_key(key);
        k.extend_from_slice(&ts_bytes(start));
        k
    }

    fn expired(&self, start: i64) -> bool {
        self.observed_ms != i64::MIN && start <= self.observed_ms.saturating_sub(self.retention_ms)
    }

    /// Puts (or with `None`, deletes) the value of `key`'s window starting at `start`. A
    /// window already past retention is ignored, as Kafka Streams does.
    pub fn put(&mut self, key: &[u8], value: Option<&[u8]>, start: i64) -> Result<(), StoreError> {
        self.observed_ms = self.observed_ms.max(start);
        if self.expired(start) {
            return Ok(());
        }
        let k = Self::store_key(key, start);
        match value {
            Some(v) => self.inner.put(&k, v),
            None => self.inner.delete(&k).map(|_| ()),
        }
    }

    /// The value of one window.
    pub fn fetch_one(&self, key: &[u8], start: i64) -> Result<Option<Vec<u8>>, StoreError> {
        if self.expired(start) {
            return Ok(None);
        }
        self.inner.get(&Self::store_key(key, start))
    }

    /// `key`'s windows starting in `[from, to]`, oldest first, as (start, value).
    pub fn fetch(&self, key: &[u8], from: i64, to: i64) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let rows = self
            .inner
            .range(&Self::store_key(key, from), &Self::store_key(key, to))?;
        rows.into_iter()
            .map(|(k, v)| Ok((self.decode(&k)?.1, v)))
            .filter(|r| r.as_ref().map_or(true, |(s, _)| !self.expired(*s)))
            .collect()
    }

    /// Every key's windows starting in `[from, to]`, as ((key, start), value), by key then
    /// start.
    #[allow(clippy::type_complexity)]
    pub fn fetch_all(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<((Vec<u8>, i64), Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.inner.all()? {
            let (key, start) = self.decode(&k)?;
            if start >= from && start <= to && !self.expired(start) {
                out.push(((key, start), v));
            }
        }
        Ok(out)
    }

    /// Deletes every window past retention; returns how many.
    pub fn purge_expired(&mut self) -> Result<usize, StoreError> {
        let mut gone = 0;
        for (k, _) in self.inner.all()? {
            if self.expired(self.decode(&k)?.1) {
                self.inner.delete(&k)?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    /// Deletes every window starting before `cutoff` (a caller that tracks its own stream
    /// time, as the DSL's windowed operators do); returns how many.
    pub fn purge_before(&mut self, cutoff: i64) -> Result<usize, StoreError> {
        let mut gone = 0;
        for (k, _) in self.inner.all()? {
            if self.decode(&k)?.1 < cutoff {
                self.inner.delete(&k)?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn decode(&self, k: &[u8]) -> Result<(Vec<u8>, i64), StoreError> {
        split_framed(k)
            .and_then(|(key, rest)| Some((key.to_vec(), ts_from(rest)?)))
            .ok_or_else(|| StoreError::Corrupt {
                store: self.inner.name().to_string(),
                reason: "window key".into(),
            })
    }
}
