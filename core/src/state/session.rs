//! The session store: values by (key, session start, session end). Store keys are
//! `framed key | end | start`, so one key's sessions are contiguous and ordered by end, the
//! order session merging searches in.

use super::{framed_key, split_framed, ts_bytes, ts_from, KeyValueStore, StoreError};

/// A session window of a key: `[start, end]`, both inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub key: Vec<u8>,
    pub start: i64,
    pub end: i64,
}

#[derive(Debug)]
pub struct SessionStore<S: KeyValueStore> {
    inner: S,
}

impl<S: KeyValueStore> SessionStore<S> {
    pub fn new(inner: S) -> Self {
        SessionStore { inner }
    }

    fn store_key(key: &[u8], end: i64, start: i64) -> Vec<u8> {
        let mut k = framed_key(key);
        k.extend_from_slice(&ts_bytes(end));
        k.extend_from_slice(&ts_bytes(start));
        k
    }

    pub fn put(&mut self, session: &Session, value: &[u8]) -> Result<(), StoreError> {
        self.inner.put(
            &Self::store_key(&session.key, session.end, session.start),
            value,
        )
    }

    /// `put` of a session the store has no value for: its sole writer knows, having just
    /// removed any session of the key with the same bounds (see [`KeyValueStore::put_new`]).
    pub fn put_new(&mut self, session: &Session, value: Vec<u8>) -> Result<(), StoreError> {
        self.inner.put_new(
            &Self::store_key(&session.key, session.end, session.start),
            value,
        )
    }

    pub fn remove(&mut self, session: &Session) -> Result<(), StoreError> {
        self.inner
            .erase(&Self::store_key(&session.key, session.end, session.start))
    }

    /// `key`'s sessions with `end >= earliest_end` and `start <= latest_start` (Kafka
    /// Streams' `findSessions`), ordered by end.
    pub fn find_sessions(
        &self,
        key: &[u8],
        earliest_end: i64,
        latest_start: i64,
    ) -> Result<Vec<(Session, Vec<u8>)>, StoreError> {
        let from = Self::store_key(key, earliest_end, i64::MIN);
        let to = Self::store_key(key, i64::MAX, i64::MAX);
        let mut out = Vec::new();
        for (k, v) in self.inner.range(&from, &to)? {
            let s = self.decode(&k)?;
            if s.start <= latest_start {
                out.push((s, v));
            }
        }
        Ok(out)
    }

    /// Every session of every key, by key then end.
    pub fn all(&self) -> Result<Vec<(Session, Vec<u8>)>, StoreError> {
        self.inner
            .all()?
            .into_iter()
            .map(|(k, v)| Ok((self.decode(&k)?, v)))
            .collect()
    }

    /// Deletes every session that ended before `cutoff`; returns how many.
    pub fn purge_ended_before(&mut self, cutoff: i64) -> Result<usize, StoreError> {
        let mut gone = 0;
        for (k, _) in self.inner.all()? {
            if self.decode(&k)?.end < cutoff {
                self.inner.delete(&k)?;
                gone += 1;
            }
        }
        Ok(gone)
    }

    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn decode(&self, k: &[u8]) -> Result<Session, StoreError> {
        let corrupt = || StoreError::Corrupt {
            store: self.inner.name().to_string(),
            reason: "session key".into(),
        };
        let (key, rest) = split_framed(k).ok_or_else(corrupt)?;
        let end = ts_from(rest.get(..8).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
        let start = ts_from(rest.get(8..16).ok_or_else(corrupt)?).ok_or_else(corrupt)?;
        Ok(Session {
            key: key.to_vec(),
            start,
            end,
        })
    }
}
