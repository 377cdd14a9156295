//! A task: one sub-topology running over one input partition, with its own processors, state
//! stores and stream time. It processes one record at a time, fires punctuations, and
//! collects what its sinks write.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::metrics::{DropReason, DroppedRecords};
use crate::processor::{
    Output, ProcessError, ProcessorContext, PunctuationType, Record, RecordMetadata, TaskParts,
};
use crate::state::changelog::{read_checkpoint, LoggedStore};
use crate::state::fjall_store::FjallStore;
use crate::state::memory::InMemoryStore;
use crate::state::KeyValueStore;
use crate::topology::{NodeKind, StoreBackend, TimestampExtractor, Topology};
use rill_log::types::TopicPartition;

/// What to do with a record whose timestamp is negative (Kafka's extractors fail on it by
/// default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InvalidTimestampPolicy {
    /// Stop with an error.
    #[default]
    Fail,
    /// Skip the record (logged and counted).
    LogAndSkip,
    /// Give it the task's current stream time.
    UseStreamTime,
}

/// A record cache's bytes unless the runtime says otherwise (Kafka's 10 MiB).
pub const DEFAULT_CACHE_MAX_BYTES: usize = 10 * 1024 * 1024;

/// (sub-topology, partition).
pub type TaskId = (usize, i32);

/// One sub-topology over one partition.
pub struct Task {
    pub id: TaskId,
    parts: TaskParts,
    /// Source node index per topic.
    sources: BTreeMap<String, usize>,
    /// Timestamp extractors of the sources that have one, per topic.
    extractors: BTreeMap<String, TimestampExtractor>,
    /// Where the task's persistent stores and their checkpoints live.
    task_dir: Option<PathBuf>,
    /// Stores kept on disk (under `task_dir`).
    persistent: BTreeSet<String>,
    policy: InvalidTimestampPolicy,
    /// Where the record being processed came from (reused from record to record).
    metadata: Option<RecordMetadata>,
    pub processed: u64,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("stream_time", &self.parts.stream_time)
            .finish()
    }
}

impl Task {
    /// Builds the task's processors and stores (persistent ones under `state_dir`) and calls
    /// every processor's `init`.
    pub fn new(
        topology: &Topology,
        id: TaskId,
        state_dir: Option<&Path>,
        policy: InvalidTimestampPolicy,
        wall_clock_ms: i64,
    ) -> Result<Task, ProcessError> {
        Self::with_changelogs(topology, id, state_dir, policy, wall_clock_ms, None)
    }

    /// [`Task::new`], with the stores marked `logged` writing to their changelogs
    /// (`<application_id>-<store>-changelog`, partition = the task's partition).
    pub fn with_changelogs(
        topology: &Topology,
        id: TaskId,
        state_dir: Option<&Path>,
        policy: InvalidTimestampPolicy,
        wall_clock_ms: i64,
        application_id: Option<&str>,
    ) -> Result<Task, ProcessError> {
        let sub = topology
            .sub_topologies()
            .into_iter()
            .find(|s| s.id == id.0)
            .ok_or_else(|| ProcessError::Failed(format!("no sub-topology {}", id.0)))?;
        let n = topology.nodes.len();
        let mut processors: Vec<Option<Box<dyn crate::processor::Processor>>> =
            (0..n).map(|_| None).collect();
        let mut sinks = vec![None; n];
        let mut sources = BTreeMap::new();
        let mut extractors = BTreeMap::new();
        let mut stores: BTreeMap<String, Box<dyn KeyValueStore>> = BTreeMap::new();
        let task_dir = state_dir.map(|d| d.join(format!("{}_{}", id.0, id.1)));
        let mut persistent = BTreeSet::new();
        for i in &sub.nodes {
            let node = &topology.nodes[*i];
            match &node.kind {
                NodeKind::Source {
                    topics, extractor, ..
                } => {
                    for t in topics {
                        sources.insert(t.clone(), *i);
                        if let Some(e) = extractor {
                            extractors.insert(t.clone(), Arc::clone(e));
                        }
                    }
                }
                NodeKind::Processor { supplier } => processors[*i] = Some(supplier()),
                NodeKind::Sink(spec) => sinks[*i] = Some(spec.clone()),
            }
            for s in &node.stores {
                if stores.contains_key(s) {
                    continue;
                }
                let spec = &topology.stores[s];
                let logged = spec.logged && application_id.is_some();
                let store: Box<dyn KeyValueStore> = match (spec.backend, &task_dir) {
                    (StoreBackend::Fjall | StoreBackend::RocksDb, Some(task_dir)) => {
                        let dir = task_dir.join(s);
                        // Without a checkpoint the local state is of unknown age: a full
                        // restore starts from nothing (see `state::changelog`).
                        if logged && read_checkpoint(task_dir, s).is_none() {
                            wipe(&dir).map_err(|e| {
                                ProcessError::Failed(format!("wiping {}: {e}", dir.display()))
                            })?;
                        }
                        persistent.insert(s.clone());
                        open_persistent(spec.backend, &dir, s)?
                    }
                    _ => Box::new(InMemoryStore::new(s.clone())),
                };
                let store: Box<dyn KeyValueStore> = match application_id {
                    Some(app) if logged => {
                        let tp = TopicPartition::new(Topology::changelog_topic(app, s), id.1);
                        // A persistent store writes behind; the runtime keeps all of them
                        // within `write_behind_max_bytes`.
                        let write_behind = if persistent.contains(s) {
                            usize::MAX
                        } else {
                            0
                        };
                        Box::new(LoggedStore::new(store, tp).with_write_behind(write_behind))
                    }
                    _ => store,
                };
                stores.insert(s.clone(), store);
            }
        }
        let stores: Vec<(String, Box<dyn KeyValueStore>)> = stores.into_iter().collect();
        // Each node's stores among the task's (a node outside this task's sub-topology has
        // none here: it never runs in it).
        let node_stores = topology
            .nodes
            .iter()
            .map(|n| {
                n.stores
                    .iter()
                    .filter_map(|s| stores.binary_search_by(|(name, _)| name.cmp(s)).ok())
                    .collect()
            })
            .collect();
        let mut task = Task {
            id,
            parts: TaskParts {
                processors,
                children: topology.children(),
                names: topology.nodes.iter().map(|n| n.name.clone()).collect(),
                node_stores,
                stores,
                sinks,
                output: Vec::new(),
                schedules: Vec::new(),
                stream_time: -1,
                wall_clock_ms,
                commit_requested: false,
                cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
                exactly_once: false,
                globals: None,
                dropped: Default::default(),
                unreported: Default::default(),
            },
            sources,
            extractors,
            task_dir,
            persistent,
            policy,
            metadata: None,
            processed: 0,
        };
        for i in sub.nodes {
            if let Some(mut p) = task.parts.processors[i].take() {
                let mut ctx = ProcessorContext {
                    parts: &mut task.parts,
                    node: i,
                    metadata: None,
                    task: id,
                };
                let r = p.init(&mut ctx);
                task.parts.processors[i] = Some(p);
                r?;
            }
        }
        Ok(task)
    }

    /// Sets the bytes each record cache of the task may hold.
    pub fn set_cache_max_bytes(&mut self, bytes: usize) {
        self.parts.cache_max_bytes = bytes;
    }

    /// Tells the task's processors it runs under exactly-once (see
    /// [`crate::processor::ProcessorContext::exactly_once`]).
    pub fn set_exactly_once(&mut self, on: bool) {
        self.parts.exactly_once = on;
    }

    /// Flushes every processor, upstream first (a node is added after its parents), so
    /// what one flushes reaches a downstream cache before that one flushes.
    pub fn flush(&mut self) -> Result<(), ProcessError> {
        for node in 0..self.parts.processors.len() {
            let Some(mut p) = self.parts.processors[node].take() else {
                continue;
            };
            let mut ctx = ProcessorContext {
                parts: &mut self.parts,
                node,
                metadata: None,
                task: self.id,
            };
            let r = p.flush(&mut ctx);
            self.parts.processors[node] = Some(p);
            r?;
        }
        Ok(())
    }

    /// Gives the task's processors the instance's global stores.
    pub fn set_globals(&mut self, globals: Arc<crate::global::GlobalStores>) {
        self.parts.globals = Some(globals);
    }

    /// The topics this task reads.
    pub fn topics(&self) -> Vec<String> {
        self.sources.keys().cloned().collect()
    }

    /// Records this task dropped so far, by reason.
    pub fn dropped(&self) -> DroppedRecords {
        self.parts.dropped
    }

    /// Drops counted since the last call (records, punctuations, flushes): what the
    /// runtime has yet to add to its metrics.
    pub(crate) fn unreported_drops(&mut self) -> Option<DroppedRecords> {
        self.parts.unreported.take()
    }

    pub fn stream_time(&self) -> i64 {
        self.parts.stream_time
    }

    /// Processes one record of `topic` (at `offset`), then fires due stream-time punctuations.
    pub fn process(
        &mut self,
        topic: &str,
        offset: i64,
        mut record: Record,
    ) -> Result<(), ProcessError> {
        let source = *self.sources.get(topic).ok_or_else(|| {
            ProcessError::Failed(format!("task {:?} does not read {topic}", self.id))
        })?;
        if let Some(extract) = self.extractors.get(topic) {
            record.timestamp = extract(&record, self.parts.stream_time);
        }
        if record.timestamp < 0 {
            match self.policy {
                InvalidTimestampPolicy::Fail => {
                    return Err(ProcessError::Failed(format!(
                        "record at {topic}-{}@{offset} has invalid timestamp {}",
                        self.id.1, record.timestamp
                    )))
                }
                InvalidTimestampPolicy::LogAndSkip => {
                    tracing::warn!(
                        topic,
                        offset,
                        timestamp = record.timestamp,
                        "skipping a record with an invalid timestamp"
                    );
                    self.parts
                        .count_dropped(DroppedRecords::one(DropReason::InvalidTimestamp));
                    return Ok(());
                }
                InvalidTimestampPolicy::UseStreamTime => {
                    record.timestamp = self.parts.stream_time.max(0)
                }
            }
        }
        self.parts.stream_time = self.parts.stream_time.max(record.timestamp);
        // One metadata value per task, updated in place.
        let m = self.metadata.get_or_insert_with(|| RecordMetadata {
            topic: topic.to_string(),
            partition: self.id.1,
            offset,
        });
        if m.topic != topic {
            m.topic = topic.to_string();
        }
        m.offset = offset;
        let mut ctx = ProcessorContext {
            parts: &mut self.parts,
            node: source,
            metadata: self.metadata.as_ref(),
            task: self.id,
        };
        ctx.forward(record)?;
        self.processed += 1;
        let now = self.parts.stream_time;
        self.punctuate(PunctuationType::StreamTime, now)
    }

    /// Moves the wall clock to `now_ms` and fires due wall-clock punctuations.
    pub fn advance_wall_clock(&mut self, now_ms: i64) -> Result<(), ProcessError> {
        self.parts.wall_clock_ms = self.parts.wall_clock_ms.max(now_ms);
        let now = self.parts.wall_clock_ms;
        self.punctuate(PunctuationType::WallClockTime, now)
    }

    /// Fires each schedule of `kind` due at `now`, once, and moves it to the next multiple of
    /// its interval after `now`.
    fn punctuate(&mut self, kind: PunctuationType, now: i64) -> Result<(), ProcessError> {
        for i in 0..self.parts.schedules.len() {
            let s = &mut self.parts.schedules[i];
            if s.kind != kind || now < s.next_ms || now < 0 || s.done {
                continue;
            }
            // The next multiple of the interval after `now`. An i64 may hold none: then it
            // never fires again (a wrapped product would fire it at every record).
            match (now / s.interval_ms + 1).checked_mul(s.interval_ms) {
                Some(next) => s.next_ms = next,
                None => s.done = true,
            }
            let node = s.node;
            let Some(mut callback) = s.callback.take() else {
                continue;
            };
            let mut p = self.parts.processors[node].take();
            let mut ctx = ProcessorContext {
                parts: &mut self.parts,
                node,
                metadata: None,
                task: self.id,
            };
            let r = callback(&mut ctx, now);
            if let Some(p) = p.take() {
                self.parts.processors[node] = Some(p);
            }
            self.parts.schedules[i].callback = Some(callback);
            r?;
        }
        Ok(())
    }

    /// Whether the sinks wrote anything not taken yet.
    pub fn has_output(&self) -> bool {
        !self.parts.output.is_empty()
    }

    /// What the sinks wrote since the last call.
    pub fn take_output(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.parts.output)
    }

    /// How many records the sinks wrote that were not taken yet.
    pub fn output_len(&self) -> usize {
        self.parts.output.len()
    }

    /// Moves what the sinks wrote into `out` (empty), keeping both buffers' capacity.
    pub fn swap_output(&mut self, out: &mut Vec<Output>) {
        std::mem::swap(&mut self.parts.output, out);
    }

    /// Where store `name`'s checkpoint lives, if the store is persistent.
    pub fn checkpoint_dir(&self, name: &str) -> Option<&Path> {
        self.task_dir
            .as_deref()
            .filter(|_| self.persistent.contains(name))
    }

    /// A state store of this task.
    pub fn store(&mut self, name: &str) -> Option<&mut dyn KeyValueStore> {
        // In name order, as built.
        let stores = &mut self.parts.stores;
        let at = stores
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()?;
        Some(stores[at].1.as_mut())
    }

    /// Every store of the task, by name.
    pub fn stores_mut(&mut self) -> impl Iterator<Item = (&String, &mut Box<dyn KeyValueStore>)> {
        self.parts.stores.iter_mut().map(|(n, s)| (&*n, s))
    }

    /// Whether a processor asked for a commit (and clears the request).
    pub fn take_commit_request(&mut self) -> bool {
        std::mem::take(&mut self.parts.commit_requested)
    }

    /// Flushes every store and closes every processor.
    pub fn close(mut self) -> Result<(), ProcessError> {
        for (_, s) in self.parts.stores.iter_mut() {
            s.flush()?;
        }
        for p in self.parts.processors.iter_mut().flatten() {
            p.close();
        }
        Ok(())
    }
}

/// Removes a store directory (nothing there is fine).
fn wipe(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Opens a persistent store of `backend` in `dir`.
fn open_persistent(
    backend: StoreBackend,
    dir: &Path,
    name: &str,
) -> Result<Box<dyn KeyValueStore>, ProcessError> {
    match backend {
        #[cfg(feature = "rocksdb")]
        StoreBackend::RocksDb => Ok(Box::new(crate::state::rocksdb_store::RocksDbStore::open(
            dir, name,
        )?)),
        #[cfg(not(feature = "rocksdb"))]
        StoreBackend::RocksDb => Err(ProcessError::Failed(format!(
            "store {name} wants RocksDB, but rill-core was built without its `rocksdb` feature"
        ))),
        _ => Ok(Box::new(FjallStore::open(dir, name)?)),
    }
}
