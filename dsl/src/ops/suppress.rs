//! The suppression buffer behind `KTable::suppress`: a time-ordered buffer in a logged store,
//! emitting a key's latest change when its time comes — its window closes (final results:
//! deletions are dropped), or a time limit passes from the key's first buffered update (Kafka
//! Streams' non-resetting rule) — or earlier, oldest first, when a bounded buffer is full.

use bytes::Bytes;
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::state::{ts_bytes, ts_from, Entry, KeyValueStore};

use crate::ops::records::{internal, window_end_of, Headers};
use crate::options::BufferConfig;
use crate::serdes::hop;

/// Holds a table's updates in a time-ordered buffer: `T | time | key -> timestamp | change`
/// and `K | key -> time`, and emits those whose time has come (or, past the buffer's bound,
/// the oldest).
pub(crate) struct Suppress {
    pub(crate) store: String,
    /// Window close (grace from the window end) or time limit (from the key's first buffered
    /// update).
    pub(crate) windowed: bool,
    /// Final results only: a deletion that comes due is dropped, not forwarded (Kafka
    /// Streams' `safeToDropTombstones` for `untilWindowCloses`).
    pub(crate) final_results: bool,
    pub(crate) wait_ms: i64,
    pub(crate) observed: i64,
    pub(crate) buffer: BufferConfig,
    /// No entry is due before this time (`None`: unknown, after a start).
    pub(crate) earliest: Option<i64>,
    /// Keys and bytes buffered (`None`: not counted yet, after a start).
    pub(crate) held: Option<(u64, u64)>,
}

pub(crate) fn buffer_key(time: i64, key: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(9 + key.len());
    b.push(b'T');
    b.extend_from_slice(&ts_bytes(time));
    b.extend_from_slice(key);
    b
}

pub(crate) fn index_key(key: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(1 + key.len());
    b.push(b'K');
    b.extend_from_slice(key);
    b
}

impl Suppress {
    /// A buffer in store `store`, holding each key `wait_ms` past its window's end
    /// (`windowed`: final results) or past its first buffered update.
    pub(crate) fn new(store: String, windowed: bool, wait_ms: i64, buffer: BufferConfig) -> Self {
        Suppress {
            store,
            windowed,
            final_results: windowed,
            wait_ms,
            observed: i64::MIN,
            buffer,
            earliest: None,
            held: None,
        }
    }

    /// The buffered entries, oldest first, up to time `until` (inclusive).
    fn buffered(store: &dyn KeyValueStore, until: i64) -> Result<Vec<Entry>, ProcessError> {
        Ok(store.range(
            &buffer_key(i64::MIN, &[]),
            &buffer_key(until.saturating_add(1), &[]),
        )?)
    }

    /// Removes `entries` (buffer rows) from the buffer and forwards them.
    fn emit(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        entries: Vec<Entry>,
    ) -> Result<(), ProcessError> {
        let store = ctx.store(&self.store)?;
        let mut out = Vec::with_capacity(entries.len());
        let final_results = self.final_results;
        for (bk, v) in entries {
            let k = bk
                .get(9..)
                .ok_or_else(|| ProcessError::Failed("suppress buffer: short key".into()))?
                .to_vec();
            store.erase(&bk)?;
            store.erase(&index_key(&k))?;
            if let Some((records, bytes)) = self.held.as_mut() {
                *records = records.saturating_sub(1);
                *bytes = bytes.saturating_sub((k.len() + v.len()) as u64);
            }
            let (ts, headers, change) = read_entry(&v)?;
            if final_results && crate::ops::records::is_deletion(change) {
                continue;
            }
            out.push(Record {
                key: Some(Bytes::from(k)),
                value: Some(Bytes::copy_from_slice(change)),
                timestamp: ts,
                headers,
                typed: None,
            });
        }
        for o in out {
            ctx.forward(o)?;
        }
        Ok(())
    }
}

/// Marks an entry that carries its record's headers (a change's bytes start with an
/// `Option` tag, 0 or 1, never this).
const WITH_HEADERS: u8 = 0xff;

/// A buffer entry: `timestamp | change`, or, for a record with headers, `timestamp | 0xff |
/// headers length (u32) | headers | change`, so that an emitted record carries the headers
/// of its latest update (as Kafka Streams' buffer keeps its record context).
fn entry(ts: i64, headers: &Headers, change: &[u8]) -> Result<Vec<u8>, ProcessError> {
    let mut v = ts.to_be_bytes().to_vec();
    if !headers.is_empty() {
        let owned: Vec<(&str, Option<&[u8]>)> = headers
            .iter()
            .map(|(k, h)| (k.as_str(), h.as_deref()))
            .collect();
        let encoded = hop::encode(&owned).map_err(internal)?;
        let len = u32::try_from(encoded.len())
            .map_err(|_| ProcessError::Failed("suppress: headers over 4 GiB".into()))?;
        v.push(WITH_HEADERS);
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&encoded);
    }
    v.extend_from_slice(change);
    Ok(v)
}

/// The timestamp, headers and change of a buffer entry (see [`entry`]).
fn read_entry(v: &[u8]) -> Result<(i64, Headers, &[u8]), ProcessError> {
    let short = || ProcessError::Failed("suppress buffer: short entry".into());
    let (ts, rest) = v.split_first_chunk::<8>().ok_or_else(short)?;
    let ts = i64::from_be_bytes(*ts);
    let Some((&WITH_HEADERS, rest)) = rest.split_first() else {
        return Ok((ts, Vec::new(), rest));
    };
    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(short)?;
    let len = u32::from_be_bytes(*len) as usize;
    let (encoded, change) = (rest.get(..len).ok_or_else(short)?, &rest[len..]);
    let headers: Vec<(String, Option<Vec<u8>>)> = hop::decode(encoded).map_err(internal)?;
    let headers = headers
        .into_iter()
        .map(|(k, h)| (k, h.map(Bytes::from)))
        .collect();
    Ok((ts, headers, change))
}

impl Processor for Suppress {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let key = r.key.clone().unwrap_or_default();
        let value = r.value_bytes()?.unwrap_or_default();
        self.observed = self.observed.max(r.timestamp);
        let time = if self.windowed {
            window_end_of(&key)
                .ok_or_else(|| ProcessError::Failed("suppress: not a windowed key".into()))?
        } else {
            r.timestamp
        };
        let store = ctx.store(&self.store)?;
        let bounded = self.buffer.max_records.is_some() || self.buffer.max_bytes.is_some();
        if bounded && self.held.is_none() {
            let all = Self::buffered(store, i64::MAX - 1)?;
            let bytes = all
                .iter()
                .map(|(k, v)| (k.len() - 9 + v.len()) as u64)
                .sum();
            self.held = Some((all.len() as u64, bytes));
        }
        let v = entry(r.timestamp, &r.headers, &value)?;
        // Non-resetting, as Kafka Streams: a key already buffered keeps its place (the time
        // of its first buffered update); only its value is replaced.
        let buffered_at = store.get(&index_key(&key))?.and_then(|t| ts_from(&t));
        let replaced = match buffered_at {
            Some(t) => store.get(&buffer_key(t, &key))?,
            None => None,
        };
        let time = buffered_at.unwrap_or(time);
        store.put(&buffer_key(time, &key), &v)?;
        if buffered_at.is_none() {
            store.put(&index_key(&key), &ts_bytes(time))?;
        }
        if let Some((records, bytes)) = self.held.as_mut() {
            match &replaced {
                Some(old) => *bytes = bytes.saturating_sub((key.len() + old.len()) as u64),
                None => *records += 1,
            }
            *bytes += (key.len() + v.len()) as u64;
        }
        // An unknown bound (after a start) stays unknown until a scan learns it.
        if let Some(e) = self.earliest {
            self.earliest = Some(e.min(time));
        }
        let expiry = self.observed.saturating_sub(self.wait_ms);
        // Nothing is due while the oldest entry's time is ahead of the expiry.
        if self.earliest.is_none_or(|e| e <= expiry) {
            let due = Self::buffered(store, expiry)?;
            self.earliest = Some(expiry.saturating_add(1));
            self.emit(ctx, due)?;
        }
        if let Some((records, bytes)) = self.held {
            if self.buffer.full(records, bytes) {
                if !self.buffer.emit_early {
                    return Err(ProcessError::Failed(format!(
                        "suppression buffer {} is full ({records} records, {bytes} bytes)",
                        self.store
                    )));
                }
                // The oldest go first, until the buffer is within its bounds again.
                let store = ctx.store(&self.store)?;
                let mut early = Vec::new();
                let (mut n, mut b) = (records, bytes);
                for (bk, v) in Self::buffered(store, i64::MAX - 1)? {
                    if !self.buffer.full(n, b) {
                        break;
                    }
                    n -= 1;
                    b = b.saturating_sub((bk.len() - 9 + v.len()) as u64);
                    early.push((bk, v));
                }
                self.emit(ctx, early)?;
            }
        }
        Ok(())
    }
}
