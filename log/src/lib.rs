//! `rill-log`: rill's partitioned log.
//!
//! The record format ([`record`]: Kafka's RecordBatch v2, its records, compression and control
//! markers, shared by every layer above it); the storage engine ([`storage`]: one partition's
//! log as Kafka-format segment files with offset and time indexes, recovery of a torn tail,
//! retention, compaction, and a [`storage::LogManager`] for many partitions under one data
//! directory); the [`broker`] and its [`coordinator`]s (consumer groups, transactions); the
//! Kafka wire protocol over TCP ([`net`]); the clients ([`client`]: producer, consumer, admin,
//! over TCP or embedded); the `rill` command ([`cli`]) and its benchmarks ([`bench`]). See the
//! repository's `docs/architecture.md`.

pub mod bench;
pub mod broker;
pub mod cli;
pub mod client;
pub mod controller;
pub mod coordinator;
pub mod hash;
pub mod net;
pub mod random;
pub mod record;
pub mod replication;
pub mod storage;
pub(crate) mod sync;
pub mod time;
pub mod types;

pub use storage::{LogConfig, LogManager, PartitionLog, StorageError};
pub use time::{Clock, ManualClock, SystemClock};
pub use types::{LeaderEpoch, Offset, PartitionId, TopicPartition};
