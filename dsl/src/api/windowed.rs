//! Windowed grouped streams — time, sliding and session windows — and the aggregations
//! (`count`, `reduce`, `aggregate`) that build windowed tables over a window or session store.
//! The window rules are in `crate::options` (`TimeWindows`, ...); the processors in
//! `crate::ops` (`time_window`, `sliding_window`, `session_window`).

use std::sync::Arc;

use rill_core::processor::Processor;

use rill_core::topology::ProcessorSupplier;

use crate::api::{KGroupedStream, KTable};
use crate::graph::StoreKind;
use crate::ops::aggregate::{reduce_step, Step};
use crate::ops::records::RecordIds;
use crate::ops::session_window::{Merger, SessionAgg};
use crate::ops::sliding_window::SlidingAgg;
use crate::ops::time_window::TimeAgg;
use crate::ops::windowed::WindowedProcessor;
use crate::options::{
    EmitStrategy, Materialized, SessionWindows, SlidingWindows, Suppressed, TimeWindows,
};
use crate::serdes::{Data, SerdeRef, Windowed, WindowedSerde};

/// A kind of window a grouped stream can be windowed by.
pub trait Windowing {
    type Stream<K: Data, V: Data>;
    fn over<K: Data, V: Data>(self, grouped: KGroupedStream<K, V>) -> Self::Stream<K, V>;

    /// Why these windows cannot be used, if they cannot (Kafka Streams refuses them when
    /// they are made; `StreamsBuilder::build` reports it here).
    fn invalid(&self) -> Option<String>;
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

    fn invalid(&self) -> Option<String> {
        WindowAggregator::invalid(self)
    }
}

impl Windowing for SessionWindows {
    type Stream<K: Data, V: Data> = SessionWindowedKStream<K, V>;
    fn over<K: Data, V: Data>(self, grouped: KGroupedStream<K, V>) -> SessionWindowedKStream<K, V> {
        SessionWindowedKStream {
            grouped,
            windows: self,
            emit_on_close: false,
        }
    }

    fn invalid(&self) -> Option<String> {
        (self.gap_ms <= 0)
            .then(|| "session windows: the inactivity gap must be more than zero".into())
    }
}

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

    /// See [`Windowing::invalid`].
    #[doc(hidden)]
    fn invalid(&self) -> Option<String>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::TimeWindows {}
    impl Sealed for super::SlidingWindows {}
}

/// What every windowed aggregation builds: the processor over its store (`make(whether other
/// processors read the store)`), and the windowed table it produces.
pub(crate) fn windowed_table<K: Data, V: Data, VA: Data, W: 'static>(
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
            ids: RecordIds::default(),
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

    fn invalid(&self) -> Option<String> {
        self.invalid()
    }

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

/// A grouped stream over session windows.
pub struct SessionWindowedKStream<K, V> {
    grouped: KGroupedStream<K, V>,
    windows: SessionWindows,
    emit_on_close: bool,
}

impl<K, V> std::fmt::Debug for SessionWindowedKStream<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionWindowedKStream")
            .field("windows", &self.windows)
            .finish()
    }
}

impl<K: Data, V: Data> SessionWindowedKStream<K, V> {
    /// Emit every update of a session (the default), or each session once, when it closes:
    /// when stream time passes its end by more than gap + grace (Kafka Streams' session
    /// aggregation with `EmitStrategy.onWindowClose`).
    pub fn emit_strategy(mut self, strategy: EmitStrategy) -> Self {
        self.emit_on_close = strategy == EmitStrategy::OnWindowClose;
        self
    }

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
        let table = windowed_table(
            &self.grouped,
            materialized,
            StoreKind::Session,
            retention_ms,
            // A session can still grow until stream time passes its end by the gap: that
            // is when it closes for `suppress` (as in Kafka Streams).
            w.gap_ms.saturating_add(w.grace_ms),
            "KSTREAM-SESSION-AGGREGATE",
            move |_| SessionAgg::new(w, retention_ms, step.clone(), Arc::clone(&merger)),
        );
        if self.emit_on_close {
            // A record is late for a session once it ends before `st - grace - gap`: the
            // session is final then, one past `suppress`'s rule (its end is in it).
            table.suppress_closing(Suppressed::until_window_closes(), 1)
        } else {
            table
        }
    }
}

impl WindowAggregator for SlidingWindows {
    const END_INCLUSIVE: bool = true;

    fn invalid(&self) -> Option<String> {
        None // any time difference (a Duration) is one
    }

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
            move |_| SlidingAgg::new(w, retention_ms, step.clone()),
        )
    }
}
