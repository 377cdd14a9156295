//! Helpers shared by rill-core's integration tests: counting per key in a store, the
//! topologies built around it, and small processors and partitioners.
// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use rill_core::processor::{ProcessError, Processor, ProcessorContext, Record};
use rill_core::topology::{
    Partitioner, ProcessorSupplier, SinkSpec, StoreBackend, StoreSpec, TopicChoice, Topology,
};

/// A record with text key and value.
pub fn rec(key: &str, value: &str, ts: i64) -> Record {
    Record::new(Some(key.to_string()), Some(value.to_string()), ts)
}

/// Bytes as text (empty for none).
pub fn text(b: &Option<Bytes>) -> String {
    String::from_utf8_lossy(b.as_deref().unwrap_or_default()).into_owned()
}

/// Adds one to `key`'s count (a big-endian u64) in store `counts`; returns the new count.
pub fn increment(ctx: &mut ProcessorContext<'_>, key: &[u8]) -> Result<u64, ProcessError> {
    let store = ctx.store("counts")?;
    let n = store
        .get(key)?
        .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
        + 1;
    store.put(key, &n.to_be_bytes())?;
    Ok(n)
}

/// Counts per key in store `counts`, forwarding (key, count as text).
pub struct Count;

impl Processor for Count {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        let key = r.key.clone().unwrap_or_default();
        let n = increment(ctx, &key)?;
        ctx.forward(Record::new(Some(key), Some(n.to_string()), r.timestamp))
    }
}

/// `source` -> processor `count` (from `supplier`, with the logged store `counts` of
/// `backend`) -> `sink`.
pub fn counting_topology_with(
    source: &str,
    sink: &str,
    backend: StoreBackend,
    supplier: ProcessorSupplier,
) -> Topology {
    let sink = SinkSpec {
        topic: TopicChoice::Static(sink.into()),
        partitioner: None,
    };
    counting_topology_to(source, sink, backend, supplier)
}

/// [`counting_topology_with`] writing through sink `sink`.
pub fn counting_topology_to(
    source: &str,
    sink: SinkSpec,
    backend: StoreBackend,
    supplier: ProcessorSupplier,
) -> Topology {
    let mut t = Topology::new();
    t.add_source("in", &[source])
        .unwrap()
        .add_processor("count", supplier, &["in"])
        .unwrap()
        .add_sink_spec("out", sink, &["count"])
        .unwrap()
        .add_state_store(
            StoreSpec {
                name: "counts".into(),
                backend,
                logged: true,
                window_retention_ms: None,
            },
            &["count"],
        )
        .unwrap();
    t
}

/// [`counting_topology_with`] and [`Count`].
pub fn counting_topology(source: &str, sink: &str, backend: StoreBackend) -> Topology {
    counting_topology_with(source, sink, backend, Arc::new(|| Box::new(Count)))
}

/// Re-keys each record by its value.
pub struct KeyByValue;

impl Processor for KeyByValue {
    fn process(&mut self, ctx: &mut ProcessorContext<'_>, r: Record) -> Result<(), ProcessError> {
        ctx.forward(Record::new(r.value.clone(), r.value, r.timestamp))
    }
}

/// `source` (key: anything, value: user) -> key by user -> repartition topic `users` ->
/// count per user (in-memory, logged) -> `sink`.
pub fn rekeyed_count(source: &str, sink: &str) -> Topology {
    let mut t = Topology::new();
    t.add_source("in", &[source])
        .unwrap()
        .add_processor("by-user", Arc::new(|| Box::new(KeyByValue)), &["in"])
        .unwrap()
        .add_repartition("users", &["by-user"])
        .unwrap()
        .add_processor("count", Arc::new(|| Box::new(Count)), &["users"])
        .unwrap()
        .add_sink("out", sink, &["count"])
        .unwrap()
        .add_state_store(
            StoreSpec {
                name: "counts".into(),
                backend: StoreBackend::InMemory,
                logged: true,
                window_retention_ms: None,
            },
            &["count"],
        )
        .unwrap();
    t
}

/// Puts every record in the last partition.
#[derive(Debug)]
pub struct LastPartition;

impl Partitioner for LastPartition {
    fn partition(&self, _topic: &str, _key: Option<&[u8]>, partitions: i32) -> i32 {
        partitions - 1
    }
}

/// A broker in `dir` (one partition for internal topics, no rebalance delay) with topics
/// `words` and `counts` of `partitions` partitions, and a transport to it.
pub async fn broker(
    dir: &std::path::Path,
    partitions: i32,
) -> (
    Arc<rill_log::broker::Broker>,
    Arc<dyn rill_log::client::Transport>,
) {
    let mut bc = rill_log::broker::BrokerConfig::new(dir);
    bc.offsets_topic_num_partitions = 1;
    bc.transaction_state_num_partitions = 1;
    bc.group.initial_rebalance_delay_ms = 0;
    bc.group_tick_ms = 20;
    let b = Arc::new(
        rill_log::broker::Broker::open(bc, Arc::new(rill_log::time::SystemClock)).unwrap(),
    );
    let t: Arc<dyn rill_log::client::Transport> = Arc::new(
        rill_log::client::EmbeddedTransport::new(Arc::clone(&b), "app"),
    );
    let admin = rill_log::client::Admin::new(Arc::clone(&t));
    admin.create_topic("words", partitions, &[]).await.unwrap();
    admin.create_topic("counts", partitions, &[]).await.unwrap();
    (b, t)
}
