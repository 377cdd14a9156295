//! How a job reads, writes and regroups topics: `Consumed` (serdes, timestamps, names of
//! sources), `Produced` (serdes, partitioner), `Repartitioned` and `Grouped` (the
//! repartition topic's name and width).

use std::sync::Arc;

use rill_core::processor::Record;

use crate::serdes::{auto, Data, SerdeRef};

/// How a source reads its topic (Kafka Streams' `Consumed`).
pub struct Consumed<K, V> {
    pub(crate) keys: SerdeRef<K>,
    pub(crate) values: SerdeRef<V>,
    pub(crate) name: Option<String>,
    pub(crate) extractor: Option<rill_core::topology::TimestampExtractor>,
}

impl<K, V> std::fmt::Debug for Consumed<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumed")
            .field("name", &self.name)
            .finish()
    }
}

impl<K, V> std::fmt::Debug for Produced<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Produced")
            .field("name", &self.name)
            .finish()
    }
}

impl<K: Data, V: Data> Default for Consumed<K, V> {
    fn default() -> Self {
        Consumed::with(auto(), auto())
    }
}

impl<K, V> Consumed<K, V> {
    pub fn with(keys: SerdeRef<K>, values: SerdeRef<V>) -> Self {
        Consumed {
            keys,
            values,
            name: None,
            extractor: None,
        }
    }

    /// Names the source node.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Takes each record's timestamp from `extractor(record bytes, stream time)` instead of
    /// the producer's timestamp.
    pub fn with_timestamp_extractor(
        mut self,
        extractor: impl Fn(&Record, i64) -> i64 + Send + Sync + 'static,
    ) -> Self {
        self.extractor = Some(Arc::new(extractor));
        self
    }
}

/// How a sink writes its topic (Kafka Streams' `Produced`). Keys default to the stream's key
/// serde (so partitioning agrees with the topics the keys came from), values to [`auto`].
pub struct Produced<K, V> {
    pub(crate) keys: Option<SerdeRef<K>>,
    pub(crate) values: SerdeRef<V>,
    pub(crate) name: Option<String>,
    pub(crate) partitioner: Option<StreamPartitioner<K, V>>,
}

/// Picks a record's partition among the given count from its key and value (Kafka Streams'
/// `StreamPartitioner`); `None`: the producer's default (murmur2 of the key bytes).
pub type StreamPartitioner<K, V> = Arc<dyn Fn(&K, &V, i32) -> Option<i32> + Send + Sync>;

impl<K: Data, V: Data> Default for Produced<K, V> {
    fn default() -> Self {
        Produced {
            keys: None,
            values: auto(),
            name: None,
            partitioner: None,
        }
    }
}

impl<K, V> Produced<K, V> {
    pub fn with(keys: SerdeRef<K>, values: SerdeRef<V>) -> Self {
        Produced {
            keys: Some(keys),
            values,
            name: None,
            partitioner: None,
        }
    }

    /// Only the value serde; keys keep the stream's serde.
    pub fn values(values: SerdeRef<V>) -> Self {
        Produced {
            keys: None,
            values,
            name: None,
            partitioner: None,
        }
    }

    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Places each record in the partition `partitioner(key, value, partition count)` picks
    /// (out of range is clamped into it; `None`: the default).
    pub fn with_partitioner(
        mut self,
        partitioner: impl Fn(&K, &V, i32) -> Option<i32> + Send + Sync + 'static,
    ) -> Self {
        self.partitioner = Some(Arc::new(partitioner));
        self
    }
}

/// How [`KStream::repartition_with`] makes its topic (Kafka Streams' `Repartitioned`):
/// `<application.id>-<name>-repartition`, with a partition count (else that of the topics it
/// is joined with, or the widest source's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repartitioned {
    pub(crate) name: Option<String>,
    pub(crate) partitions: Option<i32>,
}

impl Repartitioned {
    pub fn named(name: impl Into<String>) -> Self {
        Repartitioned {
            name: Some(name.into()),
            partitions: None,
        }
    }

    pub fn with_partitions(partitions: i32) -> Self {
        Repartitioned {
            name: None,
            partitions: Some(partitions),
        }
    }

    /// Adds a partition count to a name (or the reverse, with [`Repartitioned::name`]).
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// Names for a grouping's repartition topic (Kafka Streams' `Grouped`): the topic is
/// `<application.id>-<name>-repartition`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grouped {
    pub(crate) name: Option<String>,
}

impl Grouped {
    pub fn named(name: impl Into<String>) -> Self {
        Grouped {
            name: Some(name.into()),
        }
    }
}
