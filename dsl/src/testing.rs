//! A typed test driver for DSL topologies: pipe typed records into topics (each to the
//! partition of its key, as a producer would), read typed output, with no broker. Topics may
//! have several partitions; each partition's task has its own stores and stream time.

use std::collections::BTreeMap;

use bytes::Bytes;
use rill_core::processor::{ProcessError, Record};
use rill_core::testing::{TestDriver as CoreDriver, TestDriverConfig};

use crate::serdes::{auto, Data, SerdeError, SerdeRef, Windowed, WindowedSerde};
use crate::BuiltTopology;

/// A record read from an output topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord<K, V> {
    pub key: K,
    /// `None`: a tombstone.
    pub value: Option<V>,
    pub timestamp: i64,
    pub partition: i32,
}

/// Why a test driver call failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Serde(#[from] SerdeError),
}

/// Runs a built topology with no broker.
pub struct TestDriver {
    inner: CoreDriver,
}

impl std::fmt::Debug for TestDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl TestDriver {
    /// Every topic with `partitions` partitions.
    pub fn new(topology: &BuiltTopology, partitions: i32) -> Result<Self, DriverError> {
        Self::with_partitions(topology, partitions, BTreeMap::new())
    }

    /// Topics with their own partition counts (others: `default_partitions`).
    pub fn with_partitions(
        topology: &BuiltTopology,
        default_partitions: i32,
        topics: BTreeMap<String, i32>,
    ) -> Result<Self, DriverError> {
        let config = TestDriverConfig {
            default_partitions,
            topic_partitions: topics,
            ..Default::default()
        };
        Ok(TestDriver {
            inner: CoreDriver::new(&topology.topology, config)?,
        })
    }

    /// Pipes `key` -> `value` at `timestamp` into `topic` ([`crate::serdes::Auto`] bytes).
    pub fn pipe<K: Data, V: Data>(
        &mut self,
        topic: &str,
        key: &K,
        value: &V,
        timestamp: i64,
    ) -> Result<(), DriverError> {
        let k = auto::<K>().serialize(key)?;
        let v = auto::<V>().serialize(value)?;
        self.pipe_raw(topic, k.map(Bytes::from), v.map(Bytes::from), timestamp)
    }

    /// Pipes a tombstone (null value) for `key`.
    pub fn pipe_tombstone<K: Data>(
        &mut self,
        topic: &str,
        key: &K,
        timestamp: i64,
    ) -> Result<(), DriverError> {
        let k = auto::<K>().serialize(key)?;
        self.pipe_raw(topic, k.map(Bytes::from), None, timestamp)
    }

    /// Pipes a record as bytes.
    pub fn pipe_raw(
        &mut self,
        topic: &str,
        key: Option<Bytes>,
        value: Option<Bytes>,
        timestamp: i64,
    ) -> Result<(), DriverError> {
        let record = Record {
            key,
            value,
            timestamp,
            headers: Vec::new(),
            typed: None,
        };
        Ok(self.inner.pipe(topic, record)?)
    }

    /// Off: record caches hold their updates until [`TestDriver::commit`], as between two
    /// commits of a running application (on by default: a commit after every record, as in
    /// Kafka's driver).
    pub fn set_auto_commit(&mut self, on: bool) {
        self.inner.set_auto_commit(on);
    }

    /// Bytes each task's record caches may hold (10 MiB unless set); past it a cache
    /// flushes early and evicts its least recently updated keys.
    pub fn set_cache_max_bytes(&mut self, bytes: usize) {
        self.inner.set_cache_max_bytes(bytes);
    }

    /// Whether operators are told they run under exactly-once (off unless set): the stores
    /// of stream-stream joins then take each record's entry as new to them, which lets an
    /// entry that expires before the write-behind writes it skip the store altogether. The
    /// outputs are the same either way.
    pub fn set_exactly_once(&mut self, on: bool) {
        self.inner.set_exactly_once(on);
    }

    /// Commits: record caches forward the latest update of each key they hold.
    pub fn commit(&mut self) -> Result<(), DriverError> {
        Ok(self.inner.commit()?)
    }

    /// Moves the wall clock forward, firing wall-clock punctuations.
    pub fn advance_wall_clock(&mut self, ms: i64) -> Result<(), DriverError> {
        Ok(self.inner.advance_wall_clock(ms)?)
    }

    /// Everything written to `topic` since the last read, read with [`crate::serdes::Auto`].
    pub fn read<K: Data, V: Data>(
        &mut self,
        topic: &str,
    ) -> Result<Vec<TestRecord<K, V>>, DriverError> {
        self.read_with(topic, auto(), auto())
    }

    /// Windowed output (keys written by a windowed table's stream).
    pub fn read_windowed<K: Data, V: Data>(
        &mut self,
        topic: &str,
    ) -> Result<Vec<TestRecord<Windowed<K>, V>>, DriverError> {
        self.read_with(
            topic,
            std::sync::Arc::new(WindowedSerde::new(auto())),
            auto(),
        )
    }

    pub fn read_with<K: Data, V: Data>(
        &mut self,
        topic: &str,
        keys: SerdeRef<K>,
        values: SerdeRef<V>,
    ) -> Result<Vec<TestRecord<K, V>>, DriverError> {
        let mut out = Vec::new();
        for o in self.inner.read_output(topic) {
            let Some(key) = keys.deserialize(o.record.key.as_deref())? else {
                return Err(SerdeError(format!("{topic}: a record has a null key")).into());
            };
            let value = match o.record.value.as_deref() {
                None => None,
                Some(b) => values.deserialize(Some(b))?,
            };
            out.push(TestRecord {
                key,
                value,
                timestamp: o.record.timestamp,
                partition: o.partition,
            });
        }
        Ok(out)
    }

    /// Records every task dropped so far, by reason: late records
    /// (`dropped().get(DropReason::LateWindow)`), null keys, invalid timestamps...
    pub fn dropped(&self) -> rill_core::metrics::DroppedRecords {
        self.inner.dropped()
    }

    /// The core driver (stores, tasks).
    pub fn core(&mut self) -> &mut CoreDriver {
        &mut self.inner
    }
}
