//! `rill-dsl`: the streams DSL users write jobs in, following Kafka Streams' semantics.
//!
//! It will hold `StreamsBuilder`, `KStream`, `KTable`, `GlobalKTable`, grouped and windowed
//! streams, time / sliding / session windows with grace, `suppress`, stream-stream,
//! stream-table, table-table and foreign-key joins, and serdes; each builds a `rill-core`
//! topology. `use rill_dsl::prelude::*;` will give a job everything it needs.
//!
//! Nothing is here yet: the processing core comes first (see `rill_core`).

pub use rill_core as core;
