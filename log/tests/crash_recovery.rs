//! Crash recovery: the active segment cut at every byte of its unflushed tail, random bit flips
//! there, garbage appended, and damage to closed segments. After reopening, the log must end at
//! the last intact batch, serve only intact batches, and keep every fsynced batch.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;
use rill_log::record::batch::BatchIter;
use rill_log::storage::StorageError;
use rill_log::time::ManualClock;
use rill_log::types::Offset;

type Rec = (i64, Option<String>, Option<String>, i64);

const RECORDS_PER_BATCH: i64 = 3;

/// Snapshot of a crashed log directory: file name -> bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn restore(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Builds a log whose first `flushed` batches are fsynced and whose last `unflushed` are not,
/// then "crashes" (drops it without closing). Returns the files, every record, the byte range
/// of each batch in the active segment, and the fsynced end offset.
struct Crashed {
    files: BTreeMap<String, Vec<u8>>,
    records: Vec<Rec>,
    batch_ranges: Vec<(usize, usize, i64)>,
    flushed_end: i64,
    active_name: String,
}

fn crashed_log(flushed: usize, unflushed: usize) -> Crashed {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        config(&[("index.interval.bytes", "100")]),
        ManualClock::new(0),
    );
    let mut ranges = Vec::new();
    let mut pos = 0usize;
    for i in 0..(flushed + unflushed) {
        let mut b = simple_batch(&format!("batch{i}"), RECORDS_PER_BATCH as usize, i as i64);
        let info = log.append(&mut b).unwrap();
        ranges.push((pos, pos + b.len(), info.base_offset.0));
        pos += b.len();
        if i + 1 == flushed {
            log.flush().unwrap();
        }
    }
    let records = read_all(&log);
    let flushed_end = log.recovery_point().0;
    assert_eq!(flushed_end, flushed as i64 * RECORDS_PER_BATCH);
    drop(log); // a crash: no clean close, the checkpoint says unclean
    Crashed {
        files: snapshot(dir.path()),
        records,
        batch_ranges: ranges,
        flushed_end,
        active_name: format!("{:020}.log", 0),
    }
}

fn reopen_and_check(dir: &Path, c: &Crashed, intact_batches: usize) {
    let log = open(
        dir,
        config(&[("index.interval.bytes", "100")]),
        ManualClock::new(0),
    );
    let expected_end = if intact_batches == 0 {
        0
    } else {
        c.batch_ranges[intact_batches - 1].2 + RECORDS_PER_BATCH
    };
    assert_eq!(
        log.log_end_offset().0,
        expected_end,
        "log end after recovery"
    );
    assert!(
        log.log_end_offset().0 >= c.flushed_end,
        "an fsynced batch was lost"
    );
    let got = read_all(&log);
    assert_eq!(got, c.records[..expected_end as usize].to_vec());
    // The log continues from the recovered end.
    let info = log.append(&mut simple_batch("after", 1, 0)).unwrap();
    assert_eq!(info.base_offset.0, expected_end);
}

#[test]
fn cut_at_every_byte_of_the_unflushed_tail() {
    let c = crashed_log(8, 4);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("t-0");
    let tail_start = c.batch_ranges[8].0;
    let end = c.batch_ranges.last().unwrap().1;
    for cut in tail_start..=end {
        let mut files = c.files.clone();
        files.get_mut(&c.active_name).unwrap().truncate(cut);
        restore(&dir, &files);
        let intact = c.batch_ranges.iter().filter(|r| r.1 <= cut).count();
        reopen_and_check(&dir, &c, intact);
    }
}

/// A small deterministic generator, so failures reproduce.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn random_bit_flips_in_the_unflushed_tail() {
    let c = crashed_log(6, 6);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("t-0");
    let mut rng = Lcg(42);
    let tail_start = c.batch_ranges[6].0;
    let end = c.batch_ranges.last().unwrap().1;
    for _ in 0..300 {
        let pos = tail_start + (rng.next() as usize) % (end - tail_start);
        let (batch_idx, range) = c
            .batch_ranges
            .iter()
            .enumerate()
            .find(|(_, r)| r.0 <= pos && pos < r.1)
            .unwrap();
        let within = pos - range.0;
        // The base offset (bytes 0-7) and leader epoch (12-15) are not covered by the CRC, by
        // Kafka's design: the leader rewrites them. Every other byte is protected.
        if within < 8 || (12..16).contains(&within) {
            continue;
        }
        let mut files = c.files.clone();
        files.get_mut(&c.active_name).unwrap()[pos] ^= 1 << (rng.next() % 8);
        restore(&dir, &files);
        reopen_and_check(&dir, &c, batch_idx);
    }
}

#[test]
fn garbage_after_the_last_batch_is_cut_and_nothing_else() {
    let c = crashed_log(3, 3);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("t-0");
    let mut rng = Lcg(7);
    for len in [1usize, 11, 12, 60, 61, 62, 500] {
        let mut files = c.files.clone();
        let garbage: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        files.get_mut(&c.active_name).unwrap().extend(garbage);
        restore(&dir, &files);
        reopen_and_check(&dir, &c, 6);
    }
    // Zeros, as a filesystem leaves after a crash that extended the file.
    let mut files = c.files.clone();
    files
        .get_mut(&c.active_name)
        .unwrap()
        .extend(vec![0u8; 4096]);
    restore(&dir, &files);
    reopen_and_check(&dir, &c, 6);
}

#[test]
fn damage_inside_a_closed_segment_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || config(&[("segment.bytes", "1000"), ("index.interval.bytes", "100")]);
    let log = open(dir.path(), cfg(), ManualClock::new(0));
    for i in 0..40 {
        log.append(&mut simple_batch(&format!("b{i}"), 2, i))
            .unwrap();
    }
    log.close().unwrap();
    let bases = open(dir.path(), cfg(), ManualClock::new(0)).segment_base_offsets();
    let first = dir.path().join(format!("{:020}.log", bases[0].0));
    // Flip a byte inside the second batch of the first (closed, trusted) segment.
    let mut bytes = fs::read(&first).unwrap();
    let first_len = BatchIter::new(&bytes)
        .next()
        .unwrap()
        .unwrap()
        .0
        .total_bytes() as usize;
    bytes[first_len + 40] ^= 0xFF;
    fs::write(&first, &bytes).unwrap();
    let log = open(dir.path(), cfg(), ManualClock::new(0));
    // The batch before the damage is served alone; the damaged one is an error, not data.
    let r = log.read(Offset(0), 1 << 20).unwrap();
    assert_eq!(r.records.len(), first_len);
    assert!(matches!(
        log.read(Offset(2), 1 << 20),
        Err(StorageError::Corrupt { .. })
    ));
    // Later segments are intact and readable.
    let r = log.read(bases[1], 1 << 20).unwrap();
    assert!(!r.records.is_empty());
    assert_eq!(log.log_end_offset(), Offset(80));
}

#[test]
fn a_closed_segment_cut_short_keeps_the_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || config(&[("segment.bytes", "1000"), ("index.interval.bytes", "100")]);
    let log = open(dir.path(), cfg(), ManualClock::new(0));
    for i in 0..40 {
        log.append(&mut simple_batch(&format!("b{i}"), 2, i))
            .unwrap();
    }
    let all = read_all(&log);
    log.close().unwrap();
    let bases = open(dir.path(), cfg(), ManualClock::new(0)).segment_base_offsets();
    let first = dir.path().join(format!("{:020}.log", bases[0].0));
    let len = fs::metadata(&first).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let log = open(dir.path(), cfg(), ManualClock::new(0));
    let got = read_all(&log);
    // Only the torn batch of the first segment is gone.
    let lost: Vec<_> = all.iter().filter(|r| !got.contains(r)).collect();
    assert_eq!(lost.len(), 2, "{lost:?}");
    assert!(lost.iter().all(|r| r.0 < bases[1].0));
    assert_eq!(log.log_end_offset(), Offset(80));
}

#[test]
fn a_torn_unflushed_closed_segment_ends_the_log_there() {
    // Segments rolled since the last flush are not fsynced: a crash can tear one of them, and
    // then nothing after the tear can be trusted.
    let dir = tempfile::tempdir().unwrap();
    let cfg = || config(&[("segment.bytes", "600"), ("index.interval.bytes", "100")]);
    let log = open(dir.path(), cfg(), ManualClock::new(0));
    for i in 0..10 {
        log.append(&mut simple_batch(&format!("f{i}"), 2, i))
            .unwrap();
    }
    log.flush().unwrap();
    let flushed_end = log.recovery_point().0;
    for i in 0..20 {
        log.append(&mut simple_batch(&format!("u{i}"), 2, i))
            .unwrap();
    }
    let all = read_all(&log);
    let bases = log.segment_base_offsets();
    let first_unflushed = bases.iter().copied().find(|b| b.0 >= flushed_end).unwrap();
    assert!(
        bases.last().unwrap().0 > first_unflushed.0,
        "several unflushed segments"
    );
    drop(log); // crash
               // Tear the first segment that was rolled after the flush, in its second batch.
    let path = dir.path().join(format!("{:020}.log", first_unflushed.0));
    let bytes = fs::read(&path).unwrap();
    let first_len = BatchIter::new(&bytes)
        .next()
        .unwrap()
        .unwrap()
        .0
        .total_bytes();
    fs::write(&path, &bytes[..first_len + 10]).unwrap();
    let log = open(dir.path(), cfg(), ManualClock::new(0));
    let expected_end = first_unflushed.0 + 2;
    assert_eq!(log.log_end_offset().0, expected_end);
    assert_eq!(read_all(&log), all[..expected_end as usize].to_vec());
    assert!(log.log_end_offset().0 >= flushed_end);
}
