//! `rill-log`: rill's partitioned log.
//!
//! Today it holds the storage engine ([`storage`]): one partition's log as Kafka-format segment
//! files with offset and time indexes, recovery of a torn tail, retention, compaction, and a
//! [`storage::LogManager`] for many partitions under one data directory. The broker, the group
//! and transaction coordinators, replication, the Kafka wire protocol and the clients are built
//! on top of it in later modules (see `docs/` and the repository's `DESIGN.md`).

pub mod bench;
pub mod broker;
pub mod cli;
pub mod client;
pub mod coordinator;
pub mod hash;
pub mod net;
pub mod storage;
pub mod time;
pub mod types;

pub use storage::{LogConfig, LogManager, PartitionLog, StorageError};
pub use time::{Clock, ManualClock, SystemClock};
pub use types::{LeaderEpoch, Offset, PartitionId, TopicPartition};
