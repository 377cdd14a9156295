//! The topology: sources reading topics, processors, sinks writing topics, and the state
//! stores connected to processors. Nodes connected through parents form sub-topologies; each
//! runs as one task per input partition. `describe` prints it as Kafka Streams does, and as
//! Graphviz DOT or Mermaid.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::processor::{Processor, Record};
pub use rill_log::client::partitioner::Partitioner;

/// Makes a fresh processor for each task.
pub type ProcessorSupplier = Arc<dyn Fn() -> Box<dyn Processor> + Send + Sync>;

/// Where a sink writes.
#[derive(Clone)]
pub enum TopicChoice {
    Static(Arc<str>),
    /// A topic per record.
    PerRecord(Arc<dyn Fn(&Record) -> String + Send + Sync>),
}

impl std::fmt::Debug for TopicChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicChoice::Static(t) => write!(f, "Static({t})"),
            TopicChoice::PerRecord(_) => f.write_str("PerRecord"),
        }
    }
}

/// Picks a record's partition among `partitions` of `topic` from the whole record (key and
/// value, as Kafka Streams' `StreamPartitioner`); `None`: the producer's default.
pub type RecordPartitioner = Arc<dyn Fn(&str, &Record, i32) -> Option<i32> + Send + Sync>;

/// How a sink places records among its topic's partitions.
#[derive(Clone)]
pub enum SinkPartitioner {
    /// By key, as a producer partitioner does.
    Key(Arc<dyn Partitioner>),
    /// By the whole record.
    Record(RecordPartitioner),
}

impl SinkPartitioner {
    /// The partition of `record` among `partitions` (>= 1) of `topic`, within range; `None`:
    /// the producer's default.
    pub fn partition(&self, topic: &str, record: &Record, partitions: i32) -> Option<i32> {
        let p = match self {
            SinkPartitioner::Key(p) => Some(p.partition(topic, record.key.as_deref(), partitions)),
            SinkPartitioner::Record(f) => f(topic, record, partitions),
        };
        p.map(|p| p.clamp(0, partitions - 1))
    }
}

impl std::fmt::Debug for SinkPartitioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkPartitioner::Key(p) => write!(f, "Key({p:?})"),
            SinkPartitioner::Record(_) => f.write_str("Record"),
        }
    }
}

/// A sink's settings.
#[derive(Clone, Debug)]
pub struct SinkSpec {
    pub topic: TopicChoice,
    /// Places each record among the topic's partitions (Kafka Streams' `StreamPartitioner`);
    /// none: the producer's default (murmur2 of the key).
    pub partitioner: Option<SinkPartitioner>,
}

impl SinkSpec {
    pub fn topic_for(&self, record: &Record) -> Arc<str> {
        match &self.topic {
            TopicChoice::Static(t) => Arc::clone(t),
            TopicChoice::PerRecord(f) => f(record).into(),
        }
    }
}

/// Which backend a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    InMemory,
    /// Persistent, on fjall, under the task's state directory.
    Fjall,
    /// Persistent, on RocksDB, under the task's state directory (needs rill-core's `rocksdb`
    /// feature; without it, opening the store fails with an error that says so).
    RocksDb,
}

/// A state store of the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    pub name: String,
    pub backend: StoreBackend,
    /// Logged to a changelog topic (`<application.id>-<store>-changelog`).
    pub logged: bool,
    /// For a window or session store: how long it keeps windows. Its changelog is then
    /// `compact,delete` with `retention.ms` = this plus a day (Kafka Streams'
    /// `windowstore.changelog.additional.retention.ms`), so expired windows leave the log too;
    /// `None`: compacted only.
    pub window_retention_ms: Option<i64>,
}

/// Kafka Streams' `windowstore.changelog.additional.retention.ms` default: one day.
pub const WINDOW_CHANGELOG_ADDITIONAL_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

impl StoreSpec {
    /// The configs of this store's changelog topic.
    pub fn changelog_configs(&self) -> Vec<(String, String)> {
        match self.window_retention_ms {
            None => vec![("cleanup.policy".into(), "compact".into())],
            Some(ms) => vec![
                ("cleanup.policy".into(), "compact,delete".into()),
                (
                    "retention.ms".into(),
                    ms.saturating_add(WINDOW_CHANGELOG_ADDITIONAL_RETENTION_MS)
                        .to_string(),
                ),
            ],
        }
    }
}

#[derive(Clone)]
pub(crate) enum NodeKind {
    Source {
        topics: Vec<String>,
        /// Reads every topic whose whole name matches (resolved against the cluster's topics
        /// when the application starts).
        pattern: Option<regex::Regex>,
        extractor: Option<TimestampExtractor>,
    },
    Processor {
        supplier: ProcessorSupplier,
    },
    Sink(SinkSpec),
}

#[derive(Clone)]
pub(crate) struct Node {
    pub name: String,
    pub kind: NodeKind,
    pub parents: Vec<usize>,
    pub stores: Vec<String>,
}

/// Why a topology cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("a node named {0} already exists")]
    DuplicateName(String),
    #[error("node {node}: no parent named {parent}")]
    UnknownParent { node: String, parent: String },
    #[error("node {node}: {parent} is a sink and cannot have children")]
    SinkAsParent { node: String, parent: String },
    #[error("node {0} needs at least one parent")]
    NoParent(String),
    #[error("source {0} reads no topic")]
    NoTopic(String),
    #[error("topic {0} is read by more than one source")]
    TopicReadTwice(String),
    #[error("store {store}: no processor named {processor}")]
    UnknownProcessor { store: String, processor: String },
    #[error("no store named {0}")]
    UnknownStore(String),
    #[error("a store named {0} already exists")]
    DuplicateStore(String),
    #[error("co-partitioning: {0} is not a source topic")]
    NotASource(String),
    #[error(
        "co-partitioning: topics read together must have as many partitions each, but {}",
        .0.iter().map(|(t, n)| format!("{t} has {n}")).collect::<Vec<_>>().join(", ")
    )]
    NotCopartitioned(Vec<(String, i32)>),
    #[error("source topic {0} does not exist")]
    MissingSourceTopic(String),
    #[error("sink topic {0} does not exist (its sink's partitioner needs its partition count)")]
    MissingSinkTopic(String),
    #[error("source {source_name}: bad topic pattern: {reason}")]
    BadPattern { source_name: String, reason: String },
    #[error("repartition topic {name}: {partitions} partitions (at least 1)")]
    BadPartitionCount { name: String, partitions: i32 },
}

/// A connected part of the topology: its nodes and the topics it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubTopology {
    pub id: usize,
    pub nodes: Vec<usize>,
    pub source_topics: Vec<String>,
}

/// Sources, processors, sinks and stores.
#[derive(Clone, Default)]
pub struct Topology {
    pub(crate) nodes: Vec<Node>,
    pub(crate) stores: BTreeMap<String, StoreSpec>,
    /// Source topics that must have the same partition count (they are joined).
    pub(crate) copartition_groups: Vec<BTreeSet<String>>,
    /// Names of the repartition topics (before the application id is put in front).
    pub(crate) repartitions: BTreeSet<String>,
    /// Repartition topics created with a given partition count (by the same names).
    pub(crate) repartition_partitions: BTreeMap<String, i32>,
    /// Global stores: built from every partition of a topic, on every instance.
    pub(crate) globals: Vec<GlobalStoreSpec>,
}

/// Applies one record of a global store's topic to the store.
pub type GlobalUpdater = Arc<
    dyn Fn(
            &mut dyn crate::state::KeyValueStore,
            &Record,
        ) -> Result<(), crate::processor::ProcessError>
        + Send
        + Sync,
>;

/// A global store (see [`crate::global`]).
#[derive(Clone)]
pub struct GlobalStoreSpec {
    pub name: String,
    pub topic: String,
    pub updater: GlobalUpdater,
}

impl std::fmt::Debug for GlobalStoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalStoreSpec")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .finish()
    }
}

/// Gives a record its timestamp: `(record, stream time of the task) -> timestamp`.
pub type TimestampExtractor = Arc<dyn Fn(&Record, i64) -> i64 + Send + Sync>;

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Topology {
    pub fn new() -> Self {
        Self::default()
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The names of the nodes `name` forwards to (none for an unknown node).
    pub fn children_of(&self, name: &str) -> Vec<&str> {
        let Some(i) = self.index(name) else {
            return Vec::new();
        };
        self.nodes
            .iter()
            .filter(|n| n.parents.contains(&i))
            .map(|n| n.name.as_str())
            .collect()
    }

    fn add(
        &mut self,
        name: &str,
        kind: NodeKind,
        parents: &[&str],
    ) -> Result<&mut Self, TopologyError> {
        if self.index(name).is_some() {
            return Err(TopologyError::DuplicateName(name.to_string()));
        }
        let mut ps = Vec::new();
        for p in parents {
            let i = self.index(p).ok_or_else(|| TopologyError::UnknownParent {
                node: name.to_string(),
                parent: p.to_string(),
            })?;
            if matches!(self.nodes[i].kind, NodeKind::Sink(_)) {
                return Err(TopologyError::SinkAsParent {
                    node: name.to_string(),
                    parent: p.to_string(),
                });
            }
            ps.push(i);
        }
        if ps.is_empty() && !matches!(kind, NodeKind::Source { .. }) {
            return Err(TopologyError::NoParent(name.to_string()));
        }
        self.nodes.push(Node {
            name: name.to_string(),
            kind,
            parents: ps,
            stores: Vec::new(),
        });
        Ok(self)
    }

    /// A global store `name`, a full copy of every partition of `topic` on each instance,
    /// kept by `updater` (Kafka's `addGlobalStore`). Processors read it with
    /// `ProcessorContext::global_get`.
    pub fn add_global_store(
        &mut self,
        name: &str,
        topic: &str,
        updater: GlobalUpdater,
    ) -> Result<&mut Self, TopologyError> {
        if self.stores.contains_key(name) || self.globals.iter().any(|g| g.name == name) {
            return Err(TopologyError::DuplicateStore(name.to_string()));
        }
        if self.source_topics().iter().any(|t| t == topic)
            || self.globals.iter().any(|g| g.topic == topic)
        {
            return Err(TopologyError::TopicReadTwice(topic.to_string()));
        }
        self.globals.push(GlobalStoreSpec {
            name: name.to_string(),
            topic: topic.to_string(),
            updater,
        });
        Ok(self)
    }

    /// A source reading `topics`.
    pub fn add_source(&mut self, name: &str, topics: &[&str]) -> Result<&mut Self, TopologyError> {
        if topics.is_empty() {
            return Err(TopologyError::NoTopic(name.to_string()));
        }
        for t in topics {
            if self.source_topics().contains(&t.to_string())
                || self.globals.iter().any(|g| &g.topic == t)
            {
                return Err(TopologyError::TopicReadTwice(t.to_string()));
            }
        }
        let topics = topics.iter().map(|t| t.to_string()).collect();
        self.add(
            name,
            NodeKind::Source {
                topics,
                pattern: None,
                extractor: None,
            },
            &[],
        )
    }

    /// A source reading every topic whose whole name matches `pattern` (a regular expression,
    /// as Kafka's pattern subscriptions): the topics are those that exist when the
    /// application starts, other than the application's own internal topics and topics other
    /// sources read. (A topic created later is picked up at the next start.)
    pub fn add_source_pattern(
        &mut self,
        name: &str,
        pattern: &str,
    ) -> Result<&mut Self, TopologyError> {
        let pattern = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            TopologyError::BadPattern {
                source_name: name.to_string(),
                reason: e.to_string(),
            }
        })?;
        self.add(
            name,
            NodeKind::Source {
                topics: Vec::new(),
                pattern: Some(pattern),
                extractor: None,
            },
            &[],
        )
    }

    /// This topology with each pattern source reading the topics of `existing` it matches
    /// (internal topics — names ending in `-changelog` or `-repartition` — and topics read by
    /// other sources excepted).
    pub fn with_pattern_topics<'a>(&self, existing: impl IntoIterator<Item = &'a str>) -> Topology {
        let mut t = self.clone();
        let taken = self.source_topics();
        let candidates: Vec<&str> = existing
            .into_iter()
            .filter(|name| {
                !taken.iter().any(|t| t == name)
                    && !name.ends_with("-changelog")
                    && !name.ends_with("-repartition")
                    && !name.starts_with("__")
            })
            .collect();
        for n in &mut t.nodes {
            if let NodeKind::Source {
                topics,
                pattern: Some(p),
                ..
            } = &mut n.kind
            {
                *topics = candidates
                    .iter()
                    .filter(|name| p.is_match(name))
                    .map(|name| name.to_string())
                    .collect();
                topics.sort();
            }
        }
        t
    }

    /// A source reading `topics` whose records take their timestamp from `extractor` (Kafka's
    /// `TimestampExtractor`: it sees the record, with the producer's timestamp, and the
    /// task's stream time; a negative result falls under the invalid-timestamp policy).
    pub fn add_source_with_extractor(
        &mut self,
        name: &str,
        topics: &[&str],
        extractor: TimestampExtractor,
    ) -> Result<&mut Self, TopologyError> {
        self.add_source(name, topics)?;
        if let Some(NodeKind::Source { extractor: e, .. }) =
            self.nodes.last_mut().map(|n| &mut n.kind)
        {
            *e = Some(extractor);
        }
        Ok(self)
    }

    /// A repartition topic after `parents`: what they forward is written, partitioned by
    /// key, to the internal topic `<application.id>-<name>-repartition` (created at start
    /// with as many partitions as the widest source topic, `cleanup.policy=delete`, records
    /// deleted once consumed and committed), and read back by the new source node `name`,
    /// which starts another sub-topology. Later nodes name `name` as their parent.
    pub fn add_repartition(
        &mut self,
        name: &str,
        parents: &[&str],
    ) -> Result<&mut Self, TopologyError> {
        let sink = format!("{name}-repartition-sink");
        self.add_sink(&sink, name, parents)?;
        if let Err(e) = self.add_source(name, &[name]) {
            self.nodes.pop();
            return Err(e);
        }
        self.repartitions.insert(name.to_string());
        Ok(self)
    }

    /// [`Topology::add_repartition`] with a topic of `partitions` partitions (Kafka Streams'
    /// `Repartitioned.numberOfPartitions`) instead of a count derived from the sources.
    pub fn add_repartition_with_partitions(
        &mut self,
        name: &str,
        partitions: i32,
        parents: &[&str],
    ) -> Result<&mut Self, TopologyError> {
        if partitions < 1 {
            return Err(TopologyError::BadPartitionCount {
                name: name.to_string(),
                partitions,
            });
        }
        self.add_repartition(name, parents)?;
        self.repartition_partitions
            .insert(name.to_string(), partitions);
        Ok(self)
    }

    /// The partition count repartition topic `topic` was given, if any.
    pub fn fixed_partitions(&self, topic: &str) -> Option<i32> {
        self.repartition_partitions.get(topic).copied()
    }

    /// The repartition topic `name` of an application (Kafka Streams' name).
    pub fn repartition_topic(application_id: &str, name: &str) -> String {
        format!("{application_id}-{name}-repartition")
    }

    /// The full names of the repartition topics of an application.
    pub fn repartition_topics(&self, application_id: &str) -> Vec<String> {
        self.repartitions
            .iter()
            .map(|n| Self::repartition_topic(application_id, n))
            .collect()
    }

    /// This topology as an application runs it: repartition topics under their full names.
    pub fn for_application(&self, application_id: &str) -> Topology {
        let mut t = self.clone();
        let full = |name: &str| -> Option<String> {
            self.repartitions
                .contains(name)
                .then(|| Self::repartition_topic(application_id, name))
        };
        for n in &mut t.nodes {
            match &mut n.kind {
                NodeKind::Source { topics, .. } => {
                    for topic in topics.iter_mut() {
                        if let Some(f) = full(topic).filter(|_| *topic == n.name) {
                            *topic = f;
                        }
                    }
                }
                NodeKind::Sink(SinkSpec {
                    topic: TopicChoice::Static(topic),
                    ..
                }) if n.name == format!("{topic}-repartition-sink") => {
                    if let Some(f) = full(topic) {
                        *topic = f.into();
                    }
                }
                _ => {}
            }
        }
        for group in &mut t.copartition_groups {
            *group = group
                .iter()
                .map(|topic| full(topic).unwrap_or_else(|| topic.clone()))
                .collect();
        }
        t.repartition_partitions = self
            .repartition_partitions
            .iter()
            .map(|(name, n)| (Self::repartition_topic(application_id, name), *n))
            .collect();
        t
    }

    /// A processor (a fresh one per task from `supplier`) fed by `parents`.
    pub fn add_processor(
        &mut self,
        name: &str,
        supplier: ProcessorSupplier,
        parents: &[&str],
    ) -> Result<&mut Self, TopologyError> {
        self.add(name, NodeKind::Processor { supplier }, parents)
    }

    /// A sink writing every record it gets to `topic`.
    pub fn add_sink(
        &mut self,
        name: &str,
        topic: &str,
        parents: &[&str],
    ) -> Result<&mut Self, TopologyError> {
        let spec = SinkSpec {
            topic: TopicChoice::Static(topic.into()),
            partitioner: None,
        };
        self.add(name, NodeKind::Sink(spec), parents)
    }

    /// A sink writing to `topic`, each record in the partition `partitioner` picks.
    pub fn add_sink_with_partitioner(
        &mut self,
        name: &str,
        topic: &str,
        partitioner: Arc<dyn Partitioner>,
        parents: &[&str],
    ) -> Result<&mut Self, TopologyError> {
        let spec = SinkSpec {
            topic: TopicChoice::Static(topic.into()),
            partitioner: Some(SinkPartitioner::Key(partitioner)),
        };
        self.add(name, NodeKind::Sink(spec), parents)
    }

    /// A sink with any settings: a topic (static or per record) and a partitioner.
    pub fn add_sink_spec(
        &mut self,
        name: &str,
        spec: SinkSpec,
        parents: &[&str],
    ) -> Result<&mut Self, TopologyError> {
        self.add(name, NodeKind::Sink(spec), parents)
    }

    /// A sink choosing each record's topic.
    pub fn add_sink_with(
        &mut self,
        name: &str,
        chooser: Arc<dyn Fn(&Record) -> String + Send + Sync>,
        parents: &[&str],
    ) -> Result<&mut Self, TopologyError> {
        let spec = SinkSpec {
            topic: TopicChoice::PerRecord(chooser),
            partitioner: None,
        };
        self.add(name, NodeKind::Sink(spec), parents)
    }

    /// A state store, connected to `processors` (they reach it through their context).
    pub fn add_state_store(
        &mut self,
        spec: StoreSpec,
        processors: &[&str],
    ) -> Result<&mut Self, TopologyError> {
        if self.stores.contains_key(&spec.name) {
            return Err(TopologyError::DuplicateStore(spec.name));
        }
        for p in processors {
            let i = self
                .index(p)
                .filter(|i| matches!(self.nodes[*i].kind, NodeKind::Processor { .. }))
                .ok_or_else(|| TopologyError::UnknownProcessor {
                    store: spec.name.clone(),
                    processor: p.to_string(),
                })?;
            self.nodes[i].stores.push(spec.name.clone());
        }
        self.stores.insert(spec.name.clone(), spec);
        Ok(self)
    }

    /// Gives processor `processor` access to the existing store `store` too (Kafka's
    /// `connectProcessorAndStateStores`): a join reading a table's store. Both then run in
    /// one sub-topology.
    pub fn connect_store(
        &mut self,
        store: &str,
        processor: &str,
    ) -> Result<&mut Self, TopologyError> {
        if !self.stores.contains_key(store) {
            return Err(TopologyError::UnknownStore(store.to_string()));
        }
        let i = self
            .index(processor)
            .filter(|i| matches!(self.nodes[*i].kind, NodeKind::Processor { .. }))
            .ok_or_else(|| TopologyError::UnknownProcessor {
                store: store.to_string(),
                processor: processor.to_string(),
            })?;
        if !self.nodes[i].stores.iter().any(|s| s == store) {
            self.nodes[i].stores.push(store.to_string());
        }
        Ok(self)
    }

    pub(crate) fn children(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for p in &n.parents {
                out[*p].push(i);
            }
        }
        out
    }

    fn source_topics(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::Source { topics, .. } => Some(topics.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The connected parts: nodes linked by parents, or by a shared store.
    pub fn sub_topologies(&self) -> Vec<SubTopology> {
        let n = self.nodes.len();
        let mut group: Vec<usize> = (0..n).collect();
        fn find(g: &mut [usize], x: usize) -> usize {
            let mut r = x;
            while g[r] != r {
                r = g[r];
            }
            g[x] = r;
            r
        }
        let union = |g: &mut Vec<usize>, a: usize, b: usize| {
            let (ra, rb) = (find(g, a), find(g, b));
            g[ra.max(rb)] = ra.min(rb);
        };
        for (i, node) in self.nodes.iter().enumerate() {
            for p in &node.parents {
                union(&mut group, i, *p);
            }
        }
        let mut by_store: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for s in &node.stores {
                if let Some(first) = by_store.insert(s, i) {
                    union(&mut group, i, first);
                }
            }
        }
        let mut parts: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..n {
            let root = find(&mut group, i);
            parts.entry(root).or_default().push(i);
        }
        parts
            .into_values()
            .enumerate()
            .map(|(id, nodes)| {
                let source_topics = nodes
                    .iter()
                    .filter_map(|i| match &self.nodes[*i].kind {
                        NodeKind::Source { topics, .. } => Some(topics.clone()),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                SubTopology {
                    id,
                    nodes,
                    source_topics,
                }
            })
            .collect()
    }

    /// Declares that `topics` (source topics) are joined, so partition `p` of each must hold
    /// the same keys: at start, differing partition counts are an error.
    pub fn copartition(&mut self, topics: &[&str]) -> Result<&mut Self, TopologyError> {
        let sources = self.source_topics();
        if let Some(t) = topics.iter().find(|t| !sources.contains(&t.to_string())) {
            return Err(TopologyError::NotASource(t.to_string()));
        }
        self.copartition_groups
            .push(topics.iter().map(|t| t.to_string()).collect());
        Ok(self)
    }

    /// The partition count a repartition topic must have to be co-partitioned with the
    /// topics it is joined with (the largest count among those in `counts`); `None` when it
    /// is joined with no topic of known count (then it takes the widest source's count).
    pub fn copartitioned_count(&self, topic: &str, counts: &BTreeMap<String, i32>) -> Option<i32> {
        self.copartition_groups
            .iter()
            .filter(|g| g.contains(topic))
            .flat_map(|g| g.iter().filter(|t| *t != topic))
            .filter_map(|t| counts.get(t).copied())
            .max()
    }

    /// Checks the source topics against their partition counts (`counts`, topic -> count):
    /// every source topic exists, and co-partitioned topics have equal counts.
    pub fn check_sources(&self, counts: &BTreeMap<String, i32>) -> Result<(), TopologyError> {
        if let Some(t) = self
            .source_topics()
            .into_iter()
            .find(|t| !counts.contains_key(t))
        {
            return Err(TopologyError::MissingSourceTopic(t));
        }
        for group in &self.copartition_groups {
            let sizes: Vec<(String, i32)> = group.iter().map(|t| (t.clone(), counts[t])).collect();
            if sizes.iter().any(|(_, n)| *n != sizes[0].1) {
                return Err(TopologyError::NotCopartitioned(sizes));
            }
        }
        Ok(())
    }

    /// The changelog topic of `store` for an application (Kafka Streams' name).
    pub fn changelog_topic(application_id: &str, store: &str) -> String {
        format!("{application_id}-{store}-changelog")
    }

    fn kind_label(&self, i: usize) -> String {
        let n = &self.nodes[i];
        match &n.kind {
            NodeKind::Source {
                pattern: Some(p), ..
            } => format!("Source: {} (topic pattern: {})", n.name, p.as_str()),
            NodeKind::Source { topics, .. } => {
                format!("Source: {} (topics: [{}])", n.name, topics.join(", "))
            }
            NodeKind::Processor { .. } => {
                format!("Processor: {} (stores: [{}])", n.name, n.stores.join(", "))
            }
            NodeKind::Sink(s) => match &s.topic {
                TopicChoice::Static(t) => format!("Sink: {} (topic: {t})", n.name),
                TopicChoice::PerRecord(_) => format!("Sink: {} (topic: chosen per record)", n.name),
            },
        }
    }

    /// Kafka Streams' text form: each sub-topology with its nodes, children and parents.
    pub fn describe(&self) -> String {
        let children = self.children();
        let mut out = String::from("Topologies:\n");
        for st in self.sub_topologies() {
            out.push_str(&format!("   Sub-topology: {}\n", st.id));
            for i in &st.nodes {
                out.push_str(&format!("    {}\n", self.kind_label(*i)));
                let kids: Vec<&str> = children[*i]
                    .iter()
                    .map(|c| self.nodes[*c].name.as_str())
                    .collect();
                let parents: Vec<&str> = self.nodes[*i]
                    .parents
                    .iter()
                    .map(|p| self.nodes[*p].name.as_str())
                    .collect();
                if !kids.is_empty() {
                    out.push_str(&format!("      --> {}\n", kids.join(", ")));
                }
                if !parents.is_empty() {
                    out.push_str(&format!("      <-- {}\n", parents.join(", ")));
                }
            }
        }
        out
    }

    /// Graphviz DOT: topics as ellipses, nodes as boxes, stores as cylinders.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph topology {\n  rankdir=LR;\n");
        for st in self.sub_topologies() {
            out.push_str(&format!(
                "  subgraph cluster_{} {{\n    label=\"sub-topology {}\";\n",
                st.id, st.id
            ));
            for i in &st.nodes {
                out.push_str(&format!("    \"{}\" [shape=box];\n", self.nodes[*i].name));
            }
            out.push_str("  }\n");
        }
        for (from, to) in self.edges() {
            out.push_str(&format!("  \"{from}\" -> \"{to}\";\n"));
        }
        out.push_str("}\n");
        out
    }

    /// Mermaid flowchart of the same graph.
    pub fn to_mermaid(&self) -> String {
        let id = |s: &str| s.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let mut out = String::from("flowchart LR\n");
        for (from, to) in self.edges() {
            out.push_str(&format!(
                "  {}[\"{from}\"] --> {}[\"{to}\"]\n",
                id(&from),
                id(&to)
            ));
        }
        out
    }

    /// Every edge: topic -> source, parent -> child, sink -> topic, store <-> processor.
    fn edges(&self) -> Vec<(String, String)> {
        let mut out = BTreeSet::new();
        for n in &self.nodes {
            match &n.kind {
                NodeKind::Source { topics, .. } => {
                    for t in topics {
                        out.insert((format!("topic {t}"), n.name.clone()));
                    }
                }
                NodeKind::Sink(SinkSpec {
                    topic: TopicChoice::Static(t),
                    ..
                }) => {
                    out.insert((n.name.clone(), format!("topic {t}")));
                }
                _ => {}
            }
            for p in &n.parents {
                out.insert((self.nodes[*p].name.clone(), n.name.clone()));
            }
            for s in &n.stores {
                out.insert((n.name.clone(), format!("store {s}")));
            }
        }
        out.into_iter().collect()
    }
}
