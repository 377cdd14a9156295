//! Fuzzes log recovery: any segment (and index) bytes must open, serve only batches that
//! verify, and reopen to the same log end offset.
#![no_main]

use std::fs;
use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;

mod common;
use common::reseal_all;
use rill_log::record::batch::BatchIter;
use rill_log::{LogConfig, Offset, PartitionLog, SystemClock, TopicPartition};

const SEGMENT: &str = "00000000000000000000";
/// `Checkpoint::write`'s format with `clean_shutdown=1`, so the next open trusts the indexes.
const CLEAN_CHECKPOINT: &str = "rill-partition-checkpoint v1\nrecovery_point=0\n\
                                log_start_offset=0\ncleaner_offset=0\nclean_shutdown=1\n";

fn open(dir: &Path) -> PartitionLog {
    // Recovery must cope with any bytes; only an I/O failure of the temp dir may fail the open.
    PartitionLog::open(
        dir,
        TopicPartition::new("t", 0),
        LogConfig::default(),
        Arc::new(SystemClock),
    )
    .expect("open must recover any segment bytes")
}

/// Reads the whole log from its start, asserting that every served batch verifies (BatchIter
/// runs `verify_batch` on each). With `trusted`, the indexes were taken on faith (clean shutdown)
/// and unverified bytes before the last index entry may make a read fail, which is not a bug.
fn read_all(log: &PartitionLog, trusted: bool) -> i64 {
    let end = log.log_end_offset().0;
    let mut offset = log.log_start_offset().0;
    while offset < end {
        let res = match log.read(Offset(offset), 1 << 20) {
            Ok(res) => res,
            Err(_) if trusted => break,
            Err(e) => panic!("read at {offset} of a recovered log failed: {e}"),
        };
        assert_eq!(res.log_end_offset.0, end);
        let mut next = offset;
        for item in BatchIter::new(&res.records) {
            let (h, _, _) = item.expect("a read served a batch that does not verify");
            let h_next = h
                .base_offset
                .saturating_add(i64::from(h.last_offset_delta) + 1);
            next = next.max(h_next);
        }
        if res.records.is_empty() {
            // Nothing at `offset` in its segment: go on at the next segment, or stop.
            match log
                .segment_base_offsets()
                .into_iter()
                .find(|b| b.0 > offset)
            {
                Some(b) => next = b.0,
                None => break,
            }
        }
        assert!(next > offset, "a read at {offset} made no progress");
        offset = next;
    }
    end
}

fuzz_target!(|data: &[u8]| {
    // [flags, index len, timeindex len, index bytes, timeindex bytes, log bytes]. Both lengths 0: no
    // index files, the log opens as after a crash (full rescan). Otherwise the index files and a
    // clean-shutdown checkpoint are written, so the open trusts the indexes.
    // A leading flags byte: bit 0 re-seals the CRC of every framed batch in the log bytes, so
    // mutations reach recovery's deeper checks (offset order, indexes) instead of the checksum.
    let [flags, index_len, time_len, rest @ ..] = data else {
        return;
    };
    let (index, rest) = rest.split_at(usize::from(*index_len).min(rest.len()));
    let (time_index, log_bytes) = rest.split_at(usize::from(*time_len).min(rest.len()));
    let mut log_owned = log_bytes.to_vec();
    if flags & 1 == 1 {
        reseal_all(&mut log_owned);
    }
    let log_bytes = &log_owned[..];
    let trusted = *index_len != 0 || *time_len != 0;

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("t-0");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join(format!("{SEGMENT}.log")), log_bytes).unwrap();
    if trusted {
        fs::write(dir.join(format!("{SEGMENT}.index")), index).unwrap();
        fs::write(dir.join(format!("{SEGMENT}.timeindex")), time_index).unwrap();
        fs::write(dir.join("partition.checkpoint"), CLEAN_CHECKPOINT).unwrap();
    }

    let mut log = open(&dir);
    let end = read_all(&log, trusted);
    if !trusted {
        // Reopening without a close rescans everything again and must find the same end.
        drop(log);
        log = open(&dir);
        assert_eq!(
            log.log_end_offset().0,
            end,
            "reopen after a crash moved the log end"
        );
    }
    // A clean close then reopen trusts the indexes written at close and must agree too.
    log.close().expect("close");
    drop(log);
    let log = open(&dir);
    assert_eq!(
        log.log_end_offset().0,
        end,
        "reopen after a clean close moved the log end"
    );
    read_all(&log, trusted);
});
