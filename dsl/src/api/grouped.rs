//! Grouped streams and tables: `count`, `reduce` and `aggregate` into a [`KTable`] kept in a
//! logged store, and the way to windowed aggregations (`windowed_by`).
//! Cogroups aggregate several grouped streams into one table.

use std::sync::Arc;

use rill_core::processor::Processor;

use rill_core::topology::ProcessorSupplier;

use crate::api::{KStream, KTable, Windowing};
use crate::graph::StoreKind;
use crate::ops::aggregate::{reduce_step, Step, StreamAggregate, TableAggregate, TableStep};
use crate::ops::cache::{same_key, RecordCache};
use crate::ops::records::Change;
use crate::ops::time_window::uncached_time_aggregation;

use crate::options::{Grouped, Materialized, TimeWindows};
use crate::serdes::{Data, SerdeRef, Windowed, WindowedSerde};

/// A stream grouped by key, ready to aggregate.
pub struct KGroupedStream<K, V> {
    pub(crate) stream: KStream<K, V>,
    pub(crate) grouped: Grouped,
}

impl<K, V> std::fmt::Debug for KGroupedStream<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KGroupedStream")
            .field("node", &self.stream.node)
            .finish()
    }
}

impl<K: Data, V: Data> KGroupedStream<K, V> {
    pub(crate) fn new(stream: KStream<K, V>, grouped: Grouped) -> Self {
        KGroupedStream { stream, grouped }
    }

    /// The store's name (given or generated) and the stream to aggregate: repartitioned
    /// first if the key changed, through `<application.id>-<grouping or store name>-repartition`.
    pub(crate) fn prepare(&self, materialized: &Materialized, op: &str) -> (String, KStream<K, V>) {
        let store = materialized
            .name
            .clone()
            .unwrap_or_else(|| self.stream.g.borrow_mut().name(op));
        let repartition = self.grouped.name.clone().unwrap_or_else(|| store.clone());
        (store, self.stream.partitioned(Some(repartition)))
    }

    /// Records per key (Kafka Streams' `count`: `i64`).
    pub fn count(&self) -> KTable<K, i64> {
        self.count_with(Materialized::default())
    }

    pub fn count_with(&self, materialized: Materialized) -> KTable<K, i64> {
        self.aggregate_steps(Step::count(), materialized)
    }

    /// Combines the values of each key: the first value as it is, then `reducer(aggregate,
    /// value)`.
    pub fn reduce(&self, reducer: impl Fn(V, V) -> V + Send + Sync + 'static) -> KTable<K, V> {
        self.reduce_with(reducer, Materialized::default())
    }

    pub fn reduce_with(
        &self,
        reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
        materialized: Materialized,
    ) -> KTable<K, V> {
        self.aggregate_steps(reduce_step(reducer), materialized)
    }

    /// Folds each key's values into an aggregate, starting from `init()`.
    pub fn aggregate<VA: Data>(
        &self,
        init: impl Fn() -> VA + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
    ) -> KTable<K, VA> {
        self.aggregate_with(init, aggregator, Materialized::default())
    }

    pub fn aggregate_with<VA: Data>(
        &self,
        init: impl Fn() -> VA + Send + Sync + 'static,
        aggregator: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
        materialized: Materialized,
    ) -> KTable<K, VA> {
        self.aggregate_steps(
            Step::each(move |k, v, acc| aggregator(k, v, acc.unwrap_or_else(&init))),
            materialized,
        )
    }

    fn aggregate_steps<VA: Data>(
        &self,
        step: Step<K, V, VA>,
        materialized: Materialized,
    ) -> KTable<K, VA> {
        let caching = materialized.caching;
        let blind = !step.reads_record();
        let table = self.aggregate_node(
            materialized,
            ("KSTREAM-AGGREGATE-STATE-STORE", "KSTREAM-AGGREGATE"),
            move |keys, store, read_elsewhere| {
                Box::new(StreamAggregate {
                    keys,
                    store,
                    step: step.clone(),
                    cache: RecordCache::new(caching && !read_elsewhere, same_key()),
                })
            },
        );
        if blind {
            table.g.borrow_mut().mark_blind(&table.node);
        }
        table
    }

    /// The aggregating processor `make(keys, store, whether other processors read the
    /// store)` over its key-value store, after a repartition if the key changed; `(store
    /// op, node op)` name what is generated.
    pub(crate) fn aggregate_node<VA: Data>(
        &self,
        materialized: Materialized,
        (store_op, node_op): (&str, &str),
        make: impl Fn(SerdeRef<K>, String, bool) -> Box<dyn Processor> + Send + Sync + 'static,
    ) -> KTable<K, VA> {
        let (store, input) = self.prepare(&materialized, store_op);
        let keys = Arc::clone(&input.keys);
        let st = store.clone();
        let shared = input.g.borrow_mut().read_elsewhere(&store);
        let supplier: ProcessorSupplier = Arc::new(move || {
            let read_elsewhere = shared.load(std::sync::atomic::Ordering::Relaxed);
            make(Arc::clone(&keys), st.clone(), read_elsewhere)
        });
        let node = {
            let mut g = input.g.borrow_mut();
            let node = g.name(node_op);
            g.processor(&node, supplier, &[&input.node]);
            g.store(
                materialized.spec(store.clone(), None),
                StoreKind::KeyValue,
                Arc::new(Arc::clone(&input.keys)),
                &[&node],
            );
            node
        };
        KTable::from_parts(&input, node, Arc::clone(&input.keys), Some(store))
    }

    /// Windowed aggregation: by [`crate::TimeWindows`], [`crate::SessionWindows`] or
    /// [`crate::SlidingWindows`].
    pub fn windowed_by<W: Windowing>(&self, windows: W) -> W::Stream<K, V> {
        if let Some(why) = windows.invalid() {
            self.stream.g.borrow_mut().errors.push(why);
        }
        windows.over(KGroupedStream {
            stream: self.stream.clone(),
            grouped: self.grouped.clone(),
        })
    }
}

/// A table grouped by a new key, ready to aggregate with an adder and a subtractor.
pub struct KGroupedTable<K, V> {
    pub(crate) stream: KStream<K, Change<V>>,
    pub(crate) grouped: Grouped,
}

impl<K, V> std::fmt::Debug for KGroupedTable<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KGroupedTable")
            .field("node", &self.stream.node)
            .finish()
    }
}

impl<K: Data, V: Data> KGroupedTable<K, V> {
    /// Rows per key: +1 for a row that maps here, -1 when it leaves or changes key.
    pub fn count(&self) -> KTable<K, i64> {
        self.count_with(Materialized::default())
    }

    pub fn count_with(&self, materialized: Materialized) -> KTable<K, i64> {
        self.aggregate_with(|| 0, |_, _, n| n + 1, |_, _, n| n - 1, materialized)
    }

    /// `adder(aggregate, new value)` and `subtractor(aggregate, old value)`; a key's first
    /// value is its aggregate.
    pub fn reduce(
        &self,
        adder: impl Fn(V, V) -> V + Send + Sync + 'static,
        subtractor: impl Fn(V, V) -> V + Send + Sync + 'static,
    ) -> KTable<K, V> {
        self.aggregate_steps(
            Arc::new(move |_, change: Change<V>, acc| {
                let acc = match (acc, change.old) {
                    (Some(a), Some(o)) => Some(subtractor(a, o)),
                    (acc, _) => acc,
                };
                match (acc, change.new) {
                    (Some(a), Some(n)) => Some(adder(a, n)),
                    (None, Some(n)) => Some(n),
                    (acc, None) => acc,
                }
            }),
            Materialized::default(),
        )
    }

    /// Folds rows into an aggregate per key: `adder` for a row's new value, `subtractor` for
    /// the value it had (called first when a row changes).
    pub fn aggregate<VA: Data>(
        &self,
        init: impl Fn() -> VA + Send + Sync + 'static,
        adder: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
        subtractor: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
    ) -> KTable<K, VA> {
        self.aggregate_with(init, adder, subtractor, Materialized::default())
    }

    pub fn aggregate_with<VA: Data>(
        &self,
        init: impl Fn() -> VA + Send + Sync + 'static,
        adder: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
        subtractor: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
        materialized: Materialized,
    ) -> KTable<K, VA> {
        self.aggregate_steps(
            Arc::new(move |k, change: Change<V>, acc| {
                let mut acc = acc.unwrap_or_else(&init);
                if let Some(o) = change.old {
                    acc = subtractor(k, o, acc);
                }
                if let Some(n) = change.new {
                    acc = adder(k, n, acc);
                }
                Some(acc)
            }),
            materialized,
        )
    }

    fn aggregate_steps<VA: Data>(
        &self,
        step: TableStep<K, V, VA>,
        materialized: Materialized,
    ) -> KTable<K, VA> {
        let grouped = KGroupedStream {
            stream: self.stream.clone(),
            grouped: self.grouped.clone(),
        };
        grouped.aggregate_node(
            materialized,
            ("KTABLE-AGGREGATE-STATE-STORE", "KTABLE-AGGREGATE"),
            move |keys, store, _| {
                Box::new(TableAggregate {
                    keys,
                    store,
                    step: Arc::clone(&step),
                })
            },
        )
    }
}

/// Adds one input of a cogroup: given the store, the initializer, the input's index and the
/// windows (with the store's retention), if windowed, its aggregating processor; returns the
/// processor's name and the input's source topics.
pub(crate) type CogroupInput<VA> = Box<
    dyn FnOnce(
        &str,
        Arc<dyn Fn() -> VA + Send + Sync>,
        usize,
        Option<(TimeWindows, i64)>,
    ) -> (String, Vec<String>),
>;

/// Several grouped streams (of one key type, any value types) folded into one aggregate per
/// key, each with its own aggregator (Kafka Streams' `cogroup`, KIP-150).
pub struct CogroupedKStream<K, VA> {
    g: crate::graph::Shared,
    keys: SerdeRef<K>,
    inputs: Vec<CogroupInput<VA>>,
}

impl<K, VA> std::fmt::Debug for CogroupedKStream<K, VA> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CogroupedKStream")
            .field("inputs", &self.inputs.len())
            .finish()
    }
}

pub(crate) fn cogroup_input<K: Data, V: Data, VA: Data>(
    grouped: &KGroupedStream<K, V>,
    aggregator: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
) -> CogroupInput<VA> {
    let stream = grouped.stream.clone();
    let name = grouped.grouped.name.clone();
    Box::new(move |store: &str, init, i, windows| {
        let input = stream.partitioned(Some(name.unwrap_or_else(|| format!("{store}-{i}"))));
        let step: Step<K, V, VA> =
            Step::each(move |k, v, acc| aggregator(k, v, acc.unwrap_or_else(|| init())));
        let keys = Arc::clone(&input.keys);
        let st = store.to_string();
        // Every input's processor writes the one store: no cache may hold a copy.
        let supplier: ProcessorSupplier = Arc::new(move || match windows {
            Some((w, retention_ms)) => uncached_time_aggregation(
                Arc::clone(&keys),
                st.clone(),
                w,
                retention_ms,
                step.clone(),
            ),
            None => Box::new(StreamAggregate {
                keys: Arc::clone(&keys),
                store: st.clone(),
                step: step.clone(),
                cache: RecordCache::new(false, same_key()),
            }),
        });
        let mut g = input.g.borrow_mut();
        let node = g.name("COGROUPKSTREAM-AGGREGATE");
        g.processor(&node, supplier, &[&input.node]);
        (node, input.sources.clone())
    })
}

impl<K: Data, V: Data> KGroupedStream<K, V> {
    /// Starts a cogroup with this stream, folded into the aggregate by `aggregator`.
    pub fn cogroup<VA: Data>(
        &self,
        aggregator: impl Fn(&K, V, VA) -> VA + Send + Sync + 'static,
    ) -> CogroupedKStream<K, VA> {
        CogroupedKStream {
            g: crate::graph::Shared::clone(&self.stream.g),
            keys: Arc::clone(&self.stream.keys),
            inputs: vec![cogroup_input(self, aggregator)],
        }
    }
}

impl<K: Data, VA: Data> CogroupedKStream<K, VA> {
    /// Adds another grouped stream (same key type) with its own aggregator.
    pub fn cogroup<V2: Data>(
        mut self,
        other: &KGroupedStream<K, V2>,
        aggregator: impl Fn(&K, V2, VA) -> VA + Send + Sync + 'static,
    ) -> Self {
        self.inputs.push(cogroup_input(other, aggregator));
        self
    }

    /// The aggregate per key over every input, starting from `init()`.
    pub fn aggregate(self, init: impl Fn() -> VA + Send + Sync + 'static) -> KTable<K, VA> {
        self.aggregate_with(init, Materialized::default())
    }

    pub fn aggregate_with(
        self,
        init: impl Fn() -> VA + Send + Sync + 'static,
        materialized: Materialized,
    ) -> KTable<K, VA> {
        let (g, keys) = (crate::graph::Shared::clone(&self.g), Arc::clone(&self.keys));
        let (node, sources, store) = self.build(Arc::new(init), materialized, None);
        KTable {
            g,
            node,
            keys,
            sources,
            store: Some(store),
            grace_ms: None,
            old_values: None,
            _v: std::marker::PhantomData,
        }
    }

    /// Aggregates over time windows (tumbling or hopping) instead.
    pub fn windowed_by(self, windows: TimeWindows) -> TimeWindowedCogroupedKStream<K, VA> {
        if let Some(why) = windows.invalid() {
            self.g.borrow_mut().errors.push(why);
        }
        TimeWindowedCogroupedKStream {
            cogrouped: self,
            windows,
        }
    }

    /// The input processors writing one store (windowed with `windows`), and a node merging
    /// their output: (that node, the source topics, the store).
    fn build(
        self,
        init: Arc<dyn Fn() -> VA + Send + Sync>,
        materialized: Materialized,
        windows: Option<TimeWindows>,
    ) -> (String, Vec<String>, String) {
        let store = materialized.name.clone().unwrap_or_else(|| {
            self.g
                .borrow_mut()
                .name("COGROUPKSTREAM-AGGREGATE-STATE-STORE")
        });
        let retention = windows.map(|w| (w, w.retention_ms(materialized.retention_ms)));
        let mut nodes = Vec::new();
        let mut sources = Vec::new();
        for (i, add) in self.inputs.into_iter().enumerate() {
            let (node, s) = add(&store, Arc::clone(&init), i, retention);
            nodes.push(node);
            sources.extend(s);
        }
        let mut g = self.g.borrow_mut();
        let first: Vec<&str> = nodes.iter().take(1).map(String::as_str).collect();
        let (kind, retention_ms) = match retention {
            Some((_, ms)) => (StoreKind::Window, Some(ms)),
            None => (StoreKind::KeyValue, None),
        };
        g.store(
            materialized.spec(store.clone(), retention_ms),
            kind,
            Arc::new(Arc::clone(&self.keys)),
            &first,
        );
        for n in nodes.iter().skip(1) {
            g.connect_store(&store, n);
        }
        let merge = g.name("COGROUPKSTREAM-MERGE");
        let parents: Vec<&str> = nodes.iter().map(String::as_str).collect();
        let pass: crate::ops::records::StatelessFn = Arc::new(|ctx, r| ctx.forward(r));
        g.stateless(&merge, pass, &parents);
        g.copartition(&sources);
        (merge, sources, store)
    }
}

/// A cogroup over time windows, ready to aggregate.
pub struct TimeWindowedCogroupedKStream<K, VA> {
    cogrouped: CogroupedKStream<K, VA>,
    windows: TimeWindows,
}

impl<K, VA> std::fmt::Debug for TimeWindowedCogroupedKStream<K, VA> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimeWindowedCogroupedKStream")
            .field("windows", &self.windows)
            .finish()
    }
}

impl<K: Data, VA: Data> TimeWindowedCogroupedKStream<K, VA> {
    /// The aggregate per key and window over every input, starting from `init()`.
    pub fn aggregate(
        self,
        init: impl Fn() -> VA + Send + Sync + 'static,
    ) -> KTable<Windowed<K>, VA> {
        self.aggregate_with(init, Materialized::default())
    }

    pub fn aggregate_with(
        self,
        init: impl Fn() -> VA + Send + Sync + 'static,
        materialized: Materialized,
    ) -> KTable<Windowed<K>, VA> {
        let c = self.cogrouped;
        let g = crate::graph::Shared::clone(&c.g);
        let keys: SerdeRef<Windowed<K>> = Arc::new(WindowedSerde::new(Arc::clone(&c.keys)));
        let (node, sources, store) = c.build(Arc::new(init), materialized, Some(self.windows));
        KTable {
            g,
            node,
            keys,
            sources,
            store: Some(store),
            grace_ms: Some(self.windows.grace_ms()),
            old_values: None,
            _v: std::marker::PhantomData,
        }
    }
}
