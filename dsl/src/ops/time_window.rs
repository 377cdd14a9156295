//! The tumbling and hopping window aggregation: windows `[start, start + size)` aligned to
//! epoch 0, updated while `end > stream time - grace`; updates wait in the record cache
//! (`crate::ops::cache`) until a commit, and a record too late for a window is counted once per
//! closed window, as Kafka Streams counts it.

use rill_core::metrics::{DropReason, DroppedRecords};
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::state::{
    framed_inline_key, split_framed, ts_bytes, ts_from, InlineKey, KeyValueStore,
};
use smallvec::SmallVec;

use crate::ops::aggregate::{read_record, Step, Value};
use crate::ops::cache::RecordCache;
use crate::ops::records::Headers;
use crate::ops::records::{kept_from, windowed_key, ExpiryIndex, RecordIds};
use crate::ops::windowed::windowed_processor;
use crate::ops::windowed::{WindowedAggregation, WindowedProcessor};
use crate::options::TimeWindows;
use crate::serdes::{Data, SerdeRef};

/// Time-window aggregation state: the stream time seen, when old windows were purged, and
/// the record cache in front of the window store.
pub(crate) struct TimeAgg<K, V, VA> {
    windows: TimeWindows,
    retention_ms: i64,
    step: Step<K, V, VA>,
    observed: i64,
    last_purge: i64,
    expiry: ExpiryIndex,
    cache: RecordCache<VA>,
    /// Stream time is the task's, not this processor's (a cogroup's inputs share a store:
    /// they must agree on which windows are open).
    task_time: bool,
    /// Window updates dropped as late since the processor last counted them.
    late_windows: u64,
    /// The latest window start the store held when this processor started (`None` until its
    /// first record, when the store is scanned once). A cache miss for a later window that
    /// the cache never evicted is a new window: no store read. Only with the cache on, which
    /// means no other processor writes or reads the store.
    stored_max: Option<i64>,
}

/// The window start of a window store key.
pub(crate) fn window_start_of(store_key: &[u8]) -> Option<i64> {
    split_framed(store_key).and_then(|(_, rest)| ts_from(rest))
}

impl<K: Data, V: Data, VA: Data> WindowedAggregation<K, V, VA> for TimeAgg<K, V, VA> {
    fn take_dropped(&mut self) -> Option<DroppedRecords> {
        if self.late_windows == 0 {
            return None;
        }
        let mut d = DroppedRecords::default();
        d.add(
            DropReason::LateWindow,
            std::mem::take(&mut self.late_windows),
        );
        Some(d)
    }

    fn reads_record(&self) -> bool {
        self.step.reads_record()
    }

    fn update(
        &mut self,
        store: &mut dyn KeyValueStore,
        k: Option<&K>,
        key: &[u8],
        v: Option<V>,
        ts: i64,
        _id: &[u8],
        headers: &Headers,
        task_time: i64,
    ) -> Result<Vec<Record>, ProcessError> {
        self.observed = self.observed.max(ts);
        if self.task_time {
            self.observed = self.observed.max(task_time);
        }
        let close = self.observed.saturating_sub(self.windows.grace_ms);
        let known = match self.stored_max {
            _ if !self.cache.enabled() => i64::MAX,
            Some(m) => m,
            None => {
                let mut m = i64::MIN;
                for (k, _) in store.all()? {
                    m = m.max(window_start_of(&k).unwrap_or(i64::MAX));
                }
                *self.stored_max.insert(m)
            }
        }
        .max(self.cache.evicted_max());
        // The framed key: the group of this key's windows in the cache, and the prefix of
        // their store keys.
        let group = framed_inline_key(key);
        let (size, advance) = (self.windows.size_ms, self.windows.advance_ms);
        // Windows already closed (`start + size <= close`) are too late for the record.
        let (first, n) = self.windows.span_above(ts, close.saturating_sub(size));
        // Kafka Streams counts one drop per closed window the record falls in.
        // (Only a record before the close can be: every window holding it ends after it.)
        if ts < close {
            let all = self.windows.span_above(ts, i64::MIN).1;
            self.late_windows += all.saturating_sub(n) as u64;
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let start_of = |i: usize| first + i as i64 * advance;
        let last = start_of(n - 1);
        let bound = self.step.bind(k.zip(v.map(Value::Owned)))?;
        let timestamp = |t: Option<i64>| t.map_or(ts, |t| ts.max(t));
        // The other windows borrow the record's value (found in the cache with one
        // lookup); the last one takes it. A step reading no value (a count) takes nothing:
        // all its windows, when more than one, are updated with the one lookup.
        let one_lookup = !self.step.reads_record() && n > 1;
        let borrowing = if one_lookup { n } else { n - 1 };
        let mut absent = if borrowing == 0 {
            SmallVec::new()
        } else {
            let windows: SmallVec<[(i64, bool); 8]> = (0..borrowing)
                .map(start_of)
                .map(|start| (start, start > known))
                .collect();
            self.cache
                .update_windows(store, &group, &windows, headers, |_, acc, t| {
                    (bound.apply_ref(acc), timestamp(t))
                })?
        };
        if !one_lookup {
            absent.push(self.cache.update(
                store,
                &group,
                Some(last),
                last > known,
                headers,
                |acc, t| (bound.apply(acc), timestamp(t)),
            )?);
        }
        for (i, _) in absent.iter().enumerate().filter(|(_, absent)| **absent) {
            let start = start_of(i);
            self.expiry.insert(
                start,
                InlineKey::from_parts(&[group.as_slice(), &ts_bytes(start)]),
            );
        }
        Ok(Vec::new())
    }

    fn flush(&mut self, ctx: &mut ProcessorContext<'_>, store: &str) -> Result<(), ProcessError> {
        self.cache.flush(ctx, store)?;
        if self.observed.saturating_sub(self.last_purge) >= (self.retention_ms / 10).max(1) {
            // Windows starting at or before `observed - retention` are gone.
            let (size, grace) = (self.windows.size_ms, self.windows.grace_ms);
            let cutoff = kept_from(self.observed, self.retention_ms, &[size, grace]);
            self.expiry
                .purge(ctx.store(store)?, cutoff, window_start_of)?;
            self.cache
                .retain(|_, start, _| start.is_some_and(|s| s >= cutoff));
            self.last_purge = self.observed;
        }
        Ok(())
    }

    fn must_flush(&self, ctx: &ProcessorContext<'_>) -> bool {
        self.cache.must_flush(ctx)
    }
}

windowed_processor!(TimeAgg);

impl<K: Data, V: Data, VA: Data> TimeAgg<K, V, VA> {
    pub(crate) fn new(
        windows: TimeWindows,
        retention_ms: i64,
        step: Step<K, V, VA>,
        caching: bool,
    ) -> Self {
        TimeAgg {
            task_time: false,
            windows,
            retention_ms,
            step,
            observed: i64::MIN,
            last_purge: i64::MIN / 2,
            expiry: ExpiryIndex::default(),
            cache: RecordCache::new(
                caching,
                Box::new(move |framed, window| {
                    split_framed(framed)
                        .zip(window)
                        .map(|((key, _), start)| {
                            windowed_key(key, start, start.saturating_add(windows.size_ms))
                        })
                        .ok_or_else(|| ProcessError::Failed("corrupt window store key".into()))
                }),
            ),
            stored_max: None,
            late_windows: 0,
        }
    }
}

/// A time-windowed aggregation of `step` into window store `store`, for cogroups, whose
/// inputs share the store: no record cache, and the task's stream time.
pub(crate) fn uncached_time_aggregation<K: Data, V: Data, VA: Data>(
    keys: SerdeRef<K>,
    store: String,
    windows: TimeWindows,
    retention_ms: i64,
    step: Step<K, V, VA>,
) -> Box<dyn Processor> {
    Box::new(WindowedProcessor {
        keys,
        store,
        agg: TimeAgg {
            task_time: true,
            ..TimeAgg::new(windows, retention_ms, step, false)
        },
        ids: RecordIds::default(),
    })
}
