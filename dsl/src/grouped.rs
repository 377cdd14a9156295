//! Grouped streams and tables: `count`, `reduce` and `aggregate` into a [`KTable`] kept in a
//! logged store, and the way to windowed aggregations (`windowed_by`).

use std::sync::Arc;

use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::state::InlineKey;
use rill_core::topology::ProcessorSupplier;

use crate::cache::{same_key, RecordCache};
use crate::graph::{
    get_timestamped, key_of, put_timestamped, take_value, value_of, with, Change, Materialized,
    StoreKind,
};
use crate::serdes::{Data, Serde, SerdeRef, Windowed, WindowedSerde};
use crate::stream::{Grouped, KStream};
use crate::table::KTable;
use crate::windows::{uncached_time_aggregation, TimeWindows, Windowing};

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

/// One aggregation step: `(key, value, aggregate so far or none) -> aggregate`, or a step
/// that reads neither the key nor the value (a count): for it the aggregating processor
/// does not deserialize the record again, and a hopping record's value is not copied for
/// each of its windows.
#[doc(hidden)]
pub enum Step<K, V, VA> {
    /// Reads the record: its value borrowed while other windows still need it.
    Each(EachFn<K, V, VA>),
    /// Reads only the aggregate.
    Blind(Arc<BlindDyn<VA>>),
}

/// A record's value as a step gets it: its own, or lent while other windows still need it.
#[doc(hidden)]
#[derive(Debug)]
pub enum Value<'a, V> {
    Owned(V),
    Lent(&'a V),
}

impl<V: Clone> Value<'_, V> {
    /// The value itself (a copy when lent).
    pub fn into_owned(self) -> V {
        match self {
            Value::Owned(v) => v,
            Value::Lent(v) => v.clone(),
        }
    }

    pub fn get(&self) -> &V {
        match self {
            Value::Owned(v) => v,
            Value::Lent(v) => v,
        }
    }
}

/// The function of a [`Step::Each`].
pub type EachFn<K, V, VA> = Arc<EachDyn<K, V, VA>>;
#[doc(hidden)]
pub type EachDyn<K, V, VA> = dyn Fn(&K, Value<'_, V>, Option<VA>) -> VA + Send + Sync;
/// The function of a [`Step::Blind`].
type BlindDyn<VA> = dyn Fn(Option<VA>) -> VA + Send + Sync;

impl<K, V, VA> std::fmt::Debug for Step<K, V, VA> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Each(_) => "Step::Each",
            Step::Blind(_) => "Step::Blind",
        })
    }
}

impl<K, V, VA> Clone for Step<K, V, VA> {
    fn clone(&self) -> Self {
        match self {
            Step::Each(f) => Step::Each(Arc::clone(f)),
            Step::Blind(f) => Step::Blind(Arc::clone(f)),
        }
    }
}

impl<K: 'static, V: Data, VA: 'static> Step<K, V, VA> {
    /// A step over each record's key and value, which `f` takes by value.
    pub(crate) fn each(f: impl Fn(&K, V, Option<VA>) -> VA + Send + Sync + 'static) -> Self {
        Step::Each(Arc::new(move |k, v, acc| f(k, v.into_owned(), acc)))
    }

    /// Whether the step reads the record's key and value.
    pub(crate) fn reads_record(&self) -> bool {
        matches!(self, Step::Each(_))
    }

    /// The same step as one that takes the record (for aggregations that keep or merge by
    /// key whatever the step).
    pub(crate) fn reading_record(self) -> Self {
        match self {
            Step::Blind(f) => Step::Each(Arc::new(move |_, _, acc| f(acc))),
            each => each,
        }
    }

    /// The step applied to a record's key and value (`None` when it reads neither, see
    /// [`read_record`]).
    pub(crate) fn bind<'a>(
        &'a self,
        record: Option<(&'a K, Value<'a, V>)>,
    ) -> Result<Bound<'a, K, V, VA>, ProcessError> {
        match (self, record) {
            (Step::Each(f), Some((k, v))) => Ok(Bound::Each(f.as_ref(), k, v)),
            (Step::Blind(f), _) => Ok(Bound::Blind(f.as_ref())),
            (Step::Each(_), None) => Err(ProcessError::Failed(
                "internal: an aggregation step without its record".into(),
            )),
        }
    }
}

impl<K: 'static, V: Data> Step<K, V, i64> {
    /// Kafka Streams' `count`: records per key (or window).
    pub(crate) fn count() -> Self {
        Step::Blind(Arc::new(|n| n.unwrap_or(0) + 1))
    }
}

/// A [`Step`] with the record it applies to.
pub(crate) enum Bound<'a, K, V, VA> {
    Each(&'a EachDyn<K, V, VA>, &'a K, Value<'a, V>),
    Blind(&'a BlindDyn<VA>),
}

impl<K, V: Data, VA> Bound<'_, K, V, VA> {
    /// Folds the record into `acc`, lending its value (more aggregates take it after).
    pub(crate) fn apply_ref(&self, acc: Option<VA>) -> VA {
        match self {
            Bound::Each(f, k, v) => f(k, Value::Lent(v.get()), acc),
            Bound::Blind(f) => f(acc),
        }
    }

    /// Folds the record into `acc`, the last aggregate it goes to: its value moves.
    pub(crate) fn apply(self, acc: Option<VA>) -> VA {
        match self {
            Bound::Each(f, k, v) => f(k, v, acc),
            Bound::Blind(f) => f(acc),
        }
    }
}

/// What an aggregation with a step that reads the record (`reads`) takes of `r`: its key and
/// value, or nothing for a step that reads neither (`Some(None)`); `None` for a record it
/// skips (a null key its type cannot hold). A blind step trusts the key's bytes: they were
/// checked where they entered the task (a source, or an operator that serialized them).
pub(crate) fn read_record<K: Data, V: Data>(
    reads: bool,
    keys: &dyn Serde<K>,
    r: &mut Record,
) -> Result<Option<Option<(K, V)>>, ProcessError> {
    if !reads {
        if r.key.is_none() && key_of(keys, r)?.is_none() {
            return Ok(None);
        }
        if r.typed.is_none() && r.value.is_none() {
            // No value to skip reading: the error reading it gives.
            take_value::<V>(r)?;
        }
        return Ok(Some(None));
    }
    let Some(k) = key_of(keys, r)? else {
        return Ok(None);
    };
    Ok(Some(Some((k, take_value(r)?))))
}

/// The step of a `reduce`: a key's first value is its aggregate, later ones fold in.
pub(crate) fn reduce_step<K: 'static, V: Data>(
    reducer: impl Fn(V, V) -> V + Send + Sync + 'static,
) -> Step<K, V, V> {
    Step::each(move |_, v, acc| match acc {
        None => v,
        Some(a) => reducer(a, v),
    })
}

/// One table aggregation step: a row's change applied to the aggregate (none: no row left).
type TableStep<K, V, VA> = Arc<dyn Fn(&K, Change<V>, Option<VA>) -> Option<VA> + Send + Sync>;

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
        windows.over(KGroupedStream {
            stream: self.stream.clone(),
            grouped: self.grouped.clone(),
        })
    }
}

/// Aggregates a stream per key into a key-value store, through a record cache that
/// forwards the latest aggregate per key (with the one it replaced) at each flush.
struct StreamAggregate<K, V, VA> {
    keys: SerdeRef<K>,
    store: String,
    step: Step<K, V, VA>,
    cache: RecordCache<VA>,
}

impl<K: Data, V: Data, VA: Data> Processor for StreamAggregate<K, V, VA> {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        mut r: Record,
    ) -> Result<(), ProcessError> {
        let Some(record) = read_record::<K, V>(self.step.reads_record(), &*self.keys, &mut r)?
        else {
            return Ok(());
        };
        let key = r.key.clone().unwrap_or_default();
        let (k, v) = record.map_or((None, None), |(k, v)| (Some(k), Some(v)));
        let bound = self.step.bind(k.as_ref().zip(v.map(Value::Owned)))?;
        let ts = r.timestamp;
        self.cache.update(
            ctx.store(&self.store)?,
            &InlineKey::new(&key),
            None,
            false,
            &r.headers,
            |acc, t| (bound.apply(acc), t.map_or(ts, |t| ts.max(t))),
        )?;
        if self.cache.must_flush(ctx) {
            self.cache.flush(ctx, &self.store)?;
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        self.cache.flush(ctx, &self.store)
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

struct TableAggregate<K, V, VA> {
    keys: SerdeRef<K>,
    store: String,
    step: TableStep<K, V, VA>,
}

impl<K: Data, V: Data, VA: Data> Processor for TableAggregate<K, V, VA> {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let Some(k) = key_of(&*self.keys, &r)? else {
            return Ok(());
        };
        let key = r.key.clone().unwrap_or_default();
        let change: Change<V> = value_of(&r)?;
        let store = ctx.store(&self.store)?;
        let old = get_timestamped::<VA>(store, &key)?;
        let (acc, ts) = match &old {
            Some((a, t)) => (Some(a.clone()), r.timestamp.max(*t)),
            None => (None, r.timestamp),
        };
        let acc = (self.step)(&k, change, acc);
        match &acc {
            Some(a) => {
                put_timestamped(store, &key, a, ts)?;
            }
            None => {
                store.delete(&key)?;
            }
        }
        let out = Change {
            new: acc,
            old: old.map(|(a, _)| a),
        };
        let mut rec = with(&r, r.key.clone(), out);
        rec.timestamp = ts;
        ctx.forward(rec)
    }
}

/// Adds one input of a cogroup: given the store, the initializer, the input's index and the
/// windows (with the store's retention), if windowed, its aggregating processor; returns the
/// processor's name and the input's source topics.
type CogroupInput<VA> = Box<
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

fn cogroup_input<K: Data, V: Data, VA: Data>(
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
            _v: std::marker::PhantomData,
        }
    }

    /// Aggregates over time windows (tumbling or hopping) instead.
    pub fn windowed_by(self, windows: TimeWindows) -> TimeWindowedCogroupedKStream<K, VA> {
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
        let pass: crate::graph::StatelessFn = Arc::new(|ctx, r| ctx.forward(r));
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
            _v: std::marker::PhantomData,
        }
    }
}
