//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use rill_log::storage::{
    decode_batches, encode_batch, Compression, LogConfig, NewRecord, PartitionLog,
};
use rill_log::time::ManualClock;
use rill_log::types::{Offset, TopicPartition};

/// A batch of `(key, value, timestamp)` records, uncompressed.
pub fn batch(records: &[(Option<&str>, Option<&str>, i64)]) -> Vec<u8> {
    batch_with(records, Compression::None)
}

pub fn batch_with(records: &[(Option<&str>, Option<&str>, i64)], c: Compression) -> Vec<u8> {
    let recs: Vec<NewRecord> = records
        .iter()
        .map(|(k, v, ts)| NewRecord::new(k.map(|s| s.to_string()), v.map(|s| s.to_string()), *ts))
        .collect();
    encode_batch(&recs, c).expect("encodable")
}

/// `n` records with values `prefix-i`, keys `k-i`, timestamp `ts`.
pub fn simple_batch(prefix: &str, n: usize, ts: i64) -> Vec<u8> {
    let owned: Vec<(String, String)> = (0..n)
        .map(|i| (format!("k-{i}"), format!("{prefix}-{i}")))
        .collect();
    let recs: Vec<(Option<&str>, Option<&str>, i64)> = owned
        .iter()
        .map(|(k, v)| (Some(k.as_str()), Some(v.as_str()), ts))
        .collect();
    batch(&recs)
}

pub fn open(dir: &std::path::Path, config: LogConfig, clock: Arc<ManualClock>) -> PartitionLog {
    PartitionLog::open(dir, TopicPartition::new("t", 0), config, clock).expect("log opens")
}

/// Every record from the log start to the end, as (offset, key, value, timestamp).
pub fn read_all(log: &PartitionLog) -> Vec<(i64, Option<String>, Option<String>, i64)> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset().0;
    let end = log.log_end_offset().0;
    while next < end {
        let r = log.read(Offset(next), 64 * 1024).expect("read");
        if r.records.is_empty() {
            // Reads cross compaction's holes themselves; an empty read below the end means no
            // batch remains after `next` (the tail of the last closed segment was compacted
            // away and the active segment is empty). Callers compare against exact contents.
            break;
        }
        let recs = decode_batches(&r.records).expect("served batches decode");
        assert!(!recs.is_empty());
        for rec in recs {
            if rec.offset >= next {
                out.push((
                    rec.offset,
                    rec.key.map(|b| String::from_utf8(b.to_vec()).unwrap()),
                    rec.value.map(|b| String::from_utf8(b.to_vec()).unwrap()),
                    rec.timestamp_ms,
                ));
            }
        }
        next = out.last().map_or(next, |r| r.0 + 1).max(next);
        // Batches may end in a hole (compaction keeps a batch's last offset).
        let last_batch_end = last_offset_in(&r.records) + 1;
        next = next.max(last_batch_end);
    }
    out
}

fn last_offset_in(buf: &[u8]) -> i64 {
    let mut last = -1;
    for item in rill_log::storage::batch::BatchIter::new(buf) {
        let (h, _, _) = item.expect("served batches verify");
        last = h.last_offset();
    }
    last
}

pub fn config(pairs: &[(&str, &str)]) -> LogConfig {
    let mut c = LogConfig::default();
    for (k, v) in pairs {
        c.set(k, v).expect("valid config");
    }
    c
}

/// An embedded broker with a one-partition `__consumer_offsets`, on the system clock.
pub fn broker(dir: &std::path::Path) -> Arc<rill_log::broker::Broker> {
    let mut config = rill_log::broker::BrokerConfig::new(dir);
    config.offsets_topic_num_partitions = 1;
    Arc::new(rill_log::broker::Broker::open(config, Arc::new(rill_log::time::SystemClock)).unwrap())
}

/// The embedded transport to `b`.
pub fn embedded(b: &Arc<rill_log::broker::Broker>) -> Arc<dyn rill_log::client::Transport> {
    Arc::new(rill_log::client::EmbeddedTransport::new(
        Arc::clone(b),
        "test",
    ))
}
