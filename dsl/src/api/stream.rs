//! `KStream`: an unbounded stream of key-value records and its stateless operators (map,
//! filter, flat-map, branch, merge, repartition, sinks), grouping, and the way into the
//! Processor API.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use rill_core::metrics::DropReason;
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};

use rill_core::topology::{
    ProcessorSupplier, RecordPartitioner, SinkPartitioner, SinkSpec, TopicChoice,
};

use crate::api::KGroupedStream;
use crate::graph::Shared;
use crate::ops::process::BytesIn;
use crate::ops::records::{
    key_of, rewrap, ser, take_value, value_of, value_ref, with, StatelessFn,
};

use crate::options::{Consumed, Grouped, Produced, Repartitioned};
use crate::serdes::{auto, to_bytes, Data, SerdeRef};

/// A stream of records with keys `K` and values `V`.
pub struct KStream<K, V> {
    pub(crate) g: Shared,
    /// The core node whose output this stream is.
    pub(crate) node: String,
    /// The serde of keys on the wire: the source's, or [`auto`] after a key change.
    pub(crate) keys: SerdeRef<K>,
    /// The topics feeding this stream's sub-topology (co-partitioned with what it joins).
    pub(crate) sources: Vec<String>,
    /// The key changed since the last source or repartition: a stateful operator must
    /// repartition first.
    pub(crate) key_changed: bool,
    pub(crate) _v: PhantomData<fn() -> V>,
}

impl<K, V> Clone for KStream<K, V> {
    fn clone(&self) -> Self {
        KStream {
            g: Shared::clone(&self.g),
            node: self.node.clone(),
            keys: Arc::clone(&self.keys),
            sources: self.sources.clone(),
            key_changed: self.key_changed,
            _v: PhantomData,
        }
    }
}

impl<K, V> std::fmt::Debug for KStream<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KStream").field("node", &self.node).finish()
    }
}

impl<K: Data, V: Data> KStream<K, V> {
    pub(crate) fn derive<K2, V2>(
        &self,
        node: String,
        keys: SerdeRef<K2>,
        key_changed: bool,
    ) -> KStream<K2, V2> {
        KStream {
            g: Shared::clone(&self.g),
            node,
            keys,
            sources: self.sources.clone(),
            key_changed,
            _v: PhantomData,
        }
    }

    fn add(&self, op: &str, f: StatelessFn) -> String {
        let mut g = self.g.borrow_mut();
        let name = g.name(op);
        g.stateless(&name, f, &[&self.node]);
        name
    }

    /// Records for which `predicate` holds.
    pub fn filter(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Self {
        self.filtered("KSTREAM-FILTER", move |k, v| predicate(k, v))
    }

    /// Records for which `predicate` does not hold.
    pub fn filter_not(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Self {
        self.filtered("KSTREAM-FILTER", move |k, v| !predicate(k, v))
    }

    fn filtered(&self, op: &str, keep: impl Fn(&K, &V) -> bool + Send + Sync + 'static) -> Self {
        let keys = Arc::clone(&self.keys);
        let name = self.add(
            op,
            Arc::new(move |ctx, r| {
                let Some(k) = key_of(&*keys, &r)? else {
                    return Ok(());
                };
                if keep(&k, &*value_ref::<V>(&r)?) {
                    ctx.forward(r)?;
                }
                Ok(())
            }),
        );
        self.derive(name, Arc::clone(&self.keys), self.key_changed)
    }

    /// Calls `action` on each record and passes it on.
    pub fn peek(&self, action: impl Fn(&K, &V) + Send + Sync + 'static) -> Self {
        self.filtered("KSTREAM-PEEK", move |k, v| {
            action(k, v);
            true
        })
    }

    /// Calls `action` on each record (a terminal operation).
    pub fn foreach(&self, action: impl Fn(&K, &V) + Send + Sync + 'static) {
        let _ = self.filtered("KSTREAM-FOREACH", move |k, v| {
            action(k, v);
            false
        });
    }

    /// A new key and value per record: the key changes, so a later stateful operator
    /// repartitions.
    pub fn map<KR: Data, VR: Data>(
        &self,
        mapper: impl Fn(K, V) -> (KR, VR) + Send + Sync + 'static,
    ) -> KStream<KR, VR> {
        self.flat_map(move |k, v| [mapper(k, v)])
    }

    /// Zero or more records per record, with new keys.
    pub fn flat_map<KR: Data, VR: Data, I: IntoIterator<Item = (KR, VR)>>(
        &self,
        mapper: impl Fn(K, V) -> I + Send + Sync + 'static,
    ) -> KStream<KR, VR> {
        let keys = Arc::clone(&self.keys);
        let out_keys: SerdeRef<KR> = auto();
        let ok = Arc::clone(&out_keys);
        let name = self.add(
            "KSTREAM-FLATMAP",
            Arc::new(move |ctx, mut r| {
                let Some(k) = key_of(&*keys, &r)? else {
                    return Ok(());
                };
                for (k2, v2) in mapper(k, take_value(&mut r)?) {
                    let key = to_bytes(&*ok, &k2).map_err(ser)?;
                    ctx.forward(with(&r, key, v2))?;
                }
                Ok(())
            }),
        );
        self.derive(name, out_keys, true)
    }

    /// A new value per record; the key stays (no repartition needed).
    pub fn map_values<VR: Data>(
        &self,
        mapper: impl Fn(V) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        self.flat_map_values(move |v| [mapper(v)])
    }

    /// A new value per record from its key and value.
    pub fn map_values_with_key<VR: Data>(
        &self,
        mapper: impl Fn(&K, V) -> VR + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        let keys = Arc::clone(&self.keys);
        let name = self.add(
            "KSTREAM-MAPVALUES",
            Arc::new(move |ctx, mut r| {
                let Some(k) = key_of(&*keys, &r)? else {
                    return Ok(());
                };
                let v = mapper(&k, take_value(&mut r)?);
                ctx.forward(rewrap(r, v))
            }),
        );
        self.derive(name, Arc::clone(&self.keys), self.key_changed)
    }

    /// Zero or more values per record, each with the record's key.
    pub fn flat_map_values<VR: Data, I: IntoIterator<Item = VR>>(
        &self,
        mapper: impl Fn(V) -> I + Send + Sync + 'static,
    ) -> KStream<K, VR> {
        let name = self.add(
            "KSTREAM-FLATMAPVALUES",
            Arc::new(move |ctx, mut r| {
                for v in mapper(take_value(&mut r)?) {
                    ctx.forward(with(&r, r.key.clone(), v))?;
                }
                Ok(())
            }),
        );
        self.derive(name, Arc::clone(&self.keys), self.key_changed)
    }

    /// A new key per record (the value stays).
    pub fn select_key<KR: Data>(
        &self,
        selector: impl Fn(&K, &V) -> KR + Send + Sync + 'static,
    ) -> KStream<KR, V> {
        self.map(move |k, v| (selector(&k, &v), v))
    }

    /// Both streams' records, in the order they arrive.
    pub fn merge(&self, other: &KStream<K, V>) -> Self {
        let name = {
            let mut g = self.g.borrow_mut();
            let name = g.name("KSTREAM-MERGE");
            let f: StatelessFn = Arc::new(|ctx, r| ctx.forward(r));
            g.stateless(&name, f, &[&self.node, &other.node]);
            name
        };
        let mut s = self.derive(
            name,
            Arc::clone(&self.keys),
            self.key_changed || other.key_changed,
        );
        s.sources.extend(other.sources.iter().cloned());
        s
    }

    /// Writes the stream to `topic` (keys with the stream's serde, values with [`auto`]).
    pub fn to(&self, topic: &str) {
        self.to_with(topic, Produced::default())
    }

    /// Writes the stream to `topic` with `produced`'s serdes (and partitioner).
    pub fn to_with(&self, topic: &str, produced: Produced<K, V>) {
        let encoder = self.encoder("KSTREAM-SINK", &produced);
        // The sink sees the written bytes: the partitioner reads them back (a record that
        // does not read back gets the default partition).
        let partitioner = produced.partitioner.map(|f| {
            let keys = produced
                .keys
                .clone()
                .unwrap_or_else(|| Arc::clone(&self.keys));
            let values = Arc::clone(&produced.values);
            let by_record: RecordPartitioner = Arc::new(move |_: &str, r: &Record, n: i32| {
                let k = keys.deserialize(r.key.as_deref()).ok().flatten()?;
                let v = values.deserialize(r.value.as_deref()).ok().flatten()?;
                f(&k, &v, n)
            });
            SinkPartitioner::Record(by_record)
        });
        let spec = SinkSpec {
            topic: TopicChoice::Static(topic.into()),
            partitioner,
        };
        let mut g = self.g.borrow_mut();
        let sink = produced.name.unwrap_or_else(|| g.name("KSTREAM-SINK"));
        let r = g
            .topology
            .add_sink_spec(&sink, spec, &[&encoder])
            .map(|_| ());
        if let Err(e) = r {
            g.errors.push(e.to_string());
        }
    }

    /// Writes each record to the topic `chooser` picks for it (keys with the stream's
    /// serde, values with [`auto`]).
    pub fn to_dynamic(&self, chooser: impl Fn(&K, &V) -> String + Send + Sync + 'static) {
        let produced = Produced::default();
        let encoder = self.encoder("KSTREAM-SINK", &produced);
        let (keys, values) = (Arc::clone(&self.keys), produced.values);
        // The sink sees the written bytes: the chooser reads them back to give the typed
        // record (a record that does not read back goes to no topic, which fails its send).
        let chooser = Arc::new(move |r: &Record| {
            let k = keys.deserialize(r.key.as_deref()).ok().flatten();
            let v = values.deserialize(r.value.as_deref()).ok().flatten();
            match (k, v) {
                (Some(k), Some(v)) => chooser(&k, &v),
                _ => String::new(),
            }
        });
        let mut g = self.g.borrow_mut();
        let sink = g.name("KSTREAM-SINK");
        let r = g
            .topology
            .add_sink_with(&sink, chooser, &[&encoder])
            .map(|_| ());
        if let Err(e) = r {
            g.errors.push(e.to_string());
        }
    }

    /// A processor turning the stream's records into `produced`'s bytes.
    fn encoder(&self, op: &str, produced: &Produced<K, V>) -> String {
        let keys = Arc::clone(&self.keys);
        let out_keys = produced.keys.clone();
        let values = Arc::clone(&produced.values);
        self.add(
            &format!("{op}-ENCODE"),
            Arc::new(move |ctx, mut r| {
                let key = match &out_keys {
                    None => r.key.take(),
                    Some(ks) => match key_of(&*keys, &r)? {
                        Some(k) => to_bytes(&**ks, &k).map_err(ser)?,
                        None => return Ok(()),
                    },
                };
                let v: V = take_value(&mut r)?;
                ctx.forward(Record {
                    key,
                    value: to_bytes(&*values, &v).map_err(ser)?,
                    timestamp: r.timestamp,
                    headers: r.headers,
                    typed: None,
                })
            }),
        )
    }

    /// Sends the stream through a repartition topic `<application.id>-<name>-repartition`
    /// (generated name unless given), partitioned by key.
    pub fn repartition(&self) -> Self {
        self.repartition_named(None)
    }

    /// [`KStream::repartition`] with the topic named `<application.id>-<name>-repartition`.
    pub fn repartition_as(&self, name: &str) -> Self {
        self.repartition_named(Some(name.to_string()))
    }

    /// [`KStream::repartition`] as `repartitioned` says: a name, a partition count.
    pub fn repartition_with(&self, repartitioned: Repartitioned) -> Self {
        self.repartition_as_told(repartitioned.name, repartitioned.partitions)
    }

    pub(crate) fn repartition_named(&self, name: Option<String>) -> Self {
        self.repartition_as_told(name, None)
    }

    fn repartition_as_told(&self, name: Option<String>, partitions: Option<i32>) -> Self {
        let mut g = self.g.borrow_mut();
        let name = name.unwrap_or_else(|| g.name("KSTREAM-REPARTITION"));
        let r = match partitions {
            Some(n) => g
                .topology
                .add_repartition_with_partitions(&name, n, &[&self.node]),
            None => g.topology.add_repartition(&name, &[&self.node]),
        }
        .map(|_| ());
        if let Err(e) = r {
            g.errors.push(e.to_string());
        }
        drop(g);
        let mut s = self.derive(name.clone(), Arc::clone(&self.keys), false);
        s.sources = vec![name];
        s
    }

    /// This stream, repartitioned first if its key changed (what a stateful operator reads).
    pub(crate) fn partitioned(&self, name: Option<String>) -> Self {
        if self.key_changed {
            self.repartition_named(name)
        } else {
            self.clone()
        }
    }

    /// Groups by the current key (repartitioning at the aggregation if the key changed).
    pub fn group_by_key(&self) -> KGroupedStream<K, V> {
        KGroupedStream::new(self.clone(), Grouped::default())
    }

    /// [`KStream::group_by_key`] with a name for the repartition topic.
    pub fn group_by_key_with(&self, grouped: Grouped) -> KGroupedStream<K, V> {
        KGroupedStream::new(self.clone(), grouped)
    }

    /// Groups by a new key (always repartitioned before aggregating).
    pub fn group_by<KR: Data>(
        &self,
        selector: impl Fn(&K, &V) -> KR + Send + Sync + 'static,
    ) -> KGroupedStream<KR, V> {
        KGroupedStream::new(self.select_key(selector), Grouped::default())
    }

    /// [`KStream::group_by`] with a name for the repartition topic.
    pub fn group_by_with<KR: Data>(
        &self,
        selector: impl Fn(&K, &V) -> KR + Send + Sync + 'static,
        grouped: Grouped,
    ) -> KGroupedStream<KR, V> {
        KGroupedStream::new(self.select_key(selector), grouped)
    }

    /// Splits the stream into named branches: each record goes to the first branch whose
    /// predicate holds (Kafka Streams' `split`). Branch `b` is named `<prefix><b>`.
    pub fn split(&self, prefix: &str) -> Splitter<K, V> {
        Splitter {
            stream: self.clone(),
            prefix: prefix.to_string(),
            branches: Vec::new(),
        }
    }

    /// Runs processors of the Processor API on the stream: each gets records whose key is
    /// in the stream's key serde and whose value is `serdes::hop` (bincode) encoded, and must
    /// forward records encoded the same way, with keys of type `KR` in [`auto`] and values
    /// `VR`. `stores` are connected to it (added with [`crate::StreamsBuilder::add_state_store`]).
    /// The key may change: a later stateful operator repartitions.
    pub fn process<KR: Data, VR: Data>(
        &self,
        supplier: impl Fn() -> Box<dyn Processor> + Send + Sync + 'static,
        stores: &[&str],
    ) -> KStream<KR, VR> {
        let name = self.add_processor("KSTREAM-PROCESSOR", supplier, stores);
        self.derive(name, auto(), true)
    }

    /// [`KStream::process`] for processors that keep the key: no repartition follows.
    pub fn process_values<VR: Data>(
        &self,
        supplier: impl Fn() -> Box<dyn Processor> + Send + Sync + 'static,
        stores: &[&str],
    ) -> KStream<K, VR> {
        let name = self.add_processor("KSTREAM-PROCESSVALUES", supplier, stores);
        self.derive(name, Arc::clone(&self.keys), self.key_changed)
    }

    fn add_processor(
        &self,
        op: &str,
        supplier: impl Fn() -> Box<dyn Processor> + Send + Sync + 'static,
        stores: &[&str],
    ) -> String {
        let mut g = self.g.borrow_mut();
        let name = g.name(op);
        let supplier: ProcessorSupplier =
            Arc::new(move || Box::new(BytesIn(supplier())) as Box<dyn Processor>);
        g.processor(&name, supplier, &[&self.node]);
        for s in stores {
            g.connect_store(s, &name);
        }
        name
    }
}

/// Branches being declared on a stream (see [`KStream::split`]).
pub struct Splitter<K, V> {
    stream: KStream<K, V>,
    prefix: String,
    #[allow(clippy::type_complexity)]
    branches: Vec<(String, Arc<dyn Fn(&K, &V) -> bool + Send + Sync>)>,
}

impl<K, V> std::fmt::Debug for Splitter<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Splitter")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl<K: Data, V: Data> Splitter<K, V> {
    /// Records for which `predicate` holds (and no earlier branch's did).
    pub fn branch(
        mut self,
        name: &str,
        predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.branches.push((name.to_string(), Arc::new(predicate)));
        self
    }

    /// Every other record goes to branch `name`.
    pub fn default_branch(self, name: &str) -> BTreeMap<String, KStream<K, V>> {
        self.finish(Some(name))
    }

    /// Records no branch takes are dropped.
    pub fn no_default_branch(self) -> BTreeMap<String, KStream<K, V>> {
        self.finish(None)
    }

    fn finish(mut self, default: Option<&str>) -> BTreeMap<String, KStream<K, V>> {
        if let Some(d) = default {
            self.branches
                .push((d.to_string(), Arc::new(|_: &K, _: &V| true)));
        }
        let s = &self.stream;
        let names: Vec<String> = self
            .branches
            .iter()
            .map(|(n, _)| format!("{}{n}", self.prefix))
            .collect();
        let preds: Vec<_> = self.branches.iter().map(|(_, p)| Arc::clone(p)).collect();
        let keys = Arc::clone(&s.keys);
        let targets = names.clone();
        let f: StatelessFn = Arc::new(move |ctx: &mut ProcessorContext<'_>, r: Record| {
            let Some(k) = key_of(&*keys, &r)? else {
                return Ok(());
            };
            let v: V = value_of(&r)?;
            match preds.iter().position(|p| p(&k, &v)) {
                Some(i) => ctx.forward_to(&targets[i], r),
                None => Ok::<(), ProcessError>(()),
            }
        });
        let mut g = s.g.borrow_mut();
        let split = g.name("KSTREAM-BRANCH");
        g.stateless(&split, f, &[&s.node]);
        let pass: StatelessFn = Arc::new(|ctx, r| ctx.forward(r));
        for n in &names {
            g.stateless(n, Arc::clone(&pass), &[&split]);
        }
        drop(g);
        self.branches
            .iter()
            .zip(names)
            .map(|((b, _), n)| {
                (
                    format!("{}{b}", self.prefix),
                    s.derive(n, Arc::clone(&s.keys), s.key_changed),
                )
            })
            .collect()
    }
}

/// The source node reading `topic` (with `consumed`'s name and timestamp extractor).
pub(crate) fn raw_source<K, V>(g: &Shared, topic: &str, consumed: &Consumed<K, V>) -> String {
    let mut gr = g.borrow_mut();
    let source = consumed
        .name
        .clone()
        .unwrap_or_else(|| gr.name("KSTREAM-SOURCE"));
    let r = match &consumed.extractor {
        Some(e) => gr
            .topology
            .add_source_with_extractor(&source, &[topic], Arc::clone(e)),
        None => gr.topology.add_source(&source, &[topic]),
    }
    .map(|_| ());
    if let Err(e) = r {
        gr.errors.push(e.to_string());
    }
    source
}

/// A source stream: the source node and the processor that checks its keys and converts its
/// values.
pub(crate) fn source_stream<K: Data, V: Data>(
    g: &Shared,
    topic: &str,
    consumed: Consumed<K, V>,
) -> KStream<K, V> {
    let source = raw_source(g, topic, &consumed);
    let keys = Arc::clone(&consumed.keys);
    let values = consumed.values;
    let node = format!("{source}-DESERIALIZE");
    let value_reads = g.borrow_mut().value_reads(&node);
    g.borrow_mut().stateless(
        &node,
        Arc::new(move |ctx, r| {
            // A null key or value its type cannot hold: skipped (Kafka Streams would pass it
            // to stateless operators; a typed closure has nothing to give it).
            if !keys
                .check(r.key.as_deref())
                .map_err(crate::ops::records::deser)?
            {
                ctx.record_dropped(DropReason::NullKey);
                return Ok(());
            }
            // Only counts follow: the value is checked as deserializing it would be, not
            // built (they never read it).
            if !value_reads.load(std::sync::atomic::Ordering::Relaxed) {
                return match values.check(r.value.as_deref()) {
                    Ok(true) => ctx.forward(r),
                    Ok(false) => {
                        ctx.record_dropped(DropReason::NullValue);
                        Ok(())
                    }
                    Err(e) => Err(crate::ops::records::deser(e)),
                };
            }
            let Some(v) = values
                .deserialize(r.value.as_deref())
                .map_err(crate::ops::records::deser)?
            else {
                ctx.record_dropped(DropReason::NullValue);
                return Ok(());
            };
            ctx.forward(rewrap(r, v))
        }),
        &[&source],
    );
    KStream {
        g: Shared::clone(g),
        node,
        keys: consumed.keys,
        sources: vec![topic.to_string()],
        key_changed: false,
        _v: PhantomData,
    }
}
