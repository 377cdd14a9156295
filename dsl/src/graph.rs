//! The graph under a [`crate::StreamsBuilder`]: the `rill-core` topology being built, node
//! and store naming, co-partitioning, and what the DSL knows of each store (for interactive
//! queries). The API's operators add to it; the records helpers every processor shares are in
//! `crate::ops::records`.

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rill_core::processor::Processor;
use rill_core::topology::{ProcessorSupplier, StoreSpec, Topology};

use crate::ops::records::{FnProcessor, StatelessFn};

/// Whether an operator downstream of a table reads its old values (Kafka Streams'
/// `sendOldValues`), asked for at build time and read by the table's filter at run time: a
/// filter forwards the deletion of a row that never passed (new and old both absent) only
/// when nothing downstream reads old values — so `filter().to_stream()` writes a tombstone
/// for every row the filter turns away, as Kafka Streams does. Asking reaches the tables the
/// filter's table derives from, up to the nearest that keeps a store.
#[derive(Debug, Default)]
pub(crate) struct OldValues {
    read: AtomicBool,
    parent: Option<Arc<OldValues>>,
}

impl OldValues {
    pub(crate) fn below(parent: Option<Arc<OldValues>>) -> Arc<Self> {
        Arc::new(OldValues {
            read: AtomicBool::new(false),
            parent,
        })
    }

    pub(crate) fn request(&self) {
        self.read.store(true, Ordering::Relaxed);
        if let Some(p) = &self.parent {
            p.request();
        }
    }

    pub(crate) fn read(&self) -> bool {
        self.read.load(Ordering::Relaxed)
    }
}

/// What kind of store a DSL operator keeps (for interactive queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Key -> timestamped value.
    KeyValue,
    /// (key, window start) -> timestamped value.
    Window,
    /// (key, session end, session start) -> timestamped value.
    Session,
    /// A global table's store (every partition, on every instance).
    Global,
    /// Internal buffers (suppression, joins): not queryable.
    Internal,
}

/// A store the DSL created, and the serde of its keys (an `Arc<dyn Serde<K>>`).
#[derive(Clone)]
pub(crate) struct StoreInfo {
    pub kind: StoreKind,
    pub keys: Arc<dyn Any + Send + Sync>,
}

pub(crate) type Shared = Rc<RefCell<Graph>>;

#[derive(Default)]
pub(crate) struct Graph {
    pub topology: Topology,
    counter: usize,
    /// Problems found while building, reported by `build`.
    pub errors: Vec<String>,
    pub stores: BTreeMap<String, StoreInfo>,
    /// Per store with a record cache: whether another processor reads the store (a join,
    /// a Processor API processor). Such a store gets no cache, whose updates would reach it
    /// only at the commit; the flag is read when tasks start, after the whole graph is built.
    read_elsewhere: BTreeMap<String, Arc<std::sync::atomic::AtomicBool>>,
    /// Per source's deserializing node: whether a node it forwards to reads record values.
    /// Set by `settle_value_reads` once the graph is built; until then, true.
    value_reads: BTreeMap<String, Arc<std::sync::atomic::AtomicBool>>,
    /// Nodes that never read the values of the records they get (counts).
    blind: BTreeSet<String>,
}

impl Graph {
    /// Kafka Streams' generated names: `KSTREAM-MAPVALUES-0000000003`.
    pub fn name(&mut self, op: &str) -> String {
        let n = self.counter;
        self.counter += 1;
        format!("{op}-{n:010}")
    }

    fn record<T, E: std::fmt::Display>(&mut self, r: Result<T, E>) {
        if let Err(e) = r {
            self.errors.push(e.to_string());
        }
    }

    pub fn processor(&mut self, name: &str, supplier: ProcessorSupplier, parents: &[&str]) {
        let r = self
            .topology
            .add_processor(name, supplier, parents)
            .map(|_| ());
        self.record(r);
    }

    /// A processor that needs no per-task state: `f` runs for each record.
    pub fn stateless(&mut self, name: &str, f: StatelessFn, parents: &[&str]) {
        let supplier: ProcessorSupplier =
            Arc::new(move || Box::new(FnProcessor { f: Arc::clone(&f) }) as Box<dyn Processor>);
        self.processor(name, supplier, parents);
    }

    pub fn store(
        &mut self,
        spec: StoreSpec,
        kind: StoreKind,
        keys: Arc<dyn Any + Send + Sync>,
        processors: &[&str],
    ) {
        self.stores
            .insert(spec.name.clone(), StoreInfo { kind, keys });
        let r = self.topology.add_state_store(spec, processors).map(|_| ());
        self.record(r);
    }

    /// Whether processors other than `store`'s owner read it (see `read_elsewhere`).
    pub fn read_elsewhere(&mut self, store: &str) -> Arc<std::sync::atomic::AtomicBool> {
        Arc::clone(self.read_elsewhere.entry(store.to_string()).or_default())
    }

    /// Connects an existing store to another processor (a join reading a table's store).
    pub fn connect_store(&mut self, store: &str, processor: &str) {
        if let Some(flag) = self.read_elsewhere.get(store) {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let r = self.topology.connect_store(store, processor).map(|_| ());
        self.record(r);
    }

    /// Whether the nodes after source deserializer `node` read record values (see
    /// `settle_value_reads`).
    pub fn value_reads(&mut self, node: &str) -> Arc<std::sync::atomic::AtomicBool> {
        let flag = self
            .value_reads
            .entry(node.to_string())
            .or_insert_with(|| Arc::new(std::sync::atomic::AtomicBool::new(true)));
        Arc::clone(flag)
    }

    /// `node` never reads the values of the records it gets.
    pub fn mark_blind(&mut self, node: &str) {
        self.blind.insert(node.to_string());
    }

    /// Tells each source deserializer whether any node after it reads record values: one
    /// whose every child only counts checks values without building them. Done when the
    /// graph is built (nodes are only ever added: a source whose values are read stays so).
    pub fn settle_value_reads(&self) {
        for (node, flag) in &self.value_reads {
            let reads = self
                .topology
                .children_of(node)
                .iter()
                .any(|c| !self.blind.contains(*c));
            flag.store(reads, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn copartition(&mut self, topics: &[String]) {
        let mut ts: Vec<&str> = topics.iter().map(String::as_str).collect();
        ts.sort_unstable();
        ts.dedup();
        if ts.len() > 1 {
            let r = self.topology.copartition(&ts).map(|_| ());
            self.record(r);
        }
    }
}
