//! `rill-core`: the processing engine under rill's DSL, the equivalent of Kafka Streams'
//! Processor API and runtime.
//!
//! It will hold the `Processor` trait and `ProcessorContext`, the `Topology` graph (sources,
//! processors, sinks, state stores, repartition and changelog topics), tasks with stream time
//! and punctuation, the runtime (stream threads, group membership, task assignment, commits with
//! at-least-once or exactly-once guarantees), state stores (fjall, in-memory, RocksDB behind a
//! feature) and a test driver. It runs on `rill-log`'s clients, embedded or over TCP.
//!
//! Here so far: the Processor API ([`processor`]), [`topology`] building and description,
//! [`task`]s with stream time and punctuation, a broker-less [`testing`] driver, and
//! [`state`] stores (key-value, window, session, timestamped) on the in-memory and fjall
//! backends with changelogs and checkpoints, and the [`runtime`] under at-least-once or
//! exactly-once v2.

pub use rill_log as log;

pub mod assignor;
pub mod bench;
pub mod global;
pub mod metrics;
pub mod processor;
pub mod runtime;
pub mod state;
pub mod task;
pub mod testing;
pub mod topology;
