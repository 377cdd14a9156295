//! The Processor API: a [`Processor`] gets each record of its task with a [`ProcessorContext`]
//! through which it forwards records to its children (all, or one by name), reads and writes
//! its state stores, learns where the record came from, and schedules punctuations on stream
//! time or wall-clock time. Forwarding is synchronous and depth-first, as in Kafka Streams:
//! a child has processed a record when `forward` returns.

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;

use crate::state::KeyValueStore;

/// A record between processors: bytes, as serdes are the DSL's business — or, between the
/// DSL's own operators, a value in memory ([`Typed`]) that is serialized only if it leaves
/// the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Bytes>,
    /// The value's bytes (`None`: a null value, unless `typed` holds it).
    pub value: Option<Bytes>,
    pub timestamp: i64,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// The value in memory, when a processor forwarded it unserialized (`value` is then
    /// `None`). A sink serializes it; [`Record::materialize`] does for other readers.
    pub typed: Option<Typed>,
}

impl Record {
    pub fn new(
        key: Option<impl Into<Bytes>>,
        value: Option<impl Into<Bytes>>,
        timestamp: i64,
    ) -> Self {
        Record {
            key: key.map(Into::into),
            value: value.map(Into::into),
            timestamp,
            headers: Vec::new(),
            typed: None,
        }
    }

    /// Turns a typed value into bytes (with its own serializer); bytes stay as they are.
    pub fn materialize(&mut self) -> Result<(), ProcessError> {
        if let Some(t) = self.typed.take() {
            self.value = Some(t.to_bytes()?);
        }
        Ok(())
    }

    /// The value's bytes, serializing a typed value.
    pub fn value_bytes(&self) -> Result<Option<Bytes>, ProcessError> {
        match &self.typed {
            Some(t) => t.to_bytes().map(Some),
            None => Ok(self.value.clone()),
        }
    }
}

/// The serializer a [`Typed`] value carries.
pub type TypedEncoder = fn(&(dyn Any + Send + Sync)) -> Result<Bytes, String>;

/// A value passed between processors in memory: shared (a record forwarded to several
/// children is not copied), and serialized with `encode` only where bytes are needed.
#[derive(Clone)]
pub struct Typed {
    value: Arc<dyn Any + Send + Sync>,
    encode: TypedEncoder,
}

impl Typed {
    pub fn new(value: Arc<dyn Any + Send + Sync>, encode: TypedEncoder) -> Self {
        Typed { value, encode }
    }

    /// The value, if it is a `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.value.downcast_ref()
    }

    /// The value, if it is a `T`: moved out when this is its only holder, else cloned.
    pub fn take<T: Any + Send + Sync + Clone>(self) -> Result<T, Typed> {
        let encode = self.encode;
        match self.value.downcast::<T>() {
            Ok(v) => Ok(Arc::try_unwrap(v).unwrap_or_else(|shared| (*shared).clone())),
            Err(value) => Err(Typed { value, encode }),
        }
    }

    /// The value's bytes.
    pub fn to_bytes(&self) -> Result<Bytes, ProcessError> {
        (self.encode)(&*self.value).map_err(|e| ProcessError::Failed(format!("serializing: {e}")))
    }
}

impl std::fmt::Debug for Typed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_bytes() {
            Ok(b) => write!(f, "Typed({b:?})"),
            Err(e) => write!(f, "Typed(<{e}>)"),
        }
    }
}

/// Typed values are equal when their bytes are.
impl PartialEq for Typed {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.value, &other.value)
            || matches!((self.to_bytes(), other.to_bytes()), (Ok(a), Ok(b)) if a == b)
    }
}

impl Eq for Typed {}

/// Where the record being processed came from (none inside a punctuation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// What a punctuation's clock is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PunctuationType {
    /// The task's stream time (the largest record timestamp seen): fires when records move it.
    StreamTime,
    /// The injected wall clock: fires as time passes, records or not.
    WallClockTime,
}

/// Why processing failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("no state store {0} is connected to this processor")]
    UnknownStore(String),
    #[error("no child processor {0}")]
    UnknownChild(String),
    #[error(transparent)]
    Store(#[from] crate::state::StoreError),
    #[error("{0}")]
    Failed(String),
    /// A record's key or value could not be deserialized: the runtime hands it to the
    /// deserialization exception handler rather than the processing one.
    #[error("deserialization failed: {0}")]
    Deserialization(String),
}

/// A record a sink wrote.
#[derive(Debug, Clone)]
pub struct Output {
    /// Shared with the sink (a static topic is not copied per record).
    pub topic: Arc<str>,
    pub record: Record,
    /// The sink's partitioner, if it has one.
    pub partitioner: Option<crate::topology::SinkPartitioner>,
}

/// A punctuation callback: gets the context and the punctuation's timestamp.
pub type Punctuator =
    Box<dyn FnMut(&mut ProcessorContext<'_>, i64) -> Result<(), ProcessError> + Send>;

/// A node of a topology that processes records.
pub trait Processor: Send {
    /// Called once before the first record (schedule punctuations here).
    fn init(&mut self, _ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        record: Record,
    ) -> Result<(), ProcessError>;

    /// Called before every commit, in topological order (and by the test driver after each
    /// input record, as Kafka's does): a processor holding updates back (a record cache)
    /// writes them to its stores and forwards them here, so that they join the commit.
    fn flush(&mut self, _ctx: &mut ProcessorContext<'_>) -> Result<(), ProcessError> {
        Ok(())
    }

    /// Called once when the task closes.
    fn close(&mut self) {}
}

/// A scheduled punctuation of a node.
pub(crate) struct Schedule {
    pub node: usize,
    pub kind: PunctuationType,
    pub interval_ms: i64,
    /// The next time it fires at or after.
    pub next_ms: i64,
    /// No later multiple of the interval fits in an i64: it never fires again.
    pub done: bool,
    pub callback: Option<Punctuator>,
}

/// The task-side state a context works on.
pub(crate) struct TaskParts {
    /// Processors by node index (`None` while that node is running: it cannot be re-entered).
    pub processors: Vec<Option<Box<dyn Processor>>>,
    pub children: Vec<Vec<usize>>,
    pub names: Vec<String>,
    /// Node index -> its connected stores, as places in `stores` (a processor looks its
    /// store up per record: among its own few, not by name through every store).
    pub node_stores: Vec<Vec<usize>>,
    /// The task's stores, in name order.
    pub stores: Vec<(String, Box<dyn KeyValueStore>)>,
    pub sinks: Vec<Option<crate::topology::SinkSpec>>,
    /// Records written by sinks: (topic, record).
    pub output: Vec<Output>,
    pub schedules: Vec<Schedule>,
    pub stream_time: i64,
    pub wall_clock_ms: i64,
    pub commit_requested: bool,
    /// Bytes a processor's record cache may hold (see [`ProcessorContext::cache_max_bytes`]).
    pub cache_max_bytes: usize,
    /// See [`ProcessorContext::exactly_once`].
    pub exactly_once: bool,
    /// The instance's global stores.
    pub globals: Option<std::sync::Arc<crate::global::GlobalStores>>,
    /// Records the task dropped, by reason.
    pub dropped: crate::metrics::DroppedRecords,
    /// The part of `dropped` the runtime has not added to its metrics yet.
    pub unreported: crate::metrics::DroppedRecords,
}

impl TaskParts {
    /// Counts drops in the task's total and in what the runtime has yet to report.
    pub(crate) fn count_dropped(&mut self, dropped: crate::metrics::DroppedRecords) {
        self.dropped += dropped;
        self.unreported += dropped;
    }
}

/// What a processor sees of its task while it runs.
pub struct ProcessorContext<'a> {
    pub(crate) parts: &'a mut TaskParts,
    pub(crate) node: usize,
    /// Borrowed by every processor the record passes through (no copy per hop).
    pub(crate) metadata: Option<&'a RecordMetadata>,
    pub(crate) task: (usize, i32),
}

impl std::fmt::Debug for ProcessorContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorContext")
            .field("node", &self.parts.names[self.node])
            .field("task", &self.task)
            .finish()
    }
}

impl ProcessorContext<'_> {
    /// Counts the record being processed as dropped for `reason` (in the task's metrics
    /// and the test drivers). Dropping it is the caller's doing: this only counts.
    pub fn record_dropped(&mut self, reason: crate::metrics::DropReason) {
        self.parts
            .count_dropped(crate::metrics::DroppedRecords::one(reason));
    }

    /// Counts drops an operator tallied itself (one record too late for several windows,
    /// say).
    pub fn add_dropped(&mut self, dropped: crate::metrics::DroppedRecords) {
        self.parts.count_dropped(dropped);
    }

    /// Sends `record` to every child, each processing it before this returns.
    pub fn forward(&mut self, record: Record) -> Result<(), ProcessError> {
        let n = self.parts.children[self.node].len();
        if n == 0 {
            return Ok(());
        }
        // The last child takes the record itself: a chain copies nothing.
        for i in 0..n - 1 {
            let child = self.parts.children[self.node][i];
            self.run_child(child, record.clone())?;
        }
        let last = self.parts.children[self.node][n - 1];
        self.run_child(last, record)
    }

    /// Sends `record` to the child named `name` only.
    pub fn forward_to(&mut self, name: &str, record: Record) -> Result<(), ProcessError> {
        let child = self.parts.children[self.node]
            .iter()
            .copied()
            .find(|c| self.parts.names[*c] == name)
            .ok_or_else(|| ProcessError::UnknownChild(name.to_string()))?;
        self.run_child(child, record)
    }

    fn run_child(&mut self, child: usize, mut record: Record) -> Result<(), ProcessError> {
        if let Some(sink) = &self.parts.sinks[child] {
            record.materialize()?;
            self.parts.output.push(Output {
                topic: sink.topic_for(&record),
                record,
                partitioner: sink.partitioner.clone(),
            });
            return Ok(());
        }
        let mut p = self.parts.processors[child].take().ok_or_else(|| {
            ProcessError::Failed(format!("{} re-entered", self.parts.names[child]))
        })?;
        let mut ctx = ProcessorContext {
            parts: self.parts,
            node: child,
            metadata: self.metadata,
            task: self.task,
        };
        let r = p.process(&mut ctx, record);
        self.parts.processors[child] = Some(p);
        r
    }

    /// A state store connected to this processor.
    pub fn store(&mut self, name: &str) -> Result<&mut dyn KeyValueStore, ProcessError> {
        let parts = &mut *self.parts;
        let at = parts.node_stores[self.node]
            .iter()
            .copied()
            .find(|&i| parts.stores[i].0 == name)
            .ok_or_else(|| ProcessError::UnknownStore(name.to_string()))?;
        Ok(parts.stores[at].1.as_mut())
    }

    /// `key`'s value in global store `name` (see [`crate::global`]).
    pub fn global_get(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ProcessError> {
        match &self.parts.globals {
            Some(g) => g.get(name, key),
            None => Err(ProcessError::UnknownStore(name.to_string())),
        }
    }

    /// The record being processed came from here (`None` in a punctuation).
    pub fn record_metadata(&self) -> Option<&RecordMetadata> {
        self.metadata
    }

    /// The bytes a record cache of this processor may hold before it flushes early: the
    /// instance's `cache_max_bytes` shared among its stream threads.
    pub fn cache_max_bytes(&self) -> usize {
        self.parts.cache_max_bytes
    }

    /// Whether the task runs under exactly-once: a record is processed again (after a
    /// failure) only once the state changes of its first processing were rolled back with
    /// its transaction, so a store key unique to one input record (its offset in it) is new
    /// to the task's stores when the record writes it — what [`KeyValueStore::put_new`]
    /// needs to know. Under at-least-once a record may be processed again over its own
    /// committed writes.
    pub fn exactly_once(&self) -> bool {
        self.parts.exactly_once
    }

    /// The task's stream time: the largest record timestamp it has seen (-1 before any).
    pub fn stream_time(&self) -> i64 {
        self.parts.stream_time
    }

    /// (sub-topology, partition) of the task.
    pub fn task_id(&self) -> (usize, i32) {
        self.task
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.parts.names[self.node]
    }

    /// Calls `callback` every `interval_ms` of stream time or wall-clock time. Stream-time
    /// punctuations fire at most once per advance of stream time, at times aligned to
    /// multiples of the interval: with interval 10, records at 20, 142, 155, 160 fire at 20,
    /// 142, 155 and 160 (then next at 30, 150, 160, 170).
    pub fn schedule(&mut self, interval_ms: i64, kind: PunctuationType, callback: Punctuator) {
        let interval_ms = interval_ms.max(1);
        let next_ms = match kind {
            PunctuationType::StreamTime => 0,
            PunctuationType::WallClockTime => self.parts.wall_clock_ms.saturating_add(interval_ms),
        };
        self.parts.schedules.push(Schedule {
            node: self.node,
            kind,
            interval_ms,
            next_ms,
            done: false,
            callback: Some(callback),
        });
    }

    /// Asks the runtime to commit soon.
    pub fn request_commit(&mut self) {
        self.parts.commit_requested = true;
    }
}
