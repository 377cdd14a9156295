//! `rill-dsl`: the streams DSL users write jobs in, following Kafka Streams' semantics.
//!
//! A [`StreamsBuilder`] reads topics as [`KStream`]s (every record an event) or [`KTable`]s
//! (every record an upsert of its key); operators map, filter, branch, group, aggregate,
//! window and join them; `build` turns the whole into a `rill-core` topology that
//! [`Streams`] runs (embedded or against a broker) and [`testing::TestDriver`] runs with no
//! broker at all.
//!
//! ```
//! use rill_dsl::prelude::*;
//! use std::time::Duration;
//!
//! let builder = StreamsBuilder::new();
//! builder
//!     .stream::<String, String>("page-views")
//!     .group_by_key()
//!     .windowed_by(TimeWindows::of_size_no_grace(Duration::from_secs(60)))
//!     .count()
//!     .suppress(Suppressed::until_window_closes())
//!     .to_stream()
//!     .to("views-per-minute");
//! let topology = builder.build().unwrap();
//! assert!(topology.describe().contains("KSTREAM-WINDOWED-AGGREGATE"));
//! ```
//!
//! Where rill differs from Kafka Streams on purpose:
//! - Keys and values are typed (`serde` types); a record whose null key or value its type
//!   cannot hold (use `()` or `Option<_>` to accept nulls) is skipped at the source.
//! - `KTable::to_stream` gives `Option<V>` values: `None` is a deletion (a tombstone when
//!   written).
//! - Stream and time-window aggregations cache their updates until a commit, as Kafka
//!   Streams does; session and sliding windows, cogroups and table aggregations forward every
//!   update. Use `suppress` or [`EmitStrategy::OnWindowClose`] for final results.
//! - A source table is always materialized in its own logged store (no reuse of the source
//!   topic as its changelog).
//! - Windowed keys written to topics carry both window bounds ([`serdes::WindowedSerde`]).
//!
//! The README lists every difference.

pub mod api;
pub mod app;
pub mod bench;
mod graph;
mod ops;
pub mod options;
pub mod serdes;
pub mod testing;

use std::collections::BTreeMap;

pub use rill_core as core;
pub use rill_core::topology::{StoreBackend, Topology};

pub use api::{
    CogroupedKStream, GlobalKTable, KGroupedStream, KGroupedTable, KStream, KTable,
    SessionWindowedKStream, SlidingWindowedKStream, Splitter, TimeWindowedCogroupedKStream,
    TimeWindowedKStream, WindowAggregator, WindowedKStream, Windowing,
};
pub use app::{State, Streams};
pub use graph::StoreKind;
pub use options::{
    BufferConfig, Consumed, EmitStrategy, Grouped, JoinWindows, Materialized, Produced,
    Repartitioned, SessionWindows, SlidingWindows, Suppressed, TimeWindows,
};
pub use serdes::{Data, Serde, SerdeRef, Window, Windowed};

/// Everything a job needs.
pub mod prelude {
    pub use crate::serdes::{
        auto, Auto, Bincode, Json, RawBytes, SerdeRef, Utf8, WindowedSerde, I64,
    };
    pub use crate::{
        BufferConfig, Consumed, EmitStrategy, GlobalKTable, Grouped, JoinWindows, KStream, KTable,
        Materialized, Produced, Repartitioned, SessionWindows, SlidingWindows, State, Streams,
        StreamsBuilder, Suppressed, TimeWindows, Window, Windowed,
    };
    pub use rill_core::metrics::{DropReason, DroppedRecords};
    pub use rill_core::runtime::{ProcessingGuarantee, StreamsConfig};
}

/// Why a topology could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the topology is not valid: {}", .0.join("; "))]
pub struct BuildError(pub Vec<String>);

/// Builds a topology from streams and tables (Kafka Streams' `StreamsBuilder`).
#[derive(Default)]
pub struct StreamsBuilder {
    g: graph::Shared,
}

impl std::fmt::Debug for StreamsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamsBuilder").finish_non_exhaustive()
    }
}

impl StreamsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The records of `topic` as a stream, keys and values read with [`serdes::Auto`].
    pub fn stream<K: Data, V: Data>(&self, topic: &str) -> KStream<K, V> {
        self.stream_with(topic, Consumed::default())
    }

    pub fn stream_with<K: Data, V: Data>(
        &self,
        topic: &str,
        consumed: Consumed<K, V>,
    ) -> KStream<K, V> {
        api::source_stream(&self.g, topic, consumed)
    }

    /// `topic` as a table: each record upserts its key, a null value deletes it.
    pub fn table<K: Data, V: Data>(&self, topic: &str) -> KTable<K, V> {
        self.table_with(topic, Consumed::default(), Materialized::default())
    }

    pub fn table_with<K: Data, V: Data>(
        &self,
        topic: &str,
        consumed: Consumed<K, V>,
        materialized: Materialized,
    ) -> KTable<K, V> {
        api::source_table(&self.g, topic, consumed, materialized)
    }

    /// `topic` as a global table: every partition on every instance, joinable by any key.
    pub fn global_table<K: Data, V: Data>(&self, topic: &str) -> GlobalKTable<K, V> {
        self.global_table_with(topic, Consumed::default())
    }

    /// [`StreamsBuilder::global_table`] with serdes (and the store's name from
    /// `Consumed::named`).
    pub fn global_table_with<K: Data, V: Data>(
        &self,
        topic: &str,
        consumed: Consumed<K, V>,
    ) -> GlobalKTable<K, V> {
        api::global_table(&self.g, topic, consumed)
    }

    /// A store for processors added with [`KStream::process`] (which names it to connect it).
    pub fn add_state_store(&self, spec: rill_core::topology::StoreSpec) {
        self.g
            .borrow_mut()
            .store(spec, StoreKind::Internal, std::sync::Arc::new(()), &[]);
    }

    /// The topology, or every problem found while building it.
    pub fn build(&self) -> Result<BuiltTopology, BuildError> {
        let g = self.g.borrow();
        if !g.errors.is_empty() {
            return Err(BuildError(g.errors.clone()));
        }
        g.settle_value_reads();
        Ok(BuiltTopology {
            topology: g.topology.clone(),
            stores: g.stores.clone(),
        })
    }
}

/// A built topology and what the DSL knows of its stores (for interactive queries).
#[derive(Clone)]
pub struct BuiltTopology {
    pub topology: Topology,
    pub(crate) stores: BTreeMap<String, graph::StoreInfo>,
}

impl std::fmt::Debug for BuiltTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.topology.describe())
    }
}

impl BuiltTopology {
    /// Kafka Streams' text description of the sub-topologies.
    pub fn describe(&self) -> String {
        self.topology.describe()
    }

    /// The stores the DSL created, with their kinds.
    pub fn stores(&self) -> BTreeMap<String, StoreKind> {
        self.stores
            .iter()
            .map(|(n, s)| (n.clone(), s.kind))
            .collect()
    }
}

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
