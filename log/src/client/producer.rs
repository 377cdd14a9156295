//! `Producer`: Kafka's producer semantics over any [`Transport`]. Records are partitioned
//! (murmur2 for keys, sticky for null keys, or a custom [`Partitioner`]), collected per
//! partition into batches that close at `batch.size` or after `linger.ms`, compressed with
//! `compression.type`, and sent by a background task with up to
//! `max.in.flight.requests.per.connection` batches of a partition in flight at once (pipelined
//! on the connection, so one partition's throughput is not one batch per round trip); the
//! idempotent producer's sequence numbers keep a partition in order across retries. Memory
//! is bounded by `buffer.memory`: `send` waits for room (backpressure) and fails after
//! `max.block.ms`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, GroupId,
    InitProducerIdRequest, MetadataRequest, ProduceRequest, ProducerId, RequestKind, ResponseKind,
    TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::time::Instant;

use super::partitioner::{DefaultPartitioner, Partitioner};
use super::transport::Transport;
use super::{check, ClientError};
use crate::hash::FastHashMap;
use crate::record::{encode_batch, encode_idempotent_batch, Compression, NewRecord};

/// Producer settings, under Kafka's names.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `acks`: 0, 1 or -1 (all).
    pub acks: i16,
    /// `linger.ms`: how long a batch waits for more records before it is sent.
    pub linger_ms: u64,
    /// `batch.size`: the bytes of records at which a batch is sent at once.
    pub batch_size: usize,
    /// `buffer.memory`: the most memory records waiting to be sent or acknowledged may take;
    /// `send` waits for room. What a queued record is charged is what it holds: its key,
    /// value and headers as the allocator holds them (each allocation rounded up to 16 bytes,
    /// plus 16; a header also takes its slot in the headers list), and the [`Delivery`]
    /// `send` returns. Each batch is charged its slots for records (at first room for records
    /// like its first one up to `batch.size`, at most `batch.size` bytes of slots; grown for
    /// more only while there is room), its place in the partition's queue and its shared
    /// outcome. Not charged: a key or value that is a slice of a larger buffer keeps all of
    /// it alive, and a batch being sent also holds its encoded copy until the broker answers
    /// (up to `max.in.flight.requests.per.connection` batches per partition).
    pub buffer_memory: usize,
    /// `max.block.ms`: how long `send` waits for room or metadata before failing.
    pub max_block_ms: u64,
    /// `compression.type`.
    pub compression: Compression,
    /// `retries`: attempts after the first for a batch failing with a retriable error.
    pub retries: u32,
    /// `retry.backoff.ms`.
    pub retry_backoff_ms: u64,
    /// `request.timeout.ms`: how long one produce request may take.
    pub request_timeout_ms: u64,
    /// `delivery.timeout.ms`: how long a batch may take from creation to acknowledgement,
    /// retries included; then its records fail.
    pub delivery_timeout_ms: u64,
    /// Seed for the sticky partitioner's choices.
    pub seed: u64,
    /// `enable.idempotence`: the producer gets a producer id (InitProducerId) and numbers its
    /// batches per partition, so the broker drops retried duplicates and refuses gaps.
    /// Needs `acks=-1`.
    pub enable_idempotence: bool,
    /// `transactional.id`: makes the producer transactional (idempotent too). Call
    /// [`Producer::init_transactions`] once, then send inside `begin_transaction` /
    /// `commit_transaction` (or `abort_transaction`).
    pub transactional_id: Option<String>,
    /// `transaction.timeout.ms`: the coordinator aborts a transaction open longer than this.
    pub transaction_timeout_ms: i32,
    /// `max.in.flight.requests.per.connection`: the most batches of one partition sent and
    /// not yet answered (rill sends one partition's batch per produce request, so Kafka's
    /// per-connection count is per partition here). Above 1, a retried batch can land after
    /// a later one unless idempotence is on (as in Kafka): an idempotent producer resends a
    /// failed batch, and the batches refused behind it as out of order, in sequence order.
    pub max_in_flight_requests_per_connection: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: -1,
            linger_ms: 5,
            batch_size: 16_384,
            buffer_memory: 32 << 20,
            max_block_ms: 60_000,
            compression: Compression::None,
            retries: i32::MAX as u32,
            retry_backoff_ms: 100,
            request_timeout_ms: 30_000,
            delivery_timeout_ms: 120_000,
            seed: 0x5eed,
            enable_idempotence: true,
            transactional_id: None,
            transaction_timeout_ms: 60_000,
            max_in_flight_requests_per_connection: 5,
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// Shared, not copied, by the records of one topic (a stream thread's outputs).
    pub topic: Arc<str>,
    /// A fixed partition, or `None` to let the partitioner choose.
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// `None`: the time of `send`.
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl ProducerRecord {
    pub fn new(
        topic: impl Into<Arc<str>>,
        key: Option<impl Into<Bytes>>,
        value: impl Into<Bytes>,
    ) -> Self {
        ProducerRecord {
            topic: topic.into(),
            key: key.map(Into::into),
            value: Some(value.into()),
            ..Default::default()
        }
    }
}

/// Where an acknowledged record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: i32,
    /// -1 under acks=0, where the broker does not answer.
    pub offset: i64,
    pub timestamp_ms: i64,
}

/// How a batch ended: its base offset (-1 under acks=0), or the error its records fail with.
type Outcome = Result<i64, (Option<ResponseError>, String)>;

/// The outcome of one batch, shared by the [`Delivery`] of each of its records: one
/// allocation per batch rather than a channel per record.
#[derive(Default)]
struct BatchSlot {
    outcome: OnceLock<Outcome>,
    /// The records the broker named as invalid (KIP-467), set before a failed outcome.
    invalid: OnceLock<Vec<(u32, String)>>,
    done: Notify,
}

impl BatchSlot {
    fn finish(&self, outcome: Outcome) {
        if self.outcome.set(outcome).is_ok() {
            self.done.notify_waiters();
        }
    }
}

/// The outcome of one record, resolved when its batch is acknowledged or fails. Await it
/// (`delivery.await`) or poll it with [`Delivery::try_get`]; dropping it changes nothing.
pub struct Delivery {
    slot: Arc<BatchSlot>,
    index: u32,
    partition: i32,
    timestamp_ms: i64,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("partition", &self.partition)
            .field("outcome", &self.try_get())
            .finish()
    }
}

/// Where a record was queued: its batch and place there (a [`Delivery`] to be).
struct Queued<'a> {
    slot: &'a Arc<BatchSlot>,
    index: u32,
    partition: i32,
    timestamp_ms: i64,
}

impl Queued<'_> {
    fn to_delivery(&self) -> Delivery {
        Delivery {
            slot: Arc::clone(self.slot),
            index: self.index,
            partition: self.partition,
            timestamp_ms: self.timestamp_ms,
        }
    }

    /// [`Delivery::keep_last_of_batch`] without a new delivery when the last one kept is of
    /// the same batch (it moves to this record).
    fn keep_last_of_batch(&self, deliveries: &mut Vec<Delivery>) {
        match deliveries.last_mut() {
            Some(last) if Arc::ptr_eq(&last.slot, self.slot) => {
                last.index = self.index;
                last.timestamp_ms = self.timestamp_ms;
            }
            _ => deliveries.push(self.to_delivery()),
        }
    }
}

impl Delivery {
    /// The outcome if the batch has ended, without waiting.
    pub fn try_get(&self) -> Option<Result<RecordMetadata, ClientError>> {
        self.slot.outcome.get().map(|outcome| match outcome {
            Ok(base) => Ok(RecordMetadata {
                partition: self.partition,
                offset: if *base < 0 {
                    -1
                } else {
                    base + i64::from(self.index)
                },
                timestamp_ms: self.timestamp_ms,
            }),
            Err(_) if self.slot.invalid.get().is_some() => {
                let invalid = self
                    .slot
                    .invalid
                    .get()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let error = match outcome {
                    Err((Some(e), _)) => *e,
                    _ => ResponseError::InvalidRecord,
                };
                match invalid.iter().find(|(i, _)| *i == self.index) {
                    Some((_, why)) => Err(ClientError::Kafka {
                        error,
                        message: Some(why.clone()),
                    }),
                    None => Err(ClientError::BatchRejected(
                        invalid.iter().map(|(i, _)| *i).collect(),
                    )),
                }
            }
            Err((Some(error), text)) => Err(ClientError::Kafka {
                error: *error,
                message: Some(text.clone()),
            }),
            Err((None, text)) if text.is_empty() => Err(ClientError::Closed),
            Err((None, text)) => Err(ClientError::Unexpected(text.clone())),
        })
    }

    /// Whether `other` went in the same batch: both then end the same way, so a caller
    /// waiting for many records needs to keep only the last of each batch.
    pub fn same_batch(&self, other: &Delivery) -> bool {
        Arc::ptr_eq(&self.slot, &other.slot)
    }

    /// Keeps `d` in `deliveries` as one to wait for: it takes the place of the last one there
    /// when both went in the same batch (the batch's last record stands for the others, and
    /// has its highest offset).
    pub fn keep_last_of_batch(deliveries: &mut Vec<Delivery>, d: Delivery) {
        match deliveries.last_mut() {
            Some(last) if last.same_batch(&d) => *last = d,
            _ => deliveries.push(d),
        }
    }

    /// Waits for the outcome.
    pub async fn wait(self) -> Result<RecordMetadata, ClientError> {
        loop {
            let done = self.slot.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if let Some(result) = self.try_get() {
                return result;
            }
            done.await;
        }
    }
}

impl std::future::IntoFuture for Delivery {
    type Output = Result<RecordMetadata, ClientError>;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

/// Records bound for one partition, sent in one produce request (Kafka's `ProducerBatch`).
struct ProducerBatch {
    records: Vec<NewRecord>,
    /// The records' size as `batch.size` counts it.
    bytes: usize,
    /// What the batch holds of `buffer.memory` (see [`Cost`]), given back when it is dropped.
    held: usize,
    memory: Arc<Semaphore>,
    slot: Arc<BatchSlot>,
    created: Instant,
    /// Taken by the sender at least once: it accepts no more records.
    sealed: bool,
    attempts: u32,
    retry_at: Option<Instant>,
    /// Idempotence: (producer id, epoch, first sequence), fixed the first time the batch is
    /// sent so every retry is the same batch to the broker.
    sequence: Option<(i64, i16, i32)>,
    /// The order it was first sent in among its partition's batches: a batch coming back for
    /// a retry goes back in this order, ahead of batches never sent.
    sent_as: Option<u64>,
}

impl ProducerBatch {
    /// Whether a record of `cost` may still join this batch (open, room under `batch.size`).
    fn takes(&self, cost: Cost, batch_size: usize) -> bool {
        !self.sealed && self.bytes + cost.batch <= batch_size
    }
}

impl Drop for ProducerBatch {
    fn drop(&mut self) {
        // A batch dropped unsent (the producer went away) fails its records as closed.
        self.slot.finish(Err((None, String::new())));
        self.memory.add_permits(self.held);
    }
}

/// One partition's batches, oldest first; batches being retried go back to the front, in
/// the order they were first sent.
#[derive(Default)]
struct PartitionQueue {
    batches: VecDeque<ProducerBatch>,
    /// The batches sent and not yet answered, by their place in the send order.
    in_flight: std::collections::BTreeSet<u64>,
    /// The sequence the next new batch of this partition starts at.
    next_sequence: i32,
    /// The next batch's place in the order batches are first sent.
    next_send: u64,
    /// Told when the last batch sent is written to the connection: the next one waits for
    /// it, so pipelined batches reach the broker in order.
    written: Option<oneshot::Receiver<()>>,
}

impl PartitionQueue {
    /// Puts a batch that was sent back for a retry: after the retries that were sent before
    /// it, ahead of everything sent after it or never sent.
    fn requeue(&mut self, batch: ProducerBatch) {
        let at = self
            .batches
            .iter()
            .position(|b| b.sent_as.is_none_or(|o| Some(o) > batch.sent_as))
            .unwrap_or(self.batches.len());
        self.batches.insert(at, batch);
    }

    /// Whether a batch sent before `batch` is still unanswered or waiting here for a retry:
    /// the broker refusing `batch` as out of order is then that batch's gap (its failure
    /// may simply not be handled yet), not a lost write.
    fn behind_another(&self, batch: &ProducerBatch) -> bool {
        let Some(mine) = batch.sent_as else {
            return false;
        };
        self.in_flight.first().is_some_and(|o| *o < mine) || self.retry_before(mine)
    }

    /// Whether a batch sent before the one sent as `mine` waits here for a retry. Retries
    /// are kept at the front, oldest first: the front is the one to look at.
    fn retry_before(&self, mine: u64) -> bool {
        self.batches
            .front()
            .is_some_and(|b| b.attempts > 0 && b.sent_as.is_some_and(|o| o < mine))
    }
}

struct TopicQueues {
    partitions: i32,
    queues: Vec<PartitionQueue>,
}

#[derive(Default)]
struct State {
    // Looked up per record sent: a fast hash, not SipHash.
    topics: FastHashMap<String, TopicQueues>,
    flushing: usize,
    closed: bool,
    /// Idempotence: the producer id and epoch, once InitProducerId answered.
    producer: Option<(i64, i16)>,
    /// A batch failed for good: its sequences are lost, so the epoch is bumped and every
    /// partition's sequence starts again at 0 before new batches go out (KIP-360).
    bump_epoch: bool,
    /// The transaction being built, for a transactional producer.
    txn: Option<OpenTxn>,
}

/// A transactional producer's open transaction.
#[derive(Debug, Default)]
struct OpenTxn {
    /// Partitions already added to the transaction at the coordinator.
    partitions: std::collections::BTreeSet<(String, i32)>,
    /// The first failure of a batch in this transaction: it can only be aborted now.
    failed: Option<String>,
    /// Offsets were added (AddOffsetsToTxn): the coordinator has the transaction open.
    offsets_added: bool,
}

impl OpenTxn {
    /// Whether the coordinator knows of this transaction (else EndTxn has nothing to end,
    /// and would be refused after a completed one).
    fn started(&self) -> bool {
        !self.partitions.is_empty() || self.offsets_added
    }
}

impl State {
    fn idle(&self) -> bool {
        self.topics
            .values()
            .flat_map(|t| &t.queues)
            .all(|q| q.batches.is_empty() && q.in_flight.is_empty())
    }
}

struct Inner {
    transport: Arc<dyn Transport>,
    config: ProducerConfig,
    partitioner: Arc<dyn Partitioner>,
    memory: Arc<Semaphore>,
    state: Mutex<State>,
    /// Wakes the sender (new batch, full batch, flush, completion).
    wake: Notify,
    /// Wakes flushers when a batch completes.
    progress: Notify,
}

impl Inner {
    /// The producer's state. After a panic inside it (a bug) the producer closes itself:
    /// new sends fail, queued batches still go out.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::relock(&self.state, "producer", |st| st.closed = true)
    }
}

/// A Kafka producer. Cheap to clone; all clones share one sender task.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
    /// The sender task, awaited by `close` so nothing outlives the producer.
    sender: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// Wall-clock milliseconds since the epoch: a record's timestamp when it has none.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a record costs: toward `batch.size`, and against `buffer.memory`.
#[derive(Debug, Clone, Copy)]
struct Cost {
    /// Its payload and a fixed overhead, as Kafka estimates a record's size in a batch.
    batch: usize,
    /// The memory it holds while queued: its key, value and headers as allocated, and the
    /// `Delivery` handed back for it (its slot in the batch is the batch's).
    memory: usize,
    /// The record slots a batch it opens would like: room for records like it up to
    /// `batch.size`, at most `batch.size` bytes of slots.
    slots: usize,
    /// The room taken for it before it is queued: its [`room`](Cost::room), or only its own
    /// memory when it was seen to join an open batch with a free slot (under the same lock),
    /// so the common case takes room once and gives nothing back.
    prepaid: usize,
}

/// What the allocator keeps beside each allocation (glibc's malloc; mimalloc's size classes
/// cost about as much).
const ALLOC_OVERHEAD: usize = 16;

/// Bytes an allocation of `len` bytes takes: rounded up to 16, plus the allocator's own.
const fn allocated(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len.next_multiple_of(16) + ALLOC_OVERHEAD
    }
}

/// What a batch costs besides its record slots: its place in the partition's queue (twice:
/// the queue grows by doubling), its shared outcome (an `Arc`), and the slots' allocation.
const BATCH_BYTES: usize = 2 * std::mem::size_of::<ProducerBatch>()
    + allocated(2 * std::mem::size_of::<usize>() + std::mem::size_of::<BatchSlot>())
    + ALLOC_OVERHEAD;

/// One record slot of a batch.
const SLOT_BYTES: usize = std::mem::size_of::<NewRecord>();

impl Cost {
    /// The room a record takes before it is queued: its own memory, and what a batch it
    /// opens costs with one slot (given back when it joins an open batch).
    fn room(&self) -> usize {
        self.memory + BATCH_BYTES + SLOT_BYTES
    }
}

fn payload_bytes(
    key: Option<&Bytes>,
    value: Option<&Bytes>,
    headers: &[(String, Option<Bytes>)],
) -> usize {
    // The record's size toward batch.size: its payload plus a fixed overhead, as Kafka
    // estimates it.
    key.map_or(0, |k| k.len())
        + value.map_or(0, |v| v.len())
        + headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
        + 24
}

impl Producer {
    /// What a record with this key, value and headers costs (see [`Cost`]).
    fn cost(
        &self,
        key: Option<&Bytes>,
        value: Option<&Bytes>,
        headers: &Vec<(String, Option<Bytes>)>,
    ) -> Cost {
        let batch = payload_bytes(key, value, headers);
        let memory = std::mem::size_of::<Delivery>()
            + allocated(key.map_or(0, Bytes::len))
            + allocated(value.map_or(0, Bytes::len))
            + allocated(headers.capacity() * std::mem::size_of::<(String, Option<Bytes>)>())
            + headers
                .iter()
                .map(|(k, v)| allocated(k.capacity()) + allocated(v.as_ref().map_or(0, Bytes::len)))
                .sum::<usize>();
        let batch_size = self.inner.config.batch_size;
        let slots = (batch_size / batch.max(1))
            .clamp(1, 4096)
            .min(batch_size / SLOT_BYTES)
            .max(1);
        Cost {
            batch,
            memory,
            slots,
            prepaid: 0,
        }
    }

    fn cost_of(&self, r: &ProducerRecord) -> Cost {
        self.cost(r.key.as_ref(), r.value.as_ref(), &r.headers)
    }

    /// Starts a producer and its sender task (needs a tokio runtime).
    pub fn new(transport: Arc<dyn Transport>, config: ProducerConfig) -> Self {
        let partitioner = Arc::new(DefaultPartitioner::new(config.seed));
        Self::with_partitioner(transport, config, partitioner)
    }

    pub fn with_partitioner(
        transport: Arc<dyn Transport>,
        mut config: ProducerConfig,
        partitioner: Arc<dyn Partitioner>,
    ) -> Self {
        // Idempotence needs every write acknowledged (Kafka's rule); transactions need it.
        if config.transactional_id.is_some() {
            config.enable_idempotence = true;
            config.acks = -1;
        }
        if config.acks != -1 {
            config.enable_idempotence = false;
        }
        let inner = Arc::new(Inner {
            memory: Arc::new(Semaphore::new(config.buffer_memory)),
            transport,
            config,
            partitioner,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            progress: Notify::new(),
        });
        let task = tokio::spawn(sender(Arc::clone(&inner)));
        Producer {
            inner,
            sender: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// The partition count of `topic`, from Metadata (auto-creating the topic where the broker
    /// allows), retried until `deadline`.
    async fn fetch_partitions(&self, topic: &str, deadline: Instant) -> Result<i32, ClientError> {
        loop {
            let req = MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                    TopicName(StrBytes::from_string(topic.to_string())),
                ))]))
                .with_allow_auto_topic_creation(true);
            let last = match self.inner.transport.send(RequestKind::Metadata(req)).await {
                Err(e) if e.is_retriable() => Some(e),
                Err(e) => return Err(e),
                Ok(Some(ResponseKind::Metadata(m))) => match m.topics.first() {
                    Some(t) if t.error_code == 0 && !t.partitions.is_empty() => {
                        let n = t.partitions.len() as i32;
                        self.inner
                            .state()
                            .topics
                            .entry(topic.to_string())
                            .or_insert_with(|| TopicQueues {
                                partitions: n,
                                queues: (0..n).map(|_| PartitionQueue::default()).collect(),
                            });
                        return Ok(n);
                    }
                    // An unknown topic may yet appear (auto-creation, a slow create); an
                    // invalid name or a refusal will not: fail at once, as Kafka does.
                    Some(t) => match check(t.error_code, None) {
                        Err(e) if !e.is_retriable() => return Err(e),
                        r => r.err(),
                    },
                    None => Some(ClientError::NoResponse),
                },
                Ok(_) => Some(ClientError::NoResponse),
            };
            if Instant::now() >= deadline {
                return Err(last.unwrap_or(ClientError::Timeout("metadata")));
            }
            tokio::time::sleep(Duration::from_millis(self.inner.config.retry_backoff_ms)).await;
        }
    }

    /// Queues a record. Waits (up to `max.block.ms`) for metadata and for room in
    /// `buffer.memory`; the returned [`Delivery`] resolves when the broker acknowledges it.
    pub async fn send(&self, record: ProducerRecord) -> Result<Delivery, ClientError> {
        let cost = self.cost_of(&record);
        self.check_size(cost)?;
        // The common case takes the state lock once: the topic is known and buffer.memory
        // has room. Otherwise the record waits for either outside the lock.
        let record = {
            let st = self.inner.state();
            match st.topics.get(&*record.topic) {
                Some(t) => {
                    let partitions = t.partitions;
                    let partition = self.partition_of(&record, partitions)?;
                    let cost = self.prepay(t.queues.get(partition as usize), cost);
                    if self.take_room(cost.prepaid)? {
                        return self.append(st, record, partition, partitions, cost);
                    }
                    record
                }
                None => record,
            }
        };
        // The clock is read only when `send` has to wait.
        let deadline = Instant::now() + Duration::from_millis(self.inner.config.max_block_ms);
        let partitions = self.partitions(&record.topic, deadline).await?;
        let partition = self.partition_of(&record, partitions)?;
        self.wait_for_room(cost.room(), deadline).await?;
        let cost = Cost {
            prepaid: cost.room(),
            ..cost
        };
        self.append(self.inner.state(), record, partition, partitions, cost)
    }

    /// `cost` with what to take for it now: only its own memory if it will join the open
    /// batch of its partition's queue `q` (a free slot, room under `batch.size`), else its
    /// whole room.
    fn prepay(&self, q: Option<&PartitionQueue>, cost: Cost) -> Cost {
        let batch_size = self.inner.config.batch_size;
        let joins = q
            .and_then(|q| q.batches.back())
            .is_some_and(|b| b.takes(cost, batch_size) && b.records.len() < b.records.capacity());
        Cost {
            prepaid: if joins { cost.memory } else { cost.room() },
            ..cost
        }
    }

    /// A record that can never fit in buffer.memory: refused at once, as Kafka does.
    fn check_size(&self, cost: Cost) -> Result<(), ClientError> {
        if cost.room() > self.inner.config.buffer_memory {
            return Err(ClientError::Kafka {
                error: ResponseError::MessageTooLarge,
                message: Some(format!(
                    "the record takes {} bytes of memory, more than buffer.memory",
                    cost.room()
                )),
            });
        }
        Ok(())
    }

    /// The partition count of `topic`: known, or fetched (by `deadline`).
    async fn partitions(&self, topic: &str, deadline: Instant) -> Result<i32, ClientError> {
        let known = self.inner.state().topics.get(topic).map(|t| t.partitions);
        match known {
            Some(n) => Ok(n),
            None => self.fetch_partitions(topic, deadline).await,
        }
    }

    /// Takes room for `size` bytes in buffer.memory if there is some now (false if not). The
    /// room goes to the record's batch, which gives it back when dropped (or back at once,
    /// [`Producer::give_back`], when the record is not queued after all).
    fn take_room(&self, size: usize) -> Result<bool, ClientError> {
        match self.inner.memory.try_acquire_many(size as u32) {
            Ok(permit) => {
                permit.forget();
                Ok(true)
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => Ok(false),
            Err(tokio::sync::TryAcquireError::Closed) => Err(ClientError::Closed),
        }
    }

    /// [`Producer::take_room`], waiting for it until `deadline`.
    async fn wait_for_room(&self, size: usize, deadline: Instant) -> Result<(), ClientError> {
        tokio::time::timeout_at(deadline, self.inner.memory.acquire_many(size as u32))
            .await
            .map_err(|_| ClientError::Timeout("buffer.memory"))?
            .map_err(|_| ClientError::Closed)?
            .forget();
        Ok(())
    }

    /// Gives back the room a record took that was not queued.
    fn give_back(&self, size: usize) {
        self.inner.memory.add_permits(size);
    }

    /// The partition `record` goes to: its own, or the partitioner's choice.
    fn partition_of(&self, record: &ProducerRecord, partitions: i32) -> Result<i32, ClientError> {
        match record.partition {
            Some(p) if p < 0 || p >= partitions => Err(ClientError::Kafka {
                error: ResponseError::UnknownTopicOrPartition,
                message: None,
            }),
            Some(p) => Ok(p),
            None => {
                let p = self.inner.partitioner.partition(
                    &record.topic,
                    record.key.as_deref(),
                    partitions,
                );
                // A custom partitioner must stay in range.
                if p < 0 || p >= partitions {
                    return Err(ClientError::Kafka {
                        error: ResponseError::UnknownTopicOrPartition,
                        message: Some(format!("partitioner chose {p} of {partitions} partitions")),
                    });
                }
                Ok(p)
            }
        }
    }

    /// Appends `record` to its partition's open batch (or a new one), under the state lock
    /// `st`, in the room in `buffer.memory` taken for its `cost`.
    fn append(
        &self,
        mut st: std::sync::MutexGuard<'_, State>,
        record: ProducerRecord,
        partition: i32,
        partitions: i32,
        cost: Cost,
    ) -> Result<Delivery, ClientError> {
        let mut delivery = None;
        let wake = self.queue(&mut st, record, partition, partitions, cost, |d| {
            delivery = Some(d.to_delivery());
        })?;
        drop(st);
        if wake {
            self.inner.wake.notify_one();
        }
        delivery.ok_or(ClientError::Closed)
    }

    /// [`Producer::enqueue`] for a [`ProducerRecord`] bound for `partition` (of
    /// `partitions`): hands `queued` its place and returns whether the sender must be woken
    /// (a full batch goes now; a new one needs the sender to start its linger clock).
    fn queue(
        &self,
        st: &mut State,
        record: ProducerRecord,
        partition: i32,
        partitions: i32,
        cost: Cost,
        queued: impl FnOnce(Queued<'_>),
    ) -> Result<bool, ClientError> {
        let new = NewRecord {
            key: record.key,
            value: record.value,
            timestamp_ms: record.timestamp_ms.unwrap_or_else(now_ms),
            headers: record.headers,
        };
        let (opened, full) = self.enqueue(st, &record.topic, partition, new, cost, queued)?;
        // The sticky partitioner moves on once a batch of its partition is full.
        if full && record.partition.is_none() {
            self.inner
                .partitioner
                .on_new_batch(&record.topic, partition, partitions);
        }
        Ok(full || opened)
    }

    /// Puts `record` in the open batch of `topic`'s `partition` (a known one), or in a new
    /// batch, in the room taken for its `cost` (given back if it is not queued, the opened
    /// batch's part if it opens none); hands `queued` its place. Returns whether it opened a
    /// batch and whether that batch is now full (no room for another record like this one).
    fn enqueue(
        &self,
        st: &mut State,
        topic: &str,
        partition: i32,
        record: NewRecord,
        cost: Cost,
        queued: impl FnOnce(Queued<'_>),
    ) -> Result<(bool, bool), ClientError> {
        let batch_size = self.inner.config.batch_size;
        let q = if st.closed {
            Err(ClientError::Closed)
        } else if self.inner.config.transactional_id.is_some() && st.txn.is_none() {
            Err(txn_state_error(
                "a transactional producer sends inside begin_transaction()",
            ))
        } else {
            st.topics
                .get_mut(topic)
                .and_then(|t| t.queues.get_mut(partition as usize))
                .ok_or(ClientError::Closed)
        };
        let q = match q {
            Ok(q) => q,
            Err(e) => {
                self.give_back(cost.prepaid);
                return Err(e);
            }
        };
        let mut open = false;
        if let Some(b) = q.batches.back_mut() {
            if b.takes(cost, batch_size) {
                open = b.records.len() < b.records.capacity();
                if !open {
                    // Slots for records like this one up to batch.size, if buffer.memory has
                    // room for them now; else the record opens a batch, in the room it took.
                    let more = ((batch_size - b.bytes) / cost.batch.max(1)).max(1);
                    if let Ok(true) = self.take_room(more * SLOT_BYTES) {
                        b.records.reserve_exact(more);
                        b.held += more * SLOT_BYTES;
                        open = true;
                    }
                }
            }
        }
        if open {
            self.give_back(cost.prepaid.saturating_sub(cost.memory));
        } else {
            // Room for a new batch, if the record was expected to join one (never under one
            // lock; kept exact anyway: the batch holds only what was taken).
            let short = cost.room().saturating_sub(cost.prepaid);
            let missing = match self.take_room(short) {
                Ok(true) => 0,
                _ => short,
            };
            // Sized for records like this one (no regrowth while it fills) if buffer.memory
            // has room for that now; else one slot, grown as records come.
            let more = (cost.slots - 1) * SLOT_BYTES;
            let slots = match self.take_room(more) {
                Ok(true) => cost.slots,
                _ => 1,
            };
            q.batches.push_back(ProducerBatch {
                records: Vec::with_capacity(slots),
                bytes: 0,
                held: BATCH_BYTES + slots * SLOT_BYTES - missing,
                memory: Arc::clone(&self.inner.memory),
                slot: Arc::default(),
                created: Instant::now(),
                sealed: false,
                attempts: 0,
                retry_at: None,
                sequence: None,
                sent_as: None,
            });
        }
        // A batch was just there or pushed.
        let Some(batch) = q.batches.back_mut() else {
            self.give_back(cost.memory);
            return Err(ClientError::Closed);
        };
        // The batch now holds the room; it gives it back when dropped.
        batch.bytes += cost.batch;
        batch.held += cost.memory;
        queued(Queued {
            slot: &batch.slot,
            index: batch.records.len() as u32,
            partition,
            timestamp_ms: record.timestamp_ms,
        });
        batch.records.push(record);
        // Full: it cannot take another record like this one. (Waiting for `batch.size`
        // exactly would never see most batches full — 1 KiB records leave a 16 KiB batch a
        // few bytes short — and the sticky partitioner, which moves on at a full batch,
        // would stick to one partition for ever.)
        Ok((!open, batch.bytes + cost.batch > batch_size))
    }

    /// Queues `records` for `partition` of `topic`, in order, as [`Producer::send`] would one
    /// by one, but taking the state lock once for as many as `buffer.memory` has room for.
    /// Returns the delivery of the last record of each batch they went into: every record
    /// of a batch ends as its batch does, so these are all a caller needs to wait for.
    pub async fn send_to_partition(
        &self,
        topic: &str,
        partition: i32,
        records: impl IntoIterator<Item = NewRecord>,
    ) -> Result<Vec<Delivery>, ClientError> {
        let max_block = Duration::from_millis(self.inner.config.max_block_ms);
        let partitions = self.partitions(topic, Instant::now() + max_block).await?;
        if partition < 0 || partition >= partitions {
            return Err(ClientError::Kafka {
                error: ResponseError::UnknownTopicOrPartition,
                message: None,
            });
        }
        let mut last: Vec<Delivery> = Vec::new();
        let mut records = records.into_iter().peekable();
        // A record that had to wait for room, with its permit.
        let mut waited = None;
        loop {
            let mut wake = false;
            let queued: Result<(), ClientError> = 'queue: {
                let mut st = self.inner.state();
                let mut queue = |st: &mut State, record, cost| -> Result<(), ClientError> {
                    let (opened, full) = self.enqueue(st, topic, partition, record, cost, |q| {
                        q.keep_last_of_batch(&mut last)
                    })?;
                    wake |= opened || full;
                    Ok(())
                };
                if let Some((record, cost)) = waited.take() {
                    if let Err(e) = queue(&mut st, record, cost) {
                        break 'queue Err(e);
                    }
                }
                while let Some(r) = records.peek() {
                    let cost = self.cost(r.key.as_ref(), r.value.as_ref(), &r.headers);
                    if let Err(e) = self.check_size(cost) {
                        break 'queue Err(e);
                    }
                    let q = st
                        .topics
                        .get(topic)
                        .and_then(|t| t.queues.get(partition as usize));
                    let cost = self.prepay(q, cost);
                    match self.take_room(cost.prepaid) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => break 'queue Err(e),
                    }
                    if let Some(record) = records.next() {
                        if let Err(e) = queue(&mut st, record, cost) {
                            break 'queue Err(e);
                        }
                    }
                }
                Ok(())
            };
            // What was queued goes out even if a record was refused.
            if wake {
                self.inner.wake.notify_one();
            }
            queued?;
            let Some(r) = records.next() else {
                return Ok(last);
            };
            // No room: the sender frees some as batches complete (max.block.ms per wait).
            let cost = self.cost(r.key.as_ref(), r.value.as_ref(), &r.headers);
            self.wait_for_room(cost.room(), Instant::now() + max_block)
                .await?;
            let cost = Cost {
                prepaid: cost.room(),
                ..cost
            };
            waited = Some((r, cost));
        }
    }

    /// Queues `records` in order, as [`Producer::send`] would one by one, but taking the
    /// state lock once for each run of records that needs no wait (a known topic, room in
    /// `buffer.memory`); a record that must wait is sent by `send` itself. Keeps the delivery
    /// of the last record of each batch in `deliveries` (see [`Delivery::keep_last_of_batch`]).
    /// Stops at the first record `send` refuses, with its error: the records before it are
    /// queued, the ones after it stay in `records`.
    pub async fn send_all(
        &self,
        records: &mut impl Iterator<Item = ProducerRecord>,
        deliveries: &mut Vec<Delivery>,
    ) -> Result<(), ClientError> {
        loop {
            let mut wake = false;
            let queued: Result<Option<ProducerRecord>, ClientError> = 'queue: {
                let mut st = self.inner.state();
                // The partition count of the topic of the record before (records of one
                // topic come in runs): one topic lookup per run.
                let mut known: Option<(Arc<str>, i32)> = None;
                for record in records.by_ref() {
                    let cost = self.cost_of(&record);
                    if let Err(e) = self.check_size(cost) {
                        break 'queue Err(e);
                    }
                    let partitions = match &known {
                        // A sink's records share their topic's `Arc`: no bytes compared.
                        Some((t, n)) if Arc::ptr_eq(t, &record.topic) || *t == record.topic => *n,
                        _ => match st.topics.get(&*record.topic).map(|t| t.partitions) {
                            Some(n) => {
                                known = Some((record.topic.clone(), n));
                                n
                            }
                            None => break 'queue Ok(Some(record)),
                        },
                    };
                    let partition = match self.partition_of(&record, partitions) {
                        Ok(p) => p,
                        Err(e) => break 'queue Err(e),
                    };
                    let q = st
                        .topics
                        .get(&*record.topic)
                        .and_then(|t| t.queues.get(partition as usize));
                    let cost = self.prepay(q, cost);
                    match self.take_room(cost.prepaid) {
                        Ok(true) => {}
                        Ok(false) => break 'queue Ok(Some(record)),
                        Err(e) => break 'queue Err(e),
                    }
                    match self.queue(&mut st, record, partition, partitions, cost, |q| {
                        q.keep_last_of_batch(deliveries)
                    }) {
                        Ok(w) => wake |= w,
                        Err(e) => break 'queue Err(e),
                    }
                }
                Ok(None)
            };
            // What was queued goes out even if a record was refused.
            if wake {
                self.inner.wake.notify_one();
            }
            // A record that has to wait for metadata or memory: `send` waits for it.
            match queued? {
                Some(record) => Delivery::keep_last_of_batch(deliveries, self.send(record).await?),
                None => return Ok(()),
            }
        }
    }

    /// Sends everything queued now and waits until all of it is acknowledged (or failed).
    pub async fn flush(&self) {
        self.inner.state().flushing += 1;
        loop {
            let progressed = self.inner.progress.notified();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            self.inner.wake.notify_one();
            if self.inner.state().idle() {
                break;
            }
            progressed.await;
        }
        self.inner.state().flushing -= 1;
    }

    /// Flushes, then stops the sender; later sends fail with `Closed`.
    pub async fn close(&self) {
        self.flush().await;
        self.inner.state().closed = true;
        self.inner.memory.close();
        self.inner.wake.notify_one();
        let task = crate::sync::plain(&self.sender).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The background task: takes ready batches (full, lingered long enough, flushing, or due for
/// retry) and sends each, up to `max.in.flight.requests.per.connection` per partition.
async fn sender(inner: Arc<Inner>) {
    let linger = Duration::from_millis(inner.config.linger_ms);
    loop {
        let woken = inner.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if inner.config.enable_idempotence {
            let pending = {
                let st = inner.state();
                // A transactional producer gets its id from init_transactions.
                inner.config.transactional_id.is_none()
                    && !st.idle()
                    && (st.producer.is_none() || st.bump_epoch)
            };
            if pending {
                if let Err(e) = init_producer_id(&inner, false).await {
                    tracing::warn!(error = %e, "InitProducerId failed; retrying");
                    let _ = tokio::time::timeout(
                        Duration::from_millis(inner.config.retry_backoff_ms),
                        woken,
                    )
                    .await;
                    continue;
                }
            }
        }
        let now = Instant::now();
        let mut ready: Vec<Ready> = Vec::new();
        let mut next_wake: Option<Instant> = None;
        {
            let mut st = inner.state();
            if st.closed && st.idle() {
                return;
            }
            let flushing = st.flushing > 0 || st.closed;
            let producer = st.producer;
            let max_in_flight = inner.config.max_in_flight_requests_per_connection.max(1);
            for (topic, t) in st.topics.iter_mut() {
                for (partition, q) in t.queues.iter_mut().enumerate() {
                    // As many batches as are due, up to max.in.flight; a retry goes alone,
                    // when nothing of its partition is in flight, so it cannot overtake.
                    while q.in_flight.len() < max_in_flight {
                        let Some(front) = q.batches.front() else {
                            break;
                        };
                        if front.attempts > 0 && !q.in_flight.is_empty() {
                            break;
                        }
                        let due = match front.retry_at {
                            Some(at) => at,
                            None if flushing
                                || q.batches.len() > 1
                                || front.bytes >= inner.config.batch_size =>
                            {
                                now
                            }
                            None => front.created + linger,
                        };
                        if due > now {
                            next_wake = Some(next_wake.map_or(due, |w| w.min(due)));
                            break;
                        }
                        let Some(mut batch) = q.batches.pop_front() else {
                            break;
                        };
                        if inner.config.enable_idempotence && batch.sequence.is_none() {
                            let Some((pid, epoch)) = producer else {
                                q.batches.push_front(batch);
                                break;
                            };
                            let count = batch.records.len() as i32;
                            batch.sequence = Some((pid, epoch, q.next_sequence));
                            q.next_sequence = next_sequence(q.next_sequence, count);
                        }
                        let sent_as = *batch.sent_as.get_or_insert_with(|| {
                            q.next_send += 1;
                            q.next_send - 1
                        });
                        batch.sealed = true;
                        q.in_flight.insert(sent_as);
                        let (written, next) = oneshot::channel();
                        let turn = Turn {
                            after: q.written.replace(next),
                            written,
                        };
                        ready.push((topic.clone(), partition as i32, batch, turn));
                    }
                }
            }
        }
        let ready = add_to_transaction(&inner, ready).await;
        for (topic, partition, batch, turn) in ready {
            tokio::spawn(send_batch(
                Arc::clone(&inner),
                topic,
                partition,
                batch,
                turn,
            ));
        }
        match next_wake {
            Some(at) => {
                let _ = tokio::time::timeout_at(at, woken).await;
            }
            None => woken.await,
        }
    }
}

/// A batch ready to go: its topic, partition, the batch and its turn to be written.
type Ready = (String, i32, ProducerBatch, Turn);

/// A batch's place in its partition's pipeline: it is written after the batch before it
/// (`after` resolves, or is dropped, once that one is written) and tells the next one
/// through `written`.
struct Turn {
    after: Option<oneshot::Receiver<()>>,
    written: oneshot::Sender<()>,
}

/// Sends one batch; on success resolves its records, on a retriable error queues it again
/// (ahead of newer records), otherwise fails its records.
async fn send_batch(
    inner: Arc<Inner>,
    topic: String,
    partition: i32,
    mut batch: ProducerBatch,
    turn: Turn,
) {
    // Told when this batch is written; if it never is (the write failed, or the transport
    // does not pipeline), only once its outcome is handled below, so the next batch sees a
    // retry of this one queued before it goes.
    let mut next = Some(turn.written);
    let outcome = produce_once(&inner, &topic, partition, &batch, turn.after, &mut next).await;
    let mut st = inner.state();
    let Some(q) = st
        .topics
        .get_mut(&topic)
        .and_then(|t| t.queues.get_mut(partition as usize))
    else {
        return;
    };
    if let Some(o) = batch.sent_as {
        q.in_flight.remove(&o);
    }
    // Refused as out of order behind a batch of ours that failed (or whose answer is still
    // to come): the gap is that batch, so this one is retried after it.
    let behind_a_retry = |e: &ClientError| {
        e.kafka_error() == Some(ResponseError::OutOfOrderSequenceNumber) && q.behind_another(&batch)
    };
    match outcome {
        Ok(base_offset) => batch.slot.finish(Ok(base_offset)),
        Err(e)
            if (e.is_retriable() || behind_a_retry(&e))
                && batch.attempts < inner.config.retries
                && batch.created.elapsed()
                    < Duration::from_millis(inner.config.delivery_timeout_ms) =>
        {
            batch.attempts += 1;
            batch.retry_at =
                Some(Instant::now() + Duration::from_millis(inner.config.retry_backoff_ms));
            tracing::debug!(%topic, partition, attempt = batch.attempts, error = %e, "retrying batch");
            q.requeue(batch);
        }
        Err(e) => {
            let text = e.to_string();
            if let ClientError::InvalidRecords { records, .. } = &e {
                let _ = batch.slot.invalid.set(records.clone());
            }
            batch.slot.finish(Err((e.kafka_error(), text.clone())));
            if let Some(txn) = st.txn.as_mut() {
                txn.failed.get_or_insert(text.clone());
            } else if batch.sequence.is_some() {
                // Whether it was written is unknown, so its sequences cannot be reused.
                st.bump_epoch = true;
            }
        }
    }
    drop(st);
    drop(next);
    inner.progress.notify_waiters();
    inner.wake.notify_one();
}

/// One produce request for one batch; the base offset (or -1 under acks=0).
async fn produce_once(
    inner: &Inner,
    topic: &str,
    partition: i32,
    batch: &ProducerBatch,
    after: Option<oneshot::Receiver<()>>,
    next: &mut Option<oneshot::Sender<()>>,
) -> Result<i64, ClientError> {
    let records = &batch.records;
    let bytes = match batch.sequence {
        Some((pid, epoch, seq)) => {
            let transactional = inner.config.transactional_id.is_some();
            encode_idempotent_batch(
                records,
                inner.config.compression,
                pid,
                epoch,
                seq,
                transactional,
            )
        }
        None => encode_batch(records, inner.config.compression),
    }
    .map_err(|e| ClientError::Unexpected(e.to_string()))?;
    let req = ProduceRequest::default()
        // The partition checks a transaction's first batch with the coordinator (KIP-890).
        .with_transactional_id(
            inner
                .config
                .transactional_id
                .as_ref()
                .map(|t| TransactionalId(StrBytes::from_string(t.clone()))),
        )
        .with_acks(inner.config.acks)
        .with_timeout_ms(inner.config.request_timeout_ms.min(i32::MAX as u64) as i32)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(bytes)))])]);
    let timeout = Duration::from_millis(inner.config.request_timeout_ms);
    // Encoded (above) alongside the batches before it; written after them, unless one of
    // them failed meanwhile: then this one waits to be resent after it.
    if let Some(after) = after {
        let _ = after.await;
    }
    let held_back = {
        let st = inner.state();
        st.topics
            .get(topic)
            .and_then(|t| t.queues.get(partition as usize))
            .is_some_and(|q| batch.sent_as.is_some_and(|mine| q.retry_before(mine)))
    };
    if held_back {
        return Err(ClientError::Network(
            "not sent: an earlier batch of the partition is being retried".into(),
        ));
    }
    let (written, mut on_wire) = oneshot::channel();
    let send = inner
        .transport
        .send_ordered(RequestKind::Produce(req), written);
    let resp = tokio::time::timeout(timeout, async {
        tokio::pin!(send);
        let mut waiting = true;
        loop {
            tokio::select! {
                resp = &mut send => break resp,
                w = &mut on_wire, if waiting => {
                    waiting = false;
                    if w.is_ok() {
                        if let Some(n) = next.take() {
                            let _ = n.send(());
                        }
                    }
                }
            }
        }
    })
    .await
    .map_err(|_| ClientError::Kafka {
        error: ResponseError::RequestTimedOut,
        message: None,
    })??;
    match resp {
        None => Ok(-1),
        Some(ResponseKind::Produce(r)) => {
            let p = r
                .responses
                .first()
                .and_then(|t| t.partition_responses.first())
                .ok_or(ClientError::NoResponse)?;
            if p.error_code != 0 && !p.record_errors.is_empty() {
                return Err(ClientError::InvalidRecords {
                    error: ResponseError::try_from_code(p.error_code)
                        .unwrap_or(ResponseError::InvalidRecord),
                    message: p.error_message.as_deref().map(str::to_string),
                    records: p
                        .record_errors
                        .iter()
                        .map(|r| {
                            let why = r.batch_index_error_message.as_deref().unwrap_or_default();
                            (r.batch_index.max(0) as u32, why.to_string())
                        })
                        .collect(),
                });
            }
            check(p.error_code, p.error_message.as_deref())?;
            Ok(p.base_offset)
        }
        Some(other) => Err(ClientError::unexpected(&other)),
    }
}

/// The sequence after `count` records from `seq` (sequences wrap at `i32::MAX` to 0).
fn next_sequence(seq: i32, count: i32) -> i32 {
    ((i64::from(seq) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32
}

/// Gets a producer id, or a new epoch (or id) after a batch failed for good, resetting every
/// partition's sequence (KIP-360).
///
/// A transactional producer registers as a new instance of its transactional id (the
/// coordinator bumps the epoch, fencing whoever had it, possibly this producer's old self) —
/// or, with `bump_own`, after an abortable error, names its current id and epoch so the
/// coordinator bumps its own epoch without fencing it. An idempotent producer always names
/// its current id and epoch.
async fn init_producer_id(inner: &Inner, bump_own: bool) -> Result<(), ClientError> {
    let current = if inner.config.transactional_id.is_some() && !bump_own {
        None
    } else {
        inner.state().producer
    };
    let txn_id = inner.config.transactional_id.clone();
    let req = InitProducerIdRequest::default()
        .with_transaction_timeout_ms(if txn_id.is_some() {
            inner.config.transaction_timeout_ms
        } else {
            -1
        })
        .with_transactional_id(txn_id.map(|t| TransactionalId(StrBytes::from_string(t))))
        .with_producer_id(ProducerId(current.map_or(-1, |(id, _)| id)))
        .with_producer_epoch(current.map_or(-1, |(_, e)| e));
    // A coordinator aborting the transaction an earlier instance left open answers
    // CONCURRENT_TRANSACTIONS until the abort completes; a coordinator moving (its broker
    // died, NOT_COORDINATOR, a lost connection) fails for a while: both are retried until
    // `max.block.ms`, as Kafka's producer does.
    let deadline = Instant::now() + Duration::from_millis(inner.config.max_block_ms);
    let resp = loop {
        match inner
            .transport
            .send(RequestKind::InitProducerId(req.clone()))
            .await
        {
            Err(e) if e.is_retriable() && Instant::now() < deadline => {}
            Err(e) => return Err(e),
            Ok(resp) => {
                let again = matches!(&resp, Some(ResponseKind::InitProducerId(r))
                    if r.error_code == ResponseError::ConcurrentTransactions.code()
                        || ResponseError::try_from_code(r.error_code)
                            .is_some_and(|e| e.is_retriable()));
                if !again || Instant::now() >= deadline {
                    break resp;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(inner.config.retry_backoff_ms)).await;
    };
    match resp {
        Some(ResponseKind::InitProducerId(r)) => {
            check(r.error_code, None)?;
            let mut st = inner.state();
            st.producer = Some((r.producer_id.0, r.producer_epoch));
            st.bump_epoch = false;
            for q in st.topics.values_mut().flat_map(|t| t.queues.iter_mut()) {
                q.next_sequence = 0;
            }
            tracing::debug!(
                producer_id = r.producer_id.0,
                epoch = r.producer_epoch,
                "producer id"
            );
            Ok(())
        }
        Some(other) => Err(ClientError::unexpected(&other)),
        None => Err(ClientError::NoResponse),
    }
}

/// Adds the partitions of `ready` batches that are new to the open transaction at the
/// coordinator (AddPartitionsToTxn) before they are sent; batches whose partitions could not
/// be added fail, which dooms the transaction to an abort.
async fn add_to_transaction(inner: &Inner, ready: Vec<Ready>) -> Vec<Ready> {
    let Some(txn_id) = inner.config.transactional_id.clone() else {
        return ready;
    };
    let (new, producer) = {
        let st = inner.state();
        let known = st.txn.as_ref().map(|t| &t.partitions);
        let mut new: Vec<(String, i32)> = ready
            .iter()
            .map(|(t, p, _, _)| (t.clone(), *p))
            .filter(|tp| known.is_none_or(|k| !k.contains(tp)))
            .collect();
        new.sort();
        new.dedup();
        (new, st.producer)
    };
    if new.is_empty() {
        return ready;
    }
    let outcome = match producer {
        None => Err(ClientError::Kafka {
            error: ResponseError::InvalidTxnState,
            message: Some("init_transactions() first".into()),
        }),
        Some((pid, epoch)) => add_partitions(inner, &txn_id, pid, epoch, &new).await,
    };
    let mut st = inner.state();
    match outcome {
        Ok(()) => {
            if let Some(txn) = st.txn.as_mut() {
                txn.partitions.extend(new);
            }
            ready
        }
        Err(e) => {
            let text = e.to_string();
            if let Some(txn) = st.txn.as_mut() {
                txn.failed.get_or_insert(text.clone());
            }
            let mut kept = Vec::new();
            for (topic, partition, batch, turn) in ready {
                if new.contains(&(topic.clone(), partition)) {
                    batch.slot.finish(Err((e.kafka_error(), text.clone())));
                    if let Some(q) = st
                        .topics
                        .get_mut(&topic)
                        .and_then(|t| t.queues.get_mut(partition as usize))
                    {
                        if let Some(o) = batch.sent_as {
                            q.in_flight.remove(&o);
                        }
                    }
                } else {
                    kept.push((topic, partition, batch, turn));
                }
            }
            drop(st);
            inner.progress.notify_waiters();
            kept
        }
    }
}

async fn add_partitions(
    inner: &Inner,
    txn_id: &str,
    pid: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> Result<(), ClientError> {
    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for (t, p) in partitions {
        by_topic.entry(t).or_default().push(*p);
    }
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(
            txn_id.to_string(),
        )))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    retry_txn_request(inner, RequestKind::AddPartitionsToTxn(req), |r| match r {
        ResponseKind::AddPartitionsToTxn(r) => Some(
            r.results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| &t.results_by_partition)
                .map(|p| p.partition_error_code)
                .find(|c| *c != 0)
                .unwrap_or(0),
        ),
        _ => None,
    })
    .await
}

/// Sends a transaction request until it succeeds, fails for good, or `max.block.ms` passes;
/// CONCURRENT_TRANSACTIONS and other retriable errors are retried after the backoff.
async fn retry_txn_request(
    inner: &Inner,
    request: RequestKind,
    code_of: impl Fn(&ResponseKind) -> Option<i16>,
) -> Result<(), ClientError> {
    let deadline = Instant::now() + Duration::from_millis(inner.config.max_block_ms);
    loop {
        let outcome = match inner.transport.send(request.clone()).await {
            Ok(Some(resp)) => match code_of(&resp) {
                Some(code) => check(code, None),
                None => Err(ClientError::unexpected(&resp)),
            },
            Ok(None) => Err(ClientError::NoResponse),
            Err(e) => Err(e),
        };
        match outcome {
            Err(e)
                if (e.is_retriable()
                    || e.kafka_error() == Some(ResponseError::ConcurrentTransactions))
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(inner.config.retry_backoff_ms)).await;
            }
            other => return other,
        }
    }
}

fn txn_state_error(message: &str) -> ClientError {
    ClientError::Kafka {
        error: ResponseError::InvalidTxnState,
        message: Some(message.into()),
    }
}

impl Producer {
    fn txn_id(&self) -> Result<String, ClientError> {
        self.inner
            .config
            .transactional_id
            .clone()
            .ok_or_else(|| txn_state_error("no transactional.id"))
    }

    /// Registers the `transactional.id` with its coordinator (InitProducerId): gets the
    /// producer id and a new epoch, which fences any earlier producer with the same id and
    /// finishes (aborts) the transaction it left open.
    /// After a fatal error (fenced, or the coordinator aborted the transaction past its
    /// timeout), calling it again starts over with a new epoch: the open transaction is
    /// dropped on this side too.
    pub async fn init_transactions(&self) -> Result<(), ClientError> {
        self.txn_id()?;
        self.flush().await;
        init_producer_id(&self.inner, false).await?;
        self.inner.state().txn = None;
        Ok(())
    }

    /// Starts a transaction: every record sent until `commit_transaction` or
    /// `abort_transaction` belongs to it.
    pub fn begin_transaction(&self) -> Result<(), ClientError> {
        self.txn_id()?;
        let mut st = self.inner.state();
        if st.producer.is_none() {
            return Err(txn_state_error("init_transactions() first"));
        }
        if st.txn.is_some() {
            return Err(txn_state_error("a transaction is already open"));
        }
        st.txn = Some(OpenTxn::default());
        Ok(())
    }

    /// Commits `offsets` (the next offsets to read) for the consumer's group with the open
    /// transaction: they become committed exactly when the transaction does (exactly-once
    /// read-process-write). The group's generation and member are checked (KIP-447).
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &[(crate::types::TopicPartition, i64)],
        group: &super::consumer::ConsumerGroupMetadata,
    ) -> Result<(), ClientError> {
        let txn_id = self.txn_id()?;
        let (pid, epoch) = {
            let st = self.inner.state();
            if st.txn.is_none() {
                return Err(txn_state_error("begin_transaction() first"));
            }
            st.producer
                .ok_or_else(|| txn_state_error("init_transactions() first"))?
        };
        let text = |s: &str| StrBytes::from_string(s.to_string());
        let add = AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(text(&txn_id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(text(&group.group_id)));
        retry_txn_request(
            &self.inner,
            RequestKind::AddOffsetsToTxn(add),
            |r| match r {
                ResponseKind::AddOffsetsToTxn(r) => Some(r.error_code),
                _ => None,
            },
        )
        .await?;
        if let Some(txn) = self.inner.state().txn.as_mut() {
            txn.offsets_added = true;
        }
        let mut by_topic: std::collections::BTreeMap<&str, Vec<(i32, i64)>> = Default::default();
        for (tp, o) in offsets {
            by_topic
                .entry(&tp.topic)
                .or_default()
                .push((tp.partition.0, *o));
        }
        let commit = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(text(&txn_id)))
            .with_group_id(GroupId(text(&group.group_id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(group.generation_id)
            .with_member_id(text(&group.member_id))
            .with_group_instance_id(group.group_instance_id.as_deref().map(text))
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        TxnOffsetCommitRequestTopic::default()
                            .with_name(TopicName(text(t)))
                            .with_partitions(
                                ps.into_iter()
                                    .map(|(p, o)| {
                                        TxnOffsetCommitRequestPartition::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(o)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        retry_txn_request(
            &self.inner,
            RequestKind::TxnOffsetCommit(commit),
            |r| match r {
                ResponseKind::TxnOffsetCommit(r) => Some(
                    r.topics
                        .iter()
                        .flat_map(|t| &t.partitions)
                        .map(|p| p.error_code)
                        .find(|c| *c != 0)
                        .unwrap_or(0),
                ),
                _ => None,
            },
        )
        .await
    }

    /// Sends what is queued, then commits the transaction: its records and offsets become
    /// visible to read_committed consumers all at once. If any record of it failed, the
    /// transaction is not committed and this returns the failure: abort it then.
    pub async fn commit_transaction(&self) -> Result<(), ClientError> {
        self.end_transaction(true).await
    }

    /// Sends what is queued, then aborts the transaction: read_committed consumers never see
    /// its records, and its offsets are not committed.
    pub async fn abort_transaction(&self) -> Result<(), ClientError> {
        self.end_transaction(false).await
    }

    async fn end_transaction(&self, commit: bool) -> Result<(), ClientError> {
        let txn_id = self.txn_id()?;
        if self.inner.state().txn.is_none() {
            return Err(txn_state_error("no open transaction"));
        }
        self.flush().await;
        let (pid, epoch, failed, started) = {
            let st = self.inner.state();
            let (pid, epoch) = st
                .producer
                .ok_or_else(|| txn_state_error("init_transactions() first"))?;
            let txn = st.txn.as_ref();
            (
                pid,
                epoch,
                txn.and_then(|t| t.failed.clone()),
                txn.is_some_and(OpenTxn::started),
            )
        };
        if let (true, Some(reason)) = (commit, &failed) {
            return Err(txn_state_error(&format!(
                "a record of the transaction failed ({reason}); abort it"
            )));
        }
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(txn_id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit);
        if started {
            retry_txn_request(&self.inner, RequestKind::EndTxn(req), |r| match r {
                ResponseKind::EndTxn(r) => Some(r.error_code),
                _ => None,
            })
            .await?;
        }
        if failed.is_some() {
            // A batch of the aborted transaction failed or was dropped: its sequences are
            // spent, so the partition would refuse the next transaction's batches as out of
            // order. Bump our own epoch, which starts every sequence again (KIP-360), as
            // Kafka's producer does after an abortable error.
            init_producer_id(&self.inner, true).await?;
        }
        self.inner.state().txn = None;
        Ok(())
    }
}
