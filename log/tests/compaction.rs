//! Compaction: after cleaning, reading from the start gives the newest value of every key at
//! its original offset; tombstones go after `delete.retention.ms`; offsets stay increasing;
//! the active segment is untouched; an interrupted swap completes on reopen; appends go on
//! while the cleaner runs.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;

use common::*;
use rill_log::record::Compression;
use rill_log::storage::cleaner::{clean, CleanerConfig};
use rill_log::storage::{LogConfig, PartitionLog};
use rill_log::time::{Clock, ManualClock};

type Rec = (i64, Option<String>, Option<String>, i64);

const DAY_MS: i64 = 24 * 3600 * 1000;

fn compact_config() -> LogConfig {
    config(&[
        ("cleanup.policy", "compact"),
        ("segment.bytes", "800"),
        ("index.interval.bytes", "64"),
    ])
}

/// What compaction must leave of `written` (offset order): the newest record of each key,
/// except tombstones whose timestamp is older than `delete.retention.ms` at `now`, plus every
/// record at or after `active_base` untouched.
fn expected_after_clean(
    written: &[Rec],
    active_base: i64,
    now: i64,
    delete_retention_ms: i64,
) -> Vec<Rec> {
    let mut newest: BTreeMap<&str, i64> = BTreeMap::new();
    for r in written.iter().filter(|r| r.0 < active_base) {
        newest.insert(r.1.as_deref().unwrap(), r.0);
    }
    // The active segment is neither mapped nor rewritten (Kafka's cleaner stops before it).
    written
        .iter()
        .filter(|r| {
            if r.0 >= active_base {
                return true;
            }
            let is_newest = newest[r.1.as_deref().unwrap()] == r.0;
            let expired_tombstone = r.2.is_none() && now - r.3 > delete_retention_ms;
            is_newest && !expired_tombstone
        })
        .cloned()
        .collect()
}

fn write(log: &PartitionLog, key: &str, value: Option<&str>, ts: i64, codec: Compression) {
    log.append(&mut batch_with(&[(Some(key), value, ts)], codec))
        .unwrap();
}

#[test]
fn cleaning_keeps_the_newest_value_per_key_at_its_original_offset() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(10 * DAY_MS);
    let log = open(dir.path(), compact_config(), clock.clone());
    let now = clock.now_ms();
    let codecs = [
        Compression::None,
        Compression::Lz4,
        Compression::Zstd,
        Compression::Gzip,
        Compression::Snappy,
    ];
    for round in 0..12 {
        for k in 0..8 {
            let v = format!("k{k}-v{round}");
            write(
                &log,
                &format!("k{k}"),
                Some(&v),
                now - 1000 + round,
                codecs[(round as usize + k) % 5],
            );
        }
    }
    // Multi-record batches too, some records superseded inside the same batch.
    log.append(&mut batch(&[
        (Some("m"), Some("m1"), now),
        (Some("m"), Some("m2"), now),
        (Some("k0"), Some("k0-late"), now),
    ]))
    .unwrap();
    // An old tombstone (will be dropped) and a recent one (kept).
    write(&log, "k1", None, now - 2 * DAY_MS, Compression::None);
    write(&log, "k2", None, now - 1000, Compression::None);
    log.force_roll().unwrap();
    // Records in the active segment are never cleaned, even if superseded.
    write(&log, "k3", Some("active-1"), now, Compression::None);
    write(&log, "k3", Some("active-2"), now, Compression::None);
    let written = read_all(&log);
    let active_base = log.segment_base_offsets().last().unwrap().0;
    let segments_before = log.segment_base_offsets().len();

    let stats = clean(&log, &CleanerConfig::default(), now)
        .unwrap()
        .expect("a pass ran");
    assert!(stats.records_removed > 0);
    assert_eq!(stats.tombstones_removed, 1);
    let got = read_all(&log);
    assert_eq!(
        got,
        expected_after_clean(&written, active_base, now, DAY_MS)
    );
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets must stay increasing"
    );
    assert!(
        log.segment_base_offsets().len() < segments_before,
        "small segments are grouped"
    );
    assert_eq!(log.log_end_offset().0, written.last().unwrap().0 + 1);
    // A second pass has nothing dirty.
    assert!(clean(&log, &CleanerConfig::default(), now)
        .unwrap()
        .is_none());
    // Survives a reopen.
    drop(log);
    let log = open(dir.path(), compact_config(), clock);
    assert_eq!(read_all(&log), got);
}

#[test]
fn tombstones_are_dropped_only_after_delete_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(100 * DAY_MS);
    let log = open(dir.path(), compact_config(), clock.clone());
    let t0 = clock.now_ms();
    write(&log, "a", Some("1"), t0, Compression::None);
    write(&log, "b", Some("1"), t0, Compression::None);
    write(&log, "a", None, t0, Compression::None);
    log.force_roll().unwrap();
    clean(&log, &CleanerConfig::default(), t0).unwrap().unwrap();
    let got = read_all(&log);
    assert_eq!(
        got.iter()
            .map(|r| (r.1.clone().unwrap(), r.2.clone()))
            .collect::<Vec<_>>(),
        vec![
            ("b".to_string(), Some("1".to_string())),
            ("a".to_string(), None)
        ]
    );
    // A day and a bit later, with new dirty data, the tombstone goes.
    clock.advance_ms(DAY_MS + 1);
    write(&log, "c", Some("1"), clock.now_ms(), Compression::None);
    log.force_roll().unwrap();
    clean(&log, &CleanerConfig::default(), clock.now_ms())
        .unwrap()
        .unwrap();
    let keys: Vec<_> = read_all(&log)
        .iter()
        .map(|r| r.1.clone().unwrap())
        .collect();
    assert_eq!(keys, vec!["b", "c"]);
}

#[test]
fn an_interrupted_swap_completes_on_reopen() {
    let src = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(DAY_MS);
    let now = clock.now_ms();
    let log = open(src.path(), compact_config(), clock.clone());
    for round in 0..10 {
        for k in 0..5 {
            write(
                &log,
                &format!("k{k}"),
                Some(&format!("v{round}")),
                now,
                Compression::None,
            );
        }
    }
    log.force_roll().unwrap();
    write(&log, "tail", Some("x"), now, Compression::None);
    log.close().unwrap();
    // A copy of the uncleaned directory; clean the original.
    let before = tempfile::tempdir().unwrap();
    for e in fs::read_dir(src.path()).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), before.path().join(e.file_name())).unwrap();
    }
    let log = open(src.path(), compact_config(), clock.clone());
    // One output group, so the whole cleaned range is one `.swap` file.
    let mut c = log.config();
    c.set("segment.bytes", "1048576").unwrap();
    log.set_config(c);
    clean(&log, &CleanerConfig::default(), now)
        .unwrap()
        .unwrap();
    let cleaned = read_all(&log);
    let cleaned_bases = log.segment_base_offsets();
    assert_eq!(
        cleaned_bases.len(),
        2,
        "one cleaned segment and the active one"
    );
    log.close().unwrap();
    // Crash after the cleaned segment became `.swap` but before the old ones were deleted.
    let base = cleaned_bases[0].0;
    fs::copy(
        src.path().join(format!("{base:020}.log")),
        before.path().join(format!("{base:020}.log.swap")),
    )
    .unwrap();
    // Plus a stray half-written `.cleaned` file, which must be discarded.
    fs::write(
        before.path().join(format!("{base:020}.log.cleaned")),
        b"half",
    )
    .unwrap();
    let log = open(before.path(), compact_config(), clock);
    assert_eq!(read_all(&log), cleaned);
    let leftovers: Vec<_> = fs::read_dir(before.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("swap") || n.contains("cleaned"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn appends_and_reads_go_on_while_the_cleaner_runs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(DAY_MS);
    let log = Arc::new(open(dir.path(), compact_config(), clock.clone()));
    let now = clock.now_ms();
    let writer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for i in 0..3000 {
                let v = format!("{i}");
                log.append(&mut batch(&[(
                    Some(&format!("k{}", i % 17)),
                    Some(&v),
                    now,
                )]))
                .unwrap();
            }
        })
    };
    let mut passes = 0;
    while !writer.is_finished() {
        if clean(&log, &CleanerConfig::default(), now)
            .unwrap()
            .is_some()
        {
            passes += 1;
        }
        // Reads stay consistent: increasing offsets, every batch verifies (read_all checks).
        let got = read_all(&log);
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    }
    writer.join().unwrap();
    assert!(passes > 0, "the cleaner never ran during the appends");
    log.force_roll().unwrap();
    clean(&log, &CleanerConfig::default(), now).unwrap();
    // The newest value of each key is the last one written for it.
    let got = read_all(&log);
    let mut newest: BTreeMap<String, String> = BTreeMap::new();
    for r in &got {
        newest.insert(r.1.clone().unwrap(), r.2.clone().unwrap());
    }
    for k in 0..17 {
        let last = (0..3000).filter(|i| i % 17 == k).max().unwrap();
        assert_eq!(newest[&format!("k{k}")], last.to_string());
    }
    assert_eq!(got.len(), 17);
    assert_eq!(log.log_end_offset().0, 3000);
}

#[test]
fn a_small_dedupe_buffer_cleans_in_several_passes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(DAY_MS);
    let now = clock.now_ms();
    let log = open(dir.path(), compact_config(), clock);
    for round in 0..6 {
        for k in 0..40 {
            write(
                &log,
                &format!("key-{k:03}"),
                Some(&format!("r{round}")),
                now,
                Compression::None,
            );
        }
    }
    log.force_roll().unwrap();
    let tiny = CleanerConfig {
        dedupe_buffer_bytes: 500,
    };
    let mut passes = 0;
    while clean(&log, &tiny, now).unwrap().is_some() {
        passes += 1;
        assert!(passes < 100);
    }
    assert!(passes > 1);
    let got = read_all(&log);
    assert_eq!(got.len(), 40);
    assert!(got.iter().all(|r| r.2.as_deref() == Some("r5")));
}

#[test]
fn truncating_below_a_compacted_away_first_segment_restarts_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(DAY_MS);
    let now = clock.now_ms();
    let log = open(dir.path(), compact_config(), clock.clone());
    // The first segments hold only values that later ones supersede.
    for round in 0..8 {
        write(
            &log,
            "k",
            // Big enough that no two segments fit one cleaned group.
            Some(&format!("v{round}-{}", "x".repeat(500))),
            now,
            Compression::None,
        );
        log.force_roll().unwrap();
    }
    clean(&log, &CleanerConfig::default(), now)
        .unwrap()
        .unwrap();
    let first_base = log.segment_base_offsets()[0].0;
    assert!(first_base > 0, "the first segment was compacted away");
    assert_eq!(log.log_start_offset().0, 0);
    // Truncating into the gap below the first remaining segment empties the log there.
    assert_eq!(
        log.truncate_to(rill_log::types::Offset(first_base - 1))
            .unwrap()
            .0,
        first_base - 1
    );
    assert_eq!(log.log_end_offset().0, first_base - 1);
    write(&log, "k", Some("after"), now, Compression::None);
    drop(log);
    let log = open(dir.path(), compact_config(), clock);
    let got = read_all(&log);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, first_base - 1);
    assert_eq!(got[0].2.as_deref(), Some("after"));
}

/// A batch built by hand, as a client other than kafka-protocol's encoder might: records with
/// explicit timestamp deltas from `base_ts`.
fn raw_batch(base_ts: i64, records: &[(i64, &str, &str)]) -> Vec<u8> {
    fn varlong(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
    let mut payload = Vec::new();
    for (i, (delta, k, v)) in records.iter().enumerate() {
        let mut body = vec![0u8];
        varlong(&mut body, *delta);
        varlong(&mut body, i as i64);
        varlong(&mut body, k.len() as i64);
        body.extend(k.as_bytes());
        varlong(&mut body, v.len() as i64);
        body.extend(v.as_bytes());
        varlong(&mut body, 0);
        varlong(&mut payload, body.len() as i64);
        payload.extend(body);
    }
    let n = records.len() as i32;
    let mut b = Vec::new();
    b.extend(0i64.to_be_bytes());
    b.extend(((61 - 12 + payload.len()) as i32).to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.push(2);
    b.extend([0u8; 4]);
    b.extend(0i16.to_be_bytes());
    b.extend((n - 1).to_be_bytes());
    b.extend(base_ts.to_be_bytes());
    b.extend(base_ts.to_be_bytes());
    b.extend((-1i64).to_be_bytes());
    b.extend((-1i16).to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.extend(n.to_be_bytes());
    b.extend(payload);
    let crc = rill_log::record::batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn a_batch_that_cannot_be_re_encoded_is_kept_whole() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(DAY_MS);
    let now = clock.now_ms();
    let log = open(dir.path(), compact_config(), clock);
    // Timestamps near both ends of i64: legal one by one, but their difference does not fit
    // the delta a re-encoded batch would need.
    let mut odd = raw_batch(
        0,
        &[
            (i64::MIN + 1, "a", "1"),
            (i64::MAX - 1, "b", "1"),
            (0, "c", "1"),
        ],
    );
    log.append(&mut odd).unwrap();
    write(&log, "c", Some("2"), now, Compression::None);
    log.force_roll().unwrap();
    clean(&log, &CleanerConfig::default(), now)
        .unwrap()
        .unwrap();
    let values: Vec<_> = read_all(&log)
        .iter()
        .map(|r| (r.1.clone().unwrap(), r.2.clone().unwrap()))
        .collect();
    // Nothing was lost; c=1 survives inside the batch that had to stay whole.
    assert_eq!(values.len(), 4, "{values:?}");
    assert_eq!(values.last().unwrap(), &("c".to_string(), "2".to_string()));
}
