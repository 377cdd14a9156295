//! Log basics: rill's log, embedded. Opens a data directory, writes record batches to a
//! partition, reads them back, looks one up by timestamp, then closes and reopens the log to
//! show the data survives. No server to start.
//!
//! Run it with `cargo run --release --example log_basics`.

use std::sync::Arc;

use anyhow::Result;
use rill_log::record::{decode_batches, encode_batch, Compression, NewRecord};
use rill_log::storage::ManagerConfig;
use rill_log::time::SystemClock;
use rill_log::types::{Offset, TopicPartition};
use rill_log::LogManager;

fn main() -> Result<()> {
    let data_dir = tempfile::tempdir()?;
    let orders = TopicPartition::new("orders", 0);

    // Open a data directory and create the partition's log.
    let manager = LogManager::open(ManagerConfig::new(data_dir.path()), Arc::new(SystemClock))?;
    let log = manager.get_or_create(&orders)?;

    // Append two batches, one compressed, as a producer would send them.
    let now_ms = 1_700_000_000_000;
    let first: Vec<NewRecord> = (0..3)
        .map(|i| {
            NewRecord::new(
                Some(format!("customer-{i}")),
                Some(format!("order #{i}")),
                now_ms + i,
            )
            .with_header("source", Some("quickstart"))
        })
        .collect();
    let second = vec![NewRecord::new(
        Some("customer-1"),
        Some("order #3 (gift)"),
        now_ms + 10,
    )];
    for (records, codec) in [(first, Compression::None), (second, Compression::Zstd)] {
        let mut batch = encode_batch(&records, codec)?;
        let info = log.append(&mut batch)?;
        println!(
            "appended {} record(s) at offsets {}..={} ({codec:?})",
            info.record_count, info.base_offset, info.last_offset
        );
    }

    // Read everything back from the start.
    let read = log.read(Offset(0), 1 << 20)?;
    println!(
        "\nlog start {}, log end {}:",
        read.log_start_offset, read.log_end_offset
    );
    for r in decode_batches(&read.records)? {
        let text = |b: Option<bytes::Bytes>| {
            b.map_or("null".to_string(), |b| {
                String::from_utf8_lossy(&b).into_owned()
            })
        };
        println!(
            "  offset {}  ts {}  key {:<12} value {:<18} headers {}",
            r.offset,
            r.timestamp_ms,
            text(r.key),
            text(r.value),
            r.headers.len()
        );
    }

    // ListOffsets by timestamp: the first record at or after a time.
    if let Some((offset, ts)) = log.offset_for_timestamp(now_ms + 5)? {
        println!(
            "\nfirst record at or after ts {}: offset {offset} (ts {ts})",
            now_ms + 5
        );
    }

    // Close cleanly, reopen, and find the same log.
    drop(log);
    manager.close()?;
    drop(manager);
    let manager = LogManager::open(ManagerConfig::new(data_dir.path()), Arc::new(SystemClock))?;
    let log = manager
        .get(&orders)
        .expect("the partition is found again on reopen");
    println!(
        "\nreopened {}: log end offset {}",
        orders,
        log.log_end_offset()
    );
    manager.close()?;
    Ok(())
}
