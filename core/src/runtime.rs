//! The runtime: an application instance joins the consumer group
//! `application.id` for its source topics, runs one [`Task`] per assigned partition, writes
//! what sinks produce with a producer, and commits every `commit.interval.ms`: the output and
//! every store's changes (to its changelog) are acknowledged first, then the consumed offsets
//! are committed. A task that moves to another instance is committed and closed here, and
//! restored there from its changelogs before it processes anything, so state follows tasks.
//!
//! Under exactly-once (Kafka's `exactly_once_v2`) the instance has one transactional producer:
//! output, changelog changes and the consumed offsets of a commit interval go into one
//! transaction, inputs and changelogs are read `read_committed`, and a failed commit (say the
//! coordinator aborted a transaction past its timeout, fencing the producer) is recovered
//! from: a new epoch, every task rebuilt from its committed changelog, every partition
//! rewound to its committed offset, and the records since reprocessed, so each input record
//! affects output and state exactly once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rill_log::client::{
    Admin, ClientError, Consumer, ConsumerConfig, ConsumerRecord, Delivery, IsolationLevel,
    ListenerFuture, OffsetReset, Producer, ProducerConfig, ProducerRecord, RebalanceListener,
    ResponseError, Transport,
};
use rill_log::types::TopicPartition;
use tokio::sync::Mutex;

use crate::assignor::StreamsAssignor;
use crate::global::GlobalStores;
use crate::metrics::{DropReason, Metrics, MetricsSnapshot};
use crate::processor::{Output, ProcessError, Record};
use crate::state::changelog::{
    changelog_records, read_checkpoint, restore_into, write_checkpoint, ChangelogError,
};
use crate::task::{InvalidTimestampPolicy, Task, TaskId};
use crate::topology::{Topology, TopologyError};

/// What the runtime guarantees about each input record's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessingGuarantee {
    /// Nothing is lost; after a crash, records since the last commit are processed again.
    #[default]
    AtLeastOnce,
    /// Each record affects output and state exactly once (transactions, read_committed).
    ExactlyOnceV2,
}

/// Application settings, under Kafka Streams' names.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// `application.id`: the consumer group and the prefix of changelog topics.
    pub application_id: String,
    /// `commit.interval.ms`.
    pub commit_interval_ms: u64,
    /// `replication.factor`: replicas of the changelog and repartition topics the
    /// application creates (-1: the cluster's `default.replication.factor`).
    pub replication_factor: i16,
    /// `state.dir`: persistent stores live under it (none: in memory only).
    pub state_dir: Option<PathBuf>,
    pub processing_guarantee: ProcessingGuarantee,
    pub invalid_timestamps: InvalidTimestampPolicy,
    /// How long one poll waits for records.
    pub poll_ms: i32,
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: u64,
    /// `max.poll.interval.ms`: a stream thread that does not poll for this long (one batch
    /// of records took too long to process) leaves the group and loses its tasks.
    pub max_poll_interval_ms: i32,
    /// `transaction.timeout.ms` of the exactly-once producer.
    pub transaction_timeout_ms: i32,
    /// `num.stream.threads`: group members (each with its consumer, producer and tasks) in
    /// this instance.
    pub num_stream_threads: usize,
    /// `group.instance.id` (static membership, KIP-345): a restarted instance takes its
    /// tasks back without a rebalance; thread `i` joins as `<id>-<i>`.
    pub group_instance_id: Option<String>,
    /// `statestore.cache.max.bytes`: uncommitted store changes held by the instance; past it,
    /// a commit comes early. Split among stream threads, it also bounds each processor's
    /// record cache ([`crate::processor::ProcessorContext::cache_max_bytes`]).
    pub cache_max_bytes: usize,
    /// Committed store changes the instance's persistent stores may hold in memory before
    /// writing them to disk (write-behind, split among stream threads): a key updated in
    /// many commits is written once. Past it, a commit writes them all; checkpoints,
    /// closing and revocation always do.
    pub write_behind_max_bytes: usize,
    /// `deserialization.exception.handler`: a record whose key or value could not be
    /// deserialized (a processor returned [`ProcessError::Deserialization`]).
    pub deserialization_exception_handler: ExceptionHandler,
    /// `processing.exception.handler`: a record whose processing failed otherwise.
    pub processing_exception_handler: ExceptionHandler,
    /// `production.exception.handler`: an output record that could not be sent
    /// (at-least-once only; under exactly-once a failed send fails the transaction).
    pub production_exception_handler: ExceptionHandler,
    /// `repartition.purge.interval.ms`: how often consumed and committed records are
    /// deleted from repartition topics.
    pub repartition_purge_interval_ms: u64,
    /// Changes logged to a store's changelog after which a commit also syncs the store and
    /// writes its checkpoint: fewer fsyncs and store writes (a checkpoint writes the
    /// committed changes a persistent store holds back) against a longer restore after a
    /// crash. Kafka Streams checkpoints after 10,000 under at-least-once, at commits 30 s
    /// apart, and not at all while running under exactly-once; at 100 ms exactly-once commits
    /// the default here is 1,000,000 (a second or two of replay after a crash).
    pub checkpoint_after_changes: u64,
    /// `max.task.idle.ms`: a task reading several partitions takes the record with the
    /// smallest timestamp among them (Kafka Streams' timestamp synchronization). When one
    /// of its partitions has nothing buffered, the task waits while that partition is known
    /// to have records on the broker (0, the default), also up to this many milliseconds when
    /// it is caught up (positive), or never (-1: records are processed as they arrive).
    pub max_task_idle_ms: i64,
    /// `buffered.records.per.partition`: past this many records waiting in a task's buffer,
    /// the partition's fetching pauses.
    pub buffered_records_per_partition: usize,
}

/// What to do with a record that failed (Kafka Streams' exception handlers).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ExceptionHandler {
    /// Stop the stream thread with the error.
    #[default]
    Fail,
    /// Log it, count it as dropped, and go on.
    LogAndContinue,
    /// Write it to `topic` with its origin and the error in `__streams.errors.*` headers,
    /// then go on.
    DeadLetter { topic: String },
}

impl StreamsConfig {
    pub fn new(application_id: impl Into<String>) -> Self {
        StreamsConfig {
            application_id: application_id.into(),
            commit_interval_ms: 30_000,
            replication_factor: -1,
            state_dir: None,
            processing_guarantee: ProcessingGuarantee::AtLeastOnce,
            invalid_timestamps: InvalidTimestampPolicy::Fail,
            poll_ms: 100,
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            max_poll_interval_ms: 300_000,
            transaction_timeout_ms: 10_000,
            num_stream_threads: 1,
            group_instance_id: None,
            cache_max_bytes: 10 * 1024 * 1024,
            write_behind_max_bytes: 64 * 1024 * 1024,
            deserialization_exception_handler: ExceptionHandler::Fail,
            processing_exception_handler: ExceptionHandler::Fail,
            production_exception_handler: ExceptionHandler::Fail,
            repartition_purge_interval_ms: 30_000,
            checkpoint_after_changes: 1_000_000,
            max_task_idle_ms: 0,
            buffered_records_per_partition: 1_000,
        }
    }
}

/// Why an application stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Changelog(#[from] ChangelogError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

/// The tasks of this instance and what they consumed.
struct RunState {
    topology: Topology,
    config: StreamsConfig,
    transport: Arc<dyn Transport>,
    producer: Producer,
    tasks: BTreeMap<TaskId, Task>,
    /// Source topic -> sub-topology.
    sub_of: BTreeMap<String, usize>,
    /// Next offset to commit per consumed partition.
    consumed: BTreeMap<TopicPartition, i64>,
    /// Output not yet acknowledged.
    in_flight: Vec<Delivery>,
    /// What a task's sinks wrote, being sent (kept for its capacity).
    out_buf: Vec<Output>,
    /// Records a task processed that the metrics have not heard of yet (reported with each
    /// timed record, when another task's record comes, and after each batch): the metrics'
    /// lock once per several records rather than per record.
    unreported: (TaskId, u64),
    /// This stream thread's index.
    thread: usize,
    metrics: Arc<Metrics>,
    eos: bool,
    last_purge: std::time::Instant,
    /// Per store: the changelog end since its last checkpoint, and the changes logged since.
    unchecked: BTreeMap<(TaskId, String), (i64, u64)>,
    /// Partition counts of sink topics with a partitioner.
    partition_counts: BTreeMap<String, i32>,
    /// Records polled but not processed yet, per task and input partition: a task takes
    /// them in timestamp order across its partitions.
    buffers: BTreeMap<TaskId, BTreeMap<TopicPartition, VecDeque<ConsumerRecord>>>,
    /// Per task: since when it has been waiting for an empty partition.
    idle_since: BTreeMap<TaskId, tokio::time::Instant>,
    globals: Arc<GlobalStores>,
}

impl RunState {
    fn task_of(&self, tp: &TopicPartition) -> Option<TaskId> {
        self.sub_of.get(&tp.topic).map(|s| (*s, tp.partition.0))
    }

    /// Bytes of store changes waiting for the next commit, over every task.
    fn uncommitted_bytes(&mut self) -> usize {
        let mut total = 0;
        for task in self.tasks.values_mut() {
            total += task
                .stores_mut()
                .map(|(_, s)| s.uncommitted_bytes())
                .sum::<usize>();
        }
        total
    }

    /// Commits everything of `partitions` (all with `None`, and always all under
    /// exactly-once, where one transaction holds every task's work):
    /// 0. every task's processors flush (record caches write their stores and forward);
    /// 1. every store's uncommitted changes go to its changelog, and they and the output are
    ///    acknowledged;
    /// 2. exactly-once: the consumed offsets join the transaction, which commits;
    /// 3. the changes are written into local state, flushed, and checkpointed;
    /// 4. at-least-once: the consumed offsets are committed.
    ///
    /// Local state thus never runs ahead of the committed changelog (see `state::changelog`).
    /// A store is synced and checkpointed when `checkpoint` says so (closing, revoking) or
    /// once `checkpoint_after_changes` changes were logged since its last checkpoint; in between,
    /// its local state lies between the checkpoint and the committed changelog, from which a
    /// restore from the checkpoint catches up exactly.
    async fn commit(
        &mut self,
        consumer: &Consumer,
        partitions: Option<&[TopicPartition]>,
        checkpoint: bool,
    ) -> Result<(), StreamsError> {
        let started = std::time::Instant::now();
        self.flush_tasks().await?;
        // Each store's changes (task, store, changelog, changes), then their deliveries.
        let mut logged = Vec::new();
        for (id, task) in self.tasks.iter_mut() {
            for (name, store) in task.stores_mut() {
                if let Some(tp) = store.changelog().cloned() {
                    let changes = store.take_uncommitted();
                    if !changes.is_empty() {
                        logged.push((*id, name.clone(), tp, changes));
                    }
                }
            }
        }
        let mut changelog_deliveries = Vec::with_capacity(logged.len());
        for (id, name, tp, changes) in logged {
            let n = changes.len() as u64;
            let deliveries = self
                .producer
                .send_to_partition(&tp.topic, tp.partition.0, changelog_records(changes))
                .await?;
            changelog_deliveries.push((id, name, n, deliveries));
        }
        self.producer.flush().await;
        for d in std::mem::take(&mut self.in_flight) {
            d.await?;
        }
        // The changelog offset after each store's last change: its next checkpoint.
        for (id, name, n, deliveries) in changelog_deliveries {
            let mut end = 0;
            for d in deliveries {
                end = end.max(d.await?.offset + 1);
            }
            let due = self.unchecked.entry((id, name)).or_insert((end, 0));
            *due = (due.0.max(end), due.1 + n);
        }
        let offsets: Vec<(TopicPartition, i64)> = self
            .consumed
            .iter()
            .map(|(tp, o)| (tp.clone(), *o))
            .filter(|(tp, _)| self.eos || partitions.is_none_or(|ps| ps.contains(tp)))
            .collect();
        if self.eos {
            if let Some(group) = consumer.group_metadata() {
                if !offsets.is_empty() {
                    self.producer
                        .send_offsets_to_transaction(&offsets, &group)
                        .await?;
                }
            }
            self.producer.commit_transaction().await?;
            self.producer.begin_transaction()?;
        }
        for (id, task) in self.tasks.iter_mut() {
            let names: Vec<String> = task.stores_mut().map(|(n, _)| n.clone()).collect();
            for name in names {
                let key = (*id, name);
                let due = self
                    .unchecked
                    .get(&key)
                    .copied()
                    .filter(|(_, n)| checkpoint || *n >= self.config.checkpoint_after_changes);
                let name = key.1.as_str();
                if let Some(store) = task.store(name) {
                    store.apply_uncommitted().map_err(ProcessError::from)?;
                    if checkpoint || due.is_some() {
                        store.flush().map_err(ProcessError::from)?;
                    }
                }
                if let (Some((end, _)), Some(dir)) = (due, task.checkpoint_dir(name)) {
                    write_checkpoint(dir, name, end)?;
                    self.unchecked.remove(&key);
                }
            }
        }
        let held = self.bound_write_behind()?;
        if !self.eos && !offsets.is_empty() {
            consumer.commit_offsets(&offsets).await?;
        }
        self.metrics
            .record_commit(self.thread, started.elapsed(), held);
        self.purge_repartitions(&offsets).await;
        Ok(())
    }

    /// Past this thread's share of `write_behind_max_bytes`, every store writes the
    /// committed changes it held back. Returns the bytes still held.
    fn bound_write_behind(&mut self) -> Result<usize, StreamsError> {
        let budget = self.config.write_behind_max_bytes / self.config.num_stream_threads.max(1);
        let held: usize = self
            .tasks
            .values_mut()
            .flat_map(|t| t.stores_mut())
            .map(|(_, s)| s.unwritten_bytes())
            .sum();
        if held <= budget {
            return Ok(held);
        }
        for (_, store) in self.tasks.values_mut().flat_map(|t| t.stores_mut()) {
            store.write_unwritten().map_err(ProcessError::from)?;
        }
        Ok(0)
    }

    /// Deletes what was consumed and committed from repartition topics, at most every
    /// `repartition.purge.interval.ms` (Kafka Streams does the same: nobody reads it again).
    async fn purge_repartitions(&mut self, committed: &[(TopicPartition, i64)]) {
        let interval = Duration::from_millis(self.config.repartition_purge_interval_ms);
        if self.last_purge.elapsed() < interval {
            return;
        }
        self.last_purge = std::time::Instant::now();
        let internal = self
            .topology
            .repartition_topics(&self.config.application_id);
        let admin = Admin::new(Arc::clone(&self.transport));
        for (tp, offset) in committed
            .iter()
            .filter(|(tp, _)| internal.contains(&tp.topic))
        {
            if let Err(e) = admin
                .delete_records(&tp.topic, tp.partition.0, *offset)
                .await
            {
                // Only space is at stake: the next purge tries again.
                tracing::debug!(partition = %tp, error = %e, "purging a repartition topic");
            }
        }
    }

    /// Creates the task of each newly assigned partition and restores its stores.
    async fn assign(&mut self, partitions: &[TopicPartition]) -> Result<(), StreamsError> {
        for tp in partitions {
            let Some(id) = self.task_of(tp) else { continue };
            if self.tasks.contains_key(&id) {
                continue;
            }
            let mut task = Task::with_changelogs(
                &self.topology,
                id,
                self.config.state_dir.as_deref(),
                self.config.invalid_timestamps,
                0,
                Some(&self.config.application_id),
            )?;
            task.set_globals(Arc::clone(&self.globals));
            task.set_cache_max_bytes(
                self.config.cache_max_bytes / self.config.num_stream_threads.max(1),
            );
            task.set_exactly_once(self.eos);
            let names: Vec<String> = task.stores_mut().map(|(n, _)| n.clone()).collect();
            for name in names {
                let from = task
                    .checkpoint_dir(&name)
                    .and_then(|dir| read_checkpoint(dir, &name));
                let Some(store) = task.store(&name) else {
                    continue;
                };
                let Some(changelog) = store.changelog().cloned() else {
                    continue;
                };
                let metrics = &self.metrics;
                let report = restore_into(
                    store,
                    &changelog,
                    Arc::clone(&self.transport),
                    from,
                    self.eos,
                    |at, end| metrics.record_restore(&changelog, at, end),
                )
                .await?;
                self.metrics.record_restored(&changelog, report);
                tracing::info!(task = ?id, store = %name, from = report.from_offset,
                    records = report.records, "store restored");
            }
            self.tasks.insert(id, task);
        }
        Ok(())
    }

    /// After a failed exactly-once commit: a new producer epoch (which aborts what the failed
    /// transaction wrote), every task rebuilt from its committed changelogs, and every
    /// partition rewound to its committed offset.
    async fn recover(&mut self, consumer: &mut Consumer) -> Result<(), StreamsError> {
        tracing::warn!("exactly-once commit failed; restoring tasks to the last commit");
        self.metrics.record_recovery(self.thread);
        self.restart_transaction(consumer, &[]).await
    }

    /// Partitions lost (the membership is gone; someone else may own them now): their
    /// tasks go without a commit. Under exactly-once the open transaction holds what they —
    /// and every other task of the thread — sent since the last commit: had it stayed open,
    /// their output and changelog records would commit with the next transaction while their
    /// offsets do not, and be written again by whoever processes those records next. So it is
    /// aborted (Kafka Streams' `handleLostAll`), and any task left is rebuilt from its
    /// committed state.
    async fn lose(
        &mut self,
        consumer: &mut Consumer,
        partitions: &[TopicPartition],
    ) -> Result<(), StreamsError> {
        self.revoke(partitions);
        if self.eos {
            tracing::info!(
                partitions = partitions.len(),
                "partitions lost; aborting the open transaction"
            );
            self.restart_transaction(consumer, partitions).await?;
        }
        Ok(())
    }

    /// A new producer epoch (aborting the open transaction), every task rebuilt from its
    /// committed changelogs, and its partitions (all assigned ones but `gone`) rewound to
    /// their committed offsets.
    async fn restart_transaction(
        &mut self,
        consumer: &mut Consumer,
        gone: &[TopicPartition],
    ) -> Result<(), StreamsError> {
        self.in_flight.clear();
        self.producer.init_transactions().await?;
        self.producer.begin_transaction()?;
        let partitions: Vec<TopicPartition> = consumer
            .assignment()
            .into_iter()
            .filter(|tp| !gone.contains(tp))
            .collect();
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in &ids {
            // Dropped, not closed: their uncommitted changes go with them.
            self.tasks.remove(id);
            self.unchecked.retain(|(task, _), _| task != id);
            self.metrics.remove_task(*id);
        }
        self.consumed.clear();
        self.buffers.clear();
        self.idle_since.clear();
        let wanted: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| self.task_of(tp).is_some_and(|id| ids.contains(&id)))
            .cloned()
            .collect();
        self.assign(&wanted).await?;
        if partitions.is_empty() {
            return Ok(());
        }
        let committed = consumer.committed(&partitions).await?;
        for tp in &partitions {
            match committed.get(tp).copied().flatten() {
                Some(o) => consumer.seek(tp, o)?,
                None => consumer.seek_to_beginning(std::slice::from_ref(tp)).await?,
            }
        }
        Ok(())
    }

    /// Takes polled records: a run of one partition whose task reads that partition alone and
    /// has nothing buffered is processed at once (there is no order across partitions to
    /// keep), without a stop in a buffer; the other runs are filed under their tasks for
    /// [`RunState::process_buffered`].
    async fn take_polled(&mut self, records: Vec<ConsumerRecord>) -> Result<(), StreamsError> {
        let mut records = VecDeque::from(records);
        while let Some(first) = records.front() {
            // Records of one partition come together: each run is taken at once.
            let tp = TopicPartition::new(&*first.topic, first.partition);
            let n = records
                .iter()
                .take_while(|r| r.partition == tp.partition.0 && *r.topic == *tp.topic)
                .count();
            let last = records.get(n - 1).map(|r| r.offset);
            let run = records.drain(..n);
            let Some(id) = self.task_of(&tp).filter(|id| self.tasks.contains_key(id)) else {
                run.for_each(drop);
                continue;
            };
            let buffered = self
                .buffers
                .get(&id)
                .is_some_and(|bufs| bufs.values().any(|b| !b.is_empty()));
            if buffered || self.task_partitions(id).len() > 1 {
                self.buffers
                    .entry(id)
                    .or_default()
                    .entry(tp)
                    .or_default()
                    .extend(run);
                continue;
            }
            let processed = self.process_run(run).await;
            if let Err(e) = processed {
                self.report_processed();
                return Err(e);
            }
            if let Some(last) = last {
                self.consumed.insert(tp, last + 1);
            }
        }
        Ok(())
    }

    /// The input partitions of task `id` (one per source topic of its sub-topology).
    fn task_partitions(&self, id: TaskId) -> Vec<TopicPartition> {
        self.sub_of
            .iter()
            .filter(|(_, sub)| **sub == id.0)
            .map(|(t, _)| TopicPartition::new(t.clone(), id.1))
            .collect()
    }

    /// Processes buffered records, each task taking the record with the smallest timestamp
    /// among its partitions, while none of its partitions must be waited for; pauses the
    /// fetching of partitions with a full buffer and resumes the others.
    async fn process_buffered(&mut self, consumer: &mut Consumer) -> Result<(), StreamsError> {
        let idle_ms = self.config.max_task_idle_ms;
        let ids: Vec<TaskId> = self.buffers.keys().copied().collect();
        for id in ids {
            let partitions = self.task_partitions(id);
            while let Some(bufs) = self.buffers.get_mut(&id) {
                if idle_ms >= 0 && partitions.len() > 1 {
                    let empty: Vec<&TopicPartition> = partitions
                        .iter()
                        .filter(|tp| bufs.get(*tp).is_none_or(VecDeque::is_empty))
                        .collect();
                    let has_some = bufs.values().any(|b| !b.is_empty());
                    if has_some && !empty.is_empty() {
                        // Records known to be on the broker: wait for them.
                        if empty
                            .iter()
                            .any(|tp| consumer.lag(tp).is_some_and(|l| l > 0))
                        {
                            break;
                        }
                        if idle_ms > 0 {
                            let since = *self
                                .idle_since
                                .entry(id)
                                .or_insert_with(tokio::time::Instant::now);
                            if since.elapsed() < Duration::from_millis(idle_ms as u64) {
                                break;
                            }
                        }
                    } else {
                        self.idle_since.remove(&id);
                    }
                }
                let Some(bufs) = self.buffers.get_mut(&id) else {
                    break;
                };
                // The partition whose next record is oldest; it may go on until its records
                // pass the next-oldest head of the other partitions.
                let mut heads: Vec<(i64, &TopicPartition)> = bufs
                    .iter()
                    .filter_map(|(tp, b)| b.front().map(|r| (r.timestamp_ms, tp)))
                    .collect();
                heads.sort_by_key(|(ts, _)| *ts);
                let Some((_, tp)) = heads.first() else { break };
                let bound = heads.get(1).map_or(i64::MAX, |(ts, _)| *ts);
                let tp = (*tp).clone();
                let Some(buf) = bufs.get_mut(&tp) else { break };
                // The run: the first record, then those up to the bound.
                let n = 1 + buf
                    .iter()
                    .skip(1)
                    .take_while(|r| r.timestamp_ms <= bound)
                    .count();
                let Some(last) = buf.get(n - 1).map(|r| r.offset) else {
                    break;
                };
                // The buffer leaves the map while its run is processed (no copy of the run),
                // and goes back with what is left.
                let mut buf = std::mem::take(buf);
                let processed = self.process_run(buf.drain(..n)).await;
                if let Some(b) = self.buffers.get_mut(&id).and_then(|b| b.get_mut(&tp)) {
                    std::mem::swap(b, &mut buf);
                    b.extend(buf);
                }
                if let Err(e) = processed {
                    self.report_processed();
                    return Err(e);
                }
                self.consumed.insert(tp, last + 1);
            }
        }
        self.report_processed();
        self.buffers
            .retain(|_, bufs| bufs.values().any(|b| !b.is_empty()));
        // Backpressure: a partition whose buffer is full stops being fetched.
        let limit = self.config.buffered_records_per_partition.max(1);
        let mut full = Vec::new();
        for bufs in self.buffers.values() {
            for (tp, b) in bufs {
                if b.len() >= limit {
                    full.push(tp.clone());
                }
            }
        }
        let resume: Vec<TopicPartition> = consumer
            .paused()
            .into_iter()
            .filter(|tp| !full.contains(tp))
            .collect();
        consumer.resume(&resume);
        if !full.is_empty() {
            consumer.pause(&full)?;
        }
        Ok(())
    }

    /// Drops the tasks of revoked partitions (after they were committed).
    fn revoke(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(id) = self.task_of(tp) {
                self.unchecked.retain(|(task, _), _| *task != id);
                self.buffers.remove(&id);
                self.idle_since.remove(&id);
                if let Some(task) = self.tasks.remove(&id) {
                    if let Err(e) = task.close() {
                        tracing::warn!(task = ?id, error = %e, "closing a revoked task");
                    }
                    self.metrics.remove_task(id);
                }
            }
            self.consumed.remove(tp);
        }
    }
}

/// Commits and closes revoked tasks, creates and restores assigned ones.
struct Rebalance {
    state: Arc<Mutex<RunState>>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
}

impl Rebalance {
    fn fail(&self, e: impl ToString) {
        // The first failure is set in one step: a poisoned lock is safe to use.
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e.to_string());
    }
}

impl RebalanceListener for Rebalance {
    fn on_partitions_revoked<'a>(
        &'a self,
        consumer: &'a mut Consumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(async move {
            let mut st = self.state.lock().await;
            if let Err(e) = st.commit(consumer, Some(partitions), true).await {
                self.fail(e);
            }
            st.revoke(partitions);
        })
    }

    fn on_partitions_assigned<'a>(
        &'a self,
        _consumer: &'a mut Consumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(async move {
            if let Err(e) = self.state.lock().await.assign(partitions).await {
                self.fail(e);
            }
        })
    }

    fn on_partitions_lost<'a>(
        &'a self,
        consumer: &'a mut Consumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        // Someone else may own them already: drop without committing.
        Box::pin(async move {
            if let Err(e) = self.state.lock().await.lose(consumer, partitions).await {
                self.fail(e);
            }
        })
    }
}

/// One stream thread: a group member with its own consumer, producer and tasks.
struct StreamThread {
    run: tokio::task::JoinHandle<Result<(), StreamsError>>,
    state: Arc<Mutex<RunState>>,
}

/// A running application instance of `num_stream_threads` stream threads.
pub struct KafkaStreams {
    stop: Arc<AtomicBool>,
    threads: Vec<StreamThread>,
    metrics: Arc<Metrics>,
    globals: Arc<GlobalStores>,
    /// The global stores' thread, if the topology has any.
    global: Option<tokio::task::JoinHandle<Result<(), ClientError>>>,
}

impl std::fmt::Debug for KafkaStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaStreams").finish_non_exhaustive()
    }
}

/// The file under `state.dir` that keeps the instance's process id across restarts.
const PROCESS_ID_FILE: &str = "rill-process-id";

/// This instance's process id: kept in `state_dir` when there is one, so that a restarted
/// instance reuses its transactional ids, and its first `init_transactions` fences its
/// previous incarnation and aborts that one's open transaction at once (instead of waiting
/// for `transaction.timeout.ms`).
fn process_id(state_dir: Option<&std::path::Path>) -> String {
    let fresh = || {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{:x}-{:x}", std::process::id(), nanos)
    };
    let Some(dir) = state_dir else {
        return fresh();
    };
    let path = dir.join(PROCESS_ID_FILE);
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return id.to_string();
        }
    }
    let id = fresh();
    let tmp = dir.join(format!("{PROCESS_ID_FILE}.tmp"));
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, &id))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the process id");
    }
    id
}

impl KafkaStreams {
    /// Starts an instance of `topology` (needs a tokio runtime): creates missing changelog
    /// topics, and each stream thread joins the group and processes until
    /// [`KafkaStreams::close`].
    pub fn start(
        topology: Topology,
        transport: Arc<dyn Transport>,
        config: StreamsConfig,
    ) -> KafkaStreams {
        let topology = topology.for_application(&config.application_id);
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::default());
        let sub_of = sources_of(&topology);
        let eos = config.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2;
        let process = process_id(config.state_dir.as_deref());
        // Global stores are read to the end before any task starts.
        let globals = GlobalStores::for_topology(&topology);
        let ready = Arc::new(AtomicBool::new(globals.is_empty()));
        let global = (!globals.is_empty()).then(|| {
            tokio::spawn(crate::global::run_global(
                Arc::clone(&globals),
                Arc::clone(&transport),
                eos,
                config.poll_ms,
                Arc::clone(&ready),
                Arc::clone(&stop),
            ))
        });
        let threads = (0..config.num_stream_threads.max(1))
            .map(|thread| {
                let producer = Producer::new(
                    Arc::clone(&transport),
                    ProducerConfig {
                        linger_ms: 5,
                        transactional_id: eos
                            .then(|| format!("{}-{process}-{thread}", config.application_id)),
                        transaction_timeout_ms: config.transaction_timeout_ms,
                        ..Default::default()
                    },
                );
                let state = Arc::new(Mutex::new(RunState {
                    topology: topology.clone(),
                    config: config.clone(),
                    transport: Arc::clone(&transport),
                    producer,
                    tasks: BTreeMap::new(),
                    sub_of: sub_of.clone(),
                    consumed: BTreeMap::new(),
                    in_flight: Vec::new(),
                    out_buf: Vec::new(),
                    unreported: ((0, 0), 0),
                    thread,
                    metrics: Arc::clone(&metrics),
                    eos,
                    last_purge: std::time::Instant::now(),
                    unchecked: BTreeMap::new(),
                    partition_counts: BTreeMap::new(),
                    buffers: BTreeMap::new(),
                    idle_since: BTreeMap::new(),
                    globals: Arc::clone(&globals),
                }));
                let run = tokio::spawn(run(
                    Arc::clone(&state),
                    Arc::clone(&stop),
                    Arc::clone(&ready),
                ));
                StreamThread { run, state }
            })
            .collect();
        KafkaStreams {
            stop,
            threads,
            metrics,
            globals,
            global,
        }
    }

    /// Whether every stream thread is still running (one that failed stops; [`close`] tells
    /// why).
    ///
    /// [`close`]: KafkaStreams::close
    pub fn is_running(&self) -> bool {
        self.threads.iter().all(|t| !t.run.is_finished())
            && self.global.as_ref().is_none_or(|g| !g.is_finished())
    }

    /// Interactive queries on global store `name` (`None`: no such store).
    pub fn query_global<R>(
        &self,
        name: &str,
        query: impl FnOnce(&dyn crate::state::KeyValueStore) -> R,
    ) -> Option<R> {
        self.globals.with(name, query)
    }

    /// Records processed by this instance so far.
    pub fn processed(&self) -> u64 {
        self.metrics.processed()
    }

    /// Exactly-once commits that failed and were redone from the last commit.
    pub fn recoveries(&self) -> u64 {
        let snapshot = self.metrics.snapshot();
        snapshot.threads.iter().map(|t| t.recoveries).sum()
    }

    /// Every figure of the instance, per task and per thread.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// The tasks each stream thread runs now (Kafka Streams' `metadataForLocalThreads`).
    pub async fn thread_tasks(&self) -> Vec<BTreeSet<TaskId>> {
        let mut out = Vec::with_capacity(self.threads.len());
        for t in &self.threads {
            out.push(t.state.lock().await.tasks.keys().copied().collect());
        }
        out
    }

    /// Interactive queries: calls `query` with store `name` of every task this instance runs
    /// now (one store instance per task, each holding its partition's keys), and collects
    /// what it returns. Reads see changes not yet committed, as Kafka Streams' queries do.
    pub async fn query_store<R>(
        &self,
        name: &str,
        mut query: impl FnMut(TaskId, &dyn crate::state::KeyValueStore) -> R,
    ) -> Vec<R> {
        let mut out = Vec::new();
        for t in &self.threads {
            let mut state = t.state.lock().await;
            for (id, task) in state.tasks.iter_mut() {
                if let Some(store) = task.store(name) {
                    out.push(query(*id, &*store));
                }
            }
        }
        out
    }

    /// The tasks this instance runs now.
    pub async fn tasks(&self) -> BTreeSet<TaskId> {
        let mut all = BTreeSet::new();
        for t in &self.threads {
            all.extend(t.state.lock().await.tasks.keys().copied());
        }
        all
    }

    /// Stops every stream thread at once, committing nothing and leaving the group to time
    /// the members out: what a crash does (for tests and demonstrations of recovery). Open
    /// transactions are aborted when the next instance with the same state directory starts
    /// (it reuses the transactional ids and fences this one), or by their timeout.
    pub fn abort(self) {
        for t in self.threads {
            t.run.abort();
        }
        if let Some(g) = self.global {
            g.abort();
        }
    }

    /// Commits, closes every task, leaves the group; the first thread's error, if any.
    pub async fn close(self) -> Result<(), StreamsError> {
        self.stop.store(true, Ordering::SeqCst);
        let mut result = Ok(());
        for t in self.threads {
            let r = t
                .run
                .await
                .map_err(|e| StreamsError::Process(ProcessError::Failed(e.to_string())))
                .and_then(|r| r);
            if result.is_ok() {
                result = r;
            }
        }
        if let Some(g) = self.global {
            let r = g
                .await
                .map_err(|e| StreamsError::Process(ProcessError::Failed(e.to_string())))
                .and_then(|r| r.map_err(StreamsError::from));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// The input records that wrote a task's outputs: their partition, and per output index the
/// offset of the record that wrote the outputs from there on.
#[derive(Debug, Clone, Copy)]
struct Origin<'a> {
    topic: &'a str,
    partition: i32,
    offsets: &'a [(usize, i64)],
}

impl<'a> Origin<'a> {
    fn new(topic: &'a str, partition: i32, offsets: &'a [(usize, i64)]) -> Self {
        Origin {
            topic,
            partition,
            offsets,
        }
    }
}

/// What a poison record or a failed send does, per [`ExceptionHandler`].
enum Handled {
    /// Carry on (counted as dropped).
    Continue,
    /// Stop the thread with this error.
    Fail(StreamsError),
}

impl RunState {
    /// Applies the handler to a record that failed in `stage` (`processing` or
    /// `production`): the dead-letter option writes it, with its origin and the error in
    /// headers (Kafka's `__streams.errors.*`, KIP-1034), to the dead-letter topic.
    async fn handle_error(
        &mut self,
        handler: &ExceptionHandler,
        stage: &str,
        origin: Option<(&str, i32, i64)>,
        record: Option<ProducerRecord>,
        error: StreamsError,
    ) -> Handled {
        match handler {
            ExceptionHandler::Fail => return Handled::Fail(error),
            ExceptionHandler::LogAndContinue => {
                tracing::warn!(stage, ?origin, error = %error, "skipping a failed record");
            }
            ExceptionHandler::DeadLetter { topic } => {
                tracing::warn!(stage, ?origin, error = %error, dlq = %topic,
                    "sending a failed record to the dead-letter topic");
                let mut dead = match record {
                    Some(r) => {
                        let mut d = ProducerRecord::new(topic.clone(), r.key, Vec::<u8>::new());
                        d.value = r.value;
                        d.headers = r.headers;
                        d
                    }
                    None => ProducerRecord::new(topic.clone(), None::<Vec<u8>>, Vec::<u8>::new()),
                };
                let mut header = |k: &str, v: String| dead.headers.push((k.into(), Some(v.into())));
                header("__streams.errors.exception", stage.to_string());
                header("__streams.errors.message", error.to_string());
                if let Some((t, p, o)) = origin {
                    header("__streams.errors.topic", t.to_string());
                    header("__streams.errors.partition", p.to_string());
                    header("__streams.errors.offset", o.to_string());
                }
                match self.producer.send(dead).await {
                    Ok(d) => self.in_flight.push(d),
                    Err(e) => return Handled::Fail(e.into()),
                }
            }
        }
        Handled::Continue
    }

    /// Counts a record `id` processed (in `took`, if it was timed) towards the metrics.
    fn count_processed(&mut self, id: TaskId, took: Option<Duration>) {
        if self.unreported.0 != id {
            self.report_processed();
            self.unreported.0 = id;
        }
        self.unreported.1 += 1;
        if took.is_some() {
            let n = std::mem::take(&mut self.unreported.1);
            self.metrics.record_processed(self.thread, id, n, took);
        }
    }

    /// Tells the metrics of the processed records they have not heard of.
    fn report_processed(&mut self) {
        let (id, n) = self.unreported;
        if n > 0 {
            self.metrics.record_processed(self.thread, id, n, None);
            self.unreported.1 = 0;
        }
    }

    /// Whether failures need each record's original bytes: a dead-letter topic for poison
    /// records, or (under at-least-once) for refused sends. Records then go one by one.
    fn keeps_originals(&self) -> bool {
        let dead_letters = |h: &ExceptionHandler| matches!(h, ExceptionHandler::DeadLetter { .. });
        dead_letters(&self.config.processing_exception_handler)
            || dead_letters(&self.config.deserialization_exception_handler)
            || (!self.eos && dead_letters(&self.config.production_exception_handler))
    }

    /// Processes a run of consumed records of one partition, in order. What the sinks write
    /// is sent once per run (or per `OUTPUT_BATCH` outputs), not per record: the records in
    /// between go through their task without a wait.
    async fn process_run(
        &mut self,
        run: impl Iterator<Item = ConsumerRecord> + Send,
    ) -> Result<(), StreamsError> {
        if self.keeps_originals() {
            for r in run {
                self.process(r).await?;
            }
            return Ok(());
        }
        let mut run = run.peekable();
        let Some((topic, partition)) = run.peek().map(|r| (r.topic.clone(), r.partition)) else {
            return Ok(());
        };
        let Some(id) = self.sub_of.get(&*topic).map(|s| (*s, partition)) else {
            return Ok(());
        };
        // Per output index: the offset of the record that wrote the outputs from there on.
        let mut origins: Vec<(usize, i64)> = Vec::new();
        while run.peek().is_some() {
            origins.clear();
            let mut failed = None;
            for r in run.by_ref() {
                let Some(task) = self.tasks.get(&id) else {
                    return Ok(());
                };
                origins.push((task.output_len(), r.offset));
                let offset = r.offset;
                if let Err(e) = self.run_record(id, r) {
                    failed = Some((e, offset));
                    break;
                }
                if self
                    .tasks
                    .get(&id)
                    .is_some_and(|t| t.output_len() >= OUTPUT_BATCH)
                {
                    break;
                }
            }
            let failed = failed.map(|(e, offset)| (e, offset, None));
            let origin = Origin::new(&topic, partition, &origins);
            self.finish_records(id, origin, failed).await?;
        }
        Ok(())
    }

    /// Runs consumed record `r` through task `id`, leaving what its sinks wrote in the
    /// task's output buffer; counts it towards the metrics.
    fn run_record(&mut self, id: TaskId, r: ConsumerRecord) -> Result<(), ProcessError> {
        let Some(task) = self.tasks.get_mut(&id) else {
            return Ok(());
        };
        let record = Record {
            key: r.key,
            value: r.value,
            timestamp: r.timestamp_ms,
            headers: r.headers,
            typed: None,
        };
        // One record in `PROCESS_LATENCY_SAMPLE` is timed: reading the clock twice per
        // record cost more than the rest of the metrics.
        let started = task
            .processed
            .is_multiple_of(PROCESS_LATENCY_SAMPLE)
            .then(std::time::Instant::now);
        let result = task.process(&r.topic, r.offset, record);
        let newly_dropped = task.unreported_drops();
        self.count_processed(id, started.map(|s| s.elapsed()));
        if let Some(dropped) = newly_dropped {
            self.metrics.record_dropped(self.thread, id, dropped);
        }
        result
    }

    /// The stage and the exception handler of a processing failure.
    fn handler_for(&self, e: &ProcessError) -> (&'static str, ExceptionHandler) {
        match e {
            ProcessError::Deserialization(_) => (
                "deserialization",
                self.config.deserialization_exception_handler.clone(),
            ),
            _ => (
                "processing",
                self.config.processing_exception_handler.clone(),
            ),
        }
    }

    /// Processes one consumed record in its task, sends what the sinks wrote, and applies
    /// the processing exception handler to a failure, keeping the record for a dead-letter
    /// topic.
    async fn process(&mut self, r: ConsumerRecord) -> Result<(), StreamsError> {
        let Some(id) = self.sub_of.get(&*r.topic).map(|s| (*s, r.partition)) else {
            return Ok(());
        };
        let original = {
            let mut o = ProducerRecord::new(&*r.topic, r.key.clone(), Vec::<u8>::new());
            o.value = r.value.clone();
            o.headers = r.headers.clone();
            o
        };
        let (topic, partition, offset) = (r.topic.clone(), r.partition, r.offset);
        let failed = self.run_record(id, r).err();
        let failed = failed.map(|e| (e, offset, Some(original)));
        let offsets = [(0, offset)];
        let origin = Origin::new(&topic, partition, &offsets);
        self.finish_records(id, origin, failed).await
    }

    /// After records of `origin` went through task `id`: applies the processing exception
    /// handler to the one that `failed` (with its offset, and its original for a dead-letter
    /// topic), then sends what the task's sinks wrote.
    async fn finish_records(
        &mut self,
        id: TaskId,
        origin: Origin<'_>,
        failed: Option<(ProcessError, i64, Option<ProducerRecord>)>,
    ) -> Result<(), StreamsError> {
        let Some(task) = self.tasks.get_mut(&id) else {
            return Ok(());
        };
        // Two buffers take turns: the task's and this one (no allocation per record).
        let mut output = std::mem::take(&mut self.out_buf);
        task.swap_output(&mut output);
        if let Some((e, offset, original)) = failed {
            let (stage, handler) = self.handler_for(&e);
            let reason = match e {
                ProcessError::Deserialization(_) => DropReason::Deserialization,
                _ => DropReason::Processing,
            };
            let at = Some((origin.topic, origin.partition, offset));
            match self
                .handle_error(&handler, stage, at, original, e.into())
                .await
            {
                Handled::Continue => self.metrics.record_dropped_one(self.thread, id, reason),
                Handled::Fail(e) => {
                    output.clear();
                    self.out_buf = output;
                    return Err(e);
                }
            }
        }
        let sent = self.send_output(&mut output, Some(origin), id).await;
        // What a failed send left is not sent later (a recovery replays its input).
        output.clear();
        self.out_buf = output;
        sent
    }

    /// Sends what a task's sinks wrote. `origin`: the input partition whose records wrote
    /// it, and per output index the offset of the record that wrote the outputs from there
    /// on (for the production exception handler).
    async fn send_output(
        &mut self,
        output: &mut Vec<Output>,
        origin: Option<Origin<'_>>,
        id: TaskId,
    ) -> Result<(), StreamsError> {
        // A sink's partitioner needs its topic's partition count.
        let unknown: Vec<String> = output
            .iter()
            .filter(|o| o.partitioner.is_some() && !self.partition_counts.contains_key(&*o.topic))
            .map(|o| o.topic.to_string())
            .collect();
        for topic in unknown {
            self.partitions_of(&topic).await?;
        }
        let dead_letters = matches!(
            self.config.production_exception_handler,
            ExceptionHandler::DeadLetter { .. }
        );
        let keep_copies = !self.eos && dead_letters;
        let origin_of = |i: usize| {
            origin.map(|o| {
                let at = o.offsets.partition_point(|(from, _)| *from <= i).max(1) - 1;
                (
                    o.topic,
                    o.partition,
                    o.offsets.get(at).map_or(-1, |(_, o)| *o),
                )
            })
        };
        let mut rest = output.drain(..);
        // Outputs taken from `rest` so far.
        let mut taken: usize = 0;
        loop {
            let counts = &self.partition_counts;
            let to_record = |out: Output| {
                let partition = out.partitioner.as_ref().and_then(|p| {
                    let n = counts.get(&*out.topic).copied().unwrap_or(1);
                    p.partition(&out.topic, &out.record, n)
                });
                let o = out.record;
                ProducerRecord {
                    topic: out.topic,
                    partition,
                    key: o.key,
                    value: o.value,
                    timestamp_ms: Some(o.timestamp),
                    headers: o.headers,
                }
            };
            let (result, copy) = if keep_copies {
                // The handler may send a refused record to a dead-letter topic: one by one,
                // each with a copy.
                let Some(out) = rest.next() else {
                    return Ok(());
                };
                taken += 1;
                let record = to_record(out);
                let copy = record.clone();
                let sent = self.producer.send(record).await;
                (
                    sent.map(|d| Delivery::keep_last_of_batch(&mut self.in_flight, d)),
                    Some(copy),
                )
            } else {
                let mut records = rest.by_ref().inspect(|_| taken += 1).map(to_record);
                let sent = self
                    .producer
                    .send_all(&mut records, &mut self.in_flight)
                    .await;
                if sent.is_ok() {
                    return Ok(());
                }
                (sent, None)
            };
            let Err(e) = result else { continue };
            if self.eos {
                return Err(e.into());
            }
            // Under at-least-once a refused send goes to the production exception handler.
            let handler = self.config.production_exception_handler.clone();
            match self
                .handle_error(
                    &handler,
                    "production",
                    origin_of(taken.saturating_sub(1)),
                    copy,
                    e.into(),
                )
                .await
            {
                Handled::Continue => {
                    self.metrics
                        .record_dropped_one(self.thread, id, DropReason::Production)
                }
                Handled::Fail(e) => return Err(e),
            }
        }
    }

    /// Flushes every task's processors (record caches write and forward what they held) and
    /// sends what that produced, ahead of a commit.
    async fn flush_tasks(&mut self) -> Result<(), StreamsError> {
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            task.flush()?;
            // The buffer keeps its capacity from one commit to the next.
            let mut output = std::mem::take(&mut self.out_buf);
            task.swap_output(&mut output);
            let sent = self.send_output(&mut output, None, id).await;
            // What a failed send left is not sent later.
            output.clear();
            self.out_buf = output;
            sent?;
        }
        Ok(())
    }

    /// The partition count of `topic`, for a sink's partitioner (asked once per topic).
    async fn partitions_of(&mut self, topic: &str) -> Result<i32, StreamsError> {
        if let Some(n) = self.partition_counts.get(topic) {
            return Ok(*n);
        }
        let described = Admin::new(Arc::clone(&self.transport))
            .list_topics()
            .await?
            .into_iter()
            .find(|t| t.name == topic);
        let n = described.map_or(0, |t| t.partitions);
        if n < 1 {
            return Err(TopologyError::MissingSinkTopic(topic.to_string()).into());
        }
        self.partition_counts.insert(topic.to_string(), n);
        Ok(n)
    }
}

/// Every how many records of a task the process latency is measured.
const PROCESS_LATENCY_SAMPLE: u64 = 64;

/// Outputs collected from a run of records before they are sent: a bound on the memory
/// a run's outputs take.
const OUTPUT_BATCH: usize = 4096;

async fn run(
    state: Arc<Mutex<RunState>>,
    stop: Arc<AtomicBool>,
    globals_ready: Arc<AtomicBool>,
) -> Result<(), StreamsError> {
    // Tasks may read global stores: wait until those have caught up with their topics.
    while !globals_ready.load(Ordering::SeqCst) {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (transport, config, topology, thread) = {
        let st = state.lock().await;
        (
            Arc::clone(&st.transport),
            st.config.clone(),
            st.topology.clone(),
            st.thread,
        )
    };
    state.lock().await.metrics.register_thread(thread);
    // Pattern sources read the topics that exist now.
    let existing = Admin::new(Arc::clone(&transport)).list_topics().await?;
    let topology = topology.with_pattern_topics(existing.iter().map(|t| t.name.as_str()));
    let sub_of = sources_of(&topology);
    {
        let mut st = state.lock().await;
        st.topology = topology.clone();
        st.sub_of = sub_of.clone();
    }
    let topics: Vec<String> = sub_of.keys().cloned().collect();
    prepare_topics(&transport, &config, &topology, &topics).await?;
    let eos = config.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2;
    if eos {
        let st = state.lock().await;
        st.producer.init_transactions().await?;
        st.producer.begin_transaction()?;
    }
    let failure = Arc::new(std::sync::Mutex::new(None));
    let mut consumer = Consumer::new(
        Arc::clone(&transport),
        ConsumerConfig {
            group_id: Some(config.application_id.clone()),
            group_instance_id: config
                .group_instance_id
                .as_ref()
                .map(|id| format!("{id}-{thread}")),
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: false,
            fetch_max_wait_ms: config.poll_ms,
            session_timeout_ms: config.session_timeout_ms,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            max_poll_interval_ms: config.max_poll_interval_ms,
            isolation_level: if eos {
                IsolationLevel::ReadCommitted
            } else {
                IsolationLevel::ReadUncommitted
            },
            assignors: vec![Arc::new(StreamsAssignor::new(
                sub_of,
                config.state_dir.clone(),
            ))],
            ..Default::default()
        },
    );
    consumer.subscribe_with_listener(
        topics,
        Arc::new(Rebalance {
            state: Arc::clone(&state),
            failure: Arc::clone(&failure),
        }),
    );
    let commit_every = Duration::from_millis(config.commit_interval_ms);
    let mut last_commit = tokio::time::Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let records = consumer.poll().await?;
        // Set and taken in one step: a poisoned lock is safe to use.
        if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(StreamsError::Process(ProcessError::Failed(e)));
        }
        let mut st = state.lock().await;
        let mut commit_requested = false;
        st.take_polled(records).await?;
        st.process_buffered(&mut consumer).await?;
        for task in st.tasks.values_mut() {
            commit_requested |= task.take_commit_request();
        }
        // The write cache is full: commit early rather than grow past the limit.
        let cache_full = st.uncommitted_bytes() > config.cache_max_bytes;
        if commit_requested || cache_full || last_commit.elapsed() >= commit_every {
            match st.commit(&consumer, None, false).await {
                Ok(()) => {}
                // A processor failing to flush, or local state failing to apply, would fail
                // again after a recovery: only the log's failures are recovered from.
                Err(e) if eos && !matches!(e, StreamsError::Process(_)) => {
                    tracing::warn!(error = %e, "commit failed");
                    st.recover(&mut consumer).await?;
                }
                Err(e) => return Err(e),
            }
            last_commit = tokio::time::Instant::now();
        }
    }
    {
        let mut st = state.lock().await;
        st.commit(&consumer, None, true).await?;
        let ids: Vec<TaskId> = st.tasks.keys().copied().collect();
        for id in ids {
            if let Some(t) = st.tasks.remove(&id) {
                t.close()?;
            }
        }
        st.producer.close().await;
    }
    consumer.close().await?;
    Ok(())
}

/// Source topic -> the sub-topology reading it.
fn sources_of(topology: &Topology) -> BTreeMap<String, usize> {
    topology
        .sub_topologies()
        .into_iter()
        .flat_map(|s| s.source_topics.into_iter().map(move |t| (t, s.id)))
        .collect()
}

/// Checks the source topics (they exist; co-partitioned ones agree on partition counts) and
/// creates the changelog topics of logged stores (as many partitions as the source topics,
/// compacted, or `compact,delete` for window stores) that do not exist yet.
async fn prepare_topics(
    transport: &Arc<dyn Transport>,
    config: &StreamsConfig,
    topology: &Topology,
    topics: &[String],
) -> Result<(), StreamsError> {
    let admin = Admin::new(Arc::clone(transport));
    let rf = config.replication_factor;
    let existing = admin.list_topics().await?;
    let mut counts: BTreeMap<String, i32> = existing
        .iter()
        .map(|t| (t.name.clone(), t.partitions))
        .collect();
    let repartitions = topology.repartition_topics(&config.application_id);
    let partitions = topics
        .iter()
        .filter(|t| !repartitions.contains(t))
        .filter_map(|t| counts.get(t).copied())
        .max()
        .unwrap_or(1);
    for name in &repartitions {
        if !counts.contains_key(name) {
            // The count it was given; else, joined with other topics, as many partitions
            // as they have (Kafka Streams' co-partitioning enforcer); else the widest
            // source's count.
            let n = topology
                .fixed_partitions(name)
                .or_else(|| topology.copartitioned_count(name, &counts))
                .unwrap_or(partitions);
            create_topic(&admin, name, n, rf, &[("cleanup.policy", "delete")]).await?;
            counts.insert(name.clone(), n);
        }
    }
    topology.check_sources(&counts)?;
    // A changelog of this application that no store writes: a store renamed or removed.
    // Its state stays there, unread; say so rather than lose it silently.
    let prefix = format!("{}-", config.application_id);
    for name in counts.keys() {
        let store = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix("-changelog"));
        if let Some(store) = store {
            if !topology.stores.get(store).is_some_and(|s| s.logged) {
                tracing::warn!(changelog = %name, store,
                    "a changelog of this application belongs to no store of its topology \
                     (renamed or removed?): its state is not restored");
            }
        }
    }
    for spec in topology.stores.values().filter(|s| s.logged) {
        let name = Topology::changelog_topic(&config.application_id, &spec.name);
        if counts.contains_key(&name) {
            continue;
        }
        let configs = spec.changelog_configs();
        let configs: Vec<(&str, &str)> = configs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        create_topic(&admin, &name, partitions, rf, &configs).await?;
    }
    Ok(())
}

/// Creates an internal topic (another instance creating it first is fine).
async fn create_topic(
    admin: &Admin,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
) -> Result<(), StreamsError> {
    match admin
        .create_replicated_topic(name, partitions, replication_factor, configs)
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.kafka_error() == Some(ResponseError::TopicAlreadyExists) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
