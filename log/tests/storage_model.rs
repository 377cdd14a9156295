//! Model-based test: random sequences of append / read / roll / truncate / reopen / retention /
//! delete_records / flush against a simple in-memory model of a partition log.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use rill_log::record::batch::BatchIter;
use rill_log::record::decode_batches;
use rill_log::storage::PartitionLog;
use rill_log::time::ManualClock;
use rill_log::types::Offset;

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: usize,
        value_len: usize,
        ts: i64,
    },
    Read {
        at: u32,
        max_bytes: usize,
    },
    Roll,
    Truncate {
        at: u32,
    },
    Reopen {
        clean: bool,
    },
    RetainBytes {
        bytes: u64,
    },
    DeleteRecords {
        at: u32,
    },
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..5, 0usize..60, 0i64..1000).prop_map(|(records, value_len, ts)| Op::Append { records, value_len, ts }),
        4 => (any::<u32>(), 1usize..1500).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::Roll),
        1 => any::<u32>().prop_map(|at| Op::Truncate { at }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => (0u64..2500).prop_map(|bytes| Op::RetainBytes { bytes }),
        1 => any::<u32>().prop_map(|at| Op::DeleteRecords { at }),
        1 => Just(Op::Flush),
    ]
}

/// The model: every batch ever appended and not truncated, the log start and the log end.
#[derive(Debug, Default)]
struct Model {
    /// (base offset, values) per batch, in offset order.
    batches: Vec<(i64, Vec<String>)>,
    start: i64,
    end: i64,
}

impl Model {
    fn value_at(&self, offset: i64) -> Option<&String> {
        let (base, values) = self.batches.iter().rev().find(|(b, _)| *b <= offset)?;
        values.get((offset - base) as usize)
    }
}

fn cfg() -> rill_log::storage::LogConfig {
    config(&[
        ("segment.bytes", "600"),
        ("index.interval.bytes", "100"),
        ("retention.ms", "-1"),
    ])
}

fn segment_size(dir: &Path, base: Offset) -> u64 {
    fs::metadata(dir.join(format!("{:020}.log", base.0))).map_or(0, |m| m.len())
}

/// Picks an offset in `[lo, hi]` from a random number.
fn pick(at: u32, lo: i64, hi: i64) -> i64 {
    lo + (at as i64) % (hi - lo + 1)
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let mut log: PartitionLog = open(dir.path(), cfg(), Arc::clone(&clock));
    let mut m = Model::default();
    let mut counter = 0u64;
    for op in ops {
        match op {
            Op::Append {
                records,
                value_len,
                ts,
            } => {
                let values: Vec<String> = (0..records)
                    .map(|_| {
                        counter += 1;
                        format!("{counter}-{}", "x".repeat(value_len))
                    })
                    .collect();
                let recs: Vec<_> = values
                    .iter()
                    .map(|v| (Some("k"), Some(v.as_str()), ts))
                    .collect();
                let info = log.append(&mut batch(&recs)).unwrap();
                prop_assert_eq!(info.base_offset.0, m.end);
                prop_assert_eq!(info.last_offset.0, m.end + records as i64 - 1);
                m.batches.push((m.end, values));
                m.end += records as i64;
            }
            Op::Read { at, max_bytes } => {
                let from = pick(at, m.start, m.end);
                let r = log.read(Offset(from), max_bytes).unwrap();
                prop_assert_eq!(r.log_end_offset.0, m.end);
                prop_assert_eq!(r.log_start_offset.0, m.start);
                if from == m.end {
                    prop_assert!(r.records.is_empty());
                    continue;
                }
                let headers: Vec<_> = BatchIter::new(&r.records).map(|b| b.unwrap().0).collect();
                prop_assert!(
                    !headers.is_empty(),
                    "no batch for offset {} < end {}",
                    from,
                    m.end
                );
                prop_assert!(headers[0].base_offset <= from && from <= headers[0].last_offset());
                prop_assert!(r.records.len() <= max_bytes.max(headers[0].total_bytes()));
                let recs = decode_batches(&r.records).unwrap();
                let mut expect = from;
                for rec in recs.iter().filter(|r| r.offset >= from) {
                    prop_assert_eq!(rec.offset, expect);
                    let v = String::from_utf8(rec.value.clone().unwrap().to_vec()).unwrap();
                    prop_assert_eq!(Some(&v), m.value_at(rec.offset));
                    expect += 1;
                }
                prop_assert!(expect > from);
            }
            Op::Roll => log.force_roll().unwrap(),
            Op::Truncate { at } => {
                let to = pick(at, 0, m.end + 1);
                let new_end = log.truncate_to(Offset(to)).unwrap().0;
                if to >= m.end {
                } else if to <= m.start {
                    m.batches.clear();
                    m.start = to;
                    m.end = to;
                } else {
                    let first_removed = m
                        .batches
                        .iter()
                        .position(|(b, v)| b + v.len() as i64 > to)
                        .unwrap();
                    m.end = m.batches[first_removed].0;
                    m.batches.truncate(first_removed);
                    if m.end < m.start {
                        // The cut batch began below the log start: nothing visible is left.
                        m.batches.clear();
                        m.start = to;
                        m.end = to;
                    }
                }
                prop_assert_eq!(new_end, m.end);
            }
            Op::Reopen { clean } => {
                if clean {
                    log.close().unwrap();
                }
                drop(log);
                log = open(dir.path(), cfg(), Arc::clone(&clock));
            }
            Op::RetainBytes { bytes } => {
                let mut c = log.config();
                c.set("retention.bytes", &bytes.to_string()).unwrap();
                log.set_config(c);
                log.enforce_retention(0).unwrap();
                let start = log.log_start_offset().0;
                let bases = log.segment_base_offsets();
                prop_assert!(start >= m.start);
                prop_assert!(start == m.start || start == bases[0].0);
                if bases.len() > 1 {
                    // Retention stopped only because deleting one more segment would go below the limit.
                    let size = log.size_bytes();
                    prop_assert!(size - segment_size(dir.path(), bases[0]) < bytes);
                }
                m.start = start;
            }
            Op::DeleteRecords { at } => {
                let before = pick(at, 0, m.end);
                let start = log.delete_records(Offset(before)).unwrap().0;
                m.start = m.start.max(before);
                prop_assert_eq!(start, m.start);
            }
            Op::Flush => {
                log.flush().unwrap();
                prop_assert_eq!(log.recovery_point().0, m.end);
            }
        }
        prop_assert_eq!(log.log_end_offset().0, m.end);
        prop_assert_eq!(log.log_start_offset().0, m.start);
    }
    // Finally every record from the start reads back exactly.
    let all = read_all(&log);
    prop_assert_eq!(all.len() as i64, m.end - m.start);
    for r in all {
        prop_assert_eq!(r.2.as_ref(), m.value_at(r.0));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

/// Operations on a compacted log (`cleanup.policy=compact,delete`).
#[derive(Debug, Clone)]
enum CompactOp {
    Append { keys: Vec<u8>, tombstone: bool },
    Roll,
    Compact,
    Truncate { at: u32 },
    DeleteRecords { at: u32 },
    RetainBytes { bytes: u64 },
    Reopen { clean: bool },
}

fn compact_op() -> impl Strategy<Value = CompactOp> {
    prop_oneof![
        8 => (proptest::collection::vec(0u8..5, 1..4), proptest::bool::weighted(0.15))
            .prop_map(|(keys, tombstone)| CompactOp::Append { keys, tombstone }),
        2 => Just(CompactOp::Roll),
        2 => Just(CompactOp::Compact),
        1 => any::<u32>().prop_map(|at| CompactOp::Truncate { at }),
        1 => any::<u32>().prop_map(|at| CompactOp::DeleteRecords { at }),
        1 => (200u64..3000).prop_map(|bytes| CompactOp::RetainBytes { bytes }),
        1 => any::<bool>().prop_map(|clean| CompactOp::Reopen { clean }),
    ]
}

fn compact_cfg() -> rill_log::storage::LogConfig {
    config(&[
        ("segment.bytes", "400"),
        ("index.interval.bytes", "100"),
        ("retention.ms", "-1"),
        ("cleanup.policy", "compact,delete"),
    ])
}

/// Compaction's promise, checked after every operation: the log holds only records that were
/// written (at their offsets), in increasing offset order, and for every key the newest record
/// still in range is visible.
fn run_compacted(ops: Vec<CompactOp>) -> Result<(), TestCaseError> {
    use rill_log::storage::cleaner::{clean, CleanerConfig};
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let mut log = open(dir.path(), compact_cfg(), Arc::clone(&clock));
    // offset -> (key, value) of every write not truncated away.
    let mut writes: BTreeMap<i64, (String, Option<String>)> = BTreeMap::new();
    let mut counter = 0u64;
    // How far compaction has reached. Truncating below it could leave an older record of a key
    // whose newer one was truncated, which compaction already removed: Kafka avoids that by
    // compacting only below the high watermark, which truncation never crosses. Without
    // replication here, the test keeps truncation above the cleaned range instead.
    let mut cleaned_upto = 0i64;
    for op in ops {
        match op {
            CompactOp::Append { keys, tombstone } => {
                let recs: Vec<(String, Option<String>)> = keys
                    .iter()
                    .map(|k| {
                        counter += 1;
                        (format!("k{k}"), (!tombstone).then(|| format!("v{counter}")))
                    })
                    .collect();
                let refs: Vec<_> = recs
                    .iter()
                    .map(|(k, v)| (Some(k.as_str()), v.as_deref(), 1_000_000))
                    .collect();
                let info = log.append(&mut batch(&refs)).unwrap();
                for (i, r) in recs.into_iter().enumerate() {
                    writes.insert(info.base_offset.0 + i as i64, r);
                }
            }
            CompactOp::Roll => log.force_roll().unwrap(),
            CompactOp::Compact => {
                clean(&log, &CleanerConfig::default(), 1_000_000).unwrap();
                cleaned_upto = cleaned_upto.max(log.segment_base_offsets().last().unwrap().0);
            }
            CompactOp::Truncate { at } => {
                let end = log.log_end_offset().0;
                let to = pick(at, 0, end + 1).max(cleaned_upto);
                let new_end = log.truncate_to(Offset(to)).unwrap().0;
                prop_assert!(new_end <= to.max(end).min(end));
                writes.retain(|o, _| *o < new_end);
            }
            CompactOp::DeleteRecords { at } => {
                let before = pick(at, 0, log.log_end_offset().0);
                log.delete_records(Offset(before)).unwrap();
            }
            CompactOp::RetainBytes { bytes } => {
                let mut c = log.config();
                c.set("retention.bytes", &bytes.to_string()).unwrap();
                log.set_config(c);
                log.enforce_retention(1_000_000).unwrap();
            }
            CompactOp::Reopen { clean } => {
                if clean {
                    log.close().unwrap();
                }
                drop(log);
                log = open(dir.path(), compact_cfg(), Arc::clone(&clock));
            }
        }
        let start = log.log_start_offset().0;
        let visible = read_all(&log);
        prop_assert!(
            visible.windows(2).all(|w| w[0].0 < w[1].0),
            "offsets out of order"
        );
        for (offset, key, value, _) in &visible {
            let written = writes.get(offset);
            prop_assert_eq!(
                written,
                Some(&(key.clone().unwrap(), value.clone())),
                "offset {}",
                offset
            );
        }
        let mut newest_written: BTreeMap<&String, i64> = BTreeMap::new();
        for (o, (k, _)) in writes.range(start..) {
            newest_written.insert(k, *o);
        }
        let mut newest_visible: BTreeMap<&String, i64> = BTreeMap::new();
        for (o, k, _, _) in &visible {
            newest_visible.insert(k.as_ref().unwrap(), *o);
        }
        prop_assert_eq!(newest_visible, newest_written);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn compacted_log_keeps_the_newest_record_of_every_key(ops in proptest::collection::vec(compact_op(), 1..60)) {
        run_compacted(ops)?;
    }
}
