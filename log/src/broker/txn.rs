//! The transaction coordinator's runtime: decodes the transactional requests (InitProducerId
//! with a transactional id, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn,
//! ListTransactions, DescribeTransactions) into transitions of the sans-IO
//! [`TxnEngine`](crate::coordinator::txn::engine::TxnEngine) and carries out what it decides:
//! metadata is written to `__transaction_state` before the answer, and transaction markers go
//! through a queue drained by a marker thread (the shape a cluster needs, where partitions are
//! led elsewhere), not under the coordinator's lock.
//!
//! Failure handling is deliberate: if a metadata write fails, or a thread panicked while it
//! held the coordinator's lock (a poisoned lock), the in-memory state cannot be trusted, so it
//! is thrown away and reloaded from `__transaction_state`, exactly as after a restart; the
//! request answers COORDINATOR_NOT_AVAILABLE and the client retries.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{
    TopicData, TransactionState as DescribedState,
};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use super::cluster::coordinators::Coordinated;
use super::{Broker, BrokerError};
use crate::coordinator::group::offsets::{partition_for, Committed, OffsetStore, OFFSETS_TOPIC};
use crate::coordinator::txn::engine::{Effect, MarkerJob, Outcome, TxnConfig, TxnEngine};
use crate::coordinator::txn::{TxnMetadata, TxnState, TRANSACTION_TOPIC};
use crate::record::control::Marker;
use crate::record::{encode_batch, Compression, NewRecord};
use crate::storage::{LogManager, StorageError};
use crate::time::SharedClock;
use crate::types::TopicPartition;

/// Why a marker job ended without completing its transaction.
#[derive(Debug, thiserror::Error)]
enum JobFailed {
    /// Another broker coordinates the transaction now and finishes it (EndTxn answers
    /// NOT_COORDINATOR, and the client asks the new coordinator).
    #[error("the coordinator of the transaction moved")]
    Moved,
    #[error("{0}")]
    Other(String),
}

/// What a waiter on a marker job learns.
type JobResult = Result<(), JobFailed>;

/// How long the marker thread waits before retrying a job whose write failed.
const MARKER_RETRY: Duration = Duration::from_millis(200);

/// How long EndTxn waits for its markers before answering anyway (the transaction is
/// prepared and will complete; clients see CONCURRENT_TRANSACTIONS until then).
const END_TXN_WAIT: Duration = Duration::from_secs(30);

/// A queued marker job, with whoever waits for it (EndTxn's answer).
type Queued = (MarkerJob, Option<oneshot::Sender<JobResult>>);

/// The coordinator: the engine behind its lock, the marker queue and what both write to.
pub(crate) struct TxnCoordinator {
    engine: Mutex<TxnEngine>,
    config: TxnConfig,
    logs: Arc<LogManager>,
    offsets: Arc<Mutex<OffsetStore>>,
    /// Woken per partition a marker is written to: read_committed long polls wait for the
    /// last stable offset to move.
    waiting: Arc<super::waiters::FetchWaiters>,
    clock: SharedClock,
    /// Partitions of `__transaction_state` (set once the topic exists).
    partitions: AtomicI32,
    /// Marker jobs in order. At most one per transactional id is outstanding (a transaction
    /// in PrepareCommit / PrepareAbort refuses new work), plus recovery's, so the queue is
    /// bounded by the number of transactional ids.
    queue: Mutex<VecDeque<Queued>>,
    queued: Condvar,
    /// Signalled when the queue empties.
    drained: Condvar,
    stop: AtomicBool,
    /// Test hook: the marker thread drops a job after this many markers, as if it crashed.
    crash_after_markers: Option<usize>,
    /// In a cluster: markers to leaders anywhere, writes acted on only once replicated.
    cluster: OnceLock<Arc<dyn ClusterWrites>>,
    /// The `__transaction_state` partitions coordinated here: all of them alone (`None`), in a
    /// cluster those this broker leads.
    coordinated: Mutex<Option<BTreeSet<i32>>>,
}

/// Why a write was not replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotReplicated {
    /// This broker no longer leads the partition (its coordinator moved).
    NotLeader,
    /// Still leader, but the in-sync replicas did not catch up in time.
    TimedOut,
}

/// What a clustered broker provides the transaction coordinator: the partitions it leads,
/// replication of what it writes, and markers to partition leaders on any broker (Kafka's
/// WriteTxnMarkers). Called from the marker thread, so these block.
pub(crate) trait ClusterWrites: Send + Sync + std::fmt::Debug {
    /// Whether this broker leads `tp` now.
    fn leads(&self, tp: &TopicPartition) -> bool;
    /// This broker appended to `tp`, which it leads, up to `log_end`.
    fn appended(&self, tp: &TopicPartition, log_end: i64);
    /// Waits until `tp`'s log through `end` is on the in-sync replicas.
    fn await_replicated(&self, tp: &TopicPartition, end: i64) -> Result<(), NotReplicated>;
    /// Writes the job's markers to the leaders of its partitions and waits for each to be
    /// replicated there.
    fn write_markers(&self, job: &MarkerJob) -> Result<(), String>;
}

impl TxnCoordinator {
    pub fn new(
        config: TxnConfig,
        logs: Arc<LogManager>,
        offsets: Arc<Mutex<OffsetStore>>,
        waiting: Arc<super::waiters::FetchWaiters>,
        clock: SharedClock,
        crash_after_markers: Option<usize>,
    ) -> Self {
        TxnCoordinator {
            engine: Mutex::new(TxnEngine::new(config.clone())),
            config,
            logs,
            waiting,
            offsets,
            clock,
            partitions: AtomicI32::new(1),
            queue: Mutex::new(VecDeque::new()),
            queued: Condvar::new(),
            drained: Condvar::new(),
            stop: AtomicBool::new(false),
            crash_after_markers,
            cluster: OnceLock::new(),
            coordinated: Mutex::new(None),
        }
    }

    /// Joins a cluster: from now on only the partitions this broker leads are coordinated
    /// here ([`load_partition`](Self::load_partition)).
    pub fn use_cluster(&self, cluster: Arc<dyn ClusterWrites>) {
        if self.cluster.set(cluster).is_ok() {
            *crate::sync::plain(&self.coordinated) = Some(BTreeSet::new());
            *crate::sync::plain(&self.engine) = TxnEngine::new(self.config.clone());
        }
    }

    fn partition_of(&self, transactional_id: &str) -> i32 {
        partition_for(transactional_id, self.partitions.load(Ordering::Relaxed))
    }

    /// The `__transaction_state` partition holding `transactional_id`.
    pub fn partition_for(&self, transactional_id: &str) -> TopicPartition {
        TopicPartition::new(TRANSACTION_TOPIC, self.partition_of(transactional_id))
    }

    /// Whether `transactional_id` is coordinated here (NOT_COORDINATOR otherwise).
    pub fn coordinates(&self, transactional_id: &str) -> bool {
        match &*crate::sync::plain(&self.coordinated) {
            None => true,
            Some(led) => led.contains(&self.partition_of(transactional_id)),
        }
    }

    /// This broker became the leader of `__transaction_state` partition `p` (of `partitions`):
    /// its transactional ids are read from the log and coordinated here, and the markers of
    /// transactions left prepared are sent (Kafka's `loadTransactionsForTxnTopicPartition`).
    pub fn load_partition(&self, p: i32, partitions: i32) -> Result<(), StorageError> {
        self.partitions.store(partitions, Ordering::Relaxed);
        let mut fresh = TxnEngine::new(self.config.clone());
        self.replay_partition(&mut fresh, p)?;
        let mut engine = self
            .engine()
            .map_err(|_| StorageError::Closed(TopicPartition::new(TRANSACTION_TOPIC, p)))?;
        engine.forget_where(|id| partition_for(id, partitions) == p);
        let recovered = fresh.recover();
        engine.absorb(fresh);
        if let Some(led) = crate::sync::plain(&self.coordinated).as_mut() {
            led.insert(p);
        }
        self.apply(&mut engine, recovered, None)
            .map_err(|_| StorageError::Closed(TopicPartition::new(TRANSACTION_TOPIC, p)))
    }

    /// This broker no longer leads `__transaction_state` partition `p`: its transactional ids
    /// and their queued markers go (the new coordinator finishes them).
    pub fn unload_partition(&self, p: i32) {
        if let Some(led) = crate::sync::plain(&self.coordinated).as_mut() {
            led.remove(&p);
        }
        let n = self.partitions.load(Ordering::Relaxed);
        if let Ok(mut engine) = self.engine() {
            engine.forget_where(|id| partition_for(id, n) == p);
        }
        // The job at the front may be in the marker thread's hands; it finds its id gone.
        let mut q = crate::sync::plain(&self.queue);
        let front = q.pop_front();
        q.retain(|(job, _)| partition_for(&job.transactional_id, n) != p);
        if let Some(front) = front {
            q.push_front(front);
        }
    }

    /// Loads every transactional id from `__transaction_state` (with `partitions`
    /// partitions) and queues the markers of transactions a crash left prepared.
    pub fn load(&self, partitions: i32) -> Result<(), StorageError> {
        self.partitions.store(partitions, Ordering::Relaxed);
        let engine = self.read_log()?;
        let mut guard = crate::sync::plain(&self.engine); // replaced below
        *guard = engine;
        self.engine.clear_poison();
        let recovered = guard.recover();
        self.apply(&mut guard, recovered, None)
            .map_err(|_| StorageError::Closed(TopicPartition::new(TRANSACTION_TOPIC, 0)))
    }

    /// A fresh engine from `__transaction_state` (the last record per transactional id wins).
    fn read_log(&self) -> Result<TxnEngine, StorageError> {
        let mut engine = TxnEngine::new(self.config.clone());
        let partitions: Vec<i32> = match &*crate::sync::plain(&self.coordinated) {
            None => (0..self.partitions.load(Ordering::Relaxed)).collect(),
            Some(led) => led.iter().copied().collect(),
        };
        for p in partitions {
            self.replay_partition(&mut engine, p)?;
        }
        Ok(engine)
    }

    /// Replays `__transaction_state` partition `p` into `engine`.
    fn replay_partition(&self, engine: &mut TxnEngine, p: i32) -> Result<(), StorageError> {
        let Some(log) = self.logs.get(&TopicPartition::new(TRANSACTION_TOPIC, p)) else {
            return Ok(());
        };
        log.scan_records(|rec| {
            let Some(key) = rec.key.as_ref() else {
                return;
            };
            let key = String::from_utf8_lossy(key).into_owned();
            let meta = rec.value.as_deref().and_then(TxnMetadata::decode);
            engine.replay(key, meta);
        })
    }

    /// The engine, reloaded from its log first if a panic poisoned the lock.
    fn engine(&self) -> Result<MutexGuard<'_, TxnEngine>, ResponseError> {
        match self.engine.lock() {
            Ok(g) => Ok(g),
            Err(poisoned) => {
                tracing::error!("transaction coordinator lock poisoned; reloading its state");
                let mut g = poisoned.into_inner();
                self.reload(&mut g)?;
                self.engine.clear_poison();
                Ok(g)
            }
        }
    }

    /// Throws the in-memory state away and reads it again from `__transaction_state`.
    fn reload(&self, engine: &mut TxnEngine) -> Result<(), ResponseError> {
        match self.read_log() {
            Ok(fresh) => {
                *engine = fresh;
                let recovered = engine.recover();
                self.apply(engine, recovered, None)
            }
            Err(e) => {
                tracing::error!(error = %e, "reloading the transaction coordinator failed");
                Err(ResponseError::CoordinatorNotAvailable)
            }
        }
    }

    /// Runs one transition and carries out its effects; `waiter` is told when its markers
    /// are written.
    fn run<T>(
        &self,
        transition: impl FnOnce(&mut TxnEngine) -> Outcome<T>,
        waiter: Option<oneshot::Sender<JobResult>>,
    ) -> Result<T, ResponseError> {
        let mut engine = self.engine()?;
        let outcome = transition(&mut engine);
        self.apply(&mut engine, outcome.effects, waiter)?;
        outcome.answer
    }

    /// Carries out `effects` in order. A failed metadata write reloads the engine (its state
    /// is ahead of the log) and fails the request.
    fn apply(
        &self,
        engine: &mut TxnEngine,
        effects: Vec<Effect>,
        mut waiter: Option<oneshot::Sender<JobResult>>,
    ) -> Result<(), ResponseError> {
        for effect in effects {
            let written = match effect {
                Effect::Persist(meta) => {
                    let value = meta.encode();
                    self.write(&meta.transactional_id, Some(value), meta.updated_ms)
                }
                Effect::Forget(id) => {
                    tracing::debug!(txn = %id, "transactional id expired");
                    self.write(&id, None, 0)
                }
                Effect::Markers(job) => {
                    let mut q = crate::sync::plain(&self.queue);
                    q.push_back((job, waiter.take()));
                    self.queued.notify_one();
                    Ok(())
                }
            };
            if let Err(e) = written {
                tracing::error!(error = %e, "writing transaction metadata failed; reloading");
                let _ = self.reload(engine);
                return Err(ResponseError::CoordinatorNotAvailable);
            }
        }
        Ok(())
    }

    /// Writes one `__transaction_state` record (`None`: a tombstone).
    fn write(&self, id: &str, value: Option<Vec<u8>>, ts: i64) -> Result<(), StorageError> {
        let tp = self.partition_for(id);
        let cluster = self.cluster.get();
        if cluster.is_some_and(|c| !c.leads(&tp)) {
            // A follower's log is the leader's copy: the coordinator moved.
            return Err(StorageError::Closed(tp));
        }
        let log = self.logs.get_or_create(&tp)?;
        let record = NewRecord {
            key: Some(id.as_bytes().to_vec().into()),
            value: value.map(Into::into),
            timestamp_ms: ts,
            headers: Vec::new(),
        };
        let mut batch = encode_batch(std::slice::from_ref(&record), Compression::None)?;
        log.append(&mut batch)?;
        if let Some(c) = cluster {
            c.appended(&tp, log.log_end_offset().0);
        }
        Ok(())
    }

    /// Timers (transaction timeouts, id expiration), by the injected clock.
    pub fn tick(&self) {
        let now = self.clock.now_ms();
        if let Err(e) = self.run(|engine| Outcome::only(engine.tick(now)), None) {
            tracing::error!(error = ?e, "transaction coordinator timers failed");
        }
    }

    /// KIP-890's check of a partition's first transactional batch of a transaction.
    pub fn verify(
        &self,
        transactional_id: &str,
        producer: (i64, i16),
        partition: &(String, i32),
    ) -> Result<(), ResponseError> {
        self.engine()?.verify(transactional_id, producer, partition)
    }

    /// The marker thread's loop: one job at a time, in order, until `stop`. A job stays at
    /// the front of the queue until it is done, so [`drain`](Self::drain) sees it.
    pub fn run_markers(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            let next = {
                let mut q = crate::sync::plain(&self.queue);
                if q.is_empty() {
                    q = self
                        .queued
                        .wait_timeout(q, Duration::from_millis(100))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                q.front_mut().map(|(job, w)| (job.clone(), w.take()))
            };
            let Some((job, waiter)) = next else {
                continue;
            };
            let result = self.carry_out(&job);
            let mut q = crate::sync::plain(&self.queue);
            match result {
                Some(result) => {
                    q.pop_front();
                    if q.is_empty() {
                        self.drained.notify_all();
                    }
                    drop(q);
                    if let Some(w) = waiter {
                        let _ = w.send(result);
                    }
                }
                None => {
                    if let Some((_, w)) = q.front_mut() {
                        *w = waiter;
                    }
                    drop(q);
                    std::thread::sleep(MARKER_RETRY);
                }
            }
        }
    }

    /// Waits (at most `limit`) until every queued marker job is done.
    pub fn drain(&self, limit: Duration) {
        let q = crate::sync::plain(&self.queue);
        let _ = self.drained.wait_timeout_while(q, limit, |q| {
            !q.is_empty() && !self.stop.load(Ordering::Relaxed)
        });
    }

    /// Writes one job's markers and completes its transaction: `Some(result)` when the job
    /// is over (done, or no longer this coordinator's), `None` to retry it later.
    fn carry_out(&self, job: &MarkerJob) -> Option<JobResult> {
        let id = &job.transactional_id;
        if self.cluster.get().is_some() && !self.coordinates(id) {
            return Some(Err(JobFailed::Moved));
        }
        // A job queued twice (recovery re-queues what a reload finds prepared), or one whose
        // transaction ended since, ends nothing: its markers could end the producer's next
        // transaction in a partition.
        let prepared = if job.commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        let current = match self.engine() {
            Ok(engine) => engine
                .get(id)
                .map(|m| (m.state, m.producer_id, m.producer_epoch)),
            Err(_) => return None,
        };
        if current != Some((prepared, job.producer_id, job.producer_epoch)) {
            tracing::debug!(txn = %id, "a marker job for a transaction no longer prepared; dropped");
            return Some(Ok(()));
        }
        if let Some(cluster) = self.cluster.get() {
            // Nothing is ended before the prepare record is on the in-sync replicas: a new
            // coordinator must find the transaction prepared, or it would end it otherwise.
            let tp = self.partition_for(id);
            let end = self.logs.get(&tp).map_or(0, |l| l.log_end_offset().0);
            match cluster.await_replicated(&tp, end) {
                Ok(()) => {}
                Err(NotReplicated::NotLeader) => return Some(Err(JobFailed::Moved)),
                Err(NotReplicated::TimedOut) => return None,
            }
            if let Err(e) = cluster.write_markers(job) {
                tracing::warn!(txn = %id, error = %e, "writing markers failed; retrying");
                return None;
            }
        } else {
            match self.write_local_markers(job) {
                Ok(true) => {}
                // The crash hook: the job is lost, as if the broker died here.
                Ok(false) => {
                    return Some(Err(JobFailed::Other(
                        "stopped after the configured markers".into(),
                    )))
                }
                Err(e) => {
                    tracing::warn!(txn = %id, error = ?e, "writing markers failed; retrying");
                    return None;
                }
            }
        }
        let now = self.clock.now_ms();
        let done = self.run(
            |engine| Outcome::only(engine.markers_written(job, now)),
            None,
        );
        tracing::debug!(txn = %id, commit = job.commit, "transaction completed");
        Some(done.map_err(|e| JobFailed::Other(format!("{e:?}"))))
    }

    /// Writes the job's markers to this broker's partitions; `Ok(false)` when the crash hook
    /// stopped it.
    fn write_local_markers(&self, job: &MarkerJob) -> Result<bool, ResponseError> {
        for (i, (topic, p)) in job.partitions.iter().enumerate() {
            if self.crash_after_markers == Some(i) {
                return Ok(false);
            }
            let tp = TopicPartition::new(topic.clone(), *p);
            let producer = (job.producer_id, job.producer_epoch);
            match write_marker(
                &self.logs,
                &self.offsets,
                &self.waiting,
                &tp,
                producer,
                job.commit,
                0,
            ) {
                // A partition deleted since has nothing left to end; a newer epoch there
                // ended it already.
                Ok(_)
                | Err(
                    ResponseError::UnknownTopicOrPartition | ResponseError::InvalidProducerEpoch,
                ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.queued.notify_all();
        self.drained.notify_all();
    }
}

/// Ends `producer`'s open transaction in `tp`, which this broker leads, with a commit or
/// abort marker; in `__consumer_offsets` the marker also commits or drops the offsets the
/// transaction sent there. `Ok(Some(end))` with the log end after the marker, `Ok(None)` when
/// the producer has nothing open there (a marker written again), INVALID_PRODUCER_EPOCH for
/// a marker older than the producer's epoch there, as Kafka refuses it.
pub(crate) fn write_marker(
    logs: &LogManager,
    offsets: &Mutex<OffsetStore>,
    waiting: &super::waiters::FetchWaiters,
    tp: &TopicPartition,
    (producer_id, producer_epoch): (i64, i16),
    commit: bool,
    coordinator_epoch: i32,
) -> Result<Option<i64>, ResponseError> {
    let log = logs.get(tp).ok_or(ResponseError::UnknownTopicOrPartition)?;
    match log.producer(producer_id) {
        Some(e) if e.epoch > producer_epoch => return Err(ResponseError::InvalidProducerEpoch),
        _ if !log.in_transaction(producer_id) => return Ok(None),
        _ => {}
    }
    let marker = if commit {
        Marker::Commit
    } else {
        Marker::Abort
    };
    log.append_marker(producer_id, producer_epoch, marker, coordinator_epoch)
        .map_err(|e| super::storage_error_code(&e))?;
    waiting.wake(tp);
    if tp.topic == OFFSETS_TOPIC {
        super::lock_offsets(offsets, logs).end_transaction(tp.partition.0, producer_id, commit);
    }
    Ok(Some(log.log_end_offset().0))
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn code<T>(r: &Result<T, ResponseError>) -> i16 {
    r.as_ref().err().map_or(0, |e| e.code())
}

/// Kafka's answer for a fenced producer: PRODUCER_FENCED from version `since` of the API on
/// (KIP-588), INVALID_PRODUCER_EPOCH to older clients that do not know it.
fn fenced_as<T>(r: Result<T, ResponseError>, version: i16, since: i16) -> Result<T, ResponseError> {
    match r {
        Err(ResponseError::ProducerFenced) if version < since => {
            Err(ResponseError::InvalidProducerEpoch)
        }
        other => other,
    }
}

impl Broker {
    /// Partitions with an offset of `group` in a transaction not yet completed (KIP-447).
    pub(crate) fn unstable_offsets(&self, group: &str) -> BTreeSet<(String, i32)> {
        super::lock_offsets(&self.offsets, &self.logs).unstable(group)
    }

    /// Runs a transaction coordinator request for `txn_id`: NOT_COORDINATOR if another
    /// broker coordinates it, and answered only once what it wrote is on the in-sync
    /// replicas of its `__transaction_state` partition.
    async fn coordinate_txn<T>(
        &self,
        txn_id: &str,
        request: impl FnOnce() -> Result<T, ResponseError>,
    ) -> Result<T, ResponseError> {
        self.check_coordinator(Coordinated::Transaction, txn_id)?;
        let answer = request();
        self.coordinator_replicated(Coordinated::Transaction, txn_id)
            .await?;
        answer
    }

    /// InitProducerId with a transactional id: a new producer id at epoch 0, or the same id
    /// at the next epoch (fencing earlier producers; a producer naming its current id and
    /// epoch bumps its own, KIP-360).
    pub(crate) async fn init_transactional_producer(
        &self,
        txn_id: &str,
        req: &InitProducerIdRequest,
        version: i16,
    ) -> Result<InitProducerIdResponse, BrokerError> {
        let answer = match expected_producer(req) {
            Err(e) => Err(e),
            Ok(expected) => {
                // A spare id, taken before the engine's lock (taking one may wait on the
                // controller) and given back if the engine only bumps the epoch.
                let mut spare = match self.new_producer_id().await {
                    Ok(id) => id,
                    Err(e) => {
                        tracing::error!(error = %e, "allocating a producer id failed");
                        None
                    }
                };
                let answer = self
                    .coordinate_txn(txn_id, || {
                        let now = self.clock.now_ms();
                        let mut new_id = || spare.take();
                        self.txn.run(
                            |engine| {
                                engine.init_producer_id(
                                    txn_id,
                                    req.transaction_timeout_ms,
                                    expected,
                                    now,
                                    &mut new_id,
                                )
                            },
                            None,
                        )
                    })
                    .await;
                if let Some(id) = spare {
                    self.producer_ids().give_back(id);
                }
                answer
            }
        };
        let answer = fenced_as(answer, version, 4);
        let (id, epoch) = answer.as_ref().copied().unwrap_or((-1, -1));
        Ok(InitProducerIdResponse::default()
            .with_error_code(code(&answer))
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch))
    }

    pub(crate) async fn add_partitions_to_txn(
        &self,
        req: AddPartitionsToTxnRequest,
        version: i16,
    ) -> Result<AddPartitionsToTxnResponse, BrokerError> {
        let txn_id = req.v3_and_below_transactional_id.to_string();
        let wanted: Vec<(String, i32)> = req
            .v3_and_below_topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p)))
            .collect();
        let producer = (
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
        );
        let now = self.clock.now_ms();
        let known = |t: &str, p: i32| self.topic_partitions(t).is_some_and(|n| p >= 0 && p < n);
        let outcome = self
            .coordinate_txn(&txn_id, || {
                self.txn.run(
                    |engine| engine.add_partitions(&txn_id, producer, &wanted, &known, now),
                    None,
                )
            })
            .await;
        let outcome = fenced_as(outcome, version, 2);
        let code = code(&outcome);
        let results = req
            .v3_and_below_topics
            .iter()
            .map(|t| {
                AddPartitionsToTxnTopicResult::default()
                    .with_name(t.name.clone())
                    .with_results_by_partition(
                        t.partitions
                            .iter()
                            .map(|p| {
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_partition_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect();
        Ok(AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results))
    }

    pub(crate) async fn add_offsets_to_txn(
        &self,
        req: AddOffsetsToTxnRequest,
        version: i16,
    ) -> Result<AddOffsetsToTxnResponse, BrokerError> {
        let group = req.group_id.0.to_string();
        if !crate::coordinator::group::offsets::valid_group_id(&group) {
            return Ok(AddOffsetsToTxnResponse::default()
                .with_error_code(ResponseError::InvalidGroupId.code()));
        }
        let Some(n) = self.internal_partitions(Coordinated::Group) else {
            return Ok(AddOffsetsToTxnResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code()));
        };
        let offsets_partition = (OFFSETS_TOPIC.to_string(), partition_for(&group, n));
        let producer = (req.producer_id.0, req.producer_epoch);
        let now = self.clock.now_ms();
        let txn_id = req.transactional_id.as_str();
        let outcome = self
            .coordinate_txn(txn_id, || {
                self.txn.run(
                    |engine| engine.add_offsets(txn_id, producer, &group, offsets_partition, now),
                    None,
                )
            })
            .await;
        let outcome = fenced_as(outcome, version, 2);
        Ok(AddOffsetsToTxnResponse::default().with_error_code(code(&outcome)))
    }

    /// TxnOffsetCommit, at the group coordinator (KIP-98): the offsets are written to the
    /// group's `__consumer_offsets` partition inside the producer's transaction and become
    /// committed when its commit marker arrives there. The group's generation and member are
    /// checked as for any commit (KIP-447) when the producer sends them; the transaction's
    /// own state is checked when its coordinator is this broker (as it always is alone).
    pub(crate) async fn txn_offset_commit(
        &self,
        req: TxnOffsetCommitRequest,
    ) -> Result<TxnOffsetCommitResponse, BrokerError> {
        let group = req.group_id.0.to_string();
        let txn_id = req.transactional_id.to_string();
        let producer = (req.producer_id.0, req.producer_epoch);
        let now = self.clock.now_ms();
        // As for OffsetCommit: metadata over `offset.metadata.max.bytes` is refused per
        // partition (OFFSET_METADATA_TOO_LARGE), the rest are kept.
        let max_metadata = self.config.offset_metadata_max_bytes.min(i16::MAX as usize);
        let too_large = |m: Option<&str>| m.is_some_and(|m| m.len() > max_metadata);
        let written = (|| {
            self.check_coordinator(Coordinated::Group, &group)?;
            if self
                .check_coordinator(Coordinated::Transaction, &txn_id)
                .is_ok()
            {
                self.txn
                    .engine()?
                    .check_offset_commit(&txn_id, producer, &group)?;
            }
            if req.generation_id >= 0 || !req.member_id.is_empty() {
                let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
                super::lock_groups(&self.groups, &self.config.group).validate_commit(
                    &group,
                    req.member_id.as_str(),
                    instance.as_deref(),
                    req.generation_id,
                )?;
            }
            let offsets: Vec<(String, i32, Committed)> = req
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .filter(|p| !too_large(p.committed_metadata.as_deref()))
                        .map(|p| {
                            let committed = Committed {
                                offset: p.committed_offset,
                                leader_epoch: p.committed_leader_epoch,
                                metadata: p
                                    .committed_metadata
                                    .as_deref()
                                    .unwrap_or_default()
                                    .to_string(),
                                commit_timestamp_ms: now,
                            };
                            (t.name.0.to_string(), p.partition_index, committed)
                        })
                })
                .collect();
            let mut store = super::lock_offsets(&self.offsets, &self.logs);
            self.leads_group_partition(&store, &group)?;
            store
                .write_transactional(&self.logs, &group, producer, offsets)
                .map_err(|e| match e {
                    StorageError::Producer(_) => ResponseError::InvalidProducerEpoch,
                    e => {
                        tracing::error!(group = %group, error = %e, "writing transactional offsets failed");
                        ResponseError::CoordinatorNotAvailable
                    }
                })
        })();
        let outcome = match written {
            Ok(()) => {
                self.coordinator_replicated(Coordinated::Group, &group)
                    .await
            }
            Err(e) => Err(e),
        };
        // The group coordinator's answer to a fenced producer (TxnOffsetCommit has no
        // PRODUCER_FENCED).
        let code = code(&fenced_as(outcome, 0, 1));
        let code_of = |metadata: Option<&str>| {
            if code == 0 && too_large(metadata) {
                ResponseError::OffsetMetadataTooLarge.code()
            } else {
                code
            }
        };
        let topics = req
            .topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code_of(p.committed_metadata.as_deref()))
                            })
                            .collect(),
                    )
            })
            .collect();
        Ok(TxnOffsetCommitResponse::default().with_topics(topics))
    }

    /// EndTxn: the transaction is prepared (persisted) and its markers queued; the answer
    /// waits for them (bounded), so a commit is visible to read_committed readers when it
    /// returns, as rill's clients expect.
    pub(crate) async fn end_txn(
        &self,
        req: EndTxnRequest,
        version: i16,
    ) -> Result<EndTxnResponse, BrokerError> {
        let txn_id = req.transactional_id.to_string();
        let producer = (req.producer_id.0, req.producer_epoch);
        let now = self.clock.now_ms();
        let (tx, rx) = oneshot::channel();
        let outcome = self
            .check_coordinator(Coordinated::Transaction, &txn_id)
            .and_then(|()| {
                self.txn.run(
                    |engine| engine.end_txn(&txn_id, producer, req.committed, now),
                    Some(tx),
                )
            });
        if outcome.is_ok() {
            // No markers (a retry, or an empty transaction): the sender is dropped at once.
            match tokio::time::timeout(END_TXN_WAIT, rx).await {
                // The new coordinator finishes the transaction; the client asks it.
                Ok(Ok(Err(JobFailed::Moved))) => {
                    return Ok(EndTxnResponse::default()
                        .with_error_code(ResponseError::NotCoordinator.code()));
                }
                Ok(Ok(Err(e))) => {
                    return Err(BrokerError::Metadata {
                        path: TRANSACTION_TOPIC.into(),
                        reason: format!("transaction {txn_id} did not complete: {e}"),
                    })
                }
                _ => {}
            }
        }
        let outcome = fenced_as(outcome, version, 2);
        Ok(EndTxnResponse::default().with_error_code(code(&outcome)))
    }

    /// ListTransactions (KIP-664): the coordinator's transactional ids, filtered.
    pub(crate) fn list_transactions(
        &self,
        req: ListTransactionsRequest,
    ) -> ListTransactionsResponse {
        let (known, unknown): (Vec<_>, Vec<_>) = req
            .state_filters
            .iter()
            .map(|s| s.to_string())
            .partition(|s| TxnState::ALL.iter().any(|t| t.name() == s));
        let engine = match self.txn.engine() {
            Ok(e) => e,
            Err(e) => return ListTransactionsResponse::default().with_error_code(e.code()),
        };
        // Every filter named an unknown state: nothing can match.
        let listed = if !req.state_filters.is_empty() && known.is_empty() {
            Vec::new()
        } else {
            let states: BTreeSet<String> = known.into_iter().collect();
            let pids: BTreeSet<i64> = req.producer_id_filters.iter().map(|p| p.0).collect();
            engine.list(&states, &pids, req.duration_filter, self.clock.now_ms())
        };
        ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown.iter().map(|s| text(s)).collect())
            .with_transaction_states(
                listed
                    .into_iter()
                    .map(|t| {
                        ListedState::default()
                            .with_transactional_id(TransactionalId(text(&t.transactional_id)))
                            .with_producer_id(ProducerId(t.producer_id))
                            .with_transaction_state(text(t.state.name()))
                    })
                    .collect(),
            )
    }

    /// DescribeTransactions (KIP-664): each transactional id's state, producer and
    /// partitions; TRANSACTIONAL_ID_NOT_FOUND for one the coordinator does not know.
    pub(crate) fn describe_transactions(
        &self,
        req: DescribeTransactionsRequest,
    ) -> DescribeTransactionsResponse {
        let engine = self.txn.engine();
        let states = req
            .transactional_ids
            .iter()
            .map(|id| {
                let base = DescribedState::default()
                    .with_transactional_id(id.clone())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1);
                let engine = match &engine {
                    Ok(e) => e,
                    Err(e) => return base.with_error_code(e.code()),
                };
                if let Err(e) = self.check_coordinator(Coordinated::Transaction, id.as_str()) {
                    return base.with_error_code(e.code());
                }
                let Some(m) = engine.get(id.as_str()) else {
                    return base.with_error_code(ResponseError::TransactionalIdNotFound.code());
                };
                let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                for (t, p) in &m.partitions {
                    topics.entry(t).or_default().push(*p);
                }
                base.with_transaction_state(text(m.state.name()))
                    .with_transaction_timeout_ms(m.timeout_ms)
                    .with_transaction_start_time_ms(if m.in_progress() { m.started_ms } else { -1 })
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.producer_epoch)
                    .with_topics(
                        topics
                            .into_iter()
                            .map(|(t, ps)| {
                                TopicData::default()
                                    .with_topic(TopicName(text(t)))
                                    .with_partitions(ps)
                            })
                            .collect(),
                    )
            })
            .collect();
        DescribeTransactionsResponse::default().with_transaction_states(states)
    }
}

/// The producer id and epoch an InitProducerId names, checked as Kafka checks them: both
/// unset, or both set.
pub(crate) fn expected_producer(
    req: &InitProducerIdRequest,
) -> Result<Option<(i64, i16)>, ResponseError> {
    match (req.producer_id.0, req.producer_epoch) {
        (-1, -1) => Ok(None),
        (-1, _) | (_, -1) => Err(ResponseError::InvalidRequest),
        (id, epoch) => Ok(Some((id, epoch))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ManagerConfig;
    use crate::time::ManualClock;

    /// A panic inside the coordinator's critical section (after the engine changed, before
    /// the change was written) must not leave the half-made change in force: the poisoned
    /// engine is thrown away and reloaded from `__transaction_state`.
    #[test]
    fn a_poisoned_coordinator_reloads_what_it_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000);
        let logs =
            Arc::new(LogManager::open(ManagerConfig::new(dir.path()), clock.clone()).unwrap());
        let coordinator = Arc::new(TxnCoordinator::new(
            TxnConfig {
                max_timeout_ms: 60_000,
                id_expiration_ms: 1 << 40,
            },
            Arc::clone(&logs),
            Arc::new(Mutex::new(OffsetStore::default())),
            Arc::default(),
            clock.clone(),
            None,
        ));
        coordinator.load(1).unwrap();
        let mut next = 7;
        let (pid, epoch) = coordinator
            .run(
                |e| {
                    e.init_producer_id("tx", 1_000, None, 1_000, &mut || {
                        next += 1;
                        Some(next)
                    })
                },
                None,
            )
            .unwrap();
        let c = Arc::clone(&coordinator);
        let _ = std::thread::spawn(move || {
            let mut engine = c.engine.lock().unwrap();
            // A transition applied in memory but never persisted...
            let _ = engine.init_producer_id("tx", 1_000, None, 2_000, &mut || None);
            panic!("...because of a bug in between");
        })
        .join();
        assert!(coordinator.engine.is_poisoned());
        let engine = coordinator.engine().unwrap();
        let meta = engine.get("tx").unwrap();
        assert_eq!((meta.producer_id, meta.producer_epoch), (pid, epoch));
        drop(engine);
        assert!(!coordinator.engine.is_poisoned());
        logs.close().unwrap();
    }
}
