//! A test driver: runs a topology with no broker. Records piped into input topics go to the
//! task of their partition (murmur2 of the key, as Kafka's producer places them, or a given
//! partition) and are processed at once; sink output is collected per topic (and fed back
//! when the topology reads that topic too); the wall clock moves only when the test says.
//! Unlike Kafka's TopologyTestDriver, topics may have several partitions, each its own task
//! with its own stores and stream time.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rill_log::client::partitioner::partition_for_key;

use crate::processor::{ProcessError, Record};
use crate::state::KeyValueStore;
use crate::task::{InvalidTimestampPolicy, Task, TaskId};
use crate::topology::Topology;

/// Test driver settings.
#[derive(Debug, Clone, Default)]
pub struct TestDriverConfig {
    /// Partitions of a topic not listed in `topic_partitions`.
    pub default_partitions: i32,
    /// Partitions per topic; also the topics a pattern source may match.
    pub topic_partitions: BTreeMap<String, i32>,
    /// Where persistent stores live (none: every store is in memory).
    pub state_dir: Option<PathBuf>,
    pub invalid_timestamps: InvalidTimestampPolicy,
    pub wall_clock_start_ms: i64,
}

/// A record a sink wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub partition: i32,
    pub record: Record,
}

pub struct TestDriver {
    tasks: BTreeMap<TaskId, Task>,
    globals: std::sync::Arc<crate::global::GlobalStores>,
    /// Topic -> sub-topology reading it.
    readers: BTreeMap<String, usize>,
    partitions: BTreeMap<String, i32>,
    default_partitions: i32,
    outputs: BTreeMap<String, Vec<OutputRecord>>,
    offsets: BTreeMap<(String, i32), i64>,
    wall_clock_ms: i64,
    /// Commit (flush every processor) after each record and punctuation, as Kafka's driver
    /// does; off, only [`TestDriver::commit`] does.
    auto_commit: bool,
}

impl std::fmt::Debug for TestDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDriver")
            .field("tasks", &self.tasks.keys())
            .finish()
    }
}

impl TestDriver {
    /// Creates every task (one per sub-topology and partition) and initializes it.
    pub fn new(topology: &Topology, config: TestDriverConfig) -> Result<TestDriver, ProcessError> {
        let default_partitions = config.default_partitions.max(1);
        // A repartition topic joined with others has their partition count, as at run time.
        let mut config = config;
        for name in topology.repartitions.clone() {
            if let Some(n) = topology.fixed_partitions(&name) {
                config.topic_partitions.entry(name.clone()).or_insert(n);
            }
            if !config.topic_partitions.contains_key(&name) {
                let known: BTreeMap<String, i32> = topology
                    .copartition_groups
                    .iter()
                    .filter(|g| g.contains(&name))
                    .flatten()
                    .filter(|t| !topology.repartitions.contains(*t))
                    .map(|t| {
                        let n = config.topic_partitions.get(t).copied();
                        (t.clone(), n.unwrap_or(default_partitions))
                    })
                    .collect();
                if let Some(n) = topology.copartitioned_count(&name, &known) {
                    config.topic_partitions.insert(name, n);
                }
            }
        }
        let count = |t: &str| {
            config
                .topic_partitions
                .get(t)
                .copied()
                .unwrap_or(default_partitions)
        };
        // Pattern sources read the topics listed in `topic_partitions` that they match.
        let topology =
            &topology.with_pattern_topics(config.topic_partitions.keys().map(|t| t.as_str()));
        let globals = crate::global::GlobalStores::for_topology(topology);
        let mut tasks = BTreeMap::new();
        let mut readers = BTreeMap::new();
        for st in topology.sub_topologies() {
            let n = st.source_topics.iter().map(|t| count(t)).max().unwrap_or(0);
            for t in &st.source_topics {
                readers.insert(t.clone(), st.id);
            }
            for p in 0..n {
                let id = (st.id, p);
                let mut task = Task::new(
                    topology,
                    id,
                    config.state_dir.as_deref(),
                    config.invalid_timestamps,
                    config.wall_clock_start_ms,
                )?;
                task.set_globals(std::sync::Arc::clone(&globals));
                tasks.insert(id, task);
            }
        }
        Ok(TestDriver {
            tasks,
            globals,
            readers,
            partitions: config.topic_partitions,
            default_partitions,
            outputs: BTreeMap::new(),
            offsets: BTreeMap::new(),
            wall_clock_ms: config.wall_clock_start_ms,
            auto_commit: true,
        })
    }

    fn partitions_of(&self, topic: &str) -> i32 {
        self.partitions
            .get(topic)
            .copied()
            .unwrap_or(self.default_partitions)
    }

    /// Pipes a record into `topic`, to the partition of its key (partition 0 without a key).
    pub fn pipe(&mut self, topic: &str, record: Record) -> Result<(), ProcessError> {
        let partition = match &record.key {
            Some(k) => partition_for_key(k, self.partitions_of(topic)),
            None => 0,
        };
        self.pipe_to(topic, partition, record)
    }

    /// Pipes a record into one partition of `topic`.
    pub fn pipe_to(
        &mut self,
        topic: &str,
        partition: i32,
        record: Record,
    ) -> Result<(), ProcessError> {
        let offset = {
            let o = self
                .offsets
                .entry((topic.to_string(), partition))
                .or_insert(0);
            *o += 1;
            *o - 1
        };
        // A global store's topic goes to the global store (every task sees it).
        if self.globals.reads(topic) {
            return self.globals.apply(topic, &record);
        }
        let Some(sub) = self.readers.get(topic).copied() else {
            return Err(ProcessError::Failed(format!("no source reads {topic}")));
        };
        let task = self
            .tasks
            .get_mut(&(sub, partition))
            .ok_or_else(|| ProcessError::Failed(format!("{topic} has no partition {partition}")))?;
        task.process(topic, offset, record)?;
        // Kafka's test driver commits after every record: caches hold nothing back.
        if self.auto_commit {
            task.flush()?;
        }
        self.collect()
    }

    /// Routes what the sinks wrote: into the output topics, and back into the topology for
    /// topics it also reads.
    fn collect(&mut self) -> Result<(), ProcessError> {
        let mut pending = Vec::new();
        for task in self.tasks.values_mut() {
            pending.extend(task.take_output());
        }
        for out in pending {
            let (topic, record) = (out.topic, out.record);
            let n = self.partitions_of(&topic);
            let partition = out
                .partitioner
                .as_ref()
                .and_then(|p| p.partition(&topic, &record, n))
                .unwrap_or_else(|| record.key.as_deref().map_or(0, |k| partition_for_key(k, n)));
            self.outputs
                .entry(topic.to_string())
                .or_default()
                .push(OutputRecord {
                    partition,
                    record: record.clone(),
                });
            if self.readers.contains_key(&*topic) || self.globals.reads(&topic) {
                self.pipe_to(&topic, partition, record)?;
            }
        }
        Ok(())
    }

    /// Whether every record and punctuation is followed by a commit (on by default, as in
    /// Kafka's driver). Off, record caches hold their updates until [`TestDriver::commit`],
    /// as between two commits of a running application.
    pub fn set_auto_commit(&mut self, on: bool) {
        self.auto_commit = on;
    }

    /// Bytes each task's record caches may hold (`cache_max_bytes`; 10 MiB unless set):
    /// past it a cache flushes early and evicts what was updated least recently.
    pub fn set_cache_max_bytes(&mut self, bytes: usize) {
        for task in self.tasks.values_mut() {
            task.set_cache_max_bytes(bytes);
        }
    }

    /// Whether processors are told they run under exactly-once (off unless set; see
    /// [`crate::processor::ProcessorContext::exactly_once`]). The driver never processes a
    /// record twice, so either is true of it: a test can run a topology both ways.
    pub fn set_exactly_once(&mut self, on: bool) {
        for task in self.tasks.values_mut() {
            task.set_exactly_once(on);
        }
    }

    /// Commits: every task's processors flush (caches write and forward what they held),
    /// again as long as that fed records into tasks downstream of a repartition.
    pub fn commit(&mut self) -> Result<(), ProcessError> {
        loop {
            for task in self.tasks.values_mut() {
                task.flush()?;
            }
            if self.tasks.values().all(|t| !t.has_output()) {
                return Ok(());
            }
            self.collect()?;
        }
    }

    /// Moves the wall clock forward by `ms`, firing wall-clock punctuations.
    pub fn advance_wall_clock(&mut self, ms: i64) -> Result<(), ProcessError> {
        self.wall_clock_ms = self.wall_clock_ms.saturating_add(ms.max(0));
        let now = self.wall_clock_ms;
        for task in self.tasks.values_mut() {
            task.advance_wall_clock(now)?;
            if self.auto_commit {
                task.flush()?;
            }
        }
        self.collect()
    }

    /// Every record written to `topic` since the last read.
    pub fn read_output(&mut self, topic: &str) -> Vec<OutputRecord> {
        self.outputs.remove(topic).unwrap_or_default()
    }

    /// `key`'s value in global store `name`.
    pub fn global_get(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ProcessError> {
        self.globals.get(name, key)
    }

    /// A store of the task reading `topic`'s `partition`.
    pub fn store(
        &mut self,
        topic: &str,
        partition: i32,
        name: &str,
    ) -> Option<&mut dyn KeyValueStore> {
        let sub = *self.readers.get(topic)?;
        self.tasks.get_mut(&(sub, partition))?.store(name)
    }

    /// The task reading `topic`'s `partition`.
    pub fn task(&self, topic: &str, partition: i32) -> Option<&Task> {
        let sub = *self.readers.get(topic)?;
        self.tasks.get(&(sub, partition))
    }

    /// Records every task dropped so far, by reason (late records, null keys, invalid
    /// timestamps...).
    pub fn dropped(&self) -> crate::metrics::DroppedRecords {
        let mut all = crate::metrics::DroppedRecords::default();
        for t in self.tasks.values() {
            all += t.dropped();
        }
        all
    }

    /// Flushes and closes every task.
    pub fn close(self) -> Result<(), ProcessError> {
        for (_, t) in self.tasks {
            t.close()?;
        }
        Ok(())
    }
}
