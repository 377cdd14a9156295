//! Behaviour of one partition log: appends and offsets, reads of whole batches, rolling,
//! time lookups, retention, delete_records, truncation, flush policy, bad input, reopen.

mod common;

use std::fs;

use common::*;
use rill_log::record::batch::{verify_batch, BatchIter};
use rill_log::record::{decode_batches, BatchError, Compression, TimestampType};
use rill_log::storage::StorageError;
use rill_log::time::ManualClock;
use rill_log::types::Offset;

#[test]
fn append_assigns_consecutive_offsets_and_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[]), ManualClock::new(1_000));
    let a = log.append(&mut simple_batch("a", 3, 10)).unwrap();
    let b = log.append(&mut simple_batch("b", 2, 20)).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (Offset(0), Offset(2)));
    assert_eq!((b.base_offset, b.last_offset), (Offset(3), Offset(4)));
    assert_eq!(a.log_append_time_ms, -1);
    assert_eq!(log.log_end_offset(), Offset(5));
    let all = read_all(&log);
    let values: Vec<_> = all
        .iter()
        .map(|r| (r.0, r.2.clone().unwrap(), r.3))
        .collect();
    assert_eq!(
        values,
        vec![
            (0, "a-0".into(), 10),
            (1, "a-1".into(), 10),
            (2, "a-2".into(), 10),
            (3, "b-0".into(), 20),
            (4, "b-1".into(), 20)
        ]
    );
    // Reading from the middle of a batch returns that whole batch.
    let r = log.read(Offset(1), 1 << 20).unwrap();
    let recs = decode_batches(&r.records).unwrap();
    assert_eq!(recs.first().unwrap().offset, 0);
    assert_eq!(recs.len(), 5);
}

#[test]
fn read_returns_whole_batches_only_and_oversized_first_batch_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[]), ManualClock::new(0));
    let sizes: Vec<usize> = (0..5)
        .map(|i| {
            let mut b = simple_batch(&format!("v{i}"), 10, i);
            let n = b.len();
            log.append(&mut b).unwrap();
            n
        })
        .collect();
    // max_bytes between one and two batches: exactly one batch.
    let r = log.read(Offset(0), sizes[0] + sizes[1] / 2).unwrap();
    assert_eq!(r.records.len(), sizes[0]);
    // max_bytes smaller than the first batch: the first batch anyway.
    let r = log.read(Offset(10), 5).unwrap();
    assert_eq!(r.records.len(), sizes[1]);
    assert_eq!(verify_batch(&r.records).unwrap().base_offset, 10);
    // At the log end: empty; beyond it: out of range.
    assert!(log.read(Offset(50), 100).unwrap().records.is_empty());
    assert!(matches!(
        log.read(Offset(51), 100),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.read(Offset(-1), 100),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    // read_upto stops before the limit.
    let r = log.read_upto(Offset(0), 1 << 20, Some(Offset(25))).unwrap();
    let last = BatchIter::new(&r.records)
        .map(|b| b.unwrap().0.last_offset())
        .max()
        .unwrap();
    assert_eq!(
        last, 29,
        "the batch holding offset 20..29 starts below the limit"
    );
    let r = log.read_upto(Offset(0), 1 << 20, Some(Offset(20))).unwrap();
    let last = BatchIter::new(&r.records)
        .map(|b| b.unwrap().0.last_offset())
        .max()
        .unwrap();
    assert_eq!(last, 19);
}

#[test]
fn invalid_batches_are_refused_and_leave_the_log_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[("max.message.bytes", "2000")]),
        ManualClock::new(0),
    );
    log.append(&mut simple_batch("ok", 2, 1)).unwrap();
    let size_before = log.size_bytes();

    let good = simple_batch("x", 3, 1);
    let mut bad_crc = good.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    let mut bad_magic = good.clone();
    bad_magic[16] = 1;
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 3);
    // A good batch followed by a bad one: nothing of the request is written.
    let mut mixed = good.clone();
    mixed.extend_from_slice(&bad_crc);
    let mut huge = simple_batch(&"y".repeat(500), 10, 1);
    let mut garbage = vec![0xEEu8; 100];

    assert!(matches!(
        log.append(&mut bad_crc),
        Err(StorageError::InvalidBatch(BatchError::CrcMismatch { .. }))
    ));
    assert!(matches!(
        log.append(&mut bad_magic),
        Err(StorageError::InvalidBatch(BatchError::BadMagic(1)))
    ));
    assert!(matches!(
        log.append(&mut truncated),
        Err(StorageError::InvalidBatch(BatchError::Truncated { .. }))
    ));
    assert!(matches!(
        log.append(&mut mixed),
        Err(StorageError::InvalidBatch(_))
    ));
    assert!(matches!(
        log.append(&mut huge),
        Err(StorageError::InvalidBatch(BatchError::TooLarge { .. }))
    ));
    assert!(matches!(
        log.append(&mut garbage),
        Err(StorageError::InvalidBatch(_))
    ));
    assert!(matches!(
        log.append(&mut []),
        Err(StorageError::InvalidBatch(BatchError::Empty))
    ));
    assert_eq!(log.log_end_offset(), Offset(2));
    assert_eq!(log.size_bytes(), size_before);
}

#[test]
fn compacted_topics_refuse_records_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[("cleanup.policy", "compact")]),
        ManualClock::new(0),
    );
    let mut keyless = batch_with(
        &[
            (Some("k"), Some("v"), 1),
            (None, Some("v"), 1),
            (Some("k2"), Some("v"), 1),
            (None, Some("v"), 1),
        ],
        Compression::Gzip,
    );
    // Every keyless record is named (KIP-467), and nothing is written.
    match log.append(&mut keyless) {
        Err(StorageError::InvalidBatch(BatchError::MissingKeys(i))) => assert_eq!(i, vec![1, 3]),
        other => panic!("{other:?}"),
    }
    assert_eq!(log.log_end_offset().0, 0);
}

#[test]
fn every_compression_codec_is_stored_as_is_and_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[]), ManualClock::new(0));
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    let mut sent = Vec::new();
    for (i, c) in codecs.iter().enumerate() {
        let v = format!("payload-{i}-").repeat(20);
        let mut b = batch_with(
            &[(Some("k"), Some(&v), i as i64), (Some("j"), None, i as i64)],
            *c,
        );
        let original_tail = b[21..].to_vec();
        let info = log.append(&mut b).unwrap();
        let r = log.read(info.base_offset, 1 << 20).unwrap();
        let stored = r
            .records
            .slice(0..verify_batch(&r.records).unwrap().total_bytes() as usize);
        assert_eq!(
            &stored[21..],
            &original_tail[..],
            "{c:?} batch bytes changed"
        );
        sent.push((info.base_offset.0, v));
    }
    let all = read_all(&log);
    for (offset, v) in sent {
        let rec = all.iter().find(|r| r.0 == offset).unwrap();
        assert_eq!(rec.2.as_deref(), Some(v.as_str()));
        let tomb = all.iter().find(|r| r.0 == offset + 1).unwrap();
        assert_eq!(tomb.2, None);
    }
}

#[test]
fn log_append_time_overrides_record_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(777_000);
    let log = open(
        dir.path(),
        config(&[("message.timestamp.type", "LogAppendTime")]),
        clock,
    );
    let info = log.append(&mut simple_batch("a", 3, 5)).unwrap();
    assert_eq!(info.log_append_time_ms, 777_000);
    let r = log.read(Offset(0), 1 << 20).unwrap();
    let h = verify_batch(&r.records).unwrap();
    assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
    assert!(read_all(&log).iter().all(|r| r.3 == 777_000));
}

#[test]
fn segments_roll_by_size_and_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = open(
        dir.path(),
        config(&[("segment.bytes", "1000"), ("segment.ms", "60000")]),
        clock.clone(),
    );
    let one = simple_batch("v", 5, 0).len() as u64;
    let per_segment = 1000 / one;
    for _ in 0..per_segment {
        log.append(&mut simple_batch("v", 5, 0)).unwrap();
    }
    assert_eq!(log.segment_base_offsets().len(), 1);
    log.append(&mut simple_batch("v", 5, 0)).unwrap();
    assert_eq!(
        log.segment_base_offsets(),
        vec![Offset(0), Offset(5 * per_segment as i64)]
    );
    // Time: the active segment rolls once segment.ms has passed since its first append.
    clock.advance_ms(59_999);
    log.append(&mut simple_batch("v", 1, 0)).unwrap();
    assert_eq!(log.segment_base_offsets().len(), 2);
    clock.advance_ms(2);
    log.append(&mut simple_batch("v", 1, 0)).unwrap();
    assert_eq!(log.segment_base_offsets().len(), 3);
    // File names are 20-digit base offsets.
    let base = log.segment_base_offsets()[1].0;
    assert!(dir.path().join(format!("{base:020}.log")).exists());
    assert!(dir.path().join(format!("{base:020}.index")).exists());
    assert!(dir.path().join(format!("{base:020}.timeindex")).exists());
}

#[test]
fn offset_for_timestamp_finds_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[("segment.bytes", "600"), ("index.interval.bytes", "100")]),
        ManualClock::new(0),
    );
    // Timestamps 0,10,20,...; one record per batch, several segments.
    for i in 0..60 {
        log.append(&mut batch(&[(Some("k"), Some("v"), i * 10)]))
            .unwrap();
    }
    assert!(log.segment_base_offsets().len() > 3);
    for target in [-5, 0, 1, 10, 95, 100, 301, 590] {
        let expect = (0..60)
            .find(|i| i * 10 >= target)
            .map(|i| (Offset(i), i * 10));
        assert_eq!(
            log.offset_for_timestamp(target).unwrap(),
            expect,
            "target {target}"
        );
    }
    assert_eq!(log.offset_for_timestamp(591).unwrap(), None);
    // Out-of-order timestamps: the first in offset order wins.
    log.append(&mut batch(&[(Some("k"), Some("v"), 5)]))
        .unwrap();
    assert_eq!(log.offset_for_timestamp(3).unwrap(), Some((Offset(1), 10)));
}

#[test]
fn retention_by_time_and_by_size_deletes_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let log = open(
        dir.path(),
        config(&[("segment.bytes", "1000"), ("retention.ms", "5000")]),
        clock.clone(),
    );
    for i in 0..30 {
        log.append(&mut simple_batch("v", 4, 1_000_000 + i * 100))
            .unwrap();
    }
    let segs = log.segment_base_offsets();
    assert!(segs.len() >= 4, "{segs:?}");
    // Nothing is old enough yet.
    assert_eq!(
        log.enforce_retention(clock.now()).unwrap().segments_deleted,
        0
    );
    // Now every record of the first segments is older than 5 s, the rest are not.
    let now = 1_000_000 + 1_500 + 5_001;
    let deleted = log.enforce_retention(now).unwrap();
    assert!(deleted.segments_deleted >= 1);
    let start = log.log_start_offset();
    assert_eq!(start, log.segment_base_offsets()[0]);
    // Every remaining record in closed segments is young or in a segment with a young record.
    assert!(read_all(&log).iter().all(|r| r.0 >= start.0));
    assert!(matches!(
        log.read(Offset(0), 100),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    // Size: keep at most 2000 bytes (whole segments; the active one is never deleted).
    let mut c = log.config();
    c.set("retention.ms", "-1").unwrap();
    c.set("retention.bytes", "2000").unwrap();
    log.set_config(c);
    log.enforce_retention(now).unwrap();
    let first_closed = fs::metadata(
        dir.path()
            .join(format!("{:020}.log", log.segment_base_offsets()[0].0)),
    )
    .unwrap()
    .len();
    assert!(
        log.size_bytes() <= 2000
            || log.segment_base_offsets().len() == 1
            || log.size_bytes() - first_closed < 2000
    );
    assert!(log.size_bytes() - first_closed < 2000);
    // Everything expired: the log empties but keeps its end offset.
    let leo = log.log_end_offset();
    let mut c = log.config();
    c.set("retention.ms", "0").unwrap();
    log.set_config(c);
    log.enforce_retention(now + 1_000_000).unwrap();
    assert_eq!(log.log_end_offset(), leo);
    assert_eq!(log.log_start_offset(), leo);
    assert!(read_all(&log).is_empty());
    assert_eq!(
        log.append(&mut simple_batch("n", 1, 0))
            .unwrap()
            .base_offset,
        leo
    );
}

#[test]
fn compact_only_topics_are_not_deleted_by_retention() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[
            ("segment.bytes", "500"),
            ("retention.ms", "1"),
            ("cleanup.policy", "compact"),
        ]),
        ManualClock::new(0),
    );
    for _ in 0..10 {
        log.append(&mut simple_batch("v", 3, 0)).unwrap();
    }
    assert_eq!(
        log.enforce_retention(1_000_000).unwrap().segments_deleted,
        0
    );
    assert_eq!(log.log_start_offset(), Offset(0));
}

#[test]
fn delete_records_moves_the_start_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = open(
        dir.path(),
        config(&[("segment.bytes", "700")]),
        clock.clone(),
    );
    for _ in 0..20 {
        log.append(&mut simple_batch("v", 3, 0)).unwrap();
    }
    let segments_before = log.segment_base_offsets().len();
    assert_eq!(log.delete_records(Offset(31)).unwrap(), Offset(31));
    assert!(log.segment_base_offsets().len() < segments_before);
    assert!(matches!(
        log.read(Offset(30), 100),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    // Reading at the start returns the batch holding 31 (it starts at 30); records >= 31 follow.
    let recs = decode_batches(&log.read(Offset(31), 1 << 20).unwrap().records).unwrap();
    assert!(recs.iter().any(|r| r.offset == 31));
    // Going backwards is a no-op; past the end is an error.
    assert_eq!(log.delete_records(Offset(5)).unwrap(), Offset(31));
    assert!(matches!(
        log.delete_records(Offset(61)),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    drop(log);
    let log = open(dir.path(), config(&[("segment.bytes", "700")]), clock);
    assert_eq!(log.log_start_offset(), Offset(31));
    assert_eq!(log.log_end_offset(), Offset(60));
}

#[test]
fn truncate_to_cuts_whole_batches_and_appends_continue_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = open(
        dir.path(),
        config(&[("segment.bytes", "700")]),
        clock.clone(),
    );
    for i in 0..20 {
        log.append(&mut simple_batch(&format!("b{i}"), 3, 0))
            .unwrap();
    }
    // 31 is inside the batch 30..32: that whole batch goes.
    assert_eq!(log.truncate_to(Offset(31)).unwrap(), Offset(30));
    assert_eq!(log.log_end_offset(), Offset(30));
    assert_eq!(log.truncate_to(Offset(100)).unwrap(), Offset(30));
    let info = log.append(&mut simple_batch("new", 2, 0)).unwrap();
    assert_eq!(info.base_offset, Offset(30));
    let all = read_all(&log);
    assert_eq!(all.len(), 32);
    assert_eq!(all[29].2.as_deref(), Some("b9-2"));
    assert_eq!(all[30].2.as_deref(), Some("new-0"));
    drop(log);
    let log = open(dir.path(), config(&[("segment.bytes", "700")]), clock);
    assert_eq!(read_all(&log), all);
    // Truncating below the start empties the log and restarts it there.
    log.delete_records(Offset(10)).unwrap();
    assert_eq!(log.truncate_to(Offset(4)).unwrap(), Offset(4));
    assert_eq!(log.log_start_offset(), Offset(4));
    assert_eq!(
        log.append(&mut simple_batch("z", 1, 0))
            .unwrap()
            .base_offset,
        Offset(4)
    );
}

#[test]
fn flush_messages_one_fsyncs_before_ack() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[("flush.messages", "1")]),
        ManualClock::new(0),
    );
    log.append(&mut simple_batch("v", 3, 0)).unwrap();
    assert_eq!(log.recovery_point(), Offset(3));
    let lazy_dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let lazy = open(
        lazy_dir.path(),
        config(&[("flush.ms", "1000")]),
        clock.clone(),
    );
    lazy.append(&mut simple_batch("v", 3, 0)).unwrap();
    assert_eq!(lazy.recovery_point(), Offset(0));
    assert!(!lazy.flush_if_due(999).unwrap());
    assert!(lazy.flush_if_due(1000).unwrap());
    assert_eq!(lazy.recovery_point(), Offset(3));
    // A roll does not fsync on the append path; the rolled segment is due for a flush at once,
    // and only it: the active segment waits for flush.ms (Kafka's roll flushes up to the new
    // segment's base offset, `UnifiedLog.roll`).
    clock.set_ms(1000);
    lazy.append(&mut simple_batch("v", 2, 0)).unwrap();
    lazy.force_roll().unwrap();
    lazy.append(&mut simple_batch("w", 4, 0)).unwrap();
    assert_eq!(lazy.recovery_point(), Offset(3));
    assert!(lazy.flush_if_due(1001).unwrap());
    assert_eq!(lazy.recovery_point(), Offset(5));
    assert!(!lazy.flush_if_due(1002).unwrap());
    assert!(lazy.flush_if_due(2000).unwrap());
    assert_eq!(lazy.recovery_point(), Offset(9));
}

#[test]
fn missing_or_garbage_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let cfg = || config(&[("segment.bytes", "2000"), ("index.interval.bytes", "50")]);
    let log = open(dir.path(), cfg(), clock.clone());
    for i in 0..100 {
        log.append(&mut simple_batch("v", 2, i)).unwrap();
    }
    let expected = read_all(&log);
    log.close().unwrap();
    let bases = {
        let l = open(dir.path(), cfg(), clock.clone());
        let b = l.segment_base_offsets();
        l.close().unwrap();
        b
    };
    assert!(bases.len() >= 3);
    let name = |b: Offset, s: &str| dir.path().join(format!("{:020}.{s}", b.0));
    fs::remove_file(name(bases[0], "index")).unwrap();
    fs::write(name(bases[1], "index"), b"not an index at all!!!!").unwrap();
    fs::write(name(bases[1], "timeindex"), vec![0xFFu8; 24]).unwrap();
    // An index that is well formed but points at the wrong place.
    fs::write(name(bases[2], "index"), [0u8, 0, 0, 3, 0, 0, 0, 7]).unwrap();
    let log = open(dir.path(), cfg(), clock);
    assert_eq!(read_all(&log), expected);
    for (i, r) in expected.iter().enumerate() {
        let got = log.read(Offset(r.0), 1).unwrap();
        assert!(
            decode_batches(&got.records)
                .unwrap()
                .iter()
                .any(|x| x.offset == r.0),
            "offset {i}"
        );
    }
    assert_eq!(
        log.offset_for_timestamp(20).unwrap(),
        Some((Offset(40), 20))
    );
}

#[test]
fn clean_close_then_reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let log = open(
        dir.path(),
        config(&[("segment.bytes", "900")]),
        clock.clone(),
    );
    for i in 0..25 {
        log.append(&mut simple_batch(&format!("x{i}"), 2, i))
            .unwrap();
    }
    let before = read_all(&log);
    log.close().unwrap();
    assert!(matches!(
        log.append(&mut simple_batch("late", 1, 0)),
        Err(StorageError::Closed(_))
    ));
    let log = open(dir.path(), config(&[("segment.bytes", "900")]), clock);
    assert_eq!(read_all(&log), before);
    assert_eq!(
        log.append(&mut simple_batch("n", 1, 0))
            .unwrap()
            .base_offset,
        Offset(50)
    );
}

trait Now {
    fn now(&self) -> i64;
}
impl Now for std::sync::Arc<ManualClock> {
    fn now(&self) -> i64 {
        use rill_log::time::Clock;
        self.now_ms()
    }
}

#[test]
fn max_timestamp_comes_from_the_records_not_the_producer() {
    use rill_log::record::batch::set_max_timestamp;
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[("segment.bytes", "100")]),
        ManualClock::new(0),
    );
    let mut lying = batch(&[(Some("k"), Some("v"), 1_000), (Some("k"), Some("v"), 2_000)]);
    set_max_timestamp(&mut lying, i64::MAX);
    log.append(&mut lying).unwrap();
    let stored = log.read(Offset(0), 1 << 20).unwrap();
    assert_eq!(verify_batch(&stored.records).unwrap().max_timestamp, 2_000);
    // So retention by time can delete it.
    log.append(&mut simple_batch("later", 3, 10_000)).unwrap();
    let mut c = log.config();
    c.set("retention.ms", "5000").unwrap();
    log.set_config(c);
    assert!(log.enforce_retention(9_000).unwrap().segments_deleted >= 1);
    // A timestamp delta that overflows is refused.
    let mut overflow = batch(&[
        (Some("k"), Some("v"), i64::MAX - 1),
        (Some("k"), Some("v"), i64::MAX),
    ]);
    // Base timestamp i64::MAX - 1 with a delta of 1 is fine; make the base larger so it overflows.
    overflow[27..35].copy_from_slice(&i64::MAX.to_be_bytes());
    rill_log::record::batch::set_max_timestamp(&mut overflow, i64::MAX);
    assert!(matches!(
        log.append(&mut overflow),
        Err(StorageError::InvalidBatch(BatchError::Records(_)))
    ));
}

/// What the broker asks before it runs an append or a read in place on its async workers:
/// an append may fsync only under `flush.messages` / `flush.ms`, and only reads below the
/// active segment may go to the disk.
#[test]
fn appends_that_may_sync_and_reads_off_the_tail_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let config = rill_log::storage::LogConfig {
        segment_bytes: 200,
        ..Default::default()
    };
    let log = open(dir.path(), config.clone(), clock.clone());
    assert!(!log.appends_may_sync());
    for i in 0..5 {
        log.append(&mut simple_batch(&format!("b{i}"), 3, 1_000))
            .unwrap();
    }
    let end = log.log_end_offset();
    assert!(log.reads_tail(end), "the next offset is the tail");
    assert!(
        !log.reads_tail(Offset(0)),
        "segments rolled: offset 0 is below the active one"
    );
    log.close().unwrap();
    drop(log);
    for durable in [
        rill_log::storage::LogConfig {
            flush_messages: 1,
            ..config.clone()
        },
        rill_log::storage::LogConfig {
            flush_ms: 1_000,
            ..config
        },
    ] {
        let log = open(dir.path(), durable, clock.clone());
        assert!(log.appends_may_sync());
        log.close().unwrap();
    }
}
