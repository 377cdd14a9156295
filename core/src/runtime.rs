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

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rill_log::client::{
    Admin, ClientError, Consumer, ConsumerConfig, Delivery, IsolationLevel, ListenerFuture,
    OffsetReset, Producer, ProducerConfig, ProducerRecord, RebalanceListener, ResponseError,
    Transport,
};
use rill_log::types::TopicPartition;
use tokio::sync::Mutex;

use crate::processor::{ProcessError, Record};
use crate::state::changelog::{restore_into, ChangelogError};
use crate::task::{InvalidTimestampPolicy, Task, TaskId};
use crate::topology::Topology;

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
    /// `state.dir`: persistent stores live under it (none: in memory only).
    pub state_dir: Option<PathBuf>,
    pub processing_guarantee: ProcessingGuarantee,
    pub invalid_timestamps: InvalidTimestampPolicy,
    /// How long one poll waits for records.
    pub poll_ms: i32,
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: u64,
    /// `transaction.timeout.ms` of the exactly-once producer.
    pub transaction_timeout_ms: i32,
}

impl StreamsConfig {
    pub fn new(application_id: impl Into<String>) -> Self {
        StreamsConfig {
            application_id: application_id.into(),
            commit_interval_ms: 30_000,
            state_dir: None,
            processing_guarantee: ProcessingGuarantee::AtLeastOnce,
            invalid_timestamps: InvalidTimestampPolicy::Fail,
            poll_ms: 100,
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            transaction_timeout_ms: 10_000,
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
    processed: Arc<AtomicU64>,
    /// Exactly-once recoveries (failed commits redone from the last commit).
    recoveries: Arc<AtomicU64>,
    eos: bool,
}

impl RunState {
    fn task_of(&self, tp: &TopicPartition) -> Option<TaskId> {
        self.sub_of.get(&tp.topic).map(|s| (*s, tp.partition.0))
    }

    /// Output and changelogs acknowledged, stores flushed; the offsets to commit.
    async fn flush_all(&mut self) -> Result<Vec<(TopicPartition, i64)>, StreamsError> {
        let mut changes = Vec::new();
        for task in self.tasks.values_mut() {
            for (_, store) in task.stores_mut() {
                let Some(tp) = store.changelog().cloned() else {
                    continue;
                };
                for (k, v) in store.take_changes() {
                    let mut r = ProducerRecord::new(tp.topic.clone(), Some(k), Vec::<u8>::new());
                    r.value = v.map(Into::into);
                    r.partition = Some(tp.partition.0);
                    changes.push(r);
                }
            }
        }
        for r in changes {
            self.in_flight.push(self.producer.send(r).await?);
        }
        self.producer.flush().await;
        for d in std::mem::take(&mut self.in_flight) {
            d.await?;
        }
        for task in self.tasks.values_mut() {
            for (_, store) in task.stores_mut() {
                store.flush().map_err(ProcessError::from)?;
            }
        }
        Ok(self
            .consumed
            .iter()
            .map(|(tp, o)| (tp.clone(), *o))
            .collect())
    }

    /// Commits everything of `partitions` (all with `None`, and always all under
    /// exactly-once, where one transaction holds every task's work).
    async fn commit(
        &mut self,
        consumer: &Consumer,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<(), StreamsError> {
        let offsets = self.flush_all().await?;
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
            return Ok(());
        }
        let offsets: Vec<(TopicPartition, i64)> = offsets
            .into_iter()
            .filter(|(tp, _)| partitions.is_none_or(|ps| ps.contains(tp)))
            .collect();
        if !offsets.is_empty() {
            consumer.commit_offsets(&offsets).await?;
        }
        Ok(())
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
            for (name, store) in task.stores_mut() {
                if let Some(changelog) = store.changelog().cloned() {
                    let report = restore_into(
                        store.as_mut(),
                        &changelog,
                        Arc::clone(&self.transport),
                        None,
                        self.eos,
                        |_, _| {},
                    )
                    .await?;
                    // Restoring wrote into the store through its logging layer: not news.
                    store.take_changes();
                    tracing::info!(task = ?id, store = %name, records = report.records, "store restored");
                }
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
        self.recoveries.fetch_add(1, Ordering::SeqCst);
        self.in_flight.clear();
        self.producer.init_transactions().await?;
        self.producer.begin_transaction()?;
        let partitions: Vec<TopicPartition> = consumer.assignment();
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        self.tasks.clear();
        self.consumed.clear();
        let wanted: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| self.task_of(tp).is_some_and(|id| ids.contains(&id)))
            .cloned()
            .collect();
        self.assign(&wanted).await?;
        let committed = consumer.committed(&partitions).await?;
        for tp in &partitions {
            match committed.get(tp).copied().flatten() {
                Some(o) => consumer.seek(tp, o)?,
                None => consumer.seek_to_beginning(std::slice::from_ref(tp)).await?,
            }
        }
        Ok(())
    }

    /// Drops the tasks of revoked partitions (after they were committed).
    fn revoke(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(id) = self.task_of(tp) {
                if let Some(task) = self.tasks.remove(&id) {
                    let _ = task.close();
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
            if let Err(e) = st.commit(consumer, Some(partitions)).await {
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
        _consumer: &'a mut Consumer,
        partitions: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        // Someone else may own them already: drop without committing.
        Box::pin(async move { self.state.lock().await.revoke(partitions) })
    }
}

/// A running application instance.
pub struct KafkaStreams {
    stop: Arc<AtomicBool>,
    run: tokio::task::JoinHandle<Result<(), StreamsError>>,
    processed: Arc<AtomicU64>,
    recoveries: Arc<AtomicU64>,
    state: Arc<Mutex<RunState>>,
}

impl std::fmt::Debug for KafkaStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaStreams").finish_non_exhaustive()
    }
}

impl KafkaStreams {
    /// Starts an instance of `topology` (needs a tokio runtime): creates missing changelog
    /// topics, joins the group and processes until [`KafkaStreams::close`].
    pub fn start(
        topology: Topology,
        transport: Arc<dyn Transport>,
        config: StreamsConfig,
    ) -> KafkaStreams {
        let stop = Arc::new(AtomicBool::new(false));
        let processed = Arc::new(AtomicU64::new(0));
        let recoveries = Arc::new(AtomicU64::new(0));
        let sub_of = topology
            .sub_topologies()
            .into_iter()
            .flat_map(|s| s.source_topics.into_iter().map(move |t| (t, s.id)))
            .collect();
        let eos = config.processing_guarantee == ProcessingGuarantee::ExactlyOnceV2;
        let transactional_id = eos.then(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!("{}-{}-{nanos}", config.application_id, std::process::id())
        });
        let producer = Producer::new(
            Arc::clone(&transport),
            ProducerConfig {
                linger_ms: 5,
                transactional_id,
                transaction_timeout_ms: config.transaction_timeout_ms,
                ..Default::default()
            },
        );
        let state = Arc::new(Mutex::new(RunState {
            topology,
            config,
            transport,
            producer,
            tasks: BTreeMap::new(),
            sub_of,
            consumed: BTreeMap::new(),
            in_flight: Vec::new(),
            processed: Arc::clone(&processed),
            recoveries: Arc::clone(&recoveries),
            eos,
        }));
        let run = tokio::spawn(run(Arc::clone(&state), Arc::clone(&stop)));
        KafkaStreams {
            stop,
            run,
            processed,
            recoveries,
            state,
        }
    }

    /// Records processed by this instance so far.
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::SeqCst)
    }

    /// Exactly-once commits that failed and were redone from the last commit.
    pub fn recoveries(&self) -> u64 {
        self.recoveries.load(Ordering::SeqCst)
    }

    /// The tasks this instance runs now.
    pub async fn tasks(&self) -> BTreeSet<TaskId> {
        self.state.lock().await.tasks.keys().copied().collect()
    }

    /// Commits, closes every task, leaves the group.
    pub async fn close(self) -> Result<(), StreamsError> {
        self.stop.store(true, Ordering::SeqCst);
        self.run
            .await
            .map_err(|e| StreamsError::Process(ProcessError::Failed(e.to_string())))?
    }
}

async fn run(state: Arc<Mutex<RunState>>, stop: Arc<AtomicBool>) -> Result<(), StreamsError> {
    let (transport, config, topics, partitions) = {
        let st = state.lock().await;
        let topics: Vec<String> = st.sub_of.keys().cloned().collect();
        (
            Arc::clone(&st.transport),
            st.config.clone(),
            topics,
            st.topology.clone(),
        )
    };
    ensure_changelogs(&transport, &config, &partitions, &topics).await?;
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
            auto_offset_reset: OffsetReset::Earliest,
            enable_auto_commit: false,
            fetch_max_wait_ms: config.poll_ms,
            session_timeout_ms: config.session_timeout_ms,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            isolation_level: if eos {
                IsolationLevel::ReadCommitted
            } else {
                IsolationLevel::ReadUncommitted
            },
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
        if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(StreamsError::Process(ProcessError::Failed(e)));
        }
        let mut st = state.lock().await;
        for r in records {
            let tp = TopicPartition::new(r.topic.clone(), r.partition);
            let Some(id) = st.task_of(&tp) else { continue };
            let Some(task) = st.tasks.get_mut(&id) else {
                continue;
            };
            let record = Record {
                key: r.key,
                value: r.value,
                timestamp: r.timestamp_ms,
                headers: r.headers,
            };
            task.process(&r.topic, r.offset, record)?;
            let output = task.take_output();
            for (topic, out) in output {
                let mut pr = ProducerRecord::new(topic, out.key, Vec::<u8>::new());
                pr.value = out.value;
                pr.timestamp_ms = Some(out.timestamp);
                pr.headers = out.headers;
                let d = st.producer.send(pr).await?;
                st.in_flight.push(d);
            }
            st.consumed.insert(tp, r.offset + 1);
            st.processed.fetch_add(1, Ordering::SeqCst);
        }
        if last_commit.elapsed() >= commit_every {
            match st.commit(&consumer, None).await {
                Ok(()) => {}
                Err(e) if eos => {
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
        st.commit(&consumer, None).await?;
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

/// Creates the changelog topics of logged stores (compacted, as many partitions as the
/// source topics), if they do not exist.
async fn ensure_changelogs(
    transport: &Arc<dyn Transport>,
    config: &StreamsConfig,
    topology: &Topology,
    topics: &[String],
) -> Result<(), StreamsError> {
    let admin = Admin::new(Arc::clone(transport));
    let existing = admin.list_topics().await?;
    let partitions = existing
        .iter()
        .filter(|t| topics.contains(&t.name))
        .map(|t| t.partitions)
        .max()
        .unwrap_or(1);
    for spec in topology.stores.values().filter(|s| s.logged) {
        let name = Topology::changelog_topic(&config.application_id, &spec.name);
        if existing.iter().any(|t| t.name == name) {
            continue;
        }
        match admin
            .create_topic(&name, partitions, &[("cleanup.policy", "compact")])
            .await
        {
            Ok(()) => {}
            Err(e) if e.kafka_error() == Some(ResponseError::TopicAlreadyExists) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
