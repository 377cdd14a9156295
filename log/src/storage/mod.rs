//! The storage engine: one partition's log on disk in Kafka's format, and the manager of many.
//!
//! - `segment`, `index`: segment files and their sparse offset / time indexes.
//! - [`PartitionLog`]: append, read, time lookup, truncate, retention, recovery.
//! - [`cleaner`]: compaction for `cleanup.policy=compact`.
//! - [`epochs`]: the leader-epoch cache and its checkpoint (for replication's truncation).
//! - [`LogManager`]: partitions under a data directory, per-topic config, background work.
//!
//! The batches it stores are in the record format of [`crate::record`], which it depends on.
//! Synchronous, no network: the broker calls in from its own threads.

pub mod cleaner;
pub mod config;
pub mod epochs;
mod error;
mod index;
mod log;
pub mod manager;
pub mod meta_properties;
pub mod producer_state;
mod segment;

pub use config::{CleanupPolicy, ConfigError, LogConfig, MessageTimestampType};
pub use error::StorageError;
pub(crate) use log::write_atomically;
pub use log::{AppendInfo, PartitionLog, ReadBuf, ReadResult, RetentionReport};
pub use manager::{LogManager, ManagerConfig};

/// The total and usable (by an unprivileged writer) bytes of the volume holding `dir`, as
/// DescribeLogDirs reports them; `None` when the system cannot tell.
pub fn volume_bytes(dir: &std::path::Path) -> Option<(i64, i64)> {
    let st = rustix::fs::statvfs(dir).ok()?;
    let unit = st.f_frsize;
    let total = st.f_blocks.checked_mul(unit)?;
    let usable = st.f_bavail.checked_mul(unit)?;
    Some((i64::try_from(total).ok()?, i64::try_from(usable).ok()?))
}
