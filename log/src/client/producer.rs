//! `Producer`: Kafka's producer semantics over any [`Transport`]. Records are partitioned
//! (murmur2 for keys, sticky for null keys, or a custom [`Partitioner`]), collected per
//! partition into batches that close at `batch.size` or after `linger.ms`, compressed with
//! `compression.type`, and sent by a background task, one batch in flight per partition so a
//! retry can never reorder a partition. Memory is bounded by `buffer.memory`: `send` waits
//! for room (backpressure) and fails after `max.block.ms`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    MetadataRequest, ProduceRequest, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::partitioner::{DefaultPartitioner, Partitioner};
use super::transport::Transport;
use super::{check, ClientError};
use crate::storage::{encode_batch, Compression, NewRecord};

/// Producer settings, under Kafka's names.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `acks`: 0, 1 or -1 (all).
    pub acks: i16,
    /// `linger.ms`: how long a batch waits for more records before it is sent.
    pub linger_ms: u64,
    /// `batch.size`: the bytes of records at which a batch is sent at once.
    pub batch_size: usize,
    /// `buffer.memory`: the most bytes of records waiting to be sent or acknowledged.
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
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    pub topic: String,
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
        topic: impl Into<String>,
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

/// The outcome of one record, resolved when its batch is acknowledged.
pub type Delivery = oneshot::Receiver<Result<RecordMetadata, ClientError>>;

struct Pending {
    record: NewRecord,
    done: oneshot::Sender<Result<RecordMetadata, ClientError>>,
    _memory: OwnedSemaphorePermit,
}

struct Batch {
    records: Vec<Pending>,
    attempts: u32,
    retry_at: Option<Instant>,
    created: Instant,
}

#[derive(Default)]
struct PartitionQueue {
    open: Vec<Pending>,
    open_bytes: usize,
    first_at: Option<Instant>,
    /// A batch that failed and goes out again before anything newer.
    retry: Option<Batch>,
    in_flight: bool,
}

#[derive(Default)]
struct State {
    queues: BTreeMap<(String, i32), PartitionQueue>,
    partitions: HashMap<String, i32>,
    flushing: usize,
    closed: bool,
}

struct Inner {
    transport: Arc<dyn Transport>,
    config: ProducerConfig,
    partitioner: Arc<dyn Partitioner>,
    memory: Arc<Semaphore>,
    state: Mutex<State>,
    /// Wakes the sender (new full batch, flush, completion).
    wake: Notify,
    /// Wakes flushers when a batch completes.
    progress: Notify,
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

fn record_bytes(r: &ProducerRecord) -> usize {
    // What the record costs in the buffer: its payload plus a fixed overhead, as Kafka estimates.
    r.key.as_ref().map_or(0, |k| k.len())
        + r.value.as_ref().map_or(0, |v| v.len())
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
        + 24
}

impl Producer {
    /// Starts a producer and its sender task (needs a tokio runtime).
    pub fn new(transport: Arc<dyn Transport>, config: ProducerConfig) -> Self {
        let partitioner = Arc::new(DefaultPartitioner::new(config.seed));
        Self::with_partitioner(transport, config, partitioner)
    }

    pub fn with_partitioner(
        transport: Arc<dyn Transport>,
        config: ProducerConfig,
        partitioner: Arc<dyn Partitioner>,
    ) -> Self {
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

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The partition count of `topic`, from Metadata (auto-creating the topic where the broker
    /// allows), retried until `max.block.ms`.
    async fn partitions(&self, topic: &str, deadline: Instant) -> Result<i32, ClientError> {
        if let Some(n) = self.state().partitions.get(topic) {
            return Ok(*n);
        }
        loop {
            let req = MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                    TopicName(StrBytes::from_string(topic.to_string())),
                ))]))
                .with_allow_auto_topic_creation(true);
            let last = match self
                .inner
                .transport
                .send(RequestKind::Metadata(req))
                .await?
            {
                Some(ResponseKind::Metadata(m)) => match m.topics.first() {
                    Some(t) if t.error_code == 0 && !t.partitions.is_empty() => {
                        let n = t.partitions.len() as i32;
                        self.state().partitions.insert(topic.to_string(), n);
                        return Ok(n);
                    }
                    Some(t) => check(t.error_code, None).err(),
                    None => Some(ClientError::NoResponse),
                },
                _ => Some(ClientError::NoResponse),
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
        let deadline = Instant::now() + Duration::from_millis(self.inner.config.max_block_ms);
        let size = record_bytes(&record);
        if size > self.inner.config.buffer_memory {
            return Err(ClientError::Kafka {
                error: ResponseError::MessageTooLarge,
                message: Some(format!("{size} bytes exceed buffer.memory")),
            });
        }
        let partitions = self.partitions(&record.topic, deadline).await?;
        let partition = match record.partition {
            Some(p) if p < 0 || p >= partitions => {
                return Err(ClientError::Kafka {
                    error: ResponseError::UnknownTopicOrPartition,
                    message: None,
                })
            }
            Some(p) => p,
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
                p
            }
        };
        let permit = tokio::time::timeout_at(
            deadline,
            Arc::clone(&self.inner.memory).acquire_many_owned(size as u32),
        )
        .await
        .map_err(|_| ClientError::Timeout("buffer.memory"))?
        .map_err(|_| ClientError::Closed)?;
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        });
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            record: NewRecord {
                key: record.key,
                value: record.value,
                timestamp_ms,
                headers: record.headers,
            },
            done: tx,
            _memory: permit,
        };
        let (full, started) = {
            let mut st = self.state();
            if st.closed {
                return Err(ClientError::Closed);
            }
            let q = st
                .queues
                .entry((record.topic.clone(), partition))
                .or_default();
            let started = q.first_at.is_none();
            q.first_at.get_or_insert_with(Instant::now);
            q.open.push(pending);
            q.open_bytes += size;
            (q.open_bytes >= self.inner.config.batch_size, started)
        };
        if full && record.partition.is_none() {
            self.inner
                .partitioner
                .on_new_batch(&record.topic, partition, partitions);
        }
        // A full batch goes now; a new one needs the sender to start its linger clock.
        if full || started {
            self.inner.wake.notify_one();
        }
        Ok(rx)
    }

    /// Sends everything queued now and waits until all of it is acknowledged (or failed).
    pub async fn flush(&self) {
        self.state().flushing += 1;
        loop {
            let progressed = self.inner.progress.notified();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            self.inner.wake.notify_one();
            let idle = self
                .state()
                .queues
                .values()
                .all(|q| q.open.is_empty() && q.retry.is_none() && !q.in_flight);
            if idle {
                break;
            }
            progressed.await;
        }
        self.state().flushing -= 1;
    }

    /// Flushes, then stops the sender; later sends fail with `Closed`.
    pub async fn close(&self) {
        self.flush().await;
        self.state().closed = true;
        self.inner.memory.close();
        self.inner.wake.notify_one();
        let task = self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The background task: takes ready batches (full, lingered long enough, flushing, or due for
/// retry) and sends each, one in flight per partition.
async fn sender(inner: Arc<Inner>) {
    let linger = Duration::from_millis(inner.config.linger_ms);
    loop {
        let woken = inner.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let now = Instant::now();
        let mut ready: Vec<((String, i32), Batch)> = Vec::new();
        let mut next_wake: Option<Instant> = None;
        {
            let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.closed
                && st
                    .queues
                    .values()
                    .all(|q| q.open.is_empty() && q.retry.is_none() && !q.in_flight)
            {
                return;
            }
            let flushing = st.flushing > 0 || st.closed;
            for (tp, q) in st.queues.iter_mut() {
                if q.in_flight {
                    continue;
                }
                if let Some(b) = q.retry.take() {
                    match b.retry_at {
                        Some(at) if at > now => {
                            next_wake = Some(next_wake.map_or(at, |w| w.min(at)));
                            q.retry = Some(b);
                        }
                        _ => {
                            q.in_flight = true;
                            ready.push((tp.clone(), b));
                        }
                    }
                    continue;
                }
                let Some(first) = q.first_at else { continue };
                let due = first + linger;
                if flushing || q.open_bytes >= inner.config.batch_size || now >= due {
                    // Take up to batch.size bytes (at least one record).
                    let mut taken = 0;
                    let mut bytes = 0;
                    while taken < q.open.len() && (taken == 0 || bytes < inner.config.batch_size) {
                        bytes += record_bytes_pending(&q.open[taken]);
                        taken += 1;
                    }
                    let records: Vec<Pending> = q.open.drain(..taken).collect();
                    q.open_bytes = q.open_bytes.saturating_sub(bytes);
                    q.first_at = (!q.open.is_empty()).then_some(now);
                    q.in_flight = true;
                    ready.push((
                        tp.clone(),
                        Batch {
                            records,
                            attempts: 0,
                            retry_at: None,
                            created: now,
                        },
                    ));
                } else {
                    next_wake = Some(next_wake.map_or(due, |w| w.min(due)));
                }
            }
        }
        for (tp, batch) in ready {
            tokio::spawn(send_batch(Arc::clone(&inner), tp, batch));
        }
        match next_wake {
            Some(at) => {
                let _ = tokio::time::timeout_at(at, woken).await;
            }
            None => woken.await,
        }
    }
}

fn record_bytes_pending(p: &Pending) -> usize {
    let r = &p.record;
    r.key.as_ref().map_or(0, |k| k.len())
        + r.value.as_ref().map_or(0, |v| v.len())
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
        + 24
}

/// Sends one batch; on success resolves its records, on a retriable error queues it again
/// (ahead of newer records), otherwise fails its records.
async fn send_batch(inner: Arc<Inner>, tp: (String, i32), mut batch: Batch) {
    let outcome = produce_once(&inner, &tp, &batch).await;
    let mut st = inner.state.lock().unwrap_or_else(|e| e.into_inner());
    let q = st.queues.entry(tp.clone()).or_default();
    q.in_flight = false;
    match outcome {
        Ok(base_offset) => {
            for (i, p) in batch.records.into_iter().enumerate() {
                let offset = if base_offset < 0 {
                    -1
                } else {
                    base_offset + i as i64
                };
                let _ = p.done.send(Ok(RecordMetadata {
                    partition: tp.1,
                    offset,
                    timestamp_ms: p.record.timestamp_ms,
                }));
            }
        }
        Err(e)
            if e.kafka_error().is_some_and(|k| k.is_retriable())
                && batch.attempts < inner.config.retries
                && batch.created.elapsed()
                    < Duration::from_millis(inner.config.delivery_timeout_ms) =>
        {
            batch.attempts += 1;
            batch.retry_at =
                Some(Instant::now() + Duration::from_millis(inner.config.retry_backoff_ms));
            tracing::debug!(topic = %tp.0, partition = tp.1, attempt = batch.attempts, error = %e, "retrying batch");
            q.retry = Some(batch);
        }
        Err(e) => {
            let text = e.to_string();
            let code = e.kafka_error();
            for p in batch.records {
                let err = match code {
                    Some(error) => ClientError::Kafka {
                        error,
                        message: Some(text.clone()),
                    },
                    None => ClientError::Unexpected(text.clone()),
                };
                let _ = p.done.send(Err(err));
            }
        }
    }
    drop(st);
    inner.progress.notify_waiters();
    inner.wake.notify_one();
}

/// One produce request for one batch; the base offset (or -1 under acks=0).
async fn produce_once(
    inner: &Inner,
    tp: &(String, i32),
    batch: &Batch,
) -> Result<i64, ClientError> {
    let records: Vec<NewRecord> = batch.records.iter().map(|p| p.record.clone()).collect();
    let bytes = encode_batch(&records, inner.config.compression)
        .map_err(|e| ClientError::Unexpected(e.to_string()))?;
    let req = ProduceRequest::default()
        .with_acks(inner.config.acks)
        .with_timeout_ms(inner.config.request_timeout_ms.min(i32::MAX as u64) as i32)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(tp.0.clone())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(tp.1)
                .with_records(Some(Bytes::from(bytes)))])]);
    let timeout = Duration::from_millis(inner.config.request_timeout_ms);
    let resp = tokio::time::timeout(timeout, inner.transport.send(RequestKind::Produce(req)))
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
            check(p.error_code, p.error_message.as_deref())?;
            Ok(p.base_offset)
        }
        Some(other) => Err(ClientError::unexpected(&other)),
    }
}
