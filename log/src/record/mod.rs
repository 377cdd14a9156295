//! The record format, Kafka's RecordBatch v2: what clients encode, the broker validates and
//! rewrites, coordinators write, and storage keeps on disk. Bytes in, bytes out; no I/O.
//!
//! - [`batch`]: the RecordBatch v2 header, CRC32C, in-place offset assignment, batch iterators.
//! - [`records`]: records inside batches, bounded decompression, batch encoding.
//! - [`control`]: transaction control markers (commit / abort), encoded and recognised.
//! - [`validate`]: a request's batches checked once before they are appended.
//!
//! Below storage, clients, broker and coordinators: nothing here imports from them.

pub mod batch;
pub mod control;
pub mod records;
pub mod validate;

pub use batch::{BatchError, BatchHeader, Compression, TimestampType};
pub use records::{
    decode_batch, decode_batch_in, decode_batches, encode_batch, encode_idempotent_batch,
    NewRecord, Record,
};
pub use validate::{validate_batches, AppendOrigin};
