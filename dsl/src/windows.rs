//! Windows and windowed aggregations, with Kafka Streams' rules (`st` = stream time, the
//! largest timestamp the operator has seen):
//! - time windows (tumbling, hopping) are `[start, start + size)`, starts multiples of
//!   `advance` from epoch 0 and never below 0; a window takes updates while
//!   `end > st - grace`;
//! - sliding windows of difference `d` are `[t - d, t]` for each record (and `[t + 1, t + 1
//!   + d]` when that holds a record), both ends inclusive;
//! - session windows merge every session with `end >= ts - gap` and `start <= ts + gap`;
//!   unless the merged session is the record's own instant `[ts, ts]`, every merged-away
//!   session is retracted with a tombstone (one with the merged bounds too) before the merged
//!   one is put anew; a record is late when the merged session ends before `st - grace -
//!   gap`, and sessions stay in the store while `end > st - retention`.
//!
//! A late record is dropped and counted (`DropReason`). Output timestamps are the largest
//! record timestamp in the window (session end for sessions). `suppress` holds a table's
//! updates until its windows close (final results: deletions are dropped) or for a time
//! limit counted from a key's first buffered update.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rill_core::metrics::{DropReason, DroppedRecords};
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::state::{
    framed_inline_key, framed_key, split_framed, ts_bytes, ts_from, Entry, FastHashMap, InlineKey,
    KeyValueStore, Session, SessionStore, WindowStore,
};
use rill_core::topology::ProcessorSupplier;
use smallvec::SmallVec;

use crate::cache::RecordCache;
use crate::graph::{
    decode_timestamped, earlier, encode, kept_from, millis, timestamped_bytes, typed_record,
    window_end_of, windowed_key, Change, ExpiryIndex, Materialized, StoreKind,
};
use crate::grouped::{read_record, reduce_step, KGroupedStream, Step, Value};
use crate::serdes::{Data, SerdeRef, Windowed, WindowedSerde};
use crate::table::KTable;

/// Tumbling (`advance == size`) or hopping time windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindows {
    pub size_ms: i64,
    pub advance_ms: i64,
    pub grace_ms: i64,
}

impl TimeWindows {
    /// Tumbling windows of `size` that accept records up to `grace` after they end.
    pub fn of_size_with_grace(size: Duration, grace: Duration) -> Self {
        let size_ms = millis(size).max(1);
        TimeWindows {
            size_ms,
            advance_ms: size_ms,
            grace_ms: millis(grace),
        }
    }

    /// Tumbling windows of `size` that close when they end.
    pub fn of_size_no_grace(size: Duration) -> Self {
        Self::of_size_with_grace(size, Duration::ZERO)
    }

    /// Hopping windows: a new one every `advance` (at most the size).
    pub fn advance_by(mut self, advance: Duration) -> Self {
        self.advance_ms = millis(advance).clamp(1, self.size_ms);
        self
    }

    /// The starts of the windows holding `ts`, oldest first.
    pub fn starts(&self, ts: i64) -> impl ExactSizeIterator<Item = i64> {
        self.starts_above(ts, i64::MIN)
    }

    /// [`TimeWindows::starts`] above `floor` (exclusive): the windows of `ts` still open
    /// when those ending at or before `floor + size` are closed.
    fn starts_above(&self, ts: i64, floor: i64) -> impl ExactSizeIterator<Item = i64> {
        let (oldest, count) = self.span_above(ts, floor);
        let advance = self.advance_ms;
        (0..count).map(move |i| oldest + i as i64 * advance)
    }

    /// [`TimeWindows::starts_above`] as the oldest start and how many windows (each starting
    /// `advance` after the one before): nothing to collect for the usual one or few.
    fn span_above(&self, ts: i64, floor: i64) -> (i64, usize) {
        // The oldest window holding `ts` starts at the first multiple of `advance` above
        // `ts - size` (and not below 0, nor at or below `floor`); the newest at the last one
        // at or below `ts`.
        let (size, advance) = (self.size_ms, self.advance_ms);
        let newest = if ts < 0 { -1 } else { ts - ts % advance };
        let lowest = ts.saturating_sub(size).max(floor).max(-1);
        // Past the last multiple of `advance` that an i64 holds, no window starts.
        let Some(oldest) = (lowest.div_euclid(advance) + 1).checked_mul(advance) else {
            return (0, 0);
        };
        let oldest = oldest.max(0);
        // Counted, not stepped through an inclusive range: `RangeInclusive::step_by` costs
        // more than the few windows it yields.
        let count = if newest < oldest {
            0
        } else {
            usize::try_from((newest - oldest) / advance + 1).unwrap_or(0)
        };
        (oldest, count)
    }
}

/// Sliding windows: for each record at `t`, the window `[t - d, t]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindows {
    pub time_difference_ms: i64,
    pub grace_ms: i64,
}

impl SlidingWindows {
    pub fn of_time_difference_and_grace(difference: Duration, grace: Duration) -> Self {
        SlidingWindows {
            time_difference_ms: millis(difference),
            grace_ms: millis(grace),
        }
    }

    pub fn of_time_difference_with_no_grace(difference: Duration) -> Self {
        Self::of_time_difference_and_grace(difference, Duration::ZERO)
    }
}

/// Session windows: records of a key less than `gap` apart share a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindows {
    pub gap_ms: i64,
    pub grace_ms: i64,
}

impl SessionWindows {
    pub fn of_inactivity_gap_and_grace(gap: Duration, grace: Duration) -> Self {
        SessionWindows {
            gap_ms: millis(gap),
            grace_ms: millis(grace),
        }
    }

    pub fn of_inactivity_gap_with_no_grace(gap: Duration) -> Self {
        Self::of_inactivity_gap_and_grace(gap, Duration::ZERO)
    }
}

/// A kind of window a grouped stream can be windowed by.
pub trait Windowing {
    type Stream<K: Data, V: Data>;
    fn over<K: Data, V: Data>(self, grouped: KGroupedStream<K, V>) -> Self::Stream<K, V>;
}

/// Time and sliding windows: one windowed stream type over either.
impl<W: WindowAggregator> Windowing for W {
    type Stream<K: Data, V: Data> = WindowedKStream<K, V, W>;
    fn over<K: Data, V: Data>(self, grouped: KGroupedStream<K, V>) -> WindowedKStream<K, V, W> {
        WindowedKStream {
            grouped,
            windows: self,
            emit_on_close: false,
        }
    }
}

impl Windowing for SessionWindows {
    type Stream<K: Data, V: Data> = SessionWindowedKStream<K, V>;
    fn over<K: Data, V: Data>(self, grouped: KGroupedStream<K, V>) -> SessionWindowedKStream<K, V> {
        SessionWindowedKStream {
            grouped,
            windows: self,
        }
    }
}

/// When a windowed aggregation emits (Kafka Streams' `EmitStrategy`, KIP-825).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmitStrategy {
    /// Every update of a window.
    #[default]
    OnWindowUpdate,
    /// Each window once, its final result, when it closes (`end + grace <= st`).
    OnWindowClose,
}

/// A per-key (windowed) aggregation as a processor over one store.
trait WindowedAggregation<K, V, VA>: Send + 'static {
    /// Whether `update` reads the record's id (`record_id`); otherwise it gets none.
    const NEEDS_ID: bool = true;

    /// Whether `update` reads the record's typed key and value (see [`read_record`]);
    /// otherwise it gets none.
    fn reads_record(&self) -> bool;

    /// Updates the store for record (`k`, `key` bytes, `v`, timestamp `ts`, `id` from
    /// `record_id`, `headers`) at the task's stream time `task_time`; returns what to
    /// forward now.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        store: &mut dyn KeyValueStore,
        k: Option<&K>,
        key: &[u8],
        v: Option<V>,
        ts: i64,
        id: &[u8],
        headers: &Headers,
        task_time: i64,
    ) -> Result<Vec<Record>, ProcessError>;

    /// Writes and forwards what the aggregation held back (see [`crate::cache`]).
    fn flush(&mut self, _ctx: &mut ProcessorContext<'_>, _store: &str) -> Result<(), ProcessError> {
        Ok(())
    }

    /// Whether to flush after this record rather than at the commit.
    fn must_flush(&self, _ctx: &ProcessorContext<'_>) -> bool {
        false
    }

    /// Records (or window updates) dropped since the last call, if any.
    fn take_dropped(&mut self) -> Option<DroppedRecords>;
}

type Headers = Vec<(String, Option<Bytes>)>;

/// Runs a [`WindowedAggregation`] in a processor.
struct WindowedProcessor<K, W> {
    keys: SerdeRef<K>,
    store: String,
    agg: W,
}

macro_rules! windowed_processor {
    ($agg:ident) => {
        impl<K: Data, V: Data, VA: Data> Processor for WindowedProcessor<K, $agg<K, V, VA>> {
            fn process(
                &mut self,
                ctx: &mut ProcessorContext<'_>,
                mut r: Record,
            ) -> Result<(), ProcessError> {
                let Some(record) =
                    read_record::<K, V>(self.agg.reads_record(), &*self.keys, &mut r)?
                else {
                    ctx.record_dropped(DropReason::NullKey);
                    return Ok(());
                };
                let (k, v) = record.map_or((None, None), |(k, v)| (Some(k), Some(v)));
                let key: &[u8] = r.key.as_deref().unwrap_or_default();
                let id = if <$agg<K, V, VA> as WindowedAggregation<K, V, VA>>::NEEDS_ID {
                    crate::graph::record_id(ctx, r.timestamp)
                } else {
                    Vec::new()
                };
                let task_time = ctx.stream_time();
                let store = ctx.store(&self.store)?;
                let out = self.agg.update(
                    store,
                    k.as_ref(),
                    key,
                    v,
                    r.timestamp,
                    &id,
                    &r.headers,
                    task_time,
                )?;
                if let Some(dropped) = self.agg.take_dropped() {
                    ctx.add_dropped(dropped);
                }
                for mut o in out {
                    o.headers = r.headers.clone();
                    ctx.forward(o)?;
                }
                if self.agg.must_flush(ctx) {
                    self.agg.flush(ctx, &self.store)?;
                }
                Ok(())
            }

            fn flush(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
                self.agg.flush(ctx, &self.store)
            }
        }
    };
}

/// The key and value of an aggregation that reads its records (`reads_record`).
fn read<K, V>(k: Option<&K>, v: Option<V>) -> Result<(&K, V), ProcessError> {
    k.zip(v)
        .ok_or_else(|| ProcessError::Failed("internal: an aggregation without its record".into()))
}

/// The session store's key of a session (as `SessionStore` lays it out).
fn session_store_key(key: &[u8], end: i64, start: i64) -> Vec<u8> {
    let mut k = framed_key(key);
    k.extend_from_slice(&ts_bytes(end));
    k.extend_from_slice(&ts_bytes(start));
    k
}

fn change_record<VA: Data>(
    key: Bytes,
    new: Option<VA>,
    old: Option<VA>,
    ts: i64,
) -> Result<Record, ProcessError> {
    Ok(typed_record(Some(key), Change { new, old }, ts, Vec::new()))
}

/// Time-window aggregation state: the stream time seen, when old windows were purged, and
/// the record cache in front of the window store.
struct TimeAgg<K, V, VA> {
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
    dropped: DroppedRecords,
    /// The latest window start the store held when this processor started (`None` until its
    /// first record, when the store is scanned once). A cache miss for a later window that
    /// the cache never evicted is a new window: no store read. Only with the cache on, which
    /// means no other processor writes or reads the store.
    stored_max: Option<i64>,
}

/// The window start of a window store key.
fn window_start_of(store_key: &[u8]) -> Option<i64> {
    split_framed(store_key).and_then(|(_, rest)| ts_from(rest))
}

impl<K: Data, V: Data, VA: Data> WindowedAggregation<K, V, VA> for TimeAgg<K, V, VA> {
    const NEEDS_ID: bool = false;

    fn take_dropped(&mut self) -> Option<DroppedRecords> {
        (self.dropped.total() > 0).then(|| std::mem::take(&mut self.dropped))
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
        let all = self.windows.span_above(ts, i64::MIN).1;
        if all > n {
            self.dropped.add(DropReason::LateWindow, (all - n) as u64);
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

/// A grouped stream over time windows (`W` = [`TimeWindows`]) or sliding windows
/// ([`SlidingWindows`]), ready to aggregate.
pub struct WindowedKStream<K, V, W> {
    grouped: KGroupedStream<K, V>,
    windows: W,
    emit_on_close: bool,
}

/// A grouped stream over tumbling or hopping windows.
pub type TimeWindowedKStream<K, V> = WindowedKStream<K, V, TimeWindows>;
/// A grouped stream over sliding windows.
pub type SlidingWindowedKStream<K, V> = WindowedKStream<K, V, SlidingWindows>;

impl<K, V, W: std::fmt::Debug> std::fmt::Debug for WindowedKStream<K, V, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowedKStream")
            .field("windows", &self.windows)
            .finish()
    }
}

/// What differs between time and sliding windows: the aggregation that builds the table.
pub trait WindowAggregator:
    sealed::Sealed + Copy + std::fmt::Debug + Send + Sync + 'static
{
    /// Whether a window's end is in it (sliding windows) or just past it (time windows).
    #[doc(hidden)]
    const END_INCLUSIVE: bool;

    #[doc(hidden)]
    fn table<K: Data, V: Data, VA: Data>(
        self,
        grouped: &KGroupedStream<K, V>,
        step: Step<K, V, VA>,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, VA>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::TimeWindows {}
    impl Sealed for super::SlidingWindows {}
}

/// What every windowed aggregation builds: the processor over its store (`make(whether other
/// processors read the store)`), and the windowed table it produces.
fn windowed_table<K: Data, V: Data, VA: Data, W: 'static>(
    grouped: &KGroupedStream<K, V>,
    materialized: Materialized,
    kind: StoreKind,
    retention_ms: i64,
    grace_ms: i64,
    op: &str,
    make: impl Fn(bool) -> W + Send + Sync + 'static,
) -> KTable<Windowed<K>, VA>
where
    WindowedProcessor<K, W>: Processor,
{
    let (store, input) = grouped.prepare(&materialized, &format!("{op}-STATE-STORE"));
    let keys = Arc::clone(&input.keys);
    let st = store.clone();
    let shared = input.g.borrow_mut().read_elsewhere(&store);
    let supplier: ProcessorSupplier = Arc::new(move || {
        Box::new(WindowedProcessor {
            keys: Arc::clone(&keys),
            store: st.clone(),
            agg: make(shared.load(std::sync::atomic::Ordering::Relaxed)),
        }) as Box<dyn Processor>
    });
    let node = {
        let mut g = input.g.borrow_mut();
        // `retention_ms` is what the windows need, or the given retention if longer: a
        // shorter one is refused, as Kafka Streams refuses it.
        if let Some(given) = materialized.retention_ms.filter(|r| *r < retention_ms) {
            g.errors.push(format!(
                "the retention of store {store} ({given} ms) is shorter than its windows need \
                 ({retention_ms} ms: window size or gap, plus grace)"
            ));
        }
        let node = g.name(op);
        g.processor(&node, supplier, &[&input.node]);
        g.store(
            materialized.spec(store.clone(), Some(retention_ms)),
            kind,
            Arc::new(Arc::clone(&input.keys)),
            &[&node],
        );
        node
    };
    let wkeys: SerdeRef<Windowed<K>> = Arc::new(WindowedSerde::new(Arc::clone(&input.keys)));
    let mut t = KTable::from_parts(&input, node, wkeys, Some(store));
    t.grace_ms = Some(grace_ms);
    t
}

impl<K: Data, V: Data, W: WindowAggregator> WindowedKStream<K, V, W> {
    /// Emit every update (the default) or only final results when windows close.
    pub fn emit_strategy(mut self, strategy: EmitStrategy) -> Self {
        self.emit_on_close = strategy == EmitStrategy::OnWindowClose;
        self
    }

    pub fn count(&self) -> KTable<Windowed<K>, i64> {
        self.count_with(Materialized::default())
    }

    pub fn count_with(&self, materialized: Materialized) -> KTable<Windowed<K>, i64> {
        self.steps(Step::count(), materialized)
    }

    pub fn reduce(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
    ) -> KTable<Windowed<K>, V> {
        self.steps(reduce_step(reducer), Materialized::default())
    }

    pub fn aggregate<VA: Data>(
        &self,
        init: impl Fn() -> VA + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
    ) -> KTable<Windowed<K>, VA> {
        self.aggregate_with(init, aggregator, Materialized::default())
    }

    pub fn aggregate_with<VA: Data>(
        &self,
        init: impl Fn() -> VA + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, VA> {
        self.steps(
            Step::each(move |k, v, acc| aggregator(k, v, acc.unwrap_or_else(&init))),
            materialized,
        )
    }

    fn steps<VA: Data>(
        &self,
        step: Step<K, V, VA>,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, VA> {
        let table = self.windows.table(&self.grouped, step, materialized);
        if self.emit_on_close {
            // Each window once, when no record can update it any more: a sliding window
            // takes updates while `end >= st - grace` (its end is in it), a time window while
            // `end > st - grace`. (`suppress(until_window_closes)` keeps Kafka Streams' rule
            // of `end <= st - grace` for both.)
            let after_end_ms = i64::from(W::END_INCLUSIVE);
            table.suppress_closing(Suppressed::until_window_closes(), after_end_ms)
        } else {
            table
        }
    }
}

impl WindowAggregator for TimeWindows {
    const END_INCLUSIVE: bool = false;

    fn table<K: Data, V: Data, VA: Data>(
        self,
        grouped: &KGroupedStream<K, V>,
        step: Step<K, V, VA>,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, VA> {
        let retention_ms = self.retention_ms(materialized.retention_ms);
        let caching = materialized.caching;
        let blind = !step.reads_record();
        let table = windowed_table(
            grouped,
            materialized,
            StoreKind::Window,
            retention_ms,
            self.grace_ms,
            "KSTREAM-WINDOWED-AGGREGATE",
            move |read_elsewhere| {
                TimeAgg::new(self, retention_ms, step.clone(), caching && !read_elsewhere)
            },
        );
        if blind {
            table.g.borrow_mut().mark_blind(&table.node);
        }
        table
    }
}

impl TimeWindows {
    /// What a time-windowed store keeps: windows for size + grace, or `retention` if longer.
    pub(crate) fn retention_ms(&self, retention: Option<i64>) -> i64 {
        self.size_ms
            .saturating_add(self.grace_ms)
            .max(retention.unwrap_or(0))
    }

    pub(crate) fn grace_ms(&self) -> i64 {
        self.grace_ms
    }
}

impl<K: Data, V: Data, VA: Data> TimeAgg<K, V, VA> {
    fn new(windows: TimeWindows, retention_ms: i64, step: Step<K, V, VA>, caching: bool) -> Self {
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
            dropped: DroppedRecords::default(),
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
    })
}

/// Folds a session's aggregate into the merged aggregate so far (`None`: the first session,
/// where Kafka Streams starts from the initializer's value).
type Merger<K, VA> = Arc<dyn Fn(&K, Option<VA>, VA) -> VA + Send + Sync>;

/// The end of a session store key (`framed key | end | start`).
fn session_end_of(store_key: &[u8]) -> Option<i64> {
    split_framed(store_key).and_then(|(_, rest)| ts_from(rest.get(..8)?))
}

/// A key's sessions as the store holds them, in store order (end, then start), with their
/// aggregates.
type KeySessions<VA> = Vec<(i64, i64, VA)>;

/// Session aggregation state, and a read cache of each key's sessions (written through:
/// the store stays the truth, and every update is forwarded at once).
struct SessionAgg<K, V, VA> {
    windows: SessionWindows,
    /// How long a session stays in the store after its end (gap + grace, or longer).
    retention_ms: i64,
    /// Records dropped as late since the processor last counted them.
    dropped: DroppedRecords,
    step: Step<K, V, VA>,
    merger: Merger<K, VA>,
    observed: i64,
    last_purge: i64,
    expiry: ExpiryIndex,
    sessions: FastHashMap<Vec<u8>, KeySessions<VA>>,
    /// Sessions and keys in `sessions`, for its memory bound.
    cached: usize,
}

impl<K: Data, V: Data, VA: Data> SessionAgg<K, V, VA> {
    /// The earliest end of a live session: sessions ending before `observed - retention`
    /// have expired. (Kafka's in-memory session store also expires one ending exactly there
    /// — a session the processor has just accepted, as it closes at `observed - gap -
    /// grace` — and its RocksDB store keeps whole segments longer: rill keeps what the
    /// processor accepts.)
    fn live_from(&self) -> i64 {
        let SessionWindows { gap_ms, grace_ms } = self.windows;
        kept_from(self.observed, self.retention_ms, &[gap_ms, grace_ms]).saturating_sub(1)
    }

    /// Reads `key`'s sessions from the store, the first time.
    fn load(&mut self, store: &mut dyn KeyValueStore, key: &[u8]) -> Result<(), ProcessError> {
        if !self.sessions.contains_key(key) {
            let stored = SessionStore::new(&mut *store).find_sessions(key, i64::MIN, i64::MAX)?;
            let list = stored
                .into_iter()
                .map(|(s, b)| Ok((s.end, s.start, decode_timestamped::<VA>(&b)?.0)))
                .collect::<Result<KeySessions<VA>, ProcessError>>()?;
            self.cached += list.len() + 1;
            self.sessions.insert(key.to_vec(), list);
        }
        Ok(())
    }
}

impl<K: Data, V: Data, VA: Data> WindowedAggregation<K, V, VA> for SessionAgg<K, V, VA> {
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
        _id: &[u8],
        _headers: &Headers,
        _task_time: i64,
    ) -> Result<Vec<Record>, ProcessError> {
        let (k, v) = read(k, v)?;
        let SessionWindows { gap_ms, grace_ms } = self.windows;
        // Kafka Streams' rules: a session is live while its end is above `observed -
        // retention` — stream time before this record, as the store has seen it — and a
        // record is late when the session it would land in (after merging) ends before
        // `observed - grace - gap`, this record's time included.
        let live_from = self.live_from();
        self.observed = self.observed.max(ts);
        let close = self
            .observed
            .saturating_sub(grace_ms)
            .saturating_sub(gap_ms);
        self.load(store, key)?;
        let (step, merger) = (&self.step, &self.merger);
        let list = self
            .sessions
            .get_mut(key)
            .ok_or_else(|| ProcessError::Failed("session cache lost a key".into()))?;
        // Sessions the store has expired since the cache read them.
        let before = list.len();
        list.retain(|(e, _, _)| *e >= live_from);
        let (from, to) = (ts.saturating_sub(gap_ms), ts.saturating_add(gap_ms));
        let overlaps = |(end, start, _): &(i64, i64, VA)| *end >= from && *start <= to;
        let (start, end) = list
            .iter()
            .filter(|s| overlaps(s))
            .fold((ts, ts), |(lo, hi), s| (lo.min(s.1), hi.max(s.0)));
        if end < close {
            self.cached = (self.cached + list.len()).saturating_sub(before);
            self.dropped.add(DropReason::LateSession, 1);
            return Ok(Vec::new()); // the merged session closed: too late
        }
        let mut ss = SessionStore::new(&mut *store);
        let mut out = Vec::new();
        // Kafka Streams starts from the initializer's aggregate and merges every session the
        // record joins into it, in store order (end, then start).
        let mut acc: Option<VA> = None;
        let mut kept = Vec::with_capacity(list.len());
        // A record inside a session of one instant `[ts, ts]` updates it in place; any
        // other merge removes every session it joins and forwards a tombstone for each,
        // one with the merged bounds included.
        let in_place = start == ts && end == ts;
        for s in list.drain(..) {
            if !overlaps(&s) {
                kept.push(s);
                continue;
            }
            let (s_end, s_start, val) = s;
            let session = Session {
                key: key.to_vec(),
                start: s_start,
                end: s_end,
            };
            ss.remove(&session)?;
            if !in_place {
                out.push(change_record(
                    windowed_key(key, s_start, s_end),
                    None,
                    Some(val.clone()),
                    s_end,
                )?);
            }
            acc = Some(merger(k, acc, val));
        }
        let new = step.bind(Some((k, Value::Owned(v))))?.apply(acc);
        let session = Session {
            key: key.to_vec(),
            start,
            end,
        };
        // Every session of the key overlapping the record (one with these very bounds
        // would) was removed above: the store has none under this key. (The session list is
        // the store's, this being its only writer.)
        ss.put_new(&session, timestamped_bytes(&new, end)?)?;
        let at = kept.partition_point(|(e, s, _)| (*e, *s) < (end, start));
        kept.insert(at, (end, start, new.clone()));
        let after = kept.len();
        *list = kept;
        self.cached = (self.cached + after).saturating_sub(before);
        self.expiry
            .insert(end, InlineKey::new(&session_store_key(key, end, start)));
        // As Kafka Streams with caching off: the new session carries no old value.
        out.push(change_record(
            windowed_key(key, start, end),
            Some(new),
            None,
            end,
        )?);
        // What the store holds is what interactive queries see: the live sessions only.
        let live_from = self.live_from();
        if self.expiry.due(live_from) {
            self.expiry.purge(store, live_from, session_end_of)?;
        }
        if self.observed.saturating_sub(self.last_purge) >= (self.retention_ms / 10).max(1) {
            self.sessions.retain(|_, list| {
                list.retain(|(e, _, _)| *e >= live_from);
                !list.is_empty()
            });
            self.cached = self.sessions.values().map(|l| l.len() + 1).sum();
            self.last_purge = self.observed;
        }
        Ok(out)
    }

    fn take_dropped(&mut self) -> Option<DroppedRecords> {
        (self.dropped.total() > 0).then(|| std::mem::take(&mut self.dropped))
    }

    /// Past its share of memory, the cache starts over (it holds no pending writes).
    fn flush(&mut self, ctx: &mut ProcessorContext<'_>, _store: &str) -> Result<(), ProcessError> {
        let per_session = std::mem::size_of::<(i64, i64, VA)>() + 48;
        if self.cached * per_session > ctx.cache_max_bytes() {
            self.sessions.clear();
            self.cached = 0;
        }
        Ok(())
    }
}

windowed_processor!(SessionAgg);

/// A grouped stream over session windows.
pub struct SessionWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SessionWindows,
}

impl<K, V> std::fmt::Debug for SessionWindowedKStream<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionWindowedKStream")
            .field("windows", &self.windows)
            .finish()
    }
}

impl<K: Data, V: Data> SessionWindowedKStream<K, V> {
    pub fn count(&self) -> KTable<Windowed<K>, i64> {
        self.count_with(Materialized::default())
    }

    pub fn count_with(&self, materialized: Materialized) -> KTable<Windowed<K>, i64> {
        self.steps(
            Step::each(|_, _, n: Option<i64>| n.unwrap_or(0) + 1),
            Arc::new(|_, a: Option<i64>, b| a.unwrap_or(0) + b),
            materialized,
        )
    }

    pub fn reduce(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
    ) -> KTable<Windowed<K>, V> {
        let reducer = Arc::new(reducer);
        let r2 = Arc::clone(&reducer);
        // Kafka Streams' reduce merges with its reducer, the first session as it is.
        self.steps(
            reduce_step(move |a, b| reducer(a, b)),
            Arc::new(move |_, a, b| match a {
                None => b,
                Some(a) => r2(a, b),
            }),
            Materialized::default(),
        )
    }

    /// `merger` combines the aggregates of two sessions a record joins together.
    pub fn aggregate<VA: Data>(
        &self,
        init: impl Fn() -> VA + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
        merger: impl Fn(&K, VA, VA) -> VA + Send + Sync + 'static,
    ) -> KTable<Windowed<K>, VA> {
        self.aggregate_with(init, aggregator, merger, Materialized::default())
    }

    pub fn aggregate_with<VA: Data>(
        &self,
        init: impl Fn() -> VA + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
        merger: impl Fn(&K, VA, VA) -> VA + Send + Sync + 'static,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, VA> {
        let init = Arc::new(init);
        let init2 = Arc::clone(&init);
        self.steps(
            Step::each(move |k, v, acc| aggregator(k, v, acc.unwrap_or_else(&*init))),
            Arc::new(move |k, a, b| merger(k, a.unwrap_or_else(&*init2), b)),
            materialized,
        )
    }

    fn steps<VA: Data>(
        &self,
        step: Step<K, V, VA>,
        merger: Merger<K, VA>,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, VA> {
        let w = self.windows;
        let retention_ms = w
            .gap_ms
            .saturating_add(w.grace_ms)
            .max(materialized.retention_ms.unwrap_or(0));
        windowed_table(
            &self.grouped,
            materialized,
            StoreKind::Session,
            retention_ms,
            // A session can still grow until stream time passes its end by the gap: that
            // is when it closes for `suppress` (as in Kafka Streams).
            w.gap_ms.saturating_add(w.grace_ms),
            "KSTREAM-SESSION-AGGREGATE",
            move |_| SessionAgg {
                windows: w,
                retention_ms,
                dropped: DroppedRecords::default(),
                step: step.clone(),
                merger: Arc::clone(&merger),
                observed: i64::MIN,
                last_purge: i64::MIN / 2,
                expiry: ExpiryIndex::default(),
                sessions: FastHashMap::default(),
                cached: 0,
            },
        )
    }
}

/// Sliding-window aggregation: keeps the records of the open windows (in a second area of
/// the store) and recomputes each window a record changes.
struct SlidingAgg<K, V, VA> {
    windows: SlidingWindows,
    retention_ms: i64,
    /// Records dropped as late since the processor last counted them.
    dropped: DroppedRecords,
    step: Step<K, V, VA>,
    observed: i64,
    last_purge: i64,
    _k: std::marker::PhantomData<fn() -> (K, V)>,
}

/// Store areas of a sliding aggregation: windows (as a window store) and buffered records.
const SLIDING_WINDOWS: u8 = b'W';
const SLIDING_RECORDS: u8 = b'R';

/// A sub-store under a one-byte prefix.
#[derive(Debug)]
struct Area<'a> {
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
    fn take_dropped(&mut self) -> Option<DroppedRecords> {
        (self.dropped.total() > 0).then(|| std::mem::take(&mut self.dropped))
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
                        crate::serdes::hop::decode(&b).map_err(crate::graph::internal)?,
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
        // The record's own right window is new if it holds a later record and was not a
        // window already.
        if let Some(right) = ts.checked_add(1) {
            if has_record_in(right, right.saturating_add(d))
                && windows.fetch_one(key, right)?.is_none()
            {
                starts.push(right);
            }
        }
        let mut out = Vec::new();
        for start in starts {
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
            let old = windows
                .fetch_one(key, start)?
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

impl WindowAggregator for SlidingWindows {
    const END_INCLUSIVE: bool = true;

    fn table<K: Data, V: Data, VA: Data>(
        self,
        grouped: &KGroupedStream<K, V>,
        step: Step<K, V, VA>,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, VA> {
        let w = self;
        // A sliding window is recomputed from the records it keeps: the step gets them.
        let step = step.reading_record();
        let retention_ms = w
            .time_difference_ms
            .saturating_add(w.grace_ms)
            .saturating_add(1)
            .max(materialized.retention_ms.unwrap_or(0));
        windowed_table(
            grouped,
            materialized,
            StoreKind::Internal,
            retention_ms,
            w.grace_ms,
            "KSTREAM-SLIDING-AGGREGATE",
            move |_| SlidingAgg {
                windows: w,
                retention_ms,
                dropped: DroppedRecords::default(),
                step: step.clone(),
                observed: i64::MIN,
                last_purge: i64::MIN / 2,
                _k: std::marker::PhantomData,
            },
        )
    }
}

/// What `suppress` holds back (Kafka Streams' `Suppressed`); the buffer is logged to a
/// changelog like any store, and unbounded unless a [`BufferConfig`] bounds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    limit: SuppressUntil,
    name: Option<String>,
    buffer: BufferConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SuppressUntil {
    WindowCloses,
    TimeLimit(i64),
}

/// How much a suppression buffer may hold, and what happens when it is full (Kafka Streams'
/// `BufferConfig`): emit the oldest entries early, or stop the application with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferConfig {
    max_records: Option<u64>,
    max_bytes: Option<u64>,
    emit_early: bool,
}

impl BufferConfig {
    /// No bound (the default).
    pub fn unbounded() -> Self {
        BufferConfig {
            max_records: None,
            max_bytes: None,
            emit_early: false,
        }
    }

    /// At most `n` keys buffered; when full, the oldest are emitted early.
    pub fn max_records(n: u64) -> Self {
        BufferConfig {
            max_records: Some(n),
            max_bytes: None,
            emit_early: true,
        }
    }

    /// At most `n` bytes of keys and values buffered; when full, the oldest are emitted
    /// early.
    pub fn max_bytes(n: u64) -> Self {
        BufferConfig {
            max_records: None,
            max_bytes: Some(n),
            emit_early: true,
        }
    }

    /// Adds a record bound to a byte bound (or the reverse).
    pub fn with_max_records(mut self, n: u64) -> Self {
        self.max_records = Some(n);
        self
    }

    pub fn with_max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = Some(n);
        self
    }

    /// When full, emit the oldest entries before their time (not allowed with
    /// `until_window_closes`, whose results must be final).
    pub fn emit_early_when_full(mut self) -> Self {
        self.emit_early = true;
        self
    }

    /// When full, fail the stream thread (the application stops with an error).
    pub fn shut_down_when_full(mut self) -> Self {
        self.emit_early = false;
        self
    }

    fn full(&self, records: u64, bytes: u64) -> bool {
        self.max_records.is_some_and(|m| records > m) || self.max_bytes.is_some_and(|m| bytes > m)
    }
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig::unbounded()
    }
}

impl Suppressed {
    /// Each window's final result, once, when `window end + grace <= stream time`.
    pub fn until_window_closes() -> Self {
        Suppressed {
            limit: SuppressUntil::WindowCloses,
            name: None,
            buffer: BufferConfig::unbounded(),
        }
    }

    /// A key's latest value once stream time has passed its last update by `limit` (rate
    /// limiting).
    pub fn until_time_limit(limit: Duration) -> Self {
        Suppressed {
            limit: SuppressUntil::TimeLimit(millis(limit)),
            name: None,
            buffer: BufferConfig::unbounded(),
        }
    }

    /// Names the buffer's store (and so its changelog).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Bounds the buffer.
    pub fn with_buffer(mut self, buffer: BufferConfig) -> Self {
        self.buffer = buffer;
        self
    }
}

/// Holds a table's updates in a time-ordered buffer: `T | time | key -> timestamp | change`
/// and `K | key -> time`, and emits those whose time has come (or, past the buffer's bound,
/// the oldest).
struct Suppress {
    store: String,
    /// Window close (grace from the window end) or time limit (from the key's first buffered
    /// update).
    windowed: bool,
    /// Final results only: a deletion that comes due is dropped, not forwarded (Kafka
    /// Streams' `safeToDropTombstones` for `untilWindowCloses`).
    final_results: bool,
    wait_ms: i64,
    observed: i64,
    buffer: BufferConfig,
    /// No entry is due before this time (`None`: unknown, after a start).
    earliest: Option<i64>,
    /// Keys and bytes buffered (`None`: not counted yet, after a start).
    held: Option<(u64, u64)>,
}

fn buffer_key(time: i64, key: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(9 + key.len());
    b.push(b'T');
    b.extend_from_slice(&ts_bytes(time));
    b.extend_from_slice(key);
    b
}

fn index_key(key: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(1 + key.len());
    b.push(b'K');
    b.extend_from_slice(key);
    b
}

impl Suppress {
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
            let ts = v
                .get(..8)
                .and_then(|t| t.try_into().ok())
                .map(i64::from_be_bytes)
                .ok_or_else(|| ProcessError::Failed("suppress buffer: short entry".into()))?;
            let change = &v[8..];
            if final_results && crate::graph::is_deletion(change) {
                continue;
            }
            out.push(Record {
                key: Some(Bytes::from(k)),
                value: Some(Bytes::copy_from_slice(change)),
                timestamp: ts,
                headers: Vec::new(),
                typed: None,
            });
        }
        for o in out {
            ctx.forward(o)?;
        }
        Ok(())
    }
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
        let mut v = r.timestamp.to_be_bytes().to_vec();
        v.extend_from_slice(&value);
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

impl<K: Data, V: Data> KTable<K, V> {
    /// Holds updates back: until windows close (windowed tables only), or for a time limit.
    pub fn suppress(&self, suppressed: Suppressed) -> KTable<K, V> {
        self.suppress_closing(suppressed, 0)
    }

    /// [`KTable::suppress`], a window closing `after_end_ms` past its end + grace
    /// (`EmitStrategy::OnWindowClose` over sliding windows, whose ends are inclusive: 1).
    fn suppress_closing(&self, suppressed: Suppressed, after_end_ms: i64) -> KTable<K, V> {
        if suppressed.limit == SuppressUntil::WindowCloses && suppressed.buffer.emit_early {
            self.g.borrow_mut().errors.push(format!(
                "suppress(until_window_closes) after {}: a full buffer cannot emit early (its \
                 results are final); use BufferConfig::shut_down_when_full",
                self.node
            ));
        }
        let buffer = suppressed.buffer;
        let (windowed, wait_ms) = match (suppressed.limit, self.grace_ms) {
            (SuppressUntil::WindowCloses, Some(grace)) => {
                (true, grace.saturating_add(after_end_ms))
            }
            (SuppressUntil::WindowCloses, None) => {
                self.g.borrow_mut().errors.push(format!(
                    "suppress(until_window_closes) after {}: the table is not windowed",
                    self.node
                ));
                (true, 0)
            }
            (SuppressUntil::TimeLimit(ms), _) => (false, ms),
        };
        let mut g = self.g.borrow_mut();
        let store = suppressed
            .name
            .clone()
            .unwrap_or_else(|| g.name("KTABLE-SUPPRESS-STATE-STORE"));
        let node = g.name("KTABLE-SUPPRESS");
        let st = store.clone();
        let supplier: ProcessorSupplier = Arc::new(move || {
            Box::new(Suppress {
                store: st.clone(),
                windowed,
                final_results: windowed,
                wait_ms,
                observed: i64::MIN,
                buffer,
                earliest: None,
                held: None,
            }) as Box<dyn Processor>
        });
        g.processor(&node, supplier, &[&self.node]);
        g.store(
            Materialized::default().spec(store, None),
            StoreKind::Internal,
            Arc::new(()),
            &[&node],
        );
        drop(g);
        let mut t = self.clone();
        t.node = node;
        t.store = None;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The starts of the windows holding `ts`, by trying every multiple of `advance`.
    fn naive(size: i64, advance: i64, ts: i64) -> Vec<i64> {
        (0..=ts.max(0))
            .filter(|s| s % advance == 0 && *s <= ts && ts < s + size)
            .collect()
    }

    #[test]
    fn window_starts_are_every_aligned_window_holding_the_timestamp() {
        for size in 1..25 {
            for advance in 1..=size {
                let w = TimeWindows::of_size_no_grace(Duration::from_millis(size as u64))
                    .advance_by(Duration::from_millis(advance as u64));
                for ts in -3..120 {
                    let got: Vec<i64> = w.starts(ts).collect();
                    assert_eq!(
                        got,
                        naive(size, advance, ts),
                        "size {size} advance {advance} ts {ts}"
                    );
                    for floor in [i64::MIN, -5, 0, ts - size, ts - 3, ts, ts + 2] {
                        let got: Vec<i64> = w.starts_above(ts, floor).collect();
                        let want: Vec<i64> = naive(size, advance, ts)
                            .into_iter()
                            .filter(|s| *s > floor)
                            .collect();
                        assert_eq!(got, want, "size {size} advance {advance} ts {ts} > {floor}");
                    }
                }
            }
        }
    }
}
