//! Model-based test: random sequences of append / read / roll / truncate / reopen / retention /
//! delete_records / flush against a simple in-memory model of a partition log.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use rill_log::storage::batch::BatchIter;
use rill_log::storage::{decode_batches, PartitionLog};
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
