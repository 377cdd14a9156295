//! The `LogManager` end to end: partitions of several topics under one data directory,
//! per-topic configs that persist, reopen after close and after a crash, the directory lock,
//! deletion, and background retention and cleaning on their threads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rill_log::record::decode_batches;
use rill_log::storage::{ManagerConfig, StorageError};
use rill_log::time::{Clock, ManualClock};
use rill_log::types::{Offset, TopicPartition};
use rill_log::LogManager;
use rill_tests::keyed_batch;

fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn partitions_and_topic_configs_come_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let manager = LogManager::open(ManagerConfig::new(dir.path()), clock.clone()).unwrap();
    manager
        .set_topic_config(
            "events",
            overrides(&[("segment.bytes", "4096"), ("retention.ms", "60000")]),
        )
        .unwrap();
    for p in 0..3 {
        let log = manager
            .get_or_create(&TopicPartition::new("events", p))
            .unwrap();
        for _ in 0..=p {
            log.append(&mut keyed_batch("e", 5, 0)).unwrap();
        }
    }
    manager
        .get_or_create(&TopicPartition::new("other.topic", 0))
        .unwrap();
    // A bad value is refused whole and changes nothing.
    let err = manager
        .set_topic_config("events", overrides(&[("retention.ms", "x")]))
        .unwrap_err();
    assert!(matches!(err, StorageError::Config(_)));
    assert!(matches!(
        manager.get_or_create(&TopicPartition::new("bad/name", 0)),
        Err(StorageError::TopicName(_))
    ));
    // A second manager on the same directory is refused.
    assert!(matches!(
        LogManager::open(ManagerConfig::new(dir.path()), clock.clone()),
        Err(StorageError::DirLocked(_))
    ));
    manager.close().unwrap();
    drop(manager);

    let manager = LogManager::open(ManagerConfig::new(dir.path()), clock).unwrap();
    assert_eq!(
        manager.partitions(),
        vec![
            TopicPartition::new("events", 0),
            TopicPartition::new("events", 1),
            TopicPartition::new("events", 2),
            TopicPartition::new("other.topic", 0)
        ]
    );
    for p in 0..3 {
        let log = manager.get(&TopicPartition::new("events", p)).unwrap();
        assert_eq!(log.log_end_offset(), Offset(5 * (p as i64 + 1)));
        assert_eq!(log.config().segment_bytes, 4096);
        assert_eq!(log.config().retention_ms, 60000);
    }
    assert_eq!(manager.topic_overrides("events")["segment.bytes"], "4096");
    assert_eq!(manager.topic_config("other.topic").segment_bytes, 1 << 30);
    // Deleting a partition removes its directory for good.
    manager
        .delete(&TopicPartition::new("other.topic", 0))
        .unwrap();
    assert!(!dir.path().join("other.topic-0").exists());
    manager.close().unwrap();
}

#[test]
fn a_crashed_manager_reopens_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let manager = LogManager::open(ManagerConfig::new(dir.path()), clock.clone()).unwrap();
    let tp = TopicPartition::new("t", 0);
    let log = manager.get_or_create(&tp).unwrap();
    log.append(&mut keyed_batch("a", 4, 0)).unwrap();
    log.flush().unwrap();
    log.append(&mut keyed_batch("b", 4, 0)).unwrap();
    // No close: the lock goes with the process's file handle, the data stays in the files.
    drop(log);
    drop(manager);
    let manager = LogManager::open(ManagerConfig::new(dir.path()), clock).unwrap();
    let log = manager.get(&tp).unwrap();
    let recs = decode_batches(&log.read(Offset(0), 1 << 20).unwrap().records).unwrap();
    assert_eq!(recs.len(), 8);
    assert_eq!(recs[7].value.as_deref(), Some(&b"b-3"[..]));
    manager.close().unwrap();
}

/// Polls `cond` for up to 10 s; background threads run on their own schedule.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn background_threads_apply_retention_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let mut config = ManagerConfig::new(dir.path());
    config.retention_check_interval_ms = 10;
    config.flush_check_interval_ms = 10;
    config.cleaner_backoff_ms = 10;
    let manager = LogManager::open(config, clock.clone()).unwrap();
    manager
        .set_topic_config(
            "expiring",
            overrides(&[("segment.bytes", "500"), ("retention.ms", "1000")]),
        )
        .unwrap();
    manager
        .set_topic_config(
            "table",
            overrides(&[("segment.bytes", "500"), ("cleanup.policy", "compact")]),
        )
        .unwrap();
    let expiring = manager
        .get_or_create(&TopicPartition::new("expiring", 0))
        .unwrap();
    let table = manager
        .get_or_create(&TopicPartition::new("table", 0))
        .unwrap();
    for _ in 0..10 {
        expiring
            .append(&mut keyed_batch("old", 3, clock.now_ms()))
            .unwrap();
        table
            .append(&mut keyed_batch("v", 3, clock.now_ms()))
            .unwrap();
    }
    assert!(expiring.segment_base_offsets().len() > 2);
    manager.start();
    clock.advance_ms(5_000);
    assert!(
        eventually(
            || expiring.log_start_offset() == expiring.segment_base_offsets()[0]
                && expiring.segment_base_offsets().len() == 1
        ),
        "retention did not run"
    );
    // Compaction leaves one record per key (3 keys) in the closed segments, plus whatever the
    // active segment holds (it is never cleaned).
    assert!(
        eventually(|| rill_log::storage::cleaner::dirty_ratio(&table) == 0.0),
        "the cleaner did not run"
    );
    let active_base = table.segment_base_offsets().last().unwrap().0;
    let read = table.read(table.log_start_offset(), 1 << 20).unwrap();
    let recs = decode_batches(&read.records).unwrap();
    let mut keys: Vec<_> = recs
        .iter()
        .filter(|r| r.offset < active_base)
        .map(|r| r.key.clone().unwrap())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec!["key-0", "key-1", "key-2"],
        "one record per key after cleaning"
    );
    manager.close().unwrap();
}
