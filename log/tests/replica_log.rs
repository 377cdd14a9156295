//! A partition log as a replica: the leader-epoch cache kept with the log (and its
//! `leader-epoch-checkpoint`), follower appends of a leader's batches, and the high
//! watermark bounding reads, the last stable offset, deletion and retention. Ported from
//! Kafka's `UnifiedLogTest` where it has the case (named on each test).

mod common;

use std::fs;

use common::*;
use rill_log::record::batch::assign_offset;
use rill_log::record::{encode_idempotent_batch, Compression, NewRecord};
use rill_log::storage::epochs::EpochEntry;
use rill_log::storage::StorageError;
use rill_log::time::ManualClock;
use rill_log::types::{LeaderEpoch, Offset};

/// `n` records as a leader would have stored them: base offset and epoch set.
fn leader_batch(base: i64, epoch: i32, n: usize) -> Vec<u8> {
    let mut b = simple_batch(&format!("e{epoch}"), n, 1_000);
    assign_offset(&mut b, Offset(base), LeaderEpoch(epoch));
    b
}

fn entries(pairs: &[(i32, i64)]) -> Vec<EpochEntry> {
    pairs.iter().map(|(e, o)| EpochEntry::new(*e, *o)).collect()
}

#[test]
fn leader_appends_record_each_epoch_start_and_the_cache_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    {
        let log = open(dir.path(), config(&[]), clock.clone());
        log.append(&mut simple_batch("a", 3, 10)).unwrap();
        log.set_leader_epoch(LeaderEpoch(2)).unwrap();
        log.append(&mut simple_batch("b", 2, 10)).unwrap();
        log.set_leader_epoch(LeaderEpoch(5)).unwrap();
        log.append(&mut simple_batch("c", 1, 10)).unwrap();
        assert_eq!(log.epoch_entries(), entries(&[(0, 0), (2, 3), (5, 5)]));
        // Kafka's `endOffsetFor`: an epoch's end is the next one's start; the latest ends at
        // the log end; an epoch between known ones answers with the one below it; one later
        // than every known epoch is undefined.
        assert_eq!(log.end_offset_for_epoch(0), (0, 3));
        assert_eq!(log.end_offset_for_epoch(1), (0, 3));
        assert_eq!(log.end_offset_for_epoch(2), (2, 5));
        assert_eq!(log.end_offset_for_epoch(5), (5, 6));
        assert_eq!(log.end_offset_for_epoch(9), (-1, -1));
        log.close().unwrap();
    }
    let text = fs::read_to_string(dir.path().join("leader-epoch-checkpoint")).unwrap();
    assert_eq!(text, "0\n3\n0 0\n2 3\n5 5\n");
    let log = open(dir.path(), config(&[]), clock);
    assert_eq!(log.epoch_entries(), entries(&[(0, 0), (2, 3), (5, 5)]));
    assert_eq!(log.leader_epoch(), LeaderEpoch(5));
    // Batches appended now carry the epoch the log reopened with.
    let info = log.append(&mut simple_batch("d", 1, 10)).unwrap();
    let r = log.read(info.base_offset, 1 << 20).unwrap();
    let h = rill_log::record::batch::BatchHeader::parse(&r.records).unwrap();
    assert_eq!(h.partition_leader_epoch, 5);
}

#[test]
fn a_new_leader_epoch_begins_at_the_log_end_before_any_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[]), ManualClock::new(0));
    log.append(&mut simple_batch("a", 4, 10)).unwrap();
    log.set_leader_epoch(LeaderEpoch(3)).unwrap();
    assert_eq!(log.epoch_entries(), entries(&[(0, 0), (3, 4)]));
    assert_eq!(log.end_offset_for_epoch(0), (0, 4));
    assert_eq!(log.end_offset_for_epoch(3), (3, 4));
}

/// Kafka's `UnifiedLogTest.testTruncateToEndOffsetClearsEpochCache`.
#[test]
fn truncating_at_the_log_end_drops_an_epoch_begun_there() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[]), ManualClock::new(0));
    log.truncate_fully_and_start_at(Offset(27)).unwrap();
    log.append_as_follower(&leader_batch(27, 19, 2)).unwrap();
    assert_eq!(log.epoch_entries(), entries(&[(19, 27)]));
    assert_eq!(log.log_end_offset(), Offset(29));
    // Simulate becoming leader, then a follower again before appending anything.
    log.set_leader_epoch(LeaderEpoch(20)).unwrap();
    assert_eq!(log.epoch_entries(), entries(&[(19, 27), (20, 29)]));
    assert_eq!(log.truncate_to(Offset(29)).unwrap(), Offset(29));
    assert_eq!(log.epoch_entries(), entries(&[(19, 27)]));
    assert_eq!(log.log_end_offset(), Offset(29));
}

#[test]
fn truncation_trims_the_cache_and_the_trim_is_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    {
        let log = open(dir.path(), config(&[]), clock.clone());
        log.append_as_follower(&leader_batch(0, 1, 5)).unwrap();
        log.append_as_follower(&leader_batch(5, 2, 5)).unwrap();
        log.append_as_follower(&leader_batch(10, 4, 5)).unwrap();
        assert_eq!(log.truncate_to(Offset(7)).unwrap(), Offset(5));
        assert_eq!(log.epoch_entries(), entries(&[(1, 0)]));
        assert_eq!(log.end_offset_for_epoch(1), (1, 5));
        assert_eq!(log.end_offset_for_epoch(4), (-1, -1));
    }
    // A crash (no close): the checkpoint written at truncation is what the reopen finds.
    let log = open(dir.path(), config(&[]), clock);
    assert_eq!(log.epoch_entries(), entries(&[(1, 0)]));
    assert_eq!(log.log_end_offset(), Offset(5));
}

#[test]
fn a_missing_or_damaged_checkpoint_is_rebuilt_from_the_batches() {
    for damage in ["delete", "garbage"] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(0);
        {
            let log = open(dir.path(), config(&[]), clock.clone());
            log.append_as_follower(&leader_batch(0, 1, 3)).unwrap();
            log.append_as_follower(&leader_batch(3, 1, 3)).unwrap();
            log.append_as_follower(&leader_batch(6, 7, 2)).unwrap();
            log.close().unwrap();
        }
        let path = dir.path().join("leader-epoch-checkpoint");
        match damage {
            "delete" => fs::remove_file(&path).unwrap(),
            _ => fs::write(&path, "0\n2\n1 zero\n").unwrap(),
        }
        let log = open(dir.path(), config(&[]), clock);
        assert_eq!(log.epoch_entries(), entries(&[(1, 0), (7, 6)]), "{damage}");
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "0\n2\n1 0\n7 6\n",
            "{damage}: the rebuilt cache is written back"
        );
    }
}

#[test]
fn an_epoch_beyond_a_lost_tail_is_dropped_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    {
        let log = open(dir.path(), config(&[]), clock.clone());
        log.append_as_follower(&leader_batch(0, 1, 3)).unwrap();
        log.close().unwrap();
    }
    // A checkpoint that saw an epoch whose batches a crash then lost.
    fs::write(
        dir.path().join("leader-epoch-checkpoint"),
        "0\n2\n1 0\n3 3\n",
    )
    .unwrap();
    let log = open(dir.path(), config(&[]), clock);
    assert_eq!(log.epoch_entries(), entries(&[(1, 0)]));
}

/// Kafka's `UnifiedLogTest.testDuplicateAppendToFollower`: a follower takes the leader's
/// batches as they are, even ones a leader's sequence check would call duplicates.
#[test]
fn follower_appends_keep_offsets_and_skip_producer_checks() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[]), ManualClock::new(0));
    let recs = [
        NewRecord::new(None::<Vec<u8>>, Some(b"a".to_vec()), 1),
        NewRecord::new(None::<Vec<u8>>, Some(b"b".to_vec()), 1),
    ];
    for base in [0, 2] {
        let mut b = encode_idempotent_batch(&recs, Compression::None, 1, 0, 0, false).unwrap();
        assign_offset(&mut b, Offset(base), LeaderEpoch(0));
        log.append_as_follower(&b).unwrap();
    }
    assert_eq!(log.log_end_offset(), Offset(4));
}

#[test]
fn follower_appends_refuse_overlaps_and_accept_compaction_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[]), ManualClock::new(0));
    log.append_as_follower(&leader_batch(0, 0, 3)).unwrap();
    let e = log.append_as_follower(&leader_batch(2, 0, 3)).unwrap_err();
    assert!(
        matches!(
            e,
            StorageError::UnexpectedOffset {
                first: 2,
                log_end: 3,
                ..
            }
        ),
        "{e}"
    );
    // Two batches out of order in one append: nothing is written.
    let mut two = leader_batch(5, 0, 2);
    two.extend_from_slice(&leader_batch(4, 0, 1));
    assert!(log.append_as_follower(&two).is_err());
    assert_eq!(log.log_end_offset(), Offset(3));
    // A gap the leader's cleaner left (offsets 3..9 compacted away) is kept as a gap.
    let info = log.append_as_follower(&leader_batch(10, 0, 2)).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset),
        (Offset(10), Offset(11))
    );
    assert_eq!(log.log_end_offset(), Offset(12));
    let offsets: Vec<i64> = read_all(&log).iter().map(|r| r.0).collect();
    assert_eq!(offsets, [0, 1, 2, 10, 11]);
    // A corrupt batch is refused.
    let mut bad = leader_batch(12, 0, 1);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert!(matches!(
        log.append_as_follower(&bad).unwrap_err(),
        StorageError::InvalidBatch(_)
    ));
}

/// Kafka's `UnifiedLogTest.testHighWatermarkMaintenance`.
#[test]
fn high_watermark_maintenance() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[]), ManualClock::new(0));
    log.set_replicated(true);
    assert_eq!(log.high_watermark(), Offset(0));
    // Not moved by an append.
    log.append(&mut simple_batch("a", 3, 1)).unwrap();
    assert_eq!(log.high_watermark(), Offset(0));
    assert_eq!(log.set_high_watermark(Offset(1)), Offset(1));
    // Not past the log end.
    assert_eq!(log.set_high_watermark(Offset(5)), Offset(3));
    // As a follower.
    log.append_as_follower(&leader_batch(3, 0, 3)).unwrap();
    assert_eq!(log.set_high_watermark(Offset(6)), Offset(6));
    // Lowered by a truncation.
    log.truncate_to(Offset(3)).unwrap();
    assert_eq!(log.high_watermark(), Offset(3));
    log.append(&mut simple_batch("b", 3, 1)).unwrap();
    assert_eq!(log.high_watermark(), Offset(3));
    assert_eq!(log.log_end_offset(), Offset(6));
    // And reset by a full truncation.
    log.truncate_fully_and_start_at(Offset(4)).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.high_watermark()
        ),
        (Offset(4), Offset(4), Offset(4))
    );
}

#[test]
fn an_unreplicated_log_keeps_its_high_watermark_at_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    {
        let log = open(dir.path(), config(&[]), clock.clone());
        log.append(&mut simple_batch("a", 3, 1)).unwrap();
        assert_eq!(log.high_watermark(), Offset(3));
        log.set_replicated(true);
        log.set_high_watermark(Offset(1));
        log.checkpoint().unwrap();
        // Taken back: the high watermark follows the log end again.
        log.set_replicated(false);
        assert_eq!(log.high_watermark(), Offset(3));
        log.set_replicated(true);
        log.set_high_watermark(Offset(2));
        log.checkpoint().unwrap();
    }
    // A replicated reopen starts from the checkpointed value (a lower bound); an
    // unreplicated one at the log end.
    let log = open(dir.path(), config(&[]), clock);
    assert_eq!(log.high_watermark(), Offset(3));
    log.set_replicated(true);
    assert_eq!(log.high_watermark(), Offset(2));
}

/// Kafka's `UnifiedLogTest.testFetchUpToHighWatermark`, with the last stable offset.
#[test]
fn reads_bounded_by_the_high_watermark_and_the_lso_never_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[]), ManualClock::new(0));
    log.set_replicated(true);
    log.append(&mut simple_batch("a", 3, 1)).unwrap();
    log.append(&mut simple_batch("b", 2, 1)).unwrap();
    for hw in [0, 3, 5] {
        log.set_high_watermark(Offset(hw));
        assert_eq!(log.last_stable_offset(), Offset(hw));
        for from in 0..=5 {
            let r = log
                .read_upto(Offset(from), 1 << 20, Some(log.high_watermark()))
                .unwrap();
            let got = rill_log::record::decode_batches(&r.records).unwrap();
            assert_eq!(!got.is_empty(), from < hw, "hw {hw} from {from}");
            assert!(got.iter().all(|rec| rec.offset < hw));
        }
    }
}

/// Kafka's `UnifiedLogTest.testCannotIncrementLogStartOffsetPastHighWatermark` and
/// `testCannotDeleteSegmentsAtOrAboveHighWatermark`.
#[test]
fn deletion_and_retention_stop_at_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(10_000);
    let log = open(
        dir.path(),
        config(&[("segment.bytes", "200"), ("retention.ms", "999")]),
        clock.clone(),
    );
    log.set_replicated(true);
    for i in 0..100 {
        log.append(&mut simple_batch(&format!("v{i}"), 1, 0))
            .unwrap();
    }
    assert!(log.segment_base_offsets().len() > 5);
    log.set_high_watermark(Offset(25));
    assert!(matches!(
        log.delete_records(Offset(26)).unwrap_err(),
        StorageError::OffsetOutOfRange { .. }
    ));
    for hw in 0..=100 {
        log.set_high_watermark(Offset(hw));
        log.enforce_retention(10_000).unwrap();
        assert!(log.log_start_offset().0 <= hw, "hw {hw}");
        let bases = log.segment_base_offsets();
        assert!(bases[0].0 <= hw, "hw {hw}: {bases:?}");
        assert!(bases[1..].iter().all(|b| b.0 > hw), "hw {hw}: {bases:?}");
    }
    assert_eq!(log.log_start_offset(), Offset(100));
    assert_eq!(log.segment_base_offsets(), [Offset(100)]);
}

#[test]
fn deletion_trims_the_epoch_cache_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config(&[]), ManualClock::new(0));
    log.append_as_follower(&leader_batch(0, 1, 3)).unwrap();
    log.append_as_follower(&leader_batch(3, 2, 3)).unwrap();
    log.append_as_follower(&leader_batch(6, 3, 3)).unwrap();
    log.delete_records(Offset(4)).unwrap();
    // Kafka's `truncateFromStart`: the epoch holding the new start begins there.
    assert_eq!(log.epoch_entries(), entries(&[(2, 4), (3, 6)]));
}
