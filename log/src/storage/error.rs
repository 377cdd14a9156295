//! The storage engine's error type: every failure a caller can see, with Kafka's meaning kept
//! (out of range, corrupt, invalid batch) so the broker can map each to a wire error code.

use std::io;
use std::path::PathBuf;

use super::config::ConfigError;
use crate::record::batch::BatchError;
use crate::types::{TopicNameError, TopicPartition};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error(
        "offset {requested} is out of range for {tp} (log start {log_start}, log end {log_end})"
    )]
    OffsetOutOfRange {
        tp: TopicPartition,
        requested: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("corrupt data in {tp}, segment {segment_base}, position {position}: {reason}")]
    Corrupt {
        tp: TopicPartition,
        segment_base: i64,
        position: u64,
        reason: String,
    },
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("log {0} is closed")]
    Closed(TopicPartition),
    #[error("data directory {0} is in use by another process")]
    DirLocked(PathBuf),
    #[error("invalid topic name: {0}")]
    TopicName(#[from] TopicNameError),
    #[error("unknown topic partition {0}")]
    UnknownPartition(TopicPartition),
    /// An idempotent producer's batch was refused (stale epoch, sequence gap).
    #[error(transparent)]
    Producer(#[from] super::producer_state::ProducerStateError),
    /// A batch's leader epoch went backwards, or the epoch checkpoint is unusable.
    #[error("{tp}: {source}")]
    Epoch {
        tp: TopicPartition,
        source: super::epochs::EpochError,
    },
    /// A follower was handed batches that do not start at its log end (Kafka's
    /// `UnexpectedAppendOffsetException`): appending them would leave a hole or overlap.
    #[error("{tp}: replicated batches start at offset {first}, but the log ends at {log_end}")]
    UnexpectedOffset {
        tp: TopicPartition,
        first: i64,
        log_end: i64,
    },
}

/// Attaches a path to an I/O error.
pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StorageError {
    let path = path.into();
    move |source| StorageError::Io { path, source }
}
