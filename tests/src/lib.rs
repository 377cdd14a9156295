//! `rill-tests`: tests that run rill's parts together across crates (the storage engine's
//! `LogManager` with its background threads). Broker processes on loopback and real Kafka
//! clients are tested in `rill-log` (`log/tests/`: `cli_broker.rs`, `compat.rs`), streams
//! jobs in `rill-core` and `rill-dsl`. The tests live in `tests/`; this library holds what
//! they share.

use rill_log::record::{encode_batch, Compression, NewRecord};

/// A batch of `n` records keyed `key-i` with values `{prefix}-i`, all at timestamp `ts_ms`.
pub fn keyed_batch(prefix: &str, n: usize, ts_ms: i64) -> Vec<u8> {
    let records: Vec<NewRecord> = (0..n)
        .map(|i| {
            NewRecord::new(
                Some(format!("key-{i}")),
                Some(format!("{prefix}-{i}")),
                ts_ms,
            )
        })
        .collect();
    encode_batch(&records, Compression::None).expect("small batches encode")
}
