//! The sliding window aggregation: for each record at `t`, the window `[t - d, t]`, and
//! `[t + 1, t + 1 + d]` when that holds a later record; both ends are inclusive, and a window
//! takes updates while `end >= stream time - grace`. It keeps the records of its open windows
//! and recomputes each window a record changes.

use rill_core::metrics::{DropReason, DroppedRecords};
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::state::{framed_key, ts_bytes, ts_from, KeyValueStore, WindowStore};

use crate::ops::aggregate::{read_record, Step, Value};
use crate::ops::records::Headers;
use crate::ops::records::{
    decode_timestamped, earlier, encode, kept_from, timestamped_bytes, windowed_key,
};
use crate::ops::windowed::windowed_processor;
use crate::ops::windowed::{change_record, read, WindowedAggregation, WindowedProcessor};
use crate::options::SlidingWindows;
use crate::serdes::Data;

/// Sliding-window aggregation: keeps the records of the open windows (in a second area of
/// the store) and recomputes each window a record changes.
pub(crate) struct SlidingAgg<K, V, VA> {
    pub(crate) windows: SlidingWindows,
    pub(crate) retention_ms: i64,
    /// Records dropped as late since the processor last counted them.
    pub(crate) dropped: DroppedRecords,
    pub(crate) step: Step<K, V, VA>,
    pub(crate) observed: i64,
    pub(crate) last_purge: i64,
    pub(crate) _k: std::marker::PhantomData<fn() -> (K, V)>,
}

impl<K, V, VA> SlidingAgg<K, V, VA> {
    pub(crate) fn new(windows: SlidingWindows, retention_ms: i64, step: Step<K, V, VA>) -> Self {
        SlidingAgg {
            windows,
            retention_ms,
            dropped: DroppedRecords::default(),
            step,
            observed: i64::MIN,
            last_purge: i64::MIN / 2,
            _k: std::marker::PhantomData,
        }
    }
}

/// Store areas of a sliding aggregation: windows (as a window store) and buffered records.
pub(crate) const SLIDING_WINDOWS: u8 = b'W';
pub(crate) const SLIDING_RECORDS: u8 = b'R';

/// A sub-store under a one-byte prefix.
#[derive(Debug)]
pub(crate) struct Area<'a> {
    inner: &'a mut dyn KeyValueStore,
    tag: u8,
}

impl Area<'_> {
    fn k(&self, key: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(key.len() + 1);
        b.push(self.tag);
        b.extend_from_slice(key);
        b
    }
}

impl KeyValueStore for Area<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, rill_core::state::StoreError> {
        self.inner.get(&self.k(key))
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), rill_core::state::StoreError> {
        let k = self.k(key);
        self.inner.put(&k, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, rill_core::state::StoreError> {
        let k = self.k(key);
        self.inner.delete(&k)
    }
    fn range(
        &self,
        from: &[u8],
        to: &[u8],
    ) -> Result<Vec<rill_core::state::Entry>, rill_core::state::StoreError> {
        Ok(self
            .inner
            .range(&self.k(from), &self.k(to))?
            .into_iter()
            .map(|(k, v)| (k[1..].to_vec(), v))
            .collect())
    }
    fn prefix_scan(
        &self,
        prefix: &[u8],
    ) -> Result<Vec<rill_core::state::Entry>, rill_core::state::StoreError> {
        Ok(self
            .inner
            .prefix_scan(&self.k(prefix))?
            .into_iter()
            .map(|(k, v)| (k[1..].to_vec(), v))
            .collect())
    }
    fn all(&self) -> Result<Vec<rill_core::state::Entry>, rill_core::state::StoreError> {
        self.prefix_scan(&[])
    }
    fn approximate_num_entries(&self) -> u64 {
        self.inner.approximate_num_entries()
    }
    fn flush(&mut self) -> Result<(), rill_core::state::StoreError> {
        self.inner.flush()
    }
}

impl<K: Data, V: Data, VA: Data> WindowedAggregation<K, V, VA> for SlidingAgg<K, V, VA> {
    // The records it keeps are keyed by their ids.
    const NEEDS_ID: bool = true;

    fn take_dropped(&mut self) -> Option<DroppedRecords> {
        self.dropped.take()
    }

    fn reads_record(&self) -> bool {
        true
    }

    fn update(
        &mut self,
        store: &mut dyn KeyValueStore,
        k: Option<&K>,
        key: &[u8],
        v: Option<V>,
        ts: i64,
        id: &[u8],
        _headers: &Headers,
        _task_time: i64,
    ) -> Result<Vec<Record>, ProcessError> {
        let (k, v) = read(k, v)?;
        let SlidingWindows {
            time_difference_ms: d,
            grace_ms,
        } = self.windows;
        self.observed = self.observed.max(ts);
        let close = self.observed.saturating_sub(grace_ms);
        // Sliding windows include their end: one closes once `end < st - grace`. As in
        // Kafka Streams, a record is late when its latest window, `[ts, ts + d]`, has closed
        // (its own right window holds only later records, which made it already).
        if ts.saturating_add(d) < close {
            self.dropped.add(DropReason::LateSliding, 1);
            return Ok(Vec::new());
        }
        if ts < 0 {
            // No window starts below 0: nothing can hold it.
            self.dropped.add(DropReason::InvalidTimestamp, 1);
            return Ok(Vec::new());
        }
        // Buffer the record: framed key | record id (timestamp first).
        let bound = |t: i64, fill: u8| {
            let mut b = framed_key(key);
            b.extend_from_slice(&ts_bytes(t));
            b.extend_from_slice(&[fill; 16]);
            b
        };
        {
            let mut records = Area {
                inner: &mut *store,
                tag: SLIDING_RECORDS,
            };
            let mut rk = framed_key(key);
            rk.extend_from_slice(id);
            records.put(&rk, &encode(&v)?)?;
        }
        // The key's records that can share a window with `ts`, in time order.
        let near: Vec<(i64, V)> = {
            let records = Area {
                inner: &mut *store,
                tag: SLIDING_RECORDS,
            };
            let reach = d.saturating_mul(2).saturating_add(1);
            let rows = records.range(
                &bound(ts.saturating_sub(reach), 0),
                &bound(ts.saturating_add(reach), 0xff),
            )?;
            rows.into_iter()
                .map(|(rk, b)| {
                    let t = rk
                        .len()
                        .checked_sub(24)
                        .and_then(|i| ts_from(&rk[i..i + 8]))
                        .unwrap_or(0);
                    Ok((
                        t,
                        crate::serdes::hop::decode(&b).map_err(crate::ops::records::internal)?,
                    ))
                })
                .collect::<Result<_, ProcessError>>()?
        };
        let has_record_in = |from: i64, to: i64| near.iter().any(|(t, _)| *t >= from && *t <= to);
        // Windows holding `ts`: left windows of records in [ts, ts + d] and right windows of
        // records in [ts - d - 1, ts - 1]; starts never below 0.
        let mut starts: Vec<i64> = Vec::new();
        for (t, _) in &near {
            let left = t.saturating_sub(d).max(0);
            if left <= ts && ts <= left.saturating_add(d) {
                starts.push(left);
            }
            // A record at the very end of time has no right window.
            if let Some(right) = t.checked_add(1) {
                if right <= ts && ts <= right.saturating_add(d) {
                    starts.push(right);
                }
            }
        }
        starts.sort_unstable();
        starts.dedup();
        let mut windows = WindowStore::new(
            Area {
                inner: &mut *store,
                tag: SLIDING_WINDOWS,
            },
            self.retention_ms,
        );
        // The windows as they are now (`None`: to be created).
        let mut planned = Vec::with_capacity(starts.len() + 1);
        for start in starts {
            planned.push((start, windows.fetch_one(key, start)?));
        }
        // The record's own right window is new if it holds a later record and was not a
        // window already.
        if let Some(right) = ts.checked_add(1) {
            if has_record_in(right, right.saturating_add(d))
                && windows.fetch_one(key, right)?.is_none()
            {
                planned.push((right, None));
            }
        }
        // In Kafka Streams' order: the windows that exist, newest start first, then the new
        // ones — the previous record's right window, the record's left window, its own right
        // window. A record before `d` (whose left window is the shared `[0, d]`) updates the
        // others oldest first, creates its right window and the previous record's, and
        // `[0, d]` last (Kafka's `processReverse` and `processEarly`).
        let left_start = ts.saturating_sub(d).max(0);
        let own_right = ts.checked_add(1);
        let early = ts < d;
        planned.sort_by_key(|(start, old)| match (early, old.is_some()) {
            _ if early && *start == 0 => (3, 0),
            (true, true) => (0, *start),
            (true, false) if Some(*start) == own_right => (1, 0),
            (true, false) => (2, *start),
            (false, true) => (0, -*start),
            (false, false) if *start == left_start => (2, 0),
            (false, false) if Some(*start) == own_right => (3, 0),
            (false, false) => (1, *start),
        });
        let mut out = Vec::new();
        for (start, old) in planned {
            let end = start.saturating_add(d);
            if end < close {
                continue;
            }
            let mut acc: Option<VA> = None;
            let mut max_ts = i64::MIN;
            for (t, val) in near.iter().filter(|(t, _)| *t >= start && *t <= end) {
                acc = Some(self.step.bind(Some((k, Value::Lent(val))))?.apply(acc));
                max_ts = max_ts.max(*t);
            }
            let Some(new) = acc else { continue };
            let old = old
                .map(|b| decode_timestamped::<VA>(&b))
                .transpose()?
                .map(|(a, _)| a);
            windows.put(key, Some(&timestamped_bytes(&new, max_ts)?), start)?;
            out.push(change_record(
                windowed_key(key, start, end),
                Some(new),
                old,
                max_ts,
            )?);
        }
        if self.observed.saturating_sub(self.last_purge) >= self.retention_ms.max(1) {
            let cutoff = kept_from(self.observed, self.retention_ms, &[d, grace_ms, 1]);
            windows.purge_before(cutoff)?;
            let mut records = Area {
                inner: &mut *store,
                tag: SLIDING_RECORDS,
            };
            // A record before the earliest kept window's start by more than d + 1 is in none.
            let keep_from = earlier(cutoff, &[d, 2]);
            for (rk, _) in records.all()? {
                let t = rk
                    .len()
                    .checked_sub(16)
                    .and_then(|i| ts_from(&rk[i..i + 8]));
                if t.is_some_and(|t| t < keep_from) {
                    records.delete(&rk)?;
                }
            }
            self.last_purge = self.observed;
        }
        Ok(out)
    }
}

windowed_processor!(SlidingAgg);
