//! The storage engine: one partition's log on disk in Kafka's format, and the manager of many.
//!
//! - [`batch`]: the RecordBatch v2 header, CRC32C, in-place offset assignment.
//! - [`records`]: records inside batches, bounded decompression, batch encoding.
//! - `segment`, `index`: segment files and their sparse offset / time indexes.
//! - [`PartitionLog`]: append, read, time lookup, truncate, retention, recovery.
//! - [`cleaner`]: compaction for `cleanup.policy=compact`.
//! - [`LogManager`]: partitions under a data directory, per-topic config, background work.
//!
//! Synchronous, no network: the broker calls in from its own threads.

pub mod batch;
pub mod cleaner;
pub mod config;
mod error;
mod index;
mod log;
pub mod manager;
pub mod producer_state;
pub mod records;
mod segment;

pub use batch::{BatchError, BatchHeader, Compression, TimestampType};
pub use config::{CleanupPolicy, ConfigError, LogConfig, MessageTimestampType};
pub use error::StorageError;
pub(crate) use log::write_atomically;
pub use log::{
    validate_for_append, AppendInfo, PartitionLog, ReadBuf, ReadResult, RetentionReport,
};
pub use manager::{LogManager, ManagerConfig};
pub use records::{
    decode_batch, decode_batch_in, decode_batches, encode_batch, encode_idempotent_batch,
    NewRecord, Record,
};
